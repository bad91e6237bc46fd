"""
L{gracesvc._asgi.loop}: the asyncio reactor, and the event loop under it.
"""

from __future__ import annotations

import asyncio

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.loop import ReactorMismatch, installAsyncioReactor, newEventLoop


class InstallTests(SynchronousTestCase):
    def test_anotherReactorInstalled(self) -> None:
        """
        With another reactor installed (this test runner's), nothing is
        replaced: a one-line error says what to do.
        """
        # Installs the default reactor, if the runner has not installed one.
        from twisted.internet import reactor

        self.assertNotIn("Asyncio", type(reactor).__name__)
        error = self.assertRaises(ReactorMismatch, installAsyncioReactor)
        self.assertIn(
            "--asgi runs the application on Twisted's asyncio reactor", str(error)
        )
        self.assertIn("give -r asyncio", str(error))
        self.assertNotIn("\n", str(error))


class NewEventLoopTests(SynchronousTestCase):
    def test_asyncio(self) -> None:
        loop = newEventLoop("asyncio")
        self.addCleanup(loop.close)
        self.assertIsInstance(loop, asyncio.BaseEventLoop)

    def test_autoIsUvloopWhenInstalled(self) -> None:
        """
        C{auto} picks uvloop's loop when uvloop is installed (it measured
        faster), asyncio's otherwise.
        """
        try:
            import uvloop
        except ImportError:
            uvloop = None  # type: ignore[assignment]
        loop = newEventLoop("auto")
        self.addCleanup(loop.close)
        if uvloop is None:
            self.assertIsInstance(loop, asyncio.BaseEventLoop)
            self.assertRaises(ReactorMismatch, newEventLoop, "uvloop")
        else:
            self.assertIsInstance(loop, uvloop.Loop)
