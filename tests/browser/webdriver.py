"""A small W3C WebDriver client on the Python standard library.

Written from the W3C WebDriver specification (https://www.w3.org/TR/webdriver2/):
one HTTP request per command, JSON bodies, ``{"value": ...}`` answers, errors
as ``{"value": {"error": code, "message": ..., "stacktrace": ...}}``.

Every call has a timeout (a socket timeout on the HTTP request): a driver or
browser that hangs raises ``WebDriverTimeout`` instead of hanging the test run.

    session = Session.create("http://127.0.0.1:4444", {"browserName": "firefox"})
    session.navigate("http://127.0.0.1:8000/")
    title = session.execute("return document.title")
    png = session.screenshot()
    session.delete()

Pointer input (``perform``): mouse works in all four engines driven here
(chromedriver, geckodriver, WebKitWebDriver, WPEWebDriver). Touch pointers
(``touch()``, pointerType "touch") are real touches in chromedriver and
geckodriver; WebKitWebDriver and WPEWebDriver accept them but send mouse
events. Wheel and key sources work in all four. Details: engines.py.
"""

import base64
import http.client
import json
import socket
import time
import urllib.parse

ELEMENT_KEY = "element-6066-11e4-a52e-4f735466cecf"   # W3C web element identifier
DEFAULT_TIMEOUT = 30.0


class WebDriverError(Exception):
    """A WebDriver error answer: ``code`` is the W3C error code
    (``"no such element"``, ``"javascript error"``, ...), ``message`` the
    driver's message, ``status`` the HTTP status, ``command`` what was sent."""

    def __init__(self, code, message, status=None, command=None, stacktrace=""):
        self.code = code
        self.message = message
        self.status = status
        self.command = command
        self.stacktrace = stacktrace
        where = " (%s)" % command if command else ""
        super().__init__("%s: %s%s" % (code, message, where))


class WebDriverTimeout(WebDriverError):
    """No answer from the driver within the call's timeout."""

    def __init__(self, message, command=None):
        super().__init__("timeout", message, None, command)


class Transport:
    """JSON over HTTP to one driver at ``base_url`` (``http://host:port[/prefix]``)."""

    def __init__(self, base_url, timeout=DEFAULT_TIMEOUT):
        parts = urllib.parse.urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError("WebDriver URL must be http://host:port, got %r" % base_url)
        self.host = parts.hostname
        self.port = parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.timeout = timeout

    def request(self, method, path, body=None, timeout=None):
        """Send one command; returns the answer's ``value`` or raises WebDriverError."""
        timeout = self.timeout if timeout is None else timeout
        command = "%s %s" % (method, path)
        data = None if body is None else json.dumps(body).encode("utf-8")
        headers = {"Accept": "application/json", "Connection": "close"}
        if data is not None:
            headers["Content-Type"] = "application/json; charset=utf-8"
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, self.prefix + path, body=data, headers=headers)
            response = conn.getresponse()
            status = response.status
            raw = response.read()
        except (socket.timeout, TimeoutError) as error:
            raise WebDriverTimeout("no answer within %.1f s (%s)" % (timeout, error), command) from None
        except (OSError, http.client.HTTPException) as error:
            raise WebDriverError("connection failed", "%s: %s" % (type(error).__name__, error),
                                 None, command) from None
        finally:
            conn.close()
        try:
            answer = json.loads(raw.decode("utf-8")) if raw else {}
        except ValueError:
            raise WebDriverError("invalid answer", "HTTP %d, not JSON: %r" % (status, raw[:200]),
                                 status, command) from None
        value = answer.get("value") if isinstance(answer, dict) else None
        if status >= 400 or (isinstance(value, dict) and "error" in value and status != 200):
            if isinstance(value, dict):
                raise WebDriverError(value.get("error", "unknown error"), value.get("message", ""),
                                     status, command, value.get("stacktrace", ""))
            raise WebDriverError("unknown error", "HTTP %d: %r" % (status, raw[:200]), status, command)
        return value


_COUNT_CLICKS = ("var w = window; if (w.webdriverClicks === undefined) { w.webdriverClicks = 0;"
                 " document.addEventListener('click', function () { w.webdriverClicks += 1; }, true); }"
                 " return w.webdriverClicks;")


