"""
End to end as root: C{twistd --uid nobody --gid nogroup gracesvc} on a
privileged port.

twistd listens (C{privilegedStartService}), then gives up root, then starts
the service.  After the switch to C{nobody} the process must still be able
to read its Python: pyenv's Pythons on this machine image sit in a
directory only root may read.  So, once per test run, a venv is built from
Debian's C{/usr/bin/python3} in a temporary directory that C{nobody} can
read, and a copy of this checkout is installed into it, not editable (pip
may reach the package index for the dependencies).  That build takes most
of this module's time.

Skipped unless run as root with a C{/usr/bin/python3} (3.11 or later) that
can make a venv (Debian's C{python3-venv}).  Every wait is bounded; every
process is killed by its pid and the directory removed.
"""

from __future__ import annotations

import atexit
import errno
import grp
import os
import pwd
import random
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
from typing import ClassVar
from unittest import SkipTest

import pytest
from twisted.trial.unittest import SynchronousTestCase

from gracesvc.testing import get
from gracesvc.testing.process import (
    InFlight,
    Process,
    RawClient,
    waitUntilRefused,
)
from tests.support.endtoend import waitForInFlight

SYSTEM_PYTHON = "/usr/bin/python3"
USER, GROUP = "nobody", "nogroup"
CHECKOUT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
#: What of the checkout an install needs.
SOURCES = ("pyproject.toml", "setup.cfg", "README.md", "gracesvc", "twisted")


def _run(argv: list[str], timeout: float) -> None:
    # Without the runner's PYTHONPATH (trial -j gives its workers one naming
    # the test venv's site-packages), through which pip would find the
    # dependencies installed already and leave the new venv without them.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"{' '.join(argv)}: exit status {result.returncode}\n"
            f"{result.stdout}{result.stderr}"
        )


