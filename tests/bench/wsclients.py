"""A swarm of WebSocket clients for the benchmarks, on raw sockets and epoll.

Runs as its own process so that the server under test has a core to itself
as far as possible. No asyncio: one epoll loop keeps the cost per received
frame to a recv() and a clock read, so the measured fan-out time is the
server's, not the clients'.

Commands arrive on stdin as JSON lines, answers leave on stdout as JSON lines:

  {"cmd": "connect", "port": P, "n": N, "mode": "read"|"stall"|"closer", "deflate": bool}
      open N connections (batches of 50, each handshake completed);
      "stall" connections have a tiny receive buffer and are never read;
      "closer" connections answer {"type": "disconnect"} with a Close frame;
      "deflate" offers permessage-deflate as Chrome and Firefox do (a server
      may then compress: a compressed text frame counts as the notification,
      the only text a server sends while a round is armed).
  {"cmd": "arm"}         forget receive times; the next new_image counts
  {"cmd": "wait", "n": N, "timeout": S}
      answer once N reading clients received new_image since "arm" (or at
      the timeout): {"count", "first", "last"} in time.monotonic() seconds
  {"cmd": "wait_closed", "timeout": S}   until every connection is closed
  {"cmd": "close_all"}   abort every connection
  {"cmd": "quit"}

time.monotonic() is CLOCK_MONOTONIC, one clock for every process on Linux:
the server process stamps its notify call with the same clock.
"""
import base64
import json
import os
import select
import socket
import sys
import time

BATCH = 50
MASK = b"\x11\x22\x33\x44"


def masked_frame(opcode, payload=b""):
    """A client frame (masked, RFC 6455 section 5.3), payload < 126 bytes."""
    data = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    return bytes((0x80 | opcode, 0x80 | len(payload))) + MASK + data


CLOSE_FRAME = masked_frame(0x8, (1000).to_bytes(2, "big"))


def next_frame(buf):
    """(first byte, payload, rest) of the server frame (unmasked) at the start
    of buf, or None until it is complete."""
    if len(buf) < 2:
        return None
    length, offset = buf[1] & 0x7F, 2
    if length == 126:
        if len(buf) < 4:
            return None
        length, offset = int.from_bytes(buf[2:4], "big"), 4
    elif length == 127:
        if len(buf) < 10:
            return None
        length, offset = int.from_bytes(buf[2:10], "big"), 10
    if len(buf) < offset + length:
        return None
    return buf[0], buf[offset:offset + length], buf[offset + length:]


def reply(obj):
    """One answer to the bench driver: a JSON line on stdout."""
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def answer_commands(swarm):
    """Reads what waits on swarm.stdin (one JSON command a line, the rest kept
    in swarm.line) and replies to each with swarm.command(); False at the end
    of the input."""
    chunk = os.read(swarm.stdin, 65536)
    if not chunk:
        return False
    swarm.line += chunk
    while b"\n" in swarm.line:
        raw, swarm.line = swarm.line.split(b"\n", 1)
        try:
            answer = swarm.command(json.loads(raw))
        except (OSError, ConnectionError, ValueError) as error:
            answer = {"error": "%s: %s" % (type(error).__name__, error)}
        if answer is not None:
            reply(answer)
    return True


class Conn:
    __slots__ = ("sock", "fd", "mode", "buf", "open", "t", "closing")

    def __init__(self, sock, mode):
        self.sock = sock
        self.fd = sock.fileno()
        self.mode = mode
        self.buf = b""
        self.open = False           # handshake done
        self.t = None               # first new_image receipt since arm
        self.closing = False


