# -*- test-case-name: tests.unit.asgi.test_http1 -*-
"""
gracesvc's own C{/healthz}, C{/readyz} and C{/metrics} on the ASGI
HTTP/1.1 path (L{gracesvc._asgi.http1}), answered before the application,
with the bodies of L{gracesvc._apps.compose}, and counted under their own
route.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from gracesvc._core.drain import Drain


class OperationalRoute:
    """
    The route label of one of gracesvc's own paths, left in a request's
    scope where a framework leaves its route (see
    L{gracesvc._asgi.app.routeOf}).
    """

    __slots__ = ("path",)

    def __init__(self, path: str) -> None:
        self.path = path


class Operational:
    """
    gracesvc's own routes on this path: C{/healthz}, C{/readyz} and, unless
    served on an endpoint of their own, C{/metrics}; answered as
    L{gracesvc._apps.compose} answers them.
    """

    __slots__ = ("paths", "ready", "metricsPage")

    def __init__(
        self,
        ready: Callable[[], bool],
        metricsPage: Callable[[], bytes] | None,
    ) -> None:
        self.ready = ready
        self.metricsPage = metricsPage
        names = ["/healthz", "/readyz"] + (["/metrics"] if metricsPage else [])
        self.paths = {name.encode("ascii"): OperationalRoute(name) for name in names}

    def answer(
        self, path: bytes, method: str, drain: Drain
    ) -> tuple[int, bytes, bytes]:
        """
        @return: the status, the headers and the body for C{path}.
        """
        if method not in ("GET", "HEAD"):
            return (
                405,
                b"allow: GET, HEAD\r\ncontent-type: text/plain; charset=utf-8\r\n",
                b"Method Not Allowed\n",
            )
        if path == b"/metrics":
            assert self.metricsPage is not None
            from prometheus_client.exposition import CONTENT_TYPE_LATEST

            return (
                200,
                b"content-type: " + CONTENT_TYPE_LATEST.encode("ascii") + b"\r\n",
                self.metricsPage(),
            )
        if path == b"/healthz":
            status, body = 200, {"status": "ok"}
        elif drain.draining:
            status, body = 503, {"status": "draining"}
        elif not self.ready():
            status, body = 503, {"status": "starting"}
        else:
            status, body = 200, {"status": "ready"}
        return (
            status,
            b"content-type: application/json\r\n",
            json.dumps(body).encode("utf-8"),
        )
