# -*- test-case-name: tests.unit.test_wiring -*-
"""
From what C{twistd gracesvc} was asked to serve
(L{gracesvc._config.ServeConfig}) to the service twistd runs, one builder
for each way of serving:

  - L{serveOne}: one process serves the app on its listeners;
  - L{serveWorker}: a worker of C{--workers} serves the app on the sockets
    its master made, and obeys its master;
  - L{serveMaster}: the master of C{--workers} makes the sockets, runs the
    workers and serves only the tree's metrics.

Every app, the built-in one included, is served behind gracesvc's
operational routes (L{gracesvc._apps.compose.withOperationalRoutes}).  Each
builder catches SIGINT and SIGTERM from then on: twistd may take a while
(and fork) before the reactor runs, and a signal meanwhile must stop it
cleanly.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IReactorThreads,
    IStreamServerEndpoint,
)
from twisted.logger import Logger, globalLogPublisher
from twisted.python.failure import Failure
from twisted.web.resource import IResource
from twisted.web.server import Site

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.coroutines import runKleinCoroutinesOnAsyncio
from gracesvc._apps.demo import GraceApp
from gracesvc._apps.load import AppFactory, AppLoadError
from gracesvc._apps.threads import boundReactorThreads
from gracesvc._apps.wsgi import wsgiResource
from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.h2stream import StreamingRequest
from gracesvc._asgi.http1 import ASGIHTTPFactory
from gracesvc._asgi.lifespan import Lifespan
from gracesvc._asgi.resource import ASGIResource
from gracesvc._asgi.upgrade import serveWebSockets
from gracesvc._config import (
    App,
    ASGIAppConfig,
    DemoApp,
    ServeConfig,
    WorkersConfig,
    WSGIApp,
)
from gracesvc._core.drain import Drain
from gracesvc._core.policy import DrainPolicy
from gracesvc._metrics.collectors import (
    ClientCollector,
    H2Collector,
    WorkerCollector,
)
from gracesvc._metrics.registry import Metrics, MetricsResource
from gracesvc._metrics.tree import TreeMetrics, TreeMetricsResource
from gracesvc._pins.twisted import asyncioLoopOf
from gracesvc._process.accepting import (
    defaultMaxConnections,
    watchReservedDescriptor,
)
from gracesvc._process.effects import ProcessEffects, RealProcess, exitAtOnce
from gracesvc._process.service import ListenFailed, TwistdService
from gracesvc._process.signals import StopSignals
from gracesvc._protocols.limits import ConnectionLimit
from gracesvc._protocols.site import DrainingSite
from gracesvc._workers.command import (
    ACCEPT_LIMIT,
    WorkerSpec,
    twistdArguments,
    workerCommand,
)
from gracesvc._workers.master import Master
from gracesvc._workers.sockets import SharedSocket, openSharedSockets
from gracesvc._workers.systemd import systemdNotifier
from gracesvc._workers.worker import WorkerControl, workerLogLabeller

log = Logger()


def serve(
    config: ServeConfig, reactor: Any, process: ProcessEffects | None = None
) -> IService:
    """
    @param reactor: the reactor C{config}'s endpoints were made for.
    @param process: the process it serves in: this one when L{None}.
    @return: the service C{config} asks for.
    """
    if process is None:
        process = RealProcess()
    if config.workers is not None:
        return serveMaster(config, config.workers, reactor, process)
    if config.worker is not None:
        return serveWorker(config, config.worker, reactor, process)
    return serveOne(config, reactor, process)


def serveOne(
    config: ServeConfig, reactor: Any, process: ProcessEffects
) -> TwistdService:
    """
    @return: the service of one process serving the app.
    """
    drain = Drain(reactor, policy=config.policy)
    metrics = Metrics(drain)
    routeMetrics = metrics if config.metricsEndpoint is None else None
    return _serveSite(config, reactor, process, drain, metrics, routeMetrics)


def serveWorker(
    config: ServeConfig, worker: WorkerSpec, reactor: Any, process: ProcessEffects
) -> TwistdService:
    """
    @return: the service of a worker of C{--workers}, serving the app on
        the sockets of its master's that C{worker} names.
    """
    globalLogPublisher.addObserver(workerLogLabeller(worker.generation, worker.slot))
    drain = Drain(reactor, policy=config.policy)
    metrics = Metrics(drain)
    metrics.registry.register(WorkerCollector(worker.generation, worker.slot))
    # The master serves the tree's metrics on its --metrics-listen.
    routeMetrics = metrics if worker.metricsRoute else None
    service = _serveSite(
        config, reactor, process, drain, metrics, routeMetrics, joinStartedDrain=True
    )
    # SIGHUP reloads the master; sent to the process group (a closing
    # terminal), it must not kill the workers, whose default it is.
    process.signals.signal(signal.SIGHUP, signal.SIG_IGN)
    WorkerControl(
        reactor,
        drain,
        service.ports,
        worker.generation,
        worker.slot,
        worker.acceptLimit,
        process,
        exposition=metrics.exposition,
        whenReady=service.whenReady,
    ).setServiceParent(service)
    return service


def serveMaster(
    config: ServeConfig, workers: WorkersConfig, reactor: Any, process: ProcessEffects
) -> Master:
    """
    @return: the master of C{--workers}: it makes the sockets (and serves
        the tree's metrics on C{--metrics-listen}) while the process may
        still be root, then runs the workers.
    """
    # The master's drain has no cut of its own and no drain delay: each
    # worker has them, from the options it is given.
    policy = DrainPolicy(shutdownTimeout=config.policy.shutdownTimeout)
    drain = Drain(reactor, policy=policy)
    # Its lines count the workers as "connections": say whose drain it is.
    drain.log = Logger(namespace="gracesvc master drain")

    def openSockets() -> list[SharedSocket]:
        try:
            sockets = openSharedSockets(
                workers.sockets,
                workers.count,
                workers.reusePort,
                adoptedBacklog=config.limits.backlog,
            )
        except ListenFailed as e:
            _cannotStart(e)
        if config.metricsEndpoint is not None:
            try:
                _serveTreeMetrics(master, reactor, *config.metricsEndpoint)
            except ListenFailed as e:
                for shared in sockets:
                    shared.stopListening()
                _cannotStart(e)
        return sockets

    config.limits.backlog.warnIfClamped()
    stopSignals = StopSignals(reactor, drain, process.signals)
    stopSignals.catch()
    master = Master(
        reactor,
        drain,
        openSockets,
        workerCommand(
            workers.arguments,
            metricsRoute=config.metricsEndpoint is None,
            twistd=twistdArguments(sys.argv[1:]),
            acceptLimit=0 if workers.reusePort else ACCEPT_LIMIT,
        ),
        workers.count,
        process,
        bootTimeout=workers.bootTimeout,
        workerTimeout=workers.workerTimeout,
        notify=systemdNotifier(os.environ),
    )
    reactor.callWhenRunning(stopSignals.watch)
    return master


def _serveSite(
    config: ServeConfig,
    reactor: Any,
    process: ProcessEffects,
    drain: Drain,
    metrics: Metrics,
    routeMetrics: Metrics | None,
    joinStartedDrain: bool = False,
) -> TwistdService:
    """
    @param routeMetrics: the metrics to serve on C{/metrics} of the
        listeners, if they are served there.
    @param joinStartedDrain: whether a stop signal that finds the drain
        started (by a worker's master) joins it.
    @return: the service of a process that serves the app.
    """
    if IReactorThreads.providedBy(reactor):
        boundReactorThreads(reactor, drain)
    runKleinCoroutinesOnAsyncio(reactor)
    auxiliary = []
    if config.metricsEndpoint is not None:
        description, endpoint = config.metricsEndpoint
        auxiliary.append(
            (description, endpoint, _metricsSite(MetricsResource(metrics), reactor))
        )
    assert config.app is not None
    lifespan: Lifespan | None = None
    asgiApp: ASGIApp | None = None
    if isinstance(config.app, ASGIAppConfig):
        lifespan, asgiApp, appResource = _serveASGI(config, config.app, reactor, drain)
    else:
        appResource = _appResource(config.app, reactor, drain)
    root = withOperationalRoutes(
        appResource,
        drain,
        routeMetrics,
        ready=None if lifespan is None else lambda: lifespan.ready,
    )
    # An ASGI application's HTTP/2 requests are dispatched at their HEADERS,
    # their bodies streamed (see gracesvc._asgi.h2stream).
    siteOptions: dict[str, Any] = (
        {} if asgiApp is None else {"requestFactory": StreamingRequest}
    )
    site = DrainingSite(
        root,
        drain,
        metrics,
        webSocketPolicy=config.webSocketPolicy,
        reactor=reactor,
        http2=True,
        h2c=config.h2c,
        accessLog=config.accessLog,
        timeouts=config.limits.timeouts,
        **siteOptions,
    )
    metrics.registry.register(H2Collector(drain, site.h2Tally))
    served: IProtocolFactory = site
    if asgiApp is not None and lifespan is not None:
        served = _asgiHTTP1(
            config, asgiApp, lifespan, drain, metrics, routeMetrics, site
        )
    limit = _connectionLimit(config, reactor, process, drain)
    stopSignals = StopSignals(
        reactor,
        drain,
        process.signals,
        watchdog=process.capWatchdog(reactor),
        joinStartedDrain=joinStartedDrain,
    )
    stopSignals.catch()
    # A worker's sockets are its master's, backlog and all.
    backlog = None if config.worker is not None else config.limits.backlog
    if backlog is not None:
        backlog.warnIfClamped()
    watchReservedDescriptor(reactor)
    service = TwistdService(
        served,
        config.endpoints,
        drain,
        reactor,
        stopSignals,
        auxiliaryEndpoints=auxiliary,
        whenRunning=process.startupDone,
        startup=None if lifespan is None else lifespan.startup,
        startupFailed=lambda: exitAtOnce(reactor, process, 1),
        backlog=backlog,
        connectionLimit=limit,
    )
    metrics.registry.register(
        ClientCollector(site.clientTally, limit, service.acceptTally)
    )
    return service


# ASGI


def _serveASGI(
    config: ServeConfig, asgi: ASGIAppConfig, reactor: Any, drain: Drain
) -> tuple[Lifespan, ASGIApp, IResource]:
    """
    Serve an ASGI application on the asyncio reactor's loop, its lifespan
    and its tasks on the drain's timeline (see L{gracesvc._asgi}):

      - the lifespan starts up before the ports accept (the service's
        C{startup}), is told when the drain goes away (the shutdown notice,
        to an application that asked for it) and shuts down in the cleanup
        phase;
      - from the signal on, the drain waits for the application's tasks
        too: what runs after a response (background tasks) is not lost;
      - once the drain is done, before the reactor stops, the tasks left
        are cancelled and awaited, so that none is destroyed pending.

    @return: its lifespan, the application, and the resource that serves
        it through Twisted's C{Request} (HTTP/2's streams).
    """
    app = ASGIApp(asgi.application, asyncioLoopOf(reactor))
    lifespan = Lifespan(app, asgi.lifespan)
    drain.addHook(
        "draining",
        lambda: app.trackWith(drain.track),
        name="wait for the ASGI application's tasks",
    )

    def goingAway() -> None:
        deadline = drain.deadline
        lifespan.goingAway(
            0.0 if deadline is None else deadline - drain.clock.seconds()
        )

    drain.addHook("goingAway", goingAway, name="ASGI shutdown notice")
    drain.addHook("cleanup", lifespan.shutdown, name="ASGI lifespan shutdown")

    def stopTasks() -> Deferred[None]:
        def done(_: object) -> Deferred[None]:
            capAt = drain.capAt
            left = 0.0 if capAt is None else capAt - drain.clock.seconds()
            return app.stopTasks(drain.clock, left)

        return drain.whenDone().addCallback(done)

    reactor.addSystemEventTrigger("before", "shutdown", stopTasks)
    resource = ASGIResource(app, drain, lifespan, config.webSocketPolicy)
    return lifespan, app, resource


def _asgiHTTP1(
    config: ServeConfig,
    app: ASGIApp,
    lifespan: Lifespan,
    drain: Drain,
    metrics: Metrics,
    routeMetrics: Metrics | None,
    site: DrainingSite,
) -> ASGIHTTPFactory:
    """
    @return: the factory of the ASGI path's HTTP/1.1 connections (see
        L{gracesvc._asgi.http1}); those whose client speaks HTTP/2 (ALPN,
        or h2c's preface) switch to C{site}'s HTTP/2.
    """
    return ASGIHTTPFactory(
        app,
        drain,
        metrics=metrics,
        metricsPage=None if routeMetrics is None else routeMetrics.exposition,
        ready=lambda: lifespan.ready,
        webSockets=serveWebSockets(app, drain, config.webSocketPolicy),
        h2=site,
        h2c=config.h2c,
        accessLog=config.accessLog,
        headerTimeout=config.limits.timeouts.header,
        keepAliveTimeout=config.limits.timeouts.keepAlive,
        writeTimeout=config.limits.timeouts.write,
        clientTally=site.clientTally,
    )


def _connectionLimit(
    config: ServeConfig, reactor: Any, process: ProcessEffects, drain: Drain
) -> ConnectionLimit | None:
    """
    @return: the connection limit of the listeners (C{--max-connections},
        by default from the limit on open descriptors, raised as far as it
        goes first), counting the connections of C{drain}; L{None} for
        none.
    """
    openFiles = process.openFilesLimit(reactor)
    maximum = config.limits.maxConnections
    if maximum is None:
        maximum = defaultMaxConnections(openFiles)
    if not maximum:
        return None
    limit = ConnectionLimit(
        maximum,
        lambda: drain.connections,
        reactor,
        # Descriptors beyond the limit, less some for the rest of the process.
        spare=openFiles - maximum - 64,
    )
    log.info(
        "gracesvc serving at most {maximum} connections at once "
        "(open files limit {openFiles})",
        maximum=maximum,
        openFiles=openFiles,
    )
    return limit


def _appResource(app: App, reactor: Any, drain: Drain) -> IResource:
    """
    @return: the resource of C{app}, made for C{drain}.
    """
    if isinstance(app, DemoApp):
        return GraceApp(reactor, drain, app.pingDelay, tick=app.tick).resource()
    if isinstance(app, WSGIApp):
        return wsgiResource(app.application, drain, reactor, app.threads)
    assert not isinstance(app, ASGIAppConfig)
    if not isinstance(app.resource, AppFactory):
        return app.resource
    try:
        return app.resource(drain)
    except AppLoadError as e:
        # As a usage error would be: one line, exit status 1, before
        # anything listens.
        sys.stderr.write(f"twistd gracesvc: error: {e}\n")
        raise SystemExit(1) from None


def _metricsSite(resource: IResource, reactor: Any) -> Site:
    site = Site(resource, reactor=reactor)
    site.noisy = False
    return site


def _serveTreeMetrics(
    tree: Master, reactor: Any, description: str, endpoint: IStreamServerEndpoint
) -> None:
    """
    Serve the metrics of C{tree}, the master and all its workers (see
    L{gracesvc._metrics.tree}), on C{endpoint} until the process exits.

    @raise ListenFailed: it cannot listen.
    """
    site = _metricsSite(TreeMetricsResource(TreeMetrics(tree, reactor)), reactor)
    failures: list[Failure] = []

    def listening(port: IListeningPort) -> None:
        log.info(
            "gracesvc master serving metrics on {description} ({address})",
            description=description,
            address=str(port.getHost()),
        )

    endpoint.listen(site).addCallbacks(listening, failures.append)
    if failures:
        raise ListenFailed(
            f"cannot listen on {description}: {failures[0].getErrorMessage()}"
        )


def _cannotStart(error: ListenFailed) -> NoReturn:
    """
    As twistd's gracesvc says it when it cannot listen: one log line, exit
    status 1.
    """
    log.critical("gracesvc: {error}", error=str(error))
    raise SystemExit(1) from None
