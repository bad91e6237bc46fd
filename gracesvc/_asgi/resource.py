# -*- test-case-name: tests.unit.asgi.test_resource -*-
"""
ASGI over Twisted's L{Request}: the resource that serves an ASGI
application's HTTP requests on a L{gracesvc._protocols.site.DrainingSite},
HTTP/2 streams among them, behind gracesvc's C{/healthz}, C{/readyz} and
C{/metrics} (see L{gracesvc._apps.compose}).  A WebSocket upgrade is handed
to L{gracesvc._asgi.websocket}.

Each request is one L{HTTPCycle}: the application's call, in a task of its
own, and its C{receive} and C{send}:

  - the scope is the specification's (HTTP 2.3, see
    L{gracesvc._asgi.spec.HTTP_ASGI}), its C{state} a shallow copy of the
    lifespan's;
  - the request body comes from a L{gracesvc._asgi.body.BodySource}:
    under HTTP/2, a request whose body follows its HEADERS is dispatched
    then, and its body handed out as its DATA arrives, the stream paused
    past L{gracesvc._asgi.body.HIGH_WATER} bytes not yet received (see
    L{gracesvc._asgi.h2stream}); otherwise (a C{GET}, or HTTP/1.1 through
    Twisted) the body Twisted has read whole is handed out in chunks of at
    most L{gracesvc._asgi.body.BODY_CHUNK} bytes; a client gone mid-body
    is C{http.disconnect};
  - C{http.response.start} is held until the first body (so that an error
    in between is still a clean 500, and a response of one body gets a
    C{Content-Length}), except for an event stream, whose headers go out at
    once;
  - a body C{send} returns once its bytes are written, and waits while the
    connection cannot take more (TLS, HTTP/1.1 and HTTP/2 flow control
    alike: the cycle is the request's push producer);
  - C{http.disconnect} when the client goes away (an HTTP/2 C{RST_STREAM}
    reaches only its own stream's application), on any C{receive} after the
    response is complete, and after the server ended an event stream;
    sends are no-ops from then on.

An error is answered as uvicorn answers it: a raise (or a return) before the
response started is a 500, after it an abort (the HTTP/1.1 connection
closed mid-body, an HTTP/2 stream reset), each logged once.  A
C{CancelledError} is never logged as an error.

The drain, per kind of response:

  - ordinary requests in flight complete, and are told nothing;
  - an event stream (C{text/event-stream}) is ended by the server when the
    drain goes away: a goodbye if the body is between two events (see
    L{gracesvc._asgi.streams}), the end of the body, and C{http.disconnect}
    to the application;
  - a request for an event stream that arrives during the drain gets only
    a C{retry:} without reaching the application;
  - at the cut the connection answers 503 with C{Retry-After} where no
    response started and aborts where one did; then the application's task
    is cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, MutableMapping
from enum import Enum
from random import Random
from typing import TYPE_CHECKING, Any, cast

from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure
from twisted.web.http import RESPONSES, Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import NOT_DONE_YET
from zope.interface import implementer

from gracesvc._asgi.app import ASGIApp, routeOf
from gracesvc._asgi.body import BodySource, SpooledBody
from gracesvc._asgi.h2stream import StreamingRequest
from gracesvc._asgi.scopes import httpScope
from gracesvc._asgi.streams import EventBoundary, goodbye, isEventStream
from gracesvc._asgi.websocket import serveUpgrade
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._metrics.registry import labelRoute
from gracesvc._protocols.answers import (
    ResponseCutAtCap,
    acceptsEventStream,
    answerEventStreamRetry,
    answerServiceUnavailable,
    isWebSocketUpgrade,
)
from gracesvc._protocols.site import longLivedHostOf
from gracesvc._protocols.websocket import WebSocketPolicy

if TYPE_CHECKING:
    from gracesvc._asgi.lifespan import Lifespan

#: Response headers that are the server's to write: the framing, which
#: Twisted does, and on HTTP/2 those a connection-specific header that h2
#: refuses (RFC 9113 section 8.2.2).
_FRAMING = frozenset([b"transfer-encoding"])
_CONNECTION_SPECIFIC = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"transfer-encoding",
        b"upgrade",
    ]
)

_NO_BODY_CODES = frozenset([204, 304])

_DISCONNECT: dict[str, Any] = {"type": "http.disconnect"}

_INTERNAL_ERROR_BODY = b"Internal Server Error\n"

log = Logger()

_random = Random()


class CycleState(Enum):
    """
    Where one request's response is.
    """

    #: the application runs, and has not started its response.
    WAITING = "waiting"
    #: the response has started; its body is under way.
    STARTED = "started"
    #: the response is complete (the application may still run: its
    #: background tasks).
    COMPLETE = "complete"
    #: the server ended the response itself: an event stream when the
    #: drain went away.
    ENDED = "ended"
    #: the client went away, or the drain cut the request.
    GONE = "gone"


_WAITING, _STARTED, _COMPLETE, _ENDED, _GONE = CycleState
_OVER = frozenset([_COMPLETE, _ENDED, _GONE])


class _ScopeRoute:
    """
    The route label of one request (see L{labelRoute}): what the framework
    left in its scope, read once the response is complete.  It keeps the
    scope, not the request, so that a request is no reference cycle.
    """

    __slots__ = ("scope",)

    def __init__(self, scope: MutableMapping[str, Any]) -> None:
        self.scope = scope

    def __call__(self, request: IRequest) -> str:
        return routeOf(self.scope)


@implementer(IPushProducer)
class HTTPCycle:
    """
    One HTTP request to an ASGI application and its response (see the
    module docstring).

    @ivar state: where the response is.
    @ivar task: the application's task, once started.
    """

    def __init__(
        self,
        request: Request,
        scope: MutableMapping[str, Any],
        app: ASGIApp,
        drain: Drain,
        streamGrace: float = 1.0,
        body: BodySource | None = None,
    ) -> None:
        """
        @param streamGrace: how long the application of an event stream the
            server ended has, once told C{http.disconnect}, to return before
            its task is cancelled.
        @param body: where the request's body comes from: streamed as it
            arrives (HTTP/2), or, if L{None}, the request's C{content},
            which Twisted has read whole.
        """
        self.request = request
        self.scope = scope
        self.app = app
        self.drain = drain
        self.state = _WAITING
        self.task: asyncio.Task[None] | None = None
        self._http2 = request.clientproto == b"HTTP/2"
        self._requestBody: BodySource = (
            SpooledBody(request.content) if body is None else body
        )
        self._status = 200
        self._headers: list[tuple[bytes, bytes]] = []
        self._length: int | None = None
        self._sent = 0
        self._stream: EventBoundary | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._producing = False
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._disconnected: asyncio.Future[None] | None = None
        self._streamGrace = streamGrace
        self._cancelCall: IDelayedCall | None = None

    def start(self) -> None:
        """
        Run the application on this request.
        """
        request = self.request
        labelRoute(request, _ScopeRoute(self.scope))
        request.notifyFinish().addErrback(self._gone)
        self.task = self.app.run(
            self.app.application(self.scope, self.receive, self.send)  # type: ignore[arg-type]
        )
        self.task.add_done_callback(self._taskDone)

    # receive

    async def receive(self) -> MutableMapping[str, Any]:
        """
        The application's C{receive}: the body, then C{http.disconnect}
        once there is a reason for one.
        """
        body = self._requestBody
        while not body.exhausted:
            message = body.take()
            if message is not None:
                return message
            await body.arrival(self.app.loop)
        if self.state in _OVER:
            return _DISCONNECT
        waiter = self._disconnected
        if waiter is None:
            waiter = self._disconnected = self.app.loop.create_future()
        await waiter
        return _DISCONNECT

    # send

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """
        The application's C{send}.

        @raise RuntimeError: a message that is not an HTTP response's, or
            out of order; a body longer than its C{Content-Length}.
        """
        kind = message.get("type")
        if kind == "http.response.body":
            if self.state is _STARTED:
                await self._body(message)
                return
            if self.state is _WAITING:
                raise RuntimeError(
                    "ASGI message 'http.response.body' sent before "
                    "'http.response.start'"
                )
        elif kind == "http.response.start":
            if self.state is _WAITING:
                self._start(message)
                return
        else:
            raise RuntimeError(f"unexpected ASGI message {kind!r} for an HTTP request")
        if self.state is _COMPLETE:
            raise RuntimeError(
                f"ASGI message {kind!r} sent after the response was complete"
            )
        if self.state is _STARTED:
            raise RuntimeError("ASGI message 'http.response.start' sent twice")
        # ENDED or GONE: the client is not listening any more.

    def _start(self, message: MutableMapping[str, Any]) -> None:
        status = int(message["status"])
        headers = [
            (bytes(name), bytes(value)) for name, value in message.get("headers", ())
        ]
        self._status = status
        self._headers = headers
        self.state = _STARTED
        if isEventStream(headers):
            self._stream = EventBoundary()
            self._writeHeaders(None)
            self.request.write(b"")
            host = longLivedHostOf(self.request)
            if host is not None:
                host.longResponseStarted(self.request, "stream")
            self._unsubscribe = self.drain.whenGoingAway(self._goingAway)

    def _writeHeaders(self, wholeBody: bytes | None) -> None:
        """
        Give the request the response's status and headers, to be written
        with its first bytes.

        @param wholeBody: the whole body, when the first body is the last:
            its length is the C{Content-Length}, if the application gave none.
        """
        request = self.request
        status = self._status
        request.setResponseCode(status, RESPONSES.get(status, b"Unknown"))
        request.defaultContentType = None  # type: ignore[attr-defined]
        responseHeaders = request.responseHeaders
        dropped = _CONNECTION_SPECIFIC if self._http2 else _FRAMING
        ownDefaults = True
        for name, value in self._headers:
            lowered = name.lower()
            if lowered in dropped:
                continue
            if lowered == b"content-length":
                try:
                    self._length = int(value)
                except ValueError:
                    raise RuntimeError(
                        f"invalid Content-Length {value!r} in the response"
                    ) from None
            elif ownDefaults and lowered in (b"server", b"date"):
                # Twisted's own Server and Date give way to the application's.
                ownDefaults = False
                responseHeaders.removeHeader(b"server")
                responseHeaders.removeHeader(b"date")
            responseHeaders.addRawHeader(name, value)
        if (
            wholeBody is not None
            and self._length is None
            and request.method != b"HEAD"
            and status not in _NO_BODY_CODES
            and status >= 200
        ):
            self._length = len(wholeBody)
            responseHeaders.setRawHeaders(
                b"content-length", [b"%d" % (len(wholeBody),)]
            )

    async def _body(self, message: MutableMapping[str, Any]) -> None:
        body = bytes(message.get("body", b""))
        more = bool(message.get("more_body", False))
        request = self.request
        if not request.startedWriting:
            self._writeHeaders(None if more else body)
        length = self._length
        if length is not None and self._sent + len(body) > length:
            raise RuntimeError("response body longer than its Content-Length")
        self._sent += len(body)
        stream = self._stream
        if stream is not None:
            stream.wrote(body)
        if more:
            if body or not request.startedWriting:
                request.write(body)
            if not self._producing and self.state is _STARTED:
                self._producing = True
                request.registerProducer(self, True)
            while self._paused and self.state is _STARTED:
                waiter = self._resumed
                if waiter is None:
                    waiter = self._resumed = self.app.loop.create_future()
                await waiter
            return
        if length is not None and self._sent < length and request.method != b"HEAD":
            raise RuntimeError("response body shorter than its Content-Length")
        if body or not request.startedWriting:
            request.write(body)
        self._complete(_COMPLETE)

    def _complete(self, state: CycleState) -> None:
        """
        Finish the response: its body is all written.
        """
        self._stopListening()
        self.state = state
        request = self.request
        if self._producing:
            self._producing = False
            request.unregisterProducer()
        request.finish()
        self._wake()

    # IPushProducer: the connection's flow control.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiter, self._resumed = self._resumed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stopProducing(self) -> None:
        self._paused = False
        self._wake()

    # The drain, the client, the application's end.

    def _goingAway(self) -> None:
        """
        The drain goes away: end the event stream, with a goodbye if the
        body is between two events, then tell the application.
        """
        self._unsubscribe = None
        if self.state is not _STARTED:
            return
        stream = self._stream
        if stream is not None and stream.atBoundary:
            self.request.write(goodbye())
        self._complete(_ENDED)
        task = self.task
        if task is not None and not task.done():
            # Told it is over: it has the grace to return, then it is
            # cancelled, rather than hold the drain until the cut.
            self._cancelCall = self.drain.clock.callLater(
                self._streamGrace, task.cancel
            )

    def _gone(self, reason: Failure) -> None:
        """
        The request ended unanswered by the application: its client went
        away, or the drain cut it (answered 503, or aborted).
        """
        self._stopListening()
        self.state = _GONE
        self._producing = False
        self._wake()
        task = self.task
        if task is not None and (reason.check(ResponseCutAtCap) or self.drain.cutting):
            task.cancel()

    def _stopListening(self) -> None:
        """
        The response is over, or the client gone: no more of the body is
        taken, and the drain's going away is no concern of this request's.
        """
        self._requestBody.close()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()

    def _wake(self) -> None:
        for waiter in (self._disconnected, self._resumed):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        self._resumed = None

    def _taskDone(self, task: asyncio.Task[None]) -> None:
        cancelCall(self._cancelCall)
        self._cancelCall = None
        state = self.state
        if task.cancelled():
            if state is _WAITING or state is _STARTED:
                self._abort()
            return
        error = task.exception()
        if error is not None:
            if state is _GONE:
                # Its client had left: what it raised then is no server error.
                log.info(
                    "ASGI application raised after its client left: {error}",
                    error=_describe(error),
                )
                return
            log.failure(
                "Exception in ASGI application",
                failure=Failure(error, type(error), error.__traceback__),
                level=LogLevel.error,
            )
        elif state is _WAITING:
            log.error("ASGI application returned without starting a response")
        elif state is _STARTED:
            log.error("ASGI application returned without completing its response")
        if state is _WAITING or (state is _STARTED and not self.request.startedWriting):
            # Nothing written yet (the start is held until the first body):
            # still time for a clean 500.
            self._internalError()
        elif state is _STARTED:
            self._abort()

    def _internalError(self) -> None:
        """
        Answer 500: the application failed before its response started.
        """
        request = self.request
        if request.finished or self.state is _GONE:
            return
        self.state = _COMPLETE
        self._requestBody.close()
        request.setResponseCode(500)
        request.responseHeaders.setRawHeaders(
            b"content-type", [b"text/plain; charset=utf-8"]
        )
        request.responseHeaders.setRawHeaders(
            b"content-length", [b"%d" % (len(_INTERNAL_ERROR_BODY),)]
        )
        if request.startedWriting:
            self._abort()
            return
        request.write(_INTERNAL_ERROR_BODY)
        request.finish()

    def _abort(self) -> None:
        """
        End a response under way that cannot be completed: the client must
        see it cut short, never a complete response.
        """
        request = self.request
        gone = self.state is _GONE
        self.state = _GONE
        self._stopListening()
        self._wake()
        if request.finished or gone:
            return
        if self._http2:
            # RST_STREAM: the stream's end, never a clean END_STREAM.
            request.channel.abortConnection()  # type: ignore[attr-defined]
        else:
            # No terminating chunk: the connection closes mid-body.
            request.loseConnection()


def _describe(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


@implementer(IResource)
class ASGIResource:
    """
    Serve an ASGI application on a L{gracesvc._protocols.site.DrainingSite}
    (see the module docstring).
    """

    isLeaf = True

    #: It labels each request with its route (L{labelRoute}) as it renders
    #: it: L{gracesvc._apps.compose.OperationalRoot} leaves them to it.
    labelsRoutes = True

    def __init__(
        self,
        app: ASGIApp,
        drain: Drain,
        lifespan: Lifespan | None = None,
        webSocketPolicy: WebSocketPolicy | None = None,
        rootPath: str = "",
    ) -> None:
        """
        @param app: the application.
        @param drain: the drain the site's connections report to.
        @param lifespan: its lifespan: until it is ready, requests get a
            503 (only connections accepted at a drain that began before the
            startup was over can see that).
        @param webSocketPolicy: how WebSockets close; the site's.
        @param rootPath: the scopes' C{root_path}.
        """
        self.app = app
        self.drain = drain
        self.lifespan = lifespan
        self.webSocketPolicy = (
            WebSocketPolicy() if webSocketPolicy is None else webSocketPolicy
        )
        self.rootPath = rootPath

    def render(self, request: IRequest) -> object:
        twistedRequest = cast(Request, request)
        drain = self.drain
        lifespan = self.lifespan
        if lifespan is not None and not lifespan.ready:
            answerServiceUnavailable(twistedRequest, drain.policy.retryAfter)
            return NOT_DONE_YET
        if isWebSocketUpgrade(request) and twistedRequest.clientproto != b"HTTP/2":
            return serveUpgrade(
                twistedRequest, self.app, drain, self.webSocketPolicy, self.rootPath
            )
        if drain.draining and acceptsEventStream(twistedRequest):
            answerEventStreamRetry(
                twistedRequest, drain.policy.retryAfter * 1000 + _random.randrange(1000)
            )
            return NOT_DONE_YET
        HTTPCycle(
            twistedRequest,
            httpScope(twistedRequest, self.app, self.rootPath),
            self.app,
            drain,
            self.webSocketPolicy.closeTimeout,
            twistedRequest.claimBody()
            if isinstance(twistedRequest, StreamingRequest)
            else None,
        ).start()
        return NOT_DONE_YET

    def getChildWithDefault(self, name: bytes, request: IRequest) -> IResource:
        """
        Everything below this resource is the application's.
        """
        raise RuntimeError("an ASGI application has no child resources")

    def putChild(self, path: bytes, child: IResource) -> None:
        raise RuntimeError("an ASGI application has no child resources")
