"""
Threads for the WSGI and thread tests: fakes whose work runs when the test
says so, a reactor with no I/O, and a real pool with a thread blocked until
the test releases it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.base import ReactorBase
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins.twisted_threads import useDaemonThreads


class ManualThreadPool:
    """
    The part of L{ThreadPool} a L{WSGIResource} uses: work is queued, and
    runs in the test's own thread when L{runNext} is called.  Work never run
    is a thread that never got to it, or never returned.
    """

    def __init__(self) -> None:
        self.queue: list[Callable[[], object]] = []

    def callInThread(self, f: Callable[..., object], *a: object, **kw: object) -> None:
        self.queue.append(partial(f, *a, **kw))

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object] | None,
        f: Callable[..., object],
        *a: object,
        **kw: object,
    ) -> None:
        """
        As L{ThreadPool.callInThreadWithCallback}: what C{deferToThreadPool}
        uses.
        """

        def work() -> None:
            try:
                result, ok = f(*a, **kw), True
            except BaseException:
                result, ok = Failure(), False
            if onResult is not None:
                onResult(ok, result)

        self.queue.append(work)

    def runNext(self) -> None:
        self.queue.pop(0)()


class ThreadsInline:
    """
    The part of L{IReactorThreads} a WSGI response uses: what a thread hands
    to the reactor runs at once, in the same stack (so the thread's
    C{blockingCallFromThread} returns).
    """

    def callFromThread(
        self, f: Callable[..., object], *a: object, **kw: object
    ) -> None:
        f(*a, **kw)


#: How long a test waits for a real thread, at most: only a broken test
#: waits that long.
PATIENCE = 10.0


def blockedPool(test: SynchronousTestCase) -> tuple[ThreadPool, threading.Event]:
    """
    A started pool of daemon threads with one thread blocked until the
    returned event is set (at the latest when the test ends).
    """
    pool = ThreadPool(0, 2, "pinned")
    useDaemonThreads(pool)
    pool.start()
    release = threading.Event()
    running = threading.Event()

    def blocked() -> None:
        running.set()
        release.wait(PATIENCE)

    pool.callInThread(blocked)
    test.assertTrue(running.wait(PATIENCE))
    test.addCleanup(lambda: None if pool.joined else pool.stop())
    test.addCleanup(release.set)
    return pool, release


class Reactor(ReactorBase):
    """
    A reactor base with no I/O, enough to fire system events.
    """

    def installWaker(self) -> None:
        pass

    def wakeUp(self) -> None:
        pass

    def removeAll(self) -> list[Any]:
        return []
