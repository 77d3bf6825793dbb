"""Browser tests of the alsserve viewer page (assets/) against a real alsserve.

Run from the repository root with a Python that has Playwright installed and
Debian's Chromium at /usr/bin/chromium (no browser download):

    python -m unittest discover -s tests/browser -p 'test_*.py' -v

Environment: ALSSERVE_CHROMIUM overrides the browser path.
One screenshot per run is saved to build/screenshots/viewer.png.
"""

import base64
import json
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
DEMO = ASSETS / "demo"
SCREENSHOT = REPO / "build" / "screenshots" / "viewer.png"
CHROMIUM = os.environ.get("ALSSERVE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 700}
ALS_ICONS = ["%s_%s.png" % (n, s) for n in ("fullpage", "home", "zoomin", "zoomout")
             for s in ("grouphover", "hover", "pressed", "rest")]
VIEWER_FILES = ("index.html", "viewer.js", "viewer.css")

sys.path.insert(0, str(REPO))
try:
    import alsserve
    ALSSERVE_ERROR = None
except Exception as error:  # reported by every test that needs the server
    alsserve = None
    ALSSERVE_ERROR = "%s: %s" % (type(error).__name__, error)


# --------------------------------------------------------------- file helpers
def jpeg_size(data):
    """(width, height) from a JPEG's SOF marker."""
    assert data[:2] == b"\xff\xd8", "not a JPEG (no SOI)"
    i = 2
    while i < len(data) - 9:
        if data[i] != 0xFF:
            i += 1
            continue
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
            i += 1 if marker == 0xFF else 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5:i + 9])
            return width, height
        i += 2 + length
    raise AssertionError("no SOF marker in JPEG")


