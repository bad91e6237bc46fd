"""
WebSockets under the drain, as a client on the wire sees them: in-memory
WebSocket clients (wsproto) of a real L{DrainingSite}, time driven by a
L{Clock}.
"""

from __future__ import annotations

import json
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.websocket import WebSocketResource, WebSocketTransport
from wsproto import ConnectionType, WSConnection
from wsproto.events import BytesMessage, Ping, TextMessage
from wsproto.events import Request as WebSocketRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gracesvc._core.connections import IDrainableConnection
from gracesvc._protocols.websocket import (
    DrainingWebSocket,
    Keepalive,
    MessageBuffer,
    MessageTooBig,
    WebSocketPolicy,
)
from gracesvc.testing import WebSocketClient, Wire, get, samples
from tests.support.drain import FakePort, captureLog


def goodbye(client: WebSocketClient) -> dict[str, Any]:
    """
    @return: the goodbye message C{/ws} sent C{client}, its last.
    """
    last = client.messages[-1]
    assert isinstance(last, str), last
    message: dict[str, Any] = json.loads(last)
    return message


def captureFailures(test: SynchronousTestCase, wire: Wire) -> list[dict[str, Any]]:
    """
    Collect the failures logged by the drain and by WebSockets, for the
    length of C{test}.
    """
    failures: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        if event.get("log_failure") is not None:
            failures.append(event)

    observer = cast(ILogObserver, observe)
    wire.drain.log = Logger(observer=observer)
    original = DrainingWebSocket.log
    DrainingWebSocket.log = Logger(observer=observer)
    test.addCleanup(setattr, DrainingWebSocket, "log", original)
    return failures


