"""Renderer memory over a night of 24 MP images (issue 13, item 1), and
over 30 before/after toggles with them.

Measured on Debian's Chromium driven over the DevTools protocol directly
(a small client on the `websockets` package), not through Playwright:
Playwright enables the Network domain, whose agent keeps response bodies in
the renderer (up to 200 MB by default), which would measure the test harness
instead of the page. The figure is the renderers' RSS from /proc; the CDP
figures (JS heap, DOM nodes) are printed for information.
"""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
import urllib.request

from viewer_support import ALSSERVE_ERROR, CHROMIUM, alsserve, free_port, make_jpeg

MIB = 1024 * 1024
WIDTH, HEIGHT = 6000, 4000              # 24 MP, like a full-resolution ALS image
UPDATES = int(os.environ.get("ALSSERVE_MEMORY_UPDATES", "100"))
TOGGLES = 30                            # compare on and off


def process_rss(root_pid, kind=b"--type=renderer"):
    kids = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(name))
            except (OSError, ValueError, IndexError):
                pass
    todo, total = [root_pid], 0
    while todo:
        for pid in kids.get(todo.pop(), []):
            todo.append(pid)
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if kind not in f.read():
                        continue
                with open("/proc/%d/status" % pid) as f:
                    total += next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) * 1024
            except (OSError, StopIteration):
                pass
    return total


class CdpChromium:
    """Chromium with one page, driven over its DevTools WebSocket (Runtime,
    Performance and Emulation only)."""

    def __init__(self, url, width=390, height=844):
        from websockets.sync.client import connect
        self.profile = tempfile.mkdtemp(prefix="alsserve-cdp-")
        port = free_port()
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update",
             "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=%d" % port,
             "--user-data-dir=" + self.profile, "--window-size=%d,%d" % (width, height), "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/json" % port, timeout=2) as r:
                    pages = [t for t in json.load(r) if t["type"] == "page"]
                if pages:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("Chromium's DevTools endpoint did not come up")
            time.sleep(0.1)
        self.connection = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=10)
        self.ws = self.connection.__enter__()
        self.next_id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=True)
        self.call("Emulation.setTouchEmulationEnabled", enabled=True)
        self.call("Performance.enable")
        self.call("Page.navigate", url=url)

    def call(self, method, **params):
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError("%s: %s" % (method, message["error"]))
                return message.get("result", {})

    def evaluate(self, expression):
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait(self, condition, timeout=60):
        deadline = time.monotonic() + timeout
        expression = "(() => { if (!window.alsViewer) return false; const s = alsViewer.state(); return %s; })()" % condition
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.05)
        raise AssertionError("timed out waiting for %s; state=%s" % (
            condition, self.evaluate("window.alsViewer && alsViewer.state()")))

    def metrics(self):
        return {m["name"]: m["value"] for m in self.call("Performance.getMetrics")["metrics"]}

    def renderer_rss(self):
        return process_rss(self.proc.pid)

    def close(self):
        try:
            self.connection.__exit__(None, None, None)
        except Exception:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        shutil.rmtree(self.profile, True)