class Swarm:
    def __init__(self):
        self.ep = select.epoll()
        self.conns = {}             # fd -> Conn
        self.stdin = sys.stdin.fileno()
        self.ep.register(self.stdin, select.EPOLLIN)
        self.line = b""
        self.waiter = None          # (kind, n, deadline)
        self.armed = False
        self.received = 0

    # -- protocol ----------------------------------------------------------

    def handle(self, conn, data, now):
        conn.buf += data
        if not conn.open:
            end = conn.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            if not conn.buf.startswith(b"HTTP/1.1 101"):
                raise ConnectionError("handshake refused: %r" % conn.buf[:60])
            conn.open = True
            conn.buf = conn.buf[end + 4:]
        buf = conn.buf
        while True:
            frame = next_frame(buf)
            if frame is None:
                break
            buf_first, payload, buf = frame
            opcode = buf_first & 0x0F
            if opcode == 0x1:
                compressed = buf_first & 0x40   # RSV1: permessage-deflate
                if (compressed or b"new_image" in payload) and self.armed and conn.t is None:
                    conn.t = now
                    self.received += 1
                if (compressed or b"disconnect" in payload) and conn.mode == "closer" and not conn.closing:
                    conn.closing = True
                    conn.sock.send(CLOSE_FRAME)
            elif opcode == 0x9:
                conn.sock.send(masked_frame(0xA, payload))
            elif opcode == 0x8:
                if not conn.closing:
                    conn.closing = True
                    try:
                        conn.sock.send(CLOSE_FRAME)
                    except OSError:
                        pass
                self.drop(conn)
                return
        conn.buf = buf

    def drop(self, conn):
        if self.conns.pop(conn.fd, None) is not None:
            try:
                self.ep.unregister(conn.fd)
            except (OSError, ValueError):
                pass
            conn.sock.close()

    # -- commands ----------------------------------------------------------

    def connect(self, port, n, mode, deflate=False):
        extensions = ("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                      if deflate else "")
        made = []
        for start in range(0, n, BATCH):
            batch = []
            for _ in range(min(BATCH, n - start)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                if mode == "stall":
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                sock.settimeout(10)
                sock.connect(("127.0.0.1", port))
                key = base64.b64encode(os.urandom(16)).decode()
                sock.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                              "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                              "Sec-WebSocket-Version: 13\r\n%s\r\n" % (port, key, extensions)).encode())
                batch.append(Conn(sock, mode))
            for conn in batch:          # wait for every 101 of the batch
                while not conn.open:
                    data = conn.sock.recv(4096)
                    if not data:
                        raise ConnectionError("closed during handshake")
                    self.handle(conn, data, time.monotonic())
                conn.sock.setblocking(False)
                self.conns[conn.fd] = conn
                if mode != "stall":
                    self.ep.register(conn.fd, select.EPOLLIN)
            made.extend(batch)
        return {"connected": len(made), "total": len(self.conns)}

    def command(self, msg):
        cmd = msg["cmd"]
        if cmd == "connect":
            return self.connect(msg["port"], msg["n"], msg.get("mode", "read"), msg.get("deflate", False))
        if cmd == "arm":
            for conn in self.conns.values():
                conn.t = None
            self.armed, self.received = True, 0
            return {"ok": True}
        if cmd == "wait":
            self.waiter = ("wait", msg["n"], time.monotonic() + msg.get("timeout", 10))
            return None
        if cmd == "wait_closed":
            self.waiter = ("closed", 0, time.monotonic() + msg.get("timeout", 10))
            return None
        if cmd == "close_all":
            for conn in list(self.conns.values()):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                self.drop(conn)
            return {"ok": True}
        if cmd == "count":
            return {"total": len(self.conns)}
        if cmd == "quit":
            raise SystemExit(0)
        return {"error": "unknown command %r" % cmd}

    def check_waiter(self, now):
        if self.waiter is None:
            return
        kind, n, deadline = self.waiter
        if kind == "wait":
            if self.received >= n or now >= deadline:
                times = [c.t for c in self.conns.values() if c.t is not None]
                reply({"count": len(times), "first": min(times) if times else None,
                            "last": max(times) if times else None})
                self.waiter = None
                self.armed = False
        elif kind == "closed":
            if not self.conns or now >= deadline:
                reply({"open": len(self.conns), "t": now})
                self.waiter = None

    def run(self):
        while True:
            timeout = 0.05 if self.waiter else -1
            for fd, _ev in self.ep.poll(timeout):
                now = time.monotonic()
                if fd == self.stdin:
                    if not answer_commands(self):
                        return
                    continue
                conn = self.conns.get(fd)
                if conn is None:
                    continue
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError:
                    self.drop(conn)
                    continue
                if not data:
                    self.drop(conn)
                    continue
                try:
                    self.handle(conn, data, now)
                except OSError:
                    self.drop(conn)
            self.check_waiter(time.monotonic())


if __name__ == "__main__":
    try:
        Swarm().run()
    except (KeyboardInterrupt, SystemExit):
        pass