class NobodyVenv:
    """
    A venv of Debian's Python with this checkout installed, readable by
    C{nobody} along the whole path.

    @ivar directory: the temporary directory that holds it all.
    @ivar twistd: its C{twistd}.
    """

    def __init__(self) -> None:
        self.directory = tempfile.mkdtemp(prefix="gracesvc-privileged-")
        atexit.register(self.remove)
        self.twistd = os.path.join(self.directory, "venv", "bin", "twistd")

    @classmethod
    def build(cls) -> NobodyVenv:
        """
        Build it.

        @raise SkipTest: if C{/usr/bin/python3} cannot make a venv.
        @raise AssertionError: if installing the checkout fails.
        """
        version = subprocess.run(
            [SYSTEM_PYTHON, "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if version.stdout.strip() != "True":
            raise SkipTest(f"{SYSTEM_PYTHON} is older than gracesvc's Python 3.11")
        self = cls()
        venv = os.path.join(self.directory, "venv")
        made = subprocess.run(
            [SYSTEM_PYTHON, "-m", "venv", venv],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        if made.returncode != 0:
            self.remove()
            raise SkipTest(
                f"{SYSTEM_PYTHON} -m venv failed (apt-get install python3-venv): "
                f"{made.stderr.strip()[-200:]}"
            )
        # A copy, so that the build writes nothing into the checkout.
        source = os.path.join(self.directory, "source")
        os.mkdir(source)
        for name in SOURCES:
            path = os.path.join(CHECKOUT, name)
            if os.path.isdir(path):
                shutil.copytree(
                    path,
                    os.path.join(source, name),
                    ignore=shutil.ignore_patterns("__pycache__", "dropin.cache"),
                )
            else:
                shutil.copy(path, source)
        _run(
            [os.path.join(venv, "bin", "python"), "-m", "pip", "install", "-q", source],
            timeout=600,
        )
        # Whatever the umask was, nobody must read and run all of it.
        _readableByAll(self.directory)
        return self

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def _readableByAll(top: str) -> None:
    for directory, _, files in os.walk(top):
        os.chmod(directory, 0o755)
        for name in files:
            path = os.path.join(directory, name)
            if not os.path.islink(path):
                mode = os.stat(path).st_mode
                os.chmod(path, mode | stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)


def privilegedPort() -> int:
    """
    @return: a port below 1024 (from 81) free on 127.0.0.1 now, tried in
        random order, so that two runs at once seldom pick the same.
    """
    ports = list(range(81, 1024))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    continue
                raise
            return port
    raise AssertionError("no free port below 1024 on 127.0.0.1")


def ids(pid: int) -> tuple[list[int], list[int]]:
    """
    @return: the real, effective, saved and file-system uids and gids of
        process C{pid}.
    """
    with open(f"/proc/{pid}/status") as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line)
    return (
        [int(x) for x in fields["Uid"].split()],
        [int(x) for x in fields["Gid"].split()],
    )


# The nobody-readable venv is built once per process, by the first test that
# runs twistd as nobody, and removed as the process exits (not in
# tearDownClass: pytest tears a class down whenever another class's test runs
# in between, and the next test of this one would build it again).  The mark
# asks pytest-xdist's --dist loadgroup to run these tests in one worker;
# pytest-xdist 3.8 groups by renaming item._nodeid, which pytest 9.2 no longer
# reads, so there each worker that runs such a test builds its own.
@pytest.mark.xdist_group("privileged")
class PrivilegedPortTests(SynchronousTestCase):
    """
    C{twistd -n --uid nobody --gid nogroup gracesvc} on a port below 1024.
    """

    venv: ClassVar[NobodyVenv | None] = None

    def setUp(self) -> None:
        if os.geteuid() != 0:
            raise SkipTest("needs root: twistd --uid switches from root to nobody")
        if not os.access(SYSTEM_PYTHON, os.X_OK):
            raise SkipTest(f"needs {SYSTEM_PYTHON}, a Python that nobody can read")
        try:
            self.uid = pwd.getpwnam(USER).pw_uid
            self.gid = grp.getgrnam(GROUP).gr_gid
        except KeyError as e:
            raise SkipTest(f"no such user or group: {e}") from None
        # The checkout's own twistd, for a process that never gives up root.
        self.twistdPath = os.path.join(os.path.dirname(sys.executable), "twistd")
        self.port = privilegedPort()

    def runAsNobody(self) -> None:
        """
        Run twistd from the venv that C{nobody} can read, built on first use.
        """
        if type(self).venv is None:
            type(self).venv = NobodyVenv.build()
        venv = type(self).venv
        assert venv is not None
        self.twistdPath = venv.twistd

    def argv(self, *args: str) -> list[str]:
        return [
            self.twistdPath,
            "-n",
            "--uid",
            USER,
            "--gid",
            GROUP,
            "--pidfile=",
            "gracesvc",
            "--listen",
            f"tcp:{self.port}:interface=127.0.0.1",
            *args,
        ]

    def env(self) -> dict[str, str]:
        # Nothing of the test's environment (a PYTHONPATH, a HOME only root
        # may read) reaches the process.
        return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}

    def waitUntilServing(self, twistd: Process, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if twistd.exited:
                raise AssertionError(f"twistd exited early:\n{twistd.log()}")
            try:
                with RawClient(self.port, timeout=1) as client:
                    client.send(get("/healthz", "Connection: close"))
                    if client.readResponse().code == 200:
                        return
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"not serving after {timeout}s:\n{twistd.log()}")

    def test_servesAsNobodyAndDrains(self) -> None:
        """
        It listens on the privileged port, serves C{/healthz} as C{nobody}
        (real and effective ids), and 20 C{/ping} in flight at SIGINT all
        get pong before it exits with SIGINT's status.
        """
        self.runAsNobody()
        twistd = Process(self.argv("--ping-delay", "1"), env=self.env())
        self.addCleanup(twistd.kill)
        self.waitUntilServing(twistd)
        uids, gids = ids(twistd.pid)
        self.assertEqual(uids[:2], [self.uid, self.uid])
        self.assertEqual(gids[:2], [self.gid, self.gid])

        requests = [InFlight(self.port, get("/ping")) for _ in range(20)]
        waitForInFlight(self.port, 20)
        twistd.signal(signal.SIGINT)
        waitUntilRefused(self.port)
        status = twistd.wait(10)
        for r in requests:
            r.join(5)
        self.assertEqual(
            [(r.error, r.response and r.response.body) for r in requests],
            [(None, b'{"message": "pong"}')] * 20,
        )
        self.assertEqual(status, -signal.SIGINT)
        log = twistd.log()
        self.assertIn(f"set uid/gid {self.uid}/{self.gid}", log)
        self.assertIn("Shutdown Server ... (SIGINT): 20 requests in flight", log)
        self.assertIn("20 requests completed during the drain, 0 cut", log)
        self.assertNotIn("Traceback", log)

    def test_portInUse(self) -> None:
        """
        A privileged port already in use is still one log line naming the
        endpoint and exit status 1, before any switch to C{nobody} (so the
        checkout's own twistd, which C{nobody} could not read, does).
        """
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", self.port))
            taken.listen()
            result = subprocess.run(
                self.argv(),
                capture_output=True,
                text=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
                env=self.env(),
                cwd=tempfile.gettempdir(),
            )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        [line] = [x for x in output.splitlines() if "cannot listen" in x]
        self.assertIn(f"cannot listen on tcp:{self.port}:interface=127.0.0.1", line)
        self.assertIn("Address already in use", line)
        self.assertNotIn("set uid/gid", output)
