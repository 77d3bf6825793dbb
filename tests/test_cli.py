"""Section 7: the command line, run as a real subprocess, and the watcher."""

import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

import threading
from pathlib import Path

from support import (ROOT, WSClient, alsserve, free_port, make_jpeg, make_png, read_response_head,
                     ws_handshake_request)

ASSETS_DIR = Path(ROOT) / "assets"


ESCAPES = re.compile("\x1b\\[[0-9;]*m")


def temporary_folder(test, prefix="alsserve-cli-"):
    folder = tempfile.mkdtemp(prefix=prefix)
    test.addCleanup(shutil.rmtree, folder, True)
    return folder


def cli_environment(cache):
    """The environment of a CLI run: the user's cache folder (watch mode's
    history) in a folder of the test, alsserve importable from any cwd."""
    env = dict(os.environ, XDG_CACHE_HOME=cache, PYTHONPATH=ROOT, PYTHONFAULTHANDLER="1")
    env.pop("PYTHONWARNINGS", None)
    return env


def run_cli(*args, timeout=20, cwd=ROOT, cache=None):
    return subprocess.run([sys.executable, "-m", "alsserve"] + list(args), cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env=cli_environment(cache or tempfile.gettempdir()))


class CLIProcess:
    """`python -m alsserve ...` in the background, its start-up block read.
    Watch mode on a new folder by default; als=True: ALS mode (no -d) in a
    new working folder, whose ./alsserve-web is then `folder`."""

    def __init__(self, test, *args, als=False, folder=None):
        self.port = free_port()
        self.cwd = temporary_folder(test)
        self.cache = temporary_folder(test)
        if als:
            self.folder, where = os.path.join(self.cwd, "alsserve-web"), []
        else:
            self.folder = folder or temporary_folder(test)
            where = ["-d", self.folder]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alsserve", "-p", str(self.port), "--address", "ip:127.0.0.1"]
            + where + list(args),
            cwd=self.cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=cli_environment(self.cache))
        test.addCleanup(self.kill)
        self.block = []
        deadline = time.monotonic() + 15
        for line in self.proc.stdout:
            self.block.append(line.rstrip("\n"))
            if line.startswith("Serving.") or time.monotonic() > deadline:
                break
        test.assertTrue(self.block and self.block[-1].startswith("Serving."),
                        "no start-up block: %r %s" % (self.block, self.proc.stderr.read() if self.proc.poll() is not None else ""))

    def ws(self, test):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        test.addCleanup(sock.close)
        sock.sendall(ws_handshake_request())
        status, _, rest = read_response_head(sock)
        test.assertEqual(status, 101)
        return WSClient(sock, rest)

    def stop(self, sig=signal.SIGINT, timeout=5):
        self.proc.send_signal(sig)
        start = time.monotonic()
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)       # the fault handler prints every thread
            out, err = self.proc.communicate()
            raise AssertionError("still running %.0f s after %s:\n%s" % (timeout, sig, err[-6000:]))
        return self.proc.returncode, time.monotonic() - start, out, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()


def count_messages(client, seconds, kind="new_image"):
    """How many text messages of `kind` arrive within `seconds`."""
    count, deadline = 0, time.monotonic() + seconds
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return count
        try:
            opcode, _, payload = client.recv_frame(timeout=remaining)
        except socket.timeout:
            return count
        if opcode == alsserve.Opcode.TEXT and json.loads(payload)["type"] == kind:
            count += 1


