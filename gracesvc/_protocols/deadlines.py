# -*- test-case-name: tests.unit.protocols.test_deadlines -*-
"""
How long a client may take, on the open internet, before its connection is
closed: the deadlines every connection of a site keeps whether or not a
drain runs (the drain's own timeline is L{gracesvc._core}'s).

  - B{the request head} (C{--header-timeout}, 10 s): from its first byte
    (for a new connection, from the accept; over TLS, the handshake has
    the same time of its own) to its blank line.  One absolute deadline,
    not restarted by each byte as Twisted's idle timeout is, so a client
    that trickles a byte a second cannot hold a connection for good.  Go
    calls it C{ReadHeaderTimeout}, nginx C{client_header_timeout}.
  - B{keep-alive} (C{--keep-alive-timeout}, 75 s): how long a connection
    may sit idle between two requests.  It must be longer than the idle
    timeout of any load balancer in front (60 s for AWS's ALB, 600 s for
    Google's), or the server may close a connection just as the balancer
    sends a request into it, which the balancer answers 502.
  - B{writes} (C{--write-timeout}, 60 s): how long a response (or a
    WebSocket) may wait on a client that takes none of it.  It needs
    progress, not completion: a slow client that keeps reading a large
    download is not cut (nginx's C{send_timeout}).

L{ConnectionTimeouts} holds the three; L{WriteStall} watches one
connection's writes; L{ClientTally} counts what they ended, for the
metrics; L{lingeringClose} closes after a last answer (a 408, a 503) so
that the client reads it instead of a reset; L{idleGraceLeft} says when a
connection idle during the drain is closed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.interfaces import IDelayedCall, IReactorTime, ITransport
from twisted.logger import Logger

from gracesvc._core.drain import Drain
from gracesvc._core.summaries import LogSummary
from gracesvc._core.timers import cancelCall
from gracesvc._pins.linux import bytesAcknowledged
from gracesvc._pins.twisted import bytesWaiting, socketOf

#: How long a connection closed after a last answer waits for its client
#: to close its side (reading what it still sends) before it is aborted:
#: as Go's C{closeWriteAndWait}.
LINGER = 0.5


def _checkSeconds(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ValueError(f"the {name} must be > 0 seconds or None, got {value!r}")


@dataclass(frozen=True)
class ConnectionTimeouts:
    """
    The deadlines of a site's connections, in seconds; L{None} for none.

    @ivar header: from the first byte of a request head (or the accept, for
        a connection's first request) to its end; a head not complete in
        time is answered 408 and closed, a connection that sent nothing of
        it is closed without an answer.  Over TLS the handshake has the
        same time, counted from the accept.
    @ivar keepAlive: how long a connection may be idle between two
        requests before it is closed.
    @ivar write: how long a client may take none of what is waiting for it
        (a response, WebSocket messages) before the connection is aborted.
    """

    header: float | None = 10.0
    keepAlive: float | None = 75.0
    write: float | None = 60.0

    def __post_init__(self) -> None:
        """
        @raise ValueError: a value out of range.
        """
        _checkSeconds("header timeout", self.header)
        _checkSeconds("keep-alive timeout", self.keepAlive)
        _checkSeconds("write timeout", self.write)


#: No deadline at all, as a plain Twisted site has (its idle timeout
#: aside).
NO_TIMEOUTS = ConnectionTimeouts(header=None, keepAlive=None, write=None)


#: The log lines of each kind of L{ClientTally.timedOut}: the first of a
#: spell, then a count each second (see L{LogSummary}).  Keep-alive closes
#: are routine, and not logged.
_LINES = {
    "header": (
        "Request head not complete within {timeout:g} s: answered 408 and "
        "closed ({peer})",
        "{count} more request heads not complete in time in the last "
        "{interval:g} s: answered 408 and closed",
    ),
    "body": (
        "Request body stalled for {timeout:g} s: answered 408 and closed ({peer})",
        "{count} more request bodies stalled in the last {interval:g} s: "
        "answered 408 and closed",
    ),
    "silent": (
        "Connection closed: no request within {timeout:g} s ({peer})",
        "{count} more connections closed for sending no request in the last "
        "{interval:g} s",
    ),
    "handshake": (
        "TLS handshake not complete within {timeout:g} s: aborted ({peer})",
        "{count} more TLS handshakes not complete in time in the last "
        "{interval:g} s: aborted",
    ),
    "write": (
        "Client took nothing of what waits for it for {timeout:g} s: aborted ({peer})",
        "{count} more clients that took nothing aborted in the last {interval:g} s",
    ),
    "buffer": (
        "WebSocket client read nothing while more than {limit} bytes waited "
        "for it: aborted ({peer})",
        "{count} more WebSocket clients aborted for not reading in the last "
        "{interval:g} s",
    ),
}


class ClientTally:
    """
    What the deadlines and limits of a site ended: plain counts for the
    metrics (see L{gracesvc._metrics.collectors}), and log lines, at most
    one a second for each kind however many clients a flood brings.

    @ivar timeouts: connections closed by a deadline, by kind: C{header}
        (a request head not complete in time: answered 408), C{body} (a
        request body that stopped arriving for the keep-alive timeout:
        answered 408), C{silent} (a new connection that sent nothing in
        time), C{handshake} (a TLS handshake not complete in time),
        C{keepalive} (idle between two requests), C{write} (a client that
        took nothing for the write timeout), C{buffer} (a WebSocket client
        whose unsent messages passed the limit).
    """

    log = Logger()

    def __init__(self, clock: IReactorTime | None = None) -> None:
        """
        @param clock: what the log lines are spaced by; L{None} logs
            nothing.
        """
        self._clock = clock
        self.timeouts: dict[str, int] = {}
        self._summaries: dict[str, LogSummary] = {}

    def timedOut(self, kind: str, **fields: object) -> None:
        """
        One more connection closed by the deadline C{kind}, with the fields
        its log line names (C{peer}, C{timeout} or C{limit}).
        """
        self.timeouts[kind] = self.timeouts.get(kind, 0) + 1
        lines = _LINES.get(kind)
        if lines is None or self._clock is None:
            return
        summary = self._summaries.get(kind)
        if summary is None:
            summary = self._summaries[kind] = LogSummary(self._clock, self.log, *lines)
        summary.event(**fields)


class WriteStall:
    """
    The write timeout of one connection: armed when its transport's buffer
    fills (the transport pauses its producer), disarmed when the buffer has
    emptied.  When it runs out it looks whether the client took anything
    meanwhile (bytes acknowledged, for TCP): if so it starts over, if not
    the connection is stalled.  Where progress cannot be seen (a Unix
    socket) the buffer must have emptied in time.
    """

    def __init__(
        self,
        clock: IReactorTime,
        timeout: float,
        progress: Callable[[], int | None],
        stalled: Callable[[], object],
    ) -> None:
        """
        @param timeout: seconds without progress before C{stalled}.
        @param progress: a count that grows as the client takes bytes, or
            L{None} when it cannot be known.
        @param stalled: called when the client took nothing for
            C{timeout}.
        """
        self._clock = clock
        self.timeout = timeout
        self._progress = progress
        self._stalled = stalled
        self._call: IDelayedCall | None = None
        self._seen: int | None = None

    @property
    def armed(self) -> bool:
        return self._call is not None

    def blocked(self) -> None:
        """
        The transport's buffer is full: the client has C{timeout} to take
        some of it.
        """
        if self._call is None:
            self._seen = self._progress()
            self._call = self._clock.callLater(self.timeout, self._look)

    def unblocked(self) -> None:
        """
        The buffer has emptied.
        """
        cancelCall(self._call)
        self._call = None

    def _look(self) -> None:
        self._call = None
        now = self._progress()
        if now is not None and self._seen is not None and now > self._seen:
            self._seen = now
            self._call = self._clock.callLater(self.timeout, self._look)
            return
        self._stalled()


def acknowledgedBy(transport: object) -> Callable[[], int | None]:
    """
    @return: what L{WriteStall} counts progress with for C{transport}: the
        bytes its peer acknowledged, read from the TCP socket under it
        (TLS included); L{None} on a transport without one.
    """

    def acknowledged() -> int | None:
        sock = socketOf(transport)
        return None if sock is None else bytesAcknowledged(sock)

    return acknowledged


def lingeringClose(
    transport: ITransport, clock: IReactorTime, linger: float = LINGER
) -> IDelayedCall:
    """
    Close C{transport} after what was written to it, so that its client
    reads it: half-close (FIN after the last byte) where the transport can,
    and leave the connection open for C{linger} seconds, for the client to
    close its side; then abort.  Closing at once with bytes of the client
    still unread would make the kernel reset the connection, and the
    client may then lose the answer (Go's C{closeWriteAndWait}).  The
    protocol must go on reading (and dropping) what arrives meanwhile.

    @return: the abort, for the protocol to cancel when the connection is
        lost.
    """
    loseWriteConnection = getattr(transport, "loseWriteConnection", None)
    if loseWriteConnection is not None:
        loseWriteConnection()
    else:
        # TLS: close_notify after the last bytes; its TCP connection closes
        # when the client answers with its own, or at the abort.
        transport.loseConnection()
    abort = getattr(transport, "abortConnection", transport.loseConnection)
    return clock.callLater(linger, abort)


def idleGraceLeft(drain: Drain, lastActivity: float, transport: object) -> float | None:
    """
    During the drain, what is left of an idle connection's grace (the
    drain's C{idleGrace}, from C{lastActivity}): the HTTP/1.1 channels
    close it once that has run out.

    @return: L{None} to close it now (its grace has run out, and no byte of
        its client waits to be read); else the seconds until looking again:
        the rest of the grace, or, if bytes are waiting, a whole grace, once
        the reactor has had the chance to read them.
    """
    wait = lastActivity + drain.idleGrace - drain.clock.seconds()
    if wait <= 0 and not bytesWaiting(transport):
        return None
    return wait if wait > 0 else drain.idleGrace
