"""
L{gracesvc._asgi.h2stream}: HTTP/2 request bodies streamed to an ASGI
application as their DATA arrives, with backpressure, as a frame-level
client on the wire sees it (L{gracesvc.testing.h2.H2WireClient}), the
application on a loop driven by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from hyperframe.frame import RstStreamFrame, WindowUpdateFrame
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.body import HIGH_WATER
from gracesvc._asgi.h2stream import BodyState, StreamingBody, StreamingRequest
from gracesvc._pins.twisted_h2 import heldInbound
from gracesvc._protocols.h2 import STREAMING_CONNECTION_WINDOW, DrainingH2Connection
from gracesvc.testing.h2 import H2WireClient
from tests.support.asgi import Application, ASGIWire, Message, Receive, Send

#: The flow-control windows HTTP/2 starts with (RFC 9113 section 6.9.2).
INITIAL_WINDOW = 65535

CANCEL = 8


def start(status: int = 200) -> Message:
    return {"type": "http.response.start", "status": status, "headers": []}


def body(data: bytes) -> Message:
    return {"type": "http.response.body", "body": data, "more_body": False}


def firstReset(client: H2WireClient, streamID: int) -> int | None:
    """
    @return: the error code of the first RST_STREAM the server sent on
        C{streamID}, if any.
    """
    for _, frame in client.frames.received:
        if isinstance(frame, RstStreamFrame) and frame.stream_id == streamID:
            code: int = frame.error_code
            return code
    return None


class Upload:
    """
    A request body sent on one stream as a client that honours the
    server's flow control sends it: never more than the stream's window
    and the connection's allow.
    """

    def __init__(
        self,
        client: H2WireClient,
        path: str = "/upload",
        sibling: Upload | None = None,
    ) -> None:
        """
        @param sibling: another upload on the same connection, whose bytes
            count against the same connection window.
        """
        self.client = client
        self.streamID = client.request(path, method="POST", endStream=False)
        self.sent = 0
        #: what every upload of the connection sent, in one cell.
        self.connectionSent: list[int] = (
            [0] if sibling is None else sibling.connectionSent
        )

    def granted(self, streamID: int) -> int:
        """
        @return: the window the server has given back on C{streamID} (0:
            the connection's) so far.
        """
        return sum(
            frame.window_increment
            for _, frame in self.client.frames.received
            if isinstance(frame, WindowUpdateFrame) and frame.stream_id == streamID
        )

    def room(self) -> int:
        """
        @return: how many bytes the windows let the client send now.
        """
        stream = INITIAL_WINDOW + self.granted(self.streamID) - self.sent
        connection = INITIAL_WINDOW + self.granted(0) - self.connectionSent[0]
        return min(stream, connection)

    def push(self, total: int, end: bool = True) -> int:
        """
        Send as much of C{total} bytes (in all, counting what was sent
        before) as the windows allow, ending the stream with the last.

        @return: the bytes sent in all.
        """
        while self.sent < total:
            size = min(16384, self.room(), total - self.sent)
            if size <= 0:
                break
            self.sent += size
            self.connectionSent[0] += size
            last = end and self.sent == total
            self.client.send(
                self.client.frames.data(self.streamID, b"x" * size, endStream=last)
            )
        return self.sent

    def end(self) -> None:
        self.client.send(self.client.frames.data(self.streamID, b"", endStream=True))


class StreamingTestCase(SynchronousTestCase):
    def serve(self, application: Application, **keywords: Any) -> ASGIWire:
        served = ASGIWire(
            application, h2c=True, requestFactory=StreamingRequest, **keywords
        )
        self.addCleanup(served.close)
        return served

    def connection(self, served: ASGIWire) -> DrainingH2Connection:
        (connection,) = served.wire.drain._connections
        assert isinstance(connection, DrainingH2Connection)
        return connection


class StreamedBodyTests(StreamingTestCase):
    def test_bodyAsItArrives(self) -> None:
        """
        The application starts when the request's HEADERS arrive, and its
        C{receive} gives each DATA as it arrives, C{more_body} true until
        the client ends the stream.
        """
        told: list[Message | str] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            told.append("started")
            total = b""
            while True:
                message = await receive()
                told.append(message)
                total += message["body"]
                if not message["more_body"]:
                    break
            await send(start())
            await send(body(b"%d" % len(total)))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        streamID = client.request("/upload", method="POST", endStream=False)
        served.run()
        self.assertEqual(told, ["started"])
        client.send(client.frames.data(streamID, b"one", endStream=False))
        served.run()
        client.send(client.frames.data(streamID, b"two", endStream=False))
        served.run()
        client.send(client.frames.data(streamID, b"", endStream=True))
        served.run()
        self.assertEqual(
            told,
            [
                "started",
                {"type": "http.request", "body": b"one", "more_body": True},
                {"type": "http.request", "body": b"two", "more_body": True},
                {"type": "http.request", "body": b"", "more_body": False},
            ],
        )
        result = client.streams[streamID]
        self.assertEqual((result.status, result.body, result.reset), (200, b"6", None))

    def test_getIsOneEmptyBody(self) -> None:
        """
        A request that ends with its HEADERS (a C{GET}) is served as
        before: one empty C{http.request}, no waiting.
        """
        told: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            told.append(await receive())
            await send(start())
            await send(body(b"ok"))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        streamID = client.request("/")
        served.run()
        self.assertEqual(
            told, [{"type": "http.request", "body": b"", "more_body": False}]
        )
        self.assertEqual(client.streams[streamID].status, 200)

    def test_bodyInOneFrameWithItsEnd(self) -> None:
        """
        A body sent whole with the HEADERS' first read is received whole.
        """
        bodies: list[bytes] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            message = await receive()
            bodies.append(message["body"])
            self.assertFalse(message["more_body"])
            await send(start())
            await send(body(b""))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        client.request("/upload", method="POST", body=b"payload")
        served.run()
        self.assertEqual(bodies, [b"payload"])

    def test_operationalRoutesDropTheBody(self) -> None:
        """
        C{/healthz} is answered beside the application (a C{POST} with
        405), the body sent to it dropped, its stream reset once answered.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            raise AssertionError("not the application's")

        served = self.serve(application, operationalRoutes=True)
        client = H2WireClient(served.wire)
        upload = Upload(client, "/healthz")
        upload.push(200_000)
        served.run()
        self.assertEqual(client.streams[upload.streamID].status, 405)
        # (h2 answers DATA the client sent after it with STREAM_CLOSED.)
        self.assertEqual(firstReset(client, upload.streamID), 0)
        self.assertEqual(served.app.tasks, set())
        self.assertEqual(self.connection(served).streams, {})


class BackpressureTests(StreamingTestCase):
    def test_applicationThatDoesNotReadBoundsTheBuffers(self) -> None:
        """
        A client uploading to an application that does not read can send
        the high-water mark and one window more, no further: the stream
        stays paused, its window closed, what the server holds bounded.
        Once the application reads, the window opens again, and the whole
        body arrives.
        """
        reading = asyncio.Event()
        received: list[int] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await reading.wait()
            while True:
                message = await receive()
                received.append(len(message["body"]))
                if not message["more_body"]:
                    break
            await send(start())
            await send(body(b"%d" % sum(received)))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        upload = Upload(client)
        total = 10 * 1024 * 1024
        for _ in range(20):
            upload.push(total)
            served.run()
        self.assertLessEqual(upload.sent, HIGH_WATER + 16384 + INITIAL_WINDOW)
        self.assertGreater(upload.sent, HIGH_WATER)
        self.assertEqual(upload.room(), 0)
        (stream,) = self.connection(served).streams.values()
        request = stream._request
        assert isinstance(request, StreamingRequest) and request.body is not None
        assert request.content is not None
        self.assertIs(request.body.state, BodyState.PAUSED)
        held = request.body.buffered + heldInbound(stream)
        self.assertEqual(held, upload.sent)
        self.assertEqual(request.content.read(), b"")

        served.loop.call_soon(reading.set)
        for _ in range(200):
            upload.push(total)
            served.run()
            if client.streams[upload.streamID].status is not None:
                break
        self.assertEqual(upload.sent, total)
        self.assertEqual(sum(received), total)
        self.assertLessEqual(max(received), HIGH_WATER + 16384 + INITIAL_WINDOW)
        result = client.streams[upload.streamID]
        self.assertEqual((result.status, result.body), (200, b"%d" % total))

    def test_stalledUploadDoesNotBlockItsSiblings(self) -> None:
        """
        The connection's window is larger than a stream's: what a paused
        stream holds does not stop another upload of the same connection.
        """
        sizes: dict[str, int] = {}

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            if scope["path"] == "/stalled":
                await asyncio.Event().wait()
            size = 0
            while True:
                message = await receive()
                size += len(message["body"])
                if not message["more_body"]:
                    break
            sizes[scope["path"]] = size
            await send(start())
            await send(body(b""))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        stalled = Upload(client, "/stalled")
        for _ in range(10):
            stalled.push(1024 * 1024, end=False)
            served.run()
        self.assertEqual(stalled.room(), 0)
        self.assertGreater(stalled.sent, HIGH_WATER)
        other = Upload(client, "/other", sibling=stalled)
        for _ in range(50):
            other.push(500_000)
            served.run()
        self.assertEqual(sizes, {"/other": 500_000})
        self.assertEqual(client.streams[other.streamID].status, 200)

    def test_resumedAtOnceWithTheEndHeld(self) -> None:
        """
        The stream's end, held by Twisted while the stream is paused, comes
        through when the application takes the body: C{more_body} false.
        """
        reading = asyncio.Event()
        told: list[tuple[int, bool]] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await reading.wait()
            while True:
                message = await receive()
                told.append((len(message["body"]), message["more_body"]))
                if not message["more_body"]:
                    break
            await send(start())
            await send(body(b""))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        upload = Upload(client)
        # Past the high-water mark, then the rest the window allows, ended.
        upload.push(HIGH_WATER + 16384, end=False)
        served.run()
        upload.push(upload.sent + upload.room())
        served.run()
        served.loop.call_soon(reading.set)
        served.run()
        self.assertEqual(sum(n for n, _ in told), upload.sent)
        self.assertEqual(told[-1][1], False)
        self.assertEqual(client.streams[upload.streamID].status, 200)


class EndTests(StreamingTestCase):
    def test_resetMidUploadIsDisconnect(self) -> None:
        """
        A client that resets its stream mid-upload: the application,
        waiting for more of the body, is told C{http.disconnect}.
        """
        told: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            told.append(await receive())
            told.append(await receive())

        served = self.serve(application)
        client = H2WireClient(served.wire)
        upload = Upload(client)
        upload.push(1000, end=False)
        served.run()
        client.send(RstStreamFrame(upload.streamID, error_code=CANCEL).serialize())
        served.run()
        self.assertEqual(
            told,
            [
                {"type": "http.request", "body": b"x" * 1000, "more_body": True},
                {"type": "http.disconnect"},
            ],
        )
        self.assertEqual(served.wire.drain.inFlight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_responseBeforeTheBodyEndsResetsNoError(self) -> None:
        """
        An application that answers without reading the body: the complete
        response, then C{RST_STREAM(NO_ERROR)} so that the client stops
        sending (RFC 9113 section 8.1), and what the paused stream held is
        given back to the connection's window: one such request after
        another, each stopped by its own stream's window, never by the
        connection's.
        """
        answers: dict[str, asyncio.Event] = {}

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await answers.setdefault(scope["path"], asyncio.Event()).wait()
            await send(start(413))
            await send(body(b"too large"))

        served = self.serve(application)
        client = H2WireClient(served.wire)
        upload: Upload | None = None
        for n in range(2 * STREAMING_CONNECTION_WINDOW // INITIAL_WINDOW):
            path = f"/upload/{n}"
            upload = Upload(client, path, sibling=upload)
            for _ in range(5):
                upload.push(1024 * 1024, end=False)
                served.run()
            self.assertEqual(upload.room(), 0)
            self.assertEqual(
                upload.room(),
                INITIAL_WINDOW + upload.granted(upload.streamID) - upload.sent,
            )
            self.assertGreater(upload.sent, HIGH_WATER)
            answers.setdefault(path, asyncio.Event())
            served.loop.call_soon(answers[path].set)
            served.run()
            result = client.streams[upload.streamID]
            self.assertEqual((result.status, result.body), (413, b"too large"))
            self.assertEqual(firstReset(client, upload.streamID), 0)
        self.assertEqual(self.connection(served).streams, {})


class DrainTests(StreamingTestCase):
    def test_uploadInFlightCompletesDuringTheDrain(self) -> None:
        """
        An upload under way when the drain begins is served to its end; a
        stream opened after, its body to follow, is parked: never
        dispatched.
        """
        paths: list[str] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            paths.append(scope["path"])
            size = 0
            while True:
                message = await receive()
                size += len(message["body"])
                if not message["more_body"]:
                    break
            await send(start())
            await send(body(b"%d" % size))

        served = self.serve(application, shutdownTimeout=10)
        client = H2WireClient(served.wire)
        upload = Upload(client)
        upload.push(100_000, end=False)
        served.run()
        served.wire.drain.start()
        served.run()
        # Its body would follow: what would dispatch it at once, but for
        # the drain.
        late = client.request("/late", method="POST", endStream=False)
        for _ in range(20):
            upload.push(300_000)
            served.run()
        result = client.streams[upload.streamID]
        self.assertEqual((result.status, result.body), (200, b"300000"))
        self.assertEqual(paths, ["/upload"])
        self.assertIsNone(client.streams[late].status)
        served.advance(1.0)
        self.assertEqual(client.frames.goAways, [(upload.streamID, 0)])
        self.assertTrue(served.wire.drain.finished)

    def test_uploadAtTheCutIs503(self) -> None:
        """
        At the cut, an upload whose response has not started is answered
        503 with C{Retry-After}, and its application cancelled.
        """
        cancelled: list[bool] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            try:
                while True:
                    await receive()
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        served = self.serve(application, shutdownTimeout=1)
        client = H2WireClient(served.wire)
        upload = Upload(client)
        upload.push(1000, end=False)
        served.run()
        served.wire.drain.start()
        served.advance(1.5)
        result = client.streams[upload.streamID]
        self.assertEqual(result.status, 503)
        self.assertIn(b"retry-after", result.headers)
        self.assertEqual(cancelled, [True])
        self.assertEqual(self.flushLoggedErrors(), [])


class StreamingBodyTests(SynchronousTestCase):
    """
    L{StreamingBody} alone, its stream a recording producer.
    """

    def setUp(self) -> None:
        self.calls: list[str] = []
        outer = self

        class Stream:
            def pauseProducing(self) -> None:
                outer.calls.append("pause")

            def resumeProducing(self) -> None:
                outer.calls.append("resume")

            def stopProducing(self) -> None:
                outer.calls.append("stop")

        self.body = StreamingBody(Stream())  # type: ignore[arg-type]

    def test_pausedPastTheHighWaterMark(self) -> None:
        """
        The stream is paused once more than L{HIGH_WATER} bytes wait, and
        resumed when the application takes them.
        """
        self.body.received(b"x" * HIGH_WATER)
        self.assertEqual(self.calls, [])
        self.body.received(b"x")
        self.assertEqual(self.calls, ["pause"])
        self.body.received(b"x")
        self.assertEqual(self.calls, ["pause"])
        message = self.body.take()
        assert message is not None
        self.assertEqual(
            (len(message["body"]), message["more_body"]), (HIGH_WATER + 2, True)
        )
        self.assertEqual(self.calls, ["pause", "resume"])
        self.assertIs(self.body.state, BodyState.RECEIVING)
        self.assertIsNone(self.body.take())

    def test_closedDropsAndWakes(self) -> None:
        """
        A closed body drops what it held and what still comes, and wakes
        its waiter; it is exhausted.
        """
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        waiter = self.body.arrival(loop)
        self.assertFalse(waiter.done())
        self.body.close()
        self.assertTrue(waiter.done())
        self.body.received(b"late")
        self.assertEqual(self.body.buffered, 0)
        self.assertTrue(self.body.exhausted)
        self.assertIsNone(self.body.take())

    def test_end(self) -> None:
        """
        The end hands out what is left with C{more_body} false, once.
        """
        self.body.received(b"a")
        self.body.arrived()
        self.assertEqual(
            self.body.take(), {"type": "http.request", "body": b"a", "more_body": False}
        )
        self.assertTrue(self.body.exhausted)
