"""
The service (listening, the shutdown trigger) and the stop signals.
"""

from __future__ import annotations

from typing import Any, cast

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.internet.protocol import Factory
from twisted.internet.testing import RaisingMemoryReactor
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase
from zope.interface import implementer

from gracesvc._process.service import GracefulService, ListenFailed, TwistdService
from gracesvc._process.signals import StopSignals
from gracesvc._protocols.limits import ConnectionLimit, LimitedFactory
from tests.support.service import (
    FakeReactor,
    FakeSignals,
    makeService,
    makeTwistdService,
)


def portInUse() -> RaisingMemoryReactor:
    return RaisingMemoryReactor(
        listenException=CannotListenError(
            "", 8080, OSError(98, "Address already in use")
        )
    )


class ListeningTests(SynchronousTestCase):
    def test_privilegedStartServiceListens(self) -> None:
        """
        twistd calls C{privilegedStartService} before it gives up root for
        C{--uid}, then C{startService}: the service listens in the first,
        and only there, as Twisted's C{StreamServerEndpointService} does.
        """
        reactor = FakeReactor()
        service = makeService(reactor, "tcp:80", "tcp:443")
        service.privilegedStartService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [80, 443])
        self.assertEqual(len(service.ports), 2)
        service.startService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [80, 443])
        self.assertEqual(len(service.ports), 2)
        self.assertEqual(len(reactor.triggers["before"]["shutdown"]), 1)

    def test_startServiceListensIfNotYet(self) -> None:
        """
        Started without C{privilegedStartService} (a .tac, a test), the
        service listens in C{startService}.
        """
        reactor = FakeReactor()
        service = makeService(reactor, "tcp:8080", "tcp:8443")
        service.startService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [8080, 8443])
        self.assertEqual(len(reactor.triggers["before"]["shutdown"]), 1)

    def test_connectionLimitAtEveryListener(self) -> None:
        """
        With a connection limit, every drained listener serves the factory
        behind one L{LimitedFactory}; the service's factory is still the
        one it was given, and the auxiliary listeners are not limited.
        """
        reactor = FakeReactor()
        plain = makeService(reactor, "tcp:80")
        limit = ConnectionLimit(10, lambda: 0, reactor)
        service = GracefulService(
            plain.factory,
            [*plain.endpoints, ("tcp:443", serverFromString(reactor, "tcp:443"))],
            plain.drain,
            reactor,
            auxiliaryEndpoints=[
                ("tcp:9100", serverFromString(reactor, "tcp:9100"), Factory())
            ],
            connectionLimit=limit,
        )
        service.startService()
        [first, second, metrics] = [f for _, f, *_ in reactor.tcpServers]
        assert isinstance(first, LimitedFactory)
        self.assertIs(first, second)
        self.assertIs(first.wrapped, service.factory)
        self.assertIs(first.limit, limit)
        self.assertNotIsInstance(metrics, LimitedFactory)

    def test_listeningLineSaysTheBacklog(self) -> None:
        events: list[dict[str, Any]] = []
        self.patch(
            GracefulService, "log", Logger(observer=cast(ILogObserver, events.append))
        )
        service = makeService(FakeReactor(), "tcp:80")
        service.startService()
        [line] = [e["log_format"].format(**e) for e in events]
        self.assertIn("gracesvc listening on tcp:80", line)
        # A memory reactor's port has no socket to ask.
        self.assertTrue(line.endswith(", backlog unknown"), line)

    def test_listenFailureNamesTheEndpoint(self) -> None:
        service = makeService(portInUse(), "tcp:8080")
        with self.assertRaises(ListenFailed) as caught:
            service.startService()
        self.assertIn("cannot listen on tcp:8080:", str(caught.exception))
        self.assertIn("Address already in use", str(caught.exception))
        self.assertFalse(service.running)

    def test_privilegedListenFailureNamesTheEndpoint(self) -> None:
        service = makeService(portInUse(), "tcp:8080")
        with self.assertRaises(ListenFailed) as caught:
            service.privilegedStartService()
        self.assertIn("cannot listen on tcp:8080:", str(caught.exception))

    def test_portsOpenedBeforeAFailureAreClosed(self) -> None:
        service = makeService(FakeReactor())
        closed: list[str] = []
        service.endpoints = [("main", FakeEndpoint("main", closed))]
        service.auxiliaryEndpoints = [("metrics", FailingEndpoint(), Factory())]
        with self.assertRaises(ListenFailed) as caught:
            service.privilegedStartService()
        self.assertIn("cannot listen on metrics: ", str(caught.exception))
        self.assertIn("Permission denied", str(caught.exception))
        self.assertEqual(closed, ["main"])
        self.assertEqual((service.ports, service.auxiliaryPorts), ([], []))

    def test_twistdExitsWithOneLogLineWhenThePortIsInUse(self) -> None:
        """
        Under twistd a port in use is one critical log line and exit
        status 1, from C{privilegedStartService} (where twistd listens) as
        from C{startService}.
        """
        for start in ("privilegedStartService", "startService"):
            service = makeTwistdService(portInUse(), "tcp:8080")
            events: list[dict[str, Any]] = []
            service.log = Logger(observer=cast(ILogObserver, events.append))
            with self.assertRaises(SystemExit) as caught:
                getattr(service, start)()
            self.assertEqual(caught.exception.code, 1)
            [event] = events
            self.assertEqual(event["log_level"].name, "critical")
            self.assertIn("tcp:8080", event["error"])


