"""WebSocket tests (RFC 6455): the sans-I/O core with crafted bytes, then the
server end to end over loopback sockets: handshake, ping/pong, the closing
handshake, protocol errors and their close codes, broadcast, slow clients,
keepalive, the client cap and STOP."""

import concurrent.futures
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
import unittest
from unittest import mock

from support import (ServerTestCase, WSClient, alsserve, client_frame, free_port, read_response,  # noqa: E402
                     read_response_head, recv_until_close, ws_handshake_request)

Opcode = alsserve.Opcode
MASK = b"\x37\xfa\x21\x3d"
NEW_IMAGE = b'{"type": "new_image"}'
DISCONNECT = b'{"type": "disconnect"}'
LIMIT = 64 * 1024

# Close codes a peer may not send (RFC 6455 section 7.4): each must fail the
# connection with 1002. And a sample of codes it may send.
INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014,
                     3000, 3999, 4000, 4999]


def cframe(opcode, payload=b"", fin=True, rsv=0, mask=MASK):
    """A client frame: masked by default."""
    return client_frame(opcode, payload, fin=fin, mask=mask, rsv=rsv)


def head_only(opcode, length, fin=True):
    """Only the header (with mask key) of a masked frame announcing `length` bytes."""
    first = (0x80 if fin else 0) | opcode
    if length < 126:
        return bytes((first, 0x80 | length)) + MASK
    if length < 65536:
        return bytes((first, 0x80 | 126)) + length.to_bytes(2, "big") + MASK
    return bytes((first, 0x80 | 127)) + length.to_bytes(8, "big") + MASK


def close_payload(code, reason=b""):
    return code.to_bytes(2, "big") + reason


# -----------------------------------------------------------------------------
# The sans-I/O core
# -----------------------------------------------------------------------------

class FramingTest(unittest.TestCase):
    """build_frame, mask_bytes, build_close against RFC 6455 section 5.7."""

    def test_rfc_examples_unmasked(self):
        self.assertEqual(alsserve.build_frame(Opcode.TEXT, b"Hello"), b"\x81\x05Hello")
        self.assertEqual(alsserve.build_frame(Opcode.TEXT, b"Hel", fin=False), b"\x01\x03Hel")
        self.assertEqual(alsserve.build_frame(Opcode.CONTINUATION, b"lo"), b"\x80\x02lo")
        self.assertEqual(alsserve.build_frame(Opcode.PING, b"Hello"), b"\x89\x05Hello")
        self.assertEqual(alsserve.build_frame(Opcode.PONG, b"Hello"), b"\x8a\x05Hello")

    def test_rfc_example_masked(self):
        frame = client_frame(Opcode.TEXT, b"Hello", mask=MASK)
        self.assertEqual(frame, bytes([0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d,
                                       0x7f, 0x9f, 0x4d, 0x51, 0x58]))

    def test_length_encodings(self):
        self.assertEqual(alsserve.build_frame(Opcode.BINARY, b"\0" * 125)[:2], b"\x82\x7d")
        self.assertEqual(alsserve.build_frame(Opcode.BINARY, b"\0" * 126)[:4], b"\x82\x7e\x00\x7e")
        frame = alsserve.build_frame(Opcode.BINARY, b"\0" * 256)
        self.assertEqual(frame[:4], b"\x82\x7e\x01\x00")
        self.assertEqual(len(frame), 4 + 256)
        self.assertEqual(alsserve.build_frame(Opcode.BINARY, b"\0" * 65535)[:4], b"\x82\x7e\xff\xff")
        frame = alsserve.build_frame(Opcode.BINARY, b"\0" * 65536)
        self.assertEqual(frame[:10], b"\x82\x7f\x00\x00\x00\x00\x00\x01\x00\x00")
        self.assertEqual(len(frame), 10 + 65536)

    def test_mask_bytes(self):
        self.assertEqual(alsserve.mask_bytes(MASK, b""), b"")
        self.assertEqual(alsserve.mask_bytes(MASK, b"Hello"), bytes([0x7f, 0x9f, 0x4d, 0x51, 0x58]))
        for length in (1, 2, 3, 4, 5, 7, 8, 1000, 65537):
            data = os.urandom(length)
            masked = alsserve.mask_bytes(MASK, data)
            self.assertEqual(len(masked), length)
            expected = bytes(b ^ MASK[i % 4] for i, b in enumerate(data))
            self.assertEqual(masked, expected)
            self.assertEqual(alsserve.mask_bytes(MASK, masked), data)

    def test_mask_keeps_leading_zero_bytes(self):
        # Masking with the data itself gives zeros: the length must survive.
        self.assertEqual(alsserve.mask_bytes(b"abcd", b"abcdab"), b"\0" * 6)

    def test_build_close(self):
        self.assertEqual(alsserve.build_close(), b"\x88\x00")
        self.assertEqual(alsserve.build_close(1000), b"\x88\x02\x03\xe8")
        self.assertEqual(alsserve.build_close(1001, "bye"), b"\x88\x05\x03\xe9bye")
        long_close = alsserve.build_close(1002, "x" * 500)
        self.assertLessEqual(len(long_close) - 2, 125)     # a control frame stays short
        self.assertEqual(long_close[1], 125)
        # Cut on a character boundary: the reason stays valid UTF-8.
        for reason in ("é" * 100, "x" + "é" * 100, "★" * 60):
            payload = alsserve.build_close(1002, reason)[2:]
            self.assertLessEqual(len(payload), 125)
            self.assertTrue(reason.startswith(payload[2:].decode("utf-8")))
            self.assertGreaterEqual(len(payload), 122)

    def test_build_text(self):
        self.assertEqual(alsserve.build_text('{"type": "new_image"}'), b"\x81\x15" + NEW_IMAGE)


class CloseCodeTest(unittest.TestCase):

    def test_valid(self):
        for code in VALID_CLOSE_CODES:
            self.assertTrue(alsserve.is_valid_close_code(code), code)

    def test_invalid(self):
        for code in INVALID_CLOSE_CODES:
            self.assertFalse(alsserve.is_valid_close_code(code), code)


