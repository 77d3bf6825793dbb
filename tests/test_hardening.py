"""Hardening: hostile paths, malformed HTTP and WebSocket input, slow,
silent, vanishing and too many clients, torn images, START/STOP cycles.

Every test watches the bytes a client sees (or the files on disk) and the
server's own log: no test may leave an ERROR record behind. Random cases are
seeded, so a failure names a case that can be replayed.
"""

import gc
import io
import os
import random
import select
import shutil
import socket
import struct
import tempfile
import threading
import time
import unittest
import unittest.mock
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

import support
from support import alsserve

HTTP_PARSE_STATUSES = {400, 413, 414, 431, 505}
WS_ERROR_CODES = {1002, 1007, 1009}


class HardeningCase(support.ServerTestCase):
    """A ServerTestCase whose server log is captured; after the server has
    stopped, the test fails if anything was logged at ERROR."""

    def setUp(self):
        self.logs = support.LogCapture().install(self)
        self.addCleanup(self.assert_no_error_logs)      # runs after the server stopped
        super().setUp()

    def assert_no_error_logs(self):
        self.assertEqual(self.logs.errors(), [], "the server logged errors")

    @property
    def site(self):
        return self.server._thread.site

    def get(self, target, headers=b"", timeout=5.0):
        """One request on a new connection with Connection: close:
        (status, body, raw bytes received). status is None when the server
        closed without answering."""
        if isinstance(target, str):
            target = target.encode("latin-1")
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                         + headers + b"\r\n")
            raw = support.recv_until_close(sock, timeout)
        if not raw:
            return None, b"", raw
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body, raw

    def assert_index_served(self):
        status, body, _ = self.get("/")
        self.assertEqual(status, 200)
        with open(os.path.join(self.folder, "index.html"), "rb") as f:
            self.assertEqual(body, f.read())


def linger_rst(sock):
    """Make close() send RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def wait_closed(sock, timeout):
    """True when the peer closed or reset the connection within timeout
    (any data received first is discarded)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        readable, _, _ = select.select([sock], [], [], remaining)
        if not readable:
            return False
        try:
            if not sock.recv(65536):
                return True
        except OSError:
            return True


# =============================================================================
# 1. Path escapes
# =============================================================================

DOTS = ["..", "%2e%2e", "%2E%2E", ".%2e", "%2e.", "%252e%252e", "%c0%ae%c0%ae",
        "%e0%80%ae%e0%80%ae", "%c0%2e%c0%2e", "%e2%80%a4%e2%80%a4", "%e2%80%a5",
        "%ef%bc%8e%ef%bc%8e", "%ef%b9%92%ef%b9%92", "%u002e%u002e", "..%00", "..;", "..%3b",
        ". .", "...", ".. "]
SEPARATORS = ["/", "%2f", "%2F", "%5c", "%5C", "\\", "%252f", "%c0%af", "%e0%80%af",
              "%ef%bc%8f", "%ef%bc%bc", "//", "/./"]


class PathEscapeTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.marker = b"ALSSERVE-SECRET-" + uuid.uuid4().hex.encode()
        # A secret next to the web folder, reachable by "../<name>" if anything leaks...
        self.beside_name = "alsserve-secret-%s.txt" % uuid.uuid4().hex
        beside = os.path.join(os.path.dirname(self.folder), self.beside_name)
        with open(beside, "wb") as f:
            f.write(self.marker + b" beside\n")
        self.addCleanup(os.unlink, beside)
        # ... and one in an unrelated folder, reachable only through symlinks.
        outside = tempfile.mkdtemp(prefix="alsserve-outside-")
        self.addCleanup(shutil.rmtree, outside, True)
        with open(os.path.join(outside, "secret.txt"), "wb") as f:
            f.write(self.marker + b" outside\n")
        # Inside the web folder: hidden files, a normal sub folder, symlinks.
        self.write(".secret", self.marker + b" dotfile\n")
        self.write(".hidden/secret.txt", self.marker + b" hidden folder\n")
        self.write("sub/ok.txt", b"ok\n")
        links = {"escape.txt": os.path.join(outside, "secret.txt"), "escape_dir": outside,
                 "passwd.txt": "/etc/passwd", "loop": "loop", "loop_a": "loop_b", "loop_b": "loop_a",
                 "sub/up": "..", "sub/parent2": os.path.join("..", ".."),
                 "sub/secret_rel": os.path.join("..", "..", self.beside_name),
                 "dot_link.txt": ".secret", "hidden_link": ".hidden"}
        for name, target in links.items():
            os.symlink(target, os.path.join(self.folder, name))

    def hostile_targets(self):
        name = self.beside_name
        targets = []
        for dots in DOTS:
            for sep in SEPARATORS:
                targets.append("/" + dots + sep + name)
        targets.append("/sub/" + "../" * 2 + name)
        targets += [
            # deeper climbs, to a file that exists on every Linux box
            "/../../../../../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/..%2f..%2f..%2f..%2f..%2fetc%2fpasswd", "/..%5c..%5c..%5c..%5cetc%5cpasswd",
            "/sub/../../" + name, "/sub/%2e%2e/%2e%2e/" + name, "/sub/.%2e/.%2e/" + name,
            # absolute and drive paths, UNC shares, URL forms
            "//etc/passwd", "///etc/passwd", "/%2fetc%2fpasswd", "/%2Fetc/passwd", "/etc/passwd",
            "/C:/Windows/win.ini", "/C:%5cWindows%5cwin.ini", "/c|/Windows/win.ini", "/C%3a/x",
            "/c%7c/x", "/\\\\server\\share\\x", "/%5c%5cserver%5cshare%5cx", "/%5c..%5c" + name,
            "\\..\\" + name, "../" + name, "*", "/file:///etc/passwd", "/file:%2f%2f%2fetc/passwd",
            "http://127.0.0.1/../" + name, "http://127.0.0.1/%2e%2e/" + name, "http://evil/..%2f" + name,
            "https://127.0.0.1/../../etc/passwd", "http:/../" + name,
            # NUL and control characters
            "/web_image.jpg%00.txt", "/%00", "/..%00/" + name, "/index.html%00", "/%0a", "/%0d%0a",
            "/sub%00/ok.txt", "/%7f",
            # ";" parameters
            "/..;/" + name, "/sub;/..;/..;/" + name, "/.secret;x", "/index.html;jsessionid=1",
            "/%2e%2e;/" + name,
            # dotfiles and hidden folders
            "/.secret", "/%2esecret", "/%2Esecret", "/.hidden/secret.txt", "/%2ehidden/secret.txt",
            "/sub/../.secret", "/sub/%2e%2e/.secret", "/%e2%80%a4secret", "/%ef%bc%8esecret",
            "/.git/config", "/.", "/%2e", "/sub/.", "/dot_link.txt", "/hidden_link/secret.txt",
            # symlinks out of the folder, and loops
            "/escape.txt", "/escape_dir/secret.txt", "/escape_dir/", "/passwd.txt", "/loop", "/loop/x",
            "/loop_a", "/loop_b/x", "/sub/parent2/" + name, "/sub/secret_rel",
            "/sub/up/sub/parent2/" + name, "/sub/up/escape.txt",
            # names Windows would alter or map to devices, streams
            "/" + name + "::$DATA", "/index.html::$DATA", "/index.html.", "/index.html%20",
            "/index.html%2e", "/CON", "/aux.txt", "/sub/nul", "/COM1.jpg",
            # directories and empty segments
            "/sub", "/sub/", "/icons/", "//index.html", "/sub//ok.txt",
            # very long paths (request line limit, segment limit, reader limit)
            "/" + "../" * 3000 + name, "/" + "%2e%2e/" * 2000 + name, "/" + "a" * 300,
            "/" + "x/" * 4100, "/" + "a" * 30000,
            "/~root/.bashrc", "/%7eroot/.bashrc",
        ]
        return targets

    def check_refused(self, target):
        status, body, raw = self.get(target)
        self.assertNotIn(self.marker, raw, target)
        self.assertNotIn(b"root:x:0:0", raw, target)
        self.assertIsNotNone(status, "no answer to %r" % target)
        self.assertTrue(400 <= status < 500, "%r got %r" % (target, status))

    def test_hostile_targets_never_leave_the_web_folder(self):
        targets = self.hostile_targets()
        self.assertGreaterEqual(len(targets), 60)
        # Positive controls: the same server does serve the folder's files,
        # through a symlink that stays inside too.
        self.assertEqual(self.get("/sub/ok.txt")[:2], (200, b"ok\n"))
        self.assertEqual(self.get("/sub/up/sub/ok.txt")[:2], (200, b"ok\n"))
        for start in range(0, len(targets), 25):
            batch = targets[start:start + 25]
            for target in batch:
                with self.subTest(target=target[:80]):
                    self.check_refused(target)
            self.assert_index_served()

    def test_raw_bytes_in_target(self):
        """Bytes a URL may not carry, sent raw: NUL, tab, VT, DEL, high bytes, UTF-8."""
        raw_targets = [b"/\x00", b"/..\x00/" + self.beside_name.encode(), b"/\x7f", b"/\xff\xfe",
                       b"/\xc0\xae\xc0\xae/" + self.beside_name.encode(), b"/\xe2\x80\xa4\xe2\x80\xa4/x",
                       b"/\xef\xbc\x8e\xef\xbc\x8e/" + self.beside_name.encode(), b"/\t/", b"/.\x0b./x"]
        for target in raw_targets:
            with self.subTest(target=target):
                self.check_refused(target)
        self.assert_index_served()

    def test_split_target_never_yields_an_escaping_segment(self):
        """The pure resolver, over many generated targets: a refusal (4xx) or
        segments that cannot climb, hide or name a drive."""
        rng = random.Random(1)
        pieces = DOTS + SEPARATORS + ["a", "sub", "%2e", ".", "%00", ":", "%3a", "C:", "%25",
                                      "%e2%80%a4", "%ef%bc%8e", "~", ";", "?", "#", "%3f", " ", "%20"]
        for _ in range(5000):
            target = "/" + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
            try:
                segments = alsserve.split_target(target)
            except alsserve.HTTPError as error:
                self.assertTrue(400 <= error.status < 500, target)
                continue
            for segment in segments:
                self.assertTrue(segment and not segment.startswith("."), (target, segments))
                self.assertFalse(set("/\\\0:") & set(segment), (target, segments))
                self.assertNotIn(segment, (".", ".."), target)



