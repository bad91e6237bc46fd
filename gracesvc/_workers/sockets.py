# -*- test-case-name: tests.unit.workers.test_sockets -*-
"""
The listening sockets of C{--workers}: the master creates each one once
with the L{socket} module, never accepts on it and only ever C{close()}s
it, since a C{shutdown()} of one copy of a shared listening socket stops it
listening in every process.  Each worker adopts them.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Sequence
from typing import NamedTuple

from gracesvc._pins.twisted import ListeningSpec
from gracesvc._process.backlog import Backlog, effectiveBacklog
from gracesvc._process.service import ListenFailed


class SocketSpec(NamedTuple):
    """
    A listener of C{--workers}, as the master makes its sockets.
    """

    #: The C{--listen} description, as given.
    description: str
    #: What to create (see L{gracesvc._pins.twisted.listeningSpec}).
    spec: ListeningSpec
    #: Whether the workers serve TLS on it (C{ssl:}: the master makes the
    #: TCP socket, each worker reads the certificate).
    tls: bool


class SharedSocket:
    """
    A listening socket the master owns and every worker adopts.

    It stands as a listener of the master's drain: L{stopListening} only
    closes the master's copy (never C{shutdown()}), so the workers keep
    accepting on theirs until each drains.
    """

    def __init__(
        self,
        description: str,
        sock: socket.socket,
        unlinkPath: str | None = None,
        slot: int | None = None,
        tls: bool = False,
        askedBacklog: int | None = None,
    ) -> None:
        """
        @param slot: the one worker slot that adopts it (a C{--reuse-port}
            socket of that slot's own), or L{None} for every worker.
        @param tls: whether the workers serve TLS on it (an C{ssl:}
            listener, whose certificate each worker reads).
        @param askedBacklog: the backlog it listens with, if known.
        """
        self.description = description
        self.slot = slot
        self.tls = tls
        self.socket = sock
        self.family = int(sock.family)
        self.unlinkPath = unlinkPath
        self.askedBacklog = askedBacklog
        self.closed = False

    def fileno(self) -> int:
        return self.socket.fileno()

    def backlog(self) -> int | None:
        """
        @return: the backlog the kernel gives it, if that can be known (see
            L{effectiveBacklog}).
        """
        return effectiveBacklog(self.socket, self.askedBacklog)

    def address(self) -> str:
        """
        @return: what it listens on, for the log.
        """
        name = self.socket.getsockname()
        if isinstance(name, tuple):
            return f"{name[0]}:{name[1]}"
        return str(name)

    def stopListening(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.socket.close()
        if self.unlinkPath is not None:
            try:
                os.unlink(self.unlinkPath)
            except OSError:
                pass

    # The rest of IListeningPort, which the drain does not call.
    def startListening(self) -> None:
        pass

    def getHost(self) -> str:
        return self.address()


def openSharedSocket(
    description: str,
    spec: ListeningSpec,
    slot: int | None = None,
    tls: bool = False,
    adoptedBacklog: Backlog | None = None,
) -> SharedSocket:
    """
    Create the socket C{spec} describes (see
    L{gracesvc._pins.twisted.listeningSpec}), listening.

    @param slot: with C{SO_REUSEPORT}, for this worker slot alone (TCP
        only); L{None}: one socket for every worker.
    @param tls: whether the workers serve TLS on it (see L{SharedSocket}).
    @param adoptedBacklog: for a socket inherited from a service manager
        (C{systemd:}), the backlog to apply (see L{Backlog.adopt}); the
        others listen with the backlog of their spec.
    @raise OSError: it cannot be created (a port in use, say).
    """
    if spec[0] == "tcp":
        _, family, interface, port, backlog = spec  # type: ignore[misc]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if slot is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            host = interface or ("::" if family == socket.AF_INET6 else "")
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return SharedSocket(description, sock, slot=slot, tls=tls, askedBacklog=backlog)
    if spec[0] == "unix":
        _, path, backlog, mode = spec  # type: ignore[misc]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return SharedSocket(description, sock, unlinkPath=path, askedBacklog=backlog)
    _, fd, family = spec  # type: ignore[misc]
    inherited = socket.socket(family, socket.SOCK_STREAM, fileno=fd)
    if adoptedBacklog is not None:
        try:
            adoptedBacklog.adopt(inherited)
        except OSError:
            inherited.close()
            raise
    return SharedSocket(description, inherited)


def reusePortSockets(
    description: str, spec: ListeningSpec, workers: int, tls: bool = False
) -> list[SharedSocket]:
    """
    One C{SO_REUSEPORT} socket per worker slot on the TCP address C{spec}
    describes: the kernel spreads new connections over them by hash, so
    every worker gets its share however busy the machine (a worker that is
    not scheduled when connections arrive misses them on a shared socket).
    A slot's socket outlives its workers (the master holds it), so a
    reload or a replacement loses none of its queue; but while a slot has
    no worker ready, its connections wait.

    @raise OSError: one cannot be created; those made are closed.
    """
    opened = [openSharedSocket(description, spec, slot=0, tls=tls)]
    try:
        # Port 0 picks a port: the other slots share the one picked.
        port = opened[0].socket.getsockname()[1]
        rest = (*spec[:3], port, *spec[4:])
        for slot in range(1, workers):
            opened.append(openSharedSocket(description, rest, slot=slot, tls=tls))
    except OSError:
        for shared in opened:
            shared.stopListening()
        raise
    return opened


def openSharedSockets(
    listeners: Sequence[SocketSpec],
    workers: int,
    reusePort: bool,
    adoptedBacklog: Backlog | None = None,
) -> list[SharedSocket]:
    """
    Create the sockets of every listener: one each, or with C{reusePort}
    one per worker slot for a TCP listener (see L{reusePortSockets}).

    @param adoptedBacklog: the backlog for the sockets inherited from a
        service manager (see L{openSharedSocket}).
    @raise ListenFailed: one cannot be created (a port in use, say); those
        made are closed.
    """
    opened: list[SharedSocket] = []
    for description, spec, tls in listeners:
        try:
            if reusePort and spec[0] == "tcp":
                opened += reusePortSockets(description, spec, workers, tls=tls)
            else:
                opened.append(
                    openSharedSocket(
                        description, spec, tls=tls, adoptedBacklog=adoptedBacklog
                    )
                )
        except OSError as e:
            for shared in opened:
                shared.stopListening()
            raise ListenFailed(
                f"cannot listen on {description}: {e.strerror or e}"
            ) from None
    return opened
