# -*- test-case-name: tests.unit.asgi.test_app -*-
"""
An ASGI application as gracesvc serves it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

#: An ASGI 3 application: C{await app(scope, receive, send)}.
ASGIApplication = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

#: The route label of a request whose application left no route in its
#: scope (see L{routeOf}).
ASGI_ROUTE = "asgi"


class ASGIApp:
    """
    One ASGI application and what every connection serving it shares: the
    asyncio loop its tasks run on (the one Twisted's asyncio reactor runs),
    the state its lifespan startup left, and the tasks running now.

    @ivar application: the ASGI callable.
    @ivar loop: where its tasks are created.
    @ivar state: the lifespan's C{scope["state"]}, shallow-copied into each
        connection's scope; L{None} when the application has no lifespan
        (nothing is copied then).
    @ivar tasks: the application tasks running now, each a request's or a
        WebSocket's: what is cancelled and awaited before the reactor stops.
    """

    def __init__(
        self, application: ASGIApplication, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.application = application
        self.loop = loop
        self.state: dict[str, Any] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def scopeState(self) -> dict[str, Any] | None:
        """
        @return: a shallow copy of the lifespan's state for one connection's
            scope, as the specification asks, or L{None} if there is none.
        """
        state = self.state
        return None if state is None else state.copy()


def routeOf(scope: MutableMapping[str, Any]) -> str:
    """
    @return: the route the framework matched, for the metrics: the C{path}
        of the C{route} Starlette and FastAPI leave in the scope (after the
        application ran), else L{ASGI_ROUTE}.  Never the raw path.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else ASGI_ROUTE
