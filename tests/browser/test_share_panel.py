"""The share panel read by a real QR reader, and phone screenshots of the
night's tools (Chromium, Playwright).

zbarimg (zbar-tools) decodes the page's QR code and the Wi-Fi network's from
screenshots of the share panel, in normal and in red-only mode: the codes a
phone at arm's length would scan. Screenshots go to build/screenshots/
(share-normal.png, share-red.png, phone-portrait-compare.png,
phone-portrait-reticle.png).
"""

import shutil
import subprocess
import unittest

from viewer_support import PHONE, ViewerTestCase, acquire_browser, alsserve, demo_frame, release_browser

SSID, PASSWORD = "StarParty", "orion-2026"
LOADED = ("() => ['wifiqr', 'pageqr'].every(id => { const e = document.getElementById(id);"
          " return e.getAttribute('src') && e.complete; })")


def setUpModule():
    acquire_browser()


def tearDownModule():
    release_browser()


class ShareTests(ViewerTestCase):
    context_options = PHONE

    @property
    def server_options(self):
        return {"wifi": alsserve.Wifi(SSID, PASSWORD), "title": "Messier marathon"}

    def publish(self, n, stack):
        loads = self.state()["imageLoads"]
        self.server.update_metrics(stack, stack * 30)
        self.server.publish_image(demo_frame(n))
        self.wait_for("s.imageLoads > %d && !s.imageLoading" % loads, 5000)

    def read_codes(self, name):
        """Open the panel, screenshot it, decode every QR code in it with zbarimg."""
        self.page.tap("#share")
        self.page.wait_for_function(LOADED, timeout=5000)
        self.page.wait_for_timeout(200)
        path = self.screenshot(name)
        run = subprocess.run([self.zbarimg, "-q", "--raw", str(path)], capture_output=True, timeout=60)
        self.assertEqual(run.returncode, 0, "zbarimg read nothing in %s: %s" % (name, run.stderr))
        return sorted(line for line in run.stdout.decode("utf-8").splitlines() if line)

    def close_panel(self):
        self.page.keyboard.press("Escape")
        self.page.wait_for_function("() => !document.getElementById('sharepanel').open", timeout=3000)

    def test_zbarimg_reads_the_page_and_the_wifi_in_normal_and_red_mode(self):
        self.zbarimg = shutil.which("zbarimg")
        self.assertTrue(self.zbarimg, "zbarimg is missing: apt-get install zbar-tools")
        self.publish(6, 24)
        for mode in ("normal", "red"):
            if mode == "red":
                self.page.tap("#red")
                self.wait_for("s.red === true")
            codes = self.read_codes("share-%s.png" % mode)
            self.assertEqual(len(codes), 2, "%s mode: two QR codes, read %s" % (mode, codes))
            wifi, page = codes          # sorted: "WIFI:..." before "http://..."
            self.assertEqual(page, self.url, "%s mode: the page's own address" % mode)
            self.assertTrue(wifi.startswith("WIFI:"), wifi)
            self.assertIn("S:%s;" % SSID, wifi)
            self.assertIn("P:%s;" % PASSWORD, wifi)
            shot = self.pixels()
            if mode == "red":
                self.assertEqual(shot["white"], 0, "white on screen in red mode")
                self.assertLess(max(shot["green"], shot["blue"]), 3, shot)
            else:
                self.assertGreater(shot["white"], 0.15, "the codes are black on white in normal mode")
            print("\nshare panel, %s mode: zbarimg read %r and %r" % (mode, page, wifi))
            self.close_panel()
        self.assert_clean()

    def test_phone_screenshots_of_compare_and_the_reticle(self):
        for n, stack in ((1, 1), (3, 8), (6, 24)):
            self.publish(n, stack)
        first = self.server.history[0]["id"]
        self.page.tap("#compare")
        self.wait_for("s.beforeId === %d" % first, 5000)
        self.page.wait_for_timeout(200)
        self.assertEqual(" ".join(self.text("#tinfo").split()),
                         "Before \u00b7 Stack 1 \u00b7 0:00:30 After \u00b7 Stack 24 \u00b7 0:12:00")
        self.assertEqual(self.page.get_attribute("#compare", "aria-pressed"), "true")
        self.screenshot("phone-portrait-compare.png")
        self.page.tap("#compare")
        self.wait_for("s.beforeId === null")
        self.page.tap("#reticle")
        self.page.tap("#zoomin")
        self.wait_for("s.zoom === 2")
        self.page.wait_for_timeout(200)
        self.assertTrue(self.page.is_visible("#crosshair"))
        self.screenshot("phone-portrait-reticle.png")
        self.assert_clean()


if __name__ == "__main__":
    unittest.main()
