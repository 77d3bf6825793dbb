"""Soak: one server, 1000 WebSocket clients, 20 image downloaders and a
notification every 0.5 s for SOAK_SECONDS (default 60).

The clients run in a child process (this file, started with --clients) on
their own asyncio loop over raw sockets, so that the server process's
memory is the server's. Passes when nothing went wrong anywhere (no ERROR
or WARNING in the server log, no client error, no client dropped), every
client received every notification or the final message after the last
one, and the server's RSS stayed flat (second half against first half).

    make soak                          # the CI run, 60 s
    SOAK_SECONDS=10 make soak          # while developing
"""

import asyncio
import base64
import hashlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import support  # noqa: E402
from support import alsserve  # noqa: E402

SOAK_SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))
WS_CLIENTS = int(os.environ.get("SOAK_CLIENTS", "1000"))
DOWNLOADERS = 20
NOTIFY_INTERVAL = 0.5
DOWNLOAD_PAUSE = 0.05           # between two downloads of one downloader
IMAGE_SIZE = 150 * 1024
END_MESSAGE = '{"type": "soak_end"}'


def raise_fd_limit():
    """Soft RLIMIT_NOFILE up to the hard limit: 1000+ sockets per process."""
    try:
        import resource
    except ImportError:
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


# =============================================================================
# The client process
# =============================================================================

def masked_frame(opcode, payload=b""):
    return support.client_frame(opcode, payload, mask=os.urandom(4))


class Clients:
    """Every client's counts and any error, for the final report."""

    def __init__(self, count):
        self.new_images = [0] * count
        self.ended = [False] * count
        self.connected = 0
        self.downloads = 0
        self.errors = []
        self.stopping = False

    def error(self, text):
        if len(self.errors) < 50:
            self.errors.append(text)


async def ws_client(index, port, state, writers):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                      "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                      "Sec-WebSocket-Version: 13\r\n\r\n" % (port, key)).encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 101 "):
            state.error("client %d: handshake answered %r" % (index, head[:40]))
            return
        writers[index] = writer
        state.connected += 1
    except (OSError, asyncio.IncompleteReadError) as error:
        state.error("client %d: cannot connect: %r" % (index, error))
        return
    try:
        while True:
            first, second = await reader.readexactly(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await reader.readexactly(2), "big")
            elif length == 127:
                length = int.from_bytes(await reader.readexactly(8), "big")
            payload = await reader.readexactly(length)
            opcode = first & 0x0F
            if opcode == alsserve.Opcode.TEXT:
                kind = json.loads(payload.decode("utf-8")).get("type")
                if kind == "new_image":
                    state.new_images[index] += 1
                elif kind == "soak_end":
                    state.ended[index] = True
            elif opcode == alsserve.Opcode.PING:
                writer.write(masked_frame(alsserve.Opcode.PONG, payload))
            elif opcode == alsserve.Opcode.CLOSE:
                if not state.stopping:
                    state.error("client %d: closed by the server: %r" % (index, payload))
                return
    except (OSError, asyncio.IncompleteReadError) as error:
        if not state.stopping:
            state.error("client %d: connection lost: %r" % (index, error))