class Element:
    """A web element reference of a session."""

    def __init__(self, session, element_id):
        self.session = session
        self.id = element_id

    def _path(self, tail=""):
        return "/element/%s%s" % (self.id, tail)

    def click(self):
        """Element Click. WebKit's driver now and then answers "unknown
        error" with no message; a count of the clicks the page received
        then tells a click that was lost (sent again) from one that was done."""
        before = self.session.execute(_COUNT_CLICKS)
        try:
            self.session.command("POST", self._path("/click"), {})
        except WebDriverError as error:
            if error.code != "unknown error" or error.message:
                raise
            time.sleep(0.2)
            if self.session.execute(_COUNT_CLICKS) == before:
                self.session.command("POST", self._path("/click"), {})

    def rect(self):
        """{'x', 'y', 'width', 'height'} in CSS pixels, relative to the document."""
        return self.session.command("GET", self._path("/rect"))

    def text(self):
        return self.session.command("GET", self._path("/text"))

    def attribute(self, name):
        return self.session.command("GET", self._path("/attribute/%s" % urllib.parse.quote(name)))

    def property(self, name):
        return self.session.command("GET", self._path("/property/%s" % urllib.parse.quote(name)))

    def displayed(self):
        return self.session.command("GET", self._path("/displayed"))

    def screenshot(self):
        return base64.b64decode(self.session.command("GET", self._path("/screenshot")))

    def to_json(self):
        return {ELEMENT_KEY: self.id}

    def __repr__(self):
        return "<Element %s>" % self.id


class Session:
    """One WebDriver session. ``timeout`` bounds every HTTP call; script calls
    also set the driver's script timeout below it, so a stuck script ends as a
    WebDriver ``script timeout`` error rather than a socket timeout."""

    def __init__(self, transport, session_id, capabilities, timeout=DEFAULT_TIMEOUT):
        self.transport = transport
        self.id = session_id
        self.capabilities = capabilities
        self.timeout = timeout
        self.deleted = False

    @classmethod
    def create(cls, base_url, always_match, first_match=None, timeout=DEFAULT_TIMEOUT,
               create_timeout=60.0):
        """New Session with ``{"capabilities": {"alwaysMatch": ..., "firstMatch": ...}}``."""
        transport = Transport(base_url, timeout)
        capabilities = {"alwaysMatch": always_match}
        if first_match:
            capabilities["firstMatch"] = first_match
        value = transport.request("POST", "/session", {"capabilities": capabilities},
                                  timeout=create_timeout)
        if not isinstance(value, dict) or "sessionId" not in value:
            raise WebDriverError("invalid answer", "no sessionId in %r" % (value,), None, "POST /session")
        return cls(transport, value["sessionId"], value.get("capabilities", {}), timeout)

    # -- plumbing
    def command(self, method, path, body=None, timeout=None):
        return self.transport.request(method, "/session/%s%s" % (self.id, path), body, timeout)

    def _wrap(self, value):
        if isinstance(value, dict):
            if ELEMENT_KEY in value and len(value) == 1:
                return Element(self, value[ELEMENT_KEY])
            return {k: self._wrap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._wrap(v) for v in value]
        return value

    @staticmethod
    def _args(args):
        return [a.to_json() if isinstance(a, Element) else a for a in args]

    # -- session
    def delete(self, timeout=None):
        """Delete Session (idempotent)."""
        if self.deleted:
            return
        self.deleted = True
        self.transport.request("DELETE", "/session/%s" % self.id,
                               timeout=min(self.timeout, 20) if timeout is None else timeout)

    def set_timeouts(self, script=None, page_load=None, implicit=None):
        """Driver-side timeouts, in seconds."""
        body = {}
        for key, value in (("script", script), ("pageLoad", page_load), ("implicit", implicit)):
            if value is not None:
                body[key] = int(value * 1000)
        self.command("POST", "/timeouts", body)

    def status(self):
        return self.transport.request("GET", "/status")

    # -- navigation
    def navigate(self, url):
        self.command("POST", "/url", {"url": url})

    def current_url(self):
        return self.command("GET", "/url")

    def title(self):
        return self.command("GET", "/title")

    def refresh(self):
        self.command("POST", "/refresh", {})

    # -- scripts
    def execute(self, script, *args, timeout=None):
        """Execute Script: ``script`` is a function body (use ``return``)."""
        return self._wrap(self.command("POST", "/execute/sync",
                                       {"script": script, "args": self._args(args)}, timeout))

    def execute_async(self, script, *args, timeout=None):
        """Execute Async Script: the body calls ``arguments[arguments.length - 1](result)``."""
        return self._wrap(self.command("POST", "/execute/async",
                                       {"script": script, "args": self._args(args)}, timeout))

    # -- elements
    def find(self, css):
        """Find Element by CSS selector; WebDriverError 'no such element' when absent."""
        value = self.command("POST", "/element", {"using": "css selector", "value": css})
        return self._wrap(value)

    def find_all(self, css):
        return self._wrap(self.command("POST", "/elements", {"using": "css selector", "value": css}))

    # -- window
    def window_rect(self):
        return self.command("GET", "/window/rect")

    def set_window_rect(self, width=None, height=None, x=None, y=None):
        body = {k: v for k, v in (("width", width), ("height", height), ("x", x), ("y", y))
                if v is not None}
        return self.command("POST", "/window/rect", body)

    def screenshot(self):
        """Take Screenshot: the viewport as PNG bytes (device pixels)."""
        return base64.b64decode(self.command("GET", "/screenshot"))

    # -- input
    def perform(self, *sources):
        """Perform Actions with input sources built by ``mouse()``, ``touch()``, ``keys()``."""
        self.command("POST", "/actions", {"actions": [s.to_json() for s in sources]})

    def release_actions(self):
        self.command("DELETE", "/actions")

    # -- conveniences
    def wait_until(self, script, *args, timeout=5.0, interval=0.05):
        """Poll ``script`` (a function body returning a value) until truthy; returns
        the value or raises WebDriverTimeout with the last value seen."""
        deadline = time.monotonic() + timeout
        last = None
        while True:
            last = self.execute(script, *args)
            if last:
                return last
            if time.monotonic() >= deadline:
                raise WebDriverTimeout("condition not met within %.1f s, last value %r" % (timeout, last),
                                       "wait_until")
            time.sleep(interval)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        try:
            self.delete()
        except WebDriverError:
            pass


