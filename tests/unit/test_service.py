"""
The service: listening, the shutdown trigger, signals.
"""

from __future__ import annotations

import signal
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.testing import MemoryReactorClock, RaisingMemoryReactor
from twisted.logger import Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._app import GraceApp
from gracesvc._drain import Drain
from gracesvc._http import DrainingSite
from gracesvc._service import (
    EarlySignals,
    GracefulService,
    ListenFailed,
    TwistdService,
)


class TriggerReactor(MemoryReactorClock):
    """
    A L{MemoryReactorClock} whose system event triggers can be removed, and
    that records C{callFromThread} calls.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fromThread: list[tuple[Any, tuple[Any, ...]]] = []

    def addSystemEventTrigger(
        self, phase: str, eventType: str, f: Any, *args: Any, **kw: Any
    ) -> Any:  # type: ignore[override]
        super().addSystemEventTrigger(phase, eventType, f, *args, **kw)
        return (phase, eventType, (f, args, kw))

    def removeSystemEventTrigger(self, triggerID: Any) -> None:
        phase, eventType, entry = triggerID
        self.triggers[phase][eventType].remove(entry)

    def callFromThread(self, f: Any, *args: Any, **kw: Any) -> None:  # type: ignore[override]
        self.fromThread.append((f, args))

    def sigInt(self, signum: int, frame: Any = None) -> None:
        self.stop()

    def sigTerm(self, signum: int, frame: Any = None) -> None:
        self.stop()

    def fireShutdownTriggers(self) -> list[Any]:
        """
        Call the 'before' 'shutdown' triggers, as the reactor does on stop.

        @return: what each returned.
        """
        return [
            f(*args, **kw)
            for f, args, kw in list(self.triggers.get("before", {}).get("shutdown", []))
        ]


class FakeSignals:
    """
    Stands in for C{signal.signal}: records handlers, starts with the
    defaults.
    """

    def __init__(self) -> None:
        self.handlers: dict[int, Any] = {
            signal.SIGINT: signal.default_int_handler,
            signal.SIGTERM: signal.SIG_DFL,
        }

    def signal(self, signum: int, handler: Any) -> Any:
        previous = self.handlers.get(signum)
        self.handlers[signum] = handler
        return previous

    __call__ = signal

    def getsignal(self, signum: int) -> Any:
        return self.handlers.get(signum)


def makeService(
    reactor: Any, *descriptions: str, cls: type[GracefulService] = GracefulService
) -> tuple[GracefulService, FakeSignals]:
    drain = Drain(reactor, shutdownTimeout=2)
    site = DrainingSite(GraceApp(reactor, drain, 1).resource(), drain, reactor=reactor)
    signals = FakeSignals()
    endpoints = [(d, serverFromString(reactor, d)) for d in descriptions]
    return cls(site, endpoints, drain, reactor, installSignalHandler=signals), signals


class ServiceTests(SynchronousTestCase):
    def test_listensAndRegistersTheShutdownTrigger(self) -> None:
        reactor = TriggerReactor()
        service, _ = makeService(reactor, "tcp:8080", "tcp:8443")
        service.startService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [8080, 8443])
        self.assertEqual(len(reactor.triggers["before"]["shutdown"]), 1)

    def test_privilegedStartServiceListens(self) -> None:
        """
        twistd calls C{privilegedStartService} before it gives up root for
        C{--uid}, then C{startService}: the service listens in the first,
        and only there, as Twisted's C{StreamServerEndpointService} does.
        """
        reactor = TriggerReactor()
        service, _ = makeService(reactor, "tcp:80", "tcp:443")
        service.privilegedStartService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [80, 443])
        self.assertEqual(len(service.ports), 2)
        service.startService()
        self.assertEqual([p for p, *_ in reactor.tcpServers], [80, 443])
        self.assertEqual(len(service.ports), 2)
        self.assertEqual(len(reactor.triggers["before"]["shutdown"]), 1)

    def test_privilegedListenFailureNamesTheEndpoint(self) -> None:
        reactor = RaisingMemoryReactor(
            listenException=CannotListenError("", 80, OSError(13, "Permission denied"))
        )
        service, _ = makeService(reactor, "tcp:80")
        with self.assertRaises(ListenFailed) as caught:
            service.privilegedStartService()
        self.assertIn("cannot listen on tcp:80:", str(caught.exception))
        self.assertIn("Permission denied", str(caught.exception))

    def test_shutdownTriggerStartsTheDrain(self) -> None:
        """
        The reactor's shutdown (a signal) starts the drain through the
        trigger, and the trigger returns the drain's Deferred so the reactor
        waits for it.
        """
        reactor = TriggerReactor()
        service, _ = makeService(reactor, "tcp:8080")
        service.startService()
        [d] = reactor.fireShutdownTriggers()
        self.assertTrue(service.drain.draining)
        self.successResultOf(d)
        # twistd then stops the service: the same drain, already done.
        self.successResultOf(service.stopService())

    def test_stopServiceDrainsAndRemovesTheTrigger(self) -> None:
        reactor = TriggerReactor()
        service, _ = makeService(reactor, "tcp:8080")
        service.startService()
        self.successResultOf(service.stopService())
        self.assertTrue(service.drain.finished)
        self.assertEqual(reactor.triggers["before"]["shutdown"], [])

    def test_listenFailureNamesTheEndpoint(self) -> None:
        reactor = RaisingMemoryReactor(
            listenException=CannotListenError(
                "", 8080, OSError(98, "Address already in use")
            )
        )
        service, _ = makeService(reactor, "tcp:8080")
        with self.assertRaises(ListenFailed) as caught:
            service.startService()
        self.assertIn("cannot listen on tcp:8080:", str(caught.exception))
        self.assertIn("Address already in use", str(caught.exception))
        self.assertFalse(service.running)

    def test_twistdExitsWithOneLogLineWhenThePortIsInUse(self) -> None:
        """
        Under twistd a port in use is one critical log line and exit
        status 1, from C{privilegedStartService} (where twistd listens) as
        from C{startService}.
        """
        for start in ("privilegedStartService", "startService"):
            reactor = RaisingMemoryReactor(
                listenException=CannotListenError(
                    "", 8080, OSError(98, "Address already in use")
                )
            )
            service, _ = makeService(reactor, "tcp:8080", cls=TwistdService)
            events: list[dict[str, Any]] = []
            service.log = Logger(observer=events.append)
            with self.assertRaises(SystemExit) as caught:
                getattr(service, start)()
            self.assertEqual(caught.exception.code, 1)
            [event] = events
            self.assertEqual(event["log_level"].name, "critical")
            self.assertIn("tcp:8080", event["error"])


class AuxiliaryEndpointTests(SynchronousTestCase):
    def test_auxiliaryListenerOutlivesTheDrain(self) -> None:
        """
        An auxiliary listener (metrics) is not closed with the drained ones:
        it stays open until the drain is done.
        """
        reactor = TriggerReactor()
        service, _ = makeService(reactor, "tcp:8080")
        closed: list[str] = []

        class Port:
            def __init__(self, name: str) -> None:
                self.name = name

            def stopListening(self) -> None:
                closed.append(self.name)

            def getHost(self) -> str:
                return self.name

        class Endpoint:
            def __init__(self, name: str) -> None:
                self.name = name

            def listen(self, factory: object) -> Deferred[Port]:
                return succeed(Port(self.name))

        service.endpoints = [("main", Endpoint("main"))]
        service.auxiliaryEndpoints = [("metrics", Endpoint("metrics"), object())]
        service.startService()
        work: Deferred[None] = Deferred()
        service.drain.track(work)
        d = service.stopService()
        self.assertEqual(closed, ["main"])
        work.callback(None)
        self.successResultOf(d)
        self.assertEqual(closed, ["main", "metrics"])


class SecondSignalTests(SynchronousTestCase):
    def test_secondSignalForcesTheStop(self) -> None:
        """
        Once the drain has begun, SIGINT or SIGTERM hands a forced stop to the
        reactor; when the drain is done the previous handlers are back.
        """
        reactor = TriggerReactor()
        service, signals = makeService(reactor, "tcp:8080")
        service.startService()
        service.drain.track(Deferred())
        [d] = reactor.fireShutdownTriggers()
        self.assertNoResult(d)
        signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        [(f, args)] = reactor.fromThread
        f(*args)
        self.successResultOf(d)
        self.assertEqual(signals.handlers[signal.SIGINT], signal.default_int_handler)
        self.assertEqual(signals.handlers[signal.SIGTERM], signal.SIG_DFL)

    def test_secondSignalBeforeTheDrainBeginsForcesTheStop(self) -> None:
        """
        The reactor stops, and the drain begins, only on the reactor's next
        iteration after the first signal: a second signal before that forces
        the stop too, and does not reach the reactor's handler again (which
        would call C{reactor.stop()} twice: C{ReactorNotRunning}).
        """
        reactor = TriggerReactor()
        stops: list[int] = []
        reactor.sigInt = stops.append  # type: ignore[method-assign, assignment]
        reactor.sigTerm = stops.append  # type: ignore[method-assign, assignment]
        service, signals = makeService(reactor, "tcp:8080")
        service.startService()
        service.drain.track(Deferred())
        # The reactor installs its handlers as it starts, then runs the hooks.
        signals.handlers[signal.SIGINT] = lambda n, f: reactor.sigInt(n)
        signals.handlers[signal.SIGTERM] = lambda n, f: reactor.sigTerm(n)
        for f, args, kw in reactor.whenRunningHooks:
            f(*args, **kw)
        signals.handlers[signal.SIGINT](signal.SIGINT, None)
        signals.handlers[signal.SIGTERM](signal.SIGTERM, None)
        self.assertEqual(stops, [signal.SIGINT])
        [(f, args)] = reactor.fromThread
        f(*args)
        self.assertTrue(service.drain.finished)
        [d] = reactor.fireShutdownTriggers()
        self.successResultOf(d)


class EarlySignalTests(SynchronousTestCase):
    def test_signalDuringStartupIsHandedToTheReactor(self) -> None:
        """
        A SIGINT caught before the reactor runs is not a traceback: once the
        reactor runs, its handler takes over and gets the signal.
        """
        signals = FakeSignals()
        early = EarlySignals(signals)
        early.catch()
        signals.handlers[signal.SIGINT](signal.SIGINT, None)
        reactor = TriggerReactor()
        early.release(reactor)
        self.assertFalse(reactor.hasStopped)
        [(f, args, kw)] = reactor.whenRunningHooks
        # Twisted replaces SIGTERM's handler, but not SIGINT's (ours).
        signals.handlers[signal.SIGTERM] = reactor.sigTerm
        f(*args, **kw)
        self.assertTrue(reactor.hasStopped)
        self.assertEqual(signals.handlers[signal.SIGINT], reactor.sigInt)
        self.assertEqual(signals.handlers[signal.SIGTERM], reactor.sigTerm)

    def test_ignoredSigintStaysIgnored(self) -> None:
        """
        A SIGINT ignored by whoever started the process (a shell's background
        job) stays ignored, as twistd alone would leave it.
        """
        signals = FakeSignals()
        signals.handlers[signal.SIGINT] = signal.SIG_IGN
        early = EarlySignals(signals)
        early.catch()
        reactor = TriggerReactor()
        early.release(reactor)
        [(f, args, kw)] = reactor.whenRunningHooks
        f(*args, **kw)
        self.assertEqual(signals.handlers[signal.SIGINT], signal.SIG_IGN)
        self.assertFalse(reactor.hasStopped)
