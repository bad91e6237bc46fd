"""
Pins for the Twisted and h2 internals the HTTP/2 drain relies on
(L{gracesvc._pins.twisted_h2}).

Each test names the internal in its first line.  If one fails after a
Twisted or h2 upgrade, HTTP/2 streams may be lost during a drain: read the
function of L{gracesvc._pins.twisted_h2} it pins, and adapt it.
"""

from __future__ import annotations

import dis
import inspect

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame, WindowUpdateFrame
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.http import Request, _GenericHTTPChannelProtocol
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from gracesvc._pins import twisted_h2 as _twisted_h2
from gracesvc._protocols.h2 import DrainingH2Connection
from gracesvc.testing import Wire
from gracesvc.testing.h2 import H2WireClient


def clientAndServer(
    server: h2.connection.H2Connection,
) -> h2.connection.H2Connection:
    """
    Connect an h2 client to C{server}, with one stream (1) open.
    """
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    client.send_headers(
        1,
        [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", "/")],
        end_stream=True,
    )
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    return client


def handlersAndEvents(function: object) -> tuple[set[str], set[str]]:
    """
    @return: the names of the C{H2Connection} handlers C{function} calls
        (C{_request*}, C{_handle*}), and of the h2 events it names.
    """
    names = set(function.__code__.co_names)  # type: ignore[attr-defined]
    handlers = {n for n in names if n.startswith(("_request", "_handle"))}
    events = {n for n in names if isinstance(getattr(h2.events, n, None), type)}
    return handlers, events


class OverrideTests(SynchronousTestCase):
    def test_overriddenMethodsTakeTheseParameters(self) -> None:
        """
        Each method of H2Connection that DrainingH2Connection overrides
        exists and takes the parameters the override takes (its
        C{__init__} takes optional ones of its own after them).
        """
        for name, parameters in _twisted_h2.OVERRIDDEN.items():
            for cls in (H2Connection, DrainingH2Connection):
                method = getattr(cls, name, None)
                self.assertTrue(callable(method), f"{cls.__name__}.{name}")
                taken = tuple(inspect.signature(method).parameters)  # type: ignore[arg-type]
                if cls is DrainingH2Connection and name == "__init__":
                    taken = taken[: len(parameters)]
                self.assertEqual(taken, parameters, f"{cls.__name__}.{name}")

    def test_everyOverrideIsPinned(self) -> None:
        """
        Every method of H2Connection that DrainingH2Connection overrides is
        in OVERRIDDEN, and so pinned above.
        """
        overrides = {
            name
            for name, value in vars(DrainingH2Connection).items()
            if inspect.isfunction(value) and hasattr(H2Connection, name)
        }
        self.assertEqual(overrides, set(_twisted_h2.OVERRIDDEN))

    def test_whoCallsTheOverrides(self) -> None:
        """
        H2Connection's _sendPrioritisedData, abortRequest and connectionLost
        call _requestDone; _requestAborted (on a flood of resets) calls
        _terminate.
        """
        for caller in ("_sendPrioritisedData", "abortRequest", "connectionLost"):
            code = getattr(H2Connection, caller).__code__
            self.assertIn("_requestDone", code.co_names, caller)
        self.assertIn("_terminate", H2Connection._requestAborted.__code__.co_names)

    def test_streamsAndStateMachine(self) -> None:
        """
        H2Connection.conn and streams: the h2 state machine, and the
        streams by id.
        """
        connection = H2Connection(Clock())
        self.assertIsInstance(connection.conn, h2.connection.H2Connection)
        self.assertEqual(connection.streams, {})


class DispatchTests(SynchronousTestCase):
    def test_dispatchAsTwisteds(self) -> None:
        """
        H2Connection.dataReceived: receiveData copies its dispatch, so an
        event Twisted's handles must be handled by the copy too.  Twisted's
        also handles ConnectionTerminated (the client's GOAWAY), which
        receiveData leaves to its caller.
        """
        twisted = handlersAndEvents(H2Connection.dataReceived)
        copy = handlersAndEvents(_twisted_h2.receiveData)
        self.assertEqual(
            twisted[0],
            {
                "_requestReceived",
                "_requestDataReceived",
                "_requestEnded",
                "_requestAborted",
                "_handleWindowUpdate",
                "_handlePriorityUpdate",
            },
        )
        self.assertEqual(copy[0], twisted[0])
        self.assertEqual(copy[1] | {"ConnectionTerminated"}, twisted[1])
        for name in ("receive_data", "_terminate"):
            self.assertIn(name, H2Connection.dataReceived.__code__.co_names)
        self.assertIn(
            "_tryToWriteControlData", H2Connection.dataReceived.__code__.co_names
        )

    def connected(self) -> tuple[H2Connection, StringTransport, bytes]:
        """
        @return: a connection of Twisted's, its transport, and what a client
            that opens and pings it sends.
        """
        connection = H2Connection(Clock())
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.initiate_connection()
        client.ping(b"12345678")
        return connection, transport, client.data_to_send()

    def test_otherEventsToTheCaller(self) -> None:
        """
        The events Twisted does not dispatch go to the caller's
        C{otherEvent}; then the frames h2 made meanwhile (the PING's ACK)
        are written.
        """
        connection, transport, data = self.connected()
        others: list[object] = []
        _twisted_h2.receiveData(connection, data, others.append, lambda: False)
        self.assertEqual(
            [type(e) for e in others],
            [h2.events.RemoteSettingsChanged, h2.events.PingReceived],
        )
        self.assertIn(b"12345678", transport.value())

    def test_stopsOnceClosed(self) -> None:
        """
        The dispatch stops at the first event after which C{closed()} is
        true, and writes nothing.
        """
        connection, transport, data = self.connected()
        others: list[object] = []
        _twisted_h2.receiveData(connection, data, others.append, lambda: True)
        self.assertEqual([type(e) for e in others], [h2.events.RemoteSettingsChanged])
        self.assertEqual(transport.value(), b"")

    def test_writePreparedFrames(self) -> None:
        """
        H2Connection._tryToWriteControlData: writes what h2 prepared, or
        queues it while the transport is paused.
        """
        connection = H2Connection(Clock())
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        connection.conn.ping(b"87654321")
        _twisted_h2.writePreparedFrames(connection)
        self.assertIn(b"87654321", transport.value())
        transport.clear()
        connection.pauseProducing()
        connection.conn.ping(b"abcdefgh")
        _twisted_h2.writePreparedFrames(connection)
        self.assertEqual(transport.value(), b"")
        self.assertIn(b"abcdefgh", b"".join(connection._bufferedControlFrames))


class ConnectionLostTests(SynchronousTestCase):
    def test_streamsLostKeepsTheTimers(self) -> None:
        """
        H2Connection.connectionLost's private keyword _cancelTimeouts (True
        by default): streamsLost passes False, and the idle timeout stays
        armed.
        """
        parameter = inspect.signature(H2Connection.connectionLost).parameters[
            "_cancelTimeouts"
        ]
        self.assertIs(parameter.default, True)
        clock = Clock()
        for lose, armed in [
            (_twisted_h2.streamsLost, True),
            (H2Connection.connectionLost, False),
        ]:
            connection = H2Connection(clock)
            connection.timeOut = 10
            connection.callLater = clock.callLater  # type: ignore[method-assign,assignment]
            connection.makeConnection(StringTransport())
            timeouts = [
                call for call in clock.getDelayedCalls() if "Timeout" in repr(call)
            ]
            self.assertEqual(len(timeouts), 1)
            lose(connection, Failure(ConnectionLost()))
            self.assertEqual(timeouts[0].active(), armed, lose)
            if armed:
                timeouts[0].cancel()


class SwitchTests(SynchronousTestCase):
    def test_whatTwistedsSwitchHandsOver(self) -> None:
        """
        _GenericHTTPChannelProtocol.dataReceived: Twisted's switch to HTTP/2
        sets HANDED_OVER on the H2Connection it makes, and nothing else;
        H2Connection reads requestFactory, site and factory for each
        stream.
        """
        stored = {
            instruction.argval
            for instruction in dis.get_instructions(
                _GenericHTTPChannelProtocol.dataReceived
            )
            if instruction.opname == "STORE_ATTR"
        }
        self.assertEqual(
            stored - {"_channel", "_negotiatedProtocol"},
            set(_twisted_h2.HANDED_OVER),
        )
        self.assertLessEqual(
            {"requestFactory", "site", "factory"},
            set(H2Connection._requestReceived.__code__.co_names),
        )

    def test_takeOver(self) -> None:
        """
        takeOver gives the connection what the site's factory gave the
        channel.
        """
        clock = Clock()
        site = Site(Resource(), reactor=clock)
        site.timeOut = 7
        generic = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert generic is not None
        channel = generic._channel
        connection = H2Connection(clock)
        _twisted_h2.takeOver(connection, channel)
        for name in _twisted_h2.HANDED_OVER:
            self.assertEqual(getattr(connection, name), getattr(channel, name), name)
        self.assertIs(connection.site, site)
        self.assertEqual(connection.timeOut, 7)


class H2ConnectionTests(SynchronousTestCase):
    def test_controlFramesWaitWhilePaused(self) -> None:
        """
        H2Connection's _consumerBlocked, _bufferedControlFrames and
        _bufferedControlFrameBytes: writeControlBytes queues behind them
        while the transport is paused, in order.
        """
        connection = H2Connection(Clock())
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        connection.pauseProducing()
        _twisted_h2.writeControlBytes(connection, b"frame")
        self.assertEqual(transport.value(), b"")
        self.assertEqual(list(connection._bufferedControlFrames), [b"frame"])
        self.assertEqual(connection._bufferedControlFrameBytes, 5)
        connection.resumeProducing()
        self.assertEqual(transport.value(), b"frame")
        self.assertEqual(connection._bufferedControlFrameBytes, 0)

    def test_flushControlBytes(self) -> None:
        """
        H2Connection._bufferedControlFrames: flushControlBytes hands them to
        the transport even while paused.
        """
        connection = H2Connection(Clock())
        transport = StringTransport()
        connection.makeConnection(transport)
        transport.clear()
        connection.pauseProducing()
        _twisted_h2.writeControlBytes(connection, b"frame")
        _twisted_h2.flushControlBytes(connection)
        self.assertEqual(transport.value(), b"frame")
        self.assertEqual(connection._bufferedControlFrameBytes, 0)

    def test_tolerantStateMachineKeepsConfig(self) -> None:
        """
        H2Connection.conn: the h2 state machine, replaced before connecting.
        """
        connection = H2Connection(Clock())
        config = connection.conn.config
        _twisted_h2.tolerantStateMachine(connection)
        self.assertIsInstance(connection.conn, _twisted_h2.PeerGoAwayTolerant)
        self.assertIs(connection.conn.config, config)
        self.assertFalse(config.client_side)

    def test_streamRequest(self) -> None:
        """
        H2Stream._request and _conn: the request a stream answers, the
        connection it belongs to.
        """
        w = Wire(h2c=True, pingDelay=1)
        c = H2WireClient(w)
        c.request("/ping")
        (connection,) = w.drain._connections
        assert isinstance(connection, DrainingH2Connection)
        (stream,) = connection.streams.values()
        self.assertIsInstance(stream, H2Stream)
        request = _twisted_h2.requestOf(stream)
        self.assertIsInstance(request, Request)
        self.assertEqual(request.path, b"/ping")
        self.assertIs(_twisted_h2.connectionOf(stream), connection)


class H2StateMachineTests(SynchronousTestCase):
    def test_stockH2ClosesOnAnyGoAway(self) -> None:
        """
        h2's H2Connection._receive_goaway_frame closes the state machine on
        a GOAWAY(NO_ERROR): the reason for PeerGoAwayTolerant.  When this
        fails, h2 may have learnt graceful close (h2 #1181).
        """
        server = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        client = clientAndServer(server)
        client.close_connection()
        server.receive_data(client.data_to_send())
        self.assertRaises(
            h2.exceptions.ProtocolError,
            server.send_headers,
            1,
            [(":status", "200")],
        )

    def test_tolerantAnswersAfterGoAway(self) -> None:
        """
        h2's frame dispatch table calls the instance's
        _receive_goaway_frame: after the client's GOAWAY(NO_ERROR) the
        server still answers, and reports the GOAWAY.
        """
        server = _twisted_h2.PeerGoAwayTolerant(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.assertEqual(
            server._frame_dispatch_table[GoAwayFrame].__func__,  # type: ignore[attr-defined]
            _twisted_h2.PeerGoAwayTolerant._receive_goaway_frame,
        )
        client = clientAndServer(server)
        client.close_connection()
        events = server.receive_data(client.data_to_send())
        self.assertEqual([type(e) for e in events], [h2.events.ConnectionTerminated])
        server.send_headers(1, [(":status", "200")], end_stream=True)

    def test_tolerantAbortsOnError(self) -> None:
        """
        A GOAWAY with an error code still closes the state machine.
        """
        server = _twisted_h2.PeerGoAwayTolerant(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        client = clientAndServer(server)
        client.close_connection(error_code=2)
        server.receive_data(client.data_to_send())
        self.assertRaises(
            h2.exceptions.ProtocolError,
            server.send_headers,
            1,
            [(":status", "200")],
        )


class TransportTests(SynchronousTestCase):
    def test_tcpTransportsAreWriteDescriptors(self) -> None:
        """
        twisted.internet.tcp.Connection provides IWriteDescriptor: what
        flushToSocket calls doWrite on.
        """
        self.assertTrue(IWriteDescriptor.implementedBy(tcp.Connection))

    def test_flushToSocketLooksThroughWrappers(self) -> None:
        """
        A wrapping transport's C{transport}: flushToSocket writes the one
        beneath.
        """
        written: list[str] = []

        class Descriptor(StringTransport):
            def doWrite(self) -> None:
                written.append("doWrite")

        from zope.interface import directlyProvides

        inner = Descriptor()
        directlyProvides(inner, IWriteDescriptor)
        outer = StringTransport()
        outer.transport = inner  # type: ignore[attr-defined]
        _twisted_h2.flushToSocket(outer)
        self.assertEqual(written, ["doWrite"])

    def test_tlsFlushesAggregatedWritesOnLoseConnection(self) -> None:
        """
        twisted.protocols.tls.BufferingTLSTransport: TLS (the server's
        default) holds small writes until the next reactor turn, which a
        shutdown never gives, and flushes them in loseConnection:
        DrainingH2Connection.abort closes TLS before pushing the final
        GOAWAY into the socket.
        """
        from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory

        self.assertIs(TLSMemoryBIOFactory.protocol, BufferingTLSTransport)
        self.assertIn(
            "_aggregator", BufferingTLSTransport.loseConnection.__code__.co_names
        )
        self.assertIn("flush", BufferingTLSTransport.loseConnection.__code__.co_names)


def turn(clock: Clock) -> None:
    """
    Run the calls of C{clock} due now, not those they schedule for now: one
    reactor turn (C{Clock.advance(0)} would run those too, and never end
    with a loop that reschedules itself for now).
    """
    due = [c for c in clock.calls if c.getTime() <= clock.seconds()]
    for call in due:
        clock.calls.remove(call)
        call.called = 1
        call.func(*call.args, **call.kw)


class SendingLoopTests(SynchronousTestCase):
    def stalled(
        self, fixed: bool
    ) -> tuple[H2Connection, Clock, h2.connection.H2Connection]:
        """
        @return: a connection of Twisted's whose one stream has a response
            bigger than its client's window (65,535 bytes) queued, the
            client never opening it; its clock, advanced until the window
            is used up; and the stream id.
        """
        clock = Clock()
        connection = H2Connection(clock)
        if fixed:
            _twisted_h2.windowAwarePriority(connection)
        connection.requestFactory = Request  # type: ignore[attr-defined]
        transport = StringTransport()
        connection.makeConnection(transport)
        client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        client.initiate_connection()
        client.send_headers(
            1,
            [(":method", "GET"), (":scheme", "http"), (":authority", "x")]
            + [(":path", "/")],
            end_stream=True,
        )
        connection.dataReceived(client.data_to_send())
        connection.writeDataToStream(1, b"x" * 100000)
        for _ in range(10):
            turn(clock)
        return connection, clock, client

    def test_stockLoopSpinsOnAUsedUpWindow(self) -> None:
        """
        Twisted's data-sending loop, its stream's window used up with bytes
        still queued, reschedules itself every turn (as long as the client
        likes), and windowAwarePriority stops it: the loop waits.
        """
        connection, clock, _ = self.stalled(fixed=False)
        self.assertEqual(
            [c.func.__name__ for c in clock.calls],
            ["_sendPrioritisedData"],
        )
        turn(clock)
        self.assertEqual(len(clock.getDelayedCalls()), 1)
        connection, clock, _ = self.stalled(fixed=True)
        self.assertEqual(clock.getDelayedCalls(), [])
        self.assertIsNotNone(connection._sendingDeferred)

    def test_wakeSender(self) -> None:
        """
        H2Connection._sendingDeferred: what the loop waits on; once the
        window opens, Twisted's WINDOW_UPDATE handler unblocks the stream
        and wakeSender sends on.
        """
        connection, clock, client = self.stalled(fixed=True)
        self.assertEqual(_twisted_h2.queuedBytes(connection, 1), 100000 - 65535)
        client.increment_flow_control_window(65535)
        client.increment_flow_control_window(65535, stream_id=1)
        connection.dataReceived(client.data_to_send())
        for _ in range(10):
            turn(clock)
        self.assertEqual(_twisted_h2.queuedBytes(connection, 1), 100000 - 65535)
        _twisted_h2.wakeSender(connection)
        for _ in range(10):
            turn(clock)
        self.assertEqual(_twisted_h2.queuedBytes(connection, 1), 0)

    def test_transportPaused(self) -> None:
        """
        H2Connection._consumerBlocked is set while the transport is paused.
        """
        connection = H2Connection(Clock())
        self.assertFalse(_twisted_h2.transportPaused(connection))
        connection.pauseProducing()
        self.assertTrue(_twisted_h2.transportPaused(connection))
        connection.resumeProducing()
        self.assertFalse(_twisted_h2.transportPaused(connection))


class _Held(Resource):
    """
    Renders nothing: records each request it is given.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[Request] = []

    def render(self, request: Request) -> object:
        self.requests.append(request)
        return NOT_DONE_YET


class PausedStreamTests(SynchronousTestCase):
    """
    What L{gracesvc._asgi.h2stream} relies on for the backpressure of a
    streamed request body: Twisted's own paused H2Stream.
    """

    def opened(self) -> tuple[_Held, H2WireClient, H2Stream, int]:
        held = _Held()
        w = Wire(h2c=True, resource=held)
        c = H2WireClient(w)
        streamID = c.request("/up?x=1", method="POST", endStream=False)
        (connection,) = w.drain._connections
        assert isinstance(connection, DrainingH2Connection)
        (stream,) = connection.streams.values()
        return held, c, stream, streamID

    def granted(self, c: H2WireClient, streamID: int) -> int:
        return sum(
            frame.window_increment
            for _, frame in c.frames.received
            if isinstance(frame, WindowUpdateFrame) and frame.stream_id == streamID
        )

    def test_requestLineOf(self) -> None:
        """
        H2Stream.command and path: its request's method and path, from the
        HEADERS, before the body.
        """
        _, _, stream, _ = self.opened()
        self.assertEqual(_twisted_h2.requestLineOf(stream), (b"POST", b"/up?x=1"))

    def test_pausedStreamHoldsTheBody(self) -> None:
        """
        H2Stream.pauseProducing, receiveDataChunk, _inboundDataBuffer,
        resumeProducing and requestComplete: a paused stream holds the DATA
        (heldInbound counts it) and the end, its window left closed; resumed,
        it hands the DATA to the request's handleContentChunk, the end to
        its requestReceived (with the request line and b"HTTP/2"), and
        re-opens the window by what it handed over.
        """
        held, c, stream, streamID = self.opened()
        request = _twisted_h2.requestOf(stream)
        chunks: list[bytes] = []
        ends: list[tuple[bytes, bytes, bytes]] = []
        request.handleContentChunk = chunks.append  # type: ignore[method-assign]
        request.requestReceived = lambda *line: ends.append(line)  # type: ignore[method-assign]
        c.send(c.frames.data(streamID, b"a" * 40000, endStream=False))
        self.assertEqual(chunks, [b"a" * 16384, b"a" * 16384, b"a" * 7232])
        self.assertEqual(_twisted_h2.heldInbound(stream), 0)
        chunks.clear()
        openedBefore = self.granted(c, streamID)
        stream.pauseProducing()
        c.send(c.frames.data(streamID, b"b" * 20000, endStream=True))
        self.assertEqual((chunks, ends), ([], []))
        self.assertEqual(_twisted_h2.heldInbound(stream), 20000)
        self.assertEqual(self.granted(c, streamID), openedBefore)
        stream.resumeProducing()
        self.assertEqual(b"".join(chunks), b"b" * 20000)
        self.assertEqual(ends, [(b"POST", b"/up?x=1", b"HTTP/2")])
        self.assertEqual(_twisted_h2.heldInbound(stream), 0)
        self.assertEqual(held.requests, [])

    def test_stockStreamRendersAtItsEnd(self) -> None:
        """
        H2Stream.requestComplete: Twisted's own request is rendered only
        once the stream has ended, its body spooled: what the ASGI site's
        request changes.
        """
        held, c, stream, streamID = self.opened()
        c.send(c.frames.data(streamID, b"body", endStream=False))
        self.assertEqual(held.requests, [])
        c.send(c.frames.data(streamID, b"", endStream=True))
        (request,) = held.requests
        assert request.content is not None
        self.assertEqual(request.content.read(), b"body")
