"""Section 5b of alsserve.py: sharing the night. The Wi-Fi QR payload and its
escaping, the QR codes as SVG (decoded back by our own reader), the night's
title (cleaned, live, kept with each history entry), server.json and the
share panel's URLs, and the command line's --title / --wifi options (the
password only ever inside a QR code)."""
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import unittest
import urllib.parse
from unittest import mock

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from support import (alsserve, free_port, http_get, make_jpeg, next_announcement,  # noqa: E402
                     next_json, wait_until, ws_open)
from test_qr import decode  # noqa: E402
from test_cli import CLIProcess, run_cli  # noqa: E402


def svg_matrix(svg):
    """The modules of an SVG QR code, quiet zone cut: the dark runs back into rows."""
    size = int(re.search(r'viewBox="0 0 (\d+) \d+"', svg).group(1))
    grid = [[False] * size for _ in range(size)]
    for x, y, width in re.findall(r"M(\d+) (\d+)h(\d+)v1h-\d+z", svg):
        for c in range(int(width)):
            grid[int(y)][int(x) + c] = True
    return [row[4:-4] for row in grid[4:-4]]


class WifiPayloadTest(unittest.TestCase):
    def test_escaping(self):
        cases = [("Star Party", "secret123", r"WIFI:T:WPA;S:Star Party;P:secret123;;"),
                 ("a;b:c", 'p\\a,s"s:;', r'WIFI:T:WPA;S:a\;b\:c;P:p\\a\,s\"s\:\;;;'),
                 ("Étoilé 🌌", "mot de passé", "WIFI:T:WPA;S:Étoilé 🌌;P:mot de passé;;"),
                 ('"quoted"', "12345678", r'WIFI:T:WPA;S:\"quoted\";P:12345678;;')]
        for ssid, password, expected in cases:
            with self.subTest(ssid=ssid):
                payload = alsserve.Wifi(ssid, password).payload()
                self.assertEqual(payload, expected)
                self.assertEqual(decode(alsserve.qr_matrix(payload)), payload)
        self.assertEqual(alsserve.Wifi("Open night").payload(), "WIFI:T:nopass;S:Open night;;")
        self.assertEqual(alsserve.Wifi("Old", "12345", "WEP").payload(), "WIFI:T:WEP;S:Old;P:12345;;")

    def test_bad_networks_are_refused(self):
        for args in (("",), ("x" * 33,), ("é" * 17,), (42,), ("Net", "pw", "WPA3"), ("Net", None, "WPA"),
                     ("Net", "pw", "nopass"), ("Net", "p" * 64)):
            with self.subTest(args=args), self.assertRaises(ValueError):
                alsserve.Wifi(*args)

    def test_the_password_stays_out_of_reprs(self):
        self.assertNotIn("hunter22", repr(alsserve.Wifi("Net", "hunter22")))


class QrSvgTest(unittest.TestCase):
    def test_a_long_url_decodes(self):
        url = "https://club.example.org/observatory/als/?session=" + "m42-orion-nebula-" * 8
        svg = alsserve.qr_svg(url)
        self.assertTrue(svg.startswith('<svg xmlns="http://www.w3.org/2000/svg"'))
        self.assertIn('shape-rendering="crispEdges"', svg)
        matrix = svg_matrix(svg)
        self.assertEqual(matrix, alsserve.qr_matrix(url))
        self.assertEqual(decode(matrix), url)

    def test_colours(self):
        svg = alsserve.qr_svg("x", "#a00000", "#000")
        self.assertIn('fill="#a00000"/><path', svg)
        self.assertTrue(svg.endswith('fill="#000"/></svg>'))


class TitleTest(unittest.TestCase):
    def test_cleaning(self):
        cases = {"M42 - Orion Nebula": "M42 - Orion Nebula", "  NGC\t7000\r\n North America ": "NGC 7000 North America",
                 "a\x00b\x1bc\x7f": "abc", "zero\u200bwidth\u2028line": "zerowidth line",
                 None: "", "<img src=x onerror=alert(1)>": "<img src=x onerror=alert(1)>",
                 "x" * 200: "x" * 120, "Étoile ✨ du soir": "Étoile ✨ du soir"}
        for given, shown in cases.items():
            with self.subTest(title=given):
                self.assertEqual(alsserve.clean_title(given), shown)
        with self.assertRaises(ValueError):
            alsserve.clean_title(42)


