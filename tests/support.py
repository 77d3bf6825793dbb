"""Shared helpers for the stdlib test suites: servers on free loopback
ports, raw HTTP exchanges and a minimal WebSocket client on plain sockets."""

import collections
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import alsserve  # noqa: E402

ASSETS = os.path.join(ROOT, "assets")


class QuietServerLog(logging.Handler):
    """Keeps the server's log records instead of printing them: the suite
    provokes warnings on purpose (bad requests, protocol errors, access
    limited to this machine), and a clean run should read clean. Tests that
    check the log use assertLogs or LogCapture. ALSSERVE_TEST_LOG=1 prints
    them as usual."""

    def __init__(self, keep=1000):
        super().__init__(logging.DEBUG)
        self.records = collections.deque(maxlen=keep)

    def emit(self, record):
        self.records.append(record)


SERVER_LOG = QuietServerLog()
if not os.environ.get("ALSSERVE_TEST_LOG"):
    logging.getLogger("alsserve").addHandler(SERVER_LOG)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_jpeg(size, fill=b"\x00"):
    """A byte string shaped like a complete JPEG (SOI ... EOI) of `size` bytes."""
    body = (fill * (size - 4))[: size - 4]
    return b"\xff\xd8" + body + b"\xff\xd9"


def make_png(size, fill=b"\x00"):
    """A byte string shaped like a complete PNG (signature ... IEND) of `size` bytes."""
    body = (fill * (size - 20))[: size - 20]
    return alsserve.PNG_SIGNATURE + body + alsserve.PNG_END


