# -*- test-case-name: tests.unit.pins.test_twisted -*-
"""
Every Twisted internal gracesvc's thread support relies on, in one place.

A thread cannot be cancelled, and Twisted waits for its threads: the
reactor joins its pool in a 'during' 'shutdown' trigger, and Python joins
every non-daemon thread at exit.  One WSGI request or C{deferToThread} call
that never returns would hold the process past any cap.  And Twisted's WSGI
glue writes to a request after the drain has answered it with a 503, which
raises in the thread and logs a traceback.

Each name here reads or drives one private attribute of Twisted 26.10, says
why it is needed, and is pinned by C{tests/unit/pins/test_twisted_threads.py},
as in L{gracesvc._pins.twisted}.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
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


class WSGIResponse(_WSGIResponse):
    """
    Twisted's WSGI response (its WSGI environment, C{start_response} and
    status and header handling), changed for a request that ends before its
    application does: cut at the cap by the drain, or its connection lost.

      - A request still waiting in the pool's queue when it ends never runs
        the application.
      - What the thread writes after the end is dropped silently.  Twisted
        writes it to the finished request, which raises in the thread, ends
        the application with an error and logs a traceback.
      - The application's iterable is closed whatever happens, as PEP 3333
        asks (Twisted closes it only on success).
      - L{whenThreadDone} fires in the reactor thread once the thread is
        done with the request, so that its work can be waited for.
      - L{requestFailed} is called when the request ends unanswered.

    Internals: L{_WSGIResponse}'s constructor and C{start} (which queues
    C{run} in the pool), C{environ}, C{application}, C{startResponse},
    C{_sendResponseHeaders}, C{started} (whether the status and headers were
    sent; thread-owned), C{_requestFinished} and C{_finished} (the
    C{notifyFinish} callback that sets it, in the reactor thread, on
    success and failure alike, with what C{notifyFinish} fired with).

    @ivar threadStarted: whether a thread began running the application.
    @ivar threadDone: whether the thread is done with this request (or
        skipped it); set in the reactor thread.
    """

    _log = Logger()

    request: Request
    reactor: Any
    environ: dict[str, Any]
    started: bool
    _requestFinished: bool

    threadStarted = False
    threadDone = False
    # Made only for those who wait (see whenThreadDone): most requests end
    # with nobody waiting, and then need no Deferred.
    _threadWaiters: list[Deferred[None]] | None = None
    #: the Content-Length the application declared, once it started.
    _length: int | None = None

    def whenThreadDone(self) -> Deferred[None]:
        """
        @return: a Deferred that fires with L{None} in the reactor thread
            once the thread is done with this request (or skipped it); at
            once if it is.
        """
        done: Deferred[None] = Deferred()
        if self.threadDone:
            done.callback(None)
        elif self._threadWaiters is None:
            self._threadWaiters = [done]
        else:
            self._threadWaiters.append(done)
        return done

    def _threadEnded(self) -> None:
        """
        In the reactor thread: the thread is done with this request.
        """
        self.threadDone = True
        waiters, self._threadWaiters = self._threadWaiters, None
        for done in waiters or ():
            done.callback(None)

    def _finished(self, result: object) -> None:
        self._requestFinished = True
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

    @property
    def requestFinished(self) -> bool:
        """
        Whether the request has ended: answered, cut, or its connection lost.
        """
        return self._requestFinished

    def run(self) -> None:
        """
        In a pool thread: run the application, unless the request has
        already ended.
        """
        if self._requestFinished:
            self.reactor.callFromThread(self._threadEnded)
            return
        self.threadStarted = True
        # The application's last hand-over to the reactor (_succeeded or
        # _failed) also ends the thread's part: one wake-up of the reactor
        # fewer per request than a call of its own.
        self._runApplication()

    def _runApplication(self) -> None:
        try:
            appIterator = self.application(self.environ, self.startResponse)
            try:
                for chunk in appIterator:
                    if chunk:
                        self.write(chunk)
                    if self._requestFinished:
                        break
            finally:
                close = getattr(appIterator, "close", None)
                if close is not None:
                    close()
        except BaseException:
            self.reactor.callFromThread(self._failed, self.started, Failure())
        else:
            self.reactor.callFromThread(self._succeeded, self.started)
        self.started = True

    def write(self, data: bytes) -> None:
        """
        The WSGI C{write} callable, in a pool thread: hand C{data} to the
        reactor and wait until it is written, or drop it if the request has
        ended.
        """
        if self._requestFinished:
            return
        try:
            blockingCallFromThread(self.reactor, self._writeNow, self.started, data)
        finally:
            self.started = True

    def _writeNow(self, started: bool, data: bytes) -> None:
        if self._requestFinished:
            return
        if not started:
            self._sendResponseHeaders()
            self._length = _contentLength(self.headers)
        self.request.write(data)
        if self._length is not None and self.request.sentLength >= self._length:
            # The whole body is written: finish now, in this reactor turn,
            # not once the thread has closed the app's iterable.  A client
            # that has read the body may close at once, and the response
            # would go unlogged and uncounted though it was delivered.
            self.request.finish()

    def _succeeded(self, started: bool) -> None:
        try:
            if self._requestFinished:
                return
            if not started:
                self._sendResponseHeaders()
            self.request.finish()
        finally:
            # _threadEnded, without a call when nobody waits (most requests).
            self.threadDone = True
            if self._threadWaiters is not None:
                self._threadEnded()

    def _failed(self, started: bool, failure: Failure) -> None:
        try:
            self._log.failure("WSGI application error", failure=failure)
            if self._requestFinished:
                return
            if started:
                self.request.loseConnection()
            else:
                self.request.setResponseCode(500)
                self.request.finish()
        finally:
            self._threadEnded()


def _contentLength(headers: Iterable[tuple[str, str]]) -> int | None:
    """
    @return: the C{Content-Length} among a WSGI application's response
        headers, if it declared a valid one.
    """
    for name, value in headers:
        if name.lower() == "content-length" and value.isdigit():
            return int(value)
    return None
