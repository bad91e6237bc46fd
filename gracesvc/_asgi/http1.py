# -*- test-case-name: tests.unit.asgi.test_http1 -*-
"""
HTTP/1.1 for ASGI applications: a lean path of its own, with the drain.

A Twisted protocol (L{ASGIConnection}, one per connection) parses requests
with httptools (llhttp, the C parser uvicorn uses) and runs one asyncio task
per request, created directly on the loop Twisted's asyncio reactor runs:
no C{twisted.web} C{Request}, no Deferred between the parser and the
application.  Its factory (L{ASGIHTTPFactory}) serves any Twisted endpoint.
The path's other rooms:

  - L{gracesvc._asgi.cycle}: one request and its response (L{Cycle}): the
    application's task, its C{receive} and C{send}, the response's framing;
  - L{gracesvc._asgi.wire}: HTTP/1.1 as bytes, knowing no connection: the
    head's limits, status lines, the C{date} header, whole small responses;
  - L{gracesvc._asgi.operational}: gracesvc's own C{/healthz}, C{/readyz}
    and C{/metrics}, answered here before the application;
  - L{gracesvc._asgi.upgrade}: the hand-off of a WebSocket upgrade to the
    ASGI WebSocket session.

What keeps a request cheap on the connection's side (each measured; see
C{docs/asgi-http1.md}; the cycle's side is in L{gracesvc._asgi.cycle}):

  - the write goes to the socket at once when nothing is buffered ahead of
    it (L{gracesvc._pins.twisted_send}) instead of waiting for the
    reactor's next writable event;
  - the scope is a copy of a template made once per connection; the
    C{date} header is made once a second, the status lines once
    (L{gracesvc._asgi.wire});
  - one timer per connection, re-armed lazily when it fires, holds the
    keep-alive idle timeout and the head deadline: none per request;
  - C{__slots__} everywhere.

Each connection has one state (L{ConnectionState}), which the drain reads
through L{IDrainableConnection}:

  - responses written once the drain has begun say C{Connection: close},
    and the connection closes after the last request it has read;
  - an idle connection closes once quiet for the drain's idle grace (over
    TLS counted from the handshake; a handshake in progress is not idle);
  - ordinary requests in flight are told nothing: they complete;
  - an event stream (a C{text/event-stream} response) is ended by the
    server when the drain goes away: a goodbye (a comment and a jittered
    C{retry:}, L{gracesvc._asgi.streams.goodbye}) on an event boundary,
    the end of the body, then C{http.disconnect} to the application;
  - at the cut, a request whose response has no byte on the wire yet is
    answered 503 with C{Retry-After} (and so is each request read behind
    it), a response under way is aborted, and the application's task is
    cancelled;
  - a WebSocket upgrade hands the connection to the WebSocket session
    (L{ASGIConnection.upgrade}), which then answers for it to the drain;
    during the drain an upgrade is answered 503.

Every response is counted in the metrics under the route the framework
matched (L{gracesvc._asgi.app.routeOf}) and written to the access log in
the format of C{twisted.web}'s (twistd's log).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import Enum
from random import Random
from typing import Any, Protocol
from urllib.parse import unquote

import httptools
from twisted.internet.interfaces import (
    IDelayedCall,
    IHandshakeListener,
    IProtocol,
    IProtocolNegotiationFactory,
    IPushProducer,
    ITCPTransport,
)
from twisted.internet.protocol import Factory
from twisted.logger import Logger, LogLevel
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from zope.interface import implementer

from gracesvc._asgi.app import ASGIApp, routeOf
from gracesvc._asgi.body import HIGH_WATER
from gracesvc._asgi.cycle import Cycle
from gracesvc._asgi.operational import Operational, OperationalRoute
from gracesvc._asgi.scopes import addressOf
from gracesvc._asgi.spec import HTTP_ASGI
from gracesvc._asgi.streams import EventBoundary, goodbye
from gracesvc._asgi.upgrade import UpgradedProtocol, WebSocketHandshake
from gracesvc._asgi.wire import (
    MAX_HEAD_SIZE,
    MAX_HEADERS,
    Dates,
    HeadTooLarge,
    escape,
    simpleResponse,
)
from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._metrics.registry import OTHER_ROUTE
from gracesvc._pins.twisted import closeBeneathTLS, tlsHandshaking
from gracesvc._pins.twisted_send import eagerSocket, sendNow
from gracesvc._protocols.answers import SERVICE_UNAVAILABLE_BODY
from gracesvc._protocols.deadlines import (
    ClientTally,
    ConnectionTimeouts,
    WriteStall,
    acknowledgedBy,
    idleGraceLeft,
)
from gracesvc._protocols.negotiate import NegotiatingProtocol
from gracesvc._protocols.site import DrainingSite

log = Logger()

#: The default keep-alive idle timeout and head deadline: those of every
#: HTTP/1.1 connection of gracesvc (C{--keep-alive-timeout},
#: C{--header-timeout}).
DEFAULT_KEEP_ALIVE_TIMEOUT = ConnectionTimeouts.keepAlive
DEFAULT_HEADER_TIMEOUT = ConnectionTimeouts.header
DEFAULT_WRITE_TIMEOUT = ConnectionTimeouts.write

_METHODS = {
    m.encode("ascii"): m
    for m in ("GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH")
}

_random = Random()


class ResponseCounter(Protocol):
    """
    What this path tells the metrics
    (L{gracesvc._metrics.registry.Metrics}) of each response.
    """

    def responseDone(self, route: str, code: int, seconds: float) -> None:
        """
        A response with status C{code} was completed under C{route},
        C{seconds} after its request head was received.
        """


class ConnectionState(Enum):
    """
    What an L{ASGIConnection} is doing, for the drain and the metrics.
    """

    #: no request in progress: the drain may close it after the idle grace.
    IDLE = "idle"
    #: the head of a request partly received.
    RECEIVING = "receiving"
    #: an application answering a request (whose body may still arrive).
    BUSY = "busy"
    #: an application answering with an event stream: busy, and ended by
    #: the server when the drain goes away.
    STREAM = "stream"
    #: handed to a WebSocket, which answers for it (see
    #: L{ASGIConnection.upgrade}).
    UPGRADED = "upgraded"
    #: closing or aborted: nothing more is read or answered.
    CLOSING = "closing"


_IDLE, _RECEIVING, _BUSY, _STREAM, _UPGRADED, _CLOSING = ConnectionState


@implementer(IProtocol, IPushProducer, IHandshakeListener, IDrainableConnection)
class ASGIConnection:
    """
    One HTTP/1.1 connection serving an ASGI application: the parser's
    callbacks, one application task at a time (pipelined requests wait their
    turn, in order), flow control both ways, and the drain (see the module
    docstring).

    It is also the transport of the WebSocket it may be upgraded to (see
    L{upgrade}): C{write}, C{loseConnection}, C{abortConnection},
    C{registerProducer}, C{unregisterProducer}.
    """

    __slots__ = (
        "factory",
        "transport",
        "app",
        "loop",
        "drain",
        "dates",
        "seconds",
        "parser",
        "template",
        "_state",
        "_sock",
        "url",
        "headers",
        "_headSize",
        "_expect100",
        "_inHead",
        "_headStartedAt",
        "parsing",
        "cycle",
        "pipeline",
        "readingPaused",
        "writePaused",
        "_writeStall",
        "_drainWaiter",
        "lastActivity",
        "_timer",
        "_idleCall",
        "_upgraded",
        "_producer",
        "_rest",
    )

    def __init__(self, factory: ASGIHTTPFactory) -> None:
        self.factory = factory
        self.transport: Any = None
        self.app = factory.app.application
        self.loop = factory.app.loop
        self.drain = factory.drain
        self.dates = factory.dates
        self.seconds = factory.drain.clock.seconds
        self._state = _IDLE
        self._sock: Any = None
        self.url = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self._headSize = 0
        self._expect100 = False
        self._inHead = False
        self._headStartedAt = 0.0
        #: the request whose bytes are arriving.
        self.parsing: Cycle | None = None
        #: the request whose application runs.
        self.cycle: Cycle | None = None
        #: requests read behind L{cycle}, waiting their turn.
        self.pipeline: deque[Cycle] = deque()
        self.readingPaused = False
        self.writePaused = False
        self._writeStall: WriteStall | None = None
        self._drainWaiter: asyncio.Future[None] | None = None
        self.lastActivity = 0.0
        self._timer: IDelayedCall | None = None
        self._idleCall: IDelayedCall | None = None
        self._upgraded: UpgradedProtocol | None = None
        self._producer: IPushProducer | None = None
        self._rest = b""

    # IProtocol

    def makeConnection(self, transport: Any) -> None:
        self.transport = transport
        self.connectionMade()

    def connectionMade(self) -> None:
        transport = self.transport
        factory = self.factory
        self.parser = httptools.HttpRequestParser(self)
        # A client that said Connection: close may send more behind it:
        # ignored, not an error.
        self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        sock = self._sock = eagerSocket(transport)
        if sock is not None and ITCPTransport.providedBy(transport):
            try:
                transport.setTcpNoDelay(True)
            except OSError:
                pass  # a UNIX socket
        # Called by the transport when its write buffer passes its size:
        # backpressure for send().
        transport.registerProducer(self, True)
        host = transport.getHost()
        self.template: dict[str, Any] = {
            "type": "http",
            "asgi": HTTP_ASGI,
            "http_version": "1.1",
            "server": addressOf(host),
            "client": addressOf(transport.getPeer()),
            "scheme": "https" if factory.isTLS(transport) else "http",
            "root_path": factory.rootPath,
        }
        self.lastActivity = self.seconds()
        self._armTimer(factory.timerPeriod)
        self.drain.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        upgraded = self._upgraded
        if upgraded is not None:
            upgraded.dataReceived(data)
            return
        if self._state is _CLOSING:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as e:
            self._upgradeRequested(data[e.args[0] :])
        except httptools.HttpParserError as e:
            if isinstance(e.__context__, HeadTooLarge):
                self._reject(431, b"Request Header Fields Too Large\n")
            else:
                self._reject(400, b"Bad Request\n")

    def connectionLost(self, reason: Failure) -> None:
        self._state = _CLOSING
        cancelCall(self._timer)
        cancelCall(self._idleCall)
        self._timer = self._idleCall = None
        if self._writeStall is not None:
            self._writeStall.unblocked()
        upgraded = self._upgraded
        if upgraded is not None:
            try:
                upgraded.connectionLost(reason)
            finally:
                # The request that upgraded it: a 101 that lasted as long
                # as the connection.
                if self.cycle is not None:
                    self.factory.count(self.cycle, self.seconds())
                self.drain.connectionClosed(self)
            return
        cycle = self.cycle
        if cycle is not None and not cycle.complete:
            cycle.disconnected = True
            cycle.wake()
            if cycle.handshake is not None:
                cycle.handshake.lost()
            if cycle.stream is not None and self.drain.draining:
                self.drain.longLived.ended("stream", "clean")
        for queued in self.pipeline:
            queued.disconnected = True
        self.pipeline.clear()
        self.writePaused = False
        self._wakeDrained()
        self.drain.connectionClosed(self)

    def handshakeCompleted(self) -> None:
        """
        The TLS handshake completed: the client can send its request now,
        and the drain's idle grace counts from here.
        """
        self.lastActivity = self.seconds()
        if self.drain.draining:
            self._closeWhenIdle()

    # The parser's callbacks.

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self._headSize = 0
        self._expect100 = False
        self._inHead = True
        self._headStartedAt = self.seconds()
        if self._state is _IDLE:
            self._state = _RECEIVING

    def on_url(self, url: bytes) -> None:
        self.url += url
        self._headSize += len(url)
        if self._headSize > MAX_HEAD_SIZE:
            raise HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        headers = self.headers
        self._headSize += len(name) + len(value) + 4
        if self._headSize > MAX_HEAD_SIZE or len(headers) >= MAX_HEADERS:
            raise HeadTooLarge()
        name = name.lower()
        # llhttp keeps a value's trailing whitespace.
        value = value.rstrip(b" \t")
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect100 = True
        headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._inHead = False
        parser = self.parser
        url = self.url
        if url[:1] == b"/" and b"#" not in url:
            rawPath, _, query = url.partition(b"?")
        else:
            parsed = httptools.parse_url(url)
            rawPath, query = parsed.path, parsed.query or b""
        path = rawPath.decode("latin-1")
        if "%" in path:
            path = unquote(path)
        method = parser.get_method()
        scope = self.template.copy()
        scope["method"] = _METHODS.get(method) or method.decode("ascii")
        scope["path"] = path
        scope["raw_path"] = rawPath
        scope["query_string"] = query
        scope["headers"] = self.headers
        version = parser.get_http_version()
        if version != "1.1":
            scope["http_version"] = version
        state = self.factory.app.state
        if state is not None:
            scope["state"] = state.copy()
        cycle = self.parsing = Cycle(
            self,
            scope,
            url,
            parser.should_keep_alive(),
            self._expect100,
            self._headStartedAt,
        )
        if parser.should_upgrade():
            # Only WebSocket is upgraded to; after any other upgrade request
            # (h2c, say), answered as HTTP, the connection closes.
            cycle.keepAlive = False
            cycle.upgrade = any(
                name == b"upgrade" and b"websocket" in value.lower()
                for name, value in self.headers
            )
        if self.cycle is None:
            self._state = _BUSY
            self._run(cycle)
        else:
            # Pipelined: its application starts once the one before has
            # answered; nothing more is read meanwhile.
            self.pipeline.append(cycle)
            self.pauseReading()

    def on_body(self, body: bytes) -> None:
        cycle = self.parsing
        if cycle is None or cycle.complete:
            return  # answered already: read the rest, keep none of it
        cycle.body.append(body)
        cycle.bodySize += len(body)
        if cycle.bodySize > HIGH_WATER:
            self.pauseReading()
        cycle.wake()

    def on_message_complete(self) -> None:
        cycle = self.parsing
        if cycle is None:
            return
        cycle.moreBody = False
        cycle.expect100 = False
        cycle.wake()

    # Running the application.

    def _run(self, cycle: Cycle) -> None:
        self.cycle = cycle
        if cycle.upgrade:
            self._startUpgrade(cycle)
            return
        special = self.factory.operational.paths.get(cycle.scope["raw_path"])
        if special is not None:
            self._answerOperational(cycle, special)
            return
        if self.drain.cutting:
            # Read after the cut: no time is left to answer it.
            self._answerCut([cycle, *self.pipeline], self.drain.policy.retryAfter, True)
            return
        app = self.factory.app
        if self.drain.draining:
            # The drain waits for it (see ASGIApp.trackWith).
            cycle.task = app.run(cycle.run(self.app))
            return
        task = cycle.task = self.loop.create_task(cycle.run(self.app))
        # Out of the set again at its end (taskDone): a done callback would
        # cost another turn of the loop per request.
        app.tasks.add(task)

    def taskDone(self, cycle: Cycle) -> None:
        """
        C{cycle}'s task is ending, whatever way.
        """
        task = cycle.task
        if task is not None:
            self.factory.app.tasks.discard(task)

    def responseComplete(self, cycle: Cycle) -> None:
        """
        C{cycle}'s response is complete: count and log it, then go on to the
        next request read, or wait for one, or close.
        """
        if self.parsing is cycle and not cycle.moreBody:
            self.parsing = None
        now = self.lastActivity = self.seconds()
        self.factory.count(cycle, now)
        drain = self.drain
        if drain.draining:
            if not drain.cutting:
                drain.requestCompleted()
            if not self.pipeline:
                cycle.keepAlive = False
        if cycle.stream is not None:
            self.factory.unsubscribe(cycle)
            if drain.draining and not cycle.goingAway:
                drain.longLived.ended("stream", "clean")
        if not cycle.keepAlive or (cycle.moreBody and cycle.expect100):
            # A client still waiting to send its body (Expect: 100-continue)
            # is not sent a 100 now: the connection closes.
            self.loseConnection()
            return
        if self.pipeline:
            self._state = _BUSY
            self._run(self.pipeline.popleft())
            return
        self.cycle = None
        self._state = _RECEIVING if self._inHead else _IDLE
        if self.readingPaused:
            self.resumeReading()
        if drain.draining:
            self._closeWhenIdle()

    def applicationFailed(self, cycle: Cycle, error: BaseException) -> None:
        """
        C{cycle}'s application raised C{error}: a 500 if no byte of its
        response is on the wire yet, else the connection closed after what
        was written, without the body's end (as uvicorn: the client sees
        the body cut short, C{curl} exits 18); logged once.
        """
        log.failure(
            "Exception in ASGI application",
            Failure(error),
            level=LogLevel.error,
        )
        if cycle.disconnected or cycle.complete:
            return
        if not cycle.started or cycle.head is not None:
            self._answerError(cycle)
        else:
            self.loseConnection()

    def applicationReturned(self, cycle: Cycle) -> None:
        """
        C{cycle}'s application returned without completing its response.
        """
        if not cycle.started or cycle.head is not None:
            log.error("ASGI application returned without starting a response")
            self._answerError(cycle)
        else:
            log.error("ASGI application returned without completing its response")
            self.loseConnection()

    def _answerError(self, cycle: Cycle) -> None:
        cycle.complete = True
        cycle.status = 500
        cycle.keepAlive = False
        body = b"Internal Server Error\n"
        self.write(simpleResponse(500, body, self.dates, self.seconds()))
        cycle.sent = len(body)
        self.responseComplete(cycle)

    def _answerOperational(self, cycle: Cycle, route: OperationalRoute) -> None:
        scope = cycle.scope
        status, headers, body = self.factory.operational.answer(
            scope["raw_path"], scope["method"], self.drain
        )
        cycle.status = status
        cycle.complete = True
        # Counted under gracesvc's own path (see routeOf).
        scope["route"] = route
        if self.drain.draining and not self.pipeline:
            cycle.keepAlive = False
        response = simpleResponse(
            status, body, self.dates, self.seconds(), headers, not cycle.keepAlive
        )
        if scope["method"] == "HEAD":
            response = response[: len(response) - len(body)]
        else:
            cycle.sent = len(body)
        self.write(response)
        self.responseComplete(cycle)

    # Event streams.

    def streamStarted(self, cycle: Cycle) -> None:
        """
        C{cycle}'s response is an event stream: the server ends it when the
        drain goes away.
        """
        cycle.stream = EventBoundary()
        if self._state is _BUSY and cycle is self.cycle:
            self._state = _STREAM
        self.factory.subscribe(self, cycle)

    def goAway(self, cycle: Cycle) -> None:
        """
        The drain goes away: end C{cycle}'s event stream now if it is
        between two events, else after the event being written.
        """
        if cycle.complete or cycle.disconnected or cycle.remaining >= 0:
            # A stream of a known length cannot be ended early: the cut
            # will.
            return
        cycle.goingAway = True
        assert cycle.stream is not None
        if cycle.stream.atBoundary:
            self.endStream(cycle)

    def endStream(self, cycle: Cycle) -> None:
        """
        End C{cycle}'s event stream, the server's goodbye last, then tell
        the application C{http.disconnect}.
        """
        farewell = goodbye()
        cycle.keepAlive = False
        head = cycle.head
        if head is not None:
            cycle.head = None
            data = cycle.finishHead(head, farewell, False)
        elif cycle.chunked:
            data = b"%x\r\n%s\r\n0\r\n\r\n" % (len(farewell), farewell)
        else:
            data = farewell
        cycle.sent += len(farewell)
        self.write(data)
        cycle.complete = True
        cycle.disconnected = True
        cycle.wake()
        self.drain.longLived.ended("stream", "clean")
        self.responseComplete(cycle)

    # WebSocket upgrades.

    def _upgradeRequested(self, rest: bytes) -> None:
        """
        The parser stopped after an upgrade request's head: what follows it
        is another protocol's, kept for it.
        """
        self._rest = rest
        self.pauseReading()

    def _startUpgrade(self, cycle: Cycle) -> None:
        drain = self.drain
        webSockets = self.factory.webSockets
        if drain.draining or webSockets is None:
            self._answerUpgrade(cycle, drain.draining)
            return
        webSockets(self, cycle)

    def _answerUpgrade(self, cycle: Cycle, draining: bool) -> None:
        if draining:
            self._answerUnavailable([cycle], self.drain.policy.retryAfter)
            return
        cycle.status = 400
        body = b"WebSocket upgrades are not served here\n"
        self.write(simpleResponse(400, body, self.dates, self.seconds()))
        cycle.complete = True
        cycle.sent = len(body)
        self.responseComplete(cycle)

    def upgrade(self, protocol: UpgradedProtocol) -> bytes:
        """
        Hand the connection to C{protocol}, after the upgrade request's
        handshake: from now on it receives the bytes read (starting with
        those read behind the request's head, returned), writes through this
        connection, and answers for it to the drain.  It is logged and
        counted as a 101 when the connection closes.

        @return: the bytes read behind the upgrade request's head, which
            C{protocol} has been given already.
        """
        self._state = _UPGRADED
        self._upgraded = protocol
        cycle = self.cycle
        if cycle is not None:
            cycle.status = 101
            cycle.complete = True
        cancelCall(self._idleCall)
        self._idleCall = None
        protocol.makeConnection(self)
        rest, self._rest = self._rest, b""
        if rest:
            protocol.dataReceived(rest)
        if self.readingPaused:
            self.readingPaused = False
            self.transport.resumeProducing()
        return rest

    def answerUpgrade(self, status: int, headers: bytes, body: bytes) -> None:
        """
        Answer the upgrade request being handled as plain HTTP (the
        application refused the WebSocket, or the handshake was not a valid
        one), and close after.

        @param headers: header lines, each ending in CR LF.
        """
        cycle = self.cycle
        if cycle is None or cycle.complete:
            return
        cycle.status = status
        cycle.complete = True
        cycle.sent = len(body)
        self.write(simpleResponse(status, body, self.dates, self.seconds(), headers))
        self.responseComplete(cycle)

    # The carrier's side (see gracesvc._protocols.websocket.Carrier) and
    # what the responses write through.

    def write(self, data: bytes) -> None:
        """
        Write C{data}: to the socket at once when nothing is buffered ahead
        of it (a plain TCP connection), else through the transport.
        """
        sock = self._sock
        if sock is None:
            self.transport.write(data)
        else:
            sendNow(self.transport, sock, data)

    def loseConnection(self) -> None:
        """
        Close after what is written, as an HTTP connection closes (TLS
        included).
        """
        state = self._state
        if state is _CLOSING:
            return
        if state is not _UPGRADED:
            self._state = _CLOSING
        transport = self.transport
        # A registered producer keeps TCP from closing once the buffer is
        # flushed, and TLS from shutting down at all.
        transport.unregisterProducer()
        transport.loseConnection()
        if self.drain.draining:
            closeBeneathTLS(transport)

    def abortConnection(self) -> None:
        """
        Close at once, dropping whatever is not written yet.
        """
        if self._state is not _UPGRADED:
            self._state = _CLOSING
        transport = self.transport
        abort = getattr(transport, "abortConnection", None)
        if abort is not None:
            abort()
        else:
            transport.loseConnection()

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """
        The upgraded protocol's producer: paused and resumed with the
        transport's buffer, through this connection's own registration.
        """
        self._producer = producer

    def unregisterProducer(self) -> None:
        self._producer = None

    def getPeer(self) -> Any:
        return self.transport.getPeer()

    def getHost(self) -> Any:
        return self.transport.getHost()

    # IPushProducer, as the transport sees it: its write buffer full, then
    # flushed.

    def pauseProducing(self) -> None:
        """
        The transport's buffer is full: its client takes less than is
        written.  The application's C{send} waits, and the client has the
        write timeout to take some of it.
        """
        self.writePaused = True
        if self._producer is not None:
            self._producer.pauseProducing()
        timeout = self.factory.writeTimeout
        if timeout is None or self._state is _CLOSING:
            return
        if self._writeStall is None:
            self._writeStall = WriteStall(
                self.drain.clock,
                timeout,
                acknowledgedBy(self.transport),
                self._writeStalled,
            )
        self._writeStall.blocked()

    def resumeProducing(self) -> None:
        self.writePaused = False
        if self._writeStall is not None:
            self._writeStall.unblocked()
        self._wakeDrained()
        if self._producer is not None:
            self._producer.resumeProducing()

    @property
    def writeBlocked(self) -> bool:
        """
        Whether the transport's buffer is full (see L{Carrier
        <gracesvc._protocols.websocket.Carrier>}).
        """
        return self.writePaused

    def _writeStalled(self) -> None:
        """
        The client took nothing of what waits for it for the write timeout.
        """
        self.factory.clientTally.timedOut(
            "write", peer=self._peer(), timeout=self.factory.writeTimeout
        )
        self.abort()

    def _peer(self) -> str:
        transport = self.transport
        return "?" if transport is None else str(transport.getPeer())

    def stopProducing(self) -> None:
        pass

    def _wakeDrained(self) -> None:
        waiter = self._drainWaiter
        if waiter is not None:
            self._drainWaiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def drained(self) -> None:
        """
        Wait until the transport's write buffer is flushed (or the
        connection lost).
        """
        if self._drainWaiter is None:
            self._drainWaiter = self.loop.create_future()
        await self._drainWaiter

    def pauseReading(self) -> None:
        if not self.readingPaused and self._state is not _CLOSING:
            self.readingPaused = True
            self.transport.pauseProducing()

    def resumeReading(self) -> None:
        if (
            self.readingPaused
            and not self.pipeline
            and self._state is not _CLOSING
            and not self._rest
        ):
            self.readingPaused = False
            self.transport.resumeProducing()

    # Malformed requests, timers.

    def _reject(self, status: int, body: bytes) -> None:
        """
        A malformed or oversized request head: answer C{status} (unless a
        response is under way, which cannot be interrupted) and close.
        """
        if self.cycle is None:
            self.write(simpleResponse(status, body, self.dates, self.seconds()))
            self._logRejected(status, len(body))
            self.loseConnection()
            return
        # Answer the requests before it, then close.
        self.pauseReading()
        self.cycle.keepAlive = False
        for queued in self.pipeline:
            queued.keepAlive = False
        self._inHead = False

    def _logRejected(self, status: int, length: int) -> None:
        metrics = self.factory.metrics
        if metrics is not None:
            metrics.responseDone(OTHER_ROUTE, status, 0.0)

    def _armTimer(self, delay: float | None) -> None:
        if delay is not None:
            self._timer = self.drain.clock.callLater(delay, self._timerFired)

    def _timerFired(self) -> None:
        """
        The connection's one timer: close it if idle past the keep-alive
        timeout; answer 408 if a request head has been arriving past the
        head deadline; else look again when the next of those could be due.
        """
        self._timer = None
        state = self._state
        if state is _CLOSING or state is _UPGRADED:
            return
        factory = self.factory
        now = self.seconds()
        period = factory.timerPeriod
        if period is None:
            return
        headerTimeout = factory.headerTimeout
        if self._inHead and headerTimeout is not None:
            due = self._headStartedAt + headerTimeout
            if now >= due:
                self._headTimedOut()
                return
            period = min(period, due - now)
        keepAliveTimeout = factory.keepAliveTimeout
        if state is _IDLE and keepAliveTimeout is not None:
            due = self.lastActivity + keepAliveTimeout
            if now >= due:
                factory.clientTally.timedOut("keepalive")
                self.loseConnection()
                return
            period = min(period, due - now)
        self._armTimer(max(period, 0.001))

    def _headTimedOut(self) -> None:
        self.factory.clientTally.timedOut(
            "header", peer=self._peer(), timeout=self.factory.headerTimeout
        )
        if self.cycle is None:
            body = b"Request Timeout\n"
            self.write(simpleResponse(408, body, self.dates, self.seconds()))
            self._logRejected(408, len(body))
            self.loseConnection()
            return
        # A pipelined head too slow behind a response under way: close
        # after it.
        self._inHead = False
        self.pauseReading()
        self.cycle.keepAlive = False

    # IDrainableConnection

    @property
    def inFlight(self) -> int:
        upgraded = self._upgraded
        if upgraded is not None:
            return upgraded.inFlight
        state = self._state
        return 1 if state is _BUSY or state is _STREAM else 0

    @property
    def state(self) -> str:
        upgraded = self._upgraded
        if upgraded is not None:
            return upgraded.state
        return self._state.value

    def beginDrain(self) -> None:
        if self._upgraded is not None:
            self._upgraded.beginDrain()
            return
        self._closeWhenIdle()

    def cut(self, retryAfter: int) -> int:
        upgraded = self._upgraded
        if upgraded is not None:
            return upgraded.cut(retryAfter)
        state = self._state
        if state is _CLOSING:
            return 0
        cycle = self.cycle
        if cycle is None or (state is not _BUSY and state is not _STREAM):
            if state is _RECEIVING:
                # A head still arriving: nothing to answer yet, and closing
                # with its bytes unread would reset the connection anyway.
                self.abortConnection()
            else:
                self.loseConnection()
            return 0
        waiting = [cycle, *self.pipeline]
        self.pipeline.clear()
        if state is _STREAM or (cycle.started and cycle.head is None):
            # Never a 503 into a response under way.
            self.abort()
            return len(waiting)
        self._answerCut(waiting, retryAfter)
        return len(waiting)

    def abort(self) -> None:
        upgraded = self._upgraded
        if upgraded is not None:
            upgraded.abort()
            return
        cycle = self.cycle
        if self._state is _STREAM and self.drain.draining:
            self.drain.longLived.ended("stream", "cut")
        self.abortConnection()
        if cycle is not None:
            cycle.disconnected = True
            self._cancel(cycle)

    def _answerCut(
        self, cycles: list[Cycle], retryAfter: int, late: bool = False
    ) -> None:
        """
        The cut: answer each of C{cycles} (the one being answered and those
        read behind it) 503, cancel the application, and close.

        @param late: whether they were read after the cut, and so are not
            counted in L{cut}'s return.
        """
        if late:
            for _ in cycles:
                self.drain.requestCut()
        self._answerUnavailable(cycles, retryAfter)
        for cycle in cycles:
            self._cancel(cycle)

    def _answerUnavailable(self, cycles: list[Cycle], retryAfter: int) -> None:
        """
        Answer each of C{cycles} 503 with C{Retry-After} (a client asking for
        an event stream gets an event stream of only a C{retry:}, which a
        C{EventSource} reconnects after), the last one closing the
        connection.
        """
        now = self.seconds()
        out = []
        last = len(cycles) - 1
        for i, cycle in enumerate(cycles):
            cycle.head = None
            cycle.complete = True
            cycle.disconnected = True
            cycle.wake()
            if cycle.handshake is not None:
                cycle.handshake.cut()
            if any(
                name == b"accept" and b"text/event-stream" in value
                for name, value in cycle.scope["headers"]
            ):
                cycle.status = 200
                body = b"retry: %d\n\n" % (retryAfter * 1000 + _random.randrange(1000),)
                headers = (
                    b"content-type: text/event-stream\r\ncache-control: no-cache\r\n"
                )
            else:
                cycle.status = 503
                body = SERVICE_UNAVAILABLE_BODY
                headers = (
                    b"content-type: text/plain; charset=utf-8\r\n"
                    b"retry-after: %d\r\n" % (retryAfter,)
                )
            cycle.sent = len(body)
            out.append(
                simpleResponse(cycle.status, body, self.dates, now, headers, i == last)
            )
            self.factory.count(cycle, now)
        self.write(b"".join(out))
        self.cycle = None
        self.pipeline.clear()
        self.loseConnection()

    def _cancel(self, cycle: Cycle) -> None:
        task = cycle.task
        if task is not None and not task.done():
            task.cancel()
            # A task cancelled before its first step never runs its
            # coroutine, whose end would have said so.
            self.taskDone(cycle)

    def _closeWhenIdle(self) -> None:
        cancelCall(self._idleCall)
        self._idleCall = None
        if self._state is not _IDLE or tlsHandshaking(self.transport):
            return
        wait = idleGraceLeft(self.drain, self.lastActivity, self.transport)
        if wait is None:
            self.loseConnection()
            return
        self._idleCall = self.drain.clock.callLater(wait, self._closeIfIdle)

    def _closeIfIdle(self) -> None:
        self._idleCall = None
        self._closeWhenIdle()


@implementer(IProtocolNegotiationFactory)
class ASGIHTTPFactory(Factory):
    """
    Makes an L{ASGIConnection} for each connection to serve C{app} with
    C{drain}; behind a L{NegotiatingProtocol} when HTTP/2 is served too.
    """

    def __init__(
        self,
        app: ASGIApp,
        drain: Drain,
        *,
        metrics: ResponseCounter | None = None,
        metricsPage: Callable[[], bytes] | None = None,
        ready: Callable[[], bool] = lambda: True,
        webSockets: WebSocketHandshake | None = None,
        h2: DrainingSite | None = None,
        h2c: bool = False,
        headerTimeout: float | None = DEFAULT_HEADER_TIMEOUT,
        keepAliveTimeout: float | None = DEFAULT_KEEP_ALIVE_TIMEOUT,
        writeTimeout: float | None = DEFAULT_WRITE_TIMEOUT,
        clientTally: ClientTally | None = None,
        rootPath: str = "",
        accessLog: bool = True,
    ) -> None:
        """
        @param app: the application, with the loop its tasks run on.
        @param drain: the drain every connection reports to.
        @param metrics: counts every response, if given.
        @param metricsPage: the metrics' exposition, served on C{/metrics};
            L{None} when they are served elsewhere (C{--metrics-listen}).
        @param ready: whether the application is ready (its lifespan's
            startup complete), for C{/readyz}.
        @param webSockets: starts the ASGI WebSocket session of an upgrade
            request; L{None} answers upgrades 400.
        @param h2: the site that serves the HTTP/2 connections (the
            application behind Twisted's C{Request}) of clients that
            negotiated C{h2} through ALPN (or, with C{h2c}, opened with
            HTTP/2's preface); L{None} serves HTTP/1.1 only.
        @param h2c: whether to serve cleartext HTTP/2 to clients that open
            with its preface.
        @param headerTimeout: seconds from a request head's first byte to
            its end before it is answered 408; L{None} for no deadline.
        @param keepAliveTimeout: seconds a connection with no request in
            progress stays open; L{None} for as long as its client wants.
        @param writeTimeout: seconds a client may take nothing of what
            waits for it before its connection is aborted; L{None} for no
            limit.
        @param clientTally: counts the connections closed by a deadline
            (C{h2}'s, when it serves HTTP/2 too, so that the metrics see
            both); one of its own if L{None}.
        @param rootPath: the scope's C{root_path}.
        @param accessLog: whether to write each response to the access log.
        """
        self.app = app
        self.drain = drain
        self.metrics = metrics
        self.operational = Operational(ready, metricsPage)
        self.webSockets = webSockets
        self.h2 = h2
        self.h2c = h2c
        self.headerTimeout = headerTimeout
        self.keepAliveTimeout = keepAliveTimeout
        self.writeTimeout = writeTimeout
        self.clientTally = (
            ClientTally(drain.clock) if clientTally is None else clientTally
        )
        #: how often, at most, a connection's timer looks at it; L{None}
        #: when there is no deadline to look for.
        self.timerPeriod: float | None = min(
            (t for t in (keepAliveTimeout, headerTimeout) if t is not None),
            default=None,
        )
        self.rootPath = rootPath
        self.accessLog = accessLog
        self.dates = Dates()
        self._streams: dict[Cycle, Callable[[], None]] = {}

    def buildProtocol(self, addr: object) -> Any:
        connection = ASGIConnection(self)
        if self.h2 is None:
            return connection
        return NegotiatingProtocol(connection, self.h2c, self.h2)

    def startFactory(self) -> None:
        # The HTTP/2 site's access log and its dates.
        if self.h2 is not None:
            self.h2.doStart()

    def stopFactory(self) -> None:
        if self.h2 is not None:
            self.h2.doStop()

    def acceptableProtocols(self) -> list[bytes]:
        """
        The protocols offered through ALPN.
        """
        return [b"h2", b"http/1.1"] if self.h2 is not None else [b"http/1.1"]

    @staticmethod
    def isTLS(transport: object) -> bool:
        from twisted.internet.interfaces import ISSLTransport

        return ISSLTransport.providedBy(transport)

    # Event streams, told when the drain goes away.

    def subscribe(self, connection: ASGIConnection, cycle: Cycle) -> None:
        """
        Have C{connection} end C{cycle}'s event stream when the drain goes
        away.
        """
        self._streams[cycle] = self.drain.whenGoingAway(
            lambda: connection.goAway(cycle)
        )

    def unsubscribe(self, cycle: Cycle) -> None:
        unsubscribe = self._streams.pop(cycle, None)
        if unsubscribe is not None:
            unsubscribe()

    # The access log and the metrics.

    def count(self, cycle: Cycle, now: float) -> None:
        """
        Count C{cycle}'s response in the metrics, under the route its
        framework matched, and write it to the access log.
        """
        metrics = self.metrics
        if metrics is not None:
            metrics.responseDone(
                routeOf(cycle.scope), cycle.status, now - cycle.receivedAt
            )
        if self.accessLog:
            self.logAccess(cycle, now)

    def logAccess(self, cycle: Cycle, now: float) -> None:
        """
        Write C{cycle}'s line to the access log, as C{twisted.web}'s
        C{combinedLogFormatter} writes it.
        """
        scope = cycle.scope
        client = scope["client"]
        referrer = agent = b"-"
        for name, value in scope["headers"]:
            if name == b"user-agent":
                agent = value
            elif name == b"referer":
                referrer = value
        line = (
            f'"{client[0] if client is not None else "-"}" - - '
            f'{self.dates.logTime(now)} "{scope["method"]} {escape(cycle.url)} '
            f'HTTP/{scope["http_version"]}" {cycle.status} {cycle.sent or "-"} '
            f'"{escape(referrer)}" "{escape(agent)}"\n'
        )
        legacyLog.logfile.write(line)
