"""Interop: alsserve behind nginx, with the recipe of README.md.

The nginx blocks are extracted from the README's "Behind a reverse proxy
(nginx)" section (nginx_recipe.py) and run as written, except for the
loopback ports, the cache folder and the WebSocket timeouts: the servers
here ping every PING_INTERVAL s instead of 20 s, and nginx gets timeouts of
WS_TIMEOUT s, above that interval as the README's are above 20 s. Between
nginx and alsserve sits a small relay that records the heads going both
ways, so that both sides of the proxy can be checked.

  - our viewer under /als/ goes live in Chromium, follows a new image and
    says "stopped" on STOP; every request it makes stays under /als/;
  - a page shaped like ALS's own (root-absolute /openseadragon.min.js, /ws,
    /web_image.jpg?timestamp=) works through the root-location variant;
  - a WebSocket idle for two keepalive intervals still gets the next image
    (and without alsserve's pings nginx's timeout does close it);
  - 200 viewers x 5 new images: alsserve's access log shows at most 3 full
    image responses per image, and every viewer got every image whole;
  - hop-by-hop headers (Connection, Upgrade, Keep-Alive, Transfer-Encoding)
    are right on the client side and on the upstream side.
  - a 426 names its Upgrade field in Connection, and a new history never
    reuses a frame URL that nginx keeps as immutable (both found here).

Needs Debian's nginx-light and chromium (.ci/run installs them) and
tests/requirements-extra.txt (`make venv`); run with `make interop`. Fails,
rather than skips, when nginx is missing.
"""
import asyncio
import base64
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path[:0] = [ROOT, HERE, os.path.join(ROOT, "tests", "bench"), os.path.join(ROOT, "tests", "browser")]

import alsserve  # noqa: E402
import nginx_recipe  # noqa: E402
from imageclients import make_image  # noqa: E402

try:
    import websockets
    from websockets.asyncio.client import connect as ws_connect
except ImportError:
    websockets = None

PING_INTERVAL = 2.0             # alsserve's keepalive here (20 s in real use)
WS_TIMEOUT = 3.0                # nginx's WebSocket timeouts here (60 s in the README)
VIEWERS = 200
IMAGES = 5
IMAGE_SIZE = 1024 * 1024
MAX_FULL_RESPONSES = 3          # per image, sent by alsserve itself
DEMO = os.path.join(ROOT, "assets", "demo")
HOP_BY_HOP = ("connection", "upgrade", "keep-alive", "transfer-encoding", "te", "trailer",
              "proxy-connection")


def demo_frame(n):
    with open(os.path.join(DEMO, "frame%02d.jpg" % n), "rb") as f:
        return f.read()


def parse_head(head):
    """(start line, [(lower-case name, value), ...]) of an HTTP head."""
    lines = head.decode("latin-1").split("\r\n")
    fields = []
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return lines[0], fields


def values(fields, name):
    return [v for k, v in fields if k == name]


def tokens(fields, name):
    return [t.strip().lower() for v in values(fields, name) for t in v.split(",") if t.strip()]


def setUpModule():
    global _saved_level
    log = logging.getLogger("alsserve")
    _saved_level = log.level
    log.setLevel(logging.ERROR)     # "access is limited to this machine": loopback on purpose


def tearDownModule():
    logging.getLogger("alsserve").setLevel(_saved_level)


# -- the relay between nginx and alsserve -------------------------------------

