"""
Pins for every Twisted internal gracesvc relies on (L{gracesvc._pins.twisted}).

Each test names the internal in its first line.  If one fails after a
Twisted upgrade, the drain may lose responses silently: read the function
of L{gracesvc._pins.twisted} it pins, and adapt it to the new Twisted.
"""

from __future__ import annotations

import dis
import errno
import os
import socket
from signal import SIGINT, SIGTERM
from typing import Any, cast

from twisted import test as twistedTests
from twisted.internet import tcp
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IListeningPort, ITransport
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.tcp import Port
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver
from twisted.protocols.policies import ProtocolWrapper
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import HTTPChannel, Request
from twisted.web.test.requesthelper import DummyChannel

from gracesvc._pins import twisted as _twisted
from gracesvc.testing import get


class Recorder(HTTPChannel):
    """
    An L{HTTPChannel} that answers nothing on its own and records what its
    hooks see.
    """

    def __init__(self) -> None:
        super().__init__()
        self.fed: list[bytes] = []
        self.received: list[Request] = []

    def dataReceived(self, data: bytes) -> None:
        self.fed.append(data)
        super().dataReceived(data)

    def allContentReceived(self) -> None:
        self.received.append(self.requests[-1])
        super().allContentReceived()


class HoldingRequest(Request):
    def process(self) -> None:
        pass


def channel() -> tuple[Recorder, StringTransport]:
    c = Recorder()
    c.requestFactory = HoldingRequest
    transport = StringTransport()
    c.makeConnection(transport)
    return c, transport


