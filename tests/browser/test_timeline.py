"""The stack history in the viewer (issue 14): a timeline to go back through
the session's frames, a looping time-lapse, "N newer images" while in the
past, one tap back to live, zoom kept; frames one at a time with flat memory.
Against the real server (history.json, history/<id>.jpg, frame messages)."""

import json
import re
import time
import unittest
import urllib.request

from viewer_support import (PHONE, ViewerTestCase, acquire_browser, demo_frame,
                            release_browser)

FRAME = re.compile(r"/history/(\d+)\.jpg$")


def setUpModule():
    acquire_browser()


def tearDownModule():
    release_browser()


class TimelineTests(ViewerTestCase):
    context_options = PHONE

    def publish(self, n, stack):
        loads = self.state()["imageLoads"]
        self.server.update_metrics(stack, stack * 30)
        self.server.publish_image(demo_frame(n))
        self.wait_for("s.imageLoads > %d && !s.imageLoading" % loads, 5000)

    def history(self):
        with urllib.request.urlopen(self.url + "history.json", timeout=5) as r:
            return json.load(r)

    def metrics(self):
        """What the overlay's top line says."""
        return self.text("#stack"), self.text("#expo")

    def timeline_visible(self):
        return self.page.is_visible("#timeline")

    def scrub_to(self, index):
        """Drag the scrubber's thumb like a finger would (mouse events on the range)."""
        box = self.box("#scrub")
        count = self.state()["entries"]
        thumb = 15      # half the thumb: the range maps value to [left + 15, right - 15]
        x0 = box["left"] + thumb + (box["width"] - 2 * thumb) * float(self.page.eval_on_selector("#scrub", "e => +e.value")) / (count - 1)
        x1 = box["left"] + thumb + (box["width"] - 2 * thumb) * index / (count - 1)
        y = box["top"] + box["height"] / 2
        self.page.mouse.move(x0, y)
        self.page.mouse.down()
        self.page.mouse.move(x1, y, steps=8)
        self.page.mouse.up()

    def test_scrub_back_newer_frames_back_to_live_zoom_kept(self):
        self.assertFalse(self.timeline_visible(), "no timeline without frames")
        self.publish(1, 1)
        self.assertEqual(self.state()["entries"], 1)
        self.assertFalse(self.timeline_visible(), "no timeline with a single frame")
        for n in range(2, 5):
            self.publish(n, n)
        s = self.state()
        self.assertEqual(s["entries"], 4)
        self.assertTrue(self.timeline_visible())
        frames = self.history()["entries"]
        self.assertEqual(s["imageSrc"], frames[-1]["url"])
        self.assertEqual(s["liveId"], frames[-1]["id"])
        # the timeline is thumb-sized and at the bottom, above the bar
        for sel in ("#play", "#golive", "#scrub"):
            b = self.box(sel)
            self.assertGreaterEqual(b["height"], 44, sel)
            self.assertGreaterEqual(b["width"], 44, sel)
        self.assertLessEqual(self.box("#timeline")["bottom"], self.box("#bar")["top"])
        self.assertGreater(self.box("#timeline")["top"], self.page.viewport_size["height"] / 2)
        self.assertEqual(self.page.get_attribute("#golive", "aria-pressed"), "true")
        self.assertRegex(self.text("#tlabel"), r"^\d\d:\d\d:\d\d \u00b7 Stack 4 \u00b7 0:02:00$")
        self.assertEqual(self.metrics(), ("Stack: 4", "Expo: 0:02:00"))
        # a view that is not home: zoomed and panned
        self.page.tap("#zoomin")
        self.page.evaluate("""() => { const st = document.getElementById('stage');
            const ev = (t, x) => st.dispatchEvent(new PointerEvent(t, {pointerId: 5, pointerType: 'touch',
                isPrimary: true, clientX: x, clientY: 400, bubbles: true, cancelable: true, button: 0, buttons: 1}));
            ev('pointerdown', 200); ev('pointermove', 150); ev('pointermove', 120); ev('pointerup', 120); }""")
        view = self.state()
        self.assertEqual(view["zoom"], 2)
        self.assertNotAlmostEqual(view["centerX"], 0.5, places=3)
        mark, requests = len(self.access.entries), len(self.requests)
        # scrub back to frame 1: its pixels are on screen
        self.scrub_to(0)
        self.wait_for("s.viewIndex === 0 && s.imageId === %d && !s.imageLoading" % frames[0]["id"], 5000)
        self.page.wait_for_timeout(150)
        self.assertLess(self.picture_difference(demo_frame(1)), 3, "frame 1 is not what is shown")
        self.assertRegex(self.text("#tlabel"), r"^\d\d:\d\d:\d\d \u00b7 Stack 1 \u00b7 0:00:30$")
        self.assertEqual(self.page.get_attribute("#golive", "aria-pressed"), "false")
        self.assertEqual(self.text("#age"), "from the history")
        self.assertEqual(self.metrics(), ("Stack: 1", "Expo: 0:00:30"), "the past frame's own figures")
        s = self.state()
        self.assertEqual((s["zoom"], s["centerX"], s["centerY"]), (view["zoom"], view["centerX"], view["centerY"]))
        # frames load on demand through their immutable URLs: each was seen
        # live already, so the browser's cache answers and the server sees nothing
        self.assertEqual(self.access.images(mark), [])
        asked = [u for u in self.requests[requests:] if FRAME.search(u)]
        self.assertEqual(asked[-1], self.url + frames[0]["url"])
        self.assertLessEqual(len(asked), 4, "scrubbing over 4 frames fetched %s" % asked)
        # live updates keep arriving, shown as "N newer images", not forced on the visitor
        self.publish_later = [demo_frame(5), demo_frame(6)]
        for n, stack in ((5, 5), (6, 6)):
            self.server.update_metrics(stack, stack * 30)
            self.server.publish_image(demo_frame(n))
            self.wait_for("s.entries === %d" % (n), 5000)
        self.wait_for("s.newer === 2", 3000)
        self.assertEqual(self.text("#newer"), "2 newer images")
        s = self.state()
        self.assertEqual(s["imageId"], frames[0]["id"], "the past frame must stay on screen")
        self.assertEqual(s["viewIndex"], 0)
        self.assertEqual(self.page.eval_on_selector("#scrub", "e => [+e.value, +e.max]"), [0, 5])
        self.assertLess(self.picture_difference(demo_frame(1)), 3)
        self.page.wait_for_timeout(300)     # the new data.json read by now
        self.assertEqual(self.metrics(), ("Stack: 1", "Expo: 0:00:30"))
        self.screenshot("phone-portrait-timeline.png")
        # one tap back to live: the newest frame, zoom and centre kept
        self.page.tap("#golive")
        newest = self.history()["entries"][-1]
        self.wait_for("s.viewIndex === -1 && s.imageId === %d && !s.imageLoading" % newest["id"], 5000)
        self.page.wait_for_timeout(150)
        self.assertLess(self.picture_difference(demo_frame(6)), 3, "back to live must show the newest")
        self.assertEqual(self.text("#newer"), "")
        self.assertRegex(self.text("#age"), r"^updated \d+ s ago$")
        self.assertEqual(self.metrics(), ("Stack: 6", "Expo: 0:03:00"))
        s = self.state()
        self.assertEqual((s["zoom"], s["centerX"], s["centerY"]), (view["zoom"], view["centerX"], view["centerY"]))
        # and live again: the next frame is shown by itself
        self.publish(1, 7)
        self.assertLess(self.picture_difference(demo_frame(1)), 3)
        self.assertEqual(self.state()["entries"], 7)
        self.assert_clean()

    def test_play_loops_one_frame_at_a_time_and_keeps_the_zoom(self):
        for n in range(1, 5):
            self.publish(n, n)
        ids = [f["id"] for f in self.history()["entries"]]
        self.page.tap("#zoomin")
        self.page.tap("#zoomin")
        flight = {"now": 0, "max": 0}

        def started(request):
            if FRAME.search(request.url):
                flight["now"] += 1
                flight["max"] = max(flight["max"], flight["now"])

        def ended(request):
            if FRAME.search(request.url):
                flight["now"] -= 1
        self.page.on("request", started)
        self.page.on("requestfinished", ended)
        self.page.on("requestfailed", ended)
        self.page.tap("#play")
        self.wait_for("s.playing === true")
        self.assertEqual(self.page.get_attribute("#play", "aria-pressed"), "true")
        self.assertEqual(self.page.get_attribute("#play", "aria-label"), "Pause time-lapse")
        seen, started_at = [], time.monotonic()
        while time.monotonic() - started_at < 8 and seen.count(ids[0]) < 2:
            image = self.state()["imageId"]
            if not seen or seen[-1] != image:
                seen.append(image)
            self.page.wait_for_timeout(40)
        played = seen[1:] if seen[0] == ids[-1] else seen       # the live frame, then from the first
        self.assertEqual(played[:len(ids)], ids, "frames not played in order: %s" % seen)
        self.assertEqual(played[len(ids)], ids[0], "the time-lapse did not loop: %s" % seen)
        took = time.monotonic() - started_at
        self.assertEqual(flight["max"], 1, "frames must load one at a time")
        self.assertEqual(self.state()["zoom"], 4)
        # a live frame during the time-lapse joins the loop, counted as newer
        self.server.update_metrics(5, 150)
        self.server.publish_image(demo_frame(5))
        self.wait_for("s.entries === 5 && s.newer === 1", 5000)
        self.assertTrue(self.state()["playing"])
        # pause: the frame stays
        self.page.tap("#play")
        self.wait_for("s.playing === false")
        shown = self.state()["imageId"]
        self.page.wait_for_timeout(800)
        self.assertEqual(self.state()["imageId"], shown)
        self.assertGreaterEqual(self.state()["viewIndex"], 0)
        print("\ntime-lapse: %d frames and back to the first in %.1f s: %s" % (len(ids), took, seen))
        self.page.tap("#golive")
        self.wait_for("s.viewIndex === -1 && s.imageId === %d && !s.imageLoading" % (ids[-1] + 1), 5000)
        self.assertLess(self.picture_difference(demo_frame(5)), 3)
        self.assert_clean()

    def test_page_load_uses_the_live_frame_url_and_a_reset_hides_the_timeline(self):
        for n in range(1, 4):
            self.publish(n, n)
        live = self.history()["live"]
        context = self.browser.new_context(**self.context_options)     # a new visitor
        self.addCleanup(context.close)
        self.context = context
        mark, requests = len(self.access.entries), len(self.requests)
        self.page = page = self.open_page()
        page.goto(self.url)
        self.wait_for(self.ready, 10000)
        self.assertEqual(self.state()["imageSrc"], "history/%d.jpg" % live)
        self.assertEqual(self.access.images(mark), [("/history/%d.jpg" % live, 200, len(demo_frame(3)))])
        asked = [u for u in self.requests[requests:] if u.startswith("http")]
        self.assertLess(asked.index(self.url + "history.json"), asked.index(self.url + "history/%d.jpg" % live))
        self.assertNotIn(self.url + "web_image.jpg", asked)
        self.assertTrue(self.timeline_visible())
        # a new session: the waiting image and no timeline (the old frames are another session's)
        loads = self.state()["imageLoads"]
        self.server.reset_image()
        self.wait_for("s.imageLoads > %d && !s.imageLoading && s.imageSrc === 'web_image.jpg'" % loads, 5000)
        self.wait_for("s.entries === 0", 3000)
        self.assertFalse(self.timeline_visible())
        self.assertEqual(self.state()["naturalWidth"], 1280)
        self.publish(4, 1)
        self.publish(5, 2)
        self.assertTrue(self.timeline_visible())
        self.assertEqual(self.state()["entries"], 2)
        self.assert_clean()


if __name__ == "__main__":
    unittest.main()
