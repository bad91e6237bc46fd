"""
The HTTP/1.1 channel under the drain, as a client on the wire sees it:
in-memory connections to a real L{DrainingSite}, time driven by a L{Clock}.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import Request as SiteRequest
from zope.interface.verify import verifyObject

from gracesvc._core.connections import IDrainableConnection
from gracesvc._protocols.http1 import DrainingRequest
from gracesvc.testing import Wire, get, parseResponses


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


class CutTests(SynchronousTestCase):
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


class ChannelStateTests(SynchronousTestCase):
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
