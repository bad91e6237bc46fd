"""
In-memory pieces for serving a user's application: a L{Wire} whose site
serves any root resource, and a thread pool whose "threads" run when the
test says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.python.failure import Failure
from twisted.web.resource import IResource

from gracesvc._http import DrainingSite
from gracesvc.testing import Client, Response, Wire

_HEAD = re.compile(rb"HTTP/1\.1 (\d{3}) [^\r]*\r\n((?:[^\r]+\r\n)*)\r\n")


def responses(data: bytes) -> list[Response]:
    """
    Parse complete HTTP/1.1 responses, with a C{Content-Length} or chunked
    (as Twisted sends a body whose length it does not know), in order.  A
    trailing partial response is left out.
    """
    parsed: list[Response] = []
    while data:
        match = _HEAD.match(data)
        if match is None:
            break
        headers = {}
        for line in match.group(2).split(b"\r\n"):
            if line:
                name, value = line.split(b":", 1)
                headers[name.strip().lower()] = value.strip()
        rest = data[match.end() :]
        if headers.get(b"transfer-encoding") == b"chunked":
            body = b""
            while True:
                size, _, rest = rest.partition(b"\r\n")
                if not _ or not size:
                    return parsed
                length = int(size, 16)
                if len(rest) < length + 2:
                    return parsed
                body, rest = body + rest[:length], rest[length + 2 :]
                if length == 0:
                    break
        else:
            length = int(headers.get(b"content-length", b"0"))
            if len(rest) < length:
                break
            body, rest = rest[:length], rest[length:]
        parsed.append(Response(int(match.group(1)), headers, body))
        data = rest
    return parsed


class AppWire(Wire):
    """
    A L{Wire} whose L{DrainingSite} serves the resource C{makeRoot(wire)}
    makes, instead of the built-in app.
    """

    def __init__(self, makeRoot: Callable[[AppWire], IResource], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.site = DrainingSite(
            makeRoot(self), self.drain, self.metrics, reactor=self.clock
        )

    def connect(self) -> Client:
        """
        A client whose connection has TCP addresses at both ends, as WSGI
        needs (C{REMOTE_ADDR}, C{SERVER_PORT}).
        """
        client = super().connect()
        client.serverTransport.hostAddress = IPv4Address("TCP", "127.0.0.1", 8080)
        client.serverTransport.peerAddress = IPv4Address("TCP", "127.0.0.1", 40000)
        return client


class ManualThreadPool:
    """
    The part of L{ThreadPool} a L{WSGIResource} uses: work is queued, and
    runs in the test's own thread when L{runNext} is called.  Work never run
    is a thread that never got to it, or never returned.
    """

    def __init__(self) -> None:
        self.queue: list[Callable[[], object]] = []

    def callInThread(self, f: Callable[..., object], *a: object, **kw: object) -> None:
        self.queue.append(partial(f, *a, **kw))

    def callInThreadWithCallback(
        self,
        onResult: Callable[[bool, object], object] | None,
        f: Callable[..., object],
        *a: object,
        **kw: object,
    ) -> None:
        """
        As L{ThreadPool.callInThreadWithCallback}: what C{deferToThreadPool}
        uses.
        """

        def work() -> None:
            try:
                result, ok = f(*a, **kw), True
            except BaseException:
                result, ok = Failure(), False
            if onResult is not None:
                onResult(ok, result)

        self.queue.append(work)

    def runNext(self) -> None:
        self.queue.pop(0)()


class ThreadsInline:
    """
    The part of L{IReactorThreads} a WSGI response uses: what a thread hands
    to the reactor runs at once, in the same stack (so the thread's
    C{blockingCallFromThread} returns).
    """

    def callFromThread(
        self, f: Callable[..., object], *a: object, **kw: object
    ) -> None:
        f(*a, **kw)
