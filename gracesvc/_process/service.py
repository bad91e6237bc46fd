# -*- test-case-name: tests.unit.process.test_service -*-
"""
The service, which listens on every endpoint and drains on shutdown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from twisted.application.service import IService, MultiService, Service
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.endpoints import AdoptedStreamServerEndpoint
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.logger import Logger
from twisted.python.failure import Failure

from gracesvc._core.drain import Drain
from gracesvc._pins.twisted import listeningSpec
from gracesvc._process.accepting import AcceptGate, AcceptTally, guardAccepts
from gracesvc._process.backlog import Backlog, effectiveBacklog
from gracesvc._process.listeners import DrainedPort
from gracesvc._process.signals import StopSignals
from gracesvc._protocols.limits import ConnectionLimit, LimitedFactory


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

    Every listener keeps accepting through a shortage of file descriptors
    (see L{gracesvc._process.accepting}): its accept errors pause it
    briefly and are logged at most once a second, counted in
    L{acceptTally}.  Its log line says the backlog the kernel gave it.

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
        backlog: Backlog | None = None,
        connectionLimit: ConnectionLimit | None = None,
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
        @param backlog: the backlog for the sockets adopted from a service
            manager (L{AdoptedStreamServerEndpoint}, C{systemd:}), if any
            (see L{Backlog.adopt}); the others were made with theirs.
        @param connectionLimit: the most connections C{factory}'s
            listeners serve at once (see L{LimitedFactory}), if any.
        """
        super().__init__()
        self.factory = factory
        self.endpoints = list(endpoints)
        self.drain = drain
        self.reactor = reactor
        self.auxiliaryEndpoints = list(auxiliaryEndpoints)
        self.backlog = backlog
        self.connectionLimit = connectionLimit
        self._gates: list[AcceptGate] = []
        if connectionLimit is not None:
            connectionLimit.onSaturated = self._limitSaturated
        #: the connections its listeners turned away at the accept.
        self.acceptTally = AcceptTally()
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
        served = self.factory
        if self.connectionLimit is not None:
            served = LimitedFactory(served, self.connectionLimit)
        listeners = [(d, e, served, True) for d, e in self.endpoints]
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
            guard = guardAccepts(port, self.drain.clock, description, self.acceptTally)
            if drained and guard is not None:
                self._gates.append(guard.gate)
            sock = getattr(port, "socket", None)
            spec = listeningSpec(endpoint)
            if isinstance(endpoint, AdoptedStreamServerEndpoint):
                if self.backlog is not None and sock is not None:
                    self.backlog.adopt(sock)
            asked = spec[2] if spec is not None and spec[0] == "unix" else None
            backlog = effectiveBacklog(sock, asked if isinstance(asked, int) else None)
            self.log.info(
                "gracesvc listening on {description} ({address}), backlog {backlog}",
                description=description,
                address=str(port.getHost()),
                backlog="unknown" if backlog is None else backlog,
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

    def _limitSaturated(self, saturated: bool) -> None:
        """
        The connection limit is answering as many connections as it may:
        the drained listeners stop accepting until one of those is done.
        """
        for gate in self._gates:
            if saturated:
                gate.close("connection limit")
            else:
                gate.open("connection limit")

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


class TwistdService(GracefulService):
    """
    L{GracefulService} as twistd runs it: an endpoint that cannot listen is
    one log line and exit status 1, not a traceback; the stop signals,
    caught since the service was made, are watched from when it starts; and
    once the reactor runs, C{whenRunning} is called (twistd's gracesvc
    freezes the start-up heap then, see
    L{gracesvc._process.effects.ProcessEffects.startupDone}).

    With a C{startup} (an ASGI application's lifespan startup), the ports
    listen as before (while the process may still be root) but accept
    nothing until the startup, run once the reactor runs, has succeeded;
    L{whenReady} fires then (a worker of C{--workers} tells its master it
    is ready).  A startup that fails is one log line, and C{startupFailed}
    is called (it ends the process with status 1).
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
        startup: Callable[[], Deferred[None]] | None = None,
        startupFailed: Callable[[], object] | None = None,
        backlog: Backlog | None = None,
        connectionLimit: ConnectionLimit | None = None,
    ) -> None:
        """
        @param stopSignals: the signals, caught already.
        @param whenRunning: called once the reactor runs, start-up done.
        @param startup: what must succeed, once the reactor runs, before
            the ports accept.
        @param startupFailed: called when C{startup} failed, after its log
            line.
        @see: L{GracefulService.__init__} for the rest.
        """
        super().__init__(
            factory,
            endpoints,
            drain,
            reactor,
            auxiliaryEndpoints,
            backlog,
            connectionLimit,
        )
        self.stopSignals = stopSignals
        self.whenRunning = whenRunning
        self.startup = startup
        self.startupFailed = startupFailed
        #: whether the startup is over and the ports accept.
        self.ready = False
        self._readyWaiters: list[Deferred[None]] = []

    def whenReady(self) -> Deferred[None]:
        """
        @return: a Deferred that fires once the reactor runs and the
            startup, if any, has succeeded: the ports accept.
        """
        d: Deferred[None] = Deferred()
        if self.ready:
            d.callback(None)
        else:
            self._readyWaiters.append(d)
        return d

    def _listenOnAll(self) -> None:
        try:
            super()._listenOnAll()
        except ListenFailed as e:
            self.log.critical("gracesvc: {error}", error=str(e))
            raise SystemExit(1) from None
        if self.startup is not None and not self.ready:
            for port in self.ports:
                _accepting(port, False)

    def startService(self) -> None:
        super().startService()
        self.stopSignals.watch()
        self.reactor.callWhenRunning(self._running)

    def _running(self) -> None:
        if self.startup is None:
            self._ready()
            return
        self.startup().addCallbacks(lambda _: self._ready(), self._startupFailed)

    def _ready(self) -> None:
        if self.startup is not None and self.drain.draining:
            # Stopped before it started up: nothing to accept.
            return
        self.ready = True
        if self.startup is not None:
            for port in self.ports:
                _accepting(port, True)
        if self.whenRunning is not None:
            self.whenRunning()
        waiters, self._readyWaiters = self._readyWaiters, []
        for d in waiters:
            d.callback(None)

    def _startupFailed(self, failure: Failure) -> None:
        self.log.critical("gracesvc: {error}", error=failure.getErrorMessage())
        if self.startupFailed is not None:
            self.startupFailed()


def _accepting(port: IListeningPort, accepting: bool) -> None:
    """
    Have C{port} accept connections or not (they wait in its kernel accept
    queue meanwhile): a Twisted port is a file descriptor the reactor
    reads, or not.
    """
    switch = getattr(port, "startReading" if accepting else "stopReading", None)
    if switch is not None:
        switch()