class HandshakeFunctionTest(unittest.TestCase):
    """websocket_accept and websocket_handshake on parsed requests."""

    def request(self, method="GET", target="/ws", version="HTTP/1.1", replace=None, drop=(), extra=()):
        headers = [("Host", "127.0.0.1"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
                   ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
        replace = replace or {}
        headers = [(k, replace.get(k, v)) for k, v in headers if k not in drop] + list(extra)
        head = "%s %s %s\r\n" % (method, target, version)
        head += "".join("%s: %s\r\n" % kv for kv in headers) + "\r\n"
        return alsserve.parse_request(head.encode("latin-1"))

    def status(self, request):
        with self.assertRaises(alsserve.HTTPError) as caught:
            alsserve.websocket_handshake(request)
        return caught.exception

    def test_accept_rfc_example(self):
        self.assertEqual(alsserve.websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_valid(self):
        head = alsserve.websocket_handshake(self.request())
        self.assertEqual(head.status, 101)
        headers = {k.lower(): v for k, v in head.headers}
        self.assertEqual(headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(headers["upgrade"].lower(), "websocket")
        self.assertEqual(headers["connection"].lower(), "upgrade")

    def test_tokens_case_insensitive_and_lists(self):
        for upgrade, connection in [("WebSocket", "upgrade"), ("websocket", "keep-alive, Upgrade"),
                                    ("h2c, WEBSOCKET", "UPGRADE,keep-alive")]:
            request = self.request(replace={"Upgrade": upgrade, "Connection": connection})
            self.assertEqual(alsserve.websocket_handshake(request).status, 101, (upgrade, connection))

    def test_offers_ignored(self):
        request = self.request(extra=[("Sec-WebSocket-Extensions", "permessage-deflate"),
                                      ("Sec-WebSocket-Protocol", "chat, superchat")])
        head = alsserve.websocket_handshake(request)
        names = {k.lower() for k, _ in head.headers}
        self.assertNotIn("sec-websocket-extensions", names)
        self.assertNotIn("sec-websocket-protocol", names)

    def test_wrong_version(self):
        for version in ("8", "12", "14", "13, 8", ""):
            error = self.status(self.request(replace={"Sec-WebSocket-Version": version}))
            self.assertEqual(error.status, 426, version)
            self.assertIn(("Sec-WebSocket-Version", "13"), error.headers)
        error = self.status(self.request(drop=("Sec-WebSocket-Version",)))
        self.assertEqual(error.status, 426)
        self.assertIn(("Sec-WebSocket-Version", "13"), error.headers)

    def test_bad_keys(self):
        for key in ("", "abc", "dGhlIHNhbXBsZSBub25jZQ",          # no padding
                    "dGhlIHNhbXBsZSBub25j",                           # 15 bytes
                    "AAAAAAAAAAAAAAAAAAAAAAAA",                       # 18 bytes
                    "dGhlIHNhbXBsZSBub25jZQ==AAAA",                   # data after padding
                    "@@@@@@@@@@@@@@@@@@@@@@==", "dGhlIHNh bXBsZSBub25jZQ=="):
            self.assertEqual(self.status(self.request(replace={"Sec-WebSocket-Key": key})).status,
                             400, key)
        self.assertEqual(self.status(self.request(drop=("Sec-WebSocket-Key",))).status, 400)
        twice = self.request(extra=[("Sec-WebSocket-Key", "AAAAAAAAAAAAAAAAAAAAAA==")])
        self.assertEqual(self.status(twice).status, 400)

    def test_no_connection_upgrade(self):
        for connection in ("keep-alive", "close", "upgraded"):
            request = self.request(replace={"Connection": connection})
            self.assertEqual(self.status(request).status, 400, connection)
        self.assertEqual(self.status(self.request(drop=("Connection",))).status, 400)

    def test_no_upgrade_is_426(self):
        self.assertEqual(self.status(self.request(drop=("Upgrade",))).status, 426)

    def test_method_and_version(self):
        self.assertEqual(self.status(self.request(method="HEAD")).status, 400)
        self.assertEqual(self.status(self.request(version="HTTP/1.0")).status, 400)


class FrameParserTest(unittest.TestCase):

    def setUp(self):
        self.parser = alsserve.FrameParser()

    def feed(self, data):
        return self.parser.feed(data)

    def fails(self, data, code):
        with self.assertRaises(alsserve.WebSocketProtocolError) as caught:
            self.feed(data)
        self.assertEqual(caught.exception.code, code)
        return caught.exception

    def test_text_and_binary(self):
        events = self.feed(cframe(Opcode.TEXT, "κόσμε".encode()) + cframe(Opcode.BINARY, b"\x00\xff"))
        self.assertEqual([(type(e), e.opcode, e.data) for e in events],
                         [(alsserve.Message, Opcode.TEXT, "κόσμε"),
                          (alsserve.Message, Opcode.BINARY, b"\x00\xff")])

    def test_byte_by_byte(self):
        data = cframe(Opcode.TEXT, b"hello" * 60) + cframe(Opcode.PING, b"x")
        events = []
        for i in range(len(data)):
            events.extend(self.feed(data[i:i + 1]))
        self.assertEqual(len(events), 2)
        self.assertEqual(events[0].data, "hello" * 60)
        self.assertEqual(events[1].payload, b"x")

    def test_empty_messages(self):
        events = self.feed(cframe(Opcode.TEXT) + cframe(Opcode.BINARY))
        self.assertEqual([e.data for e in events], ["", b""])

    def test_control_frames(self):
        events = self.feed(cframe(Opcode.PING, b"a" * 125) + cframe(Opcode.PONG, b"b") + cframe(Opcode.PING))
        self.assertIsInstance(events[0], alsserve.Ping)
        self.assertEqual(events[0].payload, b"a" * 125)
        self.assertIsInstance(events[1], alsserve.Pong)
        self.assertEqual(events[1].payload, b"b")
        self.assertEqual(events[2].payload, b"")

    def test_fragmented_with_interleaved_control(self):
        events = self.feed(cframe(Opcode.TEXT, b"Hel", fin=False) + cframe(Opcode.PING, b"p"))
        self.assertEqual(len(events), 1)
        self.assertIsInstance(events[0], alsserve.Ping)
        events = self.feed(cframe(Opcode.CONTINUATION, b"l", fin=False) + cframe(Opcode.PONG, b"q")
                           + cframe(Opcode.CONTINUATION, b"o"))
        self.assertIsInstance(events[0], alsserve.Pong)
        self.assertEqual(events[1].data, "Hello")
        self.assertEqual(events[1].opcode, Opcode.TEXT)
        events = self.feed(cframe(Opcode.BINARY, b"\x01", fin=False) + cframe(Opcode.CONTINUATION, b"\x02"))
        self.assertEqual(events[0].data, b"\x01\x02")
        self.assertEqual(events[0].opcode, Opcode.BINARY)

    def test_utf8_split_across_fragments_is_valid(self):
        kappa = "κ".encode()
        events = self.feed(cframe(Opcode.TEXT, kappa[:1], fin=False) + cframe(Opcode.CONTINUATION, kappa[1:]))
        self.assertEqual(events[0].data, "κ")

    def test_length_16_and_64_bit(self):
        events = self.feed(cframe(Opcode.BINARY, b"x" * 300))
        self.assertEqual(events[0].data, b"x" * 300)
        # A 64-bit length holding a small value (non-minimal but legal to accept).
        frame = bytes((0x82, 0x80 | 127)) + (10).to_bytes(8, "big") + MASK + alsserve.mask_bytes(MASK, b"y" * 10)
        self.assertEqual(self.feed(frame)[0].data, b"y" * 10)
        events = self.feed(cframe(Opcode.BINARY, b"z" * LIMIT))     # exactly the limit: 64-bit form
        self.assertEqual(events[0].data, b"z" * LIMIT)

    def test_unmasked(self):
        self.fails(alsserve.build_frame(Opcode.TEXT, b"hi"), 1002)

    def test_unmasked_control(self):
        self.fails(alsserve.build_frame(Opcode.PING, b"hi"), 1002)

    def test_rsv_bits(self):
        for rsv in (1, 2, 4, 7):
            self.parser = alsserve.FrameParser()
            self.fails(cframe(Opcode.TEXT, b"hi", rsv=rsv), 1002)

    def test_reserved_opcodes(self):
        for opcode in list(range(3, 8)) + list(range(11, 16)):
            self.parser = alsserve.FrameParser()
            self.fails(cframe(opcode, b"hi"), 1002)

    def test_control_too_long_from_header(self):
        for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
            self.parser = alsserve.FrameParser()
            self.fails(bytes((0x80 | opcode, 0x80 | 126)), 1002)    # two bytes are enough
        self.parser = alsserve.FrameParser()
        self.fails(cframe(Opcode.PING, b"a" * 126), 1002)

    def test_fragmented_control(self):
        for opcode in (Opcode.PING, Opcode.PONG, Opcode.CLOSE):
            self.parser = alsserve.FrameParser()
            self.fails(cframe(opcode, b"a", fin=False), 1002)

    def test_continuation_without_start(self):
        self.fails(cframe(Opcode.CONTINUATION, b"a"), 1002)
        self.parser = alsserve.FrameParser()
        self.fails(cframe(Opcode.CONTINUATION, b"a", fin=False), 1002)
        # After a complete message, a continuation has nothing to continue.
        self.parser = alsserve.FrameParser()
        self.feed(cframe(Opcode.TEXT, b"a", fin=False) + cframe(Opcode.CONTINUATION, b"b"))
        self.fails(cframe(Opcode.CONTINUATION, b"c"), 1002)

    def test_new_message_inside_fragmented(self):
        for first, second in [(Opcode.TEXT, Opcode.TEXT), (Opcode.TEXT, Opcode.BINARY),
                              (Opcode.BINARY, Opcode.TEXT), (Opcode.BINARY, Opcode.BINARY)]:
            self.parser = alsserve.FrameParser()
            self.feed(cframe(first, b"a", fin=False))
            self.fails(cframe(second, b"b"), 1002)

    def test_64_bit_length_top_bit(self):
        header = bytes((0x82, 0x80 | 127)) + (1 << 63 | 5).to_bytes(8, "big")
        self.fails(header, 1002)            # refused from the header alone

    def test_close_events(self):
        events = self.feed(cframe(Opcode.CLOSE))
        self.assertIsInstance(events[0], alsserve.Close)
        self.assertIsNone(events[0].code)
        self.assertTrue(self.parser.closed)
        self.assertEqual(self.feed(cframe(Opcode.TEXT, b"ignored")), [])
        for code in VALID_CLOSE_CODES:
            self.parser = alsserve.FrameParser()
            event = self.feed(cframe(Opcode.CLOSE, close_payload(code, "ok é".encode())))[0]
            self.assertEqual((event.code, event.reason), (code, "ok é"))

    def test_frames_after_close_ignored(self):
        events = self.feed(cframe(Opcode.CLOSE, close_payload(1000)) + alsserve.build_frame(Opcode.TEXT, b"x"))
        self.assertEqual(len(events), 1)

    def test_close_one_byte(self):
        self.fails(cframe(Opcode.CLOSE, b"\x03"), 1002)

    def test_invalid_close_codes(self):
        for code in INVALID_CLOSE_CODES:
            self.parser = alsserve.FrameParser()
            self.fails(cframe(Opcode.CLOSE, close_payload(code)), 1002)

    def test_close_reason_not_utf8(self):
        self.fails(cframe(Opcode.CLOSE, close_payload(1000, b"\xff\xfe")), 1007)
        self.parser = alsserve.FrameParser()
        self.fails(cframe(Opcode.CLOSE, close_payload(1000, "é".encode()[:1])), 1007)   # truncated

    def test_invalid_utf8_text(self):
        for payload in (b"\xff", b"abc\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", "κ".encode()[:1]):
            self.parser = alsserve.FrameParser()
            self.fails(cframe(Opcode.TEXT, payload), 1007)

    def test_invalid_utf8_binary_is_fine(self):
        self.assertEqual(self.feed(cframe(Opcode.BINARY, b"\xff"))[0].data, b"\xff")

    def test_invalid_utf8_rejected_before_final_fragment(self):
        self.assertEqual(self.feed(cframe(Opcode.TEXT, "κόσμε".encode(), fin=False)), [])
        self.fails(cframe(Opcode.CONTINUATION, b"\xf4\x90\x80\x80", fin=False), 1007)
        # Split: the first fragment ends in a lead byte, the next breaks it.
        self.parser = alsserve.FrameParser()
        self.assertEqual(self.feed(cframe(Opcode.TEXT, b"ab\xce", fin=False)), [])
        self.fails(cframe(Opcode.CONTINUATION, b"A", fin=False), 1007)
        # Invalid inside the very first fragment.
        self.parser = alsserve.FrameParser()
        self.fails(cframe(Opcode.TEXT, b"\xff", fin=False), 1007)

    def test_truncated_utf8_at_end_of_message(self):
        self.feed(cframe(Opcode.TEXT, b"ab", fin=False))
        self.fails(cframe(Opcode.CONTINUATION, b"\xce"), 1007)

    def test_too_big_from_header(self):
        self.fails(head_only(Opcode.TEXT, LIMIT + 1), 1009)
        self.parser = alsserve.FrameParser()
        self.fails(bytes((0x82, 0x80 | 127)) + (70000).to_bytes(8, "big"), 1009)

    def test_too_big_fragmented(self):
        self.feed(cframe(Opcode.BINARY, b"a" * 40000, fin=False))
        self.fails(head_only(Opcode.CONTINUATION, LIMIT - 40000 + 1), 1009)

    def test_custom_limit(self):
        self.parser = alsserve.FrameParser(max_message=100)
        self.assertEqual(self.feed(cframe(Opcode.BINARY, b"a" * 100))[0].data, b"a" * 100)
        self.fails(head_only(Opcode.BINARY, 101), 1009)


# -----------------------------------------------------------------------------
# End to end over real sockets
# -----------------------------------------------------------------------------

class WSTestCase(ServerTestCase):
    """Helpers for WebSocket tests on a running server."""

    def on_loop(self, function):
        """Run function() on the server's event loop thread; return its result."""
        future = concurrent.futures.Future()

        def run():
            try:
                future.set_result(function())
            except BaseException as error:      # reported to the caller
                future.set_exception(error)
        self.server._thread.loop.call_soon_threadsafe(run)
        return future.result(5)

    def server_client(self, sock):
        """The server's WebSocketClient for our socket."""
        name = "127.0.0.1:%d" % sock.getsockname()[1]
        clients = self.on_loop(lambda: [c for c in self.server._thread.site.hub.clients if c.peer == name])
        self.assertEqual(len(clients), 1)
        return clients[0]

    def handshake(self, raw):
        """Send a raw request; return (status, headers, body)."""
        sock = self.connect()
        sock.sendall(raw)
        status, headers, body, _ = read_response(sock)
        return status, headers, body

    def assert_alive(self, client, payload=b"alive?"):
        """The connection is open and the server answers a ping first."""
        client.send(Opcode.PING, payload)
        self.assertEqual(client.recv_frame(), (Opcode.PONG, True, payload))

    def assert_closed_with(self, client, code, reply=True):
        """The server sends Close with `code` and then closes TCP."""
        opcode, fin, payload = client.recv_frame()
        self.assertEqual(opcode, Opcode.CLOSE)
        self.assertTrue(fin)
        self.assertLessEqual(len(payload), 125)
        self.assertEqual(int.from_bytes(payload[:2], "big"), code)
        payload[2:].decode("utf-8")             # a valid reason
        if reply:
            client.send(Opcode.CLOSE, payload[:2])
        self.assertTrue(client.at_eof(5.0), "TCP not closed after Close")

    def stalled_client(self):
        """A WebSocket on a socket with a tiny receive buffer that we never read."""
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5.0)
        sock.connect(("127.0.0.1", self.port))
        sock.sendall(ws_handshake_request())
        # Read only the head, byte by byte, so no frame is consumed.
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            head += sock.recv(1)
        self.assertTrue(head.startswith(b"HTTP/1.1 101 "))
        return sock


class HandshakeTest(WSTestCase):

    def test_accept_value_on_the_wire(self):
        sock = self.connect()
        sock.sendall(ws_handshake_request(key="dGhlIHNhbXBsZSBub25jZQ=="))
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(4096)
        head = data.split(b"\r\n\r\n")[0].decode("latin-1")
        lines = head.split("\r\n")
        self.assertTrue(lines[0].startswith("HTTP/1.1 101 "), lines[0])
        headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:]}
        self.assertEqual(headers["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertEqual(headers["upgrade"].lower(), "websocket")
        self.assertIn("upgrade", headers["connection"].lower())
        self.assertNotIn("content-length", headers)
        self.assertNotIn("transfer-encoding", headers)
        self.assertEqual(data.split(b"\r\n\r\n", 1)[1], b"")    # no frame before we speak
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")

    def test_other_key(self):
        key = "x3JJHMbDL1EzLkh9GBhXDw=="
        sock = self.connect()
        sock.sendall(ws_handshake_request(key=key))
        status, headers, _ = read_response_head(sock)
        self.assertEqual(status, 101)
        self.assertEqual(headers["sec-websocket-accept"], "HSmrc0sMlYUkAGmm5OPpG2HaGWk=")

    def test_offers_ignored(self):
        extra = (b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
                 b"Sec-WebSocket-Protocol: chat, superchat\r\nOrigin: http://example.com\r\n")
        sock = self.connect()
        sock.sendall(ws_handshake_request(extra=extra))
        status, headers, rest = read_response_head(sock)
        self.assertEqual(status, 101)
        self.assertNotIn("sec-websocket-extensions", headers)
        self.assertNotIn("sec-websocket-protocol", headers)
        # Frames stay uncompressed: RSV1 would be set otherwise.
        client = WSClient(sock, rest)
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        self.server.notify_browsers_about_new_image()
        client._fill(2 + len(NEW_IMAGE), 5.0)
        self.assertEqual(bytes(client.buffer), b"\x81\x15" + NEW_IMAGE)

    def test_query_string_allowed(self):
        client = self.ws_connect("/ws?timestamp=123&x=y")
        self.assert_alive(client)

    def test_case_and_lists(self):
        raw = (b"GET /ws HTTP/1.1\r\nhost: 127.0.0.1\r\nupgrade: WebSocket\r\n"
               b"connection: keep-alive, Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
               b"sec-websocket-version: 13\r\n\r\n")
        sock = self.connect()
        sock.sendall(raw)
        status, _, rest = read_response_head(sock)
        self.assertEqual(status, 101)
        self.assert_alive(WSClient(sock, rest))

    def test_frame_in_same_packet_as_handshake(self):
        sock = self.connect()
        sock.sendall(ws_handshake_request() + cframe(Opcode.PING, b"early"))
        status, _, rest = read_response_head(sock)
        self.assertEqual(status, 101)
        self.assertEqual(WSClient(sock, rest).recv_frame(), (Opcode.PONG, True, b"early"))

    def request(self, method="GET", path="/ws", version="HTTP/1.1", key="dGhlIHNhbXBsZSBub25jZQ==",
                version_header="13", upgrade="websocket", connection="Upgrade"):
        lines = ["%s %s %s" % (method, path, version), "Host: 127.0.0.1"]
        if upgrade is not None:
            lines.append("Upgrade: " + upgrade)
        if connection is not None:
            lines.append("Connection: " + connection)
        if key is not None:
            lines.append("Sec-WebSocket-Key: " + key)
        if version_header is not None:
            lines.append("Sec-WebSocket-Version: " + version_header)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def test_defects(self):
        cases = [
            ("wrong version", dict(version_header="8"), (426,)),
            ("no version", dict(version_header=None), (426,)),
            ("missing key", dict(key=None), (400,)),
            ("key not base64", dict(key="not base64 at all!!!!!!="), (400,)),
            ("key of 15 bytes", dict(key="dGhlIHNhbXBsZSBub25j"), (400,)),
            ("key without padding", dict(key="dGhlIHNhbXBsZSBub25jZQ"), (400,)),
            ("no Connection upgrade", dict(connection="keep-alive"), (400,)),
            ("no Connection header", dict(connection=None), (400,)),
            ("POST", dict(method="POST"), (405,)),
            ("PUT", dict(method="PUT"), (405,)),
            ("HTTP/1.0", dict(version="HTTP/1.0"), (400,)),
            ("upgrade on another path", dict(path="/index.html"), (404,)),
            ("upgrade on /ws/", dict(path="/ws/"), (404,)),
            ("upgrade on /wsx", dict(path="/wsx"), (404,)),
            ("plain GET /ws", dict(upgrade=None, connection=None, key=None, version_header=None), (426, 400)),
            ("Upgrade not websocket", dict(upgrade="h2c"), (426, 400)),
        ]
        for name, options, statuses in cases:
            with self.subTest(name):
                status, headers, body = self.handshake(self.request(**options))
                self.assertIn(status, statuses)
                self.assertNotIn("sec-websocket-accept", headers)
                self.assertTrue(body.startswith(str(status).encode()))
                if status == 426:
                    self.assertEqual(headers.get("sec-websocket-version"), "13")
                    if "upgrade" in headers:    # RFC 9110 7.8: then Connection names it
                        self.assertIn("upgrade", [t.strip() for t in headers["connection"].split(",")])
        self.assertEqual(self.server.client_count, 0)

    def test_failed_handshake_then_keep_alive(self):
        # A refused upgrade is an ordinary response: the connection can go on.
        sock = self.connect()
        sock.sendall(self.request(upgrade=None, connection=None, key=None, version_header=None))
        status, headers, _, rest = read_response(sock)
        self.assertEqual((status, headers["upgrade"], headers["connection"]), (426, "websocket", "upgrade"))
        sock.sendall(self.request(version_header="8"))
        status, _, _, rest = read_response(sock, rest)
        self.assertEqual(status, 426)
        sock.sendall(ws_handshake_request())
        status, _, rest = read_response_head(sock, rest)
        self.assertEqual(status, 101)
        self.assert_alive(WSClient(sock, rest))


class SessionTest(WSTestCase):

    def test_ping_pong_identical_payload(self):
        client = self.ws_connect()
        for payload in (b"", b"x", os.urandom(125), "é".encode(), b"\x00\xff" * 10):
            client.send(Opcode.PING, payload)
            self.assertEqual(client.recv_frame(), (Opcode.PONG, True, payload))

    def test_unsolicited_pong_ignored(self):
        client = self.ws_connect()
        client.send(Opcode.PONG, b"unsolicited")
        client.send(Opcode.PONG)
        self.assert_alive(client, b"after")

    def test_client_data_messages_ignored(self):
        client = self.ws_connect()
        client.send(Opcode.TEXT, b"hello")
        client.send(Opcode.BINARY, b"\x00\x01")
        client.send(Opcode.TEXT, b'{"type": "new_image"}')
        self.assert_alive(client)            # no echo comes before the pong
        self.assertEqual(self.server.client_count, 1)

    def test_16_and_64_bit_lengths_accepted(self):
        client = self.ws_connect()
        client.send(Opcode.BINARY, b"a" * 300)                 # 16-bit length
        client.send(Opcode.TEXT, b"b" * LIMIT)                 # 64-bit length, exactly the limit
        client.send_raw(bytes((0x82, 0x80 | 127)) + (10).to_bytes(8, "big") + MASK
                        + alsserve.mask_bytes(MASK, b"c" * 10))        # 64-bit form of a short one
        self.assert_alive(client)

    def test_fragmented_text_with_interleaved_ping(self):
        client = self.ws_connect()
        client.send(Opcode.TEXT, "κό".encode(), fin=False)
        client.send(Opcode.PING, b"mid")
        # The pong comes while the message is still open.
        self.assertEqual(client.recv_frame(), (Opcode.PONG, True, b"mid"))
        client.send(Opcode.CONTINUATION, "σμ".encode()[:3], fin=False)
        client.send(Opcode.PING, b"mid2")
        self.assertEqual(client.recv_frame(), (Opcode.PONG, True, b"mid2"))
        client.send(Opcode.CONTINUATION, "σμ".encode()[3:] + "ε".encode())
        self.assert_alive(client)

    def test_close_echo(self):
        for code in (1000, 1001, 1003, 3000, 4999):
            with self.subTest(code=code):
                client = self.ws_connect()
                client.send(Opcode.CLOSE, close_payload(code, b"bye"))
                opcode, fin, payload = client.recv_frame()
                self.assertEqual((opcode, fin), (Opcode.CLOSE, True))
                self.assertEqual(int.from_bytes(payload[:2], "big"), code)
                self.assertTrue(client.at_eof(), "TCP not closed by the server")
        self.wait_for(lambda: self.server.client_count == 0, message="clients gone")

    def test_empty_close_gets_empty_close(self):
        client = self.ws_connect()
        client.send(Opcode.CLOSE)
        self.assertEqual(client.recv_frame(), (Opcode.CLOSE, True, b""))
        self.assertTrue(client.at_eof())
        self.wait_for(lambda: self.server.client_count == 0, message="client gone")

    def test_close_while_fragmented(self):
        client = self.ws_connect()
        client.send(Opcode.TEXT, b"half", fin=False)
        client.send(Opcode.CLOSE, close_payload(1000))
        self.assertEqual(client.recv_frame(), (Opcode.CLOSE, True, close_payload(1000)))
        self.assertTrue(client.at_eof())

    def test_tcp_close_without_close_frame(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        client.sock.close()
        self.wait_for(lambda: self.server.client_count == 0, message="client gone")


class ProtocolErrorTest(WSTestCase):
    """Each violation: the server sends Close with the right code, then
    closes TCP (at once when we answer, within the close timeout if not)."""

    def check(self, code, *frames, **options):
        client = self.ws_connect()
        for frame in frames:
            client.send_raw(frame)
        self.assert_closed_with(client, code, **options)

    def test_protocol_errors_1002(self):
        cases = [("unmasked", [alsserve.build_frame(Opcode.TEXT, b"hi")]),
                 ("unmasked ping", [alsserve.build_frame(Opcode.PING, b"hi")])]
        cases += [("rsv %d" % rsv, [cframe(Opcode.TEXT, b"hi", rsv=rsv)]) for rsv in (1, 2, 4)]
        cases += [("opcode %d" % op, [cframe(op, b"hi")]) for op in list(range(3, 8)) + list(range(11, 16))]
        cases += [
            ("ping > 125", [cframe(Opcode.PING, b"p" * 126)]),
            ("close > 125", [cframe(Opcode.CLOSE, close_payload(1000, b"r" * 124))]),
            ("fragmented ping", [cframe(Opcode.PING, b"p", fin=False)]),
            ("fragmented close", [cframe(Opcode.CLOSE, close_payload(1000), fin=False)]),
            ("continuation without start", [cframe(Opcode.CONTINUATION, b"x")]),
            ("text inside fragmented", [cframe(Opcode.TEXT, b"a", fin=False), cframe(Opcode.TEXT, b"b")]),
            ("binary inside fragmented", [cframe(Opcode.BINARY, b"a", fin=False), cframe(Opcode.BINARY, b"b")]),
            ("64-bit length top bit", [bytes((0x82, 0xff)) + (1 << 63 | 10).to_bytes(8, "big") + MASK]),
            ("1-byte close", [cframe(Opcode.CLOSE, b"\x03")]),
        ]
        cases += [("close code %d" % c, [cframe(Opcode.CLOSE, close_payload(c))]) for c in INVALID_CLOSE_CODES]
        for name, frames in cases:
            with self.subTest(name):
                self.check(1002, *frames)
        self.wait_for(lambda: self.server.client_count == 0, message="clients gone")

    def test_invalid_utf8_1007(self):
        cases = [("one frame", [cframe(Opcode.TEXT, b"abc\xff")]),
                 ("surrogate", [cframe(Opcode.TEXT, b"\xed\xa0\x80")]),
                 ("truncated at the end", [cframe(Opcode.TEXT, b"ab", fin=False), cframe(Opcode.CONTINUATION, b"\xce")]),
                 ("close reason", [cframe(Opcode.CLOSE, close_payload(1000, b"\xff"))])]
        for name, frames in cases:
            with self.subTest(name):
                self.check(1007, *frames)

    def test_invalid_utf8_rejected_before_final_fragment(self):
        # The final fragment is never sent: the Close must come anyway.
        client = self.ws_connect()
        client.send(Opcode.TEXT, "κόσμε".encode(), fin=False)
        client.send(Opcode.CONTINUATION, b"\xf4\x90\x80\x80", fin=False)
        self.assert_closed_with(client, 1007)
        # Split across fragments: a lead byte, then a byte that cannot follow it.
        client = self.ws_connect()
        client.send(Opcode.TEXT, b"ab\xce", fin=False)
        client.send(Opcode.CONTINUATION, b"A", fin=False)
        self.assert_closed_with(client, 1007)

    def test_message_too_big_from_header(self):
        # Only the header goes out: the server must not wait for the payload.
        self.check(1009, bytes((0x81, 0xff)) + (70000).to_bytes(8, "big") + MASK)
        self.check(1009, bytes((0x82, 0xff)) + (LIMIT + 1).to_bytes(8, "big") + MASK)
        self.check(1009, cframe(Opcode.BINARY, b"a" * 40000, fin=False),
                   bytes((0x80, 0xfe)) + (30000).to_bytes(2, "big") + MASK)

    def test_server_drops_tcp_when_peer_never_answers_close(self):
        client = self.ws_connect()
        client.send_raw(alsserve.build_frame(Opcode.TEXT, b"unmasked"))
        started = time.monotonic()
        self.assertEqual(client.recv_close(), 1002)
        self.assertTrue(client.at_eof(alsserve.Settings.ws_close_timeout + 3.0))
        self.assertLess(time.monotonic() - started, alsserve.Settings.ws_close_timeout + 3.0)
        self.wait_for(lambda: self.server.client_count == 0, message="client gone")

    def test_nothing_after_close(self):
        # After its Close the server answers nothing, not even pings.
        client = self.ws_connect()
        client.send_raw(alsserve.build_frame(Opcode.TEXT, b"unmasked"))
        self.assertEqual(client.recv_close(), 1002)
        client.send(Opcode.PING, b"late")
        self.assertTrue(client.at_eof(alsserve.Settings.ws_close_timeout + 3.0))


class BroadcastTest(WSTestCase):

    def test_new_image_to_100_clients(self):
        clients = [self.ws_connect() for _ in range(100)]
        self.wait_for(lambda: self.server.client_count == 100, message="100 clients")
        self.server.notify_browsers_about_new_image()
        wire = b"\x81\x15" + NEW_IMAGE      # FIN, text, unmasked, 21 bytes
        for client in clients:
            client._fill(len(wire), 5.0)
            self.assertEqual(bytes(client.buffer[:len(wire)]), wire)
            del client.buffer[:len(wire)]
        for client in clients[:5]:
            self.assert_alive(client)        # exactly one message each

    def test_each_notify_arrives(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        for _ in range(3):
            self.server.notify_browsers_about_new_image()
            self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, NEW_IMAGE))

    def test_notify_from_many_threads(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        threads = [threading.Thread(target=self.server.notify_browsers_about_new_image) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(5)
        # At least one, at most one per call; nothing else.
        self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, NEW_IMAGE))
        client.send(Opcode.PING, b"end")
        while True:
            frame = client.recv_frame()
            if frame[0] == Opcode.PONG:
                self.assertEqual(frame, (Opcode.PONG, True, b"end"))
                break
            self.assertEqual(frame, (Opcode.TEXT, True, NEW_IMAGE))


class AbsoluteFormTest(ServerTestCase):
    """RFC 9112 section 3.2.2: a server accepts a target in absolute form,
    the WebSocket endpoint included."""

    def test_upgrade_in_absolute_form(self):
        sock = self.connect()
        target = "http://127.0.0.1:%d/ws" % self.port
        sock.sendall(ws_handshake_request(target))
        status, headers, rest = read_response_head(sock)
        self.assertEqual(status, 101)
        self.wait_for(lambda: self.server.client_count == 1, message="the client registered")
        self.server.send_message_text('{"type": "custom"}')
        self.assertEqual(WSClient(sock, rest).recv_frame(), (Opcode.TEXT, True, b'{"type": "custom"}'))

    def test_absolute_form_of_other_paths_is_no_endpoint(self):
        sock = self.connect()
        sock.sendall(ws_handshake_request("http://127.0.0.1:%d/ws/x" % self.port))
        self.assertEqual(read_response_head(sock)[0], 404)


class ResetTest(unittest.TestCase):
    def test_linger_option_per_os(self):
        # SO_LINGER's value is two C ints on POSIX, two u_shorts on Windows.
        self.assertEqual(alsserve.linger_option("posix"), struct.pack("ii", 1, 0))
        self.assertEqual(alsserve.linger_option("nt"), struct.pack("HH", 1, 0))
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, alsserve.linger_option())
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8), struct.pack("ii", 1, 0))


