"""The floor of the fresh-image benchmark: the least a Python server on
asyncio can do to hand a new image to its viewers.

A bare asyncio server in a thread of its own (as ALS runs its server): the
image is kept in memory, announced with the same two messages as alsserve
({"type": "history_entry", "url": "history/<id>.jpg"} then {"type": "new_image"}),
and each GET gets one transport.write() of a ready-made head and the whole
body: no file, no cache, no chunking, no limits, no checks. Not a server
anyone should run; what the machine and the harness allow. Written for the
benchmark.
"""
import asyncio
import base64
import hashlib
import json
import threading

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def text_frame(text):
    data = text.encode()
    if len(data) < 126:
        return bytes((0x81, len(data))) + data
    return bytes((0x81, 126)) + len(data).to_bytes(2, "big") + data


class Server:
    def __init__(self, port, host="127.0.0.1"):
        self.port, self.host = port, host
        self.loop = None
        self.ready = threading.Event()
        self.websockets = set()     # transports
        self.frame_id = 0
        self.image = b""
        self.head = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"

    def start(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(asyncio.start_server(self.handle, self.host, self.port, backlog=1024))
        self.ready.set()
        self.loop.run_forever()

    async def handle(self, reader, writer):
        transport = writer.transport
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                path = head.split(b" ", 2)[1]
                if path == b"/ws":
                    key = [line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                           if line.lower().startswith(b"sec-websocket-key:")][0]
                    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
                    transport.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                                    b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
                    self.websockets.add(transport)
                    try:
                        while await reader.read(65536):
                            pass        # client frames (pongs, close) are not looked at
                    finally:
                        self.websockets.discard(transport)
                    return
                transport.write(self.head)
                transport.write(self.image)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            transport.close()

    def _publish(self, data):
        self.frame_id += 1
        self.image = data
        self.head = ("HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                     % len(data)).encode()
        frame = text_frame(json.dumps({"type": "history_entry", "id": self.frame_id,
                                       "url": "history/%d.jpg" % self.frame_id}))
        new_image = text_frame(json.dumps({"type": "new_image"}))
        for transport in list(self.websockets):
            transport.write(frame + new_image)

    def publish(self, data):
        """From any thread: the new image, then the announcement."""
        self.loop.call_soon_threadsafe(self._publish, data)

    def send_text(self, text):
        frame = text_frame(text)
        self.loop.call_soon_threadsafe(lambda: [t.write(frame) for t in list(self.websockets)])

    def send_message(self, message):
        self.send_text(json.dumps(message))

    def stop(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
