"""
A frame-level HTTP/2 client, for the races no ready-made client produces:
a stream sent after the server's first GOAWAY but before reading it, a
PING never acknowledged, a GOAWAY from the client with streams open.

L{H2Frames} is the client's state, with no I/O: it makes frames and reads
them.  L{H2WireClient} runs it over an in-memory connection of a
L{gracesvc.testing.Wire}; L{H2SocketClient} over a real socket, TLS with
ALPN C{h2} or cleartext with prior knowledge.

h2's own client state machine cannot be used for those races: after a
GOAWAY it refuses to read any frame or to send a stream (python-hyper/h2
#1181, #1199).  That is what L{H2LibraryClient} is for: a client on the h2
library, as the Python clients are, which retries only what RFC 9113
allows, to show that the drain loses none of its requests.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hpack import Decoder, Encoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.internet.task import Clock
from twisted.internet.testing import AccumulatingProtocol

from . import Client, Wire

#: A Node client: N requests to /ping on one session, one line a result;
#: with "close", session.close() once they are sent.  Run it as
#: C{node -e NODE_CLIENT URL N [close]} (Node's built-in http2 module).
NODE_CLIENT = r"""
const http2 = require('http2');
const [url, n, mode] = [process.argv[1], +process.argv[2], process.argv[3]];
const session = http2.connect(url, {rejectUnauthorized: false});
session.on('error', e => console.log('session-error', e.code || e.message));
let done = 0;
const finish = () => { if (++done === n) session.close(); };
for (let i = 0; i < n; i++) {
  const req = session.request({':path': '/ping'});
  let status = 0;
  req.on('response', h => { status = h[':status']; });
  req.on('data', () => {});
  req.on('end', () => { console.log('status', status); finish(); });
  req.on('error', e => { console.log('stream-error', e.code || e.message); finish(); });
  req.end();
}
setTimeout(() => console.log('sent'), 100);
if (mode === 'close') setTimeout(() => session.close(), 150);
"""

#: The client connection preface (RFC 9113 section 3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class StreamResult:
    """
    What came back on one stream.

    @ivar status: the response's status, once its headers arrived.
    @ivar reset: the error code of the server's RST_STREAM, if it sent one.
    """

    status: int | None = None
    headers: dict[bytes, bytes] = field(default_factory=dict)
    body: bytes = b""
    ended: bool = False
    reset: int | None = None


class H2Frames:
    """
    A frame-level HTTP/2 client's state: the frames to send, and what the
    server sent back.

    @ivar received: every frame read, with when (from C{clock}) it was read.
    @ivar streams: by stream id, what came back on it.
    @ivar goAways: the server's GOAWAYs, as (last stream id, error code).
    @ivar outbox: bytes this client owes the server (SETTINGS and PING
        ACKs): L{takeOutbox} them and send them.
    """

    def __init__(
        self,
        ackPings: bool = True,
        clock: object = time.monotonic,
        openWindows: bool = True,
        ackSettings: bool = True,
    ) -> None:
        """
        @param ackPings: whether to acknowledge the server's PINGs (a client
            that does not stands for one that stopped reading).
        @param clock: a function of no argument giving the time.
        @param openWindows: whether to give the server back the flow-control
            window its DATA used (a client that does not stands for one
            that stalls the server's responses).
        @param ackSettings: whether to acknowledge the server's SETTINGS at
            once; if not, L{settingsOwed} counts the ACKs owed.
        """
        self.ackPings = ackPings
        self.openWindows = openWindows
        self.ackSettings = ackSettings
        self.settingsOwed = 0
        self._clock = clock
        self._encoder = Encoder()
        self._decoder = Decoder()
        self._buffer = b""
        self.received: list[tuple[float, Frame]] = []
        self.streams: dict[int, StreamResult] = {}
        self.goAways: list[tuple[int, int]] = []
        self.pings: list[bytes] = []
        self.outbox = b""
        self.nextStreamID = 1

    def preface(self) -> bytes:
        """
        @return: the connection preface and this client's SETTINGS.
        """
        return PREFACE + SettingsFrame(0).serialize()

    def request(
        self,
        path: str = "/ping",
        method: str = "GET",
        body: bytes | None = None,
        endStream: bool = True,
        scheme: str = "https",
    ) -> tuple[int, bytes]:
        """
        Open a stream with a request.

        @param body: a body, sent in one DATA frame after the headers.
        @param endStream: whether the request ends there (else the client
            sends the rest with L{data}).
        @return: the stream id, and the frames to send.
        """
        streamID = self.nextStreamID
        self.nextStreamID += 2
        self.streams[streamID] = StreamResult()
        headers = [
            (":method", method),
            (":scheme", scheme),
            (":authority", "localhost"),
            (":path", path),
        ]
        if body is not None:
            headers.append(("content-length", str(len(body))))
        frame = HeadersFrame(streamID, self._encoder.encode(headers))
        frame.flags.add("END_HEADERS")
        if endStream and not body:
            frame.flags.add("END_STREAM")
        data = frame.serialize()
        if body:
            data += self.data(streamID, body, endStream)
        return streamID, data

    def data(self, streamID: int, data: bytes, endStream: bool = True) -> bytes:
        """
        @return: DATA frames on C{streamID} carrying C{data}, of the
            default largest frame size at most.
        """
        chunks = [data[i : i + 16384] for i in range(0, len(data), 16384)] or [b""]
        serialized = b""
        for i, chunk in enumerate(chunks):
            frame = DataFrame(streamID, chunk)
            if endStream and i == len(chunks) - 1:
                frame.flags.add("END_STREAM")
            serialized += frame.serialize()
        return serialized

    def goAway(self, lastStreamID: int = 0, errorCode: int = 0) -> bytes:
        """
        @return: a GOAWAY from the client.
        """
        serialized: bytes = GoAwayFrame(
            0, last_stream_id=lastStreamID, error_code=errorCode
        ).serialize()
        return serialized

    def takeOutbox(self) -> bytes:
        """
        @return: the bytes owed to the server, which are now sent.
        """
        data, self.outbox = self.outbox, b""
        return data

    def feed(self, data: bytes) -> None:
        """
        Read what the server sent.
        """
        self._buffer += data
        while len(self._buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
            if len(self._buffer) < 9 + length:
                break
            frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
            self._buffer = self._buffer[9 + length :]
            self._frameReceived(frame)

    def _frameReceived(self, frame: Frame) -> None:
        self.received.append((self._clock(), frame))  # type: ignore[operator]
        stream = self.streams.get(frame.stream_id)
        if isinstance(frame, SettingsFrame):
            if "ACK" not in frame.flags:
                if self.ackSettings:
                    self.outbox += SettingsFrame(0, flags=["ACK"]).serialize()
                else:
                    self.settingsOwed += 1
        elif isinstance(frame, PingFrame):
            if "ACK" not in frame.flags:
                self.pings.append(frame.opaque_data)
                if self.ackPings:
                    self.outbox += PingFrame(
                        0, opaque_data=frame.opaque_data, flags=["ACK"]
                    ).serialize()
        elif isinstance(frame, GoAwayFrame):
            self.goAways.append((frame.last_stream_id, frame.error_code))
        elif isinstance(frame, HeadersFrame) and stream is not None:
            for name, value in self._decoder.decode(frame.data, raw=True):
                if name == b":status":
                    stream.status = int(value)
                else:
                    stream.headers[name] = value
            stream.ended = "END_STREAM" in frame.flags
        elif isinstance(frame, DataFrame) and stream is not None:
            stream.body += frame.data
            stream.ended = "END_STREAM" in frame.flags
            if frame.flow_controlled_length and self.openWindows:
                # Keep the server's windows open.
                self.outbox += (
                    WindowUpdateFrame(
                        0, window_increment=frame.flow_controlled_length
                    ).serialize()
                    + WindowUpdateFrame(
                        frame.stream_id, window_increment=frame.flow_controlled_length
                    ).serialize()
                )
        elif isinstance(frame, RstStreamFrame) and stream is not None:
            stream.reset = frame.error_code

    def firstAt(self, kind: type[Frame], **attributes: object) -> float | None:
        """
        @return: when the first frame of C{kind} with C{attributes} was
            read, or L{None}.
        """
        for at, frame in self.received:
            if isinstance(frame, kind) and all(
                getattr(frame, name) == value for name, value in attributes.items()
            ):
                return at
        return None


class _FramesProtocol(AccumulatingProtocol):
    def __init__(
        self, frames: H2Frames, clock: Clock, ackSettingsAfter: float | None
    ) -> None:
        self.frames = frames
        self._clock = clock
        self._ackSettingsAfter = ackSettingsAfter

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        self.frames.feed(data)
        owed = self.frames.takeOutbox()
        if owed and self.transport is not None:
            self.transport.write(owed)
        if self.frames.settingsOwed and self._ackSettingsAfter is not None:
            self.frames.settingsOwed -= 1
            self._clock.callLater(self._ackSettingsAfter, self._ackSettings)

    def _ackSettings(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.write(SettingsFrame(0, flags=["ACK"]).serialize())


class H2WireClient(Client):
    """
    An HTTP/2 client connection to a L{Wire} whose site serves HTTP/2
    (C{Wire(..., h2c=True)}), speaking through L{H2Frames}.  The preface
    is sent on connecting, unless told not to.

    @ivar frames: the client's state.
    """

    def __init__(
        self,
        wire: Wire,
        ackPings: bool = True,
        tls: bool = False,
        connect: bool = True,
        openWindows: bool = True,
        ackSettingsAfter: float | None = 0.0,
    ) -> None:
        """
        @param ackPings: see L{H2Frames}.
        @param tls: whether the server's transport says ALPN chose C{h2}.
        @param connect: whether to send the preface now (else the test
            sends it, whole or in pieces).
        @param openWindows: see L{H2Frames}.
        @param ackSettingsAfter: how long after the server's SETTINGS it is
            acknowledged, on the wire's clock (a round trip); at once if
            0, never if L{None}.
        """
        self.frames = H2Frames(
            ackPings,
            clock=wire.clock.seconds,
            openWindows=openWindows,
            ackSettings=ackSettingsAfter == 0.0,
        )
        super().__init__(
            wire, _FramesProtocol(self.frames, wire.clock, ackSettingsAfter or None)
        )
        if tls:
            # What the TLS transport says when ALPN chose h2.
            self.serverTransport.negotiatedProtocol = b"h2"  # type: ignore[attr-defined]
        if connect:
            self.send(self.frames.preface())

    def request(self, path: str = "/ping", **kwargs: object) -> int:
        """
        Send a request; see L{H2Frames.request}.

        @return: its stream id.
        """
        streamID, data = self.frames.request(path, **kwargs)  # type: ignore[arg-type]
        self.send(data)
        return streamID

    @property
    def streams(self) -> dict[int, StreamResult]:
        return self.frames.streams


def h2Socket(port: int, tls: bool, timeout: float) -> socket.socket:
    """
    @return: a socket connected to C{port} on loopback, for an HTTP/2
        client's preface: over TLS with ALPN C{h2} (the certificate
        unchecked) if C{tls}, else cleartext (prior knowledge).
    @raise AssertionError: if the server did not negotiate C{h2}.
    """
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    if not tls:
        return sock
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    wrapped = context.wrap_socket(sock)
    if wrapped.selected_alpn_protocol() != "h2":
        raise AssertionError("the server did not negotiate h2")
    return wrapped


class H2SocketClient:
    """
    A frame-level HTTP/2 client on a real socket: TLS with ALPN C{h2}, or
    cleartext with prior knowledge.  It reads only when told to.

    @ivar frames: the client's state; frames are timed with
        L{time.monotonic}.
    @ivar closedAt: when the server closed the connection, if it did.
    """

    def __init__(
        self,
        port: int,
        tls: bool = True,
        ackPings: bool = True,
        timeout: float = 10.0,
    ) -> None:
        self.frames = H2Frames(ackPings)
        self.sock: socket.socket = h2Socket(port, tls, timeout)
        self.closedAt: float | None = None
        self.send(self.frames.preface())

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def request(self, path: str = "/ping", **kwargs: object) -> int:
        """
        Send a request; see L{H2Frames.request}.

        @return: its stream id.
        """
        streamID, data = self.frames.request(path, **kwargs)  # type: ignore[arg-type]
        self.send(data)
        return streamID

    def read(self, timeout: float = 0.05) -> bool:
        """
        Read what has arrived, waiting at most C{timeout} for something, and
        send what is owed (ACKs).

        @return: whether the connection is still open.
        """
        if self.closedAt is not None:
            return False
        pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending and not select.select([self.sock], [], [], timeout)[0]:
            return True
        try:
            data = self.sock.recv(65536)
        except (ConnectionError, OSError):
            data = b""
        if not data:
            self.closedAt = time.monotonic()
            return False
        self.frames.feed(data)
        owed = self.frames.takeOutbox()
        if owed:
            try:
                self.send(owed)
            except OSError:
                pass
        return True

    def readUntil(self, done: object, timeout: float = 10.0) -> bool:
        """
        Read until C{done()} is true, the connection closes or C{timeout}
        passes.

        @return: C{done()}.
        """
        giveUpAt = time.monotonic() + timeout
        while not done() and time.monotonic() < giveUpAt:  # type: ignore[operator]
            if not self.read(min(0.05, max(0.0, giveUpAt - time.monotonic()))):
                break
        return bool(done())  # type: ignore[operator]

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class H2LibraryTally:
    """
    What an L{H2LibraryClient} saw.

    @ivar answered: requests answered (any status).
    @ivar retried: requests sent again on a new connection, as RFC 9113
        section 8.7 allows: their stream was above a GOAWAY's last stream
        id, or refused (C{REFUSED_STREAM}).
    @ivar failed: why each request that was not answered failed.
    @ivar connections: connections opened.
    """

    answered: int = 0
    retried: int = 0
    failed: list[str] = field(default_factory=list)
    connections: int = 0


class H2LibraryClient:
    """
    An HTTP/2 client on the C{h2} library, the one under httpx and every
    other Python HTTP/2 client, on a real socket (TLS with ALPN C{h2}, or
    cleartext with prior knowledge).  It sends requests in batches on one
    connection, and retries only what RFC 9113 section 8.7 allows: a stream
    above the last stream id of the server's GOAWAY, or refused
    (C{REFUSED_STREAM}); anything else unanswered is a failure (as the
    C{ProtocolError} h2 raises on a frame after a GOAWAY).

    @ivar tally: what it saw so far.
    """

    def __init__(self, port: int, tls: bool = False, timeout: float = 10.0) -> None:
        self.port = port
        self.tls = tls
        self.timeout = timeout
        self.tally = H2LibraryTally()
        self._sock: socket.socket | None = None
        self._conn: h2.connection.H2Connection | None = None

    def _connect(self) -> tuple[socket.socket, h2.connection.H2Connection]:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.set_alpn_protocols(["h2"])
            sock = context.wrap_socket(sock)
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        self.tally.connections += 1
        self._sock, self._conn = sock, conn
        return sock, conn

    def close(self) -> None:
        """
        Close the connection, if one is open.
        """
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
        self._sock = self._conn = None

    def fetch(self, paths: list[str], attempts: int = 10) -> list[int | None]:
        """
        GET each of C{paths}, all at once on the open connection (or a new
        one), then again on a new connection what may be retried.

        @param attempts: the most times a request is sent.
        @return: each request's status, L{None} for one that failed (why
            is in C{tally.failed}).
        """
        results: list[int | None] = [None] * len(paths)
        pending = list(range(len(paths)))
        for _ in range(attempts):
            if not pending:
                break
            pending = self._batch(paths, pending, results)
            if pending:
                self.tally.retried += len(pending)
        for i in pending:
            self.tally.failed.append(f"{paths[i]}: still refused after {attempts}")
        return results

    def _batch(
        self, paths: list[str], indices: list[int], results: list[int | None]
    ) -> list[int]:
        """
        Send the requests of C{indices} on one connection, and read until
        each is answered, failed or to be retried.

        @return: the indices to retry.
        """
        if self._conn is None:
            try:
                self._connect()
            except OSError as e:
                self.tally.failed.extend(f"{paths[i]}: connect: {e}" for i in indices)
                return []
        sock, conn = self._sock, self._conn
        assert sock is not None and conn is not None
        scheme = "https" if self.tls else "http"
        streams: dict[int, int] = {}
        statuses: dict[int, int] = {}
        for i in indices:
            streamID = conn.get_next_available_stream_id()
            conn.send_headers(
                streamID,
                [
                    (":method", "GET"),
                    (":scheme", scheme),
                    (":authority", "127.0.0.1"),
                    (":path", paths[i]),
                ],
                end_stream=True,
            )
            streams[streamID] = i
        retry: list[int] = []
        failed: dict[int, str] = {}

        def fail(streamIDs: object, why: str) -> None:
            for streamID in list(streamIDs):  # type: ignore[call-overload]
                failed[streamID] = why
                del streams[streamID]

        try:
            sock.sendall(conn.data_to_send())
        except OSError:
            # The server closed: its GOAWAY, if it sent one, is still to be
            # read, and says what it processed.
            pass
        while streams:
            try:
                data = sock.recv(65536)
            except (OSError, TimeoutError) as e:
                data = b""
                if not isinstance(e, ConnectionResetError):
                    fail(streams, f"read: {e!r}")
                    break
            if not data:
                fail(streams, "connection closed with no GOAWAY")
                break
            try:
                events = conn.receive_data(data)
            except h2.exceptions.ProtocolError as e:
                fail(streams, f"h2: {e}")
                break
            for event in events:
                eventStream = getattr(event, "stream_id", None)
                if isinstance(event, h2.events.ResponseReceived):
                    statuses[event.stream_id] = int(dict(event.headers)[b":status"])
                elif isinstance(event, h2.events.DataReceived):
                    conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif (
                    isinstance(event, h2.events.StreamEnded) and eventStream in streams
                ):
                    i = streams.pop(event.stream_id)
                    results[i] = statuses.get(event.stream_id)
                    self.tally.answered += 1
                elif (
                    isinstance(event, h2.events.StreamReset) and eventStream in streams
                ):
                    if event.error_code == h2.errors.ErrorCodes.REFUSED_STREAM:
                        retry.append(streams.pop(event.stream_id))
                    else:
                        fail([event.stream_id], f"reset {event.error_code!r}")
                elif isinstance(event, h2.events.ConnectionTerminated):
                    last = event.last_stream_id or 0
                    for streamID in [s for s in streams if s > last]:
                        retry.append(streams.pop(streamID))
                    fail(streams, f"GOAWAY({last}) before its answer")
            if conn.state_machine.state is h2.connection.ConnectionState.CLOSED:
                break
            try:
                sock.sendall(conn.data_to_send())
            except OSError:
                pass
        if conn.state_machine.state is h2.connection.ConnectionState.CLOSED or failed:
            self.close()
        for why in failed.values():
            self.tally.failed.append(why)
        return retry
