#!/usr/bin/env python3
"""Regenerate the binary viewer assets of alsserve (dev-time tool).

Writes, deterministically:
  assets/icons/{fullpage,home,zoomin,zoomout,download}_{rest,grouphover,hover,pressed}.png
  assets/icons/{red,boost,awake,play,pause,reticle,compare,share}_rest.png   (the viewer's own buttons)
  assets/favicon.ico                       (ICO holding 16x16 and 32x32 PNG images)
  assets/keepawake.mp4                     (keep-the-screen-on video, see make_keepawake)
  assets/waiting.jpg                       (dark star field + "Waiting for ..." text)
  assets/demo/frame01.jpg .. frame06.jpg   (synthetic star field getting deeper)

The PNG, ICO and MP4 files are written with the standard library only (zlib + struct).
The JPEG files need an encoder: Pillow, used here only (never by alsserve.py):
    python3 -m venv /work/venv-tools && /work/venv-tools/bin/pip install pillow
    /work/venv-tools/bin/python tools/make_assets.py
Without Pillow the JPEG files are skipped (the icons are still written).
Every picture is drawn by this script; no third-party artwork is used.
"""

import argparse
import math
import os
import random
import struct
import sys
import zlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ASSETS = os.path.join(ROOT, "assets")

ICON_SIZE = 48
NOISE, SKY, QUAL = 0.005, 0.008, 76  # demo frames: noise, sky level, JPEG quality
ICON_NAMES = ("fullpage", "home", "zoomin", "zoomout", "download")
ALS_ICON_NAMES = ("fullpage", "home", "zoomin", "zoomout")
STATES = ("rest", "grouphover", "hover", "pressed")
TOGGLE_NAMES = ("red", "boost", "awake", "play", "pause", "reticle", "compare", "share")   # rest state only: CSS marks "on"


# --------------------------------------------------------------------------- PNG
def png_bytes(width, height, rgba_rows):
    """Encode an 8-bit RGBA PNG. rgba_rows: list of bytes objects (width*4 each)."""
    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + bytes(row) for row in rgba_rows)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))


def ico_bytes(pngs):
    """ICO container holding PNG images. pngs: list of (size, png_bytes)."""
    header = struct.pack("<HHH", 0, 1, len(pngs))
    offset = 6 + 16 * len(pngs)
    entries, blobs = b"", b""
    for size, data in pngs:
        dim = 0 if size >= 256 else size
        entries += struct.pack("<BBBBHHII", dim, dim, 0, 0, 1, 32, len(data), offset)
        blobs += data
        offset += len(data)
    return header + entries + blobs


# ------------------------------------------------------------- signed distances
def sd_segment(px, py, ax, ay, bx, by, r):
    dx, dy = bx - ax, by - ay
    t = ((px - ax) * dx + (py - ay) * dy) / float(dx * dx + dy * dy or 1)
    t = 0.0 if t < 0 else 1.0 if t > 1 else t
    return math.hypot(px - ax - t * dx, py - ay - t * dy) - r


def sd_ring(px, py, cx, cy, radius, half_width):
    return abs(math.hypot(px - cx, py - cy) - radius) - half_width


def sd_box(px, py, x0, y0, x1, y1):
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    hx, hy = (x1 - x0) / 2.0, (y1 - y0) / 2.0
    qx, qy = abs(px - cx) - hx, abs(py - cy) - hy
    outside = math.hypot(max(qx, 0.0), max(qy, 0.0))
    return outside + min(max(qx, qy), 0.0)


def sd_circle(px, py, cx, cy, r):
    return math.hypot(px - cx, py - cy) - r


def polyline(points, r):
    segs = list(zip(points, points[1:]))
    return lambda x, y: min(sd_segment(x, y, a[0], a[1], b[0], b[1], r) for a, b in segs)


def union(*shapes):
    return lambda x, y: min(s(x, y) for s in shapes)


# Icon glyphs, drawn on a 48x48 design grid.
def glyph_magnifier(sign):
    parts = [lambda x, y: sd_ring(x, y, 20.5, 20.5, 11.5, 1.9),
             lambda x, y: sd_segment(x, y, 29.5, 29.5, 39.5, 39.5, 2.9)]
    parts.append(lambda x, y: sd_segment(x, y, 15.0, 20.5, 26.0, 20.5, 1.6))
    if sign == "+":
        parts.append(lambda x, y: sd_segment(x, y, 20.5, 15.0, 20.5, 26.0, 1.6))
    return union(*parts)


