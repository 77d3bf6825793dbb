"""Section 6 of alsserve.py: the controller.

START/STOP on a port (taken or free, again and again), the stop grace with
browsers that answer the disconnect and one that does not, notify that never
waits, publishing while browsers download, the displayed address and
interpreter exit with a running server. ALS's facade: test_als.py.
"""
import errno
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import (ASSETS, ROOT, alsserve, free_port, http_get, make_jpeg, next_announcement,  # noqa: E402
                     next_json, read, read_response_head, wait_until, ws_handshake_request, ws_open)

TEXT, CLOSE = alsserve.Opcode.TEXT, alsserve.Opcode.CLOSE
NEW_IMAGE = {"type": "new_image"}
DISCONNECT = {"type": "disconnect"}
ZERO_METRICS = b'{"STACK_SIZE": 0, "EXPO": "0:00:00"}'


def open_fds():
    return len(os.listdir("/proc/self/fd"))


class Browser(threading.Thread):
    """A raw WebSocket client in a thread, recording what it receives.
    With answer=True it answers the disconnect by sending Close, as ALS's
    viewer page does; otherwise it keeps reading and ignores it."""

    def __init__(self, ws, answer=True):
        super().__init__(daemon=True)
        self.ws = ws
        self.answer = answer
        self.messages = []
        self.times = {}                 # "disconnect" / "close" -> time.monotonic()
        self.close_code = "none"
        self.ended = False
        self.error = None

    def run(self):
        try:
            while True:
                opcode, _, payload = self.ws.recv_frame(timeout=15)
                if opcode == TEXT:
                    message = json.loads(payload.decode("utf-8"))
                    self.messages.append(message)
                    if message == DISCONNECT:
                        self.times["disconnect"] = time.monotonic()
                    if self.answer and message == DISCONNECT:
                        self.ws.send(CLOSE, (1000).to_bytes(2, "big"))
                elif opcode == CLOSE:
                    self.times["close"] = time.monotonic()
                    self.close_code = int.from_bytes(payload[:2], "big") if payload else None
                    self.ended = self.ws.at_eof(5)
                    return
        except (ConnectionError, OSError) as error:
            self.error = error
        finally:
            self.ws.sock.close()


class ControllerCase(unittest.TestCase):
    def make_folder(self):
        folder = tempfile.mkdtemp(prefix="alsserve-ctl-")
        self.addCleanup(shutil.rmtree, folder, True)
        return folder

    def make_server(self, folder=None, port=None, **options):
        options.setdefault("displayed_address", "ip:127.0.0.1")
        server = alsserve.ImageServer(folder or self.make_folder(), port=port or free_port(), **options)
        self.addCleanup(server.stop, 0)
        return server

    def started(self, folder=None, **options):
        server = self.make_server(folder, **options)
        with self.assertLogs("alsserve", "WARNING"):    # access limited: ip:127.0.0.1
            server.start()
        return server

    def browser(self, server, answer=True):
        browser = Browser(ws_open(server.port), answer)
        browser.start()
        self.addCleanup(browser.ws.sock.close)
        return browser

    def assertNoServerThread(self):
        self.assertTrue(wait_until(lambda: not any(t.name == "alsserve" for t in threading.enumerate())),
                        [t.name for t in threading.enumerate()])


class PortInUseTest(ControllerCase):
    def assertPortInUse(self, server, port):
        with self.assertRaises(alsserve.PortInUseError) as caught:
            server.start()
        error = caught.exception
        self.assertIsInstance(error, RuntimeError)
        self.assertIn(str(port), str(error))
        self.assertIsInstance(error.__cause__, OSError)
        self.assertEqual(error.__cause__.errno, errno.EADDRINUSE)
        self.assertFalse(server.running)
        self.assertIsNone(server.url)

    def other_listener(self, host, port, reuse=False):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        if reuse:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(5)
        return sock

    def test_listener_on_all_interfaces(self):
        for reuse in (False, True):
            port = free_port()
            self.other_listener("0.0.0.0", port, reuse)
            self.assertPortInUse(self.make_server(port=port), port)

    def test_listener_on_loopback(self):
        port = free_port()
        self.other_listener("127.0.0.1", port)
        self.assertPortInUse(self.make_server(port=port), port)

    def test_two_servers_never_share_a_port(self):
        first = self.started()
        self.assertPortInUse(self.make_server(port=first.port), first.port)
        self.assertEqual(http_get(first.port, "/data.json")[0], 200)

    def test_failed_start_leaks_nothing_and_start_works_once_the_port_is_free(self):
        port = free_port()
        other = self.other_listener("0.0.0.0", port)
        server = self.make_server(port=port)
        self.assertPortInUse(server, port)          # warm-up: lazy imports, caches
        threads, fds = threading.active_count(), open_fds()
        for _ in range(5):
            self.assertPortInUse(server, port)
        self.assertEqual(threading.active_count(), threads)
        self.assertEqual(open_fds(), fds)
        self.assertNoServerThread()
        other.close()
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        self.assertEqual(http_get(port, "/data.json")[2], ZERO_METRICS)


