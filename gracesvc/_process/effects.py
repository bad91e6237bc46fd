# -*- test-case-name: tests.unit.process.test_effects -*-
"""
What gracesvc does to the process it runs in, beyond serving: it catches
signals, leaves at once when its reactor has stopped, dies by a signal
when the cap's watchdog fires, and freezes its start-up heap.

Code that does any of this takes a L{ProcessEffects}: twistd's gracesvc
passes L{RealProcess}; a test passes a fake that records what would have
happened, so that the same code runs on a fake clock in the test's own
process.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import time
from typing import NoReturn, Protocol

from twisted.internet.interfaces import IReactorThreads

from gracesvc._pins.twisted import exitSignal
from gracesvc._process.accepting import raiseOpenFilesLimit
from gracesvc._process.heap import freezeStartupHeap
from gracesvc._process.signals import SignalModule
from gracesvc._process.watchdog import CapWatchdog, reactorAnswers


class ProcessEffects(Protocol):
    """
    The effects of gracesvc on its process.
    """

    @property
    def signals(self) -> SignalModule:
        """
        The L{signal} module, or what stands in for it.
        """

    @property
    def pid(self) -> int:
        """
        The process's id.
        """

    def kill(self, pid: int, signum: int) -> None:
        """
        Send C{signum} to the process C{pid}.
        """

    def exit(self, status: int) -> None:
        """
        Leave now with C{status}, without the interpreter's teardown.
        """

    def dieBySignal(self, signum: int) -> None:
        """
        End the process by C{signum}, from any thread (see L{dieBySignal}).
        """

    def capWatchdog(self, reactor: IReactorThreads) -> CapWatchdog | None:
        """
        @return: the watchdog that ends the process at the cap should
            C{reactor}'s thread be kept from the reactor, or L{None} for
            none (the first stop signal arms it).
        """

    def startupDone(self) -> None:
        """
        Start-up is over and the reactor runs: what was made until now lives
        as long as the process.
        """

    def openFilesLimit(self, reactor: object) -> int:
        """
        Raise the limit on open descriptors as far as it goes for
        C{reactor} (see L{raiseOpenFilesLimit}).

        @return: the limit then.
        """


def exitAtOnce(reactor: object, process: ProcessEffects, status: int = 0) -> None:
    """
    Leave now that the reactor has stopped (call it from an 'after'
    'shutdown' trigger): with the signal that stopped the reactor, as
    twistd would re-raise it, else with C{status}.  Without the
    interpreter's teardown, which takes longer (60-100 ms) than the last
    steps of a drain; the workers' master waits for this.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    signum = exitSignal(reactor)
    if signum is not None:
        process.signals.signal(signum, signal.SIG_DFL)
        process.kill(process.pid, signum)
    process.exit(status)


def dieBySignal(signum: int) -> NoReturn:
    """
    End the process by C{signum} with its default action, from any thread:
    the exit status a drain that ended on its own leaves (twistd re-raises
    the stop signal).

    Python only sets handlers from its main thread, which may be the stuck
    one: the C library's C{signal} sets the default action from here.  If
    that fails, C{os._exit} with the shell's status for death by C{signum}.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.signal.restype = ctypes.c_void_p
        libc.signal(signum, None)  # SIG_DFL
        os.kill(os.getpid(), signum)
        time.sleep(1.0)
    finally:
        os._exit(128 + signum)


class RealProcess:
    """
    The process twistd runs: its signals, its exit, its watchdog thread and
    its heap.
    """

    @property
    def signals(self) -> SignalModule:
        return signal

    @property
    def pid(self) -> int:
        return os.getpid()

    def kill(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    def exit(self, status: int) -> None:
        os._exit(status)

    def dieBySignal(self, signum: int) -> None:
        dieBySignal(signum)

    def capWatchdog(self, reactor: IReactorThreads) -> CapWatchdog:
        return CapWatchdog(reactorAnswers(reactor), exit=self.dieBySignal)

    def startupDone(self) -> None:
        freezeStartupHeap()

    def openFilesLimit(self, reactor: object) -> int:
        return raiseOpenFilesLimit(reactor)
