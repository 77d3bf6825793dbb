# SPDX-License-Identifier: MIT
# Copyright (c) 2026 the alsserve authors
"""alsserve: the live image server of Astro Live Stacker, in one module.

Amateur astronomers stack telescope frames live; alsserve publishes the latest
stacked JPEG (``web_image.jpg``) and the session metrics (``data.json``) from a
web folder, and tells every connected browser over a WebSocket (``/ws``) the
moment a new image is ready, so phones around the telescope see the image grow
without polling. Each new image is also kept in the night's history
(``history.json``, ``history/<id>.jpg``).

Standard library only, Python >= 3.8, MIT licence. Use it three ways::

    python -m alsserve --demo                      # try it
    python -m alsserve -d /path/to/folder          # watch mode: next to any stacking program

    import alsserve                                # ALS mode: from ALS or any program
    server = alsserve.ImageServer("/path/to/web/folder", port=8000)
    url = server.start()
    server.publish_image(jpeg_bytes)               # announced, served from memory, and written
    server.update_metrics(stack_size=12, total_exposure_seconds=360)
    server.stop()

Threads. The event loop's thread ("alsserve") owns everything a running
server holds: connections, the file cache, the browsers, the history's list,
the queue of new images. Other threads (the caller's: ALS's pipeline, the
command line) enter it one way only, ``loop.call_soon_threadsafe()``, handing
over what they pass. Disk work runs on the loop's executor ("alsserve-io")
as functions that return values to the loop. docs/design.md draws the map.

The module reads top to bottom, one section per layer, each using only what
is above it:

1. constants, errors, settings, small helpers
2. HTTP: request parsing (pure), responses
3. WebSocket: handshake and framing (sans-I/O)
4. connections on asyncio streams: static files, the WebSocket hub, the site
5. web folder publishing: atomic writes, assets, data.json, the history
6. controller: addresses and port, the announcer of new images, the loop's
   thread, ImageServer (START, STOP, publish) and ALS's Server
7. command line (``main()``): the folder watcher, the demo, the QR code
"""

import argparse
import asyncio
import base64
import codecs
import collections
import concurrent.futures
import email.utils
import enum
import errno
import fnmatch
import functools
import gzip
import hashlib
import importlib
import ipaddress
import json
import logging
import os
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import threading
import time
import unicodedata
import urllib.parse
import zlib
from datetime import timedelta

__version__ = "1.1.0"

__all__ = [
    "PortInUseError", "WebServerOnLoopback", "HTTPError", "WebSocketProtocolError", "Settings",
    "ImageServer", "ALS_MODE", "WATCH_MODE", "Wifi", "list_ipv4_addresses", "describe_ipv4_addresses",
    "resolve_displayed_address", "main",
    # ALS's network module (ALS 0.7 and 1.0): ``from alsserve import *`` is all of it.
    "Server", "get_host_ip", "is_port_in_use", "WEB_SERVER_BIND_HOST", "ADVERTISED_ADDRESS_AUTO",
    "ADVERTISED_ADDRESS_IP_PREFIX", "NetworkAddress", "build_network_address_candidates",
    "get_network_address_candidates", "select_advertised_address", "build_advertised_address_preference",
    "advertised_address_preference", "build_no_cache_file_response",
]

log = logging.getLogger("alsserve")
access_log = logging.getLogger("alsserve.access")   # one line per request


# =============================================================================
# 1. Constants, errors, settings, small helpers
# =============================================================================

DEFAULT_PORT = 8000
PORT_RANGE = (1024, 65535)
WEB_SERVER_BIND_HOST = "0.0.0.0"     # every local IPv4 interface, as the ALS documentation says
# The Displayed Address preference (ALS): "auto", or "ip:" and an address.
ADVERTISED_ADDRESS_AUTO = "auto"
ADVERTISED_ADDRESS_IP_PREFIX = "ip:"

# How a server treats its web folder: ALS mode publishes the viewer, the
# waiting image and data.json into it (or, for ALS's Server, serves what ALS
# writes); watch mode never writes into it (another program's folder).
ALS_MODE = "als"
WATCH_MODE = "watch"

IMAGE_NAME = "web_image.jpg"
METRICS_NAME = "data.json"
WAITING_IMAGE_NAME = "waiting.jpg"
INDEX_NAME = "index.html"
DEFAULT_ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
UNPUBLISHED_ASSET_FOLDERS = ("demo",)       # in the bundle, never published

# The history: a hidden folder of the web folder (never served by that name),
# listed at history.json, its images served at history/<id>.jpg.
HISTORY_FOLDER_NAME = ".alsserve-history"
HISTORY_INDEX = "index.json"
HISTORY_LISTING = "history.json"
HISTORY_URL_PATH = "history"

STOP_GRACE = 2.0                # STOP waits this long for browsers to close
IO_THREADS = 4                  # executor threads for the disk work of one server


class PortInUseError(RuntimeError):
    """The configured port cannot be bound (ALS compatible name)."""


class WebServerOnLoopback(Exception):
    """The displayed address is a loopback address (ALS compatible name)."""


class HTTPError(Exception):
    """A request that gets an error response; ``close``: the connection
    cannot be trusted any more and is closed after the reply; ``explain``:
    the reason is also told to the client (the detail only goes to the log)."""

    def __init__(self, status, detail="", close=False, headers=(), explain=False):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.close = close
        self.headers = list(headers)
        self.explain = explain


class Settings:
    """The limits and timeouts of a server: one object, given to the parts
    that need it. ``Settings(send_timeout=5.0)`` changes one; an unknown
    name or a value of the wrong kind is a ValueError."""

    header_timeout = 10.0           # a new connection sends a whole request head within this
    keepalive_timeout = 15.0        # an idle keep-alive connection is closed after this
    send_timeout = 30.0             # a download that takes no data this long is dropped
    max_connections = 4000          # HTTP and WebSocket together; beyond: 503
    cache_file_limit = 32 << 20     # files up to this are kept in memory, shared by all downloads
    cache_total_limit = 96 << 20    # least recently used copies go beyond this
    vanished_grace = 5.0            # a file missing for a moment (Windows replace) is served this long
    ws_max_clients = 2000           # leaves headroom above 1000-client star parties
    ws_max_message = 64 << 10       # browsers send tiny messages or none
    ws_ping_interval = 20.0         # a browser silent for 2 intervals is dropped
    ws_send_timeout = 10.0          # a browser that cannot drain this long is dropped
    ws_max_pending = 1024           # distinct messages waiting for one browser ...
    ws_max_pending_bytes = 4 << 20  # ... and their bytes; beyond: dropped, it is far behind
    ws_close_timeout = 2.0          # wait this long for the browser's Close
    history_entries = 300           # the history's budget: a night at one image a minute ...
    history_bytes = 1 << 30         # ... on a Raspberry Pi's SD card
    history_min_free = 1 << 30      # no history image while the disk has less free
    trusted_proxy = None            # a proxy's address: its X-Forwarded-For names the client in the log

    def __init__(self, **changes):
        for name, value in changes.items():
            if name.startswith("_") or not hasattr(Settings, name) or callable(getattr(Settings, name)):
                raise ValueError("no setting %r" % name)
            if name == "trusted_proxy":
                value = None if value is None else check_ip_address("trusted proxy", value)
            elif isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                    or (isinstance(getattr(Settings, name), int) and not isinstance(value, int)):
                raise ValueError("setting %s must be a non-negative %s, got %r"
                                 % (name, type(getattr(Settings, name)).__name__, value))
            setattr(self, name, value)


def check_port(port):
    low, high = PORT_RANGE
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= high:
        raise ValueError("port must be an integer in %d-%d, got %r" % (low, high, port))
    return port


def check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("%s must be a non-negative integer, got %r" % (name, value))
    return value


def check_ip_address(name, value):
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ValueError("%s must be an IP address, got %r" % (name, value)) from None


def is_local_address(address):
    """True when this machine can use the address (binding to it works)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((address, 0))
        return True
    except OSError:
        return False
    finally:
        sock.close()


def parse_address_preference(preference):
    """'auto' -> None; 'ip:<dotted IPv4>' -> the address; else ValueError."""
    if preference == ADVERTISED_ADDRESS_AUTO:
        return None
    if isinstance(preference, str) and preference.startswith(ADVERTISED_ADDRESS_IP_PREFIX):
        try:
            return str(ipaddress.IPv4Address(preference[len(ADVERTISED_ADDRESS_IP_PREFIX):].strip()))
        except ValueError:
            pass
    raise ValueError("displayed address must be 'auto' or 'ip:<IPv4 address>', got %r" % (preference,))


def check_bind_address(bind):
    """The address to listen on: 0.0.0.0 (all interfaces) or one of this
    machine's IPv4 addresses; else ValueError."""
    try:
        address = str(ipaddress.IPv4Address(bind))
    except (ValueError, TypeError):
        raise ValueError("bind address must be an IPv4 address such as 0.0.0.0 or 127.0.0.1, "
                         "got %r" % (bind,)) from None
    if address != WEB_SERVER_BIND_HOST and not is_local_address(address):
        raise ValueError("bind address %s is not an address of this machine" % address)
    return address


def check_web_folder(web_folder, writable=True, may_create=False):
    """The web folder as an absolute path, or ValueError naming what is
    wrong. may_create: missing is fine if it can be created (later)."""
    if not isinstance(web_folder, (str, os.PathLike)):
        raise ValueError("web folder must be a path, got %r" % (web_folder,))
    path = os.path.abspath(os.fspath(web_folder))
    if may_create and not os.path.lexists(path):
        parent = os.path.dirname(path)
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK | os.X_OK):
            raise ValueError("web folder %s cannot be created in %s" % (path, parent))
        return path
    if not os.path.exists(path):
        raise ValueError("web folder %s does not exist" % path)
    if not os.path.isdir(path):
        raise ValueError("web folder %s is not a directory" % path)
    if not os.access(path, (os.W_OK if writable else os.R_OK) | os.X_OK):
        raise ValueError("web folder %s is not %s" % (path, "writable" if writable else "readable"))
    return path


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def is_inside(path, folder):
    """True when path is in folder or below it, symlinks resolved: the one
    check that keeps what is served and written where it belongs."""
    folder = os.path.realpath(folder)
    return os.path.realpath(path).startswith(folder.rstrip(os.sep) + os.sep)


def http_date(timestamp=None):
    """An IMF-fixdate (RFC 9110 section 5.6.7) for the given time (now by default)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def format_exposure(total_exposure_seconds):
    """EXPO as ALS writes it: H:MM:SS of the rounded total exposure."""
    return str(timedelta(seconds=int(round(total_exposure_seconds))))


def metrics_json(stack_size, total_exposure_seconds):
    """The exact data.json text ALS writes: {"STACK_SIZE": n, "EXPO": "H:MM:SS"}."""
    check_count("stack size", stack_size)
    if isinstance(total_exposure_seconds, bool) or not isinstance(total_exposure_seconds, (int, float)) \
            or not 0 <= total_exposure_seconds < float("inf"):
        raise ValueError("total exposure must be a non-negative number of seconds, got %r"
                         % (total_exposure_seconds,))
    return json.dumps({"STACK_SIZE": stack_size, "EXPO": format_exposure(total_exposure_seconds)})


# Images are written in place by many programs: a copy counts once it has
# its start signature and its end marker (JPEG SOI/EOI, PNG's IEND chunk).
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\0\0\0\0IEND\xaeB`\x82"
IMAGE_MARKERS = {"image/jpeg": (b"\xff\xd8", b"\xff\xd9"), "image/png": (PNG_SIGNATURE, PNG_END)}


def is_complete_image(head, tail, content_type):
    """False for a JPEG or PNG whose first bytes (head) or last bytes (tail)
    are not its markers yet; True for other types. A JPEG may end in zero
    padding after EOI."""
    markers = IMAGE_MARKERS.get(content_type)
    if markers is None:
        return True
    if content_type == "image/jpeg":
        tail = tail.rstrip(b"\0")
    return head.startswith(markers[0]) and tail.endswith(markers[1])


def check_jpeg(data):
    if not is_complete_image(data[:2], data[-1024:], "image/jpeg"):
        raise ValueError("not a complete JPEG image (%d bytes; must start with FFD8 and end with FFD9)"
                         % len(data))
    return data


# =============================================================================
# 2. HTTP: request parsing (pure: bytes in, request or HTTPError out), responses
# =============================================================================

# Never read an unbounded amount from a client.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100

# RFC 9110 section 15: the reason phrases we send.
REASONS = {
    101: "Switching Protocols", 200: "OK", 206: "Partial Content",
    304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    405: "Method Not Allowed", 413: "Content Too Large", 414: "URI Too Long",
    416: "Range Not Satisfiable", 426: "Upgrade Required",
    431: "Request Header Fields Too Large", 500: "Internal Server Error",
    503: "Service Unavailable", 505: "HTTP Version Not Supported",
}

ALLOWED_METHODS = ("GET", "HEAD")

# Only web files are served, by extension: the web folder is often ALS's work
# folder, which also holds the astronomer's data (FITS, TIFF, raw files).
# Anything else is 404, like a missing file.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".json": "application/json; charset=utf-8",
    ".txt": "text/plain; charset=utf-8", ".svg": "image/svg+xml; charset=utf-8",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
    ".gif": "image/gif", ".ico": "image/x-icon", ".webp": "image/webp",
    ".mp4": "video/mp4", ".webm": "video/webm",
}
# Text is sent gzip-compressed to browsers that accept it; images and video
# are compressed already.
COMPRESSIBLE_TYPES = frozenset(t for t in CONTENT_TYPES.values() if t.endswith("charset=utf-8"))

# RFC 9110 section 5.6.2: token characters (method and header field names).
_TOKEN_CHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789"
                         b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
# Field values: visible ASCII, space, tab and obs-text; never CR, LF or NUL.
_BAD_VALUE_CHARS = frozenset(range(0, 32)) - {9} | {127}

# Segments Windows would map to devices, whatever the extension.
_WINDOWS_DEVICE_NAMES = frozenset(
    ["CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"]
    + ["COM%d" % i for i in range(10)] + ["LPT%d" % i for i in range(10)])


def content_type_for(name):
    """The Content-Type of a web file, None for a file that is not served."""
    return CONTENT_TYPES.get(os.path.splitext(name)[1].lower())


class Request:
    """One parsed request head. Header names are lower-cased; values kept as
    sent. ``path``: the target's path, in origin-form or absolute-form."""

    __slots__ = ("method", "target", "version", "headers", "path")

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers          # list of (lower-case name, value)
        self.path = target_path(target)

    def header(self, name, default=None):
        """The value of a header that must not repeat (None when absent)."""
        for key, value in self.headers:
            if key == name:
                return value
        return default

    def header_tokens(self, name):
        """All comma-separated tokens of a list header, lower-cased."""
        tokens = []
        for key, value in self.headers:
            if key == name:
                tokens.extend(t.strip().lower() for t in value.split(",") if t.strip())
        return tokens

    @property
    def keep_alive(self):
        tokens = self.header_tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens and "close" not in tokens
        return "close" not in tokens

    def __repr__(self):
        return "Request(%r, %r, %r)" % (self.method, self.target, self.version)


def target_path(target):
    """The path of a request target without query and fragment. An
    absolute-form target (RFC 9112 section 3.2.2, which a server must
    accept) gives its path: "http://host/ws" is "/ws"."""
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path[:8].lower().startswith(("http://", "https://")):
        rest = path.split("://", 1)[1]
        path = rest[rest.find("/"):] if "/" in rest else "/"
    return path


