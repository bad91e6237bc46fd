"""
From the checked configuration to the services (L{gracesvc._wiring}): one
builder for one process, one for a worker, one for the master.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
from dataclasses import replace
from typing import Any, cast

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IListeningPort,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.logger import ILogObserver, Logger, LogPublisher
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Site
from zope.interface import implementer

from gracesvc import _wiring, tap
from gracesvc._apps.compose import OperationalRoot
from gracesvc._apps.load import AppFactory
from gracesvc._config import ResourceApp, ServeConfig
from gracesvc._metrics.tree import TreeMetricsResource
from gracesvc._process.backlog import Backlog
from gracesvc._process.service import TwistdService
from gracesvc._protocols.site import DrainingSite
from gracesvc._wiring import serve, serveMaster
from gracesvc._workers.command import AdoptedListener, WorkerSpec
from gracesvc._workers.master import Master
from gracesvc._workers.sockets import SocketSpec
from gracesvc._workers.worker import WorkerControl
from gracesvc.testing import Wire, get, samples
from tests.support.process import FakeProcess
from tests.support.service import FakeReactor, FakeSignals


def configured(reactor: Any, *argv: str) -> ServeConfig:
    options = tap.Options(reactor=reactor)
    options.parseOptions(list(argv))
    return options.config


class ServeOneTests(SynchronousTestCase):
    def serve(self, *argv: str) -> TwistdService:
        reactor = FakeReactor()
        service = serve(configured(reactor, *argv), reactor, FakeProcess(FakeSignals()))
        assert isinstance(service, TwistdService)
        return service

    def site(self, service: TwistdService) -> DrainingSite:
        site = service.factory
        assert isinstance(site, DrainingSite)
        return site

    def test_demoBehindTheOperationalRoutes(self) -> None:
        """
        The built-in app is served as any C{--app} is: behind gracesvc's
        C{/healthz}, C{/readyz} and C{/metrics}.
        """
        service = self.serve("--ping-delay", "0")
        root = self.site(service).resource
        self.assertIsInstance(root, OperationalRoot)
        client = Wire(resource=root).connect()
        client.send(get("/ping") + get("/readyz") + get("/metrics"))
        [ping, ready, metrics] = client.responses
        self.assertEqual((ping.code, ping.body), (200, b'{"message": "pong"}'))
        self.assertEqual(ready.code, 200)
        self.assertIn(("gracesvc_draining", ()), samples(metrics.body))

    def test_metricsOnTheirOwnEndpointOnly(self) -> None:
        """
        With C{--metrics-listen}, C{/metrics} of the main listeners is the
        app's (the built-in app has none).
        """
        service = self.serve("--metrics-listen", "tcp:9100")
        client = Wire(resource=self.site(service).resource).connect()
        client.send(get("/metrics"))
        self.assertEqual(client.responses[0].code, 404)
        [(description, _, site)] = service.auxiliaryEndpoints
        self.assertEqual(description, "tcp:9100")
        self.assertFalse(cast(Site, site).noisy)

    def test_theProcessIsGiven(self) -> None:
        """
        The cap's watchdog and the start-up's end are the process's: the
        real one arms a watchdog and freezes the heap, a fake does neither.
        """
        reactor = FakeReactor()
        process = FakeProcess(FakeSignals())
        service = serve(configured(reactor), reactor, process)
        assert isinstance(service, TwistdService)
        self.assertIsNone(service.stopSignals._watchdog)
        self.assertEqual(service.whenRunning, process.startupDone)

    def test_appFactoryThatFails(self) -> None:
        """
        An C{--app} factory that takes the drain is called as the service
        is made; one that makes no app stops the start as a usage error
        would: one line, exit status 1.
        """
        reactor = FakeReactor()
        config = configured(reactor)
        factory = AppFactory(lambda drain: None, "--app 'broken:make'")
        stderr = io.StringIO()
        self.patch(sys, "stderr", stderr)
        with self.assertRaises(SystemExit) as caught:
            serve(
                replace(config, app=ResourceApp("x:y", factory)),
                reactor,
                FakeProcess(FakeSignals()),
            )
        self.assertEqual(caught.exception.code, 1)
        [line] = stderr.getvalue().splitlines()
        self.assertTrue(line.startswith("twistd gracesvc: error: --app 'broken:make'"))


class ClientLimitsTests(SynchronousTestCase):
    def serve(self, *argv: str, openFiles: int = 1024) -> TwistdService:
        reactor = FakeReactor()
        process = FakeProcess(FakeSignals())
        process.openFiles = openFiles
        service = serve(configured(reactor, *argv), reactor, process)
        assert isinstance(service, TwistdService)
        return service

    def test_connectionLimitFromTheOpenFilesLimit(self) -> None:
        """
        By default the connection limit is the open files limit (raised as
        far as it goes) less a fifth, and the metrics say so.
        """
        service = self.serve(openFiles=1024)
        assert service.connectionLimit is not None
        self.assertEqual(service.connectionLimit.maximum, 820)
        limit = self.serve("--max-connections", "7").connectionLimit
        self.assertEqual(limit.maximum if limit else None, 7)
        self.assertIsNone(self.serve("--max-connections", "0").connectionLimit)

    def test_timeoutsAndMetrics(self) -> None:
        service = self.serve("--header-timeout", "3", "--keep-alive-timeout", "620")
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertEqual((site.timeouts.header, site.timeOut), (3.0, 620.0))
        client = Wire(resource=site.resource).connect()
        client.send(get("/metrics"))
        scraped = samples(client.responses[0].body)
        self.assertEqual(scraped[("gracesvc_connection_limit", ())], 820)
        self.assertEqual(
            scraped[("gracesvc_client_timeouts_total", (("kind", "header"),))], 0
        )
        self.assertEqual(
            scraped[("gracesvc_accept_errors_total", (("error", "EMFILE"),))], 0
        )

    def test_backlogForAdoptedSockets(self) -> None:
        """
        One process applies the backlog to the sockets it adopts from a
        service manager; a worker's sockets are its master's, backlog and
        all.
        """
        self.assertEqual(self.serve("--backlog", "9").backlog, Backlog(9, given=True))


class ServeWorkerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.signals = FakeSignals()
        self.signals.handlers[signal.SIGHUP] = signal.SIG_DFL
        spec = WorkerSpec(
            generation=2,
            slot=1,
            acceptLimit=1,
            metricsRoute=False,
            listeners=(AdoptedListener("tcp:8080", 5, socket.AF_INET, False),),
        )
        self.process = FakeProcess(self.signals)
        self.publisher = LogPublisher()
        self.patch(_wiring, "globalLogPublisher", self.publisher)
        self.service = serve(
            configured(self.reactor, "--worker-spec", spec.toJSON()),
            self.reactor,
            self.process,
        )

    def test_obeysItsMaster(self) -> None:
        """
        A worker serves on the sockets it adopts, obeys its master, and
        ignores SIGHUP (which reloads the master).
        """
        assert isinstance(self.service, TwistdService)
        [control] = list(self.service)
        assert isinstance(control, WorkerControl)
        self.assertEqual(
            (control.generation, control.slot, control.acceptLimit), (2, 1, 1)
        )
        self.assertIs(control.process, self.process)
        self.assertIs(control.ports, self.service.ports)
        self.assertEqual([d for d, _ in self.service.endpoints], ["tcp:8080"])
        self.assertEqual(self.signals.handlers[signal.SIGHUP], signal.SIG_IGN)
        self.assertTrue(self.service.stopSignals._joinStartedDrain)
        # Its sockets are its master's, backlog and all.
        self.assertIsNone(self.service.backlog)

    def test_metricsForTheMaster(self) -> None:
        """
        Its metrics name it, and go to the master's scrape, not to
        C{/metrics} of the listeners, when the master serves the tree's.
        """
        assert isinstance(self.service, TwistdService)
        [control] = list(self.service)
        assert isinstance(control, WorkerControl)
        assert control.exposition is not None
        scraped = samples(control.exposition())
        [info] = [labels for name, labels in scraped if name == "gracesvc_worker_info"]
        self.assertEqual(dict(info)["generation"], "2")
        site = self.service.factory
        assert isinstance(site, DrainingSite)
        client = Wire(resource=site.resource).connect()
        client.send(get("/metrics"))
        self.assertEqual(client.responses[0].code, 404)

    def test_logLinesNameTheWorker(self) -> None:
        events: list[dict[str, Any]] = []
        self.publisher.addObserver(cast(ILogObserver, events.append))
        self.publisher({"log_format": "hello", "log_system": "-"})
        [event] = events
        self.assertEqual((event["worker"], event["generation"]), (1, 2))


@implementer(IStreamServerEndpoint)
class RecordingEndpoint:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.factories: list[IProtocolFactory] = []

    def listen(self, factory: IProtocolFactory) -> Deferred[IListeningPort]:
        self.factories.append(factory)
        if self.error is not None:
            return fail(self.error)
        return succeed(cast(IListeningPort, Port()))


class Port:
    def getHost(self) -> str:
        return "127.0.0.1:9100"


class ServeMasterTests(SynchronousTestCase):
    def master(self, metrics: RecordingEndpoint | None = None) -> Master:
        reactor = FakeReactor()
        config = configured(reactor, "--workers", "2", "--listen", "tcp:0")
        assert config.workers is not None
        self.inheritedFD = socket.socket().detach()
        workers = replace(
            config.workers,
            sockets=(SocketSpec("inherited", ("fd", self.inheritedFD, 2), False),),
        )
        config = replace(
            config,
            workers=workers,
            metricsEndpoint=None if metrics is None else ("tcp:9100", metrics),
        )
        master = serveMaster(config, workers, reactor, FakeProcess(FakeSignals()))
        self.addCleanup(self.closeSockets, master)
        return master

    def closeSockets(self, master: Master) -> None:
        for shared in master.sockets:
            shared.stopListening()

    def test_treeMetricsServedWithTheSockets(self) -> None:
        """
        With C{--metrics-listen} the master serves the tree's metrics,
        listening as it makes the sockets, while the process may still be
        root.
        """
        endpoint = RecordingEndpoint()
        master = self.master(endpoint)
        self.assertEqual(endpoint.factories, [])
        master.privilegedStartService()
        [site] = endpoint.factories
        assert isinstance(site, Site)
        self.assertIsInstance(site.resource, TreeMetricsResource)
        self.assertEqual([s.description for s in master.sockets], ["inherited"])

    def test_metricsThatCannotListen(self) -> None:
        """
        A metrics endpoint that cannot listen is one critical line and exit
        status 1, the sockets made closed.
        """
        error = CannotListenError("", 9100, OSError(98, "Address already in use"))
        master = self.master(RecordingEndpoint(error))
        events: list[dict[str, Any]] = []
        self.patch(_wiring, "log", Logger(observer=cast(ILogObserver, events.append)))
        with self.assertRaises(SystemExit) as caught:
            master.privilegedStartService()
        self.assertEqual(caught.exception.code, 1)
        [critical] = [e for e in events if e["log_level"].name == "critical"]
        self.assertIn("cannot listen on tcp:9100: ", critical["error"])
        self.assertIn("Address already in use", critical["error"])
        self.assertEqual(master.sockets, [])
        with self.assertRaises(OSError):
            os.fstat(self.inheritedFD)

    def test_masterDrainHoldsOnlyTheCap(self) -> None:
        """
        The master's drain has the cap and nothing else of the policy: the
        workers keep their drain delay and cut.
        """
        reactor = FakeReactor()
        config = configured(
            reactor, "--workers", "2", "--shutdown-timeout", "7", "--drain-delay", "2"
        )
        assert config.workers is not None
        master = serveMaster(
            config, config.workers, reactor, FakeProcess(FakeSignals())
        )
        self.assertEqual(master.drain.shutdownTimeout, 7)
        self.assertEqual(master.drain.drainDelay, 0)
        self.assertIn("--drain-delay=2", master.workerCommand(1, 0, []))
