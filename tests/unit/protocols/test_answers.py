"""
What every protocol of a draining site answers alike
(L{gracesvc._protocols.answers}), on a request of Twisted's own.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel

from gracesvc._protocols.answers import (
    SERVICE_UNAVAILABLE_BODY,
    ResponseCutAtCap,
    acceptsEventStream,
    answerEventStreamRetry,
    answerServiceUnavailable,
    isWebSocketUpgrade,
)


def request(*headers: tuple[bytes, bytes]) -> tuple[Request, DummyChannel]:
    """
    @return: a C{GET /} request with C{headers}, not answered yet, and the
        channel whose transport holds what is written.
    """
    channel = DummyChannel()
    r = Request(channel, False)
    r.method = b"GET"
    r.uri = r.path = b"/"
    r.clientproto = b"HTTP/1.1"
    for name, value in headers:
        r.requestHeaders.addRawHeader(name, value)
    return r, channel


def written(channel: DummyChannel) -> bytes:
    value: bytes = channel.transport.written.getvalue()
    return value


class ServiceUnavailableTests(SynchronousTestCase):
    def test_503WithRetryAfterAndClose(self) -> None:
        """
        A request not answered yet gets a 503 whose headers say when to come
        back and that the connection closes, and whose body says why.
        """
        r, channel = request()
        self.assertTrue(answerServiceUnavailable(r, 7))
        head, body = written(channel).split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        self.assertEqual(lines[0], b"HTTP/1.1 503 Service Unavailable")
        self.assertIn(b"Retry-After: 7", lines)
        self.assertIn(b"Connection: close", lines)
        self.assertIn(b"Content-Length: %d" % (len(SERVICE_UNAVAILABLE_BODY),), lines)
        self.assertEqual(body, SERVICE_UNAVAILABLE_BODY)

    def test_handlerToldFirst(self) -> None:
        """
        The Deferreds of L{Request.notifyFinish} fail with
        L{ResponseCutAtCap}: that is how Klein learns to cancel the handler
        instead of writing a 500.
        """
        r, _ = request()
        finished = r.notifyFinish()
        answerServiceUnavailable(r, 1)
        self.failureResultOf(finished, ResponseCutAtCap)

    def test_responseUnderWayIsLeftAlone(self) -> None:
        """
        A request whose response has started is not answered again.
        """
        r, channel = request()
        r.write(b"partial")
        before = written(channel)
        self.assertFalse(answerServiceUnavailable(r, 1))
        self.assertEqual(written(channel), before)

    def test_eventSourceGetsRetryInstead(self) -> None:
        """
        A request for an event stream gets a 200 stream of only a C{retry:}
        of C{retryAfter} seconds plus under one of jitter, in milliseconds:
        a 503 would make C{EventSource} give up for good.
        """
        r, channel = request((b"Accept", b"text/event-stream"))
        self.assertTrue(answerServiceUnavailable(r, 3))
        head, body = written(channel).split(b"\r\n\r\n", 1)
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "))
        self.assertTrue(body.startswith(b"retry: ") and body.endswith(b"\n\n"))
        self.assertIn(int(body[len(b"retry: ") :]), range(3000, 4000))


class EventStreamRetryTests(SynchronousTestCase):
    def test_applicationHeadersStay(self) -> None:
        """
        Headers the application set stay (its CORS headers among them);
        C{Content-Encoding} goes, the body being plain.
        """
        r, channel = request()
        r.setHeader(b"Access-Control-Allow-Origin", b"*")
        r.setHeader(b"Content-Encoding", b"gzip")
        answerEventStreamRetry(r, 1500)
        head, body = written(channel).split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        self.assertIn(b"Access-Control-Allow-Origin: *", lines)
        self.assertIn(b"Content-Type: text/event-stream", lines)
        self.assertIn(b"Cache-Control: no-cache", lines)
        self.assertNotIn(b"Content-Encoding: gzip", lines)
        self.assertEqual(body, b"retry: 1500\n\n")
        self.assertTrue(r.finished)


class RequestKindTests(SynchronousTestCase):
    def test_acceptsEventStream(self) -> None:
        self.assertTrue(
            acceptsEventStream(request((b"Accept", b"text/event-stream"))[0])
        )
        self.assertTrue(
            acceptsEventStream(
                request((b"Accept", b"text/html"), (b"Accept", b"text/event-stream"))[0]
            )
        )
        self.assertFalse(acceptsEventStream(request((b"Accept", b"text/html"))[0]))
        self.assertFalse(acceptsEventStream(request()[0]))

    def test_isWebSocketUpgrade(self) -> None:
        self.assertTrue(isWebSocketUpgrade(request((b"Upgrade", b"websocket"))[0]))
        self.assertTrue(isWebSocketUpgrade(request((b"Upgrade", b"WebSocket"))[0]))
        self.assertFalse(isWebSocketUpgrade(request((b"Upgrade", b"h2c"))[0]))
        self.assertFalse(isWebSocketUpgrade(request()[0]))
