"""
The ASGI HTTP/1.1 path (L{gracesvc._asgi.http1}) in a real C{twistd -n
gracesvc --asgi} process, with raw sockets, curl and the C{websockets}
library: the protocol, and the drain per kind of connection.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time

import websockets

from gracesvc.testing import get, parseEventStream
from gracesvc.testing.process import CurlStream, MasterProcess, RawClient
from tests.support.endtoend import EndToEndTestCase, waitFor, waitForInFlight

APP = "tests.apps.rawasgi:app"


class ProtocolTests(EndToEndTestCase):
    def test_protocol(self) -> None:
        """
        Keep-alive, pipelining in order, chunked bodies both ways,
        C{Expect: 100-continue}, HEAD/204/304 without a body, 400 and 431
        with a close, a 500 for an application that raised.
        """
        twistd = self.startTwistd("--asgi", APP)
        port = twistd.port
        with RawClient(port) as client:
            client.send(b"".join(get(f"/p{i}") for i in range(20)))
            bodies = [client.readResponse().body for _ in range(20)]
            self.assertEqual(bodies, [b"/p%d" % i for i in range(20)])
            client.send(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
            self.assertEqual(client.readResponse().body, b"hello world")
            client.send(
                b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            while b"\r\n\r\n" not in client.buffer:
                client._fill()
            self.assertEqual(client.buffer, b"HTTP/1.1 100 Continue\r\n\r\n")
            client.buffer = b""
            client.send(b"abcde")
            self.assertEqual(client.readResponse().body, b"abcde")
            client.send(
                b"HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"
                + get("/status/204")
                + get("/status/304")
                + get("/after")
            )
            time.sleep(0.3)
            client._fill()
            raw = client.buffer
            self.assertEqual(raw.count(b"HTTP/1.1 "), 4)
            self.assertNotIn(b"no body", raw)
            self.assertTrue(raw.endswith(b"/after"))
        with RawClient(port) as client:
            # (RawClient reads one chunked response per connection.)
            client.send(get("/stream"))
            streamed = client.readResponse()
            self.assertEqual(streamed.headers[b"transfer-encoding"], b"chunked")
            self.assertEqual(streamed.body, b"one,two,three")
        with RawClient(port) as client:
            client.send(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
            self.assertEqual(client.readResponse().code, 400)
            self.assertTrue(client.waitForClose())
        with RawClient(port) as client:
            client.send(b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
            self.assertEqual(client.readResponse().code, 431)
        with RawClient(port) as client:
            client.send(get("/error"))
            response = client.readResponse()
            self.assertEqual(response.code, 500)
            self.assertEqual(response.headers[b"connection"], b"close")
        log = twistd.log()
        self.assertEqual(log.count("Exception in ASGI application"), 1)
        self.assertIn('"GET /p0 HTTP/1.1" 200 3', log)


class DrainTests(EndToEndTestCase):
    def test_eachKindOfConnection(self) -> None:
        """
        At SIGTERM: the request in flight is answered (with C{Connection:
        close}), the idle keep-alive connection closed, the event stream
        ended by the server with its goodbye (curl exits 0) and the
        application told C{http.disconnect}, the WebSocket closed 1001 with
        its closing handshake and the application told 1001; the process
        exits right after the last of them.
        """
        twistd = self.startTwistd("--asgi", APP, "--shutdown-timeout", "5")
        port = twistd.port
        idle = RawClient(port)
        self.addCleanup(idle.close)
        idle.send(get("/warm"))
        idle.readResponse()
        busy = RawClient(port)
        self.addCleanup(busy.close)
        busy.send(get("/sleep/1"))
        stream = CurlStream(port, "/events")
        self.addCleanup(stream.kill)
        self.assertTrue(stream.waitFor(b"data: 1\n\n"))
        closed: list[object] = []

        async def webSocket() -> None:
            async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("hi")
                self.assertEqual(await ws.recv(), "hi")
                opened.set()
                try:
                    await ws.recv()
                except websockets.ConnectionClosedOK as e:
                    closed.append(e.rcvd.code if e.rcvd else None)
                except websockets.ConnectionClosed as e:
                    closed.append(e)

        opened = threading.Event()
        thread = threading.Thread(target=asyncio.run, args=(webSocket(),))
        thread.start()
        self.assertTrue(opened.wait(5))
        time.sleep(0.1)
        twistd.signal(signal.SIGTERM)
        self.assertTrue(idle.waitForClose())
        response = busy.readResponse()
        self.assertEqual((response.code, response.body), (200, b"/sleep/1"))
        self.assertEqual(response.headers[b"connection"], b"close")
        answeredAt = time.monotonic()
        self.assertEqual(stream.wait(5), 0)
        events = parseEventStream(stream.output)
        self.assertIn("retry", events[-1])
        thread.join(5)
        self.assertEqual(closed, [1001])
        twistd.wait(5)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - answeredAt, 0.5)
        log = twistd.log()
        waitFor(lambda: "Server exiting (drained)" in log, 1, lambda: log)
        self.assertIn("stream http.disconnect", log)
        self.assertIn("websocket 1001", log)
        self.assertIn("ASGI lifespan shutdown complete", log)
        self.assertCleanLog(twistd)

    def test_cut(self) -> None:
        """
        A request over the cap: 503 with C{Retry-After} at the cut, its task
        cancelled (not logged as an error); the process exits within the
        cap.
        """
        twistd = self.startTwistd("--asgi", APP, "--shutdown-timeout", "1")
        with RawClient(twistd.port) as client:
            client.send(get("/sleep/30"))
            waitForInFlight(twistd.port, 1)
            sentAt = twistd.signal(signal.SIGTERM)
            response = client.readResponse()
            self.assertEqual(response.code, 503)
            self.assertEqual(response.headers[b"retry-after"], b"1")
        twistd.wait(3)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 1.2)
        self.assertCleanLog(twistd)


class LoopTests(EndToEndTestCase):
    def test_asyncioLoop(self) -> None:
        """
        C{--asgi-loop asyncio}: the same path on the standard library's
        loop.
        """
        twistd = self.startTwistd("--asgi", APP, "--asgi-loop", "asyncio")
        with RawClient(twistd.port) as client:
            client.send(get("/a") + get("/b"))
            self.assertEqual(client.readResponse().body, b"/a")
            self.assertEqual(client.readResponse().body, b"/b")
        sentAt = twistd.signal(signal.SIGTERM)
        twistd.wait(5)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 1.0)
        self.assertCleanLog(twistd)

    def test_workersSeenToEnd(self) -> None:
        """
        C{--workers 2 --asgi}, on uvloop when it is installed: the master
        hears each worker end (uvloop takes the signal wakeup descriptor
        from Twisted's child waker), so a reload retires the old generation
        and SIGTERM ends the tree at once, not at the cap.
        """
        master = MasterProcess("--asgi", APP, "--shutdown-timeout", "10")
        self.addCleanup(master.kill)
        master.waitUntilReady()
        old = set(master.workers())
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=2)
        waitFor(
            lambda: not old & set(master.workers()),
            5,
            lambda: f"old workers not reaped:\n{master.log()}",
        )
        with RawClient(master.port) as client:
            client.send(get("/after-reload"))
            self.assertEqual(client.readResponse().body, b"/after-reload")
        sentAt = master.signal(signal.SIGTERM)
        master.wait(8)
        assert master.exitedAt is not None
        self.assertLess(master.exitedAt - sentAt, 3.0)