@implementer(IListeningPort)
class FakePort:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self.closed = closed

    def startListening(self) -> None:
        pass

    def stopListening(self) -> None:
        self.closed.append(self.name)

    def getHost(self) -> IAddress:
        return UNIXAddress(self.name)


@implementer(IStreamServerEndpoint)
class FakeEndpoint:
    def __init__(self, name: str, closed: list[str]) -> None:
        self.name = name
        self.closed = closed
        self.listens = 0

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.listens += 1
        return succeed(FakePort(self.name, self.closed))


@implementer(IStreamServerEndpoint)
class FailingEndpoint:
    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        d: Deferred[IListeningPort] = Deferred()
        d.errback(CannotListenError("", 8081, OSError(13, "Permission denied")))
        return d


class WhenRunningTests(SynchronousTestCase):
    def test_calledOnceTheReactorRuns(self) -> None:
        """
        C{whenRunning} (twistd's gracesvc passes its process's
        C{startupDone}, which freezes the start-up heap) is called once the
        reactor runs, after start-up.
        """
        reactor = FakeReactor()
        service = makeService(reactor)
        calls: list[int] = []
        twistd = TwistdService(
            service.factory,
            service.endpoints,
            service.drain,
            reactor,
            StopSignals(reactor, service.drain, FakeSignals()),
            whenRunning=lambda: calls.append(1),
        )
        twistd.privilegedStartService()
        twistd.startService()
        self.assertEqual(calls, [])
        reactor.start(FakeSignals())
        self.assertEqual(calls, [1])


class ReadingPort(FakePort):
    """
    A port that records whether the reactor reads it (accepts).
    """

    reading = True

    def startReading(self) -> None:
        self.reading = True

    def stopReading(self) -> None:
        self.reading = False


@implementer(IStreamServerEndpoint)
class ReadingEndpoint:
    def __init__(self) -> None:
        self.port = ReadingPort("gated", [])

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        return succeed(self.port)


class StartupTests(SynchronousTestCase):
    def gated(
        self, startup: Deferred[None], failed: list[int] | None = None
    ) -> tuple[TwistdService, ReadingEndpoint, FakeReactor]:
        reactor = FakeReactor()
        service = makeService(reactor)
        endpoint = ReadingEndpoint()
        twistd = TwistdService(
            service.factory,
            [("gated", endpoint)],
            service.drain,
            reactor,
            StopSignals(reactor, service.drain, FakeSignals()),
            startup=lambda: startup,
            startupFailed=None if failed is None else lambda: failed.append(1),
        )
        return twistd, endpoint, reactor

    def test_acceptsOnlyOnceStartedUp(self) -> None:
        """
        With a startup (an ASGI lifespan's), the ports listen while the
        process may be root but accept nothing until the startup, run once
        the reactor runs, succeeded; L{TwistdService.whenReady} fires then.
        """
        startup: Deferred[None] = Deferred()
        twistd, endpoint, reactor = self.gated(startup)
        twistd.privilegedStartService()
        self.assertFalse(endpoint.port.reading)
        twistd.startService()
        ready = twistd.whenReady()
        reactor.start(FakeSignals())
        self.assertFalse(endpoint.port.reading)
        self.assertNoResult(ready)
        startup.callback(None)
        self.assertTrue(endpoint.port.reading)
        self.successResultOf(ready)
        self.assertTrue(twistd.ready)

    def test_failedStartup(self) -> None:
        """
        A startup that fails is one critical log line, and C{startupFailed}
        is called (it ends the process); nothing is ever accepted.
        """
        startup: Deferred[None] = Deferred()
        failed: list[int] = []
        twistd, endpoint, reactor = self.gated(startup, failed)
        events: list[dict[str, Any]] = []
        twistd.log = Logger(observer=cast(ILogObserver, events.append))
        twistd.privilegedStartService()
        twistd.startService()
        reactor.start(FakeSignals())
        startup.errback(RuntimeError("ASGI lifespan startup failed: no database"))
        self.assertEqual(failed, [1])
        self.assertFalse(endpoint.port.reading)
        self.assertEqual(
            [e["error"] for e in events if "error" in e],
            ["ASGI lifespan startup failed: no database"],
        )


