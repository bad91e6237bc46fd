"""
WebSocket clients of the C{websockets} library, many at once on one asyncio
loop, each noting when the server's Close frame came, when the server closed
TCP, and how the library judged the end: C{ConnectionClosedOK} is a clean
closing handshake with code 1000 or 1001, both ways.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK


class _TimedConnection(ClientConnection):
    """
    A client connection that notes when the server's Close frame arrived,
    when the server closed TCP, and the error the connection was lost with.
    """

    closeReceivedAt: float | None = None
    eofAt: float | None = None
    lostAt: float | None = None
    lostWith: Exception | None = None

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.closeReceivedAt is None and self.protocol.close_rcvd is not None:
            self.closeReceivedAt = time.monotonic()

    def eof_received(self) -> None:
        self.eofAt = time.monotonic()
        super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lostAt = time.monotonic()
        self.lostWith = exc
        super().connection_lost(exc)


@dataclass
class WebSocketClient:
    """
    What one client saw.

    @ivar messages: (time, text) of each text message received.
    @ivar code: the code of the server's Close frame, L{None} if none came.
    @ivar ok: whether the library ended it with C{ConnectionClosedOK}.
    @ivar endedAt: when the server closed TCP (else when the connection was
        lost).
    @ivar reset: whether the connection was lost with an error (a reset).
    """

    messages: list[tuple[float, str]] = field(default_factory=list)
    code: int | None = None
    ok: bool = False
    closeAt: float | None = None
    endedAt: float | None = None
    reset: bool = False
    error: str = ""


async def _one(
    uri: str, every: float, result: WebSocketClient, opened: asyncio.Event
) -> None:
    ws = await connect(
        uri,
        create_connection=_TimedConnection,
        open_timeout=15,
        ping_interval=None,
        close_timeout=5,
    )
    opened.set()

    async def read() -> None:
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    result.messages.append((time.monotonic(), message))
        except ConnectionClosedOK:
            result.ok = True
        except ConnectionClosed as e:
            result.error = type(e).__name__

    reader = asyncio.ensure_future(read())
    while not reader.done():
        try:
            await ws.send("tick")
        except ConnectionClosed:
            break
        await asyncio.wait([reader], timeout=every)
    await reader
    await ws.wait_closed()
    assert isinstance(ws, _TimedConnection)
    rcvd = ws.protocol.close_rcvd
    result.code = None if rcvd is None else rcvd.code
    result.closeAt = ws.closeReceivedAt
    result.endedAt = ws.eofAt if ws.eofAt is not None else ws.lostAt
    result.reset = ws.lostWith is not None


def webSocketsAtSignal(
    port: int,
    n: int,
    settle: float,
    signal: Callable[[], float],
    timeout: float,
    path: str = "/ws",
    every: float = 0.1,
) -> tuple[list[WebSocketClient], float]:
    """
    Open C{n} WebSockets to C{path}, each sending C{"tick"} every C{every}
    seconds (echoed back), wait C{settle} seconds, call C{signal}, and run
    until every connection has ended or C{timeout} seconds passed.

    @return: what each client saw, and what C{signal} returned (when the
        signal was sent).
    """

    async def run() -> tuple[list[WebSocketClient], float]:
        uri = f"ws://127.0.0.1:{port}{path}"
        clients = [WebSocketClient() for _ in range(n)]
        opened = [asyncio.Event() for _ in range(n)]
        tasks = [
            asyncio.ensure_future(_one(uri, every, c, o))
            for c, o in zip(clients, opened, strict=True)
        ]
        deadline = time.monotonic() + 30
        while not all(
            o.is_set() or t.done() for o, t in zip(opened, tasks, strict=True)
        ):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{sum(not o.is_set() for o in opened)} of {n} WebSockets not open after 30 s"
                )
            await asyncio.sleep(0.01)
        failed = [t for o, t in zip(opened, tasks, strict=True) if not o.is_set()]
        if failed:
            for task in tasks:
                task.cancel()
            raise RuntimeError(
                f"{len(failed)} of {n} WebSockets failed to open: {failed[0].exception()!r}"
            )
        await asyncio.sleep(settle)
        sentAt = signal()
        _, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        for task, client in zip(tasks, clients, strict=True):
            if task in pending:
                client.error = "still open"
            elif task.exception() is not None:
                client.error = repr(task.exception())
        return clients, sentAt

    return asyncio.run(run())
