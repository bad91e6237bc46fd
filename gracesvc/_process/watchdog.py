# -*- test-case-name: tests.unit.process.test_watchdog -*-
"""
The cap when the reactor cannot keep it.

The drain keeps the cap with the reactor's own timers: they cut, abort and
stop the reactor.  A timer runs only when the reactor's thread comes back to
the reactor, and an application can keep it away: a handler that calls
C{time.sleep(60)}, a blocking database driver, a drain hook that loops.
A signal still gets through (Python runs its handler between two bytecodes
of whatever runs, and interrupts a sleep for it), so the first stop signal
arms L{CapWatchdog}: a thread of its own that, if the process is still there
at the cap, asks the reactor for a sign of life.  A reactor that answers
within L{PROBE} keeps the cap itself (one the machine starved until after
the cap runs its cut and its cap in one turn, and needs the cut's lead to
flush the 503s, see L{gracesvc._core.policy.DrainPolicy.cutLead}): it gets that
lead.  One that does not answer is kept away by the application: the
watchdog logs where the reactor's thread is and ends the process by the
same signal, as the drain would have.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import traceback
from collections.abc import Callable

from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

#: How long the watchdog waits for the reactor's sign of life at the cap.
PROBE = 0.05


def stuckAt(thread: threading.Thread | None = None) -> str:
    """
    @return: where C{thread} (the main thread, by default) is, as
        C{file:line in function}, innermost first and at most three frames,
        on one line.
    """
    ident = (thread or threading.main_thread()).ident
    frame = sys._current_frames().get(ident) if ident is not None else None
    if frame is None:
        return "unknown"
    frames = traceback.extract_stack(frame)[::-1][:3]
    return " <- ".join(
        f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}" for f in frames
    )


def reactorAnswers(reactor: IReactorThreads) -> Callable[[float], bool]:
    """
    @return: a function, called from another thread, that says whether
        C{reactor}'s thread runs a call within so many seconds.
    """

    def answers(within: float) -> bool:
        answered = threading.Event()
        reactor.callFromThread(answered.set)
        return answered.wait(within)

    return answers


class CapWatchdog:
    """
    A thread that ends the process at the cap if the reactor could not.

    L{arm} is called from a signal handler, which may interrupt anything,
    itself included: it only writes one byte to a pipe.  The thread, started
    by L{start} before any signal, waits on that pipe.

    @ivar deadline: the cap, on C{now}'s clock, once armed.
    @ivar lead: how long past the cap a live reactor may take: the cut's
        lead, see L{gracesvc._core.policy.DrainPolicy.cutLead}.
    """

    log = Logger()

    def __init__(
        self,
        answers: Callable[[float], bool],
        exit: Callable[[int], object],
        now: Callable[[], float] = time.time,
        sleep: Callable[[float], object] = time.sleep,
        where: Callable[[], str] = stuckAt,
    ) -> None:
        """
        @param answers: says whether the reactor runs a call within so many
            seconds (see L{reactorAnswers}).
        @param exit: ends the process by the signal given (see
            L{gracesvc._process.effects.dieBySignal}).
        @param now: the clock the deadline is on (the reactor's: C{time.time}).
        @param sleep: waits, on the same clock.
        @param where: says where the reactor's thread is stuck.
        """
        self._answers = answers
        self._exit = exit
        self._now = now
        self._sleep = sleep
        self._where = where
        self._read, self._write = os.pipe()
        self.deadline: float | None = None
        self.lead = 0.0
        self.signum = 0
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """
        Start the thread that waits to be armed; a daemon thread, so that a
        process that exits on time is not held by it.
        """
        if self._thread is None:
            self._thread = threading.Thread(
                target=self.run, name="gracesvc cap watchdog", daemon=True
            )
            self._thread.start()

    def arm(self, signum: int, deadline: float, lead: float) -> None:
        """
        The first stop signal: end the process at C{deadline} (the cap), or
        C{lead} later if the reactor is alive then, unless it has ended by
        then.  Safe in a signal handler; call it once.
        """
        self.signum = signum
        self.deadline = deadline
        self.lead = lead
        os.write(self._write, b"!")

    def run(self) -> None:
        """
        Wait to be armed, then until the cap; then end the process, at once
        if the reactor does not answer, after the cut's lead if it does.
        """
        os.read(self._read, 1)
        assert self.deadline is not None
        self._sleepUntil(self.deadline)
        if self._answers(PROBE):
            # Its way out takes a few milliseconds after the lead.
            self._sleepUntil(self._now() + self.lead + PROBE)
        self.log.critical(
            "The process did not exit by the cap: exiting now; the reactor's "
            "thread was at {where}",
            where=self._where(),
            step="watchdog",
        )
        self._exit(self.signum)

    def _sleepUntil(self, when: float) -> None:
        left = when - self._now()
        if left > 0:
            self._sleep(left)
