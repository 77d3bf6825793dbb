"""Section 5 of alsserve.py: web folder publishing.

Atomic writes, the retried replace, the viewer bundle copied into the web
folder, the waiting image, data.json's exact text and the checks of the
configuration values. Everything is asserted on the files users get (on
disk or over HTTP).
"""
import errno
import json
import os
import shutil
import stat
import sys
import tempfile
import threading
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import ASSETS, alsserve, free_port, http_get, make_jpeg, read  # noqa: E402

ALS_ICON_NAMES = ["%s_%s.png" % (button, state)
                  for button in ("fullpage", "home", "zoomin", "zoomout")
                  for state in ("grouphover", "hover", "pressed", "rest")]


def tree(folder):
    """{relative path: bytes} of every file below folder."""
    files = {}
    for current, _dirs, names in os.walk(folder):
        for name in names:
            path = os.path.join(current, name)
            files[os.path.relpath(path, folder).replace(os.sep, "/")] = read(path)
    return files


class TempFolderCase(unittest.TestCase):
    def make_folder(self, prefix="alsserve-publish-"):
        folder = tempfile.mkdtemp(prefix=prefix)
        self.addCleanup(shutil.rmtree, folder, True)
        return folder

    def put(self, folder, relative, data):
        path = os.path.join(folder, *relative.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        return path


class AtomicWriteTest(TempFolderCase):
    def setUp(self):
        self.folder = self.make_folder()
        self.path = os.path.join(self.folder, "web_image.jpg")

    def test_creates_the_file_and_leaves_nothing_else(self):
        alsserve.atomic_write(self.path, b"first")
        self.assertEqual(read(self.path), b"first")
        self.assertEqual(os.listdir(self.folder), ["web_image.jpg"])

    def test_replaces_existing_content_readable_by_the_web_server_user(self):
        alsserve.atomic_write(self.path, b"old content, longer than the new one")
        alsserve.atomic_write(self.path, b"new")
        self.assertEqual(read(self.path), b"new")
        # mkstemp creates 0600 files: the published file must be world readable.
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o644)
        self.assertEqual(os.listdir(self.folder), ["web_image.jpg"])

    def test_failed_replace_keeps_old_content_and_removes_the_temporary_file(self):
        alsserve.atomic_write(self.path, b"old")
        with mock.patch.object(alsserve, "replace_file", side_effect=OSError(errno.EIO, "disk failed")):
            with self.assertRaises(OSError):
                alsserve.atomic_write(self.path, b"new")
        self.assertEqual(read(self.path), b"old")
        self.assertEqual(os.listdir(self.folder), ["web_image.jpg"])

    def test_failed_write_removes_the_temporary_file(self):
        alsserve.atomic_write(self.path, b"old")
        with self.assertRaises(TypeError):
            alsserve.atomic_write(self.path, "text is not bytes")
        self.assertEqual(read(self.path), b"old")
        self.assertEqual(os.listdir(self.folder), ["web_image.jpg"])

    def test_interrupt_during_replace_removes_the_temporary_file(self):
        with mock.patch.object(alsserve, "replace_file", side_effect=KeyboardInterrupt):
            with self.assertRaises(KeyboardInterrupt):
                alsserve.atomic_write(self.path, b"new")
        self.assertEqual(os.listdir(self.folder), [])

    def test_concurrent_reader_sees_old_or_new_content_only(self):
        versions = [make_jpeg(20000 + 7000 * i, bytes([0x41 + i])) for i in range(4)]
        alsserve.atomic_write(self.path, versions[0])
        stop = threading.Event()
        seen, bad = set(), []

        def reader():
            while not stop.is_set():
                data = read(self.path)
                if data in versions:
                    seen.add(versions.index(data))
                else:
                    bad.append(len(data))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            for i in range(120):
                alsserve.atomic_write(self.path, versions[i % 4])
        finally:
            stop.set()
            thread.join(10)
        self.assertEqual(bad, [], "reader saw a partial file")
        self.assertGreater(len(seen), 1, "reader never saw a change")
        self.assertEqual(os.listdir(self.folder), ["web_image.jpg"])