class Recorder:
    """
    A WebSocket application that records what it is told, for the tests to
    drive its transport.
    """

    transport: WebSocketTransport

    def __init__(self) -> None:
        self.received: list[str | bytes] = []
        self.lost: list[Failure] = []
        self.goodbye: object = None
        self.goingAwayCalls = 0
        self.pongs: list[bytes] = []

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.received.append(message)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self.received.append(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        self.pongs.append(payload)

    def connectionLost(self, reason: Failure) -> None:
        self.lost.append(reason)

    def goingAway(self) -> object:
        self.goingAwayCalls += 1
        return self.goodbye


class RecorderFactory:
    def __init__(self) -> None:
        self.built: list[Recorder] = []

    def buildProtocol(self, request: object) -> Recorder:
        self.built.append(Recorder())
        return self.built[-1]


def recorderWire(**kwargs: Any) -> tuple[Wire, RecorderFactory]:
    """
    A wire serving Twisted's own C{WebSocketResource} at C{/app/ws} in a
    user's resource tree, with a L{Recorder} per connection.
    """
    factory = RecorderFactory()
    root = Resource()
    app = Resource()
    root.putChild(b"app", app)
    app.putChild(b"ws", WebSocketResource(factory))
    return Wire(resource=root, **kwargs), factory


class UpgradeTests(SynchronousTestCase):
    def test_echo(self) -> None:
        """
        C{/ws} echoes text and binary messages, and answers pings.
        """
        wire = Wire()
        client = wire.connectWebSocket()
        self.assertTrue(client.accepted)
        client.sendText("hello")
        client.sendBytes(b"\x00\x01")
        client.ping(b"p")
        self.assertEqual(client.messages, ["hello", b"\x00\x01"])
        self.assertEqual(client.failures, [])

    def test_oneDrainableConnectionInStateWebsocket(self) -> None:
        """
        The upgraded connection is the one connection the drain sees, in
        state C{websocket}, with no request in flight.
        """
        wire = Wire()
        client = wire.connectWebSocket()
        self.assertEqual(wire.drain.connections, 1)
        self.assertEqual(wire.drain.connectionStates(), {"websocket": 1})
        self.assertEqual(wire.drain.inFlight, 0)
        verifyObject(IDrainableConnection, client.server)
        scraped = samples(wire.metrics.exposition())
        self.assertEqual(
            scraped[("gracesvc_open_connections", (("state", "websocket"),))], 1
        )

    def test_closedWebSocketsLeaveTheDrain(self) -> None:
        """
        WebSockets closed by their clients are gone from the drain
        (Twisted's own upgrade replaces the channel's C{connectionLost}, and
        the drain would wait for them until the cap): the drain is done at
        once.
        """
        wire = Wire()
        clients = [wire.connectWebSocket() for _ in range(5)]
        for c in clients[:3]:
            c.closeHandshake()
        for c in clients[3:]:
            c.close()
        for c in clients[:3]:
            self.assertEqual(c.closeCode, 1000)
            self.assertTrue(c.closed)
        self.assertEqual(wire.drain.connections, 0)
        self.successResultOf(wire.drain.start())

    def test_loggedAndCountedAs101OnClose(self) -> None:
        """
        A WebSocket is logged once, when it closes, as a 101, and counted
        under its route with how long it lasted.
        """
        wire = Wire()
        logged: list[bytes] = []
        wire.site.log = lambda request: logged.append(request.uri)  # type: ignore[method-assign]
        client = wire.connectWebSocket()
        wire.advance(2)
        self.assertEqual(logged, [])
        client.closeHandshake()
        self.assertEqual(logged, [b"/ws"])
        scraped = samples(wire.metrics.exposition())
        self.assertEqual(
            scraped[("gracesvc_requests_total", (("code", "101"), ("route", "/ws")))],
            1,
        )
        self.assertAlmostEqual(
            scraped[("gracesvc_request_duration_seconds_sum", (("route", "/ws"),))],
            2,
            delta=0.05,
        )

    def test_plainGetIsToldToUpgrade(self) -> None:
        wire = Wire()
        client = wire.connect()
        client.send(get("/ws"))
        [response] = client.responses
        self.assertEqual(response.code, 426)
        self.assertEqual(response.headers[b"upgrade"], b"websocket")

    def test_aUsersOwnWebSocketResource(self) -> None:
        """
        Twisted's own C{WebSocketResource}, anywhere in a user's tree, gets
        the same treatment: the application is given a transport that
        drains.
        """
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws")
        client.sendText("hi")
        [app] = factory.built
        self.assertEqual(app.received, ["hi"])
        self.assertIsInstance(app.transport, DrainingWebSocket)
        wire.drain.start()
        wire.flush()
        self.assertEqual(app.goingAwayCalls, 1)
        self.assertEqual(client.closeCode, 1001)
        self.assertTrue(client.closed)
        self.assertEqual(len(app.lost), 1)
        self.assertTrue(wire.drain.finished)


class GoingAwayTests(SynchronousTestCase):
    def test_goodbyeThenClose1001(self) -> None:
        """
        When the listeners close, every WebSocket gets the goodbye, then a
        Close 1001 with its reason, in the same turn; once each client
        answers, TCP closes and the drain is done.
        """
        wire = Wire()
        events = captureLog(wire.drain)
        clients = [wire.connectWebSocket() for _ in range(3)]
        for c in clients:
            c.sendText("x")
        wire.drain.start()
        wire.flush()
        for c in clients:
            self.assertEqual(c.messages[0], "x")
            message = goodbye(c)
            self.assertEqual(message["type"], "goodbye")
            self.assertTrue(1000 <= message["reconnect_ms"] <= 2000, message)
            self.assertEqual(
                (c.closeCode, c.closeReason), (1001, "server shutting down")
            )
            self.assertEqual(c.closeReceivedAt, 0)
            self.assertTrue(c.closed)
            self.assertEqual(c.failures, [])
        self.assertTrue(wire.drain.finished)
        self.assertEqual(
            wire.drain.longLived.byKind(),
            {"websocket": {"clean": 3, "timeout": 0, "cut": 0}},
        )
        steps = [e.get("step") for e in events]
        self.assertEqual(steps[-2:], ["longlived", "done"])
        self.assertEqual(events[-2]["summary"], "websocket 3 clean, 0 timed out, 0 cut")

    def test_closeCode1012(self) -> None:
        wire = Wire(webSocketPolicy=WebSocketPolicy(closeCode=1012))
        client = wire.connectWebSocket()
        wire.drain.start()
        wire.flush()
        self.assertEqual(client.closeCode, 1012)

    def test_noCloseBeforeTheListenersClose(self) -> None:
        """
        With a drain delay, WebSockets are told only once the listeners
        have closed.
        """
        wire = Wire(drainDelay=1.0)
        wire.drain.addListener(FakePort(wire.clock))
        client = wire.connectWebSocket()
        wire.drain.start()
        wire.advance(0.99)
        self.assertIsNone(client.closeCode)
        self.assertTrue(client.open)
        client.sendText("still here")
        self.assertEqual(client.messages, ["still here"])
        wire.advance(0.02)
        self.assertEqual(client.closeCode, 1001)
        self.assertAlmostEqual(cast(float, client.closeReceivedAt), 1.0, delta=1e-6)

    def test_clientThatNeverAnswersIsAbortedAtTheCloseTimeout(self) -> None:
        """
        A client that never answers the Close is aborted at the close
        timeout, and the drain is done then.
        """
        wire = Wire()
        client = wire.connectWebSocket(answersClose=False)
        wire.drain.start()
        wire.advance(0.99)
        self.assertEqual(client.closeCode, 1001)
        self.assertFalse(client.closed)
        wire.advance(0.02)
        self.assertTrue(client.closed)
        self.assertAlmostEqual(cast(float, client.closedAt), 1.0, delta=1e-6)
        self.assertTrue(wire.drain.finished)
        self.assertEqual(
            wire.drain.longLived.byKind()["websocket"],
            {"clean": 0, "timeout": 1, "cut": 0},
        )

    def test_neverLaterThanTheCut(self) -> None:
        """
        A close timeout reaching past the cut: the WebSocket is aborted at
        the cut, never given HTTP bytes, and the drain is done by the cap.
        """
        wire = Wire(
            shutdownTimeout=1.0, webSocketPolicy=WebSocketPolicy(closeTimeout=3.0)
        )
        client = wire.connectWebSocket(answersClose=False)
        wire.drain.start()
        wire.advance(1.0)
        self.assertTrue(client.closed)
        self.assertAlmostEqual(cast(float, client.closedAt), 0.9, delta=1e-6)
        self.assertNotIn(b"503", client.protocol.data.split(b"\r\n\r\n", 1)[1])
        self.assertEqual(client.failures, [])
        self.assertTrue(wire.drain.finished)
        self.assertEqual(wire.drain.requestsCut, 0)
        self.assertEqual(
            wire.drain.longLived.byKind()["websocket"],
            {"clean": 0, "timeout": 0, "cut": 1},
        )

    def test_secondSignalAbortsAtOnce(self) -> None:
        wire = Wire(drainDelay=2.0)
        wire.drain.addListener(FakePort(wire.clock))
        client = wire.connectWebSocket()
        wire.drain.start()
        wire.advance(0.1)
        wire.drain.forceStop()
        wire.flush()
        self.assertTrue(client.closed)
        self.assertIsNone(client.closeCode)
        self.assertEqual(client.failures, [])
        self.assertEqual(wire.drain.longLived.byKind()["websocket"]["cut"], 1)

    def test_upgradeDuringTheDrainIsRefused(self) -> None:
        """
        From the signal, a new upgrade gets a 503 with C{Retry-After} and
        C{Connection: close}, even while the listeners still accept.
        """
        wire = Wire(drainDelay=1.0)
        wire.drain.addListener(FakePort(wire.clock))
        wire.drain.start()
        client = wire.connectWebSocket()
        self.assertFalse(client.accepted)
        self.assertEqual(client.rejected, 503)
        self.assertEqual(client.rejectedHeaders[b"retry-after"], b"5")
        self.assertEqual(client.rejectedHeaders[b"connection"], b"close")
        self.assertTrue(client.closed)

    def test_upgradeBegunBeforeTheSignalIsRefused(self) -> None:
        """
        An upgrade request whose first line arrived before the signal, and
        the rest after it, is refused too: it is processed during the drain.
        """
        wire = Wire(drainDelay=1.0)
        wire.drain.addListener(FakePort(wire.clock))
        handshake = WSConnection(ConnectionType.CLIENT).send(
            WebSocketRequest(host="test", target="/ws")
        )
        firstLine, rest = handshake.split(b"\r\n", 1)
        client = wire.connect()
        client.send(firstLine + b"\r\n")
        wire.drain.start()
        client.send(rest)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers[b"connection"], b"close")

    def test_sendsAfterTheCloseAreDroppedAndCounted(self) -> None:
        """
        A message that reaches the echo after its Close is delivered; the
        echo's answer is dropped and counted, not raised.
        """
        wire = Wire()
        failures = captureFailures(self, wire)
        client = wire.connectWebSocket(answersClose=False)
        # Sent before the client reads the server's Close, read after it.
        for text in ["late", "later"]:
            client.clientTransport.write(client.ws.send(TextMessage(text)))
        wire.drain.start()
        wire.flush()
        self.assertEqual(client.closeCode, 1001)
        self.assertEqual(client.afterClose, [])
        self.assertEqual(wire.drain.longLived.sendsDropped, {"websocket": 2})
        scraped = samples(wire.metrics.exposition())
        self.assertEqual(
            scraped[("gracesvc_ws_sends_dropped_after_close_total", ())], 2
        )
        wire.advance(1.1)
        self.assertEqual(failures, [])

    def test_goodbyeThatTakesTimeIsWaitedFor(self) -> None:
        """
        An application's C{goingAway} that returns a Deferred delays the
        Close until it fires.
        """
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws")
        [app] = factory.built
        said: Deferred[None] = Deferred()
        app.goodbye = said
        wire.drain.start()
        wire.advance(0.2)
        self.assertIsNone(client.closeCode)
        app.transport.sendTextMessage("bye")
        said.callback(None)
        wire.flush()
        self.assertEqual(client.messages, ["bye"])
        self.assertEqual(client.closeCode, 1001)

    def test_goodbyeIsBoundedByHalfTheCloseTimeout(self) -> None:
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws")
        factory.built[0].goodbye = Deferred()
        wire.drain.start()
        wire.advance(0.49)
        self.assertIsNone(client.closeCode)
        wire.advance(0.02)
        self.assertEqual(client.closeCode, 1001)
        self.assertAlmostEqual(cast(float, client.closeReceivedAt), 0.5, delta=1e-6)

    def test_failingGoodbyeIsLoggedAndTheCloseFollows(self) -> None:
        wire, factory = recorderWire()
        failures = captureFailures(self, wire)
        client = wire.connectWebSocket("/app/ws")
        factory.built[0].goodbye = Deferred()
        wire.drain.start()
        cast(Deferred[None], factory.built[0].goodbye).errback(ZeroDivisionError())
        wire.flush()
        self.assertEqual(client.closeCode, 1001)
        self.assertEqual(len(failures), 1)
        self.flushLoggedErrors(ZeroDivisionError)

    def test_pingAfterTheCloseIsNotAnswered(self) -> None:
        """
        A client's ping that crosses our Close gets no pong (none may follow
        a Close), and nothing breaks.
        """
        wire = Wire()
        failures = captureFailures(self, wire)
        client = wire.connectWebSocket(answersClose=False)
        client.clientTransport.write(client.ws.send(Ping(b"x")))
        wire.drain.start()
        wire.flush()
        self.assertEqual(client.closeCode, 1001)
        client.closeHandshake(1001)
        self.assertEqual(failures, [])
        self.assertEqual(client.failures, [])
        self.assertTrue(client.closed)