def _bounded_int(digits):
    """int() of an ASCII digit string, capped at 10**18: no file is that large,
    and Python 3.11+ refuses to convert more than 4300 digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 10 ** 18


def parse_request(head):
    """Parse a request head (bytes up to and including the blank line).

    Returns a Request or raises HTTPError with the status to answer. Enforces
    the size limits, rejects anything that could smuggle a second request
    (bodies, CL+TE, obs-fold, bare CR or LF) and requires Host on HTTP/1.1.
    """
    line_end = head.find(b"\r\n")
    if line_end < 0:
        if len(head) > MAX_REQUEST_LINE:
            raise HTTPError(414, "request line too long", close=True)
        raise HTTPError(400, "incomplete request line", close=True)
    if line_end > MAX_REQUEST_LINE:
        raise HTTPError(414, "request line too long", close=True)
    if len(head) - line_end - 2 > MAX_HEADER_BYTES:
        raise HTTPError(431, "header section too large", close=True)
    if not head.endswith(b"\r\n\r\n"):
        raise HTTPError(400, "header section not terminated by a blank line", close=True)

    parts = head[:line_end].split(b" ")
    if len(parts) != 3 or not all(parts):
        raise HTTPError(400, "malformed request line", close=True)
    method, target, version = parts
    if not all(c in _TOKEN_CHARS for c in method):
        raise HTTPError(400, "malformed method", close=True)
    if any(c <= 32 or c >= 127 for c in target):
        raise HTTPError(400, "malformed request target", close=True)
    if version not in (b"HTTP/1.1", b"HTTP/1.0"):
        if len(version) == 8 and version[:5] == b"HTTP/" and version[5:6].isdigit() \
                and version[6:7] == b"." and version[7:8].isdigit():
            raise HTTPError(505, "only HTTP/1.0 and HTTP/1.1 are served", close=True)
        raise HTTPError(400, "malformed HTTP version", close=True)

    headers = []
    lines = head[line_end + 2:-4].split(b"\r\n") if len(head) > line_end + 4 else []
    if len(lines) > MAX_HEADER_FIELDS:
        raise HTTPError(431, "too many header fields", close=True)
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name:
            raise HTTPError(400, "malformed header field", close=True)
        if not all(c in _TOKEN_CHARS for c in name):
            # Covers obs-fold (leading space), spaces before the colon, bare CR/LF.
            raise HTTPError(400, "malformed header field name", close=True)
        value = value.strip(b" \t")
        if any(c in _BAD_VALUE_CHARS for c in value):
            raise HTTPError(400, "control character in header field", close=True)
        headers.append((name.decode("ascii").lower(), value.decode("latin-1")))

    request = Request(method.decode("ascii"), target.decode("ascii"), version.decode("ascii"), headers)
    _check_framing(request)
    if request.version == "HTTP/1.1" and sum(1 for k, _ in headers if k == "host") != 1:
        raise HTTPError(400, "HTTP/1.1 requires exactly one Host header", close=True)
    return request


def _check_framing(request):
    """Refuse request bodies: this server reads none, so any body would be
    parsed as the next request (RFC 9112 section 6.3, request smuggling)."""
    lengths = [v for k, v in request.headers if k == "content-length"]
    has_te = any(k == "transfer-encoding" for k, _ in request.headers)
    if has_te and lengths:
        raise HTTPError(400, "both Content-Length and Transfer-Encoding", close=True)
    if has_te:
        raise HTTPError(400, "request bodies are not accepted", close=True)
    if len(lengths) > 1:
        raise HTTPError(400, "duplicate Content-Length", close=True)
    if lengths:
        if not lengths[0].isdigit() or not lengths[0].isascii():
            raise HTTPError(400, "malformed Content-Length", close=True)
        if _bounded_int(lengths[0]) > 0:
            raise HTTPError(413, "request bodies are not accepted", close=True)


def split_target(target):
    """The segments of a request target's path, decoded once, or HTTPError.

    Pure: no file system. Refuses every shape that could leave the web folder
    or name something that is not meant to be served: dot segments, encoded
    separators, backslashes, NUL and control characters, drive letters and
    stream names, dotfiles, empty segments, Windows device names.
    """
    path = target_path(target)
    if not path.startswith("/"):
        raise HTTPError(400, "request target must start with /")
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in path:
        raise HTTPError(404, "encoded separator or backslash")
    try:
        decoded = urllib.parse.unquote_to_bytes(path).decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPError(400, "path is not valid UTF-8") from None
    if decoded == "/":
        return [INDEX_NAME]
    segments = decoded[1:].split("/")
    for segment in segments:
        if not segment:
            raise HTTPError(404, "empty path segment or directory")
        if any(ord(c) < 32 or ord(c) == 127 for c in segment):
            raise HTTPError(400, "control character in path")
        normal = unicodedata.normalize("NFKC", segment)
        if normal.startswith(".") or segment.startswith("."):
            raise HTTPError(404, "dot segment or hidden file")
        if ":" in normal or "\\" in normal or "/" in normal:
            raise HTTPError(404, "drive, stream or separator in segment")
        if segment[-1] in ". " or segment != segment.strip():
            raise HTTPError(404, "name Windows would alter")
        if segment.split(".", 1)[0].upper().rstrip() in _WINDOWS_DEVICE_NAMES:
            raise HTTPError(404, "device name")
        if len(segment) > 255:
            raise HTTPError(404, "name too long")
    return segments


def parse_range(value, size):
    """A single ``bytes=`` range as (start, end_inclusive).

    None means "serve the whole file" (absent, malformed or several ranges,
    which RFC 9110 section 14.2 lets a server ignore). HTTPError(416) when
    the range cannot be satisfied.
    """
    if not value or not value.startswith("bytes=") or "," in value:
        return None
    first, dash, last = value[6:].strip().partition("-")
    if not dash or not (first.isdigit() or last.isdigit()):
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()):
        return None
    if not (first + last).isascii():
        return None                     # isdigit() also accepts "²", which int() refuses
    if first:
        start = _bounded_int(first)
        if last and _bounded_int(last) < start:
            return None                 # invalid: ignored, not unsatisfiable
        end = _bounded_int(last) if last else size - 1
        if start >= size:
            raise HTTPError(416, "range starts beyond the end",
                            headers=[("Content-Range", "bytes */%d" % size)])
        return start, min(end, size - 1)
    suffix = _bounded_int(last)
    if suffix == 0 or size == 0:
        raise HTTPError(416, "empty suffix range", headers=[("Content-Range", "bytes */%d" % size)])
    return max(0, size - suffix), size - 1


def not_modified(request, etag, mtime):
    """RFC 9110 section 13.1: If-None-Match wins over If-Modified-Since."""
    if_none_match = request.header("if-none-match")
    if if_none_match is not None:
        tags = [t.strip() for t in if_none_match.split(",")]
        weak = etag if not etag.startswith("W/") else etag[2:]
        return "*" in tags or etag in tags or ("W/" + weak) in tags
    if_modified_since = request.header("if-modified-since")
    if if_modified_since is not None:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            return False
        return int(mtime) <= since
    return False


def accepts_gzip(request):
    """RFC 9110 section 12.5.3: gzip (or x-gzip, or *) listed without q=0."""
    accepted = {}
    for token in request.header_tokens("accept-encoding"):
        coding, _, parameters = token.partition(";")
        quality = 1.0
        name, _, number = parameters.strip().partition("=")
        if name.strip() == "q":
            try:
                quality = float(number)
            except ValueError:
                quality = 0.0
        accepted[coding.strip()] = quality
    for coding in ("gzip", "x-gzip", "*"):
        if coding in accepted:
            return accepted[coding] > 0
    return False


class ResponseHead:
    """Status line and headers of one response, rendered to bytes once."""

    __slots__ = ("status", "headers")

    def __init__(self, status, headers=()):
        self.status = status
        self.headers = list(headers)

    def encode(self, date, keep_alive, http10=False):
        lines = ["HTTP/1.1 %d %s" % (self.status, REASONS.get(self.status, "Unknown")),
                 "Date: " + date, "Server: alsserve/" + __version__]
        lines.extend("%s: %s" % kv for kv in self.headers)
        if self.status != 101:          # (a 101 names its own Connection: Upgrade)
            options = []
            if any(name == "Upgrade" for name, _ in self.headers):
                options.append("upgrade")   # RFC 9110 7.8: hop-by-hop, a proxy must not pass it on
            if not keep_alive:
                options.append("close")
            elif http10:
                options.append("keep-alive")    # an HTTP/1.0 client keeps it only when told
            if options:
                lines.append("Connection: " + ", ".join(options))
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")


def error_response(error):
    """Head and body bytes for an HTTPError: a short text body saying why."""
    reason = REASONS.get(error.status, "Error") + (": " + error.detail if error.explain else "")
    body = ("%d %s\n" % (error.status, reason)).encode("utf-8")
    head = ResponseHead(error.status, [
        ("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body))),
        ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")] + error.headers)
    if error.status == 405:
        head.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
    return head, body


# =============================================================================
# 3. WebSocket: handshake and framing as a sans-I/O core (RFC 6455)
# =============================================================================

# RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_VERSION = "13"
WS_PATH = "/ws"


class Opcode(enum.IntEnum):
    """RFC 6455 section 5.2: frame opcodes (3-7 and 11-15 are reserved)."""
    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA


class CloseCode(enum.IntEnum):
    """RFC 6455 section 7.4.1: the close codes this server sends or checks."""
    NORMAL = 1000
    GOING_AWAY = 1001
    PROTOCOL_ERROR = 1002
    UNSUPPORTED_DATA = 1003
    NO_STATUS = 1005            # never on the wire
    ABNORMAL = 1006             # never on the wire
    INVALID_DATA = 1007
    POLICY_VIOLATION = 1008
    MESSAGE_TOO_BIG = 1009
    MANDATORY_EXTENSION = 1010
    INTERNAL_ERROR = 1011


def is_valid_close_code(code):
    """RFC 6455 section 7.4: codes a peer may send in a Close frame.

    1000-1003 and 1007-1014 are defined (1004 reserved; 1005, 1006 and 1015
    must never be sent); 3000-4999 are for libraries and applications.
    """
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


class WebSocketProtocolError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to fail it with."""

    def __init__(self, code, reason):
        super().__init__(code, reason)
        self.code = code
        self.reason = reason


def websocket_accept(key):
    """RFC 6455 section 4.2.2: Sec-WebSocket-Accept for a Sec-WebSocket-Key."""
    digest = hashlib.sha1((key + WS_GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def is_websocket_upgrade(request):
    """The request asks for a protocol upgrade to websocket (any path)."""
    return "websocket" in request.header_tokens("upgrade")


def websocket_handshake(request):
    """Validate an opening handshake (RFC 6455 section 4.2.1).

    Returns the 101 ResponseHead, or raises HTTPError: 426 for a version
    other than 13 or a plain GET without upgrade, 400 for any other defect.
    No extension and no subprotocol is negotiated: offers are ignored.
    """
    if request.method != "GET" or request.version != "HTTP/1.1":
        raise HTTPError(400, "WebSocket handshake needs GET and HTTP/1.1")
    if not is_websocket_upgrade(request):
        raise HTTPError(426, "this is a WebSocket endpoint",
                        headers=[("Upgrade", "websocket"), ("Sec-WebSocket-Version", WS_VERSION)])
    if "upgrade" not in request.header_tokens("connection"):
        raise HTTPError(400, "Connection header lacks upgrade")
    versions = [v for k, v in request.headers if k == "sec-websocket-version"]
    if versions != [WS_VERSION]:
        raise HTTPError(426, "unsupported WebSocket version",
                        headers=[("Sec-WebSocket-Version", WS_VERSION)])
    keys = [v for k, v in request.headers if k == "sec-websocket-key"]
    if len(keys) != 1:
        raise HTTPError(400, "missing or repeated Sec-WebSocket-Key")
    key = keys[0].strip()
    try:
        raw = base64.b64decode(key.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        raw = b""
    if len(raw) != 16:
        raise HTTPError(400, "Sec-WebSocket-Key is not base64 of 16 bytes")
    return ResponseHead(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                              ("Sec-WebSocket-Accept", websocket_accept(key))])


def mask_bytes(mask, data):
    """XOR data with the 4-byte mask (RFC 6455 section 5.3), fast for any length."""
    length = len(data)
    if not length:
        return b""
    repeated = (mask * (length // 4 + 1))[:length]
    return (int.from_bytes(data, "little") ^ int.from_bytes(repeated, "little")).to_bytes(length, "little")


def build_frame(opcode, payload=b"", fin=True):
    """One server frame (unmasked, RFC 6455 section 5.1) as bytes."""
    first = (0x80 if fin else 0) | int(opcode)
    length = len(payload)
    if length < 126:
        return bytes((first, length)) + payload
    if length < 65536:
        return bytes((first, 126)) + length.to_bytes(2, "big") + payload
    return bytes((first, 127)) + length.to_bytes(8, "big") + payload


def build_close(code=None, reason=""):
    """A Close frame; no code gives an empty payload."""
    if code is None:
        return build_frame(Opcode.CLOSE)
    # Control frames carry at most 125 bytes; cut the reason on a character
    # boundary, since a peer fails a Close whose reason is not UTF-8.
    reason = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return build_frame(Opcode.CLOSE, int(code).to_bytes(2, "big") + reason)


def build_text(text):
    return build_frame(Opcode.TEXT, text.encode("utf-8"))


# The events FrameParser gives: a whole data message (TEXT as str, BINARY as
# bytes), a Ping, a Pong, a Close (code None when the peer sent no status).
Message = collections.namedtuple("Message", "opcode data")
Ping = collections.namedtuple("Ping", "payload")
Pong = collections.namedtuple("Pong", "payload")
Close = collections.namedtuple("Close", "code reason")


class FrameParser:
    """Bytes from a client in, events out: Message, Ping, Pong, Close.

    Enforces RFC 6455 for a server: every frame masked, RSV bits clear (no
    extension is negotiated), known opcodes, control frames short and
    unfragmented, fragments in order, text valid UTF-8 (checked as each
    fragment arrives), messages no larger than ``max_message`` (refused from
    the frame header, before the payload is buffered). Any violation raises
    WebSocketProtocolError carrying the close code to answer with.
    """

    def __init__(self, max_message=Settings.ws_max_message):
        self.max_message = max_message
        self._buffer = bytearray()
        self._fragments = None          # list of payloads of an open message
        self._fragment_opcode = None
        self._fragment_size = 0
        self._utf8 = None
        self.closed = False             # a Close was received: ignore the rest

    def feed(self, data):
        """Add received bytes; return the list of complete events."""
        if self.closed:
            return []
        self._buffer += data
        events = []
        while not self.closed:
            event = self._next_frame()
            if event is None:
                break
            if event is not True:
                events.append(event)
        return events

    def _next_frame(self):
        buf = self._buffer
        if len(buf) < 2:
            return None
        first, second = buf[0], buf[1]
        fin, rsv, opcode = first & 0x80, first & 0x70, first & 0x0F
        length = second & 0x7F
        if rsv:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "RSV bits set without extension")
        if opcode not in Opcode._value2member_map_:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "reserved opcode %d" % opcode)
        if not second & 0x80:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "client frame not masked")
        is_control = opcode >= 0x8
        if is_control and (not fin or length > 125):
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR,
                                         "control frame fragmented or longer than 125 bytes")
        offset = 2
        if length == 126:
            if len(buf) < 4:
                return None
            length = int.from_bytes(buf[2:4], "big")
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return None
            length = int.from_bytes(buf[2:10], "big")
            if length >> 63:
                raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "64-bit length with top bit set")
            offset = 10
        if not is_control:
            if opcode == Opcode.CONTINUATION and self._fragments is None:
                raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "continuation without a message")
            if opcode != Opcode.CONTINUATION and self._fragments is not None:
                raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "new message inside a fragmented one")
            if self._fragment_size + length > self.max_message:
                raise WebSocketProtocolError(CloseCode.MESSAGE_TOO_BIG,
                                             "message larger than %d bytes" % self.max_message)
        end = offset + 4 + length
        if len(buf) < end:
            return None
        mask = bytes(buf[offset:offset + 4])
        payload = mask_bytes(mask, bytes(buf[offset + 4:end]))
        del buf[:end]
        if is_control:
            return self._control(opcode, payload)
        return self._data(opcode, payload, fin)

    def _control(self, opcode, payload):
        if opcode == Opcode.PING:
            return Ping(payload)
        if opcode == Opcode.PONG:
            return Pong(payload)
        self.closed = True
        if not payload:
            return Close(None, "")
        if len(payload) == 1:
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "close payload of 1 byte")
        code = int.from_bytes(payload[:2], "big")
        if not is_valid_close_code(code):
            raise WebSocketProtocolError(CloseCode.PROTOCOL_ERROR, "invalid close code %d" % code)
        try:
            reason = payload[2:].decode("utf-8")
        except UnicodeDecodeError:
            raise WebSocketProtocolError(CloseCode.INVALID_DATA, "close reason not UTF-8") from None
        return Close(code, reason)

    def _data(self, opcode, payload, fin):
        if opcode != Opcode.CONTINUATION:
            self._fragments, self._fragment_opcode, self._fragment_size = [], opcode, 0
            self._utf8 = codecs.getincrementaldecoder("utf-8")() if opcode == Opcode.TEXT else None
        self._fragment_size += len(payload)
        if self._utf8 is not None:
            try:
                self._fragments.append(self._utf8.decode(payload, final=bool(fin)))
            except UnicodeDecodeError:
                raise WebSocketProtocolError(CloseCode.INVALID_DATA, "text message not UTF-8") from None
        else:
            self._fragments.append(payload)
        if not fin:
            return True
        joiner = "" if self._utf8 is not None else b""
        message = Message(self._fragment_opcode, joiner.join(self._fragments))
        self._fragments, self._fragment_opcode, self._utf8, self._fragment_size = None, None, None, 0
        return message




# =============================================================================
# 4. Connections on asyncio streams: static files, WebSocket hub, the site
# =============================================================================

READER_LIMIT = MAX_REQUEST_LINE + MAX_HEADER_BYTES + 4     # one maximal head, never more
LISTEN_BACKLOG = 1024
STREAM_CHUNK = 256 * 1024       # bodies go out in pieces: a slow phone holds one piece, not the image
SENDFILE_CHUNK = 1024 * 1024    # small enough for slow Wi-Fi within the send timeout
# An image being written in place is re-read until two stats agree and it is
# complete; one that stays incomplete but unchanged this long is what it is.
STABLE_READ_ATTEMPTS = 50
STABLE_READ_PAUSE = 0.02
UNSTABLE_ACCEPT = 0.5
NEW_IMAGE_MESSAGE = json.dumps({"type": "new_image"})
DISCONNECT_MESSAGE = json.dumps({"type": "disconnect"})
NO_CACHE = "no-cache"                                   # revalidate every time (the ETag makes it cheap)
IMMUTABLE = "public, max-age=31536000, immutable"       # never changes: caches keep it
# What ALS 1.0 sends for web_image.jpg and data.json: no browser keeps a copy.
NO_STORE_HEADERS = {"Cache-Control": "no-store, no-cache, must-revalidate", "Pragma": "no-cache",
                    "Expires": "0"}


# -- 4a. Static files: snapshots, the shared cache, lookup and replies ----------

class FileSnapshot:
    """One complete, consistent copy of a served file (``body`` None: too big
    to keep, streamed from disk). ``version`` identifies the content: the
    file's stat_version for a copy of a file, our own tuple for bytes of
    ours; the ETag is made from it."""

    __slots__ = ("body", "size", "mtime", "version", "etag", "last_modified", "_gzipped")

    def __init__(self, body, mtime, version, size=None):
        self.body = body
        self.size = len(body) if body is not None else size
        self.mtime = mtime
        self.version = version
        self.etag = '"%s"' % "-".join("%x" % part for part in version)
        self.last_modified = http_date(mtime)
        self._gzipped = None

    def gzipped(self):
        """The body gzip-compressed, made once for this content."""
        if self._gzipped is None:
            self._gzipped = gzip.compress(self.body, 9, mtime=0)
        return self._gzipped


def stat_version(st):
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_snapshot(path, opener=open):
    """Read a file: (FileSnapshot, stable). Stable: it did not change while
    it was read (same stat before and after) and, for a JPEG or PNG, it is
    complete; ALS and other programs write images in place."""
    with opener(path, "rb") as f:
        before = os.fstat(f.fileno())
        body = f.read(before.st_size + 1)
        after = os.fstat(f.fileno())
    version = stat_version(after)
    stable = stat_version(before) == version and len(body) == after.st_size \
        and is_complete_image(body[:8], body[-1024:], content_type_for(path))
    return FileSnapshot(body, after.st_mtime, version), stable


def read_whole_snapshot(path):
    """A complete FileSnapshot of a file, re-read until it is stable; None
    when it is missing or stays incomplete. Blocking: for executor threads."""
    for _attempt in range(STABLE_READ_ATTEMPTS):
        try:
            snapshot, stable = read_snapshot(path)
        except OSError:
            return None
        if stable:
            return snapshot
        time.sleep(STABLE_READ_PAUSE)
    return None


class FileCache:
    """Copies of served files shared by all concurrent downloads.

    A file is read once per change (its stat), by one task however many
    clients ask for it at once; while a JPEG or PNG is being rewritten the
    previous complete copy is served, and a file missing for a moment is
    served from its last copy for ``vanished_grace``. Least recently used
    copies go beyond ``cache_total_limit`` bytes.
    """

    def __init__(self, settings):
        self.settings = settings
        self._entries = {}              # path -> FileSnapshot (dict order = LRU order)
        self._loading = {}              # path -> Task reading the file
        self._unstable = {}             # path -> (version, since when) of an incomplete copy
        self._vanished = {}             # path -> since when the file is missing
        self._total = 0

    async def get(self, path, st):
        self._vanished.pop(path, None)
        entry = self._entries.get(path)
        if entry is not None and entry.version == stat_version(st):
            self._entries[path] = self._entries.pop(path)
            return entry
        task = self._loading.get(path)
        if task is None:
            task = asyncio.ensure_future(self._load(path, st.st_size))
            self._loading[path] = task
            task.add_done_callback(lambda _t: self._loading.pop(path, None))
        return await asyncio.shield(task)

    def put(self, path, snapshot):
        """Serve this copy of path from now on (its bytes are in hand: no
        request waits on the disk); one over the file limit is not kept."""
        self._unstable.pop(path, None)
        self._vanished.pop(path, None)
        self._drop(path)
        if snapshot.size <= self.settings.cache_file_limit:
            self._entries[path] = snapshot
            self._total += snapshot.size
            while self._total > self.settings.cache_total_limit and len(self._entries) > 1:
                self._drop(next(iter(self._entries)))

    def vanished(self, path, now):
        """The last copy of a file missing now, while it has been missing
        for less than vanished_grace; else None."""
        entry = self._entries.get(path)
        if entry is None or now - self._vanished.setdefault(path, now) > self.settings.vanished_grace:
            return None
        return entry

    async def _load(self, path, size):
        loop = asyncio.get_running_loop()
        previous = self._entries.get(path)
        first_unstable = self._unstable.get(path)
        for _attempt in range(STABLE_READ_ATTEMPTS):
            if size > STREAM_CHUNK:     # big reads leave the event loop free
                snapshot, stable = await loop.run_in_executor(None, read_snapshot, path)
            else:
                snapshot, stable = read_snapshot(path)
            if not stable and first_unstable is not None and first_unstable[0] == snapshot.version \
                    and loop.time() - first_unstable[1] > UNSTABLE_ACCEPT:
                stable = True
            if stable:
                self.put(path, snapshot)
                return snapshot
            if first_unstable is None or first_unstable[0] != snapshot.version:
                first_unstable = self._unstable[path] = (snapshot.version, loop.time())
            if previous is not None:
                return previous         # serve the last complete copy now
            await asyncio.sleep(STABLE_READ_PAUSE)
            size = snapshot.size
        raise HTTPError(503, "file is being written", headers=[("Retry-After", "1")])

    def _drop(self, path):
        old = self._entries.pop(path, None)
        if old is not None:
            self._total -= old.size

    def clear(self):
        self._entries.clear()
        self._unstable.clear()
        self._vanished.clear()
        self._total = 0


