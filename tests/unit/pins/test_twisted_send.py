"""
Pins for the eager send (L{gracesvc._pins.twisted_send}): the write
buffer of Twisted's C{FileDescriptor} (C{dataBuffer}, C{_tempDataLen}),
its C{connected} and C{disconnecting}, and C{tcp.Connection}'s C{socket}
and C{TLS}.  If one fails after a Twisted upgrade, the ASGI HTTP/1.1
path may reorder or lose bytes: adapt L{gracesvc._pins.twisted_send}.
"""

from __future__ import annotations

import socket

from twisted.internet import tcp
from twisted.internet.protocol import Protocol
from twisted.internet.testing import MemoryReactor, StringTransport
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._pins.twisted_send import eagerSocket, sendNow


def read(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


class SendNowTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.server, self.client = socket.socketpair()
        self.server.setblocking(False)
        self.client.setblocking(False)
        self.addCleanup(self.server.close)
        self.addCleanup(self.client.close)
        self.reactor = MemoryReactor()
        self.connection = tcp.Connection(
            self.server,
            Protocol(),
            self.reactor,
        )
        self.connection.connected = 1

    def buffered(self) -> int:
        return len(self.connection.dataBuffer) + self.connection._tempDataLen

    def test_eagerSocket(self) -> None:
        """
        C{tcp.Connection.socket} is the connection's socket; C{TLS} is
        false until C{startTLS}.
        """
        self.assertIs(eagerSocket(self.connection), self.server)
        self.connection.TLS = True
        self.assertIsNone(eagerSocket(self.connection))
        self.assertIsNone(eagerSocket(StringTransport()))

    def test_sentAtOnce(self) -> None:
        """
        With nothing buffered, the bytes reach the socket now, and nothing
        is left to Twisted's next writable event.
        """
        sendNow(self.connection, self.server, b"hello")
        self.assertEqual(read(self.client), b"hello")
        self.assertEqual(self.buffered(), 0)
        self.assertNotIn(self.connection, self.reactor.writers)

    def test_behindBufferedBytes(self) -> None:
        """
        C{_tempDataLen}: bytes buffered by C{write} go first, so new ones
        are buffered behind them.
        """
        self.connection.write(b"first")
        sendNow(self.connection, self.server, b"second")
        self.assertEqual(read(self.client), b"")
        self.assertEqual(self.buffered(), len(b"firstsecond"))
        self.connection.doWrite()
        self.assertEqual(read(self.client), b"firstsecond")

    def test_behindDataBuffer(self) -> None:
        """
        C{dataBuffer}: what a previous C{doWrite} could not send goes first.
        """
        self.connection.dataBuffer = b"left over"
        sendNow(self.connection, self.server, b"!")
        self.assertEqual(read(self.client), b"")
        self.assertEqual(self.connection._tempDataLen, 1)

    def test_restBuffered(self) -> None:
        """
        What the socket does not take is buffered by Twisted, in order.
        """
        data = bytes(range(256)) * 40000
        sendNow(self.connection, self.server, data)
        left = self.buffered()
        self.assertGreater(left, 0)
        self.assertLess(left, len(data))
        got = b""
        while len(got) < len(data):
            got += read(self.client)
            if self.buffered():
                self.connection.doWrite()
        self.assertEqual(got, data)

    def test_notWhileDisconnecting(self) -> None:
        """
        C{disconnecting}: a connection closing takes its bytes through
        C{write} (which drops them once it is closed).
        """
        self.connection.disconnecting = 1
        sendNow(self.connection, self.server, b"late")
        self.assertEqual(read(self.client), b"")

    def test_notWhenNotConnected(self) -> None:
        """
        C{connected}: a connection lost writes nothing.
        """
        self.connection.connected = 0
        sendNow(self.connection, self.server, b"late")
        self.assertEqual(read(self.client), b"")
        self.assertEqual(self.buffered(), 0)

    def test_errorLeftToTwisted(self) -> None:
        """
        A send that fails (the peer gone) hands the bytes to C{write}: Twisted
        finds the error on its next write and loses the connection.
        """
        self.client.close()
        sendNow(self.connection, self.server, b"x" * 100)
        sendNow(self.connection, self.server, b"y")
        self.assertGreater(self.buffered(), 0)
