"""
The collectors of what the protocols and the workers tally
(L{gracesvc._metrics.collectors}).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, generate_latest
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._metrics.collectors import WorkerCollector
from gracesvc.testing import samples


class WorkerCollectorTests(SynchronousTestCase):
    def test_namesTheWorker(self) -> None:
        """
        A worker's scrape says which worker answered: its generation, slot
        and pid.
        """
        registry = CollectorRegistry(auto_describe=True)
        registry.register(WorkerCollector(generation=3, slot=1))
        scraped = samples(generate_latest(registry))
        labels = (("generation", "3"), ("pid", str(os.getpid())), ("slot", "1"))
        self.assertEqual(scraped, {("gracesvc_worker_info", labels): 1})
