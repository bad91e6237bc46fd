"""
L{gracesvc._asgi.resource}: ASGI HTTP requests through Twisted's Request,
in memory, on a loop driven by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.spec import HTTP_ASGI
from gracesvc.testing import get, parseEventStream
from tests.support.asgi import Application, ASGIWire, Message, Receive, Send


def start(status: int = 200, *headers: tuple[bytes, bytes]) -> Message:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, more: bool = False) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": more}


class ResourceTestCase(SynchronousTestCase):
    def serve(self, application: Application, **keywords: Any) -> ASGIWire:
        served = ASGIWire(application, **keywords)
        self.addCleanup(served.close)
        return served


class ScopeTests(ResourceTestCase):
    def test_scope(self) -> None:
        """
        The scope is the specification's: version, method, the path
        percent-decoded and raw, the query, the headers lowercased in
        order with their duplicates, the client, the server, the scheme,
        and a copy of the lifespan's state.
        """
        scopes: list[dict[str, Any]] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            scopes.append(dict(scope))
            await send(start())
            await send(body(b"ok"))

        served = self.serve(application)
        state = {"pool": object()}
        served.app.state = state
        client = served.wire.connect()
        client.send(
            b"GET /a%20b/c?x=1&y=2 HTTP/1.1\r\nHost: example\r\nX-Two: 1\r\n"
            b"X-Two: 2\r\n\r\n"
        )
        served.run()
        [response] = client.responses
        self.assertEqual(response.code, 200)
        [scope] = scopes
        self.assertEqual(scope["type"], "http")
        self.assertEqual(scope["asgi"], HTTP_ASGI)
        self.assertEqual(scope["http_version"], "1.1")
        self.assertEqual(scope["method"], "GET")
        self.assertEqual(scope["scheme"], "http")
        self.assertEqual(scope["path"], "/a b/c")
        self.assertEqual(scope["raw_path"], b"/a%20b/c")
        self.assertEqual(scope["query_string"], b"x=1&y=2")
        self.assertEqual(scope["root_path"], "")
        self.assertEqual(
            scope["headers"],
            [(b"host", b"example"), (b"x-two", b"1"), (b"x-two", b"2")],
        )
        self.assertEqual(scope["client"], ("127.0.0.1", 40000))
        self.assertEqual(scope["server"], ("127.0.0.1", 8080))
        self.assertEqual(scope["state"], state)
        self.assertIsNot(scope["state"], state)


class BodyTests(ResourceTestCase):
    def test_bodyInChunks(self) -> None:
        """
        A request body is handed out in chunks of at most 64 KiB, the last
        with C{more_body} false; then C{receive} waits for a disconnect.
        """
        received: list[tuple[int, bool]] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            while True:
                message = await receive()
                received.append((len(message["body"]), message["more_body"]))
                if not message["more_body"]:
                    break
            await send(start())
            await send(body(b"%d" % sum(n for n, _ in received)))

        served = self.serve(application)
        client = served.wire.connect()
        payload = b"x" * 150_000
        client.send(
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(payload), payload)
        )
        served.run()
        self.assertEqual(received, [(65536, True), (65536, True), (18928, False)])
        [response] = client.responses
        self.assertEqual(response.body, b"150000")

    def test_emptyBody(self) -> None:
        received: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            received.append(await receive())
            await send(start())
            await send(body(b""))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        self.assertEqual(
            received, [{"type": "http.request", "body": b"", "more_body": False}]
        )


class ResponseTests(ResourceTestCase):
    def test_oneBodyGetsAContentLength(self) -> None:
        """
        A response of one body is written with its C{Content-Length}, the
        application's headers as given, and no default C{Content-Type}.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await send(start(201, (b"x-app", b"1"), (b"x-app", b"2")))
            await send(body(b"made"))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        [response] = client.responses
        self.assertEqual(response.code, 201)
        self.assertEqual(response.body, b"made")
        self.assertEqual(response.headers.get(b"content-length"), b"4")
        self.assertNotIn(b"content-type", response.headers)
        self.assertIn(b"X-App: 1\r\nX-App: 2\r\n", client.protocol.data)

    def test_streamedBodyIsChunked(self) -> None:
        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await send(start(200, (b"content-type", b"text/plain")))
            await send(body(b"one ", more=True))
            await send(body(b"two", more=True))
            await send(body(b""))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        [response] = client.responses
        self.assertEqual(response.body, b"one two")
        self.assertEqual(response.headers.get(b"transfer-encoding"), b"chunked")

    def test_raiseBeforeStartIs500(self) -> None:
        """
        An application that raises before its response started is answered
        500, and the error is logged once; the connection stays usable.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            if scope["path"] == "/fail":
                await send(start())
                raise RuntimeError("broken")
            await send(start())
            await send(body(b"fine"))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/fail"))
        served.run()
        client.send(get("/"))
        served.run()
        self.assertEqual([r.code for r in client.responses], [500, 200])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_returnWithoutResponseIs500(self) -> None:
        async def application(scope: Any, receive: Receive, send: Send) -> None:
            pass

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        self.assertEqual([r.code for r in client.responses], [500])

    def test_raiseAfterStartAborts(self) -> None:
        """
        An error once the body is under way closes the connection without
        the terminating chunk: the client sees the response cut short.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await send(start())
            await send(body(b"part", more=True))
            raise RuntimeError("broken")

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        self.assertTrue(client.closed)
        self.assertEqual(client.responses, [])
        self.assertNotIn(b"0\r\n\r\n", client.protocol.data)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_bodyLongerThanContentLengthRaises(self) -> None:
        raised: list[BaseException] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await send(start(200, (b"content-length", b"2")))
            try:
                await send(body(b"three"))
            except RuntimeError as e:
                raised.append(e)
                raise

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        self.assertEqual(len(raised), 1)
        self.flushLoggedErrors(RuntimeError)

    def test_sendWaitsWhileTheConnectionIsPaused(self) -> None:
        """
        A body C{send} returns once written, but waits while the connection
        cannot take more (its producer paused), until it can.
        """
        sent: list[int] = []
        go = asyncio.Event()

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await send(start())
            await send(body(b"one ", more=True))
            sent.append(1)
            await go.wait()
            await send(body(b"two", more=True))
            sent.append(2)
            await send(body(b""))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        self.assertEqual(sent, [1])
        client.server.pauseProducing()
        served.loop.call_soon(go.set)
        served.run()
        self.assertEqual(sent, [1])
        self.assertIn(b"two", client.protocol.data)
        client.server.resumeProducing()
        served.run()
        self.assertEqual(sent, [1, 2])
        self.assertEqual([r.body for r in client.responses], [b"one two"])

    def test_routeLabel(self) -> None:
        """
        The metrics label a request with the route the framework left in
        its scope, else C{asgi}.
        """

        class Route:
            path = "/users/{id}"

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            if scope["path"].startswith("/users/"):
                scope["route"] = Route()
            await send(start())
            await send(body(b""))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/users/7"))
        client.send(get("/other"))
        served.run()
        exposition = served.wire.metrics.exposition().decode()
        self.assertIn('route="/users/{id}"', exposition)
        self.assertIn('route="asgi"', exposition)


