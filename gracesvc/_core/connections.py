# -*- test-case-name: tests.unit.core.test_connections -*-
"""
The connections a drain waits for: what it asks of each, and the set it
keeps them in.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from twisted.logger import Logger
from zope.interface import Attribute, Interface

_T = TypeVar("_T")


class IDrainableConnection(Interface):
    """
    A connection the drain can wait for and, at the end, cut: an HTTP/1.1
    channel, or any other protocol's connection.

    The connection tells the drain (a L{gracesvc._core.drain.Drain}) when it
    opens and closes (C{connectionOpened}, C{connectionClosed}) and when it
    completes or cuts a request (C{requestCompleted}, C{requestCut}).
    """

    inFlight = Attribute(
        "The number of requests (or streams) being answered on this "
        "connection right now: what the drain waits for."
    )

    state = Attribute(
        "A short word for what the connection is doing, for metrics: "
        "C{idle}, C{receiving}, C{busy}, C{stream} (an event stream), "
        "C{poll} (a long poll) or C{closing} for HTTP/1.1."
    )

    def beginDrain() -> None:
        """
        The listeners are closed (or the drain delay is running): from now on
        the connection closes once it has no request in progress and has been
        quiet for the drain's idle grace.  (Responses say C{Connection:
        close} from the moment the drain's C{draining} is set, before this.)
        """

    def cut(retryAfter: int) -> int:
        """
        The cap is near: answer the requests whose response has not started
        with a 503, abort the responses in progress, close the connection.

        @param retryAfter: the C{Retry-After} value for the 503, in seconds.
        @return: the number of requests cut (answered 503 or aborted).
        """

    def abort() -> None:
        """
        Close the connection at once, whatever it is doing.
        """


class ConnectionSet(set[IDrainableConnection]):
    """
    The open connections of a drain, and what it does to all of them at
    once.

    A set itself, so that adding a connection when it is accepted and
    discarding it when it closes cost what a set's C{add} and C{discard}
    cost, nothing more.
    """

    @property
    def inFlight(self) -> int:
        """
        The number of requests (or streams) being answered on all of them.
        """
        return sum(c.inFlight for c in self)

    def states(self) -> dict[str, int]:
        """
        @return: how many are in each state (see
            L{IDrainableConnection.state}).
        """
        states: dict[str, int] = {}
        for c in self:
            states[c.state] = states.get(c.state, 0) + 1
        return states

    def forEach(
        self,
        f: Callable[[IDrainableConnection], _T],
        log: Logger,
        default: _T | None = None,
    ) -> list[_T]:
        """
        Call C{f} on each: one that raises is logged (and counts as
        C{default}), and the others are still called.  C{f} may close
        connections, which leave the set meanwhile.

        @param log: where a failure is logged.
        @param default: what a connection that raised counts as; left out
            of the results if L{None}.
        @return: what C{f} returned for each.
        """
        results = []
        for connection in list(self):
            try:
                results.append(f(connection))
            except Exception:
                log.failure("drain step failed on {connection}", connection=connection)
                if default is not None:
                    results.append(default)
        return results

    def abortAll(self, log: Logger) -> None:
        """
        Abort every connection, whatever it is doing, and forget them all.

        @param log: where a connection that fails to abort is logged.
        """
        self.forEach(lambda connection: connection.abort(), log)
        self.clear()