class OptionsTest(unittest.TestCase):
    def test_version(self):
        result = run_cli("--version")
        self.assertEqual(result.returncode, 0)
        self.assertEqual(result.stdout.strip(), "alsserve " + alsserve.__version__)

    def test_help_names_every_option_and_both_modes(self):
        result = run_cli("--help")
        self.assertEqual(result.returncode, 0)
        for option in ("--web-folder", "-d", "--directory", "--port", "-p", "--bind", "-b", "--image",
                       "--history", "--no-history", "--address", "--assets", "--watch",
                       "--demo", "--qr", "--list-addresses", "--quiet", "--verbose", "--version", "port"):
            self.assertIn(option, result.stdout)
        text = " ".join(result.stdout.split())
        self.assertIn("Watch mode (-d DIR)", text)
        self.assertIn("writes nothing at all into DIR", text)
        self.assertIn("ALS mode", text)

    def test_list_addresses(self):
        result = run_cli("--list-addresses")
        self.assertEqual(result.returncode, 0)
        lines = result.stdout.splitlines()
        self.assertEqual(lines[0].split(), ["ADDRESS", "INTERFACE", "WHAT", "IT", "IS"])
        rows = [line.split(None, 2) for line in lines[1:]]
        self.assertEqual([row[0] for row in rows], alsserve.list_ipv4_addresses())
        described = alsserve.describe_ipv4_addresses()
        self.assertEqual(rows, [[address, interface or "-", kind] for address, interface, kind in described])
        for address, interface, kind in rows:
            self.assertRegex(address, r"^\d+\.\d+\.\d+\.\d+$")
        self.assertEqual(rows[-1], ["127.0.0.1", "lo", "loopback (this machine only)"])

    def test_bad_values_exit_2_with_one_line(self):
        missing = os.path.join(tempfile.gettempdir(), "alsserve-no-such-folder-%d" % os.getpid())
        for args, word in ((["-d", missing], "does not exist"), (["-p", "80"], "1024-65535"),
                           (["--address", "ip:999.1.1.1"], "ip:"), (["--address", "lan"], "auto")):
            result = run_cli(*args)
            self.assertEqual(result.returncode, 2, (args, result.stderr))
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertIn(word, lines[0])
            self.assertNotIn("Traceback", result.stderr)

    def test_bad_option_exits_2(self):
        for args in (["--no-such-option"], ["-p", "eighty"], ["--demo-interval"]):
            result = run_cli(*args)
            self.assertEqual(result.returncode, 2)
            lines = result.stderr.strip().splitlines()
            self.assertEqual(len(lines), 1, result.stderr)
            self.assertTrue(lines[0].startswith("alsserve: error: "), lines[0])
        self.assertIn("unrecognized arguments: --no-such-option", run_cli("--no-such-option").stderr)

    def test_port_in_use_exits_2_with_one_line(self):
        port = free_port()
        folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, folder, True)
        with socket.socket() as holder:
            holder.bind(("0.0.0.0", port))
            holder.listen()
            result = run_cli("-d", folder, "-p", str(port))
            verbose = run_cli("-d", folder, "-p", str(port), "-v")
        self.assertEqual(result.returncode, 2)
        lines = result.stderr.strip().splitlines()
        self.assertEqual(len(lines), 1, result.stderr)
        self.assertIn("port %d" % port, lines[0])
        self.assertEqual(verbose.returncode, 2)
        self.assertIn("Traceback", verbose.stderr)     # -v shows the traceback


