# -*- test-case-name: tests.unit.test_metrics -*-
"""
Prometheus metrics: what is in flight, and what each drain did.

Everything about connections and the drain is read from the L{Drain} when
Prometheus scrapes, so it costs nothing per request and can never drift from
what the drain itself believes.  Only the request counter and the duration
histogram are updated per request.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate

from prometheus_client import CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from ._drain import Drain

#: Paths reported as their own C{route} label; anything else is C{other},
#: so that scanners cannot blow up the number of series.
ROUTES = frozenset([b"/ping", b"/healthz", b"/readyz", b"/metrics"])

#: The connection states always reported, even when no connection is in one.
CONNECTION_STATES = ("idle", "receiving", "busy", "closing")


class _DrainCollector(Collector):
    def __init__(self, drain: Drain) -> None:
        self.drain = drain

    def collect(self) -> Iterator[Metric]:
        drain = self.drain
        inFlight = drain.inFlight
        yield GaugeMetricFamily(
            "gracesvc_requests_in_flight",
            "Requests received and not yet answered.",
            value=inFlight,
        )
        connections = GaugeMetricFamily(
            "gracesvc_open_connections",
            "Open connections, by state: idle, receiving (a request arriving), "
            "busy (a request being answered), closing.",
            labels=["state"],
        )
        states = dict.fromkeys(CONNECTION_STATES, 0)
        states.update(drain.connectionStates())
        for state, count in states.items():
            connections.add_metric([state], count)
        yield connections
        yield GaugeMetricFamily(
            "gracesvc_tracked_tasks",
            "Background tasks handed to Drain.track that have not finished.",
            value=drain.pendingWork,
        )
        yield GaugeMetricFamily(
            "gracesvc_draining",
            "1 from the first stop signal on, else 0.",
            value=1 if drain.draining else 0,
        )
        yield CounterMetricFamily(
            "gracesvc_drains_started",
            "Drains started.",
            value=1 if drain.draining else 0,
        )
        yield CounterMetricFamily(
            "gracesvc_drain_requests_completed",
            "Requests answered normally after a drain began.",
            value=drain.completedDuringDrain,
        )
        yield CounterMetricFamily(
            "gracesvc_drain_requests_cut",
            "Requests answered 503 or aborted at the shutdown cap or on a "
            "second signal.",
            value=drain.requestsCut,
        )
        duration = GaugeMetricFamily(
            "gracesvc_drain_duration_seconds",
            "How long the last drain took, or has taken so far.",
        )
        if drain.startedAt is not None:
            end = drain.finishedAt if drain.finished else drain.clock.seconds()
            assert end is not None
            duration.add_metric([], end - drain.startedAt)
        yield duration


#: The upper bounds of the request duration histogram's buckets, in seconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


class _RequestCollector(Collector):
    """
    The per-request counter and histogram, kept as plain numbers and turned
    into metric families when Prometheus scrapes.

    Everything runs in the reactor thread (the scrape too, see
    L{MetricsResource}), so no lock is needed: a request costs a dictionary
    update and a bisection, about a microsecond, where
    C{prometheus_client}'s C{Counter} and C{Histogram} take a lock per
    value updated.
    """

    def __init__(self) -> None:
        self._created = time.time()
        self._counts: dict[tuple[bytes, int], int] = {}
        # route -> a count per bucket (the last one +Inf), then the sum.
        self._durations: dict[bytes, list[float]] = {}

    def count(self, route: bytes, code: int, seconds: float) -> None:
        key = (route, code)
        self._counts[key] = self._counts.get(key, 0) + 1
        histogram = self._durations.get(route)
        if histogram is None:
            histogram = self._durations[route] = [0] * (len(DURATION_BUCKETS) + 2)
        histogram[bisect_left(DURATION_BUCKETS, seconds)] += 1
        histogram[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "gracesvc_requests",
            "HTTP responses completed, by route and status code.",
            labels=["route", "code"],
        )
        for (route, code), n in sorted(self._counts.items()):
            requests.add_metric(
                [route.decode("ascii"), str(code)], n, created=self._created
            )
        yield requests
        durations = HistogramMetricFamily(
            "gracesvc_request_duration_seconds",
            "Time from a request fully received to its response completed.",
            labels=["route"],
        )
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for route, histogram in sorted(self._durations.items()):
            cumulative = list(accumulate(histogram[:-1]))
            durations.add_metric(
                [route.decode("ascii")],
                list(zip(bounds, cumulative, strict=False)),
                sum_value=histogram[-1],
            )
        yield durations


class Metrics:
    """
    The metrics of one service, in a registry of their own.

    @ivar registry: what L{MetricsResource} exposes.
    """

    def __init__(self, drain: Drain) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(_DrainCollector(drain))
        self._requests = _RequestCollector()
        self.registry.register(self._requests)

    def requestDone(self, request: Request, seconds: float) -> None:
        """
        Count a completed response.

        @param seconds: from the request fully received to the response
            completed.
        """
        route = request.path if request.path in ROUTES else b"other"
        self._requests.count(route, request.code, seconds)

    def exposition(self) -> bytes:
        """
        @return: the metrics in the Prometheus text format.
        """
        return generate_latest(self.registry)


class MetricsResource(Resource):
    """
    Serves L{Metrics} in the Prometheus text format, on any path.

    Rendered synchronously: C{prometheus_client}'s own Twisted resource runs
    through WSGI in a thread pool and needs the global reactor, for a few
    microseconds of work.
    """

    isLeaf = True

    def __init__(self, metrics: Metrics) -> None:
        super().__init__()
        self.metrics = metrics

    def render_GET(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        return self.metrics.exposition()
