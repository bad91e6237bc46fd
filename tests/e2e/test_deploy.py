"""
The deployment examples in C{deploy/}, checked and run as they are.

The unit-level tests read the files (no processes): the Kubernetes manifest
validates against the Kubernetes schemas (offline, with
C{kubernetes-validate}), and the timeouts in every file agree with each
other and with the health checks.

The end-to-end tests run C{deploy/haproxy.cfg} with a real HAProxy in front
of two real C{twistd -n gracesvc}, and play systemd's part for
C{deploy/gracesvc.service}: each restarts or replaces gracesvc under steady
load and counts what the clients saw.  Every process is started on free
loopback ports and killed by its pid when the test ends; every wait is
bounded.
"""

from __future__ import annotations

import collections
import configparser
import csv
import http.client
import io
import math
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any
from unittest import SkipTest

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from gracesvc.tap import Options
from gracesvc.testing import get
from gracesvc.testing.process import TWISTD, Process, RawClient, Twistd, freePort

DEPLOY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "deploy",
)
HAPROXY_CFG = os.path.join(DEPLOY, "haproxy.cfg")
SYSTEMD_SERVICE = os.path.join(DEPLOY, "gracesvc.service")
SYSTEMD_SOCKET = os.path.join(DEPLOY, "gracesvc.socket")
KUBERNETES_YAML = os.path.join(DEPLOY, "kubernetes.yaml")

#: The Kubernetes version the manifest is validated against: old enough to
#: be what clusters run, new enough for policy/v1.
KUBERNETES_VERSION = "1.30"

#: The health check interval and fall count the end-to-end test runs
#: C{deploy/haproxy.cfg} with: fast, so that the drain delay the file
#: prescribes for them is short.
FAST_CHECKS = {"GRACESVC_CHECK_INTER": "100ms", "GRACESVC_CHECK_FALL": "2"}


# Reading the deploy files.


def requiredDrainDelay(interval: float, failures: int, checkTimeout: float) -> float:
    """
    The shortest C{--drain-delay} that lets a health checker see enough
    failed checks before the port closes, as the files in C{deploy/} explain.

    @param interval: seconds between two checks.
    @param failures: failed checks in a row that take an instance out.
    @param checkTimeout: how long one check may take.
    """
    return interval * failures + checkTimeout


