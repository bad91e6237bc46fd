# -*- test-case-name: tests.unit.core.test_hooks -*-
"""
What an application asks a drain to call: its hooks, each in one phase of
the drain (see L{gracesvc._core.drain.Drain.addHook}), and the long
responses waiting to be told to go away (see
L{gracesvc._core.drain.Drain.whenGoingAway}).

Each is called through L{callLogged}: what one raises or fails with is
logged, and the shutdown goes on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from gracesvc._core.calls import callLogged
from gracesvc._core.policy import HookPhase
from gracesvc._core.timers import cancelCall

_Hook = Callable[[], object]


class Hooks:
    """
    The hooks of one drain, by phase, and its going-away subscribers.

    The drain decides when each phase comes; this calls what was added for
    it.
    """

    def __init__(self) -> None:
        self._byPhase: dict[str, list[tuple[str, _Hook]]] = {
            "draining": [],
            "goingAway": [],
            "cleanup": [],
        }
        self._subscribers: dict[object, _Hook] = {}

    def add(self, phase: HookPhase, hook: _Hook, name: str | None = None) -> None:
        """
        Call C{hook} in C{phase}.

        @param name: what the log calls the hook; its qualified name if
            L{None}.
        @raise ValueError: C{phase} is not a phase a hook can run in.
        """
        if phase not in self._byPhase:
            raise ValueError(f"no such drain phase for a hook: {phase!r}")
        label = name or str(getattr(hook, "__qualname__", repr(hook)))
        self._byPhase[phase].append((label, hook))

    def count(self, phase: HookPhase) -> int:
        """
        @return: the number of hooks added for C{phase}.
        """
        return len(self._byPhase[phase])

    @property
    def subscribers(self) -> int:
        """
        The number of going-away subscribers not told yet.
        """
        return len(self._subscribers)

    def subscribe(self, callback: _Hook) -> Callable[[], None]:
        """
        Call C{callback} at L{goAway}.

        @return: a function that cancels the subscription.
        """
        key = object()
        self._subscribers[key] = callback

        def unsubscribe() -> None:
            self._subscribers.pop(key, None)

        return unsubscribe

    def run(
        self,
        phase: Literal["draining", "goingAway"],
        log: Logger,
        track: Callable[[Deferred[object]], object],
    ) -> None:
        """
        Call the hooks of C{phase}, first added first, without waiting for
        one before the next.

        @param log: where a failure is logged.
        @param track: called with what a hook returned, as a L{Deferred}
            whose failure is logged already, for the drain to wait for.
        """
        for label, hook in self._byPhase[phase]:
            result = callLogged(hook, log, "drain hook {hook} failed", hook=label)
            if result is not None:
                track(result)

    def goAway(self, log: Logger, track: Callable[[Deferred[object]], object]) -> None:
        """
        Tell every subscriber to go away, each once, then run the
        C{goingAway} hooks (see L{run}).
        """
        subscribers, self._subscribers = list(self._subscribers.values()), {}
        for callback in subscribers:
            callLogged(
                callback,
                log,
                "going-away callback {callback} failed",
                callback=callback,
            )
        self.run("goingAway", log, track)

    def cleanUp(
        self,
        clock: IReactorTime,
        budget: float,
        log: Logger,
        done: Callable[[int], None],
    ) -> Callable[[], None]:
        """
        Run the C{cleanup} hooks, last added first, each once the one before
        is done, within C{budget}.

        @param budget: the seconds they may take, all together.
        @param done: called once, when the last hook is done (with 0), or
            when the budget is spent (with the number of hooks given up on,
            the one still running included).
        @return: a function that stops the run early: no hook is called
            after it, and neither is C{done}.
        """
        hooks = list(reversed(self._byPhase["cleanup"]))
        if not hooks:
            done(0)
            return lambda: None
        log.info(
            "Cleaning up: {hooks} cleanup hooks, {budget:.3f}s budget",
            hooks=len(hooks),
            budget=budget,
            step="cleanup",
        )
        running = True

        def stop() -> None:
            nonlocal running
            running = False
            cancelCall(overrun)

        def spent() -> None:
            stop()
            log.warn(
                "Cleanup budget spent: {hooks} cleanup hooks abandoned",
                hooks=1 + len(hooks),
                step="cleanup_overrun",
            )
            done(1 + len(hooks))

        overrun = clock.callLater(max(0.0, budget), spent)

        def runNext(_: object = None) -> None:
            while running:
                if not hooks:
                    stop()
                    done(0)
                    return
                label, hook = hooks.pop(0)
                d = callLogged(hook, log, "drain hook {hook} failed", hook=label)
                if d is not None and not d.called:
                    d.addBoth(runNext)
                    return

        runNext()
        return stop
