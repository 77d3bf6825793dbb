"""Interop check: a real client (ffmpeg) reads GET /stream.mjpg.

While images are published, ffmpeg reads 3 frames from the stream, as OBS's
Media Source or VLC would, and decodes each: three different pictures of
the published images' size. Needs Debian's ffmpeg (installed by .ci/run).

Run from the repository root:  .venv/bin/python -m unittest tests/interop/interop_stream.py -v
"""
import glob
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))
sys.path.insert(0, os.path.join(ROOT, "tests", "browser"))

import alsserve  # noqa: E402
from support import free_port, read  # noqa: E402
from viewer_support import jpeg_size  # noqa: E402

DEMO = sorted(glob.glob(os.path.join(ROOT, "assets", "demo", "*.jpg")))


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    return struct.unpack(">II", head[16:24])


class FfmpegStreamTest(unittest.TestCase):
    def test_ffmpeg_reads_three_new_images(self):
        ffmpeg = shutil.which("ffmpeg")
        self.assertIsNotNone(ffmpeg, "ffmpeg is not installed (apt-get install -y ffmpeg)")
        folder = tempfile.mkdtemp(prefix="alsserve-stream-")
        self.addCleanup(shutil.rmtree, folder, True)
        out = tempfile.mkdtemp(prefix="alsserve-frames-")
        self.addCleanup(shutil.rmtree, out, True)
        server = alsserve.ImageServer(folder, port=free_port(), bind="127.0.0.1", displayed_address="ip:127.0.0.1")
        with self.assertLogs("alsserve", "WARNING"):
            server.start()
        self.addCleanup(server.stop, 0)
        images = [read(path) for path in DEMO[:4]]
        server.publish_image(images[0])
        stop = threading.Event()

        def publisher():
            for image in images[1:]:
                if stop.wait(1.0):
                    return
                server.publish_image(image)

        proc = subprocess.Popen([ffmpeg, "-hide_banner", "-loglevel", "error", "-i",
                                 "http://127.0.0.1:%d/stream.mjpg" % server.port, "-frames:v", "3",
                                 "-vsync", "passthrough", os.path.join(out, "frame%d.png")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        thread = threading.Thread(target=publisher)
        thread.start()
        try:
            _, errors = proc.communicate(timeout=60)
        finally:
            stop.set()
            thread.join(10)
        self.assertEqual(proc.returncode, 0, errors.decode(errors="replace"))
        frames = sorted(glob.glob(os.path.join(out, "frame*.png")))
        self.assertEqual(len(frames), 3)
        self.assertEqual({png_size(frame) for frame in frames}, {jpeg_size(images[0])})
        decoded = [read(frame) for frame in frames]
        self.assertEqual(len(set(decoded)), 3, "three different pictures")


if __name__ == "__main__":
    unittest.main()
