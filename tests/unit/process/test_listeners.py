"""
L{gracesvc._process.listeners}: the service's ports, as its drain closes
them.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer
from zope.interface.verify import verifyObject

from gracesvc._core.drain import Drain
from gracesvc._process.listeners import DrainedPort
from gracesvc._process.service import GracefulService
from gracesvc.testing import Wire
from tests.support.drain import FakePort


class QueuedPort(FakePort):
    """
    A port of Twisted's as the drain sees it, with connections queued:
    records its accepting and its closing.
    """

    connected = True

    def __init__(self, clock: MemoryReactorClock, calls: list[str]) -> None:
        super().__init__(clock)
        self.calls = calls

    def doRead(self) -> None:
        self.calls.append("accept")

    def stopListening(self) -> Deferred[None] | None:
        self.calls.append("close")
        return None


@implementer(IStreamServerEndpoint)
class Endpoint:
    def __init__(self, port: IListeningPort) -> None:
        self.port = port

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return succeed(self.port)


class AcceptQueueTests(SynchronousTestCase):
    def test_acceptQueueEmptiedBeforeTheListenerCloses(self) -> None:
        """
        Connections waiting in the kernel's accept queue are accepted before
        the listening socket closes (closing it would reset them).
        """
        wire = Wire()
        calls: list[str] = []

        class Port(FakePort):
            connected = True

            def doRead(self) -> None:
                calls.append("accept")

            def stopListening(self) -> None:
                calls.append("close")

        wire.drain.addListener(DrainedPort(Port(wire.clock)))
        self.successResultOf(wire.drain.start())
        self.assertEqual(calls, ["accept", "close"])

    def test_wholeAcceptQueueAcceptedBeforeTheListenerCloses(self) -> None:
        """
        Every connection in the accept queue is accepted before the listener
        closes, however few Twisted's port last accepted at once.

        C{tcp.Port.doRead} accepts at most C{numberAccepts} connections a
        call, a number it adapts to what the previous call accepted: 1 after
        a quiet spell.  A reactor that is slow to accept (a loaded machine)
        can have many connections queued when the signal arrives, each with
        its request sent; one C{doRead} left all but the first to be reset.
        """
        wire = Wire()
        closedWith: list[int] = []

        class Port(FakePort):
            """
            Accepts the way C{tcp.Port.doRead} does.
            """

            connected = True
            numberAccepts = 1
            queued = 30

            def doRead(self) -> None:
                accepted = min(self.numberAccepts, self.queued)
                self.queued -= accepted
                if accepted == self.numberAccepts:
                    self.numberAccepts += 20
                else:
                    self.numberAccepts = max(1, accepted)

            def stopListening(self) -> Deferred[None] | None:
                closedWith.append(self.queued)
                return None

        wire.drain.addListener(DrainedPort(Port(wire.clock)))
        self.successResultOf(wire.drain.start())
        self.assertEqual(closedWith, [0])


class DrainedPortTests(SynchronousTestCase):
    def test_aListeningPort(self) -> None:
        """
        It is the port it wraps for everything but the accepting: its
        address, and what its close returns.
        """
        closing: Deferred[None] = Deferred()

        class Closing(FakePort):
            def stopListening(self) -> Deferred[None] | None:
                return closing

        port = Closing(MemoryReactorClock())
        drained = DrainedPort(port)
        verifyObject(IListeningPort, drained)
        drained.startListening()
        self.assertEqual(drained.getHost(), port.getHost())
        self.assertIs(drained.stopListening(), closing)

    def test_aPortWithoutAnAcceptQueueIsOnlyClosed(self) -> None:
        """
        A port that is not one of Twisted's TCP ports (no C{doRead}) is
        closed, nothing else.
        """
        clock = MemoryReactorClock()
        clock.advance(3)
        port = FakePort(clock)
        self.assertIsNone(DrainedPort(port).stopListening())
        self.assertEqual(port.closedAt, 3)


class ServiceTests(SynchronousTestCase):
    def test_theServiceDrainsItsPortsAcceptQueues(self) -> None:
        """
        L{GracefulService} hands its drain each port it listens on as a
        L{DrainedPort}: the drain accepts what is queued before it closes
        the port.  An auxiliary port (metrics) is closed when the drain is
        done, as it is.
        """
        reactor = MemoryReactorClock()
        drain = Drain(reactor)
        calls: list[str] = []
        auxiliary: list[str] = []
        port = QueuedPort(reactor, calls)
        service = GracefulService(
            Factory.forProtocol(Protocol),
            [("tcp:8080", Endpoint(port))],
            drain,
            reactor,
            [("tcp:9100", Endpoint(QueuedPort(reactor, auxiliary)), Factory())],
        )
        service.startService()
        self.assertEqual(service.ports, [port])
        self.successResultOf(drain.start())
        self.assertEqual(calls, ["accept", "close"])
        self.assertEqual(auxiliary, ["close"])