class ClosingHandshakeTests(SynchronousTestCase):
    def test_applicationCloseWaitsForThePeer(self) -> None:
        """
        The application's C{loseConnection(code, reason)} sends Close with
        both and waits for the peer's before TCP closes (Twisted's own
        closes TCP at once).
        """
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws", answersClose=False)
        factory.built[0].transport.loseConnection(4000, "bye")  # type: ignore[call-arg]
        wire.flush()
        self.assertEqual((client.closeCode, client.closeReason), (4000, "bye"))
        self.assertFalse(client.closed)
        client.closeHandshake(4000)
        self.assertTrue(client.closed)

    def test_peerCloseIsAnsweredAndTCPClosed(self) -> None:
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws")
        client.closeHandshake(1000, "done")
        self.assertEqual(client.closeCode, 1000)
        self.assertTrue(client.closed)
        self.assertEqual(len(factory.built[0].lost), 1)

    def test_messageTooBigIsClosedWith1009(self) -> None:
        """
        A message larger than the limit is not delivered: Close 1009.  One
        of exactly the limit is.
        """
        wire, factory = recorderWire(webSocketPolicy=WebSocketPolicy(maxMessageSize=10))
        client = wire.connectWebSocket("/app/ws")
        client.sendText("é" * 5)
        client.sendBytes(b"x" * 11)
        self.assertEqual(factory.built[0].received, ["é" * 5])
        self.assertEqual(client.closeCode, 1009)
        self.assertTrue(client.closed)

    def test_fragmentsCountTowardsTheLimit(self) -> None:
        wire, factory = recorderWire(webSocketPolicy=WebSocketPolicy(maxMessageSize=10))
        client = wire.connectWebSocket("/app/ws")
        for _ in range(3):
            client.send(client.ws.send(TextMessage("abcd", message_finished=False)))
        self.assertEqual(client.closeCode, 1009)
        self.assertEqual(factory.built[0].received, [])

    def test_protocolErrorFailsTheConnection(self) -> None:
        """
        An unmasked frame from a client: Close 1002, TCP closed.
        """
        wire = Wire()
        client = wire.connectWebSocket()
        client.send(b"\x81\x02hi")
        self.assertEqual(client.closeCode, 1002)
        self.assertTrue(client.closed)
        self.assertEqual(wire.drain.connections, 0)

    def test_applicationErrorIsLoggedAndClosedWith1011(self) -> None:
        wire, factory = recorderWire()
        failures = captureFailures(self, wire)
        client = wire.connectWebSocket("/app/ws")

        def fail(message: str) -> None:
            raise ZeroDivisionError(message)

        factory.built[0].textMessageReceived = fail  # type: ignore[method-assign]
        client.sendText("boom")
        self.assertEqual(client.closeCode, 1011)
        self.assertTrue(client.closed)
        self.assertEqual(len(failures), 1)
        self.flushLoggedErrors(ZeroDivisionError)


