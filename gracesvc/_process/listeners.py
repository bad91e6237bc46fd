# -*- test-case-name: tests.unit.process.test_listeners -*-
"""
The listening ports a service hands to its drain.
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IAddress, IListeningPort
from zope.interface import implementer

from gracesvc._pins.twisted import acceptPending


@implementer(IListeningPort)
class DrainedPort:
    """
    A listening port as the drain closes it: what waits in its kernel
    accept queue is accepted before the socket closes.

    Closing a listening socket resets the connections still queued in it,
    whose clients may have sent a request already; accepted first, they
    are connections of the drain like any other (see
    L{gracesvc._pins.twisted.acceptPending}).  The drain itself knows
    nothing of sockets: it only calls L{stopListening}.
    """

    def __init__(self, port: IListeningPort) -> None:
        """
        @param port: the port to close, one of Twisted's (a port without an
            accept queue of Twisted's is only closed).
        """
        self.port = port

    def startListening(self) -> None:
        self.port.startListening()

    def stopListening(self) -> Deferred[None] | None:
        """
        Accept what is queued, then close the port.

        @return: what the port's own C{stopListening} returned.
        """
        acceptPending(self.port)
        result: Deferred[None] | None = self.port.stopListening()
        return result

    def getHost(self) -> IAddress:
        return self.port.getHost()
