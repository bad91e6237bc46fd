# -*- test-case-name: tests.unit.protocols.test_negotiate -*-
"""
HTTP/1.1 or HTTP/2: each connection of a site that serves both starts as
HTTP/1.1 and is switched to HTTP/2 when TLS negotiated C{h2} through ALPN
or, with C{h2c} on a cleartext listener, when the client opened with
HTTP/2's 24-byte preface (prior knowledge; no C{Upgrade: h2c}, which RFC
9113 deprecates).

The client's HTTP/2 preface must be complete within
L{H2Limits.prefaceTimeout<gracesvc._protocols.h2limits.H2Limits>} of when
the connection became HTTP/2: the TLS handshake's end when ALPN chose
C{h2}, or the first bytes of a cleartext preface.  A client that trickles
it, or stops after the handshake, is closed then.
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import handOver
from gracesvc._protocols.h2 import DrainingH2Connection
from gracesvc._protocols.h2limits import PREFACE, H2Limits


class HTTP1Protocol(TypingProtocol):
    """
    The HTTP/1.1 protocol a connection starts with: a
    L{gracesvc._protocols.http1.DrainingChannel}, or the ASGI path's
    L{gracesvc._asgi.http1.ASGIConnection}.  It registers itself as its
    transport's streaming producer, and reports to the drain until its
    C{connectionLost}.
    """

    def makeConnection(self, transport: Any) -> None: ...

    def handshakeCompleted(self) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure) -> Any: ...


class H2Builder(TypingProtocol):
    """
    What makes the HTTP/2 connection a connection switches to: a
    L{gracesvc._protocols.site.DrainingSite} serving HTTP/2.
    """

    reactor: Any

    def buildH2Connection(
        self, http1: Any, limits: H2Limits, prefaceDeadline: float | None
    ) -> DrainingH2Connection:
        """
        @param http1: the HTTP/1.1 protocol the connection started with.
        @param limits: what its client may cost.
        @param prefaceDeadline: when the client's preface must be complete,
            if its deadline started already.
        @return: a new HTTP/2 connection, not connected yet.
        """


@implementer(IHandshakeListener)
class NegotiatingProtocol(Protocol):
    """
    The protocol of one connection that serves HTTP/2 (of a
    L{gracesvc._protocols.site.DrainingSite}, or of the ASGI path): an
    HTTP/1.1 protocol until the first bytes say the client speaks HTTP/2
    (C{h2} negotiated through ALPN, or, with C{h2c}, the connection preface
    on a cleartext connection); then a L{DrainingH2Connection} that C{h2}
    builds.

    Twisted's own switch (C{_GenericHTTPChannelProtocol}) would leave the
    HTTP/1.1 channel registered with the drain, which would then wait for it
    until the cap.
    """

    def __init__(
        self,
        channel: HTTP1Protocol,
        h2c: bool,
        h2: H2Builder,
        limits: H2Limits | None = None,
    ) -> None:
        """
        @param channel: the connection's HTTP/1.1 protocol, made by its
            site (or by the ASGI path's factory).
        @param h2c: whether a cleartext client may open with HTTP/2's
            preface.
        @param h2: what builds the HTTP/2 connection it switches to.
        @param limits: what an HTTP/2 client may cost (its preface's
            deadline among them); L{H2Limits}' defaults if L{None}.
        """
        self._current: Any = channel
        self._channel = channel
        self._h2 = h2
        self._sniffing = h2c
        self._decided = False
        self._buffer = b""
        self._limits = H2Limits() if limits is None else limits
        self._prefaceDeadline: float | None = None
        self._prefaceCall: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self._channel.makeConnection(self.transport)
        if self._sniffing and ISSLTransport.providedBy(self.transport):
            self._sniffing = False

    def handshakeCompleted(self) -> None:
        """
        Tell the HTTP/1.1 channel its TLS handshake completed (before any
        byte of HTTP, so before any switch): its idle grace counts from now.
        If ALPN chose C{h2}, the preface's deadline starts.
        """
        self._channel.handshakeCompleted()
        if not self._decided and self._negotiatedH2():
            self._startPrefaceDeadline()

    def _negotiatedH2(self) -> bool:
        return getattr(self.transport, "negotiatedProtocol", None) == b"h2"

    def _startPrefaceDeadline(self) -> None:
        if self._prefaceDeadline is not None:
            return
        clock = self._h2.reactor
        self._prefaceDeadline = clock.seconds() + self._limits.prefaceTimeout
        self._prefaceCall = clock.callLater(
            self._limits.prefaceTimeout, self._prefaceTimedOut
        )

    def _prefaceTimedOut(self) -> None:
        """
        The client became HTTP/2 but its preface did not arrive in time.
        """
        self._prefaceCall = None
        self.transport.abortConnection()  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        if self._decided:
            self._current.dataReceived(data)
            return
        if self._negotiatedH2():
            self._switch(data)
            return
        if self._sniffing:
            self._buffer += data
            data = self._buffer
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                self._startPrefaceDeadline()
                return
            self._buffer = b""
            if data.startswith(PREFACE):
                self._switch(data)
                return
        self._decided = True
        cancelCall(self._prefaceCall)
        self._prefaceCall = None
        # HTTP/1.1 from now on: the channel gets the transport's bytes
        # directly (and, after a WebSocket upgrade, hands them on itself).
        handOver(self.transport, self, self._channel)
        self._channel.dataReceived(data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
        cancelCall(self._prefaceCall)
        self._prefaceCall = None
        current = self._current
        if isinstance(current, DrainingH2Connection):
            current.transportLost(reason)
        else:
            current.connectionLost(reason)

    def _switch(self, data: bytes) -> None:
        """
        Hand the connection to a new L{DrainingH2Connection}, which joins the
        drain before the HTTP/1.1 channel leaves it.
        """
        self._decided = True
        cancelCall(self._prefaceCall)
        self._prefaceCall = None
        channel = self._channel
        transport: Any = self.transport
        transport.unregisterProducer()
        h2 = self._h2.buildH2Connection(channel, self._limits, self._prefaceDeadline)
        self._current = h2
        h2.makeConnection(transport)
        transport.registerProducer(h2, True)
        channel.connectionLost(Failure(ConnectionDone("switched to HTTP/2")))
        h2.dataReceived(data)
