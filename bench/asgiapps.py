"""
The bare ASGI application that C{bench.asgi} serves under every server, the
same object each time (C{bench.asgiapps:app})::

    GET /hello          200 "Hello, world!" at once (the throughput figure)
    GET /ping           the same (what C{bench.workers}' load asks for)
    GET /healthz        200 "ok" (gracesvc answers it itself)
    GET /sleep/SECONDS  200 after SECONDS (2 in flight at the signal, 10
                        over the cap, 1 under h2load)
    GET /events         an event stream, one event every 100 ms, that stops
                        on C{http.disconnect} as Starlette and sse-starlette
                        do
    /ws                 a WebSocket echo that records the
                        C{websocket.disconnect} it is given

It has a lifespan, and it records what the server told it: with
C{GRACESVC_BENCH_ASGI_RECORD} set to a directory, each process appends JSON
lines to C{DIRECTORY/PID.jsonl}: C{{"event": ..., "at": ...}} with C{at} on
C{time.monotonic()}, the clock every process of the machine shares, so that
the benchmark can set what the application saw beside what its clients saw.
L{readRecords} reads them back.  The throughput route, C{/hello}, records
nothing.

The FastAPI application is in C{bench.asgifastapi}: this module imports
nothing beyond the standard library, so that every server can load it
without the C{bench} extra.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: The environment variable naming the directory records go to.
RECORD_ENV = "GRACESVC_BENCH_ASGI_RECORD"

#: Seconds between two events of C{/events}.
TICK = 0.1

_HELLO_START = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain"), (b"content-length", b"13")],
}
_HELLO_BODY = {"type": "http.response.body", "body": b"Hello, world!"}


class _Recorder:
    """
    Appends one JSON line per event to this process's file, opened on first
    use (after a fork, a worker opens its own).
    """

    def __init__(self) -> None:
        self._pid = 0
        self._fd = -1

    def __call__(self, event: str, **fields: object) -> None:
        directory = os.environ.get(RECORD_ENV)
        if not directory:
            return
        pid = os.getpid()
        if pid != self._pid:
            self._pid = pid
            self._fd = os.open(
                os.path.join(directory, f"{pid}.jsonl"),
                os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                0o644,
            )
        line = json.dumps({"event": event, "at": time.monotonic(), **fields})
        # One write per line to an O_APPEND file: lines never interleave.
        os.write(self._fd, line.encode("utf-8") + b"\n")


record = _Recorder()


def readRecords(directory: str) -> list[dict[str, Any]]:
    """
    @return: every event recorded under C{directory}, by every process, in
        the order of their C{at}.
    """
    events: list[dict[str, Any]] = []
    for name in os.listdir(directory):
        if name.endswith(".jsonl"):
            with open(os.path.join(directory, name), encoding="utf-8") as f:
                events += [json.loads(line) for line in f if line.strip()]
    return sorted(events, key=lambda e: float(e["at"]))


async def lifespan(receive: Receive, send: Send) -> None:
    """
    Record the startup and the shutdown, each when it arrives.
    """
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            record("lifespan.startup")
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            record("lifespan.shutdown")
            await send({"type": "lifespan.shutdown.complete"})
            return


async def plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain"),
                (b"content-length", b"%d" % len(body)),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def sleep(seconds: float, send: Send) -> None:
    """
    Answer after C{seconds}; record it if the server cancels it first.
    """
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        record("sleep.cancelled", seconds=seconds)
        raise
    await plain(send, 200, b"slept %g" % seconds)
    record("sleep.answered", seconds=seconds)


async def events(receive: Receive, send: Send) -> None:
    """
    An event stream: one event every L{TICK} seconds until the server says
    C{http.disconnect}, listened for beside the stream (as Starlette's
    C{StreamingResponse} and sse-starlette do), or until a send raises (as
    servers of HTTP spec 2.4 do for a client that left).  On
    C{http.disconnect} it stops without ending the body itself, as they do.
    """
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [
                (b"content-type", b"text/event-stream"),
                (b"cache-control", b"no-cache"),
            ],
        }
    )

    async def listen() -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                record("events.disconnect")
                return

    listener = asyncio.get_running_loop().create_task(listen())
    n = 0
    try:
        while not listener.done():
            chunk = b"id: %d\nevent: tick\ndata: %d\n\n" % (n, n)
            try:
                await send(
                    {"type": "http.response.body", "body": chunk, "more_body": True}
                )
            except OSError as e:
                record("events.sendFailed", error=type(e).__name__)
                return
            n += 1
            await asyncio.wait([listener], timeout=TICK)
    except asyncio.CancelledError:
        record("events.cancelled")
        raise
    finally:
        listener.cancel()


async def echo(receive: Receive, send: Send) -> None:
    """
    A WebSocket echo that records the C{websocket.disconnect} it is given
    (its code, 1005 if it has none), a send that fails, or its cancellation.
    """
    try:
        message = await receive()
        if message["type"] != "websocket.connect":
            return
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                record(
                    "ws.disconnect",
                    code=message.get("code", 1005),
                    reason=message.get("reason", ""),
                )
                return
            if message["type"] != "websocket.receive":
                continue
            reply: Message = {"type": "websocket.send"}
            if message.get("text") is not None:
                reply["text"] = message["text"]
            else:
                reply["bytes"] = message.get("bytes") or b""
            try:
                await send(reply)
            except Exception as e:
                # A send after the server's Close: keep receiving, to be
                # told how the connection ended.
                record("ws.sendFailed", error=type(e).__name__)
    except asyncio.CancelledError:
        record("ws.cancelled")
        raise


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """
    The bare ASGI application (see the module's docstring).
    """
    kind = scope["type"]
    if kind == "http":
        path = scope["path"]
        if path == "/hello" or path == "/ping":
            await send(_HELLO_START)
            await send(_HELLO_BODY)
        elif path.startswith("/sleep/"):
            await sleep(float(path[len("/sleep/") :]), send)
        elif path == "/events":
            await events(receive, send)
        elif path == "/healthz":
            await plain(send, 200, b"ok")
        else:
            await plain(send, 404, b"not found")
    elif kind == "websocket":
        await echo(receive, send)
    elif kind == "lifespan":
        await lifespan(receive, send)
    else:
        raise ValueError(f"unknown scope type {kind!r}")
