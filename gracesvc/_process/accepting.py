# -*- test-case-name: tests.unit.process.test_accepting -*-
"""
Accepting when the process runs out of file descriptors (EMFILE) or the
machine out of memory for sockets.

Twisted's ports keep one descriptor in reserve: when C{accept()} fails
with EMFILE, they release it, accept each waiting client and close it at
once (a fast failure, which a load balancer retries elsewhere), and take
it back, logging three lines a client.  Without the reserve (it could not
be had back) or for another error, C{accept()} fails and the socket stays
readable: the reactor calls the port again at once, and spins.

L{AcceptGuard} watches one port's accept errors.  On the first of a burst
it stops accepting for L{PAUSE} seconds (the clients wait in the kernel's
queue meanwhile, as nginx pauses its accept for 500 ms), then tries again;
serving resumes by itself once descriptors free up.  Their log lines become
one line, then at most one a second saying how many connections were
turned away, and each is counted (L{AcceptTally}).  L{guardAccepts}
installs it on a listening port.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import ILogObserver, Logger, LogLevel, globalLogPublisher
from zope.interface import implementer

from gracesvc._core.summaries import LogSummary
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import (
    ACCEPT_FAILED,
    EMFILE_CLOSED,
    EMFILE_RELEASING,
    EMFILE_RERESERVING,
    RESERVE_FAILED,
    observeAcceptErrors,
    observeReserveErrors,
)

#: Seconds a port stops accepting after an accept error.
PAUSE = 0.1


@dataclass
class AcceptTally:
    """
    Connections turned away at the accept, for the metrics.

    @ivar refused: by error (C{EMFILE}, C{ENFILE}, C{ENOBUFS}, C{ENOMEM}):
        connections accepted and closed at once (EMFILE, with the reserved
        descriptor), or accepts that failed (the client left queued).
    """

    refused: dict[str, int] = field(default_factory=dict)

    def add(self, error: str) -> None:
        self.refused[error] = self.refused.get(error, 0) + 1


def openFilesLimit() -> int:
    """
    @return: the process's limit on open descriptors (the soft
        C{RLIMIT_NOFILE}).  Reading it opens nothing.
    """
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def raiseOpenFilesLimit(reactor: object) -> int:
    """
    Raise the process's limit on open descriptors to the most it may have
    (the soft C{RLIMIT_NOFILE} to the hard one), as Go does since 1.19:
    the soft limit (often 1,024) is there for programs that cannot handle
    more, which a server can.  Not with the select reactor, which cannot
    watch descriptors above C{FD_SETSIZE}.

    @return: the limit now.
    """
    from twisted.internet.selectreactor import SelectReactor

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if isinstance(reactor, SelectReactor) or hard == resource.RLIM_INFINITY:
        return soft
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (OSError, ValueError):
            return soft
        return hard
    return soft


def defaultMaxConnections(openFiles: int) -> int:
    """
    @param openFiles: the process's limit on open descriptors.
    @return: the default connection limit: the descriptor limit less a
        fifth (at least 64) kept for the rest (the listeners, the log, the
        application's own files and pools, and the connections being told
        "too many", up to a tenth of the limit), so that the limit is met,
        and answered, before the descriptors run out.
    """
    return max(1, openFiles - max(64, openFiles // 5))


class AcceptGate:
    """
    Whether one listening port accepts: it stops while any reason holds
    (out of descriptors, the connection limit answering as many as it
    may), and goes on when the last one is gone, unless it closed
    meanwhile.  Connections that arrive meanwhile wait in the kernel's
    queue.
    """

    def __init__(self, port: Any) -> None:
        """
        @param port: a listening port with C{stopReading} and
            C{startReading}, as Twisted's are.
        """
        self.port = port
        self.reasons: set[str] = set()

    def close(self, reason: str) -> None:
        if not self.reasons:
            self.port.stopReading()
        self.reasons.add(reason)

    def open(self, reason: str) -> None:
        if reason not in self.reasons:
            return
        self.reasons.discard(reason)
        port = self.port
        if (
            not self.reasons
            and getattr(port, "connected", False)
            and not getattr(port, "disconnecting", False)
        ):
            port.startReading()


@implementer(ILogObserver)
class AcceptGuard:
    """
    The accept errors of one listening port: what its C{doRead} logs
    about them comes here (see
    L{gracesvc._pins.twisted.observeAcceptErrors}).  Anything else it logs
    goes on to the log.

    Nothing here opens a file: it runs while the process has no descriptor
    to spare.
    """

    log = Logger()

    def __init__(
        self,
        port: Any,
        clock: IReactorTime,
        description: str,
        tally: AcceptTally,
        pause: float = PAUSE,
    ) -> None:
        """
        @param port: a listening port with C{stopReading} and
            C{startReading}, as Twisted's are.
        @param description: what the log calls it.
        """
        self.port = port
        self.gate = AcceptGate(port)
        self.clock = clock
        self.description = description
        self.tally = tally
        self.pause = pause
        self._resumeCall: IDelayedCall | None = None
        self._summary = LogSummary(
            clock,
            self.log,
            "Cannot accept on {description}: {error} (open files limit "
            "{limit}); new connections are closed at once or wait, and "
            "accepting pauses {pause:g} s at a time until it can go on",
            "{count} more connections turned away on {description} in the "
            "last {interval:g} s: {error} (open files limit {limit})",
            level=LogLevel.warn,
        )

    def __call__(self, event: dict[str, Any]) -> None:
        logFormat = event.get("log_format")
        if logFormat == EMFILE_RELEASING:
            self._pauseAccepting()
        elif logFormat == EMFILE_RERESERVING:
            pass
        elif logFormat == EMFILE_CLOSED:
            self._refused("EMFILE")
        elif logFormat == ACCEPT_FAILED:
            self._refused(str(event.get("acceptError", "?")))
            self._pauseAccepting()
        else:
            globalLogPublisher(event)

    def _refused(self, error: str) -> None:
        self.tally.add(error)
        self._summary.event(
            description=self.description,
            error=error,
            limit=openFilesLimit(),
            pause=self.pause,
        )

    def _pauseAccepting(self) -> None:
        if self._resumeCall is not None:
            return
        self.gate.close("accept error")
        self._resumeCall = self.clock.callLater(self.pause, self._resumeAccepting)

    def _resumeAccepting(self) -> None:
        self._resumeCall = None
        self.gate.open("accept error")

    def stop(self) -> None:
        """
        No more pausing: the port closes.
        """
        cancelCall(self._resumeCall)
        self._resumeCall = None


@implementer(ILogObserver)
class _ReserveErrors:
    """
    What Twisted's reserved descriptor logs when it cannot be had back: a
    warning, not a traceback; once a burst, as the guards' lines are.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime) -> None:
        self._summary = LogSummary(
            clock,
            self.log,
            "Out of file descriptors: Twisted's reserved descriptor could not "
            "be had back (open files limit {limit})",
            "{count} more failures to take back the reserved descriptor in the "
            "last {interval:g} s",
            level=LogLevel.warn,
        )

    def __call__(self, event: dict[str, Any]) -> None:
        if event.get("log_format") in RESERVE_FAILED:
            self._summary.event(limit=openFilesLimit())
        else:
            globalLogPublisher(event)


def watchReservedDescriptor(clock: IReactorTime) -> None:
    """
    Log Twisted's reserved descriptor's failures to be had back as
    warnings, once a burst, instead of a traceback each (the process
    serves on; its ports' guards pause accepting).  For the whole process:
    there is one reserve for every port.
    """
    observeReserveErrors(_ReserveErrors(clock))


def guardAccepts(
    port: IListeningPort, clock: IReactorTime, description: str, tally: AcceptTally
) -> AcceptGuard | None:
    """
    Guard C{port}'s accepts with an L{AcceptGuard}.

    @return: the guard, or L{None} for a port that is not one of Twisted's
        TCP or Unix ports.
    """
    guard = AcceptGuard(port, clock, description, tally)
    if not observeAcceptErrors(port, guard):
        return None
    return guard
