# -*- test-case-name: tests.unit.core.test_policy -*-
"""
The times that shape a drain, and the phases of its timeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

#: How long before the cap the cut happens, at most: the 503s written at
#: the cut need a moment to be flushed before the cap aborts what is left.
MAX_CUT_LEAD = 0.1

#: The default grace for a connection with no request in progress once the
#: drain has begun (see
#: L{gracesvc._core.connections.IDrainableConnection.beginDrain}).
DEFAULT_IDLE_GRACE = 0.5


@dataclass(frozen=True)
class DrainPolicy:
    """
    The times that shape a drain, checked once.

    @ivar shutdownTimeout: the cap on the whole drain, from the signal to
        done, in seconds.
    @ivar drainDelay: how long to keep accepting connections after the
        signal, so that load balancers notice the readiness change before the
        port closes.  Part of the shutdown, so less than C{shutdownTimeout}.
    @ivar idleGrace: how long a connection with no request in progress may
        stay open once the drain has begun, counted from its last activity.
    @ivar cleanupBudget: how long the cleanup hooks may take, from when the
        last connection closed; reserved inside the cap, so the cut comes
        this much earlier.  0 reserves nothing: the cleanup may then take
        what is left of the cap.
    """

    shutdownTimeout: float = 5.0
    drainDelay: float = 0.0
    idleGrace: float = DEFAULT_IDLE_GRACE
    cleanupBudget: float = 0.0

    def __post_init__(self) -> None:
        """
        @raise ValueError: a value out of range, with a message for a user.
        """
        if not self.shutdownTimeout > 0:
            raise ValueError(
                f"the shutdown timeout must be > 0 seconds, got "
                f"{self.shutdownTimeout!r}"
            )
        if not 0 <= self.drainDelay < self.shutdownTimeout:
            raise ValueError(
                f"the drain delay ({self.drainDelay:g}s) must be >= 0 and less "
                f"than the shutdown timeout ({self.shutdownTimeout:g}s): the "
                f"delay is part of the shutdown"
            )
        if not 0 <= self.cleanupBudget < self.shutdownTimeout - self.drainDelay:
            raise ValueError(
                f"the cleanup budget ({self.cleanupBudget:g}s) must be >= 0 and "
                f"fit in the shutdown timeout ({self.shutdownTimeout:g}s) after "
                f"the drain delay ({self.drainDelay:g}s)"
            )
        if not self.idleGrace >= 0:
            raise ValueError(f"the idle grace must be >= 0, got {self.idleGrace!r}")

    @property
    def cutLead(self) -> float:
        """
        How long before the cap (or the cleanup budget before it) the cut
        comes.
        """
        return min(MAX_CUT_LEAD, (self.shutdownTimeout - self.cleanupBudget) / 10)

    @property
    def cutAfter(self) -> float:
        """
        When the cut comes, in seconds after the signal.
        """
        return self.shutdownTimeout - self.cleanupBudget - self.cutLead

    @property
    def retryAfter(self) -> int:
        """
        The C{Retry-After} a request cut at the cap is answered with, in
        seconds: by then a replacement should be serving.
        """
        return max(1, round(self.shutdownTimeout))


class Phase(Enum):
    """
    Where a L{gracesvc._core.drain.Drain} is on its timeline (see
    L{gracesvc._core.drain}).  Phases only ever move forward.
    """

    SERVING = 0
    DELAYING = 1
    DRAINING = 2
    CUT = 3
    CLEANUP = 4
    DONE = 5


#: The phases an application's hook can run in (see
#: L{gracesvc._core.drain.Drain.addHook}).
HookPhase = Literal["draining", "goingAway", "cleanup"]
