"""Helpers for browser tests of the viewer over WebDriver, in any engine.

    server = LiveServer()                       # alsserve on 127.0.0.1:<free port>
    session.navigate(server.url)
    install_error_collector(session)
    state = wait_for(session, "s.connection === 'live' && s.imageLoads >= 1")
    server.publish(jpegwrite.solid_jpeg(640, 480, (200, 40, 40)))
    wait_for_pixels(session, [(500, 350, (200, 40, 40))])
    server.close()

Nothing here knows about a particular engine (engines.py does).
"""

import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ASSETS = REPO / "assets"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import alsserve  # noqa: E402
import pngread  # noqa: E402


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """A real alsserve.ImageServer, in this process, on 127.0.0.1:<free port>,
    over a fresh temp folder published from the current assets/ viewer; more
    ImageServer arguments (title, wifi) as keywords.
    ``stop()`` / ``start()`` again keep the port and the folder; ``close()``
    stops it and removes the folder. A port taken by another program between
    free_port() and the first start (the machine is shared) is traded for
    another, twice at most."""

    def __init__(self, assets_dir=ASSETS, start=True, quiet=True, **options):
        if quiet:
            logging.getLogger("alsserve").setLevel(logging.ERROR)
        self.folder = tempfile.mkdtemp(prefix="alsserve-engines-")
        for attempt in range(3):
            self.port = free_port()
            self.server = alsserve.ImageServer(self.folder, port=self.port, displayed_address="ip:127.0.0.1",
                                               assets_dir=str(assets_dir), **options)
            self.origin = "http://127.0.0.1:%d" % self.port
            self.url = self.origin + "/"
            if not start:
                return
            try:
                self.start()
                return
            except alsserve.PortInUseError:
                if attempt == 2:
                    raise

    def start(self):
        url = self.server.start()
        if url != self.url:
            raise AssertionError("alsserve says %s, expected %s" % (url, self.url))
        return url

    def stop(self, grace=2.0):
        self.server.stop(grace)

    def publish(self, jpeg):
        self.server.publish_image(jpeg)

    def metrics(self, stack_size, seconds):
        self.server.update_metrics(stack_size, seconds)

    def write_file(self, name, data):
        """Put an extra file (a test page) into the served folder."""
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data.encode("utf-8") if isinstance(data, str) else data)
        return self.url + name

    def close(self):
        try:
            self.server.stop(0.5)
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ------------------------------------------------------------ page scripts
# Injected after a page loaded: records uncaught errors, unhandled
# rejections and console.error calls from then on in window.__alsErrors.
ERROR_COLLECTOR_JS = r"""
if (!window.__alsErrors) {
  var errors = window.__alsErrors = [];
  window.addEventListener('error', function (e) {
    errors.push('error: ' + (e.message || (e.target && (e.target.src || e.target.href)) || e));
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    errors.push('unhandled rejection: ' + (e.reason && e.reason.message || e.reason));
  });
  var original = console.error;
  console.error = function () {
    errors.push('console.error: ' + Array.prototype.map.call(arguments, String).join(' '));
    return original.apply(console, arguments);
  };
}
return true;
"""


def install_error_collector(session):
    session.execute(ERROR_COLLECTOR_JS)


def collected_errors(session):
    """What the collector recorded since install_error_collector(); raises if it
    is not installed (a navigation removed it)."""
    errors = session.execute("return window.__alsErrors || null")
    if errors is None:
        raise AssertionError("the error collector is not installed in this page")
    return errors


# Polls a JS condition inside the page (s = alsViewer.state() or null), so a
# wait costs one WebDriver call, not one per poll.
_WAIT_JS = r"""
var done = arguments[arguments.length - 1], deadline = Date.now() + arguments[0];
function condition(s) { return (%s); }
(function poll() {
  var s = null, value = false, error = null;
  try {
    s = window.alsViewer ? window.alsViewer.state() : null;
    value = condition(s);
  } catch (e) { error = String(e); }
  if (value) { done({ok: true, value: value, state: s}); return; }
  if (Date.now() >= deadline) { done({ok: false, state: s, error: error}); return; }
  setTimeout(poll, 20);
})();
"""


