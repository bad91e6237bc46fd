# -*- test-case-name: tests.unit.pins.test_twisted -*-
"""
Every Twisted internal gracesvc relies on, in one place.

Twisted has no public API for what a graceful drain must know (whether a
channel holds pipelined bytes, the socket under a TLS transport, the
connections waiting in a listening socket's accept queue).  Each function
here reads or drives one private attribute of Twisted 26.10, says why it is
needed, and is pinned by C{tests/unit/pins/test_twisted.py}: a Twisted
upgrade that changes any of them fails there, with the name of the internal,
instead of silently losing responses during a drain.

HTTP/2's internals (Twisted's private C{H2Connection}, h2's GOAWAY
handling) are in L{gracesvc._pins.twisted_h2}, pinned by
C{tests/unit/pins/test_twisted_h2.py}.

Elsewhere, and pinned in the same test module:

  - L{gracesvc._process.service}'s C{StopSignals} hands the first stop
    signal to the reactor's C{sigInt} and C{sigTerm}, which stop it and
    record the signal that twistd re-raises at exit (no interface declares
    them);
  - L{gracesvc._protocols.http1.DrainingChannel} overrides L{HTTPChannel}'s
    C{_protocolUpgradeForWebsockets}, which
    L{twisted.web.websocket.WebSocketResource} calls to hand the connection
    over after its handshake (see L{webSocketParts}, L{deliverTo});
  - C{DrainingChannel.allContentReceived} makes a request processed during
    a drain a L{gracesvc._protocols.http1.DrainingRequest} by assigning its
    C{__class__}, so that before the signal no request pays for the drain's
    check (a function here would cost a call per request during the
    drain).  This relies on the request being the plain
    L{twisted.web.server.Request} that a L{twisted.web.server.Site}'s
    C{requestFactory} makes, on C{DrainingRequest} adding no state to it
    (no C{__init__}, no C{__slots__}: the instances share one layout), and
    on L{HTTPChannel.allContentReceived} calling the request's
    C{requestReceived}, which calls C{process} after the assignment.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import (
    IListeningPort,
    IOpenSSLContextFactory,
    IProtocol,
    ITransport,
)
from twisted.logger import ILogObserver, Logger
from twisted.protocols.tls import TLSMemoryBIOProtocol
from twisted.web.http import HTTPChannel, Request

if TYPE_CHECKING:
    # Not at run time: twisted.web.websocket imports twisted.web.client, and
    # this module is imported by the plugin's.
    from twisted.web.websocket import WebSocketProtocol
    from wsproto.connection import Connection


#: More connections than an accept queue holds (Twisted listens with a
#: backlog of 50; Linux caps any backlog at C{net.core.somaxconn}, 4096 by
#: default): see L{acceptPending}.
ACCEPT_ALL = 65536


def acceptPending(port: IListeningPort) -> None:
    """
    Accept the connections waiting in C{port}'s kernel accept queue.

    Closing a listening socket resets the connections still queued in it:
    their clients completed the handshake and may have sent a request.
    Accepting them first makes them ordinary connections of the drain,
    served if a request arrives within the idle grace.

    C{doRead} accepts at most C{numberAccepts} connections a call, a number
    Twisted adapts to what the previous call accepted (1 after a quiet
    spell), so one call could leave most of the queue to be reset: it is
    raised above any accept queue's length first, and the call then accepts
    until the queue is empty.

    Internals: L{twisted.internet.tcp.Port}'s C{doRead} (accepts what is
    queued), C{numberAccepts} and C{connected}.
    """
    doRead = getattr(port, "doRead", None)
    if doRead is not None and getattr(port, "connected", False):
        numberAccepts = getattr(port, "numberAccepts", None)
        if isinstance(numberAccepts, int):
            port.numberAccepts = max(  # type: ignore[attr-defined]
                numberAccepts, ACCEPT_ALL
            )
        doRead()


def handOver(transport: object, old: object, new: object) -> bool:
    """
    Have C{transport} deliver to C{new} what it delivered to C{old}: its
    bytes, and the loss of the connection.  A switch between protocols that
    has decided steps out of the way, so that the bytes of every later read
    go straight to the protocol it chose, with no call through it.

    Internals: L{twisted.internet.tcp.Connection}'s C{protocol} (C{doRead}
    looks it up at each read),
    L{twisted.protocols.policies.ProtocolWrapper}'s C{wrappedProtocol}
    (which L{TLSMemoryBIOProtocol} delivers its plaintext to), and the
    C{protocol} of L{twisted.test.iosim}'s C{FakeTransport}.

    @return: whether C{transport} delivered to C{old} and now delivers to
        C{new}.
    """
    for name in ("wrappedProtocol", "protocol"):
        if getattr(transport, name, None) is old:
            setattr(transport, name, new)
            return True
    return False


def deliverTo(channel: HTTPChannel, dataReceived: Callable[[bytes], object]) -> None:
    """
    From now on, hand every byte C{channel} is given to C{dataReceived}
    instead of parsing it as HTTP: its connection was upgraded to another
    protocol.

    As Twisted's own C{HTTPChannel._protocolUpgradeForWebsockets} does,
    C{dataReceived} replaces the channel's method on the instance: a
    transport looks C{dataReceived} up on its protocol at each read (see
    L{handOver}), and so does the channel itself when it hands on what it
    buffered while answering (C{requestDone}, through C{setLineMode}); a
    wrapper around the channel would add a call per read.

    Internals: C{HTTPChannel._protocolUpgradeForWebsockets}'s assignment of
    C{dataReceived}; the instance dictionary of L{HTTPChannel} (which has
    no C{__slots__}).
    """
    channel.dataReceived = dataReceived  # type: ignore[method-assign]


def socketOf(transport: object) -> socket.socket | None:
    """
    Internals: a wrapping transport's C{transport} attribute (the wrapped
    one), as L{TLSMemoryBIOProtocol} and L{twisted.protocols.policies}'
    wrappers keep it.

    @return: the socket under C{transport}, looking through wrapping
        transports such as TLS (whose own handle is the TLS connection), or
        L{None} for a transport without one.
    """
    while transport is not None:
        getHandle = getattr(transport, "getHandle", None)
        if getHandle is not None:
            handle = getHandle()
            if isinstance(handle, socket.socket):
                return handle
        transport = getattr(transport, "transport", None)
    return None


def bytesWaiting(transport: object) -> bool:
    """
    @return: whether bytes sit in the kernel's receive buffer of the socket
        under C{transport}, not yet read by the reactor: a request may be
        there, and closing now would reset it unanswered.
    """
    sock = socketOf(transport)
    if sock is None:
        return False
    try:
        return bool(sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
    except OSError:
        return False


def closeBeneathTLS(transport: ITransport | None) -> None:
    """
    After C{loseConnection} on a TLS transport, close the TCP connection
    under it without waiting for the peer's close_notify.

    Twisted's TLS waits for the peer's close_notify before closing the TCP
    connection, and an idle pooled client may never send it: the drain would
    wait for the cap.  The close_notify and the last response are already
    written below; this closes TCP after them, as Go and nginx do.

    Internals: L{TLSMemoryBIOProtocol}'s C{transport}, the TCP transport.
    """
    if isinstance(transport, TLSMemoryBIOProtocol) and transport.transport:
        transport.transport.loseConnection()


def tlsHandshaking(transport: object) -> bool:
    """
    The protocol under TLS is connected as soon as TCP is, before the
    client's first byte: a slow client (or one on a long round trip) may
    not have sent its ClientHello yet.  Such a connection is not idle, and
    closing it would not even be orderly: TLS's C{loseConnection} during a
    handshake aborts, and the client's handshake fails with a reset.
    L{IHandshakeListener.handshakeCompleted
    <twisted.internet.interfaces.IHandshakeListener.handshakeCompleted>}
    tells the protocol when it completes; this tells whether it has, for a
    protocol connected before.

    Internals: L{TLSMemoryBIOProtocol}'s C{_handshakeDone}.

    @return: whether C{transport} is TLS whose handshake has not completed.
    """
    return isinstance(transport, TLSMemoryBIOProtocol) and not getattr(
        transport, "_handshakeDone", True
    )


def hasPipelinedRequest(channel: HTTPChannel) -> bool:
    """
    Internals: L{HTTPChannel}'s C{_dataBuffer} (bytes read while a request
    is handled) and L{twisted.protocols.basic.LineReceiver}'s C{_buffer}
    (bytes being parsed, when a request is answered while its
    predecessor's pipelined bytes are parsed).

    @return: whether C{channel} has read bytes of a request behind the one
        being answered.
    """
    return bool(channel._buffer.strip()) or any(
        chunk.strip() for chunk in channel._dataBuffer
    )


def headComplete(channel: HTTPChannel) -> bool:
    """
    Internals: L{twisted.protocols.basic.LineReceiver}'s C{line_mode},
    which L{HTTPChannel} leaves (C{setRawMode}) once a request head's blank
    line is read, for its body or to buffer what follows it, and enters
    again (C{setLineMode}) for the next head.

    @return: whether C{channel} has read the whole head of the request it
        is receiving.
    """
    return not channel.line_mode


def pauseParsing(channel: HTTPChannel) -> None:
    """
    Stop C{channel} from parsing the bytes it has already read.

    Internals: L{twisted.protocols.basic.LineReceiver}'s C{paused}, which
    its C{dataReceived} loop checks between lines
    (L{HTTPChannel.pauseProducing} pauses the transport, not the parsing of
    what was read).
    """
    channel.paused = True


def resumeParsing(channel: HTTPChannel) -> None:
    """
    Parse what C{channel} read while L{pauseParsing} held it.

    Internals: as L{pauseParsing}; C{dataReceived(b"")} runs the parsing
    loop over L{twisted.protocols.basic.LineReceiver}'s buffer.
    """
    channel.paused = False
    channel.dataReceived(b"")


def takeNotifications(request: Request) -> list[Deferred[None]]:
    """
    Take the Deferreds that L{Request.notifyFinish} handed out for
    C{request}, so that the caller can errback them before it answers the
    request itself (and L{Request.finish} does not fire them).

    Internals: L{Request}'s C{notifications} list.
    """
    notifications: list[Deferred[None]]
    notifications, request.notifications = request.notifications, []
    return notifications


def webSocketParts(wire: IProtocol) -> tuple[Connection, WebSocketProtocol]:
    """
    Take apart the wire protocol that L{twisted.web.websocket}'s
    C{WebSocketResource} hands to C{channel._protocolUpgradeForWebsockets}
    once its handshake is done (the 101 is written right after).

    Twisted's own wire protocol closes TCP at once after its Close frame,
    raises when the application sends after it, and reassembles messages of
    any size; so L{gracesvc._protocols.websocket.DrainingWebSocket} carries the
    connection instead, with the same wsproto connection and application.

    Internals: C{HTTPChannel._protocolUpgradeForWebsockets} (documented as
    not public yet), which C{WebSocketResource.render_GET} calls and
    L{gracesvc._protocols.http1.DrainingChannel} overrides; the wire protocol's
    C{_wsconn} (the wsproto connection, handshake done) and C{_wsp} (the
    application's L{WebSocketProtocol}, which has not been called yet).

    @return: the wsproto connection and the application's protocol.
    """
    from wsproto.connection import Connection

    connection = wire._wsconn  # type: ignore[attr-defined]
    application = wire._wsp  # type: ignore[attr-defined]
    if not isinstance(connection, Connection):
        raise TypeError(f"not a server-side wsproto connection: {connection!r}")
    return connection, application


#: What L{listeningSpec} finds in a server endpoint: C{("tcp", family,
#: interface, port, backlog)}, C{("unix", path, backlog, mode)} or
#: C{("fd", fileno, family)} (an inherited socket, as C{systemd:} gives).
ListeningSpec = (
    tuple[str, int, str, int, int] | tuple[str, str, int, int] | tuple[str, int, int]
)


def listeningSpec(endpoint: object) -> ListeningSpec | None:
    """
    Read what a server endpoint would listen on, so that the workers'
    master can create the socket itself (with the L{socket} module, which
    never C{shutdown()}s it) and hand it to every worker.

    An C{ssl:} endpoint gives the spec of its TCP socket: the master
    creates that, and each worker serves TLS on it (see
    L{tlsContextFactory}).

    Internals: L{twisted.internet.endpoints}' C{_TCPServerEndpoint}'s and
    C{SSL4ServerEndpoint}'s C{_port}, C{_interface} and C{_backlog};
    C{UNIXServerEndpoint}'s C{_address}, C{_backlog} and C{_mode}.
    C{AdoptedStreamServerEndpoint}'s C{fileno} and C{addressFamily} are
    public attributes.

    @return: the spec, or L{None} for an endpoint kind it does not know.
    """
    from twisted.internet.endpoints import (
        AdoptedStreamServerEndpoint,
        SSL4ServerEndpoint,
        TCP4ServerEndpoint,
        TCP6ServerEndpoint,
        UNIXServerEndpoint,
    )

    if isinstance(endpoint, SSL4ServerEndpoint):
        return (
            "tcp",
            socket.AF_INET,
            str(endpoint._interface),
            int(endpoint._port),
            int(endpoint._backlog),
        )
    if isinstance(endpoint, TCP4ServerEndpoint | TCP6ServerEndpoint):
        family = (
            socket.AF_INET6
            if isinstance(endpoint, TCP6ServerEndpoint)
            else socket.AF_INET
        )
        return (
            "tcp",
            family,
            str(endpoint._interface),
            int(endpoint._port),
            int(endpoint._backlog),
        )
    if isinstance(endpoint, UNIXServerEndpoint):
        return (
            "unix",
            str(endpoint._address),
            int(endpoint._backlog),
            int(endpoint._mode),
        )
    if isinstance(endpoint, AdoptedStreamServerEndpoint):
        return ("fd", int(endpoint.fileno), int(endpoint.addressFamily))
    return None


def tlsContextFactory(endpoint: object) -> IOpenSSLContextFactory | None:
    """
    A worker of C{--workers} adopts the TCP socket its master created for
    an C{ssl:} listener, and serves TLS on it with the context factory its
    own parse of the description made: so each generation reads the
    certificate files anew.  Twisted's C{ssl:} parser is private
    (C{_parseSSL}); its endpoint keeps what it made.

    Internals: L{twisted.internet.endpoints.SSL4ServerEndpoint}'s
    C{_sslContextFactory}.

    @return: the TLS context factory of an C{ssl:} server endpoint (its
        certificate and key already read from their files, when the
        description was parsed), or L{None} for an endpoint without TLS.
    """
    from twisted.internet.endpoints import SSL4ServerEndpoint

    if not isinstance(endpoint, SSL4ServerEndpoint):
        return None
    factory: IOpenSSLContextFactory = endpoint._sslContextFactory
    return factory


def limitAccepts(port: IListeningPort, most: int) -> None:
    """
    Accept at most C{most} connections each time C{port}'s socket is
    readable.

    Several worker processes share one listening socket, and epoll wakes
    them all; C{tcp.Port.doRead} then accepts up to C{numberAccepts} (100,
    growing by 20 while saturated), so whichever worker wakes first takes
    the whole queue, and keep-alive clients all land on one worker.
    Accepting a few per wake-up leaves the rest to the others.
    L{acceptPending} still empties the queue at the drain: it raises
    C{numberAccepts} to L{ACCEPT_ALL}, which this leaves alone.

    Internals: L{twisted.internet.tcp.Port}'s C{doRead} and
    C{numberAccepts} (see L{acceptPending}).
    """
    doRead = getattr(port, "doRead", None)
    if doRead is None or not isinstance(getattr(port, "numberAccepts", None), int):
        return

    def cappedDoRead() -> object:
        if port.numberAccepts < ACCEPT_ALL:  # type: ignore[attr-defined]
            port.numberAccepts = min(port.numberAccepts, most)  # type: ignore[attr-defined]
        return doRead()

    port.doRead = cappedDoRead  # type: ignore[attr-defined]


def exitSignal(reactor: object) -> int | None:
    """
    Internals: L{twisted.internet.base.ReactorBase}'s C{_exitSignal},
    pinned with C{StopSignals}' use of the handlers.

    @return: the signal that stopped C{reactor} through its own C{sigInt}
        or C{sigTerm} handler (twistd re-raises it at exit), if one did.
    """
    signum = getattr(reactor, "_exitSignal", None)
    return signum if isinstance(signum, int) else None


def asyncioLoopOf(reactor: object) -> asyncio.AbstractEventLoop:
    """
    The asyncio event loop Twisted's asyncio reactor runs on: where an ASGI
    application's tasks are created (see L{gracesvc._asgi.app.ASGIApp}),
    so that they and the reactor share one loop and one thread.

    Internals: L{twisted.internet.asyncioreactor.AsyncioSelectorReactor}'s
    C{_asyncioEventloop}.

    @raise TypeError: C{reactor} is not the asyncio reactor.
    """
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise TypeError(f"not Twisted's asyncio reactor: {reactor!r}")
    loop: asyncio.AbstractEventLoop = reactor._asyncioEventloop
    return loop


def endpointKeywords(description: str) -> dict[str, str]:
    """
    Internals: L{twisted.internet.endpoints}' C{_parse}, the parser every
    endpoint description goes through (C{:} separates, C{\\} escapes).

    @return: the C{key=value} parameters of the endpoint C{description}
        (C{backlog}, C{interface}, ...).
    """
    from twisted.internet.endpoints import _parse

    keywords: dict[str, str] = _parse(description)[1]
    return keywords


#: What L{twisted.internet.tcp.Port}'s C{doRead} logs when C{accept()}
#: fails for want of a file descriptor and it has one in reserve: that it
#: releases it, then a line for each client it accepts with it and closes
#: at once, then that it reserves it again.
EMFILE_RELEASING = "EMFILE encountered; releasing reserved file descriptor."
EMFILE_CLOSED = "EMFILE recovery: Closed socket from {address}"
EMFILE_RERESERVING = "Re-reserving EMFILE recovery file descriptor."
#: What it logs when C{accept()} fails otherwise (EMFILE with no reserve,
#: ENFILE, ENOBUFS, ENOMEM), C{acceptError} naming the errno: the client
#: stays queued, and the socket stays readable.
ACCEPT_FAILED = "Could not accept new connection ({acceptError})"
#: What the reserve logs, with a traceback, when it cannot be had again.
RESERVE_FAILED = (
    "Could not reserve EMFILE recovery file descriptor.",
    "Could not re-reserve EMFILE recovery file descriptor.",
)


def observeAcceptErrors(port: IListeningPort, observer: ILogObserver) -> bool:
    """
    Send what C{port} logs about its accept errors (L{EMFILE_RELEASING},
    L{EMFILE_CLOSED}, L{EMFILE_RERESERVING}, L{ACCEPT_FAILED}) to
    C{observer} instead of the log: Twisted logs three lines for each
    connection it turns away for want of a descriptor.

    Internals: L{twisted.internet.tcp.Port}'s class attribute C{_logger},
    whose namespace and observer C{doRead} hands to C{_BuffersLogs}, which
    replays the events it buffered during the accepts to that observer.

    @return: whether C{port} is such a port (Twisted's TCP and Unix ports,
        adopted ones and C{ssl:} ones included).
    """
    logger = getattr(port, "_logger", None)
    if not isinstance(logger, Logger):
        return False
    port._logger = Logger(  # type: ignore[attr-defined]
        namespace=logger.namespace, observer=observer
    )
    return True


def observeReserveErrors(observer: ILogObserver) -> None:
    """
    Send what Twisted's reserved descriptor logs (L{RESERVE_FAILED}) to
    C{observer}, for the whole process: it is one reserve for every port.

    Internals: L{twisted.internet.tcp}'s C{_FileDescriptorReservation} and
    its class attribute C{_log}.
    """
    from twisted.internet.tcp import _FileDescriptorReservation

    _FileDescriptorReservation._log = Logger(
        namespace=_FileDescriptorReservation._log.namespace, observer=observer
    )


def closeAtOnce(transport: object) -> None:
    """
    Abort C{transport} and free its descriptor now.

    A port accepts a storm's connections a hundred or more at a time
    (C{numberAccepts}); an aborted connection keeps its descriptor until
    the reactor's next turn, so a batch of connections refused at once
    would still run the process out of descriptors.

    Internals: L{twisted.internet.tcp.Connection}'s C{abortConnection},
    which stops reading and writing at once and closes the socket (in
    C{_closeSocket}, which tolerates one closed already) in a C{callLater(0)};
    and L{socketOf}.
    """
    abort = getattr(transport, "abortConnection", None)
    if abort is None:
        return
    abort()
    sock = socketOf(transport)
    if sock is not None:
        sock.close()