def haproxySeconds(value: str) -> float:
    """
    @return: an HAProxy time (C{100ms}, C{2s}, C{1m}; milliseconds if no
        unit) in seconds.
    """
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(us|ms|s|m|h|d)?", value)
    if match is None:
        raise ValueError(f"not an HAProxy time: {value!r}")
    unit = {"us": 1e-6, "ms": 1e-3, None: 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(match.group(1)) * unit[match.group(2)]


def gracesvcOptions(argv: Sequence[str]) -> Options:
    """
    Parse the C{gracesvc} options of a C{twistd ... gracesvc ...} command
    line with gracesvc's own parser, so a bad option or value fails here.

    A C{systemd:} endpoint needs an inherited socket, which only the
    end-to-end test provides: here it is parsed as C{tcp:0}, and kept as
    written in C{options["listen"]}.

    @raise AssertionError: if twistd would reject the options.
    """
    args = list(argv[list(argv).index("gracesvc") + 1 :])
    listen = [a for i, a in enumerate(args) if i and args[i - 1] == "--listen"]
    standIn = ["tcp:0" if a.startswith("systemd:") and a in listen else a for a in args]
    options = Options(reactor=MemoryReactor())
    try:
        options.parseOptions(standIn)
    except SystemExit as e:
        raise AssertionError(f"{shlex.join(argv)}: {e}") from None
    options["listen"] = listen
    return options


class HAProxyConfig:
    """
    What the tests need of C{deploy/haproxy.cfg}: the environment variables
    it reads with their defaults, its fixed timeouts, and the gracesvc
    command lines its comments recommend.
    """

    def __init__(self, path: str = HAPROXY_CFG) -> None:
        with open(path, encoding="utf-8") as f:
            self.text = f.read()
        self.lines = [line.strip() for line in self.text.splitlines()]
        self.defaults = dict(re.findall(r'"\$\{(\w+)-([^}]*)\}"', self.text))
        self.servers = dict(
            re.findall(r'^\s*server (\w+) "\$\{(\w+)-', self.text, re.M)
        )
        self.commands = [
            shlex.split(line[1:])
            for line in self.lines
            if line.startswith("#   twistd ")
        ]

    def directive(self, name: str) -> str:
        """
        @return: the arguments of the one uncommented line starting with
            C{name}.
        """
        [value] = [
            line[len(name) :].strip()
            for line in self.lines
            if line.startswith(name + " ")
        ]
        return value

    def drainDelayFor(self, environ: dict[str, str]) -> float:
        """
        @return: the C{--drain-delay} the comments prescribe for the check
            interval and fall count that C{environ} (or the defaults) sets.
        """
        settings = dict(self.defaults, **environ)
        return requiredDrainDelay(
            haproxySeconds(settings["GRACESVC_CHECK_INTER"]),
            int(settings["GRACESVC_CHECK_FALL"]),
            haproxySeconds(self.directive("timeout check")),
        )


def systemdUnit(path: str) -> configparser.ConfigParser:
    """
    @return: the systemd unit file at C{path}, parsed.
    """
    unit = configparser.ConfigParser(
        strict=False, interpolation=None, delimiters=("=",), comment_prefixes=("#", ";")
    )
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    with open(path, encoding="utf-8") as f:
        unit.read_file(f)
    return unit


def kubernetesResources() -> list[dict[str, Any]]:
    """
    @return: the resources in C{deploy/kubernetes.yaml}.
    """
    import yaml  # type: ignore[import-untyped]

    with open(KUBERNETES_YAML, encoding="utf-8") as f:
        return [r for r in yaml.safe_load_all(f) if r]


def kubernetesPod() -> tuple[dict[str, Any], dict[str, Any]]:
    """
    @return: the pod spec of the Deployment, and its gracesvc container.
    """
    [deployment] = [r for r in kubernetesResources() if r["kind"] == "Deployment"]
    podSpec = deployment["spec"]["template"]["spec"]
    [container] = podSpec["containers"]
    return podSpec, container


def kubernetesValidate() -> Any:
    """
    @return: the C{kubernetes_validate} module.
    @raise AssertionError: if it is not installed.  Not a skip: a build
        without it would let a broken manifest through.
    """
    try:
        import kubernetes_validate  # type: ignore[import-untyped]
    except ImportError:
        raise AssertionError(
            "kubernetes-validate is not installed: pip install -e '.[test]'"
        ) from None
    return kubernetes_validate


def haproxyExecutable() -> str:
    """
    @return: the path of C{haproxy}.
    @raise SkipTest: if it is not installed.
    """
    path = os.environ.get("PATH", os.defpath) + os.pathsep + "/usr/sbin:/sbin"
    found = shutil.which("haproxy", path=path)
    if found is None:
        raise SkipTest("haproxy is not installed (apt-get install haproxy)")
    return found


# The files, checked without running anything.


class KubernetesManifestTests(SynchronousTestCase):
    def validate(self, resource: dict[str, Any]) -> None:
        kubernetesValidate().validate(resource, KUBERNETES_VERSION, strict=True)

    def test_validatesAgainstTheKubernetesSchemas(self) -> None:
        """
        Every resource validates strictly (no unknown field) against the
        Kubernetes schemas, read offline.
        """
        resources = kubernetesResources()
        self.assertEqual(
            sorted(r["kind"] for r in resources),
            ["Deployment", "PodDisruptionBudget", "Service"],
        )
        for resource in resources:
            self.validate(resource)

    def test_aTypoFailsValidation(self) -> None:
        """
        The validation catches a misspelt field and a wrongly typed value,
        so the test above can fail.
        """
        invalid = kubernetesValidate().ValidationError
        [deployment] = [r for r in kubernetesResources() if r["kind"] == "Deployment"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        container["readinesProbe"] = container.pop("readinessProbe")
        self.assertRaises(invalid, self.validate, deployment)
        container["readinessProbe"] = container.pop("readinesProbe")
        container["readinessProbe"]["periodSeconds"] = "2"
        self.assertRaises(invalid, self.validate, deployment)

    def test_probesAndTimeouts(self) -> None:
        """
        Readiness on C{/readyz}, liveness on C{/healthz}, both on the port
        gracesvc listens on; C{--drain-delay} covers the readiness probe's
        failures plus a margin; the grace period is above the shutdown cap;
        a liveness probe refused after the port closes cannot restart the
        pod before the drain ends.
        """
        podSpec, container = kubernetesPod()
        options = gracesvcOptions(container["command"] + container["args"])
        drainDelay = options["drain-delay"]
        shutdownTimeout = options["shutdown-timeout"]
        readiness = container["readinessProbe"]
        liveness = container["livenessProbe"]
        [port] = container["ports"]
        self.assertEqual(options["listen"], [f"tcp:{port['containerPort']}"])
        self.assertEqual(
            (readiness["httpGet"], liveness["httpGet"]),
            (
                {"path": "/readyz", "port": port["name"]},
                {"path": "/healthz", "port": port["name"]},
            ),
        )
        required = requiredDrainDelay(
            readiness["periodSeconds"],
            readiness["failureThreshold"],
            readiness["timeoutSeconds"],
        )
        self.assertGreaterEqual(drainDelay, required + 1)
        self.assertLess(drainDelay, shutdownTimeout)
        self.assertGreater(podSpec["terminationGracePeriodSeconds"], shutdownTimeout)
        self.assertGreater(
            (liveness["failureThreshold"] - 1) * liveness["periodSeconds"],
            shutdownTimeout - drainDelay,
        )
        self.assertNotIn("lifecycle", container)

    def test_serviceTargetsTheContainerPort(self) -> None:
        [service] = [r for r in kubernetesResources() if r["kind"] == "Service"]
        [port] = kubernetesPod()[1]["ports"]
        self.assertEqual(
            [p["targetPort"] for p in service["spec"]["ports"]], [port["name"]]
        )


class HAProxyConfigTests(SynchronousTestCase):
    def test_noRetriesNoRedispatchChecksOnReadyz(self) -> None:
        config = HAProxyConfig()
        self.assertEqual(config.directive("retries"), "0")
        self.assertIn("no option redispatch", config.lines)
        self.assertEqual(config.directive("option httpchk"), "GET /readyz")
        self.assertEqual(config.directive("http-check expect"), "status 200")
        self.assertEqual(
            [x for x in config.lines if "shutdown-sessions" in x and x[:1] != "#"], []
        )

    def test_recommendedCommandsFitTheChecks(self) -> None:
        """
        The gracesvc command lines in the comments listen where the server
        lines point, with a C{--drain-delay} sized as the comments say and a
        C{--shutdown-timeout} below HAProxy's server timeout.
        """
        config = HAProxyConfig()
        self.assertEqual(sorted(config.servers), ["app1", "app2"])
        commands = [gracesvcOptions(c) for c in config.commands]
        addresses = sorted(config.defaults[v] for v in config.servers.values())
        self.assertEqual(
            sorted(listen for options in commands for listen in options["listen"]),
            [
                f"tcp:{port}:interface={host}"
                for host, port in (a.split(":") for a in addresses)
            ],
        )
        serverTimeout = haproxySeconds(config.directive("timeout server"))
        for options in commands:
            self.assertGreaterEqual(options["drain-delay"], config.drainDelayFor({}))
            self.assertLess(options["shutdown-timeout"], serverTimeout)
        self.assertIn(f"= {config.drainDelayFor({}):g} s", config.text)

    def test_validForHAProxy(self) -> None:
        """
        C{haproxy -c} accepts the file with its defaults and with the
        values the end-to-end test sets.
        """
        haproxy = haproxyExecutable()
        for environ in ({}, FAST_CHECKS):
            result = subprocess.run(
                [haproxy, "-c", "-f", HAPROXY_CFG],
                env=dict(os.environ, **environ),
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            )
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)


class SystemdUnitTests(SynchronousTestCase):
    def test_stopSignalAndTimeout(self) -> None:
        """
        systemd stops gracesvc with SIGTERM and waits longer than its
        shutdown cap before it would send SIGKILL.
        """
        service = systemdUnit(SYSTEMD_SERVICE)["Service"]
        options = gracesvcOptions(shlex.split(service["ExecStart"]))
        self.assertEqual(service["KillSignal"], "SIGTERM")
        self.assertGreater(
            float(service["TimeoutStopSec"]), options["shutdown-timeout"]
        )
        self.assertEqual(options["listen"], ["systemd:domain=INET:index=0"])

    def test_socketMatchesTheEndpoint(self) -> None:
        """
        The socket unit hands over one IPv4 listening socket, which is what
        the service's C{systemd:domain=INET:index=0} endpoint adopts.
        """
        units = systemdUnit(SYSTEMD_SOCKET)
        socketSection = units["Socket"]
        self.assertEqual(socketSection.get("Accept", "no"), "no")
        self.assertRegex(socketSection["ListenStream"], r"^\d+\.\d+\.\d+\.\d+:\d+$")
        service = systemdUnit(SYSTEMD_SERVICE)["Unit"]
        self.assertIn("gracesvc.socket", service["Requires"].split())


# End to end.


class Outcome:
    """
    One request a load client made: when it was sent, when it ended, and
    what came of it (C{"ok"} for a 200).
    """

    def __init__(self, sentAt: float, doneAt: float, result: str) -> None:
        self.sentAt = sentAt
        self.doneAt = doneAt
        self.result = result

    def __repr__(self) -> str:
        return f"<Outcome {self.result} at {self.sentAt:.3f}>"


class Load:
    """
    Steady load: a few client threads sending C{GET /ping} back to back on
    keep-alive connections, opening a new connection when the server closes
    one or after a few requests.

    Bounded: each thread stops at L{stop}, after C{maxSeconds}, or after
    C{maxRequests}, whichever comes first.
    """

    def __init__(
        self,
        port: int,
        clients: int = 4,
        requestsPerConnection: int = 5,
        maxSeconds: float = 60.0,
        maxRequests: int = 20000,
        tls: bool = False,
    ) -> None:
        """
        @param tls: whether the clients speak HTTPS (see L{RawClient}).
        """
        self.port = port
        self.tls = tls
        self.requestsPerConnection = requestsPerConnection
        self.deadline = time.monotonic() + maxSeconds
        self.maxRequests = maxRequests
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        """
        Stop the clients and wait for them.

        @return: every outcome, in the order the requests ended.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        with self._lock:
            return list(self.outcomes)

    def _running(self, made: int) -> bool:
        return (
            not self._stop.is_set()
            and made < self.maxRequests
            and time.monotonic() < self.deadline
        )

    def _record(self, sentAt: float, result: str) -> None:
        with self._lock:
            self.outcomes.append(Outcome(sentAt, time.monotonic(), result))

    def _client(self) -> None:
        made = 0
        while self._running(made):
            sentAt = time.monotonic()
            try:
                client = RawClient(self.port, timeout=10, tls=self.tls)
            except ConnectionRefusedError:
                self._record(sentAt, "connection refused")
                made += 1
                time.sleep(0.01)
                continue
            except OSError as e:
                self._record(sentAt, f"connect: {e!r}")
                made += 1
                time.sleep(0.01)
                continue
            with client:
                for _ in range(self.requestsPerConnection):
                    if not self._running(made):
                        break
                    made += 1
                    result, closing = self._request(client)
                    self._record(sentAt, result)
                    if result != "ok":
                        time.sleep(0.01)
                        break
                    if closing:
                        break
                    sentAt = time.monotonic()

    def _request(self, client: RawClient) -> tuple[str, bool]:
        """
        @return: what came of one C{GET /ping}, and whether the server is
            closing the connection after it.
        """
        try:
            client.send(get("/ping"))
            response = client.readResponse()
        except TimeoutError:
            return "timeout", True
        except OSError as e:
            return f"{type(e).__name__}: {e}", True
        if response.code != 200:
            return f"HTTP {response.code}", True
        return "ok", response.headers.get(b"connection") == b"close"


def failures(outcomes: Sequence[Outcome]) -> collections.Counter[str]:
    """
    @return: how many requests failed, by what the client saw.
    """
    return collections.Counter(o.result for o in outcomes if o.result != "ok")


def waitFor(
    condition: Callable[[], bool], timeout: float, what: Callable[[], str]
) -> None:
    """
    Poll C{condition} every 20 ms until true.

    @raise AssertionError: with C{what()} if it is still false after
        C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what())
        time.sleep(0.02)