def glyph_home():
    roof = polyline([(7.0, 24.5), (24.0, 9.0), (41.0, 24.5)], 1.9)
    walls = polyline([(13.0, 21.5), (13.0, 39.0), (35.0, 39.0), (35.0, 21.5)], 1.6)
    door = lambda x, y: sd_box(x, y, 21.0, 29.0, 27.0, 39.0)
    return union(roof, walls, door)


def glyph_fullpage():
    lo, hi, arm = 8.5, 39.5, 10.0
    corners = []
    for cx, sx in ((lo, 1), (hi, -1)):
        for cy, sy in ((lo, 1), (hi, -1)):
            corners.append(polyline([(cx + sx * arm, cy), (cx, cy), (cx, cy + sy * arm)], 1.8))
    inner = lambda x, y: abs(sd_box(x, y, 17.0, 17.0, 31.0, 31.0)) - 0.9
    return union(*corners, inner)


def glyph_download():
    shaft = lambda x, y: sd_segment(x, y, 24.0, 7.0, 24.0, 30.0, 1.8)
    head = polyline([(14.5, 21.0), (24.0, 30.5), (33.5, 21.0)], 1.8)
    tray = polyline([(9.0, 31.0), (9.0, 39.5), (39.0, 39.5), (39.0, 31.0)], 1.6)
    return union(shaft, head, tray)


def sd_convex(px, py, points):
    """Signed distance (approximate outside, exact inside) to a convex polygon, clockwise."""
    d = -1e9
    for (ax, ay), (bx, by) in zip(points, points[1:] + points[:1]):
        ex, ey = bx - ax, by - ay
        length = math.hypot(ex, ey)
        d = max(d, ((px - ax) * ey - (py - ay) * ex) / length)
    return d


def glyph_red():
    """A filter disc: a ring holding a filled disc (the image seen through red)."""
    ring = lambda x, y: sd_ring(x, y, 24.0, 24.0, 15.0, 1.9)
    disc = lambda x, y: sd_circle(x, y, 24.0, 24.0, 9.5)
    return union(ring, disc)


def glyph_boost():
    """A sun: brighter faint objects."""
    parts = [lambda x, y: sd_circle(x, y, 24.0, 24.0, 7.0)]
    for k in range(8):
        a = k * math.pi / 4
        c, s = math.cos(a), math.sin(a)
        parts.append(lambda x, y, c=c, s=s: sd_segment(x, y, 24 + 12 * c, 24 + 12 * s, 24 + 17.5 * c, 24 + 17.5 * s, 1.8))
    return union(*parts)


def glyph_awake():
    """An open eye: the screen stays awake."""
    upper = lambda x, y: sd_circle(x, y, 24.0, 37.0, 21.0)
    lower = lambda x, y: sd_circle(x, y, 24.0, 11.0, 21.0)
    outline = lambda x, y: abs(max(upper(x, y), lower(x, y))) - 1.8
    pupil = lambda x, y: sd_circle(x, y, 24.0, 24.0, 5.5)
    return union(outline, pupil)


def glyph_play():
    tri = [(17.0, 11.0), (37.0, 24.0), (17.0, 37.0)]
    return lambda x, y: sd_convex(x, y, tri) - 0.8


def glyph_pause():
    return union(lambda x, y: sd_box(x, y, 15.0, 12.0, 21.0, 36.0) - 0.8,
                 lambda x, y: sd_box(x, y, 27.0, 12.0, 33.0, 36.0) - 0.8)


def glyph_reticle():
    """A crosshair with a circle: the centre of the screen."""
    parts = [lambda x, y: sd_ring(x, y, 24.0, 24.0, 9.0, 1.6)]
    for ax, ay, bx, by in ((24, 5, 24, 17), (24, 31, 24, 43), (5, 24, 17, 24), (31, 24, 43, 24)):
        parts.append(lambda x, y, a=(ax, ay, bx, by): sd_segment(x, y, a[0], a[1], a[2], a[3], 1.5))
    return union(*parts)


def glyph_compare():
    """A frame split by a divider, its left part filled: before and after."""
    frame = lambda x, y: abs(sd_box(x, y, 8.0, 12.0, 40.0, 36.0)) - 1.6
    divider = lambda x, y: sd_segment(x, y, 24.0, 6.0, 24.0, 42.0, 1.8)
    before = lambda x, y: sd_box(x, y, 8.0, 12.0, 24.0, 36.0)
    return union(frame, divider, before)


