# -*- test-case-name: tests.unit.protocols.test_limits -*-
"""
A limit on the connections a process serves (C{--max-connections}).

Past it a new connection is not left to pile up (each one costs a
descriptor, memory, a share of the reactor): it is told at once to come
back later, in its own protocol, and closed so that it reads that rather
than a reset.  An HTTP/1.1 client reads a 503 with C{Retry-After}, an
HTTP/2 client a SETTINGS frame and a GOAWAY with no stream accepted and no
error (which clients take as: retry elsewhere).  While a tenth of the limit
are being answered so, the listeners stop accepting (see
L{ConnectionLimit.onSaturated}): the next ones wait in the kernel's queue
for their turn to be answered, rather than be reset; only a batch the
listener was accepting at that moment may go past, and past twice that
the connections are closed at once.

L{LimitedFactory} wraps any protocol factory, so that every listener and
every protocol a process serves (HTTP/1.1 and HTTP/2 of a
L{gracesvc._protocols.site.DrainingSite}, another factory's) shares one
limit; what counts the open connections is given to it (a L{Drain} counts
every connection of every protocol, WebSockets included, during a drain
as before one).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hyperframe.frame import GoAwayFrame, SettingsFrame
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Protocol
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from zope.interface import directlyProvides, implementer, providedBy

from gracesvc._core.summaries import LogSummary
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import closeAtOnce
from gracesvc._protocols.answers import TOO_MANY_CONNECTIONS
from gracesvc._protocols.deadlines import LINGER, lingeringClose

#: What an HTTP/2 client over the limit is sent: the server's connection
#: preface (an empty SETTINGS frame), then GOAWAY with no stream accepted
#: and NO_ERROR, which clients retry elsewhere (Go's client retries nothing
#: after a GOAWAY with an error code).
H2_REFUSAL = (
    SettingsFrame(0).serialize()
    + GoAwayFrame(0, last_stream_id=0, error_code=0).serialize()
)

#: The first bytes of the HTTP/2 connection preface (RFC 9113 section 3.4).
_H2_PREFACE_START = b"PRI * HTTP/2.0"

#: How long a connection over the limit may take to send its first bytes
#: (over TLS, to complete its handshake too) before it is closed.
FIRST_BYTES_TIMEOUT = 2.0


class ConnectionLimit:
    """
    The most connections a process serves at once, and what was done with
    those past it.

    @ivar refused: connections answered "too many" (503, or GOAWAY for
        HTTP/2) since the start.
    @ivar dropped: connections closed at once since the start: too many
        were already being answered.
    @ivar answering: connections being answered "too many" now.
    @ivar onSaturated: called with C{True} when as many connections are
        being answered "too many" as may be (L{answeringLimit}), with
        C{False} when one fewer is: whoever owns the listeners stops
        accepting meanwhile.
    """

    log = Logger()

    def __init__(
        self,
        maximum: int,
        openConnections: Callable[[], int],
        clock: IReactorTime,
        spare: int | None = None,
    ) -> None:
        """
        @param maximum: the most connections served at once, >= 1.
        @param openConnections: how many are open now (a L{Drain}'s
            C{connections}, say).
        @param clock: the time the answered connections are closed by.
        @param spare: how many connections may be answered "too many" at
            once before any is closed unanswered (the descriptors to spare
            for them); by default twice L{answeringLimit}.
        """
        if maximum < 1:
            raise ValueError(f"the connection limit must be >= 1, got {maximum!r}")
        self.maximum = maximum
        self.openConnections = openConnections
        self.clock = clock
        #: how many may be answered "too many" at once before the listeners
        #: pause: a tenth of the limit, at least 16.
        self.answeringLimit = max(16, maximum // 10)
        #: how many may be, in a batch the listener accepted before it
        #: paused, before the next is closed unanswered.
        self.dropLimit = max(
            self.answeringLimit, 2 * self.answeringLimit if spare is None else spare
        )
        self.refused = 0
        self.dropped = 0
        self.answering = 0
        self.onSaturated: Callable[[bool], object] | None = None
        self._summary = LogSummary(
            clock,
            self.log,
            "Connection limit ({limit}) reached: new connections are answered "
            "503 (HTTP/2: GOAWAY) until some close",
            "{count} more connections refused in the last {interval:g} s: "
            "connection limit ({limit}) reached",
            level=LogLevel.warn,
        )

    def full(self) -> bool:
        """
        @return: whether a new connection would be one too many.
        """
        return self.openConnections() >= self.maximum

    def refusal(self) -> IProtocol:
        """
        @return: the protocol of a connection over the limit: it answers
            "too many" or, past the answering limit, closes at once.
        """
        self._summary.event(limit=self.maximum)
        if self.answering >= self.dropLimit:
            self.dropped += 1
            return _Dropped()
        self.refused += 1
        return TooManyConnections(self)

    def _answering(self, change: int) -> None:
        before = self.answering
        self.answering += change
        limit = self.answeringLimit
        if self.onSaturated is None:
            return
        if before < limit <= self.answering:
            self.onSaturated(True)
        elif self.answering < limit <= before:
            self.onSaturated(False)


@implementer(IProtocolFactory)
class LimitedFactory:
    """
    A protocol factory that builds its wrapped factory's protocol while
    a L{ConnectionLimit} allows, and a refusal past it.

    It stands for the wrapped factory in every other respect: TLS asks it
    which protocols to offer through ALPN, a site's C{stopFactory} keeps
    its access log open through a drain, attributes read through it.  The
    protocols it builds are the wrapped factory's own, unwrapped: no call
    is added to any read or write.
    """

    def __init__(self, wrapped: IProtocolFactory, limit: ConnectionLimit) -> None:
        self.wrapped = wrapped
        self.limit = limit
        directlyProvides(self, providedBy(wrapped))

    def buildProtocol(self, addr: Any) -> IProtocol | None:
        if self.limit.full():
            return self.limit.refusal()
        return self.wrapped.buildProtocol(addr)

    def doStart(self) -> None:
        self.wrapped.doStart()

    def doStop(self) -> None:
        self.wrapped.doStop()

    def logPrefix(self) -> str:
        prefix = getattr(self.wrapped, "logPrefix", None)
        return prefix() if prefix is not None else type(self.wrapped).__name__

    def __getattr__(self, name: str) -> Any:
        # Only what this class lacks: acceptableProtocols, noisy, ...
        return getattr(self.wrapped, name)


@implementer(IHandshakeListener)
class TooManyConnections(Protocol):
    """
    One connection over the limit, answered "too many" in its own protocol
    as soon as its first bytes say which (HTTP/2 by ALPN or by its
    preface, else HTTP/1.1), then closed after a linger (see
    L{lingeringClose}).  One that sends nothing in time is closed.
    """

    def __init__(self, limit: ConnectionLimit) -> None:
        self.limit = limit
        self._answered = False
        self._first = b""
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        self.limit._answering(+1)
        self._timer = self.limit.clock.callLater(
            FIRST_BYTES_TIMEOUT + LINGER, self._abort
        )

    def handshakeCompleted(self) -> None:
        if getattr(self.transport, "negotiatedProtocol", None) == b"h2":
            self._answer(H2_REFUSAL)

    def dataReceived(self, data: bytes) -> None:
        if self._answered:
            return
        first = self._first = self._first + data
        if len(first) < len(_H2_PREFACE_START) and _H2_PREFACE_START.startswith(first):
            # "P" may be a POST yet.
            return
        h2 = first.startswith(_H2_PREFACE_START)
        self._answer(H2_REFUSAL if h2 else TOO_MANY_CONNECTIONS)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.limit._answering(-1)
        cancelCall(self._timer)
        self._timer = None

    def _answer(self, answer: bytes) -> None:
        self._answered = True
        cancelCall(self._timer)
        transport: Any = self.transport
        transport.write(answer)
        self._timer = lingeringClose(transport, self.limit.clock)

    def _abort(self) -> None:
        self._timer = None
        transport: Any = self.transport
        transport.abortConnection()


class _Dropped(Protocol):
    """
    A connection past even the answering limit: closed at once, its
    descriptor freed before the next is accepted (see L{closeAtOnce}).
    """

    def connectionMade(self) -> None:
        closeAtOnce(self.transport)