class StartStopTest(ControllerCase):
    def test_fifty_cycles_on_one_port_leak_no_thread_and_no_fd(self):
        folder = self.make_folder()
        server = self.make_server(folder)
        stop_notifying = threading.Event()
        notify_errors = []

        def notifier():                 # ALS may notify from its own thread at any time
            while not stop_notifying.is_set():
                try:
                    server.notify_browsers_about_new_image()
                except Exception as error:  # noqa: BLE001 - reported below
                    notify_errors.append(error)
                time.sleep(0.001)

        def cycle(i):
            with self.assertLogs("alsserve", "WARNING"):
                server.start()
            self.assertTrue(server.running)
            keep_alive = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            try:
                keep_alive.sendall(b"GET /data.json HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertEqual(read_response_head(keep_alive)[0], 200)
                browser = self.browser(server) if i % 10 == 0 else None
                if browser is not None:
                    self.assertTrue(wait_until(lambda: server.client_count == 1))
                server.stop(0.5)        # the keep-alive connection is still open
                if browser is not None:
                    browser.join(5)
                    self.assertIn(DISCONNECT, browser.messages)
            finally:
                keep_alive.close()
            self.assertFalse(server.running)

        cycle(0)                        # warm-up
        threads, fds = threading.active_count(), open_fds()
        thread = threading.Thread(target=notifier, daemon=True)
        thread.start()
        try:
            for i in range(1, 51):
                cycle(i)
        finally:
            stop_notifying.set()
            thread.join(5)
        self.assertEqual(notify_errors, [])
        self.assertEqual(threading.active_count(), threads)
        self.assertEqual(open_fds(), fds)
        self.assertNoServerThread()

    def test_stop_is_prompt_when_browsers_close_on_disconnect(self):
        server = self.started()
        browsers = [self.browser(server) for _ in range(5)]
        self.assertTrue(wait_until(lambda: server.client_count == 5))
        began = time.monotonic()
        server.stop(2.0)
        elapsed = time.monotonic() - began
        for browser in browsers:
            browser.join(5)
            self.assertEqual(browser.messages, [DISCONNECT])
            self.assertEqual(browser.close_code, 1000)      # our Close echoed
        self.assertLess(elapsed, 1.0)

    def test_stop_waits_about_grace_for_a_browser_that_ignores_disconnect(self):
        server = self.started()
        browser = self.browser(server, answer=False)
        self.assertTrue(wait_until(lambda: server.client_count == 1))
        began = time.monotonic()
        server.stop(0.5)
        elapsed = time.monotonic() - began
        browser.join(5)
        self.assertGreaterEqual(elapsed, 0.4)
        self.assertLess(elapsed, 0.5 + 2.5)
        self.assertEqual(browser.messages, [DISCONNECT])
        self.assertEqual(browser.close_code, alsserve.CloseCode.GOING_AWAY)
        # The page had the grace period to close by itself before the Close came.
        self.assertGreaterEqual(browser.times["close"] - browser.times["disconnect"], 0.4)
        self.assertFalse(server.running)
        self.assertRaises(OSError, socket.create_connection, ("127.0.0.1", server.port), 1)

    def test_stop_is_idempotent_and_harmless_before_start(self):
        server = self.make_server()
        server.stop()
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        server.stop(0)
        server.stop(0)
        self.assertFalse(server.running)
        self.assertNoServerThread()

    def test_start_twice_returns_the_same_url(self):
        server = self.started()
        self.assertEqual(server.start(), "http://127.0.0.1:%d/" % server.port)
        self.assertEqual(server.url, "http://127.0.0.1:%d/" % server.port)

    def test_server_thread_is_named_alsserve(self):
        server = self.started()
        names = [t.name for t in threading.enumerate() if t.daemon]
        self.assertIn("alsserve", names)
        server.stop(0)
        self.assertNoServerThread()

    def test_files_stay_after_stop_and_restart_keeps_image_and_metrics(self):
        folder = self.make_folder()
        server = self.started(folder)
        image = make_jpeg(5000, b"7")
        server.publish_image(image)
        server.update_metrics(12, 360)
        server.stop(0)
        self.assertEqual(read(os.path.join(folder, "web_image.jpg")), image)
        self.assertEqual(read(os.path.join(folder, "data.json")), b'{"STACK_SIZE": 12, "EXPO": "0:06:00"}')
        self.assertTrue(os.path.isfile(os.path.join(folder, "index.html")))
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        self.assertEqual(http_get(server.port, "/web_image.jpg")[2], image)
        self.assertEqual(http_get(server.port, "/data.json")[2], b'{"STACK_SIZE": 12, "EXPO": "0:06:00"}')

    def test_interpreter_exit_with_a_running_server_does_not_hang(self):
        folder = self.make_folder()
        port = free_port()
        code = ("import sys; sys.path.insert(0, %r); import alsserve; "
                "s = alsserve.ImageServer(%r, port=%d, displayed_address='ip:127.0.0.1'); "
                "print(s.start(), flush=True); sys.stdin.readline()" % (ROOT, folder, port))
        process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.addCleanup(process.kill)
        self.addCleanup(process.stdout.close)
        self.addCleanup(process.stdin.close)
        self.assertEqual(process.stdout.readline().strip(), b"http://127.0.0.1:%d/" % port)
        ws = ws_open(port)                  # a browser connected
        self.addCleanup(ws.sock.close)
        held = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.addCleanup(held.close)         # and a connection sending half a request
        held.sendall(b"GET /index.html HTTP/1.1\r\n")
        process.stdin.write(b"\n")
        process.stdin.flush()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            self.fail("the interpreter did not exit within 5 s with a running server")


class NotifyTest(ControllerCase):
    def test_notify_reaches_every_browser(self):
        server = self.started()
        clients = [ws_open(server.port) for _ in range(3)]
        for ws in clients:
            self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: server.client_count == 3))
        server.notify_browsers_about_new_image()
        for ws in clients:
            self.assertEqual(next_json(ws), NEW_IMAGE)

    def test_notify_never_waits_for_a_browser_that_does_not_read(self):
        server = self.started()
        stuck = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(stuck.close)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.settimeout(5)
        stuck.connect(("127.0.0.1", server.port))
        stuck.sendall(ws_handshake_request())
        self.assertEqual(read_response_head(stuck)[0], 101)
        reader = ws_open(server.port)
        self.addCleanup(reader.sock.close)
        self.assertTrue(wait_until(lambda: server.client_count == 2))
        # 6 MB the stuck browser never reads: more than the socket buffers hold
        # (about 3 MB here), so messages queue up for it in the server.
        for i in range(100):
            server.send_message_text(json.dumps({"type": "filler", "n": i, "pad": "x" * 60000}))
        for i in range(100):
            self.assertEqual(next_json(reader, 10)["n"], i)
        durations = []
        for _ in range(100):
            began = time.perf_counter()
            server.notify_browsers_about_new_image()
            durations.append(time.perf_counter() - began)
        self.assertLess(statistics.median(durations), 0.001)
        self.assertLess(max(durations), 0.5)
        self.assertEqual(next_json(reader), NEW_IMAGE)       # the others are served at once
        self.assertEqual(server.client_count, 2)

    def test_notify_before_start_and_after_stop_is_a_no_op(self):
        server = self.make_server()
        began = time.monotonic()
        server.notify_browsers_about_new_image()
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        server.stop(0)
        for _ in range(10):
            server.notify_browsers_about_new_image()
        self.assertLess(time.monotonic() - began, 5)
        self.assertFalse(server.running)
        self.assertNoServerThread()


    def test_four_threads_hammering_while_the_loop_is_busy_raise_nothing_and_end_on_the_last(self):
        # ALS's saver thread, its Qt thread, a watcher...: notify and publish
        # from 4 threads at once, the loop held up meanwhile. What a running
        # server holds is touched by its loop's thread only.
        server = self.started()
        elsewhere = self.record_threads_outside_the_loop()
        ws = ws_open(server.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: server.client_count == 1))
        held, errors, start = threading.Event(), [], threading.Barrier(4)

        def hammer(number):
            try:
                start.wait(5)
                for i in range(1500):
                    if i % 5:
                        server.notify_browsers_about_new_image()
                    else:
                        server.publish_image(make_jpeg(1000 + number, bytes([number, i % 256])))
            except Exception as error:      # reported below
                errors.append(error)

        # Threads switch as often as they can: a race between them and the
        # loop has every chance to show.
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        sys.setswitchinterval(1e-6)
        server._thread.loop.call_soon_threadsafe(lambda: held.wait(10))
        threads = [threading.Thread(target=hammer, args=(n,)) for n in range(4)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)
        held.set()                      # the loop takes them while they keep coming
        for thread in threads:
            thread.join(60)
        sys.setswitchinterval(0.005)
        self.assertEqual(errors, [])
        last = make_jpeg(5000, b"last")
        server.publish_image(last)
        messages = []
        while True:                     # every announcement, until quiet
            try:
                messages.append(next_json(ws, 1.0))
            except socket.timeout:
                break
        self.assertEqual(server.history[-1]["bytes"], 5000)
        self.assertEqual(messages[-2:], [dict(server.history[-1], type="history_entry"), NEW_IMAGE])
        self.assertEqual(http_get(server.port, "/web_image.jpg")[2], last)
        self.assertEqual(http_get(server.port, "/" + server.history[-1]["url"])[2], last)
        self.assertEqual(elsewhere, set())

    def record_threads_outside_the_loop(self):
        """(class.method, thread) of each call, made on a thread other than
        the loop's, to a method of what a running server holds (from now to
        the end of the test)."""
        elsewhere = set()
        for cls in (alsserve.Announcer, alsserve.History, alsserve.FileCache, alsserve.WebSocketHub,
                    alsserve.WebSocketClient, alsserve.Routes, alsserve.SerialJobs, alsserve.StaticFiles):
            for name, function in list(vars(cls).items()):
                if name == "__init__" or not callable(function) or isinstance(function, (staticmethod, type)):
                    continue

                def recording(*args, _function=function, _name=cls.__name__ + "." + name, **kwargs):
                    thread = threading.current_thread().name
                    if thread != "alsserve":
                        elsewhere.add((_name, thread))
                    return _function(*args, **kwargs)

                patcher = mock.patch.object(cls, name, recording)
                patcher.start()
                self.addCleanup(patcher.stop)
        return elsewhere

    def test_a_burst_of_images_queued_while_the_loop_is_busy_ends_on_the_last(self):
        # Thousands of publishes waiting at once (the loop held up) are taken
        # one after another, not by a call chain as deep as the queue.
        server = self.started(settings=alsserve.Settings(history_entries=0))
        ws = ws_open(server.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: server.client_count == 1))
        held = threading.Event()
        server._thread.loop.call_soon_threadsafe(lambda: held.wait(10))
        last = make_jpeg(1000, b"z")
        try:
            for i in range(3000):
                server.publish_image(make_jpeg(1000, b"%d" % i))
            server.publish_image(last)
        finally:
            held.set()
        preparing = server._thread.announcer.preparing
        self.assertTrue(wait_until(lambda: not preparing._waiting and not preparing._running, 20))
        self.assertEqual(next_json(ws), NEW_IMAGE)
        self.assertTrue(wait_until(lambda: http_get(server.port, "/web_image.jpg")[2] == last, 10))
        server.publish_image(make_jpeg(2000, b"after"))        # still announcing
        self.assertEqual(http_get(server.port, "/web_image.jpg")[2], make_jpeg(2000, b"after"))


