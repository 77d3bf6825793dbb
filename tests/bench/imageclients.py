"""Image viewers for the benchmarks and the nginx interop test: each client
holds a WebSocket and a keep-alive HTTP connection, as a browser does, and
downloads the new image when it is announced. Raw sockets on one epoll loop
in a process of its own, so that what is measured is the server's cost.

Two ways to follow a new image:
  viewer  our viewer: on {"type": "history_entry", "url": U} GET <prefix>U
  als     ALS 0.7's page: on {"type": "new_image"} GET <prefix>web_image.jpg?timestamp=<ms>

Every body is received in place into a buffer of the client's (as a
browser holds it) and compared byte for byte, after the round, with the
image expected in that round (make_image(size, seed), which the server
side builds the same way).

Commands on stdin, answers on stdout, JSON lines:
  {"cmd": "connect", "port": P, "n": N, "prefix": "/", "style": "viewer"|"als",
   "host": "127.0.0.1", "sources": [address, ...]}
      -> {"connected": N}: N clients, each with its WebSocket open; client i
         connects from sources[i % len(sources)] when given
  {"cmd": "arm", "size": S, "seed": K, "style": ...}   the next announcement
      counts; every client follows it in that style (default: as connected)
  {"cmd": "wait", "timeout": T}
      -> once every client holds the complete new body (or at the timeout):
         {"done", "good", "bad", "first", "last", "announced_first",
          "announced_last", "statuses", "times": [[source, done or null], ...]};
         times are time.monotonic()
  {"cmd": "close_all"}, {"cmd": "quit"}

time.monotonic() is CLOCK_MONOTONIC, one clock for every process on Linux.
"""
import base64
import json
import os
import random
import select
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from wsclients import answer_commands, masked_frame, next_frame, reply  # noqa: E402

BATCH = 50
SCRATCH = bytearray(1 << 20)    # where an unexpected body goes


def make_image(size, seed):
    """A JPEG-shaped body (SOI ... EOI) of exactly size bytes, the same in every process."""
    n = size - 4
    body = random.Random(seed).getrandbits(8 * n).to_bytes(n, "little")   # randbytes(n), 3.9+
    return b"\xff\xd8" + body + b"\xff\xd9"


