"""
The master's listening sockets (L{gracesvc._workers.sockets}), without
binding a port.
"""

from __future__ import annotations

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._process.service import ListenFailed
from gracesvc._workers.sockets import SharedSocket, SocketSpec, openSharedSockets


class SharedSocketTests(SynchronousTestCase):
    def test_stopListeningOnlyCloses(self) -> None:
        """
        The master's copy is closed, once, and a UNIX socket's path is
        removed; the socket is never shut down, which would stop it in
        every worker.
        """
        path = self.mktemp()
        open(path, "w").close()
        sock = socket.socket(socket.AF_UNIX)
        shared = SharedSocket("unix:x", sock, unlinkPath=path)
        shared.stopListening()
        shared.stopListening()
        self.assertTrue(shared.closed)
        self.assertEqual(sock.fileno(), -1)
        self.assertFalse(os.path.exists(path))


class OpenSharedSocketsTests(SynchronousTestCase):
    def test_failureClosesWhatWasOpened(self) -> None:
        """
        A listener that cannot be made is a L{ListenFailed} naming it and
        the reason; the sockets made before it are closed.
        """
        inherited = socket.socket()
        self.addCleanup(inherited.close)
        fd = os.dup(inherited.fileno())
        missing = "/nonexistent/gracesvc/s.sock"
        with self.assertRaises(ListenFailed) as caught:
            openSharedSockets(
                [
                    SocketSpec("systemd:domain=INET:index=0", ("fd", fd, 2), False),
                    SocketSpec(f"unix:{missing}", ("unix", missing, 50, 0o666), False),
                ],
                workers=2,
                reusePort=True,
            )
        self.assertEqual(
            str(caught.exception),
            f"cannot listen on unix:{missing}: No such file or directory",
        )
        with self.assertRaises(OSError):
            os.fstat(fd)

    def test_inheritedSocketsAreAdopted(self) -> None:
        inherited = socket.socket()
        self.addCleanup(inherited.close)
        fd = os.dup(inherited.fileno())
        [shared] = openSharedSockets(
            [SocketSpec("systemd:domain=INET:index=0", ("fd", fd, 2), False)],
            workers=2,
            reusePort=True,
        )
        self.addCleanup(shared.stopListening)
        self.assertEqual((shared.fileno(), shared.slot), (fd, None))