class ShareOverHttpTest(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="alsserve-share-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.port = free_port()
        self.wifi = alsserve.Wifi("Star;Party", "s3cret:pass")
        self.server = self.start_server()

    def start_server(self):
        server = alsserve.ImageServer(self.folder, port=self.port, displayed_address="ip:127.0.0.1",
                                      title="M42 <Orion>", wifi=self.wifi)
        with self.assertLogs("alsserve", "WARNING"):        # access limited to this machine
            server.start()
        self.addCleanup(server.stop, 0)
        return server

    def test_server_json_and_the_codes(self):
        status, headers, body = http_get(self.port, "/server.json")
        self.assertEqual((status, headers["cache-control"]), (200, "no-cache"))
        self.assertEqual(json.loads(body), {"title": "M42 <Orion>", "wifi": {"ssid": "Star;Party", "security": "WPA"},
                                            "stream": True})
        self.assertNotIn(b"s3cret", body)
        page = "http://192.168.4.1:8080/als/?x=1&y=2"
        for red, light in (("", "#fff"), ("&red=1", "#a00000")):
            status, headers, body = http_get(self.port, "/share/qr.svg?text=%s%s" % (urllib.parse.quote(page, ""), red))
            self.assertEqual((status, headers["content-type"]), (200, "image/svg+xml; charset=utf-8"))
            self.assertIn('fill="%s"' % light, body.decode())
            self.assertEqual(decode(svg_matrix(body.decode())), page)
            status, headers, body = http_get(self.port, "/share/wifi.svg?x=1" + red)
            self.assertEqual(headers["cache-control"], "no-cache")
            self.assertEqual(decode(svg_matrix(body.decode())), self.wifi.payload())
        self.assertEqual(http_get(self.port, "/share/qr.svg?text=" + "x" * 213)[0], 414)
        self.assertEqual(http_get(self.port, "/share/qr.svg")[0], 400)
        self.assertEqual(http_get(self.port, "/share/other.svg")[0], 404)

    def test_codes_are_made_off_the_loop_once_per_text(self):
        threads = []

        def recording(*args):
            threads.append(threading.current_thread().name)
            return real(*args)

        real = alsserve.qr_svg
        with mock.patch.object(alsserve, "qr_svg", recording):
            results = []
            askers = [threading.Thread(target=lambda: results.append(
                http_get(self.port, "/share/qr.svg?text=http%3A%2F%2F10.0.0.9%3A8000%2F"))) for _ in range(8)]
            for asker in askers:
                asker.start()
            for asker in askers:
                asker.join(10)
        self.assertEqual([status for status, _, _ in results], [200] * 8)
        self.assertEqual(len({body for _, _, body in results}), 1)
        self.assertEqual(len(threads), 1, "made once for the eight who asked at once")
        self.assertNotEqual(threads[0], "alsserve", "a QR code takes up to 20 ms: not on the event loop")

    def test_title_changes_live_and_stays_with_each_entry(self):
        ws = ws_open(self.port)
        self.addCleanup(ws.sock.close)
        self.assertTrue(wait_until(lambda: self.server.client_count == 1))
        self.server.publish_image(make_jpeg(2000, b"\x01"))
        first, _ = next_announcement(ws)
        self.assertEqual(first["title"], "M42 <Orion>")
        self.assertEqual(self.server.set_title("NGC 7000\n<script>alert(1)</script>"),
                         "NGC 7000 <script>alert(1)</script>")
        self.assertEqual(next_json(ws), {"type": "title", "title": "NGC 7000 <script>alert(1)</script>"})
        self.assertEqual(json.loads(http_get(self.port, "/server.json")[2])["title"],
                         "NGC 7000 <script>alert(1)</script>")
        self.server.publish_image(make_jpeg(2000, b"\x02"))
        second, _ = next_announcement(ws)
        self.assertEqual(second["title"], "NGC 7000 <script>alert(1)</script>")
        listing = json.loads(http_get(self.port, "/history.json")[2])
        self.assertEqual([e["title"] for e in listing["entries"]], ["M42 <Orion>", "NGC 7000 <script>alert(1)</script>"])

    def test_without_wifi(self):
        self.server.stop()
        self.wifi = None
        self.server = self.start_server()
        self.assertIsNone(json.loads(http_get(self.port, "/server.json")[2])["wifi"])
        self.assertEqual(http_get(self.port, "/share/wifi.svg")[0], 404)


class ShareCommandLineTest(unittest.TestCase):
    def test_title_and_wifi_in_the_start_up_block_never_the_password(self):
        cli = CLIProcess(self, "--title", "M42\t- Orion", "--wifi", "Star Party", "--wifi-password", "hunter22pw",
                         "--qr", "-v")
        block = "\n".join(cli.block)
        self.assertIn("Title:      M42 - Orion", block)
        self.assertIn("Wi-Fi:      Star Party (password in the QR code)", block)
        self.assertLess(block.index("1. Join the Wi-Fi"), block.index("2. Open the page"))
        status, headers, body = http_get(cli.port, "/server.json")
        self.assertEqual(json.loads(body)["wifi"], {"ssid": "Star Party", "security": "WPA"})
        self.assertEqual(decode(svg_matrix(http_get(cli.port, "/share/wifi.svg")[2].decode())),
                         "WIFI:T:WPA;S:Star Party;P:hunter22pw;;")
        code, _, out, err = cli.stop()
        self.assertEqual(code, 0)
        self.assertNotIn("hunter22pw", block + out + err)

    def test_the_password_from_the_environment(self):
        os.environ["ALSSERVE_WIFI_PASSWORD"] = "from-the-env"
        self.addCleanup(os.environ.pop, "ALSSERVE_WIFI_PASSWORD", None)
        cli = CLIProcess(self, "--wifi", "Guest")
        self.assertEqual(decode(svg_matrix(http_get(cli.port, "/share/wifi.svg")[2].decode())),
                         "WIFI:T:WPA;S:Guest;P:from-the-env;;")
        self.assertIn("Wi-Fi:      Guest (password in the QR code)", "\n".join(cli.block))

    def test_bad_wifi_options_exit_2(self):
        for args, word in ((["--wifi-password", "x"], "--wifi SSID"), (["--wifi", ""], "1-32 bytes"),
                           (["--wifi", "Net", "--wifi-security", "nopass", "--wifi-password", "abc"], "password")):
            with self.subTest(args=args):
                result = run_cli(*args, "--no-qr")
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(word, result.stderr)
                self.assertNotIn("abc", result.stderr.replace("--wifi-password", ""))


if __name__ == "__main__":
    unittest.main()
