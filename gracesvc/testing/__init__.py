# -*- test-case-name: tests.unit.core.test_drain -*-
"""
Test your resources under a drain: in-memory HTTP connections to a
L{DrainingSite}, driven by a L{Clock}.

L{Wire} serves your application's resource (gracesvc's demo app unless
you give one) through a real L{DrainingSite} and L{Drain}; L{Wire.connect}
opens a L{Client}; L{get} builds a request; L{Client.responses} parses what
came back; L{Wire.advance} lets time pass.  L{Wire.connectWebSocket} opens a
L{WebSocketClient}, which speaks WebSocket through wsproto and records what
it received.  L{gracesvc.testing.process} has the process-level
counterpart: real C{twistd} processes and raw socket clients.

L{twisted.test.iosim} (what C{treq.testing.StubTreq} runs on) moves bytes
between a real server channel and a raw client, and delivers
C{connectionLost} only after the last bytes written before
C{loseConnection} have been delivered, as a real transport does.  So these
tests see what a client on the wire would see.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import error
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import AccumulatingProtocol
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.web.http import Request
from twisted.web.resource import IResource
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.events import Request as WebSocketRequest

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.demo import GraceApp
from gracesvc._core.drain import Drain
from gracesvc._metrics.registry import Metrics
from gracesvc._protocols.deadlines import ConnectionTimeouts
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.limits import ConnectionLimit, LimitedFactory
from gracesvc._protocols.site import DrainingSite
from gracesvc._protocols.websocket import WebSocketPolicy

_RESPONSE = re.compile(
    rb"HTTP/1\.1 (\d{3}) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n", re.MULTILINE
)


class Response:
    """
    One parsed response: status, headers (lower-cased names) and body.

    @ivar complete: whether the whole body arrived (see L{parseResponses}'s
        C{partial}).
    """

    def __init__(
        self,
        code: int,
        headers: dict[bytes, bytes],
        body: bytes,
        complete: bool = True,
    ) -> None:
        self.code = code
        self.headers = headers
        self.body = body
        self.complete = complete

    def __repr__(self) -> str:
        more = "" if self.complete else " (incomplete)"
        return f"<Response {self.code} {self.headers!r} {self.body!r}{more}>"


def parseResponses(data: bytes, partial: bool = False) -> list[Response]:
    """
    Parse complete HTTP/1.1 responses, with a C{Content-Length} or chunked
    (as Twisted sends a body whose length it does not know), in order.

    @param partial: whether to include a trailing response whose headers
        arrived and whose body has not ended (an event stream, say), with
        the body so far and C{complete} false; otherwise it is left out.
    """
    parsed: list[Response] = []
    while data:
        match = _RESPONSE.match(data)
        if match is None:
            break
        headers = {}
        for line in match.group(2).split(b"\r\n"):
            if line:
                name, value = line.split(b":", 1)
                headers[name.strip().lower()] = value.strip()
        code = int(match.group(1))
        rest = data[match.end() :]
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size, crlf, after = rest.partition(b"\r\n")
                length = int(size, 16) if crlf and size else -1
                if length < 0 or len(after) < length + 2:
                    if partial:
                        parsed.append(Response(code, headers, body, complete=False))
                    return parsed
                body, rest = body + after[:length], after[length + 2 :]
                if length == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                if partial:
                    parsed.append(Response(code, headers, rest, complete=False))
                break
            body, rest = rest[:length], rest[length:]
        parsed.append(Response(code, headers, body))
        data = rest
    return parsed


def parseEventStream(body: bytes) -> list[dict[str, str]]:
    """
    Parse the body of a C{text/event-stream} as a client does, keeping every
    field: each block up to a blank line is one dictionary of field names
    to values (C{data} lines joined by newlines), a C{retry:}-only block
    included; comments are skipped, and a trailing block without its blank
    line is left out (a client drops it too).
    """
    blocks: list[dict[str, str]] = []
    block: dict[str, str] = {}
    text = body.decode("utf-8", "replace")
    lines = re.split(r"\r\n|\r|\n", text)
    # The last piece follows the last line break: not a whole line yet.
    for line in lines[:-1]:
        if not line:
            if block:
                blocks.append(block)
            block = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data" and "data" in block:
            value = block["data"] + "\n" + value
        block[name] = value
    return blocks


def get(path: str, *headers: str) -> bytes:
    """
    @return: the bytes of a C{GET} request for C{path}.
    """
    lines = [f"GET {path} HTTP/1.1", "Host: test", *headers, "", ""]
    return "\r\n".join(lines).encode("ascii")


def samples(exposition: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """
    Parse a Prometheus text exposition, as a scraper would.

    @return: every sample, keyed by name and sorted labels.
    """
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(exposition.decode("utf-8"))
        for s in family.samples
    }


class _ServerTransport(iosim.FakeTransport):
    """
    The server's end of a connection, aborting as a socket does.

    L{iosim.FakeTransport.abortConnection} is a C{loseConnection}: the bytes
    written before it are still delivered.  A real abort throws away what
    is still in Twisted's write buffer (here, what the pump has not moved
    yet) and resets the connection.
    """

    #: the client's end.
    peer: iosim.FakeTransport | None = None

    def loseWriteConnection(self) -> None:
        """
        Half-close, as an HTTP/2 connection closes: the client reads the
        end and closes its side, as clients do (a no-op in iosim).
        """
        self.loseConnection()

    def abortConnection(self) -> None:
        # Even after loseConnection: what is not flushed yet is lost.
        if not self.disconnected:
            self.stream = []
            if self.peer is not None:
                reset = error.ConnectionLost("Connection reset")
                self.peer.disconnectReason = reset  # type: ignore[assignment]
        super().abortConnection()


class Client:
    """
    One client connection: write bytes, read what the server sent.
    """

    def __init__(
        self, wire: Wire, protocol: AccumulatingProtocol | None = None
    ) -> None:
        self.wire = wire
        self.protocol = AccumulatingProtocol() if protocol is None else protocol
        # Past a Wire's connection limit, the server is the refusal's
        # protocol, not a channel.
        self.server: DrainingChannel = wire.factory.buildProtocol(
            IPv4Address("TCP", "127.0.0.1", 40000)
        )
        server = IPv4Address("TCP", "127.0.0.1", 8080)
        client = IPv4Address("TCP", "127.0.0.1", 40000)
        # TCP addresses at both ends, as a WSGI environ needs (REMOTE_ADDR,
        # SERVER_PORT).
        self.serverTransport = _ServerTransport(
            self.server, isServer=True, hostAddress=server, peerAddress=client
        )
        self.clientTransport = iosim.FakeTransport(
            self.protocol, isServer=False, hostAddress=client, peerAddress=server
        )
        self.serverTransport.peer = self.clientTransport
        self.pump = iosim.connect(
            self.server,
            self.serverTransport,
            self.protocol,
            self.clientTransport,
            clock=wire.clock,
        )
        wire.clients.append(self)

    def send(self, data: bytes) -> None:
        """
        Write C{data} to the server, and let it be delivered.
        """
        self.clientTransport.write(data)
        self.wire.flush()

    def close(self) -> None:
        """
        Close the connection from the client's side.
        """
        self.clientTransport.loseConnection()
        self.wire.flush()

    @property
    def responses(self) -> list[Response]:
        """
        The complete responses received so far, in order.
        """
        return parseResponses(self.protocol.data)

    @property
    def received(self) -> list[Response]:
        """
        The responses received so far, in order, the last one perhaps still
        arriving (its C{complete} false): an event stream under way, say.
        """
        return parseResponses(self.protocol.data, partial=True)

    @property
    def closed(self) -> bool:
        """
        Whether the connection is closed.
        """
        return bool(self.protocol.closed)

    @property
    def reset(self) -> bool:
        """
        Whether the server aborted the connection.
        """
        reason = self.protocol.closedReason
        return reason is not None and reason.check(error.ConnectionLost) is not None


class _WebSocketClientProtocol(AccumulatingProtocol):
    """
    Feeds what arrives to a L{WebSocketClient}'s wsproto connection.
    """

    def __init__(self, client: WebSocketClient) -> None:
        self.client = client

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.client._received(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.client.closedAt = self.client.wire.clock.seconds()
        super().connectionLost(reason)


class WebSocketClient(Client):
    """
    A WebSocket client connection, parsed with wsproto: it sends the
    handshake at once and (unless told not to) answers pings and the
    server's Close.

    @ivar accepted: whether the server answered 101.
    @ivar rejected: the status of the server's refusal, if it refused.
    @ivar messages: the complete messages received, in order.
    @ivar closeCode: the code of the server's Close frame, once received.
    @ivar closeReason: its reason.
    @ivar closeReceivedAt: when it arrived, on the wire's clock.
    @ivar afterClose: data frames received after the server's Close (RFC
        6455 forbids them).
    @ivar failures: protocol errors found in what the server sent (an HTTP
        response written into the WebSocket, say).
    @ivar closedAt: when the TCP connection closed, on the wire's clock.
    @ivar pings: the payloads of the server's pings, with when each came.
    """

    def __init__(
        self,
        wire: Wire,
        path: str = "/ws",
        answersClose: bool = True,
        answersPings: bool = True,
    ):
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.answersClose = answersClose
        self.answersPings = answersPings
        self.pings: list[tuple[float, bytes]] = []
        self.accepted = False
        self.rejected: int | None = None
        self.rejectedHeaders: dict[bytes, bytes] = {}
        self.messages: list[str | bytes] = []
        self.closeCode: int | None = None
        self.closeReason: str | None = None
        self.closeReceivedAt: float | None = None
        self.afterClose: list[str | bytes] = []
        self.failures: list[CloseConnection] = []
        self.closedAt: float | None = None
        self._parts: list[str | bytes | bytearray] = []
        super().__init__(wire, _WebSocketClientProtocol(self))
        self.send(self.ws.send(WebSocketRequest(host="test", target=path)))

    def sendText(self, text: str) -> None:
        """
        Send a text message.
        """
        self.send(self.ws.send(TextMessage(text)))

    def sendBytes(self, data: bytes) -> None:
        """
        Send a binary message.
        """
        self.send(self.ws.send(BytesMessage(data)))

    def ping(self, payload: bytes = b"") -> None:
        """
        Send a ping.
        """
        self.send(self.ws.send(Ping(payload)))

    def closeHandshake(self, code: int = 1000, reason: str = "") -> None:
        """
        Send a Close frame (the client begins the closing handshake).
        """
        self.send(self.ws.send(CloseConnection(code, reason)))

    @property
    def open(self) -> bool:
        """
        Whether the WebSocket is open: accepted, and no Close either way.
        """
        return self.accepted and self.ws.state is ConnectionState.OPEN

    def _received(self, data: bytes) -> None:
        if self.ws.state is ConnectionState.CLOSED:
            if data:
                self.failures.append(CloseConnection(1002, "bytes after close"))
            return
        self.ws.receive_data(data)
        for event in self.ws.events():
            self._event(event)

    def _event(self, event: Event) -> None:
        if isinstance(event, AcceptConnection):
            self.accepted = True
        elif isinstance(event, RejectConnection):
            self.rejected = event.status_code
            self.rejectedHeaders = {k.lower(): v for k, v in event.headers}
        elif isinstance(event, RejectData):
            pass
        elif isinstance(event, TextMessage | BytesMessage):
            self._parts.append(event.data)
            if event.message_finished:
                parts, self._parts = self._parts, []
                message: str | bytes = (
                    "".join(parts)  # type: ignore[arg-type]
                    if isinstance(event.data, str)
                    else b"".join(parts)  # type: ignore[arg-type]
                )
                if self.closeCode is None:
                    self.messages.append(message)
                else:
                    self.afterClose.append(message)
        elif isinstance(event, Ping):
            self.pings.append((self.wire.clock.seconds(), bytes(event.payload)))
            if self.answersPings and self.ws.state is ConnectionState.OPEN:
                self.clientTransport.write(self.ws.send(event.response()))
        elif isinstance(event, Pong):
            pass
        elif isinstance(event, CloseConnection):
            if self.ws.state not in (
                ConnectionState.REMOTE_CLOSING,
                ConnectionState.CLOSED,
            ):
                # wsproto's report of a protocol error in what it received.
                self.failures.append(event)
                return
            self.closeCode = event.code
            self.closeReason = event.reason
            self.closeReceivedAt = self.wire.clock.seconds()
            if self.ws.state is ConnectionState.REMOTE_CLOSING and self.answersClose:
                self.clientTransport.write(self.ws.send(event.response()))


def _demoApp(pingDelay: float, tick: float) -> Callable[[Wire], IResource]:
    """
    @return: what makes gracesvc's demo app for a L{Wire}, on its clock and
        drain, with its metrics on C{/metrics}.
    """

    def make(wire: Wire) -> IResource:
        app = GraceApp(wire.clock, wire.drain, pingDelay, tick)
        return withOperationalRoutes(app.resource(), wire.drain, wire.metrics)

    return make


class Wire:
    """
    A L{DrainingSite} on a L{Clock}, with in-memory clients.

    @ivar clock: the clock the drain, the site and the routes run on.
    @ivar drain: the drain the site's connections report to.
    @ivar metrics: the metrics the site counts responses in.
    @ivar site: the L{DrainingSite}.
    """

    def __init__(
        self,
        shutdownTimeout: float = 5.0,
        drainDelay: float = 0.0,
        pingDelay: float = 2.0,
        idleGrace: float = 0.5,
        resource: IResource | Callable[[Wire], IResource] | None = None,
        clock: Clock | None = None,
        webSocketPolicy: WebSocketPolicy | None = None,
        tick: float = 0.5,
        h2c: bool = False,
        timeouts: ConnectionTimeouts | None = None,
        maxConnections: int | None = None,
        requestFactory: Callable[..., Request] | None = None,
    ) -> None:
        """
        @param h2c: whether the site serves HTTP/2 too (to clients that open
            with its preface, or whose transport says ALPN chose C{h2}): see
            L{gracesvc.testing.h2.H2WireClient}.
        @param shutdownTimeout: see L{gracesvc.DrainPolicy}.
        @param drainDelay: see L{gracesvc.DrainPolicy}.
        @param pingDelay: how long the demo app's C{/ping} waits, when
            C{resource} is not given.
        @param idleGrace: see L{gracesvc.DrainPolicy}.
        @param resource: the root resource of the application to serve, or
            a callable that makes it from this wire (for an application
            that needs its clock, drain or metrics); if L{None}, gracesvc's
            demo app (C{/ping}, C{/events}, C{/poll}, C{/ws}) behind
            gracesvc's C{/healthz}, C{/readyz} and C{/metrics}, as
            C{twistd gracesvc} serves it without C{--app}.
        @param clock: the clock to run on; a new one if L{None}.
        @param webSocketPolicy: how the site's WebSockets close; the
            defaults if L{None}.
        @param tick: the seconds between two ticks of the demo app's
            C{/events} and C{/poll}, when C{resource} is not given.
        @param timeouts: the deadlines of the site's connections (the
            request head, keep-alive, writes); the defaults if L{None}.
        @param maxConnections: the most connections served at once (see
            L{gracesvc._protocols.limits}); no limit if L{None}.
        @param requestFactory: the site's request factory; Twisted's if
            L{None}.
        """
        self.clock = Clock() if clock is None else clock
        self.drain = Drain(
            self.clock,
            shutdownTimeout=shutdownTimeout,
            drainDelay=drainDelay,
            idleGrace=idleGrace,
        )
        self.metrics = Metrics(self.drain)
        if resource is None:
            resource = _demoApp(pingDelay, tick)
        if not IResource.providedBy(resource):
            resource = resource(self)
        siteOptions: dict[str, Any] = (
            {} if requestFactory is None else {"requestFactory": requestFactory}
        )
        self.site = DrainingSite(
            resource,
            self.drain,
            self.metrics,
            webSocketPolicy=webSocketPolicy,
            reactor=self.clock,
            h2c=h2c,
            timeouts=timeouts,
            **siteOptions,
        )
        #: what builds each connection's protocol: the site, behind the
        #: connection limit if there is one.
        self.factory: Any = self.site
        if maxConnections is not None:
            self.limit = ConnectionLimit(
                maxConnections, lambda: self.drain.connections, self.clock
            )
            self.factory = LimitedFactory(self.site, self.limit)
        self.clients: list[Client] = []

    def connect(self) -> Client:
        """
        @return: a new client connection to the site.
        """
        return Client(self)

    def connectWebSocket(
        self, path: str = "/ws", answersClose: bool = True, answersPings: bool = True
    ) -> WebSocketClient:
        """
        @param answersClose: whether the client answers the server's Close
            (one that does not stands for a client that stopped reading).
        @param answersPings: whether the client answers the server's pings
            (one that does not stands for a peer whose host is gone).
        @return: a new WebSocket client connection to the site, its
            handshake sent and answered.
        """
        return WebSocketClient(self, path, answersClose, answersPings)

    def flush(self) -> None:
        """
        Move the bytes written on every connection until none are left.
        """
        for _ in range(20):
            if not any(c.pump.flush() for c in self.clients):
                break

    def advance(self, seconds: float) -> None:
        """
        Let C{seconds} pass, in small steps, moving bytes after each.
        """
        steps = max(1, round(seconds / 0.01))
        for _ in range(steps):
            self.clock.advance(seconds / steps)
            self.flush()
