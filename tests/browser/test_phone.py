"""The viewer on phones and tablets (issue 13 items 3-7, issue 12): touch
targets and where the bar sits, legible states, retry now, metrics only when
data.json exists, red-only and boost, keep-awake, a sub-path behind a proxy.
Screenshots go to build/screenshots/."""

import os
import time
import unittest
import urllib.error
import urllib.request

from viewer_support import (PHONE, PHONE_LANDSCAPE, TABLET, SubPathProxy, TcpProxy, ViewerTestCase,
                            acquire_browser, composite, contrast_ratio, demo_frame, make_jpeg,
                            parse_colour, release_browser)

CONTROLS = ["#zoomin", "#zoomout", "#home", "#fullpage", "#download", "#red", "#boost", "#reticle", "#awake",
            "#compare", "#share"]
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def setUpModule():
    acquire_browser()


def tearDownModule():
    release_browser()


class LayoutTests(ViewerTestCase):
    context_options = PHONE

    def open_as(self, options):
        self.context = self.browser.new_context(**options)
        self.addCleanup(self.context.close)
        self.page = self.open_page()
        self.page.goto(self.url)
        self.wait_for(self.ready, 10000)

    def check_layout(self, name):
        vp = self.page.viewport_size
        boxes = {sel: self.box(sel) for sel in CONTROLS}
        shown = {sel: b for sel, b in boxes.items() if b and b["visible"]}
        self.assertGreaterEqual(len(shown), 10, "%s: controls shown: %s" % (name, sorted(shown)))
        for sel, b in shown.items():
            self.assertGreaterEqual(b["width"], 44, "%s: %s is %.0f px wide" % (name, sel, b["width"]))
            self.assertGreaterEqual(b["height"], 44, "%s: %s is %.0f px high" % (name, sel, b["height"]))
            self.assertGreaterEqual(b["left"], 0, name + sel)
            self.assertLessEqual(b["right"], vp["width"], name + sel)
            self.assertLessEqual(b["bottom"], vp["height"], name + sel)
        # room between them: no two targets closer than 8 px
        items = sorted(shown.items())
        for i, (a, ba) in enumerate(items):
            for b, bb in items[i + 1:]:
                dx = max(bb["left"] - ba["right"], ba["left"] - bb["right"])
                dy = max(bb["top"] - ba["bottom"], ba["top"] - bb["bottom"])
                self.assertGreaterEqual(max(dx, dy), 8, "%s: %s and %s are %.0f px apart" % (name, a, b, max(dx, dy)))
        # the bar sits along the bottom edge, where a thumb reaches
        bar = self.box("#bar")
        self.assertLessEqual(vp["height"] - bar["bottom"], 24, "%s: bar is not at the bottom: %s" % (name, bar))
        self.assertGreaterEqual(bar["top"], vp["height"] / 2, name)
        lowest = max(b["bottom"] for b in shown.values())
        self.assertGreater(lowest, vp["height"] - 80, name)
        info = self.box("#info")
        self.assertLessEqual(info["bottom"], bar["top"], "%s: overlay covers the bar" % name)
        print("\n%s %dx%d: bar %.0f..%.0f px from the top, %d targets of %.0fx%.0f px"
              % (name, vp["width"], vp["height"], bar["top"], bar["bottom"], len(shown),
                 min(b["width"] for b in shown.values()), min(b["height"] for b in shown.values())))

    def show_demo(self):
        loads = self.state()["imageLoads"]
        self.server.update_metrics(24, 720)
        self.server.publish_image(demo_frame(6))
        self.wait_for("s.imageLoads > %d && s.stack === 24 && !s.imageLoading" % loads, 5000)
        self.page.wait_for_timeout(200)

    def test_phone_portrait(self):
        self.assertTrue(self.page.evaluate("matchMedia('(pointer: coarse)').matches"))
        self.show_demo()
        self.check_layout("phone portrait")
        self.screenshot("phone-portrait-live.png")
        self.assert_clean()

    def test_phone_landscape(self):
        self.open_as(PHONE_LANDSCAPE)
        self.show_demo()
        self.check_layout("phone landscape")
        self.screenshot("phone-landscape-live.png")

    def test_tablet(self):
        self.open_as(TABLET)
        self.show_demo()
        self.check_layout("tablet")
        self.screenshot("tablet-live.png")


