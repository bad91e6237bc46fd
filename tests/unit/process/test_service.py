"""
The service (listening, the shutdown trigger) and the stop signals.
"""

from __future__ import annotations

import gc
import signal
from typing import Any, cast

from twisted.internet.address import UNIXAddress
from twisted.internet.defer import Deferred, succeed
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

from gracesvc._core.drain import Drain
from gracesvc._process.service import (
    GracefulService,
    ListenFailed,
    StopSignals,
    TwistdService,
    freezeStartupHeap,
)
from tests.support.service import (
    SIGINT,
    SIGTERM,
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


class FreezeStartupHeapTests(SynchronousTestCase):
    def test_calledOnceTheReactorRuns(self) -> None:
        """
        C{whenRunning} (twistd's gracesvc passes L{freezeStartupHeap}) is
        called once the reactor runs, after start-up.
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

    def test_freezeStartupHeapFreezes(self) -> None:
        """
        L{freezeStartupHeap} leaves the objects alive now out of the
        collector's sight (undone here, not to change this test process).
        """
        self.addCleanup(gc.unfreeze)
        freezeStartupHeap()
        self.assertGreater(gc.get_freeze_count(), 0)


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


class StopSignalsTests(SynchronousTestCase):
    """
    L{StopSignals} with a reactor that runs, turn by turn.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        # The service registers the shutdown trigger that waits on the drain.
        service = makeService(self.reactor)
        service.startService()
        self.drain = service.drain
        self.signals = FakeSignals()
        self.stopSignals = StopSignals(self.reactor, self.drain, self.signals)
        self.log: list[dict[str, Any]] = []
        self.drain.log = Logger(observer=cast(ILogObserver, self.log.append))

    def catch(self) -> None:
        """
        Catch, as C{makeService} does, and watch, as the service's start
        does.
        """
        self.stopSignals.catch()
        self.stopSignals.watch()

    def steps(self) -> list[tuple[str, object]]:
        return [(e["step"], e.get("reason")) for e in self.log if "step" in e]

    def assertOurs(self, *signums: int) -> None:
        for signum in signums:
            self.assertEqual(
                self.signals.handlers[signum], self.stopSignals._signalled, signum
            )

    def test_firstSignalStopsTheReactorAndStartsTheDrain(self) -> None:
        """
        The first signal stops the reactor through the reactor's own
        handler, which records the exit status; it starts the drain, named
        after the signal, with the cap counted from when the signal arrived
        even if the reactor gets to it late.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.assertEqual(self.stopSignals.phase, "watching")
        self.drain.track(Deferred())
        self.reactor.advance(10)
        self.signals.deliver(SIGTERM)
        # The handler only hands the work to the reactor.
        self.assertEqual((self.drain.draining, self.reactor.stops), (False, 0))
        self.reactor.advance(0.7)
        self.assertEqual(self.reactor.turn(), [])
        self.assertEqual(self.stopSignals.phase, "forcing")
        self.assertEqual(self.reactor.exitSignal, SIGTERM)
        self.assertEqual(self.drain.startedAt, 10)
        self.assertEqual(self.drain.capAt, 10 + self.drain.shutdownTimeout)
        self.assertEqual(self.steps(), [("start", "SIGTERM")])
        self.reactor.turn()
        self.assertEqual(self.reactor.stops, 1)

    def test_signalDuringStartup(self) -> None:
        """
        A signal from the moment the service is made, before the reactor
        runs, is no L{KeyboardInterrupt}: once the reactor runs it stops it,
        with the signal's exit status.  The reactor's SIGTERM handler,
        installed as it started, is put behind ours again.
        """
        self.catch()
        self.assertOurs(SIGINT, SIGTERM)
        self.signals.deliver(SIGINT)
        self.reactor.start(self.signals)
        self.assertOurs(SIGINT, SIGTERM)
        self.reactor.turn()
        self.reactor.turn()
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))
        self.assertEqual(self.steps(), [("start", "SIGINT"), ("done", None)])

    def test_twoSignalsDuringStartup(self) -> None:
        self.catch()
        self.drain.track(Deferred())
        self.signals.deliver(SIGINT)
        self.signals.deliver(SIGTERM)
        self.reactor.start(self.signals)
        self.reactor.turn()
        self.reactor.turn()
        self.assertTrue(self.drain.finished)
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))
        self.assertEqual(
            self.steps(),
            [("start", "SIGINT"), ("forced", "second signal, SIGTERM"), ("done", None)],
        )

    def test_ignoredSigintStaysIgnored(self) -> None:
        """
        A SIGINT ignored by whoever started the process (a shell's
        background job) stays ignored, as Twisted alone leaves it; so does
        any SIGINT handler other than Python's default (a debugger's).
        SIGTERM is caught all the same.
        """
        for handler in (signal.SIG_IGN, lambda n, f: None):
            reactor = FakeReactor()
            signals = FakeSignals()
            signals.handlers[SIGINT] = handler
            stopSignals = StopSignals(reactor, Drain(reactor), signals)
            stopSignals.catch()
            stopSignals.watch()
            reactor.start(signals)
            self.assertIs(signals.handlers[SIGINT], handler)
            signals.deliver(SIGINT)
            reactor.turn()
            self.assertEqual((reactor.stops, reactor.exitSignal), (0, None))
            signals.deliver(SIGTERM)
            reactor.turn()
            reactor.turn()
            self.assertEqual((reactor.stops, reactor.exitSignal), (1, SIGTERM))

    def test_secondSignalForcesTheStop(self) -> None:
        """
        Once the first signal has started the drain, SIGINT or SIGTERM
        forces the stop, and does not reach the reactor again (which would
        call C{reactor.stop()} twice and change the exit status).
        """
        self.catch()
        self.reactor.start(self.signals)
        self.drain.track(Deferred())
        self.signals.deliver(SIGINT)
        [d] = self.reactor.turn() + self.reactor.turn()
        self.assertNoResult(d)
        self.signals.deliver(SIGTERM)
        self.reactor.turn()
        self.successResultOf(d)  # type: ignore[arg-type]
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))
        self.assertEqual(
            self.steps(),
            [("start", "SIGINT"), ("forced", "second signal, SIGTERM"), ("done", None)],
        )

    def test_secondSignalBeforeTheDrainBegins(self) -> None:
        """
        Two signals before the reactor's next turn: the first stops the
        reactor and starts the drain, the second forces it.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.drain.track(Deferred())
        self.signals.deliver(SIGINT)
        self.signals.deliver(SIGINT)
        self.reactor.turn()
        self.assertTrue(self.drain.finished)
        [d] = self.reactor.turn()
        self.successResultOf(d)  # type: ignore[arg-type]
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))

    def test_secondSignalInsideTheFirstHandler(self) -> None:
        """
        A second signal that runs the handler again in the middle of the
        first (between two bytecodes) still makes one stop and one forced
        stop.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.drain.track(Deferred())
        seconds = self.reactor.seconds

        def secondSignalArrives() -> float:
            self.reactor.seconds = seconds  # type: ignore[method-assign]
            self.signals.deliver(SIGTERM)
            return seconds()

        self.reactor.seconds = secondSignalArrives  # type: ignore[method-assign]
        self.signals.deliver(SIGINT)
        self.reactor.turn()
        self.reactor.turn()
        self.assertTrue(self.drain.finished)
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))

    def test_signalsAfterTheDrainStayInert(self) -> None:
        """
        After a drain that a signal started, the process is on its way out:
        a further signal neither stops the reactor again nor raises
        L{KeyboardInterrupt} nor kills with another status.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.signals.deliver(SIGINT)
        [d] = self.reactor.turn() + self.reactor.turn()
        self.successResultOf(d)  # type: ignore[arg-type]
        self.assertEqual(self.stopSignals.phase, "forcing")
        self.assertOurs(SIGINT, SIGTERM)
        self.signals.deliver(SIGINT)
        self.signals.deliver(SIGTERM)
        self.reactor.turn()
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (1, SIGINT))
        self.assertEqual([s for s, _ in self.steps()], ["start", "done"])

    def test_handlersGivenBackWhenTheDrainEndsWithoutASignal(self) -> None:
        """
        A drain that no signal started (the service was stopped) gives the
        signals back to the reactor's handlers, and a signal then stops the
        reactor as Twisted would.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.successResultOf(self.drain.start("service stopped"))
        self.assertEqual(self.stopSignals.phase, "restored")
        self.assertEqual(self.signals.handlers[SIGINT], self.reactor.sigInt)
        self.assertEqual(self.signals.handlers[SIGTERM], self.reactor.sigTerm)

    def test_handlersGivenBackBeforeTheReactorRuns(self) -> None:
        self.catch()
        self.successResultOf(self.drain.start("service stopped"))
        self.assertEqual(self.signals.handlers[SIGINT], signal.default_int_handler)
        self.assertEqual(self.signals.handlers[SIGTERM], signal.SIG_DFL)
        self.reactor.start(self.signals)
        self.assertEqual(self.signals.handlers[SIGINT], self.reactor.sigInt)
        self.assertEqual(self.stopSignals.phase, "restored")

    def test_signalWhileTheServiceDrainsForcesIt(self) -> None:
        """
        A signal while a drain that no signal started runs forces it, and
        leaves the reactor alone; the signals are then given back.
        """
        self.catch()
        self.reactor.start(self.signals)
        self.drain.track(Deferred())
        d = self.drain.start("service stopped")
        self.signals.deliver(SIGTERM)
        self.reactor.turn()
        self.successResultOf(d)
        self.assertEqual((self.reactor.stops, self.reactor.exitSignal), (0, None))
        self.assertEqual(self.signals.handlers[SIGTERM], self.reactor.sigTerm)


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
