"""
The deadlines of a site's connections (L{gracesvc._protocols.deadlines}),
drain or no drain, as a client on the wire sees them: in-memory connections
to a real L{DrainingSite}, time driven by a L{Clock}.
"""

from __future__ import annotations

import os
from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.test.iosim import IOPump, connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._protocols.deadlines import (
    ClientTally,
    ConnectionTimeouts,
    WriteStall,
)
from gracesvc.testing import Client, Wire, get, parseResponses

TIMEOUTS = ConnectionTimeouts(header=10.0, keepAlive=75.0, write=60.0)

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)


def timers(wire: Wire) -> list[str]:
    """
    @return: the connections' own timers still pending on the wire's clock.
    """
    return [
        repr(call)
        for call in wire.clock.getDelayedCalls()
        if "_headDeadline" in repr(call) or "TimeoutMixin" in repr(call)
    ]


class HeaderTimeoutTests(SynchronousTestCase):
    def wire(self, **kwargs: Any) -> Wire:
        return Wire(timeouts=TIMEOUTS, **kwargs)

    def assertTimedOutWith408(self, client: Client) -> None:
        self.assertEqual(client.protocol.data, REQUEST_TIMEOUT)
        self.assertTrue(client.closed)
        self.assertFalse(client.reset)

    def test_incompleteHeadAnswered408(self) -> None:
        """
        A request head not complete within the header timeout of the
        accept is answered 408 and the connection closed; not before.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(b"GET /healthz HTTP/1.1\r\nHost: test\r\n")
        wire.advance(9.9)
        self.assertEqual((client.protocol.data, client.closed), (b"", False))
        wire.advance(0.2)
        self.assertTimedOutWith408(client)
        self.assertEqual(wire.site.clientTally.timeouts, {"header": 1})
        self.assertEqual(timers(wire), [])

    def test_eachByteDoesNotRestartIt(self) -> None:
        """
        A client that sends a byte of its head every second is answered 408
        at the header timeout, however many bytes it sent: the deadline is
        absolute, unlike Twisted's idle timeout.
        """
        wire = self.wire()
        client = wire.connect()
        head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 100
        for i in range(9):
            client.send(head[i : i + 1])
            wire.advance(1.0)
        self.assertFalse(client.closed)
        client.send(head[9:10])
        wire.advance(1.1)
        self.assertTimedOutWith408(client)

    def test_silentConnectionClosedWithoutAnswer(self) -> None:
        """
        A connection that sends nothing is closed at the header timeout,
        with nothing written: it asked for nothing.
        """
        wire = self.wire()
        client = wire.connect()
        wire.advance(9.9)
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertEqual(client.protocol.data, b"")
        self.assertTrue(client.closed)
        self.assertEqual(wire.site.clientTally.timeouts, {"silent": 1})
        self.assertEqual(wire.drain.connections, 0)

    def test_eachKeepAliveHeadHasItsOwnDeadline(self) -> None:
        """
        On a keep-alive connection each head has the header timeout from its
        first byte: a second head that starts 9 s after the first request
        has 10 s more, not 1.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(get("/healthz"))
        wire.advance(9.0)
        client.send(b"GET /healthz HTTP/1.1\r\n")
        wire.advance(9.9)
        self.assertEqual(len(client.responses), 1)
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertTrue(client.protocol.data.endswith(REQUEST_TIMEOUT))
        self.assertTrue(client.closed)

    def test_headsInTimeAreServedForever(self) -> None:
        """
        A busy keep-alive connection whose heads each arrive whole is never
        timed out, and pays no timer per request: the one timer looks again
        when it runs.
        """
        wire = self.wire()
        client = wire.connect()
        for _ in range(100):
            client.send(get("/healthz"))
            wire.advance(0.5)
        self.assertEqual(len(client.responses), 100)
        self.assertFalse(client.closed)
        self.assertEqual(len(timers(wire)), 2)

    def test_pipelinedHeadCountsFromWhenItIsRead(self) -> None:
        """
        A head pipelined behind a slow request is given the header timeout
        from when the server turns to it, not from when its bytes came: the
        server was busy meanwhile.
        """
        wire = self.wire(pingDelay=5)
        client = wire.connect()
        client.send(get("/ping") + b"GET /healthz HTTP/1.1\r\nHo")
        wire.advance(14.9)
        self.assertEqual([r.code for r in client.responses], [200])
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertTrue(client.protocol.data.endswith(REQUEST_TIMEOUT))
        self.assertTrue(client.closed)

    def test_slowBodyIsNotCut(self) -> None:
        """
        The deadline ends with the head: a body that takes longer (a byte a
        second, each within the keep-alive timeout) is received whole and
        answered.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(
            b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 30\r\n\r\n"
        )
        for _ in range(30):
            wire.advance(1.0)
            client.send(b"x")
        [response] = client.responses
        self.assertNotEqual(response.code, 408)
        self.assertFalse(client.closed)

    def test_expectContinue(self) -> None:
        """
        A head with C{Expect: 100-continue} is complete when its blank line
        arrives: the 100 goes out and the body has its own time.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(
            b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 4\r\n"
            b"Expect: 100-continue\r\n\r\n"
        )
        self.assertTrue(client.protocol.data.startswith(b"HTTP/1.1 100 Continue"))
        wire.advance(20)
        client.send(b"body")
        self.assertFalse(client.closed)
        self.assertEqual(len(client.responses), 2)

    def test_stalledBodyAnswered408AtTheKeepAliveTimeout(self) -> None:
        """
        A body that stops arriving is bounded by Twisted's idle timeout (the
        keep-alive timeout): answered 408 and closed.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(
            b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nab"
        )
        wire.advance(74.9)
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertTimedOutWith408(client)
        self.assertEqual(wire.site.clientTally.timeouts, {"body": 1})

    def test_clientThatKeepsSendingAfterThe408(self) -> None:
        """
        What the client sends after the 408 is read and dropped, and the
        connection is closed after the linger: the client reads the 408
        rather than a reset.
        """
        wire = self.wire()
        client = wire.connect()
        client.send(b"GET /healthz HTTP/1.1\r\n")
        wire.advance(10.1)
        client.send(b"Host: test\r\n\r\n")
        wire.advance(1)
        self.assertTimedOutWith408(client)

    def test_noneMeansNoDeadline(self) -> None:
        wire = Wire(timeouts=ConnectionTimeouts(header=None))
        client = wire.connect()
        client.send(b"GET /healthz HTTP/1.1\r\n")
        wire.advance(59)
        self.assertFalse(client.closed)

    def test_logged(self) -> None:
        """
        The first 408 is logged with its client, then one line a second
        says how many more there were, however many clients time out.
        """
        events: list[dict[str, Any]] = []
        wire = self.wire()
        ClientTally.log = Logger(observer=cast(ILogObserver, events.append))
        self.addCleanup(setattr, ClientTally, "log", Logger())
        clients = [wire.connect() for _ in range(50)]
        for client in clients:
            client.send(b"GET / HTTP/1.1\r\n")
        wire.advance(12)
        self.assertTrue(all(c.closed for c in clients))
        lines = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("answered 408", lines[0])
        self.assertIn("127.0.0.1", lines[0])
        self.assertTrue(lines[1].startswith("49 more request heads"), lines[1])


class _TLSClient(Protocol):
    data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data


class TLSHandshakeTimeoutTests(SynchronousTestCase):
    def connectTLS(self, wire: Wire) -> tuple[Any, Any, IOPump]:
        from twisted.internet.ssl import CertificateOptions, PrivateCertificate
        from twisted.protocols.tls import TLSMemoryBIOFactory
        from twisted.test import __file__ as twistedTests

        with open(os.path.join(os.path.dirname(twistedTests), "server.pem"), "rb") as f:
            serverOptions = PrivateCertificate.loadPEM(f.read()).options()
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

    def test_handshakeNotCompleteInTimeAborted(self) -> None:
        """
        A TLS handshake that does not complete within the header timeout is
        aborted: no answer is possible.
        """
        wire = Wire(timeouts=TIMEOUTS)
        client, server, pump = self.connectTLS(wire)
        wire.clock.advance(9.9)
        self.assertFalse(server.transport.disconnecting)
        wire.clock.advance(0.2)
        self.assertTrue(server.transport.disconnecting)
        self.assertEqual(wire.site.clientTally.timeouts, {"handshake": 1})

    def test_headHasItsOwnTimeAfterTheHandshake(self) -> None:
        """
        A handshake that took 9 s leaves the first head the whole header
        timeout from its end.
        """
        wire = Wire(timeouts=TIMEOUTS)
        client, server, pump = self.connectTLS(wire)
        wire.clock.advance(9)
        pump.flush()
        wire.clock.advance(9.9)
        pump.flush()
        self.assertFalse(server.transport.disconnecting)
        client.write(get("/healthz"))
        for _ in range(5):
            wire.clock.advance(0.01)
            pump.flush()
        app = cast(_TLSClient, client.wrappedProtocol)
        [response] = parseResponses(app.data)
        self.assertEqual(response.code, 200)


class KeepAliveTimeoutTests(SynchronousTestCase):
    def test_idleConnectionClosedAfterTheTimeout(self) -> None:
        """
        A keep-alive connection idle for the keep-alive timeout is closed
        without a word; one used before it is not.
        """
        wire = Wire(timeouts=TIMEOUTS)
        client = wire.connect()
        client.send(get("/healthz"))
        wire.advance(70)
        client.send(get("/healthz"))
        wire.advance(74.9)
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertTrue(client.closed)
        self.assertFalse(client.reset)
        self.assertEqual(len(client.responses), 2)
        self.assertEqual(wire.site.clientTally.timeouts, {"keepalive": 1})
        self.assertEqual(timers(wire), [])

    def test_theDefault(self) -> None:
        """
        The default keep-alive timeout is 75 s: longer than the idle
        timeouts of AWS's ALB (60 s) and Node (65 s), as nginx's.
        """
        self.assertEqual(ConnectionTimeouts().keepAlive, 75.0)
        self.assertEqual(Wire().site.timeOut, 75.0)

    def test_rangeChecked(self) -> None:
        for bad in (0.0, -1.0, float("inf"), float("nan")):
            with self.assertRaises(ValueError):
                ConnectionTimeouts(keepAlive=bad)


class WriteTimeoutTests(SynchronousTestCase):
    def test_clientThatTakesNothingIsAborted(self) -> None:
        """
        While the transport's buffer stays full (here, a client that took
        nothing, as far as an in-memory transport can tell), the connection
        is aborted at the write timeout.
        """
        wire = Wire(timeouts=TIMEOUTS, pingDelay=1)
        client = wire.connect()
        client.send(get("/ping"))
        client.server.pauseProducing()
        self.assertTrue(client.server.writeBlocked)
        wire.advance(59.9)
        self.assertFalse(client.closed)
        wire.advance(0.2)
        self.assertTrue(client.reset)
        self.assertEqual(wire.site.clientTally.timeouts, {"write": 1})

    def test_bufferThatEmptiesInTimeIsNotCut(self) -> None:
        """
        A buffer that fills and empties again within each write timeout
        never stalls, for as long as the response lasts.
        """
        wire = Wire(timeouts=TIMEOUTS, pingDelay=200)
        client = wire.connect()
        client.send(get("/ping"))
        for _ in range(3):
            client.server.pauseProducing()
            wire.advance(50)
            client.server.resumeProducing()
            self.assertFalse(client.server.writeBlocked)
        self.assertFalse(client.closed)


class WriteStallTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.progress: int | None = 0
        self.stalls = 0

        def stalled() -> None:
            self.stalls += 1

        self.stall = WriteStall(self.clock, 60, lambda: self.progress, stalled)

    def test_progressStartsItOver(self) -> None:
        """
        A client that took something within each write timeout (a slow
        reader of a large download) is not stalled, however long the buffer
        stays full.
        """
        self.stall.blocked()
        for _ in range(10):
            assert self.progress is not None
            self.progress += 1000
            self.clock.advance(60)
        self.assertEqual(self.stalls, 0)
        self.clock.advance(60)
        self.assertEqual(self.stalls, 1)
        self.assertFalse(self.stall.armed)

    def test_unblockedDisarms(self) -> None:
        self.stall.blocked()
        self.clock.advance(30)
        self.stall.unblocked()
        self.clock.advance(60)
        self.assertEqual(self.stalls, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_blockedAgainKeepsItsStart(self) -> None:
        self.stall.blocked()
        self.clock.advance(30)
        self.stall.blocked()
        self.clock.advance(30)
        self.assertEqual(self.stalls, 1)

    def test_unknownProgressNeedsTheBufferEmptied(self) -> None:
        """
        Where progress cannot be seen (a Unix socket), the buffer must have
        emptied within the timeout.
        """
        self.progress = None
        self.stall.blocked()
        self.clock.advance(60)
        self.assertEqual(self.stalls, 1)
