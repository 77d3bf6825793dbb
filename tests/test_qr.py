"""Unit tests of the QR code encoder (stdlib only, offline).

Known values are quoted from ISO/IEC 18004 (format information table C.1,
version information table D.1, Table 9 codeword counts) and from public
tutorials (the "HELLO WORLD" 1-M and "PagedOut!" 1-M worked examples).
"""
import os
import random
import re
import sys
import unittest
from unittest import mock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from alsserve import qr_matrix, qr_to_terminal  # noqa: E402
# Internal helpers of the QR section, for the known-answer tests.
from alsserve import (_qr_base, _qr_codewords, _qr_format_bits,  # noqa: E402
                      _qr_penalty, _qr_rs_remainder)

# Format information for level M, masks 0-7, after the 0x5412 XOR (Table C.1).
FORMAT_M = ['101010000010010', '101000100100101', '101111001111100',
            '101101101001011', '100010111111001', '100000011001110',
            '100111110010111', '100101010100000']
# Version information (Table D.1).
VERSION_INFO = {7: '000111110010010100', 8: '001000010110111100',
                9: '001001101010011001', 10: '001010010011010011'}
# Level M byte-mode capacity (Table 7) and codeword counts (Table 9).
CAPACITY = [None, 14, 26, 42, 62, 84, 106, 122, 152, 180, 213]
TOTAL_CODEWORDS = [None, 26, 44, 70, 100, 134, 172, 196, 242, 292, 346]
REMAINDER_BITS = [None, 0, 7, 7, 7, 7, 7, 0, 0, 0, 0]
# (EC codewords per block, data codewords of each block), level M.
BLOCKS = [None, (10, [16]), (16, [28]), (26, [44]), (18, [32] * 2),
          (24, [43] * 2), (16, [27] * 4), (18, [31] * 4),
          (22, [38] * 2 + [39] * 2), (22, [36] * 3 + [37] * 2),
          (26, [43] * 4 + [44])]
ALIGN = [None, [], [6, 18], [6, 22], [6, 26], [6, 30], [6, 34],
         [6, 22, 38], [6, 24, 42], [6, 26, 46], [6, 28, 50]]