class PublishTest(ControllerCase):
    def setUp(self):
        self.folder = self.make_folder()
        self.server = self.started(self.folder)
        self.image_path = os.path.join(self.folder, "web_image.jpg")

    def test_publish_bytes_and_paths(self):
        ws = ws_open(self.server.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: self.server.client_count == 1))
        source = os.path.join(self.make_folder(), "frame.jpg")
        for data, argument in ((make_jpeg(3000, b"a"), None), (make_jpeg(4000, b"b"), source),
                               (make_jpeg(5000, b"c"), "pathlike"), (make_jpeg(6000, b"d"), "bytearray")):
            if argument == "bytearray":
                argument = bytearray(data)
            elif argument is None:
                argument = data
            else:
                with open(source, "wb") as f:
                    f.write(data)
                if argument == "pathlike":
                    import pathlib
                    argument = pathlib.Path(source)
            self.server.publish_image(argument)
            self.assertEqual(read(self.image_path), data)
            frame, message = next_announcement(ws)
            self.assertEqual(message, NEW_IMAGE)
            self.assertEqual(http_get(self.server.port, "/" + frame["url"])[2], data)
            status, headers, body = http_get(self.server.port, "/web_image.jpg?timestamp=%d" % id(data))
            self.assertEqual((status, headers["content-type"], body), (200, "image/jpeg", data))
        self.assertEqual(sorted(n for n in os.listdir(self.folder) if n.startswith(".")),
                         [alsserve.HISTORY_FOLDER_NAME])
        # The frames are stored off the loop: once they all are, nothing is left half-written.
        self.assertTrue(wait_until(lambda: not self.server._thread.announcer.history.pending))
        history = os.path.join(self.folder, alsserve.HISTORY_FOLDER_NAME)
        self.assertTrue(wait_until(
            lambda: [n for n in os.listdir(history) if n.endswith(".tmp")] == []))

    def test_non_jpeg_is_refused_and_the_image_is_unchanged(self):
        good = make_jpeg(3000, b"g")
        self.server.publish_image(good)
        for bad in (b"", b"GIF89a\x01\x00", b"\x89PNG\r\n\x1a\n" + b"\0" * 100, good[:-2], good[2:]):
            with self.assertRaises(ValueError):
                self.server.publish_image(bad)
            self.assertEqual(read(self.image_path), good)
        with self.assertRaises(OSError):
            self.server.publish_image(os.path.join(self.folder, "missing.jpg"))
        self.assertEqual(http_get(self.server.port, "/web_image.jpg")[2], good)
        self.assertEqual([n for n in os.listdir(self.folder) if n.startswith(".")], [alsserve.HISTORY_FOLDER_NAME])
        # Announcements keep their order: once the next good image is a
        # frame, the refused ones would have been frames before it.
        after = make_jpeg(3100, b"h")
        self.server.publish_image(after)
        self.assertTrue(wait_until(lambda: len(self.server.history) == 2), self.server.history)
        frames = self.server.history
        self.assertEqual([f["bytes"] for f in frames], [len(good), len(after)])

    def test_atomic_publish_never_exposes_a_partial_file(self):
        versions = [make_jpeg(30000 + 9000 * i, bytes([0x30 + i])) for i in range(5)]
        waiting = read(self.image_path)
        stop, bad, seen = threading.Event(), [], set()

        def reader():
            while not stop.is_set():
                data = read(self.image_path)
                if data in versions:
                    seen.add(data)
                elif data != waiting:
                    bad.append(len(data))

        thread = threading.Thread(target=reader, daemon=True)
        thread.start()
        try:
            for i in range(200):
                self.server.publish_image(versions[i % len(versions)])
        finally:
            stop.set()
            thread.join(10)
        self.assertEqual(bad, [], "a reader saw a partial web_image.jpg")
        self.assertGreater(len(seen), 1)

    def test_in_place_rewrite_never_serves_a_torn_jpeg(self):
        versions = [make_jpeg(100000 + 5000 * i, bytes([0x61 + i])) for i in range(12)]
        self.server.publish_image(versions[0])
        writing = threading.Event()
        writing.set()
        results, errors = [], []

        def als_save_module():          # rewrites the file in place, like ALS
            try:
                for data in versions[1:]:
                    with open(self.image_path, "wb") as f:
                        for offset in range(0, len(data), 8192):
                            f.write(data[offset:offset + 8192])
                            f.flush()
                            time.sleep(0.0005)
                    time.sleep(0.005)
            finally:
                writing.clear()

        def browser():
            try:
                count = 0
                while writing.is_set() or count < 3:
                    status, _, body = http_get(self.server.port, "/web_image.jpg", timeout=10)
                    results.append((status, body))
                    count += 1
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        self.assertEqual(http_get(self.server.port, "/web_image.jpg")[2], versions[0])
        readers = [threading.Thread(target=browser, daemon=True) for _ in range(20)]
        for thread in readers:
            thread.start()
        writer = threading.Thread(target=als_save_module, daemon=True)
        writer.start()
        writer.join(30)
        for thread in readers:
            thread.join(30)
        self.assertEqual(errors, [])
        self.assertGreaterEqual(len(results), 60)
        torn = [(status, len(body)) for status, body in results if status != 200 or body not in versions]
        self.assertEqual(torn, [], "torn or failed downloads (of %d)" % len(results))
        self.assertGreater(len({body for _, body in results}), 1, "no download saw a new version")
        self.assertTrue(wait_until(lambda: http_get(self.server.port, "/web_image.jpg")[2] == versions[-1]))

    def test_reset_image_restores_the_waiting_image_and_zero_metrics(self):
        ws = ws_open(self.server.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: self.server.client_count == 1))
        self.server.publish_image(make_jpeg(2000, b"s"))
        self.server.update_metrics(40, 1200)
        frame, message = next_announcement(ws)
        self.assertEqual((frame["url"], message), ("history/%d.jpg" % frame["id"], NEW_IMAGE))
        self.server.reset_image()
        self.assertEqual(next_announcement(ws), (None, NEW_IMAGE))     # the waiting image is no frame
        waiting = read(os.path.join(ASSETS, "waiting.jpg"))
        self.assertEqual(read(self.image_path), waiting)
        self.assertEqual(http_get(self.server.port, "/web_image.jpg")[2], waiting)
        self.assertEqual(http_get(self.server.port, "/data.json")[2], ZERO_METRICS)

    def test_update_metrics_writes_the_exact_text(self):
        self.server.update_metrics(12, 360)
        self.assertEqual(http_get(self.server.port, "/data.json")[2], b'{"STACK_SIZE": 12, "EXPO": "0:06:00"}')
        self.server.update_metrics(3, 12.6)
        self.assertEqual(read(os.path.join(self.folder, "data.json")), b'{"STACK_SIZE": 3, "EXPO": "0:00:13"}')

    def test_update_metrics_validation(self):
        self.server.update_metrics(5, 150)
        before = read(os.path.join(self.folder, "data.json"))
        for stack_size, exposure in ((-1, 10), (1.5, 10), (True, 10), ("3", 10), (None, 10),
                                     (3, -1), (3, float("nan")), (3, float("inf")), (3, True),
                                     (3, "10"), (3, None)):
            with self.assertRaises(ValueError, msg=(stack_size, exposure)):
                self.server.update_metrics(stack_size, exposure)
        self.assertEqual(read(os.path.join(self.folder, "data.json")), before)


