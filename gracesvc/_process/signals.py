# -*- test-case-name: tests.unit.process.test_signals -*-
"""
The stop signals: the one owner of SIGINT and SIGTERM in a process that
drains, which starts the drain on the first and forces it on the next.
"""

from __future__ import annotations

import itertools
import signal
from collections.abc import Callable
from enum import Enum
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from gracesvc._core.drain import Drain

if TYPE_CHECKING:
    from gracesvc._process.watchdog import CapWatchdog

#: A signal handler as C{signal.signal} takes and returns it: a callable, or
#: C{SIG_DFL}/C{SIG_IGN}, or L{None} for one not installed from Python.
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class SignalModule(Protocol):
    """
    What L{StopSignals} needs of the L{signal} module.
    """

    def signal(self, signalnum: int, handler: SignalHandler, /) -> SignalHandler: ...

    def getsignal(self, signalnum: int, /) -> SignalHandler: ...


class SignalReactor(Protocol):
    """
    What L{StopSignals} needs of the reactor.

    C{sigInt} and C{sigTerm} are the handlers Twisted's reactors install for
    themselves; they are in no interface.  Besides stopping the reactor,
    they record the signal that twistd re-raises once the reactor has
    stopped, so that the exit status is the signal's.
    """

    def callWhenRunning(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> object: ...

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None: ...

    def sigInt(self, number: int, frame: FrameType | None = None) -> None: ...

    def sigTerm(self, number: int, frame: FrameType | None = None) -> None: ...


class _Phase(Enum):
    """
    Where L{StopSignals} stands.
    """

    #: Caught, from the moment the service is made; the reactor does not
    #: run yet, so a signal is only handed to it once it does.
    STARTING = "starting"
    #: The reactor runs: the first signal stops it and starts the drain.
    WATCHING = "watching"
    #: A signal stopped the reactor: any further one forces the stop, until
    #: the process exits.
    FORCING = "forcing"
    #: The drain ended with no signal (the service was stopped): the
    #: signals are handled as they would be without us.
    RESTORED = "restored"


class StopSignals:
    """
    The one owner of SIGINT and SIGTERM in a process that drains.

    From L{catch} on, a stop signal is never a L{KeyboardInterrupt} and never
    lost, even during start-up.  The first one goes to the reactor's own
    handler, which stops the reactor and sets the exit status, and starts
    the drain, whose cap counts from the signal.  Any later one forces the
    stop.  When a drain ends that no signal started, the signals are given
    back.

    The handler itself only counts the signal and hands the work to the
    reactor with C{callFromThread}, as Twisted's own handlers do: it runs
    between two bytecodes of whatever the reactor was doing.

    SIGINT is taken only over Python's default handler, as Twisted does: an
    ignored SIGINT (a shell's background job) stays ignored, a debugger's
    stays the debugger's.

    The first signal also arms the L{CapWatchdog}, if there is one: should
    the application keep the reactor's thread from the reactor past the
    cap, the watchdog ends the process then.
    """

    def __init__(
        self,
        reactor: SignalReactor,
        drain: Drain,
        signals: SignalModule = signal,
        watchdog: CapWatchdog | None = None,
        joinStartedDrain: bool = False,
    ) -> None:
        """
        @param reactor: the reactor that a signal stops.
        @param drain: the drain that a signal starts, or forces.
        @param signals: the L{signal} module, or a stand-in in tests.
        @param watchdog: what holds the cap if the reactor cannot, started
            by L{catch} and armed by the first signal.
        @param joinStartedDrain: whether a first signal that finds the drain
            started already (by a worker's master) is the same stop rather
            than a second one: a signal to the process group reaches the
            master and its workers alike.
        """
        self._reactor = reactor
        self._joinStartedDrain = joinStartedDrain
        self._drain = drain
        self._signals = signals
        self._watchdog = watchdog
        self._phase = _Phase.STARTING
        #: What would handle each signal we own if we did not.
        self._saved: dict[int, SignalHandler] = {}
        self._arrivals = itertools.count()
        # One bound method, so that it is recognisable when handed back.
        self._handler = self._signalled

    @property
    def phase(self) -> str:
        """
        Where it stands: C{"starting"}, C{"watching"}, C{"forcing"} or
        C{"restored"}.
        """
        return self._phase.value

    def catch(self) -> None:
        """
        Catch SIGINT and SIGTERM from now on.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT:
                if self._signals.getsignal(signum) != signal.default_int_handler:
                    continue
            self._saved[signum] = self._signals.signal(signum, self._handler)
        self._drain.whenDone().addCallback(self._drainDone)
        if self._watchdog is not None:
            self._watchdog.start()

    def watch(self) -> None:
        """
        Stand in front of the reactor's own handlers once it runs: call it
        as the service starts.  L{catch} uses nothing of the reactor, so
        that a service can be made for one that never runs.
        """
        self._reactor.callWhenRunning(self._reactorRunning)

    def _reactorRunning(self) -> None:
        """
        The reactor has installed its handlers as it started (over our
        SIGTERM; not over our SIGINT, which is not Python's default): stand
        in front of them again, and keep them to give back.
        """
        if self._phase is _Phase.RESTORED:
            return
        reactorHandlers = self._reactorHandlers()
        for signum in self._saved:
            self._signals.signal(signum, self._handler)
            self._saved[signum] = reactorHandlers[signum]
        if self._phase is _Phase.STARTING:
            self._phase = _Phase.WATCHING

    def _reactorHandlers(self) -> dict[int, Callable[[int, FrameType | None], None]]:
        return {
            signal.SIGINT: self._reactor.sigInt,
            signal.SIGTERM: self._reactor.sigTerm,
        }

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        # Decided with one call, not a flag tested then set: a second signal
        # can run this handler again between any two bytecodes of the first.
        first = next(self._arrivals) == 0
        if first and not self._drain.draining:
            at = self._drain.clock.seconds()
            if self._watchdog is not None:
                policy = self._drain.policy
                self._watchdog.arm(signum, at + policy.shutdownTimeout, policy.cutLead)
            self._reactor.callFromThread(self._stop, signum, at)
        elif first and self._joinStartedDrain:
            self._reactor.callFromThread(self._joined, signum)
        else:
            self._reactor.callFromThread(self._force, signum)

    def _stop(self, signum: int, at: float) -> None:
        """
        The first signal: the reactor's handler stops the reactor (on its
        next turn) and records the exit status; the drain starts now, with
        its cap counted from C{at}, when the signal arrived.

        A worker's master may have started the drain since the signal
        arrived (its command was read first, on the same turn): then the
        signal joins it, and the reactor, stopped already, is left alone.
        """
        if self._joinStartedDrain and self._drain.draining:
            self._joined(signum)
            return
        if self._phase is not _Phase.RESTORED:
            self._phase = _Phase.FORCING
        self._reactorHandlers()[signum](signum, None)
        name = signal.Signals(signum).name
        self._drain.start(name, name, startedAt=at)

    def _joined(self, signum: int) -> None:
        """
        The first signal, when the drain had started already: the same stop.
        """
        self._phase = _Phase.FORCING
        self._drain.log.info(
            "{signal} joins the drain already under way",
            signal=signal.Signals(signum).name,
        )

    def _force(self, signum: int) -> None:
        """
        A signal while the drain runs: stop now.
        """
        name = signal.Signals(signum).name
        self._drain.forceStop(f"second signal, {name}", name)

    def _drainDone(self, _: object) -> None:
        """
        Give the signals back, unless one stopped the reactor: the process
        is then on its way out, and until it exits a further signal must
        neither stop the reactor again (C{ReactorNotRunning}, and a new exit
        status) nor raise L{KeyboardInterrupt}.
        """
        if self._phase in (_Phase.STARTING, _Phase.WATCHING):
            self._phase = _Phase.RESTORED
            for signum, handler in self._saved.items():
                self._signals.signal(signum, handler)