class WakeUpPathTest(unittest.TestCase):
    """Other threads hand the loop work one way only: call_soon_threadsafe."""

    def run_server(self):
        folder = self.make_folder()
        server = alsserve.AlsFolderServer(folder, port=free_port(), displayed_address="ip:127.0.0.1")
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        self.addCleanup(server.stop, 0)
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(ws_handshake_request())
        status, _, rest = read_response_head(sock)
        self.assertEqual(status, 101)
        client = WSClient(sock, rest)
        deadline = time.monotonic() + 5
        while server.client_count < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        for _ in range(3):
            server.notify_browsers_about_new_image()
            self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, NEW_IMAGE))
        self.client = client
        return server

    def make_folder(self):
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        return folder

    def test_notify_and_messages_enter_through_call_soon_threadsafe(self):
        server = self.run_server()
        loop, real = server._thread.loop, server._thread.loop.call_soon_threadsafe
        handed = []

        def spy(callback, *args, **kwargs):
            if threading.current_thread() is threading.main_thread():
                handed.append(getattr(callback, "__name__", callback))
            return real(callback, *args, **kwargs)

        with mock.patch.object(loop, "call_soon_threadsafe", spy):
            server.notify_browsers_about_new_image()
            server.send_message_text('{"type": "custom"}')
            # (the notify's file is read first, off the loop: it may come second)
            received = {self.client.recv_frame()[2], self.client.recv_frame()[2]}
        self.assertEqual(received, {NEW_IMAGE, b'{"type": "custom"}'})
        self.assertEqual(handed, ["new_image", "broadcast"])

    def test_notify_after_stop_leaks_no_descriptor(self):
        if not os.path.isdir("/proc/self/fd"):
            self.skipTest("needs /proc/self/fd")
        before = len(os.listdir("/proc/self/fd"))
        for _ in range(5):
            server = self.run_server()
            server.stop(0)
            server.notify_browsers_about_new_image()
            self.client.sock.close()
        self.assertLessEqual(len(os.listdir("/proc/self/fd")), before + 2)


