"""The HTTP core: pure parser tests (no socket) and end-to-end tests that
talk real bytes to an ImageServer on 127.0.0.1 (raw sockets and http.client).

Covers methods and versions, keep-alive and pipelining, the request limits
and body refusal, path resolution against hostile targets (with a secret
file next to the web folder that must never leak), response headers,
conditional and range requests, errors, the access log, the streaming path
for files too big to cache (with and without sendfile) and the timeouts.
"""

import email.utils
import gzip
import http.client
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
import types
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import (LogCapture, ServerTestCase, count_reads, make_jpeg, make_png, parse_responses,  # noqa: E402
                     read_response, recv_until_close)

import alsserve  # noqa: E402
from alsserve import HTTPError, not_modified, parse_range, parse_request, split_target  # noqa: E402


def raw_request(method="GET", target="/", version="HTTP/1.1", headers=(), host=True, close=True):
    """Request head bytes; target may be bytes to send it exactly."""
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [method.encode() + b" " + target + b" " + version.encode()]
    if host:
        lines.append(b"Host: 127.0.0.1")
    if close:
        lines.append(b"Connection: close")
    for header in headers:
        lines.append(header.encode("latin-1") if isinstance(header, str) else header)
    return b"\r\n".join(lines) + b"\r\n\r\n"


def head_of(method="GET", target="/", version="HTTP/1.1", headers=()):
    """A head for parse_request: Host always present on HTTP/1.1."""
    return raw_request(method, target, version, headers, host=version == "HTTP/1.1", close=False)


def parse_one(data):
    """The single response of a closed connection: (status, headers, body)."""
    responses = parse_responses(data)
    if len(responses) != 1:
        raise AssertionError("expected one response, got %d: %r" % (len(responses), data[:300]))
    return responses[0]


# =============================================================================
# Pure tests: parse_request, split_target, parse_range, not_modified, errors
# =============================================================================

