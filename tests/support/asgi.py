"""
What the tests of the ASGI path share: an ASGI application's loop turned
by hand, and an L{ASGIConnection} on an in-memory transport under a drain on
a L{Clock}.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.http1 import ASGIConnection, ASGIHTTPFactory
from gracesvc._core.drain import Drain
from gracesvc._core.policy import DrainPolicy
from gracesvc.testing import Response, parseResponses


class MemoryTransport(StringTransport):
    """
    A L{StringTransport} that records an abort apart from a close.
    """

    aborted = False

    def __init__(self) -> None:
        super().__init__(
            hostAddress=IPv4Address("TCP", "10.0.0.1", 8080),
            peerAddress=IPv4Address("TCP", "10.0.0.2", 54321),
        )

    def abortConnection(self) -> None:
        self.aborted = True
        self.loseConnection()


class Counted:
    """
    A L{gracesvc._asgi.http1.ResponseCounter} that records each response.
    """

    def __init__(self) -> None:
        self.responses: list[tuple[str, int, float]] = []

    def responseDone(self, route: str, code: int, seconds: float) -> None:
        self.responses.append((route, code, seconds))


class Server:
    """
    An ASGI application served by L{ASGIHTTPFactory} in memory: its loop is
    turned by L{turn}, its drain's clock advanced by hand.
    """

    def __init__(
        self,
        application: Callable[..., Any],
        shutdownTimeout: float = 5.0,
        **factoryArguments: Any,
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self.clock = Clock()
        self.clock.advance(1000)
        self.drain = Drain(
            self.clock, policy=DrainPolicy(shutdownTimeout=shutdownTimeout)
        )
        self.app = ASGIApp(application, self.loop)
        self.counted = Counted()
        factoryArguments.setdefault("metrics", self.counted)
        factoryArguments.setdefault("accessLog", False)
        self.factory = ASGIHTTPFactory(self.app, self.drain, **factoryArguments)

    def close(self) -> None:
        for task in asyncio.all_tasks(self.loop):
            task.cancel()
        self.turn()
        self.loop.close()

    def connect(self) -> tuple[ASGIConnection, MemoryTransport]:
        connection = self.factory.buildProtocol(None)
        assert isinstance(connection, ASGIConnection)
        transport = MemoryTransport()
        connection.makeConnection(transport)
        return connection, transport

    def turn(self, turns: int = 10) -> None:
        """
        Run the loop's ready callbacks, and those they schedule, a few
        turns.
        """
        for _ in range(turns):
            self.loop.run_until_complete(asyncio.sleep(0))

    def request(
        self, data: bytes, turns: int = 10
    ) -> tuple[ASGIConnection, MemoryTransport]:
        """
        Connect, send C{data}, and turn the loop.
        """
        connection, transport = self.connect()
        connection.dataReceived(data)
        self.turn(turns)
        return connection, transport


def responses(transport: StringTransport) -> list[Response]:
    return parseResponses(transport.value())


def lose(connection: ASGIConnection, transport: MemoryTransport) -> None:
    """
    What the reactor does once a connection closed.
    """
    connection.connectionLost(Failure(ConnectionError("closed")))