MASKS = [lambda r, c: (r + c) % 2 == 0, lambda r, c: r % 2 == 0,
         lambda r, c: c % 3 == 0, lambda r, c: (r + c) % 3 == 0,
         lambda r, c: (r // 2 + c // 3) % 2 == 0,
         lambda r, c: (r * c) % 2 + (r * c) % 3 == 0,
         lambda r, c: ((r * c) % 2 + (r * c) % 3) % 2 == 0,
         lambda r, c: ((r + c) % 2 + (r * c) % 3) % 2 == 0]


def text_of_version(v, filler='http://192.168.1.23:8000/files/x?y=z&'):
    """An ASCII text that just fits version v (its full capacity)."""
    return (filler * 10)[:CAPACITY[v]]


def gf_mul(a, b):
    """GF(256) product by shift-and-add, independent of the encoder's tables."""
    p = 0
    while b:
        if b & 1:
            p ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return p


def syndromes(codeword_block, ec):
    """Values of the block polynomial at alpha^0..alpha^(ec-1); all zero
    exactly when the EC codewords are right."""
    out, alpha = [], 1
    for _ in range(ec):
        acc = 0
        for c in codeword_block:
            acc = gf_mul(acc, alpha) ^ c
        out.append(acc)
        alpha = gf_mul(alpha, 2)
    return out


def format_string(m, copy):
    """The 15 format bits, most significant first, read from one copy."""
    n = len(m)
    if copy == 1:
        cells = [(8, c) for c in (0, 1, 2, 3, 4, 5, 7, 8)] + \
                [(r, 8) for r in (7, 5, 4, 3, 2, 1, 0)]
    else:
        cells = [(r, 8) for r in range(n - 1, n - 8, -1)] + \
                [(8, c) for c in range(n - 8, n)]
    return ''.join('1' if m[r][c] else '0' for r, c in cells)


def function_map(v):
    """True where a module belongs to a function pattern or reserved area."""
    n = 17 + 4 * v
    f = [[False] * n for _ in range(n)]

    def fill(r0, r1, c0, c1):
        for r in range(max(r0, 0), min(r1, n)):
            for c in range(max(c0, 0), min(c1, n)):
                f[r][c] = True
    fill(0, 9, 0, 9)            # finder, separator, format bits
    fill(0, 9, n - 8, n)
    fill(n - 8, n, 0, 9)        # includes the dark module
    fill(6, 7, 0, n)            # timing
    fill(0, n, 6, 7)
    for r in ALIGN[v]:
        for c in ALIGN[v]:
            if (r, c) not in ((6, 6), (6, n - 7), (n - 7, 6)):
                fill(r - 2, r + 3, c - 2, c + 3)
    if v >= 7:
        fill(0, 6, n - 11, n - 8)
        fill(n - 11, n - 8, 0, 6)
    return f


def decode(m):
    """A small reader for our own codes: format -> unmask -> codewords ->
    RS syndromes must be zero -> byte-mode text (with optional ECI)."""
    n = len(m)
    v = (n - 17) // 4
    mask = FORMAT_M.index(format_string(m, 1))
    f = function_map(v)
    bits, right, upward = [], n - 1, True
    while right > 0:
        if right == 6:
            right -= 1
        rows = range(n - 1, -1, -1) if upward else range(n)
        for r in rows:
            for c in (right, right - 1):
                if not f[r][c]:
                    bits.append(m[r][c] != MASKS[mask](r, c))
        right -= 2
        upward = not upward
    words = [int(''.join('1' if b else '0' for b in bits[i:i + 8]), 2)
             for i in range(0, len(bits) - 7, 8)]
    ec, sizes = BLOCKS[v]
    data = [[] for _ in sizes]
    it = iter(words)
    for i in range(max(sizes)):
        for j, size in enumerate(sizes):
            if i < size:
                data[j].append(next(it))
    ecs = [[] for _ in sizes]
    for i in range(ec):
        for e in ecs:
            e.append(next(it))
    for d, e in zip(data, ecs):
        if any(syndromes(d + e, ec)):
            raise AssertionError('bad EC codewords')
    stream = ''.join(format(w, '08b') for d in data for w in d)
    if stream.startswith('0111'):  # ECI designator (one byte form)
        assert stream[4:12] == format(26, '08b'), 'ECI is not UTF-8'
        stream = stream[12:]
    assert stream[:4] == '0100', 'not byte mode'
    width = 16 if v >= 10 else 8
    count = int(stream[4:4 + width], 2)
    body = stream[4 + width:4 + width + 8 * count]
    return bytes(int(body[i:i + 8], 2) for i in range(0, len(body), 8)).decode()


class ReedSolomon(unittest.TestCase):
    def test_hello_world_1m(self):
        # Alphanumeric "HELLO WORLD" at 1-M: data codewords and their 10 EC
        # codewords, as given in the well-known tutorial example.
        data = [32, 91, 11, 120, 209, 114, 220, 77, 67, 64, 236, 17, 236, 17,
                236, 17]
        self.assertEqual(_qr_rs_remainder(data, 10),
                         [196, 35, 39, 119, 235, 215, 231, 226, 93, 23])

    def test_syndromes_vanish(self):
        rnd = random.Random(1)
        for ec in (7, 10, 16, 18, 22, 24, 26, 30):
            data = [rnd.randrange(256) for _ in range(rnd.randrange(1, 60))]
            self.assertEqual(syndromes(data + _qr_rs_remainder(data, ec), ec),
                             [0] * ec)

    def test_pagedout_data_codewords(self):
        # "PagedOut!" in byte mode at 1-M: mode, length, data, terminator and
        # 0xEC/0x11 pad codewords (published worked example).
        words = _qr_codewords(b'PagedOut!', 1)
        self.assertEqual(words[:16], [64, 149, 6, 22, 118, 86, 68, 247, 87, 66,
                                      16, 236, 17, 236, 17, 236])
        self.assertEqual(len(words), 26)
        self.assertEqual(syndromes(words, 10), [0] * 10)


class Structure(unittest.TestCase):
    def test_format_bits_table(self):
        for mask, expected in enumerate(FORMAT_M):
            self.assertEqual(format(_qr_format_bits(mask), '015b'), expected)

    def test_format_information_in_matrix(self):
        for v in (1, 7):
            for mask, expected in enumerate(FORMAT_M):
                m = qr_matrix(text_of_version(v), mask=mask)
                self.assertEqual(format_string(m, 1), expected)
                self.assertEqual(format_string(m, 2), expected)

    def test_version_information(self):
        for v, expected in VERSION_INFO.items():
            m = qr_matrix(text_of_version(v))
            n = len(m)
            # Bit i (0 = least significant) sits at row i//3 and column
            # n-11+i%3 in the top-right block; transposed bottom-left.
            top = ''.join('1' if m[i // 3][n - 11 + i % 3] else '0'
                          for i in range(17, -1, -1))
            left = ''.join('1' if m[n - 11 + i % 3][i // 3] else '0'
                           for i in range(17, -1, -1))
            self.assertEqual(top, expected, 'version %d' % v)
            self.assertEqual(left, expected, 'version %d' % v)

    def test_sizes_for_versions_1_to_10(self):
        for v in range(1, 11):
            smallest = 'h' * (CAPACITY[v - 1] + 1 if v > 1 else 1)
            for text in (text_of_version(v), smallest):
                m = qr_matrix(text)
                self.assertEqual(len(m), 21 + 4 * (v - 1), (v, len(text)))
                self.assertTrue(all(len(row) == len(m) for row in m))
                self.assertTrue(all(isinstance(x, bool) for row in m
                                    for x in row))

    def test_codeword_capacity_of_layout(self):
        for v in range(1, 11):
            _, fn = _qr_base(v)
            free = sum(not x for row in fn for x in row)
            self.assertEqual(divmod(free, 8),
                             (TOTAL_CODEWORDS[v], REMAINDER_BITS[v]))
            self.assertEqual(fn, function_map(v))

    def test_finder_patterns(self):
        for v in (1, 2, 7, 10):
            m = qr_matrix(text_of_version(v))
            n = len(m)
            for r0, c0 in ((0, 0), (0, n - 7), (n - 7, 0)):
                for dr in range(7):
                    for dc in range(7):
                        ring = max(abs(dr - 3), abs(dc - 3))
                        self.assertEqual(m[r0 + dr][c0 + dc], ring != 2)
            for i in range(8):  # light separators
                for r, c in ((7, i), (i, 7), (7, n - 1 - i), (i, n - 8),
                             (n - 8, i), (n - 1 - i, 7)):
                    self.assertFalse(m[r][c], (v, r, c))

    def test_alignment_patterns(self):
        for v in (2, 6, 7, 10):
            m = qr_matrix(text_of_version(v))
            n = len(m)
            centres = [(r, c) for r in ALIGN[v] for c in ALIGN[v]
                       if (r, c) not in ((6, 6), (6, n - 7), (n - 7, 6))]
            self.assertEqual(len(centres), {2: 1, 6: 1, 7: 6, 10: 6}[v])
            for r, c in centres:
                for dr in range(-2, 3):
                    for dc in range(-2, 3):
                        self.assertEqual(m[r + dr][c + dc],
                                         max(abs(dr), abs(dc)) != 1)

    def test_timing_patterns_alternate(self):
        for v in range(1, 11):
            for mask in (None, 0, 5):
                m = qr_matrix(text_of_version(v), mask=mask)
                n = len(m)
                self.assertEqual([m[6][i] for i in range(8, n - 8)],
                                 [i % 2 == 0 for i in range(8, n - 8)])
                self.assertEqual([m[i][6] for i in range(8, n - 8)],
                                 [i % 2 == 0 for i in range(8, n - 8)])

    def test_dark_module(self):
        for v in range(1, 11):
            for mask in range(8):
                m = qr_matrix(text_of_version(v), mask=mask)
                self.assertTrue(m[len(m) - 8][8])


class Encoding(unittest.TestCase):
    def test_round_trip_all_versions_and_masks(self):
        for v in range(1, 11):
            for mask in (None,) + tuple(range(8)):
                text = text_of_version(v)
                self.assertEqual(decode(qr_matrix(text, mask=mask)), text)

    def test_round_trip_short_and_utf8(self):
        for text in ('', 'a', 'http://10.42.0.1:8000/',
                     'http://192.168.1.23:8000/M\u00fcsik/Caf\u00e9',
                     '\u00e9' * 106):  # 212 bytes + ECI: fills version 10
            self.assertEqual(decode(qr_matrix(text)), text)

    def test_lowest_penalty_mask_is_chosen(self):
        for text in ('http://10.42.0.1:8000/', text_of_version(5),
                     text_of_version(8)):
            scores = [_qr_penalty(qr_matrix(text, mask=k)) for k in range(8)]
            chosen = FORMAT_M.index(format_string(qr_matrix(text), 1))
            self.assertEqual(scores[chosen], min(scores))

    def test_penalty_rules_on_known_grids(self):
        # All light 21x21: N1 42 lines * (21-2); N2 400 blocks * 3; N3 none;
        # N4 50% off -> 10 * 10.
        light = [[False] * 21 for _ in range(21)]
        self.assertEqual(_qr_penalty(light), 42 * 19 + 400 * 3 + 100)
        # Checkerboard: no runs, no blocks, no finder look-alikes, 50% dark.
        board = [[(r + c) % 2 == 0 for c in range(21)] for r in range(21)]
        self.assertEqual(_qr_penalty(board), 0)

    def test_too_long(self):
        self.assertEqual(len(qr_matrix('x' * 213)), 57)
        with self.assertRaises(ValueError):
            qr_matrix('x' * 214)
        with self.assertRaises(ValueError):
            qr_matrix('x' + '\u00e9' * 106)  # 213 bytes + ECI header
        with self.assertRaises(ValueError):
            qr_matrix('x', mask=8)


# What a terminal shows: the default colours of its theme (foreground,
# background; True = dark), and the two xterm colours the code uses.
THEMES = {'dark': (False, True), 'light': (True, False)}
XTERM_DARK, XTERM_LIGHT = 16, 231


def render_terminal(out, theme, margin=4):
    """The module grid (True = dark) a terminal of that theme shows for
    qr_to_terminal's output, with `margin` cells of its background around,
    as a camera sees the screen."""
    default_fg, default_bg = THEMES[theme]
    rows = []
    for line in out.split('\n'):
        fg, bg = default_fg, default_bg
        top, bottom, i = [], [], 0
        while i < len(line):
            if line.startswith('\x1b[', i):
                end = line.index('m', i)
                codes = [int(c) for c in line[i + 2:end].split(';') if c]
                if codes == [0]:
                    fg, bg = default_fg, default_bg
                k = 0
                while k < len(codes):
                    if codes[k] in (38, 48) and codes[k + 1] == 5:
                        dark = {XTERM_DARK: True, XTERM_LIGHT: False}[codes[k + 2]]
                        if codes[k] == 38:
                            fg = dark
                        else:
                            bg = dark
                        k += 3
                    else:
                        k += 1
                i = end + 1
                continue
            ch = line[i]
            top.append({'\u2588': fg, '\u2580': fg, '\u2584': bg, ' ': bg}[ch])
            bottom.append({'\u2588': fg, '\u2580': bg, '\u2584': fg, ' ': bg}[ch])
            i += 1
        rows += [top, bottom]
    width = max(len(r) for r in rows) + 2 * margin
    pad = [default_bg] * margin
    grid = [[default_bg] * width for _ in range(margin)]
    grid += [pad + r + [default_bg] * (width - margin - len(r)) for r in rows]
    return grid + [[default_bg] * width for _ in range(margin)]


class Terminal(unittest.TestCase):
    def test_same_code_on_dark_and_light_terminals(self):
        for text in ('http://10.42.0.1:8000/', 'a', text_of_version(10)):
            m = qr_matrix(text)
            out = qr_to_terminal(text)
            lines = out.split('\n')
            self.assertEqual(len(lines), (len(m) + 4 + 1) // 2)
            self.assertTrue(all(line.endswith('\x1b[0m') for line in lines))
            shown = [render_terminal(out, theme, margin=0) for theme in THEMES]
            self.assertEqual(shown[0], shown[1], 'the theme changes the code')
            grid = shown[0]
            for r in range(len(m) + 4):
                for c in range(len(m) + 4):
                    inside = 2 <= r < 2 + len(m) and 2 <= c < 2 + len(m)
                    self.assertEqual(grid[r][c], inside and m[r - 2][c - 2], (r, c))
            self.assertEqual(grid[-1], [False] * (len(m) + 4), 'odd row count: the last half is light')

    def test_as_small_as_before(self):
        text = 'http://192.168.1.23:8000/'
        plain = qr_to_terminal(text, colours=False)
        coloured = qr_to_terminal(text)
        strip = re.compile('\x1b\\[[0-9;]*m')
        self.assertEqual([len(strip.sub('', line)) for line in coloured.split('\n')],
                         [len(line) for line in plain.split('\n')])
        # The colours are set once per line.
        self.assertLessEqual(len(coloured.encode('utf-8')),
                             len(plain.encode('utf-8')) + 30 * len(plain.split('\n')))

    def test_plain_form_for_consoles_without_colours(self):
        for text, quiet in (('http://10.42.0.1:8000/', 2), ('a', 0),
                            (text_of_version(10), 4)):
            m = qr_matrix(text)
            out = qr_to_terminal(text, quiet=quiet, colours=False)
            lines = out.split('\n')
            size = len(m) + 2 * quiet
            self.assertEqual(len(lines), (size + 1) // 2)
            self.assertTrue(all(len(line) == size for line in lines))
            self.assertTrue(set(out) <= set('\u2588\u2580\u2584 \n'))
            # On a dark terminal (light blocks on black) it is the code.
            grid = render_terminal(out, 'dark', margin=0)
            for r in range(size):
                for c in range(size):
                    inside = quiet <= r < quiet + len(m) and quiet <= c < quiet + len(m)
                    self.assertEqual(grid[r][c], inside and m[r - quiet][c - quiet], (r, c))
        self.assertEqual(qr_to_terminal('http://192.168.1.23:8000/', colours=False).split('\n')[0],
                         '\u2588' * (25 + 4))

    def test_windows_console_without_escape_sequences_gets_the_plain_form(self):
        import alsserve
        tty = mock.Mock(isatty=lambda: True)
        self.assertFalse(alsserve.terminal_has_colours(tty, 'nt'))     # no ctypes.windll here
        self.assertTrue(alsserve.terminal_has_colours(mock.Mock(isatty=lambda: False), 'nt'))
        self.assertTrue(alsserve.terminal_has_colours(tty))


if __name__ == '__main__':
    unittest.main()
