# -*- test-case-name: tests.unit.asgi.test_http1 -*-
"""
One request and its response on the ASGI HTTP/1.1 path
(L{gracesvc._asgi.http1}): the application's task, its C{receive} and its
C{send}, and the response's framing.

What it needs of the connection its request arrived on is L{Connection}, a
structural interface: the connection (L{gracesvc._asgi.http1.ASGIConnection})
knows its cycles, a cycle knows only that interface.

What keeps a request cheap here (see C{docs/asgi-http1.md}):

  - one task per request, of L{Cycle.run}, which awaits the application
    and then answers for what it left undone (no done callback);
  - L{Cycle.receive} returns at once when the body is here already (a
    C{GET}'s one C{http.request}): no Future, no Event;
  - C{http.response.start} is held and written with the first body: one
    write per response, and a body sent in one piece gets a
    C{content-length} instead of chunks;
  - C{__slots__}.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, MutableMapping
from typing import Any, Protocol

from gracesvc._asgi import wire
from gracesvc._asgi.streams import EventBoundary
from gracesvc._asgi.wire import NO_BODY_STATUS, Dates
from gracesvc._core.drain import Drain

#: L{gracesvc._asgi.wire.STATUS_LINES}, bound here rather than imported by
#: name: CPython compiles a method call on a name the module imports
#: (C{STATUS_LINES.get}) without its method-call optimisation, which would
#: make a bound method on every response.
_STATUS_LINES = wire.STATUS_LINES

#: A control character other than a tab, once the CR LF ending each line
#: of a head are taken out: what response splitting needs.
_BAD_HEAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
#: Anything but a token's characters (RFC 9110), in a lowercased name.
_BAD_NAME = re.compile(rb"[^!#$%&'*+\-.^_`|~0-9a-z]")


class Connection(Protocol):
    """
    What a L{Cycle} needs of the HTTP/1.1 connection its request arrived on
    (L{gracesvc._asgi.http1.ASGIConnection}): its state as the cycle reads
    it, where responses are written, and what it is told as the cycle goes.
    """

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """
        The loop the application's tasks run on.
        """

    @property
    def drain(self) -> Drain:
        """
        The drain the connection reports to.
        """

    @property
    def dates(self) -> Dates:
        """
        The C{date} header, made once a second.
        """

    @property
    def cycle(self) -> Cycle | None:
        """
        The request whose application runs.
        """

    @property
    def pipeline(self) -> Collection[Cycle]:
        """
        The requests read behind L{cycle}, waiting their turn.
        """

    @property
    def readingPaused(self) -> bool:
        """
        Whether the connection stopped reading.
        """

    @property
    def writePaused(self) -> bool:
        """
        Whether the transport's write buffer is full.
        """

    def seconds(self) -> float:
        """
        @return: the time now, on the drain's clock.
        """

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the client.
        """

    async def drained(self) -> None:
        """
        Wait until the transport's write buffer is flushed (or the
        connection lost).
        """

    def resumeReading(self) -> None:
        """
        Read again, unless something else holds the reading.
        """

    def loseConnection(self) -> None:
        """
        Close after what is written.
        """

    def abortConnection(self) -> None:
        """
        Close at once.
        """

    def streamStarted(self, cycle: Cycle) -> None:
        """
        C{cycle}'s response is an event stream.
        """

    def endStream(self, cycle: Cycle) -> None:
        """
        End C{cycle}'s event stream, told to go away, now that it is at an
        event boundary.
        """

    def responseComplete(self, cycle: Cycle) -> None:
        """
        C{cycle}'s response is complete.
        """

    def applicationFailed(self, cycle: Cycle, error: BaseException) -> None:
        """
        C{cycle}'s application raised C{error}.
        """

    def applicationReturned(self, cycle: Cycle) -> None:
        """
        C{cycle}'s application returned without completing its response.
        """

    def taskDone(self, cycle: Cycle) -> None:
        """
        C{cycle}'s task is ending, whatever way.
        """


class PendingHandshake(Protocol):
    """
    The WebSocket handshake of an upgrade request, under way (see
    L{gracesvc._asgi.upgrade}): told what became of the connection before
    the hand-over.
    """

    def lost(self) -> None:
        """
        The client went away.
        """

    def cut(self) -> None:
        """
        The drain cut the connection.
        """


