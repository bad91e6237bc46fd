"""
A real Flask application under the drain, in memory: its "threads" run
when the test says (L{ManualThreadPool}), and its handlers call back into
the test while they run, to do what the reactor does meanwhile.
"""

from __future__ import annotations

import gc
import weakref
from collections.abc import Callable, Iterable, Iterator
from io import BytesIO
from typing import Any, cast

from flask import Flask
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import ILogObserver, LogEvent, globalLogPublisher
from twisted.python.threadpool import ThreadPool
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel
from zope.interface import provider

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.wsgi import (
    DrainingWSGIResource,
    WSGIApplication,
    WSGIResponse,
    wsgiRoute,
)
from gracesvc.testing import Client, Wire, get, samples
from tests.apps.flaskapp import makeApp
from tests.support.threadfakes import ManualThreadPool, ThreadsInline

#: Past the cut (the default cap, 5 s, less the cut's lead of 0.1 s), before
#: the cap.
CUT = 4.95


class WSGIResponseTests(SynchronousTestCase):
    """
    One response on its own: a request, a pool whose thread runs when the
    test says.
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

    def test_whenThreadDone(self) -> None:
        """
        L{WSGIResponse.whenThreadDone} fires once the thread is done with the
        request, or at once if it is already.
        """
        response, _ = self.response()
        pool = cast(ManualThreadPool, response.threadpool)
        response.start()
        waiting = [response.whenThreadDone(), response.whenThreadDone()]
        for d in waiting:
            self.assertNoResult(d)
        pool.runNext()
        for d in waiting:
            self.assertIsNone(self.successResultOf(d))
        self.assertIsNone(self.successResultOf(response.whenThreadDone()))


class WSGITestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.failures: list[LogEvent] = []

        @provider(ILogObserver)
        def observe(event: LogEvent) -> None:
            if "log_failure" in event:
                self.failures.append(event)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        self.pool = ManualThreadPool()
        self.flask = makeApp()
        self.during: list[str] = []
        self.hooks: dict[str, Callable[[], object]] = {}

        def during(where: str) -> None:
            self.during.append(where)
            hook = self.hooks.pop(where, None)
            if hook is not None:
                hook()

        self.flask.config["DURING"] = during
        self.wire = self.serve(self.flask)

    def serve(self, application: WSGIApplication | Flask) -> Wire:
        def root(wire: Wire) -> Any:
            resource = DrainingWSGIResource(
                ThreadsInline(),  # type: ignore[arg-type]
                self.pool,  # type: ignore[arg-type]
                application,
                wire.drain,
            )
            return withOperationalRoutes(resource, wire.drain, wire.metrics)

        return Wire(resource=root)

    def runThread(self) -> None:
        """
        A thread takes the oldest request queued, and runs it to the end.
        """
        self.pool.runNext()
        self.wire.flush()

    def route(self, route: str, code: int) -> float:
        scraped = samples(self.wire.metrics.exposition())
        return scraped.get(
            ("gracesvc_requests_total", (("code", str(code)), ("route", route))), 0
        )


class InFlightTests(WSGITestCase):
    def test_served(self) -> None:
        client = self.wire.connect()
        client.send(get("/hello"))
        self.assertEqual(client.responses, [])
        self.runThread()
        [response] = client.responses
        self.assertEqual((response.code, response.body), (200, b"hello from flask\n"))
        self.assertEqual(self.failures, [])

    def test_answeredRequestIsNoReferenceCycle(self) -> None:
        """
        An answered request is freed as soon as nothing refers to it,
        without the garbage collector: a cycle per request (a route label
        that leads back to the request, say) has the collector run about
        four times as often.
        """
        requests: list[weakref.ref[IRequest]] = []

        class Recording(DrainingWSGIResource):
            def render(self, request: IRequest) -> object:
                requests.append(weakref.ref(request))
                return super().render(request)

        self.wire = Wire(
            resource=lambda wire: Recording(
                ThreadsInline(),  # type: ignore[arg-type]
                self.pool,  # type: ignore[arg-type]
                self.flask,
                wire.drain,
            )
        )
        gc.disable()
        self.addCleanup(gc.enable)
        client = self.wire.connect()
        client.send(get("/hello"))
        self.runThread()
        self.assertEqual([r.code for r in client.responses], [200])
        [request] = requests
        self.assertIsNone(request())

    def test_wholeBodyWrittenFinishesTheResponseAtOnce(self) -> None:
        """
        A response whose body reaches its C{Content-Length} is finished with
        its last write, not once the thread has closed the app's iterable: a
        client that reads it all and closes meanwhile still counts as
        answered.
        """
        clients: list[Client] = []

        class Body:
            def __iter__(self) -> Iterator[bytes]:
                yield b"12345"

            def close(self) -> None:
                clients[0].close()

        def app(environ: object, startResponse: Any) -> Body:
            startResponse("200 OK", [("Content-Length", "5")])
            return Body()

        self.wire = self.serve(app)
        clients.append(self.wire.connect())
        clients[0].send(get("/x"))
        self.runThread()
        [response] = clients[0].responses
        self.assertEqual(response.body, b"12345")
        self.assertTrue(clients[0].closed)
        self.assertEqual(self.route("wsgi", 200), 1)
        self.assertEqual(self.failures, [])

    def test_inFlightRequestCompletes(self) -> None:
        """
        A request whose thread is running when the drain starts is answered
        in full, with C{Connection: close}, and the drain ends with it.
        """
        client = self.wire.connect()
        client.send(get("/hello"))
        self.hooks["hello"] = self.wire.drain.start
        done = self.wire.drain.whenDone()
        self.runThread()
        self.wire.flush()
        [response] = client.responses
        self.assertEqual((response.code, response.body), (200, b"hello from flask\n"))
        self.assertEqual(response.headers[b"connection"], b"close")
        self.successResultOf(done)
        self.assertEqual(self.wire.drain.completedDuringDrain, 1)

    def test_queuedRequestCompletesBeforeTheCut(self) -> None:
        """
        A request still waiting for a thread when the drain starts is served
        once a thread takes it, if that is before the cut.
        """
        client = self.wire.connect()
        client.send(get("/users/7"))
        done = self.wire.drain.start()
        self.wire.advance(3)
        self.assertNoResult(done)
        self.runThread()
        self.wire.flush()
        [response] = client.responses
        self.assertEqual((response.code, response.body), (200, b'{"id":7}\n'))
        self.successResultOf(done)


class CutTests(WSGITestCase):
    def test_queuedRequestCutAndSkipped(self) -> None:
        """
        A request still queued at the cut gets the 503; when a thread takes
        it later, the application is not called.
        """
        client = self.wire.connect()
        client.send(get("/hello"))
        done = self.wire.drain.start()
        self.wire.advance(CUT)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.runThread()
        self.assertEqual(self.during, [])
        self.assertEqual(self.failures, [])
        self.assertEqual(self.wire.drain.requestsCut, 1)

    def test_startedThreadCutAndOutputDropped(self) -> None:
        """
        A request whose thread is running but has not written at the cut gets
        the 503; what the thread writes afterwards is dropped, without a
        traceback.
        """
        client = self.wire.connect()
        client.send(get("/hello"))
        done = self.wire.drain.start()
        self.hooks["hello"] = lambda: self.wire.advance(CUT)
        self.runThread()
        self.wire.flush()
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertNotIn(b"hello from flask", client.protocol.data)
        self.successResultOf(done)
        self.assertEqual(self.failures, [])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_streamingResponseAbortedAndRestDropped(self) -> None:
        """
        A response already streaming at the cut is aborted; the thread's
        later chunks go nowhere, without a traceback.
        """
        client = self.wire.connect()
        client.send(get("/started"))
        done = self.wire.drain.start()
        self.hooks["started"] = lambda: self.wire.advance(CUT)
        self.runThread()
        self.wire.flush()
        self.assertIn(b"first\n", client.protocol.data)
        self.assertNotIn(b"second\n", client.protocol.data)
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(self.failures, [])

    def test_stuckThreadDoesNotHoldTheDrain(self) -> None:
        """
        A thread that never returns (its work never run here) does not keep
        the drain past its cap: its request is cut.
        """
        client = self.wire.connect()
        client.send(get("/hello"))
        self.pool.queue.clear()
        done = self.wire.drain.start()
        self.wire.advance(5)
        self.successResultOf(done)
        self.assertEqual(client.responses[0].code, 503)


class ErrorTests(WSGITestCase):
    def setUp(self) -> None:
        super().setUp()
        # Flask answers its handlers' errors with a 500 of its own, and logs
        # them with logging; this hands them to the WSGI server instead.
        self.flask.config["PROPAGATE_EXCEPTIONS"] = True

    def test_applicationErrorIs500AndLogged(self) -> None:
        client = self.wire.connect()
        client.send(get("/fails"))
        self.runThread()
        [response] = client.responses
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_errorAfterTheCutLoggedNotAnswered(self) -> None:
        """
        An application error after its request was cut is logged; the
        request, already answered, is left alone.
        """
        client = self.wire.connect()
        client.send(get("/fails"))
        self.wire.drain.start()
        self.hooks["fails"] = lambda: self.wire.advance(CUT)
        self.runThread()
        self.wire.flush()
        self.assertEqual([r.code for r in client.responses], [503])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_iterableClosedOnError(self) -> None:
        """
        The application's iterable is closed when iterating it fails, as
        PEP 3333 asks (Twisted's own WSGI support does not).
        """
        closed: list[bool] = []

        class Body:
            def __iter__(self) -> Any:
                raise ValueError("broken body")

            def close(self) -> None:
                closed.append(True)

        def application(environ: dict[str, Any], startResponse: Any) -> Iterable[bytes]:
            startResponse("200 OK", [])
            return Body()

        wire = self.serve(application)
        wire.connect().send(get("/"))
        self.runThread()
        self.assertEqual(closed, [True])
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)


class LostClientTests(WSGITestCase):
    def test_drainWaitsForTheThreadOfALostClient(self) -> None:
        """
        A client that goes away while its request's thread runs: nobody is
        answered, but the drain waits for the thread's work, within the cap.
        """
        client = self.wire.connect()
        client.send(get("/hello"))
        done = self.wire.drain.start()

        def lost() -> None:
            client.close()
            self.assertEqual(self.wire.drain.connections, 0)
            self.assertEqual(self.wire.drain.pendingWork, 1)
            self.assertNoResult(done)

        self.hooks["hello"] = lost
        self.runThread()
        self.successResultOf(done)
        self.assertEqual(self.wire.drain.abandoned, 0)
        self.assertEqual(self.failures, [])

    def test_clientLostBeforeTheThreadStartsSkipsTheApplication(self) -> None:
        client = self.wire.connect()
        client.send(get("/hello"))
        client.close()
        self.runThread()
        self.assertEqual(self.during, [])
        self.assertEqual(self.wire.drain.pendingWork, 0)


class RouteTests(WSGITestCase):
    def test_flaskRuleIsTheRoute(self) -> None:
        """
        Flask's matched rule labels the request; a path it does not match
        is C{other}; gracesvc's own paths are theirs.
        """
        client = self.wire.connect()
        client.send(get("/users/7") + get("/users/8"))
        self.runThread()
        self.runThread()
        client.send(get("/nope"))
        self.runThread()
        client.send(get("/healthz"))
        self.assertEqual(self.route("/users/<int:userID>", 200), 2)
        self.assertEqual(self.route("other", 404), 1)
        self.assertEqual(self.route("/healthz", 200), 1)

    def test_plainWSGIIsOneRoute(self) -> None:
        def application(environ: dict[str, Any], startResponse: Any) -> list[bytes]:
            startResponse("200 OK", [("Content-Length", "2")])
            return [b"ok"]

        self.wire = self.serve(application)
        client = self.wire.connect()
        client.send(get("/a/1") + get("/b/2"))
        self.runThread()
        self.runThread()
        self.assertEqual(self.route("wsgi", 200), 2)

    def test_routeUnderScriptName(self) -> None:
        """
        Mounted below the root, Flask's rule is under the application's
        C{SCRIPT_NAME}.
        """

        class Rule:
            rule = "/users/<int:userID>"

        class FlaskRequest:
            url_rule = Rule()

        environ = {"SCRIPT_NAME": "/api", "werkzeug.request": FlaskRequest()}
        self.assertEqual(wsgiRoute(environ), "/api/users/<int:userID>")
        FlaskRequest.url_rule = None  # type: ignore[assignment]
        self.assertEqual(wsgiRoute(environ), "other")
        self.assertEqual(wsgiRoute({}), "wsgi")
