"""alsserve: the live image server of Astro Live Stacker, in one module.

Amateur astronomers stack telescope frames live; alsserve publishes the latest
stacked JPEG (``web_image.jpg``) and the session metrics (``data.json``) from a
web folder, and tells every connected browser over a WebSocket (``/ws``) the
moment a new image is ready, so phones around the telescope see the image grow
without polling.

Each new image is also kept as a frame of the night's history (on disk,
within a budget), listed at ``history.json`` and served, never changing, at
``history/<id>.jpg``: the viewer's timeline, and what lets a cache in front
(nginx) serve hundreds of viewers from one request.

Standard library only, Python >= 3.8. Use it three ways::

    python -m alsserve --demo                      # try it
    python -m alsserve -d /path/to/folder          # watch mode: next to any stacking program

    import alsserve                                # ALS mode: from ALS or any program
    server = alsserve.ImageServer("/path/to/web/folder", port=8000)
    url = server.start()
    server.publish_image(jpeg_bytes)               # served from memory, announced, written
    server.update_metrics(stack_size=12, total_exposure_seconds=360)
    server.stop()

The module reads top to bottom, one section per layer, each using only what
is above it:

1. constants, errors, small helpers
2. HTTP: request parsing (pure), path resolution, responses
3. WebSocket: handshake and framing (sans-I/O)
4. connections on asyncio streams, in three parts: the static files (lookup,
   cache, snapshots, replies), the WebSocket hub (clients, broadcast,
   keepalive, close) and the site (the reply writer: Date, bodies in pieces,
   sendfile, send timeout; the Site: accepts connections, reads requests,
   answers them, start and STOP)
5. web folder publishing (atomic writes, assets, data.json, the history)
6. controller: displayed address and port bind, the routes beyond the web
   folder, the announcer of new images, the loop's thread, ImageServer
   (START, STOP, publish) and ALS's Server facade
7. command line (``main()``): watch mode's folder watcher, the demo, the
   terminal QR code, the night's output
"""

import argparse
import asyncio
import base64
import codecs
import collections
import concurrent.futures
import email.utils
import enum
import fnmatch
import errno
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
from datetime import timedelta
from urllib.parse import unquote_to_bytes

__version__ = "1.0.0"

__all__ = [
    "PortInUseError", "WebServerOnLoopback", "HTTPError", "WebSocketProtocolError",
    "ImageServer", "list_ipv4_addresses", "describe_ipv4_addresses", "resolve_displayed_address",
    "main",
    # ALS's network module (ALS 0.7 and 1.0): ``from alsserve import *`` is all of it.
    "Server", "get_host_ip", "is_port_in_use", "WEB_SERVER_BIND_HOST", "ADVERTISED_ADDRESS_AUTO",
    "ADVERTISED_ADDRESS_IP_PREFIX", "NetworkAddress", "build_network_address_candidates",
    "get_network_address_candidates", "select_advertised_address", "build_advertised_address_preference",
    "advertised_address_preference", "build_no_cache_file_response",
]

log = logging.getLogger("alsserve")
access_log = logging.getLogger("alsserve.access")   # one line per request


# =============================================================================
# 1. Constants, errors, small helpers
# =============================================================================

DEFAULT_PORT = 8000
PORT_RANGE = (1024, 65535)
WEB_SERVER_BIND_HOST = "0.0.0.0"     # every local IPv4 interface, as the ALS documentation says
# The Displayed Address preference (ALS): "auto", or "ip:" and an address.
ADVERTISED_ADDRESS_AUTO = "auto"
ADVERTISED_ADDRESS_IP_PREFIX = "ip:"

IMAGE_NAME = "web_image.jpg"
METRICS_NAME = "data.json"
WAITING_IMAGE_NAME = "waiting.jpg"
INDEX_NAME = "index.html"
DEFAULT_ASSETS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets")
# Folders of the assets bundle that START does not publish (our demo frames).
UNPUBLISHED_ASSET_FOLDERS = ("demo",)

# History of the night. Frames live in a hidden folder of the web folder
# (never served by that name), listed at history.json, served at
# history/<id>.jpg. Budget for a Raspberry Pi's SD card: 300 frames (a night
# at one frame a minute and more), at most 1 GiB (300 frames of a 3 MB image,
# about 90 of a 24 MP DSLR stack); no frame is stored while the disk has less
# than 1 GiB free, which stays for the astronomer's own stacks.
HISTORY_FOLDER = ".alsserve-history"
HISTORY_INDEX = "index.json"
HISTORY_LISTING = "history.json"
HISTORY_URL_FOLDER = "history"
HISTORY_FRAMES = 300
HISTORY_BYTES = 1 << 30
HISTORY_MIN_FREE = 1 << 30

# HTTP limits: never read an unbounded amount from a client.
MAX_REQUEST_LINE = 8 * 1024
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADER_FIELDS = 100
HEADER_TIMEOUT = 10.0        # a new connection must send a complete head within this
KEEPALIVE_TIMEOUT = 15.0     # an idle keep-alive connection is closed after this
SEND_TIMEOUT = 30.0          # a download that takes no data this long is dropped
MAX_CONNECTIONS = 4000       # HTTP + WebSocket connections together; beyond: 503

# File cache: every served file up to CACHE_FILE_LIMIT is kept in memory, shared
# by all concurrent downloads and re-read only when its stat changes.
CACHE_FILE_LIMIT = 32 * 1024 * 1024
CACHE_TOTAL_LIMIT = 96 * 1024 * 1024
STREAM_CHUNK = 256 * 1024
SENDFILE_CHUNK = 1024 * 1024       # small enough for slow Wi-Fi within SEND_TIMEOUT
# A JPEG or PNG being rewritten in place is re-read until two stats agree and
# it ends with its end marker; meanwhile the previous complete copy is served.
STABLE_READ_ATTEMPTS = 50
STABLE_READ_PAUSE = 0.02
# A served file that disappears (ALS on Windows removes web_image.jpg before
# renaming the new one onto it) is served from its last complete copy this long.
VANISHED_GRACE = 5.0

# WebSocket defaults.
WS_PATH = "/ws"
WS_MAX_CLIENTS = 2000            # leaves headroom above 1000-client star parties
WS_MAX_MESSAGE = 64 * 1024       # clients send tiny messages or none
WS_PING_INTERVAL = 20.0          # a client silent for 2 intervals is dropped
WS_SEND_TIMEOUT = 10.0           # a client that cannot drain this long is dropped
# Distinct messages (and their bytes) that may wait for one client; beyond,
# the client is dropped: it is far behind and would grow our memory.
WS_MAX_PENDING = 1024
WS_MAX_PENDING_BYTES = 4 * 1024 * 1024
WS_CLOSE_TIMEOUT = 2.0           # wait this long for the peer's Close

STOP_GRACE = 2.0
IO_THREADS = 4                   # threads for the disk work of one running server
NOTIFY_READ_DELAY = 0.0005       # a notify's file read starts this much later (see Announcer)


class PortInUseError(RuntimeError):
    """The configured port cannot be bound (ALS compatible name)."""


class WebServerOnLoopback(Exception):
    """The displayed address is a loopback address (ALS compatible name)."""


class HTTPError(Exception):
    """An HTTP request that gets an error response instead of a file.

    ``close`` says whether the connection must be closed after the reply
    (the request stream can no longer be trusted).
    """

    def __init__(self, status, detail="", close=False, headers=()):
        super().__init__(status, detail)
        self.status = status
        self.detail = detail
        self.close = close
        self.headers = list(headers)


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def is_inside(path, folder):
    """True when path is in folder (or below), symlinks resolved."""
    folder = os.path.realpath(folder)
    return os.path.realpath(path).startswith(folder + os.sep)


def http_date(timestamp=None):
    """An IMF-fixdate (RFC 9110 section 5.6.7) for the given time (now by default)."""
    return email.utils.formatdate(timestamp, usegmt=True)


def format_exposure(total_exposure_seconds):
    """EXPO as ALS writes it: H:MM:SS of the rounded total exposure."""
    return str(timedelta(seconds=int(round(total_exposure_seconds))))


def metrics_json(stack_size, total_exposure_seconds):
    """The exact data.json text ALS writes: {"STACK_SIZE": n, "EXPO": "H:MM:SS"}."""
    return json.dumps({"STACK_SIZE": stack_size, "EXPO": format_exposure(total_exposure_seconds)})


def is_complete_jpeg(data):
    """True when data starts with SOI and ends with EOI (not a half-written JPEG)."""
    return data[:2] == b"\xff\xd8" and data.rstrip(b"\0")[-2:] == b"\xff\xd9"


# PNG (ISO/IEC 15948): the signature, and the IEND chunk that ends every file.
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_END = b"\0\0\0\0IEND\xaeB`\x82"


def is_complete_png(data):
    """True when data has the PNG signature and ends with the IEND chunk."""
    return data[:8] == PNG_SIGNATURE and data[-12:] == PNG_END


def is_complete_image(data, content_type):
    """False for a JPEG or PNG that is not whole yet; True for other types."""
    if content_type == "image/jpeg":
        return is_complete_jpeg(data)
    if content_type == "image/png":
        return is_complete_png(data)
    return True


# =============================================================================
# 2. HTTP: request parsing (pure: bytes in, request or HTTPError out), responses
# =============================================================================

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
    """One parsed request head. Header names are lower-cased; values kept as sent."""

    __slots__ = ("method", "target", "version", "headers")

    def __init__(self, method, target, version, headers):
        self.method = method
        self.target = target
        self.version = version
        self.headers = headers          # list of (lower-case name, value)

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
    def path(self):
        return self.target.split("?", 1)[0].split("#", 1)[0]

    @property
    def keep_alive(self):
        tokens = self.header_tokens("connection")
        if self.version == "HTTP/1.0":
            return "keep-alive" in tokens and "close" not in tokens
        return "close" not in tokens

    def __repr__(self):
        return "Request(%r, %r, %r)" % (self.method, self.target, self.version)


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

    request_line = head[:line_end]
    parts = request_line.split(b" ")
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

    request = Request(method.decode("ascii"), target.decode("ascii"),
                      version.decode("ascii"), headers)
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
    """The path segments of a request target, decoded once, or HTTPError.

    Pure: no file system. Refuses every shape that could leave the web folder
    or name something that is not meant to be served: dot segments, encoded
    separators, backslashes, NUL and control characters, drive letters and
    stream names, dotfiles, empty segments, Windows device names.
    """
    path = target.split("?", 1)[0].split("#", 1)[0]
    if path.startswith(("http://", "https://")):      # absolute-form (RFC 9112 3.2.2)
        rest = path.split("://", 1)[1]
        path = rest[rest.find("/"):] if "/" in rest else "/"
    if not path.startswith("/"):
        raise HTTPError(400, "request target must start with /")
    lowered = path.lower()
    if "%2f" in lowered or "%5c" in lowered or "\\" in path:
        raise HTTPError(404, "encoded separator or backslash")
    try:
        decoded = unquote_to_bytes(path).decode("utf-8")
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
                # RFC 9110 7.8: Upgrade is hop-by-hop; a proxy must not pass it on.
                options.append("upgrade")
            if not keep_alive:
                options.append("close")
            elif http10:
                # An HTTP/1.0 client keeps the connection only when told so.
                options.append("keep-alive")
            if options:
                lines.append("Connection: " + ", ".join(options))
        lines.append("\r\n")
        return "\r\n".join(lines).encode("latin-1")


