# -*- test-case-name: tests.unit.asgi.test_http1 -*-
"""
HTTP/1.1 as bytes on the wire, for the ASGI HTTP/1.1 path
(L{gracesvc._asgi.http1}), knowing no connection: the request head's
limits, the status lines and the C{date} header made once, whole small
responses, and the access log's escaping.
"""

from __future__ import annotations

from email.utils import formatdate
from http import HTTPStatus

from twisted.web.http import datetimeToLogString

#: The largest request head (request line and headers) read, in bytes; a
#: larger one is answered 431 and the connection closed.  As Twisted's
#: C{HTTPChannel.totalHeadersSize}.
MAX_HEAD_SIZE = 16384

#: The most header lines a request may have; more is answered 431.
MAX_HEADERS = 100

#: Status codes whose responses have no body.
NO_BODY_STATUS = frozenset(range(100, 200)) | {204, 304}


def _statusLine(code: int) -> bytes:
    try:
        phrase = HTTPStatus(code).phrase.encode("ascii")
    except ValueError:
        phrase = b""
    return b"HTTP/1.1 %d %s\r\n" % (code, phrase)


#: The status line of every status code an application may send.
STATUS_LINES = {code: _statusLine(code) for code in range(100, 1000)}


class HeadTooLarge(Exception):
    """
    A request head grew past L{MAX_HEAD_SIZE} or L{MAX_HEADERS}.
    """


class Dates:
    """
    The C{date} header and the access log's timestamp, each made at most
    once a second.
    """

    __slots__ = ("_second", "_header", "_logSecond", "_logTime")

    def __init__(self) -> None:
        self._second = -1
        self._header = b""
        self._logSecond = -1
        self._logTime = ""

    def header(self, now: float) -> bytes:
        second = int(now)
        if second != self._second:
            self._second = second
            self._header = (
                b"date: " + formatdate(second, usegmt=True).encode("ascii") + b"\r\n"
            )
        return self._header

    def logTime(self, now: float) -> str:
        second = int(now)
        if second != self._logSecond:
            self._logSecond = second
            self._logTime = datetimeToLogString(second)
        return self._logTime


def escape(value: bytes) -> str:
    """
    @return: C{value} as C{twisted.web}'s access log writes it: as Python
        writes bytes, with C{"} escaped.
    """
    text = repr(value)[2:-1]
    return text.replace('"', '\\"').replace("\\'", "'")


def simpleResponse(
    status: int,
    body: bytes,
    dates: Dates,
    now: float,
    headers: bytes = b"content-type: text/plain; charset=utf-8\r\n",
    close: bool = True,
) -> bytes:
    """
    @return: a whole response of C{status} with C{body} (and C{headers},
        each line ending in CR LF), saying C{Connection: close} if C{close}.
    """
    return b"".join(
        (
            STATUS_LINES[status],
            dates.header(now),
            headers,
            b"content-length: %d\r\n" % (len(body),),
            b"connection: close\r\n\r\n" if close else b"\r\n",
            body,
        )
    )
