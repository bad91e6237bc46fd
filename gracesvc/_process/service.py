"""
The service, which listens on every endpoint and drains on shutdown, and
the stop signals, which start that drain and force it.
"""

from __future__ import annotations

import gc
import itertools
import signal
from collections.abc import Callable, Sequence
from enum import Enum
from types import FrameType
from typing import TYPE_CHECKING, Protocol

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from gracesvc._core.drain import Drain
from gracesvc._process.listeners import DrainedPort

if TYPE_CHECKING:
    from gracesvc._process.watchdog import CapWatchdog

#: A signal handler as C{signal.signal} takes and returns it: a callable, or
#: C{SIG_DFL}/C{SIG_IGN}, or L{None} for one not installed from Python.
SignalHandler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


class ListenFailed(Exception):
    """
    An endpoint could not listen.  The message names the endpoint and the
    reason, ready for a user.
    """


class GracefulService(MultiService):
    """
    Serve C{factory} on C{endpoints}; on shutdown, drain through C{drain}.

    Like Twisted's C{StreamServerEndpointService}, it listens in
    L{privilegedStartService}, which twistd calls before it gives up root
    for C{--uid}/C{--gid}, so that it can listen on a port below 1024.
    Started without it (a plain L{startService}), it listens then.

    The drain starts from a 'before' 'shutdown' system event trigger, so it
    runs however the reactor is stopped and whatever the service hierarchy
    looks like, and also from L{stopService}.  Both wait for the same drain.
    Signals are L{StopSignals}' business.

    Child services (a database pool, a consumer) are started with it, and
    stopped in the drain's cleanup phase, after the last request has been
    answered: last added first, each once the one before has stopped.
    (Twisted's L{MultiService} stops them all at once, when the drain
    begins.)
    """

    log = Logger()

    def __init__(
        self,
        factory: IProtocolFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        drain: Drain,
        reactor: IReactorCore,
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
        @param auxiliaryEndpoints: (description, endpoint, factory) served
            until the drain is done but not drained, such as a metrics
            endpoint that must stay scrapeable while the main listeners close.
        """
        super().__init__()
        self.factory = factory
        self.endpoints = list(endpoints)
        self.drain = drain
        self.reactor = reactor
        self.auxiliaryEndpoints = list(auxiliaryEndpoints)
        self.ports: list[IListeningPort] = []
        self.auxiliaryPorts: list[IListeningPort] = []
        self._listening = False
        self._trigger: object = None
        self._triggerFired = False

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
        if list(self):
            self.drain.addHook(
                "cleanup", self._stopChildren, name="stop child services"
            )
        if not self._listening:
            try:
                self._listenOnAll()
            except ListenFailed:
                self.running = False
                raise
        self._trigger = self.reactor.addSystemEventTrigger(
            "before", "shutdown", self._shutdownStarted
        )

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
        self.drain.whenDone().addCallback(self._closeAuxiliary)

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
                self.drain.addListener(DrainedPort(port))
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

    async def _stopChildren(self) -> None:
        """
        Stop the child services, last added first, one after another.
        """
        children: list[IService] = list(self)
        for child in reversed(children):
            if child.running:
                await maybeDeferred(child.stopService)

    def _closeAuxiliary(self, _: object) -> None:
        ports, self.auxiliaryPorts = self.auxiliaryPorts, []
        for port in ports:
            port.stopListening()

    def _shutdownStarted(self) -> Deferred[None]:
        # A stop signal has started the drain already, naming the signal.
        self._triggerFired = True
        return self.drain.start("reactor stopped")

    def stopService(self) -> Deferred[None]:
        """
        Drain: stop accepting, finish what is in flight, within the cap.

        @return: a Deferred that fires when the drain is done.
        """
        Service.stopService(self)
        if self._trigger is not None and not self._triggerFired:
            self.reactor.removeSystemEventTrigger(self._trigger)
        self._trigger = None
        return self.drain.start("service stopped")


def freezeStartupHeap() -> None:
    """
    Collect the garbage start-up left, then move every object alive now
    (the modules, classes and app that start-up made) out of the garbage
    collector's sight: L{gc.freeze}.

    A full collection walks every tracked object.  gracesvc's start-up heap
    is larger than a plain Twisted app's (Prometheus, h2, wsproto, the
    user's app), and without this each full collection during serving
    walks all of it again: measured, about 1.5 % of the CPU time of a
    C{/ping} request.  Objects made at start-up are never freed anyway.
    """
    gc.collect()
    gc.freeze()


class TwistdService(GracefulService):
    """
    L{GracefulService} as twistd runs it: an endpoint that cannot listen is
    one log line and exit status 1, not a traceback; the stop signals,
    caught since the service was made, are watched from when it starts; and
    once the reactor runs, C{whenRunning} is called (twistd's gracesvc
    freezes the start-up heap then, see L{freezeStartupHeap}).
    """

    def __init__(
        self,
        factory: IProtocolFactory,
        endpoints: Sequence[tuple[str, IStreamServerEndpoint]],
        drain: Drain,
        reactor: IReactorCore,
        stopSignals: StopSignals,
        auxiliaryEndpoints: Sequence[
            tuple[str, IStreamServerEndpoint, IProtocolFactory]
        ] = (),
        whenRunning: Callable[[], object] | None = None,
    ) -> None:
        """
        @param stopSignals: the signals, caught already.
        @param whenRunning: called once the reactor runs, start-up done.
        @see: L{GracefulService.__init__} for the rest.
        """
        super().__init__(factory, endpoints, drain, reactor, auxiliaryEndpoints)
        self.stopSignals = stopSignals
        self.whenRunning = whenRunning

    def _listenOnAll(self) -> None:
        try:
            super()._listenOnAll()
        except ListenFailed as e:
            self.log.critical("gracesvc: {error}", error=str(e))
            raise SystemExit(1) from None

    def startService(self) -> None:
        super().startService()
        self.stopSignals.watch()
        if self.whenRunning is not None:
            self.reactor.callWhenRunning(self.whenRunning)


class SignalModule(Protocol):
    """
    What L{StopSignals} needs of the L{signal} module.
    """

    def signal(self, signalnum: int, handler: SignalHandler, /) -> SignalHandler: ...

    def getsignal(self, signalnum: int, /) -> SignalHandler: ...


class SignalReactor(Protocol):
    """
    What L{StopSignals} needs of the reactor.

    C{sigInt} and C{sigTerm} are the handlers Twisted's reactors install for
    themselves; they are in no interface.  Besides stopping the reactor,
    they record the signal that twistd re-raises once the reactor has
    stopped, so that the exit status is the signal's.
    """

    def callWhenRunning(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> object: ...

    def callFromThread(
        self, callable: Callable[..., object], *args: object, **kwargs: object
    ) -> None: ...

    def sigInt(self, number: int, frame: FrameType | None = None) -> None: ...

    def sigTerm(self, number: int, frame: FrameType | None = None) -> None: ...


class _Phase(Enum):
    """
    Where L{StopSignals} stands.
    """

    #: Caught, from the moment the service is made; the reactor does not
    #: run yet, so a signal is only handed to it once it does.
    STARTING = "starting"
    #: The reactor runs: the first signal stops it and starts the drain.
    WATCHING = "watching"
    #: A signal stopped the reactor: any further one forces the stop, until
    #: the process exits.
    FORCING = "forcing"
    #: The drain ended with no signal (the service was stopped): the
    #: signals are handled as they would be without us.
    RESTORED = "restored"


class StopSignals:
    """
    The one owner of SIGINT and SIGTERM in a process that drains.

    From L{catch} on, a stop signal is never a L{KeyboardInterrupt} and never
    lost, even during start-up.  The first one goes to the reactor's own
    handler, which stops the reactor and sets the exit status, and starts
    the drain, whose cap counts from the signal.  Any later one forces the
    stop.  When a drain ends that no signal started, the signals are given
    back.

    The handler itself only counts the signal and hands the work to the
    reactor with C{callFromThread}, as Twisted's own handlers do: it runs
    between two bytecodes of whatever the reactor was doing.

    SIGINT is taken only over Python's default handler, as Twisted does: an
    ignored SIGINT (a shell's background job) stays ignored, a debugger's
    stays the debugger's.

    The first signal also arms the L{CapWatchdog}, if there is one: should
    the application keep the reactor's thread from the reactor past the
    cap, the watchdog ends the process then.
    """

    def __init__(
        self,
        reactor: SignalReactor,
        drain: Drain,
        signals: SignalModule = signal,
        watchdog: CapWatchdog | None = None,
        joinStartedDrain: bool = False,
    ) -> None:
        """
        @param reactor: the reactor that a signal stops.
        @param drain: the drain that a signal starts, or forces.
        @param signals: the L{signal} module, or a stand-in in tests.
        @param watchdog: what holds the cap if the reactor cannot, started
            by L{catch} and armed by the first signal.
        @param joinStartedDrain: whether a first signal that finds the drain
            started already (by a worker's master) is the same stop rather
            than a second one: a signal to the process group reaches the
            master and its workers alike.
        """
        self._reactor = reactor
        self._joinStartedDrain = joinStartedDrain
        self._drain = drain
        self._signals = signals
        self._watchdog = watchdog
        self._phase = _Phase.STARTING
        #: What would handle each signal we own if we did not.
        self._saved: dict[int, SignalHandler] = {}
        self._arrivals = itertools.count()
        # One bound method, so that it is recognisable when handed back.
        self._handler = self._signalled

    @property
    def phase(self) -> str:
        """
        Where it stands: C{"starting"}, C{"watching"}, C{"forcing"} or
        C{"restored"}.
        """
        return self._phase.value

    def catch(self) -> None:
        """
        Catch SIGINT and SIGTERM from now on.
        """
        for signum in (signal.SIGINT, signal.SIGTERM):
            if signum == signal.SIGINT:
                if self._signals.getsignal(signum) != signal.default_int_handler:
                    continue
            self._saved[signum] = self._signals.signal(signum, self._handler)
        self._drain.whenDone().addCallback(self._drainDone)
        if self._watchdog is not None:
            self._watchdog.start()

    def watch(self) -> None:
        """
        Stand in front of the reactor's own handlers once it runs: call it
        as the service starts.  L{catch} uses nothing of the reactor, so
        that a service can be made for one that never runs.
        """
        self._reactor.callWhenRunning(self._reactorRunning)

    def _reactorRunning(self) -> None:
        """
        The reactor has installed its handlers as it started (over our
        SIGTERM; not over our SIGINT, which is not Python's default): stand
        in front of them again, and keep them to give back.
        """
        if self._phase is _Phase.RESTORED:
            return
        reactorHandlers = self._reactorHandlers()
        for signum in self._saved:
            self._signals.signal(signum, self._handler)
            self._saved[signum] = reactorHandlers[signum]
        if self._phase is _Phase.STARTING:
            self._phase = _Phase.WATCHING

    def _reactorHandlers(self) -> dict[int, Callable[[int, FrameType | None], None]]:
        return {
            signal.SIGINT: self._reactor.sigInt,
            signal.SIGTERM: self._reactor.sigTerm,
        }

    def _signalled(self, signum: int, frame: FrameType | None) -> None:
        # Decided with one call, not a flag tested then set: a second signal
        # can run this handler again between any two bytecodes of the first.
        first = next(self._arrivals) == 0
        if first and not self._drain.draining:
            at = self._drain.clock.seconds()
            if self._watchdog is not None:
                policy = self._drain.policy
                self._watchdog.arm(signum, at + policy.shutdownTimeout, policy.cutLead)
            self._reactor.callFromThread(self._stop, signum, at)
        elif first and self._joinStartedDrain:
            self._reactor.callFromThread(self._joined, signum)
        else:
            self._reactor.callFromThread(self._force, signum)

    def _stop(self, signum: int, at: float) -> None:
        """
        The first signal: the reactor's handler stops the reactor (on its
        next turn) and records the exit status; the drain starts now, with
        its cap counted from C{at}, when the signal arrived.

        A worker's master may have started the drain since the signal
        arrived (its command was read first, on the same turn): then the
        signal joins it, and the reactor, stopped already, is left alone.
        """
        if self._joinStartedDrain and self._drain.draining:
            self._joined(signum)
            return
        if self._phase is not _Phase.RESTORED:
            self._phase = _Phase.FORCING
        self._reactorHandlers()[signum](signum, None)
        name = signal.Signals(signum).name
        self._drain.start(name, name, startedAt=at)

    def _joined(self, signum: int) -> None:
        """
        The first signal, when the drain had started already: the same stop.
        """
        self._phase = _Phase.FORCING
        self._drain.log.info(
            "{signal} joins the drain already under way",
            signal=signal.Signals(signum).name,
        )

    def _force(self, signum: int) -> None:
        """
        A signal while the drain runs: stop now.
        """
        name = signal.Signals(signum).name
        self._drain.forceStop(f"second signal, {name}", name)

    def _drainDone(self, _: object) -> None:
        """
        Give the signals back, unless one stopped the reactor: the process
        is then on its way out, and until it exits a further signal must
        neither stop the reactor again (C{ReactorNotRunning}, and a new exit
        status) nor raise L{KeyboardInterrupt}.
        """
        if self._phase in (_Phase.STARTING, _Phase.WATCHING):
            self._phase = _Phase.RESTORED
            for signum, handler in self._saved.items():
                self._signals.signal(signum, handler)
