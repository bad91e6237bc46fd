"""
Pins for every Klein internal gracesvc relies on (L{gracesvc._pins.klein}).

Each test names the internal in its first line.  If one fails after a
Klein upgrade, C{async def} handlers may no longer run on the asyncio
reactor: read the function of L{gracesvc._pins.klein} it pins, and adapt
it to the new Klein.
"""

from __future__ import annotations

from typing import Any

import klein._app
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins.klein import replaceKleinEnsureDeferred


class EnsureDeferredTests(SynchronousTestCase):
    def test_kleinCallsTheEnsureDeferredGlobal(self) -> None:
        """
        C{klein._app._call}: turns a handler's coroutine into a Deferred with
        the C{ensureDeferred} global of C{klein._app}, what
        L{replaceKleinEnsureDeferred} replaces.
        """
        self.assertIs(vars(klein._app)["ensureDeferred"], ensureDeferred)
        self.assertIn("ensureDeferred", klein._app._call.__code__.co_names)
        calls: list[object] = []

        def recording(coro: Any) -> Deferred[Any]:
            calls.append(coro)
            return ensureDeferred(coro)

        self.patch(klein._app, "ensureDeferred", recording)

        async def handler() -> str:
            return "ok"

        d = klein._app._call(None, handler)
        self.assertEqual(self.successResultOf(d), "ok")  # type: ignore[arg-type]
        self.assertEqual(len(calls), 1)

    def test_replaced(self) -> None:
        """
        L{replaceKleinEnsureDeferred} replaces the global that
        C{klein._app._call} calls.
        """
        calls: list[object] = []

        def recording(coro: Any) -> Deferred[Any]:
            calls.append(coro)
            return ensureDeferred(coro)

        self.patch(klein._app, "ensureDeferred", ensureDeferred)
        replaceKleinEnsureDeferred(recording)
        self.assertIs(vars(klein._app)["ensureDeferred"], recording)

        async def handler() -> str:
            return "ok"

        d = klein._app._call(None, handler)
        self.assertEqual(self.successResultOf(d), "ok")  # type: ignore[arg-type]
        self.assertEqual(len(calls), 1)