class KeepaliveTests(SynchronousTestCase):
    def test_pingEveryIntervalWhileThePeerAnswers(self) -> None:
        """
        An open WebSocket is pinged every interval after the last pong; a
        peer that answers stays open, and the application never sees the
        keepalive's pongs.
        """
        wire, factory = recorderWire(
            webSocketPolicy=WebSocketPolicy(pingInterval=20, pingTimeout=5)
        )
        client = wire.connectWebSocket("/app/ws")
        for _ in range(7):
            wire.advance(10)
        self.assertEqual([round(at) for at, _ in client.pings], [20, 40, 60])
        self.assertEqual(len({payload for _, payload in client.pings}), 3)
        self.assertTrue(client.open)
        self.assertEqual(factory.built[0].pongs, [])
        factory.built[0].transport.ping(b"app")
        wire.flush()
        self.assertEqual(factory.built[0].pongs, [b"app"])

    def test_peerThatStopsAnsweringIsClosedWith1011(self) -> None:
        """
        No pong within the timeout: Close 1011, and the connection is gone
        at the close timeout at the latest, without a drain.
        """
        wire = Wire(webSocketPolicy=WebSocketPolicy(pingInterval=20, pingTimeout=5))
        client = wire.connectWebSocket(answersPings=False, answersClose=False)
        wire.advance(20)
        self.assertEqual(len(client.pings), 1)
        wire.advance(4.9)
        self.assertIsNone(client.closeCode)
        wire.advance(0.2)
        self.assertEqual(
            (client.closeCode, client.closeReason), (1011, "keepalive ping timeout")
        )
        wire.advance(1.0)
        self.assertTrue(client.closed)
        self.assertEqual(wire.drain.connections, 0)

    def test_noPingsWhenDisabledOrClosing(self) -> None:
        """
        C{pingInterval=None} sends none; a WebSocket the drain closes sends
        none after its Close.
        """
        wire = Wire(webSocketPolicy=WebSocketPolicy(pingInterval=None))
        quiet = wire.connectWebSocket()
        wire.advance(100)
        self.assertEqual(quiet.pings, [])

        wire = Wire(webSocketPolicy=WebSocketPolicy(pingInterval=1, closeTimeout=5))
        client = wire.connectWebSocket(answersClose=False)
        wire.drain.start()
        wire.flush()
        self.assertEqual(client.closeCode, 1001)
        wire.advance(4.9)
        self.assertEqual(client.pings, [])


