"""A tiny PNG decoder on the standard library (zlib), for browser screenshots.

Written from the PNG specification (ISO/IEC 15948, W3C PNG 2nd edition):
chunks with CRC, IHDR, PLTE, tRNS, IDAT, IEND; the five scanline filters;
bit depth 8 (and 16, reduced to 8) for grey, grey+alpha, RGB, RGBA and
palette images. Interlaced (Adam7) images are refused: no browser writes
them for a WebDriver screenshot.

    image = decode(png_bytes)
    image.width, image.height, image.pixel(x, y) -> (r, g, b, a)
    image.region_stats(x, y, w, h) -> {"mean": (r, g, b), "luma": ..., ...}
"""

import struct
import zlib

SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}


class PNGError(ValueError):
    pass


class Image:
    """Decoded pixels as RGBA bytes, row-major, 4 bytes per pixel."""

    def __init__(self, width, height, rgba):
        self.width = width
        self.height = height
        self.rgba = rgba

    @property
    def size(self):
        return self.width, self.height

    def pixel(self, x, y):
        if not (0 <= x < self.width and 0 <= y < self.height):
            raise IndexError("pixel (%d, %d) outside %dx%d" % (x, y, self.width, self.height))
        i = 4 * (y * self.width + x)
        return tuple(self.rgba[i:i + 4])

    def region_stats(self, x, y, w, h):
        """Mean colour, mean luma (Rec. 601), max luma and the share of pixels
        brighter than luma 60 in the rectangle (clipped to the image)."""
        x0, y0 = max(0, int(x)), max(0, int(y))
        x1, y1 = min(self.width, int(x + w)), min(self.height, int(y + h))
        if x1 <= x0 or y1 <= y0:
            raise ValueError("empty region %r in a %dx%d image" % ((x, y, w, h), self.width, self.height))
        sr = sg = sb = 0
        bright = 0
        top = 0.0
        n = (x1 - x0) * (y1 - y0)
        stride = 4 * self.width
        for row in range(y0, y1):
            line = self.rgba[row * stride + 4 * x0:row * stride + 4 * x1]
            r, g, b = line[0::4], line[1::4], line[2::4]
            sr += sum(r)
            sg += sum(g)
            sb += sum(b)
            for luma in map(lambda p, q, s: 0.299 * p + 0.587 * q + 0.114 * s, r, g, b):
                if luma > 60:
                    bright += 1
                if luma > top:
                    top = luma
        mean = (sr / n, sg / n, sb / n)
        return {"mean": mean, "luma": 0.299 * mean[0] + 0.587 * mean[1] + 0.114 * mean[2],
                "max": top, "bright": bright / n, "pixels": n}

    def crop(self, x, y, w, h):
        stride = 4 * self.width
        rows = [self.rgba[r * stride + 4 * x:r * stride + 4 * (x + w)] for r in range(y, y + h)]
        return Image(w, h, b"".join(rows))


def chunks(data):
    """(type, body) of each chunk, CRCs checked."""
    if data[:8] != SIGNATURE:
        raise PNGError("not a PNG (bad signature)")
    i = 8
    while i < len(data):
        if i + 12 > len(data):
            raise PNGError("truncated chunk at byte %d" % i)
        length, kind = struct.unpack(">I4s", data[i:i + 8])
        body = data[i + 8:i + 8 + length]
        if len(body) != length or i + 12 + length > len(data):
            raise PNGError("truncated %r chunk" % kind)
        crc = struct.unpack(">I", data[i + 8 + length:i + 12 + length])[0]
        if zlib.crc32(kind + body) & 0xFFFFFFFF != crc:
            raise PNGError("bad CRC in %r chunk" % kind)
        yield kind, body
        i += 12 + length
        if kind == b"IEND":
            return
    raise PNGError("no IEND chunk")


def header(data):
    """(width, height, bit depth, colour type, interlace) from IHDR."""
    kind, body = next(chunks(data))
    if kind != b"IHDR" or len(body) != 13:
        raise PNGError("first chunk is not IHDR")
    width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
    return width, height, depth, colour, interlace


