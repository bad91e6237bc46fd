# -*- test-case-name: tests.unit.asgi.test_streams -*-
"""
Ending an application's event stream (C{text/event-stream}) when the server
goes away: the server itself says goodbye, on an event boundary, so that the
client's C{EventSource} reconnects (to another instance by then) and no
half-written event reaches it.
"""

from __future__ import annotations

from collections.abc import Iterable
from random import Random

_random = Random()


def isEventStream(headers: Iterable[tuple[bytes, bytes]]) -> bool:
    """
    @param headers: a response's headers, as an ASGI C{http.response.start}
        carries them.
    @return: whether the response is a server-sent event stream.
    """
    for name, value in headers:
        if name.lower() == b"content-type":
            return value.split(b";", 1)[0].strip().lower() == b"text/event-stream"
    return False


#: How soon an event stream the server ends at going away asks its client
#: to reconnect, in seconds (plus up to a second of jitter).
STREAM_RETRY = 1.0


def goodbye(retryAfter: float = STREAM_RETRY) -> bytes:
    """
    @param retryAfter: about when the client should reconnect, in seconds.
    @return: the server's last bytes of an event stream: a comment and a
        C{retry:} of C{retryAfter} plus up to a second of jitter, in
        milliseconds, so that clients do not all come back at once.  A block
        with no C{data} dispatches no event (WHATWG HTML, "interpreting an
        event stream"): a client sees no bogus message.
    """
    retry = int(retryAfter * 1000) + _random.randrange(1000)
    return b": server shutting down\nretry: %d\n\n" % (retry,)


class EventBoundary:
    """
    Whether the body written so far ends between two events (on a blank
    line: two line ends in a row, each LF, CR LF or CR), so that a
    goodbye written now starts an event of its own.  It keeps only the
    body's last four bytes.
    """

    __slots__ = ("_tail",)

    def __init__(self) -> None:
        # An empty body is on a boundary.
        self._tail = b"\n\n"

    def wrote(self, data: bytes) -> None:
        """
        The application's body grew by C{data}.
        """
        if data:
            self._tail = (self._tail + data)[-4:]

    @property
    def atBoundary(self) -> bool:
        tail = self._tail
        return tail.endswith((b"\n\n", b"\r\n\r\n", b"\r\r"))
