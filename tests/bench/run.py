#!/usr/bin/env python3
"""alsserve benchmarks against its peers, in one run (`make bench`).

Peers: an aiohttp server shaped like ALS 0.7's (peer_aiohttp.py),
``python -m http.server`` (static files only) and, for WebSocket fan-out, the
websockets library's own server with websockets.broadcast() (peer_websockets.py).
Every server runs in its own process (control.py); the WebSocket clients run
in another (wsclients.py, raw sockets on epoll); HTTP load comes from wrk.
Loopback only. Prints one Markdown table and writes it to build/bench.md.

The machine's cores may be shared with other work: absolute figures are
noisy, the ratios measured in the same run are what count.
"""
import json
import os
import platform
import re
import resource
import select
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(ROOT, "build")
PY = sys.executable
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests", "interop"))

import alsserve  # noqa: E402
import nginx_recipe  # noqa: E402

BIG_IMAGE_SIZE = 3 * 1024 * 1024
HTTP_KINDS = ("alsserve", "aiohttp", "http.server")
WS_KINDS = ("alsserve", "aiohttp", "websockets")
WRK_PASSES = 3                  # x WRK_PASS_SECONDS per server and case
WRK_PASS_SECONDS = 2
FRESH_ROUNDS = 7
FRESH_DOWNLOADERS = 30
FANOUT_ROUNDS = 20
FANOUT_WARMUP = 2
NOTIFY_CALLS = 100
NOTIFY_INTERVAL = 0.04          # between calls: the previous fan-out is over
STALL_FILL = 8 * 1024 * 1024
STALL_ROUNDS = 5
START_ROUNDS = 5
IMPORT_ROUNDS = 7
STOP_ROUNDS = 3
# (9)-(10) a fresh image to N viewers, each with a WebSocket and a keep-alive
# HTTP connection; (11) the same through nginx with the README's recipe.
VIEWER_COUNTS = (30, 100)
VIEWER_ROUNDS = 15              # per case and N, after one warm-up round
VIEWER_CASES = (                # server, how the caller makes the image live, how clients follow
    ("alsserve", "publish", "viewer"),
    ("alsserve", "write_notify", "als"),
    ("alsserve", "write_notify", "viewer"),
    ("alsserve", "publish", "als"),
    ("aiohttp", "write_notify", "als"),
    ("floor", "publish", "viewer"),
    ("floor", "publish", "als"),
)
NGINX_VIEWERS = 200
NGINX_IMAGES = 10
NGINX_ALS_IMAGES = 5


def log(message):
    print("[bench %6.1fs] %s" % (time.monotonic() - T0, message), file=sys.stderr, flush=True)


T0 = time.monotonic()


# -- setup -------------------------------------------------------------------