def wait_for(session, condition, timeout=5.0):
    """Wait until the JS expression ``condition`` is truthy in the page; ``s`` is
    window.alsViewer.state() (null before the viewer runs). Returns the state;
    on timeout an AssertionError naming the condition and the last state."""
    answer = session.execute_async(_WAIT_JS % condition, int(timeout * 1000), timeout=timeout + 15)
    if not answer or not answer.get("ok"):
        answer = answer or {}
        raise AssertionError("timed out after %.1f s waiting for %s; state=%s%s"
                             % (timeout, condition, json.dumps(answer.get("state")),
                                "; error: %s" % answer["error"] if answer.get("error") else ""))
    return answer["state"]


def viewer_state(session):
    return session.execute("return window.alsViewer ? window.alsViewer.state() : null")


def element_rect(session, css):
    """getBoundingClientRect() of an element, in CSS px of the viewport."""
    return session.execute(
        "var r = document.querySelector(arguments[0]).getBoundingClientRect();"
        "return {left: r.left, top: r.top, width: r.width, height: r.height};", css)


# ---------------------------------------------------------------- pixels
def screenshot(session):
    """A WebDriver screenshot, decoded (pngread.Image, device pixels)."""
    return pngread.decode(session.screenshot())


def colour_distance(a, b):
    return max(abs(x - y) for x, y in zip(a[:3], b[:3]))


def sample(image, x, y, radius=6, scale=1.0):
    """Mean colour of a (2 radius)^2 square around CSS pixel (x, y); ``scale`` is
    the devicePixelRatio (screenshots are in device pixels)."""
    cx, cy, r = x * scale, y * scale, max(1, radius * scale)
    return image.region_stats(cx - r, cy - r, 2 * r, 2 * r)["mean"]


def bright_pixels(image, x, y, w, h, threshold=80, scale=1.0):
    """(count, mean (r, g, b)) of the pixels of a CSS px rectangle whose
    brightest channel exceeds ``threshold``: what is drawn on a black picture."""
    x0, y0 = max(0, int(x * scale)), max(0, int(y * scale))
    x1, y1 = min(image.width, int((x + w) * scale)), min(image.height, int((y + h) * scale))
    count, sums, data, stride = 0, [0, 0, 0], image.rgba, 4 * image.width
    for row in range(y0, y1):
        line = data[row * stride + 4 * x0:row * stride + 4 * x1]
        for i in range(0, len(line), 4):
            r, g, b = line[i], line[i + 1], line[i + 2]
            if r > threshold or g > threshold or b > threshold:
                count += 1
                sums[0] += r
                sums[1] += g
                sums[2] += b
    return count, tuple(v / count for v in sums) if count else None


def wait_for_pixels(session, expected, timeout=5.0, tolerance=16, scale=1.0, radius=6):
    """Take screenshots until each (x, y, (r, g, b)) of ``expected`` (CSS px)
    shows that colour within ``tolerance``; returns the last image. The page
    state may say "loaded" a frame before the screen shows it, hence the wait."""
    deadline = time.monotonic() + timeout
    while True:
        image = screenshot(session)
        seen = [(x, y, want, sample(image, x, y, radius, scale)) for x, y, want in expected]
        wrong = [(x, y, want, tuple(round(v) for v in got)) for x, y, want, got in seen
                 if colour_distance(got, want) > tolerance]
        if not wrong:
            return image
        if time.monotonic() >= deadline:
            raise AssertionError("after %.1f s the screen still shows %s"
                                 % (timeout, "; ".join("(%d, %d): %s instead of %s" % (x, y, got, want)
                                                       for x, y, want, got in wrong)))
        time.sleep(0.1)


def fitted_rect(image_size, viewport):
    """Where the viewer shows an image at zoom 1: fitted and centred."""
    (iw, ih), (vw, vh) = image_size, viewport
    s = min(vw / iw, vh / ih)
    w, h = iw * s, ih * s
    return {"left": (vw - w) / 2, "top": (vh - h) / 2, "width": w, "height": h}
