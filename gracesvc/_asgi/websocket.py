# -*- test-case-name: tests.unit.asgi.test_websocket -*-
"""
An ASGI application's WebSockets, on gracesvc's L{DrainingWebSocket}.

The entry point is L{startSession}: it checks a WebSocket handshake (with
wsproto's handshake helpers), and runs the application on it as an
L{ASGIWebSocket}.  It is given the request's raw headers and a
L{HandshakeCarrier}, what it needs of the HTTP connection the handshake
came on, so that any HTTP/1.1 server can call it: L{serveUpgrade} calls it
for a request Twisted parsed (L{gracesvc._asgi.resource.ASGIResource}),
with a carrier over the request and its
L{gracesvc._protocols.http1.DrainingChannel}.

The session, per the specification (WebSocket C{spec_version} 2.5):

  - the application gets C{websocket.connect}, and the handshake waits for
    its answer: C{websocket.accept} (with its C{subprotocol} and
    C{headers}) completes it, C{websocket.close} is a 403, and the
    denial-response extension (C{websocket.http.response.start} and
    C{.body}, advertised in the scope) answers with any HTTP response;
  - once accepted, the connection is a L{DrainingWebSocket} with the
    session as its application: pings, the message-size limit (1009), the
    keepalive, the closing handshake bounded by the close timeout, and the
    drain: when it goes away, the server's Close (C{--ws-close-code}) and
    its closing handshake;
  - messages both ways; a send after the connection closed, or after a
    Close (the server's or the application's own), raises
    L{gracesvc._asgi.spec.ClientDisconnected}, an L{OSError};
  - C{websocket.disconnect} with the peer's Close code and reason (1006 if
    the connection ended without one) is always delivered, after the
    application's own C{websocket.close} too (a Channels consumer waits for
    it); the application then has the close timeout to return before its
    task is cancelled;
  - an application that raises is answered 500 before the accept, and
    closed with 1011 after it;
  - an application that opted in to the shutdown notice (see
    L{gracesvc._asgi.lifespan}) gets the drain's goodbye time, half the
    close timeout, to send its own last messages (and its own Close)
    before the server's Close.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import MutableMapping
from enum import Enum
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IPushProducer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.server import NOT_DONE_YET
from wsproto import ConnectionType
from wsproto.events import AcceptConnection
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError
from zope.interface import implementer

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.scopes import requestHeaders, splitURI, webSocketScope
from gracesvc._asgi.spec import ClientDisconnected
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._protocols.answers import ResponseCutAtCap
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.websocket import (
    INTERNAL_ERROR,
    DrainingWebSocket,
    WebSocketPolicy,
)

#: The code a C{websocket.disconnect} carries when the connection ended
#: without a Close frame from the peer (RFC 6455 section 7.1.5).
ABNORMAL_CLOSURE = 1006

log = Logger()


class HandshakeCarrier(Protocol):
    """
    What an ASGI WebSocket's handshake needs of the HTTP/1.1 connection it
    arrived on.  The connection tells the session when the client went away
    before the handshake was answered (L{ASGIWebSocket.handshakeLost}), and
    when the drain cut it (L{ASGIWebSocket.handshakeCut}).
    """

    def upgrade(self, response: bytes, websocket: DrainingWebSocket) -> None:
        """
        Write C{response} (the 101) and hand the connection, from its next
        byte on, to C{websocket}: it reads it, writes it, and answers to the
        drain for it.
        """

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> None:
        """
        Answer the handshake with an HTTP response (a denial): its status
        and headers with the first call, then its body, to the last part
        (C{more} false).
        """

    def abort(self) -> None:
        """
        Close the connection at once: a denial response that cannot be
        completed.
        """


class SessionState(Enum):
    """
    Where an L{ASGIWebSocket} is.
    """

    #: the handshake waits for the application's answer.
    CONNECTING = "connecting"
    #: the application denies the handshake with a response of its own.
    DENYING = "denying"
    #: accepted: messages flow.
    OPEN = "open"
    #: the connection is over and the application was told so.
    CLOSED = "closed"


_CONNECTING, _DENYING, _OPEN, _CLOSED = SessionState


def startSession(
    app: ASGIApp,
    scope: MutableMapping[str, Any],
    headers: list[tuple[bytes, bytes]],
    target: bytes,
    carrier: HandshakeCarrier,
    drain: Drain,
    policy: WebSocketPolicy,
) -> ASGIWebSocket | None:
    """
    Check a WebSocket handshake and run the ASGI application on it.

    @param scope: its C{websocket} scope.
    @param headers: the request's headers as received.
    @param target: the request target (path and query).
    @param carrier: the HTTP connection the handshake arrived on.
    @param drain: the drain the connection reports to.
    @param policy: how the WebSocket closes.
    @return: the session; L{None} if the handshake is not a valid one, which
        was answered 400 then.
    """
    handshake = H11Handshake(ConnectionType.SERVER)
    try:
        handshake.initiate_upgrade_connection(headers, target)
    except RemoteProtocolError as e:
        body = f"Bad WebSocket handshake: {e}\n".encode()
        carrier.respond(
            400,
            [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", b"%d" % (len(body),)),
            ],
            body,
            False,
        )
        return None
    session = ASGIWebSocket(app, scope, handshake, carrier, drain, policy)
    session.start()
    return session


@implementer(IPushProducer)
class ASGIWebSocket:
    """
    One ASGI WebSocket session (see the module docstring): the application's
    C{receive} and C{send}, and the application protocol of its
    L{DrainingWebSocket}.

    @ivar state: where it is.
    @ivar websocket: the connection, once accepted.
    @ivar task: the application's task.
    """

    def __init__(
        self,
        app: ASGIApp,
        scope: MutableMapping[str, Any],
        handshake: H11Handshake,
        carrier: HandshakeCarrier,
        drain: Drain,
        policy: WebSocketPolicy,
    ) -> None:
        self.app = app
        self.scope = scope
        self.handshake = handshake
        self.carrier = carrier
        self.drain = drain
        self.policy = policy
        self.state = _CONNECTING
        self.websocket: DrainingWebSocket | None = None
        self.task: asyncio.Task[None] | None = None
        self._inbox: deque[MutableMapping[str, Any]] = deque(
            [{"type": "websocket.connect"}]
        )
        self._waiter: asyncio.Future[None] | None = None
        self._paused = False
        self._resumed: asyncio.Future[None] | None = None
        self._closedByApplication: Deferred[None] | None = None
        self._disconnect: MutableMapping[str, Any] | None = None
        self._cancelCall: IDelayedCall | None = None
        self._denial: tuple[int, list[tuple[bytes, bytes]]] = (500, [])

    def start(self) -> None:
        """
        Run the application on the handshake.
        """
        self.task = self.app.run(
            self.app.application(self.scope, self.receive, self.send)  # type: ignore[arg-type]
        )
        self.task.add_done_callback(self._taskDone)

    # receive

    async def receive(self) -> MutableMapping[str, Any]:
        """
        The application's C{receive}: C{websocket.connect}, the messages,
        then C{websocket.disconnect} (again on every later call).
        """
        while not self._inbox:
            disconnect = self._disconnect
            if disconnect is not None:
                return disconnect
            waiter = self._waiter = self.app.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        message = self._inbox.popleft()
        if message["type"] == "websocket.disconnect":
            self._disconnect = message
        return message

    def _deliver(self, message: MutableMapping[str, Any]) -> None:
        self._inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # send

    async def send(self, message: MutableMapping[str, Any]) -> None:
        """
        The application's C{send}.

        @raise ClientDisconnected: a message sent after the connection closed
            (or after a Close).
        @raise RuntimeError: a message out of place.
        """
        kind = message.get("type")
        state = self.state
        if state is _OPEN:
            websocket = self.websocket
            assert websocket is not None
            if kind == "websocket.send":
                if not websocket.sending:
                    raise ClientDisconnected("the WebSocket is closed")
                text = message.get("text")
                if text is not None:
                    websocket.sendTextMessage(text)
                else:
                    websocket.sendBytesMessage(bytes(message.get("bytes") or b""))
                while self._paused and websocket.sending:
                    waiter = self._resumed
                    if waiter is None:
                        waiter = self._resumed = self.app.loop.create_future()
                    await waiter
                return
            if kind == "websocket.close":
                if not websocket.sending:
                    raise ClientDisconnected("the WebSocket is closed")
                websocket.loseConnection(
                    int(message.get("code", 1000)), str(message.get("reason") or "")
                )
                self._applicationClosed()
                return
        elif state is _CONNECTING:
            if kind == "websocket.accept":
                self._accept(message)
                return
            if kind == "websocket.close":
                # Closed before the accept: the handshake is refused.
                self._deny(403, [(b"content-length", b"0")], b"", False)
                return
            if kind == "websocket.http.response.start":
                self.state = _DENYING
                self._denial = (
                    int(message["status"]),
                    [(bytes(n), bytes(v)) for n, v in message.get("headers", ())],
                )
                return
        elif state is _DENYING:
            if kind == "websocket.http.response.body":
                status, headers = self._denial
                self._denial = (status, [])
                self._deny(
                    status,
                    headers,
                    bytes(message.get("body", b"")),
                    bool(message.get("more_body", False)),
                )
                return
        elif kind in ("websocket.send", "websocket.close"):
            raise ClientDisconnected("the WebSocket is closed")
        raise RuntimeError(
            f"unexpected ASGI message {kind!r} for a WebSocket ({state.value})"
        )

    def _accept(self, message: MutableMapping[str, Any]) -> None:
        subprotocol = message.get("subprotocol")
        extra = [(bytes(n), bytes(v)) for n, v in message.get("headers", ())]
        response = self.handshake.send(
            AcceptConnection(subprotocol=subprotocol, extra_headers=extra)
        )
        connection = self.handshake.connection
        assert connection is not None
        websocket = DrainingWebSocket(connection, self, self.drain, self.policy)
        self.websocket = websocket
        self.state = _OPEN
        self.carrier.upgrade(response, websocket)
        websocket.attachProducer(self)

    def _deny(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> None:
        self.state = _DENYING
        self.carrier.respond(status, headers, body, more)
        if not more:
            self._ended(ABNORMAL_CLOSURE, "")

    def _applicationClosed(self) -> None:
        closed, self._closedByApplication = self._closedByApplication, None
        if closed is not None:
            closed.callback(None)

    # IPushProducer: the connection's flow control.

    def pauseProducing(self) -> None:
        self._paused = True

    def resumeProducing(self) -> None:
        self._paused = False
        waiter, self._resumed = self._resumed, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def stopProducing(self) -> None:
        self.resumeProducing()

    # The application protocol of the DrainingWebSocket.

    def negotiationStarted(self, transport: object) -> None:
        pass

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, text: str) -> None:
        self._deliver({"type": "websocket.receive", "text": text})

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self._deliver({"type": "websocket.receive", "bytes": bytes(data)})

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        websocket = self.websocket
        peerClose = None if websocket is None else websocket.peerClose
        code, why = peerClose or (ABNORMAL_CLOSURE, "")
        self.resumeProducing()
        self._applicationClosed()
        self._ended(code, why)

    def goingAway(self) -> Deferred[None] | None:
        """
        The drain goes away.  An application that opted in to the shutdown
        notice is told through its lifespan, and has until it closes the
        WebSocket itself, or returns, but at most half the close timeout
        (see L{DrainingWebSocket}), before the server's Close; one that did
        not gets the Close now.
        """
        if not self.app.noticeWanted:
            return None
        closed: Deferred[None] = Deferred()
        self._closedByApplication = closed
        return closed

    # The handshake's connection.

    def handshakeLost(self) -> None:
        """
        The client went away before the handshake was answered.
        """
        if self.state is _CONNECTING or self.state is _DENYING:
            self._ended(ABNORMAL_CLOSURE, "")

    def handshakeCut(self) -> None:
        """
        The drain cut the connection before the handshake was answered (a
        503 answered it): the application's task is cancelled.
        """
        self.handshakeLost()
        task = self.task
        if task is not None:
            task.cancel()

    # The end.

    def _ended(self, code: int, reason: str) -> None:
        """
        The connection is over: tell the application, and cancel its task
        if it does not return within the close timeout.
        """
        if self.state is _CLOSED:
            return
        self.state = _CLOSED
        self._deliver({"type": "websocket.disconnect", "code": code, "reason": reason})
        task = self.task
        if task is not None and not task.done():
            self._cancelCall = self.drain.clock.callLater(
                self.policy.closeTimeout, task.cancel
            )

    def _taskDone(self, task: asyncio.Task[None]) -> None:
        cancelCall(self._cancelCall)
        self._cancelCall = None
        self._applicationClosed()
        if task.cancelled():
            if self.state is _OPEN:
                self._abortWebSocket()
            return
        error = task.exception()
        state = self.state
        if error is not None:
            if state is _CLOSED:
                log.info(
                    "ASGI WebSocket application raised after the connection "
                    "closed: {error}",
                    error=f"{type(error).__name__}: {error}",
                )
                return
            log.failure(
                "Exception in ASGI application",
                failure=Failure(error, type(error), error.__traceback__),
            )
        if state is _CONNECTING:
            if error is None:
                log.error("ASGI application returned without accepting the WebSocket")
            body = b"Internal Server Error\n"
            self._deny(
                500,
                [
                    (b"content-type", b"text/plain; charset=utf-8"),
                    (b"content-length", b"%d" % (len(body),)),
                ],
                body,
                False,
            )
        elif state is _DENYING:
            self.carrier.abort()
            self._ended(ABNORMAL_CLOSURE, "")
        elif state is _OPEN:
            websocket = self.websocket
            assert websocket is not None
            if websocket.sending:
                if error is None:
                    websocket.loseConnection(1000, "")
                else:
                    websocket.loseConnection(INTERNAL_ERROR, "internal error")

    def _abortWebSocket(self) -> None:
        websocket = self.websocket
        if websocket is not None and websocket.sending:
            websocket.loseConnection(INTERNAL_ERROR, "")


class _RequestCarrier:
    """
    The carrier of a handshake Twisted parsed: its request, on a
    L{DrainingChannel}.
    """

    def __init__(self, request: Request) -> None:
        self.request = request
        self.session: ASGIWebSocket | None = None
        self._started = False
        self._upgraded = False
        request.notifyFinish().addErrback(self._lost)

    def upgrade(self, response: bytes, websocket: DrainingWebSocket) -> None:
        channel = self.request.channel
        assert isinstance(channel, DrainingChannel)
        self._upgraded = True
        channel.upgrade(websocket)
        transport = channel.transport
        assert transport is not None
        transport.write(response)

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> None:
        request = self.request
        if request.finished or self._upgraded:
            return
        if not self._started:
            self._started = True
            request.setResponseCode(status)
            request.defaultContentType = None  # type: ignore[attr-defined]
            for name, value in headers:
                request.responseHeaders.addRawHeader(name, value)
        request.write(body)
        if not more:
            request.finish()

    def abort(self) -> None:
        if not self.request.finished:
            self.request.loseConnection()

    def _lost(self, reason: Failure) -> None:
        session = self.session
        if session is None or self._upgraded:
            return
        if reason.check(ResponseCutAtCap):
            session.handshakeCut()
        else:
            session.handshakeLost()


def serveUpgrade(
    request: Request,
    app: ASGIApp,
    drain: Drain,
    policy: WebSocketPolicy,
    rootPath: str = "",
) -> object:
    """
    Answer a request Twisted parsed that asks to upgrade to a WebSocket:
    the handshake is the application's (see L{startSession}).

    @return: what a resource's C{render} returns.
    """
    carrier = _RequestCarrier(request)
    path, query = splitURI(request)
    target = path + b"?" + query if query else path
    carrier.session = startSession(
        app,
        webSocketScope(request, app, rootPath),
        requestHeaders(request),
        target,
        carrier,
        drain,
        policy,
    )
    return NOT_DONE_YET