class Route:
    """How a URL is answered when not as a plain file of the web folder:
    from a file of ours elsewhere (``path``: the viewer bundle, a history
    image), from bytes in memory (``snapshot`` of ``content_type``:
    history.json; or a future of one, made on the executor), or from the
    web folder with other ``headers``."""

    __slots__ = ("path", "snapshot", "content_type", "headers")

    def __init__(self, path=None, snapshot=None, content_type=None, cache_control=NO_CACHE, headers=None):
        self.path, self.snapshot, self.content_type = path, snapshot, content_type
        self.headers = dict(headers) if headers is not None else {"Cache-Control": cache_control}


class FileReply:
    """What to send for a file: status and headers, then the body from memory
    (``body``), from an open file (``stream``, ``start``, ``length``; the
    writer closes it) or nothing (HEAD, 304)."""

    __slots__ = ("status", "headers", "body", "stream", "start", "length")

    def __init__(self, status, headers, body=None, stream=None, start=0, length=0):
        self.status, self.headers = status, headers
        self.body, self.stream, self.start, self.length = body, stream, start, length


class StaticFiles:
    """The files of one web folder, and the routes the layers above add
    (``routes(segments)`` returns a Route, None for the web folder, or raises
    HTTPError): lookup, the shared cache, and the reply to one GET or HEAD
    (200, 206, 304 or an HTTPError). Only web files are served. Knows
    nothing of sockets: the site writes the replies."""

    def __init__(self, root, settings, routes=None):
        self.root = os.path.realpath(root)
        self.routes = routes
        self.cache = FileCache(settings)

    def lookup(self, segments):
        """The full path and stat of a regular file inside the root, or 404.
        One lstat per segment in the common case; a symlink (any path on
        Windows: junctions) is followed only to a place inside the root
        that is not hidden."""
        path, st = self.root, None
        try:
            for segment in segments:
                path = os.path.join(path, segment)
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    self._check_link(path)
                    st = os.stat(path)
            if os.name == "nt":
                self._check_link(path)
        except OSError:
            raise HTTPError(404, "not found") from None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise HTTPError(404, "not a file")
        return path, st

    def _check_link(self, path):
        real = os.path.realpath(path)
        if real != self.root and (not is_inside(real, self.root) or
                                  any(part.startswith(".") for part in real[len(self.root) + 1:].split(os.sep))):
            raise HTTPError(404, "link out of the web folder or to a hidden file")

    async def _snapshot(self, path, segments):
        """The copy of a file to serve, looked up in the web folder by
        segments, or our own path. A file missing now is served from its
        last copy for a moment (FileCache.vanished)."""
        try:
            if segments is not None:
                path, st = self.lookup(segments)
            else:
                try:
                    st = os.stat(path)
                except OSError:
                    raise HTTPError(404, "not found") from None
                if not stat.S_ISREG(st.st_mode):
                    raise HTTPError(404, "not a file")
            if st.st_size > self.cache.settings.cache_file_limit:
                return FileSnapshot(None, st.st_mtime, stat_version(st), st.st_size)
            try:
                return await self.cache.get(path, st)
            except OSError:             # removed or unreadable since the lookup
                raise HTTPError(404, "not found") from None
        except HTTPError as error:
            entry = self.cache.vanished(path, time.monotonic()) if error.status == 404 else None
            if entry is None:
                raise
            return entry

    async def reply(self, request):
        """The FileReply for a GET or HEAD of a file, or HTTPError."""
        segments = split_target(request.path)
        query = request.target.partition("?")[2]
        route = (self.routes(segments, query) if self.routes is not None else None) or Route()
        if route.snapshot is not None:
            entry, content_type, path = route.snapshot, route.content_type, None
            if asyncio.isfuture(entry):     # being made off the loop; shared, so not cancelled with us
                entry = await asyncio.shield(entry)
        else:
            path = route.path or os.path.join(self.root, *segments)
            content_type = content_type_for(path)
            if content_type is None:
                raise HTTPError(404, "not a web file")
            entry = await self._snapshot(path, segments if route.path is None else None)
        headers = [("Content-Type", content_type), ("Last-Modified", entry.last_modified)]
        headers.extend(route.headers.items())
        headers += [("X-Content-Type-Options", "nosniff"), ("Accept-Ranges", "bytes")]
        body, etag = entry.body, entry.etag
        if content_type in COMPRESSIBLE_TYPES:
            headers.append(("Vary", "Accept-Encoding"))
            # A range is served from the plain body (RFC 9110 leaves the choice to us).
            if body is not None and request.header("range") is None and accepts_gzip(request):
                body, etag = entry.gzipped(), etag[:-1] + '-gzip"'
                headers.append(("Content-Encoding", "gzip"))
        headers.append(("ETag", etag))
        if not_modified(request, etag, entry.mtime):
            return FileReply(304, headers)
        size = len(body) if body is not None else entry.size
        status, start, end = 200, 0, size - 1
        if_range = request.header("if-range")
        if if_range is None or if_range.strip() == etag:
            selected = parse_range(request.header("range"), size)
            if selected is not None:
                status, (start, end) = 206, selected
                headers.append(("Content-Range", "bytes %d-%d/%d" % (start, end, size)))
        length = end - start + 1
        headers.append(("Content-Length", str(length)))
        if request.method == "HEAD":
            return FileReply(status, headers, length=length)
        if body is not None:
            return FileReply(status, headers, body=memoryview(body)[start:end + 1])
        try:                            # before the head: an error after it would corrupt the stream
            stream = open(path, "rb")
        except OSError:
            raise HTTPError(404, "not found") from None
        return FileReply(status, headers, stream=stream, start=start, length=length)


# -- 4b. The WebSocket hub: clients, broadcast, keepalive, close -----------------

class WebSocketClient:
    """One connected browser. Output is written straight to the transport;
    while the transport still holds unsent bytes, messages wait in a small
    deduplicated list (a repeated new_image coalesces), flushed by one task."""

    __slots__ = ("writer", "transport", "peer", "settings", "last_seen", "pending", "pending_bytes",
                 "flusher", "close_sent", "done")

    def __init__(self, writer, peer, now, settings):
        self.writer = writer
        self.settings = settings
        self.transport = writer.transport
        self.peer = peer
        self.last_seen = now
        self.pending = []
        self.pending_bytes = 0
        self.flusher = None
        self.close_sent = False
        self.done = False

    def send(self, frame):
        if self.done or self.close_sent:
            return
        if not self.pending and not self.transport.get_write_buffer_size():
            self.transport.write(frame)
        elif frame in self.pending:
            # Already waiting: sent once, after what came since (a new_image
            # after the history_entry messages it announces, as it was sent).
            self.pending.remove(frame)
            self.pending.append(frame)
        else:
            if len(self.pending) >= self.settings.ws_max_pending or \
                    self.pending_bytes + len(frame) > self.settings.ws_max_pending_bytes:
                self.drop("%d messages (%d bytes) waiting" % (len(self.pending), self.pending_bytes))
                return
            self.pending.append(frame)
            self.pending_bytes += len(frame)
            if self.flusher is None:
                self.flusher = asyncio.ensure_future(self._flush())

    def send_pong(self, payload):
        """Answer a Ping. While output waits, only the latest answer is kept
        (RFC 6455 section 5.5.3 allows it): a peer that pings without reading
        cannot grow our memory. Nothing follows our Close (send checks)."""
        pong_first_byte = 0x80 | Opcode.PONG
        self.pending = [f for f in self.pending if f[0] != pong_first_byte]
        self.pending_bytes = sum(map(len, self.pending))
        self.send(build_frame(Opcode.PONG, payload))

    async def _flush(self):
        try:
            # Write buffer limits are (0, 0): drain() returns once all is sent.
            await asyncio.wait_for(self.writer.drain(), self.settings.ws_send_timeout)
            frames, self.pending, self.pending_bytes = self.pending, [], 0
            if not self.done:
                self.transport.write(b"".join(frames))
        except asyncio.TimeoutError:
            self.drop("not reading for %.0f s" % self.settings.ws_send_timeout)
        except (ConnectionError, RuntimeError):
            self.drop()
        finally:
            self.flusher = None
            if self.pending and not self.done:
                self.flusher = asyncio.ensure_future(self._flush())

    def drop(self, why=None):
        """Abandon a client that cannot keep up: nothing stays queued for it."""
        if why:
            log.warning("websocket %s: %s, dropped", self.peer, why)
        self.pending, self.pending_bytes = [], 0
        self.transport.abort()

    def send_close(self, code, reason=""):
        if not self.close_sent and not self.done:
            frames, self.pending, self.pending_bytes = b"".join(self.pending), [], 0
            self.transport.write(frames + build_close(code, reason))
            self.close_sent = True


class WebSocketHub:
    """The connected browsers: WebSocket sessions, broadcast, keepalive, and
    closing them all at STOP. Runs on the event loop."""

    def __init__(self, settings):
        self.settings = settings
        self.clients = set()
        self.joined = self.left = 0     # sessions opened and ended, for the command line
        self.loop = None
        self.stopping = False           # after the disconnect message: nothing more
        self._keepalive_task = None

    def start(self, loop):
        self.loop = loop
        if self.settings.ws_ping_interval:
            self._keepalive_task = loop.create_task(self._keepalive())

    @property
    def full(self):
        return len(self.clients) >= self.settings.ws_max_clients

    def broadcast(self, message):
        if self.stopping:
            return
        frame = build_text(message)
        for client in list(self.clients):
            client.send(frame)

    async def _keepalive(self):
        ping, interval = build_frame(Opcode.PING, b"alsserve"), self.settings.ws_ping_interval
        while True:
            await asyncio.sleep(interval)
            silent_since = self.loop.time() - 2 * interval
            for client in list(self.clients):
                if client.last_seen < silent_since:
                    log.info("websocket %s: silent for %.0f s, dropped", client.peer, 2 * interval)
                    client.transport.abort()
                else:
                    client.send(ping)

    # -- sessions ----------------------------------------------------------

    async def session(self, reader, writer, peer):
        """Serve one WebSocket until it closes. Client data messages are
        validated and otherwise ignored: the channel only carries
        notifications from the server."""
        writer.transport.set_write_buffer_limits(0, 0)
        client = WebSocketClient(writer, peer, self.loop.time(), self.settings)
        self.clients.add(client)
        self.joined += 1
        parser = FrameParser(self.settings.ws_max_message)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                client.last_seen = self.loop.time()
                try:
                    events = parser.feed(data)
                except WebSocketProtocolError as error:
                    log.warning("websocket %s: protocol error %d: %s", peer, error.code, error.reason)
                    client.send_close(error.code, error.reason)
                    await self._await_peer_close(reader)
                    return
                for event in events:
                    if isinstance(event, Ping):
                        client.send_pong(event.payload)
                    elif isinstance(event, Close):
                        if client.close_sent:
                            return          # the answer to our Close: done
                        client.send_close(event.code)   # echoed; none when the peer sent none
                        return
        finally:
            client.done = True
            self.clients.discard(client)
            self.left += 1
            if client.flusher is not None:
                client.flusher.cancel()

    async def _await_peer_close(self, reader):
        """After our Close: wait a bounded time for the peer's answer or EOF."""
        try:
            await asyncio.wait_for(reader.read(65536), self.settings.ws_close_timeout)
        except (asyncio.TimeoutError, ConnectionError):
            pass

    # -- STOP --------------------------------------------------------------

    def say_disconnect(self):
        """The last message: keepalive ends, nothing is broadcast after it."""
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
        self.broadcast(DISCONNECT_MESSAGE)
        self.stopping = True

    async def close_all(self, close_at, deadline):
        """Let browsers close by themselves until close_at, then send Close
        1001 to the rest and wait for their answers until deadline."""
        loop = self.loop
        while self.clients and loop.time() < close_at:
            await asyncio.sleep(0.01)
        for client in list(self.clients):
            client.send_close(CloseCode.GOING_AWAY, "server stopping")
        while self.clients and loop.time() < deadline:
            await asyncio.sleep(0.01)




# -- 4c. Writing replies: Date, bodies in pieces, sendfile, turns on the link -----

def _peer_name(writer):
    peer = writer.get_extra_info("peername")
    return "%s:%s" % peer[:2] if isinstance(peer, tuple) else str(peer)


def linger_option(os_name=os.name):
    """SO_LINGER on, 0 s (the value's C layout differs on Windows)."""
    return struct.pack("HH" if os_name == "nt" else "ii", 1, 0)


def reset_transport(transport):
    """Abort with a TCP reset: a plain abort leaves unsent bytes to the
    kernel, which keeps the connection until a client that is not reading
    has taken them all."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger_option())
        except OSError:
            pass
    transport.abort()


# Image-sized bodies share the link one or a few at a time, in the order
# asked: over a Wi-Fi access point each new image then reaches half the
# phones in half the time (docs/design.md). The link is measured, not known.
TURN_TICK = 0.1                 # how often what each transfer delivers is measured
TURN_WINDOW = 5                 # ticks a pace is measured over (and a new transfer shows it first)
TURN_FILL = 0.7                 # below this share of the best rate seen, one more starts
TURN_DECAY = 0.993              # per tick of transfers: the best rate seen fades (halves in 10 s)
TURN_PROBE = 0.5                # the first transfer, alone this long, is joined by one more once
TURN_QUICK = 0.1                # a body the link carries faster than this goes at once (a fast network)
TURN_MAX = 16                   # transfers at once, however slow
SEND_BUFFER = (64 << 10, 4 << 20)   # a transfer's kernel send buffer: 50 ms of the link, within these


def unacknowledged_bytes(sock):
    """What the kernel holds of a socket's output, sent or not, that the
    peer has not acknowledged yet (Linux's SIOCOUTQ); 0 where it does not say."""
    try:
        import fcntl
        import termios
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except (ImportError, AttributeError, OSError, ValueError):     # ValueError: closed (fileno -1)
        return 0


class Transfer:
    """One big body on its way: the bytes written, and the pace at which
    they reach the client."""

    __slots__ = ("writer", "reader", "peer", "sent", "samples", "rate", "started", "turn")

    def __init__(self, reader, writer, now):
        self.reader, self.writer = reader, writer
        peer = writer.get_extra_info("peername")
        self.peer = peer[0] if isinstance(peer, tuple) else peer
        self.sent = 0                   # bytes written so far
        self.samples = collections.deque(maxlen=TURN_WINDOW + 1)
        self.rate = None                # bytes/s delivered over the window; None until it is full
        self.started = now
        self.turn = None                # the future a waiting transfer waits on

    def delivered(self):
        transport = self.writer.transport
        sock = transport.get_extra_info("socket")
        return self.sent - transport.get_write_buffer_size() - (unacknowledged_bytes(sock) if sock else 0)

    @property
    def gone(self):
        """The client closed while its body waited (it asks for a newer image, say)."""
        transport = self.writer.transport
        return transport.is_closing() or self.reader.at_eof()


class Turns:
    """Big bodies take turns: one at a time while that fills the link; one
    more whenever those on their way take less than TURN_FILL of the best
    rate the link has carried (a phone far from the access point, one that
    went to sleep), so the link is never left idle and nobody starves. A
    client that leaves while waiting leaves the queue at once. A client
    that was slow on its last transfer does not wait: it would not fill the
    link either. On the loop."""

    def __init__(self):
        self.active = set()
        self.waiting = collections.deque()
        self.paces = collections.OrderedDict()     # client address -> its last pace, the latest 256
        self.best_rate = 0.0
        self.probed = False
        self._timer = None

    async def turn(self, reader, writer, size):
        """The Transfer of a body of size bytes, once its turn has come;
        ConnectionError when the client left meanwhile."""
        loop = asyncio.get_running_loop()
        transfer = Transfer(reader, writer, loop.time())
        pace = self.paces.get(transfer.peer)
        if self.best_rate and size < self.best_rate * TURN_QUICK:
            self.active.add(transfer)   # over a fast network order hardly matters: no wait
        elif pace is not None and pace < TURN_FILL * self.best_rate and len(self.active) < TURN_MAX:
            transfer.rate = pace        # known to be slow: it starts now, and counts as slow
            self._start(transfer)
        elif not self.waiting and self._room(loop.time()):
            self._start(transfer)
        else:
            transfer.turn = loop.create_future()
            self.waiting.append(transfer)
            self._tick_later()
            try:
                await transfer.turn
            finally:
                if transfer in self.waiting:
                    self.waiting.remove(transfer)
        return transfer

    def done(self, transfer, whole):
        """The transfer ended; whole: every byte went. Its pace counts too:
        on a fast network transfers end before a window is measured."""
        now = asyncio.get_running_loop().time()
        self.active.discard(transfer)
        if whole:
            self.best_rate = max(self.best_rate, transfer.delivered() / max(now - transfer.started, 0.01))
        self._pass_on(transfer)
        self._admit(now)

    def _pass_on(self, finished):
        """What a finished transfer took goes to those that took their share
        of the link beside it: they will take it at once, and the next one
        waits until their paces, measured anew, say they do not."""
        measured = [t for t in self.active if t.rate is not None]
        if finished.rate is None or not measured:
            return
        share = TURN_FILL * (finished.rate + sum(t.rate for t in measured)) / (len(measured) + 1)
        sharing = [t for t in measured if t.rate >= share]
        for transfer in sharing:
            transfer.rate += finished.rate / len(sharing)
            transfer.samples.clear()

    def _room(self, now):
        active = self.active
        if not active:
            return True
        if len(active) >= TURN_MAX or any(t.rate is None for t in active):
            return False                # (a new one shows its pace first)
        if not self.probed and len(active) == 1 and now - next(iter(active)).started > TURN_PROBE:
            self.probed = True          # the first rate seen may be a slow phone's
            return True
        return sum(t.rate for t in active) < TURN_FILL * self.best_rate

    def _start(self, transfer):
        self.active.add(transfer)
        # In flight, as the order goes, is what the kernel holds: about 50 ms of the link.
        size = min(max(int(self.best_rate * 0.05), SEND_BUFFER[0]), SEND_BUFFER[1])
        sock = transfer.writer.transport.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)
            except OSError:
                pass
        self._tick_later()

    def _admit(self, now):
        while self.waiting:
            transfer = self.waiting[0]
            if self._left(transfer):
                self._leave(transfer)
            elif self._room(now):
                self.waiting.popleft()
                self._start(transfer)
                transfer.turn.set_result(None)
            else:
                break

    @staticmethod
    def _left(transfer):
        """Its client closed, or its task was cancelled (STOP) and has not
        left the queue yet."""
        return transfer.gone or transfer.turn.done()

    def _leave(self, transfer):
        self.waiting.remove(transfer)
        if not transfer.turn.done():
            transfer.turn.set_exception(ConnectionResetError("left while waiting"))

    def _tick_later(self):
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(TURN_TICK, self._tick)

    def _tick(self):
        self._timer = None
        now = asyncio.get_running_loop().time()
        for transfer in self.active:
            transfer.samples.append((now, transfer.delivered()))
            if len(transfer.samples) > TURN_WINDOW:
                (first_time, first_count), (last_time, last_count) = transfer.samples[0], transfer.samples[-1]
                transfer.rate = (last_count - first_count) / (last_time - first_time)
        if self.active and all(t.rate is not None for t in self.active):
            self.best_rate = max(sum(t.rate for t in self.active), self.best_rate * TURN_DECAY)
            self._learn_paces(now)
            while len(self.paces) > 256:
                self.paces.popitem(last=False)
        for transfer in [t for t in self.waiting if self._left(t)]:
            self._leave(transfer)
        self._admit(now)
        if self.active or self.waiting:
            self._tick_later()

    def _learn_paces(self, now):
        """Which clients are slow by themselves: seen slow while the link
        had room (past TCP's slow start), they are remembered; seen taking
        their share of a full link, forgotten."""
        total, share = sum(t.rate for t in self.active), TURN_FILL * self.best_rate
        for transfer in self.active:
            if now - transfer.started < 2 * TURN_WINDOW * TURN_TICK:
                continue
            if total < share and transfer.rate < share:
                self.paces.pop(transfer.peer, None)
                self.paces[transfer.peer] = transfer.rate
            elif transfer.rate >= share / len(self.active):
                self.paces.pop(transfer.peer, None)


