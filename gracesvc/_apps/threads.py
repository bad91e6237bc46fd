# -*- test-case-name: tests.unit.apps.test_threads -*-
"""
Threads under the drain: thread pools that cannot hold the process past
the shutdown cap.

A thread cannot be cancelled.  What the drain waits for is what it can
see: the connections of WSGI requests, and the Deferreds handed to
L{Drain.track}, C{deferToThread}'s among them.  Once the drain is done,
whatever threads are still running are given up on, with a log line: they
are daemon threads, and neither the reactor nor Python's exit waits for
them.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorCore, IReactorThreads
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from gracesvc._core.drain import Drain
from gracesvc._pins.twisted_threads import (
    replaceReactorPoolStop,
    stopWithin,
    useDaemonThreads,
)

#: The default size of a WSGI thread pool: C{twistd web --wsgi}'s, the
#: default maximum of L{ThreadPool}.
DEFAULT_THREADS = ThreadPool.max

#: Threads a pool keeps ready even when idle, at most: L{ThreadPool}'s
#: default minimum, as C{twistd web --wsgi} has it.
_READY_THREADS = ThreadPool.min

log = Logger()


def drainingThreadPool(
    reactor: IReactorCore,
    drain: Drain,
    threads: int = DEFAULT_THREADS,
    name: str = "gracesvc-wsgi",
) -> ThreadPool:
    """
    A thread pool for request handlers: started when the reactor runs,
    stopped when C{drain} is done, without waiting for threads still
    running then (the drain has waited for the requests they serve, within
    its cap).

    @param threads: the most threads the pool runs at once.
    @raise ValueError: C{threads} is less than 1.
    """
    if threads < 1:
        raise ValueError(f"a thread pool needs at least 1 thread, got {threads!r}")
    pool = ThreadPool(min(_READY_THREADS, threads), threads, name)
    useDaemonThreads(pool)
    reactor.callWhenRunning(pool.start)
    drain.whenDone().addCallback(lambda _: giveUpOn(pool, 0.0))
    return pool


def boundReactorThreads(reactor: IReactorThreads, drain: Drain) -> ThreadPool:
    """
    Keep the reactor's own thread pool (C{deferToThread}, C{callInThread},
    name resolution) from holding the process past C{drain}'s cap.

    The reactor joins that pool's threads after the shutdown triggers, the
    drain among them: one call that never returns would hang the process.
    From now on, that join waits only as long as is left of the drain: not
    at all once it is done (use L{Drain.track} on a C{deferToThread}
    Deferred to have the drain wait for it, within the cap).

    Call it before the reactor runs, so that every thread of the pool is a
    daemon thread and Python's exit does not wait for it either.

    @return: the reactor's pool.
    """

    def stop(pool: ThreadPool) -> None:
        giveUpOn(pool, timeLeft(drain))

    return replaceReactorPoolStop(reactor, stop)


def timeLeft(drain: Drain) -> float:
    """
    @return: how long threads may still be waited for: nothing once the
        drain is done, what is left to its cap while it runs, a whole
        shutdown timeout if it has not started (the reactor stopped without
        a drain).
    """
    if drain.finished:
        return 0.0
    if drain.capAt is not None:
        return max(0.0, drain.capAt - drain.clock.seconds())
    return drain.shutdownTimeout


def giveUpOn(pool: ThreadPool, timeout: float) -> int:
    """
    Stop C{pool}, waiting at most C{timeout} seconds for its busy threads;
    log those it gives up on.

    @return: the number of threads still busy when it gave up.
    """
    busy = stopWithin(pool, timeout)
    if busy:
        log.warn(
            "Giving up on {busy} threads of {pool} still running: the process "
            "exits without waiting for them",
            busy=busy,
            pool=pool.name,
            step="threads_abandoned",
        )
    return busy
