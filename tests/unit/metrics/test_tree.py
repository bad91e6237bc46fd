"""
The master's metrics of a C{--workers} tree (L{gracesvc._metrics.tree}),
in memory: the workers' answers fed to their fake process protocols.
"""

from __future__ import annotations

import json

from gracesvc._metrics.tree import TreeMetrics
from gracesvc.testing import samples
from tests.support.workers import MasterTestCase, transportOf

WORKER_METRICS = (
    "# HELP gracesvc_requests_total Responses.\n"
    "# TYPE gracesvc_requests_total counter\n"
    'gracesvc_requests_total{{route="/ping",code="200"}} {n}\n'
)


class TreeMetricsTests(MasterTestCase):
    def answer(self, slot: int, n: int) -> None:
        worker = self.generation(1)[slot]
        [request] = [
            c for c in transportOf(worker).commands() if c["command"] == "metrics"
        ]
        text = WORKER_METRICS.format(n=n)
        reply = {"event": "metrics", "id": request["id"], "text": text}
        worker.childDataReceived(3, json.dumps(reply).encode() + b"\n")

    def test_everyWorkerLabelled(self) -> None:
        """
        A scrape asks every worker and serves each one's samples labelled
        with its slot and generation, beside the master's own metrics.
        """
        self.serving()
        d = TreeMetrics(self.master, self.reactor).exposition()
        self.answer(0, 3)
        self.assertNoResult(d)
        self.answer(1, 5)
        scraped = samples(self.successResultOf(d))
        key = (("code", "200"), ("generation", "1"), ("route", "/ping"))
        self.assertEqual(
            scraped[("gracesvc_requests_total", (*key, ("worker", "0")))], 3
        )
        self.assertEqual(
            scraped[("gracesvc_requests_total", (*key, ("worker", "1")))], 5
        )
        self.assertEqual(scraped[("gracesvc_workers", (("state", "ready"),))], 2)
        self.assertEqual(scraped[("gracesvc_generation", ())], 1)
        self.assertEqual(
            scraped[("gracesvc_reloads_total", (("outcome", "failed"),))], 0
        )

    def test_aSilentWorkerDoesNotHoldTheScrape(self) -> None:
        self.serving()
        d = TreeMetrics(self.master, self.reactor, timeout=1).exposition()
        self.answer(1, 5)
        self.reactor.advance(1)
        scraped = samples(self.successResultOf(d))
        workers = {
            dict(labels).get("worker")
            for (name, labels) in scraped
            if name == "gracesvc_requests_total"
        }
        self.assertEqual(workers, {"1"})
        self.assertEqual(len(self.master.metricsRequests), 0)
