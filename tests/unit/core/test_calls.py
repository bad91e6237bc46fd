"""
L{gracesvc._core.calls}.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.calls import callLogged


class CallLoggedTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=cast(ILogObserver, self.events.append))

    def failures(self) -> list[str]:
        return [
            f"{e['log_format']}:{e['hook']}:{e['log_failure'].value}"
            for e in self.events
            if "log_failure" in e
        ]

    def test_raiseIsLogged(self) -> None:
        def hook() -> None:
            raise ValueError("boom")

        self.assertIsNone(callLogged(hook, self.log, "hook {hook} failed", hook="h"))
        self.assertEqual(self.failures(), ["hook {hook} failed:h:boom"])

    def test_plainValueIsNone(self) -> None:
        self.assertIsNone(callLogged(lambda: 3, self.log, "x", hook="h"))
        self.assertEqual(self.events, [])

    def test_deferredFailureIsLoggedAndConsumed(self) -> None:
        d = callLogged(lambda: fail(KeyError("k")), self.log, "f {hook}", hook="h")
        assert d is not None
        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(self.failures(), ["f {hook}:h:'k'"])

    def test_deferredResultPassesThrough(self) -> None:
        d = callLogged(lambda: succeed(5), self.log, "f", hook="h")
        assert d is not None
        self.assertEqual(self.successResultOf(d), 5)

    def test_coroutineBecomesDeferred(self) -> None:
        waiting: Deferred[int] = Deferred()

        async def hook() -> int:
            return await waiting

        d = callLogged(hook, self.log, "f", hook="h")
        assert d is not None
        self.assertNoResult(d)
        waiting.callback(7)
        self.assertEqual(self.successResultOf(d), 7)