class Cycle:
    """
    One request and its response: the application's C{receive} and
    C{send}, and its task.
    """

    __slots__ = (
        "conn",
        "scope",
        "url",
        "body",
        "bodySize",
        "moreBody",
        "bodyDone",
        "waiter",
        "expect100",
        "keepAlive",
        "started",
        "complete",
        "disconnected",
        "head",
        "status",
        "chunked",
        "remaining",
        "noBody",
        "sent",
        "task",
        "receivedAt",
        "stream",
        "goingAway",
        "upgrade",
        "handshake",
    )

    def __init__(
        self,
        conn: Connection,
        scope: dict[str, Any],
        url: bytes,
        keepAlive: bool,
        expect100: bool,
        receivedAt: float,
    ) -> None:
        self.conn = conn
        self.scope = scope
        self.url = url
        self.body: list[bytes] = []
        self.bodySize = 0
        #: the request's body is still arriving.
        self.moreBody = True
        #: C{receive} has returned the body's end.
        self.bodyDone = False
        self.waiter: asyncio.Future[None] | None = None
        self.expect100 = expect100
        self.keepAlive = keepAlive
        #: C{http.response.start} was sent.
        self.started = False
        #: the response is complete (or was replaced by the server's).
        self.complete = False
        #: the client left, or the server ended the response: C{receive}
        #: says C{http.disconnect}, C{send} does nothing.
        self.disconnected = False
        #: the response's head, held until the first body.
        self.head: list[bytes] | None = None
        self.status = 0
        self.chunked = False
        #: the C{content-length} left to send; -1 when none was given.
        self.remaining = -1
        self.noBody = False
        #: body bytes written, for the access log.
        self.sent = 0
        self.task: asyncio.Task[None] | None = None
        self.receivedAt = receivedAt
        #: an event stream's boundary tracker; L{None} for other responses.
        self.stream: EventBoundary | None = None
        #: an event stream told to go away, waiting for an event boundary.
        self.goingAway = False
        #: a WebSocket upgrade request.
        self.upgrade = False
        #: the carrier of its WebSocket handshake, once started.
        self.handshake: PendingHandshake | None = None

    def wake(self) -> None:
        """
        Wake the application's C{receive} if it waits: the body grew, it
        ended, or the response is over.
        """
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)

    async def receive(self) -> dict[str, Any]:
        """
        The application's C{receive}: the request body, then
        C{http.disconnect} once the response is complete or the client has
        gone.
        """
        while True:
            if self.disconnected or self.complete:
                return {"type": "http.disconnect"}
            if not self.bodyDone:
                if self.bodySize or not self.moreBody:
                    # What the application asks for is here already: no
                    # Future, no Event.
                    body = self.body[0] if len(self.body) == 1 else b"".join(self.body)
                    self.body = []
                    self.bodySize = 0
                    more = self.moreBody
                    if not more:
                        self.bodyDone = True
                    conn = self.conn
                    if conn.readingPaused and conn.cycle is self:
                        conn.resumeReading()
                    return {"type": "http.request", "body": body, "more_body": more}
                if self.expect100:
                    self.expect100 = False
                    self.conn.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            waiter = self.waiter = self.conn.loop.create_future()
            await waiter

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """
        The application's C{send}: written at once, awaiting only while the
        transport's buffer is full.  A no-op once the client has gone or the
        server ended the response.
        """
        conn = self.conn
        if conn.writePaused and not self.disconnected:
            await conn.drained()
        if self.disconnected:
            return
        kind = message["type"]
        if not self.started:
            if kind != "http.response.start":
                raise RuntimeError(
                    f"Expected ASGI message 'http.response.start', got {kind!r}"
                )
            self._start(message)
            return
        if self.complete:
            raise RuntimeError(
                f"Unexpected ASGI message {kind!r} after the response completed"
            )
        if kind != "http.response.body":
            raise RuntimeError(
                f"Expected ASGI message 'http.response.body', got {kind!r}"
            )
        body = message.get("body", b"")
        more = message.get("more_body", False)
        head = self.head
        if head is not None:
            # Kept until it is good: a 500 may still replace it.
            data = self.finishHead(head, body, more)
            self.head = None
        elif self.noBody:
            data = b""
        elif self.chunked:
            data = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            if not more:
                data += b"0\r\n\r\n"
        else:
            data = self._counted(body)
        if not self.noBody:
            self.sent += len(body)
        if data:
            conn.write(data)
        stream = self.stream
        if stream is not None:
            stream.wrote(body)
            if self.goingAway and more and stream.atBoundary:
                conn.endStream(self)
                return
        if not more:
            if self.remaining > 0:
                conn.loseConnection()
                raise RuntimeError("Response content shorter than Content-Length")
            self.complete = True
            self.wake()
            conn.responseComplete(self)

    def _start(self, message: MutableMapping[str, Any]) -> None:
        self.started = True
        self.expect100 = False
        status = self.status = message["status"]
        line = _STATUS_LINES.get(status)
        if line is None:
            raise RuntimeError(f"Invalid HTTP status code {status!r} in the response")
        conn = self.conn
        head = [line, conn.dates.header(conn.seconds())]
        stream = False
        for name, value in message.get("headers", ()):
            name = bytes(name).lower()
            if _BAD_NAME.search(name) is not None or not name:
                raise RuntimeError(f"Invalid HTTP header name {name!r} in the response")
            if name == b"content-length":
                self.remaining = int(value)
            elif name == b"transfer-encoding":
                if bytes(value).lower() == b"chunked":
                    self.chunked = True
                    continue  # added back when the head is finished
            elif name == b"connection":
                if b"close" in bytes(value).lower():
                    self.keepAlive = False
                continue
            elif name == b"content-type":
                stream = bytes(value).split(b";", 1)[0].strip().lower() == (
                    b"text/event-stream"
                )
            head += (name, b": ", value, b"\r\n")
        if conn.drain.draining and not conn.pipeline:
            self.keepAlive = False
        self.noBody = status in NO_BODY_STATUS or self.scope["method"] == "HEAD"
        self.head = head
        if stream:
            conn.streamStarted(self)

    def finishHead(self, head: list[bytes], body: bytes, more: bool) -> bytes:
        """
        Choose the framing now that the first body is known, and join the
        head and that body into one write.
        """
        lines = (len(head) - 2) // 4 + 2  # status, date, the application's
        if self.noBody:
            body = b""
            if self.remaining >= 0:
                self.remaining = -1
        elif self.remaining >= 0:
            self.chunked = False
            body = self._counted(body)
        elif not more and not self.chunked:
            head.append(b"content-length: %d\r\n" % (len(body),))
            lines += 1
            self.remaining = 0
        elif self.scope["http_version"] == "1.1":
            self.chunked = True
            head.append(b"transfer-encoding: chunked\r\n")
            lines += 1
            if body:
                body = b"%x\r\n%s\r\n" % (len(body), body)
            if not more:
                body += b"0\r\n\r\n"
        else:
            # HTTP/1.0 and no length: the close ends the body.
            self.keepAlive = False
            self.chunked = False
        if not self.keepAlive:
            head.append(b"connection: close\r\n")
            lines += 1
        head.append(b"\r\n")
        joined = b"".join(head)
        # One pass against response splitting: no control character in a
        # name or value, and exactly as many line ends as lines.
        if (
            joined.count(b"\n") != lines + 1
            or _BAD_HEAD.search(joined.replace(b"\r\n", b"")) is not None
        ):
            raise RuntimeError("Invalid HTTP header value in the response")
        return joined + body if body else joined

    def _counted(self, body: bytes) -> bytes:
        remaining = self.remaining
        if remaining >= 0:
            if len(body) > remaining:
                self.conn.loseConnection()
                raise RuntimeError("Response content longer than Content-Length")
            self.remaining = remaining - len(body)
        return body

    async def run(self, app: Callable[..., Any]) -> None:
        """
        The request's task: the application, then whatever it left undone.
        """
        try:
            await app(self.scope, self.receive, self.send)
        except asyncio.CancelledError:
            if not self.complete:
                self.conn.abortConnection()
            raise
        except Exception as e:
            self.conn.applicationFailed(self, e)
        else:
            if not self.complete and not self.disconnected:
                self.conn.applicationReturned(self)
        finally:
            self.conn.taskDone(self)
