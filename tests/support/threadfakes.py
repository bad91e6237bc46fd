"""
Threads that run when the test says so, for the WSGI and thread tests.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from twisted.python.failure import Failure


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
