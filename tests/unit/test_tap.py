"""
C{twistd gracesvc} options, plugin discovery, and the service they make.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import socket
import tempfile
from typing import Any, cast

from twisted import test as twistedTests
from twisted.application.service import IService, IServiceMaker
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.plugin import getPlugins
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.usage import UsageError
from twisted.test.iosim import connectedServerAndClient
from twisted.trial.unittest import SynchronousTestCase

from gracesvc import tap
from gracesvc._config import ClientLimits, DemoApp, WSGIApp
from gracesvc._process.backlog import Backlog, defaultBacklog
from gracesvc._process.service import GracefulService
from gracesvc._protocols.deadlines import ConnectionTimeouts
from gracesvc._protocols.site import DrainingSite
from gracesvc._protocols.websocket import WebSocketPolicy
from gracesvc.testing import Wire, get
from tests.support.process import FakeProcess
from tests.support.service import SIGINT, SIGTERM, FakeReactor, FakeSignals


def parse(*argv: str) -> tap.Options:
    options = tap.Options(reactor=MemoryReactorClock())
    options.parseOptions(list(argv))
    return options


class OptionsTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        options = parse()
        self.assertEqual(options["shutdown-timeout"], 5.0)
        self.assertEqual(options["ping-delay"], 5.0)
        self.assertEqual(options["drain-delay"], 0.0)
        self.assertEqual(options["tick"], 0.5)
        [(description, endpoint)] = options.config.endpoints
        self.assertEqual(description, "tcp:8080")
        self.assertEqual(cast(Any, endpoint)._port, 8080)

    def test_values(self) -> None:
        options = parse(
            "--shutdown-timeout",
            "1.5",
            "--ping-delay",
            "0",
            "--drain-delay",
            "1",
            "--tick",
            "2",
            "--listen",
            "tcp:0:interface=127.0.0.1",
            "--listen",
            "unix:/tmp/g.sock",
        )
        self.assertEqual(options["shutdown-timeout"], 1.5)
        self.assertEqual(options["ping-delay"], 0.0)
        self.assertEqual(options["drain-delay"], 1.0)
        self.assertEqual(options["tick"], 2.0)
        self.assertEqual(
            [d for d, _ in options.config.endpoints],
            ["tcp:0:interface=127.0.0.1", "unix:/tmp/g.sock"],
        )

    def assertRejected(self, message: str, *argv: str) -> None:
        options = tap.Options(reactor=MemoryReactorClock())
        with self.assertRaises(SystemExit) as caught:
            options.parseOptions(list(argv))
        text = str(caught.exception.code)
        self.assertIn(message, text)
        self.assertNotIn("\n", text)
        self.assertTrue(text.startswith("twistd gracesvc: error: "))

    def test_badNumbers(self) -> None:
        """
        A non-numeric, negative, infinite or (for the cap) zero value is a
        one-line usage error naming the option.
        """
        for option, value in [
            ("--shutdown-timeout", "abc"),
            ("--shutdown-timeout", "0"),
            ("--shutdown-timeout", "-1"),
            ("--shutdown-timeout", "inf"),
            ("--ping-delay", "-0.5"),
            ("--ping-delay", "nan"),
            ("--drain-delay", "soon"),
            ("--tick", "0"),
            ("--tick", "-1"),
            ("--tick", "often"),
            ("--tick", "inf"),
        ]:
            self.assertRejected(
                f"{option}: expected a number of seconds", option, value
            )

    def test_drainDelayMustFitInTheCap(self) -> None:
        self.assertRejected(
            "--drain-delay: the drain delay (5s) must be >= 0 and less than the shutdown timeout (5s)",
            "--drain-delay",
            "5",
        )

    def test_webSocketOptions(self) -> None:
        """
        C{--close-timeout}, C{--ws-close-code} and C{--ws-max-message-size}
        make the site's L{WebSocketPolicy}; their defaults are 1 s, 1001 and
        1 MiB.
        """
        self.assertEqual(parse().config.webSocketPolicy, WebSocketPolicy())
        self.assertEqual(WebSocketPolicy().closeTimeout, 1.0)
        self.assertEqual(WebSocketPolicy().closeCode, 1001)
        self.assertEqual(WebSocketPolicy().maxMessageSize, 1 << 20)
        options = parse(
            "--close-timeout",
            "0.25",
            "--ws-close-code",
            "1012",
            "--ws-max-message-size",
            "4096",
            "--ws-ping-interval",
            "5",
            "--ws-ping-timeout",
            "2.5",
        )
        self.assertEqual(
            options.config.webSocketPolicy,
            WebSocketPolicy(
                closeCode=1012,
                closeTimeout=0.25,
                maxMessageSize=4096,
                pingInterval=5,
                pingTimeout=2.5,
            ),
        )
        self.assertEqual(WebSocketPolicy().pingInterval, 20)
        self.assertEqual(WebSocketPolicy().pingTimeout, 20)
        noPings = parse("--ws-ping-interval", "0").config.webSocketPolicy
        self.assertIsNone(noPings.pingInterval)

    def test_closeTimeoutMayReachPastTheCap(self) -> None:
        """
        A close timeout as long as the cap is no error: the cut aborts what
        is still open.
        """
        options = parse("--shutdown-timeout", "1", "--close-timeout", "2")
        self.assertEqual(options.config.webSocketPolicy.closeTimeout, 2.0)

    def test_badWebSocketOptions(self) -> None:
        for message, argv in [
            (
                "--close-timeout: expected a number of seconds > 0",
                ["--close-timeout", "0"],
            ),
            ("--close-timeout: expected a number of seconds", ["--close-timeout", "x"]),
            (
                "--ws-close-code: expected 1001 (going away) or 1012 (service restart), got '1000'",
                ["--ws-close-code", "1000"],
            ),
            (
                "--ws-max-message-size: expected a number of bytes >= 1, got '1M'",
                ["--ws-max-message-size", "1M"],
            ),
            ("--ws-max-message-size: expected", ["--ws-max-message-size", "0"]),
            (
                "--ws-ping-interval: expected a number of seconds >= 0, got '-1'",
                ["--ws-ping-interval", "-1"],
            ),
            (
                "--ws-ping-timeout: expected a number of seconds > 0, got '0'",
                ["--ws-ping-timeout", "0"],
            ),
        ]:
            self.assertRejected(message, *argv)

    def test_cleanupBudgetMustFitInTheCap(self) -> None:
        """
        The cleanup budget is reserved inside the cap, after the drain
        delay; one that does not fit is a one-line error naming it.
        """
        self.assertRejected(
            "--cleanup-budget: the cleanup budget (4s) must be >= 0 and fit",
            "--cleanup-budget",
            "4",
            "--drain-delay",
            "1",
        )
        options = tap.Options(reactor=MemoryReactorClock())
        options.parseOptions(["--cleanup-budget", "0.5"])
        self.assertEqual(options.config.policy.cleanupBudget, 0.5)
        self.assertAlmostEqual(options.config.policy.cutAfter, 5 - 0.5 - 0.1)

    def test_badEndpoint(self) -> None:
        self.assertRejected(
            "--listen 'bogus:8080': not a usable endpoint", "--listen", "bogus:8080"
        )
        self.assertRejected(
            "--listen 'tcp:port': not a usable endpoint", "--listen", "tcp:port"
        )

    def test_systemdEndpointWithoutInheritedSocket(self) -> None:
        self.assertRejected(
            "no such inherited socket", "--listen", "systemd:domain=INET:index=0"
        )

    def test_metricsListen(self) -> None:
        options = parse("--metrics-listen", "tcp:9100")
        self.assertEqual(options["metrics-listen"], "tcp:9100")
        assert options.config.metricsEndpoint is not None
        description, endpoint = options.config.metricsEndpoint
        self.assertEqual((description, cast(Any, endpoint)._port), ("tcp:9100", 9100))
        self.assertRejected(
            "--metrics-listen 'tcp:x': not a usable endpoint",
            "--metrics-listen",
            "tcp:x",
        )

    def test_unknownOption(self) -> None:
        self.assertRejected("--bogus", "--bogus")

    def test_asgiLoopOnlyWithASGI(self) -> None:
        self.assertRejected("--asgi-loop: only with --asgi", "--asgi-loop=uvloop")

    def test_h2cTakesNoValue(self) -> None:
        self.assertRejected("h2c", "--h2c=yes")

    def test_postOptionsRaisesUsageError(self) -> None:
        """
        The checks themselves raise L{UsageError}, as twistd expects of
        C{postOptions}.
        """
        options = tap.Options(reactor=MemoryReactorClock())
        options["shutdown-timeout"] = "x"
        self.assertRaises(UsageError, options.postOptions)


class ConfigTests(SynchronousTestCase):
    def test_optionsHoldOnlyWhatWasChecked(self) -> None:
        """
        The options keep the values as checked (numbers, strings, flags);
        what is built from them (policies, endpoints, the app) is in the
        frozen configuration alone.
        """
        options = parse(
            "--wsgi", "tests.apps.flaskapp:app", "--metrics-listen", "tcp:1"
        )
        for name, value in options.items():
            self.assertIsInstance(value, str | int | float | list | None, name)
        self.assertEqual(
            {type(d) for d in options["listen"] + [options["metrics-listen"]]}, {str}
        )
        with self.assertRaises(dataclasses.FrozenInstanceError):
            options.config.h2c = True  # type: ignore[misc]

    def test_theBuiltInApp(self) -> None:
        self.assertEqual(
            parse("--ping-delay", "0.25", "--tick", "2").config.app,
            DemoApp(pingDelay=0.25, tick=2.0),
        )

    def test_pluginImportsNeitherKleinNorTheApp(self) -> None:
        """
        What C{gracesvc.tap} imports as it is imported (C{twistd gracesvc
        --help} does) reaches neither Klein nor the wiring nor an app:
        those are imported when the service is made.
        """
        reached = moduleLevelImports("gracesvc.tap")
        for name in ("klein", "gracesvc._wiring", "gracesvc._apps.demo"):
            self.assertNotIn(name, reached)
        self.assertIn("gracesvc._config", reached)


def moduleLevelImports(start: str) -> set[str]:
    """
    @return: the modules that importing C{start} imports, following
        gracesvc's own modules: the imports at their top level, not those
        inside functions nor under C{if TYPE_CHECKING:}.
    """
    import ast
    import importlib.util

    reached: set[str] = set()
    pending = [start]
    while pending:
        name = pending.pop()
        if name in reached:
            continue
        reached.add(name)
        if not name.startswith("gracesvc"):
            continue
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            continue
        with open(spec.origin, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        parts = name.split(".")
        for i in range(1, len(parts)):
            pending.append(".".join(parts[:i]))
        for node in tree.body:
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                pending.append(node.module)
                pending += [
                    f"{node.module}.{alias.name}"
                    for alias in node.names
                    if _isSubmodule(f"{node.module}.{alias.name}")
                ]
    return {
        name.split(".")[0] if not name.startswith("gracesvc") else name
        for name in reached
    }


def _isSubmodule(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class PluginTests(SynchronousTestCase):
    def test_discoverable(self) -> None:
        """
        Twisted's plugin discovery finds the gracesvc service maker, so
        C{twistd gracesvc} works.
        """
        makers = {p.tapname: p for p in getPlugins(IServiceMaker)}
        self.assertIn("gracesvc", makers)
        self.assertIs(makers["gracesvc"].options, tap.Options)


class AppOptionTests(SynchronousTestCase):
    def assertRejected(self, message: str, *argv: str) -> None:
        OptionsTests.assertRejected(self, message, *argv)  # type: ignore[arg-type]

    def test_appAndWsgiExcludeEachOther(self) -> None:
        self.assertRejected(
            "--app and --wsgi cannot be used together",
            "--app",
            "tests.apps.resourceapp:Root",
            "--wsgi",
            "tests.apps.flaskapp:app",
        )

    def test_threadsOnlyWithWsgi(self) -> None:
        self.assertRejected("--threads: only with --wsgi", "--threads", "4")
        self.assertRejected(
            "--threads", "--wsgi", "tests.apps.flaskapp:app", "--threads", "0"
        )

    def test_appThatDoesNotImport(self) -> None:
        self.assertRejected(
            "--app 'tests.apps.nosuch:app': cannot import module",
            "--app",
            "tests.apps.nosuch:app",
        )

    def test_appsLoadedWhenOptionsAreParsed(self) -> None:
        """
        The app is imported while the options are checked, before anything
        listens; C{--threads} defaults to C{twistd web}'s 20.
        """
        options = tap.Options(reactor=MemoryReactorClock())
        options.parseOptions(["--wsgi", "tests.apps.flaskapp:app"])
        from tests.apps.flaskapp import app

        wsgi = options.config.app
        assert isinstance(wsgi, WSGIApp)
        self.assertIs(wsgi.application, app)
        self.assertEqual((wsgi.spec, wsgi.threads), ("tests.apps.flaskapp:app", 20))
        self.assertEqual(options["threads"], 20)


class ASGIOptionTests(SynchronousTestCase):
    def assertRejected(self, message: str, *argv: str) -> None:
        OptionsTests.assertRejected(self, message, *argv)  # type: ignore[arg-type]

    def test_asgiExcludesAppAndWsgi(self) -> None:
        self.assertRejected(
            "--app and --asgi cannot be used together",
            "--app",
            "tests.apps.resourceapp:Root",
            "--asgi",
            "tests.apps.asgiraw:app",
        )
        self.assertRejected(
            "--wsgi and --asgi cannot be used together",
            "--wsgi",
            "tests.apps.flaskapp:app",
            "--asgi",
            "tests.apps.asgiraw:app",
        )

    def test_lifespanMode(self) -> None:
        self.assertRejected(
            "--asgi-lifespan: only with --asgi", "--asgi-lifespan", "on"
        )
        self.assertRejected(
            "--asgi-lifespan: expected auto, on or off, got 'maybe'",
            "--asgi",
            "tests.apps.asgiraw:app",
            "--asgi-lifespan",
            "maybe",
        )

    def test_asgiLoadedWhenOptionsAreParsed(self) -> None:
        """
        The application is imported while the options are checked (on the
        reactor given, here a test's: C{twistd} installs the asyncio one
        first), with its lifespan mode, C{auto} by default.
        """
        from gracesvc._config import ASGIAppConfig
        from tests.apps.asgiraw import app

        options = parse("--asgi", "tests.apps.asgiraw:app")
        asgi = options.config.app
        assert isinstance(asgi, ASGIAppConfig)
        self.assertIs(asgi.application, app)
        self.assertEqual((asgi.spec, asgi.lifespan), ("tests.apps.asgiraw:app", "auto"))
        options = parse("--asgi", "tests.apps.asgiraw:app", "--asgi-lifespan", "off")
        asgi = options.config.app
        assert isinstance(asgi, ASGIAppConfig)
        self.assertEqual(asgi.lifespan, "off")

    def test_workersGetTheASGIOptions(self) -> None:
        options = parse(
            "--asgi",
            "tests.apps.asgiraw:app",
            "--asgi-lifespan",
            "on",
            "--workers",
            "2",
        )
        self.assertIn("--asgi=tests.apps.asgiraw:app", options.workerArguments())
        self.assertIn("--asgi-lifespan=on", options.workerArguments())


class MakeServiceTests(SynchronousTestCase):
    def makeService(
        self, *argv: str
    ) -> tuple[GracefulService, FakeReactor, FakeSignals]:
        reactor = FakeReactor()
        options = tap.Options(reactor=reactor)
        options.parseOptions(list(argv))
        signals = FakeSignals()
        service = tap.makeService(options, FakeProcess(signals))
        self.assertTrue(IService.providedBy(service))
        assert isinstance(service, GracefulService)
        return service, reactor, signals

    def test_makesAServiceListeningOnEveryEndpoint(self) -> None:
        service, reactor, _ = self.makeService(
            "--listen", "tcp:8081", "--listen", "tcp:8082", "--shutdown-timeout", "2"
        )
        self.assertEqual(service.drain.shutdownTimeout, 2)
        service.startService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [8081, 8082])
        self.assertEqual(service.auxiliaryPorts, [])

    def test_userAppBesideTheProbes(self) -> None:
        """
        With C{--app}, the site serves the user's resource, and gracesvc's
        C{/healthz} beside it.
        """
        service, _, _ = self.makeService("--app", "tests.apps.resourceapp:Root")
        site = service.factory
        assert isinstance(site, DrainingSite)
        wire = Wire(resource=site.resource)
        client = wire.connect()
        client.send(get("/hello") + get("/healthz"))
        self.assertEqual(
            [(r.code, r.body) for r in client.responses],
            [(200, b"hello from a resource\n"), (200, b'{"status": "ok"}')],
        )

    def test_listensBeforePrivilegesAreDropped(self) -> None:
        """
        Every endpoint, the metrics one included, listens in
        C{privilegedStartService}, which twistd calls before C{--uid} and
        C{--gid} take effect; C{startService} does not listen again.
        """
        service, reactor, _ = self.makeService(
            "--listen", "tcp:80", "--metrics-listen", "tcp:443"
        )
        service.privilegedStartService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [80, 443])
        service.startService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [80, 443])
        self.assertEqual(len(service.auxiliaryPorts), 1)

    def test_siteClosesWebSocketsAsTheOptionsSay(self) -> None:
        service, _, _ = self.makeService("--ws-close-code", "1012")
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertEqual(site.webSocketPolicy.closeCode, 1012)

    def test_http2(self) -> None:
        """
        The site serves HTTP/2 where TLS negotiates it; cleartext HTTP/2
        only with C{--h2c}; its metrics are exposed.
        """
        service, _, _ = self.makeService()
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertEqual((site.http2, site.h2c), (True, False))
        self.assertEqual(site.acceptableProtocols(), [b"h2", b"http/1.1"])
        service, _, _ = self.makeService("--h2c")
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertEqual((site.http2, site.h2c), (True, True))

    def test_noAccessLog(self) -> None:
        """
        C{--no-access-log}: the site writes no line per response.
        """
        service, _, _ = self.makeService()
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertTrue(site.accessLog)
        service, _, _ = self.makeService("--no-access-log")
        site = service.factory
        assert isinstance(site, DrainingSite)
        self.assertFalse(site.accessLog)

    def test_metricsOnTheirOwnEndpoint(self) -> None:
        service, reactor, _ = self.makeService(
            "--listen", "tcp:8081", "--metrics-listen", "tcp:9100"
        )
        service.startService()
        self.assertEqual([port for port, *_ in reactor.tcpServers], [8081, 9100])
        self.assertEqual(len(service.auxiliaryPorts), 1)

    def test_signalsAreCaughtFromMakeServiceOn(self) -> None:
        """
        twistd may take a while, and fork, between making the service and
        running the reactor: a signal meanwhile is caught, and stops the
        service cleanly once the reactor runs.
        """
        service, reactor, signals = self.makeService("--listen", "tcp:8081")
        signals.deliver(SIGINT)
        service.privilegedStartService()
        service.startService()
        reactor.start(signals)
        [d] = reactor.turn() + reactor.turn()
        self.successResultOf(d)  # type: ignore[arg-type]
        self.assertEqual((reactor.stops, reactor.exitSignal), (1, SIGINT))

    def test_madeForAClock(self) -> None:
        """
        The service can be made for a reactor that never runs (the
        benchmarks build it on a L{Clock}): only the signal module is
        touched until it starts.
        """
        options = tap.Options(reactor=Clock())
        options.parseOptions(["--listen", "tcp:8081"])
        signals = FakeSignals()
        service = tap.makeService(options, FakeProcess(signals))
        self.assertTrue(IService.providedBy(service))
        self.assertNotEqual(signals.handlers[SIGTERM], signal.SIG_DFL)

    def test_asTwistdRunsIt(self) -> None:
        """
        twistd's sequence, in memory: listen, start, run; the first SIGTERM
        drains what is in flight and exits with SIGTERM's status; a second
        one forces the stop.
        """
        service, reactor, signals = self.makeService("--listen", "tcp:8081")
        service.privilegedStartService()
        service.startService()
        reactor.start(signals)
        service.drain.track(Deferred())
        signals.deliver(SIGTERM)
        [d] = reactor.turn() + reactor.turn()
        self.assertTrue(service.drain.draining)
        self.assertNoResult(d)
        signals.deliver(SIGINT)
        reactor.turn()
        self.successResultOf(d)  # type: ignore[arg-type]
        self.assertEqual((reactor.stops, reactor.exitSignal), (1, SIGTERM))


#: A key and certificate that ships with Twisted's tests.
SERVER_PEM = os.path.join(os.path.dirname(twistedTests.__file__), "server.pem")


class WorkersOptionTests(SynchronousTestCase):
    def assertRejected(self, message: str, *argv: str) -> None:
        OptionsTests.assertRejected(self, message, *argv)  # type: ignore[arg-type]

    def test_badWorkers(self) -> None:
        for value in ("-1", "two", "1.5", ""):
            self.assertRejected(
                "--workers: expected a number of processes", "--workers", value
            )

    def test_sslListener(self) -> None:
        """
        C{--workers} on C{ssl:}: the master creates the description's TCP
        socket and marks it as TLS for the workers; a C{tcp:} one is not.
        """
        description = (
            f"ssl:8443:interface=127.0.0.1:privateKey={SERVER_PEM}:certKey={SERVER_PEM}"
        )
        options = parse(
            "--workers", "2", "--listen", description, "--listen", "tcp:8080"
        )
        assert options.config.workers is not None
        self.assertEqual(
            list(options.config.workers.sockets),
            [
                (
                    description,
                    ("tcp", socket.AF_INET, "127.0.0.1", 8443, defaultBacklog()),
                    True,
                ),
                (
                    "tcp:8080",
                    ("tcp", socket.AF_INET, "", 8080, defaultBacklog()),
                    False,
                ),
            ],
        )
        self.assertFalse([a for a in options.workerArguments() if "ssl" in a])

    def test_sslCertificateCheckedByTheMaster(self) -> None:
        """
        With C{--workers}, a certificate or key that cannot be read is one
        line and exit status 1 from the master's options, before anything
        listens, as without.
        """
        missing = "/nonexistent/gracesvc/key.pem"
        self.assertRejected(
            f"--listen 'ssl:8443:privateKey={missing}': not a usable endpoint: ",
            "--workers",
            "2",
            "--listen",
            f"ssl:8443:privateKey={missing}",
        )
        with tempfile.NamedTemporaryFile("w", suffix=".pem", delete=False) as f:
            f.write("not a certificate\n")
        garbage = f.name
        self.addCleanup(os.unlink, garbage)
        self.assertRejected(
            "not a usable endpoint",
            "--workers",
            "2",
            "--listen",
            f"ssl:8443:privateKey={garbage}",
        )

    def test_metricsListenIsTheMasters(self) -> None:
        """
        With C{--workers}, C{--metrics-listen} is served by the master (the
        whole tree's metrics), and not handed on to the workers.
        """
        options = parse("--workers", "2", "--metrics-listen", "tcp:9100")
        self.assertFalse([a for a in options.workerArguments() if "metrics" in a])

    def test_reusePortOnlyWithWorkers(self) -> None:
        self.assertRejected("--reuse-port: only with --workers", "--reuse-port")
        self.assertTrue(parse("--workers", "2", "--reuse-port")["reuse-port"])

    def test_masterDoesNotImportTheApp(self) -> None:
        """
        The app is the workers' to import, each generation anew: a master
        given one that does not import starts (and its first worker fails).
        """
        options = parse("--workers", "2", "--app", "no_such_module:app")
        self.assertEqual(options["workers"], 2)
        self.assertIsNone(options.config.app)

    def test_workerArguments(self) -> None:
        """
        Workers get the plugin options as given, but not the master's own
        nor the endpoints (they adopt the master's sockets).
        """
        options = parse(
            "--workers",
            "3",
            "--listen",
            "tcp:8080",
            "--ping-delay",
            "0.5",
            "--worker-boot-timeout",
            "9",
            "--h2c",
            "--reuse-port",
        )
        arguments = options.workerArguments()
        self.assertIn("--ping-delay=0.5", arguments)
        self.assertIn("--h2c", arguments)
        self.assertNotIn("--reuse-port", arguments)
        self.assertFalse([a for a in arguments if "worker" in a or "listen" in a])
        self.assertEqual(options["worker-boot-timeout"], 9)
        assert options.config.workers is not None
        self.assertEqual(options.config.workers.arguments, tuple(arguments))
        [(description, spec, tls)] = cast(Any, options.config.workers.sockets)
        self.assertEqual(
            (description, spec[0], spec[3], tls), ("tcp:8080", "tcp", 8080, False)
        )

    def test_workerSpec(self) -> None:
        spec = '{"generation": 2, "slot": 1, "listeners": [["tcp:8080", 5, 2]]}'
        options = parse("--worker-spec", spec)
        [(description, endpoint)] = cast(Any, options.config.endpoints)
        self.assertEqual(description, "tcp:8080")
        self.assertEqual((endpoint.fileno, endpoint.addressFamily), (5, 2))
        self.assertRejected("--worker-spec: not a worker spec", "--worker-spec", "{")
        self.assertRejected(
            "a worker listens on its master's sockets only",
            "--worker-spec",
            spec,
            "--listen",
            "tcp:1",
        )

    def workerSpec(self, *listeners: list[object]) -> str:
        return json.dumps({"generation": 1, "slot": 0, "listeners": listeners})

    def test_workerServesTLSOnTheAdoptedSocket(self) -> None:
        """
        A listener the worker spec marks as TLS: the worker reads the
        certificate from the description, adopts the master's socket, and
        serves TLS on it around the site, which ALPN offers C{h2} for.
        """
        listening = socket.socket()
        self.addCleanup(listening.close)
        fd = os.dup(listening.fileno())  # adopting closes the worker's copy
        description = f"ssl:8443:privateKey={SERVER_PEM}"
        reactor = MemoryReactorClock()
        options = tap.Options(reactor=reactor)
        options.parseOptions(
            ["--worker-spec", self.workerSpec([description, fd, socket.AF_INET, True])]
        )
        [(given, endpoint)] = options.config.endpoints
        self.assertEqual(given, description)
        wire = Wire(h2c=True)
        self.successResultOf(endpoint.listen(wire.site))
        [(adopted, family, factory)] = reactor.adoptedPorts
        self.assertEqual((adopted, family), (fd, socket.AF_INET))
        self.assertIsInstance(factory, TLSMemoryBIOFactory)
        self.assertIs(factory.wrappedFactory, wire.site)

        address = IPv4Address("TCP", "127.0.0.1", 1)
        clientTLS = TLSMemoryBIOFactory(
            CertificateOptions(acceptableProtocols=[b"h2", b"http/1.1"]),
            True,
            Factory.forProtocol(Protocol),
        )
        client, server, pump = connectedServerAndClient(
            lambda: factory.buildProtocol(address),
            lambda: clientTLS.buildProtocol(address),
        )
        pump.flush()
        self.assertEqual(client.negotiatedProtocol, b"h2")

    def test_workerReadsTheCertificate(self) -> None:
        """
        A worker whose certificate cannot be read (a renewal gone wrong, at
        a reload) stops with one line, before it is ready.
        """
        missing = "/nonexistent/gracesvc/cert.pem"
        description = f"ssl:8443:privateKey={SERVER_PEM}:certKey={missing}"
        self.assertRejected(
            "not a usable endpoint",
            "--worker-spec",
            self.workerSpec([description, 5, socket.AF_INET, True]),
        )

    def test_workerSpecWithoutTLSItem(self) -> None:
        """
        A listener of three items (as a master without TLS listeners wrote
        them) is adopted as it is, without TLS.
        """
        from twisted.internet.endpoints import AdoptedStreamServerEndpoint

        options = parse("--worker-spec", self.workerSpec(["tcp:8080", 5, 2]))
        [(_, endpoint)] = options.config.endpoints
        self.assertIsInstance(endpoint, AdoptedStreamServerEndpoint)

    def test_makeServiceMakesTheMaster(self) -> None:
        from gracesvc._workers.master import Master

        reactor = FakeReactor()
        options = tap.Options(reactor=reactor)
        options.parseOptions(["--workers", "2", "--listen", "tcp:0"])
        signals = FakeSignals()
        service = tap.makeService(options, FakeProcess(signals))
        self.assertIsInstance(service, Master)
        self.assertIsNot(signals.handlers[SIGTERM], signal.SIG_DFL)


# The open internet: what clients may take.


class ClientLimitOptionsTests(SynchronousTestCase):
    def assertRejected(self, message: str, *argv: str) -> None:
        OptionsTests.assertRejected(self, message, *argv)  # type: ignore[arg-type]

    def test_defaults(self) -> None:
        """
        The kernel's largest backlog or 2,048; a request head in 10 s; idle
        keep-alive connections closed after 75 s; writes that stall 60 s
        aborted; a connection limit from the open files limit (decided when
        the service is made); 4 MiB held for a WebSocket client that does
        not read.
        """
        options = parse()
        self.assertEqual(
            options.config.limits,
            ClientLimits(
                backlog=Backlog(defaultBacklog()),
                timeouts=ConnectionTimeouts(header=10, keepAlive=75, write=60),
                maxConnections=None,
            ),
        )
        self.assertEqual(options.config.webSocketPolicy.writeLimit, 4 << 20)
        [(_, endpoint)] = options.config.endpoints
        self.assertEqual(cast(Any, endpoint)._backlog, defaultBacklog())

    def test_values(self) -> None:
        options = parse(
            "--backlog",
            "100",
            "--header-timeout",
            "5",
            "--keep-alive-timeout",
            "620",
            "--write-timeout",
            "0",
            "--max-connections",
            "500",
            "--ws-write-limit",
            "1000",
            "--listen",
            "tcp:8080",
            "--listen",
            "unix:/tmp/g.sock:backlog=7",
            "--metrics-listen",
            "tcp:9100",
        )
        limits = options.config.limits
        self.assertEqual(limits.backlog, Backlog(100, given=True))
        self.assertEqual(
            limits.timeouts, ConnectionTimeouts(header=5, keepAlive=620, write=None)
        )
        self.assertEqual(limits.maxConnections, 500)
        self.assertEqual(options.config.webSocketPolicy.writeLimit, 1000)
        # The descriptions stay as given; a listener's own backlog wins.
        self.assertEqual(
            [(d, cast(Any, e)._backlog) for d, e in options.config.endpoints],
            [("tcp:8080", 100), ("unix:/tmp/g.sock:backlog=7", 7)],
        )
        assert options.config.metricsEndpoint is not None
        self.assertEqual(cast(Any, options.config.metricsEndpoint[1])._backlog, 100)

    def test_zeroMeansNoLimit(self) -> None:
        limits = parse(
            "--header-timeout",
            "0",
            "--keep-alive-timeout",
            "0",
            "--max-connections",
            "0",
        ).config.limits
        self.assertEqual(
            (limits.timeouts.header, limits.timeouts.keepAlive, limits.maxConnections),
            (None, None, 0),
        )

    def test_badValues(self) -> None:
        for message, argv in [
            (
                "--backlog: expected a number of connections >= 1, got '0'",
                ["--backlog", "0"],
            ),
            ("--backlog: expected a number of connections", ["--backlog", "many"]),
            (
                "--max-connections: expected a number of connections >= 0, got '-1'",
                ["--max-connections", "-1"],
            ),
            (
                "--header-timeout: expected a number of seconds >= 0, got '-1'",
                ["--header-timeout", "-1"],
            ),
            ("--keep-alive-timeout: expected", ["--keep-alive-timeout", "inf"]),
            ("--write-timeout: expected", ["--write-timeout", "soon"]),
            (
                "--ws-write-limit: expected a number of bytes >= 1, got '4M'",
                ["--ws-write-limit", "4M"],
            ),
        ]:
            self.assertRejected(message, *argv)

    def test_workers(self) -> None:
        """
        The master makes the sockets with the backlog; every worker gets the
        rest, and its own connection limit.
        """
        options = parse(
            "--workers",
            "2",
            "--backlog",
            "300",
            "--max-connections",
            "50",
            "--header-timeout",
            "3",
        )
        assert options.config.workers is not None
        [shared] = options.config.workers.sockets
        self.assertEqual(shared.spec[-1], 300)
        arguments = options.workerArguments()
        self.assertNotIn("--backlog=300", arguments)
        self.assertIn("--max-connections=50", arguments)
        self.assertIn("--header-timeout=3", arguments)


class DocumentedOptionsTests(SynchronousTestCase):
    """
    The README's options table and C{twistd gracesvc --help} name the same
    options.
    """

    def test_readmeTableNamesEveryOption(self) -> None:
        """
        Every option but the internal ones is a row of the README's table,
        and every row is an option.
        """
        options = tap.Options()
        names = {
            str(p[0])
            for p in options.optParameters
            if not str(p[3]).startswith("Internal:")
        } | {str(f[0]) for f in options.optFlags}
        # Options of their own methods (opt_listen, repeatable).
        names |= {
            name[len("opt_") :].replace("_", "-")
            for name in vars(tap.Options)
            if name.startswith("opt_")
        }
        readme = os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "README.md"
        )
        with open(readme, encoding="utf-8") as f:
            text = f.read()
        table = text.split("## Options", 1)[1].split("\n## ", 1)[0]
        rows = {
            line.split("`--", 1)[1].split()[0].rstrip("`")
            for line in table.splitlines()
            if line.startswith("| `--")
        }
        self.assertEqual(sorted(rows - names), [])
        self.assertEqual(sorted(names - rows), [])
