"""
The deployment examples in C{deploy/}, read as their tools read them, and
run as systemd runs them: what the static checks of C{tests/unit} and the
end-to-end tests of C{tests/e2e} share.
"""

from __future__ import annotations

import collections
import configparser
import os
import re
import shlex
import signal
import socket
import sys
import time
from collections.abc import Sequence

from twisted.internet.testing import MemoryReactor
from twisted.trial.unittest import SynchronousTestCase

from gracesvc.tap import Options
from gracesvc.testing import get
from gracesvc.testing.process import TWISTD, Process, RawClient
from tests.support.clients import Load, failures
from tests.support.endtoend import waitFor

DEPLOY = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "deploy",
)
HAPROXY_CFG = os.path.join(DEPLOY, "haproxy.cfg")
SYSTEMD_SERVICE = os.path.join(DEPLOY, "gracesvc.service")
SYSTEMD_SOCKET = os.path.join(DEPLOY, "gracesvc.socket")
#: The unit of C{--workers} under systemd.
WORKERS_SERVICE = os.path.join(DEPLOY, "gracesvc-workers.service")
KUBERNETES_YAML = os.path.join(DEPLOY, "kubernetes.yaml")


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


# Running them.


def pingsAnswered(process: Process) -> int:
    """
    @return: how many C{GET /ping} C{process} (a C{twistd gracesvc}) has
        answered with 200, from its access log.
    """
    return process.log().count('"GET /ping HTTP/1.1" 200')


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
    The command of a service unit of C{deploy/} (C{gracesvc.service} unless
    told), started as systemd starts it from C{deploy/gracesvc.socket}, on
    a listening socket the test owns.
    """

    def __init__(
        self,
        listening: socket.socket,
        fdName: str,
        *extraArgs: str,
        unit: str = SYSTEMD_SERVICE,
    ) -> None:
        """
        @param extraArgs: options added to the unit's command.
        @param unit: the path of the service unit.
        """
        argv = shlex.split(systemdUnit(unit)["Service"]["ExecStart"])
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
        @return: how many C{GET /ping} it has answered with 200.
        """
        return pingsAnswered(self)

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


class SystemdSocketTestCase(SynchronousTestCase):
    """
    The test plays systemd: it owns the listening socket of
    C{deploy/gracesvc.socket} (on a free loopback port instead of 8080) and
    starts a service unit's command with it.

    @cvar unit: the path of the service unit.
    @cvar args: options added to the unit's command.
    """

    unit = SYSTEMD_SERVICE
    args: tuple[str, ...] = ("--ping-delay", "0.05")

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
        process = SocketActivated(listening, fdName, *self.args, unit=self.unit)
        self.addCleanup(process.kill)
        return process

    def assertReplacementsLoseNothing(self) -> None:
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
                # No process accepts meanwhile: the requests sent now wait
                # in the socket's backlog, which is what is tested.
                time.sleep(0.3)
                restartedAt.append(time.monotonic())
                new = self.start(listening).waitUntilAnswering()
            current = new
            load.waitForAnswers(20)
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
