"""The benchmark's stand-in for ALS 0.7's server (als.streams.network.Server).

Same shape as ALS 0.7: an aiohttp web.Application in a thread with its own
event loop, a static route for the web folder, ``/`` -> index.html, ``/ws``
keeping a plain list of WebSocketResponse, and a broadcast that loops over
the clients awaiting each ``send_str``; ``stop()`` says disconnect, sleeps
2 s, cleans up and stops the loop. Written for the benchmark (not copied).
"""
import asyncio
import json
import os
import threading
import time

from aiohttp import web


class Server:
    def __init__(self, static_path, port=8000, host="127.0.0.1"):
        self.static_path = static_path
        self.port = port
        self.host = host
        self.websockets = []
        self.transports = {}        # bench introspection only (stall check)
        self.loop = None
        self.runner = None
        self.ready = threading.Event()

    # ALS: threading.Thread(target=server.start).start()
    def start(self):
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_get("/ws", self.websocket_handler)
        app.router.add_get("/", self.index)
        app.router.add_static("/", path=self.static_path)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, self.host, self.port)
        self.loop.run_until_complete(site.start())
        self.ready.set()
        self.loop.run_forever()

    async def index(self, request):
        return web.FileResponse(os.path.join(self.static_path, "index.html"))

    async def websocket_handler(self, request):
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self.websockets.append(ws)
        self.transports[id(ws)] = request.transport
        try:
            async for _msg in ws:
                pass
        finally:
            self.websockets.remove(ws)
            self.transports.pop(id(ws), None)
        return ws

    async def _broadcast(self, text):
        for ws in list(self.websockets):
            try:
                await ws.send_str(text)
            except ConnectionError:
                pass

    def send_message(self, message):
        asyncio.run_coroutine_threadsafe(self._broadcast(json.dumps(message)), self.loop)

    def send_text(self, text):
        asyncio.run_coroutine_threadsafe(self._broadcast(text), self.loop)

    def stop(self):
        self.send_message({"type": "disconnect"})
        time.sleep(2)
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)


if __name__ == "__main__":
    import sys
    server = Server(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 8000)
    threading.Thread(target=server.start, daemon=True).start()
    server.ready.wait()
    print("serving on http://127.0.0.1:%d/" % server.port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()
