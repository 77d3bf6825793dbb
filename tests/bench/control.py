"""One server under test, in its own process, driven by run.py over stdin.

    python control.py KIND PORT FOLDER [HOST]     KIND: alsserve | aiohttp | websockets | floor

HOST (aiohttp only; default 127.0.0.1): where the peer listens. alsserve
listens on every interface, as ALS runs it.

The server runs in its own thread and event loop (as ALS runs it); this
process's main thread is "the caller's thread": it calls the server's notify
and stop and times them. Commands are JSON lines on stdin, answers JSON
lines on stdout; the first line out is {"ready": ...} once the server serves.

  {"cmd": "notify"}                  -> {"t0": monotonic before the call, "call": s}
  {"cmd": "notify_cost", "n", "interval"} -> {"calls": [s, ...], "floor": [s, ...]}
      "floor" times, alternating with the notify calls, a bare
      call_soon_threadsafe() to an idle event loop in this process: asyncio's
      own cross-thread wake-up (a syscall and a GIL hand-off), for reference
  {"cmd": "bcast"}                   -> {"times": [s, ...]} of the server's own
      send loop (on its event loop thread) since the last "bcast"
  {"cmd": "send_floor"}              (alsserve only) -> {"floor": s}: one bare
      socket.send() of the new_image frame to every client, timed on the loop
      thread: the least any send loop on this machine can cost
  {"cmd": "text", "size"}            broadcast one text message of size bytes
  {"cmd": "clients"}                 -> {"clients": n, "stalled": n with unsent bytes}
  {"cmd": "image", "mode", "size", "seed"} -> {"t0": monotonic before the call, "call": s,
      "prepare": s of the caller's own work before it (ALS's save, for write_notify), not timed}
      a new image (imageclients.make_image(size, seed), built before t0) made
      live the way the caller of that server does it: mode "publish" is
      alsserve's publish_image(bytes); "write_notify" writes web_image.jpg as
      ALS's Save module does (ALZweb_image.jpg, then os.rename) and notifies
      (alsserve: notify_browsers_about_new_image(); aiohttp: send_message);
      the floor keeps the bytes in memory and announces them
  {"cmd": "access_count", "size"}    (alsserve only) -> {"count": n}: 200
      responses of exactly size bytes in alsserve's access log (logger
      alsserve.access) since the last access_count
  {"cmd": "stop"}                    -> {"stop": s}
  {"cmd": "quit"}
"""
import asyncio
import base64
import collections
import json
import logging
import os
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
BROADCASTS = []                 # durations of the server's send loop

from imageclients import make_image  # noqa: E402
from wsclients import reply  # noqa: E402


def write_like_als(folder, data):
    """ALS's Save module: the temporary name in the same folder, then a rename."""
    temporary = os.path.join(folder, "ALZweb_image.jpg")
    with open(temporary, "wb") as f:
        f.write(data)
    os.rename(temporary, os.path.join(folder, "web_image.jpg"))


def timed(function):
    def wrapper(*args):
        p0 = time.perf_counter()
        function(*args)
        BROADCASTS.append(time.perf_counter() - p0)
    return wrapper


def timed_coroutine(function):
    async def wrapper(*args):
        p0 = time.perf_counter()
        await function(*args)
        BROADCASTS.append(time.perf_counter() - p0)
    return wrapper


class AlsServe:
    def __init__(self, port, folder):
        sys.path.insert(0, ROOT)
        import alsserve
        self.folder = folder
        self.server = alsserve.ImageServer(folder, port=port)
        self.server.start()
        self.served = None      # response length -> count, once access_count is used
        site = self.server._thread.site
        site.hub.broadcast = timed(site.hub.broadcast)
        self.notify = self.server.notify_browsers_about_new_image
        self.text = self.server.send_message_text
        self.stop = self.server.stop

    def clients(self):
        thread = self.server._thread
        clients = list(thread.site.hub.clients) if thread is not None else []
        return len(clients), sum(1 for c in clients if c.transport.get_write_buffer_size() or c.pending)

    def prepare(self, mode, data):
        """The caller's own work before the command: ALS saves the image."""
        if mode == "write_notify":
            write_like_als(self.folder, data)

    def image(self, mode, data):
        if mode == "publish":
            self.server.publish_image(data)
        else:
            self.server.notify_browsers_about_new_image()

    def access_count(self, size):
        """The request log is off until the first call (it costs a line per request)."""
        if self.served is None:
            served = self.served = collections.Counter()

            class Count(logging.Handler):
                def emit(self, record):
                    status, length = record.args[-2:]     # '%s "%s" %d %d': peer, line, status, length
                    if status == 200:
                        served[length] += 1

            access = logging.getLogger("alsserve.access")
            access.setLevel(logging.INFO)
            access.propagate = False
            access.addHandler(Count())
        count, self.served[size] = self.served[size], 0
        return count

    def send_floor(self):
        import alsserve
        site, result, done = self.server._thread.site, [], threading.Event()

        def raw_loop():
            frame = alsserve.build_text(alsserve.NEW_IMAGE_MESSAGE)
            sockets = [c.transport._sock for c in site.hub.clients]     # bench only: private
            p0 = time.perf_counter()
            for sock in sockets:
                sock.send(frame)
            result.append(time.perf_counter() - p0)
            done.set()

        self.server._thread.loop.call_soon_threadsafe(raw_loop)
        done.wait(10)
        return result[0]


