"""Shared pieces of the viewer's browser tests (Playwright + Debian's Chromium).

Not a test module: test_*.py files import it. Everything binds 127.0.0.1 on
free ports; no browser is downloaded (CHROMIUM is Debian's /usr/bin/chromium).
"""

import base64
import json
import logging
import re
import os
import shutil
import socket
import struct
import sys
import tempfile
import threading
import unittest
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ASSETS = REPO / "assets"
DEMO = ASSETS / "demo"
SCREENSHOTS = REPO / "build" / "screenshots"
CHROMIUM = os.environ.get("ALSSERVE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
VIEWPORT = {"width": 1000, "height": 700}
VIEWER_FILES = ("index.html", "viewer.js", "viewer.css")
BUDGET = 16 * 1024                      # index.html + viewer.js + viewer.css, each gzipped (level 9)
PHONE = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
         "device_scale_factor": 1}
PHONE_LANDSCAPE = dict(PHONE, viewport={"width": 844, "height": 390})
TABLET = {"viewport": {"width": 820, "height": 1180}, "is_mobile": True, "has_touch": True,
          "device_scale_factor": 1}
# history.json is optional (404 without stack history): not a failure
OPTIONAL = ("/history.json",)

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


JPEG_JS = """async ([w, h, seed, amp, quality, rgb, block]) => {
  const c = document.createElement('canvas');
  c.width = w; c.height = h;
  const g = c.getContext('2d');
  const rows = Math.max(1, Math.min(h, Math.floor(4e6 / w)));
  const data = g.createImageData(w, rows), d = data.data;
  let x = (seed * 2654435761 + 1) >>> 0;
  for (let y = 0; y < h; y += rows) {
    for (let i = 0; i < d.length; i += 4) {
      x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
      const n = (x & 255) * amp / 255;
      d[i] = rgb[0] + n; d[i + 1] = rgb[1] + n * 0.8; d[i + 2] = rgb[2] + n * 0.9; d[i + 3] = 255;
    }
    g.putImageData(data, 0, y);
  }
  if (block) {
    g.fillStyle = 'rgb(220,200,180)';
    g.fillRect((seed * 97) % Math.max(1, w - w / 4), h / 4, w / 5, h / 4);
  }
  const blob = await new Promise(r => c.toBlob(r, 'image/jpeg', quality));
  c.width = c.height = 0;
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let s = '';
  for (let i = 0; i < bytes.length; i += 32768) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 32768));
  return btoa(s);
}"""


def make_jpeg(width, height, seed=0, noise=0, rgb=(0, 0, 0), quality=0.85, block=True):
    """A JPEG drawn and encoded by Chromium (canvas.toBlob): a dark sky with
    deterministic noise of amplitude `noise` and, with block, a bright
    rectangle whose place depends on seed (so two images differ visibly).
    6000x4000 with noise 130 at quality 0.85 is about 11.3 MB, like ALS's output."""
    browser = acquire_browser()
    try:
        page = browser.new_page()
        try:
            b64 = page.evaluate(JPEG_JS, [width, height, seed, noise, quality, list(rgb), block])
        finally:
            page.close()
    finally:
        release_browser()
    return base64.b64decode(b64)


# ------------------------------------------------------------ process memory
def _children():
    kids = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        kids.setdefault(ppid, []).append(int(name))
    return kids


def renderer_rss():
    """Total VmRSS (bytes) of the Chromium renderer processes started by this
    test process (Playwright's driver -> Chromium -> zygote -> renderers)."""
    kids, todo, total = _children(), [os.getpid()], 0
    while todo:
        for pid in kids.get(todo.pop(), []):
            todo.append(pid)
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if b"--type=renderer" not in f.read():
                        continue
                with open("/proc/%d/status" % pid) as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1]) * 1024
            except OSError:
                pass
    return total


# ----------------------------------------------------------------- contrast
def relative_luminance(rgb):
    def lin(c):
        c /= 255.0
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    r, g, b = rgb[:3]
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)