class DisplayedAddressTest(ControllerCase):
    def test_non_local_address_falls_back_to_auto_with_a_warning(self):
        with self.assertLogs("alsserve", "WARNING") as logs:
            address = alsserve.resolve_displayed_address("ip:203.0.113.77")
        self.assertIn("203.0.113.77", "\n".join(logs.output))
        self.assertEqual(address, alsserve.resolve_displayed_address("auto"))
        self.assertNotEqual(address, "203.0.113.77")

    def test_loopback_is_honoured_and_limits_access(self):
        self.assertEqual(alsserve.resolve_displayed_address("ip:127.0.0.1"), "127.0.0.1")
        server = self.started(displayed_address="ip:127.0.0.1")
        self.assertEqual(server.displayed_address, "127.0.0.1")
        self.assertTrue(server.access_limited)
        self.assertEqual(server.url, "http://127.0.0.1:%d/" % server.port)

    def test_local_address_is_honoured(self):
        address = alsserve.resolve_displayed_address("auto")
        self.assertEqual(alsserve.resolve_displayed_address("ip:" + address), address)
        if address == "127.0.0.1":
            self.skipTest("this machine has no network address")
        server = self.make_server(displayed_address="ip:" + address)
        self.assertEqual(server.start(), "http://%s:%d/" % (address, server.port))
        self.assertFalse(server.access_limited)
        # bound on all interfaces: reachable on the displayed address and on loopback
        self.assertEqual(http_get(server.port, "/data.json", host=address)[0], 200)
        self.assertEqual(http_get(server.port, "/data.json")[0], 200)

    def test_malformed_preference(self):
        for value in ("ip:1.2.3", "ip:", "ip:::1", "manual", "", None):
            with self.assertRaises(ValueError, msg=repr(value)):
                alsserve.resolve_displayed_address(value)

    def test_list_ipv4_addresses(self):
        addresses = alsserve.list_ipv4_addresses()
        self.assertTrue(addresses)
        for address in addresses:
            self.assertEqual(socket.inet_ntoa(socket.inet_aton(address)), address)
            self.assertEqual(len(address.split(".")), 4)
        self.assertEqual(len(addresses), len(set(addresses)))
        self.assertEqual(addresses[-1], "127.0.0.1")
        loopback = [a.startswith("127.") for a in addresses]
        self.assertEqual(loopback, sorted(loopback), "loopback addresses must come last")
        self.assertNotIn("0.0.0.0", addresses)

    def test_stale_host_name_entry_is_not_listed(self):
        # /etc/hosts often maps the host name to an old DHCP address: not ours.
        real = socket.getaddrinfo

        def stale(host, *args, **kwargs):
            if host == socket.gethostname():
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.77", 0))]
            return real(host, *args, **kwargs)

        addresses = [a for a, _ in alsserve._interface_addresses(resolve=stale)]
        addresses += [a for a, _ in alsserve._interface_addresses(platform="win32", resolve=stale)]
        self.assertNotIn("203.0.113.77", addresses)
        self.assertNotIn("203.0.113.77", alsserve.list_ipv4_addresses())

    def test_windows_path_uses_the_host_name_addresses(self):
        # No interface ioctl on Windows: the host name's addresses are the
        # candidates, kept only when this machine can bind them.
        calls = []

        def resolve(host, *args, **kwargs):
            calls.append(host)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", 0)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("203.0.113.77", 0))]

        found = alsserve._interface_addresses(platform="win32", resolve=resolve)
        self.assertEqual(calls, [socket.gethostname()])
        self.assertEqual(found, [("127.0.0.2", "")])

    def test_interface_ioctl_path_does_not_resolve_the_host_name(self):
        # Resolving the host name can wait on DNS where there is none.
        if sys.platform not in alsserve.SIOCGIFADDR:
            self.skipTest("no interface ioctl here")
        found = alsserve._interface_addresses(resolve=mock.Mock(side_effect=AssertionError("resolved")))
        self.assertIn(("127.0.0.1", "lo"), found)

    def test_get_host_ip(self):
        address = alsserve.get_host_ip()
        self.assertEqual(address, alsserve.resolve_displayed_address("auto"))
        self.assertEqual(socket.inet_ntoa(socket.inet_aton(address)), address)