def error_response(error):
    """Head and body bytes for an HTTPError: a short text body saying why."""
    reason = REASONS.get(error.status, "Error")
    body = ("%d %s\n" % (error.status, reason)).encode("ascii")
    head = ResponseHead(error.status, [
        ("Content-Type", "text/plain; charset=utf-8"),
        ("Content-Length", str(len(body))),
        ("Cache-Control", "no-cache"),
        ("X-Content-Type-Options", "nosniff"),
    ] + error.headers)
    if error.status == 405:
        head.headers.append(("Allow", ", ".join(ALLOWED_METHODS)))
    return head, body


# =============================================================================
# 3. WebSocket: handshake and framing as a sans-I/O core (RFC 6455)
# =============================================================================

# RFC 6455 section 1.3: the GUID appended to Sec-WebSocket-Key.
WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
WS_VERSION = "13"


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


def build_frame(opcode, payload=b"", fin=True, mask=None, rsv=0):
    """One frame as bytes. Servers send unmasked frames; ``mask`` (4 bytes)
    builds client frames for tests and peers."""
    first = (0x80 if fin else 0) | (rsv << 4) | int(opcode)
    mask_bit = 0x80 if mask is not None else 0
    length = len(payload)
    if length < 126:
        head = bytes((first, mask_bit | length))
    elif length < 65536:
        head = bytes((first, mask_bit | 126)) + length.to_bytes(2, "big")
    else:
        head = bytes((first, mask_bit | 127)) + length.to_bytes(8, "big")
    if mask is None:
        return head + payload
    return head + mask + mask_bytes(mask, payload)


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


class Message:
    """A complete data message (TEXT as str, BINARY as bytes)."""
    __slots__ = ("opcode", "data")

    def __init__(self, opcode, data):
        self.opcode, self.data = opcode, data


class Ping:
    __slots__ = ("payload",)

    def __init__(self, payload):
        self.payload = payload


class Pong:
    __slots__ = ("payload",)

    def __init__(self, payload):
        self.payload = payload


class Close:
    """A Close frame received; code None when the peer sent no status."""
    __slots__ = ("code", "reason")

    def __init__(self, code, reason):
        self.code, self.reason = code, reason


class FrameParser:
    """Bytes from a client in, events out: Message, Ping, Pong, Close.

    Enforces RFC 6455 for a server: every frame masked, RSV bits clear (no
    extension is negotiated), known opcodes, control frames short and
    unfragmented, fragments in order, text valid UTF-8 (checked as each
    fragment arrives), messages no larger than ``max_message`` (refused from
    the frame header, before the payload is buffered). Any violation raises
    WebSocketProtocolError carrying the close code to answer with.
    """

    def __init__(self, max_message=WS_MAX_MESSAGE):
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

# The stream reader may buffer one maximal head, never more.
READER_LIMIT = MAX_REQUEST_LINE + MAX_HEADER_BYTES + 4
LISTEN_BACKLOG = 1024
NEW_IMAGE_MESSAGE = json.dumps({"type": "new_image"})
DISCONNECT_MESSAGE = json.dumps({"type": "disconnect"})
NO_CACHE = "no-cache"                  # revalidate every time (the ETag makes it cheap)
IMMUTABLE = "public, max-age=31536000, immutable"     # never changes: caches keep it
# What ALS 1.0 sends for web_image.jpg and data.json: no browser keeps a copy.
NO_STORE_HEADERS = {"Cache-Control": "no-store, no-cache, must-revalidate", "Pragma": "no-cache",
                    "Expires": "0"}


class Waker:
    """Runs callbacks on the event loop when other threads ask: at once and
    cheaply for the asking thread (the stacking pipeline). A callback asked
    for again before it ran runs once.

    POSIX: the asking thread writes one byte to a pipe that the loop watches,
    about half the cost of call_soon_threadsafe() (a socket pair). Elsewhere,
    or when the loop has no add_reader (Windows' proactor), it is
    call_soon_threadsafe().
    """

    def __init__(self, loop):
        self.loop = loop
        self._requested = {}            # callback -> True until it has run
        self._read_fd = None
        self._write = None
        if os.name == "posix":
            self._open_pipe()

    def _open_pipe(self):
        read_fd, write_fd = os.pipe()
        try:
            os.set_blocking(read_fd, False)
            os.set_blocking(write_fd, False)
            self.loop.add_reader(read_fd, self._run)
        except (NotImplementedError, OSError):
            os.close(read_fd)
            os.close(write_fd)
            return
        self._read_fd = read_fd
        # A file object: a write racing with close fails cleanly (ValueError)
        # instead of hitting a reused descriptor.
        self._write = open(write_fd, "wb", buffering=0)

    def request(self, callback):
        """Thread-safe: run callback() on the loop soon. Returns at once;
        RuntimeError when the loop has closed."""
        if self._requested.get(callback):
            return
        self._requested[callback] = True
        if self._write is None:
            self.loop.call_soon_threadsafe(self._run)
            return
        try:
            self._write.write(b"\0")    # None when the pipe is full: a wake-up is pending anyway
        except (ValueError, OSError):   # closed by STOP in between
            self._requested.pop(callback, None)

    def _run(self):
        if self._read_fd is not None:
            try:
                os.read(self._read_fd, 4096)
            except OSError:
                pass
        for callback in list(self._requested):
            del self._requested[callback]   # first: a request made while it runs is kept
            callback()

    def close(self):
        """The write end first: a late request then fails as a closed file."""
        if self._write is not None:
            self._write.close()
        if self._read_fd is not None:
            self.loop.remove_reader(self._read_fd)
            os.close(self._read_fd)
            self._read_fd = None


# -- 4a. Static files: snapshots, the shared cache, lookup and replies ----------

class FileSnapshot:
    """One complete, consistent copy of a served file and its validators
    (body None for a file too big to cache, streamed from disk)."""

    __slots__ = ("key", "body", "etag", "mtime", "last_modified")

    def __init__(self, key, body, mtime):
        self.key = key                  # (inode, size, mtime_ns) of the copy
        self.body = body
        self.mtime = mtime
        self.etag = '"%x-%x-%x"' % key
        self.last_modified = http_date(mtime)


def stat_key(st):
    return st.st_ino, st.st_size, st.st_mtime_ns


def read_snapshot(path):
    """Read a file and say whether the copy is consistent:
    (key, body, mtime, stable).

    Stable means the file did not change while it was read (same inode,
    size and mtime before and after) and, for a JPEG or PNG, that it is
    complete: ALS's Save module and other programs write images in place,
    so a read can land in the middle of a write.
    """
    with open(path, "rb") as f:
        before = os.fstat(f.fileno())
        body = f.read(before.st_size + 1)
        after = os.fstat(f.fileno())
    key = stat_key(after)
    stable = stat_key(before) == key and len(body) == after.st_size \
        and is_complete_image(body, content_type_for(path))
    return key, body, after.st_mtime, stable


def read_whole_snapshot(path):
    """A complete, consistent FileSnapshot of a file, re-read until it is
    stable; None when it is missing or stays incomplete. Blocking: for
    threads other than the event loop's."""
    for _attempt in range(STABLE_READ_ATTEMPTS):
        try:
            key, body, mtime, stable = read_snapshot(path)
        except OSError:
            return None
        if stable:
            return FileSnapshot(key, body, mtime)
        time.sleep(STABLE_READ_PAUSE)
    return None


