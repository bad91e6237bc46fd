"""
The listen backlog (L{gracesvc._process.backlog}), without binding a port.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins import linux
from gracesvc._process.backlog import Backlog, defaultBacklog, effectiveBacklog


class DescriptionTests(SynchronousTestCase):
    def test_appendedWhereItIsTaken(self) -> None:
        backlog = Backlog(2048)
        for description in ("tcp:8080", "TCP6:8080", "unix:/run/g.sock"):
            self.assertEqual(
                backlog.describe(description), f"{description}:backlog=2048"
            )
        ssl = "ssl:8443:privateKey=k.pem:certKey=c.pem"
        self.assertEqual(backlog.describe(ssl), ssl + ":backlog=2048")

    def test_theDescriptionsOwnWins(self) -> None:
        for description in ("tcp:8080:backlog=10", "unix:/s:backlog=1:mode=600"):
            self.assertEqual(Backlog(2048).describe(description), description)

    def test_othersLeftAlone(self) -> None:
        for description in ("systemd:domain=INET:index=0", "stdio:"):
            self.assertEqual(Backlog(2048).describe(description), description)


class FakeListeningSocket:
    """
    A listening TCP socket whose kernel backlog is C{backlog}.
    """

    family = socket.AF_INET

    def __init__(self, backlog: int | None) -> None:
        self.backlog = backlog
        self.listened: list[int] = []

    def listen(self, backlog: int) -> None:
        self.listened.append(backlog)


class AdoptedTests(SynchronousTestCase):
    def adopt(self, backlog: Backlog, current: int | None) -> list[int]:
        sock = FakeListeningSocket(current)

        def listenBacklog(s: Any) -> int | None:
            return current

        self.patch(linux, "listenBacklog", listenBacklog)
        from gracesvc._process import backlog as module

        self.patch(module, "listenBacklog", listenBacklog)
        backlog.adopt(sock)  # type: ignore[arg-type]
        return sock.listened

    def test_aSmallerBacklogIsRaised(self) -> None:
        self.assertEqual(self.adopt(Backlog(2048), 128), [2048])

    def test_aLargerOneIsKeptUnlessGiven(self) -> None:
        """
        A service manager's C{Backlog=} larger than the default stays; a
        C{--backlog} given applies, larger or smaller.
        """
        self.assertEqual(self.adopt(Backlog(2048), 4096), [])
        self.assertEqual(self.adopt(Backlog(100, given=True), 4096), [100])
        self.assertEqual(self.adopt(Backlog(2048), None), [])


class DefaultTests(SynchronousTestCase):
    def test_kernelsOr2048(self) -> None:
        from gracesvc._process import backlog as module

        self.patch(module, "kernelMaxBacklog", lambda: 4096)
        self.assertEqual(defaultBacklog(), 2048)
        self.patch(module, "kernelMaxBacklog", lambda: 512)
        self.assertEqual(defaultBacklog(), 512)

    def test_kernelMaxRead(self) -> None:
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        path = os.path.join(directory, "somaxconn")
        with open(path, "w") as f:
            f.write("4096\n")
        self.assertEqual(linux.kernelMaxBacklog(path), 4096)
        self.assertEqual(linux.kernelMaxBacklog(path + ".missing"), socket.SOMAXCONN)

    def test_unixBacklogIsWhatWasAskedClamped(self) -> None:
        from gracesvc._process import backlog as module

        self.patch(module, "kernelMaxBacklog", lambda: 4096)
        sock = socket.socket(socket.AF_UNIX)
        self.addCleanup(sock.close)
        self.assertEqual(effectiveBacklog(sock, 100), 100)
        self.assertEqual(effectiveBacklog(sock, 10000), 4096)
        self.assertIsNone(effectiveBacklog(sock, None))
        self.assertIsNone(effectiveBacklog(None, 100))