# =============================================================================
# 2. Malformed HTTP
# =============================================================================

VALID_HEADS = [
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: Mozilla/5.0\r\nAccept: */*\r\n"
    b"Accept-Encoding: gzip, deflate\r\nConnection: keep-alive\r\n\r\n",
    b"GET /web_image.jpg?timestamp=1700000000000 HTTP/1.1\r\nHost: a\r\nRange: bytes=0-99\r\n"
    b"If-None-Match: \"1-2-3\"\r\nIf-Range: \"1-2-3\"\r\n\r\n",
    b"HEAD /data.json HTTP/1.0\r\nConnection: keep-alive\r\n"
    b"If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n",
    support.ws_handshake_request(),
    b"GET /icons/home_rest.png HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nRange: bytes=-5\r\n\r\n",
    b"GET http://127.0.0.1/index.html HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    b"\r\nGET /favicon.ico HTTP/1.1\r\nhost:a\r\nX-Empty:\r\n\r\n",
]
INTERESTING = [b"\r", b"\n", b"\r\n", b" ", b"\t", b":", b"\x00", b"\x7f", b"\xff", b"\x80", b"%",
               b"/", b".", b"..", b"0", b"9" * 30, b",", b";", b'"', b"\xb2", b"-", b"=", b"HTTP/1.1",
               b"\r\n\r\n", b"\r\n ", b"chunked", b"%00", b"%2e%2e", b"\\", b"?", b"#", b"*"]
HEADER_LINES = [
    b"Transfer-Encoding: chunked", b"Transfer-Encoding: identity", b"Content-Length: 5",
    b"Content-Length: 0", b"Content-Length: 00", b"Content-Length: " + b"9" * 5000,
    b"Content-Length: " + b"0" * 5000, b"Content-Length: \xb2", b"Content-Length: -1",
    b"Content-Length: 0, 0", b"Transfer-Encoding : chunked", b" folded", b"\tfolded",
    b"Host: second", b"X Y: z", b"X:\x00", b": empty name", b"NoColon",
    b"Range: bytes=" + b"1" * 5000 + b"-", b"Range: bytes=0-" + b"9" * 5000,
    b"Range: bytes=\xb2-\xb3", b"Range: bytes=-\xb9", b"Range: bytes=5-1", b"Range: bytes=0-0,1-1",
    b"If-Modified-Since: Mon, 01 Jan 0001 00:00:00 GMT",
    b"If-Modified-Since: Fri, 31 Dec 9999 23:59:59 +1400", b"If-Modified-Since: \xff\xfe",
    b"If-Modified-Since: 99 Jan 99999999999 99:99:99", b"If-None-Match: *", b"If-Range: x",
    b"Connection: close, upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Version: 8",
    b"Sec-WebSocket-Key: \xff\xfe", b"Sec-WebSocket-Key: ====", b"Connection: \xb2keep-alive",
]
METHODS = [b"GET", b"HEAD", b"POST", b"PUT", b"get", b"G\x00T", b"", b"GET GET", b"\xffGET",
           b"OPTIONS", b"CONNECT", b"TRACE", b"PRI", b"G{T"]
TARGETS = [b"/", b"/web_image.jpg", b"/ws", b"*", b"//", b"/..", b"/%2e%2e/x", b"", b"/\x00",
           b"/a b", b"http://a/b", b"/" + b"a" * 9000, b"/?q=\xff", b"/#frag", b"\\"]
VERSIONS = [b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2.0", b"HTTP/0.9", b"HTTP/1.10", b"http/1.1",
            b"HTTP/1.1 ", b"HTTP/ 1.1", b"HTTP/9.9", b"HTTP/1", b"HTTP/1.1\x00", b"", b"HTTPS/1.1"]
HEADER_NAMES = [b"Host", b"host", b"Content-Length", b"Transfer-Encoding", b"Connection",
                b"Upgrade", b"Range", b"If-None-Match", b"If-Modified-Since", b"If-Range",
                b"Sec-WebSocket-Key", b"Sec-WebSocket-Version", b"X-\xff", b"X Y", b"", b"X\t"]
HEADER_VALUES = [b"a", b"", b"0", b"chunked", b"close", b"keep-alive", b"websocket", b"upgrade",
                 b"bytes=0-10", b"bytes=-1", b"bytes=9999999999999999999999-", b"\xb2", b"\x00",
                 b"x\ry", b"x\ny", b" padded ", b"\t", b"dGhlIHNhbXBsZSBub25jZQ==", b"13",
                 b"W/\"x\"", b"Thu, 01 Jan 1970 00:00:00 GMT", b"1" * 100]


def server_head(data):
    """The first request head the server's reader would hand to
    parse_request: up to the first blank line, leading empty lines
    skipped. None when the bytes hold no complete head."""
    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            return None
        head, data = data[:end + 4].lstrip(b"\r\n"), data[end + 4:]
        if head:
            return head


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(10)
        pos = rng.randint(0, len(data))
        if op == 0 and data:
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif op == 1:
            data[pos:pos] = rng.choice(INTERESTING)
        elif op == 2:
            del data[pos:pos + rng.randint(1, 20)]
        elif op == 3:
            lines = bytes(data).split(b"\r\n")
            i = rng.randrange(len(lines))
            lines.insert(i, lines[i])
            data = bytearray(b"\r\n".join(lines))
        elif op in (4, 5):
            first = data.find(b"\r\n")
            at = first + 2 if first >= 0 and rng.random() < 0.8 else pos
            data[at:at] = rng.choice(HEADER_LINES) + b"\r\n"
        elif op == 6:
            crlf = [i for i in range(len(data) - 1) if data[i:i + 2] == b"\r\n"]
            if crlf:
                i = rng.choice(crlf)
                data[i:i + 2] = rng.choice([b"\n", b"\r", b"\n\r", b"\r\r\n", b"\r\n\t"])
        elif op == 7:
            data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == 8:
            data[pos:pos] = rng.choice(b"a/.% ") .to_bytes(1, "big") * rng.choice([100, 300, 8200, 17000])
        else:
            at = max(0, data.find(b"\r\n") + 2)
            data[at:at] = b"".join(b"X-%d: y\r\n" % i for i in range(rng.choice([50, 99, 101, 150])))
    return bytes(data)


def generated_head(rng):
    """A request assembled from hostile parts."""
    sep = lambda: rng.choice([b" "] * 8 + [b"  ", b"\t", b""])
    line = rng.choice(METHODS) + sep() + rng.choice(TARGETS) + sep() + rng.choice(VERSIONS)
    headers = []
    for _ in range(rng.randint(0, 6)):
        name = rng.choice(HEADER_NAMES)
        colon = rng.choice([b":", b": ", b":  ", b" :", b":\t", b""])
        headers.append(name + colon + rng.choice(HEADER_VALUES))
    if rng.random() < 0.3:
        headers.append(rng.choice(HEADER_LINES))
    rng.shuffle(headers)
    return b"\r\n".join([line] + headers) + b"\r\n\r\n"


def random_case(rng):
    kind = rng.random()
    if kind < 0.5:
        data = mutate(rng, rng.choice(VALID_HEADS))
    elif kind < 0.9:
        data = generated_head(rng)
        if rng.random() < 0.3:
            data = mutate(rng, data)
    else:
        data = bytes(rng.randrange(256) for _ in range(rng.randint(0, 200)))
        if rng.random() < 0.5:
            data += b"\r\n\r\n"
    if rng.random() < 0.5:
        return server_head(data) or data
    return data


class HTTPParserFuzzTests(unittest.TestCase):
    """parse_request and what the server does with its result, as pure
    functions: only a Request or an HTTPError with a 4xx/5xx status."""

    def check_request(self, request, head):
        self.assertTrue(request.method and all(c in alsserve._TOKEN_CHARS for c in request.method.encode()))
        self.assertIn(request.version, ("HTTP/1.0", "HTTP/1.1"))
        self.assertFalse(any(ord(c) <= 32 or ord(c) >= 127 for c in request.target))
        for name, value in request.headers:
            self.assertEqual(name, name.lower())
            self.assertFalse(set(name) & set(" \t\r\n\0:"), head)
            self.assertFalse(set(value) & set("\r\n\0"), head)
        names = [name for name, _ in request.headers]
        self.assertNotIn("transfer-encoding", names, head)
        for name, value in request.headers:
            if name == "content-length":
                self.assertEqual(value.strip("0"), "", head)
        if request.version == "HTTP/1.1":
            self.assertEqual(names.count("host"), 1, head)
        self.assertIn(request.keep_alive, (True, False))
        # What the server then does with a parsed request, all pure too.
        try:
            segments = alsserve.split_target(request.target)
            for segment in segments:
                self.assertFalse(segment.startswith(".") or set("/\\\0:") & set(segment), head)
        except alsserve.HTTPError as error:
            self.assertTrue(400 <= error.status < 500, head)
        for size in (0, 1, 100, 10 ** 7):
            try:
                selected = alsserve.parse_range(request.header("range"), size)
            except alsserve.HTTPError as error:
                self.assertEqual(error.status, 416, head)
            else:
                if selected is not None:
                    self.assertTrue(0 <= selected[0] <= selected[1] < size, (head, selected))
        self.assertIn(alsserve.not_modified(request, '"1-2-3"', 784111777.0), (True, False))
        try:
            response = alsserve.websocket_handshake(request)
            self.assertEqual(response.status, 101)
        except alsserve.HTTPError as error:
            self.assertIn(error.status, (400, 426), head)

    def check_head(self, head):
        try:
            request = alsserve.parse_request(head)
        except alsserve.HTTPError as error:
            self.assertIn(error.status, HTTP_PARSE_STATUSES, head[:300])
            self.assertTrue(error.close, head[:300])
            return error
        self.check_request(request, head[:300])
        return request

    def test_parse_request_fuzz(self):
        rng = random.Random(20240601)
        outcomes = {}
        for case in range(25000):
            head = random_case(rng)
            try:
                result = self.check_head(head)
            except AssertionError:
                raise
            except Exception as error:
                self.fail("case %d: %s: %r from %r" % (case, type(error).__name__, error, head[:300]))
            key = getattr(result, "status", "ok")
            outcomes[key] = outcomes.get(key, 0) + 1
        # The generator reaches every outcome (the fuzz is not all 400s).
        self.assertGreater(outcomes.get("ok", 0), 500, outcomes)
        for status in HTTP_PARSE_STATUSES:
            self.assertGreater(outcomes.get(status, 0), 10, outcomes)

    def test_header_values_fuzz(self):
        """Valid requests whose Range and conditional headers are hostile."""
        rng = random.Random(7)
        for case in range(10000):
            lines = [b"GET /web_image.jpg HTTP/1.1", b"Host: a"]
            for name in rng.sample([b"Range", b"If-Range", b"If-None-Match", b"If-Modified-Since",
                                    b"Connection", b"Content-Length"], rng.randint(1, 4)):
                value = b"".join(rng.choice(INTERESTING + HEADER_VALUES) for _ in range(rng.randint(0, 4)))
                if name == b"Range" and rng.random() < 0.7:
                    value = b"bytes=" + value
                lines.append(name + b": " + value)
            head = b"\r\n".join(lines) + b"\r\n\r\n"
            try:
                self.check_head(head)
            except AssertionError:
                raise
            except Exception as error:
                self.fail("case %d: %s: %r from %r" % (case, type(error).__name__, error, head[:300]))


def count_responses(raw):
    return raw.count(b"\r\nServer: alsserve/")


class MalformedHTTPTests(HardeningCase):
    """The same kind of input over real sockets: an error status and a
    close, or a close; never a hang, a second answer or an ERROR."""

    settings = {"header_timeout": 3.0}

    def send_and_collect(self, data, half_close=True, timeout=5.0):
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            try:
                sock.sendall(data)
                if half_close:
                    sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass                        # the server may have answered and closed already
            started = time.monotonic()
            raw = support.recv_until_close(sock, timeout)
            return raw, time.monotonic() - started

    def test_fuzz_over_sockets(self):
        rng = random.Random(99)
        cases = []
        while len(cases) < 300:
            data = random_case(rng)
            head = server_head(data)
            if head is None or len(data) > 16000:
                continue
            try:
                alsserve.parse_request(head)
            except alsserve.HTTPError as error:
                cases.append((data, error.status))
        # And some whose head never completes or exceeds the reader's limit.
        cases += [(b"GET / HTTP/1.1\r\nHost: a\r\n", None), (b"\xff" * 100, None),
                  (b"GET /" + b"a" * 30000 + b" HTTP/1.1\r\n\r\n", 414),
                  (b"GET / HTTP/1.1\r\n" + b"X: " + b"y" * 30000 + b"\r\n\r\n", 431)]

        def run(case):
            data, status = case
            raw, elapsed = self.send_and_collect(data)
            return data, status, raw, elapsed

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(run, cases))
        for data, status, raw, elapsed in results:
            with self.subTest(data=data[:120]):
                self.assertLess(elapsed, 4.0)
                if status is None:
                    self.assertEqual(raw, b"")
                    continue
                self.assertTrue(raw.startswith(b"HTTP/1.1 %d " % status), raw[:100])
                self.assertEqual(count_responses(raw), 1, raw[:300])
                self.assertIn(b"\r\nConnection: close\r\n", raw.partition(b"\r\n\r\n")[0] + b"\r\n")
        self.assert_index_served()

    def test_hostile_header_values_never_get_5xx(self):
        """Requests that parse, with hostile Range and conditional headers,
        get 200, 206, 304 or 416, whatever the values."""
        rng = random.Random(3)
        cases = [b"Range: bytes=" + b"1" * 5000 + b"-", b"Range: bytes=0-" + b"9" * 5000,
                 b"Range: bytes=\xb2-\xb3", b"Range: bytes=-\xb9", b"Range: bytes=\xb9\xb2-",
                 b"If-Modified-Since: Mon, 01 Jan 0001 00:00:00 GMT",
                 b"If-Modified-Since: Fri, 31 Dec 9999 23:59:59 +1400"]
        for _ in range(150):
            name = rng.choice([b"Range", b"If-Range", b"If-None-Match", b"If-Modified-Since"])
            value = b"".join(rng.choice(HEADER_VALUES + [b"\xb2", b"\xb9", b"-", b"9" * 4400, b","])
                             for _ in range(rng.randint(1, 3)))
            if b"\x00" in value or b"\r" in value or b"\n" in value:
                continue
            cases.append(name + b": " + (b"bytes=" if name == b"Range" else b"") + value)

        def run(line):
            status, _, raw = self.get("/web_image.jpg", headers=line + b"\r\n")
            return line, status

        with ThreadPoolExecutor(6) as pool:
            for line, status in pool.map(run, cases):
                with self.subTest(header=line[:80]):
                    self.assertIn(status, (200, 206, 304, 416))

    SMUGGLED = b"GET /web_image.jpg HTTP/1.1\r\nHost: a\r\n\r\n"
    SHAPES = {
        "CL+TE": b"Content-Length: 41\r\nTransfer-Encoding: chunked\r\n",
        "TE+CL": b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        "TE alone": b"Transfer-Encoding: chunked\r\n",
        "TE identity": b"Transfer-Encoding: identity\r\n",
        "duplicate CL": b"Content-Length: 0\r\nContent-Length: 41\r\n",
        "duplicate CL same value": b"Content-Length: 0\r\nContent-Length: 0\r\n",
        "CL list": b"Content-Length: 0, 41\r\n",
        "CL sign": b"Content-Length: +0\r\n",
        "CL hex": b"Content-Length: 0x0\r\n",
        "CL superscript": b"Content-Length: \xb2\r\n",
        "obs-fold": b"X-Fold: a\r\n Transfer-Encoding: chunked\r\n",
        "obs-fold tab": b"X-Fold: a\r\n\tb\r\n",
        "bare CR": b"X-A: a\rTransfer-Encoding: chunked\r\n",
        "bare LF in header line": b"X-A: a\nTransfer-Encoding: chunked\r\n",
        "bare LF ends line": b"X-A: a\nX-B: b\r\n",
        "name with space": b"Transfer Encoding: chunked\r\n",
        "name with space 2": b"X Y: z\r\n",
        "space before colon": b"Transfer-Encoding : chunked\r\n",
        "space before colon CL": b"Content-Length : 41\r\n",
        "tab before colon": b"Content-Length\t: 41\r\n",
        "NUL in value": b"X-A: a\x00b\r\n",
        "second Host": b"Host: b\r\n",
    }

    def test_smuggling_shapes_get_400_and_close(self):
        for name, lines in sorted(self.SHAPES.items()):
            with self.subTest(shape=name):
                data = b"GET / HTTP/1.1\r\nHost: a\r\n" + lines + b"\r\n" + self.SMUGGLED
                raw, elapsed = self.send_and_collect(data, half_close=False)
                self.assertTrue(raw.startswith(b"HTTP/1.1 400 "), raw[:100])
                self.assertEqual(count_responses(raw), 1, "the smuggled request was answered")
                self.assertIn(b"\r\nConnection: close\r\n", raw)
                self.assertLess(elapsed, 2.5, "the server did not close the connection")
        # A request line ended by a bare LF, and a body on a GET.
        for data, status in [(b"GET / HTTP/1.1\nHost: a\r\n\r\n" + self.SMUGGLED, 400),
                             (b"GET / HTTP/1.0\r\nContent-Length: 41\r\n\r\n" + self.SMUGGLED, 413)]:
            raw, elapsed = self.send_and_collect(data, half_close=False)
            self.assertTrue(raw.startswith(b"HTTP/1.1 %d " % status), raw[:100])
            self.assertEqual(count_responses(raw), 1)
            self.assertLess(elapsed, 2.5)
        self.assert_index_served()


# =============================================================================
# 3. Malformed WebSocket
# =============================================================================

CLOSE_CODES = [1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1011, 1014, 1015, 1016, 2999,
               3000, 4999, 5000, 0, 999, 65535]
TEXTS = [b"", b"hello", "caf\u00e9 \u2605".encode(), b"\xff", b"\xc3", b"\xed\xa0\x80",
         b"\xf4\x90\x80\x80", b"\xc0\xaf", b"ok\xe2\x82", "\U0001f52d".encode()]


def random_payload(rng, opcode):
    if opcode == 8:
        choice = rng.random()
        if choice < 0.2:
            return b""
        if choice < 0.3:
            return bytes([rng.randrange(256)])
        return rng.choice(CLOSE_CODES).to_bytes(2, "big") + rng.choice(TEXTS)[:rng.randint(0, 123)]
    if opcode in (0, 1) and rng.random() < 0.7:
        return b"".join(rng.choice(TEXTS) for _ in range(rng.randint(0, 3)))
    size = rng.choice([0, 1, 5, 50, 125, 126, 127, 200, 1000, 1001, 3000])
    return bytes(rng.randrange(256) for _ in range(min(size, 64))) * (size // 64 + 1) if size else b""


def encode_client_frame(rng, opcode, payload, fin=True, rsv=0, liberties=True):
    """A client frame, with some liberties unless told otherwise: a missing
    mask, a non-minimal or lying length, the top bit of a 64-bit length."""
    first = (0x80 if fin else 0) | (rsv << 4) | opcode
    masked = not liberties or rng.random() < 0.95
    length = len(payload)
    if liberties and rng.random() < 0.05:
        length = rng.choice([length + 1, max(0, length - 1), 2 ** 63 + 5, 2 ** 40, 70000])
    form = rng.choice(["min"] * 8 + ["16", "64"]) if liberties else "min"
    if form == "min":
        form = "7" if length < 126 else "16" if length < 65536 else "64"
    if form == "16" and length >= 65536:
        form = "64"
    if form == "7":
        head = bytes([first, length])
    elif form == "16":
        head = bytes([first, 126]) + length.to_bytes(2, "big")
    else:
        head = bytes([first, 127]) + length.to_bytes(8, "big")
    if not masked:
        return head + payload
    mask = bytes(rng.randrange(256) for _ in range(4))
    head = bytes([head[0], head[1] | 0x80]) + head[2:]
    return head + mask + alsserve.mask_bytes(mask, payload)


def plausible_frames(rng):
    """Valid messages, fragmented or not, with control frames in between,
    then at most one defect."""
    frames = []
    for _ in range(rng.randint(1, 4)):
        opcode = rng.choice([1, 2, 9, 10, 1, 2])
        if opcode >= 8:
            frames.append(encode_client_frame(rng, opcode, b"p" * rng.randint(0, 125), liberties=False))
            continue
        parts = rng.randint(1, 4)
        for i in range(parts):
            payload = rng.choice(TEXTS[:3]) * rng.randint(0, 20) if opcode == 1 else random_payload(rng, 2)[:300]
            frames.append(encode_client_frame(rng, opcode if i == 0 else 0, payload,
                                              fin=i == parts - 1, liberties=False))
            if rng.random() < 0.2:
                frames.append(encode_client_frame(rng, 9, b"ping", liberties=False))
    if rng.random() < 0.4:
        code = rng.choice([1000, 1001, 3000, 4999]).to_bytes(2, "big")
        frames.append(encode_client_frame(rng, 8, rng.choice([b"", code, code + b"bye"]), liberties=False))
    if rng.random() < 0.5:
        i = rng.randrange(len(frames))
        frame = bytearray(frames[i])
        field = rng.randrange(4)
        if field == 0:
            frame[0] ^= 1 << rng.randrange(8)           # FIN, RSV or opcode bit
        elif field == 1:
            frame[1] ^= 0x80                            # the mask bit
        elif field == 2:
            frame[1] = (frame[1] & 0x80) | rng.randrange(128)    # the length
        else:
            frames.insert(i, encode_client_frame(rng, rng.randrange(16), random_payload(rng, 2),
                                                 fin=rng.random() < 0.5))
        frames[i] = bytes(frame)
    return b"".join(frames)


def random_frames(rng):
    """1-6 frames, mostly plausible, sometimes broken, sometimes mutated."""
    if rng.random() < 0.5:
        return plausible_frames(rng)
    frames = []
    for _ in range(rng.randint(1, 6)):
        opcode = rng.choice([0, 1, 2, 8, 9, 10] * 5 + list(range(16)))
        fin = rng.random() < 0.75
        rsv = 0 if rng.random() < 0.93 else rng.randrange(1, 8)
        frames.append(encode_client_frame(rng, opcode, random_payload(rng, opcode), fin, rsv))
    data = bytearray(b"".join(frames))
    if rng.random() < 0.2 and data:
        for _ in range(rng.randint(1, 3)):
            op, pos = rng.randrange(3), rng.randrange(len(data))
            if op == 0:
                data[pos] = rng.randrange(256)
            elif op == 1:
                del data[pos:pos + rng.randint(1, 8)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            if not data:
                break
    return bytes(data)


def parse_outcome(data, chunks=None, max_message=1000):
    """Feed data to a FrameParser (in one piece or the given chunk sizes):
    (events as tuples, error code or None)."""
    parser = alsserve.FrameParser(max_message)
    events = []
    pieces = [data] if not chunks else []
    position = 0
    for size in chunks or ():
        pieces.append(data[position:position + size])
        position += size
    if chunks:
        pieces.append(data[position:])
    try:
        for piece in pieces:
            for event in parser.feed(piece):
                if isinstance(event, alsserve.Message):
                    events.append(("message", int(event.opcode), event.data))
                elif isinstance(event, alsserve.Close):
                    events.append(("close", event.code, event.reason))
                else:
                    events.append((type(event).__name__.lower(), event.payload))
    except alsserve.WebSocketProtocolError as error:
        return events, int(error.code)
    return events, None


class FrameParserFuzzTests(unittest.TestCase):

    def check_events(self, events, max_message, data):
        for event in events:
            if event[0] == "message":
                _, opcode, payload = event
                self.assertIn(opcode, (1, 2), data[:80])
                self.assertIsInstance(payload, str if opcode == 1 else bytes)
                size = len(payload.encode("utf-8")) if opcode == 1 else len(payload)
                self.assertLessEqual(size, max_message, data[:80])
            elif event[0] == "close":
                self.assertTrue(event[1] is None or alsserve.is_valid_close_code(event[1]), data[:80])
                self.assertIsInstance(event[2], str)
                self.assertIs(event, events[-1], "events after a Close")
            else:
                self.assertIn(event[0], ("ping", "pong"))
                self.assertLessEqual(len(event[1]), 125)

    def test_frame_parser_fuzz(self):
        rng = random.Random(6455)
        errors = {}
        for case in range(6000):
            data = random_frames(rng)
            max_message = rng.choice([1000, alsserve.Settings.ws_max_message])
            try:
                events, code = parse_outcome(data, max_message=max_message)
                # The same bytes in random pieces give the same outcome.
                cuts, left = [], len(data)
                while left > 0 and len(cuts) < 8:
                    cuts.append(rng.randint(0, min(left, 40)))
                    left -= cuts[-1]
                chunked_events, chunked_code = parse_outcome(data, cuts, max_message)
            except Exception as error:
                self.fail("case %d: %s: %r from %r" % (case, type(error).__name__, error, data[:200]))
            self.assertEqual(code, chunked_code, data[:200])
            if code is None:
                self.assertEqual(events, chunked_events, data[:200])
            else:
                self.assertIn(code, WS_ERROR_CODES, data[:200])
                self.assertTrue(alsserve.is_valid_close_code(code))
            self.check_events(chunked_events, max_message, data)
            errors[code] = errors.get(code, 0) + 1
        for code in [None] + sorted(WS_ERROR_CODES):
            self.assertGreater(errors.get(code, 0), 20, errors)


class MalformedWebSocketTests(HardeningCase):

    settings = {"ws_max_message": 1000}

    def run_case(self, data, expected):
        """Send data after a handshake; return (close code, pong payloads) or
        'drop' when the connection ended without a Close frame."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(support.ws_handshake_request())
            status, _, rest = support.read_response_head(sock)
            self.assertEqual(status, 101)
            client = support.WSClient(sock, rest)
            try:
                sock.sendall(data)
            except OSError:
                pass
            try:
                while True:
                    opcode, fin, payload = client.recv_frame(timeout=4)
                    self.assertTrue(fin)
                    if opcode == alsserve.Opcode.CLOSE:
                        code = int.from_bytes(payload[:2], "big") if payload else None
                        if code is not None:
                            payload[2:].decode("utf-8")
                        return code
                    self.assertIn(opcode, (alsserve.Opcode.PONG, alsserve.Opcode.TEXT))
            except ConnectionError:
                return "drop"

    def test_fuzz_over_sockets(self):
        healthy = self.ws_connect()
        rng = random.Random(1202)
        cases = []
        while len(cases) < 300:
            data = random_frames(rng)
            events, code = parse_outcome(data, max_message=1000)
            if code is not None:
                cases.append((data, code))
            elif events and events[-1][0] == "close":
                cases.append((data, events[-1][1]))     # the server echoes the code
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda case: (case, self.run_case(*case)), cases))
        for (data, expected), got in results:
            with self.subTest(data=data[:60]):
                self.assertIn(got, (expected, "drop"))
        drops = sum(1 for _, got in results if got == "drop")
        self.assertLess(drops, 10, "most protocol errors end with a Close frame")
        # The server still serves a healthy client.
        self.wait_for(lambda: self.server.client_count == 1, message="fuzzed clients gone")
        self.server.notify_browsers_about_new_image()
        while True:
            opcode, _, payload = healthy.recv_frame()
            if opcode == alsserve.Opcode.TEXT:
                break
        self.assertEqual(payload, b'{"type": "new_image"}')
        self.assert_index_served()


# =============================================================================
# 4. Slow and silent clients
# =============================================================================

class SlowClientTests(HardeningCase):

    settings = {"header_timeout": 2.0, "keepalive_timeout": 1.5}

    def load_page_and_image(self):
        """What a browser does: the page, then the image, on one connection."""
        with open(os.path.join(self.folder, "web_image.jpg"), "rb") as f:
            image = f.read()
        started = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body, rest = support.read_response(sock)
            self.assertEqual(status, 200)
            self.assertIn(b"<html", body.lower())
            sock.sendall(b"GET /web_image.jpg?timestamp=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, body, _ = support.read_response(sock, rest)
            self.assertEqual(status, 200)
            self.assertEqual(body, image)
        return time.monotonic() - started

    def test_slowloris_and_silent_clients(self):
        sockets = []
        opened = time.monotonic()
        for i in range(200):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            self.addCleanup(sock.close)
            sockets.append(sock)
            if i % 2 == 0:
                sock.sendall(b"GET / HTTP/1.1\r\n")
        slow = sockets[::2]
        stop = threading.Event()

        def drip():
            """One more header byte per second on every slow connection."""
            line = b"X-Slow: " + b"a" * 100
            position = 0
            while not stop.wait(1.0):
                for sock in slow:
                    try:
                        sock.send(line[position:position + 1])
                    except OSError:
                        pass
                position += 1

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        self.addCleanup(dripper.join, 5)
        self.addCleanup(stop.set)
        self.wait_for(lambda: len(self.site.connections) >= 200, message="200 connections open")
        # A normal client is served at once, twice.
        for _ in range(2):
            self.assertLess(self.load_page_and_image(), 1.0)
        # The header timeout drops every slow and silent connection.
        closed_at = []
        for sock in sockets:
            self.assertTrue(wait_closed(sock, 2.0 + 4.0 - (time.monotonic() - opened)),
                            "a slow client was not dropped")
            closed_at.append(time.monotonic() - opened)
        self.assertGreater(min(closed_at), 1.5, "dropped before the header timeout")
        stop.set()
        self.wait_for(lambda: not self.site.connections, message="connections forgotten")
        self.assertLess(self.load_page_and_image(), 1.0)

    def test_idle_keepalive_connection_is_closed(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            status, _, _, _ = support.read_response(sock)
            self.assertEqual(status, 200)
            started = time.monotonic()
            self.assertTrue(wait_closed(sock, 5.0))
            self.assertGreater(time.monotonic() - started, 1.0)
        self.wait_for(lambda: not self.site.connections, message="connection forgotten")


# =============================================================================
# 5. Overload
# =============================================================================

class OverloadTests(HardeningCase):

    settings = {"max_connections": 50, "header_timeout": 10.0, "ws_max_clients": 5}

    def flood(self, extra=100):
        """Fill the cap with silent connections, then knock `extra` more times.
        Returns how many of the extra got a 503 (the others were closed)."""
        held = []
        try:
            for _ in range(50):
                held.append(socket.create_connection(("127.0.0.1", self.port), timeout=5))
            self.wait_for(lambda: len(self.site.connections) >= 50, message="the cap filled")
            refused = 0
            for _ in range(extra):
                with socket.create_connection(("127.0.0.1", self.port), timeout=3) as sock:
                    try:
                        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
                        raw = support.recv_until_close(sock, 3.0)
                    except socket.timeout:
                        self.fail("a connection beyond the cap hangs")
                    except OSError:
                        raw = b""
                    if raw:
                        self.assertTrue(raw.startswith(b"HTTP/1.1 503 "), raw[:100])
                        refused += 1
            self.assertEqual(len(self.site.connections), 50, "connections beyond the cap were kept")
            return refused
        finally:
            for sock in held:
                linger_rst(sock)
                sock.close()

    def test_connections_beyond_the_cap_are_refused(self):
        refused = self.flood()
        self.assertGreater(refused, 50, "the refusals say 503")
        self.wait_for(lambda: not self.site.connections, message="held connections forgotten")
        self.assert_index_served()

    def test_websocket_clients_beyond_their_cap_are_refused(self):
        clients = [self.ws_connect() for _ in range(5)]
        for _ in range(3):
            raw = self.exchange(support.ws_handshake_request(), timeout=3.0)
            self.assertTrue(raw.startswith(b"HTTP/1.1 503 "), raw[:100])
            self.assertEqual(count_responses(raw), 1)
        clients[0].send(alsserve.Opcode.CLOSE, (1000).to_bytes(2, "big"))
        self.assertEqual(clients[0].recv_close(), 1000)
        self.wait_for(lambda: self.server.client_count == 4, message="a place freed")
        self.ws_connect()
        self.server.notify_browsers_about_new_image()
        for client in clients[1:]:
            self.assertEqual(client.recv_frame()[2], b'{"type": "new_image"}')

    def test_memory_returns_to_baseline_after_floods(self):
        self.flood(50)                          # warm up: first allocations are not leaks
        self.wait_for(lambda: not self.site.connections, message="warm-up connections forgotten")
        baseline = support.rss_kib()
        if baseline is None:
            self.skipTest("no /proc/self/status")
        for _ in range(6):
            self.flood(100)
            self.wait_for(lambda: not self.site.connections, message="flood connections forgotten")
        self.assert_index_served()
        grown = support.rss_kib() - baseline
        self.assertLess(grown, 8 * 1024, "RSS grew by %d KiB over 900 connections" % grown)


# =============================================================================
# 6. Abrupt disconnects
# =============================================================================

class AbruptDisconnectTests(HardeningCase):

    def setUp(self):
        super().setUp()
        self.server.publish_image(support.make_jpeg(6 * 1024 * 1024, b"\x42"))

    def vanish(self, sock, how):
        if how == "rst":
            linger_rst(sock)
        sock.close()

    def test_clients_vanishing_mid_header_mid_download_mid_frame(self):
        for how in ("rst", "fin"):
            for _ in range(20):             # mid-header
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(b"GET /web_image.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ab")
                self.vanish(sock, how)
            for _ in range(8):              # mid-download of a 6 MB image
                sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                sock.sendall(b"GET /web_image.jpg HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                received = 0
                while received < 300 * 1024:
                    received += len(sock.recv(65536))
                self.vanish(sock, how)
            for _ in range(10):             # mid-frame, with notifications queued for them
                client = self.ws_connect()
                payload = b"x" * 500
                frame = support.client_frame(alsserve.Opcode.TEXT, payload, mask=b"abcd")
                client.send_raw(frame[:len(frame) // 2])
                self.server.notify_browsers_about_new_image()
                self.vanish(client.sock, how)
            self.wait_for(lambda: not self.site.connections and self.server.client_count == 0,
                          message="connections of vanished clients forgotten (%s)" % how)
        self.assertEqual(self.server.client_count, 0)
        self.assert_index_served()
        self.assertLess(len(self.logs.records), 50, "an error loop in the log")
        self.assert_no_error_logs()

    def test_websocket_clients_that_stop_reading_then_vanish(self):
        """Notifications pile up for clients that do not read, then the
        clients reset; the server forgets them and keeps notifying others."""
        healthy = self.ws_connect()
        stuck = [self.ws_connect() for _ in range(10)]
        for sock in (client.sock for client in stuck):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for i in range(300):
            self.server.send_message_text('{"type": "new_image", "n": %d, "pad": "%s"}' % (i, "x" * 2000))
        time.sleep(0.2)
        for client in stuck:
            self.vanish(client.sock, "rst")
        self.wait_for(lambda: self.server.client_count == 1, message="stuck clients forgotten")
        received = 0
        while received < 300:           # (setUp's image may be announced meanwhile: not counted)
            opcode, _, payload = healthy.recv_frame()
            received += opcode == alsserve.Opcode.TEXT and b'"n": ' in payload
        self.assertIn(b'"n": 299', payload)
        self.assert_no_error_logs()


# =============================================================================
# 7. Torn images
# =============================================================================

def image_versions(count=6):
    """Distinct complete JPEGs of 100-300 KB, no two of the same size and no
    size equal to another's chunk boundaries (so a torn copy cannot pass
    for a whole one by size)."""
    sizes = [100 * 1024 + 7 + i * 37 * 1024 + i * 13 for i in range(count)]
    versions = [support.make_jpeg(size, bytes([0x10 + i])) for i, size in enumerate(sizes)]
    boundaries = {s * k // 3 for s in sizes for k in (1, 2)}
    assert not boundaries & set(sizes)
    return versions


class TornImageTests(HardeningCase):

    DOWNLOADS = 1000

    def setUp(self):
        super().setUp()
        self.versions = image_versions()
        self.known = {v: i for i, v in enumerate(self.versions)}
        self.path = os.path.join(self.folder, "web_image.jpg")
        self.server.publish_image(self.versions[0])

    def write_in_place(self, data):
        """As ALS's Save module does: rewrite the same file, in chunks."""
        with open(self.path, "r+b") as f:
            f.truncate(0)
            cut = [0, len(data) // 3, 2 * len(data) // 3, len(data)]
            for start, end in zip(cut, cut[1:]):
                f.write(data[start:end])
                f.flush()
                time.sleep(0.001)       # let readers land between the chunks

    def writer(self, stop, write):
        count = 0
        while not stop.is_set():
            started = time.monotonic()
            write(self.versions[count % len(self.versions)])
            count += 1
            stop.wait(max(0.0, 0.005 - (time.monotonic() - started)))
        return count

    def download_many(self, count, threads=4):
        def worker(n):
            seen = []
            with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                rest = b""
                for i in range(n):
                    sock.sendall(b"GET /web_image.jpg?timestamp=%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
                    status, _, body, rest = support.read_response(sock, rest)
                    seen.append((status, self.known.get(body, body[:8] + body[-8:] + b" len %d" % len(body))))
            return seen

        with ThreadPoolExecutor(threads) as pool:
            results = pool.map(worker, [count // threads] * threads)
            return [item for seen in results for item in seen]

    def run_torn_check(self, write):
        stop = threading.Event()
        with ThreadPoolExecutor(1) as pool:
            writes = pool.submit(self.writer, stop, write)
            try:
                seen = self.download_many(self.DOWNLOADS)
            finally:
                stop.set()
            # (downloads come from memory now, so they take less time: the
            # writer must keep pace for the check to mean something)
            self.assertGreater(writes.result(), 10)
        self.assertEqual(len(seen), self.DOWNLOADS)
        bad = [item for item in seen if item[0] != 200 or not isinstance(item[1], int)]
        self.assertEqual(bad[:5], [], "%d of %d downloads were not a written version" % (len(bad), len(seen)))
        self.assertGreater(len(set(index for _, index in seen)), 2, "the image did not change under the test")

    def test_in_place_rewrites_never_serve_a_torn_image(self):
        self.run_torn_check(self.write_in_place)

    def test_publish_image_never_serves_a_torn_image(self):
        self.run_torn_check(self.server.publish_image)


class SnapshotTests(unittest.TestCase):

    def test_a_write_during_the_read_makes_the_copy_unstable(self):
        """A writer's chunk lands between read_snapshot's first fstat and its
        read: the copy (new bytes over the old file, so it still ends with
        an EOI marker) is not taken as consistent."""
        folder = tempfile.mkdtemp(prefix="alsserve-snapshot-")
        self.addCleanup(shutil.rmtree, folder, True)
        path = os.path.join(folder, "web_image.jpg")
        first, second = support.make_jpeg(50000, b"\x01"), support.make_jpeg(50000, b"\x02")
        with open(path, "wb") as f:
            f.write(first)
        class WrittenWhileRead(io.FileIO):
            """The file, with a writer's chunk landing just before the read."""

            def read(self, size=-1):
                with open(path, "r+b") as f:
                    f.write(second[:20000])
                mtime = os.stat(path).st_mtime_ns + 10 ** 9       # the write's time stamp
                os.utime(path, ns=(mtime, mtime))
                return super().read(size)

        snapshot, stable = alsserve.read_snapshot(path, opener=WrittenWhileRead)
        body = snapshot.body
        self.assertEqual(body, second[:20000] + first[20000:])
        self.assertTrue(alsserve.check_jpeg(body))
        self.assertFalse(stable)


# =============================================================================
# 8. Lifecycle: START/STOP cycles, STOP under load
# =============================================================================

class Responder(threading.Thread):
    """Plays the browsers' part at STOP: reads every WebSocket it is given
    and closes it on the disconnect message, a Close frame or EOF."""

    def __init__(self):
        super().__init__(daemon=True)
        self.sockets = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.disconnects = 0

    def add(self, sock):
        with self.lock:
            self.sockets.append(sock)

    def busy(self):
        with self.lock:
            return bool(self.sockets)

    def run(self):
        while not self.stopping.is_set():
            with self.lock:
                sockets = list(self.sockets)
            if not sockets:
                time.sleep(0.005)
                continue
            readable, _, _ = select.select(sockets, [], [], 0.05)
            for sock in readable:
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if b"disconnect" in data:
                    self.disconnects += 1
                if not data or b"disconnect" in data or b"\x88" in data[:1]:
                    with self.lock:
                        self.sockets.remove(sock)
                    sock.close()
        with self.lock:
            for sock in self.sockets:
                sock.close()


class LifecycleTests(unittest.TestCase):

    def setUp(self):
        self.logs = support.LogCapture().install(self)
        self.addCleanup(lambda: self.assertEqual(self.logs.errors(), [], "the server logged errors"))
        self.folder = tempfile.mkdtemp(prefix="alsserve-lifecycle-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.port = support.free_port()
        self.server = alsserve.ImageServer(self.folder, port=self.port, displayed_address="ip:127.0.0.1")
        self.addCleanup(self.server.stop, 0.5)

    def measure(self):
        """(threads, open fds, RSS KiB) once the threads of stopped servers are gone."""
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline and any(t.name == "alsserve" for t in threading.enumerate()):
            time.sleep(0.01)
        return threading.active_count(), support.open_fd_count(), support.rss_kib()

    def test_start_stop_cycles_leak_nothing(self):
        # A socket the server forgot to close shows up as a ResourceWarning
        # when it is collected.
        catcher = warnings.catch_warnings(record=True)
        caught = catcher.__enter__()
        self.addCleanup(catcher.__exit__, None, None, None)
        warnings.simplefilter("always", ResourceWarning)
        responder = Responder()
        responder.start()
        self.addCleanup(responder.join, 5)
        self.addCleanup(responder.stopping.set)
        quiet = threading.Event()
        done = threading.Event()
        hammered = []

        def hammer():
            """Another browser, connecting whenever it likes."""
            while not done.is_set():
                if quiet.is_set():
                    time.sleep(0.005)
                    continue
                try:
                    hammered.append(support.http_get(self.port, "/favicon.ico", timeout=1.0)[0])
                except (OSError, ValueError, IndexError):
                    time.sleep(0.002)

        hammerer = threading.Thread(target=hammer, daemon=True)
        hammerer.start()
        self.addCleanup(hammerer.join, 5)
        self.addCleanup(done.set)
        baseline = None
        for cycle in range(200):
            self.assertTrue(self.server.start().startswith("http://127.0.0.1:"))
            status, _, body = support.http_get(self.port, "/")
            self.assertEqual(status, 200)
            grace = 0.5
            if cycle % 3:
                responder.add(support.ws_open(self.port).sock)
                self.wait_for_clients(1)
            else:
                grace = 0.0                 # nothing to wait for: STOP at once
            started = time.monotonic()
            self.server.stop(grace)
            self.assertLess(time.monotonic() - started, grace + 0.5)
            self.assertFalse(self.server.running)
            if cycle in (19, 199):
                quiet.set()
                deadline = time.monotonic() + 3
                while responder.busy() and time.monotonic() < deadline:
                    time.sleep(0.01)
                time.sleep(0.05)            # the hammer's last socket closes
                if cycle == 19:
                    baseline = self.measure()
                    quiet.clear()
        done.set()
        hammerer.join(5)
        final = self.measure()
        gc.collect()
        unclosed = [str(w.message) for w in caught if "laddr=('127.0.0.1', %d)" % self.port in str(w.message)]
        self.assertEqual(unclosed[:3], [], "%d server sockets were never closed" % len(unclosed))
        self.assertGreater(responder.disconnects, 100, "browsers were told to disconnect")
        self.assertGreater(hammered.count(200), 50, "the hammer was served during the cycles")
        self.assertLessEqual(final[0], baseline[0], "threads grew: %r -> %r" % (baseline, final))
        self.assertLessEqual(final[1], baseline[1] + 2, "open fds grew: %r -> %r" % (baseline, final))
        self.assertLess(final[2] - baseline[2], 8 * 1024, "RSS grew: %r -> %r" % (baseline, final))

    def wait_for_clients(self, count, timeout=5.0):
        deadline = time.monotonic() + timeout
        while self.server.client_count < count:
            self.assertLess(time.monotonic(), deadline, "WebSocket client not registered")
            time.sleep(0.002)

    def test_stop_with_downloads_and_broadcasts_in_flight(self):
        self.server.start()
        self.server.publish_image(support.make_jpeg(6 * 1024 * 1024, b"\x33"))
        done = threading.Event()
        outcomes = []

        def slow_download():
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=10) as sock:
                    sock.sendall(b"GET /web_image.jpg HTTP/1.1\r\nHost: a\r\n\r\n")
                    while sock.recv(4096):
                        time.sleep(0.02)
                outcomes.append("closed")
            except OSError as error:
                outcomes.append(type(error).__name__)

        def notifier():
            while not done.is_set():
                self.server.notify_browsers_about_new_image()
                self.server.send_message_text('{"type": "news", "pad": "%s"}' % ("x" * 4000))
                time.sleep(0.001)

        threads = [threading.Thread(target=slow_download, daemon=True) for _ in range(6)]
        threads.append(threading.Thread(target=notifier, daemon=True))
        stuck = []
        for _ in range(20):                 # browsers that neither read nor close
            client = support.ws_open(self.port)
            stuck.append(client.sock)
            self.addCleanup(client.sock.close)
        for thread in threads:
            thread.start()
        self.addCleanup(done.set)
        time.sleep(0.5)
        self.assertEqual(self.server.client_count, 20)
        started = time.monotonic()
        self.server.stop(grace=1.0)
        elapsed = time.monotonic() - started
        done.set()
        for thread in threads:              # a download in flight ends at STOP, not
            thread.join(3)                  # after the kernel delivered what it holds
            self.assertFalse(thread.is_alive(), "a client hangs after STOP")
        self.assertLess(elapsed, 1.0 + 0.3, "STOP took %.2f s with a grace of 1 s" % elapsed)
        self.assertEqual(len(outcomes), 6)
        for sock in stuck:                  # once they read what was sent, the end
            self.assertTrue(wait_closed(sock, 5.0), "a WebSocket stayed open after STOP")

if __name__ == "__main__":
    unittest.main()
