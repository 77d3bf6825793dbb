"""Interop: real WebSocket client libraries against a real ImageServer.

The `websockets` library (asyncio API) and aiohttp's ClientSession.ws_connect
connect to /ws, receive new_image and disconnect, ping, close cleanly, and
(websockets) see close code 1009 for a message over the 64 KiB limit.

Needs tests/requirements-extra.txt (`make venv`); run with `make interop`.
"""
import asyncio
import os
import shutil
import socket
import sys
import tempfile
import unittest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

import alsserve  # noqa: E402

try:
    import websockets
    from websockets.asyncio.client import connect as ws_connect
except ImportError:             # reported per test, not as an import crash
    websockets = None
try:
    import aiohttp
except ImportError:
    aiohttp = None

NEW_IMAGE = '{"type": "new_image"}'
DISCONNECT = '{"type": "disconnect"}'
TIMEOUT = 5.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerCase(unittest.IsolatedAsyncioTestCase):
    """One ImageServer per test on 127.0.0.1:<free port> over a temp folder."""

    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="alsserve-interop-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.port = free_port()
        self.server = alsserve.ImageServer(self.folder, port=self.port, displayed_address="ip:127.0.0.1")
        self.server.start()
        self.addCleanup(self.server.stop, 0.5)
        self.url = "ws://127.0.0.1:%d/ws" % self.port

    async def wait_for_count(self, count):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + TIMEOUT
        while self.server.client_count != count:
            if loop.time() > deadline:
                self.fail("client_count stayed %d, expected %d" % (self.server.client_count, count))
            await asyncio.sleep(0.01)

    def stop_server(self, grace):
        """stop() blocks: run it in a thread while the client keeps reading;
        returns a future to await."""
        return asyncio.get_running_loop().run_in_executor(None, self.server.stop, grace)


@unittest.skipIf(websockets is None, "the websockets library is not installed (make venv)")
class WebsocketsLibraryTest(ServerCase):

    def connect(self, **options):
        options.setdefault("open_timeout", TIMEOUT)
        options.setdefault("close_timeout", TIMEOUT)
        options.setdefault("ping_interval", None)       # our own pings only
        return ws_connect(self.url, proxy=None, compression=None, **options)

    async def test_new_image_ping_and_clean_close(self):
        async with self.connect() as ws:
            await self.wait_for_count(1)
            self.server.notify_browsers_about_new_image()
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), NEW_IMAGE)
            pong = await ws.ping(b"interop")
            latency = await asyncio.wait_for(pong, TIMEOUT)
            self.assertGreaterEqual(latency, 0)
            await ws.close()
            self.assertEqual(ws.close_code, 1000)
            self.assertIsNotNone(ws.close_exc)
            self.assertIsInstance(ws.close_exc, websockets.ConnectionClosedOK)
        await self.wait_for_count(0)

    async def test_default_compression_offer_declined(self):
        # The library offers permessage-deflate by default; the server
        # negotiates nothing and messages still arrive.
        async with ws_connect(self.url, proxy=None, open_timeout=TIMEOUT, ping_interval=None) as ws:
            self.assertIsNone(ws.response.headers.get("Sec-WebSocket-Extensions"))
            await self.wait_for_count(1)
            self.server.notify_browsers_about_new_image()
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), NEW_IMAGE)

    async def test_library_keepalive(self):
        # The library's own keepalive pings get answered for a while.
        async with self.connect(ping_interval=0.2, ping_timeout=0.5) as ws:
            await asyncio.sleep(1.2)            # several pings, each answered in time
            self.assertEqual(ws.state, websockets.protocol.State.OPEN)
            self.server.notify_browsers_about_new_image()
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), NEW_IMAGE)

    async def test_disconnect_on_stop(self):
        async with self.connect() as ws:
            await self.wait_for_count(1)
            stopping = self.stop_server(3.0)
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), DISCONNECT)
            await ws.close()                            # what the viewer page does
            self.assertEqual(ws.close_code, 1000)
            await asyncio.wait_for(stopping, TIMEOUT)
        self.assertFalse(self.server.running)

    async def test_stop_closes_1001_when_client_ignores_disconnect(self):
        async with self.connect() as ws:
            await self.wait_for_count(1)
            stopping = self.stop_server(0.5)
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), DISCONNECT)
            with self.assertRaises(websockets.ConnectionClosedOK):
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            self.assertEqual(ws.close_code, 1001)
            await asyncio.wait_for(stopping, TIMEOUT)

    async def test_fragmented_message_accepted(self):
        async with self.connect() as ws:
            await self.wait_for_count(1)
            await ws.send(["κό", "σμ", "ε"])              # one text message in 3 frames
            await ws.send([b"\x00" * 1000, b"\x01" * 1000])
            pong = await ws.ping(b"after")
            await asyncio.wait_for(pong, TIMEOUT)         # still open, nothing echoed
            self.server.notify_browsers_about_new_image()
            self.assertEqual(await asyncio.wait_for(ws.recv(), TIMEOUT), NEW_IMAGE)
            await ws.close()
            self.assertEqual(ws.close_code, 1000)

    async def test_message_at_the_limit_accepted(self):
        async with self.connect() as ws:
            await ws.send(b"x" * (64 * 1024))
            pong = await ws.ping()
            await asyncio.wait_for(pong, TIMEOUT)

    async def test_large_message_closed_1009(self):
        async with self.connect() as ws:
            await self.wait_for_count(1)
            await ws.send("x" * 70000)
            with self.assertRaises(websockets.ConnectionClosedError) as caught:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            self.assertEqual(caught.exception.rcvd.code, 1009)
            self.assertEqual(ws.close_code, 1009)
        await self.wait_for_count(0)

    async def test_large_fragmented_message_closed_1009(self):
        async with self.connect() as ws:
            await ws.send([b"x" * 40000, b"y" * 40000])
            with self.assertRaises(websockets.ConnectionClosedError) as caught:
                await asyncio.wait_for(ws.recv(), TIMEOUT)
            self.assertEqual(caught.exception.rcvd.code, 1009)

    async def test_many_clients(self):
        clients = [await self.connect().__aenter__() for _ in range(20)]
        try:
            await self.wait_for_count(20)
            self.server.notify_browsers_about_new_image()
            received = await asyncio.wait_for(asyncio.gather(*(ws.recv() for ws in clients)), TIMEOUT)
            self.assertEqual(received, [NEW_IMAGE] * 20)
        finally:
            for ws in clients:
                await ws.close()
        self.assertEqual({ws.close_code for ws in clients}, {1000})
        await self.wait_for_count(0)


