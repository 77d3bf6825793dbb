"""Section 5, the history of the night: frames on disk within a budget,
history.json and history/<id>.jpg over HTTP, the frame message, restarts
and new sessions."""

import json
import os
import shutil
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from support import (LogCapture, count_reads, free_port, make_jpeg, make_png, next_announcement,  # noqa: E402
                     read, wait_until, ws_open)

import alsserve  # noqa: E402
from alsserve import History  # noqa: E402

NEW_IMAGE = {"type": "new_image"}


class FolderCase(unittest.TestCase):
    def make_folder(self):
        folder = tempfile.mkdtemp(prefix="alsserve-history-")
        self.addCleanup(shutil.rmtree, folder, True)
        return folder


# -- the store, without a server ------------------------------------------------

def add(history, body, ext, when, stack_size=None, exposure=None, free=None):
    """What the announcer does with a new image, in one go: list it, then
    run its disk work and mark it written."""
    entry = history.add(alsserve.FileSnapshot(body, when, (0, len(body))), ext, when, stack_size, exposure, free)
    for name, outcome in history.write_job()():
        history.written(name, outcome)
    return entry


def as_list(history):
    return [entry.as_json() for entry in history.entries]


class HistoryStoreTest(FolderCase):

    def open(self, folder, **settings):
        history = History(folder, alsserve.Settings(**settings))
        history.open()
        return history

    def test_a_new_history_never_reuses_the_ids_of_an_earlier_one(self):
        # Entry URLs are immutable for caches: another folder, or a history
        # removed between two nights, must not start again at history/1.jpg.
        first = self.open(self.make_folder())
        ids = [add(first, make_jpeg(1000, bytes([i])), ".jpg", float(i)).id for i in range(3)]
        time.sleep(0.01)
        again = self.open(self.make_folder())
        self.assertGreater(add(again, make_jpeg(1000), ".jpg", 9.0).id, ids[-1])
        self.assertGreater(ids[0], 1500000000000, "the time in milliseconds")

    def test_entries_are_files_with_increasing_ids_and_an_index(self):
        folder = self.make_folder()
        history = self.open(folder)
        images = [make_jpeg(1000 + i, bytes([i])) for i in range(3)]
        entries = [add(history, data, ".jpg", 1000.0 + i, 10 + i, "0:0%d:00" % i) for i, data in enumerate(images)]
        ids = [e.id for e in entries]
        self.assertEqual(ids, sorted(set(ids)))
        for entry, data in zip(entries, images):
            path = os.path.join(folder, "%d.jpg" % entry.id)
            self.assertEqual(read(path), data)
            self.assertEqual(os.stat(path).st_mtime, entry.time)       # its Last-Modified
        self.assertEqual(as_list(history)[1], {"id": ids[1], "time": 1001.0, "stack_size": 11,
                                               "exposure": "0:01:00", "bytes": 1001,
                                               "url": "history/%d.jpg" % ids[1], "session": 1, "title": ""})
        self.assertEqual(sorted(os.listdir(folder)), sorted(["%d.jpg" % i for i in ids] + ["index.json"]))
        png = add(history, make_png(500), ".png", 2000.0)
        self.assertEqual((png.url, png.stack_size, png.exposure), ("history/%d.png" % png.id, None, None))

    def test_budget_by_count_drops_the_oldest(self):
        folder = self.make_folder()
        history = self.open(folder, history_entries=3)
        ids = [add(history, make_jpeg(1000, bytes([i])), ".jpg", float(i)).id for i in range(5)]
        self.assertEqual([e["id"] for e in as_list(history)], ids[2:])
        self.assertEqual(sorted(os.listdir(folder)), sorted(["%d.jpg" % i for i in ids[2:]] + ["index.json"]))

    def test_budget_by_bytes(self):
        folder = self.make_folder()
        history = self.open(folder, history_bytes=2500)
        ids = [add(history, make_jpeg(1000, bytes([i])), ".jpg", float(i)).id for i in range(4)]
        self.assertEqual([e["id"] for e in as_list(history)], ids[2:])
        self.assertIsNone(add(history, make_jpeg(3000), ".jpg", 9.0), "an image over the whole budget")
        self.assertEqual(sum(os.path.getsize(os.path.join(folder, n)) for n in os.listdir(folder)
                             if n.endswith(".jpg")), 2000)

    def test_no_entry_below_the_free_space_floor(self):
        folder = self.make_folder()
        history = self.open(folder)
        first = add(history, make_jpeg(1000, b"a"), ".jpg", 1.0)
        logs = LogCapture(("alsserve",)).install(self)
        for i in range(3):
            self.assertIsNone(add(history, make_jpeg(1000, bytes([i])), ".jpg", 2.0 + i, free=900 << 20))
        warnings = [r.getMessage() for r in logs.records if "floor" in r.getMessage()]
        self.assertEqual(len(warnings), 1, "one warning per low-disk episode, not one per image")
        self.assertIn("900 MiB free", warnings[0])
        self.assertEqual(sorted(os.listdir(folder)), ["%d.jpg" % first.id, "index.json"])
        # Space again: images are kept again.
        self.assertGreater(add(history, make_jpeg(1000, b"z"), ".jpg", 9.0, free=2 << 30).id, first.id)

    def test_restart_keeps_the_history_and_its_ids(self):
        folder = self.make_folder()
        history = self.open(folder)
        ids = [add(history, make_jpeg(1000, bytes([i])), ".jpg", float(i), i, "0:00:0%d" % i).id for i in range(3)]
        before = as_list(history)
        again = self.open(folder)
        self.assertEqual(as_list(again), before)
        self.assertGreater(add(again, make_jpeg(1000, b"n"), ".jpg", 5.0).id, ids[-1])

    def test_open_repairs_the_folder(self):
        folder = self.make_folder()
        history = self.open(folder)
        ids = [add(history, make_jpeg(1000, bytes([i])), ".jpg", float(i)).id for i in range(3)]
        os.remove(os.path.join(folder, "%d.jpg" % ids[1]))             # lost
        with open(os.path.join(folder, "%d.jpg" % ids[2]), "r+b") as f:
            f.truncate(10)                                             # torn by a crash
        for leftover in (".4.jpg.abc.tmp", "7.jpg", ".index.json.x.tmp"):
            with open(os.path.join(folder, leftover), "wb") as f:
                f.write(b"x")
        with open(os.path.join(folder, "notes.txt"), "wb") as f:    # not ours: left alone
            f.write(b"mine")
        again = self.open(folder)
        self.assertEqual([e["id"] for e in as_list(again)], ids[:1])
        self.assertEqual(sorted(os.listdir(folder)), sorted(["%d.jpg" % ids[0], "index.json", "notes.txt"]))
        self.assertGreater(add(again, make_jpeg(900), ".jpg", 9.0).id, ids[2], "ids are never reused")

    def test_unreadable_index_starts_a_new_history(self):
        folder = self.make_folder()
        with open(os.path.join(folder, "index.json"), "wb") as f:
            f.write(b"{not json")
        logs = LogCapture(("alsserve",)).install(self)
        history = self.open(folder)
        self.assertEqual(as_list(history), [])
        self.assertTrue(any("unreadable" in r.getMessage() for r in logs.records))

    def test_an_index_of_alsserve_1_0_0_is_read(self):
        folder = self.make_folder()
        with open(os.path.join(folder, "7.jpg"), "wb") as f:
            f.write(make_jpeg(1000))
        with open(os.path.join(folder, "index.json"), "w") as f:
            json.dump({"next_id": 8, "session": 2, "frames": [
                {"id": 7, "time": 1.5, "stack_size": 3, "exposure": "0:01:30", "bytes": 1000, "ext": ".jpg",
                 "session": 2}]}, f)
        history = self.open(folder)
        self.assertEqual([(e["id"], e["session"]) for e in as_list(history)], [(7, 2)])

    def test_new_session_keeps_the_previous_within_the_budget(self):
        folder = self.make_folder()
        history = self.open(folder, history_entries=4)
        ids = [add(history, make_jpeg(1000, bytes([i])), ".jpg", float(i)).id for i in range(3)]
        history.new_session()
        ids += [add(history, make_jpeg(1000, bytes([10 + i])), ".jpg", 10.0 + i).id for i in range(2)]
        self.assertEqual([(e["id"], e["session"]) for e in as_list(history)],
                         [(ids[1], 1), (ids[2], 1), (ids[3], 2), (ids[4], 2)])
        self.assertEqual(json.loads(history.listing().body)["session"], 2)