class RunTest(unittest.TestCase):
    def test_startup_block_and_sigint(self):
        cli = CLIProcess(self, "--no-qr", als=True)
        text = "\n".join(cli.block)
        self.assertIn("Web folder: %s (ALS mode)" % cli.folder, text)
        self.assertIn("Open:       http://127.0.0.1:%d/" % cli.port, text)
        for address in alsserve.list_ipv4_addresses():
            if address != "127.0.0.1":
                self.assertIn("Also:       http://%s:%d/" % (address, cli.port), text)
        self.assertTrue(os.path.exists(os.path.join(cli.folder, "index.html")))
        self.assertTrue(os.path.exists(os.path.join(cli.folder, "web_image.jpg")))
        client = cli.ws(self)
        code, elapsed, out, err = cli.stop(signal.SIGINT)
        self.assertEqual(code, 0, err)
        self.assertLess(elapsed, 4.0)
        self.assertIn("stopped", out)
        self.assertEqual(err.count("access is limited to this machine"), 1, err)    # said once
        opcode, _, payload = client.recv_frame()
        self.assertEqual(json.loads(payload), {"type": "disconnect"})

    def test_sigterm_exits_0(self):
        cli = CLIProcess(self, "--no-qr", "-q")
        code, elapsed, _, err = cli.stop(signal.SIGTERM)
        self.assertEqual(code, 0, err)
        self.assertNotIn("INFO", err)                   # -q: no request log, no info

    def test_the_stop_handler_takes_no_lock(self):
        # A handler runs wherever the main thread was, maybe holding a lock:
        # one it took too (an Event's set()) could deadlock the stop.
        requests = []
        self.addCleanup(alsserve._restore_signal_handlers, alsserve._install_signal_handlers(requests))
        handler = signal.getsignal(signal.SIGINT)
        lock_types = (type(threading.Lock()), type(threading.RLock()))
        taken = []

        def profile(_frame, event, argument):
            if event == "c_call" and isinstance(getattr(argument, "__self__", None), lock_types):
                taken.append(argument.__name__)
        sys.setprofile(profile)
        try:
            handler(signal.SIGINT, None)
        finally:
            sys.setprofile(None)
        self.assertEqual(requests, [signal.SIGINT])
        self.assertEqual(taken, [])

    def request(self, cli, path="/data.json"):
        with socket.create_connection(("127.0.0.1", cli.port), timeout=5) as sock:
            sock.sendall(b"GET " + path.encode() + b" HTTP/1.0\r\n\r\n")
            while sock.recv(4096):
                pass

    def test_request_log_only_with_verbose(self):
        cli = CLIProcess(self, "--no-qr", "-v", als=True)
        self.request(cli)
        _, _, _, err = cli.stop()
        self.assertRegex(err, r'127\.0\.0\.1:\d+ "GET /data.json" 200 \d+')
        cli = CLIProcess(self, "--no-qr", als=True)
        self.request(cli)
        _, _, _, err = cli.stop()
        self.assertNotIn("GET /data.json", err)

    def test_qr_code_in_block_is_drawn_in_explicit_colours(self):
        cli = CLIProcess(self, "--qr")       # forced into a pipe: colours all the same
        rows = [line for line in cli.block if "\x1b[38;5;16;48;5;231m" in line]
        self.assertGreater(len(rows), 10)
        self.assertTrue(all(set(ESCAPES.sub("", line).strip()) <= set("█▀▄ ") for line in rows))
        cli.stop()

    def test_demo_publishes_frames_and_notifies(self):
        cli = CLIProcess(self, "--demo", "--demo-interval", "0.5", "--no-qr")
        client = cli.ws(self)
        seen_images, seen_stacks = set(), set()
        deadline = time.monotonic() + 10
        while (len(seen_images) < 2 or len(seen_stacks) < 2) and time.monotonic() < deadline:
            opcode, _, payload = client.recv_frame(timeout=5)
            if json.loads(payload)["type"] != "new_image":
                continue
            with open(os.path.join(cli.folder, "web_image.jpg"), "rb") as f:
                seen_images.add(f.read())
            with open(os.path.join(cli.folder, "data.json")) as f:
                seen_stacks.add(json.load(f)["STACK_SIZE"])
        self.assertGreaterEqual(len(seen_images), 2)
        self.assertGreaterEqual(len(seen_stacks), 2)
        for image in seen_images:
            self.assertTrue(alsserve.check_jpeg(image))
        code, _, _, err = cli.stop()
        self.assertEqual(code, 0, err)

    def test_watch_notifies_once_for_slow_chunked_write(self):
        cli = CLIProcess(self, "--no-qr")
        client = cli.ws(self)
        image = make_jpeg(200000, b"\x42")
        with open(os.path.join(cli.folder, "web_image.jpg"), "wb") as f:
            for start in range(0, len(image), 50000):
                f.write(image[start:start + 50000])
                f.flush()
                time.sleep(0.6)                 # longer than two polls
        self.assertEqual(count_messages(client, 2.0), 1)

    def test_no_watch_does_not_notify(self):
        cli = CLIProcess(self, "--no-qr", "--no-watch")
        client = cli.ws(self)
        with open(os.path.join(cli.folder, "web_image.jpg"), "wb") as f:
            f.write(make_jpeg(1000))
        self.assertEqual(count_messages(client, 1.5), 0)


