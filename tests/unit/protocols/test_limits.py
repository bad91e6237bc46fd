"""
The connection limit (L{gracesvc._protocols.limits}), as clients on the
wire see it: in-memory connections to a real L{DrainingSite} behind a
L{LimitedFactory}, time driven by a L{Clock}.
"""

from __future__ import annotations

from typing import Any, cast

from hyperframe.frame import Frame, GoAwayFrame, SettingsFrame
from twisted.internet.interfaces import IProtocolNegotiationFactory
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._protocols.limits import (
    ConnectionLimit,
    LimitedFactory,
    TooManyConnections,
)
from gracesvc.testing import Client, Wire, get


def frames(data: bytes) -> list[Frame]:
    parsed = []
    while data:
        frame, length = Frame.parse_frame_header(memoryview(data[:9]))
        frame.parse_body(memoryview(data[9 : 9 + length]))
        parsed.append(frame)
        data = data[9 + length :]
    return parsed


class ConnectionLimitTests(SynchronousTestCase):
    def fill(self, wire: Wire, n: int) -> list[Client]:
        clients = [wire.connect() for _ in range(n)]
        for client in clients:
            client.send(get("/healthz"))
        return clients

    def assertTooMany(self, client: Client) -> None:
        """
        C{client} was answered 503 with C{Retry-After}, and the server
        closed (half-closed, then lingered) without a reset.
        """
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers[b"retry-after"], b"1")
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.assertFalse(client.reset)

    def test_underTheLimitServed(self) -> None:
        wire = Wire(maxConnections=3)
        clients = self.fill(wire, 3)
        self.assertEqual([c.responses[0].code for c in clients], [200] * 3)
        self.assertEqual(wire.drain.connections, 3)

    def test_overTheLimitAnswered503(self) -> None:
        """
        The connection after the limit is answered 503 with C{Retry-After}
        and closed, and counted; once one closes, the next is served.
        """
        wire = Wire(maxConnections=3)
        clients = self.fill(wire, 3)
        over = wire.connect()
        self.assertIsInstance(over.server, TooManyConnections)
        over.send(get("/healthz"))
        wire.advance(1)
        self.assertTooMany(over)
        self.assertEqual((wire.limit.refused, wire.limit.answering), (1, 0))
        self.assertEqual(wire.drain.connections, 3)
        clients[0].close()
        [served] = self.fill(wire, 1)
        self.assertEqual(served.responses[0].code, 200)

    def test_webSocketsCount(self) -> None:
        wire = Wire(maxConnections=2)
        wire.connectWebSocket()
        self.fill(wire, 1)
        over = wire.connect()
        over.send(get("/healthz"))
        wire.advance(1)
        self.assertTooMany(over)

    def test_holdsDuringTheDrain(self) -> None:
        """
        During the drain delay the listeners still accept: the limit still
        holds.
        """
        wire = Wire(maxConnections=1, drainDelay=2, pingDelay=5)
        busy = wire.connect()
        busy.send(get("/ping"))
        wire.drain.start()
        wire.advance(0.5)
        over = wire.connect()
        over.send(get("/healthz"))
        wire.advance(1)
        self.assertTooMany(over)

    def test_aPOSTIsNotTakenForHTTP2(self) -> None:
        """
        The first byte of C{POST} is the first of HTTP/2's preface too: the
        answer waits for enough bytes to tell them apart.
        """
        wire = Wire(maxConnections=1)
        self.fill(wire, 1)
        over = wire.connect()
        over.send(b"P")
        self.assertEqual(over.protocol.data, b"")
        over.send(b"OST / HTTP/1.1\r\nContent-Length: 1\r\n\r\nx")
        wire.advance(1)
        self.assertTooMany(over)

    def test_http2GetsGoAway(self) -> None:
        """
        An HTTP/2 client (prior knowledge here, ALPN alike) is sent
        SETTINGS, then GOAWAY with no stream accepted and no error.
        """
        wire = Wire(maxConnections=1)
        self.fill(wire, 1)
        over = wire.connect()
        over.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        wire.advance(1)
        settings, goAway = frames(over.protocol.data)
        self.assertIsInstance(settings, SettingsFrame)
        assert isinstance(goAway, GoAwayFrame)
        self.assertEqual((goAway.last_stream_id, goAway.error_code), (0, 0))
        self.assertTrue(over.closed)

    def test_silentOneClosed(self) -> None:
        wire = Wire(maxConnections=1)
        self.fill(wire, 1)
        over = wire.connect()
        wire.advance(2.4)
        self.assertFalse(over.closed)
        wire.advance(0.2)
        self.assertTrue(over.closed)
        self.assertEqual(over.protocol.data, b"")
        self.assertEqual(wire.limit.answering, 0)

    def test_theListenersPauseWhileTheAnswersAreMany(self) -> None:
        """
        Once a tenth of the limit (at least 16) are being answered "too
        many", the owner of the listeners is told to stop accepting, and to
        go on once one is done: the next wait in the kernel's queue for
        their answer.  Past twice that (a batch accepted meanwhile) they
        are closed at once, unanswered.
        """
        wire = Wire(maxConnections=1)
        told: list[bool] = []
        wire.limit.onSaturated = told.append
        self.fill(wire, 1)
        answering = [wire.connect() for _ in range(16)]
        self.assertEqual(told, [True])
        more = [wire.connect() for _ in range(16)]
        dropped = wire.connect()
        self.assertTrue(dropped.closed)
        self.assertEqual(dropped.protocol.data, b"")
        self.assertEqual((wire.limit.refused, wire.limit.dropped), (32, 1))
        self.assertFalse(any(c.closed for c in answering + more))
        for client in answering + more[:1]:
            client.send(get("/healthz"))
        wire.advance(1)
        self.assertEqual(told, [True, False])
        self.assertEqual(wire.limit.answering, 15)

    def test_logged(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(
            ConnectionLimit,
            "log",
            Logger(observer=cast(ILogObserver, events.append)),
        )
        wire = Wire(maxConnections=1)
        self.fill(wire, 1)
        for _ in range(100):
            wire.connect()
        wire.advance(1.5)
        lines = [e["log_format"].format(**e) for e in events]
        self.assertEqual(len(lines), 2, lines)
        self.assertIn("Connection limit (1) reached", lines[0])
        self.assertTrue(lines[1].startswith("99 more connections refused"))

    def test_limitRangeChecked(self) -> None:
        with self.assertRaises(ValueError):
            ConnectionLimit(0, lambda: 0, Clock())


class LimitedFactoryTests(SynchronousTestCase):
    def test_standsForTheWrappedFactory(self) -> None:
        """
        TLS asks the factory which protocols ALPN offers; the site's own
        attributes and interfaces are read through it; starting and
        stopping are passed on.
        """
        wire = Wire(h2c=True)
        factory = LimitedFactory(wire.site, ConnectionLimit(5, lambda: 0, wire.clock))
        self.assertTrue(IProtocolNegotiationFactory.providedBy(factory))
        self.assertEqual(factory.acceptableProtocols(), [b"h2", b"http/1.1"])
        self.assertIs(factory.drain, wire.drain)
        factory.doStart()
        self.assertEqual(wire.site.numPorts, 1)
        factory.doStop()
        self.assertEqual(wire.site.numPorts, 0)
        self.assertEqual(factory.logPrefix(), wire.site.logPrefix())
