"""Section 6 of alsserve.py: ALS's network module (the ``Server`` facade and
the address helpers), for the released ALS 0.7 and for ALS's 1.0
development line.

A fake ``als`` package stands in for ALS: ``als.config`` holds the three
preferences (port, web folder, displayed address) and
``als.streams.network`` is the one line the README tells ALS to keep. Two
fake controllers drive the facade exactly as ALS 0.7's and ALS 1.0-dev's
Controllers do (thread name, call forms, signal connections, stop then join
or not). Qt is not loaded here: the signals are alsserve's plain ones (the
interop suite checks them as real Qt signals).
"""
import concurrent.futures
import errno
import http.client
import importlib
import logging
import os
import re
import socket
import sys
import threading
import time
import unittest
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import ROOT, alsserve, free_port, http_get, make_jpeg, next_json, read, wait_until, ws_open  # noqa: E402
from test_controller import DISCONNECT, NEW_IMAGE, Browser, ControllerCase  # noqa: E402

ALS_MODULES = ("als", "als.config", "als.streams", "als.streams.network")
CONFIG = """PORT = 8000
WEB_FOLDER = ""
ADVERTISED = "auto"


def get_www_server_port_number():
    return PORT


def get_web_folder_path():
    return WEB_FOLDER


def get_www_server_advertised_address():
    return ADVERTISED
"""


def readme_shim():
    """The Python block of the README's "Inside ALS" section: what ALS's
    src/als/streams/network.py is reduced to."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        text = f.read()
    section = text.split("### Inside ALS", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def accepting(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class FakeAlsCase(ControllerCase):
    """A fake ALS on sys.path: als.config with the preferences, and
    als.streams.network holding the README's line."""

    def setUp(self):
        package = self.make_folder()
        for folder in ("als", os.path.join("als", "streams")):
            os.makedirs(os.path.join(package, folder))
            with open(os.path.join(package, folder, "__init__.py"), "w") as f:
                f.write("")
        with open(os.path.join(package, "als", "config.py"), "w") as f:
            f.write(CONFIG)
        with open(os.path.join(package, "als", "streams", "network.py"), "w") as f:
            f.write(readme_shim())
        sys.path.insert(0, package)
        self.addCleanup(sys.path.remove, package)
        self.addCleanup(lambda: [sys.modules.pop(name, None) for name in ALS_MODULES])
        self.config = importlib.import_module("als.config")
        self.network = importlib.import_module("als.streams.network")
        self.folder = self.make_folder()
        self.config.WEB_FOLDER = self.folder


# -- ALS 0.7 -----------------------------------------------------------------

class FakeAls07Controller:
    """What ALS 0.7's Controller does with its web server (src/als/logic.py,
    src/als/streams/output.py)."""

    als_files = {"index.html": b"<html>ALS</html>", "openseadragon.min.js": b"var OSD;",
                 "favicon.ico": b"\0\0\1\0", "data.json": b'{"STACK_SIZE": 0, "EXPO": "0:00:00"}'}

    def __init__(self, web_folder, windows=False):
        from als.streams.network import Server
        self.web_folder = web_folder
        self.windows = windows
        self._web_server = Server(web_folder)      # built once, without a port
        self._server_thread = None

    def start_www(self):
        from als import config
        from als.streams.network import get_host_ip, is_port_in_use
        ip, port = get_host_ip(), config.get_www_server_port_number()
        if is_port_in_use(ip, port):
            raise alsserve.PortInUseError()
        for name, data in self.als_files.items():
            with open(os.path.join(self.web_folder, name), "wb") as f:
                f.write(data)
        if self._server_thread is None:
            self._server_thread = threading.Thread(target=self._web_server.start, name="WebServer")
            self._server_thread.start()

    def stop_www(self):
        self._web_server.stop()
        self._server_thread.join()
        self._server_thread = None

    def save_web_image(self, data):
        """The Save module, then notify_browsers_about_new_image(), from ALS's saver thread."""
        temporary = os.path.join(self.web_folder, "ALZweb_image.jpg")
        target = os.path.join(self.web_folder, "web_image.jpg")
        with open(temporary, "wb") as f:
            f.write(data)
        if self.windows and os.path.exists(target):
            os.remove(target)           # ALS on Windows: briefly no web_image.jpg at all
        os.rename(temporary, target)
        self._web_server.send_message({"type": "new_image"})


