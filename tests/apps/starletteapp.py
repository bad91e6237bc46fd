"""
A Starlette application for the end-to-end tests of C{--asgi}: an event
stream as a C{StreamingResponse} and a C{WebSocketEndpoint}, with the
lifespan's state.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.endpoints import WebSocketEndpoint
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket


def report(event: str) -> None:
    print(f"EVENT {event}", flush=True)


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": request.state.greeting})


async def events(request: Request) -> StreamingResponse:
    async def ticks() -> AsyncIterator[bytes]:
        n = 0
        try:
            while True:
                yield b"data: %d\n\n" % (n,)
                n += 1
                await asyncio.sleep(0.1)
        finally:
            report("starlette stream ended")

    return StreamingResponse(ticks(), media_type="text/event-stream")


class Echo(WebSocketEndpoint):
    encoding = "text"

    async def on_receive(self, websocket: WebSocket, data: Any) -> None:
        await websocket.send_text(data)

    async def on_disconnect(self, websocket: WebSocket, close_code: int) -> None:
        report(f"starlette disconnect {close_code}")


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    yield {"greeting": "from the lifespan"}


app = Starlette(
    routes=[
        Route("/hello", hello),
        Route("/events", events),
        WebSocketRoute("/ws", Echo),
    ],
    lifespan=lifespan,
)