class ReplyWriter:
    """Writes replies onto a connection: the Date header (formatted once a
    second), bodies in STREAM_CHUNK pieces, files too big to keep by
    sendfile where the OS has it, and the send timeout."""

    def __init__(self, settings):
        self.settings = settings
        self.use_sendfile = hasattr(os, "sendfile")
        self._date = (0, "")

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, http_date(now))
        return self._date[1]

    async def drain(self, writer):
        """drain(), but a client that takes no data for send_timeout is
        dropped (a phone that walked away must not hold its connection)."""
        if writer.transport.is_closing():
            raise ConnectionResetError("connection lost")
        if not writer.transport.get_write_buffer_size():
            return
        timer = asyncio.get_running_loop().call_later(self.settings.send_timeout, writer.transport.abort)
        try:
            await writer.drain()
        finally:
            timer.cancel()

    async def write_body(self, writer, body, transfer=None):
        view = memoryview(body)         # slices of it copy nothing
        for offset in range(0, len(body), STREAM_CHUNK):
            piece = view[offset:offset + STREAM_CHUNK]
            writer.write(piece)
            if transfer is not None:
                transfer.sent += len(piece)
            await self.drain(writer)

    async def stream_file(self, writer, f, start, length, transfer):
        end = start + length
        if self.use_sendfile:
            loop = asyncio.get_running_loop()
            await self.drain(writer)
            for offset in range(start, end, SENDFILE_CHUNK):
                count = min(SENDFILE_CHUNK, end - offset)
                # Cancelled rather than aborted: an abort during a native
                # sendfile leaves it waiting on the closed socket.
                try:
                    sent = await asyncio.wait_for(loop.sendfile(writer.transport, f, offset, count),
                                                  self.settings.send_timeout)
                except asyncio.TimeoutError:
                    raise ConnectionError("download stalled") from None
                if sent != count:       # the client would read the next response as body
                    raise ConnectionError("file shrank while it was sent")
                transfer.sent += count
            return
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("file shrank while it was sent")
            writer.write(chunk)
            remaining -= len(chunk)
            transfer.sent += len(chunk)
            await self.drain(writer)


# -- 4d. The image stream: GET /stream.mjpg for OBS, VLC and projectors -------

STREAM_PATH = "/stream.mjpg"
STREAM_BOUNDARY = b"alsserve-image"


