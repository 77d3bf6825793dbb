"""Section 4c of alsserve.py: image-sized bodies take turns on the link.

On loopback, with paced readers standing for phones on a shared Wi-Fi: a
client that reads slowly does not hold the others back, small responses
pass queued big ones, a client that leaves while waiting leaves the queue,
and 200 waiting clients cost little memory. (The timing on a shaped link
is measured by `make bench`'s link case, tests/bench/link.py.)
"""
import asyncio
import collections
import os
import socket
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import alsserve  # noqa: E402
from support import ServerTestCase, make_jpeg, read_response, read_response_head, rss_kib  # noqa: E402

IMAGE = make_jpeg(3 * 1024 * 1024, b"\x42")


class PacedReader(threading.Thread):
    """A phone far from the access point: asks for the image and takes
    `rate` bytes a second of it."""

    def __init__(self, port, rate, path="/web_image.jpg", source="127.0.0.1"):
        super().__init__(daemon=True)
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        self.sock.bind((source, 0))
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path).encode())
        self.rate, self.received, self.done = rate, 0, None
        self.stop = threading.Event()

    def run(self):
        self.sock.settimeout(0.05)
        while not self.stop.is_set():
            began, budget = time.monotonic(), int(self.rate / 20)
            while budget > 0 and not self.stop.is_set():
                try:
                    data = self.sock.recv(min(budget, 65536))
                except socket.timeout:
                    break
                except OSError:
                    return
                if not data:
                    return
                budget -= len(data)
                self.received += len(data)
                if self.received >= len(IMAGE) and self.done is None:     # (head included: near enough)
                    self.done = time.monotonic()
            self.stop.wait(max(0.0, 0.05 - (time.monotonic() - began)))

    def close(self):
        self.stop.set()
        self.sock.close()


