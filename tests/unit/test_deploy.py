"""
The deployment examples in C{deploy/}, read without running anything: the
Kubernetes manifest validates against the Kubernetes schemas (offline, with
C{kubernetes-validate}), and the timeouts in every file agree with each
other and with the health checks.  C{tests/e2e/test_deploy.py} runs them.
"""

from __future__ import annotations

import shlex
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from tests.support.deploy import (
    KUBERNETES_YAML,
    SYSTEMD_SERVICE,
    SYSTEMD_SOCKET,
    WORKERS_SERVICE,
    HAProxyConfig,
    gracesvcOptions,
    haproxySeconds,
    requiredDrainDelay,
    systemdUnit,
)

#: The Kubernetes version the manifest is validated against: old enough to
#: be what clusters run, new enough for policy/v1.
KUBERNETES_VERSION = "1.30"


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


class WorkersUnitTests(SynchronousTestCase):
    def test_reloadStopAndTimeout(self) -> None:
        """
        C{systemctl reload} sends SIGHUP to the master; C{systemctl stop}
        SIGTERM to the master alone, waiting longer than its cap and the
        exits before SIGKILL; the command is the single-process one with
        C{--workers}.
        """
        service = systemdUnit(WORKERS_SERVICE)["Service"]
        self.assertEqual(service["Type"], "notify")
        self.assertEqual(service["ExecReload"], "/bin/kill -HUP $MAINPID")
        self.assertEqual(service["KillMode"], "mixed")
        self.assertEqual(service["KillSignal"], "SIGTERM")
        options = gracesvcOptions(shlex.split(service["ExecStart"])[1:])
        self.assertEqual(options["workers"], 2)
        self.assertGreater(
            float(service["TimeoutStopSec"]), options["shutdown-timeout"] + 1.5
        )
        single = shlex.split(systemdUnit(SYSTEMD_SERVICE)["Service"]["ExecStart"])
        workers = shlex.split(service["ExecStart"])
        self.assertEqual([a for a in workers if a not in ("--workers", "2")], single)
