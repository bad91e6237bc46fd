"""
What the end-to-end tests share: a test case that starts C{twistd -n
gracesvc} and reads its log, twistd run to completion, and a bounded
wait on a condition.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from collections.abc import Callable

from twisted.trial.unittest import SynchronousTestCase

from gracesvc.testing.process import TWISTD, Process, Twistd

#: What a server's log must never hold: a traceback, a failure Twisted did
#: not see handled, or an event logged as an error or worse.
UNCLEAN = ("Traceback", "Unhandled", "#critical]", "#error]")


class EndToEndTestCase(SynchronousTestCase):
    """
    Tests of one real C{twistd -n gracesvc} process.

    @ivar twistd: the process L{startTwistd} started last.
    """

    def startTwistd(self, *args: str, **kwargs: object) -> Twistd:
        """
        Start C{twistd -n gracesvc} with C{args} (and L{Twistd}'s keyword
        arguments), killed by its pid when the test ends, and wait until it
        serves.
        """
        twistd = Twistd(*args, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(twistd.kill)
        self.twistd = twistd
        return twistd.waitUntilServing()

    def assertCleanLog(self, process: Process) -> None:
        """
        The log of C{process} holds none of L{UNCLEAN}.
        """
        log = process.log()
        for text in UNCLEAN:
            self.assertNotIn(text, log)


def runTwistd(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd} with C{argv} to completion, in a temporary directory of
    its own, its output captured.
    """
    directory = tempfile.mkdtemp(prefix="gracesvc-e2e-")
    return subprocess.run(
        [TWISTD, *argv],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def waitFor(
    condition: Callable[[], bool], timeout: float, what: Callable[[], str]
) -> None:
    """
    Poll C{condition} every 20 ms until true.

    @raise AssertionError: with C{what()} if it is still false after
        C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what())
        time.sleep(0.02)
