"""
L{CapWatchdog}: the cap when the reactor's thread is kept from the reactor.
Its waiting runs in the test's thread, on fake clocks; the real thread and
the real exit are exercised by C{tests/e2e/test_apps.py}.
"""

from __future__ import annotations

import threading
import time
from signal import SIGINT, SIGTERM
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._process.signals import StopSignals
from gracesvc._process.watchdog import PROBE, CapWatchdog, reactorAnswers, stuckAt
from tests.support.service import FakeReactor, FakeSignals, makeService


class FakeWatchdog(CapWatchdog):
    """
    A L{CapWatchdog} on a fake clock, that records instead of exiting,
    with a reactor that answers (after C{answerAfter} seconds) or not.
    """

    def __init__(self, now: float = 0.0, answerAfter: float | None = None) -> None:
        self.clock = now
        self.answerAfter = answerAfter
        self.slept: list[float] = []
        self.probes: list[tuple[float, float]] = []
        self.exited: list[int] = []
        self.started = 0
        self.events: list[dict[str, Any]] = []
        super().__init__(
            answers=self.answers,
            exit=self.exited.append,
            now=lambda: self.clock,
            sleep=self.sleep,
            where=lambda: "app.py:12 in render_GET",
        )
        self.log = Logger(observer=cast(ILogObserver, self.events.append))

    def start(self) -> None:
        self.started += 1

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.clock += seconds

    def answers(self, within: float) -> bool:
        self.probes.append((self.clock, within))
        if self.answerAfter is not None and self.answerAfter <= within:
            self.clock += self.answerAfter
            return True
        self.clock += within
        return False


class CapWatchdogTests(SynchronousTestCase):
    def test_blockedReactorEndsAtTheCap(self) -> None:
        """
        Armed at the signal with the cap, it waits until the cap; a reactor
        that does not answer then is blocked: it says where the reactor's
        thread was and ends the process by the signal, L{PROBE} after the
        cap.
        """
        watchdog = FakeWatchdog(now=100.0)
        watchdog.arm(SIGTERM, 130.0, lead=0.1)
        watchdog.run()
        self.assertEqual(watchdog.slept, [30.0])
        self.assertEqual(watchdog.probes, [(130.0, PROBE)])
        self.assertEqual(watchdog.exited, [SIGTERM])
        self.assertAlmostEqual(watchdog.clock, 130.0 + PROBE)
        [event] = watchdog.events
        self.assertEqual(event["step"], "watchdog")
        self.assertEqual(event["where"], "app.py:12 in render_GET")

    def test_liveReactorGetsTheCutsLead(self) -> None:
        """
        A reactor that answers at the cap keeps the cap itself (a starved
        one runs its cut and cap in one turn, and flushes the 503s for the
        cut's lead): the watchdog waits that lead before ending it.
        """
        watchdog = FakeWatchdog(now=100.0, answerAfter=0.01)
        watchdog.arm(SIGINT, 130.0, lead=0.1)
        watchdog.run()
        self.assertEqual(watchdog.exited, [SIGINT])
        self.assertAlmostEqual(watchdog.clock, 130.01 + 0.1 + PROBE)

    def test_wokenLateProbesAtOnce(self) -> None:
        """
        A process stopped past the cap (SIGSTOP, a starved machine) probes
        the reactor as soon as it runs again.
        """
        watchdog = FakeWatchdog(now=200.0)
        watchdog.arm(SIGINT, 130.0, lead=0.1)
        watchdog.run()
        self.assertEqual(watchdog.slept, [])
        self.assertEqual(watchdog.probes, [(200.0, PROBE)])
        self.assertEqual(watchdog.exited, [SIGINT])

    def test_stuckAtNamesTheFunction(self) -> None:
        """
        L{stuckAt} names where another thread is, innermost first, on one
        line.
        """
        release = threading.Event()
        inside = threading.Event()

        def blockedHere() -> None:
            inside.set()
            release.wait(10)

        thread = threading.Thread(target=blockedHere)
        thread.start()
        self.addCleanup(thread.join)
        self.addCleanup(release.set)
        inside.wait(10)
        where = stuckAt(thread)
        self.assertIn("in blockedHere", where)
        self.assertNotIn("\n", where)

    def test_reactorAnswers(self) -> None:
        """
        L{reactorAnswers} asks the reactor's thread to run a call: it
        answers when the reactor runs the calls from threads.
        """
        reactor = FakeReactor()
        answers = reactorAnswers(cast(IReactorThreads, reactor))
        self.assertFalse(answers(0.001))
        reactor.turn()
        answered: list[bool] = []
        runner = threading.Thread(target=lambda: answered.append(answers(10)))
        runner.start()
        self.addCleanup(runner.join)
        while not reactor.threadCalls:
            time.sleep(0.001)
        reactor.turn()
        runner.join(10)
        self.assertEqual(answered, [True])


class StopSignalsArmTheWatchdogTests(SynchronousTestCase):
    def test_firstSignalArmsWithTheCap(self) -> None:
        """
        C{catch} starts the watchdog; the first signal arms it, in the
        handler itself (the reactor may never get to the signal), with the
        cap counted from the signal; a second signal does not re-arm it.
        """
        reactor = FakeReactor()
        service = makeService(reactor)
        service.startService()
        signals = FakeSignals()
        watchdog = FakeWatchdog()
        stopSignals = StopSignals(reactor, service.drain, signals, watchdog=watchdog)
        stopSignals.catch()
        stopSignals.watch()
        self.assertEqual((watchdog.started, watchdog.deadline), (1, None))
        reactor.start(signals)
        service.drain.track(Deferred())
        reactor.advance(10)
        signals.deliver(SIGTERM)
        armed = (
            SIGTERM,
            10 + service.drain.shutdownTimeout,
            service.drain.policy.cutLead,
        )
        self.assertEqual((watchdog.signum, watchdog.deadline, watchdog.lead), armed)
        reactor.advance(1)
        signals.deliver(SIGINT)
        self.assertEqual((watchdog.signum, watchdog.deadline, watchdog.lead), armed)
