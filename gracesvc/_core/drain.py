# -*- test-case-name: tests.unit.core.test_drain -*-
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
      │         (shutdownTimeout - cleanupBudget - cutLead)
    CLEANUP ─── as soon as, in DRAINING or CUT, the listeners are closed,
      │         the last connection has closed and the last tracked Deferred
      │         has fired: the cleanup hooks run, last added first, one
      │         after another, within the cleanup budget
    DONE ────── when the last cleanup hook is done; at shutdownTimeout
                whatever is left is aborted or abandoned; at once on
                L{Drain.forceStop}, which skips the cleanup

Applications take part through hooks (L{Drain.addHook}): C{draining} hooks
run at the signal, C{goingAway} hooks when the listeners have closed (the
moment for long-lived connections to say goodbye, so that their clients
reconnect elsewhere), both waited for until the cut; C{cleanup} hooks run
once nothing is left to answer (close pools here).  A long response
subscribes with L{Drain.whenGoingAway} to be told when to wrap up, and
counts how it ended in L{Drain.longLived} (a L{LongLivedTally}: by kind,
clean, timed out or cut), which the metrics and the last log lines read.

The drain is made of pieces, each in a module of its own:
L{gracesvc._core.policy} holds its times and phases,
L{gracesvc._core.connections} the connections it waits for,
L{gracesvc._core.hooks} what the application asked it to call, and
L{gracesvc._core.tally} its counts and its last log lines.  This module
walks the timeline and is what applications and connections talk to.

Completion is event driven: every change that could be the last one
(a connection closing, a tracked Deferred firing, the listeners closing)
checks whether the drain is complete, so the drain ends in the same
reactor iteration as the last connection closes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.internet.defer import (
    Deferred,
    gatherResults,
    maybeDeferred,
)
from twisted.internet.interfaces import IDelayedCall, IListeningPort, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from gracesvc._core.connections import ConnectionSet, IDrainableConnection
from gracesvc._core.hooks import Hooks
from gracesvc._core.policy import (
    DrainPolicy,
    HookPhase,
    Phase,
)
from gracesvc._core.tally import (
    DrainTally,
)
from gracesvc._core.timers import cancelCall

