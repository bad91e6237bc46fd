"""
L{gracesvc._asgi.app}.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.app import ASGI_ROUTE, ASGIApp, routeOf
from tests.support.asgi import spin


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


class StopTasksTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)
        self.app = ASGIApp(application, self.loop)
        self.clock = Clock()

    def test_cancelledAndGeneratorsClosed(self) -> None:
        """
        The tasks left are cancelled and awaited, then the asynchronous
        generators left suspended are closed: their C{finally} runs.
        """
        closed: list[str] = []

        async def ticks() -> AsyncIterator[int]:
            try:
                while True:
                    yield 1
            finally:
                closed.append("generator")

        async def stream() -> None:
            generator = ticks()
            await generator.__anext__()
            await asyncio.sleep(3600)

        task = self.app.run(stream())
        spin(self.loop, 2)
        stopped = self.app.stopTasks(self.clock, 5.0)
        self.assertNoResult(stopped)
        spin(self.loop, 10)
        self.successResultOf(stopped)
        self.assertTrue(task.cancelled())
        self.assertEqual(closed, ["generator"])

    def test_within(self) -> None:
        """
        A task that will not end is waited for C{within} seconds, no more.
        """

        stubbornness = [True]

        async def stubborn() -> None:
            while stubbornness:
                try:
                    await asyncio.sleep(3600)
                except asyncio.CancelledError:
                    pass

        task = self.app.run(stubborn())
        spin(self.loop, 2)
        stopped = self.app.stopTasks(self.clock, 1.0)
        spin(self.loop, 3)
        self.assertNoResult(stopped)
        self.clock.advance(1.0)
        self.successResultOf(stopped)
        self.assertFalse(task.done())
        stubbornness.clear()
        task.cancel()
        spin(self.loop, 3)


class RouteOfTests(SynchronousTestCase):
    def test_theFrameworksRoute(self) -> None:
        class Route:
            path = "/users/{id}"

        self.assertEqual(routeOf({"route": Route()}), "/users/{id}")

    def test_noRoute(self) -> None:
        self.assertEqual(routeOf({}), ASGI_ROUTE)
        self.assertEqual(routeOf({"route": object()}), ASGI_ROUTE)
