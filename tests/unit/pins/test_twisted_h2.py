"""
Pins for the Twisted and h2 internals the HTTP/2 drain relies on
(L{gracesvc._pins.twisted_h2}).

Each test names the internal in its first line.  If one fails after a
Twisted or h2 upgrade, HTTP/2 streams may be lost during a drain: read the
function of L{gracesvc._pins.twisted_h2} it pins, and adapt it.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.exceptions
from hyperframe.frame import GoAwayFrame
from twisted.internet import tcp
from twisted.internet.interfaces import IWriteDescriptor
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase
from twisted.web._http2 import H2Connection, H2Stream
from twisted.web.http import Request

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


class H2ConnectionTests(SynchronousTestCase):
    def test_dataReceivedDispatchesTheseEvents(self) -> None:
        """
        H2Connection.dataReceived: DrainingH2Connection re-implements its
        dispatch, so a new event handled there must be handled there too.
        """
        names = set(H2Connection.dataReceived.__code__.co_names)
        handlers = {n for n in names if n.startswith(("_request", "_handle"))}
        self.assertEqual(
            handlers,
            {
                "_requestReceived",
                "_requestDataReceived",
                "_requestEnded",
                "_requestAborted",
                "_handleWindowUpdate",
                "_handlePriorityUpdate",
            },
        )
        self.assertIn("_terminate", names)
        self.assertIn("_tryToWriteControlData", names)

    def test_hooksOverridden(self) -> None:
        """
        H2Connection's _requestDone, _terminate, endRequest and
        timeoutConnection: the hooks DrainingH2Connection overrides exist.
        """
        for name in (
            "_requestDone",
            "_terminate",
            "endRequest",
            "timeoutConnection",
            "_sendPrioritisedData",
        ):
            self.assertTrue(callable(getattr(H2Connection, name)), name)
        self.assertIn(
            "_requestDone", H2Connection._sendPrioritisedData.__code__.co_names
        )

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
