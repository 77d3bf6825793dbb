"""The benchmark's fan-out reference: the websockets library's own server and
websockets' broadcast(), in a thread with its own event loop (like alsserve
and ALS), notified from another thread with call_soon_threadsafe. Library
defaults throughout (permessage-deflate when the client offers it)."""
import asyncio
import json
import threading

from websockets.asyncio.server import broadcast, serve


class Server:
    def __init__(self, port, host="127.0.0.1"):
        self.port = port
        self.host = host
        self.clients = set()
        self.loop = None
        self.ready = threading.Event()
        self._stop = None

    def start(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self):
        self._stop = asyncio.get_running_loop().create_future()
        async with serve(self.handler, self.host, self.port):
            self.ready.set()
            await self._stop

    async def handler(self, connection):
        self.clients.add(connection)
        try:
            async for _message in connection:
                pass
        finally:
            self.clients.discard(connection)

    def broadcast(self, text):
        broadcast(self.clients, text)

    def send_text(self, text):
        self.loop.call_soon_threadsafe(self.broadcast, text)

    def send_message(self, message):
        self.send_text(json.dumps(message))

    def stop(self):
        self.send_message({"type": "disconnect"})
        self.loop.call_soon_threadsafe(self._stop.set_result, None)