class FolderWatcherTest(unittest.TestCase):
    NOTHING = (None, False)

    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.image = os.path.join(self.folder, "web_image.jpg")
        self.metrics = os.path.join(self.folder, "data.json")
        with open(self.image, "wb") as f:
            f.write(make_jpeg(100))
        self.watcher = alsserve.FolderWatcher(self.folder)

    def write(self, name, data, mtime=None):
        path = os.path.join(self.folder, name)
        with open(path, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(path, (mtime, mtime))
        return path

    def test_existing_files_are_not_a_change(self):
        self.assertEqual(self.watcher.image[0], self.image)
        self.assertEqual(self.watcher.poll(0), self.NOTHING)
        self.assertEqual(self.watcher.poll(1), self.NOTHING)

    def test_change_reported_once_after_two_stable_polls(self):
        with open(self.metrics, "w") as f:
            f.write('{"STACK_SIZE": 1, "EXPO": "0:00:10"}')
        self.assertEqual(self.watcher.poll(0), self.NOTHING)
        self.assertEqual(self.watcher.poll(0.25), (None, True))
        self.assertEqual(self.watcher.poll(0.5), self.NOTHING)
        self.assertEqual(self.watcher.poll(0.75), self.NOTHING)

    def test_half_written_jpeg_waits_for_eoi(self):
        data = make_jpeg(3000)
        with open(self.image, "wb") as f:
            f.write(data[:1000])
            f.flush()
            self.assertEqual(self.watcher.poll(0), self.NOTHING)
            self.assertEqual(self.watcher.poll(0.25), self.NOTHING)   # stable but no EOI
            self.assertEqual(self.watcher.poll(0.5), self.NOTHING)
            f.write(data[1000:])
        self.assertEqual(self.watcher.poll(0.75), self.NOTHING)
        self.assertEqual(self.watcher.poll(1.0), (self.image, False))
        self.assertEqual(self.watcher.poll(1.25), self.NOTHING)

    def test_jpeg_without_eoi_accepted_when_still_long_enough(self):
        with open(self.image, "wb") as f:
            f.write(b"\xff\xd8not really a jpeg")
        self.assertEqual(self.watcher.poll(0), self.NOTHING)
        self.assertEqual(self.watcher.poll(0.25), self.NOTHING)
        self.assertEqual(self.watcher.poll(0.25 + alsserve.WATCH_UNSTABLE_ACCEPT), (self.image, False))

    def test_acknowledge_hides_our_own_publish(self):
        with open(self.image, "wb") as f:
            f.write(make_jpeg(500))
        self.watcher.acknowledge()
        self.assertEqual(self.watcher.poll(0), self.NOTHING)
        self.assertEqual(self.watcher.poll(0.25), self.NOTHING)

    def test_pattern_follows_the_newest_complete_png_not_the_name_order(self):
        watcher = alsserve.FolderWatcher(self.folder, "frame_*.png")
        self.assertIsNone(watcher.image)
        now = time.time()
        third = self.write("frame_003.png", make_png(900, b"3"), now - 30)
        self.assertEqual(watcher.poll(0), self.NOTHING)
        self.assertEqual(watcher.poll(0.25), (third, False))
        first = self.write("frame_001.png", make_png(1200, b"1")[:700], now - 10)      # newer, lower name
        self.assertEqual(watcher.poll(0.5), self.NOTHING)
        self.assertEqual(watcher.poll(0.75), self.NOTHING)     # no IEND yet
        self.write("frame_001.png", make_png(1200, b"1"), now - 10)
        self.assertEqual(watcher.poll(1.0), self.NOTHING)
        self.assertEqual(watcher.poll(1.25), (first, False))
        self.write("frame_000.png", make_png(800, b"0"), now - 60)    # older: not a new image
        self.write("other.png", make_png(800, b"x"), now)              # does not match
        self.write("frame_009.jpg", make_jpeg(800), now)                # does not match
        self.write(".frame_010.png", make_png(800), now)                # hidden
        for t in (1.5, 1.75, 2.0):
            self.assertEqual(watcher.poll(t), self.NOTHING)
        self.assertEqual(sorted(os.listdir(self.folder)), sorted(
            [".frame_010.png", "frame_000.png", "frame_001.png", "frame_003.png", "frame_009.jpg",
             "other.png", "web_image.jpg"]))

    def test_a_rename_of_the_same_file_is_announced_again(self):
        # A '*.jpg' pattern in ALS's folder sees ALZweb_image.jpg, then the
        # same file renamed onto web_image.jpg: the live path follows it.
        watcher = alsserve.FolderWatcher(self.folder, "*.jpg")
        temporary = self.write("ALZweb_image.jpg", make_jpeg(2000, b"t"), time.time() + 5)
        watcher.poll(0)
        self.assertEqual(watcher.poll(0.25), (temporary, False))
        os.replace(temporary, self.image)
        watcher.poll(0.5)
        self.assertEqual(watcher.poll(0.75), (self.image, False))


def folder_state(folder):
    """Every entry below folder: relative path -> (bytes or "dir", mtime_ns)."""
    state = {}
    for path, dirs, files in os.walk(folder):
        for name in dirs + files:
            full = os.path.join(path, name)
            st = os.lstat(full)
            content = "dir" if name in dirs else Path(full).read_bytes()
            state[os.path.relpath(full, folder)] = (content, st.st_mtime_ns, st.st_mode)
    return state


def get(port, path, host="127.0.0.1"):
    conn = http.client.HTTPConnection(host, port, timeout=5)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type"), response.read()
    finally:
        conn.close()


class WatchModeTest(unittest.TestCase):
    """Watch mode writes nothing into the user's folder, ever."""

    def user_folder(self):
        folder = temporary_folder(self, "alsserve-user-")
        files = {"index.html": b"<html>my own page</html>", "a.txt": b"notes",
                 "sub/b.txt": b"deeper", "sub/deep/c.fits": b"SIMPLE  =", "web_image.jpg": make_jpeg(5000, b"u"),
                 "data.json": b'{"STACK_SIZE": 7, "EXPO": "0:03:30"}'}
        for name, data in files.items():
            path = os.path.join(folder, name)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)
        os.utime(os.path.join(folder, "a.txt"), (1e9, 1e9))
        return folder, files

    def test_the_folder_is_untouched_after_start_stop_and_a_crash(self):
        folder, files = self.user_folder()
        before = folder_state(folder)
        for ending in ("SIGINT", "SIGKILL"):
            with self.subTest(ending=ending):
                cli = CLIProcess(self, "--no-qr", folder=folder)
                status, kind, page = get(cli.port, "/")
                self.assertEqual((status, kind), (200, "text/html; charset=utf-8"))
                self.assertEqual(page, (ASSETS_DIR / "index.html").read_bytes(), "our viewer wins")
                self.assertEqual(get(cli.port, "/viewer.js")[2], (ASSETS_DIR / "viewer.js").read_bytes())
                self.assertEqual(get(cli.port, "/icons/zoomin_rest.png")[0], 200)
                self.assertEqual(get(cli.port, "/web_image.jpg")[2], files["web_image.jpg"])
                self.assertEqual(get(cli.port, "/data.json")[2], files["data.json"])
                self.assertEqual(get(cli.port, "/a.txt")[2], b"notes")
                self.assertEqual(get(cli.port, "/sub/deep/c.fits")[0], 404)
                self.assertEqual(get(cli.port, "/demo/frame01.jpg")[0], 404)
                client = cli.ws(self)
                if ending == "SIGINT":
                    code, _, out, err = cli.stop()
                    self.assertEqual(code, 0, err)
                else:
                    cli.proc.kill()
                    cli.proc.communicate()
                self.assertEqual(folder_state(folder), before)
                # The history went to the user's cache folder, not into the folder.
                self.assertEqual(len(os.listdir(os.path.join(cli.cache, "alsserve"))), 1)
                client.sock.close()

    def test_no_metrics_unless_someone_writes_them(self):
        cli = CLIProcess(self, "--no-qr")
        self.assertEqual(get(cli.port, "/data.json")[0], 404)
        self.assertEqual(os.listdir(cli.folder), [])
        self.assertEqual(get(cli.port, "/web_image.jpg")[2], (ASSETS_DIR / "waiting.jpg").read_bytes())
        with open(os.path.join(cli.folder, "data.json"), "wb") as f:
            f.write(b'{"STACK_SIZE": 2, "EXPO": "0:01:00"}')
        self.assertEqual(get(cli.port, "/data.json")[2], b'{"STACK_SIZE": 2, "EXPO": "0:01:00"}')
        cli.stop()

    def test_a_failed_start_creates_nothing_anywhere(self):
        cwd, cache = temporary_folder(self), temporary_folder(self)
        folder, _ = self.user_folder()
        before = folder_state(folder)
        port = free_port()
        with socket.socket() as holder:
            holder.bind(("0.0.0.0", port))
            holder.listen()
            cases = [["-p", str(port)], ["-d", folder, "-p", str(port)], ["--demo", "-p", str(port)],
                     ["-d", folder, "--no-such-option"], ["-d", os.path.join(cwd, "missing")],
                     ["-d", folder, "-b", "10.255.255.1"], ["-p", "80"], ["-d", folder, "8001", "-p", "8002"],
                     ["--image", "*.png"], ["-d", folder, "--history", "-3"]]
            for args in cases:
                with self.subTest(args=args):
                    result = run_cli(*args, cwd=cwd, cache=cache)
                    self.assertEqual(result.returncode, 2, result.stderr)
                    self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
                    self.assertEqual(os.listdir(cwd), [], "created in the working folder")
                    self.assertEqual(os.listdir(cache), [], "created in the cache folder")
                    self.assertEqual(folder_state(folder), before)

    def test_pattern_serves_and_announces_the_newest_complete_image_once(self):
        cli = CLIProcess(self, "--no-qr", "--image", "frame_*.png")
        client = cli.ws(self)
        frames = [make_png(60000 + 1000 * i, bytes([i + 1])) for i in range(3)]
        names = ["frame_009.png", "frame_002.png", "frame_005.png"]       # written in this order
        served, stop = [], threading.Event()

        def downloader():
            while not stop.is_set():
                status, kind, body = get(cli.port, "/web_image.jpg")
                served.append((status, kind, body))

        reader = threading.Thread(target=downloader)
        reader.start()
        try:
            for name, data in zip(names, frames):
                with open(os.path.join(cli.folder, name), "wb") as f:
                    for start in range(0, len(data), 20000):
                        f.write(data[start:start + 20000])
                        f.flush()
                        time.sleep(0.3)
                announced = []
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and not announced:
                    opcode, _, payload = client.recv_frame(timeout=5)
                    message = json.loads(payload)
                    if message["type"] == "history_entry":
                        announced.append(message)
                self.assertEqual(len(announced), 1)
                self.assertEqual(get(cli.port, "/" + announced[0]["url"])[1:], ("image/png", data))
            self.assertEqual(count_messages(client, 1.0, "history_entry"), 0, "announced more than once")
        finally:
            stop.set()
            reader.join(10)
        bodies = [body for status, kind, body in served if status == 200]
        self.assertTrue(all(body in frames or body == (ASSETS_DIR / "waiting.jpg").read_bytes()
                            for body in bodies), "a half-written PNG was served")
        self.assertIn(frames[-1], bodies)
        self.assertTrue(all(kind == "image/png" for _, kind, body in served if body in frames))
        self.assertEqual(sorted(os.listdir(cli.folder)), sorted(names))
        cli.stop()


