"""
L{gracesvc.asgi.ShutdownNotice}, around real Starlette and Django
applications, on a loop driven by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.lifespan import Lifespan, LifespanState
from gracesvc.asgi import ShutdownNotice
from tests.support.asgi import spin


class ShutdownNoticeTests(SynchronousTestCase):
    def lifespan(self, application: Any) -> Lifespan:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.loop = loop
        lifespan = Lifespan(ASGIApp(application, loop))

        def stop() -> None:
            task = lifespan.app.lifespanTask
            if task is not None:
                task.cancel()
            spin(loop, 3)

        self.addCleanup(stop)
        return lifespan

    def test_starlette(self) -> None:
        """
        Around Starlette: the application opts in, its lifespan's own state
        stays, the event is in the state, set by the notice, which Starlette
        never sees (it would shut down early); the shutdown runs after.
        """
        log: list[str] = []

        @asynccontextmanager
        async def appLifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
            log.append("startup")
            yield {"pool": "open"}
            log.append("shutdown")

        lifespan = self.lifespan(ShutdownNotice(Starlette(lifespan=appLifespan)))
        started = lifespan.startup()
        spin(self.loop, 10)
        self.successResultOf(started)
        self.assertTrue(lifespan.noticeWanted)
        state = lifespan.app.state
        assert state is not None
        self.assertEqual(state["pool"], "open")
        goingAway = state["going_away"]
        self.assertIsInstance(goingAway, asyncio.Event)
        self.assertFalse(goingAway.is_set())
        lifespan.goingAway(1.0)
        spin(self.loop, 5)
        self.assertTrue(goingAway.is_set())
        self.assertEqual(log, ["startup"])
        self.assertIs(lifespan.state, LifespanState.STARTED)
        stopped = lifespan.shutdown()
        spin(self.loop, 10)
        self.successResultOf(stopped)
        self.assertEqual(log, ["startup", "shutdown"])

    def test_applicationWithoutLifespan(self) -> None:
        """
        Around Django's handler, which raises on the lifespan scope, the
        middleware runs the lifespan itself, to be told.
        """
        import os

        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoapp.settings")
        from django.core.asgi import get_asgi_application

        lifespan = self.lifespan(ShutdownNotice(get_asgi_application()))
        started = lifespan.startup()
        spin(self.loop, 5)
        self.successResultOf(started)
        self.assertTrue(lifespan.noticeWanted)
        state = lifespan.app.state
        assert state is not None
        lifespan.goingAway(1.0)
        spin(self.loop, 3)
        self.assertTrue(state["going_away"].is_set())
        stopped = lifespan.shutdown()
        spin(self.loop, 5)
        self.successResultOf(stopped)

    def test_otherScopesPassThrough(self) -> None:
        seen: list[Any] = []

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            seen.append(scope)

        asyncio.run(ShutdownNotice(inner)({"type": "http"}, None, None))  # type: ignore[arg-type]
        self.assertEqual(seen, [{"type": "http"}])
