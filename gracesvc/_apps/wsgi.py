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

from twisted.internet.interfaces import IReactorThreads
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gracesvc._apps.threads import DEFAULT_THREADS, drainedThreadPool
from gracesvc._core.drain import Drain
from gracesvc._metrics.registry import OTHER_ROUTE, labelRoute
from gracesvc._pins.twisted_threads import WSGIResponse
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


class _DrainedWSGIResponse(WSGIResponse):
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
class DrainedWSGIResource:
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
        response = _DrainedWSGIResponse(
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
    pool = drainedThreadPool(reactor, drain, threads)
    resource: IResource = DrainedWSGIResource(reactor, pool, application, drain)
    return resource