class ServerTestCase(unittest.TestCase):
    """Starts one ImageServer on 127.0.0.1:<free port> over a temporary web
    folder for each test, with Settings(**settings); publish = False serves
    the folder as ALS's Server does (nothing published into it)."""

    settings = {}
    publish = True

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="alsserve-test-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        kind = alsserve.ImageServer if self.publish else alsserve.AlsFolderServer
        for attempt in range(5):        # (another suite may take the free port first)
            self.port = free_port()
            self.server = kind(self.folder, port=self.port, displayed_address="ip:127.0.0.1",
                               settings=alsserve.Settings(**self.settings))
            try:
                self.server.start()
                break
            except alsserve.PortInUseError:
                if attempt == 4:
                    raise
        self.addCleanup(self.server.stop, 0.5)

    def write(self, name, data):
        path = os.path.join(self.folder, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def connect(self, timeout=5.0):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        self.addCleanup(sock.close)
        return sock

    def exchange(self, raw, timeout=5.0):
        """Send raw bytes on a new connection; return everything until the server closes."""
        sock = self.connect(timeout)
        sock.sendall(raw)
        return recv_until_close(sock, timeout)

    def ws_connect(self, path="/ws", extra=b""):
        sock = self.connect()
        sock.sendall(ws_handshake_request(path, extra=extra))
        status, headers, rest = read_response_head(sock)
        self.assertEqual(status, 101, headers)
        return WSClient(sock, rest)

    def wait_for(self, predicate, timeout=5.0, message="condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.01)
        self.fail("timed out waiting for " + message)


def recv_until_close(sock, timeout=5.0):
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


def read_response_head(sock, buffered=b""):
    """(status, {lower name: value}, bytes after the head)."""
    data = buffered
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before a response head: %r" % data)
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers, rest


def read_response(sock, buffered=b"", head_only=False):
    """One full response: (status, headers, body, bytes after it)."""
    status, headers, rest = read_response_head(sock, buffered)
    length = 0 if head_only or status in (101, 304) else int(headers.get("content-length", 0))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, headers, rest[:length], rest[length:]


def parse_responses(data):
    """Split bytes holding several complete responses (no HEAD) into a list."""
    responses = []
    while data:
        head, _, rest = data.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        length = int(headers.get("content-length", 0))
        status = int(lines[0].split(" ")[1])
        if status == 304:
            length = 0
        responses.append((status, headers, rest[:length]))
        data = rest[length:]
    return responses


def client_frame(opcode, payload=b"", fin=True, mask=b"\x01\x02\x03\x04", rsv=0):
    """A frame as a client sends it (RFC 6455 section 5.2): masked, with
    whatever flags a test wants to try."""
    first = (0x80 if fin else 0) | (rsv << 4) | int(opcode)
    length = len(payload)
    if length < 126:
        head = bytes((first, 0x80 | length))
    elif length < 65536:
        head = bytes((first, 0x80 | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, 0x80 | 127)) + length.to_bytes(8, "big")
    return head + mask + alsserve.mask_bytes(mask, payload)


def ws_handshake_request(path="/ws", key="dGhlIHNhbXBsZSBub25jZQ==", extra=b""):
    return (("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, key)).encode()
            + extra + b"\r\n")


class WSClient:
    """A minimal blocking WebSocket client for tests: masked frames out,
    frames in as (opcode, fin, payload)."""

    def __init__(self, sock, buffered=b""):
        self.sock = sock
        self.buffer = bytearray(buffered)

    def send(self, opcode, payload=b"", fin=True, rsv=0):
        self.sock.sendall(client_frame(opcode, payload, fin=fin, mask=os.urandom(4), rsv=rsv))

    def send_raw(self, data):
        self.sock.sendall(data)

    def _fill(self, n, timeout):
        self.sock.settimeout(timeout)
        while len(self.buffer) < n:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("closed by server")
            self.buffer += data

    def recv_frame(self, timeout=5.0):
        self._fill(2, timeout)
        first, second = self.buffer[0], self.buffer[1]
        assert not second & 0x80, "server frames must not be masked"
        length, offset = second & 0x7F, 2
        if length == 126:
            self._fill(4, timeout)
            length, offset = int.from_bytes(self.buffer[2:4], "big"), 4
        elif length == 127:
            self._fill(10, timeout)
            length, offset = int.from_bytes(self.buffer[2:10], "big"), 10
        self._fill(offset + length, timeout)
        payload = bytes(self.buffer[offset:offset + length])
        del self.buffer[:offset + length]
        return first & 0x0F, bool(first & 0x80), payload

    def recv_close(self, timeout=5.0):
        """Skip data frames until a Close; return its code (None when empty)."""
        while True:
            opcode, _, payload = self.recv_frame(timeout)
            if opcode == alsserve.Opcode.CLOSE:
                return int.from_bytes(payload[:2], "big") if payload else None

    def at_eof(self, timeout=5.0):
        self.sock.settimeout(timeout)
        try:
            return self.sock.recv(1) == b""
        except ConnectionResetError:
            return True


def read(path):
    with open(path, "rb") as f:
        return f.read()


def count_reads(testcase):
    """The paths the server reads (alsserve.read_snapshot) from now to the
    end of the test, as a list that grows."""
    from unittest import mock
    paths, real = [], alsserve.read_snapshot

    def counting(path):
        paths.append(path)
        return real(path)

    patcher = mock.patch.object(alsserve, "read_snapshot", counting)
    patcher.start()
    testcase.addCleanup(patcher.stop)
    return paths


def wait_until(predicate, timeout=5.0):
    """Poll predicate until it is true or timeout passes; its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def next_json(ws, timeout=5.0):
    """The next text message of a WSClient, decoded (pings are skipped)."""
    while True:
        opcode, _, payload = ws.recv_frame(timeout)
        if opcode == alsserve.Opcode.TEXT:
            return json.loads(payload.decode("utf-8"))
        if opcode == alsserve.Opcode.CLOSE:
            raise ConnectionError("server closed the WebSocket")


def next_announcement(ws, timeout=5.0):
    """The next announcement: the frame message that precedes new_image
    (None when the image is no history frame), and the new_image."""
    message = next_json(ws, timeout)
    frame = None
    if message.get("type") == "history_entry":
        frame, message = message, next_json(ws, timeout)
    return frame, message


def http_get(port, path="/", timeout=5.0, host="127.0.0.1"):
    """One GET on a new connection (Connection: close): (status, headers, body)."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        status, headers, body, _ = read_response(sock)
    return status, headers, body


def ws_open(port, timeout=5.0, host="127.0.0.1"):
    """A WSClient on /ws of a server not owned by a ServerTestCase (caller closes .sock)."""
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(ws_handshake_request())
        status, headers, rest = read_response_head(sock)
        if status != 101:
            raise ConnectionError("WebSocket handshake refused: %d %r" % (status, headers))
    except BaseException:
        sock.close()
        raise
    return WSClient(sock, rest)


# --- process measurements and log capture (hardening and soak suites) ------

def rss_kib():
    """Resident memory of this process in KiB (Linux /proc), or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def open_fd_count():
    """Open file descriptors of this process (Linux /proc), or None."""
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return None


class LogCapture(logging.Handler):
    """Collects the records of the given loggers (default: alsserve and
    asyncio) for a test, instead of printing them; `errors()` lists those
    at ERROR or above."""

    def __init__(self, names=("alsserve", "asyncio")):
        super().__init__(logging.DEBUG)
        self.records = []
        self.names = names
        self._saved = []

    def emit(self, record):
        self.records.append(record)

    def install(self, testcase):
        for name in self.names:
            logger = logging.getLogger(name)
            self._saved.append((logger, logger.propagate))
            logger.addHandler(self)
            logger.propagate = False
        testcase.addCleanup(self.uninstall)
        return self

    def uninstall(self):
        for logger, propagate in self._saved:
            logger.removeHandler(self)
            logger.propagate = propagate
        self._saved = []

    def errors(self):
        return ["%s: %s" % (r.name, r.getMessage()) for r in self.records if r.levelno >= logging.ERROR]
