"""The phone viewer's features in every browser engine (issues 13 and 14):
legible states, retry now, thumb-sized targets on the bottom edge, keep
awake, red-only and boost, a sub-path, the timeline, hidden metrics.

One test class per engine (Chromium, Firefox ESR, WebKitGTK, WPE), each from
ViewerEngineTests, over our WebDriver client (engines.py): one phone-sized
browser per class, a fresh alsserve per test. What is checked is what a user
sees: computed colours, positions and sizes, screenshot pixels.

    python -m unittest discover -s tests/browser -p 'test_engines_viewer.py' -v
"""

import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engines  # noqa: E402
import harness  # noqa: E402
import jpegwrite  # noqa: E402
from harness import wait_for  # noqa: E402
from viewer_support import SubPathProxy, composite, contrast_ratio, parse_colour  # noqa: E402

engines.selection()     # a bad ALSSERVE_ENGINES fails the import, loudly
PORTRAIT, LANDSCAPE, TABLET = (390, 844), (844, 390), (820, 1180)
BLACK, WHITE = (0, 0, 0), (255, 255, 255)
READY = "s && s.connection === 'live' && s.imageLoads >= 1 && !s.imageLoading"
COLOURS = [(220, 40, 40), (40, 200, 70), (50, 70, 230), (235, 215, 40), (20, 180, 180)]
DUSK = (20, 60, 110)            # a faint blue sky: what red-only and boost act on
CONTROLS = ("zoomin", "zoomout", "home", "download", "red", "boost", "reticle", "awake", "compare", "share")
TIMES = {}

STYLE_JS = """
var e = document.querySelector(arguments[0]), c = getComputedStyle(e);
return {color: c.color, background: c.backgroundColor, size: c.fontSize, opacity: c.opacity,
        shown: !!(e.offsetWidth || e.offsetHeight) && c.visibility !== 'hidden'};
"""

RECTS_JS = """
return arguments[0].map(function (id) {
  var e = document.getElementById(id), r = e.getBoundingClientRect(), c = getComputedStyle(e);
  return {id: id, left: r.left, top: r.top, right: r.right, bottom: r.bottom, width: r.width,
          height: r.height, shown: c.display !== 'none' && r.width > 0};
});
"""

VIDEO_JS = """
var v = document.getElementById('awakevid');
return v ? {paused: v.paused, time: v.currentTime, error: v.error && v.error.code,
            ready: v.readyState} : null;
"""


