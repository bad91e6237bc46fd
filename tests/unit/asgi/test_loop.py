"""
L{gracesvc._asgi.loop}.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.loop import ReactorMismatch, installAsyncioReactor


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