class RecordingRelay:
    """TCP relay on loopback (nginx -> relay -> alsserve) that forwards bytes
    unchanged and records every request head and response head it sees, per
    connection, until a connection switches protocols. Requests carry no
    body (alsserve accepts none); responses are framed by Content-Length,
    and a response without it (chunked, or read to close) is recorded and
    ends the parsing of that connection."""

    def __init__(self, target_port):
        self.target_port = target_port
        self.connections = []       # [{"requests": [head], "responses": [head]}]
        self.lock = threading.Lock()
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        ready.wait(5)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self._handle, "127.0.0.1", 0, backlog=1024))
        self.port = self.server.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    def records(self):
        with self.lock:
            return [dict(requests=list(c["requests"]), responses=list(c["responses"]))
                    for c in self.connections]

    def clear(self):
        with self.lock:
            self.connections = []

    async def _handle(self, reader, writer):
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        record = {"requests": [], "responses": [], "methods": [], "upgraded": False}
        with self.lock:
            self.connections.append(record)
        await asyncio.gather(self._pump(reader, up_writer, self._requests(record)),
                             self._pump(up_reader, writer, self._responses(record)),
                             return_exceptions=True)

    async def _pump(self, reader, writer, parser):
        next(parser)
        try:
            while True:
                data = await reader.read(262144)
                if not data:
                    break
                parser.send(data)
                writer.write(data)
                await writer.drain()
        finally:
            try:
                writer.close()
            except Exception:
                pass

    def _requests(self, record):
        buf = b""
        while not record["upgraded"]:
            buf += yield
            while b"\r\n\r\n" in buf and not record["upgraded"]:
                head, buf = buf.split(b"\r\n\r\n", 1)
                with self.lock:
                    record["requests"].append(head)
                    record["methods"].append(head.split(b" ", 1)[0])
        while True:
            yield

    def _responses(self, record):
        buf, index = b"", 0
        while True:
            while b"\r\n\r\n" not in buf:
                buf += yield
            head, buf = buf.split(b"\r\n\r\n", 1)
            with self.lock:
                record["responses"].append(head)
                method = record["methods"][index] if index < len(record["methods"]) else b"GET"
            index += 1
            status = int(head.split(b" ", 2)[1])
            _, fields = parse_head(head)
            if status == 101:
                record["upgraded"] = True
                break
            if method == b"HEAD" or status in (204, 304) or 100 <= status < 200:
                continue
            lengths = values(fields, "content-length")
            if len(lengths) != 1 or values(fields, "transfer-encoding"):
                break
            left = int(lengths[0])
            while left > len(buf):
                left -= len(buf)
                buf = yield
            buf = buf[left:]
        while True:
            yield

    def close(self):
        def shutdown():
            self.server.close()
            self.loop.stop()
        self.loop.call_soon_threadsafe(shutdown)
        self.thread.join(5)
        self.loop.close()


# -- raw HTTP helpers ----------------------------------------------------------

class Connection:
    """One keep-alive HTTP/1.1 connection on loopback, read exactly as framed."""

    def __init__(self, port):
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buf = b""

    def request(self, method, path, headers=()):
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1:%d" % self.port]
        lines += ["%s: %s" % h for h in headers]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        start, fields = parse_head(raw)
        status = int(start.split(" ", 2)[1])
        body = b""
        if method != "HEAD" and status not in (101, 204, 304):
            length = int(values(fields, "content-length")[0])
            while len(self.buf) < length:
                self._fill()
            body, self.buf = self.buf[:length], self.buf[length:]
        return status, fields, body

    def _fill(self):
        data = self.sock.recv(262144)
        if not data:
            raise ConnectionError("closed by the server")
        self.buf += data

    def close(self):
        self.sock.close()


def websocket_request(path):
    key = base64.b64encode(os.urandom(16)).decode()
    return "GET", path, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                         ("Sec-WebSocket-Key", key), ("Sec-WebSocket-Version", "13")]


# -- the cases -----------------------------------------------------------------

class NginxCase(unittest.TestCase):
    """One relay and one nginx (the README's config) for the class; one
    alsserve per test on the port the relay forwards to."""

    @classmethod
    def setUpClass(cls):
        if not os.path.exists(nginx_recipe.NGINX):
            raise AssertionError("nginx is missing (apt-get install -y nginx-light; .ci/run does it)")
        cls.alsserve_port = nginx_recipe.free_port()
        cls.relay = RecordingRelay(cls.alsserve_port)
        cls.nginx = nginx_recipe.Nginx(cls.relay.port, ws_timeout=WS_TIMEOUT)
        try:
            cls.nginx.start()
        except BaseException:
            cls.relay.close()
            cls.nginx.cleanup()
            raise
        cls.als = "http://127.0.0.1:%d/als/" % cls.nginx.subpath_port

    @classmethod
    def tearDownClass(cls):
        cls.nginx.cleanup()
        cls.relay.close()

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="alsserve-nginx-web-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.relay.clear()

    def tearDown(self):
        result = getattr(self._outcome, "result", None)
        failed = any(test is self for test, _ in getattr(result, "failures", []) + getattr(result, "errors", []))
        if failed:
            print("\n%s: nginx logs (%s)\n%s" % (self.id(), self.nginx.workdir, self.nginx.logs()),
                  file=sys.stderr)

    def start_server(self, assets_dir=None, **settings):
        settings.setdefault("ws_ping_interval", PING_INTERVAL)
        server = alsserve.ImageServer(self.folder, port=self.alsserve_port, displayed_address="ip:127.0.0.1",
                                      bind="127.0.0.1", assets_dir=assets_dir, settings=alsserve.Settings(**settings))
        server.start()
        self.addCleanup(server.stop, 0.5)
        return server

    def wait_clients(self, server, count, timeout=10.0):
        deadline = time.monotonic() + timeout
        while server.client_count != count:
            if time.monotonic() > deadline:
                self.fail("client_count stayed %d, expected %d" % (server.client_count, count))
            time.sleep(0.01)