class ViewerEngineTests(engines.BrowserPerClass):
    """The viewer's phone features in one engine; a subclass sets ``engine``."""

    viewport = PORTRAIT
    times = TIMES

    def setUp(self):
        self.server = harness.LiveServer()
        self.addCleanup(self.server.close)
        if self.browser.resizable:
            self.browser.set_viewport(*PORTRAIT)
        # A page of the server's origin without the viewer: what an earlier
        # test left in localStorage (red mode, keep-awake) goes first.
        self.session.navigate(self.server.write_file("blank.html", "<!doctype html><title>blank</title>"))
        self.session.execute("localStorage.clear()")

    # -- helpers
    def open(self, url=None, session=None):
        session = session or self.session
        session.navigate(url or self.server.url)
        harness.install_error_collector(session)
        return wait_for(session, READY, 10)

    def reload(self):
        self.session.refresh()
        harness.install_error_collector(self.session)
        return wait_for(self.session, READY, 10)

    def click(self, css, session=None):
        (session or self.session).find(css).click()

    def style(self, css):
        return self.session.execute(STYLE_JS, css)

    def publish(self, jpeg, stack=None, seconds=0):
        loads = harness.viewer_state(self.session)["imageLoads"]
        if stack is not None:
            self.server.metrics(stack, seconds)
        self.server.publish(jpeg)
        return wait_for(self.session, "s.imageLoads > %d && !s.imageLoading && !s.imageDirty" % loads, 6)

    def centre(self, viewport=PORTRAIT):
        return viewport[0] / 2, viewport[1] / 2

    def centre_colour(self, viewport=PORTRAIT):
        image = harness.screenshot(self.session)
        return harness.sample(image, *self.centre(viewport), radius=20, scale=self.browser.device_pixel_ratio)

    def assert_clean(self):
        self.assertEqual(harness.collected_errors(self.session), [], "errors in the page (%s)" % self.engine)

    def assert_legible(self, css, state):
        info = parse_colour(self.style("#info")["background"])
        style = self.style(css)
        self.assertTrue(style["shown"], "%s is not shown when %s" % (css, state))
        text = parse_colour(style["color"])
        for behind, name in ((BLACK, "the night sky"), (WHITE, "a white image")):
            ratio = contrast_ratio(text[:3], composite(info, behind))
            self.assertGreaterEqual(ratio, 4.5, "%s %s: %s on %s over %s: %.2f:1 (%s)"
                                    % (state, css, style["color"], style["background"], name, ratio, self.engine))
        self.assertGreater(text[0], 1.8 * max(text[1], text[2]), "%s %s is not red: %s" % (state, css, style))
        self.assertGreaterEqual(float(style["size"][:-2]), 15)

    # -- 1. state -------------------------------------------------------------
    def test_states_are_legible_wake_the_overlay_and_retry_now_works(self):
        self.open()
        self.assertEqual(self.session.find("#conn").text().strip(), "live")
        self.assert_legible("#conn", "live")
        self.session.execute("document.body.classList.add('idle')")
        time.sleep(0.8)
        self.assertLess(float(self.style("#info")["opacity"]), 0.9, "the overlay does not dim when idle")
        self.server.stop(grace=1.0)
        wait_for(self.session, "s.connection === 'stopped'", 4)
        self.assertFalse(self.session.execute("return document.body.classList.contains('idle')"),
                         "a change of state must bring the overlay back")
        time.sleep(0.8)
        self.assertEqual(float(self.style("#info")["opacity"]), 1.0)
        self.assertEqual(self.session.find("#conn").text().strip(), "Image server stopped")
        self.assert_legible("#conn", "stopped")
        self.assert_legible("#retry", "stopped")
        retry = harness.element_rect(self.session, "#retry")
        self.assertGreaterEqual(min(retry["width"], retry["height"]), 44)
        # the astronomer restarts; a tap on Retry now is live again at once
        wait_for(self.session, "s.retryIn !== null && s.retryIn > 1500", 10)
        waiting = harness.viewer_state(self.session)["retryIn"]
        self.server.start()
        tapped = time.monotonic()
        self.click("#retry")
        wait_for(self.session, "s.connection === 'live'", 3)
        self.assertLess((time.monotonic() - tapped) * 1000, waiting, "Retry now did not retry now")
        self.assertFalse(self.session.find("#retry").displayed())
        self.assert_clean()

    # -- 2. touch targets on the bottom edge ------------------------------------
    def check_layout(self, browser, viewport):
        session = browser.session
        self.open(session=session)
        state = harness.viewer_state(session)
        self.assertEqual((state["viewportWidth"], state["viewportHeight"]), viewport)
        rects = [r for r in session.execute(RECTS_JS, list(CONTROLS)) if r["shown"]]
        self.assertEqual(len(rects), len(CONTROLS), rects)
        for r in rects:
            self.assertGreaterEqual(min(r["width"], r["height"]), 44, "%s at %s (%s)" % (r["id"], viewport, self.engine))
            self.assertGreaterEqual(r["left"], 0)
            self.assertLessEqual(r["right"], viewport[0] + 0.5)
            self.assertLessEqual(r["bottom"], viewport[1] + 0.5)
            self.assertGreater(r["top"], viewport[1] * 0.6, "%s is not where a thumb reaches: %s" % (r["id"], r))
        bar = harness.element_rect(session, "#bar")
        self.assertGreater(bar["top"] + bar["height"], viewport[1] - 40, "the bar is not on the bottom edge")
        # room between any two targets
        for i, a in enumerate(rects):
            for b in rects[i + 1:]:
                gap = max(b["left"] - a["right"], a["left"] - b["right"], b["top"] - a["bottom"], a["top"] - b["bottom"])
                self.assertGreaterEqual(gap, 6, "%s and %s are %.1f px apart at %s" % (a["id"], b["id"], gap, viewport))

    def test_targets_are_thumb_sized_on_the_bottom_edge_in_each_orientation(self):
        self.check_layout(self.browser, PORTRAIT)
        for viewport in (LANDSCAPE, TABLET):
            with self.subTest(viewport=viewport):
                if self.browser.resizable:
                    self.browser.set_viewport(*viewport)
                    self.check_layout(self.browser, viewport)
                else:                       # WPE: one size per browser
                    with engines.launch(self.engine, viewport) as other:
                        self.check_layout(other, viewport)

    # -- 3. keep awake ----------------------------------------------------------
    def test_keep_awake_after_a_tap_by_wake_lock_or_by_the_video(self):
        self.open()
        self.assertEqual(harness.viewer_state(self.session)["awake"],
                         {"wanted": False, "lock": False, "video": False}, "keep-awake must be off by default")
        has_lock = self.session.execute("return !!(window.isSecureContext && navigator.wakeLock)")
        if has_lock:
            self.click("#awake")
            state = wait_for(self.session, "s.awake.wanted && (s.awake.lock || s.awake.video)", 5)
            self.assertTrue(state["awake"]["lock"], "%s has the Wake Lock API: it must be used" % self.engine)
            self.click("#awake")
            wait_for(self.session, "!s.awake.wanted && !s.awake.lock", 3)
        # Plain http on a phone: no wake lock, the video keeps the screen on.
        self.session.execute("try { delete Navigator.prototype.wakeLock; } catch (e) {}"
                             "try { Object.defineProperty(navigator, 'wakeLock', {value: undefined}); } catch (e) {}")
        self.assertFalse(self.session.execute("return !!navigator.wakeLock"))
        self.click("#awake")
        wait_for(self.session, "s.awake.wanted === true && !!document.getElementById('awakevid')", 5)
        first = self.session.execute(VIDEO_JS)
        time.sleep(1.5)
        video = self.session.execute(VIDEO_JS)
        self.assertIsNone(video["error"], "%s cannot play keepawake.mp4: %s" % (self.engine, video))
        self.assertFalse(video["paused"], "the keep-awake video does not play in %s: %s" % (self.engine, video))
        self.assertGreater(video["time"], first["time"] + 0.5, "the video does not advance: %s" % video)
        self.assertTrue(harness.viewer_state(self.session)["awake"]["video"])
        self.assertEqual(self.session.find("#awake").attribute("aria-pressed"), "true")
        self.assert_clean()

    # -- 4. night vision ---------------------------------------------------------
    def test_red_only_and_boost_kept_across_a_new_image_and_a_reload(self):
        self.open()
        self.publish(jpegwrite.solid_jpeg(800, 600, DUSK))
        plain = self.centre_colour()
        self.assertGreater(plain[2], plain[0] + 40, plain)
        self.click("#red")
        wait_for(self.session, "s.red === true")
        time.sleep(0.3)
        red = self.centre_colour()
        self.assertLess(max(red[1], red[2]), 4, "red-only leaks green/blue in %s: %s" % (self.engine, red))
        self.assertGreater(red[0], 25, red)
        self.click("#boost")
        wait_for(self.session, "s.boost === 1")
        time.sleep(0.3)
        boosted = self.centre_colour()
        self.assertGreater(boosted[0], red[0] * 1.2, (boosted, red))
        self.assertLess(max(boosted[1], boosted[2]), 4, boosted)
        self.publish(jpegwrite.solid_jpeg(640, 480, (25, 55, 120)))
        time.sleep(0.3)
        after = self.centre_colour()
        self.assertLess(max(after[1], after[2]), 4, "red-only lost with a new image: %s" % (after,))
        self.assertGreater(after[0], red[0] * 1.2, "boost lost with a new image: %s" % (after,))
        state = self.reload()
        self.assertEqual((state["red"], state["boost"]), (True, 1))
        time.sleep(0.3)
        again = self.centre_colour()
        self.assertLess(max(again[1], again[2]), 4, "red-only lost with a reload: %s" % (again,))
        self.assert_clean()

    # -- 5. under a sub-path ------------------------------------------------------
    def test_served_under_a_sub_path(self):
        proxy = SubPathProxy(self.server.port, "/als/")
        self.addCleanup(proxy.close)
        self.open("http://127.0.0.1:%d/als/" % proxy.port)
        colour = COLOURS[1]
        self.server.metrics(9, 270)
        self.publish(jpegwrite.solid_jpeg(800, 600, colour))
        wait_for(self.session, "s.stack === 9")
        harness.wait_for_pixels(self.session, [self.centre() + (colour,)], scale=self.browser.device_pixel_ratio,
                                radius=20)
        self.assertEqual(proxy.outside, [], "requests outside /als/")
        self.assertIn("/als/ws", proxy.paths)
        self.assert_clean()

    # -- 6. the timeline ---------------------------------------------------------
    def scrub_to(self, index):
        self.session.execute("var s = document.getElementById('scrub'); s.value = arguments[0];"
                             "s.dispatchEvent(new Event('input', {bubbles: true}));"
                             "s.dispatchEvent(new Event('change', {bubbles: true}));", index)

    def test_timeline_scrub_newer_frames_back_to_live_play_and_zoom_kept(self):
        self.open()
        scale = self.browser.device_pixel_ratio
        for i, colour in enumerate(COLOURS[:4]):
            self.publish(jpegwrite.solid_jpeg(800, 600, colour), stack=i + 1, seconds=30 * (i + 1))
        wait_for(self.session, "s.entries === 4 && !document.getElementById('timeline').hidden", 5)
        self.click("#zoomin")
        wait_for(self.session, "s.zoom === 2")
        self.scrub_to(0)                                        # back to frame 1
        wait_for(self.session, "s.viewIndex === 0 && !s.imageLoading", 6)
        harness.wait_for_pixels(self.session, [self.centre() + (COLOURS[0],)], scale=scale, radius=20)
        self.assertIn("Stack 1", self.session.find("#tlabel").text().replace(":", ""))
        self.assertEqual(harness.viewer_state(self.session)["zoom"], 2, "zoom lost while scrubbing")
        # a new image while in the past: counted, not forced on the visitor
        self.server.metrics(5, 150)
        self.server.publish(jpegwrite.solid_jpeg(800, 600, COLOURS[4]))
        wait_for(self.session, "s.newer === 1 && s.entries === 5", 6)
        self.assertEqual(self.session.find("#newer").text().strip(), "1 newer image")
        time.sleep(0.3)
        harness.wait_for_pixels(self.session, [self.centre() + (COLOURS[0],)], scale=scale, radius=20)
        # one tap back to live: the newest
        self.click("#golive")
        wait_for(self.session, "s.viewIndex === -1 && !s.imageLoading", 6)
        harness.wait_for_pixels(self.session, [self.centre() + (COLOURS[4],)], scale=scale, radius=20)
        self.assertEqual(harness.viewer_state(self.session)["zoom"], 2)
        # play: the frames go by one after another
        self.click("#play")
        seen = set()
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline and len(seen) < 3:
            state = harness.viewer_state(self.session)
            if state["playing"] and state["viewIndex"] >= 0:
                seen.add(state["viewIndex"])
            time.sleep(0.05)
        self.assertGreaterEqual(len(seen), 3, "the time-lapse did not advance: %s" % seen)
        self.click("#play")
        wait_for(self.session, "!s.playing", 3)
        self.assertEqual(harness.viewer_state(self.session)["zoom"], 2, "zoom lost while playing")
        self.assert_clean()

    # -- 7. metrics --------------------------------------------------------------
    def test_no_metrics_without_data_json(self):
        os.remove(os.path.join(self.server.folder, "data.json"))
        self.open()
        time.sleep(0.3)
        self.assertFalse(self.session.find("#metrics").displayed())
        self.assertNotIn("Stack", self.session.find("#info").text())
        self.server.metrics(5, 150)
        self.publish(jpegwrite.solid_jpeg(800, 600, COLOURS[2]))
        wait_for(self.session, "s.stack === 5", 5)
        self.assertTrue(self.session.find("#metrics").displayed())
        self.assertEqual(self.session.find("#stack").text().strip(), "Stack: 5")
        self.assert_clean()


engines.test_case_per_engine(ViewerEngineTests, globals())


if __name__ == "__main__":
    unittest.main()
