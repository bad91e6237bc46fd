# -*- test-case-name: tests.unit.protocols.test_http1 -*-
"""
HTTP/1.1 glue: the connections of a site that take part in the drain.

Twisted's L{HTTPChannel} has no notion of a graceful close, and three of its
habits would lose responses during one:

  - C{checkPersistence} decides keep-alive per request and adds no
    C{Connection: close} header when the server wants to close, so a client
    would send its next request into a connection about to close;
  - a channel that is not persistent drops the pipelined requests it has
    already read, unparsed and unanswered;
  - L{twisted.web.http.HTTPFactory} keeps no list of its connections, so
    nothing could wait for them or close the idle ones.

L{DrainingChannel} fixes each for the drain, and
L{gracesvc._protocols.site.DrainingSite} builds it.  Whether or not a
drain runs, it also keeps the deadlines of L{gracesvc._protocols.deadlines}
(the request head, keep-alive, writes), which Twisted lacks or restarts
with every byte.  A channel upgraded to a WebSocket stays the one
connection the drain sees, and hands the drain's duties to the WebSocket
(L{gracesvc._protocols.websocket}).  The Twisted internals this needs are
in L{gracesvc._pins.twisted}.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import Any, Protocol

from twisted.internet.interfaces import IDelayedCall, IHandshakeListener, IProtocol
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel, Request
from twisted.web.http_headers import Headers
from twisted.web.server import Request as SiteRequest
from zope.interface import implementer

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import (
    closeBeneathTLS,
    deliverTo,
    hasPipelinedRequest,
    headComplete,
    pauseParsing,
    resumeParsing,
    tlsHandshaking,
)
from gracesvc._protocols.answers import (
    REQUEST_TIMEOUT,
    LongLivedKind,
    ResponseMetrics,
    answerServiceUnavailable,
    isWebSocketUpgrade,
)
from gracesvc._protocols.deadlines import (
    ClientTally,
    ConnectionTimeouts,
    WriteStall,
    acknowledgedBy,
    idleGraceLeft,
    lingeringClose,
)
from gracesvc._protocols.websocket import DrainingWebSocket, WebSocketPolicy


class DrainingRequest(SiteRequest):
    """
    A request that, once the drain has reached its cut, is answered with a
    503 at once instead of being handed to the resource: a request read
    behind the one cut has no time left to be answered either.

    From the first signal on, a request to upgrade to a WebSocket is
    answered with a 503 too (with C{Retry-After} and C{Connection: close}):
    a new long-lived connection belongs on another instance.

    A request is made one of these only when it is processed during a drain
    (see L{DrainingChannel.allContentReceived}); before the signal it is a
    plain L{twisted.web.server.Request}, whose C{process} costs no extra
    call.
    """

    channel: DrainingChannel

    def process(self) -> None:
        channel = self.channel
        if channel is not None:
            drain = channel.site.drain
            if drain.draining:
                if drain.cutting:
                    if drain.answerCut():
                        answerServiceUnavailable(self, drain.policy.retryAfter)
                        drain.requestCut()
                    else:
                        # A flood of pipelined requests: the cap comes first.
                        pauseParsing(channel)
                        channel.abort()
                    return
                if isWebSocketUpgrade(self):
                    answerServiceUnavailable(self, drain.policy.retryAfter)
                    return
        SiteRequest.process(self)


class ChannelState(Enum):
    """
    What a L{DrainingChannel} is doing, as Go's C{http.ConnState} and
    Twisted's C{HTTP11ClientProtocol._state} have it.
    """

    #: no request in progress: the drain may close it after the idle grace.
    IDLE = "idle"
    #: bytes of a request received, not all of it yet.
    RECEIVING = "receiving"
    #: a request received whole and being answered.
    BUSY = "busy"
    #: handed over to another protocol (a WebSocket), which now has the
    #: drain's duties (see L{DrainingChannel.upgrade}); until it is lost.
    UPGRADED = "upgraded"
    #: a request being answered with an event stream: busy, and told to wrap
    #: up when the drain goes away (see L{gracesvc.EventStream}).
    STREAM = "stream"
    #: a long poll waiting for something to answer: busy, and answered at
    #: once when the drain goes away (see L{gracesvc.LongPoll}).
    POLL = "poll"
    #: closing or aborted; nothing more is read or answered.
    CLOSING = "closing"


_IDLE, _RECEIVING, _BUSY, _UPGRADED, _STREAM, _POLL, _CLOSING = ChannelState
_LONG_LIVED = frozenset([_STREAM, _POLL])


def _dropBytes(data: bytes) -> None:
    """
    What a connection closing after its last answer does with what its
    client still sends.
    """


class ChannelSite(Protocol):
    """
    What a L{DrainingChannel} needs of its site, a
    L{gracesvc._protocols.site.DrainingSite} (which imports this module).
    """

    drain: Drain
    metrics: ResponseMetrics | None
    webSocketPolicy: WebSocketPolicy
    timeouts: ConnectionTimeouts
    clientTally: ClientTally

    def log(self, request: Request) -> None:
        """
        Write C{request} to the access log.
        """


class UpgradedProtocol(Protocol):
    """
    The protocol a L{DrainingChannel} is upgraded to: it is given the
    channel as its transport, and does the drain's duties for the
    connection (L{IDrainableConnection}).
    """

    @property
    def inFlight(self) -> int: ...

    @property
    def state(self) -> str: ...

    def makeConnection(self, transport: DrainingChannel) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...

    def beginDrain(self) -> None: ...

    def cut(self, retryAfter: int) -> int: ...

    def abort(self) -> None: ...


@implementer(IDrainableConnection, IHandshakeListener)
class DrainingChannel(HTTPChannel):
    """
    An L{HTTPChannel} that tells its site's L{Drain} when it opens, answers
    and closes, and that closes itself cleanly once the drain has begun.

    Once draining, a channel:
      - adds C{Connection: close} to every response it writes;
      - answers the pipelined requests it had already received, in order,
        then closes (Twisted would drop them);
      - closes when it has no request in progress and has been quiet for the
        drain's C{idleGrace} since it was accepted (over TLS: since its
        handshake completed) or last answered.  So a connection idle for
        long closes at once, and one that has just been used gets a short
        chance to send the request its client may be writing right now;
        that request is then served with C{Connection: close}.  A TLS
        connection whose handshake is in progress is not idle: its client
        has not been able to send a request yet (it waits until the cut,
        as a request partly received does).

    Its one state (L{ChannelState}) is moved by the parsing and answering hooks
    below, and everything the drain asks of it is read from that.

    Its deadlines (the site's L{ConnectionTimeouts}), drain or no drain:
      - a request head must be complete within the header timeout of its
        first byte (the first request's, of the accept; over TLS, the
        handshake has that time too, and the head that time again after
        it): else it is answered 408 and closed, or, if none of it came,
        closed without a word (a TLS handshake is aborted);
      - an idle connection is closed, without a word, after the keep-alive
        timeout (Twisted's idle timeout, which also bounds a request body
        that stops arriving: that is answered 408);
      - while the transport's buffer is full, the client must take some of
        it within the write timeout (L{WriteStall}), else the connection
        is aborted.  An upgraded WebSocket reads L{writeBlocked} to bound
        what it buffers.

    A request that upgrades the connection (Twisted's C{WebSocketResource})
    hands it to another protocol (L{upgrade}): the channel still reports
    its close to the drain, and passes the drain's questions and orders on
    to that protocol, which never gets an HTTP response written into it.
    """

    # The channel's own fields are slots, not entries of its __dict__.
    # CPython 3.11 shares the keys of the instance dicts of a class up to 29
    # attribute names; past that, every instance gets a plain dict of its
    # own and every attribute access on a channel is slower (about 6k more
    # instructions per request under callgrind).  HTTPChannel's instances
    # use 26 names (_command, _path and _version come and go with each
    # request): these fields in the dict would cross the limit.
    __slots__ = (
        "_drain",
        "_seconds",
        "_metrics",
        "_state",
        "lastActivity",
        "_requestReceivedAt",
        "_idleCall",
        "_resumeCall",
        "_upgraded",
        "_timeouts",
        "_headStartedAt",
        "_headCall",
        "_closingCall",
        "_writeStall",
        "writeBlocked",
    )

    site: ChannelSite
    _drain: Drain
    _seconds: Callable[[], float]
    _metrics: ResponseMetrics | None
    _state: ChannelState
    lastActivity: float
    _requestReceivedAt: float
    _idleCall: IDelayedCall | None
    _resumeCall: IDelayedCall | None
    _upgraded: UpgradedProtocol | None
    _timeouts: ConnectionTimeouts
    #: when the request head being received started (for the first, when
    #: the connection was accepted or its TLS handshake completed); L{None}
    #: when no head is being received.
    _headStartedAt: float | None
    _headCall: IDelayedCall | None
    _closingCall: IDelayedCall | None
    _writeStall: WriteStall | None
    #: whether the transport's buffer is full: its client takes less than
    #: is written (see L{pauseProducing}).
    writeBlocked: bool

    def __init__(self) -> None:
        super().__init__()
        self._state = _IDLE
        self.lastActivity = self._requestReceivedAt = 0.0
        self._idleCall = self._resumeCall = None
        self._upgraded = None
        self._headStartedAt = None
        self._headCall = self._closingCall = None
        self._writeStall = None
        self.writeBlocked = False

    def connectionMade(self) -> None:
        site = self.site
        # Twisted's idle timeout (timeOut, which the site sets) is the
        # keep-alive timeout.
        self._timeouts = site.timeouts
        super().connectionMade()
        drain = self._drain = site.drain
        # Looked up once here, not on every request.
        self._seconds = drain.clock.seconds
        self._metrics = site.metrics
        now = self.lastActivity = self._seconds()
        header = self._timeouts.header
        if header is not None:
            self._headStartedAt = now
            self._headCall = drain.clock.callLater(header, self._headDeadline)
        drain.connectionOpened(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self._state = _CLOSING
        cancelCall(self._idleCall)
        cancelCall(self._resumeCall)
        cancelCall(self._headCall)
        cancelCall(self._closingCall)
        self._idleCall = self._resumeCall = self._headCall = self._closingCall = None
        if self._writeStall is not None:
            self._writeStall.unblocked()
        if self._upgraded is not None:
            self._upgradeLost(reason)
        super().connectionLost(reason)
        self._drain.connectionClosed(self)

    # The overrides below run for every request: they call HTTPChannel's
    # methods directly (a super() object per call costs more than the rest
    # of their work when not draining), and keep the drain's work for when
    # it runs.

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake completed: the client can send its request now,
        and the idle grace counts from here (see L{_closeWhenIdle}), as does
        the first request head's deadline.
        """
        now = self.lastActivity = self._seconds()
        if self._headStartedAt is not None and self._state is _IDLE:
            self._headStartedAt = now
        if self._drain.draining:
            self._closeWhenIdle()

    def dataReceived(self, data: bytes) -> None:
        if self._state is _IDLE and data and not data.isspace():
            self._state = _RECEIVING
            if self._headStartedAt is None:
                # The first byte of a request head (after the connection's
                # first): it has the header timeout from now.  The timer is
                # not moved for each head: it looks again when it runs (see
                # _headDeadline), so a busy keep-alive connection pays no
                # timer per request.
                header = self._timeouts.header
                if header is not None:
                    self._headStartedAt = self._seconds()
                    if self._headCall is None:
                        self._headCall = self._drain.clock.callLater(
                            header, self._headDeadline
                        )
        HTTPChannel.dataReceived(self, data)

    def allContentReceived(self) -> None:
        self._headStartedAt = None
        self._state = _BUSY
        self._requestReceivedAt = self._seconds()
        if self._drain.draining:
            request = self.requests[-1]
            if type(request) is SiteRequest:
                # Processed during the drain: answered as a DrainingRequest
                # (whose process checks the drain), even if its first bytes
                # came before the signal.  Before it, no request pays for
                # that check (see gracesvc._pins.twisted).
                request.__class__ = DrainingRequest
        HTTPChannel.allContentReceived(self)

    def writeHeaders(
        self, version: bytes, code: bytes, reason: bytes, headers: Headers
    ) -> None:
        if self._drain.draining:
            headers.setRawHeaders(b"Connection", [b"close"])
        HTTPChannel.writeHeaders(self, version, code, reason, headers)

    def longResponseStarted(self, request: Request, kind: LongLivedKind) -> None:
        """
        C{request}, the one being answered, is a long-lived response: the
        connection's state is C{kind} until it ends, and the drain counts how
        it ends (see L{Drain.longLived}).
        """
        if self._state is _BUSY and self.requests and self.requests[0] is request:
            self._state = ChannelState(kind)

    def requestDone(self, request: Request) -> None:
        drain = self._drain
        now = self.lastActivity = self._seconds()
        metrics = self._metrics
        if metrics is not None:
            metrics.requestDone(request, now - self._requestReceivedAt)
        state = self._state
        if state is _BUSY or state in _LONG_LIVED:
            if state is not _BUSY and drain.draining:
                drain.longLived.ended(state.value, "clean")
            # Before Twisted parses what was pipelined behind it, which may
            # make the channel busy again.
            self._state = _IDLE
        if not drain.draining:
            HTTPChannel.requestDone(self, request)
            return
        cutting = drain.cutting
        if not cutting:
            drain.requestCompleted()
        if self.persistent and not hasPipelinedRequest(self):
            # Close after this response, as its Connection: close promised.
            # Requests already read behind it are answered first; at the cut,
            # with a 503 each (see DrainingRequest).
            self.persistent = False
        elif self.persistent and not cutting:
            # Parse the next pipelined request on a later reactor turn:
            # Twisted parses all it has read (up to 64 KiB, thousands of
            # small requests) in one go, and the drain's timers, the cut and
            # the cap among them, could not run meanwhile.
            pauseParsing(self)
            self._resumeCall = drain.clock.callLater(0, self._resumeParsing)
        HTTPChannel.requestDone(self, request)
        if self.persistent:
            # Parsing the pipelined data may have left no request in
            # progress (it was only part of one, or blank lines).
            self._closeWhenIdle()

    def _resumeParsing(self) -> None:
        self._resumeCall = None
        if self._state is _CLOSING or self.transport is None:
            return
        resumeParsing(self)
        if self.persistent:
            self._closeWhenIdle()

    def loseConnection(self) -> None:
        if self._state is not _UPGRADED:
            self._state = _CLOSING
        super().loseConnection()
        if self._drain.draining:
            closeBeneathTLS(self.transport)

    def abortConnection(self) -> None:
        """
        Close the connection at once, dropping whatever is not written yet.
        """
        if self._state is not _UPGRADED:
            self._state = _CLOSING
        # TCP, Unix and TLS transports all abort; ITransport does not say so.
        abortConnection = getattr(self.transport, "abortConnection", None)
        if abortConnection is not None:
            abortConnection()
        elif self.transport is not None:
            self.transport.loseConnection()

    # Upgrades.

    def _protocolUpgradeForWebsockets(self, protocol: IProtocol) -> None:
        """
        Twisted's C{WebSocketResource} hands the connection over after its
        handshake (see L{gracesvc._pins.twisted.webSocketParts}); Twisted's own
        version replaces this channel's C{connectionLost}, so the drain
        would never hear the close.
        """
        site = self.site
        self.upgrade(
            DrainingWebSocket.fromTwisted(
                protocol, site.drain, site.webSocketPolicy, site.clientTally
            )
        )

    def upgrade(self, protocol: UpgradedProtocol) -> None:
        """
        Hand the connection to C{protocol}, after the request being answered
        switched protocols: from now on it receives the bytes read, writes
        through this channel (which closes as an HTTP connection closes, TLS
        included, and passes flow control on to a registered producer),
        and answers for the connection to the drain.  It is logged and
        counted as a 101 response when the connection closes.
        """
        self._state = _UPGRADED
        self._upgraded = protocol
        cancelCall(self._idleCall)
        self._idleCall = None
        request = self.requests[-1]
        request.code = 101
        request.code_message = b"Switching Protocols"
        # The parsing is done with.
        deliverTo(self, protocol.dataReceived)
        protocol.makeConnection(self)

    def _upgradeLost(self, reason: Failure) -> None:
        """
        The upgraded connection is lost: tell its protocol, then log and
        count the request that upgraded it, as a 101 that lasted as long as
        the connection.
        """
        assert self._upgraded is not None
        try:
            self._upgraded.connectionLost(reason)
        finally:
            request = self.requests[-1] if self.requests else None
            if request is not None:
                metrics = self.site.metrics
                if metrics is not None:
                    metrics.requestDone(
                        request, self._drain.clock.seconds() - self._requestReceivedAt
                    )
                self.site.log(request)

    # IDrainableConnection

    @property
    def inFlight(self) -> int:
        if self._upgraded is not None:
            return self._upgraded.inFlight
        state = self._state
        return 1 if state is _BUSY or state in _LONG_LIVED else 0

    @property
    def state(self) -> str:
        if self._upgraded is not None:
            return self._upgraded.state
        return self._state.value

    def beginDrain(self) -> None:
        if self._upgraded is not None:
            self._upgraded.beginDrain()
            return
        self._closeWhenIdle()

    def cut(self, retryAfter: int) -> int:
        if self._upgraded is not None:
            return self._upgraded.cut(retryAfter)
        if self._resumeCall is not None:
            # Pipelined requests read but not parsed yet: each gets its 503
            # now (see DrainingRequest).
            self._resumeCall.cancel()
            self._resumeParsing()
        state = self._state
        if state is _CLOSING:
            return 0
        if state is _BUSY or state in _LONG_LIVED:
            if state is _STREAM or self.requests[0].startedWriting:
                # Never a 503 into a response under way: an event stream the
                # drain could not wrap up in time, a body being written.
                self.abort()
                return 1
            if state is _POLL:
                self._drain.longLived.ended(state.value, "cut")
                self._state = _BUSY
            answerServiceUnavailable(self.requests[0], retryAfter)
            if self._state is not _CLOSING:
                self.loseConnection()
            return 1
        if state is _RECEIVING:
            # A request still arriving: there is nothing to answer yet, and
            # closing with its bytes unread would reset the connection anyway.
            self.abort()
        else:
            self.loseConnection()
        return 0

    def abort(self) -> None:
        if self._upgraded is not None:
            self._upgraded.abort()
            return
        if self._state in _LONG_LIVED:
            self._drain.longLived.ended(self._state.value, "cut")
        self.abortConnection()

    # The deadlines, drain or no drain.

    def _headDeadline(self) -> None:
        self._headCall = None
        startedAt = self._headStartedAt
        state = self._state
        header = self._timeouts.header
        if (
            startedAt is None
            or header is None
            or not (state is _IDLE or state is _RECEIVING)
        ):
            return
        if state is _RECEIVING and headComplete(self):
            # A body arriving: the head's deadline is over (cleared here
            # rather than at the end of each head, which would cost a call
            # per request).
            self._headStartedAt = None
            return
        remaining = startedAt + header - self._seconds()
        if remaining > 0:
            self._headCall = self._drain.clock.callLater(remaining, self._headDeadline)
            return
        tally = self.site.clientTally
        peer = self._peer()
        if tlsHandshaking(self.transport):
            tally.timedOut("handshake", peer=peer, timeout=header)
            self.abortConnection()
        elif state is _RECEIVING:
            tally.timedOut("header", peer=peer, timeout=header)
            self._answerAndClose(REQUEST_TIMEOUT)
        else:
            tally.timedOut("silent", peer=peer, timeout=header)
            self._closeQuietly()

    def timeoutConnection(self) -> None:
        """
        Twisted's idle timeout, the keep-alive timeout here, ran out: an
        idle connection is closed without a word (as HTTP/1.1 allows), a
        request body that stopped arriving is answered 408.  A request
        head is bounded by its own, shorter deadline.
        """
        state = self._state
        tally = self.site.clientTally
        if state is _IDLE:
            tally.timedOut("keepalive")
            self._closeQuietly()
        elif state is _RECEIVING:
            tally.timedOut("body", peer=self._peer(), timeout=self.timeOut)
            self._answerAndClose(REQUEST_TIMEOUT)
        else:
            HTTPChannel.timeoutConnection(self)

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: its client takes less than is
        written.  Twisted pauses what produces the response; the client
        now has the write timeout to take some of it.
        """
        HTTPChannel.pauseProducing(self)
        self.writeBlocked = True
        write = self._timeouts.write
        if write is None or self._state is _CLOSING:
            return
        if self._writeStall is None:
            self._writeStall = WriteStall(
                self._drain.clock,
                write,
                acknowledgedBy(self.transport),
                self._writeStalled,
            )
        self._writeStall.blocked()

    def resumeProducing(self) -> None:
        """
        The transport's buffer has emptied.
        """
        self.writeBlocked = False
        if self._writeStall is not None:
            self._writeStall.unblocked()
        HTTPChannel.resumeProducing(self)

    def _writeStalled(self) -> None:
        self.site.clientTally.timedOut(
            "write", peer=self._peer(), timeout=self._timeouts.write
        )
        if self._state in _LONG_LIVED and self._drain.draining:
            self._drain.longLived.ended(self._state.value, "cut")
        self.abortConnection()

    def _answerAndClose(self, answer: bytes) -> None:
        """
        Write C{answer} (a whole response, not through a request) and close
        so that the client reads it: what it still sends is read and
        dropped meanwhile (see L{lingeringClose}).
        """
        self._state = _CLOSING
        transport: Any = self.transport
        deliverTo(self, _dropBytes)
        transport.unregisterProducer()
        transport.write(answer)
        self._closingCall = lingeringClose(transport, self._drain.clock)

    def _closeQuietly(self) -> None:
        """
        Close a connection that is not answering anything, and do not wait
        for a TLS client's close_notify.
        """
        self.loseConnection()
        closeBeneathTLS(self.transport)

    def _peer(self) -> str:
        transport = self.transport
        return "?" if transport is None else str(transport.getPeer())

    # Idle connections while draining.

    def _closeWhenIdle(self) -> None:
        cancelCall(self._idleCall)
        self._idleCall = None
        if self._state is not _IDLE or tlsHandshaking(self.transport):
            # A handshake in progress: handshakeCompleted looks again.
            return
        wait = idleGraceLeft(self._drain, self.lastActivity, self.transport)
        if wait is None:
            self.loseConnection()
            return
        self._idleCall = self._drain.clock.callLater(wait, self._closeIfIdle)

    def _closeIfIdle(self) -> None:
        self._idleCall = None
        self._closeWhenIdle()
