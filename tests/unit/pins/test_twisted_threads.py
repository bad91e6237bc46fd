"""
Pins for every Twisted internal gracesvc's thread support relies on
(L{gracesvc._pins.twisted_threads}).

Each test names the internal in its first line.  If one fails after a
Twisted upgrade, a stuck thread may hold the process past the cap, or a
cut WSGI request may log tracebacks: read the function of
L{gracesvc._pins.twisted_threads} it pins, and adapt it to the new Twisted.

A few of these run real threads: each waits on an event the test sets, never
on wall time.
"""

from __future__ import annotations

import threading
from io import BytesIO
from typing import cast

from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IReactorThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from twisted.web.wsgi import _WSGIResponse

from gracesvc._apps.wsgi import WSGIResponse
from gracesvc._pins import twisted_threads as _twisted_threads
from tests.support.threadfakes import (
    PATIENCE,
    ManualThreadPool,
    Reactor,
    ThreadsInline,
    blockedPool,
)


class ThreadPoolTests(SynchronousTestCase):
    def test_threadFactoryMakesEveryThread(self) -> None:
        """
        C{ThreadPool.threadFactory}: called with C{target} and C{name} for
        every thread; L{_twisted_threads.useDaemonThreads} makes them
        daemons.
        """
        pool, release = blockedPool(self)
        self.assertEqual(len(pool.threads), 1)
        self.assertTrue(pool.threads[0].daemon)
        self.assertTrue(pool.threads[0].name.startswith("PoolThread-pinned-"))

    def test_stopJoinsBusyThreads(self) -> None:
        """
        C{ThreadPool.stop} waits for busy threads, and
        C{ThreadPool.working} counts them: L{_twisted_threads.stopWithin}
        gives up on them instead.
        """
        pool, release = blockedPool(self)
        self.assertEqual(len(pool.working), 1)
        self.assertEqual(_twisted_threads.stopWithin(pool, 0.0), 1)
        release.set()
        for thread in threading.enumerate():
            if thread.name == "gracesvc-pool-stop":
                thread.join(PATIENCE)
        self.assertTrue(pool.joined)
        self.assertFalse(pool.threads[0].is_alive())

    def test_stopWithinReturnsOnceStopped(self) -> None:
        """
        With no thread busy, L{_twisted_threads.stopWithin} returns as soon as
        the pool has stopped.
        """
        pool = ThreadPool(1, 1)
        pool.start()
        self.assertEqual(_twisted_threads.stopWithin(pool, PATIENCE), 0)
        self.assertFalse(any(t.is_alive() for t in pool.threads))


class ReactorThreadPoolTests(SynchronousTestCase):
    def test_shutdownCallsThePoolsStop(self) -> None:
        """
        C{ReactorBase.getThreadPool} and C{_stopThreadPool}: the pool
        starts its threads when the reactor runs, and a 'during' 'shutdown'
        trigger calls the pool's C{stop()}: what
        L{_twisted_threads.replaceReactorPoolStop} replaces.
        """
        reactor = Reactor()
        stopped: list[ThreadPool] = []
        pool = _twisted_threads.replaceReactorPoolStop(
            cast(IReactorThreads, reactor), stopped.append
        )
        self.assertIs(pool, reactor.getThreadPool())
        self.assertFalse(pool.started)
        self.assertIs(pool.threadFactory, _twisted_threads.daemonThread)
        reactor.fireSystemEvent("startup")
        self.assertTrue(pool.started)
        reactor.fireSystemEvent("shutdown")
        self.assertEqual(stopped, [pool])
        self.assertIsNone(reactor.threadpool)
        ThreadPool.stop(pool)


class WSGIResponseTests(SynchronousTestCase):
    """
    The internals of Twisted's WSGI response that
    L{_twisted_threads.TwistedWSGIResponse} names, through the response
    built on it.
    """

    def response(self) -> tuple[WSGIResponse, Request]:
        request = Request(cast(HTTPChannel, DummyChannel()))
        request.method = b"GET"
        request.uri = request.path = b"/a"
        request.clientproto = b"HTTP/1.1"
        request.prepath, request.postpath = [], [b"a"]
        request.content = BytesIO()
        response = WSGIResponse(
            cast(IReactorThreads, ThreadsInline()),
            cast(ThreadPool, ManualThreadPool()),
            lambda environ, startResponse: startResponse("200 OK", []) and [],
            request,
        )
        return response, request

    def test_constructorAndState(self) -> None:
        """
        C{_WSGIResponse.__init__(reactor, threadpool, application,
        request)}: keeps them as C{reactor}, C{threadpool}, C{application}
        and C{request}, builds C{environ}, and starts with C{started} and
        C{_requestFinished} false.
        """
        response, request = self.response()
        self.assertIsInstance(response, _WSGIResponse)
        self.assertIs(response.request, request)
        self.assertEqual(response.environ["PATH_INFO"], "/a")
        self.assertFalse(response.started)
        self.assertFalse(response.requestFinished)

    def test_requestFinishedOnSuccessAndFailure(self) -> None:
        """
        C{_WSGIResponse._requestFinished}: set by its C{notifyFinish}
        callback when the request finishes, and when it fails.
        """
        response, request = self.response()
        request.finish()
        self.assertTrue(response.requestFinished)
        response, request = self.response()
        request.connectionLost(Failure(ConnectionLost()))
        self.assertTrue(response.requestFinished)

    def test_finishedHearsHowTheRequestEnded(self) -> None:
        """
        C{_WSGIResponse._finished}: the C{notifyFinish} callback, called
        with L{None} when the request is answered and with the L{Failure}
        when it ends unanswered; only the failure reaches C{requestFailed}.
        """
        failed: list[Failure] = []
        response, request = self.response()
        self.patch(response, "requestFailed", failed.append)
        request.finish()
        self.assertEqual(failed, [])
        response, request = self.response()
        self.patch(response, "requestFailed", failed.append)
        request.connectionLost(Failure(ConnectionLost()))
        self.assertEqual(len(failed), 1)
        self.assertIsInstance(failed[0].value, ConnectionLost)

    def test_startQueuesRun(self) -> None:
        """
        C{_WSGIResponse.start}: queues C{self.run} in the thread pool.
        """
        response, _ = self.response()
        pool = cast(ManualThreadPool, response.threadpool)
        response.start()
        self.assertEqual(len(pool.queue), 1)
        pool.runNext()
        self.assertTrue(response.threadStarted)
        self.assertTrue(response.threadDone)

    def test_startResponseAndSendHeaders(self) -> None:
        """
        C{_WSGIResponse.startResponse} keeps the status and headers, and
        C{_sendResponseHeaders} sets them on the request.
        """
        response, request = self.response()
        response.startResponse("201 Made", [("X-Test", "yes")])
        self.assertEqual(response.headers, [("X-Test", "yes")])
        response.sendResponseHeaders()
        self.assertEqual(request.code, 201)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"x-test"), [b"yes"])
