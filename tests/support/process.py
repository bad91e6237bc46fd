"""
A stand-in for the process gracesvc runs in
(L{gracesvc._process.effects.ProcessEffects}): it records what would have
been done to the process instead of doing it.
"""

from __future__ import annotations

from twisted.internet.interfaces import IReactorThreads

from gracesvc._process.signals import SignalModule
from gracesvc._process.watchdog import CapWatchdog


class FakeProcess:
    """
    Records kills, exits and deaths by signal; hands out the signal module
    and the watchdog it was given.

    @ivar killed: (pid, signal) of each kill.
    @ivar exited: the status of each exit.
    @ivar died: the signal of each death by signal.
    @ivar startups: how many times start-up was said to be done.
    """

    def __init__(
        self,
        signals: SignalModule,
        pid: int = 4321,
        watchdog: CapWatchdog | None = None,
    ) -> None:
        """
        @param signals: stands in for the L{signal} module.
        @param watchdog: what L{capWatchdog} gives: none by default, the
            cap being held by the fake clock's timers alone.
        """
        self._signals = signals
        self._pid = pid
        self.watchdog = watchdog
        self.killed: list[tuple[int, int]] = []
        self.exited: list[int] = []
        self.died: list[int] = []
        self.startups = 0

    @property
    def signals(self) -> SignalModule:
        return self._signals

    @property
    def pid(self) -> int:
        return self._pid

    def kill(self, pid: int, signum: int) -> None:
        self.killed.append((pid, signum))

    def exit(self, status: int) -> None:
        self.exited.append(status)

    def dieBySignal(self, signum: int) -> None:
        self.died.append(signum)

    def capWatchdog(self, reactor: IReactorThreads) -> CapWatchdog | None:
        return self.watchdog

    def startupDone(self) -> None:
        self.startups += 1

    #: what L{openFilesLimit} says the limit on open descriptors is.
    openFiles = 1024

    def openFilesLimit(self, reactor: object) -> int:
        return self.openFiles