class ListenerOptionsTest(ControllerCase):
    def test_windows_gets_exclusive_address_use_only(self):
        fake = types.SimpleNamespace(SOL_SOCKET=0xFFFF, SO_REUSEADDR=4, SO_EXCLUSIVEADDRUSE=-5)
        self.assertEqual(alsserve.listener_socket_options(fake), [(0xFFFF, -5, 1)])

    def test_posix_gets_reuse_address_never_reuse_port(self):
        fake = types.SimpleNamespace(SOL_SOCKET=1, SO_REUSEADDR=2, SO_REUSEPORT=15)
        self.assertEqual(alsserve.listener_socket_options(fake), [(1, 2, 1)])
        both = types.SimpleNamespace(SOL_SOCKET=1, SO_REUSEADDR=2, SO_REUSEPORT=15, SO_EXCLUSIVEADDRUSE=-5)
        for options in (alsserve.listener_socket_options(fake), alsserve.listener_socket_options(both)):
            self.assertNotIn(15, [option for _, option, _ in options])

    def test_real_listener(self):
        sock = alsserve.bind_listener(free_port(), "127.0.0.1")
        self.addCleanup(sock.close)
        self.assertTrue(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR))
        if hasattr(socket, "SO_REUSEPORT"):
            self.assertFalse(sock.getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT))

    def test_is_port_in_use(self):
        port = free_port()
        self.assertFalse(alsserve.is_port_in_use("0.0.0.0", port))
        self.assertFalse(alsserve.is_port_in_use("127.0.0.1", port))
        other = socket.socket()
        other.bind(("127.0.0.1", port))
        other.listen(1)
        try:
            self.assertTrue(alsserve.is_port_in_use("127.0.0.1", port))
            self.assertTrue(alsserve.is_port_in_use("0.0.0.0", port))
        finally:
            other.close()
        self.assertFalse(alsserve.is_port_in_use("0.0.0.0", port))
        server = self.started(port=port)
        self.assertTrue(alsserve.is_port_in_use("0.0.0.0", port))
        server.stop(0)
        self.assertFalse(alsserve.is_port_in_use("0.0.0.0", port))


