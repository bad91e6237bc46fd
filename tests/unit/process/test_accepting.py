"""
Accepting through a shortage of file descriptors
(L{gracesvc._process.accepting}): one port's accept errors, as its
C{doRead} logs them, on a L{Clock}.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger, LogLevel
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins.twisted import (
    ACCEPT_FAILED,
    EMFILE_CLOSED,
    EMFILE_RELEASING,
    EMFILE_RERESERVING,
)
from gracesvc._process.accepting import (
    AcceptGate,
    AcceptGuard,
    AcceptTally,
    defaultMaxConnections,
)


class FakePort:
    connected = True
    disconnecting = False

    def __init__(self) -> None:
        self.reading = True
        self.pauses = 0

    def stopReading(self) -> None:
        self.reading = False
        self.pauses += 1

    def startReading(self) -> None:
        self.reading = True


def event(logFormat: str, **fields: object) -> dict[str, Any]:
    return {
        "log_format": logFormat,
        "log_namespace": "twisted.internet.tcp.Port",
        "log_level": LogLevel.info,
        "log_time": 0.0,
        "log_source": None,
        "log_system": "-",
        **fields,
    }


class AcceptGuardTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.port = FakePort()
        self.tally = AcceptTally()
        self.lines: list[dict[str, Any]] = []
        self.patch(
            AcceptGuard, "log", Logger(observer=cast(ILogObserver, self.lines.append))
        )
        self.guard = AcceptGuard(self.port, self.clock, "tcp:8080", self.tally)

    def emfile(self, clients: int) -> None:
        """
        One C{doRead} that met EMFILE and turned C{clients} away.
        """
        self.guard(event(EMFILE_RELEASING))
        for _ in range(clients):
            self.guard(event(EMFILE_CLOSED, address=("127.0.0.1", 1)))
        self.guard(event(EMFILE_RERESERVING))

    def test_emfilePausesAcceptingThenResumes(self) -> None:
        """
        After EMFILE, the port stops accepting for a tenth of a second, then
        tries again; the clients it turned away are counted.
        """
        self.emfile(3)
        self.assertFalse(self.port.reading)
        self.clock.advance(0.1)
        self.assertTrue(self.port.reading)
        self.assertEqual(self.tally.refused, {"EMFILE": 3})

    def test_anErrorWithoutTheReservePausesToo(self) -> None:
        """
        Without the reserve the socket stays readable: without a pause the
        reactor would call the port again at once, and spin.
        """
        for _ in range(5):
            self.guard(event(ACCEPT_FAILED, acceptError="EMFILE"))
        self.assertEqual(self.port.pauses, 1)
        self.assertEqual(self.tally.refused, {"EMFILE": 5})

    def test_aClosedPortIsNotResumed(self) -> None:
        self.emfile(1)
        self.port.connected = False
        self.clock.advance(0.1)
        self.assertFalse(self.port.reading)

    def test_oneLineASecond(self) -> None:
        """
        A thousand clients turned away over three seconds make four lines:
        the first, and a count for each second.
        """
        for _ in range(3):
            for _ in range(10):
                self.emfile(33)
                self.clock.advance(0.1)
        self.clock.advance(1)
        lines = [e["log_format"].format(**e) for e in self.lines]
        self.assertEqual(len(lines), 4, lines)
        self.assertIn("Cannot accept on tcp:8080: EMFILE", lines[0])
        self.assertIn("open files limit", lines[0])
        self.assertEqual(sum(e.get("count", 0) for e in self.lines), 989)
        self.assertIn("more connections turned away on tcp:8080", lines[1])
        self.assertEqual(self.tally.refused, {"EMFILE": 990})

    def test_otherEventsGoOnToTheLog(self) -> None:
        seen: list[dict[str, Any]] = []
        from twisted.logger import globalLogPublisher

        observer = cast(ILogObserver, seen.append)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        other = event("something else")
        self.guard(other)
        self.assertIn(other, seen)


class AcceptGateTests(SynchronousTestCase):
    def test_closedWhileAnyReasonHolds(self) -> None:
        port = FakePort()
        gate = AcceptGate(port)
        gate.close("accept error")
        gate.close("connection limit")
        gate.open("accept error")
        self.assertFalse(port.reading)
        gate.open("connection limit")
        self.assertTrue(port.reading)
        self.assertEqual(port.pauses, 1)

    def test_aClosedPortStaysClosed(self) -> None:
        port = FakePort()
        gate = AcceptGate(port)
        gate.close("connection limit")
        port.connected = False
        gate.open("connection limit")
        self.assertFalse(port.reading)

    def test_openingWhatWasNotClosed(self) -> None:
        port = FakePort()
        gate = AcceptGate(port)
        gate.close("connection limit")
        gate.open("accept error")
        self.assertFalse(port.reading)


class DefaultMaxConnectionsTests(SynchronousTestCase):
    def test_aFifthKept(self) -> None:
        """
        A fifth of the descriptors (at least 64) are kept for the rest, the
        connections being told "too many" among them.
        """
        self.assertEqual(defaultMaxConnections(256), 192)
        self.assertEqual(defaultMaxConnections(1024), 820)
        self.assertEqual(defaultMaxConnections(20000), 16000)
        self.assertEqual(defaultMaxConnections(10), 1)
