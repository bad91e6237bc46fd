"""
The meters of L{gracesvc._protocols.h2limits}.
"""

from __future__ import annotations

from hyperframe.frame import DataFrame, PingFrame
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._protocols.h2limits import PREFACE, FrameMeter, TokenBucket

PING = PingFrame(0, opaque_data=b"12345678").serialize()


class FrameMeterTests(SynchronousTestCase):
    def test_prefaceThenFrames(self) -> None:
        """
        The preface is no frame; then at most C{maxFrames} frame beginnings
        a split, the next split going on where the last stopped.
        """
        meter = FrameMeter()
        data = PREFACE + PING * 5
        n = meter.split(data, 2)
        self.assertEqual(n, len(PREFACE) + 2 * len(PING))
        self.assertEqual(meter.split(data[n:], 2), 2 * len(PING))
        self.assertEqual(meter.split(data[n + 2 * len(PING) :], 2), len(PING))

    def test_framesSplitAcrossReads(self) -> None:
        """
        A frame header or payload cut between reads is followed; a big frame
        counts once.
        """
        meter = FrameMeter()
        big = DataFrame(1, b"x" * 10000).serialize()
        data = PREFACE + big + PING
        self.assertEqual(meter.split(data[:30], 1), 30)
        self.assertEqual(meter.split(data[30:5000], 1), 4970)
        rest = data[5000:]
        self.assertEqual(meter.split(rest, 0), len(big) + len(PREFACE) - 5000)

    def test_noFrameAllowed(self) -> None:
        """
        With no frame allowed, only the preface passes.
        """
        meter = FrameMeter()
        self.assertEqual(meter.split(PREFACE + PING, 0), len(PREFACE))


class TokenBucketTests(SynchronousTestCase):
    def test_burstThenRate(self) -> None:
        """
        C{burst} tokens at once, then C{rate} a second.
        """
        clock = Clock()
        bucket = TokenBucket(3, 2.0, clock)
        self.assertEqual([bucket.take() for _ in range(4)], [True] * 3 + [False])
        clock.advance(0.5)
        self.assertEqual([bucket.take() for _ in range(2)], [True, False])
        clock.advance(100)
        self.assertEqual([bucket.take() for _ in range(4)], [True] * 3 + [False])

    def test_clockBackwards(self) -> None:
        """
        A clock that steps backwards refills nothing.
        """
        clock = Clock()
        clock.advance(100)
        bucket = TokenBucket(1, 1.0, clock)
        self.assertTrue(bucket.take())
        clock.rightNow = 50.0
        self.assertFalse(bucket.take())
