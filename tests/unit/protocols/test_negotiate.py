"""
The switch between HTTP/1.1 and HTTP/2
(L{gracesvc._protocols.negotiate.NegotiatingProtocol}), as a client on the
wire sees it: in-memory connections to a real L{DrainingSite} that serves
both.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gracesvc._core.connections import IDrainableConnection
from gracesvc._protocols.h2 import DrainingH2Connection
from gracesvc._protocols.negotiate import NegotiatingProtocol
from gracesvc.testing import Wire, get
from gracesvc.testing.h2 import H2WireClient


class SwitchTests(SynchronousTestCase):
    def test_priorKnowledgeStreamAnswered(self) -> None:
        """
        With h2c, a cleartext client opening with the preface is served
        HTTP/2, by a connection the drain sees as one of its own.
        """
        w = Wire(h2c=True)
        c = H2WireClient(w)
        sid = c.request("/healthz")
        self.assertEqual(c.streams[sid].status, 200)
        self.assertTrue(c.streams[sid].ended)
        self.assertIsInstance(c.server, NegotiatingProtocol)
        self.assertEqual(w.drain.connections, 1)
        (connection,) = w.drain._connections
        self.assertIsInstance(connection, DrainingH2Connection)
        verifyObject(IDrainableConnection, connection)

    def test_alpnH2(self) -> None:
        """
        A connection whose TLS negotiated C{h2} is served HTTP/2.
        """
        w = Wire(h2c=True)
        c = H2WireClient(w, tls=True)
        sid = c.request("/healthz")
        self.assertEqual(c.streams[sid].status, 200)

    def test_http11Beside(self) -> None:
        """
        HTTP/1.1 is served as before on the same site.
        """
        w = Wire(h2c=True)
        c = w.connect()
        c.send(get("/healthz"))
        self.assertEqual([r.code for r in c.responses], [200])
        self.assertEqual(w.drain.connections, 1)

    def test_badPrefaceIsHTTP11(self) -> None:
        """
        Bytes that are not the preface go to HTTP/1.1, which answers them
        (here, a method no route allows).
        """
        w = Wire(h2c=True)
        c = w.connect()
        c.send(b"PRI * HTTP/1.1\r\n\r\n")
        self.assertEqual([r.code for r in c.responses], [405])

    def test_webSocketThroughTheSwitch(self) -> None:
        """
        A WebSocket upgraded on a connection that went through the HTTP/2
        switch gets its messages (and its keepalive pongs read), both ways:
        the channel hands its bytes on after the upgrade.
        """
        w = Wire(h2c=True)
        ws = w.connectWebSocket()
        ws.sendText("hello")
        ws.sendBytes(b"\x00")
        self.assertEqual(ws.messages, ["hello", b"\x00"])
        for _ in range(7):
            w.advance(10)
        self.assertTrue(ws.open)
        self.assertEqual(len(ws.pings), 3)
