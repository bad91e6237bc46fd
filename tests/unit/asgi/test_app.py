"""
L{gracesvc._asgi.app}.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.app import ASGI_ROUTE, ASGIApp, routeOf


async def application(scope: Any, receive: Any, send: Any) -> None:
    pass


class ASGIAppTests(SynchronousTestCase):
    def test_stateIsCopiedShallowly(self) -> None:
        """
        Each scope gets its own copy of the lifespan's state; the values
        are shared.
        """
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        app = ASGIApp(application, loop)
        self.assertIsNone(app.scopeState())
        pool = object()
        app.state = {"pool": pool}
        one, two = app.scopeState(), app.scopeState()
        assert one is not None and two is not None
        self.assertIsNot(one, two)
        self.assertIs(one["pool"], pool)
        one["added"] = 1
        self.assertNotIn("added", app.state)


class RouteOfTests(SynchronousTestCase):
    def test_theFrameworksRoute(self) -> None:
        class Route:
            path = "/users/{id}"

        self.assertEqual(routeOf({"route": Route()}), "/users/{id}")

    def test_noRoute(self) -> None:
        self.assertEqual(routeOf({}), ASGI_ROUTE)
        self.assertEqual(routeOf({"route": object()}), ASGI_ROUTE)