def png_header(data):
    """(width, height, bit depth, colour type) of a PNG; asserts it is one."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "bad PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, "first chunk is not IHDR"
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    assert data[-12:] == b"\x00\x00\x00\x00IEND\xaeB`\x82", "PNG does not end with IEND"
    return width, height, depth, colour


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def demo_frame(n):
    return (DEMO / ("frame%02d.jpg" % n)).read_bytes()


# ------------------------------------------------------------ static checks
class AssetFileTests(unittest.TestCase):
    def test_als_compatible_icon_names_exist(self):
        missing = [n for n in ALS_ICONS if not (ASSETS / "icons" / n).is_file()]
        self.assertEqual(missing, [], "ALS icon names missing from assets/icons")
        self.assertEqual(len(ALS_ICONS), 16)
        for name in ALS_ICONS:
            w, h, depth, colour = png_header((ASSETS / "icons" / name).read_bytes())
            self.assertTrue(16 <= w <= 128 and 16 <= h <= 128, name)
            self.assertEqual((depth, colour), (8, 6), name + " should be 8-bit RGBA")

    def test_favicon_is_a_real_ico(self):
        data = (ASSETS / "favicon.ico").read_bytes()
        reserved, kind, count = struct.unpack("<HHH", data[:6])
        self.assertEqual((reserved, kind), (0, 1))
        self.assertGreaterEqual(count, 1)
        for k in range(count):
            w, h, _, _, planes, bpp, size, offset = struct.unpack(
                "<BBBBHHII", data[6 + 16 * k:22 + 16 * k])
            self.assertLessEqual(offset + size, len(data))
            blob = data[offset:offset + size]
            if blob[:8] == b"\x89PNG\r\n\x1a\n":
                pw, ph, _, _ = png_header(blob)
                self.assertEqual((pw % 256, ph % 256), (w, h))
            else:
                self.assertEqual(struct.unpack("<I", blob[:4])[0], 40, "neither PNG nor BMP")

    def test_waiting_and_demo_images(self):
        waiting = (ASSETS / "waiting.jpg").read_bytes()
        ww, wh = jpeg_size(waiting)
        self.assertTrue(320 <= ww <= 1280 and 240 <= wh <= 720, (ww, wh))
        self.assertLess(len(waiting), 200 * 1024)
        frames = [demo_frame(n) for n in range(1, 7)]
        for n, data in enumerate(frames, 1):
            self.assertLess(len(data), 150 * 1024, "frame%02d.jpg too large" % n)
            self.assertEqual(jpeg_size(data), (1024, 768))
            self.assertEqual(data[-2:], b"\xff\xd9")
        self.assertEqual(len(set(frames)), 6, "demo frames must differ")
        # deeper stacks have less noise: the JPEG of a later frame is smaller
        sizes = [len(f) for f in frames]
        self.assertEqual(sizes, sorted(sizes, reverse=True), sizes)
        self.assertNotEqual(jpeg_size(frames[0]), (ww, wh), "demo frames must differ in size from waiting.jpg")

    def test_viewer_size_budget_and_no_external_resources(self):
        total = sum((ASSETS / n).stat().st_size for n in VIEWER_FILES)
        self.assertLessEqual(total, 30 * 1024, "viewer is %d bytes" % total)
        external = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+[/\"')]|@import", re.I)
        for name in VIEWER_FILES:
            text = (ASSETS / name).read_text("utf-8")
            self.assertIsNone(external.search(text), "%s refers to an external resource" % name)
        html = (ASSETS / "index.html").read_text("utf-8")
        head = html[:html.index("<link")]
        self.assertRegex(head, r"<style>[^<]*html[^{]*\{[^}]*background:#000",
                         "dark background must be set before any stylesheet loads")

    def test_generator_reproduces_icons(self):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, str(REPO / "tools" / "make_assets.py"), "--skip-jpeg",
                            "--out", out], check=True, capture_output=True, timeout=120)
            for path in sorted(Path(out).rglob("*.*")):
                rel = path.relative_to(out)
                self.assertEqual(path.read_bytes(), (ASSETS / rel).read_bytes(),
                                 "%s differs from a fresh tools/make_assets.py run" % rel)
            self.assertTrue((Path(out) / "icons" / "zoomin_rest.png").is_file())


# ----------------------------------------------------------- browser tests
_pw = None
_browser = None
_screenshot_saved = False


def setUpModule():
    global _pw, _browser
    logging.getLogger("alsserve").setLevel(logging.ERROR)  # keep the test output readable
    from playwright.sync_api import sync_playwright  # noqa: import error fails the run
    if not os.path.exists(CHROMIUM):
        raise RuntimeError("Chromium not found at %s (apt-get install -y chromium)" % CHROMIUM)
    _pw = sync_playwright().start()
    _browser = _pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def tearDownModule():
    if _browser is not None:
        _browser.close()
    if _pw is not None:
        _pw.stop()


PIXELS_JS = """async (b64) => {
  const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const bmp = await createImageBitmap(new Blob([bin], {type: 'image/png'}));
  const c = document.createElement('canvas');
  c.width = bmp.width; c.height = bmp.height;
  const g = c.getContext('2d');
  g.drawImage(bmp, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, bright = 0, max = 0, white = 0;
  const grid = new Array(64).fill(0), gw = c.width / 8, gh = c.height / 8;
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    const l = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    sum += l; if (l > 60) bright++; if (l > max) max = l;
    if (d[i] > 235 && d[i + 1] > 235 && d[i + 2] > 235) white++;
    const x = p % c.width, y = Math.floor(p / c.width);
    grid[Math.floor(y / gh) * 8 + Math.floor(x / gw)] += l;
  }
  const n = d.length / 4;
  return {width: c.width, height: c.height, mean: sum / n, bright: bright / n, max: max,
          white: white / n, grid: grid.map(v => v / (n / 64))};
}"""

# Draws the displayed <img> and a reference JPEG (given as base64) into
# canvases and compares them: proves which picture is on screen.
SAME_PICTURE_JS = """async (b64) => {
  const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const ref = await createImageBitmap(new Blob([bin], {type: 'image/jpeg'}));
  const view = document.getElementById('view');
  if (!view || view.naturalWidth !== ref.width || view.naturalHeight !== ref.height) return 1e9;
  const grab = (src) => {
    const c = document.createElement('canvas');
    c.width = 256; c.height = 192;
    const g = c.getContext('2d');
    g.drawImage(src, 0, 0, 256, 192);
    return g.getImageData(0, 0, 256, 192).data;
  };
  const a = grab(view), b = grab(ref);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
  return diff / a.length;
}"""


class ViewerTestCase(unittest.TestCase):
    """A fresh web folder, a real alsserve on 127.0.0.1 and a page open on it."""

    def setUp(self):
        self.assertIsNone(ALSSERVE_ERROR, "alsserve.py could not be imported")
        self.folder = tempfile.mkdtemp(prefix="alsserve-browser-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.port = free_port()
        self.server = alsserve.ImageServer(self.folder, port=self.port,
                                           displayed_address="ip:127.0.0.1", assets_dir=None)
        self.url = self.server.start()
        self.addCleanup(self.server.stop, 0.5)
        self.assertEqual(self.url, "http://127.0.0.1:%d/" % self.port)
        self.context = _browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        self.addCleanup(self.context.close)
        self.page = self.context.new_page()
        self.console_errors, self.failed_requests, self.requests = [], [], []
        self.page.on("console", lambda m: m.type == "error" and self.console_errors.append(m.text))
        self.page.on("pageerror", lambda e: self.console_errors.append("pageerror: %s" % e))
        self.page.on("requestfailed", lambda r: self.failed_requests.append(
            "%s %s" % (r.url, r.failure)))
        self.page.on("response", lambda r: r.status >= 400 and self.failed_requests.append(
            "%s -> HTTP %d" % (r.url, r.status)))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.sockets = []
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))
        self.page.goto(self.url)
        self.wait_for("s.imageLoads >= 1 && s.connection === 'live' && s.stack !== null", 10000)

    # -- helpers
    def state(self):
        return self.page.evaluate("window.alsViewer.state()")

    def wait_for(self, condition, timeout=5000):
        """Wait until a JS condition on s = alsViewer.state() holds."""
        try:
            self.page.wait_for_function(
                "() => { if (!window.alsViewer) return false; const s = window.alsViewer.state(); return %s; }"
                % condition, timeout=timeout, polling=25)
        except Exception as error:
            state = self.page.evaluate("window.alsViewer ? window.alsViewer.state() : null")
            self.fail("timed out after %d ms waiting for %s; state=%s (%s)"
                      % (timeout, condition, json.dumps(state), type(error).__name__))

    def rect(self):
        return self.page.evaluate(
            "(() => { const r = document.getElementById('view').getBoundingClientRect();"
            " return {left: r.left, top: r.top, width: r.width, height: r.height}; })()")

    def text(self, selector):
        return self.page.inner_text(selector).strip()

    def pixels(self, clip=None):
        png = self.page.screenshot(clip=clip) if clip else self.page.screenshot()
        return self.page.evaluate(PIXELS_JS, base64.b64encode(png).decode("ascii"))

    def picture_difference(self, jpeg):
        return self.page.evaluate(SAME_PICTURE_JS, base64.b64encode(jpeg).decode("ascii"))

    def centre_clip(self):
        return {"x": 250, "y": 200, "width": 500, "height": 300}

    def image_point_under(self, x, y):
        r = self.rect()
        return (x - r["left"]) / r["width"], (y - r["top"]) / r["height"]

    def assert_clean(self):
        self.assertEqual(self.console_errors, [], "console errors")
        self.assertEqual(self.failed_requests, [], "failed requests")

    def save_screenshot(self):
        global _screenshot_saved
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SCREENSHOT))
        _screenshot_saved = True


class PageLoadTests(ViewerTestCase):
    def test_page_loads_clean_and_shows_fitted_image(self):
        waiting = (Path(self.folder) / "web_image.jpg").read_bytes()
        ww, wh = jpeg_size(waiting)
        s = self.state()
        self.assertEqual((s["naturalWidth"], s["naturalHeight"]), (ww, wh))
        self.assertEqual(s["zoom"], 1)
        self.assertAlmostEqual(s["centerX"], 0.5)
        self.assertAlmostEqual(s["centerY"], 0.5)
        self.assertEqual(s["connection"], "live")
        # fitted: fills the width (1280x720 into 1000x700) and is centred
        fit = min(VIEWPORT["width"] / ww, VIEWPORT["height"] / wh)
        r = self.rect()
        self.assertAlmostEqual(r["width"], ww * fit, delta=0.6)
        self.assertAlmostEqual(r["height"], wh * fit, delta=0.6)
        self.assertAlmostEqual(r["left"] + r["width"] / 2, VIEWPORT["width"] / 2, delta=0.6)
        self.assertAlmostEqual(r["top"] + r["height"] / 2, VIEWPORT["height"] / 2, delta=0.6)
        self.assertLess(self.picture_difference(waiting), 3, "the waiting image is not what is shown")
        # overlay from data.json and the connection state
        self.assertEqual(self.text("#stack"), "Stack: 0")
        self.assertEqual(self.text("#expo"), "Expo: 0:00:00")
        self.assertEqual(self.text("#conn"), "live")
        # what the page asked for: cache-busted image, data.json, the socket
        self.assertTrue(any(re.search(r"/web_image\.jpg\?timestamp=\d{12,}$", u) for u in self.requests),
                        self.requests)
        self.assertIn(self.url + "data.json", self.requests)
        self.assertEqual(self.sockets, ["ws://127.0.0.1:%d/ws" % self.port])
        # dark page, non-blank picture (the red text of the waiting image), no white
        self.assertEqual(self.page.evaluate("getComputedStyle(document.documentElement).backgroundColor"),
                         "rgb(0, 0, 0)")
        whole = self.pixels()
        self.assertLess(whole["mean"], 40, "page should be dark")
        self.assertEqual(whole["white"], 0.0)
        centre = self.pixels(self.centre_clip())
        self.assertGreater(centre["max"], 70, "image area is blank")
        self.assertGreater(centre["bright"], 0.002, "image area is blank")
        # download link for the full image
        dl = self.page.eval_on_selector("#download", "a => [a.getAttribute('download'), a.href]")
        self.assertEqual(dl[0], "web_image.jpg")
        self.assertRegex(dl[1], r"^%sweb_image\.jpg(\?timestamp=\d+)?$" % re.escape(self.url))
        self.page.wait_for_timeout(300)  # late requests (icons, favicon) still have to succeed
        self.assert_clean()

    def test_download_link_saves_the_full_image(self):
        with self.page.expect_download() as info:
            self.page.click("#download")
        download = info.value
        self.assertEqual(download.suggested_filename, "web_image.jpg")
        path = download.path()
        data = Path(path).read_bytes()
        self.assertEqual(data, (Path(self.folder) / "web_image.jpg").read_bytes())


class LiveUpdateTests(ViewerTestCase):
    def test_new_image_and_metrics_keep_zoom_and_centre(self):
        # zoom in with a button and the wheel, pan a bit: a view that is not "home"
        self.page.click("#zoomin")
        self.page.mouse.move(620, 300)
        self.page.mouse.wheel(0, -120)
        self.wait_for("s.zoom > 2.1")
        self.page.mouse.move(500, 400)
        self.page.mouse.down()
        self.page.mouse.move(440, 370, steps=4)
        self.page.mouse.up()
        before = self.state()
        self.assertNotAlmostEqual(before["centerX"], 0.5, places=3)
        old_pixels = self.pixels(self.centre_clip())
        loads = before["imageLoads"]

        frame = demo_frame(1)
        self.server.update_metrics(12, 360)
        started = time.monotonic()
        self.server.publish_image(frame)
        self.wait_for("s.naturalWidth === 1024 && s.stack === 12 && !s.imageLoading", 2000)
        self.page.wait_for_function(
            "document.getElementById('stack').textContent === 'Stack: 12'", timeout=2000)
        elapsed = time.monotonic() - started
        self.assertLess(elapsed, 2.0)
        after = self.state()
        self.assertEqual((after["naturalWidth"], after["naturalHeight"]), (1024, 768))
        self.assertEqual(after["expo"], "0:06:00")
        self.assertEqual(self.text("#stack"), "Stack: 12")
        self.assertEqual(self.text("#expo"), "Expo: 0:06:00")
        self.assertEqual(after["imageLoads"], loads + 1)
        # same relative view: zoom (relative to the fitted size) and centre kept
        self.assertAlmostEqual(after["zoom"], before["zoom"], places=9)
        self.assertAlmostEqual(after["centerX"], before["centerX"], places=9)
        self.assertAlmostEqual(after["centerY"], before["centerY"], places=9)
        self.assertAlmostEqual(after["scale"], after["fitScale"] * before["zoom"], places=9)
        r = self.rect()
        self.assertAlmostEqual(r["width"], 1024 * after["scale"], delta=1)
        ux, uy = self.image_point_under(VIEWPORT["width"] / 2, VIEWPORT["height"] / 2)
        self.assertAlmostEqual(ux, before["centerX"], delta=0.002)
        self.assertAlmostEqual(uy, before["centerY"], delta=0.002)
        self.assertLess(self.picture_difference(frame), 3, "the new frame is not what is shown")
        self.assertRegex(after["imageUrl"], r"/web_image\.jpg\?timestamp=\d+$")
        new_pixels = self.pixels(self.centre_clip())
        change = sum(abs(a - b) for a, b in zip(old_pixels["grid"], new_pixels["grid"])) / 64
        self.assertGreater(change, 2, "screen did not change after the new image")
        self.assert_clean()
        # the screenshot of this run: the demo frame, fitted, with the overlay
        self.page.keyboard.press("0")
        self.wait_for("s.zoom === 1")
        self.page.mouse.move(10, 690)
        self.page.wait_for_timeout(100)
        self.save_screenshot()

    def test_rapid_notifications_coalesce(self):
        loads = self.state()["imageLoads"]
        count = lambda: sum(1 for u in self.requests if "/web_image.jpg" in u)
        requested = count()
        self.server.update_metrics(6, 180)     # ALS writes data.json, then the image
        for n in range(2, 7):
            self.server.publish_image(demo_frame(n))
        for _ in range(20):
            self.server.notify_browsers_about_new_image()
        self.wait_for("s.naturalWidth === 1024", 3000)
        # settle: nothing in flight and nothing dirty for a while
        self.page.wait_for_timeout(400)
        self.wait_for("!s.imageLoading && !s.imageDirty && s.stack === 6", 3000)
        extra = count() - requested
        done = self.state()["imageLoads"] - loads
        self.assertGreaterEqual(done, 1)
        self.assertLessEqual(extra, 4, "25 notifications caused %d image loads (must coalesce)" % extra)
        self.assertEqual(done, extra)
        self.assertLess(self.picture_difference(demo_frame(6)), 3, "the last frame must be shown")
        self.assertEqual(self.text("#stack"), "Stack: 6")
        self.assertEqual(self.text("#expo"), "Expo: 0:03:00")
        self.assert_clean()


class ConnectionTests(ViewerTestCase):
    def test_stop_shows_stopped_then_restart_reconnects(self):
        self.page.click("#zoomin")
        zoom = self.state()["zoom"]
        self.server.stop(grace=2.0)
        self.wait_for("s.connection === 'stopped'", 3000)
        self.assertEqual(self.text("#conn"), "Image server stopped")
        self.assertTrue(self.page.is_visible("#conn"))
        s = self.state()
        self.assertEqual(s["naturalWidth"], 1280, "the last image must stay visible")
        self.assertTrue(self.page.is_visible("#view"))
        self.assertGreater(self.pixels(self.centre_clip())["max"], 70)
        # still "stopped" while the page retries in the background
        self.page.wait_for_timeout(1300)
        self.assertEqual(self.state()["connection"], "stopped")
        # ALS keeps working meanwhile: new image and metrics on disk
        self.server.update_metrics(7, 210)
        self.server.publish_image(demo_frame(3))
        self.server.start()
        self.wait_for("s.connection === 'live' && s.naturalWidth === 1024 && s.stack === 7", 12000)
        self.assertEqual(self.text("#conn"), "live")
        self.assertEqual(self.text("#stack"), "Stack: 7")
        self.assertEqual(self.text("#expo"), "Expo: 0:03:30")
        self.assertLess(self.picture_difference(demo_frame(3)), 3)
        self.assertAlmostEqual(self.state()["zoom"], zoom)
        self.assertGreaterEqual(len(self.sockets), 2)
        self.assertTrue(all(u == "ws://127.0.0.1:%d/ws" % self.port for u in self.sockets))
        # and live updates work on the new connection
        self.server.update_metrics(8, 240)
        self.server.publish_image(demo_frame(4))
        self.wait_for("s.stack === 8", 3000)
        self.assertLess(self.picture_difference(demo_frame(4)), 3)

    def test_lost_socket_reconnects_and_reloads(self):
        # The socket dies without a disconnect message (network loss): the page
        # says "reconnecting", then reconnects by itself and reloads the image.
        proxy = TcpProxy(self.port)
        self.addCleanup(proxy.close)
        page = self.context.new_page()
        self.page = page
        page.goto("http://127.0.0.1:%d/" % proxy.port)
        self.wait_for("s.imageLoads >= 1 && s.connection === 'live' && s.stack !== null", 10000)
        loads = self.state()["imageLoads"]
        self.server.update_metrics(3, 90)
        self.server.publish_image(demo_frame(2))
        self.wait_for("s.stack === 3 && s.naturalWidth === 1024", 3000)
        proxy.drop_connections()
        self.wait_for("s.connection === 'reconnecting'", 3000)
        self.assertEqual(self.text("#conn"), "reconnecting\u2026")
        self.wait_for("s.connection === 'live'", 6000)
        self.wait_for("s.imageLoads >= %d && !s.imageLoading" % (loads + 2), 3000)
        self.assertLess(self.picture_difference(demo_frame(2)), 3)


class TcpProxy:
    """A loopback TCP forwarder whose connections can be cut (a network loss)."""

    def __init__(self, target_port):
        import threading
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(16)
        self.port = self.listener.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def drop_connections(self):
        with self.lock:
            conns, self.conns = self.conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self):
        self.closed = True
        self.listener.close()
        self.drop_connections()


class InteractionTests(ViewerTestCase):
    def test_wheel_zooms_around_the_cursor(self):
        x, y = 300, 250
        point = self.image_point_under(x, y)
        self.page.mouse.move(x, y)
        self.page.mouse.wheel(0, -300)
        self.wait_for("s.zoom > 1.5")
        zoomed = self.state()["zoom"]
        after = self.image_point_under(x, y)
        self.assertAlmostEqual(after[0], point[0], delta=0.001)
        self.assertAlmostEqual(after[1], point[1], delta=0.001)
        self.page.mouse.wheel(0, 150)
        self.wait_for("s.zoom < %r" % zoomed)
        after = self.image_point_under(x, y)
        self.assertAlmostEqual(after[0], point[0], delta=0.001)
        self.assertAlmostEqual(after[1], point[1], delta=0.001)

    def test_drag_pans(self):
        self.page.click("#zoomin")
        s0, r0 = self.state(), self.rect()
        self.page.mouse.move(500, 350)
        self.page.mouse.down()
        self.page.mouse.move(380, 300, steps=6)
        self.page.mouse.up()
        s1, r1 = self.state(), self.rect()
        self.assertAlmostEqual(r1["left"] - r0["left"], -120, delta=0.6)
        self.assertAlmostEqual(r1["top"] - r0["top"], -50, delta=0.6)
        self.assertAlmostEqual(s1["centerX"] - s0["centerX"], 120 / (s0["naturalWidth"] * s0["scale"]), places=6)
        self.assertAlmostEqual(s1["zoom"], s0["zoom"])

    def test_buttons_and_keyboard(self):
        self.page.click("#zoomin")
        self.assertAlmostEqual(self.state()["zoom"], 2)
        self.page.click("#zoomin")
        self.assertAlmostEqual(self.state()["zoom"], 4)
        self.page.click("#zoomout")
        self.assertAlmostEqual(self.state()["zoom"], 2)
        self.page.mouse.move(500, 350)
        self.page.mouse.down()
        self.page.mouse.move(300, 350, steps=3)
        self.page.mouse.up()
        self.assertNotAlmostEqual(self.state()["centerX"], 0.5, places=3)
        self.page.click("#home")
        s = self.state()
        self.assertEqual((s["zoom"], s["centerX"], s["centerY"]), (1, 0.5, 0.5))
        self.page.keyboard.press("+")
        self.assertAlmostEqual(self.state()["zoom"], 2)
        self.page.keyboard.press("+")
        self.page.keyboard.press("-")
        self.assertAlmostEqual(self.state()["zoom"], 2)
        self.page.keyboard.press("ArrowRight")
        self.assertGreater(self.state()["centerX"], 0.5)
        self.page.keyboard.press("0")
        s = self.state()
        self.assertEqual((s["zoom"], s["centerX"], s["centerY"]), (1, 0.5, 0.5))
        r = self.rect()
        self.assertAlmostEqual(r["width"], VIEWPORT["width"], delta=0.6)
        # full screen: button and "f" toggle it
        self.assertFalse(self.state()["fullscreen"])
        self.page.click("#fullpage")
        self.wait_for("s.fullscreen === true", 3000)
        self.page.keyboard.press("f")
        self.wait_for("s.fullscreen === false", 3000)
        self.page.keyboard.press("f")
        self.wait_for("s.fullscreen === true", 3000)

    def test_zoom_limits(self):
        for _ in range(7):
            self.page.click("#zoomin")
        self.assertEqual(self.state()["zoom"], 20)
        self.page.mouse.move(400, 300)
        for _ in range(5):
            self.page.mouse.wheel(0, -400)
        self.page.keyboard.press("+")
        self.page.wait_for_timeout(100)
        s = self.state()
        self.assertEqual(s["zoom"], 20)
        self.assertAlmostEqual(self.rect()["width"], 20 * s["fitScale"] * s["naturalWidth"], delta=1)
        for _ in range(8):
            self.page.click("#zoomout")
        self.assertEqual(self.state()["zoom"], 0.25)
        for _ in range(5):
            self.page.mouse.wheel(0, 400)
        self.page.keyboard.press("-")
        self.page.wait_for_timeout(100)
        s = self.state()
        self.assertEqual(s["zoom"], 0.25)
        self.assertAlmostEqual(self.rect()["width"], 0.25 * s["fitScale"] * s["naturalWidth"], delta=0.6)

    def test_double_click_zooms_in_at_the_point(self):
        point = self.image_point_under(700, 200)
        self.page.mouse.dblclick(700, 200)
        self.wait_for("s.zoom === 2")
        after = self.image_point_under(700, 200)
        self.assertAlmostEqual(after[0], point[0], delta=0.001)
        self.assertAlmostEqual(after[1], point[1], delta=0.001)

    def test_touch_pinch_pan_and_double_tap(self):
        # synthetic touch pointers (Pointer Events, as a phone sends them)
        touch = """([type, id, x, y]) => document.getElementById('stage').dispatchEvent(
            new PointerEvent(type, {pointerId: id, pointerType: 'touch', isPrimary: id === 11,
                                    clientX: x, clientY: y, bubbles: true, cancelable: true,
                                    button: 0, buttons: type === 'pointerup' ? 0 : 1}))"""
        ev = lambda *a: self.page.evaluate(touch, list(a))
        mid_point = self.image_point_under(500, 350)
        ev("pointerdown", 11, 400, 350)
        ev("pointerdown", 12, 600, 350)
        for x in (650, 700, 750, 800):           # fingers 200 px -> 400 px apart
            ev("pointermove", 12, x, 350)
        ev("pointerup", 12, 800, 350)
        ev("pointerup", 11, 400, 350)
        s = self.state()
        self.assertAlmostEqual(s["zoom"], 2, places=6)
        # the image point under the first midpoint followed the fingers' midpoint
        after = self.image_point_under(600, 350)
        self.assertAlmostEqual(after[0], mid_point[0], delta=0.001)
        self.assertAlmostEqual(after[1], mid_point[1], delta=0.001)
        # one-finger pan
        r0 = self.rect()
        ev("pointerdown", 11, 500, 400)
        ev("pointermove", 11, 470, 380)
        ev("pointermove", 11, 440, 360)
        ev("pointerup", 11, 440, 360)
        r1 = self.rect()
        self.assertAlmostEqual(r1["left"] - r0["left"], -60, delta=0.6)
        self.assertAlmostEqual(r1["top"] - r0["top"], -40, delta=0.6)
        # double tap zooms in
        for _ in range(2):
            ev("pointerdown", 11, 300, 300)
            ev("pointerup", 11, 300, 300)
        self.assertAlmostEqual(self.state()["zoom"], 4, places=6)
        # pinch in is limited to 0.25x
        ev("pointerdown", 11, 100, 350)
        ev("pointerdown", 12, 900, 350)
        for x in (700, 500, 300, 150, 120, 105):
            ev("pointermove", 12, x, 350)
        ev("pointerup", 12, 105, 350)
        ev("pointerup", 11, 100, 350)
        self.assertEqual(self.state()["zoom"], 0.25)


if __name__ == "__main__":
    unittest.main()
