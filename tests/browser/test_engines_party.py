"""What no star-party server has yet, in every browser engine: the Share
panel (the QR codes of this page's own address and of the Wi-Fi network,
red at night), the night's title (live, always as text), before/after
compare with a draggable divider, and the reticle.

One test class per engine (Chromium, Firefox ESR, WebKitGTK, WPE), each from
PartyEngineTests, over our WebDriver client (engines.py): one phone-sized
browser per class, a fresh alsserve per test. What is checked is what a user
sees: screenshot pixels, positions and sizes, the text shown.

    python -m unittest discover -s tests/browser -p 'test_engines_party.py' -v
"""

import os
import sys
import time
import unittest
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import engines  # noqa: E402
import harness  # noqa: E402
import jpegwrite  # noqa: E402
import webdriver  # noqa: E402
from harness import alsserve, wait_for  # noqa: E402
from viewer_support import SubPathProxy  # noqa: E402

engines.selection()     # a bad ALSSERVE_ENGINES fails the import, loudly
PORTRAIT = (390, 844)
READY = "s && s.connection === 'live' && s.imageLoads >= 1 && !s.imageLoading"
ESCAPE = "\ue00c"
XSS = "<img src=x onerror=alert(1)>"
P, Q, R, S = (220, 40, 40), (40, 200, 70), (50, 70, 230), (235, 215, 40)
TIMES = {}

# The QR images of the share panel, as the page has them.
QR_JS = """
return ['wifiqr', 'pageqr'].map(function (id) {
  var e = document.getElementById(id), r = e.getBoundingClientRect();
  return {src: e.src, loaded: e.complete, natural: [e.naturalWidth, e.naturalHeight], left: r.left, top: r.top,
          width: r.width, height: r.height, shown: !!(e.offsetWidth || e.offsetHeight)};
});
"""

# An alert() would block the page: recorded instead.
NO_ALERT_JS = "window.__alsAlerts = []; window.alert = function (m) { window.__alsAlerts.push(String(m)); };"


def halves(left, right):
    """An 800x600 JPEG: its left half one colour, its right half another."""
    return jpegwrite.flat_jpeg(800, 600, lambda bx, by: left if bx < 50 else right)