class ReplaceFileTest(TempFolderCase):
    def setUp(self):
        folder = self.make_folder()
        self.source = os.path.join(folder, ".source.tmp")
        self.target = os.path.join(folder, "web_image.jpg")
        with open(self.source, "wb") as f:
            f.write(b"new")
        with open(self.target, "wb") as f:
            f.write(b"old")
        self.real_replace = os.replace

    def test_retries_while_a_reader_holds_the_target(self):
        calls = []

        def flaky(source, target):
            calls.append((source, target))
            if len(calls) <= 2:
                raise PermissionError(errno.EACCES, "held open by a reader")
            self.real_replace(source, target)

        began = time.monotonic()
        alsserve.replace_file(self.source, self.target, replace=flaky, pause=0.05)
        self.assertEqual(len(calls), 3)
        self.assertGreaterEqual(time.monotonic() - began, 0.1)     # a pause after each refusal
        self.assertEqual(read(self.target), b"new")
        self.assertFalse(os.path.exists(self.source))

    def test_gives_up_after_the_attempts(self):
        replace = mock.Mock(side_effect=PermissionError(errno.EACCES, "locked"))
        with self.assertRaises(PermissionError):
            alsserve.replace_file(self.source, self.target, replace=replace, attempts=5, pause=0)
        self.assertEqual(replace.call_count, 5)
        self.assertEqual(read(self.target), b"old")

    def test_other_errors_are_not_retried(self):
        replace = mock.Mock(side_effect=FileNotFoundError(errno.ENOENT, "gone"))
        with self.assertRaises(FileNotFoundError):
            alsserve.replace_file(self.source, self.target, replace=replace, pause=0)
        self.assertEqual(replace.call_count, 1)


class PublishAssetsTest(TempFolderCase):
    def setUp(self):
        self.bundle = self.make_folder("alsserve-bundle-")
        self.web = self.make_folder("alsserve-web-")
        self.put(self.bundle, "index.html", b"<html>viewer</html>")
        self.put(self.bundle, "viewer.css", b"body{}")
        self.put(self.bundle, "waiting.jpg", make_jpeg(500, b"w"))
        for name in ("home_rest.png", "zoomin_rest.png"):
            self.put(self.bundle, "icons/" + name, b"\x89PNG " + name.encode())
        self.put(self.bundle, ".DS_Store", b"junk")
        self.put(self.bundle, "icons/.hidden.png", b"junk")
        self.put(self.bundle, ".git/config", b"junk")
        self.put(self.bundle, "demo/frame01.jpg", make_jpeg(300, b"d"))

    def test_copies_everything_but_dotfiles_and_demo_frames(self):
        written = alsserve.publish_assets(self.bundle, self.web)
        expected = {name: data for name, data in tree(self.bundle).items()
                    if not name.startswith((".", "demo/")) and "/." not in name}
        self.assertEqual(tree(self.web), expected)
        self.assertEqual(sorted(os.path.relpath(p, self.web).replace(os.sep, "/") for p in written),
                         sorted(expected))

    def test_our_bundle_is_published_without_demo_frames(self):
        alsserve.publish_assets(ASSETS, self.web)
        published = tree(self.web)
        self.assertIn("index.html", published)
        self.assertIn("icons/zoomin_rest.png", published)
        self.assertEqual(published["index.html"], read(os.path.join(ASSETS, "index.html")))
        self.assertFalse(any(name.startswith("demo") for name in published), sorted(published))

    def test_unchanged_files_are_not_rewritten(self):
        alsserve.publish_assets(self.bundle, self.web)
        old = 1500000000
        for name in tree(self.web):
            os.utime(os.path.join(self.web, name), (old, old))
        self.assertEqual(alsserve.publish_assets(self.bundle, self.web), [])
        for name in tree(self.web):
            self.assertEqual(os.stat(os.path.join(self.web, name)).st_mtime, old, name)

    def test_changed_files_are_refreshed_and_only_those(self):
        alsserve.publish_assets(self.bundle, self.web)
        old = 1500000000
        for name in tree(self.web):
            os.utime(os.path.join(self.web, name), (old, old))
        self.put(self.bundle, "icons/home_rest.png", b"\x89PNG new look")
        self.put(self.web, "index.html", b"edited by hand")
        written = alsserve.publish_assets(self.bundle, self.web)
        self.assertEqual(sorted(os.path.relpath(p, self.web).replace(os.sep, "/") for p in written),
                         ["icons/home_rest.png", "index.html"])
        self.assertEqual(read(os.path.join(self.web, "icons", "home_rest.png")), b"\x89PNG new look")
        self.assertEqual(read(os.path.join(self.web, "index.html")), b"<html>viewer</html>")
        self.assertEqual(os.stat(os.path.join(self.web, "viewer.css")).st_mtime, old)

    def test_other_files_of_the_web_folder_are_left_alone(self):
        self.put(self.web, "web_image.jpg", make_jpeg(100, b"i"))
        self.put(self.web, "notes.txt", b"mine")
        alsserve.publish_assets(self.bundle, self.web)
        self.assertEqual(read(os.path.join(self.web, "web_image.jpg")), make_jpeg(100, b"i"))
        self.assertEqual(read(os.path.join(self.web, "notes.txt")), b"mine")

    def test_waiting_image_path_falls_back_to_ours(self):
        self.assertEqual(alsserve.waiting_image_path(self.bundle),
                         os.path.join(self.bundle, "waiting.jpg"))
        os.remove(os.path.join(self.bundle, "waiting.jpg"))
        self.assertEqual(read(alsserve.waiting_image_path(self.bundle)),
                         read(os.path.join(ASSETS, "waiting.jpg")))