class SlowClientTest(WSTestCase):

    def reader(self, client):
        """Read frames of `client` in a thread; returns (frames, stop event)."""
        frames, stop = [], threading.Event()

        def run():
            while not stop.is_set():
                try:
                    frames.append(client.recv_frame(0.2))
                except socket.timeout:
                    continue
                except (OSError, AssertionError):
                    return
        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(stop.set)
        return frames, stop

    def fill(self, stalled):
        """Broadcast big messages until the stalled client's kernel buffers are
        full and the server holds output for it."""
        big = "x" * 60000
        for _ in range(1000):
            self.server.send_message_text(big)
            time.sleep(0.002)
            if self.on_loop(lambda: stalled.transport.get_write_buffer_size()):
                return len(alsserve.build_text(big))
        self.fail("the stalled client never filled up")

    def reading_and_stalled(self):
        """A client read in a thread and a stalled one: (frames of the first,
        the server's WebSocketClient of the second)."""
        frames, _ = self.reader(self.ws_connect())
        sock = self.stalled_client()
        self.wait_for(lambda: self.server.client_count == 2, message="two clients")
        return frames, self.server_client(sock)

    def assert_reader_served(self, frames):
        """The reading client gets the next notify at once."""
        count = len(frames)
        self.server.notify_browsers_about_new_image()
        self.wait_for(lambda: len(frames) > count, timeout=3.0, message="new_image to the reading client")
        self.assertEqual(frames[-1], (Opcode.TEXT, True, NEW_IMAGE))

    def test_stalled_client_does_not_delay_others_and_stays_bounded(self):
        frames, stalled = self.reading_and_stalled()
        big_frame = self.fill(stalled)
        most_pending, most_buffered = 0, 0
        for i in range(3000):
            self.server.notify_browsers_about_new_image()
            if i % 10 == 0:
                time.sleep(0.001)           # let broadcasts run one by one
                pending, buffered = self.on_loop(
                    lambda: (len(stalled.pending), stalled.transport.get_write_buffer_size()))
                most_pending, most_buffered = max(most_pending, pending), max(most_buffered, buffered)
        self.assertGreater(most_pending, 0, "the client was not stalled")
        self.assertLessEqual(most_pending, 2)
        self.assertLessEqual(most_buffered, 2 * big_frame)
        # The reading client got the flood and gets the next notify at once.
        self.assert_reader_served(frames)
        self.assertEqual(self.server.client_count, 2)

    def test_a_repeated_message_waits_once_after_the_newer_ones(self):
        # A slow phone has output waiting: frame 1, new_image, frame 2,
        # new_image must reach it as frame 1, frame 2, new_image (never
        # ending on a frame whose new_image was folded into the first).
        frames, stalled = self.reading_and_stalled()
        self.fill(stalled)
        sent = [b'{"type": "history_entry", "id": 1}', NEW_IMAGE, b'{"type": "history_entry", "id": 2}', NEW_IMAGE]

        def broadcast():
            for message in sent:
                self.server._thread.site.hub.broadcast(message.decode())
            return [alsserve.build_text(m.decode()) for m in (sent[0], sent[2], NEW_IMAGE)], list(stalled.pending)

        expected, pending = self.on_loop(broadcast)
        self.assertEqual(pending[-3:], expected)

    def test_stalled_client_dropped_after_send_timeout(self):
        self.server.settings.ws_send_timeout = 1.0
        frames, stalled = self.reading_and_stalled()
        self.fill(stalled)
        self.server.notify_browsers_about_new_image()
        self.wait_for(lambda: self.server.client_count == 1, timeout=6.0, message="stalled client dropped")
        self.assert_reader_served(frames)

    def test_stalled_client_with_many_distinct_messages_is_dropped(self):
        frames, stalled = self.reading_and_stalled()
        self.fill(stalled)
        pad = "x" * 60000               # distinct big messages: more bytes than allowed to wait
        for i in range(alsserve.Settings.ws_max_pending_bytes // 60000 + 5):
            self.server.send_message_text('{"type": "custom", "n": %d, "pad": "%s"}' % (i, pad))
            time.sleep(0.002)
        self.wait_for(lambda: self.server.client_count == 1, timeout=3.0, message="stalled client dropped")
        self.assert_reader_served(frames)

    def test_ping_flood_without_reading_stays_bounded(self):
        # A peer that pings and never reads gets only the latest pongs.
        sock = self.stalled_client()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        stalled = self.server_client(sock)
        # 16 MB of pings, each with its own payload (all-zero mask key: legal
        # and cheap to build), so that no two pongs are alike.
        for batch in range(128):
            sock.sendall(b"".join(b"\x89\xfd\0\0\0\0" + b"%08d" % (batch * 1000 + i) + b"p" * 117
                                  for i in range(1000)))
        most = 0
        for _ in range(10):
            buffered, pending = self.on_loop(lambda: (stalled.transport.get_write_buffer_size(),
                                                      sum(len(f) for f in stalled.pending)))
            most = max(most, buffered + pending)
            time.sleep(0.05)
        self.assertLess(most, 64 * 1024)


class KeepaliveTest(WSTestCase):
    settings = {"ws_ping_interval": 0.3}

    def test_silent_client_dropped_answering_client_kept(self):
        silent_sock = self.stalled_client()
        active = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 2, message="two clients")
        pings = 0
        deadline = time.monotonic() + 2.0       # more than 2 intervals plus one check
        while time.monotonic() < deadline:
            try:
                opcode, fin, payload = active.recv_frame(0.1)
            except socket.timeout:
                continue
            self.assertEqual((opcode, fin), (Opcode.PING, True))
            self.assertLessEqual(len(payload), 125)
            active.send(Opcode.PONG, payload)
            pings += 1
        self.assertGreaterEqual(pings, 3)
        self.wait_for(lambda: self.server.client_count == 1, timeout=2.0, message="silent client dropped")
        # The silent one got pings, then the server closed its connection.
        data = recv_until_close(silent_sock, 5.0)
        self.assertTrue(data.startswith(b"\x89"), data[:20])
        # The answering one is still served.
        self.server.notify_browsers_about_new_image()
        while True:
            frame = active.recv_frame()
            if frame[0] != Opcode.PING:
                break
        self.assertEqual(frame, (Opcode.TEXT, True, NEW_IMAGE))


