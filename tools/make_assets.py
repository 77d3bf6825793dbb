#!/usr/bin/env python3
"""Regenerate the binary viewer assets of alsserve (dev-time tool).

Writes, deterministically:
  assets/icons/{fullpage,home,zoomin,zoomout,download}_{rest,grouphover,hover,pressed}.png
  assets/favicon.ico                       (ICO holding 16x16 and 32x32 PNG images)
  assets/waiting.jpg                       (dark star field + "Waiting for ..." text)
  assets/demo/frame01.jpg .. frame06.jpg   (synthetic star field getting deeper)

The PNG and ICO files are written with the standard library only (zlib + struct).
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


GLYPHS = {
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