STYLE_JS = """(sel) => { const s = getComputedStyle(document.querySelector(sel));
  return {color: s.color, background: s.backgroundColor, opacity: s.opacity, size: s.fontSize,
          weight: s.fontWeight}; }"""


class StateTests(ViewerTestCase):
    context_options = PHONE

    def assert_legible(self, selector, state):
        info = parse_colour(self.page.evaluate(STYLE_JS, "#info")["background"])
        style = self.page.evaluate(STYLE_JS, selector)
        text = parse_colour(style["color"])
        for behind, name in ((BLACK, "the night sky"), (WHITE, "a white image")):
            bg = composite(info, behind)
            ratio = contrast_ratio(text[:3], bg)
            self.assertGreaterEqual(ratio, 4.5, "%s %s: %s on %s over %s: %.2f:1"
                                    % (state, selector, style["color"], info, name, ratio))
        # red night palette: red dominates, no white or blue-ish text
        self.assertGreater(text[0], 1.8 * max(text[1], text[2]), "%s %s is not red: %s" % (state, selector, style))
        self.assertGreaterEqual(float(style["size"][:-2]), 15, "%s %s is too small" % (state, selector))
        return contrast_ratio(text[:3], composite(info, BLACK))

    def test_states_are_legible_and_wake_the_overlay(self):
        ratios = {"live": self.assert_legible("#conn", "live")}
        self.assertEqual(self.text("#conn"), "live")
        self.assert_legible("#age", "live")
        self.assertRegex(self.text("#age"), r"^updated \d+ s ago$")
        self.assert_legible("#stack", "live")
        # dimmed after idling, but a change of state brings the overlay back
        self.page.evaluate("document.body.classList.add('idle')")
        self.page.wait_for_timeout(700)
        self.assertLess(float(self.page.evaluate(STYLE_JS, "#info")["opacity"]), 0.9)
        proxy = TcpProxy(self.port)
        self.addCleanup(proxy.close)
        self.page.goto("http://127.0.0.1:%d/" % proxy.port)
        self.wait_for(self.ready, 10000)
        self.page.evaluate("document.body.classList.add('idle')")
        proxy.drop_connections()
        self.wait_for("s.connection === 'reconnecting'", 3000)
        self.assertFalse(self.page.evaluate("document.body.classList.contains('idle')"))
        self.page.wait_for_timeout(700)
        self.assertEqual(self.page.evaluate(STYLE_JS, "#info")["opacity"], "1")
        ratios["reconnecting"] = self.assert_legible("#conn", "reconnecting")
        self.wait_for("s.connection === 'live'", 6000)
        self.page.evaluate("document.body.classList.add('idle')")
        self.server.stop(grace=1.0)
        self.wait_for("s.connection === 'stopped'", 3000)
        self.assertFalse(self.page.evaluate("document.body.classList.contains('idle')"))
        ratios["stopped"] = self.assert_legible("#conn", "stopped")
        self.assert_legible("#next", "stopped")
        self.assert_legible("#retry", "stopped")
        self.page.wait_for_timeout(700)
        self.screenshot("phone-portrait-stopped.png")
        print("\ncontrast over the night sky: %s" % ", ".join("%s %.1f:1" % kv for kv in ratios.items()))

    def test_stopped_page_retries_quickly_then_backs_off_and_offers_retry_now(self):
        started = time.monotonic()
        self.server.stop(grace=1.0)
        self.wait_for("s.connection === 'stopped'", 3000)
        self.assertTrue(self.page.is_visible("#retry"))
        retry = self.box("#retry")
        self.assertGreaterEqual(min(retry["width"], retry["height"]), 44)
        # quick at first: several attempts within the first 3 seconds
        self.wait_for("s.reconnectAttempt >= 3", 3500)
        self.assertLess(time.monotonic() - started, 4.0)
        self.assertRegex(self.text("#next"), r"^(next try in \d+ s|trying\u2026)$")
        # then backing off: wait until the next try is seconds away
        self.wait_for("s.retryIn !== null && s.retryIn > 2500", 12000)
        self.assertEqual(self.state()["connection"], "stopped")
        waiting = self.state()["retryIn"]
        self.server.start()
        tapped = time.monotonic()
        self.page.tap("#retry") if self.context_options.get("has_touch") else self.page.click("#retry")
        self.wait_for("s.connection === 'live'", 2000)
        took = (time.monotonic() - tapped) * 1000
        self.assertLess(took, waiting, "retry now did not retry now")
        self.assertFalse(self.page.is_visible("#retry"))
        print("\nretry now: live %.0f ms after the tap (the scheduled try was %.0f ms away)" % (took, waiting))