def glyph_share():
    """Three nodes joined: the page passed on to another phone."""
    nodes = [(34.0, 12.0), (14.0, 24.0), (34.0, 36.0)]
    parts = [lambda x, y, c=c: sd_circle(x, y, c[0], c[1], 5.0) for c in nodes]
    parts.append(polyline([nodes[0], nodes[1], nodes[2]], 1.6))
    return union(*parts)


GLYPHS = {
    "reticle": glyph_reticle,
    "compare": glyph_compare,
    "share": glyph_share,
    "red": glyph_red,
    "boost": glyph_boost,
    "awake": glyph_awake,
    "play": glyph_play,
    "pause": glyph_pause,
    "zoomin": lambda: glyph_magnifier("+"),
    "zoomout": lambda: glyph_magnifier("-"),
    "home": glyph_home,
    "fullpage": glyph_fullpage,
    "download": glyph_download,
}

# (glyph RGBA, plate RGBA or None) per button state: dim red/grey, never white.
STATE_STYLE = {
    "rest": ((150, 72, 68, 215), None),
    "grouphover": ((178, 80, 72, 235), None),
    "hover": ((215, 86, 70, 255), (40, 6, 6, 150)),
    "pressed": ((240, 110, 88, 255), (80, 10, 10, 200)),
}


def coverage(shape, x, y, grow=0.0, samples=4):
    """Fraction of the pixel (x, y) covered by shape (optionally dilated by grow)."""
    hit = 0
    step = 1.0 / samples
    for j in range(samples):
        sy = y + (j + 0.5) * step
        for i in range(samples):
            if shape(x + (i + 0.5) * step, sy) <= grow:
                hit += 1
    return hit / float(samples * samples)


def over(dst, src):
    """Porter-Duff 'over' on (r, g, b, a) tuples with float alpha 0..1."""
    sr, sg, sb, sa = src
    dr, dg, db, da = dst
    oa = sa + da * (1 - sa)
    if oa <= 0:
        return (0.0, 0.0, 0.0, 0.0)
    f = lambda s, d: (s * sa + d * da * (1 - sa)) / oa
    return (f(sr, dr), f(sg, dg), f(sb, db), oa)


def render_icon(name, state, size=ICON_SIZE):
    glyph = GLYPHS[name]()
    colour, plate_colour = STATE_STYLE[state]
    scale = 48.0 / size
    rounded = lambda u, v: sd_box(u, v, 6.0, 6.0, 42.0, 42.0) - 4.0
    rows = []
    for y in range(size):
        row = bytearray()
        for x in range(size):
            px = (0.0, 0.0, 0.0, 0.0)
            if plate_colour is not None:
                c = coverage(lambda u, v: rounded(u * scale, v * scale), x, y, samples=2)
                if c:
                    px = over(px, plate_colour[:3] + (plate_colour[3] / 255.0 * c,))
            sh = lambda u, v: glyph(u * scale, v * scale)
            halo = coverage(sh, x, y, grow=1.6)
            if halo:
                px = over(px, (0, 0, 0, 0.55 * halo))
            c = coverage(sh, x, y)
            if c:
                px = over(px, colour[:3] + (colour[3] / 255.0 * c,))
            r, g, b, a = px
            row += bytes((int(round(r)), int(round(g)), int(round(b)), int(round(a * 255))))
        rows.append(bytes(row))
    return png_bytes(size, size, rows)


def render_favicon(size):
    s = size / 32.0
    rows = []
    disc = lambda x, y: sd_circle(x, y, 16.0, 16.0, 15.0)
    star = union(lambda x, y: sd_circle(x, y, 16.0, 16.0, 3.2),
                 lambda x, y: sd_segment(x, y, 16.0, 4.5, 16.0, 27.5, 0.9),
                 lambda x, y: sd_segment(x, y, 4.5, 16.0, 27.5, 16.0, 0.9))
    small = union(lambda x, y: sd_circle(x, y, 8.5, 23.0, 1.4),
                  lambda x, y: sd_circle(x, y, 24.0, 8.0, 1.2))
    for y in range(size):
        row = bytearray()
        for x in range(size):
            px = (0.0, 0.0, 0.0, 0.0)
            c = coverage(lambda u, v: disc(u / s, v / s), x, y)
            if c:
                px = over(px, (34, 6, 8, c))
            c = coverage(lambda u, v: sd_ring(u / s, v / s, 16.0, 16.0, 14.3, 0.8), x, y)
            if c:
                px = over(px, (120, 40, 40, c))
            c = coverage(lambda u, v: small(u / s, v / s), x, y)
            if c:
                px = over(px, (170, 70, 64, c))
            c = coverage(lambda u, v: star(u / s, v / s), x, y)
            if c:
                px = over(px, (225, 90, 72, c))
            r, g, b, a = px
            row += bytes((int(round(r)), int(round(g)), int(round(b)), int(round(a * 255))))
        rows.append(bytes(row))
    return png_bytes(size, size, rows)


