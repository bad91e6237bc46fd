"""
L{gracesvc._asgi.streams}: an event stream's goodbye and its boundaries.
"""

from __future__ import annotations

import re

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.streams import EventBoundary, goodbye, isEventStream


class IsEventStreamTests(SynchronousTestCase):
    def test_contentTypeWithParameters(self) -> None:
        self.assertTrue(
            isEventStream([(b"Content-Type", b"text/event-stream; charset=utf-8")])
        )
        self.assertTrue(isEventStream([(b"content-type", b"TEXT/EVENT-STREAM")]))

    def test_otherTypes(self) -> None:
        self.assertFalse(isEventStream([(b"content-type", b"text/plain")]))
        self.assertFalse(isEventStream([(b"x-type", b"text/event-stream")]))
        self.assertFalse(isEventStream([]))


class GoodbyeTests(SynchronousTestCase):
    def test_commentAndJitteredRetry(self) -> None:
        """
        A comment, then a C{retry:} between the delay and a second more, in
        milliseconds, then the blank line that ends the block.
        """
        for _ in range(50):
            match = re.fullmatch(
                rb": server shutting down\nretry: (\d+)\n\n", goodbye(2.0)
            )
            assert match is not None
            self.assertTrue(2000 <= int(match.group(1)) < 3000)


class EventBoundaryTests(SynchronousTestCase):
    def test_emptyBodyIsOnABoundary(self) -> None:
        self.assertTrue(EventBoundary().atBoundary)

    def test_eachLineEnding(self) -> None:
        for body, expected in [
            (b"data: 1\n\n", True),
            (b"data: 1\r\n\r\n", True),
            (b"data: 1\r\r", True),
            (b"data: 1\n", False),
            (b"data: 1\r\n", False),
            (b"data: 1", False),
        ]:
            boundary = EventBoundary()
            boundary.wrote(body)
            self.assertEqual(boundary.atBoundary, expected, body)

    def test_acrossWrites(self) -> None:
        """
        The blank line may come in pieces, and empty writes change nothing.
        """
        boundary = EventBoundary()
        for piece in (b"data: 1\r", b"\n", b"", b"\r", b"\n"):
            boundary.wrote(piece)
        self.assertTrue(boundary.atBoundary)
        boundary.wrote(b"data: 2\n")
        self.assertFalse(boundary.atBoundary)
