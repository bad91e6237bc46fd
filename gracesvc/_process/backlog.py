# -*- test-case-name: tests.unit.process.test_backlog -*-
"""
The listen backlog: how many connections the kernel queues for a
listening socket before the process accepts them.

Twisted listens with a backlog of 50: a burst of connections (a rolling
restart sends one to the instances that stay) overflows it, and the kernel
drops the SYNs past it; each client retries a second later.  gracesvc
listens with the kernel's largest backlog (C{net.core.somaxconn}) or 2,048
(uvicorn's and gunicorn's), whichever is smaller, on every listener it
makes (C{tcp:}, C{tcp6:}, C{ssl:}, C{unix:}, the sockets of C{--workers}
and C{--reuse-port}); C{--backlog N} sets it.  A socket adopted from a
service manager (C{systemd:}) keeps the backlog its C{Backlog=} gave it,
unless that is smaller, or C{--backlog} is given.

The kernel clamps a larger backlog to C{net.core.somaxconn} without a
word, so the backlog each listener actually has is read back from the
kernel and logged.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from twisted.logger import Logger

from gracesvc._pins.linux import kernelMaxBacklog, listenBacklog
from gracesvc._pins.twisted import endpointKeywords

#: The largest default backlog, as uvicorn and gunicorn listen.
DEFAULT_CAP = 2048

#: The endpoint types whose descriptions take a C{backlog} parameter.
_TAKE_BACKLOG = frozenset(["tcp", "tcp6", "ssl", "unix"])

log = Logger()


def defaultBacklog() -> int:
    """
    @return: the kernel's largest backlog, or L{DEFAULT_CAP} if that is
        smaller.
    """
    return min(kernelMaxBacklog(), DEFAULT_CAP)


@dataclass(frozen=True)
class Backlog:
    """
    The backlog asked for.

    @ivar size: how many connections to queue.
    @ivar given: whether C{--backlog} was given (else L{size} is the
        default): only then is an adopted socket's backlog made smaller.
    """

    size: int
    given: bool = False

    def describe(self, description: str) -> str:
        """
        @return: C{description} with this backlog, if it is an endpoint
            type that takes one and does not name one already (the
            description's own wins).
        """
        kind = description.split(":", 1)[0].lower()
        if kind not in _TAKE_BACKLOG or "backlog" in endpointKeywords(description):
            return description
        return f"{description}:backlog={self.size}"

    def adopt(self, sock: socket.socket) -> None:
        """
        Apply this backlog to C{sock}, a listening socket adopted from a
        service manager, if it is larger than the one the socket has, or
        was given: C{listen()} on a listening socket changes its backlog.
        """
        current = listenBacklog(sock)
        if self.given or (current is not None and current < self.size):
            sock.listen(self.size)

    def warnIfClamped(self) -> None:
        """
        Log a warning if the kernel will give every listener less than was
        given.
        """
        largest = kernelMaxBacklog()
        if self.given and self.size > largest:
            log.warn(
                "--backlog {size}: the kernel queues at most {largest} "
                "connections a listener (net.core.somaxconn)",
                size=self.size,
                largest=largest,
            )


def effectiveBacklog(sock: socket.socket | None, asked: int | None) -> int | None:
    """
    @param asked: the backlog the socket was made with, if known.
    @return: the backlog the kernel applies to the listening socket
        C{sock}: read back for TCP; for a Unix socket, what was asked as
        the kernel clamps it; L{None} if it cannot be known.
    """
    if sock is None:
        return None
    measured = listenBacklog(sock)
    if measured is not None:
        return measured
    if asked is not None and sock.family == socket.AF_UNIX:
        return min(asked, kernelMaxBacklog())
    return None
