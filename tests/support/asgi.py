"""
ASGI applications served in memory: a L{Wire} whose site serves an
L{ASGIResource}, and an asyncio loop of the test's own, driven by hand
between two moves of the wire's bytes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from twisted.web.resource import IResource

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.lifespan import Lifespan
from gracesvc._asgi.resource import ASGIResource
from gracesvc._protocols.websocket import WebSocketPolicy
from gracesvc.testing import Wire

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Application = Callable[[MutableMapping[str, Any], Receive, Send], Awaitable[None]]


def spin(loop: asyncio.AbstractEventLoop, turns: int = 1) -> None:
    """
    Run C{turns} iterations of C{loop}: what is ready runs, nothing waits.
    """
    for _ in range(turns):
        loop.call_soon(loop.stop)
        loop.run_forever()


class ASGIWire:
    """
    An ASGI application behind a L{Wire}'s L{DrainingSite}, on a loop
    driven by L{run}.

    @ivar loop: the application's loop.
    @ivar app: the application as gracesvc serves it.
    @ivar wire: the site, its drain and its clock.
    """

    def __init__(
        self,
        application: Application,
        webSocketPolicy: WebSocketPolicy | None = None,
        lifespan: Lifespan | None = None,
        operationalRoutes: bool = False,
        **wireKeywords: Any,
    ) -> None:
        """
        @param operationalRoutes: whether gracesvc's C{/healthz},
            C{/readyz} and C{/metrics} are served beside the application,
            as C{twistd gracesvc --asgi} serves them over HTTP/2.
        @param wireKeywords: for the L{Wire}.
        """
        self.loop = asyncio.new_event_loop()
        self.app = ASGIApp(application, self.loop)
        self.policy = WebSocketPolicy() if webSocketPolicy is None else webSocketPolicy

        def resource(wire: Wire) -> IResource:
            served: IResource = ASGIResource(
                self.app, wire.drain, lifespan, self.policy
            )
            if operationalRoutes:
                return withOperationalRoutes(served, wire.drain, wire.metrics)
            return served

        self.wire = Wire(resource=resource, webSocketPolicy=self.policy, **wireKeywords)

    def run(self, turns: int = 10) -> None:
        """
        Let the application and the wire take C{turns} turns each.
        """
        for _ in range(turns):
            spin(self.loop)
            self.wire.flush()

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass on the wire's clock, the loop turning between.
        """
        steps = max(1, round(seconds / 0.01))
        for _ in range(steps):
            self.wire.clock.advance(seconds / steps)
            self.run(2)

    def close(self) -> None:
        """
        Cancel what is left of the application's tasks, and close the loop.
        """
        for task in list(self.app.tasks):
            task.cancel()
        spin(self.loop, 5)
        self.loop.close()
