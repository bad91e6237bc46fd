"""
L{gracesvc._core.policy}: the times that shape a drain, checked once.
"""

from __future__ import annotations

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.drain import Drain
from gracesvc._core.policy import DrainPolicy


class PolicyTests(SynchronousTestCase):
    def test_drainDelayMustFitInTheTimeout(self) -> None:
        """
        The drain delay is part of the shutdown: one at or past the timeout
        is refused, with a message that says so.
        """
        with self.assertRaises(ValueError) as e:
            DrainPolicy(shutdownTimeout=2, drainDelay=2)
        self.assertIn("drain delay (2s) must be >= 0 and less than", str(e.exception))
        with self.assertRaises(ValueError):
            DrainPolicy(shutdownTimeout=0)
        with self.assertRaises(ValueError):
            DrainPolicy(drainDelay=-1)
        with self.assertRaises(ValueError):
            Drain(Clock(), shutdownTimeout=1, drainDelay=3)

    def test_cutLeadAndRetryAfter(self) -> None:
        """
        The cut comes 0.1 s before the cap, or a tenth of a short cap; the
        503 tells clients to retry after about the cap.
        """
        self.assertEqual(DrainPolicy(5).cutLead, 0.1)
        self.assertEqual(DrainPolicy(0.5).cutLead, 0.05)
        self.assertEqual(DrainPolicy(5).retryAfter, 5)
        self.assertEqual(DrainPolicy(0.2).retryAfter, 1)

    def test_aDrainTakesAPolicyOrItsTimes(self) -> None:
        """
        A drain is made from a policy, or from times, each left out the
        policy's default; not from both, since the times would be ignored.
        """
        policy = DrainPolicy(shutdownTimeout=3, cleanupBudget=1)
        self.assertIs(Drain(Clock(), policy=policy).policy, policy)
        self.assertEqual(
            Drain(Clock(), shutdownTimeout=3, cleanupBudget=1).policy, policy
        )
        self.assertEqual(Drain(Clock()).policy, DrainPolicy())
        with self.assertRaises(TypeError) as e:
            Drain(Clock(), drainDelay=1, policy=policy)
        self.assertIn("not both", str(e.exception))