class MemoryTests(unittest.TestCase):
    def setUp(self):
        self.assertIsNone(ALSSERVE_ERROR, "alsserve.py could not be imported")
        self.folder = tempfile.mkdtemp(prefix="alsserve-memory-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.server = alsserve.ImageServer(self.folder, port=free_port(), displayed_address="ip:127.0.0.1")
        self.url = self.server.start()
        self.addCleanup(self.server.stop, 0.5)

    def figures(self, browser):
        m = browser.metrics()
        return "renderers %.0f MiB (CDP: JS heap %.1f MiB used, %d DOM nodes)" % (
            browser.renderer_rss() / MIB, m.get("JSHeapUsedSize", 0) / MIB, m.get("Nodes", 0))

    def test_100_updates_of_a_24_mp_image_keep_renderer_memory_flat(self):
        images = [make_jpeg(WIDTH, HEIGHT, seed=k, noise=130) for k in range(2)]   # about 11.3 MB each
        decoded = WIDTH * HEIGHT * 4
        browser = CdpChromium(self.url)
        self.addCleanup(browser.close)
        browser.wait("s.imageLoads >= 1 && s.connection === 'live'", 20)
        time.sleep(1)
        baseline = browser.renderer_rss()
        print("\nmemory: JPEG %d bytes, decoded %d MiB; baseline (waiting image) %s"
              % (len(images[0]), decoded // MIB, self.figures(browser)))
        started, after = time.monotonic(), {}
        for k in range(1, UPDATES + 1):
            loads = browser.evaluate("alsViewer.state().imageLoads")
            self.server.publish_image(images[k % 2])
            browser.wait("s.imageLoads > %d && !s.imageLoading && s.naturalWidth === %d" % (loads, WIDTH), 60)
            browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            if k in (1, UPDATES) or k % 10 == 0:
                time.sleep(0.3)
                after[k] = browser.renderer_rss()
                print("memory: after update %3d: %s" % (k, self.figures(browser)))
        first, last = after[1], after[UPDATES]
        bound = first + 2 * decoded + 64 * MIB
        print("memory: baseline %.0f MiB, after 1 %.0f MiB, after %d %.0f MiB, bound %.0f MiB "
              "(after 1 + 2 x %d MiB + 64 MiB); %d updates in %.0f s"
              % (baseline / MIB, first / MIB, UPDATES, last / MIB, bound / MIB, decoded // MIB,
                 UPDATES, time.monotonic() - started))
        self.assertLessEqual(last, bound, "renderer memory grew: %s" % {k: v // MIB for k, v in after.items()})
        # the page did show every update, and the newest one is on screen
        s = browser.evaluate("alsViewer.state()")
        self.assertGreaterEqual(s["imageLoads"], UPDATES + 1)
        self.assertEqual(browser.evaluate("[document.querySelectorAll('#stage canvas').length, "
                                          "document.querySelectorAll('#stage img').length]"), [1, 0])
        self.assertTrue(s["imageUrl"].startswith("blob:"))

    def test_30_compare_toggles_with_24_mp_images_keep_renderer_memory_flat(self):
        """Before/after holds at most two decoded images: the live one and the
        session's first, which is let go when compare ends."""
        images = [make_jpeg(WIDTH, HEIGHT, seed=k, noise=130) for k in range(2)]
        decoded = WIDTH * HEIGHT * 4
        for k, image in enumerate(images):
            self.server.update_metrics(k + 1, 30 * (k + 1))
            self.server.publish_image(image)
        deadline = time.monotonic() + 60
        while len(self.server.history) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        entries = self.server.history
        self.assertEqual(len(entries), 2)
        browser = CdpChromium(self.url)
        self.addCleanup(browser.close)
        browser.wait("s.connection === 'live' && s.entries === 2 && s.imageId === %d && !s.imageLoading"
                     % entries[1]["id"], 60)
        browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        time.sleep(1)
        single = browser.renderer_rss()
        print("\nmemory: compare, JPEG %d bytes, decoded %d MiB; the live image alone: %s"
              % (len(images[0]), decoded // MIB, self.figures(browser)))
        started, comparing, alone = time.monotonic(), {}, {}
        for k in range(1, TOGGLES + 1):
            browser.evaluate("document.getElementById('compare').click()")
            browser.wait("s.beforeId === %d" % entries[0]["id"], 60)
            browser.evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
            if k in (1, TOGGLES) or k % 10 == 0:
                time.sleep(0.3)
                comparing[k] = browser.renderer_rss()
                print("memory: compare on, toggle %2d: %s" % (k, self.figures(browser)))
            browser.evaluate("document.getElementById('compare').click()")
            browser.wait("s.beforeId === null", 10)
            if k in (1, TOGGLES) or k % 10 == 0:
                time.sleep(0.3)
                alone[k] = browser.renderer_rss()
        first, last = comparing[1], comparing[TOGGLES]
        bound = first + 2 * decoded + 64 * MIB
        print("memory: live image alone %.0f MiB; comparing after toggle 1 %.0f MiB, after %d %.0f MiB, "
              "bound %.0f MiB (after 1 + 2 x %d MiB + 64 MiB); compare off after %d: %.0f MiB; "
              "%d toggles in %.0f s" % (single / MIB, first / MIB, TOGGLES, last / MIB, bound / MIB,
                                        decoded // MIB, TOGGLES, alone[TOGGLES] / MIB, TOGGLES,
                                        time.monotonic() - started))
        self.assertLessEqual(last, bound, "renderer memory grew: %s" % {k: v // MIB for k, v in comparing.items()})
        self.assertLessEqual(alone[TOGGLES], single + decoded + 64 * MIB,
                             "the before image is not let go: %s" % {k: v // MIB for k, v in alone.items()})
        s = browser.evaluate("alsViewer.state()")
        self.assertEqual((s["imageId"], s["naturalWidth"]), (entries[1]["id"], WIDTH), "the live image stays")
        self.assertEqual(s["imageLoads"], 1, "compare downloads no live image again")
        self.assertEqual(browser.evaluate("[document.querySelectorAll('#stage canvas').length, "
                                          "document.querySelectorAll('#stage img').length]"), [1, 0])

    def test_time_lapse_of_300_frames_keeps_renderer_memory_flat(self):
        width, height = 3000, 2000
        decoded = width * height * 4
        images = [make_jpeg(width, height, seed=k, noise=60) for k in range(10)]
        for n in range(300):                 # 300 frames: the history's default budget
            self.server.update_metrics(n + 1, 10 * (n + 1))
            self.server.publish_image(images[n % len(images)])
        deadline = time.monotonic() + 60
        while len(self.server.history) < 300 and time.monotonic() < deadline:
            time.sleep(0.1)
        self.assertEqual(len(self.server.history), 300)
        browser = CdpChromium(self.url)
        self.addCleanup(browser.close)
        browser.wait("s.imageLoads >= 1 && s.connection === 'live' && s.entries === 300", 30)
        time.sleep(1)
        print("\nmemory: before the time-lapse: %s" % self.figures(browser))
        browser.evaluate("document.getElementById('play').click()")
        for k in (5, 10, 20):
            browser.wait("s.imageLoads >= %d" % k, 60)
            print("memory: after %d frames: %s" % (k, self.figures(browser)))
        browser.wait("s.playing === true && s.imageLoads >= 31", 60)
        first = browser.renderer_rss()
        print("memory: time-lapse of 300 frames (%d bytes each, decoded %d MiB): after 30 frames %s"
              % (len(images[0]), decoded // MIB, self.figures(browser)))
        started = time.monotonic()
        browser.wait("s.imageLoads >= 331", 400)      # one whole loop and 30 frames more
        last = browser.renderer_rss()
        s = browser.evaluate("alsViewer.state()")
        bound = first + 2 * decoded + 64 * MIB
        print("memory: after 330 frames %s; bound %.0f MiB (after 30 + 2 x %d MiB + 64 MiB); "
              "300 frames in %.0f s" % (self.figures(browser), bound / MIB, decoded // MIB,
                                        time.monotonic() - started))
        self.assertTrue(s["playing"])
        self.assertLessEqual(last, bound)
        self.assertEqual(browser.evaluate("[document.querySelectorAll('#stage canvas').length, "
                                          "document.querySelectorAll('#stage img').length]"), [1, 0])


if __name__ == "__main__":
    unittest.main()