class HAProxy(Process):
    """
    C{haproxy} running C{deploy/haproxy.cfg} in the foreground, with the
    given environment.
    """

    def __init__(
        self, executable: str, environ: dict[str, str], statsPort: int
    ) -> None:
        self.statsPort = statsPort
        super().__init__(
            [executable, "-db", "-f", HAPROXY_CFG],
            prefix="gracesvc-haproxy-",
            env=dict(os.environ, **environ),
        )

    def serverStates(self) -> dict[str, str]:
        """
        @return: the status of every server of the C{gracesvc} backend, as
            the stats page shows it (C{UP}, C{DOWN}, C{UP 1/2}, ...).
        """
        connection = http.client.HTTPConnection("127.0.0.1", self.statsPort, timeout=5)
        try:
            connection.request("GET", "/stats;csv")
            text = connection.getresponse().read().decode("utf-8").lstrip("# ")
        finally:
            connection.close()
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "gracesvc"
            and row["svname"] not in ("FRONTEND", "BACKEND")
        }

    def waitUntil(self, server: str, status: str, timeout: float = 15.0) -> None:
        def reached() -> bool:
            try:
                return self.serverStates().get(server) == status
            except OSError:
                return False

        waitFor(reached, timeout, lambda: f"{server} not {status}:\n{self.log()}")

    def log(self) -> str:
        return super().log()[-5000:]


