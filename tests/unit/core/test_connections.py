"""
L{gracesvc._core.connections}: the set of a drain's connections.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.connections import ConnectionSet
from tests.support.drain import Multiplexed


class Broken(Multiplexed):
    """
    A connection whose every drain step raises.
    """

    def cut(self, retryAfter: int) -> int:
        raise RuntimeError("cut")

    def abort(self) -> None:
        raise RuntimeError("abort")


class ConnectionSetTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.log = Logger(observer=cast(ILogObserver, self.events.append))

    def test_countsInFlightAndStates(self) -> None:
        """
        What is in flight is the sum over the connections; the states are
        counted by name.
        """
        connections = ConnectionSet()
        self.assertEqual((connections.inFlight, connections.states()), (0, {}))
        idle = Multiplexed(0)
        idle.state = "idle"
        connections.update([Multiplexed(2), Multiplexed(1), idle])
        self.assertEqual(connections.inFlight, 3)
        self.assertEqual(connections.states(), {"busy": 2, "idle": 1})

    def test_forEachGoesOnPastAFailure(self) -> None:
        """
        A connection that raises is logged and counts as the default; the
        others are still called.
        """
        connections = ConnectionSet([Broken(1), Multiplexed(2), Multiplexed(3)])
        cut = connections.forEach(lambda c: c.cut(7), self.log, 0)
        self.assertEqual(sorted(cut), [0, 2, 3])
        [failure] = [e for e in self.events if "log_failure" in e]
        self.assertIsInstance(failure["connection"], Broken)

    def test_forEachWithoutADefaultLeavesTheFailureOut(self) -> None:
        connections = ConnectionSet([Broken(1), Multiplexed(2)])
        self.assertEqual(connections.forEach(lambda c: c.cut(7), self.log), [2])

    def test_forEachMayCloseConnections(self) -> None:
        """
        A step that closes a connection (it leaves the set) does not stop
        the others being called.
        """
        connections = ConnectionSet([Multiplexed(1), Multiplexed(1)])

        def close(c: Any) -> int:
            connections.discard(c)
            return 1

        self.assertEqual(connections.forEach(close, self.log), [1, 1])
        self.assertEqual(len(connections), 0)

    def test_abortAllForgetsEveryConnection(self) -> None:
        """
        Every connection is aborted and forgotten, one that fails to abort
        too.
        """
        aborted: list[object] = []
        fine = Multiplexed(1)
        fine.abort = lambda: aborted.append(fine)  # type: ignore[method-assign]
        connections = ConnectionSet([Broken(1), fine])
        connections.abortAll(self.log)
        self.assertEqual(aborted, [fine])
        self.assertEqual(len(connections), 0)
        self.assertEqual(len([e for e in self.events if "log_failure" in e]), 1)