class StartPublishesTest(TempFolderCase):
    """What START writes into the web folder (ImageServer, publish=True)."""

    def start(self, web, assets_dir=None):
        server = alsserve.ImageServer(web, port=free_port(), displayed_address="ip:127.0.0.1",
                                      assets_dir=assets_dir)
        with self.assertLogs("alsserve", "WARNING"):     # access limited to this machine
            server.start()
        self.addCleanup(server.stop, 0)
        return server

    def test_waiting_image_when_no_image_yet(self):
        web = self.make_folder()
        server = self.start(web)
        waiting = read(os.path.join(ASSETS, "waiting.jpg"))
        self.assertEqual(read(os.path.join(web, "web_image.jpg")), waiting)
        self.assertEqual(http_get(server.port, "/web_image.jpg")[2], waiting)
        self.assertEqual(read(os.path.join(web, "data.json")), b'{"STACK_SIZE": 0, "EXPO": "0:00:00"}')
        leftovers = [n for n in os.listdir(web) if n.startswith(".") or n.endswith(".tmp")]
        self.assertEqual(leftovers, [alsserve.HISTORY_FOLDER_NAME])

    def test_existing_image_is_kept(self):
        web = self.make_folder()
        image = make_jpeg(4000, b"s")
        self.put(web, "web_image.jpg", image)
        server = self.start(web)
        self.assertEqual(read(os.path.join(web, "web_image.jpg")), image)
        self.assertEqual(http_get(server.port, "/web_image.jpg")[2], image)

    def test_als_bundle_is_published_verbatim_with_our_waiting_image(self):
        bundle = self.make_folder("als-bundle-")
        index = b"<!DOCTYPE html><html><!-- ALS 0.7 viewer --><script src='openseadragon.min.js'>"
        self.put(bundle, "index.html", index)
        self.put(bundle, "openseadragon.min.js", b"/*! openseadragon */ var OpenSeadragon=1;")
        for name in ALS_ICON_NAMES:
            self.put(bundle, "icons/" + name, b"\x89PNG\r\n\x1a\n" + name.encode())
        web = self.make_folder()
        server = self.start(web, assets_dir=bundle)
        published = tree(web)
        for name, data in tree(bundle).items():
            self.assertEqual(published.get(name), data, name)
        self.assertEqual(published["web_image.jpg"], read(os.path.join(ASSETS, "waiting.jpg")))
        self.assertNotIn("waiting.jpg", published)      # not part of that bundle
        self.assertNotIn("viewer.css", published)       # nothing of ours mixed in
        status, headers, body = http_get(server.port, "/")
        self.assertEqual((status, body), (200, index))
        status, _, body = http_get(server.port, "/icons/zoomout_pressed.png")
        self.assertEqual((status, body), (200, b"\x89PNG\r\n\x1a\nzoomout_pressed.png"))


