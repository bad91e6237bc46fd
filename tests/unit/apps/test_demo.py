"""
The demo's routes, through treq's in-memory client, and through a
L{DrainingSite} for the route each request is counted under.
"""

from __future__ import annotations

from typing import Any

from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.demo import GraceApp
from gracesvc._core.drain import Drain
from gracesvc.testing import Wire, get, samples


class RouteTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.drain = Drain(self.clock)
        self.app = GraceApp(self.clock, self.drain, pingDelay=5)
        # StubTreq makes its methods at run time: mypy cannot see them.
        self.treq: Any = StubTreq(
            withOperationalRoutes(self.app.resource(), self.drain, None)
        )

    def fetch(self, path: str) -> tuple[int, bytes, bytes]:
        response = self.successResultOf(self.treq.get(f"http://test{path}"))
        body = self.successResultOf(self.treq.content(response))
        contentType = response.headers.getRawHeaders(b"content-type")[0]
        return response.code, contentType, body

    def test_pingAnswersPongAfterTheDelay(self) -> None:
        """
        C{GET /ping} answers C{{"message": "pong"}} as JSON, and only once
        the ping delay has passed.
        """
        d = self.treq.get("http://test/ping")
        self.clock.advance(4.9)
        self.treq.flush()
        self.assertNoResult(d)
        self.clock.advance(0.1)
        self.treq.flush()
        response = self.successResultOf(d)
        self.assertEqual(response.code, 200)
        self.assertEqual(
            response.headers.getRawHeaders(b"content-type"), [b"application/json"]
        )
        self.assertEqual(
            self.successResultOf(self.treq.json_content(response)), {"message": "pong"}
        )

    def test_pingWithoutDelayAnswersAtOnce(self) -> None:
        self.app.pingDelay = 0
        self.assertEqual(
            self.fetch("/ping"), (200, b"application/json", b'{"message": "pong"}')
        )

    def test_healthzStaysOkWhileDraining(self) -> None:
        self.assertEqual(self.fetch("/healthz")[0], 200)
        self.drain.start()
        self.assertEqual(
            self.fetch("/healthz"), (200, b"application/json", b'{"status": "ok"}')
        )

    def test_readyzTurns503WhenTheDrainBegins(self) -> None:
        self.assertEqual(
            self.fetch("/readyz"), (200, b"application/json", b'{"status": "ready"}')
        )
        self.drain.start()
        self.assertEqual(
            self.fetch("/readyz"),
            (503, b"application/json", b'{"status": "draining"}'),
        )

    def test_unknownPathIs404(self) -> None:
        response = self.successResultOf(self.treq.get("http://test/nope"))
        self.assertEqual(response.code, 404)

    def test_wrongMethodIs405(self) -> None:
        response = self.successResultOf(self.treq.post("http://test/ping"))
        self.assertEqual(response.code, 405)


class RouteLabelTests(SynchronousTestCase):
    def test_eachRouteItsRule(self) -> None:
        """
        Each request is counted under the rule of the route it matched, as
        any Klein application's are: gracesvc's own paths as they are, and
        a request that matched no route (an unknown path, a wrong method)
        as C{other}.
        """
        wire = Wire(pingDelay=0, tick=1)
        client = wire.connect()
        client.send(get("/ping") + get("/ws") + get("/healthz") + get("/readyz"))
        client.send(get("/wp-admin") + get("/ping/deeper"))
        client.send(b"POST /ping HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n")
        client.send(get("/poll"))
        wire.advance(1)
        client.send(get("/metrics"))
        self.assertEqual(
            [r.code for r in client.responses],
            [200, 426, 200, 200, 404, 404, 405, 200, 200],
        )
        self.assertEqual(
            {
                (dict(labels)["route"], dict(labels)["code"]): value
                for (name, labels), value in samples(wire.metrics.exposition()).items()
                if name == "gracesvc_requests_total"
            },
            {
                ("/ping", "200"): 1,
                ("/ws", "426"): 1,
                ("/healthz", "200"): 1,
                ("/readyz", "200"): 1,
                ("other", "404"): 2,
                ("other", "405"): 1,
                ("/poll", "200"): 1,
                ("/metrics", "200"): 1,
            },
        )

    def test_eventStreamItsRule(self) -> None:
        wire = Wire(tick=1)
        client = wire.connect()
        client.send(get("/events"))
        wire.advance(1)
        wire.drain.start()
        wire.advance(1)
        scraped = samples(wire.metrics.exposition())
        self.assertEqual(
            scraped[
                ("gracesvc_requests_total", (("code", "200"), ("route", "/events")))
            ],
            1,
        )