class HopByHopTest(NginxCase):

    def test_headers_on_both_sides_of_the_proxy(self):
        server = self.start_server()
        frame = demo_frame(1)
        server.publish_image(frame)
        deadline = time.monotonic() + 5
        while not server.history and time.monotonic() < deadline:
            time.sleep(0.01)
        url = server.history[-1]["url"]
        client = Connection(self.nginx.subpath_port)
        self.addCleanup(client.close)
        seen = {}
        for name, method, path, headers in [
                ("page", "GET", "/als/", []),
                ("frame miss", "GET", "/als/" + url, []),
                ("frame hit", "GET", "/als/" + url, []),
                ("frame head", "HEAD", "/als/" + url, []),
                ("live image", "GET", "/als/web_image.jpg?timestamp=1", []),
                ("listing", "GET", "/als/history.json", []),
                ("missing", "GET", "/als/history/999999.jpg", []),
                ("ws without upgrade", "GET", "/als/ws", [])]:
            seen[name] = client.request(method, path, headers)
        # What viewers get: the bytes, the statuses, caching as alsserve said.
        self.assertEqual(seen["page"][0], 200)
        self.assertEqual(seen["frame miss"][0], 200)
        self.assertEqual(seen["frame miss"][2], frame)
        self.assertEqual(seen["frame hit"][2], frame)
        self.assertEqual(values(seen["frame miss"][1], "x-cache-status"), ["MISS"])
        self.assertEqual(values(seen["frame hit"][1], "x-cache-status"), ["HIT"])
        self.assertEqual(values(seen["frame hit"][1], "cache-control"), [alsserve.IMMUTABLE])
        self.assertEqual(seen["frame head"][0], 200)
        self.assertEqual(values(seen["frame head"][1], "content-length"), [str(len(frame))])
        self.assertEqual(seen["live image"][2], frame)
        self.assertEqual(values(seen["live image"][1], "cache-control"), ["no-cache"])
        self.assertEqual(seen["missing"][0], 404)
        self.assertEqual(seen["ws without upgrade"][0], 426)
        # Client side: one framing, nginx's own keep-alive, nothing hop-by-hop leaked.
        for name, (status, fields, body) in seen.items():
            with self.subTest(side="client", response=name):
                self.assertEqual(len(values(fields, "content-length")), 1)
                self.assertEqual(values(fields, "transfer-encoding"), [])
                self.assertEqual(values(fields, "keep-alive"), [])
                self.assertEqual(values(fields, "connection"), ["keep-alive"])
                if name != "ws without upgrade":   # nginx 1.22 passes a 426's Upgrade on, named or not
                    self.assertEqual(values(fields, "upgrade"), [])
        # The WebSocket: 101 with Upgrade and Connection: upgrade, on a new connection.
        ws = Connection(self.nginx.subpath_port)
        self.addCleanup(ws.close)
        status, fields, _ = ws.request(*websocket_request("/als/ws"))
        self.assertEqual(status, 101)
        self.assertEqual(tokens(fields, "upgrade"), ["websocket"])
        self.assertEqual(tokens(fields, "connection"), ["upgrade"])
        self.assertEqual(values(fields, "content-length") + values(fields, "transfer-encoding"), [])
        self.wait_clients(server, 1)
        # Upstream side, as the relay saw it.
        records = self.relay.records()
        requests = [parse_head(r) for c in records for r in c["requests"]]
        responses = [parse_head(r) for c in records for r in c["responses"]]
        upgrades = [(start, f) for start, f in requests if tokens(f, "upgrade")]
        plain = [(start, f) for start, f in requests if not tokens(f, "upgrade")]
        # 6 of the 9 requests reached alsserve: the frame's HIT and HEAD came
        # from nginx's cache; the WebSocket is the one upgrade.
        self.assertEqual(len(plain), 6, [start for start, _ in plain])
        self.assertEqual([start for start, _ in upgrades], ["GET /ws HTTP/1.1"])
        self.assertTrue(any(len(c["requests"]) > 1 for c in records),
                        "nginx kept no upstream connection alive: %r" % records)
        for start, fields in plain:
            with self.subTest(side="upstream request", start=start):
                self.assertTrue(start.endswith(" HTTP/1.1"))
                for name in HOP_BY_HOP:
                    self.assertEqual(values(fields, name), [], name)
                self.assertEqual(values(fields, "x-forwarded-for"), ["127.0.0.1"])
        start, fields = upgrades[0]
        self.assertEqual(tokens(fields, "upgrade"), ["websocket"])
        self.assertEqual(tokens(fields, "connection"), ["upgrade"])
        self.assertEqual(values(fields, "x-forwarded-for"), ["127.0.0.1"])
        self.assertEqual(len(values(fields, "sec-websocket-key")), 1)
        self.assertEqual(len(responses), 7)
        for start, fields in responses:
            status = int(start.split(" ", 2)[1])
            with self.subTest(side="alsserve response", start=start):
                self.assertTrue(start.startswith("HTTP/1.1 "))
                self.assertEqual(values(fields, "transfer-encoding"), [])
                self.assertEqual(values(fields, "keep-alive"), [])
                if status == 101:
                    self.assertEqual(tokens(fields, "upgrade"), ["websocket"])
                    self.assertEqual(tokens(fields, "connection"), ["upgrade"])
                    self.assertEqual(values(fields, "content-length"), [])
                else:
                    self.assertEqual(len(values(fields, "content-length")), 1)
                    self.assertNotIn("close", tokens(fields, "connection"))   # nginx may reuse it
                if values(fields, "upgrade"):       # the 426: hop-by-hop, so named (RFC 9110 7.8)
                    self.assertIn("upgrade", tokens(fields, "connection"))
        self.assertEqual(sorted(int(start.split(" ", 2)[1]) for start, _ in responses),
                         [101, 200, 200, 200, 200, 404, 426])

    def test_upgrade_in_a_426_is_named_in_connection(self):
        # RFC 9110 section 7.8: a sender of Upgrade also sends the "upgrade"
        # connection option, so that intermediaries know it is hop-by-hop;
        # without it nginx forwards Upgrade to the browser as end-to-end.
        self.start_server()
        direct = Connection(self.alsserve_port)
        self.addCleanup(direct.close)
        status, fields, _ = direct.request("GET", "/ws")
        self.assertEqual(status, 426)
        self.assertEqual(tokens(fields, "upgrade"), ["websocket"])
        self.assertIn("upgrade", tokens(fields, "connection"))