class Client:
    """One viewer: its WebSocket and its HTTP connection."""

    def __init__(self, swarm, port, prefix, style, host="127.0.0.1", source=None):
        self.swarm, self.port, self.prefix, self.style = swarm, port, prefix, style
        self.host, self.source = host, source
        self.ws = None
        self.ws_buf = b""
        self.http = None
        self.buf = bytearray()      # the body, received in place (reused across rounds)
        self.reset()

    def reset(self):
        self.announced = None       # when the announcement arrived
        self.done = None            # when the whole body had arrived
        self.good = None
        self.head = b""
        self.status = None
        self.length = None
        self.received = 0
        self.in_body = False

    # -- WebSocket -----------------------------------------------------------

    def open_ws(self):
        sock = self.open()
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(("GET %sws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
                      % (self.prefix, self.host, self.port, key)).encode())
        self.ws = sock
        return sock

    def open(self):
        sock = socket.create_connection((self.host, self.port), timeout=10,
                                        source_address=(self.source, 0) if self.source else None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    def finish_handshake(self):
        buf = b""
        while b"\r\n\r\n" not in buf:
            data = self.ws.recv(4096)
            if not data:
                raise ConnectionError("closed during the WebSocket handshake")
            buf += data
        head, _, rest = buf.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101"):
            raise ConnectionError("handshake refused: %r" % head[:80])
        self.ws.setblocking(False)
        self.ws_buf = rest
        if rest:
            self.on_ws(b"", time.monotonic())

    def on_ws(self, data, now):
        buf = self.ws_buf + data
        while True:
            frame = next_frame(buf)
            if frame is None:
                break
            first, payload, buf = frame
            opcode = first & 0x0F
            if opcode == 0x1:
                self.on_message(payload, now)
            elif opcode == 0x9:
                self.ws.send(masked_frame(0xA, payload))
            elif opcode == 0x8:
                self.swarm.ws_closed += 1
        self.ws_buf = buf

    def on_message(self, payload, now):
        if not self.swarm.armed or self.announced is not None:
            return
        message = json.loads(payload)
        if self.style == "viewer" and message.get("type") == "history_entry":
            path = self.prefix + message["url"]
        elif self.style == "als" and message.get("type") == "new_image":
            path = self.prefix + "web_image.jpg?timestamp=%d" % int(time.time() * 1000)
        else:
            return
        self.announced = now
        self.get(path)

    # -- HTTP ----------------------------------------------------------------

    def get(self, path):
        request = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n" % (path, self.host, self.port)).encode()
        if self.http is not None:
            try:
                self.http.send(request)
                return
            except OSError:
                self.swarm.forget(self.http)
        self.http = self.open()
        self.http.sendall(request)
        self.http.setblocking(False)
        self.swarm.watch(self.http, self)

    def on_http(self, now):
        """Read what the HTTP connection has; False when it closed."""
        try:
            if self.in_body:
                left = self.length - self.received
                if self.length == len(self.buf):        # straight into the body buffer
                    got = self.http.recv_into(memoryview(self.buf)[self.received:], left)
                else:                                   # not the expected image: drop it
                    got = self.http.recv_into(SCRATCH, min(left, len(SCRATCH)))
                if got:
                    self.body_bytes(got, now)
            else:
                data = self.http.recv(65536)
                got = len(data)
                if got:
                    self.head_bytes(data, now)
        except BlockingIOError:
            return True
        except OSError:
            got = 0
        return bool(got)

    def head_bytes(self, data, now):
        self.head += data
        end = self.head.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = self.head[:end], self.head[end + 4:]
        self.head = b""
        self.status = int(head.split(b" ", 2)[1])
        self.length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                self.length = int(value)
        self.in_body = True
        rest = rest[:self.length]
        if self.length == len(self.buf):
            self.buf[:len(rest)] = rest
        self.body_bytes(len(rest), now)

    def body_bytes(self, count, now):
        self.received += count
        if self.received >= self.length:
            self.in_body = False
            if self.done is None and self.announced is not None:
                self.done = now
                self.swarm.finished += 1

    def check(self, expected):
        """After the round (not timed): the body is the expected image, byte for byte."""
        self.good = (self.done is not None and self.status == 200 and self.length == len(expected)
                     and self.buf == expected)


class Swarm:
    def __init__(self):
        self.ep = select.epoll()
        self.stdin = sys.stdin.fileno()
        self.ep.register(self.stdin, select.EPOLLIN)
        self.clients = []
        self.owner = {}             # fd -> (socket, client, kind)
        self.armed = False
        self.expected = b""
        self.finished = 0
        self.ws_closed = 0
        self.waiter = None
        self.line = b""

    def watch(self, sock, client, kind="http"):
        self.owner[sock.fileno()] = (sock, client, kind)
        self.ep.register(sock.fileno(), select.EPOLLIN)

    def forget(self, sock):
        entry = self.owner.pop(sock.fileno(), None)
        if entry is not None:
            try:
                self.ep.unregister(sock.fileno())
            except (OSError, ValueError):
                pass
        sock.close()

    def connect(self, port, n, prefix, style, host="127.0.0.1", sources=()):
        for start in range(0, n, BATCH):
            batch = [Client(self, port, prefix, style, host,
                            sources[(start + i) % len(sources)] if sources else None)
                     for i in range(min(BATCH, n - start))]
            for client in batch:
                client.open_ws()
            for client in batch:
                client.finish_handshake()
                self.watch(client.ws, client, "ws")
            self.clients.extend(batch)
        return {"connected": len(self.clients)}

    def command(self, msg):
        cmd = msg["cmd"]
        if cmd == "connect":
            return self.connect(msg["port"], msg["n"], msg.get("prefix", "/"), msg.get("style", "viewer"),
                                msg.get("host", "127.0.0.1"), msg.get("sources", ()))
        if cmd == "arm":
            self.expected = make_image(msg["size"], msg["seed"])
            for client in self.clients:
                if len(client.buf) != msg["size"]:
                    client.buf = bytearray(msg["size"])
                client.reset()
                client.style = msg.get("style", client.style)
            self.finished, self.armed = 0, True
            return {"ok": True}
        if cmd == "wait":
            self.waiter = time.monotonic() + msg.get("timeout", 30)
            return None
        if cmd == "close_all":
            for sock, _client, _kind in list(self.owner.values()):
                self.forget(sock)
            self.clients = []
            return {"ok": True}
        if cmd == "quit":
            raise SystemExit(0)
        return {"error": "unknown command %r" % cmd}

    def check_waiter(self, now):
        if self.waiter is None or (self.finished < len(self.clients) and now < self.waiter):
            return
        for c in self.clients:
            c.check(self.expected)
        done = [c for c in self.clients if c.done is not None]
        announced = [c.announced for c in self.clients if c.announced is not None]
        statuses = {}
        for c in self.clients:
            statuses[str(c.status)] = statuses.get(str(c.status), 0) + 1
        reply({"done": len(done), "good": sum(1 for c in done if c.good),
                    "bad": sum(1 for c in done if not c.good),
                    "first": min((c.done for c in done), default=None),
                    "last": max((c.done for c in done), default=None),
                    "announced_first": min(announced, default=None),
                    "announced_last": max(announced, default=None),
                    "statuses": statuses, "ws_closed": self.ws_closed,
                    "times": [[c.source, c.done] for c in self.clients]})
        self.waiter = None
        self.armed = False

    def run(self):
        while True:
            for fd, _event in self.ep.poll(0.05 if self.waiter else -1):
                now = time.monotonic()
                if fd == self.stdin:
                    if not answer_commands(self):
                        return
                    continue
                entry = self.owner.get(fd)
                if entry is None:
                    continue
                sock, client, kind = entry
                if kind == "http":
                    if not client.on_http(now):
                        self.forget(sock)
                        if client.http is sock:
                            client.http = None
                    continue
                try:
                    data = sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.forget(sock)
                    self.ws_closed += 1
                    continue
                client.on_ws(data, now)
            self.check_waiter(time.monotonic())


if __name__ == "__main__":
    try:
        Swarm().run()
    except (KeyboardInterrupt, SystemExit):
        pass
