"""
WebSockets end to end: a real C{twistd -n gracesvc}, real signals, and two
real clients: the C{websockets} library and a raw socket that builds and
parses its own frames (L{RawWebSocket}).  Bounds are generous; the tight
figures are C{bench/shutdown.py}'s.

The Autobahn test suite's fuzzing client runs against C{/ws} where a
Python 2.7 virtualenv with C{autobahntestsuite} exists (C{make autobahn}
makes it); elsewhere that test is skipped, saying why.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any

import twisted.test
import websockets
from websockets.exceptions import ConnectionClosedError, ConnectionClosedOK

from gracesvc.testing import get, samples
from gracesvc.testing.process import (
    OP_CLOSE,
    OP_PING,
    OP_TEXT,
    RawClient,
    RawWebSocket,
    freePort,
)
from tests.support.autobahn import fuzz, wstest
from tests.support.endtoend import EndToEndTestCase, waitForDraining, waitForServer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(coroutine: Callable[[], Awaitable[Any]], timeout: float = 20) -> Any:
    """
    Run an asyncio client to completion, bounded in time.
    """

    async def bounded() -> Any:
        return await asyncio.wait_for(coroutine(), timeout)

    return asyncio.run(bounded())


class WebSocketsLibraryTests(EndToEndTestCase):
    def test_echoThenGoodbyeThenClose1001(self) -> None:
        """
        C{websockets} clients: echo; at SIGINT each gets the goodbye, then
        a Close 1001 with its reason, and its iteration ends with
        C{ConnectionClosedOK}; the process exits right after.
        """
        twistd = self.startTwistd()
        url = f"ws://127.0.0.1:{twistd.port}/ws"

        async def clients() -> list[tuple[list[str], int | None, str | None]]:
            conns = [await websockets.connect(url) for _ in range(10)]
            for c in conns:
                await c.send("hello")
                self.assertEqual(await c.recv(), "hello")
            twistd.signal(signal.SIGINT)
            results: list[tuple[list[str], int | None, str | None]] = []
            for c in conns:
                received = [m async for m in c]  # ends on a clean close only
                assert isinstance(c.close_code, int)
                results.append(
                    ([str(m) for m in received], c.close_code, c.close_reason)
                )
            return results

        results = run(clients)
        status = twistd.wait(10)
        for received, code, reason in results:
            [message] = received
            self.assertEqual(json.loads(message)["type"], "goodbye")
            self.assertEqual((code, reason), (1001, "server shutting down"))
        self.assertEqual(status, -signal.SIGINT)
        log = twistd.log()
        self.assertIn("Going away: 10 long responses told to wrap up", log)
        self.assertIn(
            "Long-lived connections told to go away: websocket 10 clean, 0 timed "
            "out, 0 cut",
            log,
        )
        self.assertEqual(log.count('"GET /ws HTTP/1.1" 101'), 10)
        self.assertCleanLog(twistd)

    def test_closeCode1012(self) -> None:
        """
        C{--ws-close-code 1012}: the C{websockets} client sees a service
        restart, which it reports as an error close.
        """
        twistd = self.startTwistd("--ws-close-code", "1012")

        async def client() -> tuple[type[Exception], int | None]:
            async with websockets.connect(f"ws://127.0.0.1:{twistd.port}/ws") as c:
                twistd.signal(signal.SIGTERM)
                try:
                    async for _ in c:
                        pass
                except ConnectionClosedError as e:
                    return type(e), e.rcvd.code if e.rcvd else None
                return ConnectionClosedOK, c.close_code

        self.assertEqual(run(client), (ConnectionClosedError, 1012))
        twistd.wait(10)

    def test_messageTooBigIsClosedWith1009(self) -> None:
        twistd = self.startTwistd("--ws-max-message-size", "1000")

        async def client() -> tuple[str, int | None]:
            async with websockets.connect(f"ws://127.0.0.1:{twistd.port}/ws") as c:
                await c.send("x" * 1000)
                echoed = str(await c.recv())
                await c.send("x" * 1001)
                try:
                    await c.recv()
                except ConnectionClosedError as e:
                    return echoed, e.rcvd.code if e.rcvd else None
                return echoed, None

        self.assertEqual(run(client), ("x" * 1000, 1009))

    def test_openWebSocketsInMetrics(self) -> None:
        twistd = self.startTwistd()

        async def client() -> bytes:
            async with websockets.connect(f"ws://127.0.0.1:{twistd.port}/ws"):
                with RawClient(twistd.port) as c:
                    c.send(get("/metrics", "Connection: close"))
                    return c.readResponse().body

        scraped = samples(run(client))
        self.assertEqual(
            scraped[("gracesvc_open_connections", (("state", "websocket"),))], 1
        )


class KeepaliveTests(EndToEndTestCase):
    def test_answeringClientStaysDeadClientIsClosed(self) -> None:
        """
        Keepalive pings every 0.2 s: the C{websockets} client answers them
        and its WebSocket stays open and echoing; a raw client that never
        answers gets Close 1011 one ping timeout after the first ping.
        """
        twistd = self.startTwistd(
            "--ws-ping-interval", "0.2", "--ws-ping-timeout", "0.3"
        )
        dead = RawWebSocket(twistd.port)
        self.addCleanup(dead.disconnect)
        openedAt = time.monotonic()

        async def client() -> str:
            async with websockets.connect(
                f"ws://127.0.0.1:{twistd.port}/ws", ping_interval=None
            ) as c:
                # Five keepalive pings go by: staying open through them is
                # what is tested.
                await asyncio.sleep(1.0)
                await c.send("still here")
                return str(await c.recv())

        self.assertEqual(run(client), "still here")
        dead.readUntilClosed()
        assert dead.closedAt is not None
        self.assertEqual(dead.close, (1011, "keepalive ping timeout"))
        self.assertEqual([op for _, op, _ in dead.frames], [OP_PING, OP_CLOSE])
        self.assertGreater(dead.closedAt - openedAt, 0.45)
        self.assertLess(dead.closedAt - openedAt, 2.5)
        self.assertIn("no pong within 0.3 s of a keepalive ping", twistd.log())
        twistd.signal(signal.SIGINT)
        twistd.wait(10)
        self.assertCleanLog(twistd)


class SecureWebSocketTests(EndToEndTestCase):
    def test_wssDrains(self) -> None:
        """
        Over TLS: goodbye, Close 1001, the client's answer, then TCP closed
        at once (the client need not send close_notify), and exit.
        """
        port, plainPort = freePort(), freePort()
        pem = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
        twistd = self.startTwistd(
            port=plainPort,
            listen=[
                f"ssl:{port}:interface=127.0.0.1:privateKey={pem}",
                f"tcp:{plainPort}:interface=127.0.0.1",
            ],
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE

        async def client() -> tuple[list[str], int | None, float]:
            async with websockets.connect(
                f"wss://127.0.0.1:{port}/ws", ssl=context
            ) as c:
                await c.send("secure")
                self.assertEqual(await c.recv(), "secure")
                sentAt = twistd.signal(signal.SIGTERM)
                received = [str(m) async for m in c]
                return received, c.close_code, time.monotonic() - sentAt

        received, code, took = run(client)
        self.assertEqual(json.loads(received[0])["type"], "goodbye")
        self.assertEqual(code, 1001)
        self.assertLess(took, 0.5)
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)
        self.assertCleanLog(twistd)


class RawWebSocketTests(EndToEndTestCase):
    def test_closingHandshakeThenCleanTCPClose(self) -> None:
        """
        A raw client: goodbye, Close 1001 with its reason; once it answers,
        the server closes TCP cleanly (no reset), and the process exits.
        """
        twistd = self.startTwistd()
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        self.assertEqual(ws.status, 101)
        ws.sendText("ping?")
        while not ws.messages:
            ws.read()
        self.assertEqual(ws.messages, [b"ping?"])
        sentAt = twistd.signal(signal.SIGINT)
        while ws.close is None:
            self.assertTrue(ws.read())
        ws.sendClose(1001)
        ws.readUntilClosed()
        twistd.wait(10)
        self.assertIsNone(ws.error)
        self.assertFalse(ws.reset)
        self.assertEqual(json.loads(ws.messages[1])["type"], "goodbye")
        self.assertEqual(ws.close, (1001, "server shutting down"))
        self.assertEqual([op for _, op, _ in ws.frames], [OP_TEXT, OP_TEXT, OP_CLOSE])
        assert ws.closeAt is not None and twistd.exitedAt is not None
        self.assertLess(ws.closeAt - sentAt, 0.5)
        self.assertLess(twistd.exitedAt - sentAt, 1.0)
        self.assertCleanLog(twistd)

    def test_clientThatNeverAnswersIsAbortedAtTheCloseTimeout(self) -> None:
        """
        A client that never reads: aborted one close timeout after its
        Close was sent; the process exits then, not at the cap.
        """
        twistd = self.startTwistd("--close-timeout", "1")
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        sentAt = twistd.signal(signal.SIGINT)
        twistd.wait(10)
        assert twistd.exitedAt is not None
        self.assertGreater(twistd.exitedAt - sentAt, 0.9)
        self.assertLess(twistd.exitedAt - sentAt, 2.0)
        ws.readUntilClosed()
        self.assertEqual(ws.close, (1001, "server shutting down"))
        self.assertIn("websocket 0 clean, 1 timed out, 0 cut", twistd.log())

    def test_closedWebSocketsDoNotHoldTheExit(self) -> None:
        """
        After 50 WebSockets opened and closed, SIGINT finds no connection
        open and the process exits at once.
        """
        twistd = self.startTwistd()
        for i in range(50):
            ws = RawWebSocket(twistd.port)
            if i % 2:
                ws.sendClose(1000)
                ws.readUntilClosed()
                self.assertEqual(ws.close, (1000, ""))
            ws.disconnect()
        waitForServer(
            twistd.port,
            lambda state: state.openConnections == 0,
            "every WebSocket closed",
        )
        sentAt = twistd.signal(signal.SIGINT)
        twistd.wait(10)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 0.5)
        self.assertIn("0 connections open", twistd.log())

    def test_drainDelay(self) -> None:
        """
        C{--drain-delay 1}: no Close before the listeners close; a new
        upgrade meanwhile gets 503 + Retry-After + Connection: close.
        """
        twistd = self.startTwistd("--drain-delay", "1", "--shutdown-timeout", "4")
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        sentAt = twistd.signal(signal.SIGINT)
        waitForDraining(twistd.port)
        late = RawWebSocket(twistd.port)
        self.addCleanup(late.disconnect)
        self.assertEqual(late.status, 503)
        self.assertEqual(late.headers[b"retry-after"], b"4")
        self.assertEqual(late.headers[b"connection"], b"close")
        ws.sendText("during the delay")
        while ws.close is None:
            ws.read()
        ws.sendClose(1001)
        ws.readUntilClosed()
        assert ws.closeAt is not None
        self.assertGreaterEqual(ws.closeAt - sentAt, 1.0)
        self.assertEqual(ws.messages[0], b"during the delay")
        twistd.wait(10)

    def test_cutAbortsNeverAnHTTPResponse(self) -> None:
        """
        A close timeout past the cap: the silent client is aborted at the
        cut, and gets no HTTP bytes in its WebSocket (a 503 there would be
        a protocol error to every client).
        """
        twistd = self.startTwistd("--shutdown-timeout", "1", "--close-timeout", "3")
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        sentAt = twistd.signal(signal.SIGINT)
        ws.readUntilClosed()
        twistd.wait(10)
        assert ws.closedAt is not None
        self.assertLess(ws.closedAt - sentAt, 1.5)
        self.assertIsNone(ws.error)
        self.assertEqual(ws.close, (1001, "server shutting down"))
        self.assertNotIn(b"HTTP/1.1", b"".join(p for _, _, p in ws.frames))
        self.assertIn("websocket 0 clean, 0 timed out, 1 cut", twistd.log())
        self.assertCleanLog(twistd)

    def test_secondSignalAbortsAtOnce(self) -> None:
        twistd = self.startTwistd("--drain-delay", "3", "--shutdown-timeout", "8")
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        twistd.signal(signal.SIGINT)
        waitForDraining(twistd.port)
        secondAt = twistd.signal(signal.SIGINT)
        ws.readUntilClosed()
        twistd.wait(10)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - secondAt, 0.5)
        self.assertIsNone(ws.close)
        self.assertIn("websocket 0 clean, 0 timed out, 1 cut", twistd.log())

    def test_sendsAfterTheCloseAreDropped(self) -> None:
        """
        A client that keeps sending across the Close: every message sent
        before it read the Close reaches the echo, whose answers after the
        Close are dropped, never sent, never raised.
        """
        twistd = self.startTwistd()
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        twistd.signal(signal.SIGINT)
        for i in range(20):
            ws.sendText(f"m{i}")
        while ws.close is None:
            ws.read()
        ws.sendClose(1001)
        ws.readUntilClosed()
        twistd.wait(10)
        self.assertIsNone(ws.error)
        closeIndex = [op for _, op, _ in ws.frames].index(OP_CLOSE)
        self.assertEqual(closeIndex, len(ws.frames) - 1)
        self.assertCleanLog(twistd)


class AutobahnTests(EndToEndTestCase):
    def test_fuzzingClientFindsNoFailure(self) -> None:
        """
        The Autobahn test suite's fuzzing client against C{/ws}: cases 1-7
        (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
        closing), 9.1.1-9.2.3 and 9.7-9.8 (messages up to the 1 MiB limit)
        and 10 (auto-fragmentation): no case fails.  Compression (12, 13)
        is not offered.
        """
        wstest()
        twistd = self.startTwistd()
        fuzz(self, f"ws://127.0.0.1:{twistd.port}/ws")
        twistd.signal(signal.SIGINT)
        twistd.wait(10)
        self.assertIn("0 connections open", twistd.log())
        self.assertCleanLog(twistd)
