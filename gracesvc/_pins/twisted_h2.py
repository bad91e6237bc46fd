# -*- test-case-name: tests.unit.pins.test_twisted_h2 -*-
"""
The internals of Twisted's HTTP/2 (and of hyper-h2) that
L{gracesvc._protocols.h2.DrainingH2Connection} and
L{gracesvc._protocols.negotiate.NegotiatingProtocol} rely on, in one place.

Twisted's L{H2Connection} is private and has no graceful close: its only
GOAWAY (on timeout) closes h2's state machine, so that no stream in flight
can answer; a GOAWAY from the client aborts every stream; over TLS it stays
the transport's producer, and TLS will not shut down while one is
registered.  gracesvc subclasses it, and so depends on these names, each
pinned by C{tests/unit/pins/test_twisted_h2.py}: a Twisted or h2
upgrade that changes one fails there, with the name of the internal,
instead of losing streams during a drain.

  - L{H2Connection} itself, from the private C{twisted.web._http2}: the
    base class, re-exported here and imported from nowhere else;
  - the methods the subclass overrides (L{OVERRIDDEN}: C{_requestReceived},
    C{_requestDataReceived}, C{_requestEnded}, C{_requestAborted},
    C{_requestDone}, C{_terminate}, and the unprefixed C{endRequest} and
    C{timeoutConnection} that only Twisted calls), each with the
    parameters Twisted calls it with;
  - C{H2Connection.conn} (the h2 state machine) and C{streams} (its
    L{H2Stream}s by id), the state the subclass reads;
  - C{H2Connection.dataReceived}'s event dispatch, which the subclass
    changes (L{receiveData}), and C{_tryToWriteControlData}
    (L{writePreparedFrames});
  - C{H2Connection.connectionLost}'s private keyword C{_cancelTimeouts}
    (L{streamsLost});
  - what Twisted's own switch to HTTP/2 (C{_GenericHTTPChannelProtocol})
    hands from the HTTP/1.1 channel to the L{H2Connection} (L{HANDED_OVER},
    L{takeOver});
  - C{H2Connection._consumerBlocked} and C{_bufferedControlFrames}: see
    L{writeControlBytes}, L{flushControlBytes}, L{transportPaused};
  - C{H2Connection._outboundStreamQueues}, each stream's response bytes
    not sent yet (L{queuedBytes}), C{priority} and C{_sendingDeferred},
    through which its data-sending loop picks a stream and waits for one
    (L{windowAwarePriority}, L{wakeSender});
  - C{H2Stream._request} and C{_conn}: the request a stream answers
    (L{requestOf}), the connection it belongs to (L{connectionOf});
  - C{H2Stream.command} and C{path}, its request line (L{requestLineOf}),
    and how it holds a request body while paused: C{pauseProducing} makes
    C{receiveDataChunk} keep DATA in C{_inboundDataBuffer} without
    re-opening the window, C{resumeProducing} hands it to the request's
    C{handleContentChunk} (and the stream's end to C{requestReceived}
    through C{requestComplete}) and re-opens the window by what it handed
    over (L{heldInbound});
  - h2's C{H2Connection._receive_goaway_frame}, through which every GOAWAY
    received goes (L{PeerGoAwayTolerant});
  - Twisted's server-side TLS (C{BufferingTLSTransport}) holding small
    writes until the next reactor turn and flushing them in
    C{loseConnection}: how the last GOAWAY reaches the socket before an
    abort (see L{flushToSocket}).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IWriteDescriptor
from twisted.python.failure import Failure
from twisted.web._http2 import H2Connection as H2Connection
from twisted.web._http2 import H2Stream as H2Stream
from twisted.web.http import HTTPChannel, Request

#: The methods of L{H2Connection} that
#: L{gracesvc._protocols.h2.DrainingH2Connection} overrides, and the
#: parameters Twisted calls each with.  The C{_request*} and C{_handle*}
#: ones handle the events L{receiveData} dispatches; each L{H2Stream} calls
#: C{writeDataToStream} for the bytes of its response, and the transport
#: C{resumeProducing} once its buffer drained; Twisted's data-sending loop,
#: C{abortRequest} and C{connectionLost} call C{_requestDone};
#: C{_requestAborted} (on a flood of resets) calls C{_terminate}; each
#: L{H2Stream} calls C{endRequest}, and the idle timeout
#: C{timeoutConnection}.
OVERRIDDEN: dict[str, tuple[str, ...]] = {
    "__init__": ("self", "reactor"),
    "connectionMade": ("self",),
    "dataReceived": ("self", "data"),
    "timeoutConnection": ("self",),
    "endRequest": ("self", "streamID"),
    "_requestReceived": ("self", "event"),
    "_requestDataReceived": ("self", "event"),
    "_requestEnded": ("self", "event"),
    "_requestAborted": ("self", "event"),
    "_requestDone": ("self", "streamID"),
    "_terminate": ("self", "reason"),
    "writeDataToStream": ("self", "streamID", "data"),
    "_handleWindowUpdate": ("self", "event"),
    "_handlePriorityUpdate": ("self", "event"),
    "resumeProducing": ("self",),
}

#: What Twisted's HTTP factory gives each channel it builds, and what its own
#: switch to HTTP/2 (C{_GenericHTTPChannelProtocol.dataReceived}) gives the
#: L{H2Connection} that replaces the channel: C{requestFactory}, C{site} and
#: C{factory} for each stream, C{timeOut} and C{callLater} for its idle
#: timeout (L{TimeoutMixin<twisted.protocols.policies.TimeoutMixin>}).
HANDED_OVER = ("requestFactory", "site", "factory", "timeOut", "callLater")


def takeOver(connection: H2Connection, channel: HTTPChannel) -> None:
    """
    Give C{connection}, made to replace C{channel} once its client turned
    out to speak HTTP/2, what the factory gave C{channel}, as Twisted's own
    switch does (see L{HANDED_OVER}).
    """
    for name in HANDED_OVER:
        setattr(connection, name, getattr(channel, name))


def receiveData(
    connection: H2Connection,
    data: bytes,
    otherEvent: Callable[[h2.events.Event], object],
    closed: Callable[[], bool],
    received: Callable[[list[h2.events.Event]], object] = lambda events: None,
) -> None:
    """
    Twisted's C{H2Connection.dataReceived}, but for the events it
    mishandles during a drain: feed C{data} to C{connection}'s h2 state
    machine, and hand each event that comes out to Twisted's handler of it
    (or the subclass's override), or, for one Twisted does not dispatch, to
    C{otherEvent}.  Twisted drops the PING's ACK, and on the client's
    GOAWAY aborts every stream; the subclass handles both.

    Unlike Twisted's, it does not restart the idle timeout: Twisted counts
    any bytes, a PING or a SETTINGS frame among them, as activity, so a
    client that only pings holds an idle connection forever.  The subclass
    restarts it on what a stream does.

    C{received} is given the events first, all of them: one read may hold a
    request and its reset, whose events h2 gives together, and a handler
    that answered the request before its reset is dispatched would write to
    a stream h2 has closed.

    The dispatch stops as soon as C{closed()} is true: a handler closed the
    connection (a flood of resets, a protocol error, the last stream of a
    draining connection answered).  Otherwise the control frames h2 made
    meanwhile are written.

    Internals: L{H2Connection}'s C{dataReceived} (its dispatch, copied),
    C{conn}, C{_terminate} (on an h2 protocol error), C{_requestReceived},
    C{_requestDataReceived}, C{_requestEnded}, C{_requestAborted},
    C{_handleWindowUpdate}, C{_handlePriorityUpdate} and
    C{_tryToWriteControlData}.
    """
    try:
        events = connection.conn.receive_data(data)
    except h2.exceptions.ProtocolError:
        connection._terminate(Failure())
        return
    received(events)
    for event in events:
        if isinstance(event, h2.events.RequestReceived):
            connection._requestReceived(event)
        elif isinstance(event, h2.events.DataReceived):
            connection._requestDataReceived(event)
        elif isinstance(event, h2.events.StreamEnded):
            connection._requestEnded(event)
        elif isinstance(event, h2.events.StreamReset):
            connection._requestAborted(event)
        elif isinstance(event, h2.events.WindowUpdated):
            connection._handleWindowUpdate(event)
        elif isinstance(event, h2.events.PriorityUpdated):
            connection._handlePriorityUpdate(event)
        else:
            otherEvent(event)
        if closed():
            return
    connection._tryToWriteControlData()


def writePreparedFrames(connection: H2Connection) -> None:
    """
    Write the frames C{connection}'s h2 state machine has prepared (a
    PING, a RST_STREAM, the GOAWAY of a protocol error), behind the control
    frames Twisted holds back while the transport is paused.

    Internals: L{H2Connection}'s C{_tryToWriteControlData}.
    """
    connection._tryToWriteControlData()


def streamsLost(connection: H2Connection, reason: Failure) -> None:
    """
    Tell every stream of C{connection} that the connection is lost with
    C{reason}, and forget them, leaving its timers armed (the abort of a
    peer that never reads what was written among them), as Twisted's
    C{_terminate} does.

    Internals: L{H2Connection.connectionLost}'s private keyword
    C{_cancelTimeouts}.
    """
    H2Connection.connectionLost(connection, reason, _cancelTimeouts=False)


class PeerGoAwayTolerant(h2.connection.H2Connection):
    """
    An h2 connection that survives the client's GOAWAY(NO_ERROR).

    h2 4.x moves its state machine to C{CLOSED} on any GOAWAY received and
    clears the bytes it had prepared: from then on sending the headers of a
    response raises.  RFC 9113 section 6.8 says the streams up to the
    GOAWAY's last stream id may still complete: a client that says it will
    open no more streams (Node's C{session.close()}) still wants its
    answers.  A GOAWAY with an error code keeps h2's behaviour.

    Internals: C{_receive_goaway_frame}, which h2's frame dispatch table
    (built in C{__init__} from C{self}) calls.
    """

    def _receive_goaway_frame(
        self, frame: GoAwayFrame
    ) -> tuple[list[Any], list[h2.events.Event]]:
        if frame.error_code != 0:
            return super()._receive_goaway_frame(frame)
        event = h2.events.ConnectionTerminated()
        event.error_code = h2.errors.ErrorCodes.NO_ERROR
        event.last_stream_id = frame.last_stream_id
        event.additional_data = frame.additional_data or None
        return [], [event]


def tolerantStateMachine(connection: H2Connection) -> None:
    """
    Give C{connection} (before it is connected) an h2 state machine that
    survives the client's GOAWAY(NO_ERROR) (see L{PeerGoAwayTolerant}), with
    the configuration Twisted gave the one it made.

    Internals: L{H2Connection}'s C{conn}.
    """
    config: h2.config.H2Configuration = connection.conn.config
    connection.conn = PeerGoAwayTolerant(config=config)


def writeControlBytes(connection: H2Connection, data: bytes) -> None:
    """
    Write C{data}, whole frames serialized outside of h2's state machine (a
    GOAWAY that must not close it), in order with the control frames h2
    made: straight to the transport, or behind the ones Twisted holds back
    while the transport is paused.

    Internals: L{H2Connection}'s C{_tryToWriteControlData} (first, for what
    h2 has prepared), C{_consumerBlocked} (set while the transport is
    paused), C{_bufferedControlFrames} and C{_bufferedControlFrameBytes}
    (what waits for the transport to resume).
    """
    connection._tryToWriteControlData()
    transport: Any = connection.transport
    if connection._consumerBlocked is None and not connection._bufferedControlFrames:
        transport.write(data)
    else:
        connection._bufferedControlFrames.append(data)
        connection._bufferedControlFrameBytes += len(data)


def flushControlBytes(connection: H2Connection) -> None:
    """
    Hand the control frames Twisted holds back while the transport is paused
    to the transport now, before it closes: it buffers them.

    Internals: as L{writeControlBytes}.
    """
    connection._tryToWriteControlData()
    transport: Any = connection.transport
    frames = connection._bufferedControlFrames
    while frames:
        data = frames.popleft()
        connection._bufferedControlFrameBytes -= len(data)
        transport.write(data)


def flushToSocket(transport: object) -> None:
    """
    Try to send what C{transport} has buffered, now, before an abort throws
    it away: the last GOAWAY written before aborting at a second signal.

    Looks through wrapping transports (TLS) down to the file descriptor,
    and asks it to write as
    L{IWriteDescriptor.doWrite<twisted.internet.interfaces.IWriteDescriptor>}
    says a writable descriptor does; what the socket does not take is lost.

    Internals: a wrapping transport's C{transport} attribute (as
    L{gracesvc._pins.twisted.socketOf}).
    """
    while transport is not None:
        if IWriteDescriptor.providedBy(transport):
            try:
                transport.doWrite()
            except Exception:
                pass
            return
        transport = getattr(transport, "transport", None)


def queuedBytes(connection: H2Connection, streamID: int) -> int:
    """
    Internals: L{H2Connection}'s C{_outboundStreamQueues} (each stream's
    response bytes not sent yet, and a sentinel for its end).

    @return: how many bytes of C{streamID}'s response are queued, not sent
        yet.
    """
    queue = connection._outboundStreamQueues.get(streamID, ())
    return sum(len(chunk) for chunk in queue if isinstance(chunk, bytes))


def transportPaused(connection: H2Connection) -> bool:
    """
    Internals: L{H2Connection}'s C{_consumerBlocked}.

    @return: whether the transport asked C{connection} to stop producing (its
        buffer is full: the client does not read).
    """
    return connection._consumerBlocked is not None


class _WindowAwarePriority:
    """
    Twisted's priority tree, as its data-sending loop sees it, but that
    skips (and blocks) a stream whose flow-control window is used up while
    bytes of its response are queued.

    Twisted's loop blocks a stream only once its queue is empty: a stream
    whose client does not open its window keeps being picked, sends
    nothing, and the loop schedules itself again at once, a reactor turn
    after another, for as long as the client likes (100 % of a core, for a
    client that sent one request and stopped reading).  Its window opening
    unblocks it again (see L{wakeSender}).
    """

    def __init__(self, tree: Any, connection: H2Connection) -> None:
        self._tree = tree
        self._connection = connection

    def __iter__(self) -> _WindowAwarePriority:
        return self

    def __next__(self) -> int:
        connection = self._connection
        while True:
            streamID: int = next(self._tree)
            queue = connection._outboundStreamQueues.get(streamID)
            if (
                not queue
                or not isinstance(queue[0], bytes)
                or connection.conn.local_flow_control_window(streamID) > 0
            ):
                return streamID
            self._tree.block(streamID)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tree, name)


def windowAwarePriority(connection: H2Connection) -> None:
    """
    Make C{connection}'s data-sending loop skip the streams whose window is
    used up (see L{_WindowAwarePriority}), instead of spinning on them.

    Internals: L{H2Connection}'s C{priority} (a C{priority.PriorityTree},
    which the loop iterates with C{next} and C{block}s),
    C{_outboundStreamQueues}, and the sentinel that ends a stream's queue
    (not bytes: sent whatever the window).
    """
    connection.priority = _WindowAwarePriority(connection.priority, connection)


def wakeSender(connection: H2Connection) -> None:
    """
    Wake C{connection}'s data-sending loop if it waits for a stream to
    unblock: Twisted's handler of WINDOW_UPDATE unblocks the streams with
    bytes queued in the priority tree, but only a new write or a response's
    end wakes the loop.

    Internals: L{H2Connection}'s C{_sendingDeferred}.
    """
    waiting = connection._sendingDeferred
    if waiting is not None:
        connection._sendingDeferred = None
        waiting.callback(None)


def requestOf(stream: H2Stream) -> Request:
    """
    Internals: L{H2Stream}'s C{_request}.

    @return: the request C{stream} answers.
    """
    request: Request = stream._request
    return request


def connectionOf(stream: H2Stream) -> H2Connection:
    """
    Internals: L{H2Stream}'s C{_conn}.

    @return: the connection C{stream} belongs to.
    """
    connection: H2Connection = stream._conn
    return connection


def goAwayFrame(lastStreamID: int, errorCode: int = 0, debug: bytes = b"") -> bytes:
    """
    @return: a serialized GOAWAY frame.
    """
    frame = GoAwayFrame(
        0, last_stream_id=lastStreamID, error_code=errorCode, additional_data=debug
    )
    data: bytes = frame.serialize()
    return data


def requestLineOf(stream: H2Stream) -> tuple[bytes, bytes]:
    """
    Internals: L{H2Stream}'s C{command} and C{path}, set from the
    request's HEADERS (its C{:method} and C{:path}) when the stream is made.

    @return: the method and the path of C{stream}'s request, as Twisted's
        stream gives them to C{requestReceived}.
    """
    command: Any = stream.command
    path: Any = stream.path
    return command, path


def heldInbound(stream: H2Stream) -> int:
    """
    Internals: L{H2Stream}'s C{_inboundDataBuffer}, the C{(data,
    flow-controlled length)} of each DATA frame received while the stream
    is paused (and a sentinel for its end), whose window is re-opened only
    when C{resumeProducing} hands them over.

    @return: how many flow-controlled bytes C{stream} holds, not re-opened.
    """
    return sum(
        length
        for chunk, length in stream._inboundDataBuffer
        if isinstance(chunk, bytes)
    )