class MetricsTests(ViewerTestCase):
    goto = False
    allowed_missing = ("/history.json", "/data.json")

    def test_no_metrics_without_data_json_then_shown_when_it_appears(self):
        os.remove(os.path.join(self.folder, "data.json"))
        self.page.goto(self.url)
        self.wait_for("s.imageLoads >= 1 && s.connection === 'live'", 10000)
        self.page.wait_for_timeout(300)
        self.assertFalse(self.page.is_visible("#metrics"))
        self.assertNotIn("Stack", self.page.inner_text("#info"))
        self.assertNotIn("\u2013", self.page.inner_text("#info"))
        self.assertNotIn("Expo", self.page.inner_text("#info"))
        self.assertIsNone(self.state()["stack"])
        self.server.update_metrics(5, 150)
        self.server.publish_image(demo_frame(2))
        self.wait_for("s.stack === 5", 5000)
        self.assertTrue(self.page.is_visible("#metrics"))
        self.assertEqual(self.text("#stack"), "Stack: 5")
        self.assertEqual(self.text("#expo"), "Expo: 0:02:30")
        # and gone again when the file goes (the server still serves a vanished
        # file for 5 s: ALS on Windows removes it before renaming the new one)
        os.remove(os.path.join(self.folder, "data.json"))
        try:
            urllib.request.urlopen(self.url + "data.json", timeout=5).read()
        except urllib.error.HTTPError:
            pass                        # the 5 s run from the first request that misses it
        self.page.wait_for_timeout(5500)
        self.server.publish_image(demo_frame(3))
        self.wait_for("s.stack === null", 5000)
        self.assertFalse(self.page.is_visible("#metrics"))
        self.assertEqual(self.console_errors, [])


