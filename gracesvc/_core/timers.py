# -*- test-case-name: tests.unit.core.test_timers -*-
"""
Delayed calls that may or may not still be pending.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall


def cancelCall(call: IDelayedCall | None) -> None:
    """
    Cancel C{call} if it is still pending; do nothing if it is L{None}, has
    run or was cancelled already.

    Callers keep the reference and set it to L{None} themselves:
    C{cancelCall(self._timer); self._timer = None}.
    """
    if call is not None and call.active():
        call.cancel()
