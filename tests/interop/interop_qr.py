"""Interop check: decode alsserve's QR codes with a real decoder (zbarimg).

Needs Debian's zbar-tools (apt-get install -y zbar-tools); stdlib otherwise.
Run from the repository root:  python3 tests/interop/interop_qr.py -v
(or with the rest of the interop suite: make interop).
"""
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import types
import unittest
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

sys.path.insert(0, os.path.join(ROOT, 'tests'))

from alsserve import qr_matrix, qr_to_terminal  # noqa: E402
from test_qr import THEMES, render_terminal  # noqa: E402

# Byte capacity of each version at level M (ISO/IEC 18004 Table 7); the
# URLs below are chosen so that every version 1-10 is hit at least twice.
CAPACITY_M = (None, 14, 26, 42, 62, 84, 106, 122, 152, 180, 213)


def _url(length, base='http://192.168.1.23:8000/'):
    """A URL of exactly `length` bytes: base + path/query filler."""
    filler = 'files/photos/2024/summer?name=IMG_0042.jpg&size=large&dl=1&'
    path = (filler * (length // len(filler) + 1))[:max(0, length - len(base))]
    return (base + path)[:length]


URLS = [
    'http://h:8000/',                       # 14 bytes: version 1
    'http://a.b/x',                         # 12: version 1
    'http://10.0.0.1/',                     # 16: version 2
    'http://10.42.0.1:8000/',               # 22: version 2
    'http://192.168.1.23:8000/',            # 25: version 2
    'http://192.168.100.200:8000/',         # 28: version 3
    'http://192.168.178.21:8000/?t=ab12cd34',   # 38: version 3
    'https://localhost:8443/share/music/',  # 35: version 3
] + [_url(n) for n in (42, 43, 60, 62, 63, 80, 84, 85, 100, 106, 107,
                        115, 122, 123, 140, 152, 153, 170, 180, 181, 200,
                        210, 213)]  # capacity edges of versions 3-10


def png_bytes(matrix, scale=8, quiet=4):
    """8-bit greyscale PNG of a module matrix (True = dark), quiet zone light."""
    n = len(matrix) + 2 * quiet
    raw = bytearray()
    for y in range(n * scale):
        r = y // scale - quiet
        row = matrix[r] if 0 <= r < len(matrix) else []
        raw.append(0)  # filter type None
        for x in range(n):
            c = x - quiet
            dark = 0 <= c < len(row) and row[c]
            raw += (b'\x00' if dark else b'\xff') * scale

    def chunk(kind, data):
        return (struct.pack('>I', len(data)) + kind + data +
                struct.pack('>I', zlib.crc32(kind + data) & 0xFFFFFFFF))

    side = n * scale
    return (b'\x89PNG\r\n\x1a\n' +
            chunk(b'IHDR', struct.pack('>IIBBBBB', side, side, 8, 0, 0, 0, 0)) +
            chunk(b'IDAT', zlib.compress(bytes(raw), 9)) + chunk(b'IEND', b''))


def zbar_decode(matrix, quiet=4):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, 'qr.png')
        with open(path, 'wb') as f:
            f.write(png_bytes(matrix, quiet=quiet))
        proc = subprocess.run(['zbarimg', '--raw', '-q', path],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              timeout=60)
    if proc.returncode != 0:
        return None
    out = proc.stdout.decode('utf-8')
    return out[:-1] if out.endswith('\n') else out


def version_of(matrix):
    return (len(matrix) - 17) // 4


class ZbarInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        # Fail rather than skip: this file exists only to run the decoder.
        if not shutil.which('zbarimg'):
            raise AssertionError('zbarimg missing: apt-get install -y zbar-tools')

    def test_urls_decode(self):
        versions = {}
        for url in URLS:
            with self.subTest(url=url, length=len(url)):
                m = qr_matrix(url)
                v = version_of(m)
                # the smallest version that holds the URL
                self.assertLessEqual(len(url), CAPACITY_M[v])
                self.assertTrue(v == 1 or len(url) > CAPACITY_M[v - 1])
                self.assertEqual(zbar_decode(m), url)
                versions[v] = versions.get(v, 0) + 1
        self.assertGreaterEqual(len(URLS), 24)
        self.assertEqual(sorted(versions), list(range(1, 11)))
        self.assertGreaterEqual(min(versions.values()), 2)
        print('\n%d URLs decoded; count per version: %s'
              % (len(URLS), sorted(versions.items())), file=sys.stderr)

    def test_every_mask_decodes(self):
        # One text per interesting layout: v1 (no alignment), v2-6 (one
        # alignment pattern, 7 remainder bits), v7 (version info), v10
        # (16-bit length field, 5 blocks in two groups).
        for text in (URLS[1], 'http://192.168.1.23:8000/', _url(122),
                     _url(213)):
            for mask in range(8):
                with self.subTest(length=len(text), mask=mask):
                    self.assertEqual(zbar_decode(qr_matrix(text, mask=mask)),
                                     text)

    def test_terminal_rendering_decodes_on_dark_and_light_terminals(self):
        # What a terminal of each theme shows (its own background around the
        # drawn quiet zone), as a phone camera sees it, in both forms: the
        # coloured one reads on both themes; the plain one (consoles without
        # escape sequences) on the dark theme it is drawn for.
        for url in (URLS[3], URLS[4], _url(122), _url(213)):
            for theme in THEMES:
                with self.subTest(length=len(url), theme=theme):
                    screen = render_terminal(qr_to_terminal(url), theme, margin=6)
                    self.assertEqual(zbar_decode(screen, quiet=0), url)
            with self.subTest(length=len(url), plain=True):
                screen = render_terminal(qr_to_terminal(url, colours=False), 'dark', margin=6)
                self.assertEqual(zbar_decode(screen, quiet=0), url)
        # The bug this fixes: the plain form on a light terminal is inverted.
        screen = render_terminal(qr_to_terminal(URLS[4], colours=False), 'light', margin=6)
        self.assertIsNone(zbar_decode(screen, quiet=0))

    def test_the_command_line_block_decodes_on_both_themes(self):
        # The start-up block as printed into a pipe with --qr.
        import alsserve
        server = types.SimpleNamespace(port=8000, web_folder='/tmp/web', mode='watch',
                                       url='http://192.168.1.23:8000/', bind='127.0.0.1',
                                       displayed_address='192.168.1.23', title='', wifi=None)
        block = alsserve.startup_block(server, qr=True)
        code = '\n'.join(line[2:] for line in block.split('\n') if '\x1b[' in line)
        for theme in THEMES:
            with self.subTest(theme=theme):
                self.assertEqual(zbar_decode(render_terminal(code, theme, margin=6), quiet=0),
                                 server.url)

    def test_the_wifi_code_comes_first_and_decodes_on_both_themes(self):
        import alsserve
        wifi = alsserve.Wifi('Star;Party \u00e9toil\u00e9', 'p\\ss:w,rd"')
        server = types.SimpleNamespace(port=8000, web_folder='/tmp/web', mode='watch',
                                       url='http://10.42.0.1:8000/', bind='0.0.0.0',
                                       displayed_address='10.42.0.1', title='M42', wifi=wifi)
        block = alsserve.startup_block(server, qr=True)
        self.assertNotIn('ss:w,rd', block)
        codes, current = [], None
        for line in block.split('\n'):
            if line.strip() in ('1. Join the Wi-Fi', '2. Open the page'):
                current = []
                codes.append(current)
            elif current is not None and '\x1b[' in line:
                current.append(line[2:])
        self.assertEqual(len(codes), 2)
        for theme in THEMES:
            with self.subTest(theme=theme):
                decoded = [zbar_decode(render_terminal('\n'.join(code), theme, margin=6), quiet=0)
                           for code in codes]
                self.assertEqual(decoded, [wifi.payload(), server.url])

    def test_utf8_text_decodes(self):
        text = 'http://192.168.1.23:8000/M\u00fcsik/Caf\u00e9'
        self.assertEqual(zbar_decode(qr_matrix(text)), text)


if __name__ == '__main__':
    unittest.main()