class HAProxyTests(SynchronousTestCase):
    """
    Two gracesvc instances behind C{deploy/haproxy.cfg} (no retries, no
    redispatch), under steady load through HAProxy, each restarted in turn
    (SIGTERM, wait for exit, start again on the same port), twice.
    """

    def setUp(self) -> None:
        self.haproxyPath = haproxyExecutable()
        self.config = HAProxyConfig()

    def startInstance(self, port: int, drainDelay: float) -> Twistd:
        shutdownTimeout = gracesvcOptions(self.config.commands[0])["shutdown-timeout"]
        twistd = Twistd(
            "--drain-delay",
            f"{drainDelay:g}",
            "--shutdown-timeout",
            f"{shutdownTimeout:g}",
            "--ping-delay",
            "0.05",
            port=port,
        )
        self.addCleanup(twistd.kill)
        return twistd.waitUntilServing()

    def restartUnderLoad(self, drainDelay: float) -> tuple[list[Outcome], list[str]]:
        """
        Run the scenario, and print what the clients saw.

        @return: the outcome of every request, and the log of every
            instance that was stopped.
        """
        ports = {"app1": freePort(), "app2": freePort()}
        lbPort, statsPort = freePort(), freePort()
        environ = dict(
            FAST_CHECKS,
            GRACESVC_LB_BIND=f"127.0.0.1:{lbPort}",
            GRACESVC_STATS_BIND=f"127.0.0.1:{statsPort}",
            **{
                variable: f"127.0.0.1:{ports[server]}"
                for server, variable in self.config.servers.items()
            },
        )
        instances = {
            name: self.startInstance(port, drainDelay) for name, port in ports.items()
        }
        haproxy = HAProxy(self.haproxyPath, environ, statsPort)
        self.addCleanup(haproxy.kill)
        for name in instances:
            haproxy.waitUntil(name, "UP")
        load = Load(lbPort)
        self.addCleanup(load.stop)
        stoppedLogs = []
        signalledAt = []
        time.sleep(0.5)
        for _ in range(2):
            for name, old in list(instances.items()):
                signalledAt.append(old.signal(signal.SIGTERM))
                self.assertEqual(old.wait(20), -signal.SIGTERM, old.log())
                stoppedLogs.append(old.log())
                instances[name] = self.startInstance(ports[name], drainDelay)
                haproxy.waitUntil(name, "UP")
                time.sleep(0.3)
        outcomes = load.stop()
        self.assertEqual(set(haproxy.serverStates().values()), {"UP"}, haproxy.log())
        failed = failures(outcomes)
        perRestart = [
            sum(1 for o in outcomes if o.result != "ok" and start <= o.sentAt < end)
            for start, end in zip(
                signalledAt, signalledAt[1:] + [math.inf], strict=False
            )
        ]
        print(
            f"\nHAProxy, --drain-delay {drainDelay:g}: {len(outcomes)} requests, "
            f"{sum(failed.values())} failed (per restart: {perRestart}) {dict(failed)}"
        )
        return outcomes, stoppedLogs

    def test_restartsLoseNothingWithTheDrainDelay(self) -> None:
        """
        With C{--drain-delay} sized as the config's comments say, no request
        fails, and every stopped instance drained without cutting one.
        """
        drainDelay = self.config.drainDelayFor(FAST_CHECKS)
        outcomes, logs = self.restartUnderLoad(drainDelay)
        self.assertEqual(failures(outcomes), collections.Counter())
        self.assertGreater(len(outcomes), 200)
        self.assertEqual(len(logs), 4)
        for log in logs:
            self.assertIn("Server exiting (drained)", log)
            self.assertIn(" 0 cut", log)
            self.assertNotIn("Traceback", log)

    def test_restartsFailWithoutTheDrainDelay(self) -> None:
        """
        The same with C{--drain-delay 0}: the port closes before HAProxy has
        marked the instance DOWN, and HAProxy, without retries, answers the
        requests it still sends there with an error.  This is why the delay
        exists, and shows that the load catches failures.
        """
        outcomes, _ = self.restartUnderLoad(0)
        self.assertGreater(sum(failures(outcomes).values()), 0)