# -- over HTTP and the WebSocket --------------------------------------------------

class HistoryServerCase(FolderCase):
    options = {}

    def setUp(self):
        self.folder = self.make_folder()
        self.server = self.start_server()

    def start_server(self, **options):
        options = dict(self.options, **options)
        server = alsserve.ImageServer(self.folder, port=free_port(), displayed_address="ip:127.0.0.1",
                                      **options)
        logs = LogCapture(("alsserve",)).install(self)  # access limited to this machine: expected
        server.start()
        logs.uninstall()
        self.addCleanup(server.stop, 0)
        return server

    def browser(self, server=None):
        server = server or self.server
        ws = ws_open(server.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: server.client_count >= 1))
        return ws

    def get(self, path, server=None, headers=()):
        import http.client
        conn = http.client.HTTPConnection("127.0.0.1", (server or self.server).port, timeout=5)
        try:
            conn.request("GET", path, headers=dict(headers))
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def listing(self, server=None):
        status, headers, body = self.get("/history.json", server)
        self.assertEqual(status, 200)
        return json.loads(body)


class HistoryOverHTTPTest(HistoryServerCase):

    def test_history_json_lists_what_was_published_in_order_with_metrics(self):
        ws = self.browser()
        images = [make_jpeg(5000 + 100 * i, bytes([0x40 + i])) for i in range(4)]
        messages = []
        for i, data in enumerate(images):
            self.server.update_metrics(i + 1, 30 * (i + 1))
            self.server.publish_image(data)
            messages.append(next_announcement(ws))
        listing = self.listing()
        frames = listing["entries"]
        base = frames[0]["id"]
        self.assertEqual([f["id"] for f in frames], [base, base + 1, base + 2, base + 3])
        self.assertEqual([(f["stack_size"], f["exposure"]) for f in frames],
                         [(1, "0:00:30"), (2, "0:01:00"), (3, "0:01:30"), (4, "0:02:00")])
        self.assertEqual([f["bytes"] for f in frames], [len(d) for d in images])
        self.assertEqual(listing["live"], base + 3)
        self.assertEqual(listing["session"], 1)
        times = [f["time"] for f in frames]
        self.assertEqual(times, sorted(times))
        self.assertLess(abs(times[-1] - time.time()), 10)
        for frame, data, (message, new_image) in zip(frames, images, messages):
            self.assertEqual(message, dict(frame, type="history_entry"))
            self.assertEqual(new_image, NEW_IMAGE)
            status, headers, body = self.get("/" + frame["url"])
            self.assertEqual((status, body), (200, data))
            self.assertEqual(headers["cache-control"], "public, max-age=31536000, immutable")
            self.assertEqual(headers["content-type"], "image/jpeg")
            self.assertIn("etag", headers)
            self.assertEqual(self.get("/" + frame["url"], headers=[("If-None-Match", headers["etag"])])[0], 304)
        self.assertEqual(self.server.history, frames)

    def test_history_json_is_revalidated(self):
        status, headers, body = self.get("/history.json")
        self.assertEqual((status, headers["cache-control"]), (200, "no-cache"))
        self.assertEqual(headers["content-type"], "application/json; charset=utf-8")
        self.assertEqual(json.loads(body), {"session": 1, "live": None, "entries": []})
        self.assertEqual(self.get("/history.json", headers=[("If-None-Match", headers["etag"])])[0], 304)
        self.server.publish_image(make_jpeg(3000))
        self.assertTrue(wait_until(lambda: len(self.server.history) == 1))
        status, changed, body = self.get("/history.json", headers=[("If-None-Match", headers["etag"])])
        self.assertEqual(status, 200)
        self.assertNotEqual(changed["etag"], headers["etag"])

    def test_the_same_image_again_adds_no_frame(self):
        ws = self.browser()
        data = make_jpeg(4000, b"s")
        self.server.publish_image(data)
        first, _ = next_announcement(ws)
        self.server.publish_image(data)                        # same content, new file
        again, new_image = next_announcement(ws)
        self.server.notify_browsers_about_new_image()           # nothing changed at all
        third, _ = next_announcement(ws)
        self.assertEqual((again["id"], third["id"], new_image), (first["id"], first["id"], NEW_IMAGE))
        self.assertEqual(len(self.server.history), 1)

    def test_als_writes_the_image_itself_then_notifies(self):
        ws = self.browser()
        data = make_jpeg(7000, b"w")
        temporary = os.path.join(self.folder, "ALZweb_image.jpg")
        with open(temporary, "wb") as f:
            f.write(data)
        os.rename(temporary, os.path.join(self.folder, "web_image.jpg"))
        self.server.notify_browsers_about_new_image()
        frame, new_image = next_announcement(ws)
        self.assertEqual(new_image, NEW_IMAGE)
        self.assertEqual(self.get("/" + frame["url"])[2], data)

    def test_waiting_image_is_no_frame_and_reset_starts_a_new_session(self):
        ws = self.browser()
        self.server.notify_browsers_about_new_image()           # the waiting image
        self.assertEqual(next_announcement(ws), (None, NEW_IMAGE))
        self.server.publish_image(make_jpeg(3000, b"1"))
        first, _ = next_announcement(ws)
        self.server.reset_image()
        self.assertEqual(next_announcement(ws), (None, NEW_IMAGE))
        listing = self.listing()
        self.assertEqual((listing["session"], listing["live"]), (2, None))
        self.assertEqual([f["session"] for f in listing["entries"]], [1])        # kept: within budget
        self.server.publish_image(make_jpeg(3000, b"2"))
        frame, _ = next_announcement(ws)
        self.assertEqual((frame["id"], frame["session"]), (first["id"] + 1, 2))

    def test_restart_keeps_the_history(self):
        ws = self.browser()
        images = [make_jpeg(3000 + i, bytes([i])) for i in range(3)]
        for data in images:
            self.server.publish_image(data)
            next_announcement(ws)
        before = self.listing()["entries"]
        self.server.stop()
        server = self.start_server()
        self.assertEqual(self.listing(server)["entries"], before)
        for frame, data in zip(before, images):
            self.assertEqual(self.get("/" + frame["url"], server)[2], data)
        ws = self.browser(server)
        server.notify_browsers_about_new_image()                 # still the last frame's image
        frame, _ = next_announcement(ws)
        self.assertEqual(frame["id"], before[-1]["id"], "the unchanged image became a new frame after a restart")
        server.publish_image(make_jpeg(5000, b"n"))
        frame, _ = next_announcement(ws)
        self.assertEqual(frame["id"], before[-1]["id"] + 1)

    def test_concurrent_publishes_keep_ids_increasing_and_files_complete(self):
        ws = self.browser()
        published, errors = [], []

        def publisher(n):
            try:
                for i in range(10):
                    data = make_jpeg(20000 + 1000 * n + i, bytes([n * 16 + i]))
                    published.append(data)
                    self.server.publish_image(data)
            except Exception as error:      # reported below
                errors.append(error)

        threads = [threading.Thread(target=publisher, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        self.assertEqual(errors, [])
        ids = []
        while len(ids) < 40:
            frame, _ = next_announcement(ws)
            ids.append(frame["id"])
        self.assertEqual(ids, list(range(ids[0], ids[0] + 40)))
        frames = self.server.history
        self.assertEqual([f["id"] for f in frames], ids)
        history_folder = os.path.join(self.folder, alsserve.HISTORY_FOLDER_NAME)
        # Frames are written just after they are announced (served from memory meanwhile).
        expected = sorted(["%d.jpg" % i for i in ids] + ["index.json"])
        self.assertTrue(wait_until(lambda: sorted(os.listdir(history_folder)) == expected),
                        os.listdir(history_folder))
        kept = [read(os.path.join(history_folder, "%d.jpg" % f["id"])) for f in frames]
        self.assertEqual(sorted(kept), sorted(published))

    def test_names_under_history_that_are_no_frame_are_404(self):
        self.server.publish_image(make_jpeg(3000, b"\x55"))
        self.assertTrue(wait_until(lambda: len(self.server.history) == 1))
        n = self.server.history[0]["id"]
        self.assertEqual(self.get("/history/%d.jpg" % n)[0], 200)
        with open(os.path.join(self.folder, "secret.txt"), "wb") as f:
            f.write(b"secret")
        targets = ["/history/../web_image.jpg", "/history/..%2fsecret.txt", "/history/N.jpg.tmp",
                   "/history/-N.jpg", "/history/0.jpg", "/history/0N.jpg", "/history/N.JPG",
                   "/history/N.png", "/history/N", "/history/M.jpg", "/history/" + "9" * 400 + ".jpg",
                   "/history/99999999999999999999999.jpg", "/history/.N.jpg", "/history/index.json",
                   "/history/", "/history", "/history/N.jpg/x", "/history/N.jpg%00", "/history/N.jpg%20",
                   "/.alsserve-history/N.jpg", "/.alsserve-history/index.json", "/history/%2e%2e/secret.txt"]
        for target in (t.replace("N", str(n)).replace("M", str(n + 1)) for t in targets):
            with self.subTest(target=target):
                status, _, body = self.get(target)
                self.assertIn(status, (400, 404))
                self.assertNotIn(b"secret", body)
                self.assertNotIn(b"\xff\xd8", body)

    def test_new_image_message_stays_exactly_als(self):
        ws = self.browser()
        self.server.publish_image(make_jpeg(3000))
        # The raw frames on the wire: ALS's page parses the second one.
        opcode, _, first = ws.recv_frame()
        opcode, _, second = ws.recv_frame()
        self.assertEqual(second, b'{"type": "new_image"}')
        self.assertEqual(json.loads(first)["type"], "history_entry")


class HistoryOffTest(HistoryServerCase):
    options = {"settings": alsserve.Settings(history_entries=0)}

    def test_no_history_at_all(self):
        ws = self.browser()
        self.server.publish_image(make_jpeg(3000))
        self.assertEqual(next_announcement(ws), (None, NEW_IMAGE))
        self.assertEqual(self.get("/history.json")[0], 404)
        self.assertEqual(self.server.history, [])
        self.assertFalse(os.path.exists(os.path.join(self.folder, alsserve.HISTORY_FOLDER_NAME)))


class AnnouncementTest(HistoryServerCase):
    """A new image is in memory before it is announced (issue 15.1)."""

    def count_reads(self):
        reads = []
        real = alsserve.read_snapshot

        def counting(path):
            reads.append(os.path.basename(path))
            return real(path)

        patcher = mock.patch.object(alsserve, "read_snapshot", counting)
        patcher.start()
        self.addCleanup(patcher.stop)
        return reads

    def test_publish_image_costs_no_disk_read(self):
        ws = self.browser()
        reads = self.count_reads()
        data = make_jpeg(3 * 1024 * 1024, b"\x33")
        self.server.publish_image(data)
        frame, _ = next_announcement(ws)
        for path in ("/web_image.jpg?timestamp=1", "/" + frame["url"]):
            self.assertEqual(self.get(path)[2], data)
        self.assertEqual(reads, [])

    def test_write_then_notify_reads_once_before_the_announcement(self):
        ws = self.browser()
        reads = self.count_reads()
        data = make_jpeg(3 * 1024 * 1024, b"\x44")
        alsserve.atomic_write(os.path.join(self.folder, "web_image.jpg"), data)
        self.server.notify_browsers_about_new_image()
        frame, _ = next_announcement(ws)
        self.assertEqual(reads, ["web_image.jpg"], "read once, before the announcement")
        for path in ("/web_image.jpg?timestamp=2", "/" + frame["url"]):
            self.assertEqual(self.get(path)[2], data)
        self.assertEqual(reads, ["web_image.jpg"])

    def test_notifies_that_pile_up_are_read_once(self):
        ws = self.browser()
        reads = self.count_reads()
        alsserve.atomic_write(os.path.join(self.folder, "web_image.jpg"), make_jpeg(8 * 1024 * 1024, b"\x45"))
        for _ in range(50):
            self.server.notify_browsers_about_new_image()
        next_announcement(ws)
        time.sleep(0.3)
        self.assertLessEqual(len(reads), 2, reads)

    def test_publish_image_announces_before_the_disk_write_ends_and_reads_nothing(self):
        # The 3 MB replace of web_image.jpg can take 10 ms and more (ext4
        # flushes on a rename over a file): browsers do not wait for it.
        ws = self.browser()
        old = make_jpeg(3000, b"\x01")
        self.server.publish_image(old)
        next_announcement(ws)
        new = make_jpeg(3 * 1024 * 1024, b"\x02")
        real_write, entered, release = alsserve.atomic_write, threading.Event(), threading.Event()

        def slow_write(path, data):
            if path.endswith("web_image.jpg"):
                entered.set()
                release.wait(10)
            return real_write(path, data)

        reads = count_reads(self)
        with mock.patch.object(alsserve, "atomic_write", slow_write):
            publisher = threading.Thread(target=self.server.publish_image, args=(new,))
            publisher.start()
            self.assertTrue(entered.wait(5))
            entry, _ = next_announcement(ws)            # while the file is still the old one
            self.assertEqual(read(os.path.join(self.folder, "web_image.jpg")), old)
            self.assertEqual(self.get("/web_image.jpg?timestamp=1")[2], new)
            self.assertEqual(self.get("/" + entry["url"])[2], new)
            release.set()
            publisher.join(10)
        self.assertEqual(read(os.path.join(self.folder, "web_image.jpg")), new)
        self.assertTrue(wait_until(lambda: self.server._thread.announcer.routes.published is None))
        self.assertEqual(self.get("/web_image.jpg?timestamp=2")[2], new)
        self.assertEqual(reads, [], "served from memory, before and after the write")
        folder = os.path.join(self.folder, alsserve.HISTORY_FOLDER_NAME)
        self.assertTrue(wait_until(lambda: os.path.exists(os.path.join(folder, entry["url"][8:]))))
        self.assertEqual(read(os.path.join(folder, entry["url"][8:])), new)

    def test_a_failed_write_changes_nothing_a_failed_history_write_keeps_no_entry(self):
        ws = self.browser()
        old = make_jpeg(3000, b"\x01")
        self.server.publish_image(old)
        next_announcement(ws)
        self.assertTrue(wait_until(lambda: not self.server._thread.announcer.history.pending),
                        "the first entry is written")
        real_write = alsserve.atomic_write

        def disk_full(path, data):
            raise OSError(28, "No space left on device")

        logs = LogCapture(("alsserve",)).install(self)
        with mock.patch.object(alsserve, "atomic_write", disk_full):
            with self.assertRaises(OSError):
                self.server.publish_image(make_jpeg(4000, b"\x03"))
            next_announcement(ws)                       # (announced before the write failed)
            self.assertTrue(wait_until(lambda: not self.server._thread.announcer.history.pending))
        # The file is the truth again: the image that could not be written is not served,
        # and its history image (which could not be written either) is not kept.
        self.assertTrue(wait_until(lambda: self.get("/web_image.jpg?timestamp=3")[2] == old))
        self.assertEqual(len(self.server.history), 1)

        def history_disk_full(path, data):
            if alsserve.HISTORY_FOLDER_NAME in path:
                raise OSError(28, "No space left on device")
            return real_write(path, data)

        new = make_jpeg(5000, b"\x04")
        earlier = len(logs.records)         # the first failure logged its history image too
        with mock.patch.object(alsserve, "atomic_write", history_disk_full):
            self.server.publish_image(new)
            entry, _ = next_announcement(ws)
            self.assertTrue(wait_until(lambda: any(r.getMessage().startswith("history image")
                                                   for r in logs.records[earlier:])))
        self.assertEqual(self.get("/web_image.jpg?timestamp=4")[2], new)
        self.assertTrue(wait_until(lambda: len(self.server.history) == 1), "the unwritten entry is not kept")
        self.assertEqual(self.get("/" + entry["url"])[0], 404)
        for listed in self.server.history:
            self.assertEqual(self.get("/" + listed["url"])[2], old)

    def test_a_torn_image_is_not_announced_as_a_frame(self):
        ws = self.browser()
        self.server.publish_image(make_jpeg(3000, b"\x01"))
        next_announcement(ws)
        with open(os.path.join(self.folder, "web_image.jpg"), "wb") as f:
            f.write(make_jpeg(50000, b"\x02")[:30000])           # the writer stalls mid-file
        self.server.notify_browsers_about_new_image()      # re-read for about a second, then told
        self.assertEqual(next_announcement(ws), (None, NEW_IMAGE))
        self.assertEqual(len(self.server.history), 1)
        self.assertEqual(self.get("/web_image.jpg")[2], make_jpeg(3000, b"\x01"))


if __name__ == "__main__":
    unittest.main()
