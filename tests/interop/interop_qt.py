"""Interop check: ALS's facade with real Qt signals (PyQt5, as ALS runs it).

Inside ALS the process has loaded PyQt5 before alsserve is imported;
``Server`` then offers real ``pyqtSignal``s, so that ALS's slots, connected
on ALS's Qt thread, run there (queued) when the WebServer thread emits. This
suite loads PyQt5 (tests/requirements-extra.txt) and a QCoreApplication, and
drives the facade as ALS 1.0-dev's Controller does (tests/test_als.py's
FakeAls10Controller, with Qt this time).

Run from the repository root:  .venv/bin/python -m unittest tests/interop/interop_qt.py -v
"""
import concurrent.futures
import os
import socket
import sys
import threading
import time
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

import alsserve  # noqa: E402
from support import free_port, http_get  # noqa: E402
from test_als import FakeAls10Controller, FakeAlsCase  # noqa: E402

QtCore = None


def setUpModule():
    # Imported here, not at the top: the other suites of the run keep a process without Qt.
    global QtCore
    from PyQt5 import QtCore as qt_core
    QtCore = qt_core
    if QtCore.QCoreApplication.instance() is None:
        setUpModule.application = QtCore.QCoreApplication([])


def process_events_until(predicate, timeout=5.0):
    """Run the Qt thread's queued events (ALS's event loop does this) until predicate holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        QtCore.QCoreApplication.processEvents(QtCore.QEventLoop.AllEvents, 20)
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


class QtSignalsTest(FakeAlsCase):
    def test_the_signals_are_qt_signals(self):
        server = alsserve.Server(self.folder)
        for name in ("startup_succeeded_signal", "startup_failed_signal", "stopped_signal"):
            self.assertIsInstance(getattr(server, name), QtCore.pyqtBoundSignal, name)

    def test_slots_run_on_the_thread_that_connected_them(self):
        main = threading.current_thread()
        server = alsserve.Server(self.folder)
        seen = []

        def slot(name):
            return lambda *args: seen.append((name, threading.current_thread() is main, args))

        server.startup_succeeded_signal.connect(slot("started"))
        server.startup_failed_signal.connect(slot("failed"))
        server.stopped_signal.connect(slot("stopped"))
        port = free_port()
        future = concurrent.futures.Future()
        thread = threading.Thread(target=server.start, args=("0.0.0.0", port, future), name="WebServer")
        thread.start()
        self.addCleanup(thread.join, 5)
        self.addCleanup(server.stop)
        self.assertTrue(process_events_until(lambda: seen), "no signal reached the Qt thread")
        self.assertEqual(seen, [("started", True, ())])
        self.assertIsNone(future.result(0))
        self.assertEqual(http_get(port, "/", timeout=5)[0], 404)    # listening (the folder is empty)
        server.stop()
        self.assertTrue(process_events_until(lambda: len(seen) == 2))
        self.assertEqual(seen[1], ("stopped", True, ()))
        thread.join(5)

        # A taken port: the failure then the end, both on the Qt thread.
        other = socket.socket()
        self.addCleanup(other.close)
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)     # past our own TIME_WAIT
        other.bind(("0.0.0.0", port))
        other.listen(1)
        future = concurrent.futures.Future()
        thread = threading.Thread(target=server.start, args=("0.0.0.0", port, future), name="WebServer")
        with self.assertLogs("alsserve", "ERROR"):
            thread.start()
            thread.join(5)
        self.assertTrue(process_events_until(lambda: len(seen) == 4))
        (failed, on_main, (error,)), stopped = seen[2], seen[3]
        self.assertEqual((failed, on_main), ("failed", True))
        self.assertIsInstance(error, OSError)
        self.assertIs(error, future.exception(0))
        self.assertEqual(stopped, ("stopped", True, ()))

    def test_als_1_0_controller_with_qt(self):
        self.config.PORT = free_port()
        controller = FakeAls10Controller()
        self.addCleanup(controller.stop_www, True)
        controller.start_www()
        self.assertTrue(process_events_until(lambda: controller.status == "running"), controller.events)
        # The slot ran on ALS's thread (here the main one), after the socket listened.
        self.assertEqual(controller.events, [("started", "MainThread", True)])
        began = time.monotonic()
        controller.stop_www()
        self.assertLess(time.monotonic() - began, 0.1)
        self.assertTrue(process_events_until(lambda: controller.status == "stopped"), controller.events)
        self.assertEqual(controller.events[-1], ("stopped", "MainThread", False))


if __name__ == "__main__":
    unittest.main()
