"""
The deployment examples in C{deploy/}, run as they are
(C{tests/unit/test_deploy.py} checks the files without running anything).

C{deploy/haproxy.cfg} runs with a real HAProxy in front of two real
C{twistd -n gracesvc}, and the test plays systemd's part for
C{deploy/gracesvc.service}: each restarts or replaces gracesvc under steady
load and counts what the clients saw.  Every process is started on free
loopback ports and killed by its pid when the test ends; every wait is
bounded.
"""

from __future__ import annotations

import collections
import csv
import http.client
import io
import math
import os
import shutil
import signal
import subprocess
from unittest import SkipTest

from twisted.trial.unittest import SynchronousTestCase

from gracesvc.testing.process import Process, Twistd, freePort
from tests.support.clients import Load, Outcome, failures
from tests.support.deploy import (
    HAPROXY_CFG,
    HAProxyConfig,
    SystemdSocketTestCase,
    gracesvcOptions,
    pingsAnswered,
)
from tests.support.endtoend import waitFor

#: The health check interval and fall count the end-to-end test runs
#: C{deploy/haproxy.cfg} with: fast, so that the drain delay the file
#: prescribes for them is short.
FAST_CHECKS = {"GRACESVC_CHECK_INTER": "100ms", "GRACESVC_CHECK_FALL": "2"}


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


class HAProxyCheckTests(SynchronousTestCase):
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


class HAProxyScenario(SynchronousTestCase):
    """
    Two gracesvc instances behind C{deploy/haproxy.cfg} (no retries, no
    redispatch), under steady load through HAProxy, each restarted in turn
    (SIGTERM, wait for exit, start again on the same port), twice.

    @cvar app: the options that choose the app the instances serve.
    """

    app: tuple[str, ...] = ("--ping-delay", "0.05")

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
            *self.app,
            port=port,
        )
        self.addCleanup(twistd.kill)
        return twistd.waitUntilServing()

    def waitUntilAnswering(self, instance: Twistd) -> None:
        """
        Wait until HAProxy sends C{instance} its share of the load: it has
        answered a few C{/ping}.
        """
        waitFor(
            lambda: pingsAnswered(instance) >= 10,
            15,
            lambda: f"no load through HAProxy:\n{instance.log()}",
        )

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
        for instance in instances.values():
            self.waitUntilAnswering(instance)
        for _ in range(2):
            for name, old in list(instances.items()):
                signalledAt.append(old.signal(signal.SIGTERM))
                self.assertEqual(old.wait(20), -signal.SIGTERM, old.log())
                stoppedLogs.append(old.log())
                instances[name] = self.startInstance(ports[name], drainDelay)
                haproxy.waitUntil(name, "UP")
                self.waitUntilAnswering(instances[name])
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

    def assertRestartsLoseNothing(self) -> None:
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


class HAProxyTests(HAProxyScenario):
    def test_restartsLoseNothingWithTheDrainDelay(self) -> None:
        """
        See L{HAProxyScenario.assertRestartsLoseNothing}.
        """
        self.assertRestartsLoseNothing()

    def test_restartsFailWithoutTheDrainDelay(self) -> None:
        """
        The same with C{--drain-delay 0}: the port closes before HAProxy has
        marked the instance DOWN, and HAProxy, without retries, answers the
        requests it still sends there with an error.  This is why the delay
        exists, and shows that the load catches failures.
        """
        outcomes, _ = self.restartUnderLoad(0)
        self.assertGreater(sum(failures(outcomes).values()), 0)


class ASGIHAProxyTests(HAProxyScenario):
    """
    The same with an ASGI application (C{--asgi}).
    """

    app = ("--asgi", "tests.apps.asgiraw:app")

    def test_restartsLoseNothingWithTheDrainDelay(self) -> None:
        """
        See L{HAProxyScenario.assertRestartsLoseNothing}.
        """
        self.assertRestartsLoseNothing()


class SystemdSocketTests(SystemdSocketTestCase):
    def test_replacementsUnderLoadLoseNothing(self) -> None:
        """
        Three replacements of C{deploy/gracesvc.service}'s command under
        load: see L{SystemdSocketTestCase.assertReplacementsLoseNothing}.
        """
        self.assertReplacementsLoseNothing()


class ASGISystemdSocketTests(SystemdSocketTestCase):
    """
    The same with an ASGI application (C{--asgi}, its lifespan run before
    each process accepts from the socket systemd holds).
    """

    args = ("--asgi", "tests.apps.asgiraw:app")

    def test_replacementsUnderLoadLoseNothing(self) -> None:
        """
        Three replacements under load: see
        L{SystemdSocketTestCase.assertReplacementsLoseNothing}.
        """
        self.assertReplacementsLoseNothing()
