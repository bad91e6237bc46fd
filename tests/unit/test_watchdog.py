"""
L{CapWatchdog}: the cap when the reactor's thread is kept from the reactor.
Its waiting runs in the test's thread, on fake clocks; the real thread and
the real exit are exercised by C{tests/e2e/test_apps.py}.
"""

from __future__ import annotations

import threading
from signal import SIGINT, SIGTERM
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._service import StopSignals
from gracesvc._watchdog import GRACE, CapWatchdog, stuckAt

from .test_service import FakeReactor, FakeSignals, makeService


class FakeWatchdog(CapWatchdog):
    """
    A L{CapWatchdog} on a fake clock, that records instead of exiting.
    """

    def __init__(self, now: float = 0.0) -> None:
        self.clock = now
        self.slept: list[float] = []
        self.exited: list[int] = []
        self.started = 0
        self.events: list[dict[str, Any]] = []
        super().__init__(
            exit=self.exited.append,
            now=lambda: self.clock,
            sleep=self.slept.append,
            where=lambda: "app.py:12 in render_GET",
        )
        self.log = Logger(observer=cast(ILogObserver, self.events.append))

    def start(self) -> None:
        self.started += 1


class CapWatchdogTests(SynchronousTestCase):
    def test_endsTheProcessByTheSignalAfterTheCap(self) -> None:
        """
        Armed at the signal with the cap, it waits until the cap plus the
        grace, says where the reactor's thread was, and ends the process
        by the signal.
        """
        watchdog = FakeWatchdog(now=100.0)
        watchdog.arm(SIGTERM, 130.0)
        watchdog.run()
        self.assertEqual(len(watchdog.slept), 1)
        self.assertAlmostEqual(watchdog.slept[0], 30.0 + GRACE)
        self.assertEqual(watchdog.exited, [SIGTERM])
        [event] = watchdog.events
        self.assertEqual(event["step"], "watchdog")
        self.assertEqual(event["where"], "app.py:12 in render_GET")

    def test_lateAlreadyExitsAtOnce(self) -> None:
        watchdog = FakeWatchdog(now=200.0)
        watchdog.arm(SIGINT, 130.0)
        watchdog.run()
        self.assertEqual((watchdog.slept, watchdog.exited), ([], [SIGINT]))

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
        self.assertEqual(
            (watchdog.signum, watchdog.deadline),
            (SIGTERM, 10 + service.drain.shutdownTimeout),
        )
        reactor.advance(1)
        signals.deliver(SIGINT)
        self.assertEqual(
            (watchdog.signum, watchdog.deadline),
            (SIGTERM, 10 + service.drain.shutdownTimeout),
        )
