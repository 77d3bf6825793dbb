"""The README's nginx recipe, run for real: extracted from README.md, given
loopback ports and a private folder, started as a child nginx.

Used by tests/interop/interop_nginx.py and tests/bench/run.py. The blocks
are taken from the README's "Behind a reverse proxy (nginx)" section (its
```nginx fences, in order) and changed only where a test must: the upstream
port, the listen ports, the cache folder and, when asked, the WebSocket
timeouts. Each of those must occur in the README as written here, or
build_config() fails: a README edit cannot silently leave them unused.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
SECTION = "## Behind a reverse proxy (nginx)"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"

# What the README says, and what each test run puts instead.
UPSTREAM = "server 127.0.0.1:8000;"
SUBPATH_LISTEN = "listen 80;"
ROOT_LISTEN = "listen 8080;"
CACHE_PATH = "/var/cache/nginx/alsserve"
WS_TIMEOUTS = ("proxy_read_timeout 60s;", "proxy_send_timeout 60s;")


def readme_blocks(readme=README):
    """The ```nginx blocks of the README's reverse proxy section, in order."""
    with open(readme, encoding="utf-8") as f:
        text = f.read()
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end >= 0 else len(text)]
    return re.findall(r"^```nginx\n(.*?)^```$", section, re.S | re.M)


def _replace(text, old, new, count):
    found = text.count(old)
    if found != count:
        raise AssertionError("the README's nginx recipe has %r %d times, expected %d"
                             % (old, found, count))
    return text.replace(old, new)


def build_config(workdir, upstream_port, subpath_port, root_port, ws_timeout=None,
                 worker_processes=1, access_log=True):
    """A complete nginx.conf around the README's blocks."""
    blocks = readme_blocks()
    if len(blocks) != 3:
        raise AssertionError("expected 3 nginx blocks in the README, found %d" % len(blocks))
    recipe = "\n".join(blocks)
    recipe = _replace(recipe, UPSTREAM, "server 127.0.0.1:%d;" % upstream_port, 1)
    recipe = _replace(recipe, SUBPATH_LISTEN, "listen 127.0.0.1:%d;" % subpath_port, 1)
    recipe = _replace(recipe, ROOT_LISTEN, "listen 127.0.0.1:%d;" % root_port, 1)
    recipe = _replace(recipe, CACHE_PATH, os.path.join(workdir, "cache"), 1)
    if ws_timeout is not None:
        for directive in WS_TIMEOUTS:
            name = directive.split()[0]
            recipe = _replace(recipe, directive, "%s %gs;" % (name, ws_timeout), 2)
    temp = lambda name: os.path.join(workdir, "temp", name)     # noqa: E731
    return "\n".join([
        "daemon off;",
        "master_process on;",
        "worker_processes %d;" % worker_processes,
        "pid %s;" % os.path.join(workdir, "nginx.pid"),
        "error_log %s info;" % os.path.join(workdir, "error.log"),
        "events { worker_connections 4096; }",
        "http {",
        "    access_log %s;" % (os.path.join(workdir, "access.log") if access_log else "off"),
        "    sendfile on;",        # as Debian's nginx.conf has it
        "    tcp_nopush on;",
        "    client_body_temp_path %s;" % temp("client_body"),
        "    proxy_temp_path %s;" % temp("proxy"),
        "    fastcgi_temp_path %s;" % temp("fastcgi"),
        "    uwsgi_temp_path %s;" % temp("uwsgi"),
        "    scgi_temp_path %s;" % temp("scgi"),
        recipe,
        "}",
        ""])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class Nginx:
    """nginx in the foreground (daemon off) with its own prefix, config,
    temp and cache folders in a temp dir; stopped by its own pid."""

    def __init__(self, upstream_port, ws_timeout=None, worker_processes=1, access_log=True):
        self.workdir = tempfile.mkdtemp(prefix="alsserve-nginx-")
        # Workers run as nobody when the master is root: they must reach the cache.
        os.chmod(self.workdir, 0o755)
        os.makedirs(os.path.join(self.workdir, "temp"))
        os.makedirs(os.path.join(self.workdir, "logs"))   # nginx checks its prefix's logs/
        self.subpath_port = free_port()
        self.root_port = free_port()
        self.config_path = os.path.join(self.workdir, "nginx.conf")
        self.error_log = os.path.join(self.workdir, "error.log")
        self.access_log = os.path.join(self.workdir, "access.log")
        with open(self.config_path, "w") as f:
            f.write(build_config(self.workdir, upstream_port, self.subpath_port, self.root_port,
                                 ws_timeout, worker_processes, access_log))
        self.proc = None

    def start(self, timeout=10.0):
        if not os.path.exists(NGINX):
            raise RuntimeError("nginx not found (apt-get install -y nginx-light)")
        with open(os.path.join(self.workdir, "stderr.log"), "wb") as stderr:
            self.proc = subprocess.Popen(
                [NGINX, "-p", self.workdir + "/", "-c", self.config_path, "-e", self.error_log],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while not (_accepts(self.subpath_port) and _accepts(self.root_port)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("nginx did not start:\n" + self.logs())
            time.sleep(0.02)
        return self

    def logs(self):
        out = []
        for name in ("stderr.log", "error.log"):
            try:
                with open(os.path.join(self.workdir, name), encoding="utf-8", errors="replace") as f:
                    out.append("--- %s\n%s" % (name, f.read()[-6000:]))
            except OSError:
                pass
        return "\n".join(out)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)   # fast shutdown of the master we started
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def ensure_nginx(log=print):
    """nginx on PATH, installing Debian's nginx-light as root when missing."""
    global NGINX
    if shutil.which("nginx") or os.path.exists(NGINX):
        NGINX = shutil.which("nginx") or NGINX
        return True
    if os.geteuid() != 0:
        log("nginx missing and not root: nginx cases skipped")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in (("apt-get", "install", "-y", "-q", "nginx-light"),
                    ("apt-get", "update", "-q"), ("apt-get", "install", "-y", "-q", "nginx-light")):
        subprocess.run(attempt, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        if shutil.which("nginx"):
            NGINX = shutil.which("nginx")
            return True
    log("could not install nginx-light: nginx cases skipped")
    return False
