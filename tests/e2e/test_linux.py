"""
Pins for what gracesvc reads from the Linux kernel
(L{gracesvc._pins.linux}), on real loopback sockets: if one fails on a new
kernel, the backlog logged and the write timeout's progress are wrong.
"""

from __future__ import annotations

import socket
import time

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins import linux


class TCPInfoTests(SynchronousTestCase):
    def listening(self, backlog: int) -> socket.socket:
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.bind(("127.0.0.1", 0))
        sock.listen(backlog)
        return sock

    def test_listenBacklog(self) -> None:
        """
        C{tcpi_sacked} of a listening socket is its backlog, as clamped by
        C{net.core.somaxconn}, and follows a second C{listen()}.
        """
        sock = self.listening(300)
        self.assertEqual(linux.listenBacklog(sock), 300)
        sock.listen(10**6)
        self.assertEqual(linux.listenBacklog(sock), linux.kernelMaxBacklog())

    def test_bytesAcknowledged(self) -> None:
        """
        C{tcpi_bytes_acked} counts what the peer acknowledged: all of it
        once the peer's kernel has it.
        """
        server = self.listening(5)
        client = socket.create_connection(server.getsockname())
        self.addCleanup(client.close)
        accepted, _ = server.accept()
        self.addCleanup(accepted.close)
        before = linux.bytesAcknowledged(accepted)
        assert before is not None
        accepted.sendall(b"x" * 10000)
        deadline = time.monotonic() + 5
        while linux.bytesAcknowledged(accepted) != before + 10000:
            self.assertLess(time.monotonic(), deadline)
            time.sleep(0.01)

    def test_notTCP(self) -> None:
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        self.assertIsNone(linux.listenBacklog(a))
        self.assertIsNone(linux.bytesAcknowledged(a))
