"""
L{gracesvc._asgi.lifespan}, on a loop driven by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.lifespan import (
    Lifespan,
    LifespanFailed,
    LifespanState,
)
from gracesvc._asgi.spec import LIFESPAN_ASGI, SHUTDOWN_NOTICE, LifespanMode
from tests.support.asgi import Application, Message, Receive, Send, spin


class LifespanTestCase(SynchronousTestCase):
    def lifespan(
        self, application: Application, mode: LifespanMode = "auto"
    ) -> Lifespan:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.loop = loop
        app = ASGIApp(application, loop)
        lifespan = Lifespan(app, mode)

        def stop() -> None:
            task = app.lifespanTask
            if task is not None:
                task.cancel()
            spin(loop, 3)

        self.addCleanup(stop)
        return lifespan


class LifespanTests(LifespanTestCase):
    def test_startupThenShutdown(self) -> None:
        """
        C{lifespan.startup} first; connections may be served once the
        application answers, with the state it left; at the shutdown,
        C{lifespan.shutdown}, waited for.  The scope advertises the notice.
        """
        received: list[Message] = []
        scopes: list[Any] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            scopes.append(scope)
            received.append(await receive())
            scope["state"]["pool"] = "open"
            await send({"type": "lifespan.startup.complete"})
            received.append(await receive())
            await send({"type": "lifespan.shutdown.complete"})

        lifespan = self.lifespan(application)
        started = lifespan.startup()
        self.assertFalse(lifespan.ready)
        self.assertNoResult(started)
        spin(self.loop, 3)
        self.successResultOf(started)
        self.assertTrue(lifespan.ready)
        self.assertEqual(lifespan.app.state, {"pool": "open"})
        self.assertEqual(scopes[0]["asgi"], LIFESPAN_ASGI)
        self.assertEqual(scopes[0]["extensions"], {SHUTDOWN_NOTICE: {}})
        lifespan.goingAway(2.0)
        stopped = lifespan.shutdown()
        self.assertNoResult(stopped)
        spin(self.loop, 6)
        self.successResultOf(stopped)
        self.assertEqual(
            received, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        )
        self.assertIs(lifespan.state, LifespanState.STOPPED)

    def test_noticeOnlyWhenAskedFor(self) -> None:
        """
        The notice, with the seconds to the cut, reaches only an application
        that put the extension in its C{lifespan.startup.complete}.
        """
        received: list[Message] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send(
                {
                    "type": "lifespan.startup.complete",
                    "extensions": {SHUTDOWN_NOTICE: {}},
                }
            )
            while True:
                message = await receive()
                received.append(message)
                if message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

        lifespan = self.lifespan(application)
        lifespan.startup()
        spin(self.loop, 3)
        self.assertTrue(lifespan.noticeWanted)
        self.assertTrue(lifespan.app.noticeWanted)
        lifespan.goingAway(3.5)
        lifespan.shutdown()
        spin(self.loop, 6)
        self.assertEqual(
            received,
            [
                {"type": "lifespan.shutdown.notice", "deadline": 3.5},
                {"type": "lifespan.shutdown"},
            ],
        )

    def test_startupFailed(self) -> None:
        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "lifespan.startup.failed", "message": "no\ndatabase"})

        lifespan = self.lifespan(application)
        started = lifespan.startup()
        spin(self.loop, 3)
        failure = self.failureResultOf(started, LifespanFailed)
        self.assertEqual(
            failure.getErrorMessage(), "ASGI lifespan startup failed: no database"
        )
        self.assertFalse(lifespan.ready)

    def test_raisingApplicationIsServedWithout(self) -> None:
        """
        An application that raises on the lifespan scope (Django's) is
        served without a lifespan; its shutdown is then nothing.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            raise ValueError("no lifespan here")

        lifespan = self.lifespan(application)
        started = lifespan.startup()
        spin(self.loop, 3)
        self.successResultOf(started)
        self.assertIs(lifespan.state, LifespanState.UNSUPPORTED)
        self.assertIsNone(lifespan.app.state)
        self.successResultOf(lifespan.shutdown())

    def test_requiredLifespan(self) -> None:
        async def application(scope: Any, receive: Receive, send: Send) -> None:
            raise ValueError("no lifespan here")

        lifespan = self.lifespan(application, "on")
        started = lifespan.startup()
        spin(self.loop, 3)
        failure = self.failureResultOf(started, LifespanFailed)
        self.assertIn("--asgi-lifespan on", failure.getErrorMessage())
        self.assertIn("ValueError: no lifespan here", failure.getErrorMessage())

    def test_off(self) -> None:
        called: list[object] = []

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            called.append(scope)

        lifespan = self.lifespan(application, "off")
        self.successResultOf(lifespan.startup())
        spin(self.loop, 3)
        self.assertEqual(called, [])
        self.assertTrue(lifespan.ready)

    def test_shutdownFailedIsLogged(self) -> None:
        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})
            await receive()
            await send({"type": "lifespan.shutdown.failed", "message": "pool stuck"})

        lifespan = self.lifespan(application)
        lifespan.startup()
        spin(self.loop, 3)
        stopped = lifespan.shutdown()
        spin(self.loop, 6)
        self.successResultOf(stopped)

    def test_stoppedBeforeStartingUp(self) -> None:
        """
        A shutdown while the startup is still awaited (a signal during it)
        cancels the lifespan: there is nothing to shut down.
        """

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await asyncio.sleep(3600)

        lifespan = self.lifespan(application)
        lifespan.startup()
        spin(self.loop, 3)
        self.successResultOf(lifespan.shutdown())
        spin(self.loop, 3)
        task = lifespan.app.lifespanTask
        assert task is not None
        self.assertTrue(task.cancelled())


class SettleTests(LifespanTestCase):
    def test_abandonedGeneratorsEndFirst(self) -> None:
        """
        An asynchronous generator left suspended and unreferenced but for a
        cycle (an event stream's, its framework stopped iterating it) runs
        its C{finally} before the application receives C{lifespan.shutdown}:
        its cleanup may use what the shutdown closes.
        """
        told: list[str] = []

        async def stream() -> Any:
            try:
                while True:
                    yield b"data: 1\n\n"
                    await asyncio.sleep(10)
            finally:
                told.append("stream ended")

        async def abandon() -> None:
            generator = stream()
            await generator.__anext__()
            cycle: list[Any] = [generator]
            cycle.append(cycle)

        async def application(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "lifespan.startup.complete"})
            message = await receive()
            told.append(message["type"])
            await send({"type": "lifespan.shutdown.complete"})

        lifespan = self.lifespan(application)
        lifespan.startup()
        spin(self.loop, 3)
        self.loop.run_until_complete(abandon())
        self.assertEqual(told, [])
        stopped = lifespan.shutdown()
        spin(self.loop, 8)
        self.successResultOf(stopped)
        self.assertEqual(told, ["stream ended", "lifespan.shutdown"])