class DrainTests(ResourceTestCase):
    def test_requestInFlightIsToldNothing(self) -> None:
        """
        A request in flight when the drain goes away completes, and is not
        told C{http.disconnect}.
        """
        told: list[Message] = []
        finish = asyncio.Event()

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            waiting = asyncio.ensure_future(receive())
            await finish.wait()
            if waiting.done():
                told.append(waiting.result())
            waiting.cancel()
            await send(start())
            await send(body(b"done"))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        served.wire.drain.start()
        served.run()
        self.assertEqual(told, [])
        served.loop.call_soon(finish.set)
        served.run()
        self.assertEqual([r.body for r in client.responses], [b"done"])
        self.assertEqual(told, [])

    def test_eventStreamEndedAtGoingAway(self) -> None:
        """
        An event stream is ended by the server when the drain goes away: a
        goodbye (no event dispatched), its end, then C{http.disconnect} to
        the application.
        """
        told: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send(start(200, (b"content-type", b"text/event-stream")))
            await send(body(b"data: 1\n\n", more=True))
            told.append(await receive())
            await send(body(b"data: ignored\n\n", more=True))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        served.wire.drain.start()
        served.run()
        [response] = client.responses
        events = parseEventStream(response.body)
        self.assertEqual([e["data"] for e in events if "data" in e], ["1"])
        self.assertIn(b": server shutting down\nretry: ", response.body)
        self.assertEqual(told, [{"type": "http.disconnect"}])
        self.assertTrue(client.closed)

    def test_eventStreamAskedForDuringTheDrain(self) -> None:
        called: list[object] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            called.append(scope)

        served = self.serve(application, drainDelay=1.0)
        served.wire.drain.start()
        client = served.wire.connect()
        client.send(get("/", "Accept: text/event-stream"))
        served.run()
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertTrue(response.body.startswith(b"retry: "))
        self.assertEqual(called, [])

    def test_cutAnswers503AndCancels(self) -> None:
        """
        At the cut a request whose response has not started gets a 503 with
        C{Retry-After}, and the application's task is cancelled.
        """
        cancelled: list[bool] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        served = self.serve(application, shutdownTimeout=1.0)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        served.wire.drain.start()
        served.advance(1.0)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertIn(b"retry-after", response.headers)
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_clientGoneIsDisconnect(self) -> None:
        told: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            told.append(await receive())
            await send(start())
            await send(body(b"nobody listens"))

        served = self.serve(application)
        client = served.wire.connect()
        client.send(get("/"))
        served.run()
        client.close()
        served.run()
        self.assertEqual(told, [{"type": "http.disconnect"}])
        self.assertEqual(self.flushLoggedErrors(), [])
