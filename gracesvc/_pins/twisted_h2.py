# -*- test-case-name: tests.unit.pins.test_twisted_h2 -*-
"""
The internals of Twisted's HTTP/2 (and of hyper-h2) that
L{gracesvc._protocols.h2.DrainingH2Connection} relies on, in one place.

Twisted's L{H2Connection} is private and has no graceful close: its only
GOAWAY (on timeout) closes h2's state machine, so that no stream in flight
can answer; a GOAWAY from the client aborts every stream; over TLS it stays
the transport's producer, and TLS will not shut down while one is
registered.  gracesvc subclasses it, and so depends on these names, each
pinned by C{tests/unit/pins/test_twisted_h2.py}: a Twisted or h2
upgrade that changes one fails there, with the name of the internal,
instead of losing streams during a drain.

  - C{H2Connection.conn} (the h2 state machine), C{streams},
    C{_requestReceived}, C{_requestDataReceived}, C{_requestEnded},
    C{_requestAborted}, C{_handleWindowUpdate}, C{_handlePriorityUpdate},
    C{_requestDone}, C{_terminate}, C{_tryToWriteControlData}, C{endRequest}
    and C{timeoutConnection}: the event dispatch gracesvc re-implements in
    its C{dataReceived}, and the hooks it overrides;
  - C{H2Connection._consumerBlocked} and C{_bufferedControlFrames}: see
    L{writeControlBytes}, L{flushControlBytes};
  - C{H2Stream._request} and C{_conn}: the request a stream answers
    (L{requestOf}), the connection it belongs to (L{connectionOf});
  - h2's C{H2Connection._receive_goaway_frame}, through which every GOAWAY
    received goes (L{PeerGoAwayTolerant});
  - Twisted's server-side TLS (C{BufferingTLSTransport}) holding small
    writes until the next reactor turn and flushing them in
    C{loseConnection}: how the last GOAWAY reaches the socket before an
    abort (see L{flushToSocket}).
"""

from __future__ import annotations

from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
from hyperframe.frame import GoAwayFrame
from twisted.internet.interfaces import IWriteDescriptor
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.http import Request


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


def requestOf(stream: H2Stream) -> Request:
    """
    @return: the request C{stream} answers.

    Internals: L{H2Stream}'s C{_request}.
    """
    request: Request = stream._request
    return request


def connectionOf(stream: H2Stream) -> H2Connection:
    """
    @return: the connection C{stream} belongs to.

    Internals: L{H2Stream}'s C{_conn}.
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
