"""Browser tests of the alsserve viewer page (assets/) against a real alsserve.

Run from the repository root with a Python that has Playwright installed and
Debian's Chromium at /usr/bin/chromium (no browser download):

    python -m unittest discover -s tests/browser -p 'test_*.py' -v

Environment: ALSSERVE_CHROMIUM overrides the browser path.
One screenshot per run is saved to build/screenshots/viewer.png; the phone
layouts are in test_phone.py, weak Wi-Fi in test_weak_wifi.py, memory in
test_memory.py, the stack history in test_timeline.py.
"""

import gzip
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import unittest
from pathlib import Path

from viewer_support import (ASSETS, BUDGET, REPO, VIEWER_FILES, VIEWPORT, TcpProxy,
                            ViewerTestCase, acquire_browser, demo_frame, jpeg_size, png_header,
                            release_browser)

ALS_ICONS = ["%s_%s.png" % (n, s) for n in ("fullpage", "home", "zoomin", "zoomout")
             for s in ("grouphover", "hover", "pressed", "rest")]


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
        # as the server sends them: each file gzipped, the sizes summed (tests/test_assets.py too)
        total = sum(len(gzip.compress((ASSETS / n).read_bytes(), 9)) for n in VIEWER_FILES)
        print("\nviewer size: %d bytes gzipped of the %d-byte budget" % (total, BUDGET))
        self.assertLessEqual(total, BUDGET, "viewer is %d bytes gzipped" % total)
        external = re.compile(r"(?:https?:)?//[a-z0-9-]+(?:\.[a-z0-9-]+)+[/\"')]|@import", re.I)
        for name in VIEWER_FILES:
            text = (ASSETS / name).read_text("utf-8")
            self.assertIsNone(external.search(text), "%s refers to an external resource" % name)
        html = (ASSETS / "index.html").read_text("utf-8")
        head = html[:html.index("<link")]
        self.assertRegex(head, r"<style>[^<]*html[^{]*\{[^}]*background:#000",
                         "dark background must be set before any stylesheet loads")

    def test_keepawake_video_is_h264_and_silent_aac_in_mp4(self):
        data = (ASSETS / "keepawake.mp4").read_bytes()
        self.assertLess(len(data), 8 * 1024)

        def boxes(buf, start, end):
            out, i = [], start
            while i < end:
                size, kind = struct.unpack(">I4s", buf[i:i + 8])
                self.assertGreaterEqual(size, 8)
                out.append((kind, i + 8, i + size))
                i += size
            self.assertEqual(i, end, "boxes do not tile their parent")
            return out
        top = boxes(data, 0, len(data))
        self.assertEqual([k for k, _, _ in top], [b"ftyp", b"moov", b"mdat"])
        moov = next(b for b in top if b[0] == b"moov")
        traks = [b for b in boxes(data, moov[1], moov[2]) if b[0] == b"trak"]
        self.assertEqual(len(traks), 2)
        self.assertIn(b"avc1", data[traks[0][1]:traks[0][2]])
        self.assertIn(b"avcC", data[traks[0][1]:traks[0][2]])
        self.assertIn(b"mp4a", data[traks[1][1]:traks[1][2]])
        self.assertIn(b"esds", data[traks[1][1]:traks[1][2]])

    def test_keepawake_video_decodes_cleanly_with_ffmpeg(self):
        # An independent decoder: fails (not skips) without it; .ci/run installs it.
        self.assertTrue(shutil.which("ffmpeg"), "ffmpeg is missing: apt-get install ffmpeg")
        path = str(ASSETS / "keepawake.mp4")
        run = subprocess.run(["ffmpeg", "-v", "error", "-err_detect", "explode", "-i", path, "-f", "null", "-"],
                             capture_output=True, timeout=60)
        self.assertEqual((run.returncode, run.stderr), (0, b""))
        luma = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-an", "-f", "rawvideo", "-pix_fmt", "gray", "-"],
                              capture_output=True, timeout=60, check=True).stdout
        self.assertEqual(len(luma), 10 * 128 * 128)
        self.assertEqual(set(luma), {0}, "every frame is black")
        audio = subprocess.run(["ffmpeg", "-v", "error", "-i", path, "-vn", "-f", "s16le", "-"],
                               capture_output=True, timeout=60, check=True).stdout
        self.assertGreater(len(audio), 2 * 44100 * 10 - 1)
        self.assertEqual(set(audio), {0}, "the audio track is silent")

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
def setUpModule():
    acquire_browser()       # one Chromium for the module's tests


