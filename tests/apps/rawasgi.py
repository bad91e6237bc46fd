"""
A bare ASGI application for the end-to-end tests of the ASGI HTTP/1.1
path: one route per protocol feature, an event stream that stops on
C{http.disconnect} (as Starlette's does), a WebSocket echo that reports
the code of its C{websocket.disconnect}; C{/told} says what each
long-lived handler was told.
"""

from __future__ import annotations

import asyncio
from typing import Any

#: What the long-lived handlers were told, in order (read on C{/told}).
told: list[str] = []


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                told.append(f"websocket {message['code']}")
                print("told:", ",".join(told), flush=True)
                return
            await send({"type": "websocket.send", "text": message.get("text")})
    path = scope["path"]
    if path == "/events":
        await events(send, receive)
        return
    if path == "/echo":
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        await answer(send, 200, body)
        return
    if path.startswith("/sleep/"):
        await asyncio.sleep(float(path[len("/sleep/") :]))
    elif path == "/stream":
        await send({"type": "http.response.start", "status": 200})
        for part in (b"one,", b"two,", b"three"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body"})
        return
    elif path.startswith("/status/"):
        await answer(send, int(path[len("/status/") :]), b"no body")
        return
    elif path == "/error":
        raise RuntimeError("the application failed")
    elif path == "/told":
        await answer(send, 200, ",".join(told).encode())
        return
    await answer(send, 200, path.encode())


async def answer(send: Any, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"text/plain")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def events(send: Any, receive: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    await receive()  # the request's (empty) body
    disconnected = asyncio.ensure_future(receive())
    n = 0
    while not disconnected.done():
        await send(
            {
                "type": "http.response.body",
                "body": b"data: %d\n\n" % n,
                "more_body": True,
            }
        )
        n += 1
        await asyncio.wait([disconnected], timeout=0.05)
    told.append("stream " + disconnected.result()["type"])
    print("told:", ",".join(told), flush=True)