class FileCache:
    """Snapshots of served files shared by all concurrent downloads.

    A file is read once per change (its stat key), by one task however many
    clients ask for it at once; while a JPEG or PNG is being rewritten the
    previous complete copy keeps being served, and a file that disappears
    for a moment is served from its last copy for VANISHED_GRACE. Least
    recently used copies are evicted beyond ``total_limit`` bytes.
    """

    def __init__(self, file_limit=CACHE_FILE_LIMIT, total_limit=CACHE_TOTAL_LIMIT):
        self.file_limit = file_limit
        self.total_limit = total_limit
        self._entries = {}              # path -> FileSnapshot (dict order = LRU order)
        self._loading = {}              # path -> Task reading the file
        self._unstable = {}             # path -> (key, since when) of an incomplete copy
        self._vanished = {}             # path -> since when the file is missing
        self._pinned = {}               # path -> copy served whatever the file holds, until settled
        self._total = 0
        self.disk_reads = 0

    async def get(self, path, st):
        self._vanished.pop(path, None)
        pinned = self._pinned.get(path)
        if pinned is not None:
            return pinned
        entry = self._entries.get(path)
        if entry is not None and entry.key == stat_key(st):
            self._entries[path] = self._entries.pop(path)
            return entry
        task = self._loading.get(path)
        if task is None:
            task = asyncio.ensure_future(self._load(path, st.st_size))
            self._loading[path] = task
            task.add_done_callback(lambda _t: self._loading.pop(path, None))
        return await asyncio.shield(task)

    def put(self, path, entry):
        """Serve this copy of path from now on: its bytes are already in
        hand (just published), so no request waits on the disk. A copy
        over file_limit is not kept (such a file is streamed from disk)."""
        self._unstable.pop(path, None)
        self._vanished.pop(path, None)
        if len(entry.body) > self.file_limit:
            self._drop(path)
            return
        self._store(path, entry)

    def pin(self, path, entry):
        """Serve this copy of path before its file is written (publish_image
        announces first): whatever the file holds until settle()."""
        self._pinned[path] = entry

    def settle(self, path, entry, key):
        """The file of a pinned copy is written (key: its stat key; None: the
        write failed, the file is the truth again)."""
        if self._pinned.get(path) is entry:
            del self._pinned[path]
            if key is not None:
                self.put(path, FileSnapshot(key, entry.body, key[2] / 1e9))
            else:
                self._drop(path)

    def vanished(self, path, now):
        """The last copy of a file that is missing now, while it has been
        missing for less than VANISHED_GRACE; else None."""
        entry = self._pinned.get(path) or self._entries.get(path)
        if entry is None or entry.body is None:
            return None
        if now - self._vanished.setdefault(path, now) > VANISHED_GRACE:
            return None
        return entry

    async def _load(self, path, size):
        loop = asyncio.get_running_loop()
        previous = self._entries.get(path)
        first_unstable = self._unstable.get(path)
        for _attempt in range(STABLE_READ_ATTEMPTS):
            if size > STREAM_CHUNK:     # big reads leave the event loop free
                key, body, mtime, stable = await loop.run_in_executor(None, read_snapshot, path)
            else:
                key, body, mtime, stable = read_snapshot(path)
            self.disk_reads += 1
            if not stable and first_unstable is not None and first_unstable[0] == key \
                    and loop.time() - first_unstable[1] > 0.5:
                stable = True           # unchanged for a while: it is what it is
            if stable:
                self._unstable.pop(path, None)
                entry = FileSnapshot(key, body, mtime)
                self._store(path, entry)
                return entry
            if first_unstable is None or first_unstable[0] != key:
                first_unstable = self._unstable[path] = (key, loop.time())
            if previous is not None:
                return previous         # serve the last complete copy now
            await asyncio.sleep(STABLE_READ_PAUSE)
            size = key[1]
        raise HTTPError(503, "file is being written", headers=[("Retry-After", "1")])

    def _drop(self, path):
        old = self._entries.pop(path, None)
        if old is not None:
            self._total -= len(old.body)

    def _store(self, path, entry):
        self._drop(path)
        self._entries[path] = entry
        self._total += len(entry.body)
        while self._total > self.total_limit and len(self._entries) > 1:
            oldest = next(iter(self._entries))
            self._total -= len(self._entries.pop(oldest).body)

    def clear(self):
        self._entries.clear()
        self._unstable.clear()
        self._vanished.clear()
        self._pinned.clear()
        self._total = 0


class Route:
    """How a URL is answered when not as a plain file of the web folder:
    from a file of ours elsewhere (``path``: the viewer bundle, a history
    frame), from bytes in memory (``snapshot`` of ``content_type``:
    history.json), or from the web folder with other caching ``headers``
    (neither path nor snapshot)."""

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

    @property
    def sent_length(self):
        return len(self.body) if self.body is not None else self.length


class StaticFiles:
    """The files of one web folder, and the routes that the layers above add
    (``routes(segments)`` returns a Route, None for the web folder, or raises
    HTTPError): lookup, the shared in-memory cache, and the reply to one GET
    or HEAD (200, 206, 304 or an HTTPError). Only web files are served.
    Knows nothing of sockets: the site writes the replies."""

    def __init__(self, root, routes=None):
        self.root = os.path.realpath(root)
        self.routes = routes
        self.cache = FileCache()

    def lookup(self, segments):
        """The full path and stat of a regular file inside the root, or 404.

        Walks the segments with lstat so that the common case costs one
        system call per segment; a symlink is followed only when it resolves
        inside the root.
        """
        path = self.root
        st = None
        for segment in segments:
            path = os.path.join(path, segment)
            try:
                st = os.lstat(path)
                if stat.S_ISLNK(st.st_mode):
                    real = os.path.realpath(path)
                    if real != self.root and not real.startswith(self.root + os.sep):
                        raise HTTPError(404, "symlink leaves the web folder")
                    # Its target obeys the request rules too: nothing hidden.
                    if any(part.startswith(".") for part in real[len(self.root) + 1:].split(os.sep)):
                        raise HTTPError(404, "symlink to a hidden file")
                    st = os.stat(path)
            except OSError:
                raise HTTPError(404, "not found") from None
        if st is None or not stat.S_ISREG(st.st_mode):
            raise HTTPError(404, "not a file")
        if os.name == "nt":             # junctions and other reparse points
            real = os.path.realpath(path)
            if not real.startswith(self.root + os.sep):
                raise HTTPError(404, "path leaves the web folder")
        return path, st

    async def _snapshot(self, path, segments):
        """The copy of a file to serve (body None: stream it from disk),
        looked up in the web folder by segments, or our own path. A file
        missing now (or since the lookup) is served from its last copy for
        a moment (FileCache.vanished)."""
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
            if st.st_size > self.cache.file_limit:
                return FileSnapshot(stat_key(st), None, st.st_mtime)
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
        segments = split_target(request.target)
        route = self.routes(segments) if self.routes is not None else None
        if route is None:
            route = Route()
        if route.snapshot is not None:
            entry, content_type, path = route.snapshot, route.content_type, None
        else:
            path = route.path or os.path.join(self.root, *segments)
            content_type = content_type_for(path)
            if content_type is None:
                raise HTTPError(404, "not a web file")
            entry = await self._snapshot(path, segments if route.path is None else None)
        size = len(entry.body) if entry.body is not None else entry.key[1]
        etag = entry.etag
        headers = [("Content-Type", content_type), ("Last-Modified", entry.last_modified),
                   ("ETag", etag)] + list(route.headers.items()) + \
                  [("X-Content-Type-Options", "nosniff"), ("Accept-Ranges", "bytes")]
        if not_modified(request, etag, entry.mtime):
            return FileReply(304, headers)
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
        if entry.body is not None:
            return FileReply(status, headers, body=memoryview(entry.body)[start:end + 1])
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

    __slots__ = ("writer", "transport", "peer", "last_seen", "pending", "pending_bytes",
                 "flusher", "close_sent", "done")

    def __init__(self, writer, peer, now):
        self.writer = writer
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
            # after the frame messages it announces, as it was sent).
            self.pending.remove(frame)
            self.pending.append(frame)
        else:
            if len(self.pending) >= WS_MAX_PENDING or \
                    self.pending_bytes + len(frame) > WS_MAX_PENDING_BYTES:
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
            await asyncio.wait_for(self.writer.drain(), WS_SEND_TIMEOUT)
            frames, self.pending, self.pending_bytes = self.pending, [], 0
            if not self.done:
                self.transport.write(b"".join(frames))
        except asyncio.TimeoutError:
            self.drop("not reading for %.0f s" % WS_SEND_TIMEOUT)
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
    """The connected browsers: WebSocket sessions, broadcast (requested from
    any thread through the site's Waker), keepalive, and closing them all at
    STOP. All methods run on the event loop except ``request_broadcast``."""

    def __init__(self, max_clients=WS_MAX_CLIENTS, ping_interval=WS_PING_INTERVAL,
                 max_message=WS_MAX_MESSAGE):
        self.max_clients = max_clients
        self.ping_interval = ping_interval
        self.max_message = max_message
        self.clients = set()
        self.joined = self.left = 0     # sessions opened and ended, for the command line
        self.loop = None
        self.waker = None
        self.stopping = False           # after the disconnect message: nothing more
        self._queued = {}               # message -> True while its broadcast is requested
        self._keepalive_task = None

    def start(self, loop, waker):
        self.loop, self.waker = loop, waker
        if self.ping_interval:
            self._keepalive_task = loop.create_task(self._keepalive())

    @property
    def full(self):
        return len(self.clients) >= self.max_clients

    # -- broadcast ---------------------------------------------------------

    def request_broadcast(self, message):
        """Thread-safe and immediate: queue one broadcast of a text message.
        A message already queued and not yet sent is not queued twice: it
        moves after the messages queued since."""
        self._queued.pop(message, None)
        self._queued[message] = True
        self.waker.request(self._send_queued)

    def _send_queued(self):
        for message in list(self._queued):
            self.broadcast(message)

    def broadcast(self, message):
        self._queued.pop(message, None)
        if self.stopping:
            return
        frame = build_text(message)
        for client in list(self.clients):
            client.send(frame)

    async def _keepalive(self):
        ping = build_frame(Opcode.PING, b"alsserve")
        while True:
            await asyncio.sleep(self.ping_interval)
            silent_since = self.loop.time() - 2 * self.ping_interval
            for client in list(self.clients):
                if client.last_seen < silent_since:
                    log.info("websocket %s: silent for %.0f s, dropped", client.peer, 2 * self.ping_interval)
                    client.transport.abort()
                else:
                    client.send(ping)

    # -- sessions ----------------------------------------------------------

    async def session(self, reader, writer, peer):
        """Serve one WebSocket until it closes. Client data messages are
        validated and otherwise ignored: the channel only carries
        notifications from the server."""
        writer.transport.set_write_buffer_limits(0, 0)
        client = WebSocketClient(writer, peer, self.loop.time())
        self.clients.add(client)
        self.joined += 1
        parser = FrameParser(self.max_message)
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
            await asyncio.wait_for(reader.read(65536), WS_CLOSE_TIMEOUT)
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


# -- 4c. The site: writing replies; connections, requests, start and STOP ------

def _peer_name(writer):
    peer = writer.get_extra_info("peername")
    return "%s:%s" % peer[:2] if isinstance(peer, tuple) else str(peer)