# --------------------------------------------------------------- star fields
def star_catalogue(rng, width, height, count, max_mag=8.0):
    """Stars as (x, y, flux, (tr, tg, tb)): many faint ones, few bright ones."""
    stars = []
    for _ in range(count):
        # magnitudes with counts rising ~10**(0.3 m) between 0 and max_mag
        u = rng.random()
        m = math.log10(1 + u * (10 ** (0.3 * max_mag) - 1)) / 0.3
        flux = 10 ** (-0.4 * m)
        temp = rng.random()
        tint = (0.85 + 0.3 * temp, 0.9 + 0.08 * rng.random(), 1.15 - 0.3 * temp)
        stars.append((rng.uniform(0, width), rng.uniform(0, height), flux, tint))
    return stars


def render_field(width, height, stars, depth, noise_rng, nebula=True, noise_sigma=0.012,
                 sky=0.02, gain=1.0):
    """Render a stretched star field as RGB bytes.

    depth: number of stacked sub-exposures; noise falls with sqrt(depth), and stars
    fainter than the noise become visible as the stack gets deeper.
    """
    n = width * height
    lin_r = [sky] * n
    lin_g = [sky] * n
    lin_b = [sky * 1.1] * n
    if nebula:
        blobs = ((0.68, 0.42, 0.20, 0.045, (1.0, 0.35, 0.40)),
                 (0.30, 0.70, 0.26, 0.025, (0.55, 0.60, 1.0)))
        for idx in range(n):
            y, x = divmod(idx, width)
            fx, fy = x / float(width), y / float(height)
            add_r = add_g = add_b = 0.0
            for bx, by, rad, amp, tint in blobs:
                d2 = ((fx - bx) ** 2 + (fy - by) ** 2 * 0.6) / (rad * rad)
                if d2 < 9:
                    v = amp * math.exp(-d2)
                    add_r += v * tint[0]
                    add_g += v * tint[1]
                    add_b += v * tint[2]
            lin_r[idx] += add_r
            lin_g[idx] += add_g
            lin_b[idx] += add_b
    # stars: a gaussian PSF; brighter stars look a bit larger after stretching
    for sx, sy, flux, tint in stars:
        sigma = 0.9 + 0.5 * math.sqrt(flux)
        rad = int(3 * sigma + 2)
        peak = gain * flux * 2.2
        ix0, iy0 = int(sx), int(sy)
        for y in range(max(0, iy0 - rad), min(height, iy0 + rad + 1)):
            dy2 = (y + 0.5 - sy) ** 2
            base = y * width
            for x in range(max(0, ix0 - rad), min(width, ix0 + rad + 1)):
                v = peak * math.exp(-((x + 0.5 - sx) ** 2 + dy2) / (2 * sigma * sigma))
                if v > 1e-4:
                    lin_r[base + x] += v * tint[0]
                    lin_g[base + x] += v * tint[1]
                    lin_b[base + x] += v * tint[2]
    # stretch through a lookup table (asinh-like, dark background)
    lut_size = 4096
    lut = bytearray(lut_size)
    for i in range(lut_size):
        v = i / float(lut_size - 1) * 1.5
        s = math.asinh(max(v - 0.006, 0.0) * 60.0) / math.asinh(1.5 * 60.0)
        lut[i] = max(0, min(255, int(round(255 * s))))
    k = (lut_size - 1) / 1.5
    sigma = noise_sigma / math.sqrt(depth)
    out = bytearray(n * 3)
    gauss = noise_rng.gauss
    # noise in 2x2 cells keeps the JPEG files small while looking like sensor noise
    cell_w = (width + 1) // 2
    for y in range(height):
        if y % 2 == 0:
            cells = [gauss(0.0, sigma) for _ in range(cell_w)]
        base = y * width
        for x in range(width):
            i = base + x
            nz = cells[x >> 1]
            o = i * 3
            r = (lin_r[i] + nz) * k
            g = (lin_g[i] + nz) * k
            b = (lin_b[i] + nz) * k
            out[o] = lut[0 if r < 0 else lut_size - 1 if r >= lut_size else int(r)]
            out[o + 1] = lut[0 if g < 0 else lut_size - 1 if g >= lut_size else int(g)]
            out[o + 2] = lut[0 if b < 0 else lut_size - 1 if b >= lut_size else int(b)]
    return bytes(out)


