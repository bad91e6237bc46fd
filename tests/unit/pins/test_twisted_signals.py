"""
Pins for L{gracesvc._pins.twisted_signals}: the reactor's C{_signals}, a
C{_MultiSignalHandling} whose C{_signalHandlings} hold a
C{_ChildSignalHandling} with its C{_childWaker}.  If one fails after a
Twisted upgrade, C{--workers} under uvloop never hears that a worker
ended: adapt L{gracesvc._pins.twisted_signals}.
"""

from __future__ import annotations

import asyncio
import signal
import socket

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins.twisted_signals import reinstallChildWaker


class ReinstallChildWakerTests(SynchronousTestCase):
    def setUp(self) -> None:
        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.reactor = AsyncioSelectorReactor(loop)
        previous = signal.set_wakeup_fd(-1)
        self.addCleanup(signal.set_wakeup_fd, previous)

    def test_wakeupDescriptorPointsBackAtTheChildWaker(self) -> None:
        """
        Installed, the reactor's C{_ChildSignalHandling} has a C{_childWaker}
        whose descriptor the wakeup descriptor points at; after another
        loop took the wakeup descriptor, L{reinstallChildWaker} points it
        back.
        """
        handling = self.reactor._makeSignalHandling(True)
        self.reactor._signals = handling
        children = [
            h
            for h in handling._signalHandlings  # type: ignore[attr-defined]
            if hasattr(h, "_childWaker")
        ]
        self.assertEqual(len(children), 1)
        child = children[0]
        child.install()
        self.addCleanup(child.uninstall)
        waker = child._childWaker
        self.assertIsNotNone(waker)
        theirs, other = socket.socketpair()
        self.addCleanup(theirs.close)
        self.addCleanup(other.close)
        theirs.setblocking(False)
        self.assertEqual(signal.set_wakeup_fd(theirs.fileno()), waker.o)
        self.assertTrue(reinstallChildWaker(self.reactor))
        self.assertEqual(signal.set_wakeup_fd(waker.o), waker.o)

    def test_withoutSignalHandling(self) -> None:
        """
        A reactor run without signal handlers has no child waker: nothing
        is done.
        """
        self.assertFalse(reinstallChildWaker(self.reactor))
        self.assertFalse(reinstallChildWaker(object()))
