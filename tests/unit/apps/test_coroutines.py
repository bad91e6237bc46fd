"""
C{async def} handlers awaiting asyncio futures and Deferreds alike, run on
an asyncio event loop of the test's own (what the asyncio reactor runs on):
no reactor, no sockets, no wall time (every sleep is 0).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import klein._app
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._apps.coroutines import (
    ensureDeferredOnAsyncio,
    runKleinCoroutinesOnAsyncio,
)


class OnALoop(SynchronousTestCase):
    def setUp(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.addCleanup(self.loop.close)

    def onLoop(self, handler: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
        """
        Run C{handler()} with L{ensureDeferredOnAsyncio} on the loop, as Klein
        would on the asyncio reactor, and wait for its result.
        """

        async def main() -> Any:
            d = ensureDeferredOnAsyncio(handler())
            return await d.asFuture(asyncio.get_running_loop())

        return self.loop.run_until_complete(main())


class EnsureDeferredOnAsyncioTests(OnALoop):
    def test_awaitsFuturesAndDeferreds(self) -> None:
        """
        One coroutine awaits an asyncio sleep, a Deferred fired later by the
        loop, and one already fired, and gets each result.
        """
        later: Deferred[str] = Deferred()

        async def handler() -> tuple[str, str, str]:
            await asyncio.sleep(0)
            self.loop.call_soon(later.callback, "later")
            first = await later
            second = await succeed("ready")
            third = await asyncio.ensure_future(asyncio.sleep(0, "future"))
            return first, second, third

        self.assertEqual(self.onLoop(handler), ("later", "ready", "future"))

    def test_runsInATask(self) -> None:
        """
        asyncio libraries that need the current task (timeouts) work.
        """

        async def handler() -> bool:
            async with asyncio.timeout(10):
                await asyncio.sleep(0)
            return asyncio.current_task() is not None

        self.assertTrue(self.onLoop(handler))

    def test_deferredFailureRaisedInto(self) -> None:
        failing: Deferred[None] = Deferred()

        async def handler() -> str:
            self.loop.call_soon(failing.errback, ZeroDivisionError())
            try:
                await failing
            except ZeroDivisionError:
                return "caught"
            return "not raised"

        self.assertEqual(self.onLoop(handler), "caught")
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_cancelCancelsWhatIsAwaited(self) -> None:
        """
        Cancelling the Deferred (as Klein does for a lost client or a request
        cut at the cap) cancels the Deferred the coroutine awaits, and fails
        with Twisted's L{CancelledError}, which Klein does not log.
        """
        awaited: Deferred[None] = Deferred()
        seen: list[type[BaseException]] = []

        async def handler() -> None:
            try:
                await awaited
            except BaseException as e:
                seen.append(type(e))
                raise

        async def main() -> Deferred[None]:
            d = ensureDeferredOnAsyncio(handler())
            for _ in range(3):
                await asyncio.sleep(0)
            d.cancel()
            for _ in range(3):
                await asyncio.sleep(0)
            return d

        d = self.loop.run_until_complete(main())
        self.failureResultOf(d, CancelledError)
        self.assertTrue(awaited.called)
        self.assertEqual(seen, [asyncio.CancelledError])
        self.assertEqual(self.flushLoggedErrors(), [])

    def test_noLoopFallsBackToTwisted(self) -> None:
        """
        Without a running asyncio loop (any other reactor), it is
        L{ensureDeferred}.
        """
        clock = Clock()
        later: Deferred[str] = Deferred()

        async def handler() -> str:
            return await later

        d = ensureDeferredOnAsyncio(handler())
        self.assertNoResult(d)
        clock.callLater(1, later.callback, "twisted")
        clock.advance(1)
        self.assertEqual(self.successResultOf(d), "twisted")
        self.assertEqual(self.successResultOf(ensureDeferredOnAsyncio(succeed(3))), 3)


class KleinTests(SynchronousTestCase):
    def test_onlyOnTheAsyncioReactor(self) -> None:
        """
        Klein's coroutines run with L{ensureDeferredOnAsyncio} on the asyncio
        reactor only (the pin it uses is in C{tests/unit/pins/test_klein.py}).
        """
        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        self.patch(klein._app, "ensureDeferred", ensureDeferred)
        self.assertFalse(runKleinCoroutinesOnAsyncio(Clock()))
        self.assertIs(vars(klein._app)["ensureDeferred"], ensureDeferred)
        loop = asyncio.new_event_loop()
        reactor = AsyncioSelectorReactor(loop)
        self.addCleanup(loop.close)
        self.assertTrue(runKleinCoroutinesOnAsyncio(reactor))
        self.assertIs(vars(klein._app)["ensureDeferred"], ensureDeferredOnAsyncio)
