"""
The routes gracesvc serves.
"""

from __future__ import annotations

import json
import random

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, NoResource, Resource
from twisted.web.websocket import WebSocketResource, WebSocketTransport

from ._drain import Drain
from ._metrics import Metrics, MetricsResource
from ._websocket import isWebSocketUpgrade


def _json(request: IRequest, code: int, body: dict[str, str]) -> bytes:
    payload = json.dumps(body).encode("utf-8")
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Content-Length", b"%d" % (len(payload),))
    return payload


def renderHealthz(request: IRequest) -> bytes:
    """
    200 while the process is alive, draining or not: a liveness probe must
    not restart an instance that is shutting down on purpose.
    """
    return _json(request, 200, {"status": "ok"})


def renderReadyz(request: IRequest, drain: Drain) -> bytes:
    """
    200 while serving, 503 from the first stop signal on, so that load
    balancers take the instance out of rotation.
    """
    if drain.draining:
        return _json(request, 503, {"status": "draining"})
    return _json(request, 200, {"status": "ready"})


class EchoWebSocket:
    """
    C{GET /ws}: a WebSocket that echoes every message, and when the server
    goes away says goodbye, with when to reconnect, before the Close::

        {"type": "goodbye", "reconnect_ms": 1437}

    C{reconnect_ms} is drawn per connection between C{reconnectMs} and
    twice that, so that clients do not all come back at once.
    """

    transport: WebSocketTransport

    def __init__(self, reconnectMs: int, rng: random.Random) -> None:
        self.reconnectMs = reconnectMs + rng.randrange(reconnectMs + 1)

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, message: str) -> None:
        self.transport.sendTextMessage(message)

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        self.transport.sendBytesMessage(bytes(data))

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass

    def goingAway(self) -> None:
        goodbye = {"type": "goodbye", "reconnect_ms": self.reconnectMs}
        self.transport.sendTextMessage(json.dumps(goodbye))


class EchoFactory:
    """
    Builds an L{EchoWebSocket} for each connection to C{/ws}.
    """

    def __init__(
        self, reconnectMs: int = 1000, rng: random.Random | None = None
    ) -> None:
        self.reconnectMs = reconnectMs
        self.rng = random.Random() if rng is None else rng

    def buildProtocol(self, request: object) -> EchoWebSocket:
        return EchoWebSocket(self.reconnectMs, self.rng)


class GraceApp:
    """
    The Klein application: C{/ping}, C{/healthz}, C{/readyz} and the C{/ws}
    WebSocket echo.

    @ivar router: the routes, shared by every instance; state lives on the
        instance.
    """

    router = Klein()

    def __init__(
        self,
        clock: IReactorTime,
        drain: Drain,
        pingDelay: float,
        metrics: Metrics | None = None,
    ) -> None:
        """
        @param clock: schedules the C{/ping} delay.
        @param drain: tells C{/readyz} whether the service is draining.
        @param pingDelay: seconds C{/ping} waits before answering.
        @param metrics: served on C{/metrics} if given (L{None} when they are
            served on an endpoint of their own).
        """
        self.clock = clock
        self.drain = drain
        self.pingDelay = pingDelay
        self.metrics = metrics
        self.echo = WebSocketResource(EchoFactory())

    def resource(self) -> IResource:
        """
        @return: the root resource serving these routes.
        """
        return self.router.resource()

    @router.route("/ping", methods=["GET"])
    def ping(self, request: IRequest) -> bytes | Deferred[bytes]:
        """
        Answer C{{"message": "pong"}} after the ping delay.
        """
        if self.pingDelay <= 0:
            return _json(request, 200, {"message": "pong"})
        return deferLater(
            self.clock, self.pingDelay, _json, request, 200, {"message": "pong"}
        )

    @router.route("/healthz", methods=["GET"])
    def healthz(self, request: IRequest) -> bytes:
        """
        See L{renderHealthz}.
        """
        return renderHealthz(request)

    @router.route("/metrics", methods=["GET"])
    def metricsRoute(self, request: IRequest) -> bytes | Resource:
        """
        The metrics in the Prometheus text format, unless they are served on
        an endpoint of their own.
        """
        if self.metrics is None:
            return NoResource()
        return MetricsResource(self.metrics)

    @router.route("/ws", methods=["GET"])
    def ws(self, request: IRequest) -> bytes | Resource:
        """
        The WebSocket echo (see L{EchoWebSocket}); a plain C{GET} is told
        to upgrade (426).
        """
        if not isWebSocketUpgrade(request):
            request.setResponseCode(426)
            request.setHeader(b"Upgrade", b"websocket")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Upgrade Required: this is a WebSocket endpoint.\n"
        return self.echo

    @router.route("/readyz", methods=["GET"])
    def readyz(self, request: IRequest) -> bytes:
        """
        See L{renderReadyz}.
        """
        return renderReadyz(request, self.drain)
