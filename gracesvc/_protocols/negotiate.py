# -*- test-case-name: tests.unit.protocols.test_negotiate -*-
"""
HTTP/1.1 or HTTP/2: each connection of a site that serves both starts as
HTTP/1.1 and is switched to HTTP/2 when TLS negotiated C{h2} through ALPN
or, with C{h2c} on a cleartext listener, when the client opened with
HTTP/2's 24-byte preface (prior knowledge; no C{Upgrade: h2c}, which RFC
9113 deprecates).
"""

from __future__ import annotations

from typing import Any
from typing import Protocol as TypingProtocol

from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IHandshakeListener, ISSLTransport
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure
from zope.interface import implementer

from gracesvc._pins.twisted import handOver
from gracesvc._protocols.h2 import DrainingH2Connection

#: The client connection preface (RFC 9113 section 3.4), which a
#: prior-knowledge cleartext HTTP/2 client opens with.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


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

    def buildH2Connection(self, http1: Any) -> DrainingH2Connection:
        """
        @param http1: the HTTP/1.1 protocol the connection started with.
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

    def __init__(self, channel: HTTP1Protocol, h2c: bool, h2: H2Builder) -> None:
        self._current: Any = channel
        self._channel = channel
        self._h2 = h2
        self._sniffing = h2c
        self._decided = False
        self._buffer = b""

    def connectionMade(self) -> None:
        self._channel.makeConnection(self.transport)
        if self._sniffing and ISSLTransport.providedBy(self.transport):
            self._sniffing = False

    def handshakeCompleted(self) -> None:
        """
        Tell the HTTP/1.1 channel its TLS handshake completed (before any
        byte of HTTP, so before any switch): its idle grace counts from now.
        """
        self._channel.handshakeCompleted()

    def dataReceived(self, data: bytes) -> None:
        if self._decided:
            self._current.dataReceived(data)
            return
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self._switch(data)
            return
        if self._sniffing:
            self._buffer += data
            data = self._buffer
            if len(data) < len(PREFACE) and PREFACE.startswith(data):
                return
            self._buffer = b""
            if data.startswith(PREFACE):
                self._switch(data)
                return
        self._decided = True
        # HTTP/1.1 from now on: the channel gets the transport's bytes
        # directly (and, after a WebSocket upgrade, hands them on itself).
        handOver(self.transport, self, self._channel)
        self._channel.dataReceived(data)

    def connectionLost(self, reason: Failure = ConnectionDone) -> None:  # type: ignore[assignment]
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
        channel = self._channel
        transport: Any = self.transport
        transport.unregisterProducer()
        h2 = self._h2.buildH2Connection(channel)
        self._current = h2
        h2.makeConnection(transport)
        transport.registerProducer(h2, True)
        channel.connectionLost(Failure(ConnectionDone("switched to HTTP/2")))
        h2.dataReceived(data)