async def downloader(index, port, digest, state):
    """GET /web_image.jpg in a loop on one keep-alive connection."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        number = 0
        while not state.stopping:
            number += 1
            writer.write(b"GET /web_image.jpg?timestamp=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" % number)
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            if not lines[0].startswith("HTTP/1.1 200 ") or hashlib.sha256(body).hexdigest() != digest:
                state.error("downloader %d: %s, %d bytes, not the image" % (index, lines[0], len(body)))
            else:
                state.downloads += 1
            await asyncio.sleep(DOWNLOAD_PAUSE)
        writer.close()
    except (OSError, asyncio.IncompleteReadError, ValueError) as error:
        state.error("downloader %d: %r" % (index, error))


async def run_clients(port, count, digest):
    state = Clients(count)
    writers = [None] * count
    loop = asyncio.get_running_loop()
    tasks = []
    for start in range(0, count, 100):      # in batches, kind to the listen backlog
        batch = [loop.create_task(ws_client(i, port, state, writers)) for i in range(start, min(count, start + 100))]
        tasks += batch
        while state.connected + len(state.errors) < min(count, start + 100):
            await asyncio.sleep(0.01)
    print(json.dumps({"ready": state.connected}), flush=True)
    downloads = [loop.create_task(downloader(i, port, digest, state)) for i in range(DOWNLOADERS)]
    await loop.run_in_executor(None, sys.stdin.readline)       # the parent says stop
    state.stopping = True
    await asyncio.gather(*downloads)
    for writer in writers:
        if writer is not None:
            writer.write(masked_frame(alsserve.Opcode.CLOSE, (1001).to_bytes(2, "big")))
    await asyncio.wait(tasks, timeout=10)
    for writer in writers:
        if writer is not None:
            writer.close()
    print(json.dumps({"new_images": state.new_images, "ended": state.ended, "errors": state.errors,
                      "downloads": state.downloads, "connected": state.connected}), flush=True)


def client_main(argv):
    raise_fd_limit()
    port, count, digest = int(argv[0]), int(argv[1]), argv[2]
    asyncio.run(run_clients(port, count, digest))


# =============================================================================
# The test (the server process)
# =============================================================================

class SoakTest(support.ServerTestCase):

    def setUp(self):
        raise_fd_limit()
        self.logs = support.LogCapture().install(self)
        super().setUp()
        self.start_records = len(self.logs.records)     # after START's own notes

    def start_clients(self, digest):
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--clients", str(self.port),
                                  str(WS_CLIENTS), digest],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(child.stdout.close)
        self.addCleanup(child.stdin.close)
        self.addCleanup(child.wait, 30)
        self.addCleanup(child.kill)
        lines = queue.Queue()
        reader = threading.Thread(target=lambda: [lines.put(line) for line in child.stdout], daemon=True)
        reader.start()
        return child, lines

    def test_soak(self):
        image = support.make_jpeg(IMAGE_SIZE, b"\x5a")
        self.server.publish_image(image)
        child, lines = self.start_clients(hashlib.sha256(image).hexdigest())
        ready = json.loads(lines.get(timeout=120))
        self.assertEqual(ready["ready"], WS_CLIENTS, "not every WebSocket client connected")
        self.wait_for(lambda: self.server.client_count == WS_CLIENTS, timeout=10, message="clients registered")

        rss, counts, notifies = [], [], 0
        started = time.monotonic()
        next_notify = next_sample = started
        while time.monotonic() - started < SOAK_SECONDS:
            now = time.monotonic()
            if now >= next_notify:
                self.server.notify_browsers_about_new_image()
                notifies += 1
                next_notify += NOTIFY_INTERVAL
            if now >= next_sample:
                rss.append(support.rss_kib())
                counts.append(self.server.client_count)
                next_sample += 1.0
            time.sleep(max(0.0, min(next_notify, next_sample) - time.monotonic()))
        self.server.send_message_text(END_MESSAGE)
        time.sleep(3.0)                     # let the last messages arrive
        child.stdin.write("stop\n")
        child.stdin.flush()
        report = json.loads(lines.get(timeout=60))
        child.wait(30)

        self.assertEqual(report["errors"], [], "client errors")
        self.assertEqual(self.logs.errors(), [], "server errors")
        warnings = [r.getMessage() for r in self.logs.records[self.start_records:] if r.levelno >= 30]
        self.assertEqual(warnings[:5], [], "server warnings (%d)" % len(warnings))
        self.assertEqual(min(counts), WS_CLIENTS, "clients were dropped during the soak")
        self.assertGreater(report["downloads"], DOWNLOADERS * SOAK_SECONDS / 2)
        slack = max(3, notifies // 20)
        late = [i for i, (n, ended) in enumerate(zip(report["new_images"], report["ended"]))
                if not ended or n < notifies - slack]
        self.assertEqual(late[:10], [], "%d clients missed notifications (%d sent; fewest received %d)"
                         % (len(late), notifies, min(report["new_images"])))
        half = len(rss) // 2
        first, second = sum(rss[:half]) / half, sum(rss[half:]) / (len(rss) - half)
        self.assertLess(second, first * 1.2, "RSS grew: %.0f KiB then %.0f KiB" % (first, second))
        print("\nsoak: %d s, %d clients, %d notifies (each client got %d-%d), %d downloads, "
              "RSS %.1f -> %.1f MiB" % (SOAK_SECONDS, WS_CLIENTS, notifies, min(report["new_images"]),
                                         max(report["new_images"]), report["downloads"],
                                         first / 1024, second / 1024), file=sys.stderr)


HISTORY_PUBLISHES = int(os.environ.get("SOAK_PUBLISHES", "2000"))


def disk_use(folder, names):
    total = 0
    for name in names:
        try:
            total += os.path.getsize(os.path.join(folder, name))
        except FileNotFoundError:
            pass
    return total


class HistorySoakTest(support.ServerTestCase):
    """2 000 publishes with the default history budget: the history folder
    stays within it (300 frames, 1 GiB), no file is left behind, the
    server's memory stays flat, and a restart finds the same history."""

    def test_history_stays_within_its_budget(self):
        ws = self.ws_connect()
        folder = os.path.join(self.folder, alsserve.HISTORY_FOLDER_NAME)
        rss, began, base = [], time.monotonic(), None
        for i in range(HISTORY_PUBLISHES):
            size = 100 * 1024 + (i * 7919) % (100 * 1024)
            self.server.publish_image(support.make_jpeg(size, i.to_bytes(2, "big")))
            if i == 0:
                self.wait_for(lambda: self.server.history, message="the first frame")
                base = self.server.history[0]["id"]
            if i % 100 == 99:
                self.wait_for(lambda: self.server.history[-1]["id"] == base + i,
                              timeout=30, message="frame %d" % (i + 1))
                # (frames are being written meanwhile: a temporary file may
                # go between the listing and its size, and counts while there)
                names = os.listdir(folder)
                self.assertLessEqual(len([n for n in names if not n.startswith(".") and n.endswith(".jpg")]),
                                     alsserve.Settings.history_entries + 1)
                self.assertLessEqual(disk_use(folder, names), alsserve.Settings.history_bytes + 1024 * 1024)
                rss.append(support.rss_kib())
        elapsed = time.monotonic() - began
        frames = self.server.history
        self.assertEqual([f["id"] for f in frames],
                         list(range(base + HISTORY_PUBLISHES - alsserve.Settings.history_entries, base + HISTORY_PUBLISHES)))
        expected = sorted(["%d.jpg" % f["id"] for f in frames] + ["index.json"])
        self.wait_for(lambda: sorted(os.listdir(folder)) == expected, message="the last frames written")
        names = sorted(os.listdir(folder))
        self.assertEqual([n for n in os.listdir(self.folder) if n.endswith(".tmp")], [])
        disk = sum(os.path.getsize(os.path.join(folder, n)) for n in names)
        # Every frame announced, in order (the socket kept up).
        announced = 0
        while announced < HISTORY_PUBLISHES:
            opcode, _, payload = ws.recv_frame(timeout=30)
            if opcode == alsserve.Opcode.TEXT and payload.startswith(b'{"id"'):
                self.assertEqual(json.loads(payload)["id"], base + announced)
                announced += 1
        # The file cache fills up to its limit (frames are served from
        # memory), then memory stays flat: second third against the last.
        third = len(rss) // 3
        start, middle, end = rss[0], max(rss[third:2 * third]), max(rss[2 * third:])
        print("\nhistory soak: %d publishes in %.1f s; %d frames, %.1f MiB on disk; RSS %d -> %d -> %d KiB"
              % (HISTORY_PUBLISHES, elapsed, len(frames), disk / 2 ** 20, start, middle, end), file=sys.stderr)
        # (publishing 500 images a second, images wait in the announcer's
        # queue and as frames to write: generous bound, the cache twice)
        self.assertLess(end - start, 2 * (alsserve.Settings.cache_total_limit >> 10), "far beyond the cache limit")
        self.assertLess(end - middle, 16 * 1024, "server memory grew with the history")
        # A restart reads the same history back.
        self.server.stop()
        again = alsserve.ImageServer(self.folder, port=support.free_port(), displayed_address="ip:127.0.0.1")
        again.start()
        self.addCleanup(again.stop, 0)
        self.assertEqual(again.history, frames)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--clients"]:
        client_main(sys.argv[2:])
    else:
        unittest.main()