class ClientThatDoesNotReadTests(SynchronousTestCase):
    def test_abortedPastTheWriteLimit(self) -> None:
        """
        While the transport's buffer is full (the client takes nothing),
        what the application sends is held in memory up to the write limit;
        past it the connection is aborted, counted and logged.
        """
        policy = WebSocketPolicy(writeLimit=4000)
        wire, factory = recorderWire(webSocketPolicy=policy)
        client = wire.connectWebSocket("/app/ws")
        app = factory.built[0]
        app.transport.sendBytesMessage(b"x" * 3000)
        client.server.pauseProducing()
        app.transport.sendBytesMessage(b"y" * 3000)
        self.assertFalse(client.closed)
        app.transport.sendBytesMessage(b"z" * 1000)
        wire.flush()
        self.assertTrue(client.reset)
        self.assertEqual(wire.site.clientTally.timeouts, {"buffer": 1})
        self.assertEqual(len(app.lost), 1)
        self.assertEqual(wire.drain.connections, 0)

    def test_aClientThatCatchesUpStartsOver(self) -> None:
        """
        Once the buffer has emptied, what was held before no longer counts.
        """
        policy = WebSocketPolicy(writeLimit=4000)
        wire, factory = recorderWire(webSocketPolicy=policy)
        client = wire.connectWebSocket("/app/ws")
        app = factory.built[0]
        for _ in range(5):
            client.server.pauseProducing()
            app.transport.sendBytesMessage(b"y" * 3000)
            client.server.resumeProducing()
            app.transport.sendBytesMessage(b"")
        wire.flush()
        self.assertFalse(client.closed)
        self.assertEqual(len(client.messages), 10)

    def test_anApplicationsProducerIsPausedAndResumed(self) -> None:
        """
        An application that sends through a producer
        (C{WebSocketTransport.attachProducer}) is paused while the client
        takes nothing and resumed when it has caught up: the producer is
        registered with the connection's channel (Twisted's own transport
        registers it with the TCP transport, which has the channel
        already, and raises).
        """
        wire, factory = recorderWire()
        client = wire.connectWebSocket("/app/ws")
        app = factory.built[0]
        calls: list[str] = []

        @implementer(IPushProducer)
        class Producer:
            def pauseProducing(self) -> None:
                calls.append("pause")

            def resumeProducing(self) -> None:
                calls.append("resume")

            def stopProducing(self) -> None:
                calls.append("stop")

        app.transport.attachProducer(Producer())
        client.server.pauseProducing()
        client.server.resumeProducing()
        app.transport.detachProducer()
        client.server.pauseProducing()
        self.assertEqual(calls, ["pause", "resume"])
        self.assertFalse(client.closed)