def filter_types(data):
    """{filter type: rows} of a PNG (0 None, 1 Sub, 2 Up, 3 Average, 4 Paeth)."""
    width, height, depth, colour, interlace = header(data)
    raw = zlib.decompress(b"".join(body for kind, body in chunks(data) if kind == b"IDAT"))
    stride = 1 + (width * CHANNELS[colour] * depth + 7) // 8
    counts = {}
    for row in range(height):
        counts[raw[row * stride]] = counts.get(raw[row * stride], 0) + 1
    return counts


def _unfilter(raw, width, height, bpp):
    """Undo the per-scanline filters; returns the filtered-out bytes, row by row."""
    stride = width * bpp
    out = bytearray(stride * height)
    prev = bytearray(stride)
    pos = 0
    for y in range(height):
        kind = raw[pos]
        line = bytearray(raw[pos + 1:pos + 1 + stride])
        pos += 1 + stride
        if len(line) != stride:
            raise PNGError("image data too short at row %d" % y)
        if kind == 0:
            pass
        elif kind == 1:       # Sub
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:       # Up
            line = bytearray(map(lambda a, b: (a + b) & 0xFF, line, prev))
        elif kind == 3:       # Average
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:       # Paeth
            for i in range(stride):
                if i >= bpp:
                    a, c = line[i - bpp], prev[i - bpp]
                else:
                    a = c = 0
                b = prev[i]
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                if pa <= pb and pa <= pc:
                    pred = a
                elif pb <= pc:
                    pred = b
                else:
                    pred = c
                line[i] = (line[i] + pred) & 0xFF
        else:
            raise PNGError("unknown filter type %d at row %d" % (kind, y))
        out[y * stride:(y + 1) * stride] = line
        prev = line
    return out


def decode(data):
    """Decode a PNG into an Image of RGBA bytes."""
    width = height = depth = colour = None
    palette = None
    transparency = None
    idat = []
    for kind, body in chunks(data):
        if kind == b"IHDR":
            width, height, depth, colour, compression, filtering, interlace = struct.unpack(">IIBBBBB", body)
            if colour not in CHANNELS:
                raise PNGError("bad colour type %d" % colour)
            if depth not in (8, 16) or (colour == 3 and depth != 8):
                raise PNGError("bit depth %d (colour type %d) not supported" % (depth, colour))
            if compression or filtering:
                raise PNGError("unknown compression or filter method")
            if interlace:
                raise PNGError("interlaced PNG not supported")
        elif kind == b"PLTE":
            palette = body
        elif kind == b"tRNS":
            transparency = body
        elif kind == b"IDAT":
            idat.append(body)
    if width is None:
        raise PNGError("no IHDR")
    if not idat:
        raise PNGError("no IDAT")
    channels = CHANNELS[colour]
    bpp = channels * depth // 8
    try:
        raw = zlib.decompress(b"".join(idat))
    except zlib.error as error:
        raise PNGError("bad image data: %s" % error) from None
    if len(raw) < height * (1 + width * bpp):
        raise PNGError("image data too short: %d bytes for %dx%d" % (len(raw), width, height))
    pixels = _unfilter(raw, width, height, bpp)
    if depth == 16:              # keep the high byte of each sample
        pixels = pixels[0::2]
    n = width * height
    if colour == 6:
        rgba = bytes(pixels)
    else:
        rgba = bytearray(4 * n)
        if colour == 2:
            rgba[0::4], rgba[1::4], rgba[2::4] = pixels[0::3], pixels[1::3], pixels[2::3]
            rgba[3::4] = b"\xff" * n
        elif colour == 0:
            rgba[0::4] = rgba[1::4] = rgba[2::4] = pixels
            rgba[3::4] = b"\xff" * n
        elif colour == 4:
            rgba[0::4] = rgba[1::4] = rgba[2::4] = pixels[0::2]
            rgba[3::4] = pixels[1::2]
        else:                    # palette
            if palette is None:
                raise PNGError("palette image without PLTE")
            alpha = bytearray(b"\xff" * 256)
            if transparency:
                alpha[:len(transparency)] = transparency
            entries = len(palette) // 3
            if max(pixels, default=0) >= entries:
                raise PNGError("palette index out of range")
            table = [palette[3 * k:3 * k + 3] + bytes((alpha[k],)) for k in range(entries)]
            rgba = bytearray(b"".join(table[k] for k in pixels))
        rgba = bytes(rgba)
    return Image(width, height, rgba)