class TurnsTest(ServerTestCase):

    def setUp(self):
        super().setUp()
        self.write("web_image.jpg", IMAGE)
        self.write("data.json", b'{"STACK_SIZE": 3, "EXPO": "0:01:30"}')
        self.turns = self.server._thread.site.turns

    def paced(self, rate, source="127.0.0.1"):
        reader = PacedReader(self.port, rate, source=source)
        reader.start()
        self.addCleanup(reader.close)
        return reader

    def fetch(self, path="/web_image.jpg", timeout=10.0, source="127.0.0.1"):
        """(seconds to the whole body, body)."""
        began = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout, source_address=(source, 0)) as sock:
            sock.sendall(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            status, _, body, _ = read_response(sock)
        self.assertEqual(status, 200)
        return time.monotonic() - began, body

    def waiting_connection(self):
        """A request for the image that has to wait for its turn."""
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.addCleanup(sock.close)
        sock.sendall(b"GET /web_image.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        return sock

    def test_a_slow_reader_does_not_hold_the_others_back(self):
        self.assertEqual(self.fetch()[1], IMAGE)            # the link's pace, as a near phone takes it
        slow = self.paced(200 * 1024)                       # 15 s for the image
        self.wait_for(lambda: slow.received > 0, message="the slow transfer on its way")
        results = []

        def near():
            results.append(self.fetch(timeout=15))

        threads = [threading.Thread(target=near) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        self.assertEqual([body == IMAGE for _, body in results], [True] * 5)
        self.assertLess(max(seconds for seconds, _ in results), 3.0)    # not after the slow one
        self.assertIsNone(slow.done)
        self.assertGreater(slow.received, 0)                 # and it is not starved

    def test_a_client_slow_by_itself_is_remembered_and_does_not_wait_next_time(self):
        # Phones at addresses of their own (127.0.0.0/8 is all this machine's):
        # near ones at 2 MB/s, a far one at 200 KB/s.
        near = self.paced(2 << 20, source="127.0.0.2")
        self.wait_for(lambda: near.done, timeout=10, message="a near phone served")
        slow = self.paced(200 << 10, source="127.0.0.3")
        self.wait_for(lambda: "127.0.0.3" in self.turns.paces, timeout=5, message="the far one's pace learned")
        self.assertNotIn("127.0.0.2", self.turns.paces)
        busy = self.paced(2 << 20, source="127.0.0.2")     # it fills the link, the far one does not
        self.wait_for(lambda: busy.received > 0, message="the near one on its way")
        slow.close()
        self.wait_for(lambda: len(self.turns.active) == 1, message="the far one gone")
        waiting = socket.create_connection(("127.0.0.1", self.port), timeout=5, source_address=("127.0.0.4", 0))
        self.addCleanup(waiting.close)
        waiting.sendall(b"GET /web_image.jpg HTTP/1.1\r\nHost: x\r\n\r\n")
        self.wait_for(lambda: len(self.turns.waiting) == 1, message="an unknown phone waits its turn")
        again = self.paced(200 << 10, source="127.0.0.3")
        self.wait_for(lambda: again.received > 0, timeout=2, message="the far one served at once")
        self.assertEqual(len(self.turns.waiting), 1)

    def fill_the_link(self):
        """Two slow transfers that are all the link has ever carried: they
        fill it, and the next image request waits."""
        first = self.paced(300 * 1024)
        self.wait_for(lambda: self.turns.best_rate > 0, timeout=5, message="the first pace measured")
        second = self.paced(300 * 1024)                     # (the one probe lets it in)
        self.wait_for(lambda: len(self.turns.active) == 2, timeout=5, message="two on their way")
        self.wait_for(lambda: all(t.rate for t in self.turns.active), timeout=5, message="their paces")
        return first, second

    def test_small_responses_pass_queued_big_ones(self):
        first, _second = self.fill_the_link()
        waiting = self.waiting_connection()
        self.wait_for(lambda: len(self.turns.waiting) == 1, message="the third one waits")
        waiting.settimeout(0.5)
        with self.assertRaises(socket.timeout):
            waiting.recv(1)                                 # no answer yet
        for path in ("/data.json", "/index.html", "/history.json"):
            seconds, _ = self.fetch(path)
            self.assertLess(seconds, 0.5, path)
        first.close()                                       # a turn comes free
        waiting.settimeout(10)
        status, _, _ = read_response_head(waiting)
        self.assertEqual(status, 200)

    def test_a_client_that_leaves_while_waiting_leaves_the_queue(self):
        first, _second = self.fill_the_link()
        leaving, staying = self.waiting_connection(), self.waiting_connection()
        self.wait_for(lambda: len(self.turns.waiting) == 2, message="two waiting")
        leaving.close()
        self.wait_for(lambda: len(self.turns.waiting) == 1, timeout=1.0, message="the one that left gone")
        first.close()
        staying.settimeout(10)
        self.assertEqual(read_response_head(staying)[0], 200)      # the next turn was its
        self.wait_for(lambda: not self.turns.waiting, message="nobody waiting")

    def test_two_hundred_waiting_clients_cost_little(self):
        self.fill_the_link()
        before = rss_kib()
        sockets = [self.waiting_connection() for _ in range(200)]
        self.wait_for(lambda: len(self.turns.waiting) == 200, timeout=10, message="200 waiting")
        grown = rss_kib() - before
        self.assertLess(grown, 20 * 1024, "%d KiB for 200 waiting clients" % grown)
        for sock in sockets:
            sock.close()
        self.wait_for(lambda: not self.turns.waiting, timeout=5, message="the queue emptied")


class FakeTransfer:
    """A transfer as Turns sees it, its pace given; also the client's
    reader, writer and transport for Turns.turn()."""

    gone = False

    def __init__(self, peer, rate):
        self.peer, self.rate, self.started = peer, rate, 0.0
        self.samples = collections.deque([(0.0, 0)], maxlen=alsserve.TURN_WINDOW + 1)
        self.writer = self.reader = self
        self.transport = self

    def delivered(self):
        return 0

    def get_extra_info(self, name):
        return None                     # (no socket: the send buffer is left alone)

    def get_write_buffer_size(self):
        return 0

    def is_closing(self):
        return False

    def at_eof(self):
        return False


class PassOnTest(unittest.TestCase):
    """When a transfer ends, what it took goes to those that shared the link
    with it; the next one waits for their paces measured anew."""

    def finish_first(self, rates):
        """Turns with transfers at these paces (the link's best: their sum);
        the first ends. The others' rates after, and whether one waiting got its turn."""
        async def scenario():
            turns = alsserve.Turns()
            transfers = [FakeTransfer("10.0.0.%d" % i, rate) for i, rate in enumerate(rates)]
            turns.active.update(transfers)
            turns.best_rate, turns.probed = sum(rates), True
            waiting = FakeTransfer("10.0.0.99", None)
            waiting.turn = asyncio.get_running_loop().create_future()
            turns.waiting.append(waiting)
            turns.done(transfers[0], whole=True)
            return [t.rate for t in transfers[1:]], waiting.turn.done()
        return asyncio.run(scenario())

    def test_a_phone_that_shared_the_link_takes_what_is_freed(self):
        rates, admitted = self.finish_first([1.5e6, 1.5e6])
        self.assertEqual(rates, [3e6])
        self.assertFalse(admitted, "the next phone waits: the link is still full")

    def test_a_phone_slow_by_itself_keeps_its_pace_and_the_next_one_starts(self):
        rates, admitted = self.finish_first([2.75e6, 0.25e6])
        self.assertEqual(rates, [0.25e6])
        self.assertTrue(admitted, "the far phone alone leaves the link idle")


class StopTest(unittest.TestCase):
    """What STOP does to transfers on their way or waiting: their sockets
    closed, their tasks cancelled. Turns goes on without an error."""

    def test_a_closed_socket_holds_nothing_in_flight(self):
        sock = socket.socket()
        sock.close()
        self.assertEqual(alsserve.unacknowledged_bytes(sock), 0)

    def test_a_waiting_transfer_whose_task_was_cancelled_leaves_the_queue(self):
        async def scenario():
            turns = alsserve.Turns()
            turns.best_rate, turns.probed = 3e6, True
            active = FakeTransfer("10.0.0.1", 3e6)
            turns.active.add(active)
            waiting = FakeTransfer("10.0.0.2", None)
            waiting.turn = asyncio.get_running_loop().create_future()
            turns.waiting.append(waiting)
            waiting.turn.cancel()           # as Task.cancel() does to the future its task awaits,
            turns.done(active, whole=True)  # and the task's own cleanup runs later
            return turns.active, list(turns.waiting)
        self.assertEqual(asyncio.run(scenario()), (set(), []))


class FastNetworkTest(unittest.TestCase):
    """A body the link carries in under TURN_QUICK goes at once: over a
    wired LAN or to the laptop's own browser, waiting would only cost."""

    def waits(self, best_rate):
        """Whether a 3 MB body waits while another has just started."""
        async def scenario():
            turns = alsserve.Turns()
            turns.best_rate, turns.probed = best_rate, True
            turns.active.add(FakeTransfer("10.0.0.1", None))       # its pace not shown yet
            client = FakeTransfer("10.0.0.2", None)
            try:
                await asyncio.wait_for(turns.turn(client, client, len(IMAGE)), 0.3)
            except asyncio.TimeoutError:
                return True
            return False
        return asyncio.run(scenario())

    def test_a_fast_network_lets_every_body_go(self):
        self.assertFalse(self.waits(best_rate=1e9))     # 3 MB in 3 ms

    def test_a_wifi_link_keeps_the_turns(self):
        self.assertTrue(self.waits(best_rate=3e6))      # 3 MB in 1 s


if __name__ == "__main__":
    unittest.main()
