"""
Plain ASGI applications, with no framework: what C{bench.asgi} serves under
every server, and what the Autobahn suite runs against.

  - L{app}: a lifespan, C{/slow?seconds=} (a slow response), C{/upload}
    (reads the request body and answers, one line per chunk received,
    when it came on the monotonic clock and its size), C{/events} (an
    event stream that stops on C{http.disconnect}, as Starlette's and
    sse-starlette's do), C{/ws} (a WebSocket echo that reports the
    C{websocket.disconnect} it is given), anything else a small body;
  - L{failingStartup}: a lifespan whose startup fails;
  - L{noLifespan}: an application that raises on the lifespan scope, as
    Django's does.

Each reports on its standard output, as C{EVENT ...} lines.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def report(event: str) -> None:
    print(f"EVENT {event}", flush=True)


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await lifespan(receive, send)
    elif scope["type"] == "http":
        await http(scope, receive, send)
    elif scope["type"] == "websocket":
        await echo(receive, send)


async def lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            report("lifespan startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            report("lifespan shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def http(scope: Scope, receive: Receive, send: Send) -> None:
    path = scope["path"]
    query = parse_qs(scope["query_string"].decode())
    if path == "/events":
        await events(receive, send)
        return
    if path == "/slow":
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    body = b"hello\n"
    if path == "/upload":
        body = await upload(receive)
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"%d" % (len(body),)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def upload(receive: Receive) -> bytes:
    """
    @return: for each chunk of the request body, when it was received (on
        the monotonic clock, which every process shares) and its size, one
        line each.
    """
    lines = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            report("upload disconnect")
            return b""
        chunk = message.get("body", b"")
        lines.append(b"%.6f %d" % (time.monotonic(), len(chunk)))
        report(f"upload chunk {len(chunk)}")
        if not message.get("more_body", False):
            return b"\n".join(lines) + b"\n"


async def events(receive: Receive, send: Send) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )

    async def stream() -> None:
        n = 0
        while True:
            await send(
                {
                    "type": "http.response.body",
                    "body": b"data: %d\n\n" % (n,),
                    "more_body": True,
                }
            )
            n += 1
            await asyncio.sleep(0.1)

    streaming = asyncio.ensure_future(stream())
    while (await receive())["type"] != "http.disconnect":
        pass
    streaming.cancel()
    report("events disconnect")


async def echo(receive: Receive, send: Send) -> None:
    await receive()
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            report(f"ws disconnect {message['code']}")
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message.get("bytes")})


async def failingStartup(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await receive()
        await send(
            {"type": "lifespan.startup.failed", "message": "no database\nat all"}
        )


async def noLifespan(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        raise ValueError(f"unsupported scope {scope['type']!r}")
    await app(scope, receive, send)
