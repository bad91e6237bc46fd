# -*- test-case-name: tests.unit.pins.test_twisted_threads -*-
"""
Every Twisted internal gracesvc's thread support and WSGI responses rely
on, in one place.

A thread cannot be cancelled, and Twisted waits for its threads: the
reactor joins its pool in a 'during' 'shutdown' trigger, and Python joins
every non-daemon thread at exit.  One WSGI request or C{deferToThread} call
that never returns would hold the process past any cap.  And Twisted's WSGI
glue writes to a request after the drain has answered it with a 503, which
raises in the thread and logs a traceback: L{gracesvc._apps.wsgi} replaces
that glue, on the base here, L{TwistedWSGIResponse}.

Each name here reads or drives one private attribute of Twisted 26.10, says
why it is needed, and is pinned by
C{tests/unit/pins/test_twisted_threads.py}, as in L{gracesvc._pins.twisted}.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from twisted.internet.interfaces import IReactorThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.http import Request
from twisted.web.wsgi import _WSGIResponse


def daemonThread(*, target: Callable[[], object], name: str | None = None) -> Any:
    """
    A L{ThreadPool.threadFactory} for daemon threads: Python's exit does not
    wait for them.
    """
    return threading.Thread(target=target, name=name, daemon=True)


def useDaemonThreads(pool: ThreadPool) -> None:
    """
    Make the threads C{pool} starts from now on daemon threads.  A thread
    already started stays as it is (Python forbids the change), so call this
    before the pool starts.

    Internals: L{ThreadPool.threadFactory}, which the pool calls with
    C{target} and C{name} keywords for each thread it starts.
    """
    pool.threadFactory = daemonThread  # type: ignore[assignment]


def stopWithin(pool: ThreadPool, timeout: float) -> int:
    """
    Stop C{pool} as L{ThreadPool.stop} does (no new work; idle threads end,
    busy ones once their work returns) but wait at most C{timeout} seconds
    for its threads instead of forever.

    L{ThreadPool.stop} runs in a daemon thread of its own, which is left
    waiting for the threads that do not end in time.

    Internals: L{ThreadPool.stop} joins every thread the pool started;
    L{ThreadPool.working} has one item per busy thread.

    @return: the number of threads still busy when the time was up.
    """
    if pool.joined:
        # Stopped already (stopping twice raises in the thread).
        return len(pool.working)
    stopper = threading.Thread(
        target=ThreadPool.stop, args=(pool,), name="gracesvc-pool-stop", daemon=True
    )
    stopper.start()
    stopper.join(max(0.0, timeout))
    if not stopper.is_alive():
        return 0
    return len(pool.working)


def replaceReactorPoolStop(
    reactor: IReactorThreads, stop: Callable[[ThreadPool], None]
) -> ThreadPool:
    """
    Make the reactor's thread pool (C{deferToThread}, C{callInThread}, name
    resolution) use daemon threads, and have the reactor call C{stop(pool)}
    at shutdown instead of L{ThreadPool.stop}.

    Internals: C{ReactorBase.getThreadPool} makes the pool on first use and
    registers C{_stopThreadPool} as a 'during' 'shutdown' trigger, which calls
    the pool's C{stop()} and so joins every thread.  The pool starts its
    threads only once the reactor runs (a C{callWhenRunning} trigger), so
    calling this before C{reactor.run} makes every one of them a daemon.

    @return: the reactor's pool.
    """
    pool = reactor.getThreadPool()
    useDaemonThreads(pool)
    pool.stop = lambda: stop(pool)  # type: ignore[method-assign]
    return pool


class TwistedWSGIResponse(_WSGIResponse):
    """
    Twisted's WSGI response (its WSGI environment, C{start_response}, the
    status and headers set on the request), its private names given public
    ones, for L{gracesvc._apps.wsgi.WSGIResponse} to build on.

    Internals: L{_WSGIResponse}'s constructor (it keeps C{reactor},
    C{threadpool}, C{application} and C{request}, builds C{environ}, and
    adds C{_finished} to the request's C{notifyFinish}), C{start} (which
    queues C{run} in the pool), C{startResponse} (which keeps C{status} and
    C{headers}), C{started} (whether the status and headers were sent;
    thread-owned), C{_sendResponseHeaders}, and C{_finished}, the
    C{notifyFinish} callback that sets C{_requestFinished}, in the reactor
    thread, on success and failure alike, with what C{notifyFinish} fired
    with.

    @ivar requestFinished: whether the request has ended: answered, cut, or
        its connection lost (C{_requestFinished}); set in the reactor thread.
    """

    request: Request
    reactor: Any
    threadpool: ThreadPool
    environ: dict[str, Any]
    headers: list[tuple[str, str]]
    started: bool
    _requestFinished: bool

    requestFinished = False

    #: Set the status and headers the application gave C{start_response} on
    #: the request, without writing them; in the reactor thread.
    sendResponseHeaders = _WSGIResponse._sendResponseHeaders

    def _finished(self, result: object) -> None:
        self.requestFinished = self._requestFinished = True
        if isinstance(result, Failure):
            self.requestFailed(result)

    def requestFailed(self, reason: Failure) -> None:
        """
        In the reactor thread: the request ended without being answered
        (L{Request.notifyFinish} failed with C{reason}: its connection was
        lost, or the drain cut it).  Does nothing here; a subclass may.
        It sees the one C{notifyFinish} Deferred the response has, where
        another per request would cost a Deferred and a callback.
        """