class HttpServerHabitsTest(unittest.TestCase):
    def test_positional_port_and_directory(self):
        folder = temporary_folder(self)
        port = free_port()
        proc = subprocess.Popen([sys.executable, "-m", "alsserve", "--directory", folder, str(port),
                                 "--no-qr", "--address", "ip:127.0.0.1"], cwd=ROOT,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=cli_environment(temporary_folder(self)))
        self.addCleanup(lambda: proc.poll() is None and proc.kill())
        block = []
        for line in proc.stdout:
            block.append(line)
            if line.startswith("Serving."):
                break
        self.assertIn("Open:       http://127.0.0.1:%d/" % port, "".join(block))
        self.assertIn("Web folder: %s (watch mode" % folder, "".join(block))
        self.assertEqual(get(port, "/")[0], 200)
        proc.send_signal(signal.SIGINT)
        self.assertEqual(proc.wait(5), 0)
        proc.communicate()

    def test_bind_to_one_address(self):
        try:
            with socket.socket() as probe:
                probe.bind(("127.0.0.2", 0))
        except OSError:
            self.skipTest("no 127.0.0.2 here")
        cli = CLIProcess(self, "--no-qr", "-b", "127.0.0.1")
        self.assertIn("Open:       http://127.0.0.1:%d/" % cli.port, "\n".join(cli.block))
        self.assertNotIn("Also:", "\n".join(cli.block))
        self.assertEqual(get(cli.port, "/")[0], 200)
        with self.assertRaises(ConnectionRefusedError):
            get(cli.port, "/", host="127.0.0.2")
        cli.stop()

    def test_displayed_address_follows_the_bind(self):
        cli = CLIProcess(self, "--no-qr", "-b", "127.0.0.1", "--address", "auto")
        self.assertIn("Open:       http://127.0.0.1:%d/" % cli.port, "\n".join(cli.block))
        cli.stop()


