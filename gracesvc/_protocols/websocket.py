# -*- test-case-name: tests.unit.protocols.test_websocket -*-
"""
WebSockets under the drain.

L{twisted.web.websocket}'s C{WebSocketResource} does the handshake (wsproto
underneath); then L{gracesvc._protocols.http1.DrainingChannel} takes the connection
over (see L{gracesvc._pins.twisted.webSocketParts}) and hands it, with the
application's L{WebSocketProtocol}, to a L{DrainingWebSocket}.  The
connection stays the one L{IDrainableConnection} the drain sees, in state
C{"websocket"}; L{DrainingWebSocket} carries the messages as Twisted's own
transport would, and adds what a drain needs and Twisted lacks:

  - a closing handshake: its Close frame, then the peer's Close awaited
    for at most L{WebSocketPolicy.closeTimeout}, then TCP closed after the
    last bytes (Twisted's C{loseConnection} closes TCP at once, and a
    client still sending then gets a reset); a peer that never answers is
    aborted at the timeout;
  - sends after the Close dropped and counted, never raised (wsproto
    raises, and raised in a message handler it drops the connection);
  - a message-size limit (Twisted reassembles messages of any size): a
    larger message is closed with 1009;
  - keepalive pings, as the C{websockets} library and uvicorn send them: a
    ping every L{WebSocketPolicy.pingInterval} seconds, and a peer whose
    pong does not come back within L{WebSocketPolicy.pingTimeout} (its
    host gone, a NAT that forgot it) is closed with 1011 instead of being
    held open until the next drain;
  - the drain's timeline.  When the drain goes away (the listeners have
    closed, after any drain delay) every WebSocket, in the same reactor
    turn, gives its application the chance to send a last message (an
    optional C{goingAway()} method, see L{GoingAwayWebSocketProtocol}),
    then sends Close with L{WebSocketPolicy.closeCode} (1001, "going
    away", or 1012, "service restart") and its reason, and closes as
    above.  At the cut, at the cap or on a second signal it is aborted:
    never is an HTTP response written into it.

Each WebSocket has one state (L{WebSocketState})::

    OPEN ──going away──> GOING_AWAY ──> CLOSE_SENT ──> CLOSING ──> CLOSED
      │  (the application's last        (our Close    (handshake    (TCP
      │   message, at most half the      is out)       done: TCP     closed)
      │   close timeout)                               closing)
      └──the peer's Close, an oversized message, the application's
         loseConnection, a protocol error: to CLOSE_SENT or CLOSING

How each WebSocket the drain ended ended (clean, timeout, cut) is counted in
L{Drain.longLived} under the kind C{"websocket"}, with the sends dropped.
A WebSocket is never a request in flight: the drain waits for it as an open
connection, and tells it when to go.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from twisted.internet.interfaces import (
    IDelayedCall,
    IProtocol,
    IPushProducer,
    IReactorTime,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.websocket import WebSocketProtocol
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Ping,
    Pong,
    TextMessage,
)
from zope.interface import implementer

from gracesvc._core.calls import callLogged
from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.tally import LongLivedOutcome
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import webSocketParts
from gracesvc._protocols.deadlines import ClientTally

#: The kind L{Drain.longLived} counts WebSockets under.
KIND = "websocket"

#: The default largest message, in bytes: 1 MiB.
DEFAULT_MAX_MESSAGE_SIZE = 1 << 20

#: The default most bytes held for a client that does not read: 4 MiB.
DEFAULT_WRITE_LIMIT = 4 << 20

#: Close codes an endpoint may send (RFC 6455 section 7.4, the IANA
#: registry's 1012-1014, and the ranges for libraries and applications).
_SENDABLE_CLOSE_CODES = frozenset(range(1000, 1004)) | frozenset(range(1007, 1015))

#: RFC 6455 section 5.5: a control frame's payload is at most 125 bytes, two
#: of which are a Close frame's code.
_MAX_CLOSE_REASON = 123

#: Why a message too big is closed (RFC 6455 section 7.4.1).
MESSAGE_TOO_BIG = 1009
#: Why an application that raised is closed, and a peer whose keepalive
#: pong never came (as the C{websockets} library closes it).
INTERNAL_ERROR = 1011


@dataclass(frozen=True)
class WebSocketPolicy:
    """
    How a site's WebSockets close, checked once.

    @ivar closeCode: the Close frame's code when the drain goes away: 1001
        ("going away", RFC 6455) by default, or 1012 ("service restart",
        IANA: clients reconnect after a randomized 5-30 s) for a whole
        service restarting.  The C{websockets} client library treats only
        1000, 1001 and 1005 as a normal close.
    @ivar closeReason: the Close frame's reason then, at most 123 bytes in
        UTF-8.
    @ivar closeTimeout: how long to wait for the peer's Close after ours,
        in seconds, before aborting the connection.  The application's last
        message before the drain's Close may take half of it.
    @ivar maxMessageSize: the largest message received, in bytes (UTF-8 for
        text); a larger one is closed with 1009.
    @ivar pingInterval: seconds between keepalive pings of an open
        WebSocket, or L{None} for none (the C{websockets} library's and
        uvicorn's default is 20).
    @ivar pingTimeout: seconds a keepalive ping waits for its pong before
        the WebSocket is closed with 1011.
    @ivar writeLimit: the most bytes of messages held for a client that
        does not take them (written while the transport's buffer is full,
        since it last emptied); past it the connection is aborted, since
        such a client would otherwise grow the server's memory without
        bound.
    """

    closeCode: int = 1001
    closeReason: str = "server shutting down"
    closeTimeout: float = 1.0
    maxMessageSize: int = DEFAULT_MAX_MESSAGE_SIZE
    pingInterval: float | None = 20.0
    pingTimeout: float = 20.0
    writeLimit: int = DEFAULT_WRITE_LIMIT

    def __post_init__(self) -> None:
        """
        @raise ValueError: a value out of range, with a message for a user.
        """
        if not (
            self.closeCode in _SENDABLE_CLOSE_CODES or 3000 <= self.closeCode <= 4999
        ):
            raise ValueError(
                f"{self.closeCode!r} is not a close code a server may send "
                f"(1001 going away, 1012 service restart, 3000-4999)"
            )
        if len(self.closeReason.encode("utf-8")) > _MAX_CLOSE_REASON:
            raise ValueError(
                f"the close reason must fit in {_MAX_CLOSE_REASON} bytes of UTF-8"
            )
        if not self.closeTimeout > 0:
            raise ValueError(
                f"the close timeout must be > 0 seconds, got {self.closeTimeout!r}"
            )
        if not self.maxMessageSize >= 1:
            raise ValueError(
                f"the largest message must be >= 1 byte, got {self.maxMessageSize!r}"
            )
        if self.pingInterval is not None and not self.pingInterval > 0:
            raise ValueError(
                f"the ping interval must be > 0 seconds, got {self.pingInterval!r}"
            )
        if not self.pingTimeout > 0:
            raise ValueError(
                f"the ping timeout must be > 0 seconds, got {self.pingTimeout!r}"
            )
        if not self.writeLimit >= 1:
            raise ValueError(
                f"the write limit must be >= 1 byte, got {self.writeLimit!r}"
            )


class GoingAwayWebSocketProtocol(WebSocketProtocol, Protocol):
    """
    A L{WebSocketProtocol} that says goodbye when the drain goes away.
    C{goingAway} is optional: L{DrainingWebSocket} calls it if the
    application's protocol has it.
    """

    def goingAway(self) -> object:
        """
        The server is going away: send a last message now, if any (say when
        to reconnect).  The Close frame follows once this returns, or once
        the Deferred or coroutine it returns is done, but no later than half
        the close timeout.  Sends after that are dropped.
        """


class Carrier(Protocol):
    """
    What a L{DrainingWebSocket} needs of the connection under it:
    L{gracesvc._protocols.http1.DrainingChannel}, which closes TCP as its HTTP
    connections close (TLS included) and passes flow control on to a
    registered producer.
    """

    #: whether its transport's buffer is full: the client takes less than
    #: is written.
    writeBlocked: bool

    def write(self, data: bytes) -> None: ...

    def loseConnection(self) -> None: ...

    def abortConnection(self) -> None: ...

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None: ...

    def unregisterProducer(self) -> None: ...


class MessageTooBig(Exception):
    """
    A message grew past its L{MessageBuffer}'s limit.
    """


class MessageBuffer:
    """
    The parts of the message being received, joined as they come, up to a
    size limit, as hypercorn's C{WebsocketBuffer}: wsproto hands a message
    over in parts (one or more a frame), and Twisted's own transport joins
    parts of any size.

    The parts are appended to one C{bytearray} (text as UTF-8, which wsproto
    has checked), not kept in a list: a message of a million two-byte
    fragments would otherwise hold a million objects, twenty times its
    size.  A message that comes whole is handed on as it came.

    Past the limit the message is dropped, and so is every part after it:
    the connection is closing.
    """

    def __init__(self, maxSize: int) -> None:
        """
        @param maxSize: the largest message, in bytes (UTF-8 for text).
        """
        self.maxSize = maxSize
        self._parts: bytearray | None = None
        self._overflowed = False

    def add(self, event: TextMessage | BytesMessage) -> str | bytes | None:
        """
        Add a part of the message.

        @return: the whole message once C{event} is its last part; L{None}
            until then, and for every part once the limit was passed.
        @raise MessageTooBig: C{event} took the message past the limit.
        """
        if self._overflowed:
            return None
        data = event.data
        text = isinstance(data, str)
        part = data.encode("utf-8") if isinstance(data, str) else data
        parts = self._parts
        size = len(part) + (0 if parts is None else len(parts))
        if size > self.maxSize:
            self._overflowed = True
            self._parts = None
            raise MessageTooBig(size)
        if parts is None:
            if event.message_finished:
                return data if isinstance(data, str) else bytes(data)
            parts = self._parts = bytearray()
        parts += part
        if not event.message_finished:
            return None
        self._parts = None
        return parts.decode("utf-8") if text else bytes(parts)


class Keepalive:
    """
    The keepalive pings of one WebSocket, as the C{websockets} library and
    uvicorn send them: a ping one interval after the connection opened or
    the last pong came, and a pong awaited for a timeout.  A random payload
    of its own tells its pong apart from the answers to the application's
    pings.
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float | None,
        timeout: float,
        ping: Callable[[bytes], bool],
        timedOut: Callable[[], object],
    ) -> None:
        """
        @param interval: seconds from the open or a pong to the next ping;
            L{None} for no pings.
        @param timeout: seconds a ping waits for its pong.
        @param ping: sends a ping with the payload it is given, if the
            WebSocket is still open, and returns whether it did.
        @param timedOut: called when a pong did not come in time.
        """
        self._clock = clock
        self.interval = interval
        self.timeout = timeout
        self._ping = ping
        self._timedOut = timedOut
        self._call: IDelayedCall | None = None
        self._payload: bytes | None = None

    def start(self) -> None:
        """
        The next ping, one interval from now.
        """
        if self.interval is not None:
            self._call = self._clock.callLater(self.interval, self._send)

    def stop(self) -> None:
        """
        No ping, and no wait for a pong, until L{start}.
        """
        cancelCall(self._call)
        self._call = None

    def pongReceived(self, payload: bytes) -> bool:
        """
        @return: whether C{payload} is the one of the last ping sent: its
            wait is over (L{start} schedules the next).  Otherwise the pong
            answers one of the application's pings.
        """
        if self._payload is None or payload != self._payload:
            return False
        self._payload = None
        self.stop()
        return True

    def _send(self) -> None:
        self._call = None
        payload = os.urandom(4)
        if self._ping(payload):
            self._payload = payload
            self._call = self._clock.callLater(self.timeout, self._pongLate)

    def _pongLate(self) -> None:
        self._call = None
        self._payload = None
        self._timedOut()


