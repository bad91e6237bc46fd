"""
The FastAPI application of C{bench.asgi} (it needs the C{bench} extra)::

    GET /json     {"message": "Hello, world!"}: the FastAPI throughput figure
    GET /healthz  200 (gracesvc answers it itself)
    /ws           a WebSocket echo that, told the server is going away,
                  sends its own goodbye and closes with 1001

C{app} is the application; C{noticeApp} is the same wrapped in
C{gracesvc.asgi.ShutdownNotice}, the middleware that opts in to gracesvc's
shutdown notice and sets the C{asyncio.Event} C{websocket.state.going_away}
when it comes; it is L{None} where gracesvc has no such middleware.  Under
a server that sends no notice, C{noticeApp}'s WebSockets never say goodbye.
What each was told is recorded as L{bench.asgiapps} records it.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

from bench.asgiapps import record

#: The goodbye message a WebSocket of C{noticeApp} sends before its Close.
GOODBYE = {"type": "goodbye", "reconnect_ms": 1000}


async def hello() -> dict[str, str]:
    return {"message": "Hello, world!"}


async def healthz() -> dict[str, str]:
    return {"status": "ok"}


async def goodbyeEcho(websocket: WebSocket) -> None:
    """
    Echo text messages; when C{websocket.state.going_away} is set, send
    L{GOODBYE} and close with 1001 (going away).
    """
    await websocket.accept()
    goingAway: asyncio.Event | None = getattr(websocket.state, "going_away", None)
    notice = asyncio.ensure_future(
        goingAway.wait() if goingAway is not None else asyncio.Future()
    )
    try:
        while True:
            receiving = asyncio.ensure_future(websocket.receive_text())
            await asyncio.wait([receiving, notice], return_when=asyncio.FIRST_COMPLETED)
            if notice.done():
                receiving.cancel()
                await websocket.send_json(GOODBYE)
                record("goodbye.sent")
                await websocket.close(1001)
                return
            try:
                text = receiving.result()
            except WebSocketDisconnect as e:
                record("ws.disconnect", code=e.code, reason=e.reason or "")
                return
            await websocket.send_text(text)
    except asyncio.CancelledError:
        record("ws.cancelled")
        raise
    finally:
        notice.cancel()


app = FastAPI()
app.add_api_route("/json", hello, methods=["GET"])
app.add_api_route("/healthz", healthz, methods=["GET"])
app.add_api_websocket_route("/ws", goodbyeEcho)


def _withNotice() -> Any:
    try:
        middleware = importlib.import_module("gracesvc.asgi").ShutdownNotice
    except (ImportError, AttributeError):
        return None
    return middleware(app)


noticeApp = _withNotice()
