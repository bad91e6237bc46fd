# -*- test-case-name: tests.unit.asgi.test_http1 -*-
"""
The WebSocket hand-off of the ASGI HTTP/1.1 path (L{gracesvc._asgi.http1}):
an upgrade request's handshake is run by the ASGI WebSocket session
(L{gracesvc._asgi.websocket.startSession}) through a carrier on the
connection, which then either writes the 101 and hands the connection over
to the session's L{UpgradedProtocol}, which answers for it to the drain
from then on, or answers the request as HTTP (a 403, a denial response).

The connection is known here only as the structural
L{UpgradableConnection}, so that this module does not import the one that
calls it.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.python.failure import Failure

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.cycle import Cycle
from gracesvc._asgi.scopes import subprotocols
from gracesvc._asgi.spec import WEBSOCKET_ASGI
from gracesvc._asgi.websocket import ASGIWebSocket, startSession
from gracesvc._asgi.wire import STATUS_LINES
from gracesvc._core.drain import Drain
from gracesvc._protocols.websocket import DrainingWebSocket, WebSocketPolicy


class UpgradedProtocol(Protocol):
    """
    The protocol an HTTP/1.1 connection is handed to after a WebSocket
    handshake (a L{gracesvc._protocols.websocket.DrainingWebSocket}): it is
    given the connection as its transport (a
    L{gracesvc._protocols.websocket.Carrier}), and answers for the
    connection to the drain.
    """

    @property
    def inFlight(self) -> int: ...

    @property
    def state(self) -> str: ...

    def makeConnection(self, transport: Any) -> None: ...

    def dataReceived(self, data: bytes) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...

    def beginDrain(self) -> None: ...

    def cut(self, retryAfter: int) -> int: ...

    def abort(self) -> None: ...


class WebSocketHandshake(Protocol):
    """
    What starts the ASGI WebSocket session of an upgrade request (see
    L{serveWebSockets}): it runs the application's C{websocket.connect},
    and then either has the connection upgraded
    (L{UpgradableConnection.upgrade}) or answers the request as HTTP (a
    403, a denial response: see L{UpgradableConnection.answerUpgrade}).
    """

    def __call__(self, connection: UpgradableConnection, cycle: Cycle) -> None:
        """
        @param connection: the connection, its reading paused: it is the
            carrier of the WebSocket once upgraded.
        @param cycle: the upgrade request, its scope an HTTP one.
        """


class UpgradableConnection(Protocol):
    """
    What a WebSocket handshake needs of the HTTP/1.1 connection its upgrade
    request arrived on (L{gracesvc._asgi.http1.ASGIConnection}).
    """

    @property
    def state(self) -> str:
        """
        The connection's state, as the drain reads it: C{"closing"} once it
        is closing or aborted.
        """

    def write(self, data: bytes) -> None:
        """
        Write C{data} to the client.
        """

    def upgrade(self, protocol: UpgradedProtocol) -> bytes:
        """
        Hand the connection to C{protocol}.

        @return: the bytes read behind the upgrade request's head, which
            C{protocol} has been given already.
        """

    def answerUpgrade(self, status: int, headers: bytes, body: bytes) -> None:
        """
        Answer the upgrade request as plain HTTP, and close after.

        @param headers: header lines, each ending in CR LF.
        """

    def abortConnection(self) -> None:
        """
        Close at once.
        """


class _Handshake:
    """
    The carrier of one WebSocket handshake on an HTTP/1.1 connection (see
    L{gracesvc._asgi.websocket.HandshakeCarrier}): the 101 and the
    hand-over, or an HTTP answer; and what the connection tells the session
    before the hand-over.
    """

    __slots__ = ("connection", "cycle", "session", "_denial")

    def __init__(self, connection: UpgradableConnection, cycle: Cycle) -> None:
        self.connection = connection
        self.cycle = cycle
        self.session: ASGIWebSocket | None = None
        self._denial: list[bytes] = []

    def upgrade(self, response: bytes, websocket: DrainingWebSocket) -> None:
        connection = self.connection
        if self.cycle.complete or connection.state == "closing":
            return
        connection.write(response)
        connection.upgrade(websocket)

    def respond(
        self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, more: bool
    ) -> None:
        """
        A denial response, buffered to its end and written whole: its
        C{content-length} is the body's.
        """
        self._denial.append(body)
        if more:
            return
        body = b"".join(self._denial)
        lines = b"".join(
            b"%s: %s\r\n" % (bytes(name).lower(), bytes(value))
            for name, value in headers
            if bytes(name).lower()
            not in (b"content-length", b"transfer-encoding", b"connection")
            and b"\n" not in bytes(value)
            and b"\r" not in bytes(value)
        )
        if STATUS_LINES.get(status) is None:
            status = 500
        self.connection.answerUpgrade(status, lines, body)

    def abort(self) -> None:
        self.connection.abortConnection()

    def lost(self) -> None:
        if self.session is not None:
            self.session.handshakeLost()

    def cut(self) -> None:
        if self.session is not None:
            self.session.handshakeCut()


def serveWebSockets(
    app: ASGIApp, drain: Drain, policy: WebSocketPolicy
) -> WebSocketHandshake:
    """
    @return: what starts the ASGI WebSocket session
        (L{gracesvc._asgi.websocket.startSession}) of an upgrade request on
        an L{UpgradableConnection}, with its C{websocket} scope.
    """

    def handshake(connection: UpgradableConnection, cycle: Cycle) -> None:
        http = cycle.scope
        scope = http.copy()
        del scope["method"]
        scope["type"] = "websocket"
        scope["asgi"] = WEBSOCKET_ASGI
        scope["scheme"] = "wss" if http["scheme"] == "https" else "ws"
        scope["subprotocols"] = subprotocols(http["headers"])
        scope["extensions"] = {"websocket.http.response": {}}
        carrier = cycle.handshake = _Handshake(connection, cycle)
        carrier.session = startSession(
            app, scope, http["headers"], cycle.url, carrier, drain, policy
        )

    return handshake
