"""Section 7: the command line, run as a real subprocess, and the watcher."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

from support import ROOT, WSClient, alsserve, free_port, make_jpeg, read_response_head, ws_handshake_request


def run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "alsserve"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


class CLIProcess:
    """`python -m alsserve ...` in the background, its start-up block read."""

    def __init__(self, test, *args):
        self.port = free_port()
        self.folder = tempfile.mkdtemp(prefix="alsserve-cli-")
        test.addCleanup(shutil.rmtree, self.folder, True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "alsserve", "-d", self.folder, "-p", str(self.port),
             "--address", "ip:127.0.0.1"] + list(args),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
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
        out, err = self.proc.communicate(timeout=timeout)
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

    def test_help_names_every_option(self):
        result = run_cli("--help")
        self.assertEqual(result.returncode, 0)
        for option in ("--web-folder", "-d", "--port", "-p", "--address", "--assets", "--watch",
                       "--no-watch", "--demo", "--qr", "--no-qr", "--list-addresses", "--quiet",
                       "--verbose", "--version"):
            self.assertIn(option, result.stdout)

    def test_list_addresses(self):
        result = run_cli("--list-addresses")
        self.assertEqual(result.returncode, 0)
        lines = result.stdout.split()
        self.assertTrue(lines)
        for line in lines:
            self.assertRegex(line, r"^\d+\.\d+\.\d+\.\d+$")
        self.assertEqual(lines, alsserve.list_ipv4_addresses())
        self.assertEqual(lines[-1], "127.0.0.1")

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
        cli = CLIProcess(self, "--no-qr")
        text = "\n".join(cli.block)
        self.assertIn("Web folder: %s" % cli.folder, text)
        self.assertIn("Open:       http://127.0.0.1:%d/" % cli.port, text)
        self.assertIn("access is limited to this machine", text)
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
        opcode, _, payload = client.recv_frame()
        self.assertEqual(json.loads(payload), {"type": "disconnect"})

    def test_sigterm_exits_0(self):
        cli = CLIProcess(self, "--no-qr", "-q")
        code, elapsed, _, err = cli.stop(signal.SIGTERM)
        self.assertEqual(code, 0, err)
        self.assertNotIn("INFO", err)                   # -q: no request log, no info

    def test_request_log_on_stderr(self):
        cli = CLIProcess(self, "--no-qr")
        with socket.create_connection(("127.0.0.1", cli.port), timeout=5) as sock:
            sock.sendall(b"GET /data.json HTTP/1.0\r\n\r\n")
            while sock.recv(4096):
                pass
        _, _, _, err = cli.stop()
        self.assertRegex(err, r'127\.0\.0\.1:\d+ "GET /data.json" 200 \d+')

    def test_qr_code_in_block(self):
        cli = CLIProcess(self, "--qr")
        rows = [line for line in cli.block if set(line.strip()) <= set("█▀▄ ") and line.strip()]
        self.assertGreater(len(rows), 10)
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
            self.assertTrue(alsserve.is_complete_jpeg(image))
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
    def setUp(self):
        self.folder = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.image = os.path.join(self.folder, "web_image.jpg")
        self.metrics = os.path.join(self.folder, "data.json")
        with open(self.image, "wb") as f:
            f.write(make_jpeg(100))
        self.watcher = alsserve.FolderWatcher(self.folder)

    def test_existing_files_are_not_a_change(self):
        self.assertFalse(self.watcher.poll(0))
        self.assertFalse(self.watcher.poll(1))

    def test_change_reported_once_after_two_stable_polls(self):
        with open(self.metrics, "w") as f:
            f.write('{"STACK_SIZE": 1, "EXPO": "0:00:10"}')
        self.assertFalse(self.watcher.poll(0))
        self.assertTrue(self.watcher.poll(0.25))
        self.assertFalse(self.watcher.poll(0.5))
        self.assertFalse(self.watcher.poll(0.75))

    def test_half_written_jpeg_waits_for_eoi(self):
        data = make_jpeg(3000)
        with open(self.image, "wb") as f:
            f.write(data[:1000])
            f.flush()
            self.assertFalse(self.watcher.poll(0))
            self.assertFalse(self.watcher.poll(0.25))   # stable but no EOI
            self.assertFalse(self.watcher.poll(0.5))
            f.write(data[1000:])
        self.assertFalse(self.watcher.poll(0.75))
        self.assertTrue(self.watcher.poll(1.0))
        self.assertFalse(self.watcher.poll(1.25))

    def test_jpeg_without_eoi_accepted_when_still_long_enough(self):
        with open(self.image, "wb") as f:
            f.write(b"\xff\xd8not really a jpeg")
        self.assertFalse(self.watcher.poll(0))
        self.assertFalse(self.watcher.poll(0.25))
        self.assertTrue(self.watcher.poll(0.25 + alsserve.WATCH_UNSTABLE_ACCEPT))

    def test_acknowledge_hides_our_own_publish(self):
        with open(self.image, "wb") as f:
            f.write(make_jpeg(500))
        self.watcher.acknowledge()
        self.assertFalse(self.watcher.poll(0))
        self.assertFalse(self.watcher.poll(0.25))


if __name__ == "__main__":
    unittest.main()