class MessageBufferTests(SynchronousTestCase):
    def test_partsJoined(self) -> None:
        """
        A message comes whole once its last part is in, text as text and
        bytes as bytes; the next one starts empty.
        """
        buffer = MessageBuffer(10)
        self.assertIsNone(buffer.add(TextMessage("ab", message_finished=False)))
        self.assertEqual(buffer.add(TextMessage("cd")), "abcd")
        self.assertIsNone(buffer.add(BytesMessage(b"\x00", message_finished=False)))
        self.assertEqual(buffer.add(BytesMessage(b"\x01")), b"\x00\x01")
        self.assertEqual(buffer.add(TextMessage("x" * 10)), "x" * 10)

    def test_manyTinyFragments(self) -> None:
        """
        A message of many tiny fragments meets the same limit, and is held
        as one buffer, not as a part per fragment.
        """
        buffer = MessageBuffer(2000)
        for _ in range(999):
            self.assertIsNone(buffer.add(TextMessage("é", message_finished=False)))
        self.assertEqual(buffer.add(TextMessage("é")), "é" * 1000)
        for _ in range(1000):
            buffer.add(BytesMessage(b"ab", message_finished=False))
        with self.assertRaises(MessageTooBig):
            buffer.add(BytesMessage(b"c", message_finished=False))

    def test_limitInUTF8(self) -> None:
        """
        Text counts in UTF-8 bytes: the part that passes the limit raises
        L{MessageTooBig}, and every part after it is dropped.
        """
        buffer = MessageBuffer(10)
        self.assertIsNone(buffer.add(TextMessage("é" * 4, message_finished=False)))
        with self.assertRaises(MessageTooBig):
            buffer.add(TextMessage("éx"))
        self.assertIsNone(buffer.add(TextMessage("small")))


