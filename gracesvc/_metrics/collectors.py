"""
The Prometheus collectors of what the protocols and the workers tally: the
protocols keep plain counts, and only this package knows Prometheus.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

# The workers of --workers.


class WorkerCollector(Collector):
    """
    C{gracesvc_worker_info{generation, slot, pid} 1} on a worker's
    C{/metrics}: which worker of the tree answered the scrape.  (Each worker
    has a registry of its own; the master's scrape of the whole tree, see
    L{gracesvc._metrics.tree}, labels each worker's samples alike.)
    """

    def __init__(self, generation: int, slot: int) -> None:
        self.generation = generation
        self.slot = slot

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "gracesvc_worker_info",
            "The worker of --workers that answered this scrape.",
            labels=["generation", "slot", "pid"],
        )
        info.add_metric([str(self.generation), str(self.slot), str(os.getpid())], 1)
        yield info
