"""
L{gracesvc._asgi.websocket}: ASGI WebSocket sessions on
L{gracesvc.DrainingWebSocket}, in memory, on a loop driven by hand.
"""

from __future__ import annotations

import asyncio
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._asgi.spec import WEBSOCKET_ASGI, ClientDisconnected
from gracesvc._protocols.websocket import WebSocketPolicy
from gracesvc.testing import get
from tests.support.asgi import Application, ASGIWire, Receive, Send


async def echo(scope: Any, receive: Receive, send: Send) -> None:
    """
    Accept (with the subprotocol C{chat} if offered, and a header), echo,
    and remember the scope and the disconnect.
    """
    told.append(dict(scope))
    assert (await receive())["type"] == "websocket.connect"
    await send(
        {
            "type": "websocket.accept",
            "subprotocol": "chat" if "chat" in scope["subprotocols"] else None,
            "headers": [(b"x-accepted", b"yes")],
        }
    )
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            told.append(message)
            return
        if message.get("text") == "close please":
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            continue
        await send(
            {"type": "websocket.send", **{k: message.get(k) for k in ("text", "bytes")}}
        )


told: list[Any] = []


class SessionTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        del told[:]

    def serve(self, application: Application, **keywords: Any) -> ASGIWire:
        served = ASGIWire(application, **keywords)
        self.addCleanup(served.close)
        return served


