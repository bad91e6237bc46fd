# -*- test-case-name: tests.unit.protocols.test_answers -*-
"""
What every protocol of a draining site answers alike: HTTP/1.1, HTTP/2's
streams, the event streams and the WSGI adapter.

  - at the cut, a request whose response has not started gets a 503 with
    C{Retry-After} (L{answerServiceUnavailable}), and its handler is told
    through L{ResponseCutAtCap};
  - a request for an event stream gets, instead of a 503 that would make
    C{EventSource} give up for good, a stream of only a C{retry:} field
    (L{answerEventStreamRetry});
  - during the drain, a request to upgrade to a WebSocket
    (L{isWebSocketUpgrade}) gets the 503: a new long-lived connection
    belongs on another instance;
  - a request head that does not arrive in time gets a 408
    (L{REQUEST_TIMEOUT}), and a connection over the connection limit a 503
    (L{TOO_MANY_CONNECTIONS}), each written whole, with no request parsed.

What each protocol tells the site's metrics of its answers is
L{ResponseMetrics}, so that no protocol depends on the metrics package.
"""

from __future__ import annotations

from random import Random
from typing import Literal, Protocol

from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from gracesvc._pins.twisted import takeNotifications

SERVICE_UNAVAILABLE_BODY = b"Service Unavailable: the server is shutting down.\n"

#: The answer to a request head that did not arrive in time (see
#: L{gracesvc._protocols.deadlines}), written whole: no request was parsed.
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
)

_TOO_MANY_CONNECTIONS_BODY = b"Service Unavailable: too many connections.\n"

#: The answer to an HTTP/1.1 connection over the connection limit (see
#: L{gracesvc._protocols.limits}), written whole, before any request is
#: parsed: try again in a second, on this instance or another.
TOO_MANY_CONNECTIONS = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\n"
    b"Retry-After: 1\r\n"
    b"Connection: close\r\n"
    b"\r\n" % (len(_TOO_MANY_CONNECTIONS_BODY),)
) + _TOO_MANY_CONNECTIONS_BODY

#: What a long-lived response is, for the connection's state and the
#: metrics: an event stream or a long poll.
LongLivedKind = Literal["stream", "poll"]

_random = Random()


class ResponseMetrics(Protocol):
    """
    What a draining site's protocols tell its metrics
    (L{gracesvc._metrics.registry.Metrics}): each response completed.
    """

    def requestDone(self, request: Request, seconds: float) -> None:
        """
        C{request} was answered, C{seconds} after it was received whole.
        """


class ResponseCutAtCap(CancelledError):
    """
    The drain reached its cap before the handler answered; the client got a
    503 instead.  This is what L{Request.notifyFinish} errbacks with, which
    makes Klein cancel the handler.
    """


def acceptsEventStream(request: Request) -> bool:
    """
    @return: whether C{request} asks for a server-sent event stream, as a
        browser's C{EventSource} does (C{Accept: text/event-stream}).
    """
    accept = request.requestHeaders.getRawHeaders(b"accept")
    return accept is not None and any(b"text/event-stream" in a for a in accept)


def answerEventStreamRetry(request: IRequest | Request, retry: int) -> None:
    """
    Answer C{request} with an event stream made only of a C{retry:} field,
    and end it: the client reconnects in C{retry} milliseconds, to another
    instance by then.  A 503 instead would make C{EventSource} give up for
    good.

    @param retry: the reconnection time, in milliseconds.
    """
    body = b"retry: %d\n\n" % (retry,)
    request.setResponseCode(200)
    # Headers the application set stay: without its CORS headers, a
    # cross-origin EventSource would give up for good too.
    headers = request.responseHeaders
    headers.setRawHeaders(b"Content-Type", [b"text/event-stream"])
    headers.setRawHeaders(b"Cache-Control", [b"no-cache"])
    headers.setRawHeaders(b"Content-Length", [b"%d" % (len(body),)])
    headers.removeHeader(b"Content-Encoding")
    request.write(body)
    request.finish()


def answerServiceUnavailable(request: Request, retryAfter: int) -> bool:
    """
    Cancel the handler of C{request} and answer it with a 503; or, if it
    asks for an event stream, with a stream of only a C{retry:} field (see
    L{answerEventStreamRetry}) of about C{retryAfter}.

    The handler is told first, through the Deferreds of
    L{Request.notifyFinish}: that is how Klein (and well-behaved resources)
    learn a request will not be answered by them, and Klein then cancels the
    handler's Deferred instead of writing a 500.

    @param retryAfter: seconds for the C{Retry-After} header.
    @return: whether the answer was written (a handler may still have
        answered when it was cancelled).
    """
    for d in takeNotifications(request):
        d.errback(Failure(ResponseCutAtCap()))
    if request.finished or request.startedWriting:
        return False
    if acceptsEventStream(request):
        answerEventStreamRetry(request, retryAfter * 1000 + _random.randrange(1000))
        return True
    request.setResponseCode(503)
    request.responseHeaders = Headers(
        {
            b"Content-Type": [b"text/plain; charset=utf-8"],
            b"Content-Length": [b"%d" % (len(SERVICE_UNAVAILABLE_BODY),)],
            b"Retry-After": [b"%d" % (retryAfter,)],
            b"Connection": [b"close"],
        }
    )
    request.write(SERVICE_UNAVAILABLE_BODY)
    request.finish()
    return True


def isWebSocketUpgrade(request: IRequest) -> bool:
    """
    @return: whether C{request} asks to upgrade to a WebSocket.
    """
    upgrade = request.getHeader(b"upgrade")
    return upgrade is not None and b"websocket" in upgrade.lower()
