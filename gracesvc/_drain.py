# -*- test-case-name: tests.unit.test_drain -*-
"""
The drain: what gracesvc does between the first stop signal and exit.

L{Drain} knows nothing of HTTP.  It holds the listening ports, the open
connections (anything that provides L{IDrainableConnection}) and the
Deferreds the application asked it to wait for, and it walks one timeline,
one L{Phase} after another::

    SERVING
      │ start (the first signal): readiness off, responses say
      │ "Connection: close"
    DELAYING ── only with a drain delay: still accepting; idle connections
      │         close (see L{IDrainableConnection.beginDrain})
      │ drainDelay
    DRAINING ── listeners closed: new connections refused (connections
      │         accepted before that are still served); idle ones close
      │ shutdownTimeout - cutLead
    CUT ─────── unanswered requests get a 503, busy responses are aborted
      │ shutdownTimeout: anything left is aborted
    DONE ────── also as soon as, in DRAINING or CUT, the listeners are
                closed, the last connection has closed and the last tracked
                Deferred has fired; or at once on L{Drain.forceStop}

Completion is event driven: every change that could be the last one
(a connection closing, a tracked Deferred firing, the listeners closing)
checks whether the drain is complete, so the drain ends in the same
reactor iteration as the last connection closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import TypeVar

from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import Attribute, Interface

from ._twisted import acceptPending

_T = TypeVar("_T")

#: How long before the cap the cut happens, at most: the 503s written at
#: the cut need a moment to be flushed before the cap aborts what is left.
MAX_CUT_LEAD = 0.1

#: The default grace for a connection with no request in progress once the
#: drain has begun (see L{IDrainableConnection.beginDrain}).
DEFAULT_IDLE_GRACE = 0.5


@dataclass(frozen=True)
class DrainPolicy:
    """
    The times that shape a drain, checked once.

    @ivar shutdownTimeout: the cap on the whole drain, from the signal to
        done, in seconds.
    @ivar drainDelay: how long to keep accepting connections after the
        signal, so that load balancers notice the readiness change before the
        port closes.  Part of the shutdown, so less than C{shutdownTimeout}.
    @ivar idleGrace: how long a connection with no request in progress may
        stay open once the drain has begun, counted from its last activity.
    """

    shutdownTimeout: float = 5.0
    drainDelay: float = 0.0
    idleGrace: float = DEFAULT_IDLE_GRACE

    def __post_init__(self) -> None:
        """
        @raise ValueError: a value out of range, with a message for a user.
        """
        if not self.shutdownTimeout > 0:
            raise ValueError(
                f"the shutdown timeout must be > 0 seconds, got "
                f"{self.shutdownTimeout!r}"
            )
        if not 0 <= self.drainDelay < self.shutdownTimeout:
            raise ValueError(
                f"the drain delay ({self.drainDelay:g}s) must be >= 0 and less "
                f"than the shutdown timeout ({self.shutdownTimeout:g}s): the "
                f"delay is part of the shutdown"
            )
        if not self.idleGrace >= 0:
            raise ValueError(f"the idle grace must be >= 0, got {self.idleGrace!r}")

    @property
    def cutLead(self) -> float:
        """
        How long before the cap the cut comes.
        """
        return min(MAX_CUT_LEAD, self.shutdownTimeout / 10)

    @property
    def retryAfter(self) -> int:
        """
        The C{Retry-After} a request cut at the cap is answered with, in
        seconds: by then a replacement should be serving.
        """
        return max(1, round(self.shutdownTimeout))


class Phase(Enum):
    """
    Where a L{Drain} is on its timeline; see the module docstring.  Phases
    only ever move forward.
    """

    SERVING = 0
    DELAYING = 1
    DRAINING = 2
    CUT = 3
    DONE = 4


class IDrainableConnection(Interface):
    """
    A connection the drain can wait for and, at the end, cut: an HTTP/1.1
    channel, or any other protocol's connection.

    The connection tells the drain when it opens and closes
    (L{Drain.connectionOpened}, L{Drain.connectionClosed}) and when it
    completes or cuts a request (L{Drain.requestCompleted},
    L{Drain.requestCut}).
    """

    inFlight = Attribute(
        "The number of requests (or streams) being answered on this "
        "connection right now: what the drain waits for."
    )

    state = Attribute(
        "A short word for what the connection is doing, for metrics: "
        "C{idle}, C{receiving}, C{busy} or C{closing} for HTTP/1.1."
    )

    def beginDrain() -> None:
        """
        The listeners are closed (or the drain delay is running): from now on
        the connection closes once it has no request in progress and has been
        quiet for the drain's idle grace.  (Responses say C{Connection:
        close} from the moment L{Drain.draining} is set, before this.)
        """

    def cut(retryAfter: int) -> int:
        """
        The cap is near: answer the requests whose response has not started
        with a 503, abort the responses in progress, close the connection.

        @param retryAfter: the C{Retry-After} value for the 503, in seconds.
        @return: the number of requests cut (answered 503 or aborted).
        """

    def abort() -> None:
        """
        Close the connection at once, whatever it is doing.
        """


class Drain:
    """
    The drain of one service: it tracks listeners, connections and
    background work, and stops them in order when L{start} is called.

    @ivar phase: where the drain is on its timeline.
    @ivar policy: its times.
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        shutdownTimeout: float = 5.0,
        drainDelay: float = 0.0,
        idleGrace: float = DEFAULT_IDLE_GRACE,
        *,
        policy: DrainPolicy | None = None,
    ) -> None:
        """
        @param clock: the source of time and delayed calls.
        @param shutdownTimeout: see L{DrainPolicy.shutdownTimeout}.
        @param drainDelay: see L{DrainPolicy.drainDelay}.
        @param idleGrace: see L{DrainPolicy.idleGrace}.
        @param policy: all three at once, instead of the three above.
        @raise ValueError: the times do not fit together.
        """
        self.clock = clock
        self.policy = (
            DrainPolicy(shutdownTimeout, drainDelay, idleGrace)
            if policy is None
            else policy
        )
        self.phase = Phase.SERVING
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
        self._listenersClosing = 0
        self._connections: set[IDrainableConnection] = set()
        self._tracked: set[Deferred[object]] = set()
        self._waiters: list[Deferred[None]] = []
        self._calls: list[IDelayedCall] = []

    @property
    def shutdownTimeout(self) -> float:
        return self.policy.shutdownTimeout

    @property
    def drainDelay(self) -> float:
        return self.policy.drainDelay

    @property
    def idleGrace(self) -> float:
        return self.policy.idleGrace

    @property
    def draining(self) -> bool:
        """
        Whether the drain has begun.  Readiness checks and connections
        consult it.
        """
        return self.phase is not Phase.SERVING

    @property
    def finished(self) -> bool:
        """
        Whether the drain is done.
        """
        return self.phase is Phase.DONE

    @property
    def cutting(self) -> bool:
        """
        Whether the cut has come: a request read from now on is answered
        with a 503 at once (see L{answerCut}).
        """
        return self.phase.value >= Phase.CUT.value

    @property
    def listenersClosed(self) -> bool:
        """
        Whether the drain has closed every listener it was given.
        """
        return (
            self.phase.value >= Phase.DRAINING.value
            and not self._listeners
            and not self._listenersClosing
        )

    def answerCut(self) -> bool:
        """
        A request was read after the cut: should it get its 503?

        @return: C{True} if there is time for one; C{False} if the cap has
            come, and the connection should be aborted rather than answered.
        """
        assert self.capAt is not None
        return self.clock.seconds() < self.capAt

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
        if self.phase is Phase.DELAYING or self.listenersClosed:
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
        if self.phase is not Phase.SERVING:
            self.completedDuringDrain += 1

    def requestCut(self) -> None:
        """
        A request was answered with a 503 or aborted by the cut, outside of
        L{IDrainableConnection.cut}'s count.
        """
        self.requestsCut += 1

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
        The number of requests (or streams) being answered right now.
        """
        return sum(c.inFlight for c in self._connections)

    def connectionStates(self) -> dict[str, int]:
        """
        @return: the number of open connections in each state (see
            L{IDrainableConnection.state}).
        """
        states: dict[str, int] = {}
        for c in self._connections:
            states[c.state] = states.get(c.state, 0) + 1
        return states

    @property
    def pendingWork(self) -> int:
        """
        The number of tracked Deferreds that have not fired.
        """
        return len(self._tracked)

    # The timeline: inputs.

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
        if self.phase is not Phase.SERVING:
            return self.whenDone()
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
        cutIn = self.shutdownTimeout - self.policy.cutLead - late
        self._later(max(0.0, cutIn), self._cutDue)
        self._later(max(0.0, self.shutdownTimeout - late), self._capReached)
        self._later(1.0, self._progress)
        done = self.whenDone()
        if self.drainDelay > late:
            self._enter(Phase.DELAYING)
            # The listeners close before the cut, whatever the delay.
            self._later(min(self.drainDelay - late, cutIn), self._delayElapsed)
        else:
            self._enter(Phase.DRAINING)
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
        if self.phase is Phase.DONE:
            return
        if self.phase is Phase.SERVING:
            self.start(reason, signal)
            if self.finished:
                return
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
        if self.phase is Phase.DELAYING:
            self._listeners, listeners = [], self._listeners
            for port in listeners:
                port.stopListening()
        self._abortAll()
        self._enter(Phase.DONE, "forced")

    def _delayElapsed(self) -> None:
        if self.phase is Phase.DELAYING:
            self._enter(Phase.DRAINING)

    def _cutDue(self) -> None:
        if self.phase in (Phase.DELAYING, Phase.DRAINING):
            if self.phase is Phase.DELAYING:
                self._enter(Phase.DRAINING)
            self._enter(Phase.CUT)

    def _capReached(self) -> None:
        self._cutDue()
        if self.phase is Phase.CUT:
            self._abortAll()
            self._enter(Phase.DONE, "cap")

    def _listenersDone(self) -> None:
        """
        Every listener closed.  Late, after a forced stop, it is a no-op: the
        log ends with C{done}.
        """
        if self.phase is Phase.DONE:
            return
        self._beginDrainOnConnections()
        self.log.info(
            "Listeners closed: {inFlight} requests in flight, "
            "{connections} connections open",
            inFlight=self.inFlight,
            connections=self.connections,
            step="listeners_closed",
        )
        self._maybeFinish()

    def _maybeFinish(self) -> None:
        if (
            self.phase in (Phase.DRAINING, Phase.CUT)
            and self.listenersClosed
            and not self._connections
            and not self._tracked
        ):
            self._enter(Phase.DONE, "drained")

    # The timeline: what entering each phase does.

    def _enter(self, phase: Phase, outcome: str = "") -> None:
        """
        Move to C{phase}, which must be later than the current one, and do
        what it begins with.

        @param outcome: with L{Phase.DONE}, how the drain ended.
        """
        assert phase.value > self.phase.value, (self.phase, phase)
        self.phase = phase
        if phase is Phase.DELAYING:
            self._beginDrainOnConnections()
        elif phase is Phase.DRAINING:
            # Without a drain delay, new connections are refused first and
            # idle ones closed only once the listeners are: a port closes its
            # socket on the reactor's next turn, and closing thousands of
            # idle connections in this turn delays that one (by about 0.3 s
            # for 5,000).  Responses written meanwhile already say
            # Connection: close: channels look at draining.
            self._closeListeners()
        elif phase is Phase.CUT:
            self._cut()
        elif phase is Phase.DONE:
            self._finish(outcome)

    def _beginDrainOnConnections(self) -> None:
        self._forEach(lambda connection: connection.beginDrain())

    def _closeListeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        if not listeners:
            self._beginDrainOnConnections()
            self._maybeFinish()
            return
        self._listenersClosing += 1

        def closed(_: object) -> None:
            self._listenersClosing -= 1
            self._listenersDone()

        for port in listeners:
            acceptPending(port)
        gatherResults(
            [maybeDeferred(port.stopListening) for port in listeners],
            consumeErrors=True,
        ).addErrback(
            lambda f: self.log.failure("closing a listener failed", failure=f)
        ).addCallback(closed)

    def _cut(self) -> None:
        retryAfter = self.policy.retryAfter
        cut = sum(self._forEach(lambda c: c.cut(retryAfter), default=0))
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

    def _abortAll(self) -> None:
        self._forEach(lambda connection: connection.abort())
        self._connections.clear()
        self.abandoned += len(self._tracked)
        self._tracked.clear()

    def _finish(self, outcome: str) -> None:
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

    # Helpers.

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

    def _later(self, delay: float, f: Callable[[], object]) -> None:
        self._calls.append(self.clock.callLater(delay, f))

    def _progress(self) -> None:
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