def save_jpeg(Image, path, width, height, rgb, quality):
    img = Image.frombytes("RGB", (width, height), rgb)
    img.save(path, "JPEG", quality=quality, optimize=True, progressive=False, subsampling=2)


def make_waiting(Image, ImageDraw, ImageFont, path):
    width, height = 1280, 720
    rng = random.Random(20240611)
    stars = [st for st in star_catalogue(rng, width, height, 700)  # keep the text area clear
             if not (200 < st[0] < width - 200 and height // 2 - 90 < st[1] < height // 2 + 75)]
    rgb = render_field(width, height, stars, depth=64, noise_rng=random.Random(5),
                       nebula=False, noise_sigma=0.004, sky=0.004, gain=0.45)
    img = Image.frombytes("RGB", (width, height), rgb)
    draw = ImageDraw.Draw(img)
    title = "Waiting for the first stacked image\u2026"
    sub = "This page updates by itself as soon as the first image is ready."
    font = ImageFont.load_default(size=44)
    small = ImageFont.load_default(size=24)
    for text, fnt, colour, y in ((title, font, (190, 64, 58), height // 2 - 40),
                                 (sub, small, (120, 62, 60), height // 2 + 28)):
        box = draw.textbbox((0, 0), text, font=fnt)
        x = (width - (box[2] - box[0])) // 2 - box[0]
        draw.text((x, y - (box[3] - box[1]) // 2 - box[1]), text, font=fnt, fill=colour)
    img.save(path, "JPEG", quality=82, optimize=True, subsampling=2)


def make_demo(Image, folder):
    width, height = 1024, 768
    stars = star_catalogue(random.Random(424242), width, height, 9000, max_mag=10.0)
    os.makedirs(folder, exist_ok=True)
    for k in range(1, 7):
        depth = 2 ** (k - 1)
        rgb = render_field(width, height, stars, depth=depth,
                           noise_rng=random.Random(1000 + k), noise_sigma=NOISE, sky=SKY)
        save_jpeg(Image, os.path.join(folder, "frame%02d.jpg" % k), width, height, rgb, QUAL)

# ------------------------------------------------------- keep-awake video (MP4)
# A black 128x128 H.264 video with a silent AAC-LC track, 10 s long, written
# from ISO/IEC 14496-10 (H.264), 14496-3 (AAC), 14496-12/-14/-15 (MP4, avcC).
# Browsers keep the screen on while a video plays: Blink when it is visible
# and large (the viewer lays it under the image), WebKit only when it has an
# audio track and is not muted, hence the silent one.
VIDEO_SIZE = 128            # pixels, square; 16x16 macroblocks
VIDEO_SECONDS = 10          # one frame a second: an IDR picture, then P pictures
AUDIO_RATE = 44100


class BitWriter:
    """MSB-first bit string with the Exp-Golomb codes of H.264 section 9.1."""

    def __init__(self):
        self.bits = []

    def u(self, n, value):
        self.bits.extend((value >> i) & 1 for i in range(n - 1, -1, -1))

    def ue(self, value):
        x = value + 1
        self.u(x.bit_length() - 1, 0)
        self.u(x.bit_length(), x)

    def se(self, value):
        self.ue(2 * value - 1 if value > 0 else -2 * value)

    def align(self):
        while len(self.bits) % 8:
            self.bits.append(0)

    def trailing(self):             # rbsp_trailing_bits()
        self.bits.append(1)
        self.align()

    def raw(self, data):
        assert len(self.bits) % 8 == 0
        for byte in data:
            self.u(8, byte)

    def tobytes(self):
        assert len(self.bits) % 8 == 0
        return bytes(int("".join(map(str, self.bits[i:i + 8])), 2) for i in range(0, len(self.bits), 8))


def nal_unit(ref_idc, kind, rbsp):
    """NAL header plus emulation prevention (7.4.1: no 00 00 0x with x <= 3)."""
    out, zeros = bytearray([(ref_idc << 5) | kind]), 0
    for byte in rbsp:
        if zeros >= 2 and byte <= 3:
            out.append(3)
            zeros = 0
        out.append(byte)
        zeros = zeros + 1 if byte == 0 else 0
    return bytes(out)


def h264_parameter_sets(mbs):
    sps = BitWriter()
    sps.u(8, 66)                    # profile_idc: Baseline
    sps.u(8, 0xC0)                  # constraint_set0 and set1: Constrained Baseline
    sps.u(8, 10)                    # level_idc 1.0
    sps.ue(0)                       # seq_parameter_set_id
    sps.ue(0)                       # log2_max_frame_num_minus4: frame_num has 4 bits
    sps.ue(2)                       # pic_order_cnt_type 2: output order = decoding order
    sps.ue(1)                       # max_num_ref_frames
    sps.u(1, 0)                     # gaps_in_frame_num_value_allowed_flag
    sps.ue(mbs - 1)                 # pic_width_in_mbs_minus1
    sps.ue(mbs - 1)                 # pic_height_in_map_units_minus1
    sps.u(1, 1)                     # frame_mbs_only_flag
    sps.u(1, 1)                     # direct_8x8_inference_flag
    sps.u(1, 0)                     # frame_cropping_flag
    sps.u(1, 0)                     # vui_parameters_present_flag
    sps.trailing()
    pps = BitWriter()
    pps.ue(0)                       # pic_parameter_set_id
    pps.ue(0)                       # seq_parameter_set_id
    pps.u(1, 0)                     # entropy_coding_mode_flag: CAVLC
    pps.u(1, 0)                     # bottom_field_pic_order_in_frame_present_flag
    pps.ue(0)                       # num_slice_groups_minus1
    pps.ue(0)                       # num_ref_idx_l0_default_active_minus1
    pps.ue(0)                       # num_ref_idx_l1_default_active_minus1
    pps.u(1, 0)                     # weighted_pred_flag
    pps.u(2, 0)                     # weighted_bipred_idc
    pps.se(0)                       # pic_init_qp_minus26
    pps.se(0)                       # pic_init_qs_minus26
    pps.se(0)                       # chroma_qp_index_offset
    pps.u(1, 0)                     # deblocking_filter_control_present_flag
    pps.u(1, 0)                     # constrained_intra_pred_flag
    pps.u(1, 0)                     # redundant_pic_cnt_present_flag
    pps.trailing()
    return nal_unit(3, 7, sps.tobytes()), nal_unit(3, 8, pps.tobytes())


def h264_idr_picture(mbs):
    """One I slice: macroblock 0 is I_PCM black (Y 16, Cb = Cr = 128); every
    other one is I_16x16 DC prediction without residual, so it copies its
    neighbours' black. The coeff_token of the Intra16x16 DC block is the
    nC >= 8 code next to the PCM macroblock (nN = 16 there, 9.2.1) and the
    0 <= nC < 2 code elsewhere (Table 9-5, TotalCoeff 0)."""
    b = BitWriter()
    b.ue(0)                         # first_mb_in_slice
    b.ue(7)                         # slice_type: I (all slices of the picture)
    b.ue(0)                         # pic_parameter_set_id
    b.u(4, 0)                       # frame_num
    b.ue(0)                         # idr_pic_id
    b.u(1, 0)                       # no_output_of_prior_pics_flag
    b.u(1, 0)                       # long_term_reference_flag
    b.se(0)                         # slice_qp_delta
    for addr in range(mbs * mbs):
        if addr == 0:
            b.ue(25)                # mb_type I_PCM
            b.align()               # pcm_alignment_zero_bit
            b.raw(bytes([16]) * 256 + bytes([128]) * 128)
            continue
        b.ue(3)                     # mb_type I_16x16_2_0_0: DC prediction, no coded blocks
        b.ue(0)                     # intra_chroma_pred_mode: DC
        b.se(0)                     # mb_qp_delta
        next_to_pcm = addr == 1 or (addr == mbs and mbs > 1)
        if next_to_pcm:
            b.u(6, 0b000011)        # coeff_token, 8 <= nC: TrailingOnes 0, TotalCoeff 0
        else:
            b.u(1, 1)               # coeff_token, 0 <= nC < 2: TrailingOnes 0, TotalCoeff 0
    b.trailing()
    return nal_unit(3, 5, b.tobytes())


def h264_skip_picture(mbs, frame_num):
    """A P slice whose macroblocks are all skipped: a copy of the previous picture."""
    b = BitWriter()
    b.ue(0)                         # first_mb_in_slice
    b.ue(5)                         # slice_type: P (all slices of the picture)
    b.ue(0)                         # pic_parameter_set_id
    b.u(4, frame_num % 16)          # frame_num
    b.u(1, 0)                       # num_ref_idx_active_override_flag
    b.u(1, 0)                       # ref_pic_list_modification_flag_l0
    b.u(1, 0)                       # adaptive_ref_pic_marking_mode_flag
    b.se(0)                         # slice_qp_delta
    b.ue(mbs * mbs)                 # mb_skip_run: the whole picture
    b.trailing()
    return nal_unit(2, 1, b.tobytes())


def aac_silent_frame():
    """raw_data_block() of AAC-LC (14496-3 4.4.2): one single_channel_element
    with max_sfb 0 (no spectral data at all: silence), then ID_END."""
    b = BitWriter()
    b.u(3, 0)                       # id_syn_ele: ID_SCE
    b.u(4, 0)                       # element_instance_tag
    b.u(8, 100)                     # global_gain (unused without bands)
    b.u(1, 0)                       # ics_reserved_bit
    b.u(2, 0)                       # window_sequence: ONLY_LONG_SEQUENCE
    b.u(1, 0)                       # window_shape
    b.u(6, 0)                       # max_sfb
    b.u(1, 0)                       # predictor_data_present
    b.u(1, 0)                       # pulse_data_present
    b.u(1, 0)                       # tns_data_present
    b.u(1, 0)                       # gain_control_data_present
    b.u(3, 7)                       # id_syn_ele: ID_END
    b.align()
    return b.tobytes()


def audio_specific_config(rate):
    index = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000).index(rate)
    b = BitWriter()
    b.u(5, 2)                       # audioObjectType: AAC LC
    b.u(4, index)                   # samplingFrequencyIndex
    b.u(4, 1)                       # channelConfiguration: mono
    b.u(1, 0)                       # frameLengthFlag: 1024 samples
    b.u(1, 0)                       # dependsOnCoreCoder
    b.u(1, 0)                       # extensionFlag
    b.align()
    return b.tobytes()


def box(kind, *payload):
    data = b"".join(payload)
    return struct.pack(">I", 8 + len(data)) + kind + data


def full_box(kind, version, flags, *payload):
    return box(kind, struct.pack(">I", (version << 24) | flags), *payload)


def descriptor(tag, data):
    assert len(data) < 128
    return bytes([tag, len(data)]) + data


MATRIX = struct.pack(">9I", 0x10000, 0, 0, 0, 0x10000, 0, 0, 0, 0x40000000)


def sample_table(entry, count, delta, sizes, offset, sync=None):
    if len(set(sizes)) == 1:
        stsz = full_box(b"stsz", 0, 0, struct.pack(">II", sizes[0], count))
    else:
        stsz = full_box(b"stsz", 0, 0, struct.pack(">II", 0, count), struct.pack(">%dI" % count, *sizes))
    parts = [full_box(b"stsd", 0, 0, struct.pack(">I", 1), entry),
             full_box(b"stts", 0, 0, struct.pack(">III", 1, count, delta))]
    if sync is not None:
        parts.append(full_box(b"stss", 0, 0, struct.pack(">I", len(sync)), *[struct.pack(">I", s) for s in sync]))
    parts += [full_box(b"stsc", 0, 0, struct.pack(">IIII", 1, 1, count, 1)), stsz,
              full_box(b"stco", 0, 0, struct.pack(">II", 1, offset))]
    return box(b"stbl", *parts)


def track(track_id, handler, name, timescale, duration_ms, media_duration, media_header, stbl,
          volume=0, width=0, height=0):
    tkhd = full_box(b"tkhd", 0, 3, struct.pack(">IIIII", 0, 0, track_id, 0, duration_ms),
                    bytes(8), struct.pack(">hhhH", 0, 0, volume, 0), MATRIX,
                    struct.pack(">II", width << 16, height << 16))
    mdhd = full_box(b"mdhd", 0, 0, struct.pack(">IIII", 0, 0, timescale, media_duration),
                    struct.pack(">HH", 0x55C4, 0))          # language "und"
    hdlr = full_box(b"hdlr", 0, 0, struct.pack(">I", 0), handler, bytes(12), name + b"\0")
    dinf = box(b"dinf", full_box(b"dref", 0, 0, struct.pack(">I", 1), full_box(b"url ", 0, 1)))
    return box(b"trak", tkhd, box(b"mdia", mdhd, hdlr, box(b"minf", media_header, dinf, stbl)))


def make_keepawake():
    mbs = VIDEO_SIZE // 16
    sps, pps = h264_parameter_sets(mbs)
    pictures = [h264_idr_picture(mbs)] + [h264_skip_picture(mbs, n) for n in range(1, VIDEO_SECONDS)]
    video = [struct.pack(">I", len(p)) + p for p in pictures]        # 4-byte NAL lengths
    silence = aac_silent_frame()
    audio_count = -(-VIDEO_SECONDS * AUDIO_RATE // 1024)
    duration_ms = VIDEO_SECONDS * 1000
    avcc = box(b"avcC", bytes([1, 66, 0xC0, 10, 0xFF, 0xE1]), struct.pack(">H", len(sps)), sps,
               bytes([1]), struct.pack(">H", len(pps)), pps)
    avc1 = box(b"avc1", bytes(6), struct.pack(">H", 1), bytes(16),
               struct.pack(">HHIIIH", VIDEO_SIZE, VIDEO_SIZE, 0x480000, 0x480000, 0, 1),
               bytes([9]) + b"alsserve " + bytes(22), struct.pack(">Hh", 24, -1), avcc)
    config = descriptor(0x04, bytes([0x40, 0x15]) + struct.pack(">BHII", 0, 0, 8000, 8000)
                        + descriptor(0x05, audio_specific_config(AUDIO_RATE)))
    esds = full_box(b"esds", 0, 0, descriptor(0x03, struct.pack(">HB", 0, 0) + config
                                                + descriptor(0x06, bytes([2]))))
    mp4a = box(b"mp4a", bytes(6), struct.pack(">H", 1), bytes(8),
               struct.pack(">HHHHI", 1, 16, 0, 0, AUDIO_RATE << 16), esds)

    def movie(video_offset, audio_offset):
        vtrak = track(1, b"vide", b"alsserve keep-awake", 1000, duration_ms, duration_ms,
                      full_box(b"vmhd", 0, 1, bytes(8)),
                      sample_table(avc1, len(video), 1000, [len(v) for v in video], video_offset, sync=[1]),
                      width=VIDEO_SIZE, height=VIDEO_SIZE)
        atrak = track(2, b"soun", b"alsserve silence", AUDIO_RATE, duration_ms, audio_count * 1024,
                      full_box(b"smhd", 0, 0, bytes(4)),
                      sample_table(mp4a, audio_count, 1024, [len(silence)] * audio_count, audio_offset),
                      volume=0x100)
        mvhd = full_box(b"mvhd", 0, 0, struct.pack(">IIII", 0, 0, 1000, duration_ms),
                        struct.pack(">IH", 0x10000, 0x100), bytes(10), MATRIX, bytes(24), struct.pack(">I", 3))
        return box(b"moov", mvhd, vtrak, atrak)

    ftyp = box(b"ftyp", b"isom", struct.pack(">I", 0x200), b"isomiso2avc1mp41")
    head = len(ftyp) + len(movie(0, 0)) + 8                            # + mdat header
    video_bytes = b"".join(video)
    moov = movie(head, head + len(video_bytes))
    return ftyp + moov + box(b"mdat", video_bytes, silence * audio_count)


def write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=ASSETS, help="assets folder (default: repo assets/)")
    ap.add_argument("--skip-jpeg", action="store_true", help="only write icons and favicon")
    args = ap.parse_args(argv)
    out = args.out
    for name in ICON_NAMES:
        for state in STATES:
            write(os.path.join(out, "icons", "%s_%s.png" % (name, state)), render_icon(name, state))
    for name in TOGGLE_NAMES:
        write(os.path.join(out, "icons", "%s_rest.png" % name), render_icon(name, "rest"))
    write(os.path.join(out, "keepawake.mp4"), make_keepawake())
    write(os.path.join(out, "favicon.ico"),
          ico_bytes([(16, render_favicon(16)), (32, render_favicon(32))]))
    print("icons and favicon written to", out)
    if args.skip_jpeg:
        return 0
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError:
        print("Pillow is not installed: JPEG files skipped (see the module docstring)",
              file=sys.stderr)
        return 1
    make_waiting(Image, ImageDraw, ImageFont, os.path.join(out, "waiting.jpg"))
    print("waiting.jpg written")
    make_demo(Image, os.path.join(out, "demo"))
    print("demo frames written")
    return 0


if __name__ == "__main__":
    sys.exit(main())
