"""
Prometheus metrics, read through the exposition format with
C{prometheus_client}'s own parser, as a scraper would.
"""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.iweb import IRequest
from twisted.web.server import Request
from twisted.web.test.requesthelper import DummyChannel, DummyRequest

from gracesvc._metrics.registry import labelRoute, routeOf
from gracesvc.testing import Wire, get, samples


class MetricsThroughADrainTests(SynchronousTestCase):
    def scrape(
        self, wire: Wire
    ) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return samples(wire.metrics.exposition())

    def test_inFlightRisesAndFalls(self) -> None:
        wire = Wire(pingDelay=1)
        clients = [wire.connect() for _ in range(3)]
        for c in clients:
            c.send(get("/ping"))
        before = self.scrape(wire)
        self.assertEqual(before[("gracesvc_requests_in_flight", ())], 3)
        self.assertEqual(before[("gracesvc_open_connections", (("state", "busy"),))], 3)
        self.assertEqual(before[("gracesvc_draining", ())], 0)
        wire.drain.start()
        during = self.scrape(wire)
        self.assertEqual(during[("gracesvc_draining", ())], 1)
        self.assertEqual(during[("gracesvc_drains_started_total", ())], 1)
        wire.advance(1.1)
        after = self.scrape(wire)
        self.assertEqual(after[("gracesvc_requests_in_flight", ())], 0)
        self.assertEqual(after[("gracesvc_open_connections", (("state", "busy"),))], 0)
        self.assertEqual(after[("gracesvc_drain_requests_completed_total", ())], 3)
        self.assertEqual(after[("gracesvc_drain_requests_cut_total", ())], 0)
        self.assertAlmostEqual(
            after[("gracesvc_drain_duration_seconds", ())], 1.0, delta=0.02
        )
        self.assertEqual(
            after[("gracesvc_requests_total", (("code", "200"), ("route", "/ping")))], 3
        )
        self.assertEqual(
            after[("gracesvc_request_duration_seconds_count", (("route", "/ping"),))], 3
        )
        self.assertEqual(
            after[
                (
                    "gracesvc_request_duration_seconds_bucket",
                    (("le", "0.5"), ("route", "/ping")),
                )
            ],
            0,
        )
        self.assertEqual(
            after[
                (
                    "gracesvc_request_duration_seconds_bucket",
                    (("le", "2.5"), ("route", "/ping")),
                )
            ],
            3,
        )

    def test_cutAtTheCapIsCounted(self) -> None:
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        wire.connect().send(get("/ping"))
        wire.drain.start()
        wire.advance(1)
        after = self.scrape(wire)
        self.assertEqual(after[("gracesvc_drain_requests_cut_total", ())], 1)
        self.assertEqual(
            after[("gracesvc_requests_total", (("code", "503"), ("route", "/ping")))], 1
        )

    def test_connectionsCountedByState(self) -> None:
        """
        Connections are counted by their one state: a half-received request
        is C{receiving}, not idle; every state is reported, zeros too.
        """
        wire = Wire()
        c = wire.connect()
        c.send(get("/healthz"))
        wire.connect()
        wire.connect().send(b"GET /ping HTTP/1.1\r\n")
        scraped = self.scrape(wire)
        self.assertEqual(
            {
                state: scraped[("gracesvc_open_connections", (("state", state),))]
                for state in (
                    "idle",
                    "receiving",
                    "busy",
                    "stream",
                    "poll",
                    "websocket",
                    "closing",
                )
            },
            {
                "idle": 2,
                "receiving": 1,
                "busy": 0,
                "stream": 0,
                "poll": 0,
                "websocket": 0,
                "closing": 0,
            },
        )

    def test_longLivedOutcomesByKind(self) -> None:
        """
        C{gracesvc_drain_longlived_total} counts the WebSockets the drain
        ended by outcome, every outcome reported, zeros too.
        """
        wire = Wire(shutdownTimeout=3)
        self.assertEqual(
            {
                outcome: self.scrape(wire)[
                    (
                        "gracesvc_drain_longlived_total",
                        (("kind", "websocket"), ("outcome", outcome)),
                    )
                ]
                for outcome in ("clean", "timeout", "cut")
            },
            {"clean": 0, "timeout": 0, "cut": 0},
        )
        wire.connectWebSocket()
        wire.connectWebSocket(answersClose=False)
        wire.drain.start()
        wire.advance(1.5)
        scraped = self.scrape(wire)
        self.assertEqual(
            {
                outcome: scraped[
                    (
                        "gracesvc_drain_longlived_total",
                        (("kind", "websocket"), ("outcome", outcome)),
                    )
                ]
                for outcome in ("clean", "timeout", "cut")
            },
            {"clean": 1, "timeout": 1, "cut": 0},
        )
        self.assertEqual(
            scraped[("gracesvc_ws_sends_dropped_after_close_total", ())], 0
        )

    def test_longLivedResponsesCountedByKindAndOutcome(self) -> None:
        """
        An event stream and a long poll are connections of their own state
        while open; once the drain has ended them, each is counted under its
        kind and outcome, every pair reported, zeros too.
        """
        wire = Wire(tick=60)
        wire.connect().send(get("/events"))
        wire.connect().send(get("/poll"))
        wire.connect().send(get("/poll"))
        scraped = self.scrape(wire)
        self.assertEqual(
            [
                scraped[("gracesvc_open_connections", (("state", state),))]
                for state in ("stream", "poll", "busy")
            ],
            [1, 2, 0],
        )
        self.assertEqual(scraped[("gracesvc_requests_in_flight", ())], 3)

        def ended() -> dict[tuple[str, str], float]:
            return {
                (dict(labels)["kind"], dict(labels)["outcome"]): value
                for (name, labels), value in self.scrape(wire).items()
                if name == "gracesvc_drain_longlived_total"
                and dict(labels)["kind"] != "websocket"
            }

        self.assertEqual(
            ended(),
            {
                ("stream", "clean"): 0,
                ("stream", "cut"): 0,
                ("poll", "clean"): 0,
                ("poll", "cut"): 0,
            },
        )
        wire.drain.start()
        wire.flush()
        self.assertTrue(wire.drain.finished)
        self.assertEqual(
            ended(),
            {
                ("stream", "clean"): 1,
                ("stream", "cut"): 0,
                ("poll", "clean"): 2,
                ("poll", "cut"): 0,
            },
        )

    def test_unknownPathsShareOneRoute(self) -> None:
        wire = Wire()
        c = wire.connect()
        c.send(get("/wp-admin") + get("/etc/passwd"))
        scraped = self.scrape(wire)
        self.assertEqual(
            scraped[("gracesvc_requests_total", (("code", "404"), ("route", "other")))],
            2,
        )

    def test_anyStatusCodeCounted(self) -> None:
        """
        Codes are counted in a list indexed by the code: those outside it
        are counted too, and each response once in the histogram.
        """
        wire = Wire()
        for code in (200, 599, 600, 999, -1, 200):
            request = Request(DummyChannel())
            request.path, request.code = b"/ping", code
            labelRoute(request, "/ping")
            wire.metrics.requestDone(request, 0.001)
        scraped = self.scrape(wire)
        counts = {
            labels: n
            for (name, labels), n in scraped.items()
            if name == "gracesvc_requests_total"
        }
        self.assertEqual(
            counts,
            {
                (("code", str(code)), ("route", "/ping")): n
                for code, n in [(200, 2), (599, 1), (600, 1), (999, 1), (-1, 1)]
            },
        )
        self.assertEqual(
            scraped[("gracesvc_request_duration_seconds_count", (("route", "/ping"),))],
            6,
        )

    def test_servedOnTheMainPort(self) -> None:
        wire = Wire()
        c = wire.connect()
        c.send(get("/metrics"))
        raw = c.protocol.data
        self.assertIn(b"HTTP/1.1 200 OK", raw)
        self.assertIn(b"Content-Type: text/plain; version=", raw)
        body = raw.split(b"\r\n\r\n", 1)[1]
        self.assertIn(b"gracesvc_requests_in_flight", body)


class LabelTests(SynchronousTestCase):
    def test_brokenLabelIsOther(self) -> None:
        """
        A label function that raises is logged and counts as C{other}.
        """
        request: Any = DummyRequest([b"x"])

        def broken(request: IRequest) -> str:
            raise KeyError("no")

        labelRoute(request, broken)
        self.assertEqual(routeOf(request), "other")
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_unlabelledRequestsAreOther(self) -> None:
        """
        Requests nobody labelled are counted as C{other}, whatever their
        path: the registry knows no application's routes (the demo's label
        themselves, see C{tests/unit/apps/test_demo.py}).
        """
        request: Any = DummyRequest([b"ping"])
        request.path = b"/ping"
        self.assertEqual(routeOf(request), "other")
        request.path = b"/wp-admin"
        self.assertEqual(routeOf(request), "other")
