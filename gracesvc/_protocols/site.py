# -*- test-case-name: tests.unit.protocols.test_site -*-
"""
The site whose connections take part in the drain: L{DrainingSite} builds
an HTTP/1.1 L{DrainingChannel} for each connection, behind a
L{NegotiatingProtocol} that switches it to a L{DrainingH2Connection} when
it serves HTTP/2 and the client speaks it.

L{longLivedHostOf} finds, for a request of such a site, the connection
that counts how its long-lived response ends, whichever protocol it came
in.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from gracesvc._core.drain import Drain
from gracesvc._pins.twisted_h2 import connectionOf, takeOver
from gracesvc._protocols.answers import LongLivedKind, ResponseMetrics
from gracesvc._protocols.deadlines import ClientTally, ConnectionTimeouts
from gracesvc._protocols.h2 import DrainingH2Connection, H2Tally
from gracesvc._protocols.h2limits import H2Limits
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.negotiate import NegotiatingProtocol
from gracesvc._protocols.websocket import WebSocketPolicy


class DrainingSite(Site):
    """
    A L{Site} whose connections are L{DrainingChannel}s reporting to
    C{drain}.

    It also keeps its access log open until the drain is done: Twisted
    closes it when the last port stops listening, which would leave every
    request answered during the drain unlogged.
    """

    protocol = DrainingChannel  # type: ignore[assignment]

    def __init__(
        self,
        resource: IResource,
        drain: Drain,
        metrics: ResponseMetrics | None = None,
        webSocketPolicy: WebSocketPolicy | None = None,
        *,
        http2: bool = False,
        h2c: bool = False,
        accessLog: bool = True,
        timeouts: ConnectionTimeouts | None = None,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param drain: the drain every connection reports to.
        @param metrics: counts every completed response, if given.
        @param webSocketPolicy: how its WebSockets close (whatever
            C{WebSocketResource} serves them); the defaults if L{None}.
        @param http2: whether to serve HTTP/2 where TLS negotiates it
            (ALPN C{h2}), through L{gracesvc._protocols.h2}.
        @param h2c: whether to serve cleartext HTTP/2 too, to clients that
            open with its connection preface (implies C{http2}).
        @param accessLog: whether to write each response to the access
            log.
        @param timeouts: the deadlines of its connections (see
            L{gracesvc._protocols.deadlines}); the defaults if L{None}.
            The keep-alive timeout is Twisted's idle timeout: no C{timeout}
            for L{Site} then.
        @param kwargs: passed on to L{Site}, C{reactor} among them.
        """
        super().__init__(resource, **kwargs)
        self.drain = drain
        self.timeouts = ConnectionTimeouts() if timeouts is None else timeouts
        self.timeOut = self.timeouts.keepAlive
        #: what the deadlines ended, for the metrics and the log.
        self.clientTally = ClientTally(drain.clock)
        self.metrics = metrics
        self.webSocketPolicy = (
            WebSocketPolicy() if webSocketPolicy is None else webSocketPolicy
        )
        self.http2 = http2 or h2c
        self.h2c = h2c
        self.accessLog = accessLog
        if self.http2:
            #: what its HTTP/2 connections did, for the metrics.
            self.h2Tally = H2Tally()

    def buildProtocol(self, addr: object) -> Any:
        channel = super().buildProtocol(addr)
        if not self.http2:
            return channel
        return NegotiatingProtocol(channel, self.h2c, self)

    def buildH2Connection(
        self, http1: object, limits: H2Limits, prefaceDeadline: float | None
    ) -> DrainingH2Connection:
        """
        Make the HTTP/2 connection a connection of this site (or of another
        HTTP/1.1 path that serves its HTTP/2 through this site) switches
        to, given what this site gives its channels, as Twisted's own switch
        gives it.

        @param http1: the HTTP/1.1 protocol the connection started with:
            one of this site's channels, or another path's protocol.
        @param limits: what its client may cost.
        @param prefaceDeadline: when the client's preface must be complete,
            if its deadline started already.
        """
        h2 = DrainingH2Connection(self.reactor, limits, prefaceDeadline)
        channel = (
            http1
            if isinstance(http1, DrainingChannel)
            else Site.buildProtocol(self, None)
        )
        takeOver(h2, channel)
        return h2

    def acceptableProtocols(self) -> list[bytes]:
        """
        The protocols offered through ALPN: Twisted's L{Site} offers C{h2}
        whenever h2 is installed, and an HTTP/1.1 channel would then be
        spoken to in HTTP/2.
        """
        return [b"h2", b"http/1.1"] if self.http2 else [b"http/1.1"]

    def log(self, request: Request) -> None:
        if self.accessLog:
            super().log(request)

    def stopFactory(self) -> None:
        if self.drain.draining and not self.drain.finished:
            self.drain.whenDone().addCallback(lambda _: self.stopFactory())
            return
        super().stopFactory()


class LongLivedHost(Protocol):
    """
    The connection answering a long-lived response, which counts how it
    ends (see L{Drain.longLived}).
    """

    def longResponseStarted(self, request: Request, kind: LongLivedKind) -> None:
        """
        C{request} is answered with a long-lived response of C{kind}.
        """


def longLivedHostOf(request: IRequest | Request) -> LongLivedHost | None:
    """
    @return: the connection of a L{DrainingSite} that answers C{request}:
        its L{DrainingChannel} under HTTP/1.1, its L{DrainingH2Connection}
        under HTTP/2; L{None} for a request not served by a L{DrainingSite}.
    """
    channel = getattr(request, "channel", None)
    if isinstance(channel, DrainingChannel):
        return channel
    if isinstance(getattr(channel, "site", None), DrainingSite):
        # Under HTTP/2 the request's channel is its stream, which knows its
        # site.
        connection = connectionOf(channel)  # type: ignore[arg-type]
        if isinstance(connection, DrainingH2Connection):
            return connection
    return None
