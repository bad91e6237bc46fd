"""
L{gracesvc._core.tally}: what a drain counts, and the lines that close its
log.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.tally import DrainTally, LongLivedTally


class LongLivedTallyTests(SynchronousTestCase):
    def test_byKindGivesEveryOutcome(self) -> None:
        """
        Each kind counted has every outcome, those never seen at 0, so that
        a log line and a metric name them all.
        """
        tally = LongLivedTally()
        tally.ended("websocket", "clean")
        tally.ended("websocket", "clean")
        tally.ended("stream", "cut")
        self.assertEqual(
            tally.byKind(),
            {
                "websocket": {"clean": 2, "timeout": 0, "cut": 0},
                "stream": {"clean": 0, "timeout": 0, "cut": 1},
            },
        )
        self.assertEqual(LongLivedTally().byKind(), {})

    def test_sendsDroppedByKind(self) -> None:
        tally = LongLivedTally()
        tally.sendDropped("websocket")
        tally.sendDropped("websocket")
        self.assertEqual(tally.sendsDropped, {"websocket": 2})


class ReportTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=cast(ILogObserver, self.events.append))

    def test_countsInTheLastLine(self) -> None:
        """
        The last line says how the drain ended, what it completed, cut and
        abandoned, and how long it took; with no long-lived connection told
        to go away, it is the only line.
        """
        tally = DrainTally()
        tally.completedDuringDrain = 4
        tally.requestsCut = 1
        tally.abandoned = 2
        tally.report(self.log, "cap", 1.25)
        [done] = self.events
        self.assertEqual(
            (done["step"], done["outcome"], done["completed"], done["cut"]),
            ("done", "cap", 4, 1),
        )
        self.assertEqual((done["abandoned"], done["duration"]), (2, 1.25))
        self.assertIn("Server exiting", done["log_format"])

    def test_longLivedLineBeforeTheLast(self) -> None:
        """
        How the long-lived connections ended comes in a line of its own
        before the last, every kind with every outcome.
        """
        tally = DrainTally()
        tally.longLived.ended("websocket", "timeout")
        tally.longLived.ended("stream", "clean")
        tally.report(self.log, "drained", 0.5)
        self.assertEqual([e["step"] for e in self.events], ["longlived", "done"])
        self.assertEqual(
            self.events[0]["summary"],
            "stream 1 clean, 0 timed out, 0 cut; websocket 0 clean, 1 timed out, 0 cut",
        )