class LookTests(ViewerTestCase):
    context_options = PHONE

    def colours(self):
        return self.pixels(self.centre_clip())

    def test_red_only_and_boost_kept_across_updates_and_reloads(self):
        blue_sky = make_jpeg(800, 600, seed=1, noise=40, rgb=(20, 60, 110))
        loads = self.state()["imageLoads"]
        self.server.publish_image(blue_sky)
        self.wait_loaded(loads)
        plain = self.colours()
        self.assertGreater(plain["blue"], plain["red"] + 20, plain)
        self.page.tap("#red")
        self.wait_for("s.red === true")
        self.page.wait_for_timeout(100)
        red = self.colours()
        self.assertLess(max(red["green"], red["blue"]), 2, "red-only rendering leaks green/blue: %s" % red)
        self.assertGreater(red["red"], 30, red)
        self.assertEqual(self.page.get_attribute("#red", "aria-pressed"), "true")
        # boost: brighter faint parts
        self.page.tap("#boost")
        self.wait_for("s.boost === 1")
        self.page.wait_for_timeout(100)
        boosted = self.colours()
        self.assertGreater(boosted["red"], red["red"] * 1.2, (boosted, red))
        self.assertLess(max(boosted["green"], boosted["blue"]), 2)
        self.page.tap("#boost")
        self.wait_for("s.boost === 2")
        self.page.wait_for_timeout(100)
        boosted2 = self.colours()
        self.assertGreater(boosted2["red"], boosted["red"], (boosted2, boosted))
        # kept across an update
        loads = self.state()["imageLoads"]
        self.server.publish_image(make_jpeg(800, 600, seed=2, noise=40, rgb=(20, 60, 110)))
        self.wait_loaded(loads)
        self.page.wait_for_timeout(100)
        after = self.colours()
        self.assertLess(max(after["green"], after["blue"]), 2, after)
        self.assertAlmostEqual(after["red"], boosted2["red"], delta=boosted2["red"] * 0.25)
        # and across a reload (localStorage)
        self.page.reload()
        self.wait_for(self.ready, 10000)
        s = self.state()
        self.assertEqual((s["red"], s["boost"]), (True, 2))
        self.page.wait_for_timeout(100)
        reloaded = self.colours()
        self.assertLess(max(reloaded["green"], reloaded["blue"]), 2, reloaded)
        self.assertAlmostEqual(reloaded["red"], boosted2["red"], delta=boosted2["red"] * 0.25)
        self.assertEqual(self.page.get_attribute("#boost", "data-level"), "2")
        loads = self.state()["imageLoads"]            # a star field for the screenshot
        self.server.update_metrics(24, 720)
        self.server.publish_image(demo_frame(6))
        self.wait_loaded(loads)
        self.page.wait_for_timeout(200)
        self.screenshot("phone-portrait-red.png")
        # one tap each to turn them off again
        self.page.tap("#red")
        self.page.tap("#boost")
        self.page.tap("#boost")
        self.wait_for("s.red === false && s.boost === 0")
        self.page.wait_for_timeout(100)
        off = self.colours()
        self.assertGreater(min(off["green"], off["blue"]), 10, "colours are back: %s" % off)
        self.assert_clean()


AWAKE_VIDEO_JS = """() => { const v = document.getElementById('awakevid'); if (!v) return null;
  const r = v.getBoundingClientRect(), c = document.createElement('canvas');
  c.width = 16; c.height = 16; c.getContext('2d').drawImage(v, 0, 0, 16, 16);
  const d = c.getContext('2d').getImageData(0, 0, 16, 16).data;
  let max = 0; for (let i = 0; i < d.length; i += 4) max = Math.max(max, d[i], d[i + 1], d[i + 2]);
  const top = document.elementFromPoint(innerWidth / 2, innerHeight / 2);
  return {paused: v.paused, time: v.currentTime, muted: v.muted, loop: v.loop,
          inline: v.hasAttribute('playsinline'), width: r.width, height: r.height,
          audioBytes: v.webkitAudioDecodedByteCount, videoWidth: v.videoWidth, brightest: max,
          underImage: top !== v, src: v.currentSrc}; }"""


class KeepAwakeTests(ViewerTestCase):
    context_options = PHONE

    def test_off_by_default_then_wake_lock_after_a_tap_and_again_when_visible(self):
        s = self.state()
        self.assertEqual(s["awake"], {"wanted": False, "lock": False, "video": False})
        self.assertTrue(self.page.evaluate("isSecureContext && !!navigator.wakeLock"))  # 127.0.0.1
        self.page.tap("#awake")
        self.wait_for("s.awake.lock === true", 3000)
        self.assertEqual(self.page.get_attribute("#awake", "aria-pressed"), "true")
        self.assertTrue(self.page.evaluate("document.getElementById('awake').classList.contains('held')"))
        self.assertIsNone(self.page.evaluate(AWAKE_VIDEO_JS), "no video where the wake lock works")
        # the browser drops the lock when the page is hidden; back, it is taken again
        self.page.evaluate("""() => { Object.defineProperty(document, 'hidden', {configurable: true, get: () => true});
            document.dispatchEvent(new Event('visibilitychange')); }""")
        self.page.evaluate("navigator.wakeLock.request('screen').then(s => s.release())")
        self.page.evaluate("""() => new Promise(r => { const b = document.getElementById('awake');
            const s = window.alsViewer.state(); r(s); })""")
        self.page.evaluate("""() => { delete document.hidden;
            document.dispatchEvent(new Event('visibilitychange')); }""")
        self.wait_for("s.awake.lock === true", 3000)
        # a tap turns it off
        self.page.tap("#awake")
        self.wait_for("s.awake.lock === false && s.awake.wanted === false", 3000)


