"""
The demo application gracesvc serves when it is given no application of
the user's: C{/ping}, an event stream, a long poll and a WebSocket echo,
served as any application is, behind gracesvc's operational routes (see
L{gracesvc._apps.compose}).
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable

from klein import Klein
from klein.resource import KleinResource
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.websocket import WebSocketResource, WebSocketTransport

from gracesvc._apps.compose import answerJSON
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._metrics.registry import labelRoute
from gracesvc._protocols.answers import isWebSocketUpgrade
from gracesvc._protocols.longlived import EventStream, LongPoll

#: How long C{GET /poll} waits for a tick before it answers C{timeout}.
POLL_TIMEOUT = 30.0


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


class Ticker:
    """
    A tick every C{interval} seconds, counted from 1, while anyone listens:
    what C{/events} streams and C{/poll} waits for.
    """

    log = Logger()

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self.clock = clock
        self.interval = interval
        #: the ticks so far.
        self.count = 0
        self._listeners: dict[object, Callable[[int], object]] = {}
        self._call: IDelayedCall | None = None
        self._lastTick = -math.inf

    def subscribe(self, listener: Callable[[int], object]) -> Callable[[], None]:
        """
        Call C{listener} with the tick's number on every tick.

        @return: a function that ends the subscription.
        """
        key = object()
        self._listeners[key] = listener
        self._schedule()

        def unsubscribe() -> None:
            self._listeners.pop(key, None)
            if not self._listeners:
                cancelCall(self._call)
                self._call = None

        return unsubscribe

    def nextTick(self) -> Deferred[int]:
        """
        @return: a Deferred that fires with the next tick's number;
            cancelling it ends its subscription.
        """

        def tick(n: int) -> None:
            unsubscribe()
            d.callback(n)

        unsubscribe = self.subscribe(tick)
        d: Deferred[int] = Deferred(lambda _: unsubscribe())
        return d

    def _schedule(self) -> None:
        if self._call is None and self._listeners:
            # One interval after the last tick, so that ticks do not drift;
            # a tick missed (the reactor was busy, nobody listened) is not
            # made up for.
            now = self.clock.seconds()
            due = self._lastTick + self.interval
            if due <= now:
                due = now + self.interval
            self._call = self.clock.callLater(due - now, self._tick)

    def _tick(self) -> None:
        assert self._call is not None
        self._lastTick = self._call.getTime()
        self._call = None
        self.count += 1
        for listener in list(self._listeners.values()):
            try:
                listener(self.count)
            except Exception:
                self.log.failure("a tick listener failed")
        self._schedule()


def _lastEventId(stream: EventStream) -> int:
    """
    @return: the tick a reconnecting client last got, from its
        C{Last-Event-ID}; 0 for a new client or an id that is not one of
        ours.
    """
    text = stream.lastEventId
    if text is not None and text.isascii() and text.isdigit():
        return int(text)
    return 0


class _SelfLabelling(KleinResource):
    """
    The demo's routes as a resource: each route labels the requests it
    answers, and a request no route answers is C{other} as it stands, so
    the composition leaves the labelling to it.
    """

    labelsRoutes = True


class GraceApp:
    """
    The demo's Klein application: C{/ping}, C{/events}, C{/poll} and the
    C{/ws} WebSocket echo.  It is served as any C{--app} is, behind
    gracesvc's C{/healthz}, C{/readyz} and C{/metrics}
    (L{gracesvc._apps.compose.withOperationalRoutes}).

    Each route labels its requests with its rule (L{labelRoute}) as it
    answers them: the label the composition finds for any Klein application
    by matching the request again (L{gracesvc._apps.compose.kleinRoute}),
    without that second match, which costs a few microseconds a request.  A
    request that matches no route is labelled the composition's way.

    @ivar router: the routes, shared by every instance; state lives on the
        instance.
    """

    router = Klein()

    def __init__(
        self,
        clock: IReactorTime,
        drain: Drain,
        pingDelay: float,
        tick: float = 0.5,
    ) -> None:
        """
        @param clock: schedules the C{/ping} delay and the ticks.
        @param drain: tells C{/events} and C{/poll} when to wrap up, and
            C{/readyz} whether the service is draining.
        @param pingDelay: seconds C{/ping} waits before answering.
        @param tick: seconds between two ticks of C{/events} and C{/poll}.
        """
        self.clock = clock
        self.drain = drain
        self.pingDelay = pingDelay
        self.echo = WebSocketResource(EchoFactory())
        self.ticker = Ticker(clock, tick)

    def resource(self) -> IResource:
        """
        @return: the application's resource: its routes, each labelling its
            requests itself.
        """
        return _SelfLabelling(self.router)

    @router.route("/ping", methods=["GET"])
    def ping(self, request: IRequest) -> bytes | Deferred[bytes]:
        """
        Answer C{{"message": "pong"}} after the ping delay.
        """
        labelRoute(request, "/ping")
        if self.pingDelay <= 0:
            return answerJSON(request, 200, {"message": "pong"})
        return deferLater(
            self.clock, self.pingDelay, answerJSON, request, 200, {"message": "pong"}
        )

    @router.route("/events", methods=["GET"])
    def events(self, request: IRequest) -> Deferred[None]:
        """
        A server-sent event stream: C{event: tick} every tick, C{data:
        {"tick": n}} and C{id: n}, n counting on from the client's
        C{Last-Event-ID} (from 1 for a new client), so that a client that
        reconnects, here or to another instance, resumes where it was.
        Ends with a C{shutdown} event when the drain goes away (see
        L{EventStream}).
        """
        labelRoute(request, "/events")
        stream = EventStream(request, self.drain)
        if stream.ended:
            return stream.whenEnded()
        lastId = _lastEventId(stream)

        def tick(_: int) -> None:
            nonlocal lastId
            lastId += 1
            stream.send(json.dumps({"tick": lastId}), event="tick", id=str(lastId))

        unsubscribe = self.ticker.subscribe(tick)
        stream.whenEnded().addCallback(lambda _: unsubscribe())
        return stream.whenEnded()

    @router.route("/poll", methods=["GET"])
    def poll(self, request: IRequest) -> Deferred[None]:
        """
        A long poll: answers C{{"status": "tick", "tick": n}} at the next
        tick, C{{"status": "timeout"}} if none comes within
        L{POLL_TIMEOUT}, or C{{"status": "reconnect", "retry": ms}} at once
        when the drain goes away (see L{LongPoll}).
        """
        labelRoute(request, "/poll")
        news = self.ticker.nextTick().addCallback(
            lambda n: json.dumps({"status": "tick", "tick": n}).encode("utf-8")
        )
        news.addTimeout(
            POLL_TIMEOUT,
            self.clock,
            onTimeoutCancel=lambda _, __: b'{"status": "timeout"}',
        )
        return LongPoll(request, self.drain).answerWith(news)

    @router.route("/ws", methods=["GET"])
    def ws(self, request: IRequest) -> bytes | Resource:
        """
        The WebSocket echo (see L{EchoWebSocket}); a plain C{GET} is told
        to upgrade (426).
        """
        labelRoute(request, "/ws")
        if not isWebSocketUpgrade(request):
            request.setResponseCode(426)
            request.setHeader(b"Upgrade", b"websocket")
            request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
            return b"Upgrade Required: this is a WebSocket endpoint.\n"
        return self.echo