class ClientCapTest(WSTestCase):
    settings = {"ws_max_clients": 3}

    def test_fourth_client_gets_503(self):
        clients = [self.ws_connect() for _ in range(3)]
        self.wait_for(lambda: self.server.client_count == 3, message="three clients")
        sock = self.connect()
        sock.sendall(ws_handshake_request())
        data = recv_until_close(sock)
        self.assertTrue(data.startswith(b"HTTP/1.1 503 "), data[:40])
        self.assertNotIn(b"101", data.split(b"\r\n")[0])
        self.assertNotIn(b"sec-websocket-accept", data.lower())
        self.assertEqual(self.server.client_count, 3)
        for client in clients:
            self.assert_alive(client)
        # A place freed is a place taken.
        clients[0].send(Opcode.CLOSE, close_payload(1000))
        self.assertEqual(clients[0].recv_close(), 1000)
        self.wait_for(lambda: self.server.client_count == 2, message="a client left")
        self.assert_alive(self.ws_connect())


class StopTest(WSTestCase):

    def stop_in_thread(self, grace):
        done = threading.Event()
        timing = {}

        def run():
            timing["start"] = time.monotonic()
            self.server.stop(grace)
            timing["end"] = time.monotonic()
            done.set()
        threading.Thread(target=run, daemon=True).start()
        return done, timing

    def test_disconnect_then_close_1001_to_ignoring_client(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        grace = 1.0
        done, timing = self.stop_in_thread(grace)
        self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, DISCONNECT))
        self.assertEqual(client.recv_close(), 1001)     # we ignored the disconnect
        closed_at = time.monotonic()
        self.assertLess(closed_at - timing["start"], grace + 1.5)
        self.assertTrue(client.at_eof(alsserve.Settings.ws_close_timeout + 2))
        self.assertTrue(done.wait(grace + 5))
        self.assertFalse(self.server.running)

    def test_polite_client_lets_stop_finish_early(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        done, timing = self.stop_in_thread(5.0)
        self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, DISCONNECT))
        client.send(Opcode.CLOSE, close_payload(1000))      # what the viewer page does
        self.assertEqual(client.recv_close(), 1000)
        self.assertTrue(client.at_eof())
        self.assertTrue(done.wait(4.0), "stop() waited the whole grace")

    def test_client_answering_close_1001(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        done, _ = self.stop_in_thread(2.5)
        self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, DISCONNECT))
        self.assertEqual(client.recv_close(), 1001)
        client.send(Opcode.CLOSE, close_payload(1001))
        self.assertTrue(client.at_eof())
        self.assertTrue(done.wait(5))

    def test_no_pong_after_close(self):
        client = self.ws_connect()
        self.wait_for(lambda: self.server.client_count == 1, message="client registered")
        done, _ = self.stop_in_thread(2.5)
        self.assertEqual(client.recv_frame(), (Opcode.TEXT, True, DISCONNECT))
        self.assertEqual(client.recv_close(), 1001)
        client.send(Opcode.PING, b"late")
        self.assertTrue(client.at_eof(alsserve.Settings.ws_close_timeout + 2))    # no Pong before EOF
        self.assertTrue(done.wait(5))


if __name__ == "__main__":
    unittest.main()
