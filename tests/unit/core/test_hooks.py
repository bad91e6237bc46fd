"""
L{gracesvc._core.hooks}: the calls an application asked a drain for, made
on their own.  How they sit on the drain's timeline is tested in
C{test_drain.py}.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.hooks import Hooks


class HooksTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.hooks = Hooks()
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.calls: list[str] = []
        self.tracked: list[Deferred[object]] = []
        self.done: list[int] = []

    def failures(self) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("log_failure") is not None]

    def note(self, what: str, result: object = None) -> Any:
        def hook() -> object:
            self.calls.append(what)
            return result

        return hook


class RunTests(HooksTestCase):
    def test_countAndUnknownPhase(self) -> None:
        self.hooks.add("draining", self.note("a"))
        self.hooks.add("draining", self.note("b"))
        self.assertEqual(
            [self.hooks.count(p) for p in ("draining", "goingAway", "cleanup")],
            [2, 0, 0],
        )
        with self.assertRaises(ValueError):
            self.hooks.add("later", self.note("c"))  # type: ignore[arg-type]

    def test_runCallsEveryHookAndHandsOverWhatToWaitFor(self) -> None:
        """
        The hooks of a phase are called first added first, without waiting
        for each other; what one returns is handed over to be waited for,
        one that raises is logged under its name.
        """
        work: Deferred[None] = Deferred()

        def fails() -> None:
            raise RuntimeError("boom")

        self.hooks.add("draining", self.note("first", work))
        self.hooks.add("draining", fails, name="broken consumer")
        self.hooks.add("draining", self.note("last"))
        self.hooks.add("goingAway", self.note("not now"))
        self.hooks.run("draining", self.log, self.tracked.append)
        self.assertEqual(self.calls, ["first", "last"])
        self.assertEqual(self.tracked, [work])
        [failure] = self.failures()
        self.assertEqual(failure["hook"], "broken consumer")

    def test_goAwayTellsEachSubscriberOnceThenRunsTheHooks(self) -> None:
        """
        Every subscriber still subscribed is told, once, before the
        C{goingAway} hooks; one that raises is logged and the others are
        still told.
        """

        def fails() -> None:
            raise RuntimeError("boom")

        self.hooks.add("goingAway", self.note("hook"))
        self.hooks.subscribe(self.note("stream"))
        self.hooks.subscribe(fails)
        cancel = self.hooks.subscribe(self.note("ended on its own"))
        self.hooks.subscribe(self.note("socket"))
        cancel()
        self.assertEqual(self.hooks.subscribers, 3)
        self.hooks.goAway(self.log, self.tracked.append)
        self.assertEqual(self.calls, ["stream", "socket", "hook"])
        self.assertEqual(self.hooks.subscribers, 0)
        self.assertEqual(len(self.failures()), 1)
        self.hooks.goAway(self.log, self.tracked.append)
        self.assertEqual(self.calls, ["stream", "socket", "hook", "hook"])


class CleanUpTests(HooksTestCase):
    def test_lastAddedFirstEachAfterTheOneBefore(self) -> None:
        first: Deferred[None] = Deferred()
        self.hooks.add("cleanup", self.note("pool"))
        self.hooks.add("cleanup", self.note("consumer", first))
        self.hooks.cleanUp(self.clock, 1, self.log, self.done.append)
        self.assertEqual((self.calls, self.done), (["consumer"], []))
        first.callback(None)
        self.assertEqual((self.calls, self.done), (["consumer", "pool"], [0]))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_budgetSpentGivesUpOnTheRest(self) -> None:
        """
        When the budget is spent, the hook still running and those after it
        are given up on, and counted; none is called after.
        """
        stuck: Deferred[None] = Deferred()
        self.hooks.add("cleanup", self.note("never"))
        self.hooks.add("cleanup", self.note("stuck", stuck))
        self.hooks.cleanUp(self.clock, 0.5, self.log, self.done.append)
        self.clock.advance(0.5)
        self.assertEqual(self.done, [2])
        stuck.callback(None)
        self.assertEqual(self.calls, ["stuck"])
        self.assertEqual(
            [e["step"] for e in self.events], ["cleanup", "cleanup_overrun"]
        )

    def test_stoppedRunCallsNothingMore(self) -> None:
        stuck: Deferred[None] = Deferred()
        self.hooks.add("cleanup", self.note("never"))
        self.hooks.add("cleanup", self.note("stuck", stuck))
        stop = self.hooks.cleanUp(self.clock, 0.5, self.log, self.done.append)
        stop()
        stuck.callback(None)
        self.clock.advance(1)
        self.assertEqual((self.calls, self.done), (["stuck"], []))
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_noHooksIsDoneAtOnce(self) -> None:
        self.hooks.cleanUp(self.clock, 1, self.log, self.done.append)
        self.assertEqual((self.done, self.events), ([0], []))
        self.assertEqual(self.clock.getDelayedCalls(), [])
