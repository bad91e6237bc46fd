# -*- test-case-name: tests.unit.workers.test_master -*-
"""
Keeping N workers alive: the master pings every ready worker, and one that
has said nothing for the worker timeout (stuck in a loop, say) is
reported, to be killed; a worker that died is replaced in its L{Slot},
later the more of its predecessors died young.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gracesvc._core.timers import cancelCall
from gracesvc._workers.channel import Message

#: The longest time between two liveness pings to a ready worker.
PING_INTERVAL = 5.0

#: A worker that dies within this many seconds of being ready (or before)
#: died young: its slot's next start waits (see L{restartDelay}).
YOUNG = 1.0

#: The longest wait before restarting a slot whose workers keep dying.
MAX_RESTART_DELAY = 5.0


def restartDelay(youngDeaths: int) -> float:
    """
    @param youngDeaths: how many workers in a row died young in a slot.
    @return: how long to wait before starting its next one: at once after
        the first, then 0.1 s doubling up to L{MAX_RESTART_DELAY}.
    """
    if youngDeaths <= 1:
        return 0.0
    return float(min(MAX_RESTART_DELAY, 0.1 * 2 ** (youngDeaths - 2)))


@dataclass
class Slot:
    """
    One of the N places a worker serves in: when its worker dies, the next
    starts there.

    @ivar youngDeaths: how many of its workers in a row died young.
    @ivar restart: the next worker's start, while it waits.
    """

    index: int
    youngDeaths: int = 0
    restart: IDelayedCall | None = None

    def died(self, readyAt: float | None, now: float) -> float:
        """
        Its worker died, at C{now}, having been ready since C{readyAt} (or
        never).

        @return: how long to wait before the next one starts.
        """
        young = readyAt is None or now - readyAt < YOUNG
        self.youngDeaths = self.youngDeaths + 1 if young else 1
        return restartDelay(self.youngDeaths)

    def restartIn(
        self, clock: IReactorTime, delay: float, start: Callable[[], object]
    ) -> None:
        """
        Call C{start} in C{delay} seconds, unless a restart waits already.
        """
        if self.restart is not None and self.restart.active():
            return

        def restart() -> None:
            self.restart = None
            start()

        self.restart = clock.callLater(delay, restart)

    def cancelRestart(self) -> None:
        """
        The restart that waits, if one does, is not to be.
        """
        cancelCall(self.restart)
        self.restart = None


class PingedWorker(Protocol):
    """
    What L{Liveness} needs of a worker.
    """

    @property
    def answersPings(self) -> bool:
        """
        Whether it is expected to answer pings: it is ready.  (Workers
        starting or draining are left alone: the boot timeout and the cap
        bound those.)
        """

    @property
    def lastHeard(self) -> float:
        """
        When it last wrote a control line.
        """

    def send(self, message: Message) -> None:
        """
        Write C{message} to it.
        """


_Worker = TypeVar("_Worker", bound=PingedWorker)


class Liveness(Generic[_Worker]):
    """
    Pings the workers every L{interval}, and reports one that has been
    silent for longer than the worker timeout.

    @ivar interval: the time between two rounds of pings: L{PING_INTERVAL},
        or a third of the timeout if that is shorter.
    """

    def __init__(
        self,
        clock: IReactorTime,
        workers: Callable[[], Iterable[_Worker]],
        timeout: float,
        silent: Callable[[_Worker, float], object],
    ) -> None:
        """
        @param workers: the workers running now.
        @param timeout: how long a pinged worker may say nothing.
        @param silent: called with a worker silent for too long, and for
            how long; it is not pinged again.
        """
        self.clock = clock
        self.workers = workers
        self.timeout = timeout
        self.silent = silent
        self.interval = min(PING_INTERVAL, timeout / 3)
        self._next: IDelayedCall | None = None

    def start(self) -> None:
        """
        Ping from one interval on.
        """
        if self._next is None:
            self._next = self.clock.callLater(self.interval, self.ping)

    def stop(self) -> None:
        """
        Ping no more.
        """
        cancelCall(self._next)
        self._next = None

    def ping(self) -> None:
        """
        One round: ping each worker that answers pings, or report it if it
        has been silent too long; then schedule the next round.
        """
        now = self.clock.seconds()
        for worker in list(self.workers()):
            if not worker.answersPings:
                continue
            silent = now - worker.lastHeard
            if silent > self.timeout:
                self.silent(worker, silent)
            else:
                worker.send({"command": "ping"})
        self._next = self.clock.callLater(self.interval, self.ping)