def reset_transport(transport):
    """Abort with a TCP reset (SO_LINGER 0): a plain abort leaves unsent
    bytes to the kernel, which keeps the connection alive until a client
    that is not reading has taken them all."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                            struct.pack("HH" if os.name == "nt" else "ii", 1, 0))
        except OSError:
            pass
    transport.abort()


class ReplyWriter:
    """Writes replies onto a connection: the Date header (formatted once a
    second), bodies in STREAM_CHUNK pieces so that a slow client holds one
    piece in memory, not the image, files too big to cache by sendfile
    where the OS has it, and a send timeout for clients that take nothing."""

    def __init__(self):
        self.use_sendfile = hasattr(os, "sendfile")
        self._date = (0, "")

    def date(self):
        now = int(time.time())
        if self._date[0] != now:
            self._date = (now, http_date(now))
        return self._date[1]

    async def drain(self, writer):
        """drain(), but a client that takes no data for SEND_TIMEOUT is dropped
        (a phone that walked away mid-download must not hold its connection)."""
        if writer.transport.is_closing():
            raise ConnectionResetError("connection lost")   # stop writing to it
        if not writer.transport.get_write_buffer_size():
            return                      # all sent: nothing to wait for
        timer = asyncio.get_running_loop().call_later(SEND_TIMEOUT, writer.transport.abort)
        try:
            await writer.drain()
        finally:
            timer.cancel()

    async def write_body(self, writer, head, body):
        """Write in chunks so a slow client holds at most one chunk in memory."""
        if len(body) <= STREAM_CHUNK:
            writer.write(head + body)
            return
        writer.write(head)
        view = memoryview(body)         # slices of it copy nothing
        for offset in range(0, len(body), STREAM_CHUNK):
            writer.write(view[offset:offset + STREAM_CHUNK])
            await self.drain(writer)

    async def stream_file(self, writer, f, start, length):
        """A file too big to cache: sendfile where the OS has it, else chunks."""
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
                                                  SEND_TIMEOUT)
                except asyncio.TimeoutError:
                    raise ConnectionError("download stalled") from None
                if sent != count:       # the client would read the next response as body
                    raise ConnectionError("file shrank while it was sent")
            return
        f.seek(start)
        remaining = length
        while remaining > 0:
            chunk = f.read(min(STREAM_CHUNK, remaining))
            if not chunk:
                raise ConnectionError("file shrank while it was sent")
            writer.write(chunk)
            remaining -= len(chunk)
            await self.drain(writer)


class Site:
    """A running server: accepts connections on the listening socket, reads
    requests (keep-alive, pipelining, timeouts), hands /ws to the WebSocket
    hub and everything else to the static files, has the replies written
    by its ReplyWriter, and owns the lifecycle (start, STOP). Runs on the
    event loop thread."""

    def __init__(self, root, routes=None, max_clients=WS_MAX_CLIENTS, max_connections=MAX_CONNECTIONS,
                 ping_interval=WS_PING_INTERVAL, max_message=WS_MAX_MESSAGE,
                 header_timeout=HEADER_TIMEOUT, keepalive_timeout=KEEPALIVE_TIMEOUT, trusted_proxy=None):
        self.files = StaticFiles(root, routes)
        self.hub = WebSocketHub(max_clients, ping_interval, max_message)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self.replies = ReplyWriter()
        self.trusted_proxy = trusted_proxy  # its X-Forwarded-For names the client in the log
        self.connections = {}           # task -> transport of every open connection
        self.loop = None
        self.waker = None               # other threads' way onto the loop
        self.server = None

    # -- lifecycle ---------------------------------------------------------

    async def start(self, sock):
        self.loop = asyncio.get_running_loop()
        self.server = await asyncio.start_server(self.handle_connection, sock=sock, limit=READER_LIMIT)
        self.waker = Waker(self.loop)
        self.hub.start(self.loop, self.waker)

    async def shutdown(self, grace=STOP_GRACE):
        """STOP: say disconnect, let browsers close within grace, then close all."""
        loop = self.loop
        deadline = loop.time() + max(0.0, grace)
        # The last tenth of grace is kept for the Close handshake with browsers
        # that did not close by themselves: STOP returns within grace.
        close_at = deadline - min(0.25, max(0.0, grace) / 10)
        # Stop accepting, and give accepts already in flight a loop turn to
        # attach to the server before it closes: asyncio < 3.12 fails them
        # once it is closed, and their sockets leak.
        for sock in self.server.sockets or ():
            try:
                loop.remove_reader(sock.fileno())
            except NotImplementedError:     # Windows' proactor loop: no readers
                pass
        self.hub.say_disconnect()
        await asyncio.sleep(0)
        self.server.close()
        await self.hub.close_all(close_at, deadline)
        for transport in list(self.connections.values()):
            reset_transport(transport)
        tasks = list(self.connections)
        if tasks:
            await asyncio.wait(tasks, timeout=1.0)
            for task in tasks:
                task.cancel()
        self.files.cache.clear()
        self.waker.close()

    # -- connections and requests -----------------------------------------

    async def handle_connection(self, reader, writer):
        transport = writer.transport
        task = asyncio.current_task()
        if len(self.connections) >= self.max_connections:
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
        timeout = self.header_timeout
        while True:
            timer = self.loop.call_later(timeout, writer.transport.abort)
            try:
                head = await self._read_head(reader, writer, peer)
            finally:
                timer.cancel()
            if head is None:
                return
            timeout = self.keepalive_timeout
            try:
                request = parse_request(head)
            except HTTPError as error:
                log.warning("%s: bad request: %s", peer, error.detail)
                await self._send_error(writer, error, None, peer)
                return
            keep_alive = await self._respond(request, reader, writer, peer)
            if not keep_alive:
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
        the trusted proxy, the client address it appended to
        X-Forwarded-For (the last one: the earlier ones are the client's
        own claims)."""
        if self.trusted_proxy is None or peer.rsplit(":", 1)[0] != self.trusted_proxy:
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
            return await self._serve_file(request, writer, peer)
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
        data = head.encode(self.replies.date(), keep_alive,
                           request is not None and request.version == "HTTP/1.0")
        if request is None or request.method != "HEAD":
            data += body
        writer.write(data)
        self._log_request(peer, request, error.status, len(body))
        await self.replies.drain(writer)
        return keep_alive

    async def _serve_file(self, request, writer, peer):
        reply = await self.files.reply(request)
        keep_alive = request.keep_alive
        head = ResponseHead(reply.status, reply.headers).encode(
            self.replies.date(), keep_alive, request.version == "HTTP/1.0")
        self._log_request(peer, request, reply.status, reply.sent_length)
        if reply.stream is not None:
            with reply.stream:
                writer.write(head)
                await self.replies.stream_file(writer, reply.stream, reply.start, reply.length)
        elif reply.body is not None:
            await self.replies.write_body(writer, head, reply.body)
        else:
            writer.write(head)
        await self.replies.drain(writer)
        return keep_alive


# =============================================================================
# 5. Web folder publishing: atomic writes, assets, data.json, the history
# =============================================================================

def replace_file(source, target, attempts=100, pause=0.01):
    """os.replace, retried briefly: on Windows a reader holding the target
    open makes the replace fail with PermissionError for a moment."""
    for attempt in range(attempts):
        try:
            os.replace(source, target)
            return
        except PermissionError:
            if attempt == attempts - 1:
                raise
            time.sleep(pause)