class MetricsTest(unittest.TestCase):
    def test_exact_als_text(self):
        self.assertEqual(alsserve.metrics_json(12, 360), '{"STACK_SIZE": 12, "EXPO": "0:06:00"}')
        self.assertEqual(alsserve.metrics_json(0, 0), '{"STACK_SIZE": 0, "EXPO": "0:00:00"}')

    def test_exposure_is_rounded_like_als(self):
        cases = [(0.4, "0:00:00"), (0.6, "0:00:01"), (59.5, "0:01:00"), (3599.6, "1:00:00"),
                 (12.5, "0:00:12"), (13.5, "0:00:14"),   # round(): half to even, as ALS
                 (45296, "12:34:56"), (86399.4, "23:59:59")]
        for seconds, text in cases:
            self.assertEqual(alsserve.format_exposure(seconds), text, seconds)

    def test_more_than_a_day_reads_as_timedelta_does(self):
        self.assertEqual(alsserve.format_exposure(90000), "1 day, 1:00:00")
        self.assertEqual(alsserve.format_exposure(2 * 86400 + 61), "2 days, 0:01:01")
        self.assertEqual(json.loads(alsserve.metrics_json(3000, 90000)),
                         {"STACK_SIZE": 3000, "EXPO": "1 day, 1:00:00"})

    def test_metrics_file_bytes(self):
        with tempfile.TemporaryDirectory() as web:
            server = alsserve.ImageServer(web)          # (not started: update_metrics writes all the same)
            server.update_metrics(12, 360.2)
            self.assertEqual(read(os.path.join(web, "data.json")), b'{"STACK_SIZE": 12, "EXPO": "0:06:00"}')
            self.assertEqual(os.listdir(web), ["data.json"])


class CheckValuesTest(TempFolderCase):
    def test_web_folder_accepted_as_absolute_path(self):
        folder = self.make_folder()
        self.assertEqual(alsserve.check_web_folder(folder), os.path.abspath(folder))

    def test_missing_web_folder_is_named(self):
        missing = os.path.join(self.make_folder(), "nowhere")
        with self.assertRaises(ValueError) as caught:
            alsserve.check_web_folder(missing)
        self.assertIn(missing, str(caught.exception))
        self.assertIn("does not exist", str(caught.exception))
        self.assertFalse(os.path.exists(missing))

    def test_file_as_web_folder_is_named(self):
        path = self.put(self.make_folder(), "file.txt", b"x")
        with self.assertRaises(ValueError) as caught:
            alsserve.check_web_folder(path)
        self.assertIn(path, str(caught.exception))
        self.assertIn("not a directory", str(caught.exception))

    def test_read_only_web_folder_is_named(self):
        folder = self.make_folder()
        # root may write anywhere: make the access check answer as for a user.
        with mock.patch.object(alsserve.os, "access", return_value=False):
            with self.assertRaises(ValueError) as caught:
                alsserve.check_web_folder(folder)
        self.assertIn(folder, str(caught.exception))
        self.assertIn("not writable", str(caught.exception))

    def test_web_folder_of_wrong_type(self):
        for value in (None, 42):
            with self.assertRaises(ValueError) as caught:
                alsserve.check_web_folder(value)
            self.assertIn(repr(value), str(caught.exception))

    def test_port_range(self):
        for port in (1024, 8000, 65535):
            self.assertEqual(alsserve.check_port(port), port)
        for port in (0, 80, 1023, 65536, -1, "8000", 8000.0, True, None):
            with self.assertRaises(ValueError, msg=repr(port)) as caught:
                alsserve.check_port(port)
            message = str(caught.exception)
            self.assertIn("1024-65535", message)
            self.assertIn(repr(port), message)

    def test_address_preference(self):
        self.assertIsNone(alsserve.parse_address_preference("auto"))
        self.assertEqual(alsserve.parse_address_preference("ip:192.168.1.10"), "192.168.1.10")
        self.assertEqual(alsserve.parse_address_preference("ip:127.0.0.1"), "127.0.0.1")
        for value in ("", "Auto", "192.168.1.10", "ip:", "ip:300.1.1.1", "ip:192.168.1",
                      "ip:::1", "ip:fe80::1", "ip:localhost", "tcp:10.0.0.1", None, 1):
            with self.assertRaises(ValueError, msg=repr(value)) as caught:
                alsserve.parse_address_preference(value)
            message = str(caught.exception)
            self.assertIn(repr(value), message)
            self.assertIn("auto", message)

    def test_jpeg_check(self):
        self.assertEqual(alsserve.check_jpeg(make_jpeg(10)), make_jpeg(10))
        for data in (b"", b"\xff\xd8", b"GIF89a...", make_jpeg(100)[:-1], b"\x89PNG\r\n\x1a\n"):
            with self.assertRaises(ValueError):
                alsserve.check_jpeg(data)


if __name__ == "__main__":
    unittest.main()
