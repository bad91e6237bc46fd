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

from collections.abc import Iterator, Sequence
from enum import Enum
from typing import Any, Generic, Protocol, TypeVar

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from twisted.internet.defer import Deferred, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

from gracesvc._core.timers import cancelCall

#: How long a scrape waits for a worker's metrics.
SCRAPE_TIMEOUT = 1.0


class TreeWorker(Protocol):
    """
    What the tree's metrics read of a worker.
    """

    @property
    def slot(self) -> int: ...

    @property
    def generation(self) -> int: ...

    @property
    def workerState(self) -> Enum:
        """
        Where it stands: its value is the C{state} label of
        C{gracesvc_workers}.
        """


_Worker = TypeVar("_Worker", bound=TreeWorker)


class WorkerTree(Protocol[_Worker]):
    """
    What the tree's metrics read of the workers' master
    (L{gracesvc._workers.master.Master}).
    """

    @property
    def workers(self) -> Sequence[_Worker]:
        """
        The workers running (one that exits leaves at once).
        """

    @property
    def generation(self) -> int:
        """
        The generation serving.
        """

    @property
    def reloads(self) -> dict[str, int]:
        """
        Reloads, by outcome.
        """

    @property
    def restarts(self) -> int:
        """
        Workers replaced.
        """

    def requestMetrics(self, worker: _Worker, /) -> Deferred[str]:
        """
        @return: a Deferred firing with C{worker}'s exposition text; cancel it
            to stop waiting.
        """


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


class _TreeCollector(Collector, Generic[_Worker]):
    def __init__(self, tree: WorkerTree[_Worker]) -> None:
        self.tree = tree

    def collect(self) -> Iterator[Metric]:
        tree = self.tree
        workers = GaugeMetricFamily(
            "gracesvc_workers",
            "Worker processes, by state.",
            labels=["state"],
        )
        states: dict[str, int] = {"starting": 0, "ready": 0, "retiring": 0}
        for worker in tree.workers:
            state = str(worker.workerState.value)
            states[state] = states.get(state, 0) + 1
        for state, n in sorted(states.items()):
            workers.add_metric([state], n)
        yield workers
        yield GaugeMetricFamily(
            "gracesvc_generation",
            "The generation of workers serving.",
            value=tree.generation,
        )
        reloads = CounterMetricFamily(
            "gracesvc_reloads",
            "Reloads (SIGHUP), by outcome.",
            labels=["outcome"],
        )
        for outcome, n in sorted(tree.reloads.items()):
            reloads.add_metric([outcome], n)
        yield reloads
        yield CounterMetricFamily(
            "gracesvc_worker_restarts",
            "Workers replaced after they died or stopped answering.",
            value=tree.restarts,
        )


class TreeMetrics(Generic[_Worker]):
    """
    The metrics of the master and all its running workers.
    """

    log = Logger()

    def __init__(
        self,
        tree: WorkerTree[_Worker],
        clock: IReactorTime,
        timeout: float = SCRAPE_TIMEOUT,
    ) -> None:
        """
        @param clock: times out the workers' answers.
        @param timeout: how long a scrape waits for a worker's metrics.
        """
        self.tree = tree
        self.clock = clock
        self.timeout = timeout

    def _fromWorker(self, worker: _Worker) -> Deferred[str | None]:
        d = self.tree.requestMetrics(worker)
        timer = self.clock.callLater(self.timeout, d.cancel)

        def done(result: str | Failure) -> str | None:
            cancelCall(timer)
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
        workers = list(self.tree.workers)

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
            registry.register(_TreeCollector(self.tree))
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

    def __init__(self, metrics: TreeMetrics[Any]) -> None:
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