class ThreadedPeer:
    """A peer server running its own loop in a thread, as ALS 0.7 does."""

    def run(self, server):
        self.server = server
        threading.Thread(target=server.start, daemon=True).start()
        server.ready.wait()
        self.text = server.send_text
        self.stop = server.stop

    def notify(self):
        self.server.send_message({"type": "new_image"})


class AiohttpPeer(ThreadedPeer):
    def __init__(self, port, folder):
        sys.path.insert(0, HERE)
        import peer_aiohttp
        self.folder = folder
        server = peer_aiohttp.Server(folder, port, sys.argv[4] if len(sys.argv) > 4 else "127.0.0.1")
        server._broadcast = timed_coroutine(server._broadcast)
        self.run(server)

    def prepare(self, mode, data):
        write_like_als(self.folder, data)       # ALS 0.7: save, then send_message

    def image(self, mode, data):
        self.notify()

    def clients(self):
        transports = list(self.server.transports.values())
        return len(self.server.websockets), sum(
            1 for t in transports if t is not None and t.get_write_buffer_size())


class WebsocketsPeer(ThreadedPeer):
    def __init__(self, port, folder):
        sys.path.insert(0, HERE)
        import peer_websockets
        server = peer_websockets.Server(port)
        server.broadcast = timed(server.broadcast)
        self.run(server)

    def clients(self):
        conns = list(self.server.clients)
        return len(conns), sum(1 for c in conns if c.transport.get_write_buffer_size())


class FloorPeer(ThreadedPeer):
    def __init__(self, port, folder):
        import peer_floor
        self.run(peer_floor.Server(port))

    def prepare(self, mode, data):
        pass

    def image(self, mode, data):
        self.server.publish(data)

    def clients(self):
        return len(self.server.websockets), 0


KINDS = {"alsserve": AlsServe, "aiohttp": AiohttpPeer, "websockets": WebsocketsPeer, "floor": FloorPeer}


def main():
    kind, port, folder = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    server = KINDS[kind](port, folder)
    idle_loop = asyncio.new_event_loop()
    threading.Thread(target=idle_loop.run_forever, daemon=True).start()
    reply({"ready": kind, "pid": os.getpid()})
    for line in sys.stdin:
        msg = json.loads(line)
        cmd = msg["cmd"]
        if cmd == "notify":
            t0 = time.monotonic()
            p0 = time.perf_counter()
            server.notify()
            reply({"t0": t0, "call": time.perf_counter() - p0})
        elif cmd == "notify_cost":
            calls, floor = [], []
            for _ in range(msg["n"]):
                time.sleep(msg["interval"])
                p0 = time.perf_counter()
                server.notify()
                calls.append(time.perf_counter() - p0)
                time.sleep(msg["interval"])
                p0 = time.perf_counter()
                idle_loop.call_soon_threadsafe(len, "")
                floor.append(time.perf_counter() - p0)
            reply({"calls": calls, "floor": floor})
        elif cmd == "image":
            data = make_image(msg["size"], msg["seed"])
            p0 = time.perf_counter()
            server.prepare(msg["mode"], data)   # not timed: the caller's own save
            t0, p1 = time.monotonic(), time.perf_counter()
            server.image(msg["mode"], data)
            reply({"t0": t0, "call": time.perf_counter() - p1, "prepare": p1 - p0})
        elif cmd == "access_count":
            reply({"count": server.access_count(msg["size"])})
        elif cmd == "send_floor":
            reply({"floor": server.send_floor()})
        elif cmd == "bcast":
            times, BROADCASTS[:] = BROADCASTS[:], []
            reply({"times": times})
        elif cmd == "text":
            server.text(base64.b64encode(os.urandom(msg["size"] * 3 // 4)).decode())
            reply({"ok": True})
        elif cmd == "clients":
            count, stalled = server.clients()
            reply({"clients": count, "stalled": stalled})
        elif cmd == "stop":
            p0 = time.perf_counter()
            server.stop()
            reply({"stop": time.perf_counter() - p0})
        elif cmd == "quit":
            break
    os._exit(0)


if __name__ == "__main__":
    main()
