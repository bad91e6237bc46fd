# -*- test-case-name: tests.unit.test_tap -*-
"""
What C{twistd gracesvc} was asked to serve, every value checked: the frozen
result of its options (L{gracesvc.tap.Options}), which
L{gracesvc._wiring} turns into services.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.web.resource import IResource

from gracesvc._apps.load import AppFactory
from gracesvc._core.policy import DrainPolicy
from gracesvc._process.backlog import DEFAULT_CAP, Backlog
from gracesvc._protocols.deadlines import ConnectionTimeouts
from gracesvc._protocols.websocket import WebSocketPolicy
from gracesvc._workers.command import WorkerSpec
from gracesvc._workers.sockets import SocketSpec

if TYPE_CHECKING:
    from gracesvc._apps.wsgi import WSGIApplication
    from gracesvc._asgi.app import ASGIApplication
    from gracesvc._asgi.spec import LifespanMode

#: A listener: its description, as given and as logs and errors name it,
#: and the endpoint parsed from it.
Endpoint = tuple[str, IStreamServerEndpoint]


@dataclass(frozen=True)
class DemoApp:
    """
    gracesvc's own app (no C{--app} nor C{--wsgi}).
    """

    #: Seconds C{GET /ping} waits before answering.
    pingDelay: float
    #: Seconds between two ticks of C{GET /events} and C{GET /poll}.
    tick: float


@dataclass(frozen=True)
class ResourceApp:
    """
    C{--app}: the user's app, imported.
    """

    #: C{MODULE:ATTRIBUTE}, as given.
    spec: str
    #: The root resource, or the factory that makes it for the drain.
    resource: IResource | AppFactory


@dataclass(frozen=True)
class WSGIApp:
    """
    C{--wsgi}: the user's WSGI application, imported.
    """

    #: C{MODULE:ATTRIBUTE}, as given.
    spec: str
    application: WSGIApplication
    #: The most requests its thread pool runs at once.
    threads: int


# ASGI (--asgi, --asgi-lifespan)


@dataclass(frozen=True)
class ASGIAppConfig:
    """
    C{--asgi}: the user's ASGI application, imported (on the asyncio
    reactor, installed by then).
    """

    #: C{MODULE:ATTRIBUTE}, as given.
    spec: str
    #: The ASGI 3 application.
    application: ASGIApplication
    #: C{--asgi-lifespan}: whether its lifespan runs.
    lifespan: LifespanMode = "auto"


#: The app a serving process serves.
App = DemoApp | ResourceApp | WSGIApp | ASGIAppConfig


@dataclass(frozen=True)
class WorkersConfig:
    """
    C{--workers N}: what the master needs.
    """

    #: How many workers.
    count: int
    #: Seconds a generation has to become ready.
    bootTimeout: float
    #: Seconds a ready worker may leave the master's pings unanswered.
    workerTimeout: float
    #: Whether each worker slot has a socket of its own (C{SO_REUSEPORT}).
    reusePort: bool
    #: The sockets to make, one for each C{--listen}.
    sockets: tuple[SocketSpec, ...]
    #: The plugin options every worker gets: those given, except the
    #: master's own and the listeners (the workers adopt the sockets).
    arguments: tuple[str, ...]


# The open internet: what one client, or a flood of them, may take.


@dataclass(frozen=True)
class ClientLimits:
    """
    C{--backlog}, C{--header-timeout}, C{--keep-alive-timeout},
    C{--write-timeout} and C{--max-connections}: what clients may take of a
    process, whatever protocol serves them.
    """

    #: The listen backlog of the sockets this process makes (or adopts from
    #: a service manager).
    backlog: Backlog = Backlog(DEFAULT_CAP)
    #: The deadlines of each connection: the request head (and TLS
    #: handshake), keep-alive, writes.  An HTTP/1.1 server of another kind
    #: (ASGI's) takes C{timeouts.header} and C{timeouts.keepAlive} too.
    timeouts: ConnectionTimeouts = ConnectionTimeouts()
    #: The most connections served at once: L{None} for the default (from
    #: the limit on open descriptors, see
    #: L{gracesvc._process.accepting.defaultMaxConnections}), 0 for none.
    maxConnections: int | None = None


@dataclass(frozen=True)
class ServeConfig:
    """
    Everything C{twistd gracesvc} serves, in one of three ways: one process
    (neither L{workers} nor L{worker}), the master of C{--workers}
    (L{workers}), or one of its workers (L{worker}).
    """

    #: The drain's timeline: the cap, the drain delay, the cleanup budget.
    policy: DrainPolicy
    #: How WebSockets are kept alive and closed.
    webSocketPolicy: WebSocketPolicy
    #: Whether cleartext HTTP/2 is served to clients that open with its
    #: preface.
    h2c: bool
    #: The drained listeners: C{--listen}'s, or a worker's adopted sockets.
    endpoints: tuple[Endpoint, ...]
    #: C{--metrics-listen}, which stays open until the process exits.
    metricsEndpoint: Endpoint | None
    #: What is served; L{None} in a master, whose workers import the app,
    #: each generation anew.
    app: App | None
    #: C{--workers N}: this process is their master.
    workers: WorkersConfig | None = None
    #: C{--worker-spec}: this process is a worker of a master's.
    worker: WorkerSpec | None = None
    #: Whether each response is written to the access log (twistd's log).
    accessLog: bool = True
    #: What clients may take: the backlog, the deadlines, the connection
    #: limit.
    limits: ClientLimits = ClientLimits()
