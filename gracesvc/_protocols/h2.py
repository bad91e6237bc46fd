# -*- test-case-name: tests.unit.protocols.test_h2 -*-
"""
HTTP/2, drained without losing a stream, whatever the client.

A L{gracesvc._protocols.site.DrainingSite} built with C{http2=True} serves
it beside HTTP/1.1: L{gracesvc._protocols.negotiate.NegotiatingProtocol}
hands a connection whose client speaks HTTP/2 to a
L{DrainingH2Connection}.

L{DrainingH2Connection} is one L{IDrainableConnection}, whose C{inFlight}
counts its streams, and it drains quietly: one GOAWAY, sent only once the
client has read every response, and nothing after it::

    OPEN ─── serving
      │ beginDrain (also: the client's GOAWAY, the idle timeout)
    QUIET ── new streams are parked: never dispatched, never answered,
      │      their DATA still credited to the connection's window; the
      │      dispatched ones are served to their end
      │ no dispatched stream open
    PINGED ─ a PING sent
      │ its ACK (the client has read every frame sent before it), or
      │ clamp(4 x the round trip of our SETTINGS, 50 ms, 1 s)
    CLOSING  GOAWAY(the highest stream dispatched, NO_ERROR), then
      │      nothing: the transport closed (TLS close_notify or a TCP
      │      half-close), what the client still sends ignored; TCP
      │      closes when the client closes, or after a short linger
    CLOSED

Why: the C{h2} library, under every Python HTTP/2 client (httpx), takes
any GOAWAY as the end of the connection and raises on any frame after it
(the DATA of the streams the GOAWAY lets finish included), so the two-phase
GOAWAY of RFC 9113 section 6.8 loses its streams in flight.  A parked
stream's id is above the GOAWAY's last stream id: every client (httpx,
Go, curl, nghttp2) retries it elsewhere, as the RFC allows (section 8.7);
none is answered with RST_STREAM, which httpx reports as an error.

At the cut, a stream whose request never reached the application is
refused (C{REFUSED_STREAM}), one with no response started gets a 503 with
C{Retry-After}, one mid-response gets C{RST_STREAM(CANCEL)}; then the
quiet close as above, its wait bounded by the time to the cap.  At the
cap, or on a second signal, the same GOAWAY if not sent yet, then the
connection closes at once.

What a client may cost it (L{gracesvc._protocols.h2limits}): its preface
within a deadline; at most so many frames read a reactor turn; a rate of
frames that make the server answer without a stream to show for it; and
bounded bytes queued for a client that does not read.  The Twisted and
h2 internals this needs are in L{gracesvc._pins.twisted_h2}.
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
from zope.interface import Interface, implementer

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
    heldInbound,
    queuedBytes,
    receiveData,
    requestLineOf,
    requestOf,
    streamsLost,
    tolerantStateMachine,
    transportPaused,
    wakeSender,
    windowAwarePriority,
    writeControlBytes,
    writePreparedFrames,
)
from gracesvc._protocols.answers import (
    LongLivedKind,
    ResponseCutAtCap,
    ResponseMetrics,
    answerServiceUnavailable,
)
from gracesvc._protocols.h2limits import FrameMeter, H2Limits, TokenBucket

if TYPE_CHECKING:
    from twisted.web.http import Request

#: The shortest and the longest wait for the ACK of the drain's PING, in
#: seconds; in between, four round trips of the connection's first SETTINGS.
PING_WAIT_MIN = 0.05
PING_WAIT_MAX = 1.0

#: How long a closed connection waits for the client to close TCP before
#: closing it itself, in seconds: a client still writing (a WINDOW_UPDATE,
#: a stream it sent before reading the GOAWAY) into a closed socket would
#: get a reset, and could lose the last response with it.
LINGER = 0.25

#: The flow-control window of a connection whose requests' bodies are
#: streamed (see L{IHeadersDispatch}), in bytes: what a paused stream holds
#: counts against it, so it is larger than one stream's (64 KiB), as Go's
#: per-connection upload buffer is.
STREAMING_CONNECTION_WINDOW = 1 << 20

#: The opaque data of the drain's PING.
PING_DATA = b"gracesvc"

#: Credit for the DATA of parked streams is given back to the connection's
#: window once this many bytes are owed (or the window runs low).
PARKED_CREDIT = 16384

_NO_ERROR = h2.errors.ErrorCodes.NO_ERROR
_REFUSED = h2.errors.ErrorCodes.REFUSED_STREAM
_CANCEL = h2.errors.ErrorCodes.CANCEL
_CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM

#: The events of frames that cost the server work with no stream to show
#: for it, which L{H2Limits.controlFrameRate} bounds.
_CONTROL_EVENTS = (
    h2.events.PingReceived,
    h2.events.RemoteSettingsChanged,
    h2.events.UnknownFrameReceived,
)


class H2Tally:
    """
    What the HTTP/2 connections of one site did, for the metrics.

    @ivar open: the HTTP/2 connections open now.
    @ivar goAways: GOAWAY frames sent (one per connection at most) by how
        it came: C{acked} (on the ACK of the PING that follows the last
        response), C{timer} (that PING unanswered in time), C{abort} (at
        the cap or on a second signal).
    @ivar parked: streams a draining connection never dispatched: above
        the GOAWAY's last stream id, the client retries them elsewhere.
    @ivar refused: streams answered RST_STREAM(REFUSED_STREAM) at the cut,
        their request not yet handed to the application.
    @ivar closedFor: connections closed for what their client did, by
        reason: C{protocol_error}, C{rapid_reset}, C{control_flood},
        C{preface_timeout}.
    @ivar streamsCancelled: streams reset (C{CANCEL}) because their client
        did not read: C{buffer} (more written while blocked than allowed),
        C{stalled} (blocked too long).
    """

    def __init__(self) -> None:
        self.open = 0
        self.goAways = {"acked": 0, "timer": 0, "abort": 0}
        self.parked = 0
        self.refused = 0
        self.closedFor = {
            "protocol_error": 0,
            "rapid_reset": 0,
            "control_flood": 0,
            "preface_timeout": 0,
        }
        self.streamsCancelled = {"buffer": 0, "stalled": 0}
        #: how many drain PINGs were acknowledged, and their round trips'
        #: sum, in seconds.
        self.pingAcks = 0
        self.pingRoundTrips = 0.0
        self._loggedAt = -1.0

    def pingAcked(self, roundTrip: float) -> None:
        """
        The drain's PING came back after C{roundTrip} seconds.
        """
        self.pingAcks += 1
        self.pingRoundTrips += roundTrip

    def mayLog(self, now: float) -> bool:
        """
        @return: whether a line about a hostile client may be logged now:
            one a second at most, so that a flood of them does not flood
            the log.
        """
        if now - self._loggedAt < 1.0:
            return False
        self._loggedAt = now
        return True


class IHeadersDispatch(Interface):
    """
    A request that wants to be dispatched when its HEADERS arrive, its
    body to follow, rather than once its stream has ended (Twisted's
    way): an ASGI application's
    (L{gracesvc._asgi.h2stream.StreamingRequest}).  Its stream hands it
    each DATA chunk (C{handleContentChunk}) and the body's end
    (C{requestReceived}) as it does any request's, and it pauses its
    stream (C{pauseProducing}) to apply backpressure.
    """

    def dispatchAtHeaders(command: bytes, path: bytes) -> None:
        """
        Render the request now: its headers are complete, its body follows.
        """


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
    QUIET = "quiet"
    PINGED = "pinged"
    CLOSING = "closing"
    CLOSED = "closed"


_OPEN, _QUIET, _PINGED, _CLOSING, _CLOSED = H2ConnectionState


@implementer(IDrainableConnection)
class DrainingH2Connection(H2Connection):
    """
    An HTTP/2 connection that tells its site's L{Drain} when it opens,
    answers and closes, counts its streams as requests in flight, drains
    quietly, and holds its client to L{H2Limits} (see the module
    docstring).
    """

    log = Logger()
    site: H2Site  # type: ignore[assignment]

    def __init__(
        self,
        reactor: IReactorTime,
        limits: H2Limits | None = None,
        prefaceDeadline: float | None = None,
    ) -> None:
        """
        @param reactor: the clock of its timers, and Twisted's send loop.
        @param limits: what its client may cost; L{H2Limits}' defaults if
            L{None}.
        @param prefaceDeadline: when, on C{reactor}'s clock, the client's
            preface must be complete; C{limits.prefaceTimeout} after
            C{connectionMade} if L{None}.
        """
        super().__init__(reactor)
        tolerantStateMachine(self)
        windowAwarePriority(self)
        self._state = _OPEN
        self._clock = reactor
        self._limits = H2Limits() if limits is None else limits
        self._prefaceDeadline = prefaceDeadline
        self._prefaceCall: IDelayedCall | None = None
        #: the highest stream id handed to the application: the GOAWAY's.
        self._lastDispatched = 0
        #: a connection that starts draining before its preface was read
        #: still serves the streams of its first read (see beginDrain).
        self._drainAfterFirstRead = False
        self._prefaceDone = False
        self._settingsSentAt: float | None = None
        self._roundTrip: float | None = None
        self._pingSentAt = 0.0
        self._pingCall: IDelayedCall | None = None
        self._lingerCall: IDelayedCall | None = None
        self._parkedCredit = 0
        #: when each stream's request was received whole (and handed to the
        #: application), for the metrics; None once its response is counted.
        self._receivedAt: dict[int, float | None] = {}
        self._reported = False
        #: the streams dispatched at their HEADERS whose client has not
        #: ended its body yet (see IHeadersDispatch).
        self._bodyOpen: set[int] = set()
        #: the kind of each stream answered with a long-lived response.
        self._longLived: dict[int, str] = {}
        # What the client may cost.
        self._meter = FrameMeter()
        self._unread = b""
        self._readCall: IDelayedCall | None = None
        #: the streams the client reset in what is being read: their
        #: requests are not handed to the application.
        self._resetInRead: set[int] = set()
        self._controlFrames = TokenBucket(
            self._limits.controlFrameBurst, self._limits.controlFrameRate, reactor
        )
        #: bytes written to each stream while it was blocked, since its
        #: client last opened its window.
        self._blockedWrites: dict[int, int] = {}
        #: the streams to be reset on the next turn for what they queued.
        self._cancelling: set[int] = set()
        self._stallCall: IDelayedCall | None = None

    # IProtocol

    def connectionMade(self) -> None:
        super().connectionMade()
        factory = getattr(self.site, "requestFactory", None)
        if isinstance(factory, type) and IHeadersDispatch.implementedBy(factory):
            # Its streams may be paused, the DATA they hold not credited
            # back: a connection window of its streams' size would let one
            # stalled upload block every other upload of the connection.
            self.conn.increment_flow_control_window(
                STREAMING_CONNECTION_WINDOW - self.conn.inbound_flow_control_window
            )
            writePreparedFrames(self)
        self._settingsSentAt = self._clock.seconds()
        self._drain = self.site.drain
        self._tally = self.site.h2Tally
        self._tally.open += 1
        deadline = self._prefaceDeadline
        if deadline is None:
            deadline = self._clock.seconds() + self._limits.prefaceTimeout
        self._prefaceCall = self._clock.callLater(
            max(0.0, deadline - self._clock.seconds()), self._prefaceTimedOut
        )
        self._drain.connectionOpened(self)

    def dataReceived(self, data: bytes) -> None:
        if self._state is _CLOSING or self._state is _CLOSED:
            # Nothing may follow the GOAWAY: what the client still sends
            # (its ACKs, a stream it sent before reading the GOAWAY, above
            # its last stream id) is left unanswered.
            return
        if self._unread:
            self._unread += data
            return
        self._read(data)

    def _read(self, data: bytes) -> None:
        """
        Hand h2 the first L{H2Limits.framesPerTurn} frames of C{data}, and
        keep the rest, unread from the transport meanwhile, for the next
        reactor turn.
        """
        n = self._meter.split(data, self._limits.framesPerTurn)
        if n < len(data):
            self._unread = data[n:]
            data = data[:n]
            transport: Any = self.transport
            transport.pauseProducing()
            self._readCall = self._clock.callLater(0, self._readOn)
        receiveData(self, data, self._otherEvent, self._closed, self._received)
        self._resetInRead = set()
        if self._drainAfterFirstRead:
            self._drainAfterFirstRead = False
            self._quiet()

    def _received(self, events: list[h2.events.Event]) -> None:
        self._resetInRead = {
            e.stream_id for e in events if isinstance(e, h2.events.StreamReset)
        }

    def _readOn(self) -> None:
        self._readCall = None
        data, self._unread = self._unread, b""
        if self._state is _CLOSING or self._state is _CLOSED:
            return
        transport: Any = self.transport
        transport.resumeProducing()
        self._read(data)

    def _otherEvent(self, event: h2.events.Event) -> None:
        """
        An event Twisted's dispatch would drop or mishandle: the ACKs of
        our SETTINGS and of the drain's PING, the client's first SETTINGS
        (its preface complete), the client's GOAWAY (Twisted aborts every
        stream), and the frames that cost work with no stream to show.
        """
        if isinstance(event, _CONTROL_EVENTS):
            if isinstance(event, h2.events.RemoteSettingsChanged):
                self._prefaceCompleted()
            self._controlFrame()
        elif isinstance(event, h2.events.PingAckReceived):
            if event.ping_data == PING_DATA and self._state is _PINGED:
                self._tally.pingAcked(self._clock.seconds() - self._pingSentAt)
                self._goAway("acked")
        elif isinstance(event, h2.events.SettingsAcknowledged):
            if self._roundTrip is None and self._settingsSentAt is not None:
                self._roundTrip = self._clock.seconds() - self._settingsSentAt
        elif isinstance(event, h2.events.ConnectionTerminated):
            self._peerGoneAway(event)

    def _closed(self) -> bool:
        return self._state is _CLOSED or self._state is _CLOSING

    def transportLost(self, reason: Failure) -> None:
        """
        The transport is closed (C{connectionLost} is also called by Twisted
        for a lost stream producer or a GOAWAY): tell the drain, once.
        """
        self._state = _CLOSED
        for call in (
            self._pingCall,
            self._lingerCall,
            self._prefaceCall,
            self._readCall,
            self._stallCall,
        ):
            cancelCall(call)
        self._pingCall = self._lingerCall = self._prefaceCall = None
        self._readCall = self._stallCall = None
        self._unread = b""
        self.connectionLost(reason)
        if not self._reported:
            self._reported = True
            self._tally.open -= 1
            self._drain.connectionClosed(self)

    # The client's preface and its frames

    def _prefaceCompleted(self) -> None:
        if not self._prefaceDone:
            self._prefaceDone = True
            cancelCall(self._prefaceCall)
            self._prefaceCall = None

    def _prefaceTimedOut(self) -> None:
        self._prefaceCall = None
        self._closeFor("preface_timeout", "its preface was not complete in time")
        transport: Any = self.transport
        _unregister(transport)
        transport.abortConnection()

    def _controlFrame(self, reason: str = "control_flood") -> None:
        """
        A frame that costs work with no stream to show for it: past the
        rate L{H2Limits} allows, C{GOAWAY(ENHANCE_YOUR_CALM)} and close,
        counted as C{reason}.
        """
        if self._closed() or self._controlFrames.take():
            return
        self._closeFor(reason, "too many control frames or resets")
        self.conn.close_connection(_CALM, last_stream_id=self._lastDispatched)
        self._terminate(Failure(ConnectionLost("Too many control frames")))

    def _closeFor(self, reason: str, why: str) -> None:
        """
        Count (and log, at most once a second) a connection closed for what
        its client did.
        """
        self._tally.closedFor[reason] += 1
        if self._tally.mayLog(self._clock.seconds()):
            transport: Any = self.transport
            self.log.info(
                "HTTP/2 client {peer} closed: {why} ({count} such closes so far)",
                peer=_peerOf(transport),
                why=why,
                count=self._tally.closedFor[reason],
            )

    # Streams

    def _requestReceived(self, event: h2.events.RequestReceived) -> None:
        if event.stream_id in self._resetInRead:
            # Opened and reset in one read (a rapid reset): never made a
            # request of; its reset is charged below (_requestAborted).
            return
        if self._state is not _OPEN:
            # Parked: never dispatched, never answered; the GOAWAY's last
            # stream id, below it, tells the client to retry it elsewhere.
            self._tally.parked += 1
            return
        self.resetTimeout()
        streamID = event.stream_id
        self._lastDispatched = streamID
        super()._requestReceived(event)
        if event.stream_ended is None:
            stream = self.streams[streamID]
            request = requestOf(stream)
            if IHeadersDispatch.providedBy(request):
                # Its body follows: it reaches the application now.
                self._receivedAt[streamID] = self._clock.seconds()
                self._bodyOpen.add(streamID)
                command, path = requestLineOf(stream)
                request.dispatchAtHeaders(command, path)

    def _requestDataReceived(self, event: h2.events.DataReceived) -> None:
        if not event.flow_controlled_length and event.stream_ended is None:
            # An empty DATA frame that does not even end its stream.
            self._controlFrame()
            if self._state is _CLOSED:
                return
        if event.stream_id not in self.streams:
            # A parked stream's body, or the rest of a body whose response
            # is already sent: only the connection's window is given back,
            # so that the client cannot send more of it than its stream's
            # window, as Go does.
            self._creditParked(event.flow_controlled_length)
            return
        self.resetTimeout()
        super()._requestDataReceived(event)

    def _creditParked(self, length: int) -> None:
        self._parkedCredit += length
        if self._parkedCredit and (
            self._parkedCredit >= PARKED_CREDIT
            or self.conn.inbound_flow_control_window < PARKED_CREDIT
        ):
            credit, self._parkedCredit = self._parkedCredit, 0
            self.conn.increment_flow_control_window(credit)

    def _requestEnded(self, event: h2.events.StreamEnded) -> None:
        streamID = event.stream_id
        if streamID not in self.streams or streamID in self._resetInRead:
            # (A reset read with it follows, and ends the stream.)
            return
        self.resetTimeout()
        if streamID in self._bodyOpen:
            self._bodyOpen.discard(streamID)
        else:
            self._receivedAt[streamID] = self._clock.seconds()
        super()._requestEnded(event)

    def _requestAborted(self, event: h2.events.StreamReset) -> None:
        if event.stream_id not in self.streams:
            # A parked stream, one already answered, or one opened in the
            # same read: Twisted's bucket of resets does not see it, this
            # one does.
            self._controlFrame("rapid_reset")
            return
        super()._requestAborted(event)

    def _handlePriorityUpdate(self, event: h2.events.PriorityUpdated) -> None:
        # Twisted adds a stream it does not know to its priority tree, and
        # keeps it there: PRIORITY frames for idle streams (deprecated by
        # RFC 9113 anyway) would grow it without bound.
        self._controlFrame()
        if event.stream_id in self.streams:
            super()._handlePriorityUpdate(event)

    def _handleWindowUpdate(self, event: h2.events.WindowUpdated) -> None:
        if event.stream_id:
            self._blockedWrites.pop(event.stream_id, None)
        else:
            self._blockedWrites.clear()
        if not self._blockedWrites:
            cancelCall(self._stallCall)
            self._stallCall = None
        super()._handleWindowUpdate(event)
        wakeSender(self)

    def resumeProducing(self) -> None:
        # The transport's buffer drained: the client reads.
        self._blockedWrites.clear()
        cancelCall(self._stallCall)
        self._stallCall = None
        super().resumeProducing()

    def writeDataToStream(self, streamID: int, data: bytes) -> None:
        if streamID in self._cancelling:
            return
        blocked = transportPaused(self) or self.remainingOutboundWindow(streamID) <= 0
        super().writeDataToStream(streamID, data)
        if not blocked:
            return
        written = self._blockedWrites.get(streamID, 0) + len(data)
        self._blockedWrites[streamID] = written
        limits = self._limits
        if (
            written > limits.streamBuffer
            or sum(self._blockedWrites.values()) > limits.connectionBuffer
        ):
            # Reset on the next turn, not inside the application's write:
            # its handler goes on as if the client had gone, and what it
            # still writes meanwhile is dropped.
            self._cancelling.add(streamID)
            self._blockedWrites.pop(streamID, None)
            self._clock.callLater(0, self._cancelBlocked, streamID, "buffer")
        elif self._stallCall is None:
            self._stallCall = self._clock.callLater(limits.stallTimeout, self._stalled)

    def _stalled(self) -> None:
        """
        Streams have been blocked for L{H2Limits.stallTimeout}: reset
        those still blocked with bytes queued.
        """
        self._stallCall = None
        for streamID in list(self._blockedWrites):
            if (
                streamID in self.streams
                and queuedBytes(self, streamID)
                and (
                    transportPaused(self) or self.remainingOutboundWindow(streamID) <= 0
                )
            ):
                self._cancelBlocked(streamID, "stalled")
        self._blockedWrites.clear()

    def _cancelBlocked(self, streamID: int, reason: str) -> None:
        """
        Reset C{streamID}, whose client does not read what it is sent, and
        drop what is queued for it.
        """
        self._blockedWrites.pop(streamID, None)
        if streamID not in self.streams or self._closed():
            return
        self._tally.streamsCancelled[reason] += 1
        if self._tally.mayLog(self._clock.seconds()):
            transport: Any = self.transport
            self.log.info(
                "HTTP/2 stream {streamID} of {peer} reset: its client does not "
                "read ({reason})",
                streamID=streamID,
                peer=_peerOf(transport),
                reason=reason,
            )
        self._endedLongLived(streamID, "cut")
        self._resetStream(streamID, _CANCEL, f"client does not read ({reason})")
        writePreparedFrames(self)

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
        if streamID in self._bodyOpen:
            self._bodyOpen.discard(streamID)
            self._bodyAbandoned(streamID)
        super()._requestDone(streamID)
        self._receivedAt.pop(streamID, None)
        self._blockedWrites.pop(streamID, None)
        self._cancelling.discard(streamID)
        if self._longLived:
            self._longLived.pop(streamID, None)
        if not self.streams:
            if self._state is _QUIET:
                self._ping()
            elif self._state is _OPEN:
                self.resetTimeout()

    def _bodyAbandoned(self, streamID: int) -> None:
        """
        C{streamID}, dispatched at its HEADERS, is done before its client
        ended its body (its response is complete, it was reset, or the
        connection is lost): if the client may still send, tell it to
        stop (C{RST_STREAM(NO_ERROR)} after a complete response, RFC 9113
        section 8.1), and give back to the connection's window what the
        stream held, paused, and will never hand over.
        """
        if self._closed():
            return
        held = heldInbound(self.streams[streamID])
        try:
            self.conn.reset_stream(streamID, _NO_ERROR)
        except h2.exceptions.ProtocolError:
            # Reset already, by the client or by us.
            pass
        if held:
            self.conn.acknowledge_received_data(held, streamID)
        writePreparedFrames(self)

    def timeoutConnection(self) -> None:
        # Twisted's closes h2's state machine, with PROTOCOL_ERROR if a
        # stream is open: a handler slower than the timeout lost its answer.
        if self.streams:
            # (The timer has fired: resetTimeout would not re-arm it.)
            self.setTimeout(self.timeOut)
            return
        self._quiet()

    def _terminate(self, reason: Failure) -> None:
        # A protocol error (h2 has queued its GOAWAY) or too many resets or
        # control frames.
        message = reason.getErrorMessage()
        if "Too many stream resets" in message:
            self._closeFor("rapid_reset", "too many stream resets")
        elif reason.check(h2.exceptions.ProtocolError):
            self._closeFor("protocol_error", f"protocol error: {message}")
        writePreparedFrames(self)
        self._close()
        streamsLost(self, reason)
        # Nothing more is read: h2's state machine is closed.
        self._state = _CLOSED

    # The drain

    def _peerGoneAway(self, event: h2.events.ConnectionTerminated) -> None:
        if event.error_code == h2.errors.ErrorCodes.NO_ERROR:
            # It opens no more streams, and wants the open ones answered.
            self._quiet()
            return
        self._terminate(
            Failure(ConnectionLost(f"Remote peer sent GOAWAY ({event.error_code!r})"))
        )

    def _quiet(self) -> None:
        """
        Dispatch no more streams; once none is open, the PING.
        """
        if self._state is not _OPEN:
            return
        self._state = _QUIET
        self.setTimeout(None)
        if not self.streams:
            self._ping()

    def _ping(self) -> None:
        """
        No dispatched stream is open: a PING, whose ACK says the client has
        read everything sent before it; the GOAWAY on the ACK, or after
        clamp(4 x the round trip, 50 ms, 1 s) at most.
        """
        self._state = _PINGED
        self.conn.ping(PING_DATA)
        self._pingSentAt = self._clock.seconds()
        writePreparedFrames(self)
        wait = PING_WAIT_MAX
        if self._roundTrip is not None:
            wait = min(PING_WAIT_MAX, max(PING_WAIT_MIN, 4 * self._roundTrip))
        capAt = self._drain.capAt
        if capAt is not None:
            wait = max(0.0, min(wait, (capAt - self._pingSentAt) / 2))
        self._pingCall = self._clock.callLater(wait, self._goAway, "timer")

    def _goAway(self, how: str) -> None:
        """
        The one GOAWAY, with the highest stream dispatched; then close.
        """
        if self._state is not _PINGED:
            return
        cancelCall(self._pingCall)
        self._pingCall = None
        writeControlBytes(self, goAwayFrame(self._lastDispatched))
        self._tally.goAways[how] += 1
        self.log.debug(
            "HTTP/2 GOAWAY ({how}): last stream {lastStreamID}",
            how=how,
            lastStreamID=self._lastDispatched,
        )
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
        for call in (self._pingCall, self._prefaceCall, self._stallCall):
            cancelCall(call)
        self._pingCall = self._prefaceCall = self._stallCall = None
        self.setTimeout(None)
        transport: Any = self.transport
        flushControlBytes(self)
        if self._readCall is not None:
            cancelCall(self._readCall)
            self._readCall = None
            self._unread = b""
            transport.resumeProducing()
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
        transport: Any = self.transport
        transport.loseConnection()
        closeBeneathTLS(transport)
        # A client that does not read keeps what is left unflushed, and the
        # connection with it: it has had the GOAWAY (sent only once it had
        # read all the rest) for a linger already.
        self._lingerCall = self._clock.callLater(LINGER, transport.abortConnection)

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
        if not self._prefaceDone and not self._drain.cutting:
            # A connection accepted while the drain began (during its
            # delay, the listeners still open): the streams its client sent
            # with its preface are served, as HTTP/1.1 serves its first
            # request, so that a client retrying a parked stream does not
            # come back to be parked again.
            self._drainAfterFirstRead = True
            return
        self._quiet()

    def cut(self, retryAfter: int) -> int:
        if self._state is _CLOSING or self._state is _CLOSED:
            return 0
        self._drainAfterFirstRead = False
        self._quiet()
        cut = 0
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
        if self._state is not _CLOSING:
            writeControlBytes(self, goAwayFrame(self._lastDispatched))
            self._tally.goAways["abort"] += 1
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


def _peerOf(transport: Any) -> str:
    try:
        peer = transport.getPeer()
    except Exception:
        return "?"
    host = getattr(peer, "host", None)
    return f"{host}:{peer.port}" if host is not None else str(peer)


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