_SYSTEMD_EXEC = (
    # What systemd does between fork and exec for a socket-activated
    # service: the listening socket becomes fd 3 and LISTEN_PID is the pid
    # of the process that will run the service (known only in the child).
    "import os, signal, sys\n"
    "fd = int(sys.argv[1])\n"
    "if fd != 3:\n"
    "    os.dup2(fd, 3)\n"
    "    os.close(fd)\n"
    "os.environ['LISTEN_PID'] = str(os.getpid())\n"
    "signal.signal(signal.SIGINT, signal.SIG_DFL)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class SocketActivated(Process):
    """
    The command of C{deploy/gracesvc.service}, started as systemd starts it
    from C{deploy/gracesvc.socket}, on a listening socket the test owns.
    """

    def __init__(self, listening: socket.socket, fdName: str, *extraArgs: str) -> None:
        argv = shlex.split(systemdUnit(SYSTEMD_SERVICE)["Service"]["ExecStart"])
        argv[0] = TWISTD
        argv += list(extraArgs)
        fd = listening.fileno()
        super().__init__(
            [sys.executable, "-c", _SYSTEMD_EXEC, str(fd), *argv],
            prefix="gracesvc-systemd-",
            env=dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES=fdName),
            passFds=(fd,),
        )

    def answered(self) -> int:
        """
        @return: how many C{GET /ping} it has answered with 200, from its
            access log.
        """
        return self.log().count('"GET /ping HTTP/1.1" 200')

    def waitUntilAnswering(self, timeout: float = 15.0) -> SocketActivated:
        """
        Wait until it has answered a C{/ping} (the load sends them).
        """

        def answering() -> bool:
            if self.exited:
                raise AssertionError(f"twistd exited early:\n{self.log()}")
            return self.answered() > 0

        waitFor(answering, timeout, lambda: f"not answering:\n{self.log()}")
        return self

    def stop(self, timeout: float = 30.0) -> int:
        """
        SIGTERM, as systemd's KillSignal, and wait for exit.

        @return: the exit status.
        """
        self.signal(signal.SIGTERM)
        return self.wait(timeout)


