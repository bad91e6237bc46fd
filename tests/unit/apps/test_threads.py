"""
Thread pools under the drain: the drain waits for what it tracks, within
its cap, and nothing waits for a thread after that.

The reactor-level tests run real threads, each blocked on an event the test
sets: never on wall time.
"""

from __future__ import annotations

import threading
from typing import Any, cast

from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.internet.threads import deferToThreadPool
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import provider

from gracesvc._apps.threads import (
    DEFAULT_THREADS,
    boundReactorThreads,
    drainingThreadPool,
    giveUpOn,
    timeLeft,
)
from gracesvc._core.drain import Drain
from gracesvc._pins.twisted_threads import daemonThread
from tests.support.threadfakes import (
    PATIENCE,
    ManualThreadPool,
    Reactor,
    ThreadsInline,
    blockedPool,
)


def joinStoppers() -> None:
    for thread in threading.enumerate():
        if thread.name == "gracesvc-pool-stop":
            thread.join(PATIENCE)


class CapturingTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            self.events.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    def steps(self, step: str) -> list[LogEvent]:
        return [e for e in self.events if e.get("step") == step]


class TrackedThreadWorkTests(SynchronousTestCase):
    """
    L{Drain.track} on a C{deferToThread} Deferred: the drain waits for the
    thread's work, within its cap.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.drain = Drain(self.clock, shutdownTimeout=5)
        self.pool = ManualThreadPool()
        self.work = self.drain.track(
            deferToThreadPool(
                cast(Any, ThreadsInline()), cast(Any, self.pool), lambda: "saved"
            )
        )

    def test_drainWaitsForTrackedThreadWork(self) -> None:
        done = self.drain.start()
        self.clock.advance(4)
        self.assertNoResult(done)
        self.assertEqual(self.drain.pendingWork, 1)
        self.pool.runNext()
        self.successResultOf(done)
        self.assertEqual(self.successResultOf(self.work), "saved")
        self.assertEqual(self.drain.abandoned, 0)

    def test_stuckThreadWorkAbandonedAtTheCap(self) -> None:
        done = self.drain.start()
        self.clock.advance(5)
        self.successResultOf(done)
        self.assertEqual(self.drain.abandoned, 1)


class TimeLeftTests(SynchronousTestCase):
    def test_timeLeft(self) -> None:
        """
        Threads may be waited for until the cap while the drain runs, not at
        all once it is done, a whole timeout if it never started.
        """
        clock = Clock()
        drain = Drain(clock, shutdownTimeout=5)
        self.assertEqual(timeLeft(drain), 5)
        work = drain.track(
            deferToThreadPool(
                cast(Any, ThreadsInline()), cast(Any, ManualThreadPool()), lambda: None
            )
        )
        drain.start()
        clock.advance(2)
        self.assertEqual(timeLeft(drain), 3)
        clock.advance(3)
        self.assertTrue(drain.finished)
        self.assertEqual(timeLeft(drain), 0)
        self.assertNoResult(work)


class ReactorThreadsTests(CapturingTestCase):
    def test_stuckThreadDoesNotHoldTheReactorsShutdown(self) -> None:
        """
        A C{deferToThread} call that never returns: once the drain is done,
        the reactor's shutdown gives up on its thread at once, with a log
        line, instead of joining it forever.  The thread is a daemon.
        """
        reactor = Reactor()
        drain = Drain(Clock())
        pool = boundReactorThreads(cast(IReactorThreads, reactor), drain)
        reactor.fireSystemEvent("startup")
        release = threading.Event()
        self.addCleanup(release.set)
        running = threading.Event()

        def stuck() -> None:
            running.set()
            release.wait(PATIENCE)

        reactor.callInThread(stuck)
        self.assertTrue(running.wait(PATIENCE))
        self.successResultOf(drain.start())
        reactor.fireSystemEvent("shutdown")
        [event] = self.steps("threads_abandoned")
        self.assertEqual(event["busy"], 1)
        self.assertEqual(event["pool"], "twisted.internet.reactor")
        self.assertTrue(all(t.daemon for t in pool.threads))
        release.set()
        joinStoppers()
        self.assertFalse(any(t.is_alive() for t in pool.threads))

    def test_idlePoolStopsQuietly(self) -> None:
        pool = ThreadPool(1, 1)
        pool.start()
        self.assertEqual(giveUpOn(pool, PATIENCE), 0)
        self.assertEqual(self.steps("threads_abandoned"), [])

    def test_giveUpLogs(self) -> None:
        pool, release = blockedPool(self)
        self.assertEqual(giveUpOn(pool, 0), 1)
        self.assertEqual(len(self.steps("threads_abandoned")), 1)


class DrainingThreadPoolTests(CapturingTestCase):
    def test_sizeAndDefault(self) -> None:
        """
        The default size is C{twistd web --wsgi}'s: at most 20 threads, 5 kept
        ready; fewer if asked for fewer.
        """
        self.assertEqual(DEFAULT_THREADS, 20)
        drain = Drain(Clock())
        pool = drainingThreadPool(MemoryReactorClock(), drain)
        self.assertEqual((pool.min, pool.max), (5, 20))
        pool = drainingThreadPool(MemoryReactorClock(), drain, threads=2)
        self.assertEqual((pool.min, pool.max), (2, 2))

    def test_noThreads(self) -> None:
        error = self.assertRaises(
            ValueError, drainingThreadPool, MemoryReactorClock(), Drain(Clock()), 0
        )
        self.assertEqual(str(error), "a thread pool needs at least 1 thread, got 0")

    def test_startsWithTheReactorStopsWithTheDrain(self) -> None:
        """
        The pool starts when the reactor runs, with daemon threads, and
        stops once the drain is done, without waiting for busy threads.
        """
        reactor = MemoryReactorClock()
        drain = Drain(Clock())
        pool = drainingThreadPool(reactor, drain, threads=1)
        self.assertIs(pool.threadFactory, daemonThread)
        self.assertFalse(pool.started)
        for hook, args, kwargs in reactor.whenRunningHooks:
            hook(*args, **kwargs)
        self.addCleanup(lambda: None if pool.joined else pool.stop())
        self.assertTrue(pool.started)
        self.assertTrue(all(t.daemon for t in pool.threads))
        release = threading.Event()
        self.addCleanup(release.set)
        running = threading.Event()

        def blocked() -> None:
            running.set()
            release.wait(PATIENCE)

        pool.callInThread(blocked)
        self.assertTrue(running.wait(PATIENCE))
        self.successResultOf(drain.start())
        [event] = self.steps("threads_abandoned")
        self.assertEqual(event["pool"], "gracesvc-wsgi")
        release.set()
        joinStoppers()
        self.assertTrue(pool.joined)