class FrameUrlTest(NginxCase):

    def test_a_new_history_never_reuses_a_cached_frame_url(self):
        # Frames are served immutable for a year, so nginx (and browsers) keep
        # them by URL: a second web folder, or a history folder removed
        # between nights, must not start again at a URL already handed out.
        proxy = Connection(self.nginx.subpath_port)
        self.addCleanup(proxy.close)
        shown = []
        for seed in (1, 2):
            folder = tempfile.mkdtemp(prefix="alsserve-nginx-web-")
            self.addCleanup(shutil.rmtree, folder, True)
            server = alsserve.ImageServer(folder, port=self.alsserve_port, displayed_address="ip:127.0.0.1",
                                          bind="127.0.0.1",
                                          settings=alsserve.Settings(ws_ping_interval=PING_INTERVAL))
            server.start()
            image = make_image(65536, seed)
            server.publish_image(image)
            deadline = time.monotonic() + 5
            while not server.history and time.monotonic() < deadline:
                time.sleep(0.01)
            status, _fields, body = proxy.request("GET", "/als/" + server.history[-1]["url"])
            server.stop(0.2)
            shown.append((status, body == image))
        self.assertEqual(shown, [(200, True), (200, True)])


@unittest.skipIf(websockets is None, "the websockets library is not installed (make venv)")
class IdleWebSocketTest(NginxCase):

    async def _idle_then_notify(self, server, idle):
        async with ws_connect("ws://127.0.0.1:%d/als/ws" % self.nginx.subpath_port, proxy=None,
                              compression=None, ping_interval=None, open_timeout=5) as ws:
            await asyncio.get_running_loop().run_in_executor(None, self.wait_clients, server, 1)
            await asyncio.sleep(idle)
            server.publish_image(demo_frame(2))
            messages = []
            while len(messages) < 2:
                messages.append(json.loads(await asyncio.wait_for(ws.recv(), 5)))
            return messages

    def test_websocket_idle_for_two_keepalive_intervals_gets_the_next_image(self):
        server = self.start_server()
        messages = asyncio.run(self._idle_then_notify(server, 2 * PING_INTERVAL + 0.5))
        self.assertEqual([m["type"] for m in messages], ["history_entry", "new_image"])
        self.assertEqual(messages[0]["url"], server.history[-1]["url"])

    def test_without_alsserve_pings_nginx_closes_an_idle_websocket(self):
        # The control: the timeout above is real, so it is the pings that kept the socket.
        server = self.start_server(ws_ping_interval=0)
        with self.assertRaises(websockets.ConnectionClosed):
            asyncio.run(self._idle_then_notify(server, WS_TIMEOUT + 1.0))


