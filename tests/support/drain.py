"""
Fakes for tests of the drain: a listening port that records its close, a
connection that carries several requests, and the drain's log captured as
events.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort, IReactorTime
from twisted.logger import ILogObserver, Logger
from zope.interface import implementer

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain


@implementer(IListeningPort)
class FakePort:
    """
    A listening port that records when it was closed.
    """

    def __init__(self, clock: IReactorTime) -> None:
        self.clock = clock
        self.closedAt: float | None = None

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None] | None:
        self.closedAt = self.clock.seconds()
        return None

    def getHost(self) -> IAddress:
        return IPv4Address("TCP", "127.0.0.1", 8080)


@implementer(IDrainableConnection)
class Multiplexed:
    """
    A connection carrying several requests at once, as an HTTP/2 connection
    carries streams.
    """

    def __init__(self, inFlight: int) -> None:
        self.inFlight = inFlight
        self.state = "busy"
        self.cutWith: int | None = None

    def beginDrain(self) -> None:
        pass

    def cut(self, retryAfter: int) -> int:
        self.cutWith = retryAfter
        cut, self.inFlight = self.inFlight, 0
        return cut

    def abort(self) -> None:
        pass


def captureLog(drain: Drain) -> list[dict[str, Any]]:
    """
    @return: the events C{drain} logs from now on, as they come.
    """
    events: list[dict[str, Any]] = []
    drain.log = Logger(observer=cast(ILogObserver, events.append))
    return events
