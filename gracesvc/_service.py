"""
The service: listens on every endpoint, and drains on shutdown.
"""

from __future__ import annotations

import itertools
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any, Protocol

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from ._drain import Drain

#: What C{signal.signal} looks like; injected so tests need no real signals.
InstallSignalHandler = Callable[[int, Any], Any]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class ListenFailed(Exception):
    """
    An endpoint could not listen.  The message names the endpoint and the
    reason, ready for a user.
    """


class GracefulService(Service):
    """
    Serve C{factory} on C{endpoints}; on shutdown, drain through C{drain}.

    Like Twisted's C{StreamServerEndpointService}, it listens in
    L{privilegedStartService}, which twistd calls before it gives up root
    for C{--uid}/C{--gid}, so that it can listen on a port below 1024.
    Started without it (a plain L{startService}), it listens then.

    The drain starts from a 'before' 'shutdown' system event trigger, so it
    runs on the first SIGINT or SIGTERM whatever the service hierarchy
    looks like, and also from L{stopService}.  Both return the same drain.
    While draining, a second SIGINT or SIGTERM stops at once.
    """

    log = Logger()

    def __init__(
        self,
        factory: IProtocolFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        drain: Drain,
        reactor: IReactorCore,
        installSignalHandler: InstallSignalHandler | None = None,
        earlySignals: EarlySignals | None = None,
        auxiliaryEndpoints: Sequence[
            tuple[str, IStreamServerEndpoint, IProtocolFactory]
        ] = (),
    ) -> None:
        """
        @param factory: the protocol factory to serve.
        @param endpoints: (description, endpoint) pairs; the description is
            what logs and errors call the endpoint.
        @param drain: the drain that the factory's connections report to.
        @param reactor: the reactor whose shutdown starts the drain.
        @param installSignalHandler: C{signal.signal}, or a stand-in.  L{None}
            leaves the signal handlers alone (no second-signal escalation).
        @param earlySignals: signals caught while the process was starting,
            handed to the reactor when the service starts.
        @param auxiliaryEndpoints: (description, endpoint, factory) served
            until the drain is done but not drained, such as a metrics
            endpoint that must stay scrapeable while the main listeners close.
        """
        self.factory = factory
        self.endpoints = list(endpoints)
        self.drain = drain
        self.reactor = reactor
        self._installSignalHandler = installSignalHandler
        self._earlySignals = earlySignals
        self.auxiliaryEndpoints = list(auxiliaryEndpoints)
        self.ports: list[IListeningPort] = []
        self.auxiliaryPorts: list[IListeningPort] = []
        self._listening = False
        self._trigger: Any = None
        self._triggerFired = False
        self._previousHandlers: dict[int, Any] = {}
        self._reactorHandlers: dict[int, Any] = {}
        self._stopSignalCount = itertools.count()
        self._signalledAt: float | None = None

    def privilegedStartService(self) -> None:
        """
        Listen on every endpoint, while the process may still be root.

        @raise ListenFailed: an endpoint that fails at once (a port in use,
            say).  The ports opened before it are closed again.
        """
        super().privilegedStartService()
        self._listenOnAll()

    def startService(self) -> None:
        """
        Listen on every endpoint, unless L{privilegedStartService} did, and
        arrange to drain on shutdown.

        @raise ListenFailed: as L{privilegedStartService}.
        """
        super().startService()
        if self._earlySignals is not None:
            self._earlySignals.release(self.reactor)
        if not self._listening:
            try:
                self._listenOnAll()
            except ListenFailed:
                self.running = False
                raise
        self._trigger = self.reactor.addSystemEventTrigger(
            "before", "shutdown", self._shutdownStarted
        )
        if self._installSignalHandler is not None:
            # The reactor installs its own handlers as it starts running.
            self.reactor.callWhenRunning(self._watchStopSignals)

    def _listenOnAll(self) -> None:
        listeners = [(d, e, self.factory, True) for d, e in self.endpoints]
        listeners += [(d, e, f, False) for d, e, f in self.auxiliaryEndpoints]
        for description, endpoint, factory, drained in listeners:
            failure = self._listen(description, endpoint, factory, drained)
            if failure is not None:
                for port in self.ports + self.auxiliaryPorts:
                    port.stopListening()
                self.ports, self.auxiliaryPorts = [], []
                raise ListenFailed(
                    f"cannot listen on {description}: {failure.getErrorMessage()}"
                )
        self._listening = True

    def _listen(
        self,
        description: str,
        endpoint: IStreamServerEndpoint,
        factory: IProtocolFactory,
        drained: bool,
    ) -> Failure | None:
        """
        Listen on C{endpoint}.

        @param drained: whether the drain closes this listener (else it is
            closed when the drain is done).
        @return: the failure if listening failed at once, else L{None}.  An
            endpoint that fails later (none of Twisted's own do) is logged
            and stops the reactor.
        """
        synchronous = True
        failures: list[Failure] = []

        def listening(port: IListeningPort) -> None:
            if drained:
                self.ports.append(port)
                self.drain.addListener(port)
            else:
                self.auxiliaryPorts.append(port)
            self.log.info(
                "gracesvc listening on {description} ({address})",
                description=description,
                address=str(port.getHost()),
            )

        def failed(failure: Failure) -> None:
            if synchronous:
                failures.append(failure)
                return
            self.log.critical(
                "gracesvc: cannot listen on {description}: {error}",
                description=description,
                error=failure.getErrorMessage(),
            )
            self.reactor.stop()

        endpoint.listen(factory).addCallbacks(listening, failed)
        synchronous = False
        return failures[0] if failures else None

    def _closeAuxiliary(self, _: object) -> None:
        ports, self.auxiliaryPorts = self.auxiliaryPorts, []
        for port in ports:
            port.stopListening()

    def _shutdownStarted(self) -> Deferred[None]:
        self._triggerFired = True
        return self._drainOnStop()

    def _drainOnStop(self) -> Deferred[None]:
        # The reactor's own signal handlers record the signal that stops it
        # (twistd re-raises it at exit); any other stop leaves it unset.
        signum = getattr(self.reactor, "_exitSignal", None)
        if signum is None:
            return self._drain("reactor stopped")
        name = signal.Signals(signum).name
        return self._drain(name, name)

    def stopService(self) -> Deferred[None]:
        """
        Drain: stop accepting, finish what is in flight, within the cap.

        @return: a Deferred that fires when the drain is done.
        """
        super().stopService()
        if self._trigger is not None and not self._triggerFired:
            self.reactor.removeSystemEventTrigger(self._trigger)
        self._trigger = None
        return self._drain("service stopped")

    def _drain(self, reason: str, signalName: str | None = None) -> Deferred[None]:
        if not self.drain.draining:
            self._escalateOnSecondSignal()
            self.drain.whenDone().addCallback(self._closeAuxiliary)
        return self.drain.start(reason, signalName, startedAt=self._signalledAt)

    def _escalateOnSecondSignal(self) -> None:
        install = self._installSignalHandler
        if install is None or threading.current_thread() is not threading.main_thread():
            return
        for signum in _STOP_SIGNALS:
            self._previousHandlers[signum] = install(signum, self._secondSignal)
        self.drain.whenDone().addCallback(self._restoreSignalHandlers)

    def _watchStopSignals(self) -> None:
        """
        Put L{_stopSignal} in front of the reactor's SIGINT and SIGTERM
        handlers.  A signal the reactor leaves alone (an ignored SIGINT in a
        background job) stays as it is.
        """
        install = self._installSignalHandler
        if install is None or threading.current_thread() is not threading.main_thread():
            return
        for signum in _STOP_SIGNALS:
            previous = install(signum, self._stopSignal)
            if callable(previous) and previous is not self._stopSignal:
                self._reactorHandlers[signum] = previous
            else:
                install(signum, previous)

    def _stopSignal(self, signum: int, frame: FrameType | None) -> None:
        """
        The first stop signal goes to the reactor, which stops and so starts
        the drain; any later one forces the stop.

        The drain starts only on the reactor's next iteration.  Without this
        a second signal in between went to the reactor too: it called
        C{reactor.stop()} twice (C{ReactorNotRunning}, a traceback in the
        log), replaced the exit signal, and forced nothing.
        """
        # Counted with one call, not a flag tested then set: a second signal
        # can run this handler again between any two bytecodes of the first.
        if (
            next(self._stopSignalCount) > 0
            or self.drain.draining
            or getattr(self.reactor, "_exitSignal", None) is not None
        ):
            self._secondSignal(signum, frame)
            return
        self._signalledAt = self.drain.clock.seconds()
        self._reactorHandlers[signum](signum, frame)

    def _secondSignal(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of whatever the reactor was doing:
        # hand the work to the reactor, as Twisted's own handlers do.
        name = signal.Signals(signum).name
        self.reactor.callFromThread(  # type: ignore[attr-defined]
            self._forceStop, f"second signal, {name}", name
        )

    def _forceStop(self, reason: str, signalName: str) -> None:
        if not self.drain.draining:
            # The reactor has not run its shutdown triggers yet: start the
            # drain as they would, so that it ends the same way.
            self._drainOnStop()
        self.drain.forceStop(reason, signalName)

    def _restoreSignalHandlers(self, _: object) -> None:
        install = self._installSignalHandler
        assert install is not None
        previous, self._previousHandlers = self._previousHandlers, {}
        for signum, handler in previous.items():
            install(signum, handler)


class SignalModule(Protocol):
    """
    What L{EarlySignals} needs of the L{signal} module.
    """

    def signal(self, signalnum: int, handler: Any) -> Any: ...

    def getsignal(self, signalnum: int) -> Any: ...


class EarlySignals:
    """
    Catch SIGINT and SIGTERM from the moment the service is made until the
    reactor runs and has its own handlers.

    Without it, a SIGINT during start-up raises L{KeyboardInterrupt} wherever
    Python happens to be, and twistd prints a traceback or hangs half
    started.  With it, the signal is remembered and handed to the reactor
    once it runs, which then shuts down cleanly with the signal's status.
    """

    def __init__(self, signals: SignalModule) -> None:
        """
        @param signals: the L{signal} module, or a stand-in in tests.
        """
        self._signals = signals
        self._previous: dict[int, Any] = {}
        self.received: int | None = None

    def catch(self) -> None:
        """
        Start catching.
        """
        for signum in _STOP_SIGNALS:
            self._previous[signum] = self._signals.signal(signum, self._remember)

    def _remember(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum

    def release(self, reactor: Any) -> None:
        """
        Hand over to C{reactor} once it runs: its handlers take over, and a
        signal caught meanwhile is passed to them.

        Twisted installs its SIGINT handler only over Python's default, so
        where this catcher still stands the reactor's handler is put in its
        place here (or whatever stood before, such as the SIG_IGN a shell
        gives background jobs).
        """
        reactor.callWhenRunning(self._handOver, reactor)

    def _handOver(self, reactor: Any) -> None:
        reactorHandlers: dict[int, Any] = {
            signal.SIGINT: reactor.sigInt,
            signal.SIGTERM: reactor.sigTerm,
        }
        previous, self._previous = self._previous, {}
        for signum, handler in previous.items():
            if self._signals.getsignal(signum) == self._remember:
                if handler in (signal.default_int_handler, signal.SIG_DFL):
                    handler = reactorHandlers[signum]
                self._signals.signal(signum, handler)
        if self.received is not None:
            reactorHandlers[self.received](self.received, None)


class TwistdService(GracefulService):
    """
    L{GracefulService} as twistd runs it: an endpoint that cannot listen is
    one log line and exit status 1, not a traceback.
    """

    def _listenOnAll(self) -> None:
        try:
            super()._listenOnAll()
        except ListenFailed as e:
            self.log.critical("gracesvc: {error}", error=str(e))
            raise SystemExit(1) from None
