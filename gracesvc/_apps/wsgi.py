# -*- test-case-name: tests.unit.apps.test_wsgi -*-
"""
WSGI applications under the drain.

Each request runs in a thread of a pool of gracesvc's own (see
L{gracesvc._apps.threads}), and takes part in the drain as any other: the
drain waits for its connection, so a request in flight completes and is
answered.  At the cut, a request whose response has not started (still
queued for a thread, or its thread not done with C{start_response} and its
first write) gets the drain's 503, and its queued work is skipped; what its
thread writes afterwards is dropped, without a traceback.  A thread that
never returns cannot hold the process: the drain ends at the cap, and the
pool's threads are daemon threads nothing waits for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import blockingCallFromThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gracesvc._apps.threads import DEFAULT_THREADS, drainingThreadPool
from gracesvc._core.drain import Drain
from gracesvc._metrics.registry import OTHER_ROUTE, labelRoute
from gracesvc._pins.twisted_threads import TwistedWSGIResponse
from gracesvc._protocols.answers import ResponseCutAtCap

#: The route label of requests to a WSGI application that does not say
#: which route it matched.
WSGI_ROUTE = "wsgi"

#: A WSGI application: C{application(environ, start_response)}.
WSGIApplication = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def wsgiRoute(environ: dict[str, Any]) -> str:
    """
    The route label of a WSGI request whose application has matched its
    route.

    Flask records the rule it matched on its request object, which Werkzeug
    keeps in the environment until the handler returns: that rule, under
    the application's C{SCRIPT_NAME}, is the label (L{OTHER_ROUTE} if none
    matched).  Any other application is one route, L{WSGI_ROUTE}.
    """
    werkzeugRequest: Any = environ.get("werkzeug.request")
    if not hasattr(werkzeugRequest, "url_rule"):
        return WSGI_ROUTE
    rule = werkzeugRequest.url_rule
    if rule is None:
        return OTHER_ROUTE
    return str(environ.get("SCRIPT_NAME", "")) + str(rule.rule)


class _WSGIRoute:
    """
    The route label of one WSGI request (see L{labelRoute}), found in the
    thread when the application calls C{start_response}: by then it has
    matched its route, and Flask forgets its request object as its handler
    returns.

    Calling it (in the reactor thread, once the response is complete) gives
    the label: what was found, or what can be found now if the application
    never started a response (cut at the cap, say).  It keeps the WSGI
    environment, not the response: the request keeps its label, and a label
    that led back to the request would make each request a reference cycle
    for the garbage collector to find.
    """

    __slots__ = ("environ", "found")

    def __init__(self, environ: dict[str, Any]) -> None:
        self.environ = environ
        self.found: str | None = None

    def __call__(self, request: IRequest) -> str:
        return self.found if self.found is not None else wsgiRoute(self.environ)


class WSGIResponse(TwistedWSGIResponse):
    """
    Twisted's WSGI response (see L{TwistedWSGIResponse}), changed for a
    request that ends before its application does: cut at the cap by the
    drain, or its connection lost.

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

    @ivar threadStarted: whether a thread began running the application.
    @ivar threadDone: whether the thread is done with this request (or
        skipped it); set in the reactor thread.
    """

    log = Logger()

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

    def run(self) -> None:
        """
        In a pool thread: run the application, unless the request has
        already ended.
        """
        if self.requestFinished:
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
                    if self.requestFinished:
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
        if self.requestFinished:
            return
        try:
            blockingCallFromThread(self.reactor, self._writeNow, self.started, data)
        finally:
            self.started = True

    def _writeNow(self, started: bool, data: bytes) -> None:
        if self.requestFinished:
            return
        if not started:
            self.sendResponseHeaders()
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
            if self.requestFinished:
                return
            if not started:
                self.sendResponseHeaders()
            self.request.finish()
        finally:
            # _threadEnded, without a call when nobody waits (most requests).
            self.threadDone = True
            if self._threadWaiters is not None:
                self._threadEnded()

    def _failed(self, started: bool, failure: Failure) -> None:
        try:
            self.log.failure("WSGI application error", failure=failure)
            if self.requestFinished:
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


class _DrainingWSGIResponse(WSGIResponse):
    """
    The response to one request to a WSGI application under the drain: it
    finds the route label of its request (L{route}), and has the drain wait
    for the thread of a request that ended unanswered.
    """

    def __init__(
        self,
        reactor: IReactorThreads,
        threadpool: ThreadPool,
        application: WSGIApplication,
        request: Request,
        drain: Drain,
    ) -> None:
        WSGIResponse.__init__(self, reactor, threadpool, application, request)
        self.drain = drain
        self.route = _WSGIRoute(self.environ)

    def startResponse(self, *args: Any) -> Any:
        route = self.route
        if route.found is None:
            route.found = wsgiRoute(self.environ)
        return WSGIResponse.startResponse(self, *args)

    def requestFailed(self, reason: Failure) -> None:
        """
        The request ended unanswered: cut at the cap, or its connection
        lost.  A thread cut at the cap is given up on with the drain; one
        serving a client that went away is waited for.
        """
        if (
            reason.check(ResponseCutAtCap) is None
            and not self.drain.cutting
            and self.threadStarted
            and not self.threadDone
        ):
            self.drain.track(self.whenThreadDone())


@implementer(IResource)
class DrainingWSGIResource:
    """
    Serve a WSGI application from a thread pool, as L{WSGIResource <twisted.web.wsgi.WSGIResource>} does,
    under a drain (see the module docstring).

    A request whose connection is lost while its thread runs is answered by
    nobody, but its thread's work is handed to L{Drain.track}: the drain
    waits for it, within the cap.
    """

    isLeaf = True

    #: It labels each request with its route (L{labelRoute}) as it renders
    #: it: L{gracesvc._apps.compose.OperationalRoot} leaves them to it.
    labelsRoutes = True

    def __init__(
        self,
        reactor: IReactorThreads,
        threadpool: ThreadPool,
        application: WSGIApplication,
        drain: Drain,
    ) -> None:
        """
        @param reactor: where the threads hand their output to.
        @param threadpool: runs the application, one request per thread.
        @param application: the WSGI application.
        @param drain: the drain the site's connections report to.
        """
        self.reactor = reactor
        self.threadpool = threadpool
        self.application = application
        self.drain = drain

    def render(self, request: IRequest) -> object:
        response = _DrainingWSGIResponse(
            self.reactor,
            self.threadpool,
            self.application,
            cast(Request, request),
            self.drain,
        )
        labelRoute(request, response.route)
        response.start()
        return NOT_DONE_YET

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """
        Everything below this resource is the application's.
        """
        raise RuntimeError("a WSGI application has no child resources")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise RuntimeError("a WSGI application has no child resources")


def wsgiResource(
    application: WSGIApplication,
    drain: Drain,
    reactor: Any,
    threads: int = DEFAULT_THREADS,
) -> IResource:
    """
    Serve C{application} on a thread pool of its own, started when the
    reactor runs and given up on when C{drain} is done.

    @param reactor: an L{IReactorCore <twisted.internet.interfaces.IReactorCore>} and L{IReactorThreads} provider.
    @param threads: the most requests run at once; more wait in the pool's
        queue.
    @raise ValueError: C{threads} is less than 1.
    """
    pool = drainingThreadPool(reactor, drain, threads)
    resource: IResource = DrainingWSGIResource(reactor, pool, application, drain)
    return resource
