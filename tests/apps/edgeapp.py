"""
What the open-internet tests and C{bench.hostile} serve, with C{--app
tests.apps.edgeapp:Root}: large answers for clients that read slowly or
not at all.

  - C{/big/<MiB>}: a download of that many MiB, written 64 KiB at a time
    as the client takes it (a push producer, as a file is served), so that
    the server holds little of it whatever the client does;
  - C{/push/<MiB>}: a WebSocket whose application sends that many MiB, in
    64 KiB messages, as fast as the reactor lets it, minding nothing of
    the client (as an application that broadcasts does): only the
    server's write limit bounds what it holds for a client that does not
    read;
  - C{/sink}: a WebSocket that drops what it is sent.

C{twistd -n web --class tests.apps.edgeapp.Root} serves the same on a
plain Twisted site: the baseline of C{bench.hostile}.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.interfaces import IPushProducer
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.websocket import (
    WebSocketProtocol,
    WebSocketResource,
    WebSocketTransport,
)
from zope.interface import implementer

CHUNK = 64 * 1024
MiB = 1024 * 1024


def _mebibytes(request: IRequest | Request, default: int) -> int:
    postpath = getattr(request, "postpath", None) or []
    try:
        return int(postpath[0])
    except (IndexError, ValueError):
        return default


@implementer(IPushProducer)
class _Download:
    def __init__(self, request: Any, size: int) -> None:
        self.request = request
        self.left = size
        self.paused = False
        self.done = False

    def start(self) -> None:
        self.request.registerProducer(self, True)
        self.resumeProducing()

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and self.left > 0 and not self.done:
            n = min(CHUNK, self.left)
            self.left -= n
            self.request.write(b"x" * n)
        if self.left <= 0 and not self.done:
            self.done = True
            self.request.unregisterProducer()
            self.request.finish()

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.done = True


class Big(Resource):
    isLeaf = True

    def render_GET(self, request: Request) -> Any:
        size = _mebibytes(request, 64) * MiB
        request.setHeader(b"content-type", b"application/octet-stream")
        request.setHeader(b"content-length", b"%d" % (size,))
        download = _Download(request, size)
        request.notifyFinish().addErrback(lambda _: download.stopProducing())
        download.start()
        return NOT_DONE_YET


class _Pusher:
    def __init__(self, size: int) -> None:
        self.left = size
        self.transport: WebSocketTransport | None = None

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        self.transport = transport

    def negotiationFinished(self) -> None:
        from twisted.internet import reactor

        self._reactor: Any = reactor
        self._reactor.callLater(0, self._push)

    def _push(self) -> None:
        if self.transport is None:
            return
        for _ in range(16):
            if self.left <= 0:
                self.transport.loseConnection()
                return
            self.left -= CHUNK
            self.transport.sendBytesMessage(b"p" * CHUNK)
        self._reactor.callLater(0, self._push)

    def textMessageReceived(self, data: str) -> None:
        pass

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        self.transport = None


class _PushFactory:
    def __init__(self, size: int) -> None:
        self.size = size

    def buildProtocol(self, request: Request) -> WebSocketProtocol:
        return _Pusher(self.size)


class _Push(Resource):
    def getChild(self, path: bytes, request: IRequest) -> Resource:
        try:
            mebibytes = int(path)
        except ValueError:
            mebibytes = 100
        return WebSocketResource(_PushFactory(mebibytes * MiB))


class _Sink:
    """
    A WebSocket application that takes every message and drops it.
    """

    def negotiationStarted(self, transport: WebSocketTransport) -> None:
        pass

    def negotiationFinished(self) -> None:
        pass

    def textMessageReceived(self, data: str) -> None:
        pass

    def bytesMessageReceived(self, data: bytes | bytearray) -> None:
        pass

    def pongReceived(self, payload: bytes) -> None:
        pass

    def connectionLost(self, reason: Failure) -> None:
        pass


class _SinkFactory:
    def buildProtocol(self, request: Request) -> WebSocketProtocol:
        return _Sink()


class _Health(Resource):
    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        return b'{"status": "ok"}'


class Root(Resource):
    """
    The app: C{/big/<MiB>}, C{/push/<MiB>}, C{/sink} (a WebSocket that
    drops what it is sent) and, for C{twistd web --class} (which has no
    operational routes of its own), C{/healthz}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"big", Big())
        self.putChild(b"push", _Push())
        self.putChild(b"sink", WebSocketResource(_SinkFactory()))
        self.putChild(b"healthz", _Health())
