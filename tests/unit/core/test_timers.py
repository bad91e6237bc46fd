"""
L{gracesvc._core.timers}.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.timers import cancelCall


class CancelCallTests(SynchronousTestCase):
    def test_cancelsAPendingCall(self) -> None:
        clock = Clock()
        ran: list[int] = []
        call = clock.callLater(1, ran.append, 1)
        cancelCall(call)
        clock.advance(2)
        self.assertEqual(ran, [])
        self.assertFalse(call.active())

    def test_toleratesNoneRunAndCancelled(self) -> None:
        clock = Clock()
        call = clock.callLater(1, lambda: None)
        clock.advance(1)
        cancelCall(None)
        cancelCall(call)
        other = clock.callLater(1, lambda: None)
        other.cancel()
        cancelCall(other)
        self.assertEqual(clock.getDelayedCalls(), [])