class BadConfigTest(ControllerCase):
    def assertRefused(self, folder, pattern, **options):
        port = options.pop("port", None) or free_port()
        server = alsserve.ImageServer(folder, port=port, **options)
        with self.assertRaisesRegex(ValueError, pattern):
            server.start()
        self.assertFalse(server.running)
        self.assertNoServerThread()
        if isinstance(port, int) and 1024 <= port <= 65535:
            self.assertFalse(alsserve.is_port_in_use("0.0.0.0", port), "port left bound")

    def test_errors_come_before_anything_is_written(self):
        folder = self.make_folder()
        self.assertRefused(folder, "1024-65535", port=80)
        self.assertRefused(folder, "1024-65535", port="8000")
        self.assertRefused(folder, "1024-65535", port=70000)
        self.assertRefused(folder, "'ip:192.168.1.300'", displayed_address="ip:192.168.1.300")
        self.assertRefused(folder, "'lan'", displayed_address="lan")
        missing_assets = os.path.join(folder, "no-assets")
        self.assertRefused(folder, "no-assets", assets_dir=missing_assets)
        self.assertEqual(os.listdir(folder), [])

    def test_missing_web_folder_is_not_created(self):
        missing = os.path.join(self.make_folder(), "als-web")
        self.assertRefused(missing, "als-web.*does not exist")
        self.assertFalse(os.path.exists(missing))

    def test_file_as_web_folder(self):
        path = os.path.join(self.make_folder(), "web")
        with open(path, "wb") as f:
            f.write(b"not a folder")
        self.assertRefused(path, "not a directory")
        self.assertEqual(read(path), b"not a folder")

    def test_waiting_image_leaves_no_temporary_file_on_failure(self):
        # Publishing is done (nothing to write), then the waiting image cannot be put in place.
        folder = self.make_folder()
        bundle = self.make_folder()
        server = self.make_server(folder, assets_dir=bundle)
        with mock.patch.object(alsserve, "replace_file", side_effect=OSError(errno.ENOSPC, "disk full")):
            with self.assertRaises(OSError):
                server.start()
        self.assertFalse(server.running)
        self.assertEqual(os.listdir(folder), [])


class NothingAfterDisconnectTest(ControllerCase):
    def test_notify_during_stop_never_follows_disconnect(self):
        server = self.started()
        browser = self.browser(server, answer=False)
        self.assertTrue(wait_until(lambda: server.client_count == 1))
        stopper = threading.Thread(target=server.stop, args=(1.0,))
        stopper.start()
        self.assertTrue(wait_until(lambda: "disconnect" in browser.times))
        for _ in range(20):
            server.notify_browsers_about_new_image()
            time.sleep(0.01)
        stopper.join(5)
        browser.join(5)
        self.assertEqual(browser.messages, [DISCONNECT])
        self.assertEqual(browser.close_code, 1001)


if __name__ == "__main__":
    unittest.main()
