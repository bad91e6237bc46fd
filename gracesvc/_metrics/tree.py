# -*- test-case-name: tests.unit.metrics.test_tree -*-
"""
The metrics of a C{--workers} tree, served by the master on
C{--metrics-listen}: at each scrape the master asks every running worker
for its metrics over the control channel and serves them all, each sample
labelled with the C{worker} (slot) and C{generation} that counted it, with
the master's own beside them.  (Sum over workers in queries:
C{sum without (worker, generation) (rate(gracesvc_requests_total[1m]))}.)
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from twisted.internet.defer import Deferred, gatherResults
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

if TYPE_CHECKING:
    from gracesvc._workers.master import Master, WorkerProcess

#: How long a scrape waits for a worker's metrics.
SCRAPE_TIMEOUT = 1.0


def labelled(text: str, labels: dict[str, str], into: dict[str, Metric]) -> None:
    """
    Parse one worker's exposition C{text} and add its samples, with
    C{labels} added, to the families in C{into}.
    """
    for family in text_string_to_metric_families(text):
        merged = into.get(family.name)
        if merged is None:
            merged = into[family.name] = Metric(
                family.name, family.documentation, family.type
            )
        for sample in family.samples:
            merged.samples.append(
                Sample(
                    sample.name,
                    {**sample.labels, **labels},
                    sample.value,
                    sample.timestamp,
                    sample.exemplar,
                )
            )


class _MasterCollector(Collector):
    def __init__(self, master: Master) -> None:
        self.master = master

    def collect(self) -> Iterator[Metric]:
        master = self.master
        workers = GaugeMetricFamily(
            "gracesvc_workers",
            "Worker processes, by state.",
            labels=["state"],
        )
        states: dict[str, int] = {"starting": 0, "ready": 0, "retiring": 0}
        for worker in master.workers:
            states[worker.workerState.value] = (
                states.get(worker.workerState.value, 0) + 1
            )
        for state, n in sorted(states.items()):
            workers.add_metric([state], n)
        yield workers
        yield GaugeMetricFamily(
            "gracesvc_generation",
            "The generation of workers serving.",
            value=master.generation,
        )
        reloads = CounterMetricFamily(
            "gracesvc_reloads",
            "Reloads (SIGHUP), by outcome.",
            labels=["outcome"],
        )
        for outcome, n in sorted(master.reloads.items()):
            reloads.add_metric([outcome], n)
        yield reloads
        yield CounterMetricFamily(
            "gracesvc_worker_restarts",
            "Workers replaced after they died or stopped answering.",
            value=master.restarts,
        )


class TreeMetrics:
    """
    The metrics of the master and all its running workers.
    """

    log = Logger()

    def __init__(self, master: Master, timeout: float = SCRAPE_TIMEOUT) -> None:
        self.master = master
        self.timeout = timeout

    def _fromWorker(self, worker: WorkerProcess) -> Deferred[str | None]:
        d = self.master.requestMetrics(worker)
        timer = self.master.reactor.callLater(self.timeout, d.cancel)

        def done(result: str | Failure) -> str | None:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                self.log.warn(
                    "gracesvc master: no metrics from {worker}",
                    worker=repr(worker),
                )
                return None
            return result

        return d.addBoth(done)

    def exposition(self) -> Deferred[bytes]:
        """
        @return: a Deferred firing with the tree's metrics in the Prometheus
            text format, once every worker answered (or the timeout passed).
        """
        workers = [w for w in self.master.workers if w.workerState.value != "exited"]

        def render(texts: list[str | None]) -> bytes:
            families: dict[str, Metric] = {}
            for worker, text in zip(workers, texts, strict=True):
                if text is None:
                    continue
                labels = {
                    "worker": str(worker.slot),
                    "generation": str(worker.generation),
                }
                try:
                    labelled(text, labels, families)
                except Exception:
                    self.log.failure(
                        "gracesvc master: unreadable metrics from {worker}",
                        worker=repr(worker),
                    )
            registry = CollectorRegistry(auto_describe=False)
            registry.register(_MasterCollector(self.master))
            registry.register(_Families(families))
            return generate_latest(registry)

        gathered: Deferred[list[str | None]] = gatherResults(
            [self._fromWorker(w) for w in workers]
        )
        return gathered.addCallback(render)


class _Families(Collector):
    def __init__(self, families: dict[str, Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        yield from self.families.values()


class TreeMetricsResource(Resource):
    """
    Serves L{TreeMetrics} on any path.
    """

    isLeaf = True

    def __init__(self, metrics: TreeMetrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: Request) -> object:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _: gone.append(True))

        def write(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            TreeMetrics.log.failure("metrics scrape failed", failure=failure)
            if not gone:
                request.setResponseCode(500)
                request.finish()

        self.metrics.exposition().addCallbacks(write, failed)
        return NOT_DONE_YET
