"""
A service in memory: a reactor that goes through the parts of a real
reactor's life that signals meet, a stand-in for the L{signal} module, and
the services the process tests make on them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from typing import Any

from twisted.internet.endpoints import serverFromString
from twisted.internet.error import ReactorNotRunning
from twisted.internet.testing import MemoryReactorClock

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.demo import GraceApp
from gracesvc._core.drain import Drain
from gracesvc._process.service import GracefulService, TwistdService
from gracesvc._process.signals import StopSignals
from gracesvc._protocols.site import DrainingSite

SIGINT, SIGTERM = signal.SIGINT, signal.SIGTERM


class FakeReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} that goes through the parts of a real reactor's
    life that signals meet: it installs its signal handlers as it starts (by
    Twisted's rule), runs C{callFromThread} calls one turn at a time, stops
    at most once, and runs its 'before' 'shutdown' triggers on the turn
    after C{stop}.

    @ivar exitSignal: what Twisted's C{sigInt}/C{sigTerm} record as
        C{_exitSignal}, which twistd re-raises at exit.
    @ivar stops: how many times C{stop} was called.
    """

    def __init__(self) -> None:
        super().__init__()
        self.threadCalls: list[tuple[Callable[..., object], tuple[object, ...]]] = []
        self.exitSignal: int | None = None
        self.stops = 0
        self._justStopped = False

    def addSystemEventTrigger(  # type: ignore[override]
        self, phase: str, eventType: str, f: Any, *args: Any, **kw: Any
    ) -> Any:  # the trigger's ID, unlike MemoryReactor's None
        super().addSystemEventTrigger(phase, eventType, f, *args, **kw)
        return (phase, eventType, (f, args, kw))

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        phase, eventType, entry = triggerID
        self.triggers[phase][eventType].remove(entry)

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None:
        self.threadCalls.append((callable, args))

    def sigInt(self, number: int, frame: object = None) -> None:
        self.callFromThread(self.stop)
        self.exitSignal = number

    def sigTerm(self, number: int, frame: object = None) -> None:
        self.callFromThread(self.stop)
        self.exitSignal = number

    def stop(self) -> None:
        if self.stops:
            raise ReactorNotRunning()
        self.stops += 1
        self._justStopped = True
        super().stop()

    def start(self, signals: FakeSignals) -> None:
        """
        Start running, as C{reactor.run()} does: install the reactor's
        signal handlers ('during' 'startup'), then run the C{callWhenRunning}
        hooks ('after' 'startup').
        """
        if signals.handlers[SIGINT] is signal.default_int_handler:
            signals.handlers[SIGINT] = self.sigInt
        signals.handlers[SIGTERM] = self.sigTerm
        self.running = True
        hooks, self.whenRunningHooks = self.whenRunningHooks, []
        for f, args, kw in hooks:
            f(*args, **kw)

    def turn(self) -> list[object]:
        """
        One turn of the loop: run the C{callFromThread} calls made before
        it, then, if the reactor was stopped, its 'before' 'shutdown'
        triggers.

        @return: what each trigger returned.
        """
        calls, self.threadCalls = self.threadCalls, []
        for f, args in calls:
            f(*args)
        if not self._justStopped:
            return []
        self._justStopped = False
        return self.fireShutdownTriggers()

    def fireShutdownTriggers(self) -> list[object]:
        """
        Call the 'before' 'shutdown' triggers.

        @return: what each returned.
        """
        triggers = self.triggers.get("before", {}).get("shutdown", [])
        return [f(*args, **kw) for f, args, kw in list(triggers)]


class FakeSignals:
    """
    Stands in for the L{signal} module: records handlers, starts with
    Python's defaults, and delivers a signal as the interpreter would.
    """

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {
            SIGINT: signal.default_int_handler,
            SIGTERM: signal.SIG_DFL,
        }

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.handlers.get(signum)
        self.handlers[signum] = handler
        return previous

    def getsignal(self, signum: int) -> Any:
        return self.handlers.get(signum)

    def deliver(self, signum: int) -> None:
        """
        Deliver C{signum}: its handler runs, Python's default raises
        L{KeyboardInterrupt}, and C{SIG_DFL} for SIGTERM would kill the
        process (an L{AssertionError} here).
        """
        handler = self.handlers[signum]
        if handler == signal.SIG_IGN:
            return
        if handler == signal.SIG_DFL:
            raise AssertionError(f"killed by {signal.Signals(signum).name}")
        handler(signum, None)


def makeService(reactor: Any, *descriptions: str) -> GracefulService:
    drain = Drain(reactor, shutdownTimeout=2)
    root = withOperationalRoutes(GraceApp(reactor, drain, 1).resource(), drain, None)
    site = DrainingSite(root, drain, reactor=reactor)
    endpoints = [(d, serverFromString(reactor, d)) for d in descriptions]
    return GracefulService(site, endpoints, drain, reactor)


def makeTwistdService(reactor: Any, *descriptions: str) -> TwistdService:
    service = makeService(reactor, *descriptions)
    stopSignals = StopSignals(reactor, service.drain, FakeSignals())
    return TwistdService(
        service.factory, service.endpoints, service.drain, reactor, stopSignals
    )