class NightOutputTest(unittest.TestCase):
    """What the terminal shows during a night: a line per new image, a
    summary when browsers come and go, never a line twice."""

    def test_default_output(self):
        cli = CLIProcess(self, "--no-qr")
        client = cli.ws(self)
        time.sleep(alsserve.BROWSER_SUMMARY_INTERVAL + 0.5)
        for i in range(2):
            alsserve.atomic_write(os.path.join(cli.folder, "web_image.jpg"), make_jpeg(2_000_000 + i, bytes([i])))
            time.sleep(1.0)
            for n in range(3):
                get(cli.port, "/web_image.jpg?timestamp=%d" % n)
        client.sock.close()
        time.sleep(alsserve.BROWSER_SUMMARY_INTERVAL + 0.5)
        code, _, out, err = cli.stop()
        self.assertEqual(code, 0)
        lines = [line for line in err.splitlines() if line.strip()]
        new_images = [line for line in lines if " new image " in line]
        self.assertEqual(len(new_images), 2, err)
        self.assertRegex(new_images[0], r"^\d\d:\d\d:\d\d new image web_image\.jpg \(2\.0 MB\), 1 browsers$")
        browsers = [line for line in lines if " browsers: " in line]
        self.assertEqual(browsers[0][9:], "browsers: 1 connected (1 joined, 0 left)")
        self.assertEqual(browsers[-1][9:], "browsers: 0 connected (0 joined, 1 left)")
        self.assertNotIn("GET", err)
        others = [line for line in lines if line not in new_images + browsers]
        self.assertEqual(others, ["%s WARNING: image server access is limited to this machine: the displayed "
                                  "address 127.0.0.1 is a loopback address. Connect to a network (or start "
                                  "a hotspot), then restart" % others[0][:8]] if others else [], err)
        everything = [l for l in (out + err).splitlines() if l.strip()]
        self.assertEqual(len(everything), len(set(everything)), "a line printed twice")

    def test_quiet_shows_warnings_only(self):
        cli = CLIProcess(self, "--no-qr", "-q")
        alsserve.atomic_write(os.path.join(cli.folder, "web_image.jpg"), make_jpeg(3000))
        time.sleep(1.0)
        _, _, _, err = cli.stop()
        self.assertEqual([line[9:18] for line in err.splitlines()], ["WARNING: "])


if __name__ == "__main__":
    unittest.main()
