# -*- test-case-name: tests.unit.asgi.test_resource,tests.unit.asgi.test_h2stream -*-
"""
Where an HTTP request's body comes from, for the C{receive} of an ASGI
application served through Twisted's L{Request<twisted.web.http.Request>}
(L{gracesvc._asgi.resource.HTTPCycle}): a L{BodySource}.

  - L{SpooledBody}: a body Twisted has read whole before the application
    runs (a C{GET}'s empty one, or any over HTTP/1.1 through Twisted);
  - L{gracesvc._asgi.h2stream.StreamingBody}: an HTTP/2 request's body,
    handed out as its DATA arrives, with backpressure.
"""

from __future__ import annotations

import asyncio
from collections.abc import MutableMapping
from typing import IO, Any, Protocol

#: Unread request body above which the server stops reading it (HTTP/1.1:
#: the connection; HTTP/2: the stream's flow-control window), until the
#: application has received it, as uvicorn does.
HIGH_WATER = 65536

#: The most bytes of a spooled request body one C{http.request} carries.
BODY_CHUNK = 64 * 1024

Message = MutableMapping[str, Any]


class BodySource(Protocol):
    """
    A request's body, as its application's C{receive} takes it.
    """

    @property
    def exhausted(self) -> bool:
        """
        Whether nothing more will come from it: its last C{http.request}
        was handed out, or it was closed.
        """

    def take(self) -> Message | None:
        """
        @return: the next C{http.request} message, at once; L{None} if the
            application has to wait for one (see L{arrival}).
        """

    def arrival(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        """
        @return: a future that is done once L{take} may have something to
            give, or the body was closed.
        """

    def close(self) -> None:
        """
        Nothing more is taken from it: the response is over, or the client
        went away.  A waiter of L{arrival} is woken.
        """


class SpooledBody:
    """
    A body read whole (spooled to a temporary file by Twisted past 100 KB),
    handed out in chunks of L{BODY_CHUNK} bytes at most.  It never waits.
    """

    __slots__ = ("_content", "_left", "_started")

    def __init__(self, content: IO[bytes] | None) -> None:
        """
        @param content: the request's C{content}.
        """
        size = 0
        if content is not None:
            content.seek(0, 2)
            size = content.tell()
            content.seek(0)
        self._content = content
        self._left = size
        self._started = False

    @property
    def exhausted(self) -> bool:
        return self._started and not self._left

    def take(self) -> Message:
        self._started = True
        if not self._left:
            return {"type": "http.request", "body": b"", "more_body": False}
        content = self._content
        assert content is not None
        chunk = content.read(min(BODY_CHUNK, self._left))
        self._left = 0 if not chunk else self._left - len(chunk)
        return {"type": "http.request", "body": chunk, "more_body": bool(self._left)}

    def arrival(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future[None]:
        waiter: asyncio.Future[None] = loop.create_future()
        waiter.set_result(None)
        return waiter

    def close(self) -> None:
        # What is left is not handed out: the next take is the body's end.
        self._left = 0
