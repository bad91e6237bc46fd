"""
A Klein application with C{async def} routes, served with
C{--app tests.apps.kleinapp:app}, or with C{--app
tests.apps.kleinapp:withPool}, a factory that takes the drain and closes a
(pretend) connection pool in its cleanup phase.
"""

from __future__ import annotations

import asyncio
from typing import Any

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater
from twisted.web.iweb import IRequest

from gracesvc import EventStream


class Greeter:
    """
    Routes on the class, state on the instance.

    @ivar clock: what C{/slow} waits on; the global reactor when L{None}.
    """

    router = Klein()

    def __init__(self, clock: IReactorTime | None = None, delay: float = 1.0):
        self.clock = clock
        self.delay = delay

    def resource(self) -> Any:
        return self.router.resource()

    def _clock(self) -> IReactorTime:
        if self.clock is not None:
            return self.clock
        from twisted.internet import reactor

        return reactor

    @router.route("/hello")
    async def hello(self, request: IRequest) -> bytes:
        return b"hello from klein\n"

    @router.route("/users/<int:userID>")
    async def user(self, request: IRequest, userID: int) -> bytes:
        return b"user %d\n" % (userID,)

    @router.route("/sleep/<float:seconds>")
    async def sleep(self, request: IRequest, seconds: float) -> bytes:
        await deferLater(self._clock(), seconds, lambda: None)
        return b"slept\n"

    @router.route("/asyncio-sleep/<float:seconds>")
    async def asyncioSleep(self, request: IRequest, seconds: float) -> bytes:
        """
        Awaits an asyncio library call: needs twistd's asyncio reactor
        (C{twistd -r asyncio}).
        """
        await asyncio.sleep(seconds)
        return b"slept on asyncio\n"

    @router.route("/feed")
    def feed(self, request: IRequest) -> Deferred[None]:
        """
        An event stream of one greeting, open until the drain ends it: the
        app never sees the drain, L{EventStream} finds it.
        """
        stream = EventStream(request)
        stream.send("hello from klein", event="greeting")
        return stream.whenEnded()

    @router.route("/slow")
    async def slow(self, request: IRequest) -> bytes:
        await deferLater(self._clock(), self.delay, lambda: None)
        return b"slow from klein\n"


app = Greeter()


class Pool:
    """
    Stands in for a database connection pool: closing it logs one line.
    """

    def close(self) -> None:
        from twisted.logger import Logger

        Logger().info("kleinapp: pool closed")


def withPool(drain: Any) -> Greeter:
    """
    The app, given gracesvc's drain: its pool is closed after the last
    response, in the drain's cleanup phase.
    """
    pool = Pool()
    drain.addHook("cleanup", pool.close)
    return Greeter()


def withUnreachablePool(drain: Any) -> Greeter:
    """
    A factory whose database is down at start-up.
    """
    raise ConnectionRefusedError("database at 10.0.0.5:5432 refused the connection")
