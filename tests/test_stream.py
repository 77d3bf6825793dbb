"""Section 4d of alsserve.py: GET /stream.mjpg, the live image for OBS, VLC
and projectors. The multipart framing byte for byte, each new image as it
is announced, the newest image next for a client that reads nothing (memory
bounded), the PNG refusal, the connection limit, and STOP with 50 stream
clients."""
import os
import socket
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import ServerTestCase, make_jpeg, make_png, read_response_head, rss_kib, wait_until  # noqa: E402

BOUNDARY = b"--alsserve-image\r\n"


class StreamReader:
    """A client of /stream.mjpg that parses the parts as they come."""

    def __init__(self, port, method="GET"):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(("%s /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n" % method).encode())
        self.status, self.headers, self.buffer = read_response_head(self.sock)

    def fill(self, count):
        while len(self.buffer) < count:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError("stream closed")
            self.buffer += data

    def take(self, count):
        self.fill(count)
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def next_part(self):
        """(part headers as bytes, body); the boundary after the body must follow at once."""
        while b"\r\n\r\n" not in self.buffer:
            self.fill(len(self.buffer) + 1)
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
        body = self.take(length)
        return head, body


class StreamTest(ServerTestCase):
    # (what a stream client holds is measured: the cache and the history hold little)
    settings = {"cache_total_limit": 4 << 20, "history_entries": 0}

    def reader(self):
        reader = StreamReader(self.port)
        self.addCleanup(reader.sock.close)
        return reader

    def test_framing_and_each_new_image(self):
        first = make_jpeg(40000, b"\x01")
        self.server.publish_image(first)
        self.assertTrue(wait_until(lambda: self.server._thread.site.stream.image.body == first))
        reader = self.reader()
        self.assertEqual(reader.status, 200)
        self.assertEqual(reader.headers["content-type"], "multipart/x-mixed-replace; boundary=alsserve-image")
        self.assertEqual(reader.headers["connection"], "close")
        self.assertEqual(reader.take(len(BOUNDARY)), BOUNDARY)
        images = [first] + [make_jpeg(30000 + 1000 * i, bytes([i + 2])) for i in range(3)]
        for number, image in enumerate(images):
            if number:
                self.server.publish_image(image)
            head, body = reader.next_part()
            self.assertEqual(head, b"Content-Type: image/jpeg\r\nContent-Length: %d" % len(image))
            self.assertEqual(body, image)
            # The part ends with the next boundary at once, before any newer image.
            self.assertEqual(reader.take(2 + len(BOUNDARY)), b"\r\n" + BOUNDARY)

    def test_head(self):
        reader = StreamReader(self.port, "HEAD")
        self.addCleanup(reader.sock.close)
        self.assertEqual(reader.status, 200)
        reader.sock.settimeout(2)
        self.assertEqual(reader.sock.recv(100), b"")        # closed after the head

    def test_a_client_that_reads_nothing_gets_the_newest_next_in_bounded_memory(self):
        stalled = socket.socket()
        self.addCleanup(stalled.close)
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stalled.connect(("127.0.0.1", self.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        self.assertTrue(wait_until(lambda: len(self.server._thread.site.stream.clients) == 1))
        before = rss_kib()
        for i in range(100):
            last = make_jpeg(1 << 20, bytes([i, 1]))
            self.server.publish_image(last)
        stream = self.server._thread.site.stream
        self.assertTrue(wait_until(lambda: stream.image is not None and stream.image.body == last, 20))
        time.sleep(0.5)
        grown = rss_kib() - before
        # 100 MiB published; the stalled client holds at most the image it is on.
        self.assertLess(grown, 40 * 1024, "%d KiB" % grown)
        # It reads now: the part it was on, then straight the newest.
        stalled.settimeout(10)
        reader = StreamReader.__new__(StreamReader)
        reader.sock, reader.buffer = stalled, b""
        reader.fill(1)
        reader.buffer = reader.buffer.split(b"\r\n\r\n", 1)[1]     # the response head
        self.assertEqual(reader.take(len(BOUNDARY)), BOUNDARY)
        seen = []
        while not seen or seen[-1] != last:
            seen.append(reader.next_part()[1])
            reader.take(2 + len(BOUNDARY))
        self.assertLessEqual(len(seen), 8)          # (what the kernels' buffers held; not the 100 in turn)

    def test_a_png_source_is_refused_with_a_reason(self):
        self.write("web_image.jpg", b"")            # (ALS mode writes JPEG; here a PNG is announced)
        self.write("live.png", make_png(5000))
        self.server.announce_image(os.path.join(self.folder, "live.png"))
        self.assertTrue(wait_until(lambda: self.server._thread.site.stream.image is None))
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            status, headers, rest = read_response_head(sock)
        self.assertEqual(status, 404)
        self.assertIn(b"JPEG images only", rest)

    def test_stop_with_fifty_stream_clients(self):
        readers = [self.reader() for _ in range(50)]
        self.assertTrue(wait_until(lambda: len(self.server._thread.site.stream.clients) == 50))
        for reader in readers:
            reader.next_part()
        began = time.monotonic()
        self.server.stop(2.0)
        self.assertLess(time.monotonic() - began, 1.0)
        for reader in readers:
            reader.sock.settimeout(5)
            rest = reader.buffer
            while True:
                data = reader.sock.recv(65536)      # a clean end (FIN), no reset
                if not data:
                    break
                rest += data
            self.assertTrue(rest.endswith(BOUNDARY), rest[-40:])


class StreamLimitTest(ServerTestCase):
    settings = {"max_connections": 5}

    def test_streams_count_against_the_connection_limit(self):
        readers = [StreamReader(self.port) for _ in range(5)]
        for reader in readers:
            self.addCleanup(reader.sock.close)
        self.assertEqual([r.status for r in readers], [200] * 5)
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as sock:
            sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(read_response_head(sock)[0], 503)
        readers[0].sock.close()
        self.assertTrue(wait_until(lambda: len(self.server._thread.site.stream.clients) == 4))
        again = StreamReader(self.port)
        self.addCleanup(again.sock.close)
        self.assertEqual(again.status, 200)


if __name__ == "__main__":
    import unittest
    unittest.main()