class DrainTests(SynchronousTestCase):
    def test_shutdownTriggerStartsTheDrain(self) -> None:
        """
        The reactor's shutdown starts the drain through the trigger, and the
        trigger returns the drain's Deferred so the reactor waits for it.
        """
        reactor = FakeReactor()
        service = makeService(reactor, "tcp:8080")
        service.startService()
        [d] = reactor.fireShutdownTriggers()
        self.assertTrue(service.drain.draining)
        self.successResultOf(d)  # type: ignore[arg-type]
        # twistd then stops the service: the same drain, already done.
        self.successResultOf(service.stopService())

    def test_stopServiceDrainsAndRemovesTheTrigger(self) -> None:
        reactor = FakeReactor()
        service = makeService(reactor, "tcp:8080")
        service.startService()
        self.successResultOf(service.stopService())
        self.assertTrue(service.drain.finished)
        self.assertEqual(reactor.triggers["before"]["shutdown"], [])

    def test_auxiliaryListenerOutlivesTheDrain(self) -> None:
        """
        An auxiliary listener (metrics) listens with the others, before
        privileges are dropped, but is not closed with the drained ones: it
        stays open until the drain is done.
        """
        reactor = FakeReactor()
        service = makeService(reactor)
        closed: list[str] = []
        main, metrics = FakeEndpoint("main", closed), FakeEndpoint("metrics", closed)
        service.endpoints = [("main", main)]
        service.auxiliaryEndpoints = [("metrics", metrics, Factory())]
        service.privilegedStartService()
        service.startService()
        self.assertEqual((main.listens, metrics.listens), (1, 1))
        work: Deferred[None] = Deferred()
        service.drain.track(work)
        d = service.stopService()
        self.assertEqual(closed, ["main"])
        work.callback(None)
        self.successResultOf(d)
        self.assertEqual(closed, ["main", "metrics"])


class ChildServiceTests(SynchronousTestCase):
    def test_childrenStopAfterTheLastResponseOneAfterAnother(self) -> None:
        """
        A child service (a pool, say) is stopped in the drain's cleanup
        phase, once the request in flight has been answered, not when the
        drain begins; children stop last added first, each once the one
        before has stopped.
        """
        from twisted.application.service import Service

        from gracesvc.testing import Wire, get

        wire = Wire(pingDelay=1)
        service = GracefulService(wire.site, [], wire.drain, FakeReactor())
        stops: list[tuple[str, float]] = []
        slow: Deferred[None] = Deferred()

        class Child(Service):
            def __init__(self, name: str, result: Deferred[None] | None) -> None:
                self.setName(name)
                self.result = result

            def stopService(self) -> Deferred[None] | None:
                super().stopService()
                stops.append((str(self.name), wire.clock.seconds()))
                return self.result

        Child("pool", None).setServiceParent(service)
        Child("consumer", slow).setServiceParent(service)
        service.startService()
        client = wire.connect()
        client.send(get("/ping"))
        done = service.stopService()
        wire.advance(0.5)
        self.assertEqual(stops, [])
        wire.advance(0.6)
        self.assertEqual(client.responses[0].code, 200)
        self.assertEqual([name for name, _ in stops], ["consumer"])
        self.assertNoResult(done)
        slow.callback(None)
        self.assertEqual([name for name, _ in stops], ["consumer", "pool"])
        self.successResultOf(done)
