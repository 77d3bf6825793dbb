"""A tiny baseline JPEG writer for test images made of flat 8x8 blocks.

Written from ITU-T T.81 (baseline sequential DCT, Huffman) and JFIF 1.02.
Every 8x8 block has one colour, so each block's DCT has only its DC term
(F(0,0) = 8 x (sample - 128)) and every AC term is zero (one end-of-block
code): no DCT, exact colours up to the YCbCr rounding. 4:4:4 sampling, all
quantisation steps 1, two small Huffman tables of our own (DC categories
0-11 as 4-bit codes; AC: only end-of-block, the 1-bit code 0).

    flat_jpeg(640, 480, lambda bx, by: (200, 40, 40))          # solid red
    quadrants_jpeg(640, 480, [(255,0,0), (0,255,0), (0,0,255), (255,255,0)])
"""

import struct


def _segment(marker, body):
    return struct.pack(">BBH", 0xFF, marker, len(body) + 2) + body


def _ycbcr(rgb):
    r, g, b = rgb
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = 128 - 0.168736 * r - 0.331264 * g + 0.5 * b
    cr = 128 + 0.5 * r - 0.418688 * g - 0.081312 * b
    return [min(255, max(0, int(round(v)))) for v in (y, cb, cr)]


class _Bits:
    def __init__(self):
        self.out = bytearray()
        self.acc = 0
        self.n = 0

    def put(self, value, length):
        for i in range(length - 1, -1, -1):
            self.acc = (self.acc << 1) | ((value >> i) & 1)
            self.n += 1
            if self.n == 8:
                self.out.append(self.acc)
                if self.acc == 0xFF:          # byte stuffing
                    self.out.append(0)
                self.acc = self.n = 0

    def flush(self):
        if self.n:                            # pad with 1-bits
            self.put((1 << (8 - self.n)) - 1, 8 - self.n)
        return bytes(self.out)


def flat_jpeg(width, height, colour_of_block):
    """A width x height JPEG; ``colour_of_block(bx, by)`` gives the (r, g, b)
    of the 8x8 block at block column bx, block row by."""
    if not (0 < width < 65536 and 0 < height < 65536):
        raise ValueError("bad size %dx%d" % (width, height))
    blocks_x, blocks_y = (width + 7) // 8, (height + 7) // 8
    jfif = b"JFIF\x00\x01\x02\x00" + struct.pack(">HHBB", 1, 1, 0, 0)
    dqt = b"\x00" + b"\x01" * 64
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(
        struct.pack(">BBB", cid, 0x11, 0) for cid in (1, 2, 3))
    dc_counts = [0, 0, 0, 12] + [0] * 12       # 12 codes of 4 bits: category k -> code k
    ac_counts = [1] + [0] * 15                 # one code of 1 bit: 0x00 (end of block)
    dht = (b"\x00" + bytes(dc_counts) + bytes(range(12)) +
           b"\x10" + bytes(ac_counts) + b"\x00")
    sos = struct.pack(">B", 3) + b"".join(struct.pack(">BB", cid, 0x00) for cid in (1, 2, 3)) + b"\x00\x3f\x00"
    bits = _Bits()
    previous = [0, 0, 0]
    cache = {}
    for by in range(blocks_y):
        for bx in range(blocks_x):
            rgb = tuple(colour_of_block(bx, by))
            if rgb not in cache:
                cache[rgb] = [8 * (v - 128) for v in _ycbcr(rgb)]
            for c, dc in enumerate(cache[rgb]):
                diff = dc - previous[c]
                previous[c] = dc
                magnitude = abs(diff)
                category = magnitude.bit_length()
                bits.put(category, 4)
                if category:
                    bits.put(diff if diff > 0 else diff + (1 << category) - 1, category)
                bits.put(0, 1)                 # end of block: all AC terms zero
    return (b"\xff\xd8" + _segment(0xE0, jfif) + _segment(0xDB, dqt) + _segment(0xC0, sof) +
            _segment(0xC4, dht) + _segment(0xDA, sos) + bits.flush() + b"\xff\xd9")


def solid_jpeg(width, height, rgb):
    return flat_jpeg(width, height, lambda bx, by: rgb)


def quadrants_jpeg(width, height, colours):
    """Four colours: top-left, top-right, bottom-left, bottom-right
    (width and height multiples of 16, so the halves fall on block edges)."""
    half_x, half_y = (width + 15) // 16, (height + 15) // 16
    return flat_jpeg(width, height, lambda bx, by: colours[(by >= half_y) * 2 + (bx >= half_x)])
