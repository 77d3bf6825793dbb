"""Weak Wi-Fi (issue 13, item 2): Chromium's network throttled over CDP to
1.5 MB/s with 50 ms latency. Progress while a new image downloads, the old one
stays; the age of the image and a stale mark; announcements during a download
end on the newest image with at most one download in flight and 2 in total.

Policy under test (assets/viewer.js, "image downloads"): a download is never
aborted for a newer announcement; announcements only mark the target; when
the download ends its image is shown, then one more download fetches the
newest known image."""

import os
import re
import time
import unittest

from viewer_support import PHONE, ViewerTestCase, acquire_browser, alsserve, make_jpeg, release_browser

IMAGE = re.compile(r"/(web_image|history/\d+)\.jpg$")
RATE = 1.5e6                 # bytes per second
LATENCY = 50                 # ms


def setUpModule():
    acquire_browser()


def tearDownModule():
    release_browser()


class WeakWifiTests(ViewerTestCase):
    """With the stack history (images through history/<id>.jpg)."""
    context_options = PHONE

    def setUp(self):
        super().setUp()
        # about 3.5 MB each: 2.3 s per download at 1.5 MB/s; told apart by their widths
        self.widths = [3200, 3216, 3232]
        self.images = [make_jpeg(w, 2400, seed=k, noise=130) for k, w in enumerate(self.widths)]

    def throttle(self):
        cdp = self.context.new_cdp_session(self.page)
        cdp.send("Network.enable")
        cdp.send("Network.emulateNetworkConditions", {"offline": False, "latency": LATENCY,
                                                      "downloadThroughput": RATE, "uploadThroughput": RATE})
        self.addCleanup(cdp.detach)

    def test_progress_during_download_old_image_stays_then_age(self):
        waiting = open(os.path.join(self.folder, "web_image.jpg"), "rb").read()
        self.throttle()
        loads = self.state()["imageLoads"]
        started = time.monotonic()
        self.server.publish_image(self.images[0])
        self.page.wait_for_selector("#progress", state="visible", timeout=3000)
        seen = []
        while time.monotonic() - started < 15 and self.state()["imageLoads"] == loads:
            if self.page.is_visible("#progress"):
                text = self.text("#ptext")
                seen.append(text)
                if len(seen) in (2, 6):
                    self.assertLess(self.picture_difference(waiting), 3, "the old image must stay while downloading")
                    self.assertEqual(self.state()["naturalWidth"], 1280)
            self.page.wait_for_timeout(250)
        shown_after = time.monotonic() - started
        self.wait_loaded(loads, 5000)
        percents = [int(m.group(1)) for m in (re.match(r"^new image (\d+)% of (\d+(?:\.\d)?) MB$", t) for t in seen) if m]
        self.assertGreaterEqual(len(percents), 3, "progress not shown as a percentage: %s" % seen)
        self.assertEqual(percents, sorted(percents), "progress went backwards: %s" % percents)
        self.assertGreater(percents[-1] - percents[0], 30, percents)
        size = len(self.images[0]) / 1e6
        self.assertIn(("%.1f MB" if size < 10 else "%.0f MB") % size, seen[-1])
        self.assertEqual(self.state()["naturalWidth"], self.widths[0])
        self.assertFalse(self.page.is_visible("#progress"))
        self.assertGreater(shown_after, len(self.images[0]) / RATE * 0.8, "was the network throttled?")
        print("\nthrottled: %.1f MB shown %.1f s after its announcement; progress seen: %s"
              % (len(self.images[0]) / 1e6, shown_after, ", ".join("%d%%" % p for p in percents)))
        # how old the image is, from its Last-Modified, by the server's clock
        self.assertRegex(self.text("#age"), r"^updated \d+ s ago$")
        self.assert_clean()

    def image_answers(self, mark):
        return [(status, size) for path, status, size in self.access.images(mark)]

    def test_two_announcements_during_one_download_end_on_the_newest(self):
        self.throttle()
        loads, downloads = self.state()["imageLoads"], self.state()["downloads"]
        mark = len(self.access.entries)
        flight = {"now": 0, "max": 0}

        def started_request(request):
            if IMAGE.search(request.url):
                flight["now"] += 1
                flight["max"] = max(flight["max"], flight["now"])

        def ended(request):
            if IMAGE.search(request.url):
                flight["now"] -= 1
        self.page.on("request", started_request)
        self.page.on("requestfinished", ended)
        self.page.on("requestfailed", ended)
        started = time.monotonic()
        self.server.publish_image(self.images[0])
        self.wait_for("s.progress && s.progress.loaded > 300000", 4000)
        self.server.publish_image(self.images[1])          # announced mid-download
        self.page.wait_for_timeout(300)
        self.server.publish_image(self.images[2])          # and again: this is the newest
        announced = time.monotonic()
        self.wait_for("s.imageLoads > %d" % loads, 10000)
        first = time.monotonic() - started
        s = self.state()
        self.assertEqual(s["naturalWidth"], self.widths[0], "the first download is shown when done")
        self.assertTrue(s["imageLoading"], "the newest is fetched right after")
        self.wait_for("s.imageLoads >= %d && !s.imageLoading && !s.imageDirty" % (loads + 2), 10000)
        newest = time.monotonic() - announced
        self.page.wait_for_timeout(1000)                  # nothing else follows
        self.assertEqual(self.state()["naturalWidth"], self.widths[2], "the page must end on the newest image")
        s = self.state()
        self.assertEqual(s["downloads"] - downloads, 2)
        self.assertEqual(s["imageLoads"] - loads, 2)
        answers = self.image_answers(mark)
        self.assertEqual(answers, [(200, len(self.images[0])), (200, len(self.images[2]))],
                         "two whole downloads, none restarted")
        self.assertEqual(flight["max"], 1, "more than one download in flight")
        print("\nthrottled: first image %.1f s after its announcement, the newest %.1f s after its own "
              "(2 downloads of %.1f + %.1f MB)" % (first, newest, answers[0][1] / 1e6, answers[1][1] / 1e6))
        self.assert_clean()


