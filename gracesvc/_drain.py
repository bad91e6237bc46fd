"""
The drain: what gracesvc does between the first stop signal and exit.

L{Drain} knows nothing of HTTP.  It holds the listening ports, the open
connections (anything that provides L{IDrainableConnection}) and the
Deferreds the application asked it to wait for, and it runs the shutdown
timeline::

    signal ── readiness off, responses say "Connection: close",
      │       idle connections closed (see L{IDrainableConnection.beginDrain})
      ├─ drainDelay ── listeners closed: new connections refused
      │                (connections accepted before that are still served)
      ├─ last connection closed and last tracked Deferred fired ── done
      └─ shutdownTimeout - cutLead ── cut: unanswered requests get a 503,
                                       busy responses are aborted
         shutdownTimeout ── anything left is aborted; done

Completion is event driven: every change that could be the last one
(a connection closing, a tracked Deferred firing, the listeners closing)
checks whether the drain is complete, so the drain ends in the same
reactor iteration as the last connection closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, TypeVar

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

_T = TypeVar("_T")

#: How long before the cap the cut happens, at most: the 503s written at
#: the cut need a moment to be flushed before the cap aborts what is left.
MAX_CUT_LEAD = 0.1

#: The default grace for a connection with no request in progress once the
#: drain has begun (see L{IDrainableConnection.beginDrain}).
DEFAULT_IDLE_GRACE = 0.5


class IDrainableConnection(Protocol):
    """
    A connection the drain can wait for and, at the end, cut.

    The connection tells the drain when it opens and closes
    (L{Drain.connectionOpened}, L{Drain.connectionClosed}) and when it
    completes a request (L{Drain.requestCompleted}).
    """

    def beginDrain(self) -> None:
        """
        The listeners are closed (or the drain delay is running): from now on
        the connection closes once it has no request in progress and has been
        quiet for the drain's idle grace.  (Responses say C{Connection:
        close} from the moment L{Drain.draining} is set, before this.)
        """

    def isBusy(self) -> bool:
        """
        @return: whether a request is being answered on this connection.
        """

    def cutAtCap(self, retryAfter: int) -> int:
        """
        The cap is near: answer the request whose response has not started
        with a 503, abort a response in progress, close the connection.

        @param retryAfter: the C{Retry-After} value for the 503, in seconds.
        @return: the number of requests cut (answered 503 or aborted).
        """

    def abort(self) -> None:
        """
        Close the connection at once, whatever it is doing.
        """


class Drain:
    """
    The drain of one service: it tracks listeners, connections and
    background work, and stops them in order when L{start} is called.

    @ivar draining: whether the drain has begun.  Readiness checks and
        connections consult it.
    @ivar idleGrace: how long a connection with no request in progress may
        stay open once the drain has begun, counted from its last activity.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        shutdownTimeout: float = 5.0,
        drainDelay: float = 0.0,
        idleGrace: float = DEFAULT_IDLE_GRACE,
    ) -> None:
        """
        @param clock: the source of time and delayed calls.
        @param shutdownTimeout: the cap on the whole drain, from L{start} to
            done, in seconds.
        @param drainDelay: how long to keep accepting connections after
            L{start}, so that load balancers notice the readiness change
            before the port closes.  Must be less than C{shutdownTimeout}.
        @param idleGrace: see L{idleGrace}.
        """
        if not shutdownTimeout > 0:
            raise ValueError(f"shutdownTimeout must be > 0, got {shutdownTimeout!r}")
        if not 0 <= drainDelay < shutdownTimeout:
            raise ValueError(
                f"drainDelay must be >= 0 and < shutdownTimeout "
                f"({shutdownTimeout!r}), got {drainDelay!r}"
            )
        self.clock = clock
        self.shutdownTimeout = shutdownTimeout
        self.drainDelay = drainDelay
        self.idleGrace = idleGrace
        self.cutLead = min(MAX_CUT_LEAD, shutdownTimeout / 10)

        self.draining = False
        self.finished = False
        self.listenersClosed = False
        self.startedAt: float | None = None
        #: when the cap is reached: C{startedAt + shutdownTimeout}.
        self.capAt: float | None = None
        self.finishedAt: float | None = None

        #: requests completed after the drain began.
        self.completedDuringDrain = 0
        #: requests answered with a 503 or aborted at the cap or on a
        #: second signal.
        self.requestsCut = 0
        #: tracked Deferreds still pending when the drain gave up on them.
        self.abandoned = 0

        self._listeners: list[IListeningPort] = []
        self._connections: set[IDrainableConnection] = set()
        self._tracked: set[Deferred[object]] = set()
        self._waiters: list[Deferred[None]] = []
        self._calls: list[IDelayedCall] = []
        self._cutDone = False
        self._connectionsDraining = False

    # What the drain watches.

    def addListener(self, port: IListeningPort) -> None:
        """
        Close C{port} when the drain reaches the end of its drain delay.
        """
        self._listeners.append(port)

    def connectionOpened(self, connection: IDrainableConnection) -> None:
        """
        A connection was accepted; the drain waits for it to close.
        """
        self._connections.add(connection)
        if self._connectionsDraining:
            connection.beginDrain()

    def connectionClosed(self, connection: IDrainableConnection) -> None:
        """
        A connection closed after its last bytes were flushed, or was
        aborted.
        """
        self._connections.discard(connection)
        self._maybeFinish()

    def requestCompleted(self) -> None:
        """
        A response was completely written.
        """
        if self.draining:
            self.completedDuringDrain += 1

    def track(self, work: Deferred[_T]) -> Deferred[_T]:
        """
        Keep the process alive until C{work} fires, within the cap.

        A failure of C{work} is logged and does not stop the drain.  The
        result seen by callbacks added to C{work} after this call is
        unchanged.

        @param work: background work that must finish before exit.
        @return: C{work}.
        """
        if work.called:
            return work
        tracked: Deferred[object] = work  # type: ignore[assignment]
        self._tracked.add(tracked)

        def untrack(result: _T) -> _T:
            self._tracked.discard(tracked)
            if isinstance(result, Failure):
                self.log.failure("tracked work failed during shutdown", failure=result)
            self._maybeFinish()
            return result

        return work.addBoth(untrack)

    @property
    def connections(self) -> int:
        """
        The number of open connections.
        """
        return len(self._connections)

    @property
    def inFlight(self) -> int:
        """
        The number of requests being answered right now.
        """
        return sum(1 for c in self._connections if c.isBusy())

    @property
    def pendingWork(self) -> int:
        """
        The number of tracked Deferreds that have not fired.
        """
        return len(self._tracked)

    # The timeline.

    def whenDone(self) -> Deferred[None]:
        """
        @return: a Deferred that fires with L{None} when the drain is done.
        """
        d: Deferred[None] = Deferred()
        if self.finished:
            d.callback(None)
        else:
            self._waiters.append(d)
        return d

    def start(
        self,
        reason: str = "stop requested",
        signal: str | None = None,
        startedAt: float | None = None,
    ) -> Deferred[None]:
        """
        Begin the drain; calling it again only returns another L{whenDone}.

        @param reason: why, for the log.
        @param signal: the name of the signal that started it, if one did.
        @param startedAt: when the stop was asked for, if before now: a
            signal that arrives while the reactor is busy reaches the drain
            late, and the cap still counts from the signal.
        @return: L{whenDone}.
        """
        if self.draining:
            return self.whenDone()
        self.draining = True
        now = self.clock.seconds()
        self.startedAt = now if startedAt is None else min(startedAt, now)
        self.capAt = self.startedAt + self.shutdownTimeout
        late = now - self.startedAt
        self.log.info(
            "Shutdown Server ... ({reason}): {inFlight} requests in flight, "
            "{connections} connections open, exit at the latest in "
            "{shutdownTimeout}s",
            reason=reason,
            signal=signal,
            inFlight=self.inFlight,
            connections=self.connections,
            pendingWork=self.pendingWork,
            shutdownTimeout=self.shutdownTimeout,
            drainDelay=self.drainDelay,
            step="start",
        )
        self._later(max(0.0, self.shutdownTimeout - self.cutLead - late), self._cut)
        self._later(max(0.0, self.shutdownTimeout - late), self._atCap)
        self._later(1.0, self._progress)
        if self.drainDelay > late:
            self._beginDrainOnConnections()
            self._later(self.drainDelay - late, self._closeListeners)
        else:
            # Refuse new connections first, and only then close the idle
            # ones: a port closes its socket on the reactor's next turn, and
            # closing thousands of idle connections in this turn delays that
            # one (by about 0.3 s for 5,000).  Responses written meanwhile
            # already say Connection: close: channels look at draining.
            self._closeListeners()
        done = self.whenDone()
        self._maybeFinish()
        return done

    def forceStop(
        self, reason: str = "second signal", signal: str | None = None
    ) -> None:
        """
        Stop now: abort every connection and give up on tracked work.

        @param reason: why, for the log.
        @param signal: the name of the signal that forced it, if one did.
        """
        if self.finished:
            return
        if not self.draining:
            self.start(reason, signal)
        busy = self.inFlight
        self.requestsCut += busy
        self.log.warn(
            "Forced stop ({reason}): cutting {inFlight} requests in flight, "
            "aborting {connections} connections, abandoning {pendingWork} "
            "tracked tasks",
            reason=reason,
            signal=signal,
            inFlight=busy,
            connections=self.connections,
            pendingWork=self.pendingWork,
            step="forced",
        )
        self._closeListeners()
        self._abortAll()
        self._finish("forced")

    def _forEach(
        self, f: Callable[[IDrainableConnection], _T], default: _T | None = None
    ) -> list[_T]:
        """
        Call C{f} on every connection: one that raises is logged (and counts
        as C{default}), and the drain goes on with the others.
        """
        results = []
        for connection in list(self._connections):
            try:
                results.append(f(connection))
            except Exception:
                self.log.failure(
                    "drain step failed on {connection}", connection=connection
                )
                if default is not None:
                    results.append(default)
        return results

    def _beginDrainOnConnections(self) -> None:
        if self._connectionsDraining:
            return
        self._connectionsDraining = True
        self._forEach(lambda connection: connection.beginDrain())

    def _later(self, delay: float, f: Callable[[], object]) -> None:
        self._calls.append(self.clock.callLater(delay, f))

    def _closeListeners(self) -> None:
        if not self._listeners:
            self.listenersClosed = True
            self._beginDrainOnConnections()
            return
        listeners, self._listeners = self._listeners, []

        def closed(_: object) -> None:
            self.listenersClosed = True
            self._beginDrainOnConnections()
            self.log.info(
                "Listeners closed: {inFlight} requests in flight, "
                "{connections} connections open",
                inFlight=self.inFlight,
                connections=self.connections,
                step="listeners_closed",
            )
            self._maybeFinish()

        for port in listeners:
            _acceptPending(port)
        gatherResults(
            [maybeDeferred(port.stopListening) for port in listeners],
            consumeErrors=True,
        ).addErrback(
            lambda f: self.log.failure("closing a listener failed", failure=f)
        ).addCallback(closed)

    def _progress(self) -> None:
        if self.finished:
            return
        assert self.startedAt is not None
        self.log.info(
            "Draining: {inFlight} requests in flight, {connections} "
            "connections open, {pendingWork} tracked tasks, {remaining:.1f}s "
            "to the cap",
            inFlight=self.inFlight,
            connections=self.connections,
            pendingWork=self.pendingWork,
            remaining=self.startedAt + self.shutdownTimeout - self.clock.seconds(),
            step="progress",
        )
        self._later(1.0, self._progress)

    def _cut(self) -> None:
        self._cutDone = True
        retryAfter = max(1, round(self.shutdownTimeout))
        cut = sum(self._forEach(lambda c: c.cutAtCap(retryAfter), default=0))
        self.requestsCut += cut
        self.abandoned = len(self._tracked)
        self._tracked.clear()
        self.log.warn(
            "Shutdown cap reached: {cut} requests cut, {abandoned} tracked "
            "tasks abandoned",
            cut=cut,
            abandoned=self.abandoned,
            step="cap",
        )
        self._maybeFinish()

    def _atCap(self) -> None:
        if not self._cutDone:
            self._cut()
        self._abortAll()
        self._finish("cap")

    def _abortAll(self) -> None:
        self._forEach(lambda connection: connection.abort())
        self._connections.clear()
        self.abandoned += len(self._tracked)
        self._tracked.clear()

    def _maybeFinish(self) -> None:
        if (
            self.draining
            and not self.finished
            and self.listenersClosed
            and not self._connections
            and not self._tracked
        ):
            self._finish("drained")

    def _finish(self, outcome: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.finishedAt = self.clock.seconds()
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls = []
        assert self.startedAt is not None
        self.log.info(
            "Server exiting ({outcome}): {completed} requests completed during "
            "the drain, {cut} cut, {abandoned} tracked tasks abandoned, drain "
            "took {duration:.3f}s",
            outcome=outcome,
            completed=self.completedDuringDrain,
            cut=self.requestsCut,
            abandoned=self.abandoned,
            duration=self.finishedAt - self.startedAt,
            step="done",
        )
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)


def _acceptPending(port: IListeningPort) -> None:
    """
    Accept the connections waiting in C{port}'s kernel accept queue.

    Closing a listening socket resets the connections still queued in it:
    their clients completed the handshake and may have sent a request.
    Accepting them first makes them ordinary connections of the drain,
    served if a request arrives within the idle grace.
    """
    doRead = getattr(port, "doRead", None)
    if doRead is not None and getattr(port, "connected", False):
        doRead()
