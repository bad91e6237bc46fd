# -*- test-case-name: tests.unit.pins.test_twisted_signals -*-
"""
Twisted's child-process waker, on an event loop that takes the signal
wakeup descriptor for itself.

Twisted learns that a child process ended through SIGCHLD: when the reactor
starts it points L{signal.set_wakeup_fd} at a waker of its own (its
C{_SIGCHLDWaker}), which reaps the children when the signal writes to it.
uvloop's C{run_forever}, which the asyncio reactor calls right after, points
the wakeup descriptor at uvloop's own socket instead, and uvloop refuses a
handler for SIGCHLD: from then on Twisted reaps a child only when one of its
pipes closes at the right moment, and a child with no pipe to it (a worker
of C{--workers}, whose output is the master's) is never reaped.
L{reinstallChildWaker}, called once the loop runs, points the descriptor
back at Twisted's waker.  uvloop's own signal handling goes on: Python runs
every handler installed with L{signal.signal} whatever the descriptor is.

Internals of Twisted 26.10, pinned by
C{tests/unit/pins/test_twisted_signals.py}: the reactor's C{_signals} (a
C{_MultiSignalHandling} on POSIX), its C{_signalHandlings}, and the
C{_childWaker} of the C{_ChildSignalHandling} among them.
"""

from __future__ import annotations

from twisted.internet.process import reapAllProcesses


def reinstallChildWaker(reactor: object) -> bool:
    """
    Point the signal wakeup descriptor back at C{reactor}'s SIGCHLD waker,
    and reap the children that ended while it pointed elsewhere.

    @return: whether C{reactor} has a child waker (it has on POSIX once it
        runs with signal handlers installed, as under twistd).
    """
    signals = getattr(reactor, "_signals", None)
    found = False
    for handling in getattr(signals, "_signalHandlings", ()):
        waker = getattr(handling, "_childWaker", None)
        if waker is not None:
            waker.install()
            found = True
    if found:
        reapAllProcesses()
    return found