@unittest.skipIf(aiohttp is None, "aiohttp is not installed (make venv)")
class AiohttpClientTest(ServerCase):

    async def asyncSetUp(self):
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3 * TIMEOUT))

    async def asyncTearDown(self):
        await self.session.close()

    async def test_new_image_ping_and_clean_close(self):
        ws = await self.session.ws_connect(self.url, autoping=False, autoclose=False)
        await self.wait_for_count(1)
        self.server.notify_browsers_about_new_image()
        msg = await ws.receive(TIMEOUT)
        self.assertEqual((msg.type, msg.data), (aiohttp.WSMsgType.TEXT, NEW_IMAGE))
        self.assertEqual(msg.json(), {"type": "new_image"})
        await ws.ping(b"aiohttp")
        msg = await ws.receive(TIMEOUT)
        self.assertEqual((msg.type, msg.data), (aiohttp.WSMsgType.PONG, b"aiohttp"))
        self.assertTrue(await ws.close())
        self.assertEqual(ws.close_code, 1000)
        self.assertIsNone(ws.exception())
        await self.wait_for_count(0)

    async def test_disconnect_on_stop(self):
        ws = await self.session.ws_connect(self.url)
        await self.wait_for_count(1)
        stopping = self.stop_server(3.0)
        msg = await ws.receive(TIMEOUT)
        self.assertEqual((msg.type, msg.json()), (aiohttp.WSMsgType.TEXT, {"type": "disconnect"}))
        await ws.close()
        self.assertEqual(ws.close_code, 1000)
        self.assertIsNone(ws.exception())
        await asyncio.wait_for(stopping, TIMEOUT)
        self.assertFalse(self.server.running)

    async def test_stop_closes_1001_when_client_ignores_disconnect(self):
        ws = await self.session.ws_connect(self.url)
        await self.wait_for_count(1)
        stopping = self.stop_server(0.5)
        msg = await ws.receive(TIMEOUT)
        self.assertEqual(msg.json(), {"type": "disconnect"})
        msg = await ws.receive(TIMEOUT)                 # autoclose answers the Close
        self.assertIn(msg.type, (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED))
        self.assertEqual(ws.close_code, 1001)
        self.assertIsNone(ws.exception())
        await asyncio.wait_for(stopping, TIMEOUT)

    async def test_autoping_session(self):
        # aiohttp's heartbeat pings the server and expects pongs.
        # (0.4 s: aiohttp gives the pong half of it, 0.1 s was too tight on a loaded machine)
        ws = await self.session.ws_connect(self.url, heartbeat=0.4)
        await asyncio.sleep(1.3)
        self.assertFalse(ws.closed)
        self.server.notify_browsers_about_new_image()
        msg = await ws.receive(TIMEOUT)
        self.assertEqual(msg.data, NEW_IMAGE)
        await ws.close()
        self.assertEqual(ws.close_code, 1000)

    async def test_large_message_closed_1009(self):
        ws = await self.session.ws_connect(self.url)
        await ws.send_bytes(b"x" * 70000)
        msg = await ws.receive(TIMEOUT)
        self.assertIn(msg.type, (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED))
        self.assertEqual(ws.close_code, 1009)
        await ws.close()
        await self.wait_for_count(0)


if __name__ == "__main__":
    unittest.main()