def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def ensure_wrk():
    if shutil.which("wrk"):
        return True
    if os.geteuid() != 0:
        log("wrk missing and not root: HTTP throughput cases skipped")
        return False
    for attempt in (("apt-get", "install", "-y", "-q", "wrk"),
                    ("apt-get", "update", "-q"), ("apt-get", "install", "-y", "-q", "wrk")):
        subprocess.run(attempt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if shutil.which("wrk"):
            return True
    log("could not install wrk: HTTP throughput cases skipped")
    return False


def make_jpeg(size, seed):
    """A JPEG-shaped blob (SOI ... EOI) of exactly size bytes; content differs per seed."""
    body = os.urandom(size - 4)
    return b"\xff\xd8" + bytes([seed & 0xFF]) + body[1:] + b"\xff\xd9"


def make_web_folder(workdir):
    folder = os.path.join(workdir, "web")
    os.makedirs(folder)
    alsserve.publish_assets(alsserve.DEFAULT_ASSETS_DIR, folder)
    replace_image(folder, make_jpeg(BIG_IMAGE_SIZE, 0))
    with open(os.path.join(folder, alsserve.METRICS_NAME), "w") as f:
        f.write(alsserve.metrics_json(12, 360))
    return folder


def replace_image(folder, data):
    temporary = os.path.join(folder, ".bench-image.tmp")
    with open(temporary, "wb") as f:
        f.write(data)
    os.replace(temporary, os.path.join(folder, alsserve.IMAGE_NAME))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


# -- child processes ---------------------------------------------------------

class Child:
    """A process answering JSON lines: one answer line per command line."""

    def __init__(self, args, name, errdir):
        self.name = name
        self.errpath = os.path.join(errdir, name + ".err")
        self.err = open(self.errpath, "ab")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.err, cwd=ROOT)
        self.pid = self.proc.pid
        self.buf = b""

    def read(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError("%s: no answer in %.0f s (see %s)" % (self.name, timeout, self.errpath))
            chunk = os.read(fd, 65536)
            if not chunk:
                raise RuntimeError("%s exited (see %s): %s" % (self.name, self.errpath, self.tail()))
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def call(self, obj, timeout=30.0):
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()
        answer = self.read(timeout)
        if "error" in answer:
            raise RuntimeError("%s: %s" % (self.name, answer["error"]))
        return answer

    def tail(self):
        try:
            with open(self.errpath, "rb") as f:
                return f.read()[-800:].decode("utf-8", "replace")
        except OSError:
            return ""

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(b'{"cmd": "quit"}\n')
                self.proc.stdin.flush()
                self.proc.wait(3)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.err.close()


def start_server(kind, port, folder, errdir):
    child = Child([PY, os.path.join(HERE, "control.py"), kind, str(port), folder], kind, errdir)
    child.read(60)
    return child


def start_clients(errdir):
    return Child([PY, os.path.join(HERE, "wsclients.py")], "wsclients", errdir)


class HttpServerProcess:
    """python -m http.server, as a user would start it."""

    def __init__(self, port, folder, errdir):
        self.err = open(os.path.join(errdir, "http.server.err"), "ab")
        self.proc = subprocess.Popen([PY, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                                      "--directory", folder],
                                     stdout=subprocess.DEVNULL, stderr=self.err)
        self.pid = self.proc.pid
        wait_http(port, 30)

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(3)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.err.close()


def http_status(port, path="/", timeout=2.0):
    """Status code of one GET, or None when nothing answers yet."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            data = s.recv(64)
            return int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    except OSError:
        return None


def wait_http(port, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if http_status(port) == 200:
            return True
        time.sleep(0.001)
    raise TimeoutError("no HTTP answer on port %d" % port)


# -- HTTP cases --------------------------------------------------------------

UNITS = {"B": 1, "KB": 1024, "MB": 1024 ** 2, "GB": 1024 ** 3, "TB": 1024 ** 4}


def run_wrk(url, threads, connections, seconds):
    out = subprocess.run(["wrk", "-t%d" % threads, "-c%d" % connections, "-d%ds" % seconds,
                          "--timeout", "10s", url], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMGT]?B)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "rps": float(rps.group(1)) if rps else 0.0,
        "bytes_per_s": float(transfer.group(1)) * UNITS[transfer.group(2)] if transfer else 0.0,
        "errors": (errors.group(1) if errors else "") + (" non2xx=%s" % non2xx.group(1) if non2xx else ""),
    }


def _fresh_round(port, folder, data):
    """Replace the image, then 30 GETs at once on one epoll loop (recv_into
    preallocated buffers: the client costs little next to the servers).
    Seconds until every body is in, and how many bodies are the new image."""
    replace_image(folder, data)
    t0 = time.perf_counter()
    request = b"GET /web_image.jpg?timestamp=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    poller = select.epoll()
    downloads = {}
    for _ in range(FRESH_DOWNLOADERS):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(request)
        sock.setblocking(False)
        downloads[sock.fileno()] = [sock, bytearray(len(data) + 4096), 0]
        poller.register(sock.fileno(), select.EPOLLIN)
    running = len(downloads)
    deadline = t0 + 30
    while running and time.perf_counter() < deadline:
        for fd, _event in poller.poll(1.0):
            download = downloads[fd]
            sock, buf, size = download
            if size == len(buf):
                buf.extend(bytes(65536))
            try:
                got = sock.recv_into(memoryview(buf)[size:])
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if got:
                download[2] = size + got
            else:
                poller.unregister(fd)
                running -= 1
    elapsed = time.perf_counter() - t0
    good = 0
    for sock, buf, size in downloads.values():
        sock.close()
        head, _, body = bytes(buf[:size]).partition(b"\r\n\r\n")
        good += head.startswith(b"HTTP/1.") and head.split(b" ", 2)[1] == b"200" and body == data
    poller.close()
    return elapsed, good


def fresh_image_downloads(ports, folder):
    """Rounds interleaved across the servers: replace the image, then 30 GETs at once."""
    images = [make_jpeg(BIG_IMAGE_SIZE, i) for i in range(1, 4)]
    times = {kind: [] for kind in ports}
    bad = {kind: 0 for kind in ports}
    for i in range(FRESH_ROUNDS + 1):
        for j, (kind, port) in enumerate(ports.items()):
            elapsed, good = _fresh_round(port, folder, images[(i + j) % len(images)])
            if i:                       # round 0 warms up
                times[kind].append(elapsed)
                bad[kind] += FRESH_DOWNLOADERS - good
            time.sleep(0.05)
    return {kind: {"median": statistics.median(times[kind]), "bad": bad[kind]} for kind in ports}


def wrk_interleaved(ports, path, connections):
    """WRK_PASSES passes per server, taken in turn so that the machine's other
    load falls on every server alike; the median pass counts."""
    passes = {kind: [] for kind in ports}
    for kind, port in ports.items():
        run_wrk("http://127.0.0.1:%d%s" % (port, path), 2, connections, 1)    # warm-up
    for _ in range(WRK_PASSES):
        for kind, port in ports.items():
            passes[kind].append(run_wrk("http://127.0.0.1:%d%s" % (port, path), 2, connections,
                                        WRK_PASS_SECONDS))
    result = {}
    for kind, runs in passes.items():
        result[kind] = {"rps": statistics.median(r["rps"] for r in runs),
                        "bytes_per_s": statistics.median(r["bytes_per_s"] for r in runs),
                        "passes": [r["rps"] for r in runs],
                        "errors": " ".join(r["errors"] for r in runs if r["errors"])}
    return result


def http_cases(have_wrk, folder, errdir):
    ports = {kind: free_port() for kind in HTTP_KINDS}
    servers = []
    try:
        for kind, port in ports.items():
            if kind == "http.server":
                servers.append(HttpServerProcess(port, folder, errdir))
            else:
                servers.append(start_server(kind, port, folder, errdir))
                wait_http(port, 10)
            for _ in range(20):
                http_status(port, "/")
        result = {kind: {} for kind in ports}
        if have_wrk:
            for case, path, connections in (("small", "/", 32), ("big", "/web_image.jpg", 8)):
                for kind, figures in wrk_interleaved(ports, path, connections).items():
                    result[kind][case] = figures
                    log("%s: GET %s x%d conns: %.0f req/s, %.0f MB/s (passes: %s req/s) %s" % (
                        kind, path, connections, figures["rps"], figures["bytes_per_s"] / 1e6,
                        " ".join("%.0f" % x for x in figures["passes"]), figures["errors"]))
        for kind, figures in fresh_image_downloads(ports, folder).items():
            result[kind]["fresh"] = figures
            log("%s: fresh image, %d concurrent GETs: %.1f ms (%d bad bodies)" % (
                kind, FRESH_DOWNLOADERS, figures["median"] * 1e3, figures["bad"]))
        return result
    finally:
        for server in servers:
            server.close()


# -- WebSocket cases ---------------------------------------------------------

def fanout(server, clients, n, rounds, timeout=5.0, warmup=1):
    latencies, missed = [], 0
    for i in range(warmup + rounds):
        lat = fanout_round(server, clients, n, timeout)
        if i < warmup:
            continue
        if lat is None:
            missed += 1
        else:
            latencies.append(lat)
    return summarize(latencies, missed, rounds)


def fanout_round(server, clients, n, timeout):
    """One notify: seconds from the call to the last client's receipt, or
    None when some client never got it within the timeout."""
    clients.call({"cmd": "arm"})
    sent = server.call({"cmd": "notify"})
    got = clients.call({"cmd": "wait", "n": n, "timeout": timeout}, timeout + 10)
    time.sleep(0.02)
    return got["last"] - sent["t0"] if got["count"] >= n else None


def summarize(latencies, missed, rounds):
    if not latencies:
        return {"median": None, "p95": None, "missed": missed, "rounds": rounds}
    return {"median": statistics.median(latencies), "p95": percentile(latencies, 95),
            "missed": missed, "rounds": rounds}


def fanout_cases(folder, errdir):
    """(4) The three servers up at once, rounds interleaved across them; first
    with clients that offer no extension, then with browser-like clients that
    offer permessage-deflate (as Chrome and Firefox do)."""
    ports = {kind: free_port() for kind in WS_KINDS}
    servers, swarms = {}, {}
    result = {kind: {} for kind in WS_KINDS}
    try:
        for kind, port in ports.items():
            servers[kind] = start_server(kind, port, folder, errdir)
            swarms[kind] = start_clients(errdir)
        for flavor, deflate in (("plain", False), ("browser", True)):
            connected = 0
            for n in (100, 1000):
                for kind in WS_KINDS:
                    connect(swarms[kind], ports[kind], n - connected, deflate=deflate)
                    wait_server_clients(servers[kind], n)
                connected = n
                latencies = {kind: [] for kind in WS_KINDS}
                missed = {kind: 0 for kind in WS_KINDS}
                floors = []
                for i in range(FANOUT_ROUNDS + FANOUT_WARMUP):
                    for kind in WS_KINDS:
                        if i == FANOUT_WARMUP:
                            servers[kind].call({"cmd": "bcast"})
                        lat = fanout_round(servers[kind], swarms[kind], n, 5.0)
                        if i < FANOUT_WARMUP:
                            continue
                        if lat is None:
                            missed[kind] += 1
                        else:
                            latencies[kind].append(lat)
                    if n == 1000 and flavor == "plain" and i >= FANOUT_WARMUP:
                        floors.append(servers["alsserve"].call({"cmd": "send_floor"})["floor"])
                        time.sleep(0.02)
                if floors:
                    result["send_floor"] = statistics.median(floors)
                    log("floor: 1000 bare socket.send() calls on the loop thread: %.2f ms" % (
                        result["send_floor"] * 1e3))
                for kind in WS_KINDS:
                    figures = summarize(latencies[kind], missed[kind], FANOUT_ROUNDS)
                    loop_times = servers[kind].call({"cmd": "bcast"})["times"]
                    figures["loop"] = statistics.median(loop_times) if loop_times else None
                    result[kind]["%s%d" % (flavor, n)] = figures
                    log("%s: fan-out to %d %s clients: median %.2f ms, p95 %.2f ms; send loop %.2f ms%s" % (
                        kind, n, flavor, _ms(figures["median"]), _ms(figures["p95"]), _ms(figures["loop"]),
                        "; %d rounds missed" % figures["missed"] if figures["missed"] else ""))
            for kind in WS_KINDS:
                swarms[kind].call({"cmd": "close_all"})
                wait_server_clients_at_most(servers[kind], 0)
    finally:
        for child in list(swarms.values()) + list(servers.values()):
            child.close()
    return result


def notify_cost(server):
    answer = server.call({"cmd": "notify_cost", "n": NOTIFY_CALLS, "interval": NOTIFY_INTERVAL}, 120)
    calls, floor = answer["calls"], answer["floor"]
    return {"median": statistics.median(calls), "p99": percentile(calls, 99), "max": max(calls),
            "floor": statistics.median(floor), "floor_p99": percentile(floor, 99)}


def connect(clients, port, n, mode="read", deflate=False):
    answer = clients.call({"cmd": "connect", "port": port, "n": n, "mode": mode, "deflate": deflate}, 120)
    if answer["connected"] != n:
        raise RuntimeError("connected %d of %d" % (answer["connected"], n))


def wait_server_clients(server, n, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        answer = server.call({"cmd": "clients"})
        if answer["clients"] >= n or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


def notify_cases(kind, folder, errdir):
    """(5) notify() timed on the caller's thread: 1000 reading clients, then
    999 reading clients and one that never reads (its receive buffer and the
    server's send buffer filled before the others connect)."""
    result = {}
    port = free_port()
    server = start_server(kind, port, folder, errdir)
    clients = start_clients(errdir)
    try:
        connect(clients, port, 1000)
        wait_server_clients(server, 1000)
        result["fan_nostall"] = fanout(server, clients, 1000, STALL_ROUNDS, timeout=1.0)
        result["notify"] = notify_cost(server)
        clients.call({"cmd": "close_all"})
        wait_server_clients_at_most(server, 0)
        connect(clients, port, 1, "stall")
        wait_server_clients(server, 1)
        server.call({"cmd": "text", "size": STALL_FILL})
        time.sleep(0.3)
        stalled = server.call({"cmd": "clients"})["stalled"]
        connect(clients, port, 999)
        wait_server_clients(server, 1000)
        result["notify_stall"] = notify_cost(server)
        result["notify_stall"]["stalled"] = stalled
        result["fan_stall"] = fanout(server, clients, 999, STALL_ROUNDS, timeout=1.0, warmup=0)
        log("%s: notify median %.1f us p99 %.1f us (call_soon_threadsafe %.1f us); with a stalled client "
            "(%d stalled) %.1f us p99 %.1f us (call_soon_threadsafe %.1f us); fan-out to the 999 readers %s" % (
                kind, result["notify"]["median"] * 1e6, result["notify"]["p99"] * 1e6,
                result["notify"]["floor"] * 1e6, stalled, result["notify_stall"]["median"] * 1e6,
                result["notify_stall"]["p99"] * 1e6, result["notify_stall"]["floor"] * 1e6,
                "%.2f ms" % _ms(result["fan_stall"]["median"]) if result["fan_stall"]["median"]
                else "never delivered"))
    finally:
        clients.close()
        server.close()
    return result


def wait_server_clients_at_most(server, n, timeout=5.0):
    deadline = time.monotonic() + timeout
    while server.call({"cmd": "clients"})["clients"] > n and time.monotonic() < deadline:
        time.sleep(0.02)


def rss_case(kind, folder, errdir, deflate):
    port = free_port()
    server = start_server(kind, port, folder, errdir)
    clients = start_clients(errdir)
    try:
        connect(clients, port, 10, deflate=deflate)     # warm the code paths, then let them go
        wait_server_clients(server, 10)
        clients.call({"cmd": "close_all"})
        wait_server_clients_at_most(server, 0)
        time.sleep(0.5)
        before = rss_kib(server.pid)
        connect(clients, port, 1000, deflate=deflate)
        wait_server_clients(server, 1000)
        time.sleep(1.0)
        after = rss_kib(server.pid)
    finally:
        clients.close()
        server.close()
    log("%s: RSS %d KiB -> %d KiB with 1000 idle %s clients" % (
        kind, before, after, "browser-like" if deflate else "plain"))
    return {"before": before, "after": after, "delta": after - before}


def stop_case(kind, folder, errdir, rounds):
    durations, left_open = [], 0
    for _ in range(rounds):
        port = free_port()
        server = start_server(kind, port, folder, errdir)
        clients = start_clients(errdir)
        try:
            connect(clients, port, 100, "closer")
            wait_server_clients(server, 100)
            durations.append(server.call({"cmd": "stop"}, 60)["stop"])
            left_open += clients.call({"cmd": "wait_closed", "timeout": 5}, 15)["open"]
        finally:
            clients.close()
            server.close()
    log("%s: STOP %s s" % (kind, " ".join("%.3f" % d for d in durations)))
    return {"median": statistics.median(durations), "left_open": left_open}


# -- a fresh image to many viewers -----------------------------------------------

def cpu_seconds(pid):
    """User + system CPU seconds of a process, all its threads (/proc/PID/stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_viewers(errdir, name):
    return Child([PY, os.path.join(HERE, "imageclients.py")], name, errdir)


def viewer_folder(workdir, name):
    """A web folder of its own for each server: they all write web_image.jpg."""
    folder = os.path.join(workdir, name)
    os.makedirs(folder)
    alsserve.publish_assets(alsserve.DEFAULT_ASSETS_DIR, folder)
    replace_image(folder, make_jpeg(BIG_IMAGE_SIZE, 0))
    with open(os.path.join(folder, alsserve.METRICS_NAME), "w") as f:
        f.write(alsserve.metrics_json(12, 360))
    return folder


class SeedCounter:
    def __init__(self):
        self.seed = 1000

    def next(self):
        self.seed += 1
        return self.seed


SEEDS = SeedCounter()


def viewer_round(server, viewers, mode, style, n, timeout=30.0):
    """One new image: the caller's command (t0 in the server process), then
    every viewer fetches it. (seconds t0 -> last complete body, CPU seconds
    of the server process meanwhile, bad or missing bodies, the answer)."""
    seed = SEEDS.next()
    viewers.call({"cmd": "arm", "size": BIG_IMAGE_SIZE, "seed": seed, "style": style})
    cpu0 = cpu_seconds(server.pid)
    sent = server.call({"cmd": "image", "mode": mode, "size": BIG_IMAGE_SIZE, "seed": seed})
    got = viewers.call({"cmd": "wait", "timeout": timeout}, timeout + 30)
    cpu = cpu_seconds(server.pid) - cpu0
    elapsed = got["last"] - sent["t0"] if got["done"] == n and got["last"] is not None else None
    if elapsed is not None:
        got["announce"] = got["announced_first"] - sent["t0"]       # command -> first viewer told
        got["delivery"] = got["last"] - got["announced_first"]      # first viewer told -> last body
    return elapsed, cpu, n - got["good"], got


def viewer_cases(workdir, errdir):
    """(9), (10): the three servers up at once, each with its own viewers;
    rounds interleaved across the cases."""
    kinds = sorted({kind for kind, _mode, _style in VIEWER_CASES})
    ports = {kind: free_port() for kind in kinds}
    servers, swarms = {}, {}
    result = {}
    try:
        for kind in kinds:
            servers[kind] = start_server(kind, ports[kind], viewer_folder(workdir, "viewers-" + kind), errdir)
            swarms[kind] = start_viewers(errdir, "viewers-" + kind)
        connected = 0
        for n in VIEWER_COUNTS:
            for kind in kinds:
                answer = swarms[kind].call({"cmd": "connect", "port": ports[kind], "n": n - connected}, 120)
                if answer["connected"] != n:
                    raise RuntimeError("%s: %d of %d viewers connected" % (kind, answer["connected"], n))
                wait_server_clients(servers[kind], n)
            connected = n
            times = {case: [] for case in VIEWER_CASES}
            parts = {case: ([], []) for case in VIEWER_CASES}
            cpu = {case: 0.0 for case in VIEWER_CASES}
            bad = {case: 0 for case in VIEWER_CASES}
            for i in range(VIEWER_ROUNDS + 1):
                for case in VIEWER_CASES:
                    kind, mode, style = case
                    elapsed, seconds, wrong, got = viewer_round(servers[kind], swarms[kind], mode, style, n)
                    if i:                   # round 0 warms up
                        bad[case] += wrong
                        cpu[case] += seconds
                        times[case].append(elapsed)     # None: some viewer missed it
                        if elapsed is not None:
                            parts[case][0].append(got["announce"])
                            parts[case][1].append(got["delivery"])
                    time.sleep(0.05)
            for case in VIEWER_CASES:
                key = "%s/%s/%s/%d" % (case + (n,))
                rounds = times[case]
                times[case] = [x for x in rounds if x is not None]
                figures = {"median": statistics.median(times[case]) if times[case] else None,
                           "min": min(times[case]) if times[case] else None,
                           "rounds": rounds,
                           "announce": statistics.median(parts[case][0]) if times[case] else None,
                           "delivery": statistics.median(parts[case][1]) if times[case] else None,
                           "cpu_per_100": 100 * cpu[case] / (VIEWER_ROUNDS * n), "bad": bad[case]}
                result[key] = figures
                log("%s: fresh 3 MB image to %d viewers: median %.1f ms (min %.1f; told %.1f + delivered %.1f); "
                    "%.2f CPU s per 100 images%s"
                    % (key, n, _ms(figures["median"]), _ms(figures["min"]), _ms(figures["announce"]),
                       _ms(figures["delivery"]), figures["cpu_per_100"],
                       "; %d bad bodies" % bad[case] if bad[case] else ""))
    finally:
        for child in list(swarms.values()) + list(servers.values()):
            child.close()
    return result


def nginx_rounds(server, viewers, port, prefix, style, n, rounds, mode="publish"):
    viewers.call({"cmd": "close_all"})
    answer = viewers.call({"cmd": "connect", "port": port, "n": n, "prefix": prefix, "style": style}, 120)
    if answer["connected"] != n:
        raise RuntimeError("%d of %d viewers connected" % (answer["connected"], n))
    wait_server_clients(server, n)
    server.call({"cmd": "access_count", "size": BIG_IMAGE_SIZE})       # from now on
    times, counts, bad = [], [], 0
    for _ in range(rounds):
        elapsed, _cpu, wrong, _got = viewer_round(server, viewers, mode, style, n, 60.0)
        bad += wrong
        if elapsed is not None:
            times.append(elapsed)
        time.sleep(0.2)         # a stray late request still falls in this round
        counts.append(server.call({"cmd": "access_count", "size": BIG_IMAGE_SIZE})["count"])
    return {"median": statistics.median(times) if times else None,
            "p95": percentile(times, 95) if times else None,
            "counts": counts, "bad": bad, "rounds": rounds}


def nginx_cases(workdir, errdir):
    """(11) alsserve behind nginx configured by the README: 200 viewers as our
    viewer follows images, then the same viewers straight to alsserve; ALS's
    page (web_image.jpg?timestamp=) through the root-location variant."""
    port = free_port()
    server = start_server("alsserve", port, viewer_folder(workdir, "viewers-nginx"), errdir)
    viewers = start_viewers(errdir, "viewers-nginx")
    proxy = nginx_recipe.Nginx(port, worker_processes=os.cpu_count() or 1, access_log=False)
    result = {}
    try:
        proxy.start()
        result["proxied"] = nginx_rounds(server, viewers, proxy.subpath_port, "/als/", "viewer",
                                         NGINX_VIEWERS, NGINX_IMAGES)
        result["direct"] = nginx_rounds(server, viewers, port, "/", "viewer", NGINX_VIEWERS, NGINX_IMAGES)
        result["als_page"] = nginx_rounds(server, viewers, proxy.root_port, "/", "als", NGINX_VIEWERS,
                                          NGINX_ALS_IMAGES, mode="write_notify")
        for key, figures in result.items():
            log("nginx %s: %d viewers, full image responses from alsserve per image %s; command -> last "
                "viewer median %.0f ms (p95 %.0f)%s" % (
                    key, NGINX_VIEWERS, figures["counts"], _ms(figures["median"]), _ms(figures["p95"]),
                    "; %d bad bodies" % figures["bad"] if figures["bad"] else ""))
    except BaseException:
        log("nginx logs:\n" + proxy.logs())
        raise
    finally:
        viewers.close()
        server.close()
        proxy.cleanup()
    return result


# -- start-up ----------------------------------------------------------------

def _import_times(code):
    out = subprocess.run([PY, "-X", "importtime", "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, universal_newlines=True).stderr
    entries = []
    for line in out.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            entries.append((match.group(4), int(match.group(2)), len(match.group(3))))
    return entries


def import_cost(code, baseline_names):
    """Microseconds of imports that the statement adds to a bare interpreter
    (sum of the cumulative times of the new top-level imports)."""
    samples = []
    _import_times(code)                 # .pyc files written once
    for _ in range(IMPORT_ROUNDS):
        entries = _import_times(code)
        samples.append(sum(cum for name, cum, indent in entries
                           if indent == 1 and name not in baseline_names))
    return statistics.median(samples) / 1e6


def start_to_first_byte(kind, folder, errdir):
    samples = []
    for _ in range(START_ROUNDS):
        port = free_port()
        t0 = time.perf_counter()
        child = Child([PY, os.path.join(HERE, "control.py"), kind, str(port), folder], kind + "-start", errdir)
        try:
            deadline = t0 + 30
            while http_status(port, "/", 1.0) != 200:
                if time.perf_counter() > deadline:
                    raise TimeoutError("%s never answered" % kind)
                time.sleep(0.001)
            samples.append(time.perf_counter() - t0)
            child.read(30)
        finally:
            child.close()
    return statistics.median(samples)


def start_to_first_byte_http_server(folder, errdir):
    samples = []
    for _ in range(START_ROUNDS):
        port = free_port()
        t0 = time.perf_counter()
        server = HttpServerProcess(port, folder, errdir)
        samples.append(time.perf_counter() - t0)
        server.close()
    return statistics.median(samples)


# -- report ------------------------------------------------------------------

def _ms(seconds):
    return float("nan") if seconds is None else seconds * 1e3


class Table:
    def __init__(self):
        self.rows = []

    def add(self, case, metric, ours, peer, theirs, ratio, target, verdict):
        self.rows.append((case, metric, ours, peer, theirs, ratio, target, verdict))

    def markdown(self):
        head = ("Case", "Metric", "alsserve", "Peer", "Peer value", "Ratio (alsserve/peer)", "Target", "Result")
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in self.rows:
            lines.append("| " + " | ".join(row) + " |")
        return "\n".join(lines)


def fmt(value, spec):
    return "n/a" if value is None else spec % value


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def ratio(a, b):
    return None if a is None or b is None or not b else a / b


def build_table(r):
    t = Table()
    peers = (("aiohttp", "aiohttp (ALS 0.7)"), ("http.server", "http.server"))
    http = r["http"]
    # (1), (2) wrk
    for case, label, metric, scale, spec, target, least in (
            ("small", "1 small file (index.html), wrk -c32", "req/s", 1, "%.0f", ">= 3x", 3),
            ("big", "2 3 MB JPEG, wrk -c8", "MB/s", 1e-6, "%.0f", ">= 1x", 1)):
        if case not in http["alsserve"]:
            continue
        key = "rps" if case == "small" else "bytes_per_s"
        ours = http["alsserve"][case][key] * scale
        for peer, peer_label in peers:
            theirs = http[peer][case][key] * scale
            q = ratio(ours, theirs)
            first = peer == "aiohttp"
            t.add(label, metric, spec % ours, peer_label, spec % theirs, fmt(q, "%.2fx"),
                  target if first else "info", verdict(q is not None and q >= least) if first else "n/a")
    # (3) fresh image
    ours = http["alsserve"]["fresh"]
    for peer, peer_label in peers:
        theirs = http[peer]["fresh"]
        t.add("3 replaced image, 30 concurrent GETs", "ms until all done (median of %d)" % FRESH_ROUNDS,
              "%.1f" % _ms(ours["median"]) + (" (%d bad)" % ours["bad"] if ours["bad"] else ""),
              peer_label, "%.1f" % _ms(theirs["median"]) + (" (%d bad)" % theirs["bad"] if theirs["bad"] else ""),
              fmt(ratio(ours["median"], theirs["median"]), "%.2fx"), "info (lower is better)", "n/a")
    # (4) fan-out
    ws = r["ws"]

    def cell(f):
        return "%.2f (%.2f); loop %.2f" % (_ms(f["median"]), _ms(f["p95"]), _ms(f["loop"])) + (
            "; %d missed" % f["missed"] if f["missed"] else "")

    for flavor, flavor_label in (("plain", "clients offer no extension"),
                                 ("browser", "browser-like clients (offer permessage-deflate)")):
        for n in (100, 1000):
            key = "%s%d" % (flavor, n)
            ours = ws["alsserve"][key]
            for peer, peer_label in (("aiohttp", "aiohttp (ALS 0.7 loop)"),
                                     ("websockets", "websockets.broadcast")):
                theirs = ws[peer][key]
                q = ratio(ours["median"], theirs["median"])
                if n == 1000 and peer == "aiohttp":
                    target, ok = "<= 0.2x (>= 5x faster)", q is not None and q <= 0.2
                elif n == 1000:
                    target, ok = "<= 1.5x", q is not None and q <= 1.5
                else:
                    target, ok = "info", None
                t.add("4 fan-out to %d, %s" % (n, flavor_label),
                      "ms notify -> last client: median (p95); server send loop", cell(ours),
                      peer_label, cell(theirs), fmt(q, "%.2fx"), target, verdict(ok))
            if n == 1000:
                t.add("4 fan-out to 1000, %s" % flavor_label, "ms median, absolute", "%.2f" % _ms(ours["median"]),
                      "-", "-", "-", "< 20 ms",
                      verdict(ours["median"] is not None and ours["median"] < 0.020 and not ours["missed"]))
            if n == 1000 and flavor == "plain" and ws.get("send_floor"):
                t.add("4 floor: 1000 bare socket.send() on the loop thread", "ms (median of %d)" % FANOUT_ROUNDS,
                      "%.2f" % _ms(ws["send_floor"]), "-", "-",
                      "alsserve loop = %.2fx floor; aiohttp loop = %.2fx" % (
                          ours["loop"] / ws["send_floor"], ws["aiohttp"][key]["loop"] / ws["send_floor"]),
                      "info", "n/a")
    # (5) notify cost
    for key, what in (("notify", "1000 reading clients"), ("notify_stall", "999 reading + 1 never reads")):
        ours = ws["alsserve"][key]
        for peer, peer_label in (("aiohttp", "aiohttp (ALS 0.7)"), ("websockets", "websockets")):
            theirs = ws[peer][key]
            first = peer == "aiohttp"
            t.add("5 notify() on the caller thread, %s" % what, "us median (p99)",
                  "%.1f (%.1f)" % (ours["median"] * 1e6, ours["p99"] * 1e6), peer_label,
                  "%.1f (%.1f)" % (theirs["median"] * 1e6, theirs["p99"] * 1e6),
                  fmt(ratio(ours["median"], theirs["median"]), "%.2fx"),
                  "<= 150 us median" if first else "info", verdict(ours["median"] <= 150e-6) if first else "n/a")
        t.add("5 reference, %s" % what,
              "us median (p99): asyncio call_soon_threadsafe() to an idle loop, same process",
              "%.1f (%.1f)" % (ours["floor"] * 1e6, ours["floor_p99"] * 1e6), "-", "-",
              "notify = %.2fx this" % (ours["median"] / ours["floor"]), "info", "n/a")
    ours, base = ws["alsserve"]["notify_stall"], ws["alsserve"]["notify"]

    def fans(kind):
        with_stall, without = ws[kind]["fan_stall"], ws[kind]["fan_nostall"]
        return "%s / %s ms" % (
            "never (%d/%d rounds)" % (with_stall["missed"], with_stall["rounds"]) if with_stall["median"] is None
            else "%.2f" % _ms(with_stall["median"]) + (" (%d missed)" % with_stall["missed"]
                                                       if with_stall["missed"] else ""),
            fmt(_ms(without["median"]) if without["median"] is not None else None, "%.2f"))

    fan = ws["alsserve"]["fan_stall"]
    unaffected = (ours["stalled"] >= 1 and fan["median"] is not None and not fan["missed"]
                  and ours["median"] <= max(1.5 * base["median"], 50e-6))
    t.add("5 stalled client: notify unchanged, readers still served",
          "notify us with/without stall; fan-out ms to 999 readers with stall / to 1000 without",
          "%.0f/%.0f us; %s" % (ours["median"] * 1e6, base["median"] * 1e6, fans("alsserve")),
          "aiohttp (ALS 0.7)", fans("aiohttp"), "-", "notify <= 1.5x; all readers served", verdict(unaffected))
    # (6) memory
    for flavor, flavor_label in (("plain", "plain clients"), ("browser", "browser-like clients")):
        ours = r["rss"]["alsserve"][flavor]["delta"]
        for peer, peer_label in (("aiohttp", "aiohttp (ALS 0.7)"), ("websockets", "websockets")):
            theirs = r["rss"][peer][flavor]["delta"]
            q = ratio(ours, theirs)
            first = peer == "aiohttp"
            t.add("6 RSS delta, 1000 idle WebSocket %s" % flavor_label, "MiB (KiB per client)",
                  "%.1f (%.1f)" % (ours / 1024, ours / 1000), peer_label,
                  "%.1f (%.1f)" % (theirs / 1024, theirs / 1000), fmt(q, "%.2fx"),
                  "<= 1x" if first else "info", verdict(q is not None and q <= 1) if first else "n/a")
    # (7) start-up
    imp = r["import"]
    q = ratio(imp["alsserve"], imp["aiohttp"])
    t.add("7 import time", "ms (-X importtime, median of %d)" % IMPORT_ROUNDS, "%.1f" % (imp["alsserve"] * 1e3),
          "from aiohttp import web", "%.1f" % (imp["aiohttp"] * 1e3), fmt(q, "%.2fx"), "< 0.5x",
          verdict(q is not None and q < 0.5))
    st = r["start"]
    for peer, peer_label, target in (("aiohttp", "aiohttp (ALS 0.7)", "< 0.5x"),
                                     ("http.server", "http.server", "info")):
        q = ratio(st["alsserve"], st[peer])
        t.add("7 START to first byte", "ms, process start -> first 200 (median of %d)" % START_ROUNDS,
              "%.0f" % (st["alsserve"] * 1e3), peer_label, "%.0f" % (st[peer] * 1e3), fmt(q, "%.2fx"), target,
              verdict(q is not None and q < 0.5) if peer == "aiohttp" else "n/a")
    # (8) STOP
    stop = r["stop"]
    q = ratio(stop["alsserve"]["median"], stop["aiohttp"]["median"])
    t.add("8 STOP, 100 clients closing on disconnect", "s (median)",
          "%.3f" % stop["alsserve"]["median"] + (" (%d left open)" % stop["alsserve"]["left_open"]
                                                 if stop["alsserve"]["left_open"] else ""),
          "aiohttp (ALS 0.7 stop)", "%.3f" % stop["aiohttp"]["median"], fmt(q, "%.2fx"), "< 0.3 s",
          verdict(stop["alsserve"]["median"] < 0.3 and not stop["alsserve"]["left_open"]))
    viewer_rows(t, r.get("viewers"), r.get("nginx"))
    return t


CASE_LABELS = {
    ("alsserve", "publish", "viewer"): "publish_image(), viewer clients (GET frame url)",
    ("alsserve", "write_notify", "als"): "write + notify, ALS clients (GET web_image.jpg?timestamp=)",
    ("alsserve", "write_notify", "viewer"): "write + notify, viewer clients",
    ("alsserve", "publish", "als"): "publish_image(), ALS clients",
}
PEER_LABELS = {
    ("aiohttp", "write_notify", "als"): "aiohttp (ALS 0.7: write, send_message), ALS clients",
    ("floor", "publish", "viewer"): "floor (bare asyncio, image in memory), viewer clients",
    ("floor", "publish", "als"): "floor (bare asyncio, image in memory), ALS clients",
}


def paired_ratio(ours, theirs):
    """Median of the per-round ratios: the rounds of all cases are taken in
    turn, so round i of each ran under the same load of the machine."""
    pairs = [a / b for a, b in zip(ours, theirs) if a is not None and b]
    return statistics.median(pairs) if pairs else None


def viewer_rows(t, viewers, proxied):
    """(9) fresh image to N viewers, (10) CPU, (11) through nginx."""
    if viewers:
        def cell(f):
            return "%.1f (%.1f + %.1f)" % (_ms(f["median"]), _ms(f["announce"]), _ms(f["delivery"])) + (
                "; %d bad" % f["bad"] if f["bad"] else "")

        aiohttp = ("aiohttp", "write_notify", "als")
        for n in VIEWER_COUNTS:
            get = lambda case: viewers["%s/%s/%s/%d" % (case + (n,))]     # noqa: E731
            for case, label in CASE_LABELS.items():
                ours = get(case)
                floor = ("floor", "publish", case[2])
                main = case in (("alsserve", "publish", "viewer"), ("alsserve", "write_notify", "als"))
                for peer in (floor, aiohttp) if main else (floor,):
                    theirs = get(peer)
                    q = paired_ratio(ours["rounds"], theirs["rounds"])
                    if peer[0] == "floor":
                        target, ok = "<= 1.1x", q is not None and q <= 1.1 and not ours["bad"]
                    else:
                        target, ok = "< 1x (ahead)", q is not None and q < 1 and not ours["bad"]
                    t.add("9 fresh 3 MB image to %d viewers (WebSocket + keep-alive HTTP each): %s" % (n, label),
                          "ms command -> last viewer holds the whole body, median of %d (command -> first "
                          "viewer told + first told -> last body); ratio: median of the per-round ratios"
                          % VIEWER_ROUNDS,
                          cell(ours), PEER_LABELS[peer], cell(theirs), fmt(q, "%.2fx"),
                          target if main else "info", verdict(ok) if main else "n/a")
        # (10) CPU of the server process, over both N
        def cpu(case):
            runs = [viewers["%s/%s/%s/%d" % (case + (n,))] for n in VIEWER_COUNTS]
            return sum(f["cpu_per_100"] * n for f, n in zip(runs, VIEWER_COUNTS)) / sum(VIEWER_COUNTS)

        for case in (("alsserve", "publish", "viewer"), ("alsserve", "write_notify", "als")):
            for peer in (aiohttp, ("floor", "publish", case[2])):
                q = ratio(cpu(case), cpu(peer))
                t.add("10 CPU of the server process per 100 delivered 3 MB images: %s" % CASE_LABELS[case],
                      "CPU s (utime + stime, all threads, /proc/PID/stat)", "%.2f" % cpu(case),
                      PEER_LABELS[peer], "%.2f" % cpu(peer), fmt(q, "%.2fx"), "info", "n/a")
    if proxied:
        p, d, a = proxied["proxied"], proxied["direct"], proxied["als_page"]

        def counts(f):
            return "max %d, mean %.1f" % (max(f["counts"]), statistics.mean(f["counts"])) + (
                " (%d bad)" % f["bad"] if f["bad"] else "")

        label = "11 through nginx (README recipe, /als/), %d viewers x %d new images as our viewer follows them" % (
            NGINX_VIEWERS, NGINX_IMAGES)
        t.add(label, "full image responses sent by alsserve per image (its access log)", counts(p),
              "same viewers straight to alsserve", counts(d), fmt(ratio(statistics.mean(p["counts"]),
                                                                        statistics.mean(d["counts"])), "%.3fx"),
              "<= 3 per image", verdict(max(p["counts"]) <= 3 and not p["bad"]))
        t.add(label, "ms command -> last viewer holds the whole body, median (p95)",
              "%.0f (%.0f)" % (_ms(p["median"]), _ms(p["p95"])), "same viewers straight to alsserve",
              "%.0f (%.0f)" % (_ms(d["median"]), _ms(d["p95"])), fmt(ratio(p["median"], d["median"]), "%.2fx"),
              "info", "n/a")
        t.add("11 ALS's page through nginx (root variant), %d viewers x %d images (web_image.jpg?timestamp=)"
              % (NGINX_VIEWERS, NGINX_ALS_IMAGES), "full image responses sent by alsserve per image; ms to the last",
              "%s; %.0f ms" % (counts(a), _ms(a["median"])), "-", "-", "-", "info (no-cache: passed)", "n/a")


# -- main --------------------------------------------------------------------

def link_case():
    """(12) the shared Wi-Fi link (tests/bench/link.py, its own process: it needs root)."""
    log("link case: a shaped link in a network namespace (about 4 minutes)")
    proc = subprocess.run([PY, os.path.join(HERE, "link.py")], stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, cwd=ROOT)
    output = proc.stdout.decode("utf-8", "replace")
    if proc.returncode:
        return "\n## Link case\n\nfailed:\n\n```\n%s\n```\n" % output[-3000:]
    if output.startswith("link case skipped"):
        return "\n## Link case\n\n%s\n" % output.strip()
    with open(os.path.join(BUILD, "bench-link.md")) as f:
        return "\n## Link case (12)\n\n" + f.read() + "\n" + link_notes()


def link_notes():
    import link     # (here: link.py imports this module)
    return ("The server runs in a network namespace whose way out is a veth shaped by HTB to %d Mbit/s; "
            "%d viewers (imageclients.py, each from an address of its own) fetch each new %d MB image as in "
            "row 9; times from the command to each viewer's whole body, medians over %d images. The far run "
            "caps one viewer's address at %d Mbit/s. Ideals are computed from the link rate.\n"
            % (link.LINK_MBIT, link.VIEWERS, link.IMAGE_SIZE >> 20, link.IMAGES, link.FAR_MBIT))


def main():
    nofile = raise_nofile()
    have_wrk = ensure_wrk()
    have_nginx = nginx_recipe.ensure_nginx(log)
    os.makedirs(BUILD, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="alsserve-bench-")
    errdir = os.path.join(workdir, "logs")
    os.makedirs(errdir)
    # Children cache their bytecode (as installed packages have it), in the
    # work folder rather than the source tree: import times compare fairly.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(workdir, "pycache")
    load_before = os.getloadavg()
    log("work folder %s, RLIMIT_NOFILE %d, wrk %s" % (workdir, nofile, "yes" if have_wrk else "no"))
    results = {"http": {}, "ws": {}, "rss": {}, "import": {}, "start": {}, "stop": {}, "viewers": {}, "nginx": {}}
    try:
        folder = make_web_folder(workdir)
        # (1)-(3) HTTP, (4) fan-out, (5) notify cost, (6) memory
        results["http"] = http_cases(have_wrk, folder, errdir)
        results["ws"] = fanout_cases(folder, errdir)
        for kind in WS_KINDS:
            results["ws"][kind].update(notify_cases(kind, folder, errdir))
        for kind in WS_KINDS:
            for flavor, deflate in (("plain", False), ("browser", True)):
                results["rss"].setdefault(kind, {})[flavor] = rss_case(kind, folder, errdir, deflate)
        # (7) import and start-up
        baseline = {name for name, _cum, _indent in _import_times("pass")}
        results["import"]["alsserve"] = import_cost("import alsserve", baseline)
        results["import"]["aiohttp"] = import_cost("from aiohttp import web", baseline)
        log("import: alsserve %.1f ms, aiohttp.web %.1f ms" % (
            results["import"]["alsserve"] * 1e3, results["import"]["aiohttp"] * 1e3))
        for kind in ("alsserve", "aiohttp"):
            results["start"][kind] = start_to_first_byte(kind, folder, errdir)
        results["start"]["http.server"] = start_to_first_byte_http_server(folder, errdir)
        log("START to first byte: %s" % ", ".join("%s %.0f ms" % (k, v * 1e3)
                                                  for k, v in results["start"].items()))
        # (8) STOP
        results["stop"]["alsserve"] = stop_case("alsserve", folder, errdir, STOP_ROUNDS)
        results["stop"]["aiohttp"] = stop_case("aiohttp", folder, errdir, 1)
        # (9)-(11) a fresh image to many viewers, directly and through nginx
        results["viewers"] = viewer_cases(workdir, errdir)
        if have_nginx:
            results["nginx"] = nginx_cases(workdir, errdir)
    except BaseException:
        log("failed; child logs in %s" % errdir)
        raise
    table = build_table(results)
    elapsed = time.monotonic() - T0
    header = [
        "# alsserve benchmarks",
        "",
        "Python %s on %s, %d CPUs (shared: load average %.2f at start), %.0f s run. "
        "Loopback; servers, WebSocket clients and wrk each in their own process. "
        "Ratios are measured in the same run; absolute figures are noisy." % (
            platform.python_version(), platform.platform(), os.cpu_count() or 0, load_before[0], elapsed),
        "",
    ]
    notes = [
        "",
        "Notes: wrk figures are the median of %d interleaved passes of %d s per server; fan-out rounds are "
        "interleaved across the three servers (all up at once), each client process on raw sockets and epoll, "
        "times from the notify call to the last receipt on CLOCK_MONOTONIC; \"loop\" is the server's own send "
        "loop timed on its event loop thread. Browser-like clients offer permessage-deflate as Chrome and "
        "Firefox do: the peers then compress per client (library defaults, as ALS 0.7 runs aiohttp), alsserve "
        "negotiates no extension. The stalled client has a 1 KiB receive buffer, never reads, and was sent "
        "%d MiB before the others connected. Import times are the new top-level imports' cumulative "
        "-X importtime, bytecode cached for both." % (
            WRK_PASSES, WRK_PASS_SECONDS, STALL_FILL // (1024 * 1024)),
        "",
        "Rows 9-11: each viewer (imageclients.py, raw sockets on epoll, its own process) holds a WebSocket and "
        "a keep-alive HTTP connection and fetches the new image when told: viewer clients GET the frame "
        "message's url as our viewer does, ALS clients GET web_image.jpg?timestamp= on new_image as ALS's page "
        "does; every body is checked byte for byte. The command is timed in the server's process from the "
        "moment the caller holds the new bytes: publish_image(bytes); for write + notify the caller first "
        "writes web_image.jpg as ALS's Save module does (ALZweb_image.jpg, then rename; ALS's own work, the "
        "same for aiohttp, not timed) and the command is the notify; the floor (peer_floor.py) keeps "
        "the bytes in memory, sends the same two messages and answers each GET with one write. CPU is the "
        "server process's utime + stime over the rounds. Row 11 runs nginx with the README's recipe "
        "(nginx_recipe.py), %d worker processes, and counts full responses in alsserve's access log; nginx's "
        "cache lock lets waiting requests look again every 500 ms, which sets its latency." % (os.cpu_count() or 1),
    ]
    text = "\n".join(header) + table.markdown() + "\n" + "\n".join(notes) + "\n" + link_case()
    with open(os.path.join(BUILD, "bench.md"), "w") as f:
        f.write(text)
    with open(os.path.join(BUILD, "bench.json"), "w") as f:
        json.dump(results, f, indent=1)
    print(text)
    missed = sum(1 for row in table.rows if row[-1] == "**missed**")
    print("%d targets met, %d missed; written to build/bench.md" % (
        sum(1 for row in table.rows if row[-1] == "met"), missed))
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
