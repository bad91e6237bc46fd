# -*- test-case-name: tests.unit.pins.test_twisted_send -*-
"""
Writing to a Twisted TCP connection without waiting for the reactor's next
turn.

L{twisted.internet.abstract.FileDescriptor.write} only buffers: the bytes
leave on the reactor's next writable event (on the asyncio reactor an
C{add_writer}, an C{epoll_wait} that reports the socket writable, then a
C{remove_writer}).  For a small response on an idle connection that round
trip is most of the cost of the write: sending at once, when nothing is
buffered ahead, costs about half the CPU per request of a bare ASGI
application.  L{sendNow} does that, and hands Twisted only what the socket
did not take, so that everything after it (flow control, C{loseConnection}
flushing, errors) is Twisted's as usual.

Internals of Twisted 26.10, pinned by
C{tests/unit/pins/test_twisted_send.py}:
L{twisted.internet.abstract.FileDescriptor}'s C{dataBuffer} and
C{_tempDataLen} (what is buffered, not yet sent), C{connected} and
C{disconnecting}; L{twisted.internet.tcp.Connection}'s C{socket} and
C{TLS} (set by C{startTLS}: a connection whose bytes go through TLS must
be written through it).
"""

from __future__ import annotations

import socket

from twisted.internet import tcp


def eagerSocket(transport: object) -> socket.socket | None:
    """
    @return: the socket L{sendNow} may write to for C{transport}: that of a
        plain Twisted TCP (or UNIX) connection; L{None} for any other
        transport (TLS, a test's), which is written with its C{write}.
    """
    if not isinstance(transport, tcp.Connection) or transport.TLS:
        return None
    sock = getattr(transport, "socket", None)
    return sock if isinstance(sock, socket.socket) else None


def sendNow(transport: tcp.Connection, sock: socket.socket, data: bytes) -> None:
    """
    Write C{data} to C{transport}: to its socket at once if nothing is
    buffered ahead of it, and what the socket does not take (or all of it,
    when bytes are buffered, the connection is closing, or the send fails)
    through C{transport.write}, as if the socket had taken nothing.

    @param sock: L{eagerSocket}C{(transport)}.
    """
    if (
        transport._tempDataLen
        or transport.dataBuffer
        or transport.disconnecting
        or not transport.connected
    ):
        transport.write(data)
        return
    try:
        sent = sock.send(data)
    except OSError:
        # EAGAIN, or an error that Twisted finds on its own write.
        sent = 0
    if sent < len(data):
        transport.write(data[sent:])
