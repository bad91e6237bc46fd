# -*- test-case-name: tests.unit.asgi.test_notice -*-
"""
For ASGI applications served by C{twistd gracesvc --asgi}: L{ShutdownNotice},
the middleware that tells an application's handlers when the server is
going away, so that they say goodbye themselves.

gracesvc ends what an application that knows nothing of it leaves open, at
the right moment for each kind of connection: a WebSocket gets the server's
Close (1001) and its closing handshake, an event stream the server's last
comment and its end.  An application that would rather say goodbye itself
(send its own last WebSocket message, answer a long poll early) wraps
itself in L{ShutdownNotice}::

    from gracesvc.asgi import ShutdownNotice

    api = FastAPI(lifespan=lifespan)
    app = ShutdownNotice(api)  # twistd -n gracesvc --asgi mymodule:app

    @api.websocket("/ws")
    async def ws(websocket: WebSocket):
        await websocket.accept()
        going = websocket.state.going_away      # an asyncio.Event
        ...
        await going.wait()
        await websocket.send_json({"bye": "reconnect in 1 s"})
        await websocket.close(1001)

The middleware opts in to the server's shutdown notice (the lifespan
extension C{lifespan.shutdown.notice}: see L{gracesvc._asgi.lifespan}),
swallows the notice so that the application's lifespan never sees a
message it does not know (Starlette's would take it for the shutdown), and
sets one C{asyncio.Event}, put in the lifespan's C{state} as
C{going_away}: the server copies that state into every request's scope, so
the same event is C{request.state.going_away} and
C{websocket.state.going_away} in Starlette and FastAPI.  It also sets
sse-starlette's C{AppStatus.should_exit} if sse-starlette is imported, so
that its event streams end themselves.  The event is set when the notice
comes (the listeners have closed; WebSockets then have half of
C{--close-timeout} before the server's Close), or at the lifespan's
shutdown if no notice came.

An application that has no lifespan of its own (Django's, Channels')
gets one from the middleware, which only opts in and waits.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from gracesvc._asgi.spec import SHUTDOWN_NOTICE, ClientDisconnected

__all__ = ["SHUTDOWN_NOTICE", "ClientDisconnected", "ShutdownNotice"]

_Message = MutableMapping[str, Any]
_Receive = Callable[[], Awaitable[_Message]]
_Send = Callable[[_Message], Awaitable[None]]

#: The key of the event in the lifespan's (and so every scope's) C{state}.
GOING_AWAY = "going_away"


class ShutdownNotice:
    """
    An ASGI middleware: the wrapped application's handlers find an
    C{asyncio.Event} at C{scope["state"]["going_away"]}, set when the
    server goes away (see the module docstring).

    @ivar app: the wrapped application.
    """

    def __init__(self, app: Any) -> None:
        """
        @param app: an ASGI 3 application.
        """
        self.app = app

    async def __call__(
        self, scope: MutableMapping[str, Any], receive: _Receive, send: _Send
    ) -> None:
        if scope.get("type") != "lifespan":
            await self.app(scope, receive, send)
            return
        offered = SHUTDOWN_NOTICE in (scope.get("extensions") or {})
        goingAway = asyncio.Event()
        state = scope.get("state")
        if isinstance(state, MutableMapping):
            state[GOING_AWAY] = goingAway
        lifespan = _Lifespan(receive, send, goingAway, offered)
        try:
            await self.app(scope, lifespan.receive, lifespan.send)
        except Exception:
            if lifespan.answered:
                raise
            # An application without a lifespan (Django's raises on the
            # scope): the middleware is its lifespan, to get the notice.
            await lifespan.standIn()


class _Lifespan:
    """
    The lifespan messages between the server and the wrapped application.
    """

    def __init__(
        self, receive: _Receive, send: _Send, goingAway: asyncio.Event, offered: bool
    ) -> None:
        self._receive = receive
        self._send = send
        self.goingAway = goingAway
        self.offered = offered
        #: whether the application answered the startup.
        self.answered = False
        self._startupReceived = False

    async def receive(self) -> _Message:
        while True:
            message = await self._receive()
            kind = message.get("type")
            if kind == "lifespan.shutdown.notice":
                self._goAway()
                continue
            if kind == "lifespan.startup":
                self._startupReceived = True
            elif kind == "lifespan.shutdown":
                self._goAway()
            return message

    async def send(self, message: _Message) -> None:
        if message.get("type") == "lifespan.startup.complete":
            self.answered = True
            if self.offered:
                extensions = dict(message.get("extensions") or {})
                extensions[SHUTDOWN_NOTICE] = {}
                message = {**message, "extensions": extensions}
        elif message.get("type") == "lifespan.startup.failed":
            self.answered = True
        await self._send(message)

    async def standIn(self) -> None:
        """
        Run the lifespan for an application that has none: start up at
        once, and wait for the shutdown.
        """
        if not self._startupReceived:
            await self.receive()
        await self.send({"type": "lifespan.startup.complete"})
        while (await self.receive()).get("type") != "lifespan.shutdown":
            pass
        await self._send({"type": "lifespan.shutdown.complete"})

    def _goAway(self) -> None:
        if self.goingAway.is_set():
            return
        self.goingAway.set()
        sse = sys.modules.get("sse_starlette.sse")
        status = getattr(sse, "AppStatus", None)
        if status is not None:
            status.should_exit = True
