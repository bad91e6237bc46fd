"""
The drain, as a client on the wire sees it: in-memory connections to a real
L{DrainingSite}, time driven by a L{Clock}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from typing import Any, cast

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request as SiteRequest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gracesvc._core.drain import Drain, DrainPolicy, IDrainableConnection, Phase
from gracesvc._protocols.http1 import DrainingRequest
from gracesvc.testing import Wire, get, parseResponses


@implementer(IListeningPort)
class FakePort:
    """
    A listening port that records when it was closed.
    """

    def __init__(self, clock: Any) -> None:
        self.clock = clock
        self.closedAt: float | None = None

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None] | None:
        self.closedAt = self.clock.seconds()
        return None

    def getHost(self) -> IAddress:
        return IPv4Address("TCP", "127.0.0.1", 8080)


def captureLog(drain: Drain) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    drain.log = Logger(observer=cast(ILogObserver, events.append))
    return events


class DrainLifecycleTests(SynchronousTestCase):
    def test_idleServiceStopsAtOnce(self) -> None:
        """
        With nothing in flight, the drain closes the listeners and is done
        in the same call.
        """
        wire = Wire()
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        self.successResultOf(wire.drain.start())
        self.assertEqual(port.closedAt, 0)

    def test_acceptQueueEmptiedBeforeTheListenerCloses(self) -> None:
        """
        Connections waiting in the kernel's accept queue are accepted before
        the listening socket closes (closing it would reset them).
        """
        wire = Wire()
        calls: list[str] = []

        class Port(FakePort):
            connected = True

            def doRead(self) -> None:
                calls.append("accept")

            def stopListening(self) -> None:
                calls.append("close")

        wire.drain.addListener(Port(wire.clock))
        self.successResultOf(wire.drain.start())
        self.assertEqual(calls, ["accept", "close"])

    def test_wholeAcceptQueueAcceptedBeforeTheListenerCloses(self) -> None:
        """
        Every connection in the accept queue is accepted before the listener
        closes, however few Twisted's port last accepted at once.

        C{tcp.Port.doRead} accepts at most C{numberAccepts} connections a
        call, a number it adapts to what the previous call accepted: 1 after
        a quiet spell.  A reactor that is slow to accept (a loaded machine)
        can have many connections queued when the signal arrives, each with
        its request sent; one C{doRead} left all but the first to be reset.
        """
        wire = Wire()
        closedWith: list[int] = []

        class Port(FakePort):
            """
            Accepts the way C{tcp.Port.doRead} does.
            """

            connected = True
            numberAccepts = 1
            queued = 30

            def doRead(self) -> None:
                accepted = min(self.numberAccepts, self.queued)
                self.queued -= accepted
                if accepted == self.numberAccepts:
                    self.numberAccepts += 20
                else:
                    self.numberAccepts = max(1, accepted)

            def stopListening(self) -> Deferred[None] | None:
                closedWith.append(self.queued)
                return None

        wire.drain.addListener(Port(wire.clock))
        self.successResultOf(wire.drain.start())
        self.assertEqual(closedWith, [0])

    def test_listenersCloseBeforeIdleConnections(self) -> None:
        """
        Without a drain delay, the listeners are closed first and idle
        connections only once they are: closing thousands of idle
        connections in the signal's reactor turn would delay the port's
        close by that much.  A response written in between already says
        C{Connection: close}.
        """
        wire = Wire(pingDelay=0)
        closing: Deferred[None] = Deferred()

        class SlowPort(FakePort):
            def stopListening(self) -> Deferred[None] | None:
                return closing

        wire.drain.addListener(SlowPort(wire.clock))
        idle = wire.connect()
        wire.advance(5)
        busy = wire.connect()
        wire.drain.start()
        wire.flush()
        self.assertFalse(idle.closed)
        busy.send(get("/ping"))
        self.assertEqual(busy.responses[0].headers[b"connection"], b"close")
        self.assertTrue(busy.closed)
        closing.callback(None)
        wire.flush()
        self.assertTrue(idle.closed)

    def test_inFlightRequestCompletes(self) -> None:
        """
        A request in flight at the signal is answered in full, with
        C{Connection: close}, and the drain ends when its connection closes.
        """
        wire = Wire(pingDelay=2)
        client = wire.connect()
        client.send(get("/ping"))
        wire.advance(0.5)
        done = wire.drain.start()
        wire.advance(1.4)
        self.assertNoResult(done)
        self.assertEqual(client.responses, [])
        wire.advance(0.2)
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b'{"message": "pong"}')
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.completedDuringDrain, 1)
        self.assertEqual(wire.drain.requestsCut, 0)

    def test_doneOnlyAfterTheLastBytesAreDelivered(self) -> None:
        """
        When the handler finishes, the response is still in the transport's
        buffer: the drain waits for the connection to close after flushing,
        not for the request to finish (else the reactor's disconnectAll would
        throw the response away).
        """
        wire = Wire(pingDelay=2)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.clock.advance(2)  # the handler answers; nothing moved yet
        self.assertNoResult(done)
        self.assertEqual(client.protocol.data, b"")
        wire.flush()
        self.assertEqual(len(client.responses), 1)
        self.successResultOf(done)

    def test_manyInFlightAllComplete(self) -> None:
        """
        Twenty requests in flight at the signal all get their answer.
        """
        wire = Wire(pingDelay=2)
        clients = [wire.connect() for _ in range(20)]
        for client in clients:
            client.send(get("/ping"))
        done = wire.drain.start()
        self.assertEqual(wire.drain.inFlight, 20)
        wire.advance(2.1)
        self.successResultOf(done)
        self.assertEqual([[r.code for r in c.responses] for c in clients], [[200]] * 20)
        self.assertEqual(wire.drain.completedDuringDrain, 20)

    def test_startTwiceIsOneDrain(self) -> None:
        """
        The signal trigger and C{stopService} both start the drain; the
        second call waits for the same drain.
        """
        wire = Wire(pingDelay=1)
        wire.connect().send(get("/ping"))
        first = wire.drain.start()
        second = wire.drain.start()
        wire.advance(1.1)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(wire.drain.completedDuringDrain, 1)

    def test_logsStartAndSummary(self) -> None:
        """
        The drain logs C{Shutdown Server ...} with the number in flight, and
        C{Server exiting} with what was completed and cut and how long it took.
        """
        wire = Wire(pingDelay=1.5)
        events = captureLog(wire.drain)
        wire.drain.addListener(FakePort(wire.clock))
        wire.connect().send(get("/ping"))
        wire.drain.start("SIGINT")
        wire.advance(1.6)
        steps = [e["step"] for e in events]
        self.assertEqual(steps, ["start", "listeners_closed", "progress", "done"])
        start, done = events[0], events[-1]
        self.assertEqual(start["inFlight"], 1)
        self.assertIn("Shutdown Server", start["log_format"])
        self.assertIn("Server exiting", done["log_format"])
        self.assertEqual((done["completed"], done["cut"]), (1, 0))
        self.assertAlmostEqual(done["duration"], 1.5, delta=0.02)


class CapTests(SynchronousTestCase):
    def test_unansweredRequestGets503AtTheCap(self) -> None:
        """
        A request still unanswered near the cap is answered with a 503,
        C{Retry-After} and C{Connection: close}, and the drain is done by the
        cap.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.85)
        self.assertNoResult(done)
        wire.advance(0.1)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers[b"retry-after"], b"1")
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.requestsCut, 1)
        self.assertEqual(wire.drain.completedDuringDrain, 0)

    def test_503SurvivesAReactorLateForTheCut(self) -> None:
        """
        A reactor that gets to the cut late (a loaded machine: no CPU from
        before the cut until after the cap) runs the cut and the cap in one
        turn.  The 503 the cut writes is still in Twisted's write buffer
        then: the cap must not abort the connection before it is flushed.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.8)
        # The stall: the cut's and the cap's timers run together, with no
        # I/O in between.
        wire.clock.advance(0.3)
        wire.flush()
        self.assertEqual([r.code for r in client.responses], [503])
        self.assertFalse(client.reset)
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.requestsCut, 1)

    def test_cutHandlerIsCancelledNotAnswered(self) -> None:
        """
        The handler of a cut request is cancelled: it does not write to the
        finished request later, and nothing is logged as an error.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        wire.drain.start()
        wire.advance(1)
        self.assertEqual(wire.clock.getDelayedCalls(), [])
        wire.advance(10)
        self.assertEqual([r.code for r in client.responses], [503])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_clientThatNeverReadsIsAbortedAtTheCap(self) -> None:
        """
        A connection that does not close after the 503 (its client reads
        nothing) cannot hold the drain past the cap.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=2)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        # Stop moving bytes: the connection can never finish closing.
        wire.clients.remove(client)
        wire.advance(1.95)
        self.assertNoResult(done)
        wire.advance(0.05)
        self.successResultOf(done)

    def test_requestsPipelinedBehindTheCutGet503Too(self) -> None:
        """
        Requests read whole behind the one cut at the cap are answered with a
        503 each, in order, before the connection closes: none is left
        without an answer.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping") + get("/ping") + get("/healthz"))
        done = wire.drain.start()
        wire.advance(1)
        self.assertEqual([r.code for r in client.responses], [503, 503, 503])
        self.assertEqual(
            [r.headers[b"retry-after"] for r in client.responses], [b"1"] * 3
        )
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.requestsCut, 3)

    def test_capCountsFromTheSignal(self) -> None:
        """
        A signal handled late (the reactor was busy) still has the drain end
        within the cap of the signal.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        wire.clock.advance(0.4)
        done = wire.drain.start(startedAt=0.0)
        wire.advance(0.45)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.assertEqual([r.code for r in client.responses], [503])
        self.successResultOf(done)

    def test_pipelinedRequestsLetTimersRunWhileDraining(self) -> None:
        """
        While draining, pipelined requests are answered one per reactor
        turn, so that the drain's timers run between them: Twisted answers
        all it has read (thousands of small requests) in one go.
        """
        wire = Wire(pingDelay=0.1)
        client = wire.connect()
        client.send(get("/ping") + get("/healthz") * 3)
        wire.drain.start()
        answered: list[int] = []
        wire.clock.callLater(
            0.1, lambda: answered.append(wire.drain.completedDuringDrain)
        )
        wire.clock.advance(0.1)
        self.assertEqual(answered, [1])
        wire.flush()
        self.assertEqual([r.code for r in client.responses], [200] * 4)
        self.assertTrue(client.closed)

    def test_trackedWorkThatNeverFinishesIsAbandoned(self) -> None:
        """
        A tracked Deferred that never fires holds the drain until the cap,
        no longer.
        """
        wire = Wire(shutdownTimeout=3)
        work: Deferred[None] = Deferred()
        wire.drain.track(work)
        done = wire.drain.start()
        wire.advance(2.9)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(wire.drain.abandoned, 1)
        # Given up on, not cancelled: a timeout on a list of Deferreds would
        # have cancelled the work itself.
        self.assertNoResult(work)


class TrackTests(SynchronousTestCase):
    def test_drainWaitsForTrackedWork(self) -> None:
        """
        Work handed to C{track} holds the drain until it finishes, and its
        result is unchanged for the application.
        """
        wire = Wire()
        work: Deferred[str] = Deferred()
        self.assertIs(wire.drain.track(work), work)
        done = wire.drain.start()
        self.assertNoResult(done)
        work.callback("saved")
        self.successResultOf(done)
        self.assertEqual(self.successResultOf(work), "saved")

    def test_failedTrackedWorkIsLoggedAndDoesNotStopTheDrain(self) -> None:
        """
        A tracked Deferred that fails ends its wait like a success, and the
        failure is logged, not lost.
        """
        wire = Wire()
        work: Deferred[None] = Deferred()
        wire.drain.track(work)
        done = wire.drain.start()
        work.errback(ValueError("disk full"))
        self.successResultOf(done)
        self.failureResultOf(work, ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_alreadyFiredWorkIsNotWaitedFor(self) -> None:
        wire = Wire()
        work: Deferred[int] = Deferred()
        work.callback(1)
        wire.drain.track(work)
        self.successResultOf(wire.drain.start())


class KeepAliveTests(SynchronousTestCase):
    def test_longIdleConnectionClosedAtOnce(self) -> None:
        """
        A keep-alive connection idle for longer than the grace is closed as
        soon as the drain begins, and does not hold the exit.
        """
        wire = Wire()
        client = wire.connect()
        client.send(get("/healthz"))
        [before] = client.responses
        self.assertNotIn(b"connection", before.headers)
        wire.advance(5)
        done = wire.drain.start()
        wire.flush()
        self.assertTrue(client.closed)
        self.successResultOf(done)

    def test_justUsedConnectionMaySendOneMoreRequest(self) -> None:
        """
        A connection used just before the signal gets the grace to send the
        request its client may be writing; it is served with
        C{Connection: close}, then closed.
        """
        wire = Wire(idleGrace=0.5)
        client = wire.connect()
        client.send(get("/healthz"))
        wire.advance(0.1)
        done = wire.drain.start()
        wire.advance(0.2)
        self.assertFalse(client.closed)
        client.send(get("/healthz"))
        first, second = client.responses
        self.assertEqual(second.code, 200)
        self.assertEqual(second.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.successResultOf(done)

    def test_graceCountsFromTheLastResponseNotTheConnect(self) -> None:
        """
        A connection open for long but answered just before the signal is
        "just used": its client may be sending the next request already.
        """
        wire = Wire(idleGrace=0.5)
        client = wire.connect()
        wire.advance(5)
        client.send(get("/healthz"))
        wire.advance(0.1)
        wire.drain.start()
        wire.flush()
        self.assertFalse(client.closed)
        client.send(get("/healthz"))
        self.assertEqual([r.code for r in client.responses], [200, 200])

    def test_justUsedConnectionClosedAfterTheGrace(self) -> None:
        """
        If the just-used connection sends nothing, it is closed when the
        grace since its last response runs out.
        """
        wire = Wire(idleGrace=0.5)
        client = wire.connect()
        client.send(get("/healthz"))
        wire.advance(0.1)
        done = wire.drain.start()
        wire.advance(0.35)
        self.assertFalse(client.closed)
        wire.advance(0.1)
        self.assertTrue(client.closed)
        self.successResultOf(done)

    def test_silentConnectionClosedAfterTheGrace(self) -> None:
        """
        A connection accepted just before the signal that never sends a byte
        is closed once the grace since it was accepted runs out.
        """
        wire = Wire(idleGrace=0.5)
        client = wire.connect()
        wire.advance(0.2)
        done = wire.drain.start()
        wire.advance(0.25)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.assertTrue(client.closed)
        self.assertEqual(client.protocol.data, b"")
        self.successResultOf(done)

    def test_lateRequestOnAcceptedConnectionIsServed(self) -> None:
        """
        A request arriving 50 ms after the signal on a connection accepted
        before it is served, with C{Connection: close}.
        """
        wire = Wire(pingDelay=0.1)
        client = wire.connect()
        done = wire.drain.start()
        wire.advance(0.05)
        client.send(get("/ping"))
        wire.advance(0.2)
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.successResultOf(done)

    def test_requestArrivingInPiecesIsNotCutByTheGrace(self) -> None:
        """
        Once a request has begun to arrive the connection is not idle: the
        grace does not close it under the client.
        """
        wire = Wire(idleGrace=0.5, pingDelay=0)
        client = wire.connect()
        wire.drain.start()
        request = get("/ping")
        client.send(request[:10])
        wire.advance(1)
        self.assertFalse(client.closed)
        client.send(request[10:])
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertTrue(client.closed)

    def test_pipelinedRequestsAnsweredInOrderThenClosed(self) -> None:
        """
        Requests pipelined behind the one in flight at the signal are all
        answered, in order, each with C{Connection: close}; then the
        connection closes.  (Twisted alone drops them unparsed.)
        """
        wire = Wire(pingDelay=1)
        client = wire.connect()
        client.send(get("/ping") + get("/healthz") + get("/readyz"))
        done = wire.drain.start()
        wire.advance(1.1)
        self.assertEqual([r.code for r in client.responses], [200, 200, 503])
        self.assertEqual(
            [r.headers[b"connection"] for r in client.responses], [b"close"] * 3
        )
        self.assertTrue(client.closed)
        self.successResultOf(done)

    def test_clientConnectionCloseIsHonoured(self) -> None:
        """
        Before any drain, a client's C{Connection: close} closes the
        connection as Twisted always did.
        """
        wire = Wire()
        client = wire.connect()
        client.send(get("/healthz", "Connection: close"))
        self.assertEqual(client.responses[0].headers[b"connection"], b"close")
        self.assertTrue(client.closed)


class _TLSClient(Protocol):
    """
    The application protocol of an in-memory TLS client: what it reads.
    """

    def __init__(self) -> None:
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TLSHandshakeTests(SynchronousTestCase):
    """
    Over TLS the channel is connected when TCP is, before the client's
    first byte: a handshake in progress is not idle.
    """

    def connectTLS(self, wire: Wire) -> tuple[Any, Any, IOPump]:
        """
        @return: an in-memory TLS client of C{wire}'s site, the server's TLS
            protocol and the pump between them; the client's ClientHello
            not delivered yet (a client slow to start its handshake).
        """
        from twisted.internet.ssl import CertificateOptions, PrivateCertificate
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.test import __file__ as twistedTests

        with open(os.path.join(os.path.dirname(twistedTests), "server.pem"), "rb") as f:
            serverOptions = PrivateCertificate.loadPEM(f.read()).options()
        # TLS aggregates small writes until the clock's next turn.
        server = TLSMemoryBIOFactory(serverOptions, False, wire.site, clock=wire.clock)
        client = TLSMemoryBIOFactory(
            CertificateOptions(),
            True,
            Factory.forProtocol(_TLSClient),
            clock=wire.clock,
        )
        address = IPv4Address("TCP", "127.0.0.1", 1)
        return connectedServerAndClient(
            lambda: server.buildProtocol(address),
            lambda: client.buildProtocol(address),
            greet=False,
        )

    def assertSlowHandshakeServed(self, wire: Wire) -> None:
        client, server, pump = self.connectTLS(wire)
        app = cast(_TLSClient, client.wrappedProtocol)
        done = wire.drain.start()
        wire.clock.advance(2)
        # Before: closed as idle at 0.5 s, which aborts a TLS handshake in
        # progress (the client's handshake fails with a reset).
        self.assertFalse(server.transport.disconnecting)
        self.assertEqual(wire.drain.connections, 1)
        pump.flush()
        # The handshake completed: the idle grace counts from now.
        wire.clock.advance(0.3)
        self.assertFalse(server.transport.disconnecting)
        client.write(get("/ping"))
        for _ in range(5):
            wire.clock.advance(0.01)
            pump.flush()
        [response] = parseResponses(app.data)
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers[b"connection"], b"close")
        self.successResultOf(done)

    def test_slowHandshakeIsNotIdle(self) -> None:
        """
        A TLS connection accepted before the signal whose client sends its
        ClientHello only after the idle grace is not closed under it: its
        request is served, with C{Connection: close}.
        """
        self.assertSlowHandshakeServed(Wire(idleGrace=0.5, pingDelay=0))

    def test_slowHandshakeIsNotIdleWithHTTP2(self) -> None:
        """
        The same when the site serves HTTP/2 (each connection a
        L{gracesvc._protocols.h2.NegotiatingProtocol} until its first bytes).
        """
        self.assertSlowHandshakeServed(Wire(idleGrace=0.5, pingDelay=0, h2c=True))

    def test_graceCountsFromTheHandshake(self) -> None:
        """
        Once its handshake completes, a TLS connection that sends no request
        is closed when the grace since the handshake runs out.
        """
        wire = Wire(idleGrace=0.5)
        client, server, pump = self.connectTLS(wire)
        done = wire.drain.start()
        wire.clock.advance(1)
        pump.flush()
        wire.clock.advance(0.45)
        self.assertFalse(server.transport.disconnecting)
        wire.clock.advance(0.1)
        pump.flush()
        self.assertTrue(server.transport.disconnecting)
        pump.flush()
        self.successResultOf(done)

    def test_silentTLSConnectionClosedAtTheCut(self) -> None:
        """
        A client that never starts its handshake does not hold the drain
        past the cut.
        """
        wire = Wire(shutdownTimeout=2)
        client, server, pump = self.connectTLS(wire)
        done = wire.drain.start()
        wire.clock.advance(1.5)
        self.assertNoResult(done)
        wire.clock.advance(0.5)
        self.assertTrue(server.transport.disconnecting)
        pump.flush()
        self.successResultOf(done)


class DrainDelayTests(SynchronousTestCase):
    def test_keepsAcceptingForTheDelay(self) -> None:
        """
        With a drain delay, listeners stay open for the delay while
        C{/readyz} answers 503 and requests are still served with
        C{Connection: close}.
        """
        wire = Wire(drainDelay=1, pingDelay=0.1)
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        done = wire.drain.start()
        wire.advance(0.5)
        self.assertIsNone(port.closedAt)
        late = wire.connect()
        late.send(get("/readyz"))
        ping = wire.connect()
        ping.send(get("/ping"))
        wire.advance(0.2)
        self.assertEqual(late.responses[0].code, 503)
        self.assertEqual(ping.responses[0].code, 200)
        self.assertEqual(ping.responses[0].headers[b"connection"], b"close")
        self.assertNoResult(done)
        wire.advance(0.4)
        self.assertAlmostEqual(port.closedAt, 1.0, delta=0.011)
        self.successResultOf(done)


class ForcedStopTests(SynchronousTestCase):
    def test_secondSignalStopsAtOnce(self) -> None:
        """
        C{forceStop} (a second signal) aborts what is in flight and ends the
        drain at once, counting the cut request.
        """
        wire = Wire(pingDelay=3)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.5)
        wire.drain.forceStop()
        self.successResultOf(done)
        wire.flush()
        self.assertTrue(client.closed)
        self.assertEqual(client.responses, [])
        self.assertEqual(wire.drain.requestsCut, 1)


class RequestClassTests(SynchronousTestCase):
    def test_drainingRequestsOnlyDuringTheDrain(self) -> None:
        """
        Before the signal a request is a plain Twisted request, whose
        C{process} costs nothing more than in a plain L{Site}; one processed
        during the drain is a L{DrainingRequest}, however early its first
        bytes came.
        """
        seen: list[type] = []

        class Recording(Resource):
            isLeaf = True

            def render_GET(self, request: IRequest) -> bytes:
                seen.append(type(request))
                return b"ok"

        wire = Wire(drainDelay=1.0, resource=Recording())
        early = wire.connect()
        early.send(get("/"))
        straddling = wire.connect()
        straddling.send(b"GET / HTTP/1.1\r\n")
        wire.drain.start()
        straddling.send(b"Host: test\r\n\r\n")
        early.send(get("/"))
        self.assertEqual(seen, [SiteRequest, DrainingRequest, DrainingRequest])
        self.assertEqual(
            [r.code for r in early.responses + straddling.responses], [200, 200, 200]
        )


class AccessLogTests(SynchronousTestCase):
    def test_requestsFinishedDuringTheDrainAreLogged(self) -> None:
        """
        Closing the last port stops the factory, which closes Twisted's
        access log; the site keeps it open until the drain is done, so the
        requests answered during the drain are logged.
        """
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "access.log")
        wire = Wire(pingDelay=1)
        wire.site.logPath = path
        wire.site.doStart()
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.site.doStop()  # what closing the listening port does
        wire.advance(1.1)
        self.successResultOf(done)
        with open(path) as f:
            lines = f.readlines()
        self.assertEqual(len(lines), 1)
        self.assertIn('"GET /ping HTTP/1.1" 200', lines[0])
        self.assertIsNone(wire.site._logFile)


class PolicyTests(SynchronousTestCase):
    def test_drainDelayMustFitInTheTimeout(self) -> None:
        """
        The drain delay is part of the shutdown: one at or past the timeout
        is refused, with a message that says so.
        """
        with self.assertRaises(ValueError) as e:
            DrainPolicy(shutdownTimeout=2, drainDelay=2)
        self.assertIn("drain delay (2s) must be >= 0 and less than", str(e.exception))
        with self.assertRaises(ValueError):
            DrainPolicy(shutdownTimeout=0)
        with self.assertRaises(ValueError):
            DrainPolicy(drainDelay=-1)
        with self.assertRaises(ValueError):
            Drain(Clock(), shutdownTimeout=1, drainDelay=3)

    def test_cutLeadAndRetryAfter(self) -> None:
        """
        The cut comes 0.1 s before the cap, or a tenth of a short cap; the
        503 tells clients to retry after about the cap.
        """
        self.assertEqual(DrainPolicy(5).cutLead, 0.1)
        self.assertEqual(DrainPolicy(0.5).cutLead, 0.05)
        self.assertEqual(DrainPolicy(5).retryAfter, 5)
        self.assertEqual(DrainPolicy(0.2).retryAfter, 1)


class PhaseTests(SynchronousTestCase):
    def test_phasesInOrder(self) -> None:
        """
        A drain with a delay walks SERVING, DELAYING, DRAINING, CUT, DONE,
        each at its time.
        """
        drain = Drain(Clock(), shutdownTimeout=2, drainDelay=0.5)
        clock: Clock = drain.clock  # type: ignore[assignment]
        drain.addListener(FakePort(clock))
        drain.connectionOpened(Multiplexed(1))
        self.assertIs(drain.phase, Phase.SERVING)
        drain.start()
        self.assertIs(drain.phase, Phase.DELAYING)
        self.assertTrue(drain.draining)
        clock.advance(0.5)
        self.assertIs(drain.phase, Phase.DRAINING)
        self.assertTrue(drain.listenersClosed)
        clock.advance(1.39)
        self.assertIs(drain.phase, Phase.DRAINING)
        clock.advance(0.01)
        self.assertIs(drain.phase, Phase.CUT)
        self.assertTrue(drain.cutting)
        clock.advance(0.1)
        self.assertIs(drain.phase, Phase.DONE)
        self.assertTrue(drain.finished)

    def test_listenersCloseBeforeTheCutWhateverTheDelay(self) -> None:
        """
        A drain delay that reaches into the cut's lead still closes the
        listeners before requests are cut: no request is accepted only to
        be cut.
        """
        wire = Wire(shutdownTimeout=1, drainDelay=0.95, pingDelay=10)
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        client = wire.connect()
        client.send(get("/ping"))
        wire.drain.start()
        wire.advance(0.9)
        self.assertAlmostEqual(port.closedAt, 0.9)
        self.assertEqual(client.responses[0].code, 503)

    def test_secondSignalWhileTheListenersCloseLogsInOrder(self) -> None:
        """
        A forced stop while a listener is still closing ends the log with
        C{done}: the late close is not reported after it.
        """
        wire = Wire()
        events = captureLog(wire.drain)
        closing: Deferred[None] = Deferred()

        class SlowPort(FakePort):
            def stopListening(self) -> Deferred[None] | None:
                return closing

        wire.drain.addListener(SlowPort(wire.clock))
        done = wire.drain.start("SIGINT")
        wire.drain.forceStop()
        self.successResultOf(done)
        closing.callback(None)
        self.assertEqual([e["step"] for e in events], ["start", "forced", "done"])

    def test_lateInputsAreNoOpsOnceDone(self) -> None:
        """
        Once done, starting again, forcing, and the timers' inputs change
        nothing.
        """
        wire = Wire(shutdownTimeout=1)
        events = captureLog(wire.drain)
        self.successResultOf(wire.drain.start())
        wire.drain.start()
        wire.drain.forceStop()
        wire.advance(2)
        self.assertIs(wire.drain.phase, Phase.DONE)
        self.assertEqual([e["step"] for e in events], ["start", "done"])


@implementer(IDrainableConnection)
class Multiplexed:
    """
    A connection carrying several requests at once, as an HTTP/2 connection
    carries streams.
    """

    def __init__(self, inFlight: int) -> None:
        self.inFlight = inFlight
        self.state = "busy"
        self.cutWith: int | None = None

    def beginDrain(self) -> None:
        pass

    def cut(self, retryAfter: int) -> int:
        self.cutWith = retryAfter
        cut, self.inFlight = self.inFlight, 0
        return cut

    def abort(self) -> None:
        pass


class ConnectionKindTests(SynchronousTestCase):
    def test_inFlightCountsRequestsNotConnections(self) -> None:
        """
        The drain counts what each connection has in flight: one connection
        with three streams is three requests, all three cut at the cap.
        """
        drain = Drain(Clock(), shutdownTimeout=1)
        connection = Multiplexed(3)
        verifyObject(IDrainableConnection, connection)
        drain.connectionOpened(connection)
        self.assertEqual((drain.inFlight, drain.connections), (3, 1))
        drain.start()
        drain.clock.advance(0.9)  # type: ignore[attr-defined]
        self.assertEqual(connection.cutWith, 1)
        self.assertEqual(drain.requestsCut, 3)

    def test_channelStatesAsTheWireSeesThem(self) -> None:
        """
        An HTTP/1.1 channel is idle, receiving while a request arrives,
        busy while it is answered, idle again after, closing once closed.
        """
        wire = Wire(pingDelay=1)
        client = wire.connect()
        channel = client.server
        verifyObject(IDrainableConnection, channel)
        self.assertEqual((channel.state, channel.inFlight), ("idle", 0))
        client.send(b"\r\n")
        self.assertEqual(channel.state, "idle")
        client.send(b"GET /ping HTTP/1.1\r\n")
        self.assertEqual((channel.state, channel.inFlight), ("receiving", 0))
        client.send(b"Host: test\r\n\r\n")
        self.assertEqual((channel.state, channel.inFlight), ("busy", 1))
        self.assertEqual(wire.drain.connectionStates(), {"busy": 1})
        wire.advance(1.1)
        self.assertEqual(client.responses[0].code, 200)
        self.assertEqual(channel.state, "idle")
        client.send(get("/ping") + b"GET /ping HTTP/1.1\r\n")
        self.assertEqual(channel.state, "busy")
        wire.advance(1.1)
        self.assertEqual(channel.state, "receiving")
        wire.drain.start()
        wire.flush()
        self.assertEqual(channel.state, "receiving")
        client.send(b"Host: test\r\n\r\n")
        wire.advance(1.1)
        self.assertEqual([r.code for r in client.responses], [200, 200, 200])
        self.assertEqual(channel.state, "closing")


class TestingWireTests(SynchronousTestCase):
    def test_aUsersOwnResourceUnderADrain(self) -> None:
        """
        L{Wire} serves a resource of the user's own, on the clock it was
        given, as the example in docs/library.md shows.
        """
        from twisted.internet.task import deferLater
        from twisted.web.resource import Resource
        from twisted.web.server import NOT_DONE_YET

        clock = Clock()

        class Slow(Resource):
            isLeaf = True

            def render_GET(self, request: Any) -> object:
                def answer() -> None:
                    request.write(b"done")
                    request.finish()

                request.setHeader(b"content-length", b"4")
                deferLater(clock, 1, answer)
                return NOT_DONE_YET

        wire = Wire(resource=Slow(), clock=clock)
        client = wire.connect()
        client.send(get("/anything"))
        done = wire.drain.start()
        self.assertNoResult(done)
        wire.advance(1.1)
        [response] = client.responses
        self.assertEqual((response.code, response.body), (200, b"done"))
        self.assertEqual(response.headers[b"connection"], b"close")
        self.successResultOf(done)


class HookTests(SynchronousTestCase):
    def drain(self, **kwargs: Any) -> tuple[Drain, Clock, list[dict[str, Any]]]:
        clock = Clock()
        drain = Drain(clock, **kwargs)
        return drain, clock, captureLog(drain)

    def test_phasesInOrderOnTheTimeline(self) -> None:
        """
        C{draining} hooks run at the signal, C{goingAway} hooks and
        subscribers when the listeners have closed (after the drain delay),
        C{cleanup} hooks once the last connection has closed, last added
        first, one after another.
        """
        drain, clock, _ = self.drain(shutdownTimeout=5, drainDelay=1, cleanupBudget=1)
        calls: list[tuple[str, float, int]] = []
        connection = Multiplexed(1)

        def note(what: str) -> Callable[[], None]:
            return lambda: calls.append((what, clock.seconds(), drain.connections))

        first: Deferred[None] = Deferred()
        drain.addHook("draining", note("draining"))
        drain.addHook("goingAway", note("goingAway"))
        drain.addHook("cleanup", lambda: (note("cleanup 1")(), None)[1])
        drain.addHook("cleanup", lambda: (note("cleanup 2")(), first)[1])
        drain.whenGoingAway(note("subscriber"))
        drain.addListener(FakePort(clock))
        drain.connectionOpened(connection)
        done = drain.start()
        clock.advance(1)
        clock.advance(0.5)
        drain.connectionClosed(connection)
        self.assertEqual(
            calls,
            [
                ("draining", 0, 1),
                ("subscriber", 1, 1),
                ("goingAway", 1, 1),
                ("cleanup 2", 1.5, 0),
            ],
        )
        self.assertIs(drain.phase, Phase.CLEANUP)
        self.assertNoResult(done)
        clock.advance(0.2)
        first.callback(None)
        self.assertEqual(calls[-1], ("cleanup 1", 1.7, 0))
        self.successResultOf(done)

    def test_drainingHookIsWaitedForUntilTheCut(self) -> None:
        """
        The drain waits for what a C{draining} or C{goingAway} hook returns,
        as for tracked work: done when it fires, abandoned at the cut.
        """
        drain, clock, _ = self.drain(shutdownTimeout=2)
        work: Deferred[None] = Deferred()
        drain.addHook("goingAway", lambda: work)
        done = drain.start()
        self.assertNoResult(done)
        self.assertEqual(drain.pendingWork, 1)
        work.callback(None)
        self.successResultOf(done)

        drain, clock, _ = self.drain(shutdownTimeout=2)
        drain.addHook("draining", Deferred)
        done = drain.start()
        clock.advance(1.9)
        self.successResultOf(done)
        self.assertEqual(drain.abandoned, 1)

    def test_coroutineHooksAreAwaited(self) -> None:
        drain, clock, _ = self.drain(cleanupBudget=1)
        waited: Deferred[None] = Deferred()
        ran: list[str] = []

        async def cleanUp() -> None:
            await waited
            ran.append("cleaned")

        drain.addHook("cleanup", cleanUp)
        done = drain.start()
        self.assertNoResult(done)
        waited.callback(None)
        self.assertEqual(ran, ["cleaned"])
        self.successResultOf(done)

    def test_failingHooksAreLoggedAndTheShutdownGoesOn(self) -> None:
        drain, clock, events = self.drain(cleanupBudget=1)
        ran: list[str] = []

        def fails() -> None:
            raise RuntimeError("boom")

        drain.addHook("draining", fails, name="broken consumer")
        drain.addHook("cleanup", lambda: ran.append("second"))
        drain.addHook("cleanup", lambda: defer.fail(RuntimeError("later boom")))
        self.successResultOf(drain.start())
        self.assertEqual(ran, ["second"])
        failed = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failed), 2)
        self.assertEqual(failed[0]["hook"], "broken consumer")
        self.flushLoggedErrors(RuntimeError)

    def test_cleanupOverrunningItsBudgetIsAbandoned(self) -> None:
        """
        A cleanup hook that never finishes is abandoned when the budget is
        spent, with the hooks after it: done within the cap.
        """
        drain, clock, events = self.drain(shutdownTimeout=3, cleanupBudget=0.5)
        ran: list[str] = []
        drain.addHook("cleanup", lambda: ran.append("never reached"))
        drain.addHook("cleanup", Deferred)
        done = drain.start()
        clock.advance(0.4)
        self.assertNoResult(done)
        clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(ran, [])
        self.assertEqual(drain.abandoned, 2)
        self.assertIn("cleanup_overrun", [e["step"] for e in events])

    def test_cleanupBudgetIsReservedBeforeTheCap(self) -> None:
        """
        The cut comes early enough to leave the cleanup its budget.
        """
        drain, clock, _ = self.drain(shutdownTimeout=3, cleanupBudget=1)
        connection = Multiplexed(1)
        drain.connectionOpened(connection)
        drain.start()
        self.assertAlmostEqual(drain.deadline, 1.9)
        clock.advance(1.89)
        self.assertIsNone(connection.cutWith)
        clock.advance(0.02)
        self.assertEqual(connection.cutWith, 3)

    def test_secondSignalSkipsTheCleanup(self) -> None:
        drain, clock, events = self.drain(cleanupBudget=1)
        ran: list[str] = []
        drain.addHook("cleanup", lambda: ran.append("cleaned"))
        drain.connectionOpened(Multiplexed(1))
        done = drain.start()
        drain.forceStop()
        self.successResultOf(done)
        self.assertEqual(ran, [])
        steps = [e["step"] for e in events]
        self.assertEqual(steps[-3:], ["forced", "cleanup_skipped", "done"])

    def test_goingAwaySubscriptions(self) -> None:
        """
        A subscriber that unsubscribed is not called; one that subscribes
        after the listeners closed is called at once.
        """
        drain, clock, _ = self.drain()
        called: list[str] = []
        cancel = drain.whenGoingAway(lambda: called.append("gone"))
        cancel()
        drain.connectionOpened(Multiplexed(1))
        drain.start()
        self.assertEqual(called, [])
        drain.whenGoingAway(lambda: called.append("late"))
        self.assertEqual(called, ["late"])

    def test_unknownPhase(self) -> None:
        drain, _, _ = self.drain()
        with self.assertRaises(ValueError):
            drain.addHook("later", lambda: None)  # type: ignore[arg-type]