class KeepAwakeFallbackTests(ViewerTestCase):
    """Plain http on a phone has no navigator.wakeLock (not a secure context):
    127.0.0.1 is one, so the API is removed before the page runs."""
    context_options = PHONE
    init_script = "delete Navigator.prototype.wakeLock;"

    def test_video_fallback_plays_after_a_tap_and_after_a_reload(self):
        self.assertFalse(self.page.evaluate("'wakeLock' in navigator"))
        self.assertIsNone(self.page.evaluate(AWAKE_VIDEO_JS))
        self.page.tap("#awake")
        self.wait_for("s.awake.video === true", 5000)
        first = self.page.evaluate(AWAKE_VIDEO_JS)
        self.page.wait_for_timeout(1200)
        v = self.page.evaluate(AWAKE_VIDEO_JS)
        self.assertFalse(v["paused"])
        self.assertGreater(v["time"], first["time"] + 0.5, "the video does not play: %s" % v)
        self.assertTrue(v["muted"])            # Blink: muted is enough for a large visible video
        self.assertTrue(v["inline"])
        self.assertFalse(v["loop"])            # WebKit ignores looping videos; it loops by seeking
        self.assertTrue(v["src"].endswith("/keepawake.mp4"))
        vp = self.page.viewport_size
        # Blink's rule: > 75 % on screen and > 20 % of the viewport
        self.assertEqual((v["width"], v["height"]), (vp["width"], vp["height"]))
        self.assertTrue(v["underImage"], "the video must stay under the image")
        self.assertEqual(v["videoWidth"], 128)
        self.assertGreater(v["audioBytes"], 0, "the silent audio track (for WebKit) is not decoded")
        self.assertLessEqual(v["brightest"], 2, "the video frame must be black")
        self.assertTrue(self.page.evaluate("document.getElementById('awake').classList.contains('held')"))
        # it loops without stopping past its 10 s
        self.page.evaluate("document.getElementById('awakevid').currentTime = 7.5")
        self.page.wait_for_timeout(1500)
        v = self.page.evaluate(AWAKE_VIDEO_JS)
        self.assertFalse(v["paused"])
        self.assertLess(v["time"], 7.5)
        # remembered: after a reload it is on again
        self.page.reload()
        self.wait_for(self.ready, 10000)
        self.wait_for("s.awake.wanted === true && s.awake.video === true", 5000)
        self.assert_clean()


class SubPathTests(ViewerTestCase):
    def test_served_under_als_behind_a_path_stripping_proxy(self):
        proxy = SubPathProxy(self.port, "/als/")
        self.addCleanup(proxy.close)
        base = "http://127.0.0.1:%d/als/" % proxy.port
        self.requests.clear()
        self.sockets.clear()
        self.page.goto(base)
        self.wait_for(self.ready, 10000)
        self.assertEqual(self.sockets, ["ws://127.0.0.1:%d/als/ws" % proxy.port])
        loads = self.state()["imageLoads"]
        self.server.update_metrics(9, 270)
        self.server.publish_image(demo_frame(4))
        self.wait_for("s.imageLoads > %d && s.stack === 9 && !s.imageLoading" % loads, 5000)
        self.assertLess(self.picture_difference(demo_frame(4)), 3)
        self.assertEqual(self.text("#stack"), "Stack: 9")
        self.page.wait_for_timeout(300)
        self.assertEqual(proxy.outside, [], "requests outside /als/")
        page_requests = [u for u in self.requests if u.startswith("http")]
        self.assertTrue(page_requests and all(u.startswith(base) for u in page_requests), page_requests)
        self.assertIn("/als/web_image.jpg", proxy.paths)
        self.assertIn("/als/ws", proxy.paths)
        self.assert_clean()


if __name__ == "__main__":
    unittest.main()