def contrast_ratio(a, b):
    la, lb = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def parse_colour(css):
    """'rgb(r, g, b)' or 'rgba(r, g, b, a)' -> (r, g, b, a)."""
    inner = css[css.index("(") + 1:css.rindex(")")]
    parts = [float(p) for p in inner.replace("/", ",").replace(" ", ",").split(",") if p]
    return tuple(parts[:3]) + ((parts[3],) if len(parts) > 3 else (1.0,))


def composite(fg, bg):
    a = fg[3]
    return tuple(fg[i] * a + bg[i] * (1 - a) for i in range(3))


# ------------------------------------------------------------------ browser
_pw = None
_browser = None
_users = 0


def acquire_browser():
    global _pw, _browser, _users
    _users += 1
    if _browser is None:
        logging.getLogger("alsserve").setLevel(logging.ERROR)  # keep the test output readable
        from playwright.sync_api import sync_playwright  # noqa: import error fails the run
        if not os.path.exists(CHROMIUM):
            raise RuntimeError("Chromium not found at %s (apt-get install -y chromium)" % CHROMIUM)
        _pw = sync_playwright().start()
        _browser = _pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return _browser


def release_browser():
    global _pw, _browser, _users
    _users -= 1
    if _users <= 0:
        if _browser is not None:
            _browser.close()
        if _pw is not None:
            _pw.stop()
        _pw = _browser = None
        _users = 0


PIXELS_JS = """async (b64) => {
  const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const bmp = await createImageBitmap(new Blob([bin], {type: 'image/png'}));
  const c = document.createElement('canvas');
  c.width = bmp.width; c.height = bmp.height;
  const g = c.getContext('2d');
  g.drawImage(bmp, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0, bright = 0, max = 0, white = 0, r = 0, gr = 0, b = 0;
  const grid = new Array(64).fill(0), gw = c.width / 8, gh = c.height / 8;
  for (let i = 0, p = 0; i < d.length; i += 4, p++) {
    const l = 0.299 * d[i] + 0.587 * d[i + 1] + 0.114 * d[i + 2];
    sum += l; if (l > 60) bright++; if (l > max) max = l;
    r += d[i]; gr += d[i + 1]; b += d[i + 2];
    if (d[i] > 235 && d[i + 1] > 235 && d[i + 2] > 235) white++;
    const x = p % c.width, y = Math.floor(p / c.width);
    grid[Math.floor(y / gh) * 8 + Math.floor(x / gw)] += l;
  }
  const n = d.length / 4;
  return {width: c.width, height: c.height, mean: sum / n, bright: bright / n, max: max,
          white: white / n, red: r / n, green: gr / n, blue: b / n, grid: grid.map(v => v / (n / 64))};
}"""

# Proves which picture is on screen, and where: draws a reference JPEG (given
# as base64) the way the page's state says the image is placed (zoom, centre)
# into a canvas the size of the view, and compares it with the view canvas's
# pixels (both reduced to 256x192). An <img> view is compared whole.
SAME_PICTURE_JS = """async (b64) => {
  const bin = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const ref = await createImageBitmap(new Blob([bin], {type: 'image/jpeg'}));
  await new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const s = window.alsViewer.state(), view = document.getElementById('pic') || document.getElementById('view');
  if (!view || s.naturalWidth !== ref.width || s.naturalHeight !== ref.height) return 1e9;
  let expected = ref;
  if (view.tagName === 'CANVAS') {
    const c = document.createElement('canvas');
    c.width = view.width; c.height = view.height;
    const g = c.getContext('2d'), d = view.width / s.viewportWidth, k = s.scale * d;
    g.imageSmoothingQuality = 'medium';
    g.setTransform(k, 0, 0, k, (s.viewportWidth / 2 - s.centerX * s.naturalWidth * s.scale) * d,
                   (s.viewportHeight / 2 - s.centerY * s.naturalHeight * s.scale) * d);
    g.drawImage(ref, 0, 0);
    expected = c;
  }
  const grab = (src) => {
    const c = document.createElement('canvas');
    c.width = 256; c.height = 192;
    const g = c.getContext('2d');
    g.drawImage(src, 0, 0, 256, 192);
    return g.getImageData(0, 0, 256, 192).data;
  };
  const a = grab(view), b = grab(expected);
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff += Math.abs(a[i] - b[i]);
  return diff / a.length;
}"""