class KeepaliveUnitTests(SynchronousTestCase):
    def keepalive(
        self, interval: float | None = 20, opened: bool = True
    ) -> tuple[Keepalive, Clock, list[bytes], list[str]]:
        """
        @return: a L{Keepalive} on a L{Clock}, the payloads it pinged, and
            its timeouts.
        """
        clock = Clock()
        pinged: list[bytes] = []
        late: list[str] = []

        def ping(payload: bytes) -> bool:
            if opened:
                pinged.append(payload)
            return opened

        keepalive = Keepalive(clock, interval, 5, ping, lambda: late.append("late"))
        return keepalive, clock, pinged, late

    def test_pongAwaitedThenNextPing(self) -> None:
        """
        A ping one interval after L{Keepalive.start}; its pong is told apart
        from another one, and ends the wait.
        """
        keepalive, clock, pinged, late = self.keepalive()
        keepalive.start()
        clock.advance(19.9)
        self.assertEqual(pinged, [])
        clock.advance(0.1)
        (payload,) = pinged
        self.assertEqual(len(payload), 4)
        self.assertFalse(keepalive.pongReceived(b"app"))
        self.assertTrue(keepalive.pongReceived(payload))
        self.assertFalse(keepalive.pongReceived(payload))
        clock.advance(10)
        self.assertEqual((clock.getDelayedCalls(), late), ([], []))

    def test_silenceTimesOut(self) -> None:
        keepalive, clock, pinged, late = self.keepalive()
        keepalive.start()
        clock.advance(20)
        clock.advance(4.9)
        self.assertEqual(late, [])
        clock.advance(0.1)
        self.assertEqual(late, ["late"])
        self.assertFalse(keepalive.pongReceived(pinged[0]))

    def test_noneWhenDisabledStoppedOrClosed(self) -> None:
        """
        No ping without an interval, after L{Keepalive.stop}, or when the
        WebSocket no longer sends one; and then no wait for a pong.
        """
        for keepalive, clock, pinged, late in [
            self.keepalive(interval=None),
            self.keepalive(opened=False),
        ]:
            keepalive.start()
            clock.advance(100)
            self.assertEqual((pinged, late, clock.getDelayedCalls()), ([], [], []))
        keepalive, clock, pinged, late = self.keepalive()
        keepalive.start()
        clock.advance(20)
        keepalive.stop()
        clock.advance(100)
        self.assertEqual((len(pinged), late), (1, []))


class PolicyTests(SynchronousTestCase):
    def test_checked(self) -> None:
        cases: list[tuple[dict[str, Any], str]] = [
            ({"closeCode": 1005}, "not a close code a server may send"),
            ({"closeCode": 2999}, "not a close code"),
            ({"closeTimeout": 0}, "close timeout must be > 0"),
            ({"maxMessageSize": 0}, "largest message must be >= 1"),
            ({"closeReason": "x" * 124}, "123 bytes"),
            ({"pingInterval": 0}, "ping interval must be > 0"),
            ({"pingTimeout": 0}, "ping timeout must be > 0"),
        ]
        for kwargs, message in cases:
            with self.assertRaises(ValueError) as e:
                WebSocketPolicy(**kwargs)
            self.assertIn(message, str(e.exception))
        WebSocketPolicy(closeCode=1012)
        WebSocketPolicy(closeCode=4000)