class HandshakeTests(SessionTestCase):
    def test_acceptEchoAndClientClose(self) -> None:
        """
        The application accepts with a subprotocol and headers, messages go
        both ways, and the client's Close is the disconnect's code and
        reason.
        """
        served = self.serve(echo)
        client = served.wire.connectWebSocket("/chat?room=1")
        served.run()
        self.assertTrue(client.accepted)
        client.sendText("hi")
        client.sendBytes(b"\x00\x01")
        served.run()
        self.assertEqual(client.messages, ["hi", b"\x00\x01"])
        client.closeHandshake(4000, "bye")
        served.run()
        scope = told[0]
        self.assertEqual(scope["type"], "websocket")
        self.assertEqual(scope["asgi"], WEBSOCKET_ASGI)
        self.assertEqual(scope["path"], "/chat")
        self.assertEqual(scope["query_string"], b"room=1")
        self.assertEqual(scope["scheme"], "ws")
        self.assertEqual(scope["extensions"], {"websocket.http.response": {}})
        self.assertEqual(
            told[1:], [{"type": "websocket.disconnect", "code": 4000, "reason": "bye"}]
        )

    def test_subprotocolAndHeaders(self) -> None:
        served = self.serve(echo)
        client = served.wire.connect()
        client.send(
            get(
                "/",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
                "Sec-WebSocket-Protocol: other, chat",
            )
        )
        served.run()
        data = client.protocol.data
        self.assertTrue(data.startswith(b"HTTP/1.1 101 "), data)
        self.assertIn(b"Sec-WebSocket-Protocol: chat\r\n", data)
        self.assertIn(b"x-accepted: yes\r\n", data)
        self.assertIn(b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n", data)
        self.assertEqual(told[0]["subprotocols"], ["other", "chat"])

    def test_closeBeforeAcceptIs403(self) -> None:
        async def refuse(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.close"})

        served = self.serve(refuse)
        client = served.wire.connectWebSocket("/")
        served.run()
        self.assertEqual(client.rejected, 403)

    def test_denialResponse(self) -> None:
        """
        The denial-response extension answers the handshake with the
        application's own HTTP response.
        """

        async def deny(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send(
                {
                    "type": "websocket.http.response.start",
                    "status": 401,
                    "headers": [(b"content-length", b"4")],
                }
            )
            await send({"type": "websocket.http.response.body", "body": b"who?"})

        served = self.serve(deny)
        client = served.wire.connect()
        client.send(
            get(
                "/",
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version: 13",
            )
        )
        served.run()
        [response] = client.responses
        self.assertEqual((response.code, response.body), (401, b"who?"))

    def test_badHandshakeIs400(self) -> None:
        served = self.serve(echo)
        client = served.wire.connect()
        client.send(get("/", "Upgrade: websocket", "Connection: Upgrade"))
        served.run()
        self.assertEqual([r.code for r in client.responses], [400])
        self.assertEqual(told, [])

    def test_raiseBeforeAcceptIs500(self) -> None:
        async def broken(scope: Any, receive: Receive, send: Send) -> None:
            raise RuntimeError("broken")

        served = self.serve(broken)
        client = served.wire.connectWebSocket("/")
        served.run()
        self.assertEqual(client.rejected, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_raiseAfterAcceptIs1011(self) -> None:
        async def broken(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            raise RuntimeError("broken")

        served = self.serve(broken)
        client = served.wire.connectWebSocket("/")
        served.run()
        self.assertEqual(client.closeCode, 1011)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class CloseTests(SessionTestCase):
    def test_applicationCloseStillTellsDisconnect(self) -> None:
        """
        An application that closes the WebSocket itself is still told of
        the disconnect, once the closing handshake is done; a send after
        its close raises L{ClientDisconnected}.
        """
        raised: list[BaseException] = []

        async def closer(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await receive()
            await send({"type": "websocket.close", "code": 4001, "reason": "asked"})
            try:
                await send({"type": "websocket.send", "text": "late"})
            except ClientDisconnected as e:
                raised.append(e)
            told.append(await receive())

        served = self.serve(closer)
        client = served.wire.connectWebSocket("/")
        served.run()
        client.sendText("close now")
        served.run()
        self.assertEqual((client.closeCode, client.closeReason), (4001, "asked"))
        self.assertEqual(len(raised), 1)
        self.assertEqual(
            told, [{"type": "websocket.disconnect", "code": 4001, "reason": "asked"}]
        )
        self.assertEqual(client.afterClose, [])

    def test_goingAwayCloses1001(self) -> None:
        """
        When the drain goes away the server sends its Close (1001) and the
        application, told of the disconnect with that code, returns; its
        sends after the Close raise.
        """
        served = self.serve(echo)
        client = served.wire.connectWebSocket("/")
        served.run()
        served.wire.drain.start()
        served.run()
        self.assertEqual(client.closeCode, 1001)
        self.assertEqual(
            told[1:],
            [
                {
                    "type": "websocket.disconnect",
                    "code": 1001,
                    "reason": "server shutting down",
                }
            ],
        )
        self.assertEqual(served.app.tasks, set())

    def test_clientGoneIs1006(self) -> None:
        served = self.serve(echo)
        client = served.wire.connectWebSocket("/")
        served.run()
        client.close()
        served.run()
        self.assertEqual(
            told[1:], [{"type": "websocket.disconnect", "code": 1006, "reason": ""}]
        )

    def test_applicationThatIgnoresTheDisconnectIsCancelled(self) -> None:
        """
        Told of the disconnect, an application has the close timeout to
        return; then its task is cancelled.
        """

        async def stubborn(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await asyncio.sleep(3600)

        served = self.serve(stubborn, webSocketPolicy=WebSocketPolicy(closeTimeout=1.0))
        client = served.wire.connectWebSocket("/")
        served.run()
        client.close()
        served.run()
        [task] = served.app.tasks
        served.advance(1.1)
        self.assertTrue(task.cancelled())

    def test_optedInApplicationSaysGoodbyeFirst(self) -> None:
        """
        An application that opted in to the shutdown notice has half the
        close timeout to send its goodbye and close itself before the
        server's Close.
        """
        goingAway = asyncio.Event()

        async def polite(scope: Any, receive: Receive, send: Send) -> None:
            await receive()
            await send({"type": "websocket.accept"})
            await goingAway.wait()
            await send({"type": "websocket.send", "text": "goodbye"})
            await send({"type": "websocket.close", "code": 1001})
            told.append(await receive())

        served = self.serve(polite)
        served.app.noticeWanted = True
        client = served.wire.connectWebSocket("/")
        served.run()
        served.wire.drain.start()
        served.run()
        self.assertIsNone(client.closeCode)
        served.loop.call_soon(goingAway.set)
        served.run()
        self.assertEqual(client.messages, ["goodbye"])
        self.assertEqual(client.closeCode, 1001)
        self.assertEqual(client.closeReason, "")
        self.assertEqual(
            told, [{"type": "websocket.disconnect", "code": 1001, "reason": ""}]
        )