BOX_JS = """(sel) => { const e = document.querySelector(sel); if (!e) return null;
  const r = e.getBoundingClientRect(), s = getComputedStyle(e);
  return {left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width, height: r.height,
          visible: r.width > 0 && r.height > 0 && s.visibility !== 'hidden' && s.display !== 'none'}; }"""


IMAGE_PATH = re.compile(r"^/(?:[^?]*/)?(?:web_image\.jpg|history/\d+\.jpg)$")


class AccessLog(logging.Handler):
    """alsserve's request log, as the server saw it: (method, path, status,
    body bytes) per response. The browser's own view hides revalidations
    (a 304 answered from its cache reads as a 200 to the page)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.entries = []

    def emit(self, record):
        if record.msg == '%s "%s" %d %d' and record.args and record.args[1] != "-":
            method, target = record.args[1].split(" ", 1)
            self.entries.append((method, target, record.args[2], record.args[3]))

    def answers(self, path, since=0):
        """[(status, bytes)] of the requests for path (query ignored)."""
        return [(status, size) for method, target, status, size in self.entries[since:]
                if target.split("?")[0] == path]

    def images(self, since=0):
        """[(path, status, bytes)] of the image requests: the live image or a history frame."""
        return [(target.split("?")[0], status, size) for method, target, status, size in self.entries[since:]
                if IMAGE_PATH.match(target.split("?")[0])]


class ViewerTestCase(unittest.TestCase):
    """A fresh web folder, a real alsserve on 127.0.0.1 and a page open on it.

    Class attributes tune it: context (Playwright context options), init_script
    (run before the page's scripts), goto (False: the test opens the page),
    ready (the condition on alsViewer.state() that setUp waits for)."""

    context_options = {"viewport": VIEWPORT}
    server_options = {}
    init_script = None
    goto = True
    ready = "s.imageLoads >= 1 && s.connection === 'live' && s.stack !== null"
    allowed_missing = OPTIONAL

    def setUp(self):
        self.assertIsNone(ALSSERVE_ERROR, "alsserve.py could not be imported")
        self.browser = acquire_browser()
        self.addCleanup(release_browser)
        self.folder = tempfile.mkdtemp(prefix="alsserve-browser-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.access = AccessLog()
        server_log = logging.getLogger("alsserve")
        server_log.addHandler(self.access)
        server_log.setLevel(logging.INFO)
        server_log.propagate = False
        self.addCleanup(server_log.setLevel, logging.ERROR)
        self.addCleanup(server_log.removeHandler, self.access)
        for attempt in range(3):        # a port taken meanwhile by another program: another one
            self.port = free_port()
            self.server = alsserve.ImageServer(self.folder, port=self.port,
                                               displayed_address="ip:127.0.0.1", assets_dir=None,
                                               **self.server_options)
            try:
                self.url = self.server.start()
                break
            except alsserve.PortInUseError:
                if attempt == 2:
                    raise
        self.addCleanup(self.server.stop, 0.5)
        self.assertEqual(self.url, "http://127.0.0.1:%d/" % self.port)
        self.context = self.browser.new_context(accept_downloads=True, **self.context_options)
        self.addCleanup(self.context.close)
        if self.init_script:
            self.context.add_init_script(self.init_script)
        self.console_errors, self.failed_requests, self.requests, self.responses = [], [], [], []
        self.sockets = []
        self.page = self.open_page()
        if self.goto:
            self.page.goto(self.url)
            self.wait_for(self.ready, 10000)

    def open_page(self):
        page = self.context.new_page()
        page.on("console", self._on_console)
        page.on("pageerror", lambda e: self.console_errors.append("pageerror: %s" % e))
        page.on("requestfailed", lambda r: self.failed_requests.append("%s %s" % (r.url, r.failure)))
        page.on("response", self._on_response)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        return page

    def _optional(self, url):
        path = url.split("?")[0]
        return any(path.endswith(name) for name in self.allowed_missing)

    def _on_console(self, message):
        if message.type != "error":
            return
        if "Failed to load resource" in message.text and self._optional(message.location.get("url", "")):
            return
        self.console_errors.append(message.text)

    def _on_response(self, response):
        self.responses.append((response.url, response.status))
        if response.status >= 400 and not (response.status == 404 and self._optional(response.url)):
            self.failed_requests.append("%s -> HTTP %d" % (response.url, response.status))

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

    def wait_loaded(self, more_than, timeout=5000):
        self.wait_for("s.imageLoads > %d && !s.imageLoading" % more_than, timeout)

    def rect(self):
        """Where the image is on screen: #view's box (the pixels are in a
        screen-sized canvas; picture_difference checks they are drawn there)."""
        return self.page.evaluate(
            "(() => { const r = document.getElementById('view').getBoundingClientRect();"
            " return {left: r.left, top: r.top, width: r.width, height: r.height}; })()")

    def assert_drawn(self, jpeg, what="the image"):
        self.assertLess(self.picture_difference(jpeg), 3, "%s is not drawn where the state says" % what)

    def box(self, selector):
        return self.page.evaluate(BOX_JS, selector)

    def text(self, selector):
        return self.page.inner_text(selector).strip()

    def pixels(self, clip=None):
        png = self.page.screenshot(clip=clip) if clip else self.page.screenshot()
        return self.page.evaluate(PIXELS_JS, base64.b64encode(png).decode("ascii"))

    def picture_difference(self, jpeg):
        return self.page.evaluate(SAME_PICTURE_JS, base64.b64encode(jpeg).decode("ascii"))

    def centre_clip(self):
        vp = self.page.viewport_size
        return {"x": vp["width"] // 4, "y": vp["height"] * 2 // 7, "width": vp["width"] // 2,
                "height": vp["height"] * 3 // 7}

    def image_point_under(self, x, y):
        r = self.rect()
        return (x - r["left"]) / r["width"], (y - r["top"]) / r["height"]

    def assert_clean(self):
        self.assertEqual(self.console_errors, [], "console errors")
        self.assertEqual(self.failed_requests, [], "failed requests")

    def screenshot(self, name):
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = SCREENSHOTS / name
        self.page.screenshot(path=str(path))
        return path


# ------------------------------------------------------------------ proxies
def shut_down(*socks):
    """Both directions of each socket, already closed or not."""
    for s in socks:
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class TcpProxy:
    """A loopback TCP forwarder whose connections can be cut (a network loss)."""

    def __init__(self, target_port):
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
            self.start_pumps(client, upstream)

    def start_pumps(self, client, upstream):
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
        shut_down(src, dst)

    def drop_connections(self):
        with self.lock:
            conns, self.conns = self.conns, []
        shut_down(*conns)
        for s in conns:
            s.close()

    def close(self):
        self.closed = True
        self.listener.close()
        self.drop_connections()


class SubPathProxy(TcpProxy):
    """A reverse proxy publishing the server under PREFIX (e.g. /als/), the way
    nginx's `location /als/ { proxy_pass http://server/; }` does: the prefix is
    stripped from each request line; a request outside the prefix is recorded
    and sent on as a path the server does not have (so it answers 404).
    Browsers send GETs without bodies, so request heads follow each other on a
    connection; after a WebSocket upgrade the bytes pass through untouched."""

    def __init__(self, target_port, prefix="/als/"):
        self.prefix = prefix.encode("ascii")
        self.paths, self.outside = [], []
        super().__init__(target_port)

    def start_pumps(self, client, upstream):
        threading.Thread(target=self._requests, args=(client, upstream), daemon=True).start()
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _requests(self, src, dst):
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = src.recv(65536)
                    if not data:
                        raise OSError("closed")
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                line, rest = head.split(b"\r\n", 1)
                method, target, version = line.split(b" ", 2)
                self.paths.append(target.decode("latin-1"))
                if target.startswith(self.prefix):
                    target = b"/" + target[len(self.prefix):]
                else:
                    self.outside.append(target.decode("latin-1"))
                    target = b"/.outside-the-prefix" + target
                dst.sendall(b" ".join((method, target, version)) + b"\r\n" + rest + b"\r\n\r\n")
                if b"upgrade: websocket" in rest.lower():
                    if buffer:
                        dst.sendall(buffer)
                    self._pump(src, dst)
                    return
        except (OSError, ValueError):
            pass
        shut_down(src, dst)