class SystemdSocketTests(SynchronousTestCase):
    """
    The test plays systemd: it owns the listening socket of
    C{deploy/gracesvc.socket} (on a free loopback port instead of 8080) and
    starts C{deploy/gracesvc.service}'s command with it.
    """

    def listeningSocket(self) -> socket.socket:
        section = systemdUnit(SYSTEMD_SOCKET)["Socket"]
        listening = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listening.close)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listening.bind(("127.0.0.1", 0))
        listening.listen(int(section.get("Backlog", "128")))
        return listening

    def start(self, listening: socket.socket) -> SocketActivated:
        fdName = systemdUnit(SYSTEMD_SOCKET)["Socket"].get(
            "FileDescriptorName", "gracesvc.socket"
        )
        process = SocketActivated(listening, fdName, "--ping-delay", "0.05")
        self.addCleanup(process.kill)
        return process

    def test_replacementsUnderLoadLoseNothing(self) -> None:
        """
        Three replacements under load, two with overlap (start the new
        process, wait until it answers, SIGTERM the old) and one plain
        restart (SIGTERM, wait for exit, a pause, start): no request fails,
        no connection is refused, and the requests sent while no process ran
        wait in the socket's backlog and are answered.
        """
        listening = self.listeningSocket()
        port = listening.getsockname()[1]
        current = self.start(listening)
        with RawClient(port) as client:
            client.send(get("/healthz"))
            self.assertEqual(client.readResponse().code, 200)
        load = Load(port)
        self.addCleanup(load.stop)
        current.waitUntilAnswering()
        stopped: list[tuple[SocketActivated, int]] = []
        restartedAt: list[float] = []
        for overlap in (True, False, True):
            if overlap:
                new = self.start(listening).waitUntilAnswering()
                stopped.append((current, current.stop()))
            else:
                stopped.append((current, current.stop()))
                time.sleep(0.3)
                restartedAt.append(time.monotonic())
                new = self.start(listening).waitUntilAnswering()
            current = new
            time.sleep(0.5)
        outcomes = load.stop()
        stopped.append((current, current.stop()))

        failed = failures(outcomes)
        # Sent before the new process was started, answered well after: they
        # waited in the socket's backlog while no process was accepting.
        [startedAt] = restartedAt
        waited = [o for o in outcomes if o.sentAt < startedAt < o.doneAt - 0.2]
        print(
            f"\nsystemd socket, 3 replacements: {len(outcomes)} requests, "
            f"{sum(failed.values())} failed {dict(failed)}, {len(waited)} "
            f"waited in the backlog through the plain restart"
        )
        self.assertEqual(failed, collections.Counter())
        self.assertGreater(len(waited), 0)
        self.assertGreater(len(outcomes), 100)
        for process, status in stopped:
            self.assertEqual(status, -signal.SIGTERM, process.log())
            log = process.log()
            self.assertIn("Server exiting (drained)", log)
            self.assertIn(" 0 cut", log)
            self.assertNotIn("Traceback", log)
            self.assertGreater(process.answered(), 0)
        self.assertEqual(sum(p.answered() for p, _ in stopped), len(outcomes))
