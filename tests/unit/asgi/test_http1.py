"""
L{gracesvc._asgi.http1}: the ASGI HTTP/1.1 path (with its cycles,
L{gracesvc._asgi.cycle}; its bytes, L{gracesvc._asgi.wire}; its own routes,
L{gracesvc._asgi.operational}; its WebSocket hand-off,
L{gracesvc._asgi.upgrade}), on in-memory transports, its application's
loop turned by hand and its drain on a L{Clock}.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from twisted.logger import ILogObserver, LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.http1 import ASGIConnection
from gracesvc.testing import get, parseEventStream, parseResponses
from tests.support.asgihttp1 import Server, lose, responses

Scope = dict[str, Any]


async def hello(scope: Scope, receive: Any, send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": scope["path"].encode()})


async def echo(scope: Scope, receive: Any, send: Any) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


class Held:
    """
    An application whose requests wait until the test releases them.
    """

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.received: list[dict[str, Any]] = []
        self.release: asyncio.Event | None = None
        self.cancelled = 0

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        if self.release is None:
            self.release = asyncio.Event()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"done"})
        self.received.append(await receive())


class ServerTestCase(SynchronousTestCase):
    def serve(self, application: Any, **kwargs: Any) -> Server:
        server = Server(application, **kwargs)
        self.addCleanup(server.close)
        return server


class RequestTests(ServerTestCase):
    def test_keepAlive(self) -> None:
        """
        A response with a C{content-length} and a C{date}, the connection
        kept open for the next request.
        """
        server = self.serve(hello)
        connection, transport = server.request(get("/a"))
        connection.dataReceived(get("/b"))
        server.turn()
        [a, b] = responses(transport)
        self.assertEqual((a.code, a.body, b.body), (200, b"/a", b"/b"))
        self.assertEqual(a.headers[b"content-length"], b"2")
        self.assertIn(b"date", a.headers)
        self.assertNotIn(b"connection", a.headers)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(connection.state, "idle")
        self.assertEqual(
            [(route, code) for route, code, _ in server.counted.responses],
            [("asgi", 200), ("asgi", 200)],
        )

    def test_scope(self) -> None:
        """
        The scope of ASGI 3, HTTP spec 2.3: lowercased headers in order,
        duplicates kept, the path percent-decoded, the lifespan's state
        copied.
        """
        held = Held()
        server = self.serve(held)
        server.app.state = {"pool": 1}
        server.request(
            b"GET /a%20b?x=1 HTTP/1.1\r\nHost: h\r\nX-A: 1\r\nx-a: 2 \r\n\r\n"
        )
        [scope] = held.scopes
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["asgi"], {"version": "3.0", "spec_version": "2.3"})
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["path"], "/a b")
        self.assertEqual(scope["raw_path"], b"/a%20b")
        self.assertEqual(scope["query_string"], b"x=1")
        self.assertEqual(
            scope["headers"], [(b"host", b"h"), (b"x-a", b"1"), (b"x-a", b"2")]
        )
        self.assertEqual(scope["client"], ("10.0.0.2", 54321))
        self.assertEqual(scope["server"], ("10.0.0.1", 8080))
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["root_path"], "")
        self.assertEqual(scope["state"], {"pool": 1})
        self.assertIsNot(scope["state"], server.app.state)

    def test_pipelining(self) -> None:
        """
        Pipelined requests are answered in order, one application task at a
        time, and nothing more is read meanwhile.
        """
        held = Held()
        server = self.serve(held)
        connection, transport = server.request(get("/1") + get("/2") + get("/3"))
        self.assertEqual(len(held.scopes), 1)
        self.assertEqual(transport.producerState, "paused")
        assert held.release is not None
        held.release.set()
        server.turn(30)
        self.assertEqual([s["path"] for s in held.scopes], ["/1", "/2", "/3"])
        self.assertEqual([r.body for r in responses(transport)], [b"done"] * 3)
        self.assertEqual(transport.producerState, "producing")

    def test_chunkedBodies(self) -> None:
        """
        A chunked request body reaches the application de-chunked; a body
        sent in parts is written chunked.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            body = b""
            more = True
            while more:
                message = await receive()
                body += message["body"]
                more = message["more_body"]
            await send({"type": "http.response.start", "status": 200})
            for part in (body[:5], body[5:]):
                await send(
                    {"type": "http.response.body", "body": part, "more_body": True}
                )
            await send({"type": "http.response.body"})

        server = self.serve(app)
        connection, transport = server.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n"
        )
        connection.dataReceived(b"6\r\n world\r\n0\r\n\r\n")
        server.turn()
        [response] = responses(transport)
        self.assertEqual(response.headers[b"transfer-encoding"], b"chunked")
        self.assertEqual(response.body, b"hello world")

    def test_noBody(self) -> None:
        """
        HEAD, 204 and 304 responses have no body, whatever the application
        sends; the next request on the connection is read right.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            status = int(scope["path"][1:]) if scope["path"] != "/" else 200
            await send({"type": "http.response.start", "status": status})
            await send({"type": "http.response.body", "body": b"ignored"})

        server = self.serve(app)
        _, transport = server.request(
            b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n" + get("/204") + get("/304")
        )
        raw = transport.value()
        self.assertNotIn(b"ignored", raw)
        self.assertEqual(raw.count(b"HTTP/1.1 "), 3)
        self.assertIn(b"HTTP/1.1 204 No Content\r\n", raw)
        self.assertIn(b"HTTP/1.1 304 Not Modified\r\n", raw)

    def test_expectContinue(self) -> None:
        """
        A client that expects C{100 Continue} is sent it when the
        application asks for the body, not before.
        """
        server = self.serve(echo)
        connection, transport = server.connect()
        connection.dataReceived(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertEqual(transport.value(), b"")
        server.turn()
        self.assertEqual(transport.value(), b"HTTP/1.1 100 Continue\r\n\r\n")
        transport.clear()
        connection.dataReceived(b"hello")
        server.turn()
        self.assertEqual(responses(transport)[0].body, b"hello")

    def test_bodyBackpressure(self) -> None:
        """
        Reading stops while more than 64 KiB of body wait for the
        application, and resumes once it received them.
        """
        gate = asyncio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await gate.wait()
            await echo(scope, receive, send)

        server = self.serve(app)
        body = b"x" * 100_000
        connection, transport = server.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
            + body[:70_000]
        )
        self.assertEqual(transport.producerState, "paused")
        gate.set()
        server.turn()
        self.assertEqual(transport.producerState, "producing")
        connection.dataReceived(body[70_000:])
        server.turn()
        self.assertEqual(responses(transport)[0].body, body)

    def test_sendWaitsForTheTransport(self) -> None:
        """
        While the transport's buffer is full, C{send} waits.
        """
        sent: list[int] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            for i in range(3):
                await send(
                    {"type": "http.response.body", "body": b"x", "more_body": True}
                )
                sent.append(i)
            await send({"type": "http.response.body"})

        server = self.serve(app)
        connection, transport = server.connect()
        connection.pauseProducing()
        connection.dataReceived(get("/"))
        server.turn()
        self.assertEqual(sent, [])
        connection.resumeProducing()
        server.turn()
        self.assertEqual(sent, [0, 1, 2])

    def test_disconnect(self) -> None:
        """
        A client gone: the application's C{receive} says C{http.disconnect},
        and its sends do nothing.
        """
        got: list[dict[str, Any]] = []

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await receive()
            got.append(await receive())
            await send({"type": "http.response.start", "status": 200})

        server = self.serve(app)
        connection, transport = server.request(get("/"))
        lose(connection, transport)
        server.turn()
        self.assertEqual(got, [{"type": "http.disconnect"}])
        self.assertEqual(transport.value(), b"")

    def test_http10(self) -> None:
        """
        An HTTP/1.0 request is answered and the connection closed.
        """
        server = self.serve(hello)
        connection, transport = server.request(b"GET /x HTTP/1.0\r\n\r\n")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(responses(transport)[0].headers[b"connection"], b"close")


class BadRequestTests(ServerTestCase):
    def test_malformed(self) -> None:
        """
        A malformed head: 400 and close; the application is not called.
        """
        held = Held()
        server = self.serve(held)
        _, transport = server.request(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
        [response] = responses(transport)
        self.assertEqual(response.code, 400)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(transport.disconnecting)
        self.assertEqual(held.scopes, [])

    def test_headTooLarge(self) -> None:
        """
        A head over 16 KiB: 431 and close.
        """
        server = self.serve(hello)
        _, transport = server.request(
            b"GET / HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        )
        self.assertEqual(responses(transport)[0].code, 431)
        self.assertTrue(transport.disconnecting)

    def test_smuggling(self) -> None:
        """
        Both C{Content-Length} and C{Transfer-Encoding}: 400.
        """
        server = self.serve(hello)
        _, transport = server.request(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        self.assertEqual(responses(transport)[0].code, 400)

    def test_headDeadline(self) -> None:
        """
        A head not complete within the head deadline of its first byte: 408
        and close.
        """
        server = self.serve(hello, headerTimeout=10.0)
        connection, transport = server.connect()
        server.clock.advance(5)
        connection.dataReceived(b"GET / HTTP/1.1\r\n")
        server.clock.advance(9)
        connection.dataReceived(b"Host: x\r\n")
        self.assertFalse(transport.disconnecting)
        server.clock.advance(1.5)
        self.assertEqual(responses(transport)[0].code, 408)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.factory.clientTally.timeouts, {"header": 1})

    def test_writeTimeout(self) -> None:
        """
        A client that takes nothing of a response for the write timeout is
        aborted and counted; the application's C{send} stops waiting.
        """
        server = self.serve(hello, writeTimeout=5.0)
        connection, transport = server.request(get("/"))
        connection.pauseProducing()
        self.assertTrue(connection.writeBlocked)
        server.clock.advance(4)
        self.assertFalse(transport.aborted)
        server.clock.advance(1.5)
        self.assertTrue(transport.aborted)
        self.assertEqual(server.factory.clientTally.timeouts, {"write": 1})

    def test_writeTimeoutDisarmed(self) -> None:
        """
        A client that takes the response in time is not cut, however often
        the buffer fills; none at all with no write timeout.
        """
        server = self.serve(hello, writeTimeout=5.0)
        connection, transport = server.request(get("/"))
        for _ in range(3):
            connection.pauseProducing()
            server.clock.advance(4)
            connection.resumeProducing()
            self.assertFalse(connection.writeBlocked)
        server.clock.advance(10)
        self.assertFalse(transport.aborted)
        unlimited = self.serve(hello, writeTimeout=None)
        connection, transport = unlimited.request(get("/"))
        connection.pauseProducing()
        unlimited.clock.advance(1000)
        self.assertFalse(transport.aborted)

    def test_keepAliveTimeout(self) -> None:
        """
        A connection idle past the keep-alive timeout closes, without a
        word.
        """
        server = self.serve(hello, keepAliveTimeout=30.0)
        connection, transport = server.request(get("/"))
        server.clock.advance(29)
        self.assertFalse(transport.disconnecting)
        server.clock.advance(2)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(responses(transport)), 1)
        self.assertEqual(server.factory.clientTally.timeouts, {"keepalive": 1})


class ErrorTests(ServerTestCase):
    def setUp(self) -> None:
        self.errors: list[str] = []

        def record(event: dict[str, Any]) -> None:
            if event.get("log_level") in (LogLevel.error, LogLevel.critical):
                self.errors.append(event.get("log_format", ""))

        observe = cast(ILogObserver, record)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def test_raisedBeforeTheStart(self) -> None:
        """
        An exception before any byte of the response: 500 and close, logged
        once.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            raise ValueError("boom")

        server = self.serve(app)
        _, transport = server.request(get("/"))
        [response] = responses(transport)
        self.assertEqual(response.code, 500)
        self.assertTrue(transport.disconnecting)
        self.assertEqual(len(self.errors), 1)
        self.flushLoggedErrors(ValueError)

    def test_raisedAfterTheStart(self) -> None:
        """
        An exception once the response is under way: the connection is
        closed after what was written, without the body's end.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"12", "more_body": True})
            raise ValueError("boom")

        server = self.serve(app)
        _, transport = server.request(get("/"))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.assertTrue(transport.value().endswith(b"2\r\n12\r\n"))
        self.assertEqual(len(self.errors), 1)
        self.flushLoggedErrors(ValueError)

    def test_returnedWithoutAResponse(self) -> None:
        """
        An application that returns without answering: 500.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            pass

        server = self.serve(app)
        _, transport = server.request(get("/"))
        self.assertEqual(responses(transport)[0].code, 500)
        self.assertEqual(len(self.errors), 1)

    def test_headerInjection(self) -> None:
        """
        A header value with a line break is refused: 500, and nothing of
        the application's head is written.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"x", b"a\r\nset-cookie: evil")],
                }
            )
            await send({"type": "http.response.body", "body": b"."})

        server = self.serve(app)
        _, transport = server.request(get("/"))
        self.assertNotIn(b"evil", transport.value())
        self.assertEqual(responses(transport)[0].code, 500)
        self.flushLoggedErrors(RuntimeError)

    def test_cancelledNotLogged(self) -> None:
        """
        A task cancelled (the cut, a second signal) is not logged as an
        error.
        """
        held = Held()
        server = self.serve(held)
        connection, transport = server.request(get("/"))
        connection.abort()
        server.turn()
        self.assertEqual(held.cancelled, 1)
        self.assertEqual(self.errors, [])


class OperationalTests(ServerTestCase):
    def test_probes(self) -> None:
        """
        C{/healthz} and C{/readyz} are gracesvc's, with the bodies of the
        other paths, counted under their own route.
        """
        held = Held()
        ready = [False]
        server = self.serve(held, ready=lambda: ready[0], metricsPage=lambda: b"m 1\n")
        _, transport = server.request(get("/healthz") + get("/readyz"))
        ready[0] = True
        transport.clear()
        connection, transport = server.request(get("/readyz") + get("/metrics"))
        server.drain.start()
        connection.dataReceived(get("/readyz"))
        [ok, metrics, draining] = responses(transport)
        self.assertEqual(ok.body, b'{"status": "ready"}')
        self.assertEqual(metrics.body, b"m 1\n")
        self.assertEqual(
            (draining.code, draining.body), (503, b'{"status": "draining"}')
        )
        self.assertEqual(held.scopes, [])
        self.assertEqual(
            [(route, code) for route, code, _ in server.counted.responses],
            [
                ("/healthz", 200),
                ("/readyz", 503),
                ("/readyz", 200),
                ("/metrics", 200),
                ("/readyz", 503),
            ],
        )

    def test_metricsElsewhere(self) -> None:
        """
        Without a metrics page (C{--metrics-listen}), C{/metrics} is the
        application's.
        """
        server = self.serve(hello)
        _, transport = server.request(get("/metrics"))
        self.assertEqual(responses(transport)[0].body, b"/metrics")


class DrainTests(ServerTestCase):
    def test_idleClosedAfterTheGrace(self) -> None:
        """
        A connection with no request in progress closes once quiet for the
        drain's idle grace.
        """
        server = self.serve(hello)
        connection, transport = server.request(get("/"))
        server.drain.start()
        self.assertFalse(transport.disconnecting)
        server.clock.advance(0.6)
        self.assertTrue(transport.disconnecting)

    def test_inFlightAnsweredWithClose(self) -> None:
        """
        A request in flight is told nothing; its response says
        C{Connection: close}, and the connection closes after it.
        """
        held = Held()
        server = self.serve(held)
        connection, transport = server.request(get("/"))
        self.assertEqual((connection.state, connection.inFlight), ("busy", 1))
        server.drain.start()
        server.turn()
        assert held.release is not None
        held.release.set()
        server.turn()
        [response] = responses(transport)
        self.assertEqual(
            (response.code, response.headers[b"connection"]), (200, b"close")
        )
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.drain.completedDuringDrain, 1)

    def test_pipelinedAnsweredInOrder(self) -> None:
        """
        Requests read behind the one in flight are answered in order, the
        last response saying C{Connection: close}.
        """
        held = Held()
        server = self.serve(held)
        connection, transport = server.request(get("/1") + get("/2"))
        server.drain.start()
        assert held.release is not None
        held.release.set()
        server.turn(30)
        [one, two] = responses(transport)
        self.assertNotIn(b"connection", one.headers)
        self.assertEqual(two.headers[b"connection"], b"close")
        self.assertTrue(transport.disconnecting)

    def test_cutBeforeTheResponse(self) -> None:
        """
        At the cut, a request whose response has not started, and each one
        read behind it, gets a 503 with C{Retry-After}; the application's
        task is cancelled.
        """
        held = Held()
        server = self.serve(held)
        connection, transport = server.request(get("/1") + get("/2"))
        server.drain.start()
        self.assertEqual(connection.cut(5), 2)
        server.turn()
        [one, two] = responses(transport)
        self.assertEqual((one.code, one.headers[b"retry-after"]), (503, b"5"))
        self.assertNotIn(b"connection", one.headers)
        self.assertEqual((two.code, two.headers[b"connection"]), (503, b"close"))
        self.assertTrue(transport.disconnecting)
        self.assertFalse(transport.aborted)
        self.assertEqual(held.cancelled, 1)

    def test_cutUnderWay(self) -> None:
        """
        At the cut, a response under way is aborted, never given a 503.
        """

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200})
            await send({"type": "http.response.body", "body": b"x", "more_body": True})
            await asyncio.Event().wait()

        server = self.serve(app)
        connection, transport = server.request(get("/"))
        server.drain.start()
        self.assertEqual(connection.cut(5), 1)
        server.turn()
        self.assertTrue(transport.aborted)
        self.assertNotIn(b"503", transport.value())

    def test_cutEventStreamRequest(self) -> None:
        """
        A request for an event stream cut before its response gets a stream
        of only a C{retry:}, which C{EventSource} reconnects after.
        """
        server = self.serve(Held())
        connection, transport = server.request(get("/", "Accept: text/event-stream"))
        server.drain.start()
        connection.cut(5)
        [response] = responses(transport)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers[b"content-type"], b"text/event-stream")
        self.assertTrue(response.body.startswith(b"retry: 5"))

    def test_eventStreamEndedAtGoingAway(self) -> None:
        """
        When the drain goes away, an event stream is ended by the server on
        an event boundary, its goodbye last; then the application is told
        C{http.disconnect}.
        """
        told: list[dict[str, Any]] = []
        gate = asyncio.Event()

        async def app(scope: Scope, receive: Any, send: Any) -> None:
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send(
                {"type": "http.response.body", "body": b"data: 1\n", "more_body": True}
            )
            await gate.wait()
            await send({"type": "http.response.body", "body": b"\n", "more_body": True})
            told.append(await receive())

        server = self.serve(app)
        connection, transport = server.request(get("/"))
        self.assertEqual(connection.state, "stream")
        server.drain.start()
        server.turn()
        self.assertEqual(told, [])
        gate.set()
        server.turn()
        self.assertEqual(told, [{"type": "http.disconnect"}])
        [response] = parseResponses(transport.value())
        events = parseEventStream(response.body)
        self.assertEqual(events[0], {"data": "1"})
        self.assertIn("retry", events[1])
        self.assertTrue(transport.disconnecting)
        self.assertEqual(server.drain.longLived.outcomes, {("stream", "clean"): 1})

    def test_upgradeDuringTheDrain(self) -> None:
        """
        A WebSocket upgrade during the drain: 503 with C{Retry-After}.
        """
        started: list[Any] = []
        server = self.serve(hello, webSockets=lambda c, cycle: started.append(cycle))
        server.drain.start()
        _, transport = server.request(
            get("/ws", "Upgrade: websocket", "Connection: Upgrade")
        )
        [response] = responses(transport)
        self.assertEqual(response.code, 503)
        self.assertEqual(started, [])


class UpgradeTests(ServerTestCase):
    def test_handedOver(self) -> None:
        """
        An upgrade request goes to the WebSocket session; once upgraded, the
        bytes read go to the upgraded protocol, the one behind the head
        first, and the connection answers to the drain as it does.
        """
        upgrades: list[tuple[ASGIConnection, Any]] = []
        server = self.serve(
            hello, webSockets=lambda c, cycle: upgrades.append((c, cycle.scope))
        )
        connection, transport = server.request(
            get("/ws", "Upgrade: websocket", "Connection: Upgrade") + b"\x81\x00"
        )
        [(given, scope)] = upgrades
        self.assertIs(given, connection)
        self.assertEqual(scope["path"], "/ws")

        class Upgraded:
            inFlight = 0
            state = "websocket"

            def __init__(self) -> None:
                self.received: list[bytes] = []
                self.transport: Any = None

            def makeConnection(self, transport: Any) -> None:
                self.transport = transport

            def dataReceived(self, data: bytes) -> None:
                self.received.append(data)

            def connectionLost(self, reason: Any) -> None:
                pass

            def beginDrain(self) -> None:
                pass

            def cut(self, retryAfter: int) -> int:
                return 0

            def abort(self) -> None:
                pass

        upgraded = Upgraded()
        connection.write(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")
        connection.upgrade(upgraded)
        connection.dataReceived(b"more")
        self.assertEqual(upgraded.received, [b"\x81\x00", b"more"])
        self.assertIs(upgraded.transport, connection)
        self.assertEqual(connection.state, "websocket")
        self.assertEqual(transport.producerState, "producing")
