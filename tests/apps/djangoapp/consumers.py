"""
Channels consumers: a WebSocket echo that closes itself when asked to (and
must still be told of the disconnect, channels#1209), and a JSON one.
"""

from __future__ import annotations

from typing import Any

from channels.generic.websocket import AsyncWebsocketConsumer, JsonWebsocketConsumer


def report(event: str) -> None:
    print(f"EVENT {event}", flush=True)


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        await self.accept()

    async def receive(
        self, text_data: str | None = None, bytes_data: bytes | None = None
    ) -> None:
        if text_data == "close":
            await self.close(code=4000)
            return
        await self.send(text_data=text_data, bytes_data=bytes_data)

    async def disconnect(self, code: int) -> None:
        report(f"channels disconnect {code}")


class JsonConsumer(JsonWebsocketConsumer):
    def connect(self) -> None:
        self.accept()

    def receive_json(self, content: Any, **kwargs: Any) -> None:
        self.send_json({"echo": content})

    def disconnect(self, code: int) -> None:
        report(f"channels json disconnect {code}")
