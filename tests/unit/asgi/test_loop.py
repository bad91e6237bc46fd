"""
L{gracesvc._asgi.loop}: the event loop under the asyncio reactor.
"""

from __future__ import annotations

import asyncio

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.loop import ReactorMismatch, newEventLoop


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