def tearDownModule():
    release_browser()


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
        # what the page asked for: history.json first (is there a frame URL for
        # the live image?), then web_image.jpg under one URL, revalidated by its
        # ETag (no cache-busting query: a cache in front can serve it), data.json
        self.assertIn(self.url + "history.json", self.requests)
        self.assertIn(self.url + "web_image.jpg", self.requests)
        self.assertLess(self.requests.index(self.url + "history.json"),
                        self.requests.index(self.url + "web_image.jpg"))
        self.assertFalse([u for u in self.requests if "?" in u], "no cache-busting queries")
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
        # download link: the bytes of the image shown (its Blob, no second download)
        dl = self.page.eval_on_selector("#download", "a => [a.getAttribute('download'), a.href]")
        self.assertEqual(dl[0], "web_image.jpg")
        self.assertRegex(dl[1], r"^blob:%s[0-9a-f-]{36}$" % re.escape(self.url))
        self.assertEqual(dl[1], s["imageUrl"])
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



class ImageElementFallbackTests(ViewerTestCase):
    """A browser without createImageBitmap: the image is an <img> placed by CSS,
    red-only and boost are CSS filters and a red layer. (The page's own
    createImageBitmap is hidden from the viewer only: the test's pixel checks use it.)"""
    init_script = ("window.__createImageBitmap = window.createImageBitmap; window.createImageBitmap = undefined;"
                   "document.addEventListener('DOMContentLoaded', function () {"
                   " window.createImageBitmap = window.__createImageBitmap; });")

    def images(self):
        return self.page.evaluate("[document.querySelectorAll('#stage canvas').length,"
                                  " document.querySelectorAll('#stage img').length, document.getElementById('view').tagName]")

    def test_image_element_shows_new_images_zoom_and_red_only(self):
        s = self.state()
        self.assertFalse(s["canvas"])
        self.assertEqual(self.images(), [0, 1, "IMG"])
        self.assert_drawn((Path(self.folder) / "web_image.jpg").read_bytes(), "the waiting image")
        fit = min(VIEWPORT["width"] / 1280, VIEWPORT["height"] / 720)
        self.assertAlmostEqual(self.rect()["width"], 1280 * fit, delta=0.6)
        self.server.publish_image(demo_frame(2))
        self.wait_loaded(s["imageLoads"])
        self.assertEqual(self.images(), [0, 1, "IMG"], "the replaced <img> is gone")
        self.assert_drawn(demo_frame(2), "the new image")
        self.page.click("#zoomin")
        self.assertAlmostEqual(self.rect()["width"], 1024 * 2 * self.state()["fitScale"], delta=1)
        plain = self.pixels(self.centre_clip())
        self.assertGreater(min(plain["green"], plain["blue"]), 10, plain)
        self.page.click("#red")
        self.page.click("#boost")
        self.wait_for("s.red === true && s.boost === 1")
        self.page.wait_for_timeout(100)
        red = self.pixels(self.centre_clip())
        self.assertLess(max(red["green"], red["blue"]), 2, "red-only leaks green/blue: %s" % red)
        self.assertGreater(red["red"], plain["red"] * 0.5, (red, plain))
        self.assert_clean()

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
        self.assertRegex(after["imageUrl"], r"^blob:")      # downloaded to a Blob, then shown
        # through its immutable history URL (a cache in front serves it once)
        self.assertRegex(after["imageSrc"], r"^history/\d+\.jpg$")
        new_pixels = self.pixels(self.centre_clip())
        change = sum(abs(a - b) for a, b in zip(old_pixels["grid"], new_pixels["grid"])) / 64
        self.assertGreater(change, 2, "screen did not change after the new image")
        self.assert_clean()
        # the screenshot of this run: the demo frame, fitted, with the overlay
        self.page.keyboard.press("0")
        self.wait_for("s.zoom === 1")
        self.page.mouse.move(10, 690)
        self.page.wait_for_timeout(100)
        self.screenshot("viewer.png")

    def test_rapid_notifications_coalesce(self):
        loads = self.state()["imageLoads"]
        flight = {"now": 0, "max": 0}
        image = re.compile(r"/(web_image|history/\d+)\.jpg$")

        def started(request):
            if image.search(request.url):
                flight["now"] += 1
                flight["max"] = max(flight["max"], flight["now"])

        def ended(request):
            if image.search(request.url):
                flight["now"] -= 1
        self.page.on("request", started)
        self.page.on("requestfinished", ended)
        self.page.on("requestfailed", ended)
        mark = len(self.access.entries)
        self.server.update_metrics(6, 180)     # ALS writes data.json, then the image
        for n in range(2, 7):
            self.server.publish_image(demo_frame(n))
        for _ in range(20):
            self.server.notify_browsers_about_new_image()
        self.wait_for("s.naturalWidth === 1024", 3000)
        # settle: nothing in flight and nothing dirty for a while
        self.page.wait_for_timeout(400)
        self.wait_for("!s.imageLoading && !s.imageDirty && s.stack === 6", 3000)
        answers = self.access.images(mark)
        done = self.state()["imageLoads"] - loads
        self.assertGreaterEqual(done, 1)
        self.assertEqual(flight["max"], 1, "not one image download at a time")
        # 5 images published: at most one download each; the 20 repeated
        # notifications announce the same frame again: nothing to fetch
        self.assertLessEqual(len(answers), 5, "25 notifications caused %d image requests: %s"
                             % (len(answers), answers))
        self.assertEqual(done, len([a for a in answers if a[1] == 200]), "every image downloaded is shown: %s" % answers)
        self.assertEqual(set(a[1] for a in answers) - {200, 304}, set(), "answers seen by the server")
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
        self.assert_drawn((Path(self.folder) / "web_image.jpg").read_bytes(), "the last image")
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
        page = self.open_page()
        self.page = page
        page.goto("http://127.0.0.1:%d/" % proxy.port)
        self.wait_for("s.imageLoads >= 1 && s.connection === 'live' && s.stack !== null", 10000)
        loads = self.state()["imageLoads"]
        self.server.update_metrics(3, 90)
        self.server.publish_image(demo_frame(2))
        self.wait_for("s.stack === 3 && s.naturalWidth === 1024", 3000)
        downloads = self.state()["downloads"]
        mark = len(self.access.entries)
        proxy.drop_connections()
        self.wait_for("s.connection === 'reconnecting'", 3000)
        self.assertEqual(self.text("#conn"), "reconnecting\u2026")
        self.wait_for("s.connection === 'live'", 6000)
        # back online, the page re-reads history.json (it may have missed an
        # image): the live frame is the one shown, so nothing is downloaded
        self.page.wait_for_timeout(500)
        self.assertIn((200, self.access.answers("/history.json", mark)[-1][1]),
                      self.access.answers("/history.json", mark))
        self.assertEqual(self.access.images(mark), [])
        self.assertEqual(self.state()["downloads"], downloads)
        self.assertEqual(self.state()["imageLoads"], loads + 1)
        self.assertLess(self.picture_difference(demo_frame(2)), 3)
        # and an image published while the page was cut off is shown once back
        proxy.drop_connections()
        self.wait_for("s.connection === 'reconnecting'", 3000)
        self.server.publish_image(demo_frame(5))
        self.wait_for("s.connection === 'live' && s.imageLoads === %d && !s.imageLoading" % (loads + 2), 6000)
        self.assertLess(self.picture_difference(demo_frame(5)), 3)


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
        self.assert_drawn((Path(self.folder) / "web_image.jpg").read_bytes(), "the panned image")
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
        self.assert_drawn((Path(self.folder) / "web_image.jpg").read_bytes(), "the image at 20x")
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
        self.assert_drawn((Path(self.folder) / "web_image.jpg").read_bytes(), "the image at 0.25x")

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