class WebSocketState(Enum):
    """
    What a L{DrainingWebSocket} is doing.
    """

    #: messages flow both ways.
    OPEN = "open"
    #: the drain went away; the application's last message is on its way.
    GOING_AWAY = "going away"
    #: our Close is out: incoming messages are still delivered, sends are
    #: dropped; the peer's Close is awaited until the close timeout.
    CLOSE_SENT = "close sent"
    #: the closing handshake is done (or the connection failed): TCP
    #: closes after the last bytes, or is aborted at the close timeout.
    CLOSING = "closing"
    #: the connection is lost.
    CLOSED = "closed"


_OPEN, _GOING_AWAY, _CLOSE_SENT, _CLOSING, _CLOSED = WebSocketState


@implementer(IDrainableConnection)
class DrainingWebSocket:
    """
    One WebSocket connection, server side, after the handshake: the
    application's transport (L{twisted.web.websocket.WebSocketTransport}),
    the connection's protocol (what the channel feeds its bytes to) and,
    through the channel, the drain's L{IDrainableConnection}.

    @ivar application: the application's protocol.
    @ivar transport: the connection under it, once connected.
    """

    log = Logger()

    #: A WebSocket is not a request being answered: the drain waits for it
    #: as an open connection, and tells it when to go (see
    #: L{Drain.whenGoingAway}).  So it is never counted as a request cut.
    inFlight = 0

    transport: Carrier | None = None

    #: The code and reason of the peer's Close, once it came: what an
    #: application that asks (an ASGI one's C{websocket.disconnect}) is
    #: told; L{None} if the connection ends without one (1006).
    peerClose: tuple[int, str] | None = None

    def __init__(
        self,
        connection: Connection,
        application: WebSocketProtocol,
        drain: Drain,
        policy: WebSocketPolicy,
        tally: ClientTally | None = None,
    ) -> None:
        """
        @param connection: the wsproto connection, its handshake done.
        @param application: the application's protocol; its
            C{negotiationStarted} is called when the connection is made.
        @param drain: the drain that tells it when to go, and counts how it
            ended.
        @param policy: how it closes.
        @param tally: counts (and logs) a client aborted for taking nothing
            of what it is sent (see L{WebSocketPolicy.writeLimit}).
        """
        self.connection = connection
        self.application = application
        self.drain = drain
        self.policy = policy
        self.tally = tally
        #: bytes written since the transport's buffer was last found not
        #: full.
        self._held = 0
        self._state = _OPEN
        self._told = False
        self._outcome: LongLivedOutcome | None = None
        self._message = MessageBuffer(policy.maxMessageSize)
        self._timer: IDelayedCall | None = None
        self._keepalive = Keepalive(
            drain.clock,
            policy.pingInterval,
            policy.pingTimeout,
            self._keepalivePing,
            self._pingTimedOut,
        )
        self._unsubscribe: Callable[[], object] | None = None

    @classmethod
    def fromTwisted(
        cls,
        wire: IProtocol,
        drain: Drain,
        policy: WebSocketPolicy,
        tally: ClientTally | None = None,
    ) -> DrainingWebSocket:
        """
        @param wire: the wire protocol Twisted's C{WebSocketResource} hands
            to the channel after its handshake.
        @return: a L{DrainingWebSocket} for the same wsproto connection and
            application.
        """
        connection, application = webSocketParts(wire)
        return cls(connection, application, drain, policy, tally)

    # What the channel does with it.

    def makeConnection(self, transport: Carrier) -> None:
        """
        The connection is handed over; the 101 response is written right
        after this returns.
        """
        self.transport = transport
        self.application.negotiationStarted(self)
        if self.drain.goneAway:
            # Upgraded after the drain went away (a handler slower than the
            # signal): the Close must follow the 101, on the next turn.
            self._unsubscribe = self.drain.clock.callLater(0, self._goAway).cancel
        else:
            self._unsubscribe = self.drain.whenGoingAway(self._goAway)
        if self._state is _OPEN:
            self._keepalive.start()

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSING or self._state is _CLOSED:
            return
        self.connection.receive_data(data)
        for event in self.connection.events():
            try:
                self._received(event)
            except Exception:
                self.log.failure("WebSocket application failed")
                self._fail(INTERNAL_ERROR, "internal error")
            if self._state is _CLOSING or self._state is _CLOSED:
                return

    def connectionLost(self, reason: Failure) -> None:
        self._state = _CLOSED
        self._cancelTimer()
        self._keepalive.stop()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            unsubscribe()
        if self._told:
            # Closed before its close timeout: its client gone.
            self._ended("clean")
        try:
            self.application.connectionLost(reason)
        except Exception:
            self.log.failure("WebSocket application failed in connectionLost")

    # twisted.web.websocket.WebSocketTransport, for the application.

    def sendTextMessage(self, text: str) -> None:
        self._send(TextMessage(text))

    def sendBytesMessage(self, data: bytes) -> None:
        self._send(BytesMessage(data))

    def ping(self, payload: bytes = b"") -> None:
        self._send(Ping(payload))

    def loseConnection(self, code: int = 1000, reason: str = "") -> None:
        """
        Close: send a Close frame with C{code} and C{reason}, wait for the
        peer's (up to the close timeout), then close TCP.
        """
        self._close(code, reason)

    def attachProducer(self, producer: IPushProducer) -> None:
        assert self.transport is not None
        self.transport.registerProducer(producer, True)

    def detachProducer(self) -> None:
        assert self.transport is not None
        self.transport.unregisterProducer()

    @property
    def sending(self) -> bool:
        """
        Whether a message sent now goes out: not once a Close was sent
        (ours, or our answer to the peer's), nor after the connection was
        lost.  Sends then are dropped.
        """
        return (
            self._state is _OPEN or self._state is _GOING_AWAY
        ) and self.connection.state is ConnectionState.OPEN

    # IDrainableConnection, through the channel.

    @property
    def state(self) -> str:
        return "closing" if self._state is _CLOSING else KIND

    def beginDrain(self) -> None:
        """
        Nothing yet: a WebSocket is told when the drain goes away, once the
        listeners have closed, so that its client reconnects elsewhere.
        """

    def cut(self, retryAfter: int) -> int:
        """
        Abort: an upgraded connection is never given an HTTP response.

        @return: 0, a WebSocket is not a request.
        """
        self.abort()
        return 0

    def abort(self) -> None:
        if self._state is _CLOSED:
            return
        if self._state is not _CLOSING:
            self._ended("cut")
        self._abortTransport()

    # Receiving.

    def _received(self, event: Event) -> None:
        if isinstance(event, TextMessage | BytesMessage):
            try:
                message = self._message.add(event)
            except MessageTooBig:
                self._close(MESSAGE_TOO_BIG, "message too big")
                return
            if isinstance(message, str):
                self.application.textMessageReceived(message)
            elif message is not None:
                self.application.bytesMessageReceived(message)
        elif isinstance(event, Ping):
            # No Pong after our Close (wsproto would raise).
            if self.connection.state is ConnectionState.OPEN:
                self._write(self.connection.send(event.response()))
        elif isinstance(event, Pong):
            if self._keepalive.pongReceived(event.payload):
                if self._state is _OPEN:
                    self._keepalive.start()
            else:
                self.application.pongReceived(event.payload)
        elif isinstance(event, CloseConnection):
            self._closeReceived(event)

    def _closeReceived(self, event: CloseConnection) -> None:
        state = self.connection.state
        if state is ConnectionState.REMOTE_CLOSING or state is ConnectionState.CLOSED:
            self.peerClose = (event.code, event.reason or "")
        if state is ConnectionState.REMOTE_CLOSING:
            # The peer closes: answer with its code; the server closes TCP
            # first (RFC 6455 section 7.1.1).
            self._write(self.connection.send(event.response()))
            self._closeTCP()
        elif state is ConnectionState.CLOSED:
            # The answer to our Close: the handshake is done.
            self._closeTCP()
        else:
            # wsproto reports a protocol error as a Close without changing
            # its state: fail the connection (RFC 6455 section 7.1.7).
            self._fail(event.code, event.reason or "")

    # Sending and closing.

    def _send(self, event: Event) -> None:
        if (
            self._state is _OPEN or self._state is _GOING_AWAY
        ) and self.connection.state is ConnectionState.OPEN:
            self._write(self.connection.send(event))
        else:
            # RFC 6455 section 5.5.1: no data after a Close.
            self.drain.longLived.sendDropped(KIND)

    def _write(self, data: bytes) -> None:
        transport = self.transport
        assert transport is not None
        if transport.writeBlocked:
            # Held in memory until the client takes it: bounded.
            self._held += len(data)
            if self._held > self.policy.writeLimit:
                self._clientNotReading()
                return
        elif self._held:
            self._held = 0
        transport.write(data)

    def _clientNotReading(self) -> None:
        """
        What is held for the client passed the write limit: it takes
        nothing (or less than the application sends), and nothing more will
        reach it, a Close frame included.  Abort.
        """
        if self.tally is not None:
            transport: Any = self.transport
            self.tally.timedOut(
                "buffer", peer=str(transport.getPeer()), limit=self.policy.writeLimit
            )
        if self._told:
            self._ended("cut")
        self._abortTransport()

    def _close(self, code: int, reason: str) -> None:
        """
        Begin the closing handshake, unless it has begun.
        """
        if not (self._state is _OPEN or self._state is _GOING_AWAY):
            return
        self._cancelTimer()
        self._keepalive.stop()
        self._state = _CLOSE_SENT
        self._write(self.connection.send(CloseConnection(code, reason)))
        self._timer = self.drain.clock.callLater(
            self.policy.closeTimeout, self._closeTimedOut
        )

    def _fail(self, code: int, reason: str) -> None:
        """
        Close at once, with a Close frame if none was sent.
        """
        if self.connection.state is ConnectionState.OPEN:
            self._write(self.connection.send(CloseConnection(code, reason)))
        self._closeTCP()

    def _closeTCP(self) -> None:
        """
        The closing handshake is over: close TCP after the last bytes, and
        abort if that takes longer than the close timeout (a peer that does
        not read).
        """
        self._cancelTimer()
        self._keepalive.stop()
        self._state = _CLOSING
        if self._told:
            self._ended("clean")
        self._timer = self.drain.clock.callLater(
            self.policy.closeTimeout, self._closeTimedOut
        )
        assert self.transport is not None
        self.transport.loseConnection()

    def _closeTimedOut(self) -> None:
        self._timer = None
        if self._told:
            self._ended("timeout")
        self._abortTransport()

    def _abortTransport(self) -> None:
        self._cancelTimer()
        self._keepalive.stop()
        if self._state is not _CLOSED:
            self._state = _CLOSING
        if self.transport is not None:
            self.transport.abortConnection()

    # The drain's timeline.

    def _goAway(self) -> None:
        """
        The drain goes away: the application's last message, then Close.
        """
        self._unsubscribe = None
        if self._state is _CLOSED:
            return
        self._told = True
        if self._state is not _OPEN:
            return
        self._state = _GOING_AWAY
        goingAway = getattr(self.application, "goingAway", None)
        if goingAway is not None:
            said = callLogged(
                goingAway, self.log, "WebSocket application failed in goingAway"
            )
            if said is not None and not said.called:
                self._timer = self.drain.clock.callLater(
                    self.policy.closeTimeout / 2, self._goodbyeSaid
                )
                said.addBoth(lambda _: self._goodbyeSaid())
                return
        self._goodbyeSaid()

    def _goodbyeSaid(self) -> None:
        if self._state is _GOING_AWAY:
            self._close(self.policy.closeCode, self.policy.closeReason)

    # Keepalive.

    def _keepalivePing(self, payload: bytes) -> bool:
        """
        Send a keepalive ping with C{payload}, if the WebSocket is open.
        """
        if (
            self._state is not _OPEN
            or self.connection.state is not ConnectionState.OPEN
        ):
            return False
        self._write(self.connection.send(Ping(payload)))
        return True

    def _pingTimedOut(self) -> None:
        self.log.info(
            "WebSocket closed: no pong within {timeout} s of a keepalive ping",
            timeout=self.policy.pingTimeout,
        )
        self._fail(INTERNAL_ERROR, "keepalive ping timeout")

    # Helpers.

    def _ended(self, outcome: LongLivedOutcome) -> None:
        """
        Count how it ended, once.
        """
        if self._outcome is None:
            self._outcome = outcome
            self.drain.longLived.ended(KIND, outcome)

    def _cancelTimer(self) -> None:
        cancelCall(self._timer)
        self._timer = None
