# -*- test-case-name: tests.unit.protocols.test_h2 -*-
"""
HTTP/2, drained without losing a stream.

A L{gracesvc._protocols.site.DrainingSite} built with C{http2=True} serves
it beside HTTP/1.1: L{gracesvc._protocols.negotiate.NegotiatingProtocol}
hands a connection whose client speaks HTTP/2 to a
L{DrainingH2Connection}.

L{DrainingH2Connection} is one L{IDrainableConnection}, whose C{inFlight}
counts its streams, and it drains in two phases (RFC 9113 section 6.8), as
grpc-go and hyper do::

    OPEN ─── serving
      │ beginDrain: GOAWAY(2^31-1, NO_ERROR) and a PING
    NOTICE ─ streams that arrive are still served: the client may have sent
      │      them before it read the GOAWAY
      │ the PING's ACK (every stream sent before the client read the GOAWAY
      │ has arrived before it), or min(1 s, half the time to the cut)
    FINAL ── GOAWAY(the highest stream accepted); a later stream gets
      │      RST_STREAM(REFUSED_STREAM) and never reaches the application
      │ no stream left
    CLOSING  the last frames flushed, the transport closed (TLS
      │      close_notify); TCP closes when the client closes, or after a
      │      short linger
    CLOSED

A client's GOAWAY(NO_ERROR) moves it to FINAL too: its open streams finish,
then it closes.  At the cut, a stream whose request never reached the
application is refused, one with no response started gets a 503 with
C{Retry-After}, one mid-response gets RST_STREAM(CANCEL); at the cap, or on
a second signal, it sends the final GOAWAY with the true last stream id
and aborts.

The Twisted and h2 internals this needs are in L{gracesvc._pins.twisted_h2}.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

import h2.errors
import h2.events
import h2.exceptions
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import (
    IDelayedCall,
    IReactorTime,
    ISSLTransport,
)
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.tally import LongLivedOutcome
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import closeBeneathTLS
from gracesvc._pins.twisted_h2 import (
    H2Connection,
    flushControlBytes,
    flushToSocket,
    goAwayFrame,
    receiveData,
    requestOf,
    streamsLost,
    tolerantStateMachine,
    writeControlBytes,
    writePreparedFrames,
)
from gracesvc._protocols.answers import (
    LongLivedKind,
    ResponseCutAtCap,
    ResponseMetrics,
    answerServiceUnavailable,
)

if TYPE_CHECKING:
    from twisted.web.http import Request

#: The largest stream id: the first GOAWAY's last stream id, which refuses
#: nothing.
MAX_STREAM_ID = 2**31 - 1

#: The most the final GOAWAY waits for the PING's ACK, in seconds.
NOTICE_WAIT = 1.0

#: How long a closed connection waits for the client to close TCP before
#: closing it itself, in seconds: a client still writing (a WINDOW_UPDATE,
#: a stream it sent before reading the GOAWAY) into a closed socket would
#: get a reset, and could lose the last response with it.
LINGER = 0.25

#: The opaque data of the drain's PING.
PING_DATA = b"gracesvc"

_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
_CANCEL = h2.errors.ErrorCodes.CANCEL


class H2Tally:
    """
    What the HTTP/2 connections of one site did, for the metrics.

    @ivar open: the HTTP/2 connections open now.
    @ivar goAways: GOAWAY frames sent, by phase: C{notice} (the first, last
        stream id 2^31-1) and C{final} (the highest stream accepted).
    @ivar refused: streams answered RST_STREAM(REFUSED_STREAM): opened
        after the final GOAWAY, or whose request had not reached the
        application at the cut.
    """

    def __init__(self) -> None:
        self.open = 0
        self.goAways = {"notice": 0, "final": 0}
        self.refused = 0
        #: how many drain PINGs were acknowledged, and their round trips'
        #: sum, in seconds.
        self.pingAcks = 0
        self.pingRoundTrips = 0.0

    def pingAcked(self, roundTrip: float) -> None:
        """
        The drain's PING came back after C{roundTrip} seconds.
        """
        self.pingAcks += 1
        self.pingRoundTrips += roundTrip


class H2Site(Protocol):
    """
    What a L{DrainingH2Connection} needs of its site, a
    L{gracesvc._protocols.site.DrainingSite} (which imports this module).
    """

    drain: Drain
    metrics: ResponseMetrics | None
    h2Tally: H2Tally


class H2ConnectionState(Enum):
    """
    Where a L{DrainingH2Connection} is; see the module docstring.
    """

    OPEN = "open"
    NOTICE = "notice"
    FINAL = "final"
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN, _NOTICE, _FINAL, _CLOSING, _CLOSED = H2ConnectionState


@implementer(IDrainableConnection)
class DrainingH2Connection(H2Connection):
    """
    An HTTP/2 connection that tells its site's L{Drain} when it opens,
    answers and closes, counts its streams as requests in flight, and
    drains with a two-phase GOAWAY (see the module docstring).
    """

    log = Logger()
    site: H2Site  # type: ignore[assignment]

    def __init__(self, reactor: IReactorTime) -> None:
        super().__init__(reactor)
        tolerantStateMachine(self)
        self._state = _OPEN
        self._clock = reactor
        self._lastStreamID: int | None = None
        self._pingSentAt = 0.0
        self._noticeCall: IDelayedCall | None = None
        self._lingerCall: IDelayedCall | None = None
        #: when each stream's request was received whole (and handed to the
        #: application), for the metrics; None once its response is counted.
        self._receivedAt: dict[int, float | None] = {}
        self._reported = False
        #: the kind of each stream answered with a long-lived response.
        self._longLived: dict[int, str] = {}

    # IProtocol

    def connectionMade(self) -> None:
        super().connectionMade()
        self._drain = self.site.drain
        self._tally = self.site.h2Tally
        self._tally.open += 1
        self._drain.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        if self._state is not _CLOSED:
            receiveData(self, data, self._otherEvent, self._closed)

    def _otherEvent(self, event: h2.events.Event) -> None:
        """
        An event Twisted's dispatch would drop or mishandle: the ACK of the
        drain's PING, the client's GOAWAY (Twisted aborts every stream).
        """
        if isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == PING_DATA and self._state is _NOTICE:
                self._tally.pingAcked(self._clock.seconds() - self._pingSentAt)
                self._finalGoAway()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._peerGoneAway(event)

    def _closed(self) -> bool:
        return self._state is _CLOSED

    def transportLost(self, reason: Failure) -> None:
        """
        The transport is closed (C{connectionLost} is also called by Twisted
        for a lost stream producer or a GOAWAY): tell the drain, once.
        """
        self._state = _CLOSED
        cancelCall(self._noticeCall)
        cancelCall(self._lingerCall)
        self._noticeCall = self._lingerCall = None
        self.connectionLost(reason)
        if not self._reported:
            self._reported = True
            self._tally.open -= 1
            self._drain.connectionClosed(self)

    # Streams

    def _refuses(self, streamID: int) -> bool:
        last = self._lastStreamID
        return (
            self._state is not _OPEN
            and self._state is not _NOTICE
            and (last is None or streamID > last)
        )

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        streamID = event.stream_id
        if self._refuses(streamID):
            try:
                self.conn.reset_stream(streamID, _REFUSED)
            except h2.exceptions.StreamClosedError:
                return
            self._tally.refused += 1
            return
        super()._requestReceived(event)

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        if event.stream_id not in self.streams:
            # A refused stream's body, read in the same chunk as its headers:
            # give the connection's flow-control credit back.
            self.conn.acknowledge_received_data(
                event.flow_controlled_length, event.stream_id
            )
            return
        super()._requestDataReceived(event)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        streamID = event.stream_id
        if streamID not in self.streams:
            return
        self._receivedAt[streamID] = self._clock.seconds()
        super()._requestEnded(event)

    def _requestAborted(self, event: h2.events.StreamReset) -> None:
        if event.stream_id not in self.streams:
            return
        super()._requestAborted(event)

    def endRequest(self, streamID: int) -> None:
        stream = self.streams.get(streamID)
        receivedAt = self._receivedAt.get(streamID)
        if stream is not None and receivedAt is not None:
            self._receivedAt[streamID] = None
            drain = self._drain
            metrics = self.site.metrics
            if metrics is not None:
                metrics.requestDone(
                    requestOf(stream), self._clock.seconds() - receivedAt
                )
            if drain.draining and not drain.cutting:
                drain.requestCompleted()
                kind = self._longLived.pop(streamID, None)
                if kind is not None:
                    drain.longLived.ended(kind, "clean")
        super().endRequest(streamID)

    def _requestDone(self, streamID: int) -> None:
        super()._requestDone(streamID)
        self._receivedAt.pop(streamID, None)
        if self._longLived:
            self._longLived.pop(streamID, None)
        if self._state is _FINAL and not self.streams:
            self._close()

    def timeoutConnection(self) -> None:
        # Twisted's closes h2's state machine, with PROTOCOL_ERROR if a
        # stream is open: a handler slower than the timeout lost its answer.
        if self.streams:
            # (The timer has fired: resetTimeout would not re-arm it.)
            self.setTimeout(self.timeOut)
            return
        self._finalGoAway()

    def _terminate(self, reason: Failure) -> None:
        # A protocol error (h2 has queued its GOAWAY) or too many resets.
        writePreparedFrames(self)
        self._close()
        streamsLost(self, reason)
        # Nothing more is read: h2's state machine is closed.
        self._state = _CLOSED

    # The drain

    def _peerGoneAway(self, event: h2.events.ConnectionTerminated) -> None:
        if event.error_code == h2.errors.ErrorCodes.NO_ERROR:
            # It opens no more streams, and wants the open ones answered.
            self._finalGoAway()
            return
        self._terminate(
            Failure(ConnectionLost(f"Remote peer sent GOAWAY ({event.error_code!r})"))
        )

    def _finalGoAway(self) -> None:
        """
        Send the final GOAWAY, with the highest stream accepted, if not
        sent yet; close if no stream is left.
        """
        if self._state is not _OPEN and self._state is not _NOTICE:
            return
        cancelCall(self._noticeCall)
        self._noticeCall = None
        self._state = _FINAL
        self._lastStreamID = self.conn.highest_inbound_stream_id
        writeControlBytes(self, goAwayFrame(self._lastStreamID))
        self._tally.goAways["final"] += 1
        self.log.debug(
            "HTTP/2 final GOAWAY: last stream {lastStreamID}, {inFlight} "
            "streams in flight",
            lastStreamID=self._lastStreamID,
            inFlight=len(self.streams),
        )
        if not self.streams:
            self._close()

    def _close(self) -> None:
        """
        Flush, stop producing for the transport (TLS will not shut down
        while a producer is registered), close it, and close TCP after a
        linger if the client has not.
        """
        if self._state is _CLOSING or self._state is _CLOSED:
            return
        self._state = _CLOSING
        cancelCall(self._noticeCall)
        self._noticeCall = None
        self.setTimeout(None)
        transport: Any = self.transport
        flushControlBytes(self)
        _unregister(transport)
        if ISSLTransport.providedBy(transport) or not hasattr(
            transport, "loseWriteConnection"
        ):
            transport.loseConnection()
        else:
            # Half-close: the client reads the end, then closes its side.
            transport.loseWriteConnection()
        linger = LINGER
        capAt = self._drain.capAt
        if capAt is not None:
            linger = max(0.0, min(linger, capAt - self._clock.seconds()))
        self._lingerCall = self._clock.callLater(linger, self._lingered)

    def _lingered(self) -> None:
        self._lingerCall = None
        transport: Any = self.transport
        if transport is not None:
            transport.loseConnection()
            closeBeneathTLS(transport)

    # IDrainableConnection

    @property
    def inFlight(self) -> int:
        return len(self.streams)

    @property
    def state(self) -> str:
        if self.streams:
            return "busy"
        return "idle" if self._state is _OPEN else "closing"

    def beginDrain(self) -> None:
        if self._state is not _OPEN:
            return
        if self._drain.cutting:
            # Switched to HTTP/2 after the cut (a late TLS handshake): no
            # stream of it may reach the application now.
            self._finalGoAway()
            return
        self._state = _NOTICE
        writeControlBytes(self, goAwayFrame(MAX_STREAM_ID, 0, b"graceful shutdown"))
        self._tally.goAways["notice"] += 1
        self.conn.ping(PING_DATA)
        self._pingSentAt = self._clock.seconds()
        writePreparedFrames(self)
        wait = NOTICE_WAIT
        deadline = self._drain.deadline
        if deadline is not None:
            wait = max(0.0, min(wait, (deadline - self._clock.seconds()) / 2))
        self._noticeCall = self._clock.callLater(wait, self._finalGoAway)

    def cut(self, retryAfter: int) -> int:
        if self._state is _CLOSING or self._state is _CLOSED:
            return 0
        cut = 0
        self._finalGoAway()
        for streamID, stream in list(self.streams.items()):
            request = requestOf(stream)
            if streamID not in self._receivedAt:
                # Its request never reached the application: the client may
                # send it again, elsewhere.
                self._resetStream(streamID, _REFUSED, "refused at the cut")
                self._tally.refused += 1
            elif request.finished:
                # Answered, its last bytes on their way.
                continue
            elif request.startedWriting:
                self._endedLongLived(streamID, "cut")
                self._resetStream(streamID, _CANCEL, "cut mid-response")
                cut += 1
            else:
                self._endedLongLived(streamID, "cut")
                answerServiceUnavailable(request, retryAfter)
                cut += 1
        writePreparedFrames(self)
        if self._state is _FINAL and not self.streams:
            self._close()
        return cut

    def longResponseStarted(self, request: Request, kind: LongLivedKind) -> None:
        """
        C{request}, answered on one of this connection's streams, is a
        long-lived response of C{kind} (an event stream, a long poll): the
        drain counts how it ends.
        """
        stream: Any = request.channel
        if stream.streamID in self.streams:
            self._longLived[stream.streamID] = kind

    def _endedLongLived(self, streamID: int, outcome: LongLivedOutcome) -> None:
        kind = self._longLived.pop(streamID, None)
        if kind is not None:
            self._drain.longLived.ended(kind, outcome)

    def _resetStream(self, streamID: int, code: int, why: str) -> None:
        stream = self.streams[streamID]
        try:
            self.conn.reset_stream(streamID, code)
        except h2.exceptions.StreamClosedError:
            pass
        stream.connectionLost(Failure(ResponseCutAtCap(why)))
        self._requestDone(streamID)

    def abort(self) -> None:
        if self._state is _CLOSED:
            return
        for streamID in list(self._longLived):
            self._endedLongLived(streamID, "cut")
        if self._lastStreamID is None:
            self._lastStreamID = self.conn.highest_inbound_stream_id
            writeControlBytes(self, goAwayFrame(self._lastStreamID))
            self._tally.goAways["final"] += 1
        self._state = _CLOSED
        transport: Any = self.transport
        flushControlBytes(self)
        # Closing TLS flushes the writes it aggregates; then into the socket
        # now, since the reactor's shutdown, which follows at once, throws
        # away what is still in Twisted's buffers.  An orderly close, not an
        # abort: an abort resets the connection (SO_LINGER 0), and a client
        # that had not read the GOAWAY yet would lose it to the reset.
        _unregister(transport)
        transport.loseConnection()
        flushToSocket(transport)
        closeBeneathTLS(transport)


def _unregister(transport: Any) -> None:
    """
    Stop being C{transport}'s producer, if still one: TLS will not shut
    down while a producer is registered.
    """
    try:
        transport.unregisterProducer()
    except RuntimeError:
        # StringTransport's way of saying none was registered.
        pass