class ImageStream:
    """The live JPEG image as a multipart/x-mixed-replace stream: the
    current image at once, then each new one, each part ended by the next
    boundary at once (some browsers show a part only when it comes). A
    client that reads slowly gets the newest image next, never a queue: one
    image held per client. On the loop."""

    def __init__(self):
        self.image = None               # the live JPEG's snapshot; None while the live image is no JPEG
        self.clients = set()            # each one's wake-up event
        self.stopping = False

    def publish(self, snapshot, content_type):
        self.image = snapshot if content_type == "image/jpeg" else None
        for event in self.clients:
            event.set()

    def stop(self):
        self.stopping = True
        for event in self.clients:
            event.set()

    async def serve(self, request, reader, writer, replies):
        if self.image is None:
            raise HTTPError(404, "the live image is no JPEG: the stream carries JPEG images only",
                            explain=True)
        head = ResponseHead(200, [
            ("Content-Type", "multipart/x-mixed-replace; boundary=" + STREAM_BOUNDARY.decode()),
            ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff")])
        writer.write(head.encode(replies.date(), False))
        if request.method == "HEAD":
            return
        event = asyncio.Event()
        self.clients.add(event)
        # A stream's client sends nothing more: a byte or the end of its side ends it.
        leaving = asyncio.ensure_future(reader.read(1))
        leaving.add_done_callback(lambda _done: event.set())
        try:
            writer.write(b"--" + STREAM_BOUNDARY + b"\r\n")
            sent = None
            while not self.stopping and not leaving.done():
                image = self.image
                if image is None or image is sent:
                    event.clear()
                    await event.wait()
                    continue
                writer.write(b"Content-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % image.size)
                await replies.write_body(writer, image.body)
                writer.write(b"\r\n--" + STREAM_BOUNDARY + b"\r\n")
                await replies.drain(writer)
                sent = image
        finally:
            self.clients.discard(event)
            leaving.cancel()


# -- 4e. The site: connections, requests, start and STOP ------------------------

class Site:
    """A running server on its listening socket: accepts connections, reads
    requests (keep-alive, pipelining, timeouts), hands /ws to the WebSocket
    hub and the rest to the static files, has the replies written, and
    stops (STOP). Runs on the event loop thread."""

    def __init__(self, root, settings, routes=None):
        self.settings = settings
        self.files = StaticFiles(root, settings, routes)
        self.hub = WebSocketHub(settings)
        self.stream = ImageStream()
        self.replies = ReplyWriter(settings)
        self.turns = Turns()
        self.connections = {}           # task -> transport of every open connection
        self.loop = None
        self.listening = None           # asyncio's Server on our listening socket

    # -- lifecycle ---------------------------------------------------------

    async def start(self, listener):
        self.loop = asyncio.get_running_loop()
        self.hub.start(self.loop)
        self.listening = await asyncio.start_server(self._connection, sock=listener, limit=READER_LIMIT)

    async def shutdown(self, grace=STOP_GRACE):
        """STOP: no new connection, disconnect said, browsers given grace
        to close, then every connection closed."""
        loop = self.loop
        deadline = loop.time() + max(0.0, grace)
        # The last tenth of grace is for the Close handshake with browsers
        # that did not close by themselves: STOP returns within grace.
        close_at = deadline - min(0.25, max(0.0, grace) / 10)
        # Stop watching our listener, then give accepts in flight a turn to
        # attach before the server closes (asyncio < 3.12 would lose them).
        for sock in self.listening.sockets or ():
            try:
                loop.remove_reader(sock.fileno())
            except NotImplementedError:     # Windows' proactor: no readers
                pass
        await asyncio.sleep(0)
        self.listening.close()
        self.stream.stop()
        self.hub.say_disconnect()
        await self.hub.close_all(close_at, deadline)
        while self.stream.clients and loop.time() < deadline:      # streams end with a clean close
            await asyncio.sleep(0.01)
        for transport in list(self.connections.values()):
            reset_transport(transport)
        tasks = list(self.connections)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                task.cancel()
        self.files.cache.clear()

    # -- connections and requests -----------------------------------------

    async def _connection(self, reader, writer):
        transport, task = writer.transport, asyncio.current_task()
        if len(self.connections) >= self.settings.max_connections:
            head, body = error_response(HTTPError(503, "too many connections"))
            transport.write(head.encode(self.replies.date(), False) + body)
            transport.close()
            return
        self.connections[task] = transport
        peer = _peer_name(writer)
        try:
            await self._serve_requests(reader, writer, peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:
            log.exception("connection %s: unexpected error", peer)
        finally:
            self.connections.pop(task, None)
            transport.abort() if transport.is_closing() else transport.close()

    async def _serve_requests(self, reader, writer, peer):
        timeout = self.settings.header_timeout
        while True:
            timer = self.loop.call_later(timeout, writer.transport.abort)
            try:
                head = await self._read_head(reader, writer, peer)
            finally:
                timer.cancel()
            if head is None:
                return
            timeout = self.settings.keepalive_timeout
            try:
                request = parse_request(head)
            except HTTPError as error:
                log.warning("%s: bad request: %s", peer, error.detail)
                await self._send_error(writer, error, None, peer)
                return
            if not await self._respond(request, reader, writer, peer):
                return

    async def _read_head(self, reader, writer, peer):
        """The next request head, or None at a clean end of the connection."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return None
            except asyncio.LimitOverrunError:
                start = await reader.read(MAX_REQUEST_LINE + 2)
                status = 414 if b"\r\n" not in start else 431
                await self._send_error(writer, HTTPError(status, "request head too large", close=True),
                                       None, peer)
                return None
            head = head.lstrip(b"\r\n")     # RFC 9112 2.2: ignore leading empty lines
            if head:
                return head

    def client_name(self, peer, request):
        """Who sent the request, for the log: the peer, or, when the peer is
        the trusted proxy, the last address of its X-Forwarded-For (the
        earlier ones are the client's own claims)."""
        proxy = self.settings.trusted_proxy
        if proxy is None or peer.rsplit(":", 1)[0] != proxy:
            return peer
        forwarded = [v for k, v in request.headers if k == "x-forwarded-for"]
        if not forwarded:
            return peer
        client = forwarded[-1].split(",")[-1].strip()
        try:
            return "%s (via %s)" % (ipaddress.ip_address(client), peer)
        except ValueError:
            return peer

    async def _respond(self, request, reader, writer, peer):
        """Answer one request; return whether the connection stays open."""
        peer = self.client_name(peer, request)
        try:
            if request.method not in ALLOWED_METHODS:
                raise HTTPError(405, "method not allowed")
            if request.path == WS_PATH:
                head = websocket_handshake(request)
                if self.hub.full:
                    raise HTTPError(503, "too many WebSocket clients", close=True)
                writer.write(head.encode(self.replies.date(), True))
                self._log_request(peer, request, 101, 0)
                await self.hub.session(reader, writer, peer)
                return False
            if is_websocket_upgrade(request):
                raise HTTPError(404, "no WebSocket endpoint here")
            if request.path == STREAM_PATH:
                self._log_request(peer, request, 200, 0)
                await self.stream.serve(request, reader, writer, self.replies)
                return False
            return await self._serve_file(request, reader, writer, peer)
        except HTTPError as error:
            return await self._send_error(writer, error, request, peer)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            log.exception("%s: error answering %r", peer, request)
            await self._send_error(writer, HTTPError(500, "internal error", close=True), request, peer)
            return False

    def _log_request(self, peer, request, status, length):
        if access_log.isEnabledFor(logging.INFO):
            line = "%s %s" % (request.method, request.target[:200]) if request else "-"
            access_log.info('%s "%s" %d %d', peer, line, status, length)

    # -- writing replies ---------------------------------------------------

    async def _send_error(self, writer, error, request, peer):
        head, body = error_response(error)
        keep_alive = request is not None and request.keep_alive and not error.close
        data = head.encode(self.replies.date(), keep_alive, request is not None and request.version == "HTTP/1.0")
        if request is None or request.method != "HEAD":
            data += body
        writer.write(data)
        self._log_request(peer, request, error.status, len(body))
        await self.replies.drain(writer)
        return keep_alive

    async def _serve_file(self, request, reader, writer, peer):
        reply = await self.files.reply(request)
        keep_alive = request.keep_alive
        head = ResponseHead(reply.status, reply.headers).encode(
            self.replies.date(), keep_alive, request.version == "HTTP/1.0")
        self._log_request(peer, request, reply.status, len(reply.body) if reply.body is not None else reply.length)
        if reply.stream is None and (reply.body is None or len(reply.body) <= STREAM_CHUNK):
            writer.write(head + (reply.body or b""))
        else:                           # an image-sized body: it takes its turn on the link
            transfer, whole = None, False
            try:
                transfer = await self.turns.turn(reader, writer, reply.length if reply.stream else len(reply.body))
                writer.write(head)
                if reply.stream is not None:
                    await self.replies.stream_file(writer, reply.stream, reply.start, reply.length, transfer)
                else:
                    await self.replies.write_body(writer, reply.body, transfer)
                await self.replies.drain(writer)
                whole = True
            finally:
                if reply.stream is not None:
                    reply.stream.close()
                if transfer is not None:
                    self.turns.done(transfer, whole)
        await self.replies.drain(writer)
        return keep_alive


# =============================================================================
# 5. Web folder publishing: atomic writes, assets, data.json, the history
# =============================================================================

def replace_file(source, target, replace=os.replace, attempts=100, pause=0.01):
    """os.replace, retried briefly: on Windows a reader holding the target
    open makes the replace fail with PermissionError for a moment."""
    for attempt in range(attempts):
        try:
            replace(source, target)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)


def atomic_write(path, data):
    """Write data to path so that readers see the old or the new file,
    whole; returns the new file's stat. The temporary file is a dotfile of
    the same folder (never served), removed if anything fails."""
    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            written = os.fstat(f.fileno())      # the file's identity: a rename keeps it
        os.chmod(temporary, 0o644)
        replace_file(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    return written


def bundle_files(assets_dir):
    """URL path -> file of a viewer bundle: what START publishes (no hidden
    files, no demo frames), served in place by watch mode."""
    files = {}
    for folder, subfolders, names in os.walk(assets_dir):
        relative = os.path.relpath(folder, assets_dir)
        subfolders[:] = sorted(d for d in subfolders if not d.startswith(".")
                               and not (relative == "." and d in UNPUBLISHED_ASSET_FOLDERS))
        for name in names:
            if not name.startswith(".") and content_type_for(name) is not None:
                url = name if relative == "." else relative.replace(os.sep, "/") + "/" + name
                files[url] = os.path.join(folder, name)
    return files


def publish_assets(assets_dir, web_folder):
    """Copy the viewer bundle into the web folder; return the files written.
    Only files whose content differs are written (the others keep their
    dates, so browsers' caches stay valid)."""
    written = []
    for url, source in sorted(bundle_files(assets_dir).items()):
        data = read_file(source)
        target = os.path.join(web_folder, *url.split("/"))
        try:
            if read_file(target) == data:
                continue
        except OSError:
            pass
        os.makedirs(os.path.dirname(target), exist_ok=True)
        atomic_write(target, data)
        written.append(target)
    return written


def waiting_image_path(assets_dir):
    """The waiting image of a bundle, or ours when the bundle has none."""
    for folder in (assets_dir, DEFAULT_ASSETS_DIR):
        path = os.path.join(folder, WAITING_IMAGE_NAME)
        if os.path.isfile(path):
            return path
    return None


def publish_viewer(assets_dir, web_folder):
    """ALS mode's START: the viewer bundle into the web folder, and the
    waiting image and zero metrics when there are none (a restart keeps
    the night's image and metrics)."""
    publish_assets(assets_dir, web_folder)
    waiting, image = waiting_image_path(assets_dir), os.path.join(web_folder, IMAGE_NAME)
    if waiting is not None and not os.path.exists(image):
        atomic_write(image, read_file(waiting))
    if not os.path.exists(os.path.join(web_folder, METRICS_NAME)):
        write_metrics(web_folder, 0, 0)


def write_metrics(web_folder, stack_size, total_exposure_seconds):
    """data.json rewritten atomically, in ALS's shape."""
    atomic_write(os.path.join(web_folder, METRICS_NAME),
                 metrics_json(stack_size, total_exposure_seconds).encode("ascii"))


def read_metrics(web_folder):
    """(stack size, exposure "H:MM:SS") from the folder's data.json, or
    (None, None) when there is none or it is not ALS's shape."""
    try:
        with open(os.path.join(web_folder, METRICS_NAME), "rb") as f:
            data = json.loads(f.read(64 * 1024).decode("utf-8"))
    except (OSError, ValueError):
        return None, None
    if not isinstance(data, dict):
        return None, None
    stack_size, exposure = data.get("STACK_SIZE"), data.get("EXPO")
    if isinstance(stack_size, bool) or not isinstance(stack_size, int):
        stack_size = None
    return stack_size, exposure if isinstance(exposure, str) else None


def default_history_folder(web_folder):
    """Where watch mode keeps the history of a folder it must not write
    into: the user's cache folder, one subfolder per watched folder."""
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser("~\\AppData\\Local")
    elif sys.platform == "darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    digest = hashlib.sha256(os.path.realpath(web_folder).encode("utf-8", "surrogateescape")).hexdigest()
    return os.path.join(base, "alsserve", "history-" + digest[:16])


def choose_history_folder(web_folder, mode, history_folder):
    """Where the history lives: history_folder when given, else a hidden
    folder of the web folder, or for watch mode the user's cache (never
    inside the watched folder)."""
    if history_folder:
        folder = os.path.abspath(history_folder)
    else:
        folder = default_history_folder(web_folder) if mode == WATCH_MODE \
            else os.path.join(web_folder, HISTORY_FOLDER_NAME)
    if mode == WATCH_MODE and (is_inside(folder, web_folder)
                               or os.path.realpath(folder) == os.path.realpath(web_folder)):
        raise ValueError("the history of a watched folder must be kept outside it, not in %s" % folder)
    return folder


def disk_free(folder):
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


# -- 5b. Sharing: QR codes (ISO/IEC 18004), the Wi-Fi network, the title --------

# QR codes for the terminal and the viewer's share panel: byte mode, level M,
# versions 1-10.
# ISO/IEC 18004:2006 Table 9 (error correction characteristics), level M, per
# version: (EC codewords per block, group-1 blocks, data codewords per
# group-1 block, group-2 blocks); a group-2 block has one data codeword more.
_QR_M_BLOCKS = (None, (10, 1, 16, 0), (16, 1, 28, 0), (26, 1, 44, 0),
                (18, 2, 32, 0), (24, 2, 43, 0), (16, 4, 27, 0), (18, 4, 31, 0),
                (22, 2, 38, 2), (22, 3, 36, 2), (26, 4, 43, 1))
# Alignment pattern centre rows/columns, ISO/IEC 18004 Annex E (Table E.1).
_QR_ALIGN = (None, (), (6, 18), (6, 22), (6, 26), (6, 30), (6, 34),
             (6, 22, 38), (6, 24, 42), (6, 26, 46), (6, 28, 50))
# Data mask conditions (Table 10), row r, column c: True = invert the module.
_QR_MASKS = (lambda r, c: (r + c) % 2 == 0, lambda r, c: r % 2 == 0,
             lambda r, c: c % 3 == 0, lambda r, c: (r + c) % 3 == 0,
             lambda r, c: (r // 2 + c // 3) % 2 == 0, lambda r, c: (r * c) % 2 + (r * c) % 3 == 0,
             lambda r, c: ((r * c) % 2 + (r * c) % 3) % 2 == 0,
             lambda r, c: ((r + c) % 2 + (r * c) % 3) % 2 == 0)


def _qr_gf_tables():
    """Exp/log tables of GF(256) with the QR field polynomial 0x11D."""
    exp, log, x = [0] * 510, [0] * 256, 1
    for i in range(255):
        exp[i] = exp[i + 255] = x  # doubled so products need no "mod 255"
        log[x] = i
        x = (x << 1) ^ (0x11D if x & 0x80 else 0)
    return exp, log


_QR_EXP, _QR_LOG = _qr_gf_tables()


def _qr_gf_mul(a, b):
    return _QR_EXP[_QR_LOG[a] + _QR_LOG[b]] if a and b else 0


def _qr_rs_remainder(data, n):
    """The n Reed-Solomon EC codewords: data * x^n modulo the generator
    prod_{i<n} (x - alpha^i); polynomials are lists, highest power first."""
    gen = [1]
    for i in range(n):
        gen = [p ^ _qr_gf_mul(q, _QR_EXP[i]) for p, q in zip(gen + [0], [0] + gen)]
    rem = [0] * n
    for d in data:  # polynomial long division, one data codeword at a time
        factor = d ^ rem.pop(0)
        rem = [r ^ _qr_gf_mul(g, factor) for r, g in zip(rem + [0], gen[1:])]
    return rem


def _qr_bch(data, gen, degree):
    """data followed by its `degree` BCH check bits (remainder modulo gen)."""
    rem = data << degree
    for shift in range(rem.bit_length() - gen.bit_length(), -1, -1):
        if rem >> (shift + degree) & 1:
            rem ^= gen << shift
    return (data << degree) | rem


def _qr_format_bits(mask):
    # Level M is 00; the XOR mask keeps the 15 bits from being all zero.
    return _qr_bch(mask, 0x537, 10) ^ 0x5412


def _qr_format_cells(n):
    """(row, col) of format bit i (0 = least significant), for both copies."""
    return ([(r, 8) for r in (0, 1, 2, 3, 4, 5, 7, 8)] + [(8, c) for c in (7, 5, 4, 3, 2, 1, 0)],
            [(8, c) for c in range(n - 1, n - 9, -1)] + [(r, 8) for r in range(n - 7, n)])


def _qr_base(version):
    """The function patterns: returns (modules, is_function) grids."""
    n = 17 + 4 * version
    m = [[False] * n for _ in range(n)]
    fn = [[False] * n for _ in range(n)]

    def put(r, c, dark):
        m[r][c], fn[r][c] = bool(dark), True

    for r0, c0 in ((0, 0), (0, n - 7), (n - 7, 0)):
        # Finder and its light separator, as square rings around the centre.
        for r in range(max(r0 - 1, 0), min(r0 + 8, n)):
            for c in range(max(c0 - 1, 0), min(c0 + 8, n)):
                put(r, c, max(abs(r - r0 - 3), abs(c - c0 - 3)) not in (2, 4))
    for i in range(8, n - 8):  # timing patterns
        put(6, i, i % 2 == 0)
        put(i, 6, i % 2 == 0)
    for r in _QR_ALIGN[version]:
        for c in _QR_ALIGN[version]:
            if (r, c) not in ((6, 6), (6, n - 7), (n - 7, 6)):  # finders
                for dr in range(-2, 3):
                    for dc in range(-2, 3):
                        put(r + dr, c + dc, max(abs(dr), abs(dc)) != 1)
    for r, c in sum(_qr_format_cells(n), []):  # reserved; written per mask
        put(r, c, False)
    put(n - 8, 8, True)  # the "dark module"
    if version >= 7:  # version information, both 6x3 blocks
        bits = _qr_bch(version, 0x1F25, 12)
        for i in range(18):
            put(i // 3, n - 11 + i % 3, bits >> i & 1)
            put(n - 11 + i % 3, i // 3, bits >> i & 1)
    return m, fn


def _qr_header(data, version):
    """Mode and length bits.  Non-ASCII text is preceded by ECI 26 (UTF-8):
    without it readers guess a charset (zbar picks Big5 or Shift JIS)."""
    eci = "011100011010" if any(b >= 0x80 for b in data) else ""
    return eci + "0100" + format(len(data), "016b" if version >= 10 else "08b")


def _qr_codewords(data, version):
    """Data codewords (padded) then EC codewords, interleaved by block."""
    ec, b1, k1, b2 = _QR_M_BLOCKS[version]
    capacity = b1 * k1 + b2 * (k1 + 1)
    bits = _qr_header(data, version) + "".join(format(b, "08b") for b in data)
    bits += "0" * min(4, 8 * capacity - len(bits))  # terminator
    bits += "0" * (-len(bits) % 8)
    words = [int(bits[i:i + 8], 2) for i in range(0, len(bits), 8)]
    words = (words + [0xEC, 0x11] * capacity)[:capacity]
    blocks, start = [], 0
    for size in [k1] * b1 + [k1 + 1] * b2:
        blocks.append(words[start:start + size])
        start += size
    ecs = [_qr_rs_remainder(b, ec) for b in blocks]
    return ([b[i] for i in range(k1 + 1) for b in blocks if i < len(b)]
            + [e[i] for i in range(ec) for e in ecs])


def _qr_penalty(m):
    """Mask penalty, rules N1-N4 (ISO/IEC 18004:2006 6.8.2.1, Table 11)."""
    n, score = len(m), 0
    for line in m + [list(col) for col in zip(*m)]:
        s = "".join("1" if x else "0" for x in line)
        # N1: each run of 5+ same-colour modules scores 3 + (length - 5);
        # the runs are found by splitting the line at every colour change.
        for run in s.replace("01", "0 1").replace("10", "1 0").split():
            score += len(run) - 2 if len(run) >= 5 else 0
        # N3: 1:1:3:1:1 finder look-alike with 4 light modules on one side;
        # outside the symbol counts as light since the quiet zone is there.
        s = "0000" + s + "0000"
        i = s.find("1011101")
        while i >= 0:
            if s[i - 4:i] == "0000" or s[i + 7:i + 11] == "0000":
                score += 40
            i = s.find("1011101", i + 1)
    for r in range(n - 1):  # N2: each 2x2 block of one colour scores 3
        for c in range(n - 1):
            if m[r][c] == m[r][c + 1] == m[r + 1][c] == m[r + 1][c + 1]:
                score += 3
    dark = sum(map(sum, m))  # N4: 10 per full 5% that dark is off 50%
    return score + 10 * (abs(20 * dark - 10 * n * n) // (n * n))


def qr_matrix(text, mask=None):
    """QR code of text (UTF-8, byte mode, level M, smallest version 1-10) as
    rows of bools, True = dark, without quiet zone.  mask 0-7 forces that
    mask; by default the one with the lowest penalty is used."""
    data = text.encode("utf-8")
    for version in range(1, 11):
        _, b1, k1, b2 = _QR_M_BLOCKS[version]
        if len(_qr_header(data, version)) + 8 * len(data) <= 8 * (b1 * k1 + b2 * (k1 + 1)):
            break
    else:
        raise ValueError("text is %d bytes in UTF-8; a QR code (version 10, level M) "
                         "holds at most 213 (212 if not ASCII)" % len(data))
    if mask not in (None, 0, 1, 2, 3, 4, 5, 6, 7):
        raise ValueError("mask must be None or 0-7, not %r" % (mask,))
    m, fn = _qr_base(version)
    n = len(m)
    bits = [w >> (7 - i) & 1 for w in _qr_codewords(data, version) for i in range(8)]
    # Zigzag up and down two-module-wide columns from the bottom right, skipping
    # the vertical timing column; cells left over (the remainder bits) stay light.
    k, upward, right = 0, True, n - 1
    while right > 0:
        right = 5 if right == 6 else right
        for r in (range(n - 1, -1, -1) if upward else range(n)):
            for c in (right, right - 1):
                if not fn[r][c] and k < len(bits):
                    m[r][c], k = bits[k] == 1, k + 1
        upward, right = not upward, right - 2

    def masked(mk):  # data modules masked, format information written
        out = [[m[r][c] != (not fn[r][c] and _QR_MASKS[mk](r, c)) for c in range(n)]
               for r in range(n)]
        for cells in _qr_format_cells(n):
            for i, (r, c) in enumerate(cells):
                out[r][c] = bool(_qr_format_bits(mk) >> i & 1)
        return out
    if mask is not None:
        return masked(mask)
    return min((masked(mk) for mk in range(8)), key=_qr_penalty)  # first lowest


def qr_svg(text, light="#fff", dark="#000", quiet=4):
    """The QR code of text as an SVG image, one unit per module, the quiet
    zone included: one path of the dark modules over the light background."""
    matrix = qr_matrix(text)
    size = len(matrix) + 2 * quiet
    runs = []                           # each row's dark runs, one rectangle each
    for r, row in enumerate(matrix):
        c = 0
        while c < len(row):
            end = c
            while end < len(row) and row[end]:
                end += 1
            if end > c:
                runs.append("M%d %dh%dv1h-%dz" % (c + quiet, r + quiet, end - c, end - c))
            c = end + 1
    path = "".join(runs)
    return ('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 %d %d" shape-rendering="crispEdges">'
            '<rect width="%d" height="%d" fill="%s"/><path d="%s" fill="%s"/></svg>'
            % (size, size, size, size, light, path, dark))


WIFI_SECURITY = ("WPA", "WEP", "nopass")


class Wifi:
    """A Wi-Fi network to offer visitors (a guest network: its password is
    shown to everyone inside its QR code, never in words nor in the log)."""

    __slots__ = ("ssid", "password", "security")

    def __init__(self, ssid, password=None, security=None):
        if not isinstance(ssid, str) or not 0 < len(ssid.encode("utf-8")) <= 32:
            raise ValueError("Wi-Fi network name must be 1-32 bytes of text, got %r" % (ssid,))
        security = security or ("WPA" if password else "nopass")
        if security not in WIFI_SECURITY:
            raise ValueError("Wi-Fi security must be one of %s, got %r" % (", ".join(WIFI_SECURITY), security))
        if (security == "nopass") != (not password):
            raise ValueError("a Wi-Fi password goes with WPA or WEP, and nopass with none")
        if password is not None and (not isinstance(password, str) or len(password) > 63):
            raise ValueError("Wi-Fi password must be text of at most 63 characters")
        self.ssid, self.password, self.security = ssid, password or None, security

    def payload(self):
        """What a phone's camera reads to join: WIFI:T:<security>;S:<ssid>;P:<password>;;
        with \\ ; , " : escaped by a backslash."""
        def escaped(text):
            return "".join("\\" + c if c in '\\;,":' else c for c in text)
        password = "P:%s;" % escaped(self.password) if self.password else ""
        return "WIFI:T:%s;S:%s;%s;" % (self.security, escaped(self.ssid), password)

    def __repr__(self):                 # (no password: reprs end up in logs)
        return "Wifi(%r, security=%r)" % (self.ssid, self.security)


TITLE_LENGTH = 120


def clean_title(title):
    """A title for the night as shown: control characters removed, spaces
    collapsed, at most TITLE_LENGTH characters."""
    if title is None:
        return ""
    if not isinstance(title, str):
        raise ValueError("title must be text, got %r" % (title,))
    text = "".join(" " if c.isspace() else c for c in title
                   if c.isspace() or unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co"))
    return " ".join(text.split())[:TITLE_LENGTH]


# -- 5c. The history of the night: images on disk within a budget ---------------

class HistoryEntry:
    """One image of the night as it became live, with the metrics of that
    moment. Never changes once made."""

    __slots__ = ("id", "time", "stack_size", "exposure", "bytes", "ext", "session", "title")

    def __init__(self, id, time, stack_size, exposure, bytes, ext, session, title=""):
        self.id, self.time, self.ext, self.session = id, time, ext, session
        self.stack_size, self.exposure, self.bytes, self.title = stack_size, exposure, bytes, title

    @property
    def name(self):
        return "%d%s" % (self.id, self.ext)

    @property
    def url(self):
        return HISTORY_URL_PATH + "/" + self.name

    def as_json(self):
        return {"id": self.id, "time": self.time, "stack_size": self.stack_size, "exposure": self.exposure,
                "bytes": self.bytes, "url": self.url, "session": self.session, "title": self.title}


def write_history(folder, doomed, entries, index):
    """The disk work of the history's changes (an executor job): remove the
    files of dropped entries, write the new entries' files ((name, body,
    time it became live) each, dated that time), then the index. Returns
    [(file name, its stat_version, or the OSError that kept it from disk)]."""
    for name in doomed:
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass
    written = []
    for name, body, when in entries:
        path = os.path.join(folder, name)
        try:
            atomic_write(path, body)
            os.utime(path, (when, when))
            written.append((name, stat_version(os.stat(path))))
        except OSError as error:        # (a full disk): that entry is not kept
            written.append((name, error))
    try:
        atomic_write(os.path.join(folder, HISTORY_INDEX), index)
    except OSError as error:
        written.append((HISTORY_INDEX, error))
    return written


class History:
    """The images of the night: a list owned by the event loop, and on disk
    one file per entry in a folder of its own with an index. Ids only
    increase, so an entry's URL never changes meaning and caches may keep it.

    Bounded by the settings: at most history_entries entries and
    history_bytes bytes, oldest dropped first; no entry while the disk has
    less than history_min_free free. A new entry is served from memory
    (``pending``) until a write_job() has written it.

    A new history's first id is the time in milliseconds: one made later
    (another folder, or this one removed between nights) never reuses the
    URLs of an earlier one, which a cache in front may still hold.
    """

    def __init__(self, folder, settings):
        self.folder = folder
        self.settings = settings
        self.entries = ()               # oldest first; replaced, never changed: readable from any thread
        self.by_url = {}
        self.pending = {}               # id -> FileSnapshot of an entry whose file is being written
        self.session = 1
        self.next_id = int(time.time() * 1000)     # a new history's; open() reads the index's
        self.live = None                # id of the entry shown as the live image
        self._doomed = []               # files of dropped entries, removed by the next job
        self._listing = None            # history.json, rebuilt after a change
        self._version = 0
        self._low_disk = False

    def open(self):
        """At START, before the loop runs: create the folder, read the
        index, and make the folder match it (entries whose file is missing
        or of another size are forgotten; files that are no entry, such as
        a crash's temporary files, removed)."""
        os.makedirs(self.folder, exist_ok=True)
        records = []
        try:
            with open(os.path.join(self.folder, HISTORY_INDEX), "rb") as f:
                index = json.loads(f.read().decode("utf-8"))
            self.next_id, self.session = int(index["next_id"]), int(index["session"])
            records = index["entries"] if "entries" in index else index["frames"]   # (1.0.0's name)
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("history index in %s unreadable (%s): starting a new history", self.folder, error)
        entries = []
        for record in records:
            try:
                entry = HistoryEntry(int(record["id"]), float(record["time"]), record["stack_size"],
                                     record["exposure"], int(record["bytes"]), record["ext"],
                                     int(record["session"]), clean_title(record.get("title")))
                size = os.stat(os.path.join(self.folder, entry.name)).st_size
            except (KeyError, TypeError, ValueError, OSError):
                continue
            if entry.ext in (".jpg", ".png") and entry.id < self.next_id and size == entry.bytes:
                entries.append(entry)
        self._set(entries)
        self._keep_budget()
        keep = {entry.name for entry in self.entries} | {HISTORY_INDEX}
        self._doomed += [name for name in os.listdir(self.folder) if name not in keep
                         and (name.endswith(".tmp") or os.path.splitext(name)[0].isdigit())]
        write_history(self.folder, self._doomed, [], self._index())
        self._doomed = []

    def _set(self, entries):
        self.entries = tuple(entries)
        self.by_url = {entry.url: entry for entry in entries}
        if self.live is not None and self.live not in {entry.id for entry in entries}:
            self.live = None
        self._listing = None

    def _keep_budget(self):
        """Drop the oldest entries beyond the budget; their files go with the next job."""
        entries, total = list(self.entries), sum(entry.bytes for entry in self.entries)
        while entries and (len(entries) > self.settings.history_entries or total > self.settings.history_bytes):
            dropped = entries.pop(0)
            total -= dropped.bytes
            self._doomed.append(dropped.name)
            self.pending.pop(dropped.id, None)
        if len(entries) != len(self.entries):
            self._set(entries)

    def _index(self):
        records = []
        for entry in self.entries:
            record = entry.as_json()
            del record["url"]
            record["ext"] = entry.ext
            records.append(record)
        return json.dumps({"next_id": self.next_id, "session": self.session, "entries": records}).encode("utf-8")

    # -- on the event loop -------------------------------------------------

    def add(self, snapshot, ext, when, stack_size, exposure, free, title=""):
        """A new entry for an image (served from memory until written), or
        None: over the byte budget alone, or the disk (free bytes) too full."""
        size = snapshot.size
        low = free is not None and free - size < self.settings.history_min_free
        if low and not self._low_disk:
            log.warning("history: only %d MiB free on the disk of %s, below the %d MiB floor: "
                        "no new image is kept", free >> 20, self.folder, self.settings.history_min_free >> 20)
        self._low_disk = low
        if low or size > self.settings.history_bytes or not self.settings.history_entries:
            return None
        entry = HistoryEntry(self.next_id, when, stack_size, exposure, size, ext, self.session, title)
        self.next_id += 1
        self.pending[entry.id] = snapshot
        self._set(self.entries + (entry,))
        self._keep_budget()
        return entry if entry.id in self.pending else None

    def write_job(self):
        """The disk work that makes the folder match the list: an executor
        job holding copies, never the history itself."""
        doomed, self._doomed = self._doomed, []
        files = [(entry.name, self.pending[entry.id].body, entry.time)
                 for entry in self.entries if entry.id in self.pending]
        return functools.partial(write_history, self.folder, doomed, files, self._index())

    def written(self, name, outcome):
        """An entry's file is written (outcome: its stat_version), or could
        not be (an OSError: the entry is not kept). Returns the copy of the
        entry that its file now holds, None when there is none."""
        entry = self.by_url.get(HISTORY_URL_PATH + "/" + name)
        snapshot = self.pending.pop(entry.id, None) if entry is not None else None
        if snapshot is None:
            return None                 # dropped by the budget meanwhile
        if isinstance(outcome, OSError):
            log.error("history image %s could not be written: %s", name, outcome)
            self._set([e for e in self.entries if e.id != entry.id])
            return None
        return FileSnapshot(snapshot.body, entry.time, outcome)

    def new_session(self):
        """A new session (ALS: a new target): new entries start a new
        history; the previous one stays while the budget allows."""
        self.session += 1
        self.live = None
        self._listing = None

    def set_live(self, entry_id):
        if entry_id != self.live:
            self.live = entry_id
            self._listing = None

    def find(self, url):
        """The entry served at url ("history/<id>.<ext>"), or None."""
        return self.by_url.get(url)

    def entry(self, entry_id):
        for entry in reversed(self.entries):
            if entry.id == entry_id:
                return entry
        return None

    def listing(self):
        """history.json as a snapshot with its validators."""
        if self._listing is None:
            self._version += 1
            body = json.dumps({"session": self.session, "live": self.live,
                               "entries": [entry.as_json() for entry in self.entries]}).encode("utf-8")
            now = time.time()
            self._listing = FileSnapshot(body, now, (int(now * 1000), self._version))
        return self._listing


# =============================================================================
# 6. Controller: addresses and port, announcer, thread, START/STOP, ALS's Server
# =============================================================================

# -- 6a. The addresses to show, the port -----------------------------------------

# UDP "connect" sends no packet; it only asks the kernel which local address
# routes to a target. A public target finds the default route; private and
# link-local targets find networks without one (a Pi's own Wi-Fi hotspot).
ROUTE_PROBE_TARGETS = ("203.0.113.1", "10.255.255.254", "172.31.255.254",
                       "192.168.255.254", "169.254.255.254", "100.127.255.254")
# SIOCGIFADDR: the IPv4 address of a named interface.
SIOCGIFADDR = {"linux": 0x8915, "darwin": 0xC0206921}
# ALS 1.0's ranking: private +100, link-local -100, loopback -200, and a weak
# hint from the interface name (+10 physical, -10 virtual); then the IP text.
PHYSICAL_INTERFACE_HINTS = ("wi-fi", "wifi", "wireless", "wlan", "wl", "ethernet", "eth", "enp", "ens", "eno")
VIRTUAL_INTERFACE_HINTS = ("virtual", "vmware", "vbox", "hyper-v", "vethernet", "docker", "bridge", "br-",
                           "vpn", "tun", "tap", "utun", "tailscale", "zerotier")
# Bridges ALS's hints miss; they only break ties among equal scores.
MORE_VIRTUAL_PREFIXES = ("veth", "virbr", "vmnet", "vboxnet", "lxc")


def _route_probe(target):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((target, 9))
        return sock.getsockname()[0]
    except OSError:
        return None
    finally:
        sock.close()


def _interface_addresses(platform=sys.platform, resolve=socket.getaddrinfo):
    """(address, interface name) of each interface, by stdlib means per OS;
    where interfaces cannot be listed (Windows), the host name's addresses."""
    found = []
    request = SIOCGIFADDR.get(platform, SIOCGIFADDR["darwin"] if "bsd" in platform else None)
    if request is not None and hasattr(socket, "if_nameindex"):
        import fcntl
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _index, name in socket.if_nameindex():
                try:
                    reply = fcntl.ioctl(sock.fileno(), request, struct.pack("256s", name.encode()[:15]))
                    found.append((socket.inet_ntoa(reply[20:24]), name))
                except OSError:
                    pass                # interface without IPv4
        except OSError:
            pass
        finally:
            sock.close()
    if found:
        return found
    # Only now: resolving the host name can wait on DNS or mDNS where there is none.
    try:
        for info in resolve(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM):
            # A stale hosts file or DNS may name an address this machine no longer has.
            if is_local_address(info[4][0]):
                found.append((info[4][0], ""))
    except (OSError, UnicodeError):
        pass
    return found


def interface_hint(lowered_name):
    """ALS 1.0's weak hint from an interface's name: +10 physical, -10 virtual."""
    if any(hint in lowered_name for hint in PHYSICAL_INTERFACE_HINTS):
        return 10
    return -10 if any(hint in lowered_name for hint in VIRTUAL_INTERFACE_HINTS) else 0


InterfaceAddress = collections.namedtuple("InterfaceAddress", "family address")   # psutil's shape


class NetworkAddress:
    """One IPv4 address a browser may be sent to, as ALS 1.0 lists it:
    ``url`` "http://<ip>:<port>" (no slash), ``label`` "Wi-Fi - <ip>",
    "Ethernet - <ip>", "<interface> - <ip>" or the bare ip, ``score`` its
    rank for auto."""

    __slots__ = ("interface_name", "ip", "url", "is_loopback", "is_link_local", "is_private",
                 "score", "label")

    def __init__(self, interface_name, ip, url, is_loopback, is_link_local, is_private, score, label):
        self.interface_name, self.ip, self.url, self.label = interface_name, ip, url, label
        self.is_loopback, self.is_link_local, self.is_private = is_loopback, is_link_local, is_private
        self.score = score

    @classmethod
    def of(cls, interface_name, ip, port):
        address = ipaddress.IPv4Address(ip)
        lowered = interface_name.lower()
        score = (100 if address.is_private else 0) - (100 if address.is_link_local else 0) \
            - (200 if address.is_loopback else 0) + interface_hint(lowered)
        if "wi-fi" in lowered or "wifi" in lowered or "wireless" in lowered or lowered.startswith(("wlan", "wl")):
            shown = "Wi-Fi"
        elif "ethernet" in lowered or lowered.startswith(("eth", "enp", "ens", "eno")):
            shown = "Ethernet"
        else:
            shown = interface_name
        return cls(interface_name, ip, "http://%s:%d" % (ip, port), address.is_loopback,
                   address.is_link_local, address.is_private, score, "%s - %s" % (shown, ip) if shown else ip)

    @property
    def is_virtual(self):
        lowered = self.interface_name.lower()
        return interface_hint(lowered) < 0 or lowered.startswith(MORE_VIRTUAL_PREFIXES)

    def __repr__(self):
        return "NetworkAddress(%r, score=%d)" % (self.label, self.score)


def build_network_address_candidates(port, interface_addresses, default_route=None):
    """ALS 1.0's ranked candidates from a psutil-style mapping (interface
    name -> entries with ``.family`` and ``.address``): IPv4 only, each
    address once, best first; 127.0.0.1 when there is none. Among equal
    scores the default route's address comes first, virtual bridges last."""
    candidates, seen = [], set()
    for interface_name, entries in interface_addresses.items():
        for entry in entries:
            if entry.family != socket.AF_INET or entry.address in seen:
                continue
            try:
                ipaddress.IPv4Address(entry.address)
            except ValueError:
                continue
            seen.add(entry.address)
            candidates.append(NetworkAddress.of(interface_name, entry.address, port))
    if not candidates:
        candidates.append(NetworkAddress.of("Loopback", "127.0.0.1", port))
    return sorted(candidates, key=lambda c: (-c.score, c.ip != default_route, c.is_virtual, c.ip))


def machine_addresses(port):
    """(candidates, default route's address) of this machine: its
    interfaces, the addresses routes lead from (a hotspot where interfaces
    cannot be listed), and loopback."""
    probes = [_route_probe(target) for target in ROUTE_PROBE_TARGETS]
    mapping = collections.OrderedDict()
    for address, interface in _interface_addresses() + [(a, "") for a in probes if a] + [("127.0.0.1", "lo")]:
        if address != "0.0.0.0":
            mapping.setdefault(interface, []).append(InterfaceAddress(socket.AF_INET, address))
    return build_network_address_candidates(port, mapping, probes[0]), probes[0]


def get_network_address_candidates(port, interface_addresses=None):
    """ALS 1.0's candidates of this machine's interfaces (with a mapping,
    as its earlier form did, of those addresses instead)."""
    if interface_addresses is not None:
        return build_network_address_candidates(port, interface_addresses)
    return machine_addresses(port)[0]


def build_advertised_address_preference(ip):
    """The Displayed Address preference that names one address."""
    return ADVERTISED_ADDRESS_IP_PREFIX + ip


advertised_address_preference = build_advertised_address_preference     # ALS 1.0-dev's earlier name


def als_setting(getter, default):
    """A preference of ALS (``als.config.<getter>()``, read when asked: ALS
    reads its own at each start) when alsserve runs inside ALS; else
    default. The only place that knows ALS's configuration."""
    try:
        config = importlib.import_module("als.config")
    except ImportError:
        return default
    try:
        return getattr(config, getter)()
    except Exception as error:          # ALS's own error: say it, keep the default
        log.warning("ALS preference %s unreadable (%s); using %r", getter, error, default)
        return default


def select_advertised_address(preference, candidates):
    """The candidate the preference names ("ip:<a>", when it is one of
    them), else the best one."""
    candidates = list(candidates) or build_network_address_candidates(
        als_setting("get_www_server_port_number", DEFAULT_PORT), {})
    if preference and preference.startswith(ADVERTISED_ADDRESS_IP_PREFIX):
        wanted = preference[len(ADVERTISED_ADDRESS_IP_PREFIX):]
        for candidate in candidates:
            if candidate.ip == wanted:
                return candidate
    return candidates[0]


def describe_ipv4_addresses():
    """(address, interface name, what it is) of each local IPv4 address,
    best first for a phone on the same network."""
    candidates, default_route = machine_addresses(DEFAULT_PORT)
    described = []
    for candidate in candidates:
        if candidate.is_loopback:
            kind = "loopback (this machine only)"
        elif candidate.is_link_local:
            kind = "link-local (no DHCP server answered)"
        elif candidate.ip == default_route:
            kind = "default route"
        elif candidate.is_virtual:
            kind = "virtual interface (phones cannot reach it)"
        elif candidate.is_private:
            kind = "private network" + (" without the default route (a hotspot or a local-only network)"
                                        if default_route else "")
        else:
            kind = "public address"
        described.append((candidate.ip, candidate.interface_name, kind))
    return described


def list_ipv4_addresses():
    """Local IPv4 addresses, best first (see describe_ipv4_addresses)."""
    return [candidate.ip for candidate in machine_addresses(DEFAULT_PORT)[0]]


def resolve_displayed_address(preference=ADVERTISED_ADDRESS_AUTO):
    """The address to show users for the Displayed Address preference:
    ``ip:<a>`` while <a> is an address of this machine (loopback included);
    otherwise a warning, and the best non-loopback address, or 127.0.0.1."""
    wanted = parse_address_preference(preference)
    if wanted is not None:
        if is_local_address(wanted):
            return wanted
        log.warning("displayed address %s is not an address of this machine; using auto", wanted)
    for address in list_ipv4_addresses():
        if not ipaddress.IPv4Address(address).is_loopback:
            return address
    return "127.0.0.1"


def get_host_ip():
    """ALS 0.7 helper: the address to show for 'auto'."""
    return resolve_displayed_address(ADVERTISED_ADDRESS_AUTO)


def displayed_address_for(preference, bind=WEB_SERVER_BIND_HOST):
    """The displayed address, reachable through the bind address: any
    resolved address with 0.0.0.0, the bind address itself otherwise."""
    if check_bind_address(bind) == WEB_SERVER_BIND_HOST:
        return resolve_displayed_address(preference)
    wanted = parse_address_preference(preference)
    if wanted is not None and wanted != bind:
        log.warning("displayed address %s is not reachable through the bind address %s; showing %s",
                    wanted, bind, bind)
    return bind


def listener_socket_options(socket_module=socket):
    """The listening socket's options, by what the OS offers. Windows:
    SO_EXCLUSIVEADDRUSE, so no other program can bind the port too. POSIX:
    SO_REUSEADDR, so STOP/START rebinds at once despite TIME_WAIT. Never
    SO_REUSEPORT (two servers would share the port)."""
    if hasattr(socket_module, "SO_EXCLUSIVEADDRUSE"):
        return [(socket_module.SOL_SOCKET, socket_module.SO_EXCLUSIVEADDRUSE, 1)]
    return [(socket_module.SOL_SOCKET, socket_module.SO_REUSEADDR, 1)]


def bind_listener(port, host=WEB_SERVER_BIND_HOST):
    """A listening TCP socket on host:port, or PortInUseError."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        for level, option, value in listener_socket_options():
            sock.setsockopt(level, option, value)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
    except OSError as error:
        sock.close()
        raise PortInUseError("port %d is not available on %s (%s); choose another port "
                             "or stop the program using it" % (port, host, error.strerror or error)) from error
    sock.setblocking(False)
    return sock


def is_port_in_use(ip, port):
    """ALS 0.7 helper: True when the server could not listen on port now.
    ALS asks with its host address, the server binds 0.0.0.0; another server
    on that port blocks either, whatever its address: both are tried."""
    for host in dict.fromkeys((ip, WEB_SERVER_BIND_HOST)):
        try:
            bind_listener(port, host).close()
        except PortInUseError as error:
            if getattr(error.__cause__, "errno", None) != errno.EADDRNOTAVAIL:
                return True             # (not an address of this machine: says nothing of the port)
    return False


# -- 6b. New images: the routes beyond the web folder, the announcer -------------

def build_no_cache_file_response(static_path, file_name):
    """ALS 1.0's answer for a file that changes under the same name: a Route
    to it whose ``.headers`` keep browsers from storing it."""
    return Route(path=os.path.join(static_path, file_name), headers=NO_STORE_HEADERS)


SERVER_INFO = "server.json"
SHARE_URL_PATH = "share"
QR_TEXT_LIMIT = 212                     # bytes a version 10 code of level M holds (213 if all ASCII)
QR_COLOURS = {"": ("#fff", "#000"), "1": ("#a00000", "#000")}   # ?red=1: a red panel at night


def qr_code_snapshot(text, red):
    """A QR code as an SVG snapshot, its version the content's. Up to
    20 ms of pure Python: made on the executor, not on the loop."""
    light, dark = QR_COLOURS.get(red, QR_COLOURS[""])
    body = qr_svg(text, light, dark).encode("ascii")
    return FileSnapshot(body, time.time(), (zlib.crc32(body), len(body)))


class Routes:
    """The URLs a server answers from somewhere else than its web folder
    (called on the event loop).

    The history: history.json, and history/<id>.<ext> (an entry not written
    yet from memory); any other name under history/ is 404. server.json
    (the title, the Wi-Fi network's name) and the share panel's QR codes,
    share/qr.svg?text=... and share/wifi.svg. Watch mode: the viewer bundle
    (it wins over a same-named file of the folder, which belongs to another
    program), and web_image.jpg, which stands for the newest image of the
    folder (``live_path``). ALS's Server: web_image.jpg and data.json with
    ALS 1.0's headers (``no_store``).
    """

    def __init__(self, history=None, bundle=None, live_path=None, no_store=(), wifi=None):
        self.history = history
        self.bundle = bundle            # watch mode: URL path -> file of the bundle
        self.live_path = live_path      # watch mode: the file web_image.jpg stands for
        self.no_store = no_store
        self.wifi = wifi
        self.published = None           # web_image.jpg as publish_image gave it, its file not yet written
        self.info = None                # server.json's snapshot
        self.set_title("")
        self._codes = collections.OrderedDict()     # (text, red) -> future of its snapshot, the latest few

    def set_title(self, title):
        wifi = self.wifi and {"ssid": self.wifi.ssid, "security": self.wifi.security}
        body = json.dumps({"title": title, "wifi": wifi, "stream": True}).encode("utf-8")
        now = time.time()
        self.info = FileSnapshot(body, now, (int(now * 1e6), len(body)))

    def qr_code(self, text, red):
        """A QR code, made once for its text and colours (requests that come
        while it is made wait for the same one)."""
        key = (text, red)
        code = self._codes.pop(key, None)
        if code is None:
            code = asyncio.get_running_loop().run_in_executor(None, qr_code_snapshot, text, red)
        self._codes[key] = code
        while len(self._codes) > 32:
            self._codes.popitem(last=False)
        return Route(snapshot=code, content_type=CONTENT_TYPES[".svg"], cache_control=IMMUTABLE)

    def __call__(self, segments, query=""):
        history = self.history
        if history is not None:
            if segments == [HISTORY_LISTING]:
                return Route(snapshot=history.listing(), content_type=CONTENT_TYPES[".json"])
            if segments[0] == HISTORY_URL_PATH:
                entry = history.find("/".join(segments))
                if entry is None:
                    raise HTTPError(404, "no such history entry")
                pending = history.pending.get(entry.id)
                if pending is not None:
                    return Route(snapshot=pending, content_type=content_type_for(entry.name),
                                 cache_control=IMMUTABLE)
                return Route(path=os.path.join(history.folder, entry.name), cache_control=IMMUTABLE)
        if segments == [IMAGE_NAME] and self.published is not None:
            return Route(snapshot=self.published, content_type=CONTENT_TYPES[".jpg"])
        if segments == [SERVER_INFO]:
            return Route(snapshot=self.info, content_type=CONTENT_TYPES[".json"])
        if segments[0] == SHARE_URL_PATH:
            fields = urllib.parse.parse_qs(query)
            red = fields.get("red", [""])[0]
            if segments == [SHARE_URL_PATH, "qr.svg"]:
                text = fields.get("text", [""])[0]
                if not text:
                    raise HTTPError(400, "no text to encode", explain=True)
                if len(text.encode("utf-8")) > QR_TEXT_LIMIT:
                    raise HTTPError(414, "text too long for a QR code", explain=True)
                return self.qr_code(text, red)
            if segments == [SHARE_URL_PATH, "wifi.svg"] and self.wifi is not None:
                route = self.qr_code(self.wifi.payload(), red)
                route.headers = {"Cache-Control": NO_CACHE}
                return route
            raise HTTPError(404, "nothing to share here")
        if self.bundle is not None:
            if segments == [IMAGE_NAME] and self.live_path is not None:
                return Route(path=self.live_path)
            path = self.bundle.get("/".join(segments))
            if path is not None:
                return Route(path=path)
        if len(segments) == 1 and segments[0] in self.no_store:
            return Route(headers=NO_STORE_HEADERS)
        return None


class SerialJobs:
    """Disk work that keeps its order, run on the loop's executor one job at
    a time. ``submit(make, done)``: when its turn comes, make() (on the
    loop, with the state of that moment) gives the function to run, or None
    for nothing to run; done(result, error) gets the outcome on the loop. A
    submit whose ``key`` equals the last waiting one's is not queued twice."""

    def __init__(self):
        self._waiting = collections.deque()     # (make, done, key)
        self._running = False

    def submit(self, make, done, key=None):
        if key is not None and self._waiting and self._waiting[-1][2] == key:
            return
        self._waiting.append((make, done, key))
        self._next()

    def _next(self):
        while not self._running and self._waiting:
            make, done, _key = self._waiting.popleft()
            job = make()
            if job is None:
                self._deliver(done, None, None)
                continue
            self._running = True
            future = asyncio.get_running_loop().run_in_executor(None, job)
            future.add_done_callback(lambda future, done=done: self._finished(future, done))

    def _finished(self, future, done):
        self._running = False
        error = future.exception()
        self._deliver(done, None if error else future.result(), error)
        self._next()

    @staticmethod
    def _deliver(done, result, error):
        try:
            done(result, error)
        except Exception:
            log.exception("after disk work")

    async def finish(self, timeout):
        """Wait (at most timeout) until every job has run."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (self._running or self._waiting) and loop.time() < deadline:
            await asyncio.sleep(0.01)


def prepare_image(path, snapshot, web_folder, history_folder):
    """Executor job for a new image: (its complete copy, read when not given
    and None when it stays incomplete; stack size and exposure of that
    moment; free bytes on the history's disk)."""
    if snapshot is None:
        snapshot = read_whole_snapshot(path)
    return (snapshot,) + read_metrics(web_folder) + (disk_free(history_folder) if history_folder else None,)


class Announcer:
    """Makes each new image live, in order, then tells the browsers (the
    history entry's message, then ALS's unchanged new_image). Runs on the
    event loop; a new image's disk work (reading it after a notify, the
    metrics, writing its history entry) runs as SerialJobs."""

    def __init__(self, site, routes, web_folder, waiting_body, title=""):
        self.site = site
        self.routes = routes
        self.title = title              # the night's, kept with each history entry
        self.history = routes.history
        self.web_folder = web_folder
        self.image_path = os.path.join(web_folder, IMAGE_NAME)     # a notify without a path (ALS mode)
        self.waiting_body = waiting_body
        self.last_body = None           # the live image's bytes: the same again is no new entry
        self.last_entry_id = None
        self.history_folder = self.history.folder if self.history is not None else None
        self.preparing = SerialJobs()
        self.writing = SerialJobs()

    def resume(self, path):
        """At START, before the loop runs: the image at path is live. It is
        served from memory before the first browser asks; after a restart
        it may be the history's last entry again."""
        snapshot = read_whole_snapshot(path) if path else None
        if snapshot is None:
            return
        self.site.files.cache.put(path, snapshot)
        self.site.stream.publish(snapshot, content_type_for(path))
        self.last_body = snapshot.body
        last = self.history.entries[-1] if self.history is not None and self.history.entries else None
        if last is not None and last.bytes == snapshot.size \
                and read_file(os.path.join(self.history.folder, last.name)) == snapshot.body:
            self.last_entry_id = last.id
            self.history.set_live(last.id)

    def new_image(self, path=None, prepared=None, keep=True, unwritten=False):
        """path holds a new image (None: the live image's file); prepared:
        prepare_image()'s result when the caller made it (publish_image);
        keep=False: no history entry (the waiting image); unwritten: its
        file is still being written (file_written() follows). Notifies that
        pile up while one is read count once."""
        path = path or self.routes.live_path or self.image_path
        if prepared is not None:
            self.preparing.submit(lambda: None, lambda _result, _error: self._announce(
                path, keep, prepared, None, unwritten))
        else:
            job = functools.partial(prepare_image, path, None, self.web_folder, self.history_folder)
            self.preparing.submit(lambda: job, functools.partial(self._announce, path, keep), key=(path, keep))

    def file_written(self, path, snapshot, written):
        """publish_image's file is in place (written: its stat), or not
        (None: the file is the truth again). In order with the images."""
        def settle(_result, _error):
            if self.routes.published is snapshot:   # (not superseded meanwhile)
                self.routes.published = None
                if written is not None:
                    self.site.files.cache.put(path, FileSnapshot(snapshot.body, written.st_mtime,
                                                                 stat_version(written)))
        self.preparing.submit(lambda: None, settle)

    def set_title(self, title):
        """A new title for the night (a new target): told to the browsers."""
        self.title = title
        self.routes.set_title(title)
        self.site.hub.broadcast(json.dumps({"type": "title", "title": title}))

    def new_session(self):
        """A new session starts after the images already given."""
        def start(_result, _error):
            if self.history is not None:
                self.history.new_session()
                self._write_history()
        self.preparing.submit(lambda: None, start)

    def _announce(self, path, keep, result, error, unwritten=False):
        site, history = self.site, self.history
        if error is not None:
            log.error("new image %s could not be read: %s", path, error)
            return
        snapshot, stack_size, exposure, free = result
        if site.hub.stopping:
            return
        if snapshot is None:            # stayed incomplete: browsers get what is served
            site.hub.broadcast(NEW_IMAGE_MESSAGE)
            return
        if unwritten:                   # served from memory until its file is in place
            self.routes.published = snapshot
        else:
            self.routes.published = None
            site.files.cache.put(path, snapshot)
        site.stream.publish(snapshot, content_type_for(path))
        if self.routes.bundle is not None:
            self.routes.live_path = path
        entry = None
        if not keep or snapshot.body == self.waiting_body:
            self.last_entry_id = None
        elif snapshot.body != self.last_body:
            self.last_entry_id = None
            if history is not None:
                ext = ".png" if content_type_for(path) == "image/png" else ".jpg"
                entry = history.add(snapshot, ext, time.time(), stack_size, exposure, free, self.title)
                if entry is not None:
                    self.last_entry_id = entry.id
        self.last_body = snapshot.body
        if history is not None:
            history.set_live(self.last_entry_id)
            live = history.entry(self.last_entry_id)
            if live is not None:
                site.hub.broadcast(json.dumps(dict(live.as_json(), type="history_entry")))
        site.hub.broadcast(NEW_IMAGE_MESSAGE)
        log.info("new image %s (%.1f MB), %d browsers", os.path.basename(path), snapshot.size / 1e6,
                 len(site.hub.clients))
        if entry is not None:
            self._write_history()

    def _write_history(self):
        """Whatever is not on disk yet, in one job once the writer is free."""
        self.writing.submit(self.history.write_job, self._history_written, key="history")

    def _history_written(self, written, error):
        history = self.history
        for name, outcome in written or [(HISTORY_INDEX, error)]:
            if name == HISTORY_INDEX:
                log.error("history index could not be written: %s", outcome)
                continue
            snapshot = history.written(name, outcome)
            if snapshot is not None:
                self.site.files.cache.put(os.path.join(history.folder, name), snapshot)
        if any(name != HISTORY_INDEX and isinstance(outcome, OSError) for name, outcome in written or ()):
            self._write_history()       # the index without them


# -- 6c. The running server: its thread, ImageServer, ALS's Server ------------

class SiteThread:
    """A Site and its Announcer on their own event loop, in a thread named
    ``alsserve``. start() returns once connections are accepted (or raises
    what kept the site from starting); call() is how other threads hand the
    loop work; stop() runs STOP and ends the loop and the thread."""

    def __init__(self, site, announcer):
        self.site = site
        self.announcer = announcer
        self.loop = asyncio.new_event_loop()
        # Disk work runs here; its threads end with the site (those of the
        # loop's default executor would linger after close).
        self.executor = concurrent.futures.ThreadPoolExecutor(IO_THREADS, "alsserve-io")
        self.loop.set_default_executor(self.executor)
        self.thread = None

    @property
    def alive(self):
        return self.thread is not None and self.thread.is_alive()

    def call(self, callback, *args):
        """From any thread: callback(*args) on the loop, soon. A no-op once stopped."""
        try:
            self.loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:            # the loop closed in between
            pass

    def start(self, sock):
        loop, ready, failure = self.loop, threading.Event(), []

        def run():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.site.start(sock))
            except BaseException as error:      # reported to start()
                failure.append(error)
                ready.set()
                self._close_loop()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                # Connections accepted as STOP began end now, closing their sockets.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                self._close_loop()

        self.thread = threading.Thread(target=run, name="alsserve", daemon=True)
        self.thread.start()
        ready.wait()
        if failure:
            self.thread.join()
            raise failure[0]

    def _close_loop(self):
        # The disk work ends first: a job ending after close would report
        # to a closed loop (an error on 3.8).
        self.executor.shutdown(wait=True)
        self.loop.close()

    async def _shutdown(self, grace):
        await self.site.shutdown(grace)
        await self.announcer.writing.finish(5.0)    # the history's last writes

    def stop(self, grace):
        loop = self.loop
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(grace), loop).result(grace + 10)
        except Exception:
            log.exception("error while stopping the image server")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(10)


class ImageServer:
    """The image server of one web folder: START, STOP, notify, publish.

    ``start()`` checks every setting, binds the port in the caller's
    thread, then publishes (ALS mode) and runs the event loop in a thread
    named ``alsserve``, and returns the displayed URL; a start that fails
    writes nothing. The other methods may be called from any thread; none
    waits on a browser, and a notify none on the disk.

    ALS mode (``mode=ALS_MODE``): START publishes the viewer bundle and the
    waiting image into the web folder, and data.json when there is none.
    Watch mode (``mode=WATCH_MODE``): nothing is ever written into the web
    folder; the viewer is served from the bundle in place, web_image.jpg
    stands for ``live_image`` (a file of the folder), then for each image
    given to announce_image(), the waiting image until there is one; the
    history is kept outside the folder. ``create_folder``: a missing web
    folder is created after the bind (the command line's own folder).
    ``title``: the night's (set_title() changes it); ``wifi``: a Wifi the
    viewer's share panel offers visitors.
    """

    publishes_viewer = True             # ALS mode's START writes the viewer into the folder
    no_store = ()                       # names sent with NO_STORE_HEADERS

    def __init__(self, web_folder, port=DEFAULT_PORT, displayed_address=ADVERTISED_ADDRESS_AUTO,
                 assets_dir=None, mode=ALS_MODE, bind=WEB_SERVER_BIND_HOST, settings=None,
                 history_folder=None, live_image=None, create_folder=False, title="", wifi=None):
        self.web_folder = web_folder
        self.port = port
        self.address_preference = displayed_address
        self.assets_dir = os.path.abspath(assets_dir or DEFAULT_ASSETS_DIR)
        self.mode = mode
        self.bind = bind
        self.settings = settings if settings is not None else Settings()
        self.history_folder = history_folder
        self.live_image = live_image
        self.create_folder = create_folder
        self.title = clean_title(title)
        self.wifi = wifi
        self.displayed_address = None
        self.access_limited = False
        self.url = None
        self._lock = threading.Lock()   # START and STOP, one at a time
        self._thread = None             # the SiteThread while running

    @property
    def running(self):
        thread = self._thread
        return thread is not None and thread.alive

    @property
    def client_count(self):
        return self.browser_counts[0]

    @property
    def browser_counts(self):
        """(connected now, joined since start, left since start)."""
        thread = self._thread
        if thread is None:
            return 0, 0, 0
        hub = thread.site.hub
        return len(hub.clients), hub.joined, hub.left

    @property
    def history(self):
        """The history's entries, oldest first, as history.json lists them."""
        thread = self._thread
        history = thread.announcer.history if thread is not None else None
        return [entry.as_json() for entry in history.entries] if history is not None else []

    # -- START -------------------------------------------------------------

    def start(self):
        with self._lock:
            if self.running:
                return self.url
            web_folder, history_folder = self._check()
            sock = bind_listener(self.port, self.bind)
            try:
                self.web_folder = web_folder
                if self.create_folder:
                    os.makedirs(web_folder, exist_ok=True)
                if self.mode == ALS_MODE and self.publishes_viewer:
                    publish_viewer(self.assets_dir, web_folder)
                thread = self._prepare(history_folder)
                thread.start(sock)
            except BaseException:
                sock.close()
                raise
            self._thread = thread
            address = displayed_address_for(self.address_preference, self.bind)
            self.displayed_address = address
            self.access_limited = ipaddress.IPv4Address(address).is_loopback
            self.url = "http://%s:%d/" % (address, self.port)
            if self.access_limited:
                log.warning("image server access is limited to this machine: the displayed address %s "
                            "is a loopback address. Connect to a network (or start a hotspot), "
                            "then restart", address)
            return self.url

    def _check(self):
        """Every setting checked before anything is bound or written."""
        if self.mode not in (ALS_MODE, WATCH_MODE):
            raise ValueError("mode must be %r or %r, got %r" % (ALS_MODE, WATCH_MODE, self.mode))
        if self.wifi is not None and not isinstance(self.wifi, Wifi):
            raise ValueError("wifi must be an alsserve.Wifi, got %r" % (self.wifi,))
        check_port(self.port)
        check_bind_address(self.bind)
        parse_address_preference(self.address_preference)
        if self.create_folder and self.mode != ALS_MODE:
            raise ValueError("only ALS mode creates its web folder")
        web_folder = check_web_folder(self.web_folder, writable=self.mode == ALS_MODE,
                                      may_create=self.create_folder)
        if not os.path.isdir(self.assets_dir):
            raise ValueError("assets folder %s does not exist" % self.assets_dir)
        history_folder = None
        if self.settings.history_entries and self.settings.history_bytes:
            history_folder = choose_history_folder(web_folder, self.mode, self.history_folder)
        return web_folder, history_folder

    def _prepare(self, history_folder):
        """The running parts, the history opened and the live image in memory."""
        history = None
        if history_folder is not None:
            history = History(history_folder, self.settings)
            history.open()
        waiting = waiting_image_path(self.assets_dir)
        if self.mode == WATCH_MODE:
            live = self.live_image if self.live_image and is_inside(self.live_image, self.web_folder) else waiting
            routes = Routes(history, bundle_files(self.assets_dir), live, wifi=self.wifi)
        else:
            routes = Routes(history, no_store=self.no_store, wifi=self.wifi)
        routes.set_title(self.title)
        site = Site(self.web_folder, self.settings, routes)
        announcer = Announcer(site, routes, self.web_folder, read_file(waiting) if waiting else None, self.title)
        announcer.resume(routes.live_path or os.path.join(self.web_folder, IMAGE_NAME))
        return SiteThread(site, announcer)

    # -- while running -----------------------------------------------------

    def notify_browsers_about_new_image(self):
        """Tell every browser to reload the image (after writing web_image.jpg
        yourself). Returns at once: the file is read and checked whole off
        the event loop, then announced."""
        self.announce_image()

    def announce_image(self, path=None):
        """A new image is at path (default: the live image, web_image.jpg in
        ALS mode): it becomes the live image and a history entry, then the
        browsers are told. Returns at once. Watch mode passes the newest
        image of the folder."""
        thread = self._thread
        if thread is None:
            return
        if path is not None:
            if not is_inside(path, self.web_folder):
                raise ValueError("%s is not in the web folder %s" % (path, self.web_folder))
            path = os.path.abspath(path)
        thread.call(thread.announcer.new_image, path)

    def set_title(self, title):
        """The night's title (a new target): shown by every viewer and kept
        with the history entries from now on; at most 120 characters,
        control characters removed. Returns the title as shown."""
        self.title = clean_title(title)
        thread = self._thread
        if thread is not None:
            thread.call(thread.announcer.set_title, self.title)
        return self.title

    def send_message_text(self, text):
        """Send a text message to every browser; returns at once."""
        thread = self._thread
        if thread is not None:
            thread.call(thread.site.hub.broadcast, text)

    def publish_image(self, data_or_path):
        """Announce a new web_image.jpg (bytes or a JPEG file) and replace
        the file atomically: browsers get it from memory, not from the disk."""
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            data = bytes(data_or_path)
        else:
            data = read_file(os.fspath(data_or_path))
        self._publish_bytes(check_jpeg(data))

    def _publish_bytes(self, data, keep=True):
        """Announce the bytes, then write the file: browsers need not wait for
        the disk (a rename over a file can take 10 ms and more; on an SD card, far more)."""
        path = os.path.join(self._writable_folder(), IMAGE_NAME)
        thread, snapshot = self._thread, None
        if thread is not None:
            announcer = thread.announcer
            now = time.time()
            snapshot = FileSnapshot(data, now, (int(now * 1e6), len(data)))
            # The rest of its disk work here too (small): no executor hop per image.
            prepared = prepare_image(path, snapshot, announcer.web_folder, announcer.history_folder)
            thread.call(announcer.new_image, path, prepared, keep, True)
        written = None
        try:
            written = atomic_write(path, data)
        finally:
            if snapshot is not None:
                thread.call(thread.announcer.file_written, path, snapshot, written)

    def update_metrics(self, stack_size, total_exposure_seconds):
        """Atomically rewrite data.json. Browsers re-read it on the next notify."""
        write_metrics(self._writable_folder(), stack_size, total_exposure_seconds)

    def reset_image(self):
        """New session: the waiting image and zero metrics come back, a new
        history session starts, then browsers are told."""
        self.update_metrics(0, 0)
        thread = self._thread
        if thread is not None:
            thread.call(thread.announcer.new_session)
        waiting = waiting_image_path(self.assets_dir)
        if waiting is not None:
            self._publish_bytes(read_file(waiting), keep=False)

    def _writable_folder(self):
        if self.mode == WATCH_MODE:
            raise ValueError("this server only watches %s: it writes nothing into it" % self.web_folder)
        return check_web_folder(self.web_folder)

    # -- STOP --------------------------------------------------------------

    def stop(self, grace=STOP_GRACE):
        """Say disconnect, wait up to grace for browsers to close, shut down.
        Idempotent; files stay on disk; START again works at once."""
        with self._lock:
            thread = self._thread
            if thread is None:
                return
            if threading.current_thread() is thread.thread:
                raise RuntimeError("stop() called from the server thread")
            try:
                thread.stop(grace)
            finally:
                self._thread = None
                self.url = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


class AlsFolderServer(ImageServer):
    """ALS mode as ALS runs it: ALS writes its own files (nothing is
    published), and web_image.jpg and data.json go out as ALS 1.0 sends them."""

    publishes_viewer = False
    no_store = (IMAGE_NAME, METRICS_NAME)


class Signal:
    """A signal where Qt is not loaded: ``connect``, ``disconnect`` and
    ``emit`` as a Qt signal offers them; slots run in the emitting thread,
    in the order they were connected."""

    def __init__(self):
        self._slots = []
        self._lock = threading.Lock()

    def connect(self, slot):
        with self._lock:
            self._slots.append(slot)

    def disconnect(self, slot=None):
        """Every slot, or one; TypeError when that one is not connected (as Qt)."""
        with self._lock:
            if slot is None:
                self._slots = []
            elif slot in self._slots:
                self._slots.remove(slot)
            else:
                raise TypeError("%r is not connected" % (slot,))

    def emit(self, *args):
        with self._lock:
            slots = list(self._slots)
        for slot in slots:
            try:
                slot(*args)
            except Exception:           # a slot's error is its own: the others still run
                log.exception("error in a slot of %r", slot)


_QT_SIGNALS_CLASS = []                  # the QObject class of the facade's Qt signals, made once


def server_signals():
    """The three signals of ALS's facade: real Qt signals of a QObject made
    now (ALS's slots then run queued on the thread that connected them)
    when the process has loaded PyQt5, plain Signal objects otherwise.
    alsserve never imports Qt itself. Returns (owner, succeeded, failed, stopped)."""
    qt_core = sys.modules.get("PyQt5.QtCore")
    if qt_core is None:
        return None, Signal(), Signal(), Signal()
    if not _QT_SIGNALS_CLASS:
        _QT_SIGNALS_CLASS.append(type("ServerSignals", (qt_core.QObject,), {
            "startup_succeeded_signal": qt_core.pyqtSignal(),
            "startup_failed_signal": qt_core.pyqtSignal(object),
            "stopped_signal": qt_core.pyqtSignal()}))
    owner = _QT_SIGNALS_CLASS[0]()
    return owner, owner.startup_succeeded_signal, owner.startup_failed_signal, owner.stopped_signal


class Server:
    """ALS's network module, for ALS 0.7 and ALS 1.0: serves the web folder
    ALS fills itself (nothing is published into it).

    ``start()`` blocks for the server's life (the target of ALS's WebServer
    thread). ALS 0.7 calls it without arguments: ALS's port preference,
    every interface. ALS 1.0 calls ``start("0.0.0.0", port, future)``: the
    future gets None once the socket listens, or the OSError of a failed
    bind. ``startup_succeeded_signal`` / ``startup_failed_signal(error)``
    say the same, and ``stopped_signal`` that the thread's work is over
    (after a stop or a failed start). ``stop()`` returns at once: browsers
    get "disconnect" and the server ends as soon as they close (STOP_GRACE
    at most). The web folder is ``static_path``, or ALS's preference read
    at each start; an explicit ``port`` wins over ALS's preference."""

    def __init__(self, static_path=None, port=None):
        self.static_path = static_path
        self.port = port
        self._signal_owner, self.startup_succeeded_signal, self.startup_failed_signal, \
            self.stopped_signal = server_signals()
        self._server = None             # the ImageServer of the current start
        self._stop_requested = threading.Event()
        self._last_start_failed = False
        self._lock = threading.Lock()   # stop() (ALS's thread) against start()'s ending

    def start(self, host=None, port=None, startup_future=None):
        with self._lock:
            self._last_start_failed = False
        try:
            try:
                server = self._server = self._image_server(host, port)
                server.start()
            except (PortInUseError, ValueError, OSError) as error:
                log.error("image server not started on port %s: %s", port or self.port, error)
                # ALS 1.0 maps an OSError to its own PortInUseError: it gets the bind's.
                reported = error.__cause__ if isinstance(error.__cause__, OSError) else error
                with self._lock:
                    self._stop_requested.clear()    # a STOP meant for this start ends with it
                    self._last_start_failed = True  # a stop() that follows has nothing to stop
                if startup_future is None or not startup_future.done():
                    if startup_future is not None:
                        startup_future.set_exception(reported)
                    self.startup_failed_signal.emit(reported)
                return
            if startup_future is None or not startup_future.done():
                if startup_future is not None:
                    startup_future.set_result(None)
                self.startup_succeeded_signal.emit()
            try:
                self._stop_requested.wait()     # set even before this thread ran: still stops
            finally:
                server.stop()
                self._stop_requested.clear()
        finally:
            self.stopped_signal.emit()

    def _image_server(self, host, port):
        folder = self.static_path if self.static_path is not None else \
            als_setting("get_web_folder_path", None)
        if port is None:
            port = self.port if self.port is not None else als_setting("get_www_server_port_number",
                                                                       DEFAULT_PORT)
        return AlsFolderServer(folder, port=port, bind=host or WEB_SERVER_BIND_HOST)

    def stop(self):
        """Returns at once; the thread in start() ends once browsers closed."""
        with self._lock:
            if self._last_start_failed:
                self._last_start_failed = False
            else:
                self._stop_requested.set()

    def send_message(self, message):
        """Send a dict as JSON text to every browser; returns at once. ALS's
        new_image is an announcement: the image it just wrote is read once,
        kept in the history, then announced."""
        server = self._server
        if server is None:
            return
        if message == {"type": "new_image"}:
            server.notify_browsers_about_new_image()
        else:
            server.send_message_text(json.dumps(message))
# =============================================================================
# 7. Command line: python -m alsserve
# =============================================================================

WATCH_INTERVAL = 0.25           # seconds between polls of the watched files
WATCH_UNSTABLE_ACCEPT = 2.0     # a changed image without its end marker is accepted once this still
DEMO_INTERVAL = 3.0             # seconds between demo frames
DEMO_EXPOSURE = 30              # seconds of exposure per demo frame
BROWSER_SUMMARY_INTERVAL = 2.0  # at most one "browsers:" line this often
DEFAULT_WEB_FOLDER = "alsserve-web"     # in the current folder: ALS mode, created if missing


def is_complete_image_file(path, size, content_type):
    """The file's first and last bytes are its image markers (is_complete_image)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            f.seek(max(0, size - 1024))
            return is_complete_image(head, f.read(1024), content_type)
    except OSError:
        return False


class FolderWatcher:
    """Follows the newest complete image matching a pattern in a folder
    (JPEG or PNG), and its data.json. Each poll costs one listing of the
    folder and a stat per match. An image counts once it is complete: the
    same stat across two polls and its end marker in place (or unchanged for
    WATCH_UNSTABLE_ACCEPT). Only an image at least as new as the last one
    counts; older matches are never touched."""

    def __init__(self, folder, pattern=IMAGE_NAME):
        self.folder = folder
        self.pattern = pattern
        self.image = None               # (path, version) of the image announced last
        self.candidate = None           # ((path, version), first seen at)
        self.metrics_candidate = None
        self.acknowledge()

    def acknowledge(self):
        """Take what is in the folder now as known (at start, and after we
        published into it ourselves); return the newest complete image."""
        self.metrics = self._metrics_key()
        self.candidate = self.metrics_candidate = None
        return self.newest_complete()

    def _matches(self):
        """(mtime_ns, name, path, version) of each image matching the pattern."""
        found = []
        try:
            entries = list(os.scandir(self.folder))
        except OSError:
            return found
        for entry in entries:
            name = entry.name
            if name.startswith(".") or not fnmatch.fnmatch(name, self.pattern) \
                    or content_type_for(name) not in ("image/jpeg", "image/png"):
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found.append((st.st_mtime_ns, name, entry.path, stat_version(st)))
        return found

    def _metrics_key(self):
        try:
            return stat_version(os.stat(os.path.join(self.folder, METRICS_NAME)))
        except OSError:
            return None

    def newest_complete(self):
        """The newest matching image that is complete now (no two polls to
        wait for: what a start shows first), or None."""
        for _mtime, name, path, version in sorted(self._matches(), reverse=True):
            if is_complete_image_file(path, version[1], content_type_for(name)):
                self.image = (path, version)
                return path
        return None

    def poll(self, now=None):
        """(path of a new complete image or None, whether data.json changed)."""
        now = time.monotonic() if now is None else now
        matches = self._matches()
        new_image = None
        if matches:
            mtime, name, path, version = max(matches)
            current = (path, version)
            if current == self.image or (self.image is not None and mtime < self.image[1][2]):
                self.candidate = None
            elif self.candidate is None or self.candidate[0] != current:
                self.candidate = (current, now)
            elif is_complete_image_file(path, version[1], content_type_for(name)) \
                    or now - self.candidate[1] >= WATCH_UNSTABLE_ACCEPT:
                self.image, self.candidate, new_image = current, None, path
        metrics = self._metrics_key()
        metrics_changed = False
        if metrics == self.metrics:
            self.metrics_candidate = None
        elif self.metrics_candidate != metrics:
            self.metrics_candidate = metrics
        else:
            self.metrics, self.metrics_candidate, metrics_changed = metrics, None, True
        return new_image, metrics_changed


class DemoSession:
    """A live session without ALS: our demo frames, one every few seconds."""

    def __init__(self, server, assets_dir):
        folder = os.path.join(assets_dir, "demo")
        try:
            names = sorted(n for n in os.listdir(folder) if n.lower().endswith(".jpg"))
        except OSError:
            names = []
        if not names:
            raise ValueError("no demo frames in %s" % folder)
        self.frames = [os.path.join(folder, n) for n in names]
        self.server = server
        self.index = 0

    def next_frame(self):
        stack_size = self.index % len(self.frames) + 1
        self.server.update_metrics(stack_size, stack_size * DEMO_EXPOSURE)
        self.server.publish_image(self.frames[self.index % len(self.frames)])
        self.index += 1
        return stack_size


def _add_switch(parser, name, default, help_text):
    """--name / --no-name (argparse.BooleanOptionalAction is Python 3.9+)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--" + name, dest=name, action="store_true", default=default, help=help_text)
    group.add_argument("--no-" + name, dest=name, action="store_false", help=argparse.SUPPRESS)


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):
        """A bad option: one line on stderr, exit status 2 (not the usage block)."""
        self.exit(2, "alsserve: error: %s (see --help)\n" % message)


def build_argument_parser():
    parser = _ArgumentParser(
        prog="python -m alsserve",
        description="Publish a live astronomy image on the local network: phones and tablets "
                    "open the printed address and see the image refresh by itself each time "
                    "a new one is saved. Two ways to run. Watch mode (-d DIR): another program "
                    "(ALS, an all-sky camera, ...) saves images into DIR; alsserve follows the "
                    "newest one and writes nothing at all into DIR: the viewer is served from "
                    "its own bundle, the image and data.json from DIR. ALS mode (no -d, or "
                    "--demo): alsserve publishes the viewer, the waiting image and data.json "
                    "into ./%s (created if missing), as ALS does." % DEFAULT_WEB_FOLDER,
        epilog="Examples: 'python -m alsserve --demo' to try it; 'python -m alsserve -d "
               "~/als/web' next to ALS; 'python -m alsserve -d ~/allsky/tmp --image image.jpg "
               "8080' next to an all-sky camera; 'python -m alsserve -d ~/stacks --image "
               "\"stack_image-*.jpg\"' to follow numbered files.")
    parser.add_argument("port_argument", nargs="?", type=int, metavar="port",
                        help="TCP port, as for python -m http.server (same as -p)")
    parser.add_argument("-d", "--web-folder", "--directory", dest="web_folder", metavar="DIR",
                        default=None,
                        help="watch mode: the folder another program saves its images into; "
                             "nothing is written into it (default: ALS mode in ./%s)"
                             % DEFAULT_WEB_FOLDER)
    parser.add_argument("--image", metavar="PATTERN", default=IMAGE_NAME,
                        help="watch mode: follow the newest complete JPEG or PNG whose name "
                             "matches PATTERN, e.g. 'Stack_*.jpg' or '*.png' (quote it); it is "
                             "what browsers get as the live image (default: %s)" % IMAGE_NAME)
    parser.add_argument("-p", "--port", type=int, default=None, metavar="N",
                        help="TCP port, %d-%d (default: %d)" % (PORT_RANGE + (DEFAULT_PORT,)))
    parser.add_argument("-b", "--bind", default=WEB_SERVER_BIND_HOST, metavar="ADDRESS",
                        help="IPv4 address to listen on: 0.0.0.0 for every network of this "
                             "machine, or one address, e.g. the hotspot's or 127.0.0.1 "
                             "(default: %s)" % WEB_SERVER_BIND_HOST)
    parser.add_argument("--address", default="auto", metavar="auto|ip:A",
                        help="address shown to users: 'auto' picks the best network "
                             "address, 'ip:192.168.1.10' forces one (default: auto)")
    parser.add_argument("--assets", metavar="DIR", default=None,
                        help="viewer bundle (default: the assets folder next to alsserve.py)")
    parser.add_argument("--title", default="", metavar="TEXT",
                        help="the night's title, shown by every viewer, e.g. \"M42 - Orion Nebula\"")
    parser.add_argument("--wifi", metavar="SSID", default=None,
                        help="a Wi-Fi network for visitors: the viewer's share panel and the terminal show "
                             "its QR code (the password too, inside the code: use a guest network)")
    parser.add_argument("--wifi-password", metavar="PASSWORD", default=None,
                        help="its password (or the environment variable ALSSERVE_WIFI_PASSWORD, which "
                             "stays out of the shell's history)")
    parser.add_argument("--wifi-security", choices=WIFI_SECURITY, default=None,
                        help="WPA (with a password, the default), WEP or nopass (without)")
    parser.add_argument("--trust-proxy", metavar="ADDRESS", default=None,
                        help="a reverse proxy at ADDRESS (e.g. 127.0.0.1 for nginx on this "
                             "machine): log the client address it sends in X-Forwarded-For")
    history = parser.add_mutually_exclusive_group()
    history.add_argument("--history", type=int, default=Settings.history_entries, metavar="N",
                         help="keep the last N images for the viewer's timeline (default: %d; "
                              "watch mode keeps them in the user's cache folder)" % Settings.history_entries)
    history.add_argument("--no-history", dest="history", action="store_const", const=0,
                         help="keep no history")
    _add_switch(parser, "watch", True, "follow new images and data.json in the folder "
                                       "(default: on; --no-watch: off)")
    parser.add_argument("--demo", action="store_true",
                        help="ALS mode with a built-in star field that gets deeper every few seconds")
    _add_switch(parser, "qr", None, "draw a QR code of the address in the terminal "
                                    "(default: on when the output is a terminal; --no-qr: off)")
    parser.add_argument("--demo-interval", type=float, default=DEMO_INTERVAL, help=argparse.SUPPRESS)
    parser.add_argument("--list-addresses", action="store_true",
                        help="print this machine's IPv4 addresses, best first, and exit")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="also every request, debug messages and tracebacks")
    parser.add_argument("--version", action="version", version="alsserve " + __version__)
    return parser


def _configure_logging(quiet, verbose):
    """Default: new images, browsers, warnings. -q: warnings. -v: everything."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_CommandLineFormatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    access_log.setLevel(logging.INFO if verbose else logging.WARNING)
    log.propagate = False
    return handler


class _CommandLineFormatter(logging.Formatter):
    """HH:MM:SS and the message; the level only when it is not INFO."""

    def __init__(self):
        super().__init__("%(asctime)s %(message)s", "%H:%M:%S")

    def formatMessage(self, record):
        if record.levelno != logging.INFO:
            record.message = "%s: %s" % (record.levelname, record.message)
        return super().formatMessage(record)


def qr_to_terminal(text, quiet=2, colours=True):
    """The code in Unicode half blocks, two module rows per line.

    colours=True: each line sets explicit colours first (xterm 256-colour
    black 16 for dark modules, white 231 for light ones and the quiet zone:
    themes leave those alone), so the code reads the same on dark and light
    terminals, in a pipe or a log. colours=False (a console without escape
    sequences): inverted for a dark background, light modules and the quiet
    zone drawn as blocks, dark ones left blank."""
    m = qr_matrix(text)
    width = len(m) + 2 * quiet
    pad = [False] * quiet
    rows = [[False] * width] * quiet + [pad + row + pad for row in m] + [[False] * width] * quiet
    # The lower half of an odd last row: light in colour, blank on a dark terminal.
    rows.append([not colours] * width)
    if colours:                         # blocks draw dark modules on a light background
        chars = {(True, True): "\u2588", (True, False): "\u2580",
                 (False, True): "\u2584", (False, False): " "}
        start, end = "\x1b[38;5;16;48;5;231m", "\x1b[0m"
    else:                               # blocks draw light modules on the terminal's dark
        chars = {(False, False): "\u2588", (False, True): "\u2580",
                 (True, False): "\u2584", (True, True): " "}
        start, end = "", ""
    return "\n".join(start + "".join(chars[top[i], bottom[i]] for i in range(width)) + end
                     for top, bottom in zip(rows[0::2], rows[1::2]))


def terminal_has_colours(stream=None, os_name=os.name):
    """Whether escape sequences reach the screen as colours. POSIX
    terminals, pipes and logs: yes. A Windows console: once virtual
    terminal processing is switched on (Windows 10 and later)."""
    if os_name != "nt":
        return True
    stream = stream or sys.stdout
    if not stream.isatty():
        return True
    try:
        import ctypes
        kernel32 = ctypes.windll.kernel32
        handle = kernel32.GetStdHandle(-11)             # STD_OUTPUT_HANDLE
        mode = ctypes.c_uint32()
        if not kernel32.GetConsoleMode(handle, ctypes.byref(mode)):
            return False
        return bool(kernel32.SetConsoleMode(handle, mode.value | 0x0004))   # ENABLE_VIRTUAL_TERMINAL_PROCESSING
    except (AttributeError, OSError, ImportError):
        return False


def startup_block(server, qr, watching=None):
    """The lines printed at start: folder, addresses, QR code. (A warning
    such as limited access is logged once, on stderr.)"""
    port = server.port
    mode = "watch mode, nothing is written into it" if server.mode == WATCH_MODE else "ALS mode"
    lines = ["alsserve %s - live image server" % __version__,
             "  Web folder: %s (%s)" % (server.web_folder, mode)]
    if watching:
        lines.append("  Image:      newest %s" % watching)
    lines.append("  Open:       %s" % server.url)
    if server.bind == WEB_SERVER_BIND_HOST:
        for address in list_ipv4_addresses():
            if address != server.displayed_address:
                lines.append("  Also:       http://%s:%d/" % (address, port))
    if server.title:
        lines.append("  Title:      %s" % server.title)
    if server.wifi is not None:         # (its password only inside the QR code)
        lines.append("  Wi-Fi:      %s (%s)" % (server.wifi.ssid, "open" if server.wifi.security == "nopass"
                                                else "password in the QR code"))
    if qr:
        colours = terminal_has_colours()
        codes = ([("1. Join the Wi-Fi", server.wifi.payload())] if server.wifi is not None else []) + \
            [("2. Open the page" if server.wifi is not None else "Open the page", server.url)]
        for caption, text in codes:
            lines.extend(["", "  " + caption])
            lines.extend("  " + row for row in qr_to_terminal(text, colours=colours).splitlines())
    lines.append("")
    return "\n".join(lines)


def print_addresses():
    rows = describe_ipv4_addresses()
    width = max([len(address) for address, _, _ in rows] + [7])
    names = max([len(name or "-") for _, name, _ in rows] + [9])
    print("%-*s  %-*s  %s" % (width, "ADDRESS", names, "INTERFACE", "WHAT IT IS"))
    for address, name, kind in rows:
        print("%-*s  %-*s  %s" % (width, address, names, name or "-", kind))


class BrowserSummary:
    """One line when browsers came or went, at most every few seconds."""

    def __init__(self, server):
        self.server = server
        self.shown = (0, 0, 0)
        self.at = 0.0

    def poll(self, now):
        counts = self.server.browser_counts
        if counts == self.shown or now - self.at < BROWSER_SUMMARY_INTERVAL:
            return
        connected, joined, left = counts
        log.info("browsers: %d connected (%d joined, %d left)", connected,
                 joined - self.shown[1], left - self.shown[2])
        self.shown, self.at = counts, now


def main(argv=None):
    """`python -m alsserve`: serve a folder until Ctrl-C. Returns the exit status."""
    args = build_argument_parser().parse_args(argv)
    handler = _configure_logging(args.quiet, args.verbose)
    try:
        return _run(args)
    except (PortInUseError, ValueError, OSError) as error:
        if args.verbose:
            log.exception("cannot start")
        print("alsserve: error: %s" % error, file=sys.stderr)
        return 2
    finally:
        log.removeHandler(handler)


def _server_from_arguments(args):
    """The ImageServer the options describe, or ValueError."""
    if args.port_argument is not None and args.port is not None and args.port_argument != args.port:
        raise ValueError("two different ports: %d and -p %d" % (args.port_argument, args.port))
    port = args.port if args.port is not None else args.port_argument
    port = DEFAULT_PORT if port is None else port
    default_folder = os.path.join(os.getcwd(), DEFAULT_WEB_FOLDER)
    watch_mode = args.web_folder is not None and not args.demo \
        and os.path.abspath(args.web_folder) != default_folder
    if args.image != IMAGE_NAME and not watch_mode:
        raise ValueError("--image follows the images of a watched folder: give it with -d DIR")
    settings = Settings(history_entries=check_count("--history", args.history),
                        trusted_proxy=args.trust_proxy and check_ip_address("--trust-proxy", args.trust_proxy))
    wifi = None
    if args.wifi is not None:
        wifi = Wifi(args.wifi, args.wifi_password or os.environ.get("ALSSERVE_WIFI_PASSWORD") or None,
                    args.wifi_security)
    elif args.wifi_password or args.wifi_security:
        raise ValueError("--wifi-password and --wifi-security go with --wifi SSID")
    return ImageServer(args.web_folder or default_folder, port=port, displayed_address=args.address,
                       assets_dir=args.assets, mode=WATCH_MODE if watch_mode else ALS_MODE, bind=args.bind,
                       settings=settings, create_folder=args.web_folder is None, title=args.title, wifi=wifi)


def _run(args):
    if args.list_addresses:
        print_addresses()
        return 0
    server = _server_from_arguments(args)
    demo = DemoSession(server, server.assets_dir) if args.demo else None
    stop_requests = []
    previous_handlers = _install_signal_handlers(stop_requests)
    try:
        # What the folder holds now is the first live image (watch mode).
        watching = server.mode == WATCH_MODE
        watcher = FolderWatcher(server.web_folder, args.image) if args.watch or watching else None
        first = watcher.image[0] if watcher is not None and watcher.image else None
        server.live_image = first
        server.start()
        qr = sys.stdout.isatty() if args.qr is None else args.qr
        print(startup_block(server, qr, args.image if watching else None), flush=True)
        print("Serving. Press Ctrl-C to stop.", flush=True)
        if watching:
            if first is not None:
                server.announce_image(first)        # a history entry, unless it is the last one
            if not args.watch:
                watcher = None
        summary = BrowserSummary(server)
        next_demo = time.monotonic()
        while not stop_requests:
            now = time.monotonic()
            if demo is not None and now >= next_demo:
                stack_size = demo.next_frame()
                log.debug("demo: published frame %d", stack_size)
                if watcher is not None:
                    watcher.acknowledge()
                next_demo = now + args.demo_interval
            if watcher is not None:
                image, metrics_changed = watcher.poll(now)
                if image is not None:
                    server.announce_image(image)
                elif metrics_changed:
                    server.notify_browsers_about_new_image()
            summary.poll(now)
            time.sleep(WATCH_INTERVAL)
    finally:
        server.stop()
        _restore_signal_handlers(previous_handlers)
    print("alsserve stopped.", flush=True)
    return 0


def _install_signal_handlers(stop_requests):
    """Ctrl-C and SIGTERM stop gracefully, even when the shell ignored SIGINT.
    A handler only appends the signal to stop_requests: it runs inside
    whatever the main thread was doing, and a lock taken there (an Event's
    set()) can deadlock with one that thread holds."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        number = getattr(signal, name, None)
        if number is not None:
            try:
                previous[number] = signal.signal(number, lambda number, _frame: stop_requests.append(number))
            except (OSError, ValueError):
                pass
    return previous


def _restore_signal_handlers(previous):
    for number, handler in previous.items():
        signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