class ParseRequestTests(unittest.TestCase):

    def assertRefused(self, head, status, close=True):
        with self.assertRaises(HTTPError) as cm:
            parse_request(head)
        self.assertEqual(cm.exception.status, status, cm.exception.detail)
        if close:
            self.assertTrue(cm.exception.close, "a refused head must close the connection")
        return cm.exception

    def test_simple_get(self):
        request = parse_request(b"GET /web_image.jpg?timestamp=123 HTTP/1.1\r\nHost: x\r\n"
                                b"If-None-Match:  \"abc\" \t\r\n\r\n")
        self.assertEqual((request.method, request.target, request.version),
                         ("GET", "/web_image.jpg?timestamp=123", "HTTP/1.1"))
        self.assertEqual(request.path, "/web_image.jpg")
        self.assertEqual(request.header("if-none-match"), '"abc"')     # OWS stripped
        self.assertEqual(request.header("host"), "x")
        self.assertTrue(request.keep_alive)

    def test_header_names_are_case_insensitive(self):
        request = parse_request(b"GET / HTTP/1.1\r\nHOST: x\r\nCoNnEcTiOn: Close\r\n\r\n")
        self.assertEqual(request.header("host"), "x")
        self.assertFalse(request.keep_alive)

    def test_http10_without_host_is_accepted(self):
        request = parse_request(b"GET / HTTP/1.0\r\n\r\n")
        self.assertEqual(request.version, "HTTP/1.0")
        self.assertFalse(request.keep_alive)

    def test_keep_alive_rules(self):
        cases = [("HTTP/1.1", [], True), ("HTTP/1.1", ["Connection: close"], False),
                 ("HTTP/1.1", ["Connection: keep-alive"], True),
                 ("HTTP/1.1", ["Connection: Keep-Alive, Close"], False),
                 ("HTTP/1.0", [], False), ("HTTP/1.0", ["Connection: keep-alive"], True),
                 ("HTTP/1.0", ["Connection: Keep-Alive"], True),
                 ("HTTP/1.0", ["Connection: keep-alive, close"], False)]
        for version, headers, expected in cases:
            with self.subTest(version=version, headers=headers):
                self.assertEqual(parse_request(head_of(version=version, headers=headers)).keep_alive, expected)

    def test_other_methods_parse(self):
        # The method is refused later (405), not by the parser.
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"):
            self.assertEqual(parse_request(head_of(method)).method, method)

    def test_garbage_request_lines(self):
        for head in [b"HELLO\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1 extra\r\nHost: x\r\n\r\n",
                     b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", b"GET\t/\tHTTP/1.1\r\nHost: x\r\n\r\n",
                     b" GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"G@T / HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET / http/1.1\r\nHost: x\r\n\r\n", b"GET / FOO/1.1\r\nHost: x\r\n\r\n",
                     b"GET / HTTP/1\r\nHost: x\r\n\r\n", b"GET / HTTP/1.1x\r\nHost: x\r\n\r\n",
                     b"GET /a\x01b HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n",
                     b"GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x02\x00\r\n\r\n",
                     b"GET / HTTP/1.1\r\nHost: x\r\n"]:
            with self.subTest(head=head):
                self.assertRefused(head, 400)

    def test_unsupported_version(self):
        for version in (b"HTTP/2.0", b"HTTP/0.9", b"HTTP/3.0"):
            with self.subTest(version=version):
                self.assertRefused(b"GET / " + version + b"\r\nHost: x\r\n\r\n", 505)

    def test_http11_requires_exactly_one_host(self):
        self.assertRefused(b"GET / HTTP/1.1\r\n\r\n", 400)
        self.assertRefused(b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400)
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400)

    def test_request_line_limit(self):
        def line_of(length):
            target = b"/" + b"a" * (length - len(b"GET / HTTP/1.1"))
            line = b"GET " + target + b" HTTP/1.1"
            self.assertEqual(len(line), length)
            return line + b"\r\nHost: x\r\n\r\n"
        self.assertEqual(parse_request(line_of(alsserve.MAX_REQUEST_LINE)).method, "GET")
        self.assertRefused(line_of(alsserve.MAX_REQUEST_LINE + 1), 414)
        # Without any line end at all (the reader's cut-off), still 414.
        self.assertRefused(b"GET /" + b"a" * alsserve.MAX_REQUEST_LINE, 414)

    def test_header_section_limit(self):
        def with_headers(total):
            # One "X: aaa...\r\n" field sized so the section (after the request
            # line, with the final blank line) is `total` bytes.
            value = b"a" * (total - len(b"Host: x\r\nX: \r\n\r\n"))
            head = b"GET / HTTP/1.1\r\nHost: x\r\nX: " + value + b"\r\n\r\n"
            self.assertEqual(len(head) - len(b"GET / HTTP/1.1\r\n"), total)
            return head
        self.assertEqual(parse_request(with_headers(alsserve.MAX_HEADER_BYTES)).header("host"), "x")
        self.assertRefused(with_headers(alsserve.MAX_HEADER_BYTES + 1), 431)

    def test_header_count_limit(self):
        def with_fields(count):
            fields = [b"Host: x"] + [b"X-%d: 1" % i for i in range(count - 1)]
            return b"GET / HTTP/1.1\r\n" + b"\r\n".join(fields) + b"\r\n\r\n"
        self.assertEqual(len(parse_request(with_fields(alsserve.MAX_HEADER_FIELDS)).headers),
                         alsserve.MAX_HEADER_FIELDS)
        self.assertRefused(with_fields(alsserve.MAX_HEADER_FIELDS + 1), 431)

    def test_malformed_header_fields(self):
        for field in [b"NoColon", b": empty-name", b"Bad Name: x", b"Name : x", b" Folded: x",
                      b"\tFolded: x", b"X: a\rb", b"X: a\nb", b"X: a\x00b", b"X: a\x7fb", b"X\x01: a",
                      b"X(: a"]:
            with self.subTest(field=field):
                self.assertRefused(b"GET / HTTP/1.1\r\nHost: x\r\n" + field + b"\r\n\r\n", 400)

    def test_obs_fold_continuation_line(self):
        self.assertRefused(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n  continued\r\n\r\n", 400)

    def test_obs_text_in_values_is_kept(self):
        request = parse_request(b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: caf\xe9\r\n\r\n")
        self.assertEqual(request.header("user-agent"), "caf\xe9")

    def test_bodies_are_refused(self):
        error = self.assertRefused(head_of(headers=["Content-Length: 5"]), 413)
        self.assertIn(error.status, (400, 413))
        for te in ("chunked", "identity", "gzip, chunked"):
            with self.subTest(te=te):
                self.assertRefused(head_of(headers=["Transfer-Encoding: " + te]), 400)
        self.assertRefused(head_of(version="HTTP/1.0", headers=["Transfer-Encoding: chunked"]), 400)

    def test_zero_content_length_is_accepted(self):
        self.assertEqual(parse_request(head_of(headers=["Content-Length: 0"])).method, "GET")
        self.assertEqual(parse_request(head_of(headers=["Content-Length: 000"])).method, "GET")

    def test_framing_conflicts_and_malformed_lengths(self):
        cases = [["Content-Length: 0", "Transfer-Encoding: chunked"],
                 ["Transfer-Encoding: chunked", "Content-Length: 5"],
                 ["Content-Length: 0", "Content-Length: 0"],
                 ["Content-Length: 0", "Content-Length: 5"],
                 ["Content-Length: 0, 0"], ["Content-Length: "], ["Content-Length: +5"],
                 ["Content-Length: -1"], ["Content-Length: 1e3"], ["Content-Length: 0x10"],
                 ["Content-Length: 5 5"], [b"Content-Length: \xb2"], ["Content-Length: abc"]]
        for headers in cases:
            with self.subTest(headers=headers):
                self.assertRefused(head_of(headers=headers), 400)


class SplitTargetTests(unittest.TestCase):

    def test_served_shapes(self):
        cases = {
            "/": ["index.html"],
            "/?x=1": ["index.html"],
            "/web_image.jpg?timestamp=1700000000000": ["web_image.jpg"],
            "/web_image.jpg#frag": ["web_image.jpg"],
            "/data.json": ["data.json"],
            "/icons/home_rest.png": ["icons", "home_rest.png"],
            "/a%20b.txt": ["a b.txt"],
            "/caf%C3%A9.txt": ["caf\xe9.txt"],
            "/%2541.txt": ["%41.txt"],             # decoded once, not twice
            "/100%.txt": ["100%.txt"],
            "/a.b.c": ["a.b.c"],
            "http://example.org/x.txt": ["x.txt"],  # absolute-form
            "http://example.org": ["index.html"],
        }
        for target, expected in cases.items():
            with self.subTest(target=target):
                self.assertEqual(split_target(target), expected)

    def test_refused_shapes(self):
        cases = {
            "/..": 404, "/../x": 404, "/a/../x": 404, "/a/..": 404, "/.": 404, "/./x": 404,
            "/%2e%2e/x": 404, "/%2E%2E/x": 404, "/.%2e/x": 404, "/%2e./x": 404,
            "/..%2fx": 404, "/..%2Fx": 404, "/a%2fb": 404, "/..%5cx": 404, "/a%5Cb": 404,
            "/..\\x": 404, "/a\\b": 404,
            "/.env": 404, "/.git/config": 404, "/%2egit/config": 404, "/a/.hidden": 404,
            "/.web_image.jpg.abc.tmp": 404,
            "//etc/passwd": 404, "/a//b": 404, "/icons/": 404,
            "/C:/x": 404, "/c:x": 404, "/x::$DATA": 404,
            "/con": 404, "/NUL.txt": 404, "/com1.jpg": 404, "/a./b": 404, "/a%20": 404,
            "/%EF%BC%8E%EF%BC%8E/x": 404,          # fullwidth dots normalise to ".."
            "/%00": 400, "/a%00.txt": 400, "/a%0d%0ab": 400, "/a%1fb": 400,
            "/%c0%ae%c0%ae/x": 400, "/%ff": 400,  # not UTF-8
            "x.txt": 400, "*": 400, "../x": 400,
            "http://example.org/../x": 404,
        }
        for target, status in cases.items():
            with self.subTest(target=target):
                with self.assertRaises(HTTPError) as cm:
                    split_target(target)
                self.assertEqual(cm.exception.status, status, cm.exception.detail)

    def test_long_segment(self):
        self.assertEqual(split_target("/" + "a" * 255), ["a" * 255])
        with self.assertRaises(HTTPError):
            split_target("/" + "a" * 256)


class ParseRangeTests(unittest.TestCase):

    def test_satisfiable(self):
        cases = {"bytes=0-9": (0, 9), "bytes=0-0": (0, 0), "bytes=5-": (5, 99),
                 "bytes=99-": (99, 99), "bytes=-10": (90, 99), "bytes=-1": (99, 99),
                 "bytes=-500": (0, 99), "bytes=10-5000": (10, 99), "bytes= 3-4": (3, 4)}
        for value, expected in cases.items():
            with self.subTest(value=value):
                self.assertEqual(parse_range(value, 100), expected)

    def test_huge_and_odd_numbers(self):
        huge = "9" * 5000                   # beyond what int() converts on Python 3.11+
        self.assertEqual(parse_range("bytes=0-" + huge, 100), (0, 99))
        self.assertEqual(parse_range("bytes=-" + huge, 100), (0, 99))
        self.assertEqual(parse_range("bytes=" + "0" * 5000 + "7-8", 100), (7, 8))
        with self.assertRaises(HTTPError) as cm:
            parse_range("bytes=%s-" % huge, 100)
        self.assertEqual(cm.exception.status, 416)
        for value in ("bytes=\u00b2-", "bytes=-\u00b2", "bytes=0-\u0663", "bytes=\uff11-2"):
            with self.subTest(value=value):
                self.assertIsNone(parse_range(value, 100))

    def test_whole_file(self):
        for value in [None, "", "bytes=", "bytes=-", "bytes=a-b", "bytes=1-a", "items=0-1",
                      "bytes=0-1,3-4", "bytes=0-1, 5-", "bytes=9-3", "bytes=+1-2", "0-9", "bytes 0-9"]:
            with self.subTest(value=value):
                self.assertIsNone(parse_range(value, 100))

    def test_unsatisfiable(self):
        for value, size in [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100),
                            ("bytes=0-", 0), ("bytes=-5", 0)]:
            with self.subTest(value=value, size=size):
                with self.assertRaises(HTTPError) as cm:
                    parse_range(value, size)
                self.assertEqual(cm.exception.status, 416)
                self.assertIn(("Content-Range", "bytes */%d" % size), cm.exception.headers)


class NotModifiedTests(unittest.TestCase):
    etag = '"1a-2b-3c"'
    mtime = 1700000000.7

    def check(self, headers):
        return not_modified(parse_request(head_of(headers=headers)), self.etag, self.mtime)

    def test_if_none_match(self):
        self.assertTrue(self.check(['If-None-Match: "1a-2b-3c"']))
        self.assertTrue(self.check(['If-None-Match: "x", "1a-2b-3c"']))
        self.assertTrue(self.check(['If-None-Match: W/"1a-2b-3c"']))    # weak comparison
        self.assertTrue(self.check(["If-None-Match: *"]))
        self.assertFalse(self.check(['If-None-Match: "1a-2b-3d"']))
        self.assertFalse(self.check(["If-None-Match: 1a-2b-3c"]))

    def test_if_modified_since(self):
        exact = email.utils.formatdate(self.mtime, usegmt=True)
        self.assertTrue(self.check(["If-Modified-Since: " + exact]))
        self.assertTrue(self.check(["If-Modified-Since: " + email.utils.formatdate(self.mtime + 60, usegmt=True)]))
        self.assertFalse(self.check(["If-Modified-Since: " + email.utils.formatdate(self.mtime - 60, usegmt=True)]))
        for garbage in ("yesterday", "", "Mon, 99 Foo 2023 99:99:99 GMT", "0"):
            with self.subTest(garbage=garbage):
                self.assertFalse(self.check(["If-Modified-Since: " + garbage]))

    def test_if_none_match_wins(self):
        exact = email.utils.formatdate(self.mtime, usegmt=True)
        self.assertFalse(self.check(['If-None-Match: "other"', "If-Modified-Since: " + exact]))
        self.assertTrue(self.check(['If-None-Match: "1a-2b-3c"', "If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"]))

    def test_no_conditions(self):
        self.assertFalse(self.check([]))


class ErrorResponseTests(unittest.TestCase):

    def test_short_text_body(self):
        for status in (400, 404, 405, 413, 414, 416, 431, 500, 503, 505):
            with self.subTest(status=status):
                head, body = alsserve.error_response(HTTPError(status, "secret detail /etc/passwd"))
                headers = dict(head.headers)
                self.assertEqual(head.status, status)
                self.assertEqual(headers["Content-Type"], "text/plain; charset=utf-8")
                self.assertEqual(headers["Content-Length"], str(len(body)))
                self.assertEqual(headers["X-Content-Type-Options"], "nosniff")
                self.assertTrue(body.startswith(str(status).encode()))
                self.assertLess(len(body), 100)
                self.assertNotIn(b"secret", body)           # details stay in the log

    def test_405_allow_and_extra_headers(self):
        head, _ = alsserve.error_response(HTTPError(405))
        self.assertIn(("Allow", "GET, HEAD"), head.headers)
        head, _ = alsserve.error_response(HTTPError(416, headers=[("Content-Range", "bytes */7")]))
        self.assertIn(("Content-Range", "bytes */7"), head.headers)

    def test_head_encoding(self):
        head, body = alsserve.error_response(HTTPError(404))
        data = head.encode("Thu, 01 Jan 1970 00:00:00 GMT", keep_alive=False)
        self.assertTrue(data.startswith(b"HTTP/1.1 404 Not Found\r\n"))
        self.assertTrue(data.endswith(b"\r\n\r\n"))
        self.assertIn(b"\r\nConnection: close\r\n", data)
        self.assertIn(b"\r\nServer: alsserve/" + alsserve.__version__.encode() + b"\r\n", data)
        self.assertNotIn(b"Connection", head.encode("x", keep_alive=True))


# =============================================================================
# End to end: real bytes to a server on 127.0.0.1
# =============================================================================

def capture_logs(testcase):
    """Keep the server's log out of the test output, and fail the test if
    anything was logged at ERROR (a traceback) that the test did not expect
    (tests expecting errors catch them with assertLogs first)."""
    logs = LogCapture().install(testcase)
    testcase.addCleanup(lambda: testcase.assertEqual(logs.errors(), [], "unexpected errors logged"))
    return logs


class HTTPTestCase(ServerTestCase):
    publish = False

    def setUp(self):
        self.logs = capture_logs(self)
        super().setUp()

    def get(self, target, method="GET", headers=(), version="HTTP/1.1", host=True):
        """One request on a new connection (Connection: close): (status, headers, body)."""
        data = self.exchange(raw_request(method, target, version, headers, host=host))
        return parse_one(data)

    def http_client(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.addCleanup(conn.close)
        return conn


class MethodAndVersionTests(HTTPTestCase):

    def setUp(self):
        super().setUp()
        self.write("hello.txt", b"hello")

    def test_get_and_head(self):
        status, headers, body = self.get("/hello.txt")
        self.assertEqual((status, body), (200, b"hello"))
        status, head_headers, body = self.get("/hello.txt", "HEAD")
        self.assertEqual((status, body), (200, b""))
        self.assertEqual(head_headers["content-length"], "5")
        for name in ("content-type", "etag", "last-modified", "cache-control"):
            self.assertEqual(head_headers[name], headers[name])

    def test_other_methods_get_405(self):
        for method in ("POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "BREW", "get"):
            with self.subTest(method=method):
                status, headers, body = self.get("/hello.txt", method)
                self.assertEqual(status, 405)
                self.assertEqual(headers["allow"], "GET, HEAD")
                self.assertTrue(body.startswith(b"405"))

    def test_405_keeps_the_connection(self):
        sock = self.connect()
        sock.sendall(raw_request("DELETE", "/hello.txt", close=False))
        status, headers, body, rest = read_response(sock)
        self.assertEqual(status, 405)
        sock.sendall(raw_request("GET", "/hello.txt"))
        status, _, body, _ = read_response(sock, rest)
        self.assertEqual((status, body), (200, b"hello"))

    def test_garbage_request_line_gets_400_and_close(self):
        for raw in [b"HELLO\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/1.1 x\r\nHost: a\r\n\r\n",
                    b"GET / FOO\r\nHost: a\r\n\r\n", b"\x00\x01\x02\r\n\r\n", b"GET /a\x01 HTTP/1.1\r\n\r\n",
                    b"GET / HTTP/1.1\r\nHost: a\r\nbad header\r\n\r\n"]:
            with self.subTest(raw=raw):
                status, headers, body = parse_one(self.exchange(raw))
                self.assertEqual(status, 400)
                self.assertEqual(headers.get("connection"), "close")
                self.assertTrue(body.startswith(b"400"))

    def test_unsupported_version_505(self):
        status, headers, _ = parse_one(self.exchange(b"GET /hello.txt HTTP/2.0\r\nHost: a\r\n\r\n"))
        self.assertEqual(status, 505)

    def test_http11_without_host(self):
        status, headers, body = self.get("/hello.txt", host=False)
        self.assertEqual(status, 400)
        self.assertEqual(headers.get("connection"), "close")

    def test_http10(self):
        status, headers, body = parse_one(self.exchange(b"GET /hello.txt HTTP/1.0\r\n\r\n"))
        self.assertEqual((status, body), (200, b"hello"))
        self.assertEqual(headers.get("connection"), "close")

    def test_http10_keep_alive(self):
        sock = self.connect()
        request = b"GET /hello.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"
        sock.sendall(request)
        status, headers, body, rest = read_response(sock)
        self.assertEqual((status, body), (200, b"hello"))
        # An HTTP/1.0 client keeps the connection only when told so.
        self.assertEqual(headers.get("connection", "").lower(), "keep-alive")
        sock.sendall(b"HEAD /hello.txt HTTP/1.0\r\n\r\n")
        status, headers, body, rest = read_response(sock, rest, head_only=True)
        self.assertEqual(status, 200)
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(rest + recv_until_close(sock), b"")

    def test_leading_empty_lines_are_ignored(self):
        status, _, body = parse_one(self.exchange(b"\r\n\r\n" + raw_request("GET", "/hello.txt")))
        self.assertEqual((status, body), (200, b"hello"))


class KeepAliveTests(HTTPTestCase):

    def setUp(self):
        super().setUp()
        self.write("a.txt", b"first")
        self.write("b.txt", b"second!")
        self.write("c.json", b'{"c": 3}')

    def test_several_requests_on_one_connection(self):
        sock = self.connect()
        rest = b""
        for _ in range(3):
            for name, expected in (("a.txt", b"first"), ("b.txt", b"second!")):
                sock.sendall(raw_request("GET", "/" + name, close=False))
                status, headers, body, rest = read_response(sock, rest)
                self.assertEqual((status, body), (200, expected))
                self.assertNotIn("connection", headers)

    def test_http_client_reuses_the_connection(self):
        conn = self.http_client()
        sockets = set()
        for method, name in (("GET", "/a.txt"), ("HEAD", "/b.txt"), ("GET", "/missing"), ("GET", "/c.json")):
            conn.request(method, name)
            response = conn.getresponse()
            response.read()
            sockets.add(id(conn.sock))
            self.assertFalse(response.will_close)
        self.assertEqual(len(sockets), 1)

    def test_pipelined_requests(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/a.txt", close=False) + raw_request("GET", "/missing", close=False)
                     + raw_request("GET", "/b.txt", close=False) + raw_request("GET", "/c.json"))
        responses = parse_responses(recv_until_close(sock))
        self.assertEqual([(s, b) for s, _, b in responses],
                         [(200, b"first"), (404, b"404 Not Found\n"), (200, b"second!"), (200, b'{"c": 3}')])

    def test_pipelined_with_head(self):
        sock = self.connect()
        sock.sendall(raw_request("HEAD", "/a.txt", close=False) + raw_request("GET", "/b.txt", close=False)
                     + raw_request("HEAD", "/c.json", close=False) + raw_request("GET", "/a.txt"))
        status, headers, body, rest = read_response(sock, head_only=True)
        self.assertEqual((status, headers["content-length"]), (200, "5"))
        status, _, body, rest = read_response(sock, rest)
        self.assertEqual(body, b"second!")
        status, headers, body, rest = read_response(sock, rest, head_only=True)
        self.assertEqual(headers["content-length"], "8")
        status, _, body, rest = read_response(sock, rest)
        self.assertEqual(body, b"first")
        self.assertEqual(rest + recv_until_close(sock), b"")

    def test_client_half_close_still_gets_its_responses(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/a.txt", close=False) + raw_request("GET", "/b.txt", close=False))
        sock.shutdown(socket.SHUT_WR)
        responses = parse_responses(recv_until_close(sock))
        self.assertEqual([(s, b) for s, _, b in responses], [(200, b"first"), (200, b"second!")])

    def test_connection_close_is_honoured(self):
        sock = self.connect()
        # The second request follows a close: it must not be answered.
        sock.sendall(raw_request("GET", "/a.txt") + raw_request("GET", "/b.txt", close=False))
        responses = parse_responses(recv_until_close(sock))
        self.assertEqual(len(responses), 1)
        self.assertEqual(responses[0][1]["connection"], "close")
        self.assertEqual(responses[0][2], b"first")

    def test_error_after_good_requests_closes(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/a.txt", close=False) + b"BAD\r\n\r\n"
                     + raw_request("GET", "/b.txt", close=False))
        responses = parse_responses(recv_until_close(sock))
        self.assertEqual([s for s, _, _ in responses], [200, 400])


class LimitTests(HTTPTestCase):

    def setUp(self):
        super().setUp()
        self.write("a.txt", b"first")
        self.write("secret-next.txt", b"SMUGGLED")

    def assertRefusedAndClosed(self, raw, statuses):
        data = self.exchange(raw)
        responses = parse_responses(data)
        self.assertEqual(len(responses), 1, data[:500])
        status, headers, body = responses[0]
        self.assertIn(status, statuses)
        self.assertEqual(headers.get("connection"), "close")
        self.assertNotIn(b"SMUGGLED", data)
        return status

    def test_long_request_line_414(self):
        for length in (alsserve.MAX_REQUEST_LINE + 1, 12000, 30000, 200000):
            with self.subTest(length=length):
                raw = b"GET /" + b"a" * (length - 14) + b" HTTP/1.1\r\nHost: a\r\n\r\n"
                self.assertRefusedAndClosed(raw, (414,))

    def test_request_line_at_the_limit_is_served(self):
        target = b"/a.txt?" + b"x" * (alsserve.MAX_REQUEST_LINE - len(b"GET /a.txt? HTTP/1.1"))
        status, _, body = parse_one(self.exchange(raw_request("GET", target)))
        self.assertEqual((status, body), (200, b"first"))

    def test_large_header_section_431(self):
        for size in (alsserve.MAX_HEADER_BYTES + 100, 30000, 300000):
            with self.subTest(size=size):
                fields = b"".join(b"X-Pad-%d: %s\r\n" % (i, b"p" * 90) for i in range(size // 100))
                self.assertRefusedAndClosed(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", (431,))

    def test_too_many_fields_431(self):
        fields = b"".join(b"X-%d: 1\r\n" % i for i in range(alsserve.MAX_HEADER_FIELDS + 1))
        self.assertRefusedAndClosed(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n" + fields + b"\r\n", (431,))

    def test_many_fields_within_the_limit(self):
        fields = [b"X-%d: 1" % i for i in range(alsserve.MAX_HEADER_FIELDS - 2)]
        status, _, body = parse_one(self.exchange(raw_request("GET", "/a.txt", headers=fields)))
        self.assertEqual((status, body), (200, b"first"))

    def test_body_is_refused_and_not_parsed_as_a_request(self):
        smuggled = raw_request("GET", "/secret-next.txt", close=False)
        cases = [
            ["Content-Length: %d" % len(smuggled)],
            ["Transfer-Encoding: chunked"],
            ["Content-Length: 0", "Transfer-Encoding: chunked"],
            ["Transfer-Encoding: chunked", "Content-Length: %d" % len(smuggled)],
            ["Content-Length: 0", "Content-Length: %d" % len(smuggled)],
            ["Content-Length: 0, %d" % len(smuggled)],
            ["Content-Length: -1"],
            ["Content-Length: x"],
        ]
        for headers in cases:
            for method in ("GET", "POST"):
                with self.subTest(headers=headers, method=method):
                    raw = raw_request(method, "/a.txt", headers=headers, close=False)
                    if "chunked" in str(headers):
                        body = b"%x\r\n" % len(smuggled) + smuggled + b"\r\n0\r\n\r\n"
                    else:
                        body = smuggled
                    self.assertRefusedAndClosed(raw + body, (400, 413))

    def test_large_body_gets_an_answer(self):
        # The answer arrives even while the client is still sending its body.
        sock = self.connect()
        sock.sendall(raw_request("POST", "/a.txt", headers=["Content-Length: 1000000"], close=False))
        try:
            sock.sendall(b"z" * 100000)
        except OSError:
            pass
        status, headers, body, _ = read_response(sock)
        self.assertIn(status, (400, 413))
        self.assertEqual(headers.get("connection"), "close")

    def test_zero_content_length_is_served(self):
        status, _, body = parse_one(self.exchange(raw_request("GET", "/a.txt", headers=["Content-Length: 0"])))
        self.assertEqual((status, body), (200, b"first"))

    def test_head_without_end_is_bounded(self):
        # A head that never ends (10x the reader's limit) is cut off at the
        # limit: 431, then the server closes instead of reading on.
        sock = self.connect()
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n")
        chunk = b"X-Pad: " + b"p" * 1000 + b"\r\n"
        try:
            for _ in range(10 * alsserve.READER_LIMIT // len(chunk)):
                sock.sendall(chunk)
        except OSError:
            pass                        # the server may close while we send
        status, headers, _, rest = read_response(sock)
        self.assertEqual(status, 431)
        self.assertEqual(headers.get("connection"), "close")
        self.assertEqual(rest + recv_until_close(sock), b"")


class ResponseHeaderTests(HTTPTestCase):

    def test_standard_headers(self):
        path = self.write("hello.txt", b"hello world")
        mtime = os.stat(path).st_mtime
        status, headers, body = self.get("/hello.txt")
        self.assertEqual((status, body), (200, b"hello world"))
        self.assertEqual(headers["server"], "alsserve/" + alsserve.__version__)
        date = email.utils.parsedate_to_datetime(headers["date"])
        self.assertLess(abs(date.timestamp() - time.time()), 5)
        self.assertTrue(headers["date"].endswith(" GMT"))
        self.assertEqual(headers["content-type"], "text/plain; charset=utf-8")
        self.assertEqual(headers["content-length"], "11")
        self.assertEqual(email.utils.parsedate_to_datetime(headers["last-modified"]).timestamp(), int(mtime))
        etag = headers["etag"]
        self.assertTrue(etag.startswith('"') and etag.endswith('"') and len(etag) > 2, etag)
        self.assertNotIn("W/", etag)
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertEqual(headers["x-content-type-options"], "nosniff")

    def test_status_line(self):
        self.write("hello.txt", b"hi")
        data = self.exchange(raw_request("GET", "/hello.txt"))
        self.assertTrue(data.startswith(b"HTTP/1.1 200 OK\r\n"), data[:40])
        data = self.exchange(raw_request("GET", "/nope.txt"))
        self.assertTrue(data.startswith(b"HTTP/1.1 404 Not Found\r\n"), data[:40])

    def test_content_types(self):
        expected = {
            "a.html": "text/html; charset=utf-8", "a.js": "text/javascript; charset=utf-8",
            "a.css": "text/css; charset=utf-8", "a.json": "application/json; charset=utf-8",
            "a.jpg": "image/jpeg", "a.jpeg": "image/jpeg", "B.JPG": "image/jpeg",
            "a.png": "image/png", "a.ico": "image/x-icon", "a.svg": "image/svg+xml; charset=utf-8",
            "a.webp": "image/webp", "a.gif": "image/gif", "a.txt": "text/plain; charset=utf-8",
            "a.mp4": "video/mp4",
        }
        for name in expected:
            self.write(name, make_jpeg(64) if name.lower().endswith((".jpg", ".jpeg"))
                       else make_png(64) if name.endswith(".png") else b"content")
        conn = self.http_client()
        for name, content_type in expected.items():
            with self.subTest(name=name):
                for method in ("HEAD", "GET"):
                    conn.request(method, "/" + name)
                    response = conn.getresponse()
                    response.read()
                    self.assertEqual(response.status, 200)
                    self.assertEqual(response.getheader("Content-Type"), content_type)

    def test_only_web_files_are_served(self):
        # ALS's default web folder is its work folder: the astronomer's data
        # (FITS, TIFF, raw camera files, archives) must not be published.
        data_files = ["stack_image.fits", "stack_image.fit", "stack_image.tiff", "stack_image.tif",
                      "notes.bin", "IMG_0001.CR2", "IMG_0001.NEF", "session.zip", "a.tar.gz",
                      "noextension", "a.exe", "a.py", "a.xisf", "settings.ini", "a.jpg.fits"]
        for name in data_files:
            self.write(name, b"astronomer's data")
            self.write("sub/" + name, b"astronomer's data")
        conn = self.http_client()
        for name in data_files:
            for target in ("/" + name, "/sub/" + name, "/" + name + "?x=1"):
                with self.subTest(target=target):
                    for method in ("HEAD", "GET"):
                        conn.request(method, target)
                        response = conn.getresponse()
                        body = response.read()
                        self.assertEqual(response.status, 404)
                        self.assertNotIn(b"astronomer", body)
        # What a missing file gets, byte for byte: nothing tells them apart.
        missing = self.exchange(raw_request("GET", "/missing.fits"))
        present = self.exchange(raw_request("GET", "/stack_image.fits"))
        strip_date = lambda d: re.sub(rb"Date: [^\r]*", b"", d)
        self.assertEqual(strip_date(present), strip_date(missing))

    def test_index_html_for_slash(self):
        self.write("index.html", b"<!doctype html><title>x</title>")
        for target in ("/", "/?timestamp=1", "/index.html"):
            with self.subTest(target=target):
                status, headers, body = self.get(target)
                self.assertEqual((status, body), (200, b"<!doctype html><title>x</title>"))
                self.assertEqual(headers["content-type"], "text/html; charset=utf-8")

    def test_query_string_is_stripped(self):
        image = make_jpeg(3000, b"\x42")
        self.write("web_image.jpg", image)
        for target in ("/web_image.jpg?timestamp=123", "/web_image.jpg?timestamp=1700000000000&x=%2e%2e",
                       "/web_image.jpg?", "/web_image.jpg#top", "/web%5Fimage.jpg?x=/../y"):
            with self.subTest(target=target):
                status, headers, body = self.get(target)
                self.assertEqual((status, body), (200, image))
                self.assertEqual(headers["content-type"], "image/jpeg")

    def test_percent_decoding_once(self):
        self.write("a b.txt", b"space")
        self.write("%41.txt", b"percent")
        self.write("caf\xe9.txt", b"accent")
        self.assertEqual(self.get("/a%20b.txt")[2], b"space")
        self.assertEqual(self.get("/%2541.txt")[2], b"percent")
        self.assertEqual(self.get("/caf%C3%A9.txt")[2], b"accent")
        self.assertEqual(self.get("/%41.txt")[0], 404)          # "A.txt" does not exist

    def test_absolute_form_target(self):
        self.write("x.txt", b"absolute")
        status, _, body = self.get("http://127.0.0.1:%d/x.txt" % self.port)
        self.assertEqual((status, body), (200, b"absolute"))

    def test_subfolder_file(self):
        self.write("icons/home_rest.png", b"\x89PNG")
        status, headers, body = self.get("/icons/home_rest.png")
        self.assertEqual((status, body, headers["content-type"]), (200, b"\x89PNG", "image/png"))

    def test_empty_file(self):
        self.write("empty.txt", b"")
        status, headers, body = self.get("/empty.txt")
        self.assertEqual((status, body, headers["content-length"]), (200, b"", "0"))

    def test_error_response_body(self):
        for target, method, status in (("/missing.txt", "GET", 404), ("/x", "PUT", 405), ("/%00", "GET", 400)):
            with self.subTest(status=status):
                got, headers, body = self.get(target, method)
                self.assertEqual(got, status)
                self.assertEqual(headers["content-type"], "text/plain; charset=utf-8")
                self.assertEqual(int(headers["content-length"]), len(body))
                self.assertTrue(body.startswith(str(status).encode()) and 0 < len(body) < 100, body)
                self.assertEqual(headers["server"], "alsserve/" + alsserve.__version__)
                self.assertIn("date", headers)
        status, headers, body = self.get("/missing.txt", "HEAD")
        self.assertEqual((status, body), (404, b""))


class CompressionTests(HTTPTestCase):
    """Text goes out gzip-compressed to browsers that accept it, compressed
    once per version of the file; images never; a range comes from the
    plain body."""

    def setUp(self):
        super().setUp()
        self.text = (b"var viewer = 'a readable script';\n" * 400)
        self.write("viewer.js", self.text)
        self.write("web_image.jpg", make_jpeg(20000, b"\x01"))

    def test_gzip_when_accepted_with_vary(self):
        status, headers, body = self.get("/viewer.js", headers=["Accept-Encoding: gzip, deflate, br"])
        self.assertEqual(status, 200)
        self.assertEqual(headers["content-encoding"], "gzip")
        self.assertEqual(headers["vary"], "Accept-Encoding")
        self.assertEqual(gzip.decompress(body), self.text)
        self.assertEqual(int(headers["content-length"]), len(body))
        self.assertLess(len(body), len(self.text) // 10)
        plain = self.get("/viewer.js")
        self.assertEqual(plain[2], self.text)
        self.assertNotIn("content-encoding", plain[1])
        self.assertEqual(plain[1]["vary"], "Accept-Encoding")
        self.assertNotEqual(plain[1]["etag"], headers["etag"])      # one tag per representation

    def test_what_counts_as_accepting(self):
        cases = {"gzip": True, "x-gzip": True, "*": True, "GZIP;q=0.5": True, "deflate, gzip;q=1.0": True,
                 "gzip;q=0": False, "gzip;q=0.0, deflate": False, "identity": False, "br": False,
                 "*;q=0": False, "gzip;q=nonsense": False}
        for value, compressed in cases.items():
            with self.subTest(accept_encoding=value):
                headers = self.get("/viewer.js", headers=["Accept-Encoding: " + value])[1]
                self.assertEqual(headers.get("content-encoding") == "gzip", compressed)

    def test_images_are_never_compressed(self):
        status, headers, body = self.get("/web_image.jpg", headers=["Accept-Encoding: gzip"])
        self.assertEqual((status, body), (200, make_jpeg(20000, b"\x01")))
        self.assertNotIn("content-encoding", headers)
        self.assertNotIn("vary", headers)

    def test_head_conditional_and_range(self):
        gz = self.get("/viewer.js", headers=["Accept-Encoding: gzip"])
        head = self.get("/viewer.js", "HEAD", headers=["Accept-Encoding: gzip"])
        self.assertEqual(head[1]["content-length"], gz[1]["content-length"])
        self.assertEqual(head[2], b"")
        again = self.get("/viewer.js", headers=["Accept-Encoding: gzip", "If-None-Match: " + gz[1]["etag"]])
        self.assertEqual((again[0], again[2]), (304, b""))
        ranged = self.get("/viewer.js", headers=["Accept-Encoding: gzip", "Range: bytes=10-19"])
        self.assertEqual((ranged[0], ranged[2]), (206, self.text[10:20]))
        self.assertNotIn("content-encoding", ranged[1])

    def test_compressed_once_per_version(self):
        real, calls = gzip.compress, []

        def counting(data, *args, **kwargs):
            calls.append(len(data))
            return real(data, *args, **kwargs)

        with mock.patch.object(alsserve.gzip, "compress", counting):
            for _ in range(5):
                self.assertEqual(gzip.decompress(self.get("/viewer.js", headers=["Accept-Encoding: gzip"])[2]),
                                 self.text)
            self.write("viewer.js", self.text + b"// new version\n")
            os.utime(os.path.join(self.folder, "viewer.js"), (1, 1))
            for _ in range(3):
                self.assertEqual(gzip.decompress(self.get("/viewer.js", headers=["Accept-Encoding: gzip"])[2]),
                                 self.text + b"// new version\n")
        self.assertEqual(calls, [len(self.text), len(self.text) + 15])


class ConditionalTests(HTTPTestCase):

    def setUp(self):
        super().setUp()
        self.write("data.json", b'{"STACK_SIZE": 3, "EXPO": "0:01:30"}')
        _, self.headers, _ = self.get("/data.json")
        self.etag = self.headers["etag"]

    def test_if_none_match_304(self):
        for value in (self.etag, '"nope", ' + self.etag, "W/" + self.etag, "*"):
            with self.subTest(value=value):
                status, headers, body = self.get("/data.json", headers=["If-None-Match: " + value])
                self.assertEqual((status, body), (304, b""))
                self.assertEqual(headers["etag"], self.etag)
                self.assertNotIn("content-length", headers)
        status, _, body = self.get("/data.json", headers=['If-None-Match: "nope"'])
        self.assertEqual(status, 200)

    def test_if_modified_since_304(self):
        status, _, body = self.get("/data.json", headers=["If-Modified-Since: " + self.headers["last-modified"]])
        self.assertEqual((status, body), (304, b""))
        status, _, body = self.get("/data.json", headers=["If-Modified-Since: Thu, 01 Jan 1970 00:00:00 GMT"])
        self.assertEqual(status, 200)
        status, _, body = self.get("/data.json", headers=["If-Modified-Since: not a date"])
        self.assertEqual(status, 200)

    def test_if_none_match_wins_over_if_modified_since(self):
        status, _, _ = self.get("/data.json", headers=['If-None-Match: "other"',
                                                       "If-Modified-Since: " + self.headers["last-modified"]])
        self.assertEqual(status, 200)

    def test_304_keeps_the_connection(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/data.json", headers=["If-None-Match: " + self.etag], close=False)
                     + raw_request("GET", "/data.json"))
        responses = parse_responses(recv_until_close(sock))
        self.assertEqual([s for s, _, _ in responses], [304, 200])
        self.assertEqual(responses[1][2], b'{"STACK_SIZE": 3, "EXPO": "0:01:30"}')


class RangeTests(HTTPTestCase):
    data = bytes(range(256)) * 4        # 1024 bytes, every offset recognisable

    def setUp(self):
        super().setUp()
        self.write("blob.webp", self.data)

    def test_single_ranges(self):
        size = len(self.data)
        for value, (start, end) in {"bytes=0-9": (0, 9), "bytes=100-": (100, size - 1),
                                    "bytes=-16": (size - 16, size - 1), "bytes=1000-5000": (1000, size - 1),
                                    "bytes=1023-1023": (1023, 1023)}.items():
            with self.subTest(value=value):
                status, headers, body = self.get("/blob.webp", headers=["Range: " + value])
                self.assertEqual(status, 206)
                self.assertEqual(headers["content-range"], "bytes %d-%d/%d" % (start, end, size))
                self.assertEqual(headers["content-length"], str(end - start + 1))
                self.assertEqual(body, self.data[start:end + 1])

    def test_unsatisfiable_416(self):
        for value in ("bytes=1024-", "bytes=5000-6000", "bytes=-0"):
            with self.subTest(value=value):
                status, headers, body = self.get("/blob.webp", headers=["Range: " + value])
                self.assertEqual(status, 416)
                self.assertEqual(headers["content-range"], "bytes */1024")
                self.assertTrue(body.startswith(b"416"))

    def test_multiple_or_malformed_ranges_get_the_whole_file(self):
        for value in ("bytes=0-1,5-9", "bytes=0-1, 4-", "bytes=x-y", "lines=0-1", "bytes=9-3"):
            with self.subTest(value=value):
                status, headers, body = self.get("/blob.webp", headers=["Range: " + value])
                self.assertEqual((status, body), (200, self.data))
                self.assertNotIn("content-range", headers)

    def test_if_range(self):
        _, headers, _ = self.get("/blob.webp")
        status, _, body = self.get("/blob.webp", headers=["Range: bytes=0-3", "If-Range: " + headers["etag"]])
        self.assertEqual((status, body), (206, self.data[:4]))
        status, _, body = self.get("/blob.webp", headers=["Range: bytes=0-3", 'If-Range: "stale"'])
        self.assertEqual((status, body), (200, self.data))

    def test_huge_range_numbers(self):
        status, headers, _ = self.get("/blob.webp", headers=["Range: bytes=%s-" % ("9" * 6000)])
        self.assertEqual((status, headers["content-range"]), (416, "bytes */1024"))
        status, _, body = self.get("/blob.webp", headers=["Range: bytes=1020-%s" % ("9" * 6000)])
        self.assertEqual((status, body), (206, self.data[1020:]))
        status, _, body = self.get("/blob.webp", headers=["Range: bytes=\xb2-"])
        self.assertEqual((status, body), (200, self.data))

    def test_large_cached_file(self):
        # Bigger than one write chunk but cached: written in chunks from memory.
        data = os.urandom(2 * alsserve.STREAM_CHUNK + 777)
        path = self.write("large.webp", data)
        status, _, body = self.get("/large.webp")
        self.assertEqual((status, body), (200, data))
        self.assertIn(path, self.server._thread.site.files.cache._entries)
        start, end = alsserve.STREAM_CHUNK - 10, 2 * alsserve.STREAM_CHUNK + 10
        status, _, body = self.get("/large.webp", headers=["Range: bytes=%d-%d" % (start, end)])
        self.assertEqual((status, body), (206, data[start:end + 1]))

    def test_head_with_range(self):
        status, headers, body = self.get("/blob.webp", "HEAD", headers=["Range: bytes=10-19"])
        self.assertEqual((status, body, headers["content-length"]), (206, b"", "10"))

    def test_range_on_web_image_with_query(self):
        image = make_jpeg(5000, b"\x11")
        self.write("web_image.jpg", image)
        status, _, body = self.get("/web_image.jpg?timestamp=5", headers=["Range: bytes=-2"])
        self.assertEqual((status, body), (206, b"\xff\xd9"))


class HostilePathTests(HTTPTestCase):
    """Every hostile target gets 400/404 and never a byte of a file outside."""

    SECRET = b"TOP-SECRET-a8f3c1"

    def setUp(self):
        super().setUp()
        parent = os.path.dirname(self.folder)
        base = os.path.basename(self.folder)
        # Next to the web folder: a file, and a folder whose name extends the web folder's.
        self.secret_name = base + "-secret.txt"
        self.secret_path = os.path.join(parent, self.secret_name)
        with open(self.secret_path, "wb") as f:
            f.write(self.SECRET)
        self.addCleanup(os.remove, self.secret_path)
        self.sibling = self.folder + "-sibling"
        os.mkdir(self.sibling)
        self.addCleanup(shutil.rmtree, self.sibling, True)
        with open(os.path.join(self.sibling, "s.txt"), "wb") as f:
            f.write(self.SECRET)
        # Inside the web folder: hidden files and folders, a subfolder, a good file.
        self.write(".env", self.SECRET)
        self.write(".git/config", self.SECRET)
        self.write(".web_image.jpg.x1y2.tmp", self.SECRET)
        self.write("sub/.hidden", self.SECRET)
        self.write("sub/inner.txt", b"inner")
        self.write("index.html", b"<html>index</html>")
        self.symlinks = hasattr(os, "symlink")
        if self.symlinks:
            try:
                os.symlink(self.secret_path, os.path.join(self.folder, "out.txt"))
                os.symlink(self.sibling, os.path.join(self.folder, "outdir"))
                os.symlink(os.path.dirname(self.folder), os.path.join(self.folder, "up"))
                os.symlink(os.path.join("..", self.secret_name), os.path.join(self.folder, "rel.txt"))
                os.symlink(os.path.join(self.folder, ".env"), os.path.join(self.folder, "env.txt"))
                os.symlink("sub/inner.txt", os.path.join(self.folder, "inside.txt"))
                os.symlink("sub", os.path.join(self.folder, "subdir"))
                os.symlink("sub", os.path.join(self.folder, ".dotlink"))
            except (OSError, NotImplementedError):
                self.symlinks = False

    def hostile_targets(self):
        s = self.secret_name
        abs_secret = self.secret_path.replace(os.sep, "/")
        targets = [
            "/../" + s, "/..%2f" + s, "/..%2F" + s, "/%2e%2e/" + s, "/%2E%2E/" + s, "/%2e%2e%2f" + s,
            "/.%2e/" + s, "/%2e./" + s, "/..\\" + s, "/..%5c" + s, "/..%5C" + s, "/%5c..%5c" + s,
            "/sub/../../" + s, "/sub/%2e%2e/%2e%2e/" + s, "/sub/./../../" + s, "/./../" + s,
            "/%252e%252e/" + s, "/%252e%252e%252f" + s, "/..%00/" + s, "/%00/../" + s,
            "/..%c0%af" + s, "/%c0%ae%c0%ae/" + s, "/%ef%bc%8e%ef%bc%8e/" + s, "/..;/" + s,
            "/web_image.jpg/../../" + s, "/index.html/../../" + s, "/..", "/%2e%2e", "/../",
            "/sub%2finner.txt", "/sub%2Finner.txt", "/sub%5cinner.txt", "/sub\\inner.txt",
            "/" + abs_secret, "/%2f" + abs_secret.lstrip("/").replace("/", "%2f"),
            "/" + abs_secret.replace("/", "\\"), "//" + s, "/C:/Windows/win.ini", "/C:%5cWindows%5cwin.ini",
            "/c:" + s, "/index.html::$DATA", "/.env", "/.env?x=1", "/%2eenv", "/.git/config", "/.git/",
            "/.git", "/%2egit/config", "/sub/.hidden", "/sub/%2ehidden", "/.web_image.jpg.x1y2.tmp",
            "/sub/", "/sub", "/sub/.", "/sub/..", "/.dotlink/inner.txt", "/CON", "/nul.txt",
            "/" + os.path.basename(self.sibling) + "/s.txt", "/../" + os.path.basename(self.sibling) + "/s.txt",
            "http://127.0.0.1/../" + s, "http://127.0.0.1/%2e%2e/" + s, "../" + s, s,
            "/%20../" + s, "/..%20/" + s, "/.../" + s,
        ]
        if self.symlinks:
            targets += ["/out.txt", "/outdir/s.txt", "/outdir/", "/up/" + s, "/up/" + os.path.basename(self.folder)
                        + "/index.html", "/rel.txt", "/env.txt"]
        return targets

    def test_hostile_targets(self):
        targets = self.hostile_targets()
        self.assertGreaterEqual(len(targets), 30)
        with self.assertLogs("alsserve", logging.DEBUG) as cm:
            for target in targets:
                with self.subTest(target=target):
                    data = self.exchange(raw_request("GET", target))
                    self.assertNotIn(self.SECRET, data)
                    self.assertNotIn(b"Traceback", data)
                    status, headers, body = parse_one(data)
                    self.assertIn(status, (400, 404))
                    self.assertTrue(body.startswith(str(status).encode()))
        errors = [r for r in cm.records if r.levelno >= logging.ERROR or r.exc_info]
        self.assertEqual(errors, [])

    def test_hostile_targets_with_head_and_http_client(self):
        conn = self.http_client()
        for target in ["/../" + self.secret_name, "/%2e%2e/" + self.secret_name, "/.env", "/sub/"]:
            with self.subTest(target=target):
                conn.request("GET", target)
                response = conn.getresponse()
                body = response.read()
                self.assertEqual(response.status, 404)
                self.assertNotIn(self.SECRET, body)

    def test_lookup_refuses_what_is_not_a_regular_file(self):
        site = self.server._thread.site.files
        for segments in (["sub"], ["sub", "inner.txt", "x"], ["missing"]) \
                + ((["outdir"], ["out.txt"], ["up"]) if self.symlinks else ()):
            with self.subTest(segments=segments):
                with self.assertRaises(HTTPError) as cm:
                    site.lookup(segments)
                self.assertEqual(cm.exception.status, 404)
        path, st = site.lookup(["sub", "inner.txt"])
        self.assertEqual(st.st_size, 5)

    def test_raw_bytes_in_target_are_400(self):
        for target in [b"/\x00", b"/a\x01b", b"/caf\xc3\xa9.txt", b"/\xff", b"/a\x7f"]:
            with self.subTest(target=target):
                status, _, _ = parse_one(self.exchange(raw_request("GET", target)))
                self.assertEqual(status, 400)

    def test_symlink_inside_is_served(self):
        if not self.symlinks:
            self.skipTest("no symlinks here")
        self.assertEqual(self.get("/inside.txt")[:3:2], (200, b"inner"))
        self.assertEqual(self.get("/subdir/inner.txt")[:3:2], (200, b"inner"))
        self.assertEqual(self.get("/sub/inner.txt")[:3:2], (200, b"inner"))


class ErrorAndLogTests(HTTPTestCase):

    def setUp(self):
        super().setUp()
        self.write("hello.txt", b"hello")

    def test_handler_error_answers_500_and_is_logged(self):
        for owner, name in ((alsserve.StaticFiles, "lookup"), (alsserve.Site, "_serve_file")):
            with self.subTest(patched=name):
                with mock.patch.object(owner, name, side_effect=RuntimeError("boom-" + name)):
                    with self.assertLogs("alsserve", logging.ERROR) as cm:
                        status, headers, body = self.get("/hello.txt")
                self.assertEqual(status, 500)
                self.assertEqual(headers["content-type"], "text/plain; charset=utf-8")
                self.assertTrue(body.startswith(b"500"))
                self.assertNotIn(b"boom", body)
                self.assertNotIn(b"Traceback", body)
                record = next(r for r in cm.records if r.exc_info)
                self.assertIsInstance(record.exc_info[1], RuntimeError)
                logged = "\n".join(cm.output)
                self.assertIn("Traceback", logged)
                self.assertIn("boom-" + name, logged)
                # The server keeps serving.
                self.assertEqual(self.get("/hello.txt")[:3:2], (200, b"hello"))

    def test_500_on_a_kept_alive_connection(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/hello.txt", close=False))
        status, _, body, rest = read_response(sock)
        self.assertEqual(status, 200)
        with mock.patch.object(alsserve.StaticFiles, "lookup", side_effect=ValueError("bad")):
            with self.assertLogs("alsserve", logging.ERROR):
                sock.sendall(raw_request("GET", "/hello.txt", close=False))
                status, headers, body, rest = read_response(sock, rest)
        self.assertEqual(status, 500)
        self.assertEqual(headers.get("connection"), "close")

    def test_file_removed_after_lookup_is_404(self):
        # Another program deletes the file between the lookup and the read:
        # a plain 404, no traceback, and never a 200 head followed by an error.
        real_lookup = alsserve.StaticFiles.lookup

        def lookup(site, segments):
            path, st = real_lookup(site, segments)
            os.remove(path)
            return path, st

        self.write("big.webp", os.urandom(5000))
        for limit in (alsserve.Settings.cache_file_limit, 1024):     # cached, then streamed
            with self.subTest(file_limit=limit):
                self.server.settings.cache_file_limit = limit
                self.write("gone.txt", b"soon gone" * 200)
                with mock.patch.object(alsserve.StaticFiles, "lookup", lookup):
                    data = self.exchange(raw_request("GET", "/gone.txt"))
                status, headers, body = parse_one(data)
                self.assertEqual(status, 404)
                self.assertEqual(self.get("/big.webp")[0], 200)

    def test_access_log_line_per_request(self):
        with self.assertLogs("alsserve", logging.INFO) as cm:
            self.get("/hello.txt")
            self.get("/missing.txt", "HEAD")
            self.get("/hello.txt", "POST")
            self.exchange(b"NONSENSE\r\n\r\n")
            self.wait_for(lambda: len([r for r in cm.records if '"' in r.getMessage()]) >= 4,
                          message="four access log lines")
        lines = [r.getMessage() for r in cm.records if r.levelno == logging.INFO and '"' in r.getMessage()]
        self.assertEqual(len(lines), 4, lines)                  # one line per request
        self.assertTrue(any('"GET /hello.txt" 200 5' in line for line in lines), lines)
        self.assertTrue(any('"HEAD /missing.txt" 404' in line for line in lines), lines)
        self.assertTrue(any('"POST /hello.txt" 405' in line for line in lines), lines)
        self.assertTrue(any('"-" 400' in line for line in lines), lines)
        self.assertTrue(all(line.startswith("127.0.0.1:") for line in lines), lines)

    def test_forwarded_for_is_ignored_without_a_trusted_proxy(self):
        with self.assertLogs("alsserve.access", logging.INFO) as cm:
            self.get("/hello.txt", headers=["X-Forwarded-For: 198.51.100.7"])
            self.wait_for(lambda: cm.records, message="an access log line")
        self.assertTrue(cm.records[0].getMessage().startswith("127.0.0.1:"), cm.output)
        self.assertNotIn("198.51.100.7", cm.output[0])

    def test_file_changes_are_seen_at_once(self):
        status, headers, body = self.get("/hello.txt")
        first_etag = headers["etag"]
        self.write("hello.txt", b"hello again")             # rewritten in place, new size
        status, headers, body = self.get("/hello.txt")
        self.assertEqual(body, b"hello again")
        second_etag = headers["etag"]
        self.assertNotEqual(second_etag, first_etag)
        # The old tag no longer matches; the new one does.
        self.assertEqual(self.get("/hello.txt", headers=["If-None-Match: " + first_etag])[0], 200)
        self.assertEqual(self.get("/hello.txt", headers=["If-None-Match: " + second_etag])[0], 304)
        time.sleep(0.05)                                     # past the file system's clock tick
        self.write("hello.txt", b"HELLO AGAIN")             # same size
        status, headers, body = self.get("/hello.txt")
        self.assertEqual(body, b"HELLO AGAIN")
        self.assertNotEqual(headers["etag"], second_etag)
        self.server.publish_image(make_jpeg(2000, b"\x01"))
        first = self.get("/web_image.jpg?timestamp=1")
        self.server.publish_image(make_jpeg(2000, b"\x02"))  # atomic replace, same size
        second = self.get("/web_image.jpg?timestamp=2")
        self.assertEqual(second[2], make_jpeg(2000, b"\x02"))
        self.assertNotEqual(first[1]["etag"], second[1]["etag"])
        os.remove(os.path.join(self.folder, "hello.txt"))
        # Gone: its last copy for a short grace (ALS on Windows removes the
        # image before renaming the new one onto it), then 404.
        self.server.settings.vanished_grace = 0.3
        self.assertEqual(self.get("/hello.txt")[:3:2], (200, b"HELLO AGAIN"))
        time.sleep(0.4)
        self.assertEqual(self.get("/hello.txt")[0], 404)


class TrustedProxyLogTests(HTTPTestCase):
    """--trust-proxy: behind nginx, the log names the client, not the proxy."""
    settings = {"trusted_proxy": "127.0.0.1"}

    def logged_client(self, headers):
        with self.assertLogs("alsserve.access", logging.INFO) as cm:
            self.get("/hello.txt", headers=headers)
            self.wait_for(lambda: cm.records, message="an access log line")
        return cm.records[0].getMessage().split(' "')[0]

    def test_the_client_address_from_the_trusted_proxy(self):
        self.write("hello.txt", b"hello")
        self.assertRegex(self.logged_client(["X-Forwarded-For: 198.51.100.7"]),
                         r"^198\.51\.100\.7 \(via 127\.0\.0\.1:\d+\)$")
        # The proxy appends the address it saw: earlier ones are the client's claims.
        self.assertRegex(self.logged_client(["X-Forwarded-For: 10.0.0.1, 203.0.113.9"]), r"^203\.0\.113\.9 ")
        self.assertRegex(self.logged_client(["X-Forwarded-For: 10.0.0.1", "X-Forwarded-For: 203.0.113.10"]),
                         r"^203\.0\.113\.10 ")
        for bogus in ("X-Forwarded-For: <script>", "X-Forwarded-For: ", "X-Forwarded-For: 1.2.3.4.5"):
            self.assertRegex(self.logged_client([bogus]), r"^127\.0\.0\.1:\d+$")
        self.assertRegex(self.logged_client([]), r"^127\.0\.0\.1:\d+$")


class StreamingTests(HTTPTestCase):
    """Files larger than the cache limit are streamed from disk, with
    sendfile or with plain reads; both give the same bytes."""

    def setUp(self):
        super().setUp()
        self.site = self.server._thread.site
        self.site.settings.cache_file_limit = 1024
        self.data = os.urandom(3 * alsserve.STREAM_CHUNK + 12345)
        self.path = self.write("big.webp", self.data)

    def fetch(self, sendfile, headers=(), method="GET"):
        self.site.replies.use_sendfile = sendfile
        real = self.site.loop.sendfile
        with mock.patch.object(self.site.loop, "sendfile", side_effect=real) as spy:
            result = self.get("/big.webp", method, headers=headers)
        if result[0] in (200, 206):
            self.assertEqual(spy.called, sendfile and method == "GET")
        self.assertNotIn(self.path, self.site.files.cache._entries)      # really streamed
        return result

    def test_whole_file_both_ways(self):
        modes = [False] + ([True] if hasattr(os, "sendfile") else [])
        for sendfile in modes:
            with self.subTest(sendfile=sendfile):
                status, headers, body = self.fetch(sendfile)
                self.assertEqual(status, 200)
                self.assertEqual(headers["content-length"], str(len(self.data)))
                self.assertEqual(body, self.data)
                self.assertTrue(headers["etag"].startswith('"'))
                status, headers, body = self.fetch(sendfile, method="HEAD")
                self.assertEqual((status, body, headers["content-length"]), (200, b"", str(len(self.data))))

    def test_ranges_both_ways(self):
        size = len(self.data)
        modes = [False] + ([True] if hasattr(os, "sendfile") else [])
        for sendfile in modes:
            for value, (start, end) in {"bytes=1000-300000": (1000, 300000), "bytes=-777": (size - 777, size - 1),
                                        "bytes=%d-" % (size - 5): (size - 5, size - 1)}.items():
                with self.subTest(sendfile=sendfile, value=value):
                    status, headers, body = self.fetch(sendfile, headers=["Range: " + value])
                    self.assertEqual(status, 206)
                    self.assertEqual(headers["content-range"], "bytes %d-%d/%d" % (start, end, size))
                    self.assertEqual(body, self.data[start:end + 1])
            with self.subTest(sendfile=sendfile, value="unsatisfiable"):
                status, headers, _ = self.fetch(sendfile, headers=["Range: bytes=%d-" % size])
                self.assertEqual((status, headers["content-range"]), (416, "bytes */%d" % size))

    def test_keep_alive_after_a_streamed_file(self):
        self.write("small.txt", b"small")
        modes = [False] + ([True] if hasattr(os, "sendfile") else [])
        for sendfile in modes:
            with self.subTest(sendfile=sendfile):
                self.site.replies.use_sendfile = sendfile
                sock = self.connect()
                sock.sendall(raw_request("GET", "/big.webp", close=False) + raw_request("GET", "/small.txt"))
                responses = parse_responses(recv_until_close(sock))
                self.assertEqual([(s, b) for s, _, b in responses], [(200, self.data), (200, b"small")])

    def test_conditional_on_a_streamed_file(self):
        _, headers, _ = self.fetch(False)
        status, _, body = self.get("/big.webp", headers=["If-None-Match: " + headers["etag"]])
        self.assertEqual((status, body), (304, b""))

    def test_file_shrinking_while_sent_closes_the_connection(self):
        # The stat says more bytes than the file holds (it shrank after the
        # lookup): the response must end with the connection, never be
        # followed by another response the client would read as body.
        real_lookup = alsserve.StaticFiles.lookup

        def lookup(site, segments):
            path, st = real_lookup(site, segments)
            grown = types.SimpleNamespace(**{name: getattr(st, name) for name in dir(st)
                                             if name.startswith("st_")})
            grown.st_size += 5000
            return path, grown

        modes = [False] + ([True] if hasattr(os, "sendfile") else [])
        for sendfile in modes:
            with self.subTest(sendfile=sendfile):
                self.site.replies.use_sendfile = sendfile
                with mock.patch.object(alsserve.StaticFiles, "lookup", lookup):
                    sock = self.connect()
                    sock.sendall(raw_request("GET", "/big.webp", close=False)
                                 + raw_request("GET", "/big.webp", close=False))
                    data = recv_until_close(sock, timeout=5)
                head, _, rest = data.partition(b"\r\n\r\n")
                self.assertIn(b"\r\nContent-Length: %d\r\n" % (len(self.data) + 5000), head + b"\r\n")
                self.assertEqual(rest, self.data)


class IncompleteJpegTests(HTTPTestCase):
    """A JPEG that does not end with EOI is taken for one being written: the
    last complete copy is served meanwhile; once the file has stayed the
    same for half a second it is served as it is (some writers append data
    after EOI), with or without a previous copy."""

    def test_previous_copy_until_the_file_stays_unchanged(self):
        old = make_jpeg(5000, b"\x01")
        self.write("web_image.jpg", old)
        self.assertEqual(self.get("/web_image.jpg")[2], old)
        trailing = make_jpeg(6000, b"\x02") + b"appended after EOI"
        self.write("web_image.jpg", trailing)
        self.assertEqual(self.get("/web_image.jpg")[2], old)
        deadline = time.monotonic() + 3
        body = old
        while body == old and time.monotonic() < deadline:
            time.sleep(0.1)
            body = self.get("/web_image.jpg")[2]
        self.assertEqual(body, trailing)

    def test_without_previous_copy_served_after_it_settles(self):
        trailing = make_jpeg(6000, b"\x03") + b"appended after EOI"
        self.write("other.jpg", trailing)
        began = time.monotonic()
        status, _, body = self.get("/other.jpg")
        self.assertEqual((status, body), (200, trailing))
        self.assertGreater(time.monotonic() - began, 0.4)


class SettingsTests(unittest.TestCase):
    def test_defaults_and_changes(self):
        settings = alsserve.Settings(send_timeout=0.5, ws_max_clients=3, trusted_proxy="::1")
        self.assertEqual((settings.send_timeout, settings.ws_max_clients, settings.trusted_proxy), (0.5, 3, "::1"))
        self.assertEqual(alsserve.Settings().send_timeout, 30.0)
        self.assertEqual(alsserve.Settings.send_timeout, 30.0)          # a change stays in its object

    def test_bad_settings_are_refused_with_their_name(self):
        for changes in ({"send_timout": 1}, {"send_timeout": -1}, {"send_timeout": "5"}, {"ws_max_clients": 2.5},
                        {"max_connections": True}, {"trusted_proxy": "proxy.local"}, {"__init__": 1}):
            with self.subTest(changes=changes), self.assertRaises(ValueError) as caught:
                alsserve.Settings(**changes)
            self.assertIn(list(changes)[0].strip("_").split("_")[0], str(caught.exception))


class FileCacheAccountingTests(unittest.TestCase):
    """The cache's own bookkeeping, without a server: what it keeps and how
    many bytes it counts (its LRU limit relies on the count)."""

    def snapshot(self, size, stamp=1):
        return alsserve.FileSnapshot(b"x" * size, 0, (1, size, stamp))

    def cache(self):
        return alsserve.FileCache(alsserve.Settings(cache_file_limit=100, cache_total_limit=1000))

    def test_a_copy_over_the_file_limit_is_not_kept(self):
        cache = self.cache()
        cache.put("/a.jpg", self.snapshot(50))
        cache.put("/a.jpg", self.snapshot(500, 2))      # a new, too big copy replaces the old
        self.assertNotIn("/a.jpg", cache._entries)
        self.assertEqual(cache._total, 0)

    def test_replaced_and_evicted_copies_leave_the_count(self):
        cache = self.cache()
        cache.put("/a.jpg", self.snapshot(50))
        cache.put("/a.jpg", self.snapshot(60, 2))       # replaced: 60 counted, not 110
        self.assertEqual(cache._total, 60)
        for name in "bcdefghijklmnop":                  # 15 x 90 bytes: the oldest go
            cache.put("/%s.jpg" % name, self.snapshot(90))
        self.assertLessEqual(cache._total, 1000)
        self.assertEqual(cache._total, sum(entry.size for entry in cache._entries.values()))
        self.assertNotIn("/a.jpg", cache._entries)
        self.assertIn("/p.jpg", cache._entries)


class SharedSnapshotTests(HTTPTestCase):
    def test_thirty_concurrent_downloads_of_a_new_image_read_the_disk_once(self):
        # The star-party moment: every phone fetches the new image at once.
        self.write("web_image.jpg", make_jpeg(1000, b"\x01"))
        self.assertEqual(self.get("/web_image.jpg")[0], 200)
        image = make_jpeg(2 * 1024 * 1024, b"\x07")
        self.write("web_image.jpg", image)
        reads = count_reads(self)
        barrier = threading.Barrier(30)
        bodies = []

        def download():
            barrier.wait(5)
            bodies.append(self.get("/web_image.jpg?timestamp=1"))

        threads = [threading.Thread(target=download) for _ in range(30)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        self.assertEqual(len(bodies), 30)
        self.assertTrue(all(status == 200 and body == image for status, _, body in bodies))
        self.assertEqual(len(reads), 1)


class SendTimeoutTests(HTTPTestCase):
    """A client that stops reading mid-download is dropped after SEND_TIMEOUT,
    on the cached path and on both streaming paths."""

    def stalled_download(self, target):
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(raw_request("GET", target, "HTTP/1.1", ()))
        site = self.server._thread.site
        self.wait_for(lambda: len(site.connections) == 1, message="connection open")
        self.wait_for(lambda: not site.connections, timeout=5.0, message="stalled download dropped")

    def test_stalled_downloads_are_dropped(self):
        self.write("big.jpg", make_jpeg(24 * 1024 * 1024))
        modes = [("cached", None)] + [("streamed", False)] + ([("sendfile", True)] if hasattr(os, "sendfile") else [])
        self.server.settings.send_timeout = 0.5
        for name, sendfile in modes:
            with self.subTest(name):
                site = self.server._thread.site
                if sendfile is not None:
                    self.server.settings.cache_file_limit = 1024
                    site.replies.use_sendfile = sendfile
                self.stalled_download("/big.jpg")
        status, _, _ = self.get("/big.jpg", "HEAD")
        self.assertEqual(status, 200)


class TimeoutTests(ServerTestCase):
    publish = False
    settings = {"header_timeout": 0.5, "keepalive_timeout": 0.8}

    def setUp(self):
        self.logs = capture_logs(self)
        super().setUp()
        self.write("a.txt", b"first")

    def assertClosedByServer(self, sock, timeout=5.0):
        start = time.monotonic()
        data = recv_until_close(sock, timeout)
        self.assertLess(time.monotonic() - start, timeout - 0.5, "the server did not close the connection")
        return data

    def test_silent_client_is_disconnected(self):
        sock = self.connect()
        self.assertEqual(self.assertClosedByServer(sock), b"")

    def test_partial_head_is_disconnected(self):
        sock = self.connect()
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n")
        self.assertEqual(self.assertClosedByServer(sock), b"")

    def test_slow_drip_head_is_disconnected(self):
        # Bytes keep arriving, but the head is never complete: the header
        # timeout covers the whole head, not the gap between bytes.
        sock = self.connect()
        sock.sendall(b"GET /a.txt HTTP/1.1\r\nHost: a\r\n")
        deadline = time.monotonic() + 4.0
        closed = False
        while time.monotonic() < deadline and not closed:
            try:
                sock.sendall(b"X: 1\r\n")
                sock.settimeout(0.1)
                closed = sock.recv(1) == b""
            except socket.timeout:
                pass
            except OSError:
                closed = True
        self.assertTrue(closed, "a dripping head kept the connection open")

    def test_idle_keep_alive_is_disconnected(self):
        sock = self.connect()
        sock.sendall(raw_request("GET", "/a.txt", close=False))
        status, _, body, rest = read_response(sock)
        self.assertEqual((status, body), (200, b"first"))
        self.assertEqual(rest + self.assertClosedByServer(sock), b"")

    def test_active_keep_alive_is_not_disconnected(self):
        sock = self.connect()
        rest = b""
        started = time.monotonic()
        count = 0
        # Requests spaced within the timeouts, for longer than both together.
        while time.monotonic() - started < 1.6 or count < 5:
            sock.sendall(raw_request("GET", "/a.txt", close=False))
            status, _, body, rest = read_response(sock, rest)
            self.assertEqual((status, body), (200, b"first"))
            count += 1
            time.sleep(0.2)
        sock.sendall(raw_request("GET", "/a.txt"))
        status, _, body, rest = read_response(sock, rest)
        self.assertEqual((status, body), (200, b"first"))

    def test_slow_download_is_not_cut_by_the_timeouts(self):
        # The timeouts cover waiting for a head, not sending a response.
        self.server.settings.cache_file_limit = 1024
        data = os.urandom(2 * 1024 * 1024)
        self.write("big.webp", data)
        sock = self.connect()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        sock.sendall(raw_request("GET", "/big.webp"))
        time.sleep(1.2)                                     # longer than both timeouts
        received = recv_until_close(sock)
        status, headers, body = parse_one(received)
        self.assertEqual((status, body), (200, data))


class ViewerPathsTests(ServerTestCase):
    """The paths ALS's viewer page requests, on a published web folder."""

    def setUp(self):
        self.logs = capture_logs(self)
        super().setUp()

    def test_viewer_paths(self):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
        self.addCleanup(conn.close)
        names = sorted(n for n in os.listdir(os.path.join(self.folder, "icons")) if n.endswith(".png"))
        for target in ["/", "/web_image.jpg?timestamp=1700000000000", "/data.json", "/favicon.ico"] \
                + ["/icons/" + n for n in names]:
            with self.subTest(target=target):
                conn.request("GET", target)
                response = conn.getresponse()
                body = response.read()
                self.assertEqual(response.status, 200)
                self.assertGreater(len(body), 0)
        conn.request("GET", "/web_image.jpg?timestamp=1700000000001")
        response = conn.getresponse()
        self.assertTrue(alsserve.check_jpeg(response.read()))


if __name__ == "__main__":
    unittest.main()