class Als07FacadeTest(FakeAlsCase):
    """Server(static_path, port) with what ALS writes itself in the folder."""

    def setUp(self):
        super().setUp()
        # What ALS writes itself before starting its server thread.
        self.als_files = {"index.html": b"<html>ALS 0.7</html>", "openseadragon.min.js": b"var OSD;",
                          "favicon.ico": b"\0\0\1\0", "data.json": b'{"STACK_SIZE": 3, "EXPO": "0:01:30"}'}
        for name, data in self.als_files.items():
            with open(os.path.join(self.folder, name), "wb") as f:
                f.write(data)
        self.port = free_port()
        self.server = self.network.Server(self.folder, self.port)
        self.thread = threading.Thread(target=self.server.start, daemon=True)
        self.thread.start()
        self.addCleanup(self.thread.join, 10)
        self.addCleanup(self.server.stop)
        # (not is_port_in_use: its probe bind would race with the server's own bind)
        self.assertTrue(wait_until(lambda: accepting(self.port)), "the ALS server thread did not start")

    def test_start_blocks_until_stop_and_publishes_nothing(self):
        time.sleep(0.1)
        self.assertTrue(self.thread.is_alive())
        self.assertEqual(http_get(self.port, "/")[2], self.als_files["index.html"])
        self.assertEqual(http_get(self.port, "/data.json")[2], self.als_files["data.json"])
        # Nothing of ALS's is touched; the one addition is the hidden history folder.
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(list(self.als_files) + [alsserve.HISTORY_FOLDER_NAME]))
        for name, data in self.als_files.items():
            self.assertEqual(read(os.path.join(self.folder, name)), data)
        began = time.monotonic()
        self.server.stop()
        self.assertLess(time.monotonic() - began, 0.1)      # returns at once; the thread ends soon after
        self.thread.join(5)
        self.assertFalse(self.thread.is_alive())
        self.assertFalse(alsserve.is_port_in_use("0.0.0.0", self.port))
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(list(self.als_files) + [alsserve.HISTORY_FOLDER_NAME]))
        for name, data in self.als_files.items():
            self.assertEqual(read(os.path.join(self.folder, name)), data)

    def test_send_message_reaches_browsers_as_json(self):
        ws = ws_open(self.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: self.server._server.client_count == 1))
        self.server.send_message({"type": "new_image"})
        self.assertEqual(next_json(ws), NEW_IMAGE)
        self.server.send_message({"type": "custom", "text": "Zoom \u00e9toile", "n": [1, 2]})
        self.assertEqual(next_json(ws), {"type": "custom", "text": "Zoom \u00e9toile", "n": [1, 2]})
        browser = Browser(ws)           # answers the disconnect from now on
        browser.start()
        began = time.monotonic()
        self.server.stop()
        self.thread.join(5)
        self.assertLess(time.monotonic() - began, 1.0)
        browser.join(5)
        self.assertEqual(browser.messages, [DISCONNECT])

    def test_the_changing_files_are_sent_so_that_no_browser_stores_them(self):
        with open(os.path.join(self.folder, "web_image.jpg"), "wb") as f:
            f.write(make_jpeg(1000))
        for name in ("web_image.jpg", "data.json"):
            status, headers, _ = http_get(self.port, "/" + name + "?timestamp=1")
            self.assertEqual(status, 200)
            self.assertEqual(headers["cache-control"], "no-store, no-cache, must-revalidate")
            self.assertEqual(headers["pragma"], "no-cache")
            self.assertEqual(headers["expires"], "0")
            self.assertIn("etag", headers)      # revalidation stays possible
        status, headers, _ = http_get(self.port, "/index.html")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertNotIn("pragma", headers)


class FacadeOrderTest(FakeAlsCase):
    def test_stop_before_the_thread_starts_still_stops(self):
        port = free_port()
        server = self.network.Server(self.folder, port)
        stopped = []
        server.stopped_signal.connect(lambda: stopped.append(True))
        server.stop()                   # ALS pressed STOP before the thread ran
        thread = threading.Thread(target=server.start, daemon=True)
        thread.start()
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertEqual(stopped, [True])
        self.assertFalse(alsserve.is_port_in_use("0.0.0.0", port))
        thread = threading.Thread(target=server.start, daemon=True)     # a later START works
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.stop)
        self.assertTrue(wait_until(lambda: server._server.running))

    def test_send_message_before_any_start_is_a_no_op(self):
        server = self.network.Server(self.folder)
        server.send_message({"type": "new_image"})
        server.send_message({"type": "disconnect"})