class InputSource:
    """An input source for Perform Actions: a list of ticks for one device."""

    def __init__(self, kind, source_id, parameters=None):
        self.kind = kind
        self.source_id = source_id
        self.parameters = parameters
        self.actions = []

    def to_json(self):
        source = {"type": self.kind, "id": self.source_id, "actions": self.actions}
        if self.parameters:
            source["parameters"] = self.parameters
        return source

    def pause(self, ms=0):
        self.actions.append({"type": "pause", "duration": int(ms)})
        return self

    # pointer sources
    def move(self, x, y, ms=0, origin="viewport"):
        self.actions.append({"type": "pointerMove", "x": int(round(x)), "y": int(round(y)),
                             "duration": int(ms),
                             "origin": origin.to_json() if isinstance(origin, Element) else origin})
        return self

    def down(self, button=0):
        self.actions.append({"type": "pointerDown", "button": button})
        return self

    def up(self, button=0):
        self.actions.append({"type": "pointerUp", "button": button})
        return self

    def click(self, x, y):
        return self.move(x, y).down().up()

    # key sources
    def key(self, value):
        self.actions += [{"type": "keyDown", "value": value}, {"type": "keyUp", "value": value}]
        return self

    # wheel sources
    def scroll(self, x, y, dx, dy, ms=0):
        self.actions.append({"type": "scroll", "x": int(x), "y": int(y), "deltaX": int(dx),
                             "deltaY": int(dy), "duration": int(ms), "origin": "viewport"})
        return self


def mouse(source_id="mouse"):
    return InputSource("pointer", source_id, {"pointerType": "mouse"})


def touch(source_id="finger1"):
    return InputSource("pointer", source_id, {"pointerType": "touch"})


def keys(source_id="keyboard"):
    return InputSource("key", source_id)


def wheel(source_id="wheel"):
    return InputSource("wheel", source_id)