class HTTPChannelTests(SynchronousTestCase):
    def test_pipelinedBytesWaitInDataBuffer(self) -> None:
        """
        C{HTTPChannel._dataBuffer} and C{LineReceiver._buffer}: bytes read
        behind a request being handled wait there, and
        L{_twisted.hasPipelinedRequest} sees them.
        """
        c, _ = channel()
        c.dataReceived(get("/a"))
        self.assertFalse(_twisted.hasPipelinedRequest(c))
        c.dataReceived(get("/b"))
        self.assertIsInstance(c._dataBuffer, list)
        self.assertIsInstance(c._buffer, bytes)
        self.assertTrue(_twisted.hasPipelinedRequest(c))
        c.dataReceived(b"\r\n")
        c._dataBuffer = [b"\r\n"]
        self.assertFalse(_twisted.hasPipelinedRequest(c))

    def test_requestDoneFeedsPipelinedBytesThroughDataReceived(self) -> None:
        """
        C{HTTPChannel.requestDone} hands the pipelined bytes back to
        C{self.dataReceived}: L{DrainingChannel} moves its state there.
        """
        c, _ = channel()
        c.dataReceived(get("/a") + get("/b"))
        self.assertEqual(len(c.received), 1)
        c.received[0].finish()
        self.assertEqual(c.fed[-1], get("/b"))
        self.assertEqual(len(c.received), 2)

    def test_pausedStopsParsingAndEmptyDataResumesIt(self) -> None:
        """
        C{LineReceiver.paused}: a paused channel keeps what it read
        unparsed; L{_twisted.resumeParsing} (C{dataReceived(b"")}) parses it.
        """
        c, _ = channel()
        c.dataReceived(get("/a") + get("/b"))
        _twisted.pauseParsing(c)
        c.received[0].finish()
        self.assertEqual(len(c.received), 1)
        _twisted.resumeParsing(c)
        self.assertEqual(len(c.received), 2)

    def test_lineModeEndsWithTheHead(self) -> None:
        """
        C{LineReceiver.line_mode}: set while a head is read, cleared at its
        blank line, for its body.
        """
        c, _ = channel()
        c.dataReceived(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n")
        self.assertFalse(_twisted.headComplete(c))
        c.dataReceived(b"\r\nab")
        self.assertTrue(_twisted.headComplete(c))

    def test_notificationsListHoldsNotifyFinishDeferreds(self) -> None:
        """
        C{Request.notifications}: what L{Request.notifyFinish} hands out;
        taken away, L{Request.finish} no longer fires them.
        """
        request = Request(cast(HTTPChannel, DummyChannel()))
        d = request.notifyFinish()
        taken = _twisted.takeNotifications(request)
        self.assertEqual(taken, [d])
        self.assertEqual(request.notifications, [])


class ChannelUpgradeTests(SynchronousTestCase):
    def test_twistedsUpgradeReplacesDataReceived(self) -> None:
        """
        C{HTTPChannel._protocolUpgradeForWebsockets} replaces the channel's
        C{dataReceived} on the instance, as L{_twisted.deliverTo} does.
        """
        stored = {
            instruction.argval
            for instruction in dis.get_instructions(
                HTTPChannel._protocolUpgradeForWebsockets
            )
            if instruction.opname == "STORE_ATTR"
        }
        self.assertIn("dataReceived", stored)

    def test_deliverToTakesEveryByteAfter(self) -> None:
        """
        After L{_twisted.deliverTo}, the bytes a TCP transport reads and the
        ones the channel buffered while answering (handed on by
        C{requestDone}) go to the new C{dataReceived}, unparsed.
        """
        from twisted.internet import tcp

        c, _ = channel()
        c.dataReceived(get("/a") + b"buffered")
        upgraded: list[bytes] = []
        _twisted.deliverTo(c, upgraded.append)
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        connection = tcp.Connection(a, c)
        b.send(b"read")
        connection.doRead()
        c.received[0].finish()
        self.assertEqual(upgraded, [b"read", b"buffered"])
        self.assertEqual(len(c.received), 1)


class RequestClassTests(SynchronousTestCase):
    def test_siteMakesPlainRequests(self) -> None:
        """
        C{Site.requestFactory}: a site's requests are
        L{twisted.web.server.Request}s, whose class
        C{DrainingChannel.allContentReceived} replaces by
        L{DrainingRequest}, a subclass that adds no state.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Request as SiteRequest
        from twisted.web.server import Site

        from gracesvc._protocols.http1 import DrainingRequest

        self.assertIs(Site(Resource()).requestFactory, SiteRequest)
        self.assertEqual(DrainingRequest.__bases__, (SiteRequest,))
        self.assertNotIn("__init__", vars(DrainingRequest))
        self.assertNotIn("__slots__", vars(DrainingRequest))

    def test_processAfterAllContentReceived(self) -> None:
        """
        C{HTTPChannel.allContentReceived} calls the last request's
        C{requestReceived}, which calls its C{process}: a class assigned
        before C{HTTPChannel.allContentReceived} runs is the one whose
        C{process} answers.
        """
        processed: list[Request] = []

        class Swapped(Request):
            def process(self) -> None:
                processed.append(self)

        class Swapping(Recorder):
            def allContentReceived(self) -> None:
                self.requests[-1].__class__ = Swapped
                super().allContentReceived()

        self.assertIn(
            "requestReceived", HTTPChannel.allContentReceived.__code__.co_names
        )
        self.assertIn("process", Request.requestReceived.__code__.co_names)
        c = Swapping()
        c.makeConnection(StringTransport())
        c.dataReceived(get("/a"))
        self.assertEqual([type(r) for r in processed], [Swapped])


class TransportTests(SynchronousTestCase):
    def tlsOver(self, below: StringTransport) -> ITransport:
        from twisted.internet.ssl import CertificateOptions

        factory = TLSMemoryBIOFactory(
            CertificateOptions(), False, Factory.forProtocol(Protocol)
        )
        tls = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        assert tls is not None
        tls.makeConnection(below)
        return tls

    def test_tlsTransportKeepsTheTCPTransport(self) -> None:
        """
        C{TLSMemoryBIOProtocol.transport}: the transport below TLS.
        L{_twisted.socketOf} finds the socket through it, and
        L{_twisted.closeBeneathTLS} closes it.
        """
        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)

        class SocketTransport(StringTransport):
            def getHandle(self) -> socket.socket:
                return a

        below = SocketTransport()
        tls = self.tlsOver(below)
        self.assertIs(_twisted.socketOf(tls), a)
        self.assertFalse(_twisted.bytesWaiting(tls))
        b.send(b"GET")
        self.assertTrue(_twisted.bytesWaiting(tls))
        _twisted.closeBeneathTLS(tls)
        self.assertTrue(below.disconnecting)

    def test_handOverRedirectsTCPAndTLSDelivery(self) -> None:
        """
        C{tcp.Connection.protocol} is looked up at each read, and
        C{TLSMemoryBIOProtocol} delivers plaintext to C{wrappedProtocol}:
        L{_twisted.handOver} sets either, and the bytes of the next read
        reach the new protocol.
        """
        from twisted.internet import tcp

        class Bytes(Protocol):
            def __init__(self) -> None:
                self.received: list[bytes] = []

            def dataReceived(self, data: bytes) -> None:
                self.received.append(data)

        a, b = socket.socketpair()
        self.addCleanup(a.close)
        self.addCleanup(b.close)
        old, new = Bytes(), Bytes()
        connection = tcp.Connection(a, old)
        self.assertTrue(_twisted.handOver(connection, old, new))
        b.send(b"after")
        connection.doRead()
        self.assertEqual((old.received, new.received), ([], [b"after"]))

        tls = cast(ProtocolWrapper, self.tlsOver(StringTransport()))
        wrapped, replacement = tls.wrappedProtocol, Bytes()
        self.assertTrue(_twisted.handOver(tls, wrapped, replacement))
        self.assertIs(tls.wrappedProtocol, replacement)
        # What TLSMemoryBIOProtocol calls with each chunk of plaintext.
        ProtocolWrapper.dataReceived(tls, b"plain")
        self.assertEqual(replacement.received, [b"plain"])
        self.assertFalse(_twisted.handOver(StringTransport(), old, new))

    def test_handshakeDoneTellsAHandshakeInProgress(self) -> None:
        """
        C{TLSMemoryBIOProtocol._handshakeDone}: false from the connect until
        the handshake completes, which L{_twisted.tlsHandshaking} reads; a
        plain transport is never handshaking.
        """
        tls = self.tlsOver(StringTransport())
        self.assertIs(tls._handshakeDone, False)  # type: ignore[attr-defined]
        self.assertTrue(_twisted.tlsHandshaking(tls))
        tls._handshakeDone = True  # type: ignore[attr-defined]
        self.assertFalse(_twisted.tlsHandshaking(tls))
        self.assertFalse(_twisted.tlsHandshaking(StringTransport()))
        self.assertFalse(_twisted.tlsHandshaking(None))

    def test_closeBeneathTLSLeavesPlainTransportsAlone(self) -> None:
        """
        Only a TLS transport has its transport below closed.
        """
        plain = StringTransport()
        _twisted.closeBeneathTLS(plain)
        self.assertFalse(plain.disconnecting)
        self.assertIsNone(_twisted.socketOf(plain))

    def test_portAcceptsWithDoRead(self) -> None:
        """
        C{tcp.Port.doRead} and C{connected}: what L{_twisted.acceptPending}
        calls to accept the connections queued in the kernel.
        """
        self.assertTrue(callable(Port.doRead))
        self.assertIn("_accept", Port.doRead.__code__.co_names)
        self.assertIn("buildProtocol", Port.doRead.__code__.co_names)
        self.assertIn("numberAccepts", Port.doRead.__code__.co_names)
        self.assertFalse(Port.connected)
        calls: list[str] = []

        class Listening:
            connected = True

            def doRead(self) -> None:
                calls.append("accept")

        _twisted.acceptPending(cast(IListeningPort, Listening()))
        self.assertEqual(calls, ["accept"])


class WorkersInternalsTests(SynchronousTestCase):
    """
    What L{gracesvc._workers.master}' master reads from Twisted's endpoints, and
    what its workers change on their ports.
    """

    def test_endpointAttributes(self) -> None:
        """
        C{_TCPServerEndpoint}'s C{_port}, C{_interface} and C{_backlog};
        C{UNIXServerEndpoint}'s C{_address}, C{_backlog} and C{_mode};
        C{AdoptedStreamServerEndpoint}'s C{fileno} and C{addressFamily}:
        what L{_twisted.listeningSpec} reads.
        """
        from twisted.internet.endpoints import (
            AdoptedStreamServerEndpoint,
            serverFromString,
        )
        from twisted.internet.testing import MemoryReactor

        reactor = MemoryReactor()
        spec = _twisted.listeningSpec
        self.assertEqual(
            spec(serverFromString(reactor, "tcp:8080:interface=127.0.0.1:backlog=7")),
            ("tcp", socket.AF_INET, "127.0.0.1", 8080, 7),
        )
        self.assertEqual(
            spec(serverFromString(reactor, "tcp6:8080")),
            ("tcp", socket.AF_INET6, "::", 8080, 50),
        )
        self.assertEqual(
            spec(serverFromString(reactor, "unix:/run/g.sock:mode=600")),
            ("unix", "/run/g.sock", 50, 0o600),
        )
        self.assertEqual(
            spec(AdoptedStreamServerEndpoint(reactor, 3, socket.AF_INET)),
            ("fd", 3, socket.AF_INET),
        )
        self.assertIsNone(spec(object()))

    def test_sslEndpointAttributes(self) -> None:
        """
        C{SSL4ServerEndpoint}'s C{_port}, C{_interface}, C{_backlog} and
        C{_sslContextFactory}: what L{_twisted.listeningSpec} reads for the
        master's TCP socket, and L{_twisted.tlsContextFactory} for the
        worker's TLS.
        """
        from twisted.internet.endpoints import serverFromString
        from twisted.internet.ssl import CertificateOptions
        from twisted.internet.testing import MemoryReactor

        pem = os.path.join(os.path.dirname(twistedTests.__file__), "server.pem")
        reactor = MemoryReactor()
        endpoint = serverFromString(
            reactor, f"ssl:8443:interface=127.0.0.1:backlog=7:privateKey={pem}"
        )
        self.assertEqual(
            _twisted.listeningSpec(endpoint),
            ("tcp", socket.AF_INET, "127.0.0.1", 8443, 7),
        )
        contextFactory = _twisted.tlsContextFactory(endpoint)
        self.assertIsInstance(contextFactory, CertificateOptions)
        # What the endpoint itself would listen with.
        endpoint.listen(Factory.forProtocol(Protocol))
        [(port, _, listenedWith, backlog, interface)] = reactor.sslServers
        self.assertEqual((port, backlog, interface), (8443, 7, "127.0.0.1"))
        self.assertIs(listenedWith, contextFactory)
        self.assertIsNone(
            _twisted.tlsContextFactory(serverFromString(reactor, "tcp:1"))
        )

    def test_limitAcceptsCapsNumberAccepts(self) -> None:
        """
        C{tcp.Port.doRead} reads C{numberAccepts} as it starts (pinned in
        L{PortTests}); L{_twisted.limitAccepts} caps it before each call,
        except when L{_twisted.acceptPending} raised it to accept it all.
        """
        seen: list[int] = []

        class Listening:
            connected = True
            numberAccepts = 100

            def doRead(self) -> None:
                seen.append(self.numberAccepts)

        port = Listening()
        _twisted.limitAccepts(cast(IListeningPort, port), 2)
        port.doRead()
        _twisted.acceptPending(cast(IListeningPort, port))
        self.assertEqual(seen, [2, _twisted.ACCEPT_ALL])

    def test_exitSignal(self) -> None:
        """
        C{ReactorBase._exitSignal} (see L{ReactorSignalTests}).
        """
        from twisted.internet.base import ReactorBase

        self.assertIsNone(_twisted.exitSignal(object()))
        reactor = ReactorBase.__new__(ReactorBase)
        reactor._exitSignal = SIGTERM
        self.assertEqual(_twisted.exitSignal(reactor), SIGTERM)


class ReactorSignalTests(SynchronousTestCase):
    """
    What L{gracesvc._process.service.StopSignals} relies on in Twisted's reactor
    beyond its interfaces: C{sigInt} and C{sigTerm}.
    """

    def test_reactorHandlersStopAndRecordTheExitSignal(self) -> None:
        """
        The reactor's C{sigInt} and C{sigTerm} stop it on its next turn
        and record the signal as C{_exitSignal}, which twistd re-raises once
        the reactor has stopped: so the exit status is the signal's.
        """
        from twisted.internet.base import ReactorBase

        class Reactor(ReactorBase):
            def installWaker(self) -> None:
                pass

            def wakeUp(self) -> None:
                pass

        for signum, handler in [(SIGINT, "sigInt"), (SIGTERM, "sigTerm")]:
            reactor = Reactor()
            getattr(reactor, handler)(signum, None)
            self.assertEqual(reactor._exitSignal, signum)
            self.assertEqual([f for f, _, _ in reactor.threadCallQueue], [reactor.stop])


class WebSocketUpgradeTests(SynchronousTestCase):
    """
    What L{gracesvc._protocols.http1.DrainingChannel} relies on in
    L{twisted.web.websocket}: how C{WebSocketResource} hands a connection
    over after its handshake.
    """

    def upgrade(self) -> tuple[list[object], StringTransport, list[str]]:
        """
        Render a C{WebSocketResource} handshake on a channel whose
        C{_protocolUpgradeForWebsockets} records what it is handed.

        @return: the protocols handed over, the transport, and what the
            application was told.
        """
        from twisted.web.resource import Resource
        from twisted.web.server import Site
        from twisted.web.websocket import WebSocketResource

        told: list[str] = []

        class Application:
            def negotiationStarted(self, transport: object) -> None:
                told.append("negotiationStarted")

            def negotiationFinished(self) -> None:
                told.append("negotiationFinished")

        class Factory:
            def buildProtocol(self, request: object) -> Application:
                return Application()

        handed: list[object] = []
        written: list[bytes] = []

        class Upgrading(HTTPChannel):
            def _protocolUpgradeForWebsockets(self, protocol: object) -> None:
                handed.append(protocol)
                written.append(transport.value())

        resource = WebSocketResource(Factory())  # type: ignore[arg-type]
        root = Resource()
        root.putChild(b"ws", resource)
        site = Site(root)
        site.protocol = Upgrading  # type: ignore[assignment]
        c = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
        transport = StringTransport()
        c.makeConnection(transport)
        c.dataReceived(
            get(
                "/ws",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            )
        )
        self.assertEqual(written, [b""], "the 101 is written after the hand-over")
        return handed, transport, told

    def test_resourceCallsTheChannelsUpgradeHook(self) -> None:
        """
        C{HTTPChannel._protocolUpgradeForWebsockets}: C{WebSocketResource}
        calls it on the request's channel once the handshake is accepted,
        before writing the 101; an override that does not call Twisted's
        keeps the channel's C{connectionLost}.
        """
        self.assertTrue(callable(HTTPChannel._protocolUpgradeForWebsockets))
        handed, transport, told = self.upgrade()
        self.assertEqual(len(handed), 1)
        self.assertTrue(transport.value().startswith(b"HTTP/1.1 101 "))
        # Twisted's own hook would have told the application its transport.
        self.assertEqual(told, ["negotiationFinished"])

    def test_wireProtocolHoldsConnectionAndApplication(self) -> None:
        """
        C{_WebSocketWireProtocol._wsconn} and C{_wsp}: the wsproto
        connection, open, and the application's protocol, as
        L{_twisted.webSocketParts} takes them.
        """
        from wsproto.connection import Connection, ConnectionState

        handed, _, _ = self.upgrade()
        connection, application = _twisted.webSocketParts(handed[0])  # type: ignore[arg-type]
        self.assertIsInstance(connection, Connection)
        self.assertIs(connection.state, ConnectionState.OPEN)
        self.assertEqual(type(application).__name__, "Application")
        with self.assertRaises(TypeError):
            _twisted.webSocketParts(type("Wire", (), {"_wsconn": None, "_wsp": None})())


class InstanceLayoutTests(SynchronousTestCase):
    def test_drainingChannelAddsNoInstanceDictKeys(self) -> None:
        """
        CPython shares the keys of a class's instance dicts up to 29 names,
        and a channel past that is slower on every attribute access.
        HTTPChannel uses most of them: DrainingChannel keeps its own fields
        in slots, so a channel that served a request has no name in its
        dict that Twisted's own channel lacks.
        """
        from twisted.web.server import Site

        from gracesvc.testing import Wire

        wire = Wire(pingDelay=0)
        client = wire.connect()
        client.send(get("/ping") + get("/healthz"))
        self.assertEqual(len(client.responses), 2)
        plain = Site(wire.site.resource).buildProtocol(None)
        assert plain is not None
        plain.makeConnection(StringTransport())
        plain.dataReceived(get("/ping") + get("/healthz"))
        extra = set(vars(client.server)) - set(vars(plain._channel))
        self.assertEqual(extra, set())
        self.assertLessEqual(len(vars(client.server)), 29)


class AsyncioReactorTests(SynchronousTestCase):
    def test_loopOfTheAsyncioReactor(self) -> None:
        """
        The asyncio reactor keeps its loop as C{_asyncioEventloop}: where an
        ASGI application's tasks run.
        """
        import asyncio

        from twisted.internet.asyncioreactor import AsyncioSelectorReactor

        from gracesvc._pins.twisted import asyncioLoopOf

        loop = asyncio.new_event_loop()
        self.addCleanup(loop.close)
        self.addCleanup(asyncio.set_event_loop, None)
        reactor = AsyncioSelectorReactor(loop)
        self.assertIs(asyncioLoopOf(reactor), loop)
        self.assertRaises(TypeError, asyncioLoopOf, object())


class _Listener:
    """
    A listening socket whose C{accept()} fails with each errno of
    C{errors}, then returns C{clients}, then has nothing more.
    """

    def __init__(self, errors: list[int], clients: int = 0) -> None:
        self.errors = errors
        self.clients = clients
        self.closed = 0

    def accept(self) -> tuple[object, tuple[str, int]]:
        if self.errors:
            error = self.errors.pop(0)
            raise OSError(error, os.strerror(error))
        if self.clients:
            self.clients -= 1
            listener = self

            class Client:
                def close(self) -> None:
                    listener.closed += 1

            return Client(), ("127.0.0.1", 40000 + self.clients)
        raise BlockingIOError(errno.EAGAIN, "no more")


class _Reserve:
    """
    Twisted's reserved descriptor, available.
    """

    def __init__(self) -> None:
        self.calls: list[str] = []

    def available(self) -> bool:
        return True

    def reserve(self) -> None:
        self.calls.append("reserve")

    def __enter__(self) -> None:
        self.calls.append("release")

    def __exit__(self, *exc: object) -> None:
        self.reserve()


class AcceptErrorTests(SynchronousTestCase):
    """
    What L{twisted.internet.tcp.Port} logs about its accept errors, and
    where: L{_twisted.observeAcceptErrors}.
    """

    def observedPort(self, listener: _Listener) -> tuple[Port, list[dict[str, object]]]:
        events: list[dict[str, object]] = []
        port = Port(0, Factory.forProtocol(Protocol))
        port.socket = listener
        port.numberAccepts = 10
        self.assertTrue(
            _twisted.observeAcceptErrors(port, cast(ILogObserver, events.append))
        )
        return port, events

    def test_emfileWithTheReserve(self) -> None:
        """
        C{_accept}, C{_reservedFD} and C{Port._logger}: EMFILE with the
        reserve available releases it, closes each waiting client, and
        reserves it again, logging each step through the port's logger.
        """
        reserve = _Reserve()
        self.patch(tcp, "_reservedFD", reserve)
        listener = _Listener([errno.EMFILE], clients=2)
        port, events = self.observedPort(listener)
        port.doRead()
        self.assertEqual(
            [e["log_format"] for e in events],
            [
                _twisted.EMFILE_RELEASING,
                _twisted.EMFILE_CLOSED,
                _twisted.EMFILE_CLOSED,
                _twisted.EMFILE_RERESERVING,
            ],
        )
        self.assertEqual(listener.closed, 2)
        self.assertEqual(reserve.calls, ["release", "reserve"])

    def test_otherErrorsLeaveTheClientQueued(self) -> None:
        """
        EMFILE without the reserve, ENFILE, ENOBUFS: logged with the errno's
        name, nothing accepted.
        """

        class NoReserve:
            def available(self) -> bool:
                return False

        self.patch(tcp, "_reservedFD", NoReserve())
        for error, name in [(errno.EMFILE, "EMFILE"), (errno.ENFILE, "ENFILE")]:
            port, events = self.observedPort(_Listener([error], clients=1))
            port.doRead()
            [event] = events
            self.assertEqual(event["log_format"], _twisted.ACCEPT_FAILED)
            self.assertEqual(event["acceptError"], name)

    def test_theReserveLogsThroughItsClassLogger(self) -> None:
        """
        C{_FileDescriptorReservation._log}: a reserve that cannot be had
        logs one of L{_twisted.RESERVE_FAILED}.
        """
        from twisted.internet.tcp import _FileDescriptorReservation

        self.patch(_FileDescriptorReservation, "_log", _FileDescriptorReservation._log)
        events: list[dict[str, object]] = []
        _twisted.observeReserveErrors(cast(ILogObserver, events.append))

        def noDescriptor() -> Any:
            raise OSError(errno.EMFILE, "Too many open files")

        _FileDescriptorReservation(noDescriptor).reserve()
        [event] = events
        self.assertIn(event["log_format"], _twisted.RESERVE_FAILED)

    def test_notAPort(self) -> None:
        self.assertFalse(
            _twisted.observeAcceptErrors(
                cast(IListeningPort, object()), cast(ILogObserver, print)
            )
        )


class EndpointDescriptionTests(SynchronousTestCase):
    def test_keywords(self) -> None:
        """
        C{endpoints._parse}: the C{key=value} parameters of a description,
        escaped colons honoured.
        """
        self.assertEqual(
            _twisted.endpointKeywords("tcp:8080:interface=127.0.0.1:backlog=5"),
            {"interface": "127.0.0.1", "backlog": "5"},
        )
        self.assertEqual(_twisted.endpointKeywords("unix:/run/a\\:b.sock"), {})


class CloseAtOnceTests(SynchronousTestCase):
    def test_descriptorFreedBeforeTheNextTurn(self) -> None:
        """
        C{tcp.Connection.abortConnection} closes its socket only on the
        reactor's next turn, and its C{_closeSocket} tolerates a socket
        closed already: L{_twisted.closeAtOnce} frees it now.
        """
        from twisted.internet.testing import MemoryReactorClock

        reactor = MemoryReactorClock()
        a, b = socket.socketpair()
        self.addCleanup(b.close)
        lost: list[object] = []

        class Recording(Protocol):
            def connectionLost(self, reason: object = None) -> None:
                lost.append(reason)

        connection = tcp.Connection(a, Recording(), reactor)
        connection.connected = True
        _twisted.closeAtOnce(connection)
        self.assertEqual(a.fileno(), -1)
        self.assertEqual(lost, [])
        reactor.advance(0)
        self.assertEqual(len(lost), 1)
        self.assertEqual(b.recv(10), b"")