class AlsDropInTest(FakeAlsCase):
    """The facade driven exactly as ALS 0.7 drives it."""

    def test_the_port_preference_is_read_at_each_start(self):
        controller = FakeAls07Controller(self.folder)
        for round_ in range(2):
            port = free_port()
            self.config.PORT = port     # the preferences dialog, while the server is stopped
            controller.start_www()
            self.addCleanup(lambda: controller._server_thread and controller.stop_www())
            self.assertTrue(wait_until(lambda: accepting(port)), "not listening on %d" % port)
            self.assertEqual(http_get(port, "/")[2], b"<html>ALS</html>")
            browser = Browser(ws_open(port), answer=True)
            browser.start()
            self.addCleanup(browser.ws.sock.close)
            self.assertTrue(wait_until(lambda: controller._web_server._server.client_count == 1))
            image = make_jpeg(5000 + round_, bytes([round_ + 1]))
            saver = threading.Thread(target=controller.save_web_image, args=(image,), name="saver")
            saver.start()
            saver.join(5)
            self.assertTrue(wait_until(lambda: NEW_IMAGE in browser.messages), browser.messages)
            self.assertEqual(http_get(port, "/web_image.jpg?timestamp=1")[2], image)
            controller.stop_www()
            browser.join(5)
            self.assertEqual(browser.messages[-1], DISCONNECT)
            self.assertFalse(accepting(port))
        self.assertFalse(any(t.name == "WebServer" for t in threading.enumerate()))

    def test_an_explicit_port_wins_and_without_als_the_default_is_8000(self):
        self.config.PORT = free_port()
        port = free_port()
        server = self.network.Server(self.folder, port)
        thread = threading.Thread(target=server.start)
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.stop)
        self.assertTrue(wait_until(lambda: accepting(port)))
        self.assertFalse(accepting(self.config.PORT))
        self.assertEqual(alsserve.als_setting("get_www_server_port_number", 8000), self.config.PORT)
        with mock.patch.dict(sys.modules, {"als.config": None}):       # not inside ALS
            self.assertEqual(alsserve.als_setting("get_www_server_port_number", 8000), 8000)

    def test_a_failed_bind_is_logged_and_ends_the_thread(self):
        for host in ("0.0.0.0", "127.0.0.1"):
            with self.subTest(other_server_on=host):
                port = free_port()
                other = socket.socket()
                self.addCleanup(other.close)
                other.bind((host, port))
                other.listen(1)
                self.config.PORT = port
                # ALS's own check agrees with the bind the facade will do.
                self.assertTrue(alsserve.is_port_in_use(alsserve.get_host_ip(), port))
                with self.assertRaises(alsserve.PortInUseError):
                    FakeAls07Controller(self.folder).start_www()
                # Had the port been taken just after ALS's check:
                server = self.network.Server(self.folder)
                thread = threading.Thread(target=server.start, name="WebServer")
                with self.assertLogs("alsserve", logging.ERROR) as logged:
                    began = time.monotonic()
                    thread.start()
                    thread.join(5)
                self.assertFalse(thread.is_alive())
                self.assertLess(time.monotonic() - began, 1.0)
                self.assertIn(str(port), logged.output[0])
                self.assertIn("in use", logged.output[0].lower())
                server.stop()           # ALS's stop_www() after all: harmless
                other.close()
                # And the next START works.
                thread = threading.Thread(target=server.start, name="WebServer")
                thread.start()
                self.assertTrue(wait_until(lambda: accepting(port)))
                server.stop()
                thread.join(5)
                self.assertFalse(thread.is_alive())

    def test_another_address_of_the_same_port_is_seen_by_the_check(self):
        # ALS checks its host address; another server listens on another
        # local address of the same port; the facade binds 0.0.0.0.
        try:
            probe = socket.socket()
            probe.bind(("127.0.0.2", 0))
            probe.close()
        except OSError:
            self.skipTest("no 127.0.0.2 on this system")
        port = free_port()
        other = socket.socket()
        self.addCleanup(other.close)
        other.bind(("127.0.0.1", port))
        other.listen(1)
        self.assertTrue(alsserve.is_port_in_use("127.0.0.2", port))
        with self.assertRaises(alsserve.PortInUseError):
            alsserve.bind_listener(port).close()
        other.close()
        self.assertFalse(alsserve.is_port_in_use("127.0.0.2", port))

    def test_remove_then_rename_never_gives_a_404_or_a_torn_image(self):
        port = free_port()
        self.config.PORT = port
        controller = FakeAls07Controller(self.folder, windows=True)
        controller.save_web_image(make_jpeg(200 * 1024, b"\x10"))       # before START, as a restart
        controller.start_www()
        self.addCleanup(controller.stop_www)
        self.assertTrue(wait_until(lambda: accepting(port)))
        versions = [make_jpeg(200 * 1024 + 37 * i, bytes([0x10 + i])) for i in range(8)]
        stop, results, errors = threading.Event(), [], []

        def saver():
            i = 0
            while not stop.is_set():
                controller.save_web_image(versions[i % len(versions)])
                i += 1
                time.sleep(0.005)

        def downloader(count):
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                for n in range(count):
                    conn.request("GET", "/web_image.jpg?timestamp=%d" % n)
                    response = conn.getresponse()
                    results.append((response.status, response.read()))
                conn.close()
            except Exception as error:  # reported below
                errors.append(error)

        writer = threading.Thread(target=saver)
        writer.start()
        readers = [threading.Thread(target=downloader, args=(125,)) for _ in range(8)]
        for thread in readers:
            thread.start()
        for thread in readers:
            thread.join(60)
        stop.set()
        writer.join(10)
        self.assertEqual(errors, [])
        self.assertEqual(len(results), 1000)
        bad = [(status, len(body)) for status, body in results if status != 200 or body not in versions]
        self.assertEqual(bad, [], "non-200 or torn answers")

    def test_the_temporary_file_is_never_served_torn(self):
        port = free_port()
        self.config.PORT = port
        controller = FakeAls07Controller(self.folder)
        controller.start_www()
        self.addCleanup(controller.stop_www)
        self.assertTrue(wait_until(lambda: accepting(port)))
        data = make_jpeg(400 * 1024, b"\x77")
        temporary = os.path.join(self.folder, "ALZweb_image.jpg")
        results = []

        def slow_writer():
            with open(temporary, "wb") as f:
                for offset in range(0, len(data), 16 * 1024):
                    f.write(data[offset:offset + 16 * 1024])
                    f.flush()
                    time.sleep(0.01)

        writer = threading.Thread(target=slow_writer)
        writer.start()
        while writer.is_alive():
            results.append(http_get(port, "/ALZweb_image.jpg")[::2])
        writer.join()
        served = [body for status, body in results if status == 200]
        self.assertTrue(all(body == data for body in served), [len(b) for b in served])
        self.assertTrue(all(status in (200, 404, 503) for status, _ in results))