_T = TypeVar("_T")


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
        shutdownTimeout: float | None = None,
        drainDelay: float | None = None,
        idleGrace: float | None = None,
        *,
        policy: DrainPolicy | None = None,
        cleanupBudget: float | None = None,
    ) -> None:
        """
        Make a drain from its L{DrainPolicy}, or from the times of one: a
        time left out is the policy's default.

        @param clock: the source of time and delayed calls.
        @param shutdownTimeout: see L{DrainPolicy.shutdownTimeout}.
        @param drainDelay: see L{DrainPolicy.drainDelay}.
        @param idleGrace: see L{DrainPolicy.idleGrace}.
        @param cleanupBudget: see L{DrainPolicy.cleanupBudget}.
        @param policy: all the times at once, instead of the four above.
        @raise ValueError: the times do not fit together.
        @raise TypeError: both a policy and times were given.
        """
        times = {
            name: value
            for name, value in (
                ("shutdownTimeout", shutdownTimeout),
                ("drainDelay", drainDelay),
                ("idleGrace", idleGrace),
                ("cleanupBudget", cleanupBudget),
            )
            if value is not None
        }
        if policy is None:
            policy = DrainPolicy(**times)
        elif times:
            raise TypeError(
                f"a drain takes a policy or its times, not both: got a policy "
                f"and {', '.join(times)}"
            )
        self.clock = clock
        self.policy = policy
        self.phase = Phase.SERVING
        #: Whether the drain has begun (the phase is past SERVING): readiness
        #: checks consult it, and connections on every response.  Kept as a
        #: plain attribute by L{_enter}, not a property: it is read on the
        #: per-request path.
        self.draining = False
        #: Whether the cut has come (the phase is CUT or later): a request
        #: read from now on is answered with a 503 at once (see
        #: L{answerCut}).  Kept by L{_enter}, as L{draining} is.
        self.cutting = False
        self.startedAt: float | None = None
        #: when the cap is reached: C{startedAt + shutdownTimeout}.
        self.capAt: float | None = None
        self.finishedAt: float | None = None

        #: what the drain counts, for the metrics and its last log lines.
        self.tally = DrainTally()
        #: how the long-lived connections told to go away ended: the
        #: tally's, a plain attribute for the connections that count in it.
        self.longLived = self.tally.longLived

        self._listeners: list[IListeningPort] = []
        self._listenersClosing = 0
        self._connections = ConnectionSet()
        self._tracked: set[Deferred[object]] = set()
        self._waiters: list[Deferred[None]] = []
        self._calls: list[IDelayedCall] = []
        self._hooks = Hooks()
        self._stopCleanup: Callable[[], None] | None = None
        self._cutAt: float | None = None
        self._keepDrainDelay = True

    @property
    def shutdownTimeout(self) -> float:
        """
        See L{DrainPolicy.shutdownTimeout}.
        """
        return self.policy.shutdownTimeout

    @property
    def drainDelay(self) -> float:
        """
        This drain's delay: the policy's, or 0 if L{start} was told not to
        keep it.
        """
        return self.policy.drainDelay if self._keepDrainDelay else 0.0

    @property
    def idleGrace(self) -> float:
        """
        See L{DrainPolicy.idleGrace}.
        """
        return self.policy.idleGrace

    @property
    def completedDuringDrain(self) -> int:
        """
        See L{DrainTally.completedDuringDrain}.
        """
        return self.tally.completedDuringDrain

    @property
    def requestsCut(self) -> int:
        """
        See L{DrainTally.requestsCut}.
        """
        return self.tally.requestsCut

    @property
    def abandoned(self) -> int:
        """
        See L{DrainTally.abandoned}.
        """
        return self.tally.abandoned

    @property
    def finished(self) -> bool:
        """
        Whether the drain is done.
        """
        return self.phase is Phase.DONE

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

    @property
    def goneAway(self) -> bool:
        """
        Whether the listeners have closed and long-lived connections were
        told to wrap up (see L{whenGoingAway}).
        """
        return self.phase is not Phase.DONE and self.listenersClosed

    @property
    def deadline(self) -> float | None:
        """
        When the cut comes, on the drain's clock: what is still unanswered
        then gets a 503.  L{None} before the drain starts.
        """
        if self.startedAt is None:
            return None
        return self.startedAt + self.policy.cutAfter

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
            self.tally.completedDuringDrain += 1

    def requestCut(self) -> None:
        """
        A request was answered with a 503 or aborted by the cut, outside of
        L{IDrainableConnection.cut}'s count.
        """
        self.tally.requestsCut += 1

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

    def addHook(
        self, phase: HookPhase, hook: Callable[[], object], name: str | None = None
    ) -> None:
        """
        Run C{hook} in C{phase} of the drain.

          - C{"draining"}: at the signal (readiness is off, the listeners
            may still accept during the drain delay): stop consumers, stop
            taking new work.
          - C{"goingAway"}: when the listeners have closed: tell long-lived
            work to wrap up, so that its clients reconnect elsewhere.
          - C{"cleanup"}: once the last connection has closed and the last
            tracked work is done: close pools.  Cleanup hooks run last added
            first, one after another, within L{DrainPolicy.cleanupBudget};
            a second signal skips them.

        A hook may return a Deferred or be a coroutine function.  The drain
        waits for C{draining} and C{goingAway} hooks as for L{track}ed work
        (until the cut); an exception or a failure is logged and the
        shutdown goes on.

        @param name: what the log calls the hook; its qualified name if
            L{None}.
        @raise ValueError: C{phase} is not one of the three.
        """
        self._hooks.add(phase, hook, name)

    def whenGoingAway(self, callback: Callable[[], object]) -> Callable[[], None]:
        """
        Call C{callback} when the listeners have closed: a long response
        (an event stream, a long poll, a WebSocket) should wrap up then,
        so that its client reconnects to another instance.  If that moment
        has passed already, C{callback} is called now.

        @return: a function that cancels the subscription (call it when the
            response ends on its own).
        """
        if self.goneAway:
            callback()
            return lambda: None
        return self._hooks.subscribe(callback)

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
        return self._connections.inFlight

    def connectionStates(self) -> dict[str, int]:
        """
        @return: the number of open connections in each state (see
            L{IDrainableConnection.state}).
        """
        return self._connections.states()

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
        *,
        keepDrainDelay: bool = True,
    ) -> Deferred[None]:
        """
        Begin the drain; calling it again only returns another L{whenDone}.

        @param reason: why, for the log.
        @param signal: the name of the signal that started it, if one did.
        @param startedAt: when the stop was asked for, if before now: a
            signal that arrives while the reactor is busy reaches the drain
            late, and the cap still counts from the signal.
        @param keepDrainDelay: whether to keep accepting for the policy's
            drain delay.  C{False} closes the listeners at once, for a drain
            no load balancer needs to notice (a worker retired by a reload:
            the new generation accepts on the same sockets already).
        @return: L{whenDone}.
        """
        if self.phase is not Phase.SERVING:
            return self.whenDone()
        self._keepDrainDelay = keepDrainDelay
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
        self._hooks.run("draining", self.log, self.track)
        cutIn = self.policy.cutAfter - late
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
        self.tally.requestsCut += busy
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
        cleanup = self._hooks.count("cleanup")
        if cleanup and self.phase.value < Phase.DONE.value:
            self.log.warn(
                "Cleanup skipped ({reason}): {hooks} cleanup hooks not run",
                reason=reason,
                hooks=cleanup if self.phase is not Phase.CLEANUP else 0,
                step="cleanup_skipped",
            )
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
        assert self._cutAt is not None
        # A reactor late for the cut (a loaded machine) runs the cut and the
        # cap in one turn: the 503s are still in Twisted's write buffers, and
        # aborting now would throw them away.  Give them the cut's lead,
        # counted from when the cut ran.
        flushing = self._cutAt + self.policy.cutLead - self.clock.seconds()
        if flushing > 0:
            self._later(flushing, self._abortAtCap)
            return
        self._abortAtCap()

    def _abortAtCap(self) -> None:
        if self.phase in (Phase.CUT, Phase.CLEANUP):
            self._abortAll()
            self._enter(Phase.DONE, "cap")

    def _listenersDone(self, logged: bool = True) -> None:
        """
        Every listener closed.  Late, after a forced stop, it is a no-op: the
        log ends with C{done}.

        @param logged: whether to log it (not when there were none).
        """
        if self.phase is Phase.DONE:
            return
        self._beginDrainOnConnections()
        if logged:
            self.log.info(
                "Listeners closed: {inFlight} requests in flight, "
                "{connections} connections open",
                inFlight=self.inFlight,
                connections=self.connections,
                step="listeners_closed",
            )
        self._goAway()
        self._maybeFinish()

    def _goAway(self) -> None:
        """
        Tell long-lived responses and C{goingAway} hooks to wrap up.
        """
        responses = self._hooks.subscribers
        if responses or self._hooks.count("goingAway"):
            states = self.connectionStates()
            self.log.info(
                "Going away: {responses} long responses told to wrap up; "
                "connections: {connectionStates}",
                responses=responses,
                connectionStates=", ".join(
                    f"{n} {state}" for state, n in sorted(states.items())
                )
                or "none",
                states=states,
                step="going_away",
            )
        self._hooks.goAway(self.log, self.track)

    def _maybeFinish(self) -> None:
        if (
            self.phase in (Phase.DRAINING, Phase.CUT)
            and self.listenersClosed
            and not self._connections
            and not self._tracked
        ):
            self._enter(Phase.CLEANUP)

    # The timeline: what entering each phase does.

    def _enter(self, phase: Phase, outcome: str = "") -> None:
        """
        Move to C{phase}, which must be later than the current one, and do
        what it begins with.

        @param outcome: with L{Phase.DONE}, how the drain ended.
        """
        assert phase.value > self.phase.value, (self.phase, phase)
        self.phase = phase
        self.draining = True
        self.cutting = phase.value >= Phase.CUT.value
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
        elif phase is Phase.CLEANUP:
            self._cleanUp()
        elif phase is Phase.DONE:
            self._finish(outcome)

    def _cleanUp(self) -> None:
        """
        Run the cleanup hooks within the cleanup budget, and within the cap.
        """
        assert self.capAt is not None
        toCap = self.capAt - self.clock.seconds()
        budget = min(self.policy.cleanupBudget or toCap, toCap)
        self._stopCleanup = self._hooks.cleanUp(
            self.clock, budget, self.log, self._cleanedUp
        )

    def _cleanedUp(self, abandoned: int) -> None:
        self.tally.abandoned += abandoned
        self._enter(Phase.DONE, "drained")

    def _beginDrainOnConnections(self) -> None:
        self._connections.forEach(lambda c: c.beginDrain(), self.log)

    def _closeListeners(self) -> None:
        listeners, self._listeners = self._listeners, []
        if not listeners:
            self._listenersDone(logged=False)
            return
        self._listenersClosing += 1

        def closed(_: object) -> None:
            self._listenersClosing -= 1
            self._listenersDone()

        gatherResults(
            [maybeDeferred(port.stopListening) for port in listeners],
            consumeErrors=True,
        ).addErrback(
            lambda f: self.log.failure("closing a listener failed", failure=f)
        ).addCallback(closed)

    def _cut(self) -> None:
        self._cutAt = self.clock.seconds()
        retryAfter = self.policy.retryAfter
        cut = sum(self._connections.forEach(lambda c: c.cut(retryAfter), self.log, 0))
        self.tally.requestsCut += cut
        self.tally.abandoned = len(self._tracked)
        self._tracked.clear()
        self.log.warn(
            "Shutdown cap reached: {cut} requests cut, {abandoned} tracked "
            "tasks abandoned",
            cut=cut,
            abandoned=self.tally.abandoned,
            step="cap",
        )
        self._maybeFinish()

    def _abortAll(self) -> None:
        self._connections.abortAll(self.log)
        self.tally.abandoned += len(self._tracked)
        self._tracked.clear()

    def _finish(self, outcome: str) -> None:
        self.finishedAt = self.clock.seconds()
        if self._stopCleanup is not None:
            self._stopCleanup()
        calls, self._calls = self._calls, []
        for call in calls:
            cancelCall(call)
        assert self.startedAt is not None
        self.tally.report(self.log, outcome, self.finishedAt - self.startedAt)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(None)

    # Helpers.

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
