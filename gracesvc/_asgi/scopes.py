# -*- test-case-name: tests.unit.asgi.test_resource,tests.unit.asgi.test_websocket -*-
"""
The ASGI scopes of requests that Twisted parsed: an HTTP request's, and a
WebSocket handshake's.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.web.http import Request

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.spec import HTTP_ASGI, WEBSOCKET_ASGI


def httpVersion(request: Request) -> str:
    """
    @return: the request's HTTP version as an ASGI scope says it: C{"1.0"},
        C{"1.1"} or C{"2"}.
    """
    proto = request.clientproto
    if proto == b"HTTP/2":
        return "2"
    return proto.partition(b"/")[2].decode("ascii", "replace") or "1.1"


def addressOf(address: object) -> tuple[str, int | None] | None:
    """
    @return: a C{client} or C{server} of a scope: C{(host, port)}, C{(path,
        None)} for a Unix socket, L{None} if unknown.
    """
    if isinstance(address, IPv4Address | IPv6Address):
        return (address.host, address.port)
    if isinstance(address, UNIXAddress) and address.name is not None:
        name = address.name
        return (
            name.decode("utf-8", "replace") if isinstance(name, bytes) else name,
            None,
        )
    return None


def requestHeaders(request: Request) -> list[tuple[bytes, bytes]]:
    """
    @return: the request's headers as a scope has them: names lowercased,
        each name's values in the order received (Twisted groups the values
        of one name, in the order of the names' first appearance).
    """
    return [
        (name.lower(), value)
        for name, values in request.requestHeaders.getAllRawHeaders()
        for value in values
    ]


def splitURI(request: Request) -> tuple[bytes, bytes]:
    """
    @return: the request target's raw path and query string.
    """
    path, _, query = request.uri.partition(b"?")
    return path, query


def httpScope(request: Request, app: ASGIApp, rootPath: str = "") -> dict[str, Any]:
    """
    @return: the ASGI scope of an HTTP request.
    """
    rawPath, query = splitURI(request)
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": HTTP_ASGI,
        "http_version": httpVersion(request),
        "method": request.method.decode("ascii", "replace"),
        "scheme": "https" if request.isSecure() else "http",
        "path": unquote(rawPath.decode("latin-1")),
        "raw_path": rawPath,
        "query_string": query,
        "root_path": rootPath,
        "headers": requestHeaders(request),
        "client": addressOf(request.getClientAddress()),
        "server": addressOf(request.getHost()),
    }
    state = app.scopeState()
    if state is not None:
        scope["state"] = state
    return scope


def webSocketScope(
    request: Request, app: ASGIApp, rootPath: str = ""
) -> dict[str, Any]:
    """
    @return: the ASGI scope of a WebSocket handshake: its subprotocols are
        those the client offered, each C{Sec-WebSocket-Protocol} header
        split at its commas.
    """
    rawPath, query = splitURI(request)
    headers = requestHeaders(request)
    scope: dict[str, Any] = {
        "type": "websocket",
        "asgi": WEBSOCKET_ASGI,
        "http_version": httpVersion(request),
        "scheme": "wss" if request.isSecure() else "ws",
        "path": unquote(rawPath.decode("latin-1")),
        "raw_path": rawPath,
        "query_string": query,
        "root_path": rootPath,
        "headers": headers,
        "client": addressOf(request.getClientAddress()),
        "server": addressOf(request.getHost()),
        "subprotocols": subprotocols(headers),
        "extensions": {"websocket.http.response": {}},
    }
    state = app.scopeState()
    if state is not None:
        scope["state"] = state
    return scope


def subprotocols(headers: list[tuple[bytes, bytes]]) -> list[str]:
    """
    @return: the subprotocols a WebSocket handshake's
        C{Sec-WebSocket-Protocol} headers offer, in order.
    """
    return [
        part.strip()
        for name, value in headers
        if name == b"sec-websocket-protocol"
        for part in value.decode("latin-1").split(",")
        if part.strip()
    ]