class PartyEngineTests(engines.BrowserPerClass):
    """Share, title, compare and reticle in one engine; a subclass sets ``engine``."""

    viewport = PORTRAIT
    times = TIMES

    def setUp(self):
        if self.browser.resizable:
            self.browser.set_viewport(*PORTRAIT)

    # -- helpers
    def serve(self, **options):
        """A fresh alsserve (title, wifi: ImageServer's arguments); what an earlier
        test left in localStorage (red, the reticle) goes first."""
        self.server = harness.LiveServer(**options)
        self.addCleanup(self.server.close)
        self.session.navigate(self.server.write_file("blank.html", "<!doctype html><title>blank</title>"))
        self.session.execute("localStorage.clear()")

    def open(self, url=None):
        self.session.navigate(url or self.server.url)
        harness.install_error_collector(self.session)
        return wait_for(self.session, READY, 10)

    def reload(self):
        self.session.refresh()
        harness.install_error_collector(self.session)
        return wait_for(self.session, READY, 10)

    def click(self, css):
        self.session.find(css).click()

    def text(self, css):
        return self.session.execute("return document.querySelector(arguments[0]).textContent", css)

    def publish(self, jpeg, stack, seconds):
        loads = harness.viewer_state(self.session)["imageLoads"]
        self.server.metrics(stack, seconds)
        self.server.publish(jpeg)
        return wait_for(self.session, "s.imageLoads > %d && !s.imageLoading && !s.imageDirty" % loads, 6)

    def pixels(self, points, timeout=5.0):
        return harness.wait_for_pixels(self.session, points, timeout=timeout, radius=4,
                                       scale=self.browser.device_pixel_ratio, tolerance=24)

    def assert_clean(self):
        self.assertEqual(harness.collected_errors(self.session), [], "errors in the page (%s)" % self.engine)

    def panel_open(self):
        return self.session.execute("return document.getElementById('sharepanel').open")

    def open_share(self):
        self.click("#share")
        wait_for(self.session, "document.getElementById('sharepanel').open", 3)
        return wait_for(self.session, "document.getElementById('pageqr').complete", 5)

    def qr(self):
        return self.session.execute(QR_JS)

    def lines(self):
        """The share panel's lines of text, as shown."""
        return self.session.execute("return [].filter.call(document.querySelectorAll('#sharepanel p'),"
                                    " function (p) { return p.getClientRects().length; })"
                                    ".map(function (p) { return p.innerText.trim(); })")

    def assert_no_white(self, image, what):
        """Nothing near white on screen: at night a white QR code blinds."""
        white = 0
        data = image.rgba
        for i in range(0, len(data), 4 * 7):
            if data[i] > 150 and data[i + 1] > 150 and data[i + 2] > 150:
                white += 1
        self.assertEqual(white, 0, "%s: white pixels on screen in red mode (%s)" % (what, self.engine))

    def save(self, name):
        folder = harness.REPO / "build" / "screenshots"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / ("%s-%s.png" % (self.engine, name))).write_bytes(self.session.screenshot())

    # -- 1. share ------------------------------------------------------------------
    def test_share_panel_with_wifi_opens_big_and_closes_by_button_escape_and_tap(self):
        self.serve(title="Messier marathon", wifi=alsserve.Wifi("StarParty", "orion-2026"))
        self.open()
        share = self.session.find("#share")
        self.assertEqual(share.attribute("aria-label"), "Share")
        rect = share.rect()
        self.assertGreaterEqual(min(rect["width"], rect["height"]), 44)
        self.assertGreater(rect["y"], PORTRAIT[1] * 0.6, "Share is not where a thumb reaches")
        self.open_share()
        wait_for(self.session, "!document.getElementById('wifistep').hidden && "
                 "document.getElementById('wifiqr').complete", 5)
        wifi, page = self.qr()
        address = self.server.url
        self.assertEqual(page["src"], self.server.url + "share/qr.svg?text=" + urllib.parse.quote(address, safe=""))
        self.assertEqual(wifi["src"].split("?")[0], self.server.url + "share/wifi.svg")
        self.assertNotIn("red=1", wifi["src"] + page["src"])
        for image in (wifi, page):
            self.assertTrue(image["loaded"] and image["shown"], image)
            self.assertGreaterEqual(image["width"], 0.7 * PORTRAIT[0], "a QR code too small to scan: %s" % image)
            self.assertAlmostEqual(image["width"], image["height"], delta=1)
            self.assertGreaterEqual(image["top"], 0)
            self.assertLessEqual(image["top"] + image["height"], PORTRAIT[1])
        self.assertLess(wifi["top"], page["top"], "the Wi-Fi first, then the page")
        self.assertEqual(self.lines(), ["1. Join the Wi-Fi", "StarParty", "2. Open the page"])
        self.assertNotIn("orion-2026", self.session.execute("return document.documentElement.outerHTML"))
        panel = harness.element_rect(self.session, "#sharepanel")
        self.assertEqual((panel["left"], panel["top"], panel["width"], panel["height"]), (0, 0) + PORTRAIT)
        self.save("share")
        # the close button
        close = self.session.find("#closeshare")
        self.assertGreaterEqual(min(close.rect()["width"], close.rect()["height"]), 44)
        close.click()
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        self.assertFalse(self.session.find("#sharepanel").displayed())
        # Escape
        self.open_share()
        self.session.perform(webdriver.keys().key(ESCAPE))
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        # a tap anywhere on the panel
        self.open_share()
        self.session.perform(webdriver.mouse().click(20, 20))
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        # the image is still live behind it
        self.publish(jpegwrite.solid_jpeg(800, 600, P), 2, 60)
        self.assert_clean()

    def test_share_panel_in_red_mode_has_no_white_ever(self):
        self.serve(wifi=alsserve.Wifi("StarParty", "orion-2026"))
        self.open()
        self.publish(jpegwrite.solid_jpeg(800, 600, (20, 60, 110)), 1, 30)
        # seen once in normal mode (black on white), then red mode: that white must not come back
        self.open_share()
        self.assertEqual(self.qr()[1]["src"].count("red=1"), 0)
        self.click("#closeshare")
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        self.click("#red")
        wait_for(self.session, "s.red === true")
        self.click("#share")
        self.assert_no_white(harness.screenshot(self.session), "right after opening")
        wait_for(self.session, "['wifiqr', 'pageqr'].every(function (id) {"
                 " return document.getElementById(id).complete; })", 5)
        time.sleep(0.2)
        image = harness.screenshot(self.session)
        self.assert_no_white(image, "with both QR codes")
        wifi, page = self.qr()
        self.assertTrue(wifi["src"].endswith("/share/wifi.svg?red=1"), wifi["src"])
        self.assertTrue(page["src"].endswith("&red=1"), page["src"])
        # the light modules are the server's red, the dark ones black
        scale = self.browser.device_pixel_ratio
        count, colour = harness.bright_pixels(image, page["left"], page["top"], page["width"], page["height"],
                                              threshold=60, scale=scale)
        dark = page["width"] * page["height"] * scale * scale - count
        self.assertGreater(count, dark / 3, "hardly any light modules: %d of %d" % (count, count + dark))
        self.assertGreater(dark, count / 3, "hardly any dark modules: %d of %d" % (dark, count + dark))
        self.assertGreater(colour[0], 140, colour)
        self.assertLess(max(colour[1], colour[2]), 30, colour)
        self.save("share-red")
        self.session.perform(webdriver.keys().key(ESCAPE))
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        self.assert_clean()

    def test_share_without_wifi_under_a_sub_path_encodes_the_address_as_opened(self):
        self.serve()
        proxy = SubPathProxy(self.server.port, "/als/")
        self.addCleanup(proxy.close)
        opened = "http://127.0.0.1:%d/als/?night=1" % proxy.port
        self.open(opened + "#zoomed")
        self.open_share()
        time.sleep(0.3)
        wifi, page = self.qr()
        self.assertFalse(wifi["shown"], "no Wi-Fi configured, no Wi-Fi step")
        self.assertEqual(wifi["src"], "", "no Wi-Fi QR code asked for")
        self.assertEqual(page["src"], "http://127.0.0.1:%d/als/share/qr.svg?text=%s"
                         % (proxy.port, urllib.parse.quote(opened, safe="")))
        self.assertTrue(page["loaded"], page)
        self.assertEqual(self.lines(), ["Open the page"])
        self.assertEqual(proxy.outside, [], "requests outside /als/")
        self.click("#closeshare")
        wait_for(self.session, "!document.getElementById('sharepanel').open", 3)
        self.assertEqual(self.qr()[1]["src"], "", "the QR images are let go while closed")
        self.assert_clean()

    # -- 2. the night's title ------------------------------------------------------------
    def test_title_shown_updated_live_as_text_and_each_entry_its_own(self):
        self.serve(title="M42 at the club")
        self.open()
        wait_for(self.session, "document.getElementById('title').textContent === 'M42 at the club'", 5)
        self.assertTrue(self.session.find("#title").displayed())
        self.assertEqual(self.session.title(), "M42 at the club")
        self.publish(jpegwrite.solid_jpeg(800, 600, P), 1, 30)
        # changed while running: shown at once, as the characters typed, nothing run
        self.session.execute(NO_ALERT_JS)
        self.server.server.set_title(XSS)
        wait_for(self.session, "document.getElementById('title').textContent === %r" % XSS, 5)
        self.assertEqual(self.session.title(), XSS)
        self.assertEqual(self.session.find("#title").text().strip(), XSS)
        self.assertEqual(self.session.execute("return document.querySelectorAll('#info img, img[src=\"x\"]').length"), 0)
        self.publish(jpegwrite.solid_jpeg(800, 600, Q), 2, 60)
        time.sleep(0.5)
        self.assertEqual(self.session.execute("return window.__alsAlerts"), [], "the title ran as HTML")
        # the first entry on the timeline shows its own title, live the current one
        self.session.execute("var s = document.getElementById('scrub'); s.value = 0;"
                             "s.dispatchEvent(new Event('input', {bubbles: true}));"
                             "s.dispatchEvent(new Event('change', {bubbles: true}));")
        wait_for(self.session, "s.viewIndex === 0 && !s.imageLoading", 5)
        wait_for(self.session, "document.getElementById('title').textContent === 'M42 at the club'", 3)
        self.assertEqual(self.session.title(), "M42 at the club")
        self.click("#golive")
        wait_for(self.session, "s.viewIndex === -1 && document.getElementById('title').textContent === %r" % XSS, 5)
        # no title: nothing shown, the default page title
        self.server.server.set_title("")
        wait_for(self.session, "document.getElementById('title').hidden", 5)
        self.assertEqual(self.session.title(), "ALS live image")
        self.assert_clean()

    # -- 3. before / after ---------------------------------------------------------------
    def test_compare_divider_labels_and_zoom_pan_on_both_sides(self):
        self.serve()
        self.open()
        compare = self.session.find("#compare")
        self.assertEqual(compare.attribute("aria-label"), "Compare")
        self.assertEqual(compare.property("disabled"), True, "nothing to compare before two entries")
        self.publish(halves(P, Q), 1, 30)
        self.publish(jpegwrite.solid_jpeg(800, 600, (90, 90, 90)), 2, 60)
        self.publish(halves(R, S), 3, 90)
        entries = self.server.server.history
        self.assertEqual(len(entries), 3)
        self.click("#compare")
        wait_for(self.session, "s.beforeId === %d && !s.imageLoading" % entries[0]["id"], 5)
        self.assertEqual(compare.attribute("aria-pressed"), "true")
        width, height = PORTRAIT
        y = height / 2 + 60                     # below the divider's grip, inside the image
        # fitted by width: the left of the screen is the first image's left half, the right the live one's right half
        self.pixels([(width * 0.25, y, P), (width * 0.75, y, S)])
        self.assertEqual(" ".join(self.text("#tinfo").split()),
                         "Before \u00b7 Stack 1 \u00b7 0:00:30 After \u00b7 Stack 3 \u00b7 0:01:30")
        divider = harness.element_rect(self.session, "#divider")
        self.assertAlmostEqual(divider["left"] + divider["width"] / 2, width / 2, delta=1)
        self.assertGreaterEqual(divider["width"], 44, "the divider is not thumb-wide")
        self.save("compare")
        # drag the divider to a quarter: the live image now from there on
        self.session.perform(webdriver.mouse().move(width / 2, y).down().move(width * 0.35, y, ms=100)
                             .move(width * 0.25, y, ms=100).up())
        divider = harness.element_rect(self.session, "#divider")
        self.assertAlmostEqual(divider["left"] + divider["width"] / 2, width * 0.25, delta=2)
        self.pixels([(width * 0.125, y, P), (width * 0.375, y, R), (width * 0.75, y, S)])
        # zoom in (x2 at the centre), then pan the image's right half under the left of the screen
        self.click("#zoomin")
        wait_for(self.session, "s.zoom === 2")
        self.pixels([(width * 0.125, y, P), (width * 0.375, y, R), (width * 0.75, y, S)])
        self.session.perform(webdriver.mouse().move(width * 0.8, y).down().move(width * 0.6, y, ms=100)
                             .move(width * 0.3, y, ms=100).up())
        state = wait_for(self.session, "s.centerX > 0.7", 2)
        self.assertLess(abs(state["zoom"] - 2), 1e-6)
        # both moved: the first image's right half on the left, the live image's right half everywhere else
        self.pixels([(width * 0.125, y, Q), (width * 0.375, y, S), (width * 0.75, y, S)])
        # the timeline chooses the left image; the right stays live
        self.session.execute("var s = document.getElementById('scrub'); s.value = 1;"
                             "s.dispatchEvent(new Event('input', {bubbles: true}));"
                             "s.dispatchEvent(new Event('change', {bubbles: true}));")
        wait_for(self.session, "s.beforeId === %d && s.imageId === %d" % (entries[1]["id"], entries[2]["id"]), 5)
        self.pixels([(width * 0.125, y, (90, 90, 90)), (width * 0.75, y, S)])
        self.assertIn("Before \u00b7 Stack 2 \u00b7 0:01:00", " ".join(self.text("#tinfo").split()))
        self.assertEqual((self.text("#stack"), self.text("#expo")), ("Stack: 3", "Expo: 0:01:30"),
                         "the overlay speaks of the live image")
        # off: one image again, the divider gone, the chosen entry shown
        self.click("#compare")
        wait_for(self.session, "s.beforeId === null && s.imageId === %d && !s.imageLoading" % entries[1]["id"], 5)
        self.assertFalse(self.session.find("#divider").displayed())
        self.pixels([(width * 0.125, y, (90, 90, 90)), (width * 0.75, y, (90, 90, 90))])
        self.assert_clean()

    # -- 4. the reticle ------------------------------------------------------------------
    def test_reticle_at_the_centre_of_the_screen_kept_across_a_reload(self):
        self.serve()
        self.open()
        self.publish(jpegwrite.solid_jpeg(800, 600, (10, 10, 30)), 1, 30)
        button = self.session.find("#reticle")
        self.assertEqual(button.attribute("aria-label"), "Reticle")
        self.assertEqual(button.attribute("aria-pressed"), "false")
        self.assertFalse(self.session.find("#crosshair").displayed())
        button.click()
        wait_for(self.session, "!document.getElementById('crosshair').hidden")
        self.check_reticle()
        # centred on the screen, not on the image: zoom and pan leave it there
        self.click("#zoomin")
        self.session.perform(webdriver.keys().key("\ue012").key("\ue013"))      # arrow left, arrow up
        wait_for(self.session, "s.zoom === 2 && s.centerX !== 0.5")
        self.check_reticle()
        self.save("reticle")
        self.reload()
        self.assertEqual(self.session.find("#reticle").attribute("aria-pressed"), "true")
        self.check_reticle()
        self.click("#reticle")
        wait_for(self.session, "document.getElementById('crosshair').hidden")
        self.reload()
        self.assertFalse(self.session.find("#crosshair").displayed())
        self.assertEqual(self.session.find("#reticle").attribute("aria-pressed"), "false")
        self.assert_clean()

    def check_reticle(self):
        width, height = PORTRAIT
        ring = harness.element_rect(self.session, "#crosshair")
        self.assertAlmostEqual(ring["left"] + ring["width"] / 2, width / 2, delta=1)
        self.assertAlmostEqual(ring["top"] + ring["height"] / 2, height / 2, delta=1)
        image = harness.screenshot(self.session)
        scale = self.browser.device_pixel_ratio
        # thin lines across the screen through its centre, in the night's red
        for x, y, w, h in ((width / 2 - 3, height * 0.2, 6, 4), (width * 0.1, height / 2 - 3, 4, 6)):
            count, colour = harness.bright_pixels(image, x, y, w, h, threshold=120, scale=scale)
            self.assertGreaterEqual(count, 1, "no reticle line at (%d, %d) in %s" % (x, y, self.engine))
            self.assertLessEqual(count, 4 * scale * scale * 2, "the line is not thin")
            self.assertGreater(colour[0], 2 * max(colour[1], colour[2]), "not in the night colours: %s" % (colour,))
        # the circle: left of the centre by its radius
        count, colour = harness.bright_pixels(image, width / 2 - ring["width"] / 2 - 1, height / 2 - 10, 3, 8,
                                              threshold=120, scale=scale)
        self.assertGreaterEqual(count, 1, "no circle")


engines.test_case_per_engine(PartyEngineTests, globals())


if __name__ == "__main__":
    unittest.main()