def atomic_write(path, data):
    """Write data to path so that readers see the old or the new file, whole.

    The temporary file is a dotfile in the same folder (never served, same
    file system for the rename) and is removed if anything fails.
    """
    folder, name = os.path.split(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(temporary, 0o644)
        replace_file(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


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

    Every file is refreshed when its content differs (untouched files keep
    their dates, so browsers' caches stay valid). The waiting image only
    becomes web_image.jpg through publish_waiting_image().
    """
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


def publish_waiting_image(web_folder, assets_dir):
    """web_image.jpg becomes the waiting image (atomically: its temporary
    file is a hidden one, never served, removed on failure)."""
    waiting = waiting_image_path(assets_dir)
    if waiting is not None:
        atomic_write(os.path.join(web_folder, IMAGE_NAME), read_file(waiting))


def write_metrics(web_folder, stack_size, total_exposure_seconds):
    """Atomically rewrite data.json, or ValueError for values ALS would not write."""
    check_count("stack size", stack_size)
    if isinstance(total_exposure_seconds, bool) or not isinstance(total_exposure_seconds, (int, float)) \
            or not total_exposure_seconds >= 0 or total_exposure_seconds == float("inf"):
        raise ValueError("total exposure must be a non-negative number of seconds, got %r"
                         % (total_exposure_seconds,))
    atomic_write(os.path.join(web_folder, METRICS_NAME),
                 metrics_json(stack_size, total_exposure_seconds).encode("ascii"))


def check_web_folder(web_folder, writable=True, may_create=False):
    """The web folder as an absolute path, or ValueError naming what is
    wrong. may_create: it may be missing if it can be created (later)."""
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


def default_history_dir(web_folder):
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


def check_count(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError("%s must be a non-negative integer, got %r" % (name, value))
    return value


def history_folder(web_folder, read_only, history_dir, max_frames, max_bytes):
    """Where the history lives (None: no history): a hidden folder of the
    web folder; for a watched folder, outside it (the user's cache)."""
    if not check_count("history frames", max_frames) or not check_count("history bytes", max_bytes):
        return None
    folder = os.path.abspath(history_dir) if history_dir else \
        default_history_dir(web_folder) if read_only else os.path.join(web_folder, HISTORY_FOLDER)
    if read_only and (is_inside(folder, web_folder) or os.path.realpath(folder) == os.path.realpath(web_folder)):
        raise ValueError("the history of a watched folder must be kept outside it, not in %s" % folder)
    return folder


def check_port(port):
    low, high = PORT_RANGE
    if isinstance(port, bool) or not isinstance(port, int) or not low <= port <= high:
        raise ValueError("port must be an integer in %d-%d, got %r" % (low, high, port))
    return port


def check_jpeg(data):
    if not is_complete_jpeg(data):
        raise ValueError("not a complete JPEG image (%d bytes; must start with FFD8 and end with FFD9)"
                         % len(data))
    return data


# -- 5b. The history of the night: frames on disk within a budget ---------------

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


class HistoryFrame:
    """One image of the night as it became live, with the metrics of that moment."""

    __slots__ = ("id", "time", "stack_size", "exposure", "bytes", "ext", "session")

    def __init__(self, id, time, stack_size, exposure, bytes, ext, session):
        self.id, self.time, self.ext, self.session = id, time, ext, session
        self.stack_size, self.exposure, self.bytes = stack_size, exposure, bytes

    @property
    def name(self):
        return "%d%s" % (self.id, self.ext)

    @property
    def url(self):
        return HISTORY_URL_FOLDER + "/" + self.name

    def as_json(self):
        return {"id": self.id, "time": self.time, "stack_size": self.stack_size,
                "exposure": self.exposure, "bytes": self.bytes, "url": self.url,
                "session": self.session}

    def record(self):
        """What the index keeps: as_json() without the derived url, with the extension."""
        record = self.as_json()
        del record["url"]
        record["ext"] = self.ext
        return record


class History:
    """The frames of the night on disk: one file per frame in a folder of its
    own (hidden inside the web folder, or elsewhere for watch mode), an index
    written atomically after each change, ids that only increase (a frame's
    URL never changes meaning, so caches may keep it forever).

    Bounded: at most ``max_frames`` frames and ``max_bytes`` bytes, oldest
    dropped first; no frame is stored while the disk has less than
    ``min_free`` bytes free. Thread-safe: frames are written off the event
    loop and listed on it.

    A new history's first id is ``first_id``, by default the time in
    milliseconds (and above every id this process gave): a new history
    (another web folder, a history folder removed between nights) never
    reuses the URLs of an earlier one, which a cache in front may still
    hold as immutable.
    """

    highest_id = 0                      # of every history of this process

    def __init__(self, folder, max_frames=HISTORY_FRAMES, max_bytes=HISTORY_BYTES,
                 min_free=HISTORY_MIN_FREE, first_id=None):
        self.folder = folder
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.min_free = min_free
        self.frames = []                # oldest first
        self.by_url = {}                # url -> HistoryFrame
        self.pending = {}               # id -> FileSnapshot of a frame whose file is being written
        self._doomed = []               # files of dropped frames, removed off the loop
        self.session = 1
        self.first_id = first_id
        self.next_id = None             # set by open()
        self.live = None                # id of the frame shown as the live image
        self._lock = threading.Lock()
        self._store_lock = threading.Lock()
        self._listing = None            # FileSnapshot of history.json, rebuilt after a change
        self._started = int(time.time() * 1000)     # with _version: the listing's ETag
        self._version = 0
        self._low_disk = False

    # -- the folder --------------------------------------------------------

    def open(self):
        """Create the folder, read the index, and make the folder match it:
        frames whose file is missing or of another size are forgotten, files
        that are no frame of the index (temporary files of a crash) removed."""
        os.makedirs(self.folder, exist_ok=True)
        try:
            with open(os.path.join(self.folder, HISTORY_INDEX), "rb") as f:
                index = json.loads(f.read().decode("utf-8"))
            self.next_id = int(index["next_id"])
            self.session = int(index["session"])
            records = index["entries"] if "entries" in index else index["frames"]   # (1.0.0's name)
        except FileNotFoundError:
            records = []
        except (OSError, ValueError, KeyError, TypeError) as error:
            log.warning("history index in %s unreadable (%s): starting a new history", self.folder, error)
            records = []
        if self.next_id is None:        # a new history
            self.next_id = self.first_id if self.first_id is not None else \
                max(int(time.time() * 1000), History.highest_id + 1)
        frames = []
        for record in records:
            try:
                frame = HistoryFrame(int(record["id"]), float(record["time"]), record["stack_size"],
                                     record["exposure"], int(record["bytes"]), record["ext"],
                                     int(record["session"]))
            except (KeyError, TypeError, ValueError):
                continue
            if frame.ext in (".jpg", ".png") and frame.id < self.next_id \
                    and self._size(frame) == frame.bytes:
                frames.append(frame)
        with self._lock:
            self._set_frames(frames)
            self._enforce_budget()
            self._save()
            self._doomed = []
        keep = {frame.name for frame in self.frames} | {HISTORY_INDEX}
        for name in os.listdir(self.folder):
            if name not in keep and (name.endswith(".tmp") or os.path.splitext(name)[0].isdigit()):
                self._remove(name)

    def _size(self, frame):
        try:
            return os.stat(self.path_of(frame)).st_size
        except OSError:
            return None

    def _remove(self, name):
        try:
            os.unlink(os.path.join(self.folder, name))
        except OSError:
            pass

    def path_of(self, frame):
        return os.path.join(self.folder, frame.name)

    def _save(self):
        index = {"next_id": self.next_id, "session": self.session,
                 "entries": [frame.record() for frame in self.frames]}
        atomic_write(os.path.join(self.folder, HISTORY_INDEX), json.dumps(index).encode("utf-8"))

    def _set_frames(self, frames):
        self.frames = frames
        self.by_url = {frame.url: frame for frame in frames}
        if self.live is not None and not any(frame.id == self.live for frame in frames):
            self.live = None
        self._listing = None

    # -- frames ------------------------------------------------------------

    def reserve(self, body, ext, when, stack_size=None, exposure=None):
        """A new frame, listed at once and served from memory (``pending``)
        until store() has written its file; None when the disk is below
        the free-space floor or the frame alone is over the byte budget."""
        if len(body) > self.max_bytes or self._disk_is_low(len(body)):
            return None
        with self._lock:
            frame = HistoryFrame(self.next_id, when, stack_size, exposure, len(body), ext, self.session)
            self.next_id += 1
            History.highest_id = max(History.highest_id, frame.id)
            self.pending[frame.id] = FileSnapshot((frame.id, len(body), int(when * 1e9)), body, when)
            self._set_frames(self.frames + [frame])
            self._enforce_budget()
        return frame

    def store(self, frame):
        """Off the event loop: remove the files the budget dropped, write a
        reserved frame's file, then the index; one store at a time, so the
        folder never holds more than the budget. Returns the file's stat key
        (None when the budget dropped the frame meanwhile)."""
        with self._store_lock:
            with self._lock:
                doomed, self._doomed = self._doomed, []
            for name in doomed:
                self._remove(name)
            snapshot = self.pending.get(frame.id)
            path = self.path_of(frame)
            if snapshot is not None:
                try:
                    atomic_write(path, snapshot.body)
                    os.utime(path, (frame.time, frame.time))    # Last-Modified: when it became live
                except OSError:         # (a full disk): the frame is not kept
                    with self._lock:
                        self._set_frames([f for f in self.frames if f.id != frame.id])
                        self.pending.pop(frame.id, None)
                    raise
            with self._lock:
                kept = snapshot is not None and frame.url in self.by_url
                self._save()
            if not kept:
                self._remove(frame.name)
                return None
            return stat_key(os.stat(path))

    def release(self, frame):
        """The frame's file serves it from now on."""
        self.pending.pop(frame.id, None)

    def add(self, body, ext, when, stack_size=None, exposure=None):
        """reserve(), store() and release() in one call."""
        frame = self.reserve(body, ext, when, stack_size, exposure)
        if frame is not None:
            self.store(frame)
            self.release(frame)
        return frame

    def _disk_is_low(self, size):
        try:
            free = shutil.disk_usage(self.folder).free
        except OSError:
            return False
        low = free - size < self.min_free
        if low and not self._low_disk:
            log.warning("history: only %d MiB free on the disk of %s, below the %d MiB floor: "
                        "no new frame is kept", free >> 20, self.folder, self.min_free >> 20)
        self._low_disk = low
        return low

    def _enforce_budget(self):
        """Drop the oldest frames beyond the budget; their files are removed
        by the next store() (or open()), off the event loop."""
        total = sum(frame.bytes for frame in self.frames)
        dropped = 0
        while self.frames[dropped:] and (len(self.frames) - dropped > self.max_frames
                                         or total > self.max_bytes):
            total -= self.frames[dropped].bytes
            self._doomed.append(self.frames[dropped].name)
            self.pending.pop(self.frames[dropped].id, None)
            dropped += 1
        if dropped:
            self._set_frames(self.frames[dropped:])

    def new_session(self):
        """A new session (ALS: a new target): new frames start a new history;
        the previous one stays while the budget allows."""
        with self._lock:
            self.session += 1
            self.live = None
            self._listing = None
            self._save()

    def set_live(self, frame_id):
        with self._lock:
            if frame_id != self.live:
                self.live = frame_id
                self._listing = None

    def find(self, url):
        """The frame served at url ("history/<id>.<ext>"), or None."""
        return self.by_url.get(url)

    def frame(self, frame_id):
        """The frame of that id, or None (never was, or dropped)."""
        for frame in reversed(self.frames):
            if frame.id == frame_id:
                return frame
        return None

    def last(self):
        frames = self.frames
        return frames[-1] if frames else None

    def listing(self):
        """history.json, as a snapshot with its validators."""
        with self._lock:
            if self._listing is None:
                self._version += 1
                body = json.dumps({"session": self.session, "live": self.live,
                                   "entries": [frame.as_json() for frame in self.frames]}).encode("utf-8")
                now = time.time()
                self._listing = FileSnapshot((self._started, self._version, len(body)), body, now)
            return self._listing

    def as_list(self):
        with self._lock:
            return [frame.as_json() for frame in self.frames]


# =============================================================================
# 6. Controller: addresses and port, routes, announcer, thread, START/STOP
# =============================================================================

# -- 6a. The displayed address and the port --------------------------------------

# UDP "connect" sends no packet; it only asks the kernel which local address
# routes to a target. A public target finds the default route; private and
# link-local targets find networks without one (a Pi's own Wi-Fi hotspot).
ROUTE_PROBE_TARGETS = ("203.0.113.1", "10.255.255.254", "172.31.255.254",
                       "192.168.255.254", "169.254.255.254", "100.127.255.254")
# Interfaces that exist on the machine but no phone can reach.
VIRTUAL_INTERFACE_PREFIXES = ("docker", "br-", "veth", "virbr", "vmnet", "vboxnet", "lxc", "tun", "tap")
# SIOCGIFADDR: the IPv4 address of a named interface.
SIOCGIFADDR = {"linux": 0x8915, "darwin": 0xC0206921}


def _route_probe(target):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.connect((target, 9))
        return sock.getsockname()[0]
    except OSError:
        return None
    finally:
        sock.close()


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


def _interface_addresses():
    """(address, interface name) of each interface, with stdlib means per OS."""
    found = []
    request = SIOCGIFADDR.get(sys.platform)
    if request is None and "bsd" in sys.platform:
        request = SIOCGIFADDR["darwin"]
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
    # Windows (no ioctl), or the ioctl failed: the host name's addresses.
    # Only then: resolving it can wait on DNS or mDNS where there is none.
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET, socket.SOCK_STREAM):
            # The host name may resolve (hosts file, stale DNS) to an address
            # this machine no longer has: keep only addresses we can bind.
            if is_local_address(info[4][0]):
                found.append((info[4][0], ""))
    except (OSError, UnicodeError):
        pass
    return found


def _address_rank(address, interface, default_route):
    ip = ipaddress.IPv4Address(address)
    if ip.is_loopback:
        return 6
    if address == default_route:
        return 0
    if interface.startswith(VIRTUAL_INTERFACE_PREFIXES):
        return 4
    if ip.is_link_local:
        return 5
    return 1 if ip.is_private else 2


# What each rank of _address_rank means to the user, for --list-addresses.
ADDRESS_KINDS = {
    0: "default route",
    1: "private network without the default route (a hotspot or a local-only network)",
    2: "public address",
    4: "virtual bridge (phones cannot reach it)",
    5: "link-local (no DHCP server answered)",
    6: "loopback (this machine only)",
}


def describe_ipv4_addresses():
    """(address, interface name, what it is) of each local IPv4 address,
    best first for a phone on the same network: the default route's, then
    private ones, public ones, virtual bridges, link-local, loopback last.
    The interface name is "" where the OS does not tell (Windows)."""
    probes = [_route_probe(target) for target in ROUTE_PROBE_TARGETS]
    default_route = probes[0]
    candidates = [(a, "") for a in probes if a] + _interface_addresses() + [("127.0.0.1", "lo")]
    names = {}
    for address, interface in candidates:
        if address == "0.0.0.0":
            continue
        if interface or address not in names:
            names[address] = interface or names.get(address, "")
    order = {address: i for i, address in enumerate(names)}
    ranks = {address: _address_rank(address, names[address], default_route) for address in names}
    best = sorted(names, key=lambda a: (ranks[a], order[a]))
    return [(address, names[address], ADDRESS_KINDS[ranks[address]]) for address in best]


def list_ipv4_addresses():
    """Local IPv4 addresses, best first (see describe_ipv4_addresses)."""
    return [address for address, _interface, _kind in describe_ipv4_addresses()]


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


def resolve_displayed_address(preference="auto"):
    """The address to show users for the 'Displayed Address' preference.

    ``ip:<a>`` is honoured while <a> is a local address (a loopback one
    included); otherwise a warning is logged and ``auto`` decides: the best
    non-loopback address, or 127.0.0.1 when there is none.
    """
    wanted = parse_address_preference(preference)
    if wanted is not None:
        if is_local_address(wanted):
            return wanted
        log.warning("displayed address %s is not an address of this machine; using auto", wanted)
    for address in list_ipv4_addresses():
        if not ipaddress.IPv4Address(address).is_loopback:
            return address
    return "127.0.0.1"


def listener_socket_options(socket_module=socket):
    """The options for the listening socket, chosen by what the OS offers.

    Windows: SO_EXCLUSIVEADDRUSE, so no other program can bind the port too.
    POSIX: SO_REUSEADDR, so STOP/START rebinds at once despite TIME_WAIT.
    Never SO_REUSEPORT (it would let two servers share the port).
    """
    if hasattr(socket_module, "SO_EXCLUSIVEADDRUSE"):
        return [(socket_module.SOL_SOCKET, socket_module.SO_EXCLUSIVEADDRUSE, 1)]
    return [(socket_module.SOL_SOCKET, socket_module.SO_REUSEADDR, 1)]


def bind_listener(port, host="0.0.0.0"):
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
                return True             # not an address of this machine: says nothing of the port
    return False


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


def get_host_ip():
    """ALS 0.7 helper: the address to show for 'auto'."""
    return resolve_displayed_address("auto")


# -- 6b. ALS 1.0's address candidates: its ranking, our interface discovery -----

# ALS 1.0 ranks addresses by score (then by IP text): private +100,
# link-local -100, loopback -200, and a weak hint from the interface name.
PHYSICAL_INTERFACE_HINTS = ("wi-fi", "wifi", "wireless", "wlan", "wl", "ethernet", "eth", "enp", "ens", "eno")
VIRTUAL_INTERFACE_HINTS = ("virtual", "vmware", "vbox", "hyper-v", "vethernet", "docker", "bridge", "br-",
                           "vpn", "tun", "tap", "utun", "tailscale", "zerotier")

InterfaceAddress = collections.namedtuple("InterfaceAddress", "family address")   # psutil's shape


class NetworkAddress:
    """One IPv4 address a browser may be sent to, as ALS 1.0 shows it in
    its Displayed Address list: ``url`` is "http://<ip>:<port>" (no slash),
    ``label`` "Wi-Fi - <ip>", "Ethernet - <ip>", "<interface> - <ip>" or the
    bare ip, ``score`` its rank for auto."""

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
            - (200 if address.is_loopback else 0)
        if any(hint in lowered for hint in PHYSICAL_INTERFACE_HINTS):
            score += 10
        elif any(hint in lowered for hint in VIRTUAL_INTERFACE_HINTS):
            score -= 10
        if "wi-fi" in lowered or "wifi" in lowered or "wireless" in lowered or lowered.startswith(("wlan", "wl")):
            shown = "Wi-Fi"
        elif "ethernet" in lowered or lowered.startswith(("eth", "enp", "ens", "eno")):
            shown = "Ethernet"
        else:
            shown = interface_name
        return cls(interface_name, ip, "http://%s:%d" % (ip, port), address.is_loopback,
                   address.is_link_local, address.is_private, score, "%s - %s" % (shown, ip) if shown else ip)

    def __repr__(self):
        return "NetworkAddress(%r, score=%d)" % (self.label, self.score)


def build_network_address_candidates(port, interface_addresses, default_route=None):
    """ALS 1.0's ranked candidates from a psutil-style mapping (interface
    name -> entries with ``.family`` and ``.address``): IPv4 only, each
    address once, best first; 127.0.0.1 when there is none. default_route:
    an address that wins among addresses of equal score."""
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
    return sorted(candidates, key=lambda c: (-c.score, c.ip != default_route, c.ip))


def get_network_address_candidates(port, interface_addresses=None):
    """The candidates of this machine's interfaces (ALS 1.0's
    ``get_network_address_candidates(port)``; with a mapping, as its
    earlier form did, those addresses instead)."""
    if interface_addresses is not None:
        return build_network_address_candidates(port, interface_addresses)
    mapping = collections.OrderedDict()
    for address, interface in _interface_addresses() + [("127.0.0.1", "lo")]:
        mapping.setdefault(interface, []).append(InterfaceAddress(socket.AF_INET, address))
    return build_network_address_candidates(port, mapping, _route_probe(ROUTE_PROBE_TARGETS[0]))


def build_advertised_address_preference(ip):
    """The Displayed Address preference that names one address."""
    return ADVERTISED_ADDRESS_IP_PREFIX + ip


advertised_address_preference = build_advertised_address_preference     # ALS 1.0-dev's earlier name


def select_advertised_address(preference, candidates):
    """The candidate the preference names ("ip:<a>", when it is one of
    them), else the best one."""
    candidates = list(candidates) or build_network_address_candidates(als_setting(
        "get_www_server_port_number", DEFAULT_PORT), {})
    if preference and preference.startswith(ADVERTISED_ADDRESS_IP_PREFIX):
        wanted = preference[len(ADVERTISED_ADDRESS_IP_PREFIX):]
        for candidate in candidates:
            if candidate.ip == wanted:
                return candidate
    return candidates[0]


def build_no_cache_file_response(static_path, file_name):
    """ALS 1.0's answer for files that change under the same name: a Route
    to the file whose ``.headers`` keep browsers from storing it."""
    return Route(path=os.path.join(static_path, file_name), headers=NO_STORE_HEADERS)


# -- 6c. New images: the routes beyond the web folder, the announcer -------------

class Routes:
    """The URLs a server answers from somewhere else than its web folder.

    Watch mode: the viewer bundle (it wins over a same-named file of the
    folder, which belongs to another program), and web_image.jpg, which
    stands for the newest image of the folder (the bundle's waiting image
    until there is one). With a history: history.json and the frames,
    history/<id>.<ext>; any other name under history/ is 404.
    """

    def __init__(self, history=None, bundle=None, live_path=None, no_store=()):
        self.history = history
        self.bundle = bundle            # watch mode: URL path -> file of the bundle
        self.live_path = live_path      # watch mode: the file web_image.jpg stands for
        self.no_store = no_store        # names of the web folder sent with NO_STORE_HEADERS

    def __call__(self, segments):
        history = self.history
        if history is not None:
            if segments == [HISTORY_LISTING]:
                return Route(snapshot=history.listing(), content_type=CONTENT_TYPES[".json"])
            if segments[0] == HISTORY_URL_FOLDER:
                frame = history.find("/".join(segments))
                if frame is None:
                    raise HTTPError(404, "no such history frame")
                pending = history.pending.get(frame.id)
                if pending is not None:         # announced before its file is written
                    return Route(snapshot=pending, content_type=content_type_for(frame.name),
                                 cache_control=IMMUTABLE)
                return Route(path=history.path_of(frame), cache_control=IMMUTABLE)
        if self.bundle is not None:
            if segments == [IMAGE_NAME] and self.live_path is not None:
                return Route(path=self.live_path)
            path = self.bundle.get("/".join(segments))
            if path is not None:
                return Route(path=path)
        if len(segments) == 1 and segments[0] in self.no_store:
            return Route(headers=NO_STORE_HEADERS)
        return None


class PublishedImage:
    """An image publish_image() announces while it writes the file: the
    file's stat key once it is in place (None until then, or when the write
    failed), and the snapshot pinned in the cache meanwhile."""

    __slots__ = ("key", "snapshot", "written")

    def __init__(self):
        self.key = self.snapshot = None
        self.written = False


class Announcer:
    """Makes each new image live, in order, one at a time, and only then
    tells the browsers (the frame message, then ALS's unchanged new_image):

    - its bytes are served from memory at once: publish_image hands them
      over (and writes the file meanwhile); after a notify the file is read
      once and checked whole, off the event loop;
    - it becomes a history frame, served from memory until its file is
      written off the loop (not for the same image again, nor the waiting
      image).

    Requests return at once, from any thread; notifies that pile up while
    one is read count once."""

    def __init__(self, site, routes, web_folder, waiting_body=None):
        self.site = site
        self.routes = routes
        self.history = routes.history
        self.web_folder = web_folder
        self.waiting_body = waiting_body
        self.last_body = None           # the live image's bytes (dedup of frames)
        self.last_frame_id = None       # the frame holding them, if any
        self._queue = collections.deque()
        self._written = collections.deque()
        self._running = False

    def resume(self, path):
        """At START, before the loop runs: the image at path is live. It is
        served from memory before the first browser asks (it loads at once,
        and a moment without the file, as when ALS on Windows removes it
        before renaming the next one onto it, is covered from the start);
        after a restart it may be the history's last frame again."""
        snapshot = read_whole_snapshot(path) if path else None
        if snapshot is None:
            return
        self.site.files.cache.put(path, snapshot)
        self.last_body = snapshot.body
        history = self.history
        last = history.last() if history is not None else None
        if last is not None and last.bytes == len(snapshot.body) \
                and read_file(history.path_of(last)) == snapshot.body:
            self.last_frame_id = last.id
            history.set_live(last.id)

    def request(self, path, data=None, keep=True, published=None):
        """path holds a new image. data: its bytes, already in hand
        (publish_image, whose file is being written: published). keep=False:
        not a frame (the waiting image)."""
        item = (path, data, keep, published)
        if data is None and self._queue and self._queue[-1] == item:
            return                      # this notify is already waiting
        self._queue.append(item)
        self.site.waker.request(self._start)

    def written(self, path, published):
        """publish_image's file is in place (or failed): from any thread."""
        published.written = True
        self._written.append((path, published))
        self.site.waker.request(self._settle)

    def _start(self):
        """On the loop: take the waiting requests in order until one needs
        its file read (the read's end takes up the rest). Plain callbacks,
        no task: the caller's thread waits for the GIL while the loop works
        after the wake-up, so that work is kept short."""
        while not self._running and self._queue and not self.site.hub.stopping:
            path, data, keep, published = self._queue.popleft()
            if data is not None:
                now = time.time()
                self._announce_logged(path, FileSnapshot((0, len(data), int(now * 1e9)), data, now),
                                      keep, published)
                continue
            self._running = True
            def read(path=path, keep=keep, published=published):
                reading = self.site.loop.run_in_executor(None, read_whole_snapshot, path)
                reading.add_done_callback(lambda done: self._read_done(
                    path, None if done.cancelled() or done.exception() else done.result(), keep, published))
            # A moment later: the notifying thread (the stacking pipeline) gets
            # the GIL back first instead of competing with a waking reader thread.
            self.site.loop.call_later(NOTIFY_READ_DELAY, read)

    def _read_done(self, path, snapshot, keep, published):
        self._running = False
        self._announce_logged(path, snapshot, keep, published)
        self._start()

    def _announce_logged(self, path, snapshot, keep, published):
        try:
            self._announce(path, snapshot, keep, published)
        except Exception:
            log.exception("new image %s could not be announced", path)

    def _settle(self):
        while self._written:
            path, published = self._written.popleft()
            if published.snapshot is not None:
                self.site.files.cache.settle(path, published.snapshot, published.key)

    def _announce(self, path, snapshot, keep, published):
        """On the loop: serve the new copy, keep the frame, tell the browsers."""
        site, history = self.site, self.history
        if site.hub.stopping:
            return
        if snapshot is None:            # stayed incomplete: browsers get what is served
            site.hub.broadcast(NEW_IMAGE_MESSAGE)
            return
        cache = site.files.cache
        if published is not None and not published.written:
            published.snapshot = snapshot
            cache.pin(path, snapshot)
        elif published is not None:
            if published.key is not None:
                cache.put(path, FileSnapshot(published.key, snapshot.body, published.key[2] / 1e9))
        else:
            cache.put(path, snapshot)
        if self.routes.bundle is not None:
            self.routes.live_path = path
        frame = self._new_frame(path, snapshot.body, keep)
        if history is not None:
            history.set_live(self.last_frame_id)
            live = history.frame(self.last_frame_id)
            if live is not None:
                site.hub.broadcast(json.dumps(dict(live.as_json(), type="history_entry")))
        site.hub.broadcast(NEW_IMAGE_MESSAGE)
        log.info("new image %s (%.1f MB), %d browsers", os.path.basename(path),
                 len(snapshot.body) / 1e6, len(site.hub.clients))
        if frame is not None:
            stored = site.loop.run_in_executor(None, history.store, frame)
            stored.add_done_callback(lambda future: self._stored(frame, future))

    def _new_frame(self, path, body, keep):
        """The history frame of a new image, None for the same image again
        or the waiting image (last_frame_id: the frame now live)."""
        if not keep or body == self.waiting_body:
            self.last_frame_id = None
        elif body != self.last_body:
            self.last_frame_id = None
            if self.history is not None:
                ext = ".png" if content_type_for(path) == "image/png" else ".jpg"
                frame = self.history.reserve(body, ext, time.time(), *read_metrics(self.web_folder))
                if frame is not None:
                    self.last_frame_id = frame.id
                self.last_body = body
                return frame
        self.last_body = body
        return None

    def _stored(self, frame, future):
        """On the loop: the frame's file is written; its copy in the cache
        serves it from now on (no disk read)."""
        history = self.history
        try:
            key = future.result()
        except Exception:
            log.exception("history frame %d could not be written", frame.id)
            key = None
        snapshot = history.pending.get(frame.id)
        if key is not None and snapshot is not None:
            self.site.files.cache.put(history.path_of(frame), FileSnapshot(key, snapshot.body, frame.time))
        history.release(frame)


# -- 6d. The running server: its thread, ImageServer, ALS's facade --------------

class SiteThread:
    """A Site on its own event loop, in a thread named ``alsserve``: start()
    returns once the site accepts connections on the bound socket (or
    raises what kept it from starting); stop() runs STOP and ends the loop
    and the thread."""

    def __init__(self, site):
        self.site = site
        self.loop = asyncio.new_event_loop()
        # Disk work (big reads, new images, history frames) runs here; its
        # threads end with the site (the loop's default executor's would
        # linger after close).
        self.executor = concurrent.futures.ThreadPoolExecutor(IO_THREADS, "alsserve-io")
        self.loop.set_default_executor(self.executor)
        self.thread = None

    @property
    def alive(self):
        return self.thread is not None and self.thread.is_alive()

    def start(self, sock):
        loop, ready, failure = self.loop, threading.Event(), []

        def run():
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.site.start(sock))
            except BaseException as error:      # reported to start()
                failure.append(error)
                ready.set()
                self.close_loop()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                # A connection accepted as the listener closed may still be
                # pending: cancel it and let it end, so it closes its socket
                # rather than being destroyed with the loop.
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                loop.run_until_complete(loop.shutdown_asyncgens())
                self.close_loop()

        self.thread = threading.Thread(target=run, name="alsserve", daemon=True)
        self.thread.start()
        ready.wait()
        if failure:
            self.thread.join()
            raise failure[0]

    def close_loop(self):
        # The disk work ends first (a frame being written is finished): a job
        # ending after close would report to a closed loop (an error on 3.8).
        self.executor.shutdown(wait=True)
        self.loop.close()

    def stop(self, grace):
        loop = self.loop
        try:
            future = asyncio.run_coroutine_threadsafe(self.site.shutdown(grace), loop)
            future.result(grace + 5)
        except Exception:
            log.exception("error while stopping the image server")
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self.thread.join(10)


class ImageServer:
    """The image server of one web folder: START, STOP, notify, publish.

    ``start()`` validates everything, binds the port in the caller's thread,
    then publishes (ALS mode) and runs the event loop in a thread named
    ``alsserve``, and returns the displayed URL; a start that fails writes
    nothing. Every other method may be called from any thread; none waits
    on a browser.

    ALS mode (the default): START publishes the viewer bundle and the
    waiting image into the web folder, and data.json when there is none.
    ``publish=False``: the folder is served as it is (ALS's facade: ALS
    writes its own files). ``read_only=True`` (watch mode): nothing is ever
    written into the web folder; the viewer is served from the bundle in
    place, web_image.jpg stands for ``live_image`` (a file of the folder)
    and then for each image given to announce_image(), the waiting image
    until there is one; the history is kept outside the folder.
    """

    def __init__(self, web_folder, port=DEFAULT_PORT, displayed_address="auto", assets_dir=None,
                 publish=True, read_only=False, bind=WEB_SERVER_BIND_HOST, create_folder=False,
                 history_frames=HISTORY_FRAMES, history_bytes=HISTORY_BYTES, history_dir=None,
                 live_image=None, **site_options):
        self.web_folder = web_folder
        self.port = port
        self.address_preference = displayed_address
        self.assets_dir = assets_dir
        self.publish = publish and not read_only
        self.read_only = read_only
        self.bind = bind
        self.create_folder = create_folder      # the command line's default folder
        self.history_frames = history_frames
        self.history_bytes = history_bytes
        self.history_dir = history_dir
        self.live_image = live_image
        self.site_options = site_options
        self.displayed_address = None
        self.access_limited = False
        self.url = None
        self._lock = threading.Lock()
        self._loop = None
        self._thread = None
        self._site = None
        self._announcer = None
        self._routes = None
        self._history = None

    @property
    def running(self):
        return self._thread is not None and self._thread.alive

    @property
    def client_count(self):
        return self.browser_counts[0]

    @property
    def browser_counts(self):
        """(connected now, joined since start, left since start)."""
        site = self._site
        if site is None:
            return 0, 0, 0
        return len(site.hub.clients), site.hub.joined, site.hub.left

    @property
    def history(self):
        """The frames of the history, oldest first, as history.json lists them."""
        history = self._history
        return history.as_list() if history is not None else []

    # -- START -------------------------------------------------------------

    def start(self):
        with self._lock:
            if self.running:
                return self.url
            web_folder, assets_dir, history_dir = self._check()
            sock = bind_listener(self.port, self.bind)
            try:
                self.web_folder = web_folder
                routes = self._publish(assets_dir, history_dir)
                self._start_thread(sock, routes, assets_dir)
            except BaseException:
                sock.close()
                raise
            address = displayed_address_for(self.address_preference, self.bind)
            self.displayed_address = address
            self.access_limited = ipaddress.IPv4Address(address).is_loopback
            self.url = "http://%s:%d/" % (address, self.port)
            if self.access_limited:
                log.warning("image server access is limited to this machine: the displayed address %s "
                            "is a loopback address. Connect to a network (or start a hotspot), "
                            "then restart", address)
            log.debug("serving %s at %s", web_folder, self.url)
            return self.url

    def _check(self):
        """Every setting checked before anything is bound or written."""
        check_port(self.port)
        check_bind_address(self.bind)
        parse_address_preference(self.address_preference)
        web_folder = check_web_folder(self.web_folder, writable=not self.read_only,
                                      may_create=self.create_folder)
        assets_dir = self._assets_folder()
        if (self.publish or self.read_only) and not os.path.isdir(assets_dir):
            raise ValueError("assets folder %s does not exist" % assets_dir)
        history_dir = history_folder(web_folder, self.read_only, self.history_dir,
                                     self.history_frames, self.history_bytes)
        return web_folder, assets_dir, history_dir

    def _publish(self, assets_dir, history_dir):
        """After the bind: the folder's files (ALS mode) and the history."""
        web_folder = self.web_folder
        if self.create_folder:
            os.makedirs(web_folder, exist_ok=True)
        if self.publish:
            publish_assets(assets_dir, web_folder)
            if not os.path.exists(os.path.join(web_folder, IMAGE_NAME)):
                publish_waiting_image(web_folder, assets_dir)
            if not os.path.exists(os.path.join(web_folder, METRICS_NAME)):
                write_metrics(web_folder, 0, 0)
        history = None
        if history_dir is not None:
            history = History(history_dir, self.history_frames, self.history_bytes)
            history.open()
        self._history = history
        if self.read_only:
            live = self.live_image if self.live_image and is_inside(self.live_image, web_folder) \
                else waiting_image_path(assets_dir)
            return Routes(history, bundle_files(assets_dir), live)
        # ALS's facade (ALS writes its own files): what ALS 1.0 sends for them.
        return Routes(history, no_store=() if self.publish else (IMAGE_NAME, METRICS_NAME))

    def _start_thread(self, sock, routes, assets_dir):
        site = Site(self.web_folder, routes, **self.site_options)
        waiting = waiting_image_path(assets_dir)
        announcer = Announcer(site, routes, self.web_folder, read_file(waiting) if waiting else None)
        self._image_path = os.path.join(self.web_folder, IMAGE_NAME)
        announcer.resume(routes.live_path if routes.bundle is not None else self._image_path)
        thread = SiteThread(site)
        thread.start(sock)
        self._thread, self._loop, self._site, self._announcer = thread, thread.loop, site, announcer
        self._routes = routes

    # -- while running -----------------------------------------------------

    def notify_browsers_about_new_image(self):
        """Tell every browser to reload the image (after writing web_image.jpg
        yourself). Returns at once, from any thread: the file is read once
        and checked whole off the event loop, then announced."""
        self.announce_image()

    def announce_image(self, path=None):
        """A new image is at path (default: the live image, web_image.jpg in
        ALS mode): make it the live image and a history frame, then tell the
        browsers. Returns at once, from any thread. Watch mode passes the
        newest image of the folder."""
        announcer, routes = self._announcer, self._routes
        if announcer is None:
            return
        if path is None:                # (no path work: the stacking pipeline's thread waits)
            path = routes.live_path if routes.bundle is not None else self._image_path
        elif not is_inside(path, self.web_folder):
            raise ValueError("%s is not in the web folder %s" % (path, self.web_folder))
        else:
            path = os.path.abspath(path)
        self._request(announcer, path)

    def _request(self, announcer, path, data=None, keep=True, published=None):
        try:
            announcer.request(path, data, keep, published)
        except RuntimeError:            # the loop closed in between: stopped
            pass

    def send_message_text(self, text):
        site, loop = self._site, self._loop
        if site is None or loop is None or loop.is_closed():
            return
        try:
            site.hub.request_broadcast(text)
        except RuntimeError:            # the loop closed in between: stopped
            pass

    def publish_image(self, data_or_path):
        """Atomically replace web_image.jpg (bytes or a JPEG file), then
        announce it: browsers get it from memory, no disk read."""
        if isinstance(data_or_path, (bytes, bytearray, memoryview)):
            data = bytes(data_or_path)
        else:
            data = read_file(os.fspath(data_or_path))
        check_jpeg(data)
        path = os.path.join(self._writable_folder(), IMAGE_NAME)
        self._publish_bytes(path, data)

    def _publish_bytes(self, path, data, keep=True):
        """Announce the bytes (served from memory at once) and write the
        file meanwhile: the announcement does not wait for the disk."""
        announcer, published = self._announcer, PublishedImage()
        if announcer is not None:
            self._request(announcer, path, data, keep, published)
        try:
            atomic_write(path, data)
            published.key = stat_key(os.stat(path))
        finally:
            if announcer is not None:
                try:
                    announcer.written(path, published)
                except RuntimeError:    # the loop closed in between: stopped
                    pass

    def update_metrics(self, stack_size, total_exposure_seconds):
        """Atomically rewrite data.json. Browsers re-read it on the next notify."""
        write_metrics(self._writable_folder(), stack_size, total_exposure_seconds)

    def reset_image(self):
        """New session: the waiting image and zero metrics come back, a new
        history starts, then notify."""
        folder = self._writable_folder()
        write_metrics(folder, 0, 0)
        if self._history is not None:
            self._history.new_session()
        waiting = waiting_image_path(self._assets_folder())
        if waiting is not None:
            self._publish_bytes(os.path.join(folder, IMAGE_NAME), read_file(waiting), keep=False)

    def _writable_folder(self):
        if self.read_only:
            raise ValueError("this server only watches %s: it writes nothing into it" % self.web_folder)
        return check_web_folder(self.web_folder)

    def _assets_folder(self):
        return os.path.abspath(self.assets_dir or DEFAULT_ASSETS_DIR)

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
                self._thread = self._loop = self._site = self._announcer = None
                self.url = None
            log.debug("image server stopped")

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


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
        return ImageServer(folder, port=port, bind=host or WEB_SERVER_BIND_HOST, publish=False)

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


def has_end_marker(path, size, content_type):
    """The last bytes of a JPEG (EOI) or PNG (IEND chunk) are in place."""
    marker = PNG_END if content_type == "image/png" else b"\xff\xd9"
    try:
        with open(path, "rb") as f:
            f.seek(max(0, size - len(marker)))
            return f.read(len(marker)) == marker
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
        self.image = None               # (path, key) of the image announced last
        self.candidate = None           # ((path, key), first seen at)
        self.metrics_candidate = None
        self.acknowledge()

    def acknowledge(self):
        """Take what is in the folder now as known (at start, and after we
        published into it ourselves); return the newest complete image."""
        self.metrics = self._metrics_key()
        self.candidate = self.metrics_candidate = None
        return self.newest_complete()

    def _matches(self):
        """(mtime_ns, name, path, key) of each image matching the pattern."""
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
                found.append((st.st_mtime_ns, name, entry.path, stat_key(st)))
        return found

    def _metrics_key(self):
        try:
            return stat_key(os.stat(os.path.join(self.folder, METRICS_NAME)))
        except OSError:
            return None

    def newest_complete(self):
        """The newest matching image that is complete now (no two polls to
        wait for: what a start shows first), or None."""
        for _mtime, name, path, key in sorted(self._matches(), reverse=True):
            if has_end_marker(path, key[1], content_type_for(name)):
                self.image = (path, key)
                return path
        return None

    def poll(self, now=None):
        """(path of a new complete image or None, whether data.json changed)."""
        now = time.monotonic() if now is None else now
        matches = self._matches()
        new_image = None
        if matches:
            mtime, name, path, key = max(matches)
            current = (path, key)
            if current == self.image or (self.image is not None and mtime < self.image[1][2]):
                self.candidate = None
            elif self.candidate is None or self.candidate[0] != current:
                self.candidate = (current, now)
            elif has_end_marker(path, key[1], content_type_for(name)) \
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
    parser.add_argument("--trust-proxy", metavar="ADDRESS", default=None,
                        help="a reverse proxy at ADDRESS (e.g. 127.0.0.1 for nginx on this "
                             "machine): log the client address it sends in X-Forwarded-For")
    history = parser.add_mutually_exclusive_group()
    history.add_argument("--history", type=int, default=HISTORY_FRAMES, metavar="N",
                         help="keep the last N images for the viewer's timeline (default: %d; "
                              "watch mode keeps them in the user's cache folder)" % HISTORY_FRAMES)
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


# -- terminal QR code ----------------------------------------------------------

# The terminal QR code (ISO/IEC 18004): byte mode, level M, versions 1-10.
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


def terminal_has_colours(stream=None):
    """Whether escape sequences reach the screen as colours. POSIX
    terminals, pipes and logs: yes. A Windows console: once virtual
    terminal processing is switched on (Windows 10 and later)."""
    if os.name != "nt":
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
    mode = "watch mode, nothing is written into it" if server.read_only else "ALS mode"
    lines = ["alsserve %s - live image server" % __version__,
             "  Web folder: %s (%s)" % (server.web_folder, mode)]
    if watching:
        lines.append("  Image:      newest %s" % watching)
    lines.append("  Open:       %s" % server.url)
    if server.bind == WEB_SERVER_BIND_HOST:
        for address in list_ipv4_addresses():
            if address != server.displayed_address:
                lines.append("  Also:       http://%s:%d/" % (address, port))
    if qr:
        lines.append("")
        lines.extend("  " + row for row in qr_to_terminal(server.url, colours=terminal_has_colours()).splitlines())
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
    if args.history < 0:
        raise ValueError("--history must be 0 or more, got %d" % args.history)
    options = {}
    if args.trust_proxy is not None:
        try:
            options["trusted_proxy"] = str(ipaddress.ip_address(args.trust_proxy))
        except ValueError:
            raise ValueError("--trust-proxy needs an IP address, got %r" % args.trust_proxy) from None
    return ImageServer(args.web_folder or default_folder, port=port, displayed_address=args.address,
                       assets_dir=os.path.abspath(args.assets or DEFAULT_ASSETS_DIR),
                       read_only=watch_mode, bind=args.bind, create_folder=args.web_folder is None,
                       history_frames=args.history, **options)


def _run(args):
    if args.list_addresses:
        print_addresses()
        return 0
    server = _server_from_arguments(args)
    demo = DemoSession(server, server._assets_folder()) if args.demo else None
    stop = threading.Event()
    previous_handlers = _install_signal_handlers(stop)
    try:
        # What the folder holds now is the first live image (watch mode).
        watcher = FolderWatcher(server.web_folder, args.image) if args.watch or server.read_only else None
        first = watcher.image[0] if watcher is not None and watcher.image else None
        server.live_image = first
        server.start()
        qr = sys.stdout.isatty() if args.qr is None else args.qr
        print(startup_block(server, qr, args.image if server.read_only else None), flush=True)
        print("Serving. Press Ctrl-C to stop.", flush=True)
        if server.read_only:
            if first is not None:
                server.announce_image(first)        # a history frame, unless it is the last one
            if not args.watch:
                watcher = None
        summary = BrowserSummary(server)
        next_demo = time.monotonic()
        while not stop.is_set():
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
            stop.wait(WATCH_INTERVAL)
    finally:
        server.stop()
        _restore_signal_handlers(previous_handlers)
    print("alsserve stopped.", flush=True)
    return 0


def _install_signal_handlers(stop):
    """Ctrl-C and SIGTERM stop gracefully, even when the shell ignored SIGINT."""
    previous = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGINT", "SIGTERM", "SIGBREAK"):
        number = getattr(signal, name, None)
        if number is not None:
            try:
                previous[number] = signal.signal(number, lambda *_: stop.set())
            except (OSError, ValueError):
                pass
    return previous


def _restore_signal_handlers(previous):
    for number, handler in previous.items():
        signal.signal(number, handler)


if __name__ == "__main__":
    sys.exit(main())
