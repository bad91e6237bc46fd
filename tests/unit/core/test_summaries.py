"""
L{LogSummary}: floods of events as at most one log line a second.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.summaries import LogSummary


class LogSummaryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.events: list[dict[str, Any]] = []
        self.summary = LogSummary(
            self.clock,
            Logger(observer=cast(ILogObserver, self.events.append)),
            "refused one from {peer}",
            "{count} more refused in {interval:g} s (last from {peer})",
            level=LogLevel.warn,
        )

    def lines(self) -> list[str]:
        return [e["log_format"].format(**e) for e in self.events]

    def test_firstAtOnceThenOneLineASecond(self) -> None:
        for second in range(3):
            for i in range(1000):
                self.summary.event(peer=f"{second}.{i}")
            self.clock.advance(1)
        self.assertEqual(
            self.lines(),
            [
                "refused one from 0.0",
                "999 more refused in 1 s (last from 0.999)",
                "1000 more refused in 1 s (last from 1.999)",
                "1000 more refused in 1 s (last from 2.999)",
            ],
        )
        self.assertEqual({e["log_level"] for e in self.events}, {LogLevel.warn})
        self.assertEqual(self.summary.total, 3000)

    def test_aQuietSecondEndsTheSpell(self) -> None:
        """
        After a second with no event, the next is logged at once again, and
        no timer is left behind meanwhile.
        """
        self.summary.event(peer="a")
        self.clock.advance(1)
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.summary.event(peer="b")
        self.assertEqual(self.lines(), ["refused one from a", "refused one from b"])

    def test_stopFlushes(self) -> None:
        self.summary.event(peer="a")
        self.summary.event(peer="b")
        self.summary.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(
            self.lines(),
            ["refused one from a", "1 more refused in 1 s (last from b)"],
        )