class WeakWifiWithoutHistoryTests(WeakWifiTests):
    """History off (or a server without it): the live image is web_image.jpg,
    revalidated by its ETag; its Last-Modified is the file's."""
    server_options = {"settings": alsserve.Settings(history_entries=0)}

    def image_answers(self, mark):
        self.assertEqual([p for p, status, size in self.access.images(mark)
                          if p != "/web_image.jpg"], [])
        return super().image_answers(mark)

    def test_an_old_image_is_marked_stale(self):
        path = os.path.join(self.folder, "web_image.jpg")
        with open(path, "wb") as f:
            f.write(self.images[1])
        old = time.time() - 600
        os.utime(path, (old, old))
        loads = self.state()["imageLoads"]
        self.page.evaluate("document.body.classList.add('idle')")
        self.server.notify_browsers_about_new_image()
        self.wait_loaded(loads, 15000)
        self.page.wait_for_timeout(1100)
        self.assertEqual(self.text("#age"), "no new image for 10 min")
        self.assertTrue(self.state()["stale"])
        self.assertEqual(self.page.get_attribute("#age", "class"), "stale")
        self.assertEqual(self.text("#conn"), "live")
        self.assertFalse(self.page.evaluate("document.body.classList.contains('idle')"),
                         "going stale must bring the overlay back")
        # a fresh image: no longer stale
        loads = self.state()["imageLoads"]
        self.server.publish_image(self.images[2])
        self.wait_loaded(loads, 15000)
        self.page.wait_for_timeout(1100)
        self.assertRegex(self.text("#age"), r"^updated \d+ s ago$")
        self.assertFalse(self.state()["stale"])
        self.assert_clean()


if __name__ == "__main__":
    unittest.main()
