# -*- test-case-name: tests.unit.asgi.test_h2stream -*-
"""
HTTP/2 request bodies streamed to ASGI applications, with backpressure.

Twisted's HTTP/2 stream (L{H2Stream<twisted.web._http2.H2Stream>}) hands
its request to the site only once the whole body has arrived, spooling it
meanwhile and re-opening the stream's flow-control window for every DATA
frame: an application would see an upload only once complete, and the
client would never be slowed.  For an ASGI site (its request factory is
L{StreamingRequest}) the HTTP/2 connection
(L{gracesvc._protocols.h2.DrainingH2Connection}) instead dispatches a
request whose body follows at its HEADERS (L{StreamingRequest.dispatchAtHeaders}),
as HTTP/1.1 does, and as uvicorn and hypercorn do:

  - the application's task starts then, and its C{receive} is given the
    body's DATA as it arrives (L{StreamingBody}), C{more_body} true until
    the client's END_STREAM;
  - past L{HIGH_WATER} bytes not yet received by the application, the
    stream is paused (Twisted's own C{H2Stream.pauseProducing}: the DATA
    that still comes is held by Twisted, its window not re-opened, so the
    client can send one window more at most); once the application has
    received what was buffered, the stream resumes, and Twisted hands over
    what it held and re-opens the window;
  - a request whose stream ends with its HEADERS (a C{GET}) is served as
    before, its empty body spooled (L{gracesvc._asgi.body.SpooledBody}).

A resource of the site that does not take the body (C{/healthz},
C{/readyz}, C{/metrics}, the 503 of a lifespan not ready) leaves it to be
dropped as it arrives.  Once the response is over, or the client gone, the
body is closed (its DATA dropped); the connection resets a stream whose
client is still sending once the response is complete (RFC 9113 section
8.1, C{NO_ERROR}), and gives back to the connection's window what Twisted
held for it.
"""

from __future__ import annotations

import asyncio
from enum import Enum
from io import BytesIO

from twisted.internet.interfaces import IPushProducer
from twisted.web.server import Request
from zope.interface import implementer

from gracesvc._asgi.body import HIGH_WATER, Message
from gracesvc._pins.twisted_h2 import H2Stream
from gracesvc._protocols.h2 import IHeadersDispatch


class BodyState(Enum):
    """
    Where a L{StreamingBody} is.
    """

    #: DATA arrives; the stream's window is re-opened as it does.
    RECEIVING = "receiving"
    #: more than the high-water mark is buffered, not yet received by the
    #: application: the stream is paused, its window left closed.
    PAUSED = "paused"
    #: the client ended the stream: what is buffered is the rest.
    ARRIVED = "arrived"
    #: the application has received the body's end.
    TAKEN = "taken"
    #: nothing more is taken: the response is over, the client is gone, or
    #: no resource took the body; DATA that still comes is dropped.
    CLOSED = "closed"


_RECEIVING, _PAUSED, _ARRIVED, _TAKEN, _CLOSED = BodyState


class StreamingBody:
    """
    An HTTP/2 request's body as it arrives, for its application's
    C{receive} (a L{gracesvc._asgi.body.BodySource}).

    @ivar state: where it is.
    @ivar buffered: bytes received from the stream, not yet handed out.
    @ivar claimed: whether a resource took it (else it is dropped).
    """

    __slots__ = ("state", "buffered", "claimed", "_stream", "_chunks", "_waiter")

    def __init__(self, stream: IPushProducer) -> None:
        """
        @param stream: the request's HTTP/2 stream: paused and resumed for
            the backpressure.
        """
        self.state = _RECEIVING
        self.buffered = 0
        self.claimed = False
        self._stream = stream
        self._chunks: list[bytes] = []
        self._waiter: asyncio.Future[None] | None = None

    # From the stream.

    def received(self, data: bytes) -> None:
        """
        A chunk of the body arrived.
        """
        state = self.state
        if state is _CLOSED or not data:
            return
        self._chunks.append(data)
        self.buffered += len(data)
        if self.buffered > HIGH_WATER and state is _RECEIVING:
            self.state = _PAUSED
            self._stream.pauseProducing()
        self._wake()

    def arrived(self) -> None:
        """
        The client ended the stream: the body is all here.
        """
        if self.state is _RECEIVING or self.state is _PAUSED:
            self.state = _ARRIVED
            self._wake()

    # The application (BodySource).

    @property
    def exhausted(self) -> bool:
        return self.state is _TAKEN or self.state is _CLOSED

    def take(self) -> Message | None:
        state = self.state
        if not self._chunks and state is not _ARRIVED:
            return None
        chunks = self._chunks
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self._chunks = []
        self.buffered = 0
        if state is _PAUSED:
            # Everything buffered is received: Twisted hands over what it
            # held meanwhile (perhaps the end too), and re-opens the window.
            self.state = _RECEIVING
            self._stream.resumeProducing()
        if self.state is _ARRIVED and not self._chunks:
            self.state = _TAKEN
            return {"type": "http.request", "body": data, "more_body": False}
        return {"type": "http.request", "body": data, "more_body": True}

    def arrival(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        waiter = self._waiter
        if waiter is None:
            waiter = self._waiter = loop.create_future()
        if self._chunks or self.state is not _RECEIVING:
            self._wake()
        return waiter

    def close(self) -> None:
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self._chunks = []
        self.buffered = 0
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


@implementer(IHeadersDispatch)
class StreamingRequest(Request):
    """
    The request of an ASGI site: under HTTP/2, one whose body follows its
    HEADERS is dispatched at once, its body handed to a L{StreamingBody}
    (see the module docstring).  Otherwise, Twisted's L{Request}.

    @ivar body: the streamed body, once dispatched at its HEADERS.
    """

    body: StreamingBody | None = None

    def gotLength(self, length: int | None) -> None:
        if isinstance(self.channel, H2Stream):
            # Its body, if any, is streamed, never spooled (to a temporary
            # file past 100 KB): the content stays empty.
            self.content = BytesIO()
            return
        super().gotLength(length)

    def dispatchAtHeaders(self, command: bytes, path: bytes) -> None:
        """
        Render the request now, its body to follow (see
        L{IHeadersDispatch}).
        """
        body = self.body = StreamingBody(self.channel)
        Request.requestReceived(self, command, path, b"HTTP/2")
        if not body.claimed:
            body.close()

    def claimBody(self) -> StreamingBody | None:
        """
        @return: the streamed body, now the caller's to take; L{None} if
            the body is not streamed (it is in C{content}).
        """
        body = self.body
        if body is not None:
            body.claimed = True
        return body

    def handleContentChunk(self, data: bytes) -> None:
        body = self.body
        if body is None:
            super().handleContentChunk(data)
        else:
            body.received(data)

    def requestReceived(self, command: bytes, path: bytes, version: bytes) -> None:
        body = self.body
        if body is None:
            super().requestReceived(command, path, version)
        else:
            # The stream's end: the request was dispatched at its HEADERS.
            body.arrived()
