# -*- test-case-name: tests.unit.workers.test_master -*-
"""
Whether the workers still answer: the master pings every ready worker,
and one that has said nothing for the worker timeout (stuck in a loop,
say) is reported, to be killed and replaced as a crashed one is.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, Protocol, TypeVar

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from gracesvc._core.timers import cancelCall
from gracesvc._workers.channel import Message

#: The longest time between two liveness pings to a ready worker.
PING_INTERVAL = 5.0


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