class ManyViewersTest(NginxCase):

    def test_200_viewers_5_images_cost_alsserve_at_most_3_full_responses_each(self):
        served = []                 # (target, status, length) of every request alsserve answered

        class Record(logging.Handler):
            def emit(self, record):
                served.append(record.args[1:])      # '%s "%s" %d %d': peer, request line, status, length

        access = logging.getLogger("alsserve.access")
        handler = Record()
        saved = access.level, access.propagate
        access.setLevel(logging.INFO)
        access.propagate = False
        access.addHandler(handler)

        def restore():
            access.removeHandler(handler)
            access.setLevel(saved[0])
            access.propagate = saved[1]
        self.addCleanup(restore)

        server = self.start_server()
        self.counts = []            # full responses per image, for the report
        self.addCleanup(lambda: print("full image responses from alsserve per image: %s"
                                      % self.counts, file=sys.stderr))
        clients = subprocess.Popen([sys.executable, os.path.join(ROOT, "tests", "bench", "imageclients.py")],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE, universal_newlines=True)
        self.addCleanup(clients.stdout.close)
        self.addCleanup(clients.wait, 10)
        self.addCleanup(clients.stdin.close)

        def call(command):
            clients.stdin.write(json.dumps(command) + "\n")
            clients.stdin.flush()
            answer = json.loads(clients.stdout.readline() or "{}")
            self.assertNotIn("error", answer)
            return answer

        self.assertEqual(call({"cmd": "connect", "port": self.nginx.subpath_port, "n": VIEWERS,
                               "prefix": "/als/", "style": "viewer"})["connected"], VIEWERS)
        self.wait_clients(server, VIEWERS)
        for seed in range(1, IMAGES + 1):
            with self.subTest(image=seed):
                call({"cmd": "arm", "size": IMAGE_SIZE, "seed": seed})
                served.clear()
                server.publish_image(make_image(IMAGE_SIZE, seed))
                got = call({"cmd": "wait", "timeout": 30})
                frame_url = "/" + server.history[-1]["url"]
                full = [s for s in served if s == ("GET " + frame_url, 200, IMAGE_SIZE)]
                self.assertEqual((got["done"], got["good"]), (VIEWERS, VIEWERS), got)
                self.assertGreaterEqual(len(full), 1)
                self.assertLessEqual(len(full), MAX_FULL_RESPONSES,
                                     "alsserve sent %d full copies of %s" % (len(full), frame_url))
                self.assertEqual(got["ws_closed"], 0)
                self.counts.append(len(full))


# -- in Chromium -----------------------------------------------------------------

