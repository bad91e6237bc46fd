"""
HTTP glue: a L{Site} whose connections take part in the drain.

Twisted's L{HTTPChannel} has no notion of a graceful close, and three of its
habits lose responses during one (see C{shared/TWISTED-NOTES.md}):

  - C{checkPersistence} decides keep-alive per request and adds no
    C{Connection: close} header when the server wants to close;
  - a channel that is not persistent drops pipelined requests unparsed;
  - L{HTTPFactory} keeps no list of its connections.

L{DrainingChannel} fixes each for the drain, and L{DrainingSite} builds it.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from twisted.web.resource import IResource
from twisted.web.server import Request as SiteRequest
from twisted.web.server import Site

from ._drain import Drain

if TYPE_CHECKING:
    from ._metrics import Metrics

SERVICE_UNAVAILABLE_BODY = b"Service Unavailable: the server is shutting down.\n"


class ResponseCutAtCap(CancelledError):
    """
    The drain reached its cap before the handler answered; the client got a
    503 instead.  This is what L{Request.notifyFinish} errbacks with, which
    makes Klein cancel the handler.
    """


def answerServiceUnavailable(request: Request, retryAfter: int) -> bool:
    """
    Cancel the handler of C{request} and answer it with a 503.

    The handler is told first, through the Deferreds of
    L{Request.notifyFinish}: that is how Klein (and well-behaved resources)
    learn a request will not be answered by them, and Klein then cancels the
    handler's Deferred instead of writing a 500.

    @param retryAfter: seconds for the C{Retry-After} header.
    @return: whether the 503 was written (a handler may still have answered
        when it was cancelled).
    """
    notifications, request.notifications = request.notifications, []
    for d in notifications:
        d.errback(Failure(ResponseCutAtCap()))
    if request.finished or request.startedWriting:
        return False
    request.setResponseCode(503)
    request.responseHeaders = Headers(
        {
            b"Content-Type": [b"text/plain; charset=utf-8"],
            b"Content-Length": [b"%d" % (len(SERVICE_UNAVAILABLE_BODY),)],
            b"Retry-After": [b"%d" % (retryAfter,)],
            b"Connection": [b"close"],
        }
    )
    request.write(SERVICE_UNAVAILABLE_BODY)
    request.finish()
    return True


def _socketOf(transport: object) -> socket.socket | None:
    """
    @return: the socket under C{transport}, looking through wrapping
        transports such as TLS (whose own handle is the TLS connection), or
        L{None} for a transport without one.
    """
    while transport is not None:
        getHandle = getattr(transport, "getHandle", None)
        if getHandle is not None:
            handle = getHandle()
            if isinstance(handle, socket.socket):
                return handle
        transport = getattr(transport, "transport", None)
    return None


class DrainingRequest(SiteRequest):
    """
    A request that, once its channel is cutting at the cap, is answered with
    a 503 at once instead of being handed to the resource: a request read
    behind the one cut has no time left to be answered either.
    """

    channel: DrainingChannel

    def process(self) -> None:
        channel = self.channel
        if channel is not None and channel._cutting:
            drain = channel._drain
            if drain.capAt is not None and drain.clock.seconds() >= drain.capAt:
                # A flood of pipelined requests: the cap comes first.
                channel.paused = True
                channel.abort()
                return
            answerServiceUnavailable(self, channel._retryAfter)
            drain.requestsCut += 1
            return
        super().process()


class DrainingChannel(HTTPChannel):
    """
    An L{HTTPChannel} that tells its site's L{Drain} when it opens, answers
    and closes, and that closes itself cleanly once the drain has begun.

    Once draining, a channel:
      - adds C{Connection: close} to every response it writes;
      - answers the pipelined requests it had already received, in order,
        then closes (Twisted would drop them);
      - closes when it has no request in progress and has been quiet for the
        drain's C{idleGrace} since it was accepted or last answered.  So a
        connection idle for long closes at once, and one that has just been
        used gets a short chance to send the request its client may be
        writing right now; that request is then served with
        C{Connection: close}.
    """

    site: DrainingSite
    _drain: Drain
    _cutting = False
    _retryAfter = 1
    _closing = False
    lastActivity = 0.0
    _requestReceivedAt = 0.0
    _idleCall: Any = None
    _resumeCall: Any = None

    def connectionMade(self) -> None:
        super().connectionMade()
        self._drain = self.site.drain
        self.lastActivity = self._drain.clock.seconds()
        self._drain.connectionOpened(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        for call in (self._idleCall, self._resumeCall):
            if call is not None and call.active():
                call.cancel()
        self._idleCall = self._resumeCall = None
        super().connectionLost(reason)
        self._drain.connectionClosed(self)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        if self._drain.draining:
            headers.setRawHeaders(b"Connection", [b"close"])
        super().writeHeaders(version, code, reason, headers)

    def allContentReceived(self) -> None:
        self._requestReceivedAt = self._drain.clock.seconds()
        super().allContentReceived()

    def requestDone(self, request: Request) -> None:
        self.lastActivity = self._drain.clock.seconds()
        metrics = self.site.metrics
        if metrics is not None:
            metrics.requestDone(request, self.lastActivity - self._requestReceivedAt)
        if not self._cutting:
            self._drain.requestCompleted()
        if not self._drain.draining:
            super().requestDone(request)
            return
        if self.persistent and not self._hasPipelinedData():
            # Close after this response, as its Connection: close promised.
            # Requests already read behind it are answered first; at the cut,
            # with a 503 each (see DrainingRequest).
            self.persistent = False
        elif self.persistent and not self._cutting:
            # Parse the next pipelined request on a later reactor turn:
            # Twisted parses all it has read (up to 64 KiB, thousands of
            # small requests) in one go, and the drain's timers, the cut and
            # the cap among them, could not run meanwhile.
            self.paused = True
            self._resumeCall = self._drain.clock.callLater(0, self._resumeParsing)
        super().requestDone(request)
        if self.persistent:
            # Parsing the pipelined data may have left no request in
            # progress (it was only part of one, or blank lines).
            self._closeWhenIdle()

    def _resumeParsing(self) -> None:
        self._resumeCall = None
        self.paused = False
        if self._closing or self.transport is None:
            return
        self.dataReceived(b"")
        if self.persistent and not self._handlingRequest:
            self._closeWhenIdle()

    def _hasPipelinedData(self) -> bool:
        # Pipelined bytes wait in _dataBuffer while a request is handled, or
        # in LineReceiver's _buffer when this request was itself answered
        # while its predecessor's pipelined bytes were being parsed.
        return bool(self._buffer.strip()) or any(
            chunk.strip() for chunk in self._dataBuffer
        )

    def loseConnection(self) -> None:
        self._closing = True
        super().loseConnection()
        if self._drain.draining and isinstance(self.transport, TLSMemoryBIOProtocol):
            # Twisted's TLS waits for the peer's close_notify before closing
            # the TCP connection, and an idle pooled client may never send
            # it: the drain would wait for the cap.  The close_notify and the
            # last response are already written below; close TCP after them,
            # as Go and nginx do.
            self.transport.transport.loseConnection()

    # IDrainableConnection

    def isBusy(self) -> bool:
        return self._handlingRequest

    def beginDrain(self) -> None:
        self._closeWhenIdle()

    def cutAtCap(self, retryAfter: int) -> int:
        self._cutting = True
        self._retryAfter = retryAfter
        if self._closing:
            return 0
        if self._resumeCall is not None:
            # Pipelined requests read but not parsed yet: each gets its 503
            # now (see DrainingRequest).
            self._resumeCall.cancel()
            self._resumeParsing()
            if self._closing:
                return 0
        if self._handlingRequest and self.requests:
            request = self.requests[0]
            if not request.startedWriting:
                answerServiceUnavailable(request, retryAfter)
                if not self._closing:
                    self.loseConnection()
                return 1
            self.abort()
            return 1
        if self.requests:
            # A request still arriving: there is nothing to answer yet, and
            # closing with its bytes unread would reset the connection anyway.
            self.abort()
        else:
            self.loseConnection()
        return 0

    def abort(self) -> None:
        self._closing = True
        # TCP, Unix and TLS transports all abort; ITransport does not say so.
        abortConnection = getattr(self.transport, "abortConnection", None)
        if abortConnection is not None:
            abortConnection()
        elif self.transport is not None:
            self.transport.loseConnection()

    # Idle handling while draining.

    def _isIdle(self) -> bool:
        return not self.requests and not self._buffer and not self._closing

    def _bytesWaiting(self) -> bool:
        # A request may sit in the kernel's receive buffer, not yet read by
        # the reactor: closing now would reset it unanswered.
        sock = _socketOf(self.transport)
        if sock is None:
            return False
        try:
            return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except OSError:
            return False

    def _closeWhenIdle(self) -> None:
        if self._idleCall is not None and self._idleCall.active():
            self._idleCall.cancel()
        self._idleCall = None
        if not self._isIdle():
            return
        clock = self._drain.clock
        wait = self.lastActivity + self._drain.idleGrace - clock.seconds()
        if wait <= 0 and not self._bytesWaiting():
            self.loseConnection()
            return
        # Look again once the grace has run out, or, if bytes are waiting,
        # once the reactor has had the chance to read them.
        self._idleCall = clock.callLater(
            wait if wait > 0 else self._drain.idleGrace, self._closeIfIdle
        )

    def _closeIfIdle(self) -> None:
        self._idleCall = None
        self._closeWhenIdle()


class DrainingSite(Site):
    """
    A L{Site} whose connections are L{DrainingChannel}s reporting to
    C{drain}.

    It also keeps its access log open until the drain is done: Twisted
    closes it when the last port stops listening, which would leave every
    request answered during the drain unlogged.
    """

    protocol = DrainingChannel  # type: ignore[assignment]
    requestFactory = DrainingRequest

    def __init__(
        self,
        resource: IResource,
        drain: Drain,
        metrics: Metrics | None = None,
        **kwargs: Any,
    ) -> None:
        """
        @param resource: the root resource.
        @param drain: the drain every connection reports to.
        @param metrics: counts every completed response, if given.
        @param kwargs: passed on to L{Site}, C{reactor} among them.
        """
        super().__init__(resource, **kwargs)
        self.drain = drain
        self.metrics = metrics

    def stopFactory(self) -> None:
        if self.drain.draining and not self.drain.finished:
            self.drain.whenDone().addCallback(lambda _: self.stopFactory())
            return
        super().stopFactory()
