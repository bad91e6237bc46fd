"""
The site whose connections take part in the drain
(L{gracesvc._protocols.site}): what it offers, and which of its connections
answers a request.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from gracesvc._protocols.h2 import DrainingH2Connection
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.site import longLivedHostOf
from gracesvc.testing import Wire, get
from gracesvc.testing.h2 import H2WireClient


class Hosts(Resource):
    """
    Records L{longLivedHostOf} each request it answers.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.hosts: list[object] = []

    def render_GET(self, request: object) -> bytes:
        self.hosts.append(longLivedHostOf(request))  # type: ignore[arg-type]
        return b"ok"


class ALPNTests(SynchronousTestCase):
    def test_alpnOffersH2OnlyWhenServed(self) -> None:
        """
        A site that does not serve HTTP/2 offers only http/1.1 through
        ALPN (Twisted's Site offers h2 whenever h2 is installed).
        """
        self.assertEqual(Wire().site.acceptableProtocols(), [b"http/1.1"])
        self.assertEqual(
            Wire(h2c=True).site.acceptableProtocols(), [b"h2", b"http/1.1"]
        )


class LongLivedHostTests(SynchronousTestCase):
    def test_http11(self) -> None:
        """
        Under HTTP/1.1 the connection that answers a request is its channel.
        """
        hosts = Hosts()
        w = Wire(resource=hosts)
        c = w.connect()
        c.send(get("/"))
        self.assertEqual([r.code for r in c.responses], [200])
        (host,) = hosts.hosts
        self.assertIsInstance(host, DrainingChannel)
        self.assertIs(host, c.server)

    def test_h2(self) -> None:
        """
        Under HTTP/2 it is the connection whose stream answers the request,
        not the stream.
        """
        hosts = Hosts()
        w = Wire(resource=hosts, h2c=True)
        c = H2WireClient(w)
        sid = c.request("/")
        self.assertEqual(c.streams[sid].status, 200)
        (host,) = hosts.hosts
        self.assertIsInstance(host, DrainingH2Connection)
        self.assertEqual(list(w.drain._connections), [host])

    def test_elsewhere(self) -> None:
        """
        A request not served by a L{DrainingSite} has none.
        """
        self.assertIsNone(longLivedHostOf(DummyRequest([b""])))  # type: ignore[arg-type]
