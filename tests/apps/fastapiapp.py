"""
A FastAPI application for the end-to-end tests of C{--asgi}, with what a
real one has: a lifespan whose state holds a pool (closed at the shutdown),
plain routes, a slow one, FastAPI's own event stream and sse-starlette's, a
WebSocket echo and a push-only WebSocket, background tasks, and errors
before and after the response starts.

It reports what happened to it on its standard output (twistd logs it),
one C{EVENT ...} line each, for the tests to read: C{lifespan startup},
C{lifespan shutdown}, C{pool closed}, C{background done}, C{ws disconnect
CODE}, C{stream ended}.

L{noticeApp} is the same application behind L{gracesvc.asgi.ShutdownNotice}:
its WebSocket C{/goodbye} sends its own last message, and closes with 1001
itself, when the server goes away.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import BackgroundTasks, FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sse_starlette.sse import EventSourceResponse as SSEStarletteResponse

from gracesvc.asgi import ShutdownNotice


def report(event: str) -> None:
    print(f"EVENT {event}", flush=True)


class Pool:
    """
    Stands for a database pool: open from the lifespan's startup to its
    shutdown.
    """

    def __init__(self) -> None:
        self.open = True

    def close(self) -> None:
        self.open = False
        report("pool closed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    report("lifespan startup")
    pool = Pool()
    yield {"pool": pool}
    report("lifespan shutdown")
    pool.close()


api = FastAPI(lifespan=lifespan)


@api.get("/ping")
async def ping(request: Request) -> dict[str, Any]:
    return {"pong": True, "pool": request.state.pool.open}


@api.get("/slow")
async def slow(seconds: float = 1.0) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}


@api.get("/sync")
def syncView() -> dict[str, str]:
    return {"thread": "yes"}


@api.post("/echo")
async def echo(request: Request) -> PlainTextResponse:
    body = await request.body()
    return PlainTextResponse(f"{len(body)}")


@api.get("/events", response_class=EventSourceResponse)
async def events() -> AsyncIterator[ServerSentEvent]:
    try:
        n = 0
        while True:
            yield ServerSentEvent(data=str(n), id=str(n))
            n += 1
            await asyncio.sleep(0.1)
    finally:
        report("stream ended")


@api.get("/sse")
async def sseStarlette() -> SSEStarletteResponse:
    async def ticks() -> AsyncIterator[dict[str, str]]:
        try:
            n = 0
            while True:
                yield {"data": str(n)}
                n += 1
                await asyncio.sleep(0.1)
        finally:
            report("sse-starlette stream ended")

    return SSEStarletteResponse(ticks())


@api.get("/background")
async def background(tasks: BackgroundTasks) -> dict[str, str]:
    async def work() -> None:
        await asyncio.sleep(0.5)
        report("background done")

    tasks.add_task(work)
    return {"queued": "yes"}


@api.get("/error-before")
async def errorBefore() -> None:
    raise RuntimeError("failed before the response")


@api.get("/error-after")
async def errorAfter() -> StreamingResponse:
    async def body() -> AsyncIterator[bytes]:
        yield b"first part\n"
        await asyncio.sleep(0.05)
        raise RuntimeError("failed after the response started")

    return StreamingResponse(body(), media_type="text/plain")


@api.websocket("/ws")
async def wsEcho(websocket: WebSocket) -> None:
    await websocket.accept(subprotocol=_chosen(websocket))
    try:
        while True:
            await websocket.send_text(await websocket.receive_text())
    except WebSocketDisconnect as e:
        report(f"ws disconnect {e.code}")


@api.websocket("/push")
async def wsPush(websocket: WebSocket) -> None:
    await websocket.accept()
    n = 0
    try:
        while True:
            await websocket.send_text(str(n))
            n += 1
            await asyncio.sleep(0.1)
    except WebSocketDisconnect as e:
        report(f"push disconnect {e.code}")


@api.websocket("/goodbye")
async def wsGoodbye(websocket: WebSocket) -> None:
    await websocket.accept()
    goingAway: asyncio.Event | None = getattr(websocket.state, "going_away", None)
    assert goingAway is not None, "no going_away: not behind ShutdownNotice"
    receiving = asyncio.ensure_future(websocket.receive_text())
    going = asyncio.ensure_future(goingAway.wait())
    try:
        while True:
            done, _ = await asyncio.wait(
                [receiving, going], return_when=asyncio.FIRST_COMPLETED
            )
            if going in done:
                await websocket.send_text("goodbye: reconnect elsewhere")
                await websocket.close(1001)
                report("goodbye sent")
                return
            await websocket.send_text(receiving.result())
            receiving = asyncio.ensure_future(websocket.receive_text())
    except WebSocketDisconnect as e:
        report(f"goodbye disconnect {e.code}")
    finally:
        receiving.cancel()
        going.cancel()


def _chosen(websocket: WebSocket) -> str | None:
    offered = websocket.scope.get("subprotocols") or []
    return "chat" if "chat" in offered else None


#: The application.
app = api

#: The same behind ShutdownNotice.
noticeApp = ShutdownNotice(api)
