"""
The stop signals (L{gracesvc._process.signals.StopSignals}), with a reactor
that runs, turn by turn.
"""

from __future__ import annotations

import signal
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.drain import Drain
from gracesvc._process.signals import StopSignals
from tests.support.service import (
    SIGINT,
    SIGTERM,
    FakeReactor,
    FakeSignals,
    makeService,
)


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