FAKE_ALS_INDEX = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>ALS-like page</title>
<script src="/openseadragon.min.js"></script></head>
<body><img id="image" alt="">
<script>
var state = {connection: 'connecting', imageLoads: 0, imageUrl: null, library: !!window.fakeOpenSeadragon};
window.alsFake = {state: function () { return state; }};
function load() {
  var url = '/web_image.jpg?timestamp=' + Date.now();
  var img = document.getElementById('image');
  img.onload = function () { state.imageLoads++; state.imageUrl = img.src; state.width = img.naturalWidth; };
  img.src = url;
}
load();
var ws = new WebSocket('ws://' + location.host + '/ws');
ws.onopen = function () { state.connection = 'live'; };
ws.onmessage = function (event) {
  var message = JSON.parse(event.data);
  if (message.type === 'new_image') load();
  if (message.type === 'disconnect') { state.connection = 'stopped'; ws.close(); }
};
ws.onclose = function () { if (state.connection !== 'stopped') state.connection = 'closed'; };
</script></body></html>
"""
FAKE_OPENSEADRAGON = "window.fakeOpenSeadragon = true;\n"


class BrowserCase(NginxCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        try:
            from playwright.sync_api import sync_playwright
            from viewer_support import CHROMIUM, CHROMIUM_ARGS
            if not os.path.exists(CHROMIUM):
                raise AssertionError("Chromium not found at %s (apt-get install -y chromium)" % CHROMIUM)
            cls.playwright = sync_playwright().start()
            cls.browser = cls.playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        except BaseException:
            super().tearDownClass()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()
        cls.playwright.stop()
        super().tearDownClass()

    def open(self, url):
        context = self.browser.new_context()
        self.addCleanup(context.close)
        page = context.new_page()
        self.requests, self.problems, self.sockets = [], [], []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("websocket", lambda ws: self.sockets.append(ws.url))
        page.on("requestfailed", lambda r: self.problems.append("%s %s" % (r.url, r.failure)))
        page.on("response", lambda r: r.status >= 400 and self.problems.append("%s -> %d" % (r.url, r.status)))
        page.on("pageerror", lambda e: self.problems.append("pageerror: %s" % e))
        page.goto(url)
        return page

    def wait_state(self, page, hook, condition, timeout=10000):
        try:
            page.wait_for_function("() => { if (!%s) return false; const s = %s.state(); return %s; }"
                                   % (hook, hook, condition), timeout=timeout, polling=25)
        except Exception as error:
            state = page.evaluate("%s ? %s.state() : null" % (hook, hook))
            self.fail("waiting for %s: %s; state=%s" % (condition, type(error).__name__, json.dumps(state)))
        return page.evaluate("%s.state()" % hook)


class ViewerThroughNginxTest(BrowserCase):

    def test_viewer_under_a_subpath_goes_live_follows_and_stops(self):
        server = self.start_server()
        page = self.open(self.als)
        hook = "window.alsViewer"
        first = self.wait_state(page, hook, "s.connection === 'live' && s.imageLoads >= 1")
        server.publish_image(demo_frame(3))
        after = self.wait_state(page, hook, "s.imageLoads > %d" % first["imageLoads"], 5000)
        self.assertNotEqual(after["imageUrl"], first["imageUrl"])
        self.wait_clients(server, 1)
        server.stop(grace=2.0)
        self.wait_state(page, hook, "s.connection === 'stopped'", 5000)
        # Everything went through /als/ (no root-absolute URL), and nothing failed.
        http = [u for u in self.requests if u.startswith("http")]
        self.assertTrue(http)
        self.assertEqual([u for u in http if not u.startswith(self.als)], [])
        self.assertEqual(self.sockets, ["ws://127.0.0.1:%d/als/ws" % self.nginx.subpath_port])
        self.assertEqual(self.problems, [])


class AlsPageThroughNginxTest(BrowserCase):

    def test_als_page_at_the_root_location(self):
        bundle = tempfile.mkdtemp(prefix="alsserve-fake-als-")
        self.addCleanup(shutil.rmtree, bundle, True)
        with open(os.path.join(bundle, "index.html"), "w") as f:
            f.write(FAKE_ALS_INDEX)
        with open(os.path.join(bundle, "openseadragon.min.js"), "w") as f:
            f.write(FAKE_OPENSEADRAGON)
        for name in ("waiting.jpg", "favicon.ico"):
            shutil.copy(os.path.join(ROOT, "assets", name), bundle)
        server = self.start_server(assets_dir=bundle)
        root = "http://127.0.0.1:%d/" % self.nginx.root_port
        page = self.open(root)
        hook = "window.alsFake"
        first = self.wait_state(page, hook, "s.connection === 'live' && s.imageLoads >= 1 && s.library")
        server.publish_image(demo_frame(4))
        after = self.wait_state(page, hook, "s.imageLoads > %d" % first["imageLoads"], 5000)
        self.assertEqual(after["width"], 1024)          # the demo frame, not the waiting image
        self.assertRegex(after["imageUrl"], r"^%sweb_image\.jpg\?timestamp=\d+$" % re.escape(root))
        self.wait_clients(server, 1)
        server.stop(grace=2.0)
        self.wait_state(page, hook, "s.connection === 'stopped'", 5000)
        self.assertIn(root + "openseadragon.min.js", self.requests)
        self.assertEqual(self.problems, [])


if __name__ == "__main__":
    unittest.main()
