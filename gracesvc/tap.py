# -*- test-case-name: tests.unit.test_tap -*-
"""
twistd glue: C{twistd gracesvc} options, checked into a frozen
configuration (L{gracesvc._config.ServeConfig}), and the service made from
it (L{gracesvc._wiring}).

Importing this module imports neither Klein nor the app, so that
C{twistd gracesvc --help} stays fast and a broken app is an error, not
"Unknown command".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from twisted.internet.endpoints import AdoptedStreamServerEndpoint, serverFromString
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IProtocolFactory,
    IStreamServerEndpoint,
)
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python import usage
from zope.interface import implementer

from gracesvc._apps.load import (
    AppLoadError,
    loadApp,
    loadASGI,
    loadWSGI,
    parseThreads,
)
from gracesvc._apps.threads import DEFAULT_THREADS
from gracesvc._asgi.loop import (
    LOOP_KINDS,
    LoopKind,
    ReactorMismatch,
    installAsyncioReactor,
)
from gracesvc._asgi.spec import LIFESPAN_MODES, LifespanMode
from gracesvc._config import (
    App,
    ASGIAppConfig,
    ClientLimits,
    DemoApp,
    Endpoint,
    ResourceApp,
    ServeConfig,
    WorkersConfig,
    WSGIApp,
)
from gracesvc._core.policy import DrainPolicy
from gracesvc._pins.twisted import listeningSpec, tlsContextFactory
from gracesvc._process.backlog import Backlog, defaultBacklog
from gracesvc._protocols.deadlines import ConnectionTimeouts
from gracesvc._protocols.websocket import DEFAULT_WRITE_LIMIT, WebSocketPolicy
from gracesvc._workers.command import WorkerSpec, parseWorkerSpec
from gracesvc._workers.sockets import SocketSpec

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.internet.defer import Deferred

    from gracesvc._process.effects import ProcessEffects

DEFAULT_LISTEN = "tcp:8080"


def _seconds(option: str, value: object, allowZero: bool) -> float:
    bound = ">= 0" if allowZero else "> 0"
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        seconds = math.nan
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not allowZero):
        raise usage.UsageError(
            f"--{option}: expected a number of seconds {bound}, got {value!r}"
        )
    return seconds


# The open internet: what a client, or a flood of them, may take.
_CLIENT_LIMIT_OPTIONS = [
    [
        "backlog",
        None,
        None,
        "How many connections the kernel queues on each listener before "
        "they are accepted. [default: net.core.somaxconn or 2048, whichever "
        "is smaller; a systemd: socket keeps its Backlog= if larger]",
    ],
    [
        "header-timeout",
        None,
        "10",
        "Seconds a request head may take from its first byte (a new "
        "connection's first, from the accept) to its end: past it, 408 and "
        "close (a connection that sent nothing is closed). A TLS handshake "
        "gets as long. 0: no limit.",
    ],
    [
        "keep-alive-timeout",
        None,
        "75",
        "Seconds a connection may be idle between requests before it is "
        "closed. Keep it above the idle timeout of any load balancer in "
        "front (AWS ALB 60, nginx 75: above 75; Google 600: 620). 0: no "
        "limit.",
    ],
    [
        "write-timeout",
        None,
        "60",
        "Seconds a client may take none of what waits for it (a response, "
        "WebSocket messages) before the connection is aborted. A slow "
        "client that keeps reading is not cut. 0: no limit.",
    ],
    [
        "max-connections",
        None,
        None,
        "The most connections this process serves at once (each worker of "
        "--workers, its own); past it, HTTP/1.1 clients get 503 with "
        "Retry-After, HTTP/2 clients GOAWAY. 0: no limit. [default: the "
        "open files limit less a fifth]",
    ],
    [
        "ws-write-limit",
        None,
        str(DEFAULT_WRITE_LIMIT),
        "The most bytes of messages held for a WebSocket client that does "
        "not read them; past it the connection is aborted.",
    ],
]


def _count(option: str, value: object, unit: str, least: int) -> int:
    try:
        count = int(str(value))
    except ValueError:
        count = least - 1
    if count < least:
        raise usage.UsageError(
            f"--{option}: expected a number of {unit} >= {least}, got {value!r}"
        )
    return count


class Options(usage.Options):
    """
    Options for C{twistd gracesvc}.
    """

    synopsis = (
        "[--app MODULE:ATTR | --wsgi MODULE:ATTR | --asgi MODULE:ATTR] "
        "[--listen ENDPOINT ...] [options]"
    )
    longdesc = (
        "Serve an app (gracesvc's own /ping demo unless --app, --wsgi or "
        "--asgi names yours) and drain it on SIGINT/SIGTERM: stop accepting, finish the "
        "requests in flight, close keep-alive connections cleanly, exit as "
        "soon as the last response is out and never later than "
        "--shutdown-timeout after the signal.  A second signal stops at "
        "once.  /healthz, /readyz and /metrics are gracesvc's."
    )

    optParameters = [
        [
            "shutdown-timeout",
            None,
            "5",
            "Cap on the whole shutdown, from the first signal to exit, in "
            "seconds. Requests still unanswered shortly before it get a 503.",
        ],
        [
            "drain-delay",
            None,
            "0",
            "After the first signal, keep accepting and serving for this many "
            "seconds (with /readyz answering 503) so load balancers take the "
            "instance out of rotation before its port closes. Must be less "
            "than --shutdown-timeout.",
        ],
        [
            "cleanup-budget",
            None,
            "0",
            "Seconds reserved inside --shutdown-timeout for the cleanup "
            "hooks and child services, which stop after the last connection "
            "closed: the cut comes this much earlier. 0 reserves nothing; the "
            "cleanup may then use what is left of the cap.",
        ],
        [
            "ping-delay",
            None,
            "5",
            "Seconds GET /ping of the built-in app waits before answering.",
        ],
        [
            "close-timeout",
            None,
            "1",
            "When the listeners close, each WebSocket gets its application's "
            "last message, then a Close frame; then this many seconds for the "
            "client's Close before the connection is aborted (never later than "
            "the cut, shortly before --shutdown-timeout).",
        ],
        [
            "ws-close-code",
            None,
            "1001",
            "The WebSockets' Close code at shutdown: 1001 (going away) or 1012 "
            "(service restart: clients wait 5-30 s before reconnecting).",
        ],
        [
            "ws-max-message-size",
            None,
            str(1 << 20),
            "The largest WebSocket message accepted, in bytes; a larger one "
            "is closed with 1009.",
        ],
        [
            "ws-ping-interval",
            None,
            "20",
            "Seconds between keepalive pings of each open WebSocket; 0 sends none.",
        ],
        [
            "ws-ping-timeout",
            None,
            "20",
            "Seconds a keepalive ping waits for its pong before the WebSocket "
            "is closed with 1011.",
        ],
        [
            "tick",
            None,
            "0.5",
            "Seconds between two ticks of the built-in app's GET /events (an "
            "event stream) and GET /poll (a long poll).",
        ],
        [
            "app",
            None,
            None,
            "Serve this app instead of the built-in one: MODULE:ATTRIBUTE "
            "naming a Klein app, an IResource, or a callable taking no "
            "arguments that returns one. The current directory is importable.",
        ],
        [
            "wsgi",
            None,
            None,
            "Serve this WSGI application (MODULE:ATTRIBUTE; MODULE:FACTORY() "
            "for a factory) on a thread pool of its own.",
        ],
        [
            "threads",
            None,
            None,
            f"With --wsgi: the most requests its thread pool runs at once "
            f"[default: {DEFAULT_THREADS}]",
        ],
        # ASGI
        [
            "asgi",
            None,
            None,
            "Serve this ASGI application (MODULE:ATTRIBUTE; MODULE:FACTORY() "
            "for a factory): FastAPI, Starlette, Django, Channels. It runs on "
            "Twisted's asyncio reactor, installed for it (no -r needed).",
        ],
        [
            "asgi-lifespan",
            None,
            None,
            "With --asgi: auto runs the application's lifespan (startup "
            "before anything is accepted, shutdown after the last "
            "connection) if it has one; on requires it; off never runs it. "
            "[default: auto]",
        ],
        [
            "asgi-loop",
            None,
            None,
            "With --asgi: the event loop under Twisted's asyncio reactor: "
            "uvloop, asyncio, or auto (uvloop if installed: pip install "
            "'gracesvc[uvloop]'). twistd -r asyncio always runs asyncio's. "
            "[default: auto]",
        ],
        [
            "workers",
            None,
            "0",
            "Serve with this many worker processes, each a gracesvc, under a "
            "master that owns the listening sockets: SIGHUP to the master "
            "reloads them (the new ones ready before the old ones drain), "
            "SIGINT/SIGTERM drains them all within one --shutdown-timeout. "
            "0 serves in this one process.",
        ],
        [
            "worker-boot-timeout",
            None,
            "60",
            "With --workers: seconds a generation of workers has to become "
            "ready (at start, or on SIGHUP) before the start or the reload "
            "fails.",
        ],
        [
            "worker-timeout",
            None,
            "30",
            "With --workers: seconds a ready worker may leave the master's "
            "pings unanswered (stuck in a loop, say) before it is killed and "
            "replaced.",
        ],
        [
            "worker-spec",
            None,
            None,
            "Internal: what the master tells a worker it starts (JSON).",
        ],
    ] + _CLIENT_LIMIT_OPTIONS

    optFlags = [
        [
            "h2c",
            None,
            "Also serve cleartext HTTP/2 on tcp: and unix: listeners, to "
            "clients that open with its preface (prior knowledge). HTTP/2 is "
            "always offered on ssl: listeners, through ALPN.",
        ],
        [
            "reuse-port",
            None,
            "With --workers: give each worker slot a TCP socket of its own "
            "(SO_REUSEPORT) instead of one shared by all, so that the kernel "
            "spreads connections evenly however busy the machine; but a "
            "slot's connections wait while it has no worker ready (a crash, "
            "a stuck worker). Any process of the same user can join the port.",
        ],
        [
            "no-access-log",
            None,
            "Write no access log line per response (it costs more CPU than "
            "the rest of a small request: see docs/asgi-http1.md).",
        ],
    ]

    #: The options a master does not hand on to its workers.
    masterOnly = frozenset(
        [
            "workers",
            "worker-boot-timeout",
            "worker-timeout",
            "worker-spec",
            "reuse-port",
            # The master makes (or adopts) the sockets.
            "backlog",
        ]
    )

    #: What was asked for, checked: set by L{postOptions}.
    config: ServeConfig

    def __init__(self, reactor: Any = None) -> None:
        """
        @param reactor: the reactor endpoints are made for; the global one
            when L{None}.
        """
        super().__init__()
        self.reactor = reactor
        self._backlog = Backlog(defaultBacklog())
        self["listen"] = []
        self["metrics-listen"] = None
        self._given: list[str] = []

    def opt_listen(self, description: str) -> None:
        # usage.Options shows this docstring as is: keep it one line.
        """Endpoint to listen on, a Twisted server endpoint string: tcp:8080, tcp:8080:interface=127.0.0.1, unix:/run/gracesvc.sock, ssl:..., systemd:domain=INET:index=0. Repeat for several; every one is drained alike. [default: tcp:8080]"""  # noqa: E501
        self["listen"].append(description)

    def opt_metrics_listen(self, description: str) -> None:
        """Serve the Prometheus metrics on this endpoint (any path) instead of on /metrics of the main listeners. It is not drained: it stays scrapeable while the main listeners close, until exit."""  # noqa: E501
        self["metrics-listen"] = description

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        """
        Parse, and turn a usage error into one line on standard error and
        exit status 1: twistd would print its whole help text above it.
        """
        try:
            super().parseOptions(options)
        except usage.UsageError as e:
            raise SystemExit(
                f"twistd gracesvc: error: {e} (see twistd gracesvc --help)"
            ) from None

    def postOptions(self) -> None:
        """
        Check every value, import the app and parse every endpoint, so that
        a mistake is a usage error now rather than a traceback later (and
        an app that does not import stops the start before anything
        listens); then freeze what was asked for in L{config}.
        """
        self._given = self._asGiven()
        worker = self._workerOptions()
        self["shutdown-timeout"] = _seconds(
            "shutdown-timeout", self["shutdown-timeout"], allowZero=False
        )
        self["drain-delay"] = _seconds(
            "drain-delay", self["drain-delay"], allowZero=True
        )
        self["cleanup-budget"] = _seconds(
            "cleanup-budget", self["cleanup-budget"], allowZero=True
        )
        self["ping-delay"] = _seconds("ping-delay", self["ping-delay"], allowZero=True)
        webSocketPolicy = self._webSocketPolicy()
        self["tick"] = _seconds("tick", self["tick"], allowZero=False)
        policy = self._drainPolicy()
        limits = self._clientLimits()
        self._checkAppOptions()
        if self["asgi-loop"] is not None and self["asgi"] is None:
            raise usage.UsageError("--asgi-loop: only with --asgi")
        if self["asgi"] is not None and self.reactor is None:
            self.reactor = self._asyncioReactor()
        # The workers import the app, each generation anew.
        app = None if self["workers"] else self._loadApp()
        if self.reactor is None:
            # Only now: importing it installs the default reactor, and
            # twistd installs the one it was told to use before this runs.
            from twisted.internet import reactor

            self.reactor = reactor
        if worker is not None:
            endpoints = self._adoptedEndpoints(worker)
        else:
            endpoints = tuple(
                (d, self._endpoint("listen", d))
                for d in self["listen"] or [DEFAULT_LISTEN]
            )
        self.config = ServeConfig(
            policy=policy,
            webSocketPolicy=webSocketPolicy,
            h2c=bool(self["h2c"]),
            accessLog=not self["no-access-log"],
            endpoints=endpoints,
            metricsEndpoint=(
                None
                if self["metrics-listen"] is None
                else (
                    self["metrics-listen"],
                    self._endpoint("metrics-listen", self["metrics-listen"]),
                )
            ),
            app=app,
            workers=self._workersConfig(endpoints) if self["workers"] else None,
            worker=worker,
            limits=limits,
        )

    def _asGiven(self) -> list[str]:
        """
        @return: the plugin options given, as given, except the master's
            own and the listeners: what a worker of C{--workers} is started
            with.
        """
        given = [
            f"--{name}={self[name]}"
            for name in (str(parameter[0]) for parameter in self.optParameters)
            if self[name] is not None and name not in self.masterOnly
        ]
        return given + [
            f"--{flag}"
            for flag in (str(flag[0]) for flag in self.optFlags)
            if self[flag] and flag not in self.masterOnly
        ]

    def workerArguments(self) -> list[str]:
        """
        @return: the plugin options a worker of C{--workers} is started
            with: the ones given, except the master's own and C{--listen}.
        """
        return list(self._given)

    def _workerOptions(self) -> WorkerSpec | None:
        """
        Check the options of C{--workers}.

        @return: the spec of C{--worker-spec}: this process is a worker.
        """
        given = self["workers"]
        try:
            workers = int(given)
        except (TypeError, ValueError):
            workers = -1
        if workers < 0:
            raise usage.UsageError(
                f"--workers: expected a number of processes >= 0, got {given!r}"
            )
        self["workers"] = workers
        self["worker-boot-timeout"] = _seconds(
            "worker-boot-timeout", self["worker-boot-timeout"], allowZero=False
        )
        self["worker-timeout"] = _seconds(
            "worker-timeout", self["worker-timeout"], allowZero=False
        )
        if self["reuse-port"] and not workers:
            raise usage.UsageError("--reuse-port: only with --workers")
        spec = self["worker-spec"]
        if spec is None:
            return None
        if workers:
            raise usage.UsageError("--worker-spec: not with --workers")
        try:
            worker = parseWorkerSpec(spec)
        except ValueError as e:
            raise usage.UsageError(f"--worker-spec: {e}") from None
        if self["listen"] or self["metrics-listen"] is not None:
            raise usage.UsageError(
                "--worker-spec: a worker listens on its master's sockets only"
            )
        return worker

    def _drainPolicy(self) -> DrainPolicy:
        try:
            return DrainPolicy(
                shutdownTimeout=self["shutdown-timeout"],
                drainDelay=self["drain-delay"],
                cleanupBudget=self["cleanup-budget"],
            )
        except ValueError as e:
            option = "--cleanup-budget" if "cleanup" in str(e) else "--drain-delay"
            raise usage.UsageError(f"{option}: {e}") from None

    def _adoptedEndpoints(self, worker: WorkerSpec) -> tuple[Endpoint, ...]:
        """
        @return: the endpoints of a worker: the sockets its master made,
            adopted; TLS on those the master says are (C{ssl:}), with the
            certificate read now, by this worker.
        """
        endpoints: list[Endpoint] = []
        for description, fd, family, tls in worker.listeners:
            endpoint: IStreamServerEndpoint = AdoptedStreamServerEndpoint(
                self.reactor, fd, family
            )
            if tls:
                # Parsing does not listen; it reads the certificate files.
                contextFactory = tlsContextFactory(
                    self._endpoint("listen", description)
                )
                if contextFactory is None:
                    raise usage.UsageError(
                        f"--worker-spec: {description!r} is not a TLS endpoint"
                    )
                endpoint = TLSServerEndpoint(endpoint, contextFactory)
            endpoints.append((description, endpoint))
        return tuple(endpoints)

    def _workersConfig(self, endpoints: Sequence[Endpoint]) -> WorkersConfig:
        """
        @return: what the master of C{--workers} needs, the sockets it
            makes for C{endpoints} included.
        """
        sockets = []
        for description, endpoint in endpoints:
            spec = listeningSpec(endpoint)
            if spec is None:
                raise usage.UsageError(
                    f"--listen {description!r}: --workers serves tcp:, tcp6:, "
                    f"unix:, ssl: and systemd: endpoints only"
                )
            tls = tlsContextFactory(endpoint) is not None
            sockets.append(SocketSpec(description, spec, tls))
        return WorkersConfig(
            count=self["workers"],
            bootTimeout=self["worker-boot-timeout"],
            workerTimeout=self["worker-timeout"],
            reusePort=bool(self["reuse-port"]),
            sockets=tuple(sockets),
            arguments=tuple(self._given),
        )

    def _webSocketPolicy(self) -> WebSocketPolicy:
        closeTimeout = _seconds("close-timeout", self["close-timeout"], allowZero=False)
        code = self["ws-close-code"]
        if code not in ("1001", "1012"):
            raise usage.UsageError(
                f"--ws-close-code: expected 1001 (going away) or 1012 (service "
                f"restart), got {code!r}"
            )
        size = self["ws-max-message-size"]
        try:
            maxMessageSize = int(size)
        except (TypeError, ValueError):
            maxMessageSize = 0
        if maxMessageSize < 1:
            raise usage.UsageError(
                f"--ws-max-message-size: expected a number of bytes >= 1, got {size!r}"
            )
        pingInterval = _seconds(
            "ws-ping-interval", self["ws-ping-interval"], allowZero=True
        )
        pingTimeout = _seconds(
            "ws-ping-timeout", self["ws-ping-timeout"], allowZero=False
        )
        writeLimit = _count("ws-write-limit", self["ws-write-limit"], "bytes", 1)
        self["ws-write-limit"] = writeLimit
        self["close-timeout"] = closeTimeout
        self["ws-close-code"] = int(code)
        self["ws-max-message-size"] = maxMessageSize
        self["ws-ping-interval"] = pingInterval
        self["ws-ping-timeout"] = pingTimeout
        return WebSocketPolicy(
            closeCode=int(code),
            closeTimeout=closeTimeout,
            maxMessageSize=maxMessageSize,
            pingInterval=pingInterval or None,
            pingTimeout=pingTimeout,
            writeLimit=writeLimit,
        )

    def _clientLimits(self) -> ClientLimits:
        """
        Check the options of what clients may take; the listeners made
        from now on have the backlog.
        """
        backlog = Backlog(defaultBacklog())
        if self["backlog"] is not None:
            backlog = Backlog(
                _count("backlog", self["backlog"], "connections", 1), given=True
            )
            self["backlog"] = backlog.size
        self._backlog = backlog
        timeouts = {}
        for option in ("header-timeout", "keep-alive-timeout", "write-timeout"):
            self[option] = _seconds(option, self[option], allowZero=True)
            timeouts[option] = self[option] or None
        maxConnections = None
        if self["max-connections"] is not None:
            maxConnections = self["max-connections"] = _count(
                "max-connections", self["max-connections"], "connections", 0
            )
        return ClientLimits(
            backlog=backlog,
            timeouts=ConnectionTimeouts(
                header=timeouts["header-timeout"],
                keepAlive=timeouts["keep-alive-timeout"],
                write=timeouts["write-timeout"],
            ),
            maxConnections=maxConnections,
        )

    def _loadApp(self) -> App:
        """
        Import the app named by C{--app} or C{--wsgi} now, before anything
        listens, so that an app that does not import is one line and exit
        status 1.
        """
        try:
            if self["asgi"] is not None:
                return ASGIAppConfig(
                    self["asgi"], loadASGI(self["asgi"]), self._lifespanMode()
                )
            if self["wsgi"] is not None:
                self["threads"] = (
                    DEFAULT_THREADS
                    if self["threads"] is None
                    else parseThreads(self["threads"])
                )
                return WSGIApp(self["wsgi"], loadWSGI(self["wsgi"]), self["threads"])
            if self["app"] is not None:
                return ResourceApp(self["app"], loadApp(self["app"]))
        except AppLoadError as e:
            raise usage.UsageError(str(e)) from None
        return DemoApp(pingDelay=self["ping-delay"], tick=self["tick"])

    def _checkAppOptions(self) -> None:
        given = [
            f"--{option}"
            for option in ("app", "wsgi", "asgi")
            if self[option] is not None
        ]
        if len(given) > 1:
            raise usage.UsageError(f"{' and '.join(given)} cannot be used together")
        if self["threads"] is not None and self["wsgi"] is None:
            raise usage.UsageError("--threads: only with --wsgi")
        self._lifespanMode()

    # ASGI

    def _lifespanMode(self) -> LifespanMode:
        mode = self["asgi-lifespan"]
        if mode is None:
            return "auto"
        if self["asgi"] is None:
            raise usage.UsageError("--asgi-lifespan: only with --asgi")
        for known in LIFESPAN_MODES:
            if mode == known:
                return known
        raise usage.UsageError(
            f"--asgi-lifespan: expected auto, on or off, got {mode!r}"
        )

    def _loopKind(self) -> LoopKind:
        kind = self["asgi-loop"]
        if kind is None:
            return "auto"
        for known in LOOP_KINDS:
            if kind == known:
                return known
        raise usage.UsageError(
            f"--asgi-loop: expected auto, asyncio or uvloop, got {kind!r}"
        )

    def _asyncioReactor(self) -> Any:
        """
        Install the asyncio reactor for C{--asgi}, before the application
        is imported (see L{gracesvc._asgi.loop}).
        """
        try:
            return installAsyncioReactor(self._loopKind())
        except ReactorMismatch as e:
            raise usage.UsageError(str(e)) from None

    def _endpoint(self, option: str, description: str) -> IStreamServerEndpoint:
        try:
            endpoint: IStreamServerEndpoint = serverFromString(
                self.reactor, self._backlog.describe(description)
            )
            return endpoint
        except Exception as e:
            raise usage.UsageError(
                f"--{option} {description!r}: not a usable endpoint: {_whyUnusable(e)}"
            ) from None


@implementer(IStreamServerEndpoint)
class TLSServerEndpoint:
    """
    TLS on the listening port of another server endpoint, as
    L{IReactorSSL.listenSSL <twisted.internet.interfaces.IReactorSSL.listenSSL>}
    serves it: the same L{TLSMemoryBIOFactory
    <twisted.protocols.tls.TLSMemoryBIOFactory>} around the protocol
    factory, so that ALPN offers what the factory's C{acceptableProtocols}
    names (C{h2}, C{http/1.1}) and connections close with close_notify as on
    an C{ssl:} endpoint.

    A worker of C{--workers} serves an C{ssl:} listener this way, on the TCP
    socket its master created and it adopted.
    """

    def __init__(
        self, wrapped: IStreamServerEndpoint, contextFactory: IOpenSSLContextFactory
    ) -> None:
        """
        @param wrapped: the endpoint whose port carries the TLS.
        @param contextFactory: the certificate and settings, as an C{ssl:}
            description makes them.
        """
        self.wrapped = wrapped
        self.contextFactory = contextFactory

    def listen(self, protocolFactory: IProtocolFactory) -> Deferred[IListeningPort]:
        return self.wrapped.listen(
            TLSMemoryBIOFactory(self.contextFactory, False, protocolFactory)
        )


def _whyUnusable(e: Exception) -> str:
    """
    @return: why L{serverFromString} refused a description, for a user:
        its parsers raise L{IndexError} for a C{systemd:} index with no
        inherited socket, and L{KeyError} for an unknown type or parameter.
    """
    text = str(e) or type(e).__name__
    if isinstance(e, IndexError):
        text = "no such inherited socket (is LISTEN_FDS set?)"
    elif isinstance(e, KeyError):
        text = f"unknown endpoint type or parameter {text}"
    return text


def makeService(options: Options, process: ProcessEffects | None = None) -> IService:
    """
    Make the gracesvc service from parsed L{Options}, and catch SIGINT and
    SIGTERM from now on: twistd may take a while (and fork) before the
    reactor runs, and a signal meanwhile must stop it cleanly.

    @param process: the process it serves in (its signals, its exit, its
        watchdog): this one when L{None}; a fake in tests.
    """
    # Not at module level: the wiring imports Klein and the app adapters
    # (see the module docstring).
    from gracesvc._wiring import serve

    return serve(options.config, options.reactor, process)
