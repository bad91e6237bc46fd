"""
The effects of gracesvc on its process (L{gracesvc._process.effects}) and
the start-up heap's freeze (L{gracesvc._process.heap}).
"""

from __future__ import annotations

import gc
import os
import signal
from typing import cast

from twisted.internet.interfaces import IReactorThreads
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._process.effects import RealProcess, exitAtOnce
from gracesvc._process.heap import freezeStartupHeap
from gracesvc._process.watchdog import CapWatchdog
from tests.support.process import FakeProcess
from tests.support.service import SIGTERM, FakeReactor, FakeSignals


class StoppedBy:
    """
    A reactor that a signal stopped, as Twisted's own handler records it.
    """

    def __init__(self, signum: int | None) -> None:
        self._exitSignal = signum


class ExitAtOnceTests(SynchronousTestCase):
    def test_bySignalThatStoppedTheReactor(self) -> None:
        """
        A reactor that a signal stopped: the process dies by that signal,
        with its default action, as twistd would re-raise it.
        """
        signals = FakeSignals()
        process = FakeProcess(signals)
        exitAtOnce(StoppedBy(SIGTERM), process, 1)
        self.assertEqual(signals.handlers[SIGTERM], signal.SIG_DFL)
        self.assertEqual(process.killed, [(process.pid, SIGTERM)])

    def test_withTheStatusOtherwise(self) -> None:
        process = FakeProcess(FakeSignals())
        exitAtOnce(StoppedBy(None), process, 1)
        self.assertEqual((process.killed, process.exited), ([], [1]))
        exitAtOnce(object(), process)
        self.assertEqual(process.exited, [1, 0])


class RealProcessTests(SynchronousTestCase):
    def test_thisProcess(self) -> None:
        """
        L{RealProcess} is this process: the L{signal} module, its pid, and a
        watchdog that ends it by the signal, not started until the signals
        are caught.
        """
        process = RealProcess()
        self.assertIs(process.signals, signal)
        self.assertEqual(process.pid, os.getpid())
        watchdog = process.capWatchdog(cast(IReactorThreads, FakeReactor()))
        self.assertIsInstance(watchdog, CapWatchdog)
        self.assertEqual(watchdog._exit, process.dieBySignal)
        self.assertIsNone(watchdog._thread)


class FreezeStartupHeapTests(SynchronousTestCase):
    def test_freezeStartupHeapFreezes(self) -> None:
        """
        L{freezeStartupHeap} leaves the objects alive now out of the
        collector's sight (undone here, not to change this test process).
        """
        self.addCleanup(gc.unfreeze)
        freezeStartupHeap()
        self.assertGreater(gc.get_freeze_count(), 0)

    def test_startupDoneFreezes(self) -> None:
        """
        This process's start-up done is the freeze.
        """
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        RealProcess().startupDone()
        self.assertGreater(gc.get_freeze_count(), 0)