# -- ALS 1.0-dev -------------------------------------------------------------

class FakeAls10Controller:
    """What ALS 1.0-dev's Controller does with its web server
    (src/als/logic.py): Server() built once and its three signals
    connected; START runs the content setup then start("0.0.0.0", port,
    future) in a WebServer thread; the slots set the status; STOP calls
    stop() and joins only when asked (at exit). With plain signals the
    slots run on the emitting thread (with Qt: queued on ALS's thread)."""

    als_files = {"index.html": b"<html>ALS 1.0</html>", "openseadragon.min.js": b"var OSD;",
                 "favicon.ico": b"\0\0\1\0", "icons/home_rest.png": b"\x89PNG",
                 "web_image.jpg": make_jpeg(2000, b"\x05"), "data.json": b'{"STACK_SIZE": 0, "EXPO": "0:00:00"}'}

    def __init__(self):
        from als.streams.network import Server
        self.status = "stopped"
        self.events = []                # (what, thread name, port listening)
        self.failure = None
        self.advertised = None
        self._web_server = Server()
        self._server_thread = None
        self.threads = []
        self._web_server.startup_failed_signal.connect(self.on_web_server_start_failed)
        self._web_server.startup_succeeded_signal.connect(self.on_web_server_started)
        self._web_server.stopped_signal.connect(self.on_web_server_stopped)
        self.port = None

    def start_www(self):
        from als import config
        if self.status in ("starting", "running", "stopping"):
            return
        self.status = "starting"
        self.port = config.get_www_server_port_number()
        self.future = concurrent.futures.Future()
        self._server_thread = threading.Thread(target=self._run_web_server, args=(self.port, self.future),
                                               name="WebServer")
        self.threads.append(self._server_thread)    # (a slot may forget it before start() returns)
        self._server_thread.start()

    def _run_web_server(self, port, future):
        from als import config
        from als.streams.network import WEB_SERVER_BIND_HOST
        try:
            for name, data in self.als_files.items():
                path = os.path.join(config.get_web_folder_path(), *name.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        except Exception as error:
            if not future.done():
                future.set_exception(error)
                self._web_server.startup_failed_signal.emit(error)
            return
        self._web_server.start(WEB_SERVER_BIND_HOST, port, future)

    def _event(self, what):
        self.events.append((what, threading.current_thread().name, accepting(self.port)))

    def on_web_server_started(self):
        from als import config
        from als.streams.network import get_network_address_candidates, select_advertised_address
        self._event("started")
        if self.status != "starting":
            return
        candidates = get_network_address_candidates(config.get_www_server_port_number())
        self.advertised = select_advertised_address(config.get_www_server_advertised_address(), candidates)
        self.status = "running"

    def on_web_server_start_failed(self, error):
        self._event("failed")
        if self.status != "starting":
            return
        self._server_thread = None
        self.status = "stopped"
        self.failure = alsserve.PortInUseError() if isinstance(error, OSError) else error

    def stop_www(self, wait=False):
        if self.status in ("starting", "running", "stopping"):
            if self.status == "stopping":
                if wait and self._server_thread is not None:
                    self._server_thread.join()
                    self.on_web_server_stopped()
                return
            if self._server_thread is not None:
                self.status = "stopping"
                thread = self._server_thread
                self._web_server.stop()
                if wait:
                    thread.join()
                    self.on_web_server_stopped()

    def on_web_server_stopped(self):
        self._event("stopped")
        if self.status == "stopped":
            return
        self._server_thread = None
        self.status = "stopped"

    def notify_browsers_about_new_image(self):
        if self.status == "running":
            self._web_server.send_message({"type": "new_image"})


class Als10DropInTest(FakeAlsCase):
    """The facade driven exactly as ALS 1.0-dev drives it."""

    def controller(self, port=None):
        self.config.PORT = port or free_port()
        controller = FakeAls10Controller()
        self.addCleanup(controller.stop_www, True)
        return controller

    def test_every_name_als_imports_comes_through_the_one_line(self):
        from als.streams import network
        imported = {
            "logic.py (1.0)": ["Server", "WEB_SERVER_BIND_HOST", "get_network_address_candidates",
                               "NetworkAddress", "select_advertised_address"],
            "ui/dialogs.py (1.0)": ["ADVERTISED_ADDRESS_AUTO", "build_advertised_address_preference",
                                    "get_network_address_candidates"],
            "tests (1.0)": ["build_network_address_candidates", "build_no_cache_file_response",
                            "advertised_address_preference"],
            "logic.py (0.7)": ["Server", "get_host_ip", "is_port_in_use"],
        }
        for where, names in imported.items():
            for name in names:
                self.assertTrue(hasattr(network, name), "%s imports %s" % (where, name))
        self.assertEqual(network.WEB_SERVER_BIND_HOST, "0.0.0.0")
        self.assertEqual(network.ADVERTISED_ADDRESS_AUTO, "auto")
        self.assertEqual(network.ADVERTISED_ADDRESS_IP_PREFIX, "ip:")

    def test_start_reports_success_once_listening_then_stop_returns_at_once(self):
        controller = self.controller()
        controller.start_www()
        self.assertTrue(wait_until(lambda: controller.status == "running"), controller.events)
        self.assertIsNone(controller.future.result(0))
        self.assertEqual(controller.events, [("started", "WebServer", True)])   # the socket listened first
        self.assertTrue(controller._server_thread.is_alive())       # start() blocks for the server's life
        self.assertEqual(controller.advertised.url, "http://%s:%d" % (controller.advertised.ip, controller.port))
        self.assertEqual(http_get(controller.port, "/")[2], b"<html>ALS 1.0</html>")
        thread = controller._server_thread
        began = time.monotonic()
        controller.stop_www()
        self.assertLess(time.monotonic() - began, 0.1)              # STOP does not block ALS's UI
        self.assertEqual(controller.status, "stopping")
        self.assertTrue(wait_until(lambda: controller.status == "stopped"), controller.events)
        self.assertEqual(controller.events[-1], ("stopped", "WebServer", False))
        thread.join(5)
        self.assertFalse(thread.is_alive())
        self.assertFalse(accepting(controller.port))

    def test_a_taken_port_fails_the_future_with_the_oserror_and_the_thread_ends(self):
        port = free_port()
        other = socket.socket()
        self.addCleanup(other.close)
        other.bind(("0.0.0.0", port))
        other.listen(1)
        controller = self.controller(port)
        with self.assertLogs("alsserve", logging.ERROR):
            controller.start_www()
            thread = controller.threads[-1]
            thread.join(5)
        self.assertFalse(thread.is_alive())                         # start() returned at once
        error = controller.future.exception(0)
        self.assertIsInstance(error, OSError)
        self.assertEqual(error.errno, errno.EADDRINUSE)
        self.assertIsInstance(controller.failure, alsserve.PortInUseError)     # ALS's own mapping
        self.assertEqual([what for what, _, _ in controller.events], ["failed", "stopped"])
        self.assertEqual(controller.status, "stopped")
        self.assertFalse(any(t.name in ("WebServer", "alsserve") for t in threading.enumerate()))
        # The port is free again: the same object starts.
        other.close()
        controller.start_www()
        self.assertTrue(wait_until(lambda: controller.status == "running"), controller.events)

    def test_restart_on_the_same_object_with_a_changed_port_and_folder(self):
        controller = self.controller()
        for round_ in range(3):
            self.config.PORT = free_port()
            self.config.WEB_FOLDER = self.make_folder()     # Server() reads it at each start
            controller.start_www()
            self.assertTrue(wait_until(lambda: controller.status == "running"), controller.events)
            self.assertEqual(controller.port, self.config.PORT)
            self.assertEqual(http_get(self.config.PORT, "/web_image.jpg")[2],
                             FakeAls10Controller.als_files["web_image.jpg"])
            self.assertTrue(os.path.isdir(os.path.join(self.config.WEB_FOLDER, alsserve.HISTORY_FOLDER_NAME)))
            controller.stop_www()
            self.assertTrue(wait_until(lambda: controller.status == "stopped"), controller.events)
        self.assertEqual([what for what, _, _ in controller.events], ["started", "stopped"] * 3)

    def test_browsers_get_new_image_and_disconnect_and_stop_ends_when_they_close(self):
        controller = self.controller()
        controller.start_www()
        self.assertTrue(wait_until(lambda: controller.status == "running"))
        browsers = []
        for _ in range(5):
            browser = Browser(ws_open(controller.port), answer=True)
            browser.start()
            self.addCleanup(browser.ws.sock.close)
            browsers.append(browser)
        self.assertTrue(wait_until(lambda: controller._web_server._server.client_count == 5))
        image = make_jpeg(3000, b"\x33")
        with open(os.path.join(self.folder, "web_image.jpg"), "wb") as f:
            f.write(image)
        controller.notify_browsers_about_new_image()        # ALS's Qt thread: returns at once
        self.assertTrue(wait_until(lambda: all(NEW_IMAGE in b.messages for b in browsers)))
        self.assertEqual(http_get(controller.port, "/web_image.jpg?timestamp=2")[2], image)
        began = time.monotonic()
        controller.stop_www()
        self.assertTrue(wait_until(lambda: controller.status == "stopped", 5))
        self.assertLess(time.monotonic() - began, 1.0)      # not the 2 s grace: they all closed
        for browser in browsers:
            browser.join(5)
            self.assertEqual(browser.messages[-1], DISCONNECT)

    def test_stop_at_exit_joins_the_thread(self):
        controller = self.controller()
        controller.start_www()
        self.assertTrue(wait_until(lambda: controller.status == "running"))
        thread = controller._server_thread
        controller.stop_www(wait=True)
        self.assertFalse(thread.is_alive())
        self.assertEqual(controller.status, "stopped")

    def test_stop_while_starting_stops_once_started(self):
        controller = self.controller()
        controller.start_www()
        controller.stop_www()           # before the bind: status "starting"
        self.assertTrue(wait_until(lambda: controller.status == "stopped"), controller.events)
        self.assertTrue(wait_until(lambda: not controller._web_server._server.running))
        controller._server_thread is None or controller._server_thread.join(5)
        self.assertFalse(any(t.name == "alsserve" for t in threading.enumerate()))

    def test_a_failed_content_setup_is_reported_by_als_itself(self):
        self.config.WEB_FOLDER = os.path.join(self.make_folder(), "missing", "web")
        os.makedirs(os.path.dirname(self.config.WEB_FOLDER))
        with open(self.config.WEB_FOLDER, "wb") as f:     # a file where the folder should be
            f.write(b"x")
        controller = self.controller()
        controller.start_www()
        controller.threads[-1].join(5)
        self.assertEqual(controller.status, "stopped")
        self.assertIsInstance(controller.future.exception(0), OSError)

    def test_server_without_a_folder_outside_als_says_why(self):
        with mock.patch.dict(sys.modules, {"als.config": None}):       # not inside ALS
            server = alsserve.Server()
            failed = []
            server.startup_failed_signal.connect(failed.append)
            future = concurrent.futures.Future()
            with self.assertLogs("alsserve", logging.ERROR):
                server.start("0.0.0.0", free_port(), future)
        self.assertIsInstance(future.exception(0), ValueError)
        self.assertEqual(failed, [future.exception(0)])


# -- ALS 1.0's addresses -------------------------------------------------------

def entries(*addresses, family=socket.AF_INET):
    return [alsserve.InterfaceAddress(family, address) for address in addresses]


class AddressCandidatesTest(unittest.TestCase):
    """ALS 1.0's ranking: private +100, link-local -100, loopback -200, +10
    for a physical interface name, -10 for a virtual one; then the IP text."""

    def test_private_before_link_local_before_loopback(self):
        candidates = alsserve.build_network_address_candidates(8000, {
            "lo": entries("127.0.0.1"), "eth0": entries("169.254.7.9"), "wlan0": entries("192.168.4.20")})
        self.assertEqual([c.ip for c in candidates], ["192.168.4.20", "169.254.7.9", "127.0.0.1"])
        self.assertEqual([c.score for c in candidates], [110, 10, -100])
        best = candidates[0]
        self.assertEqual((best.url, best.label, best.interface_name), ("http://192.168.4.20:8000",
                                                                       "Wi-Fi - 192.168.4.20", "wlan0"))
        self.assertEqual((best.is_private, best.is_link_local, best.is_loopback), (True, False, False))
        self.assertEqual((candidates[1].is_link_local, candidates[2].is_loopback), (True, True))

    def test_labels_by_interface_name(self):
        cases = {"Wi-Fi": "Wi-Fi", "WLAN 2": "Wi-Fi", "wlp2s0": "Wi-Fi", "Wireless LAN": "Wi-Fi",
                 "enp3s0": "Ethernet", "Ethernet 3": "Ethernet", "eno1": "Ethernet",
                 "docker0": "docker0", "tailscale0": "tailscale0", "": ""}
        for name, shown in cases.items():
            with self.subTest(name=name):
                [candidate] = alsserve.build_network_address_candidates(8080, {name: entries("10.1.2.3")})
                self.assertEqual(candidate.label, "%s - 10.1.2.3" % shown if shown else "10.1.2.3")

    def test_interface_name_hints(self):
        scores = {name: alsserve.build_network_address_candidates(80, {name: entries("10.0.0.2")})[0].score
                  for name in ("wlan0", "eth0", "docker0", "vEthernet (WSL)", "utun3", "unknown7")}
        # "vEthernet" holds "ethernet": the physical hint is looked at first, as ALS does.
        self.assertEqual(scores, {"wlan0": 110, "eth0": 110, "docker0": 90, "vEthernet (WSL)": 110,
                                  "utun3": 90, "unknown7": 100})

    def test_equal_scores_are_ordered_by_ip_text(self):
        candidates = alsserve.build_network_address_candidates(8000, {
            "Wi-Fi": entries("192.168.1.42"), "wlan0": entries("10.42.0.1")})
        self.assertEqual([c.ip for c in candidates], ["10.42.0.1", "192.168.1.42"])
        self.assertEqual(candidates[0].label, "Wi-Fi - 10.42.0.1")

    def test_ipv4_only_each_address_once(self):
        candidates = alsserve.build_network_address_candidates(8000, {
            "eth0": entries("fe80::1", family=socket.AF_INET6) + entries("10.0.0.5", "not an address"),
            "eth1": entries("10.0.0.5") + [alsserve.InterfaceAddress(socket.AF_INET, "::1")]})
        self.assertEqual([(c.interface_name, c.ip) for c in candidates], [("eth0", "10.0.0.5")])

    def test_nothing_found_gives_loopback(self):
        [candidate] = alsserve.build_network_address_candidates(8000, {})
        self.assertEqual((candidate.ip, candidate.url, candidate.label), ("127.0.0.1", "http://127.0.0.1:8000",
                                                                          "Loopback - 127.0.0.1"))
        self.assertTrue(candidate.is_loopback)

    def test_the_default_route_only_breaks_ties(self):
        mapping = {"wlan0": entries("192.168.1.42"), "wlan1": entries("10.42.0.1"), "docker0": entries("172.17.0.1")}
        ranked = alsserve.build_network_address_candidates(8000, mapping, default_route="192.168.1.42")
        self.assertEqual([c.ip for c in ranked], ["192.168.1.42", "10.42.0.1", "172.17.0.1"])
        ranked = alsserve.build_network_address_candidates(8000, mapping, default_route="172.17.0.1")
        self.assertEqual([c.ip for c in ranked], ["10.42.0.1", "192.168.1.42", "172.17.0.1"])

    def test_selection_by_preference(self):
        candidates = alsserve.build_network_address_candidates(8000, {
            "Wi-Fi": entries("192.168.1.42"), "wlan0": entries("10.42.0.1")})
        select, prefer = alsserve.select_advertised_address, alsserve.build_advertised_address_preference
        self.assertEqual(prefer("10.42.0.1"), "ip:10.42.0.1")
        self.assertIs(alsserve.advertised_address_preference, prefer)
        self.assertEqual(select("auto", candidates).ip, "10.42.0.1")
        self.assertEqual(select(None, candidates).ip, "10.42.0.1")
        self.assertEqual(select(prefer("192.168.1.42"), candidates).ip, "192.168.1.42")
        self.assertEqual(select(prefer("192.168.50.50"), candidates).ip, "10.42.0.1")   # gone: auto
        self.assertEqual(select("auto", []).ip, "127.0.0.1")

    def test_the_earlier_form_takes_a_mapping(self):
        candidates = alsserve.get_network_address_candidates(8000, {"eth0": entries("10.9.8.7")})
        self.assertEqual([c.url for c in candidates], ["http://10.9.8.7:8000"])

    def test_this_machine_has_loopback_among_its_candidates(self):
        candidates = alsserve.get_network_address_candidates(8123)
        self.assertIn("127.0.0.1", [c.ip for c in candidates])
        self.assertTrue(all(c.url == "http://%s:8123" % c.ip for c in candidates))
        self.assertEqual(candidates, sorted(candidates, key=lambda c: -c.score))

    def test_no_cache_file_response(self):
        route = alsserve.build_no_cache_file_response("/some/folder", "web_image.jpg")
        self.assertEqual(route.headers, {"Cache-Control": "no-store, no-cache, must-revalidate",
                                         "Pragma": "no-cache", "Expires": "0"})
        self.assertEqual(route.path, os.path.join("/some/folder", "web_image.jpg"))


class SignalTest(unittest.TestCase):
    """The facade's signals where no Qt is loaded."""

    def test_connect_emit_disconnect(self):
        signal, seen = alsserve.Signal(), []
        first, second = (lambda *a: seen.append(("first",) + a)), (lambda *a: seen.append(("second",) + a))
        signal.connect(first)
        signal.connect(second)
        signal.emit(OSError("x"))
        self.assertEqual([s[0] for s in seen], ["first", "second"])
        signal.disconnect(first)
        signal.emit()
        self.assertEqual(seen[-1], ("second",))
        with self.assertRaises(TypeError):
            signal.disconnect(first)
        signal.disconnect()
        signal.emit()
        self.assertEqual(len(seen), 3)

    def test_a_failing_slot_is_logged_and_the_others_run(self):
        signal, seen = alsserve.Signal(), []
        signal.connect(lambda: 1 / 0)
        signal.connect(lambda: seen.append(True))
        with self.assertLogs("alsserve", logging.ERROR):
            signal.emit()
        self.assertEqual(seen, [True])

    def test_without_qt_the_facade_has_plain_signals(self):
        self.assertNotIn("PyQt5.QtCore", sys.modules)
        server = alsserve.Server("/nowhere")
        for name in ("startup_succeeded_signal", "startup_failed_signal", "stopped_signal"):
            self.assertIsInstance(getattr(server, name), alsserve.Signal)


if __name__ == "__main__":
    unittest.main()
