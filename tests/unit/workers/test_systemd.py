"""
systemd's C{Type=notify} (L{gracesvc._workers.systemd}).
"""

from __future__ import annotations

import os
import socket

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._workers.systemd import systemdNotifier


class SystemdNotifierTests(SynchronousTestCase):
    def test_systemdNotifier(self) -> None:
        """
        The state goes to C{NOTIFY_SOCKET} as one datagram, and the
        variable is taken out of the environment the workers inherit.
        """
        self.assertIsNone(systemdNotifier({})("READY=1"))
        path = os.path.join(self.mktemp() + "-notify")
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        self.addCleanup(os.unlink, path)
        environ = {"NOTIFY_SOCKET": path, "HOME": "/"}
        notify = systemdNotifier(environ)
        self.assertEqual(environ, {"HOME": "/"})
        notify("READY=1")
        self.assertEqual(receiver.recv(100), b"READY=1")
