# -*- test-case-name: tests.unit.metrics.test_registry -*-
"""
Prometheus metrics: what is in flight, and what each drain did.

Everything about connections and the drain is read from the L{Drain} when
Prometheus scrapes, so it costs nothing per request and can never drift from
what the drain itself believes.  Only the request counter and the duration
histogram are updated per request.

Requests are counted by route: the route the application matched (a Klein
rule such as C{/users/<int:id>}, a Flask rule, a static child of a resource
tree), never the raw path, so that scanners cannot blow up the number of
series.  Whoever hands a request to the application records how its route
is to be found, with L{labelRoute}; it is looked up once, when the response
is complete (L{routeOf}).  A request nobody labelled (one answered before
it reached an application, say) is counted as L{OTHER_ROUTE}: the registry
knows no application's paths.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from itertools import accumulate
from typing import Any

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
from twisted.logger import Logger
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from gracesvc._core.drain import Drain
from gracesvc._core.tally import LONGLIVED_OUTCOMES

#: The route label of a request that matched no route, or whose route
#: cannot be known.
OTHER_ROUTE = "other"

#: A route label, or how to find it once the response is complete.
RouteLabel = str | Callable[[Any], str]

_ROUTE_ATTRIBUTE = "_gracesvcRoute"

log = Logger()


def labelRoute(request: IRequest | Request, label: RouteLabel) -> None:
    """
    Record the route C{request} is counted under: a label, or a function
    that finds it from the request once the response is complete (the
    application may only match its route while it answers).  The last one
    recorded wins, so a resource deeper in the tree may refine its
    parent's.

    Keep the labels few: one per route of the application, not per path.
    """
    setattr(request, _ROUTE_ATTRIBUTE, label)


def routeOf(request: IRequest | Request) -> str:
    """
    @return: the route label of C{request}: what L{labelRoute} recorded,
        L{OTHER_ROUTE} if nothing was.  A label function that raises is
        logged and counts as L{OTHER_ROUTE}.
    """
    label: RouteLabel | None = getattr(request, _ROUTE_ATTRIBUTE, None)
    if isinstance(label, str):
        return label
    if label is None:
        return OTHER_ROUTE
    try:
        return label(request)
    except Exception:
        log.failure("finding the route of a request failed")
        return OTHER_ROUTE


#: The connection states always reported, even when no connection is in one.
CONNECTION_STATES = (
    "idle",
    "receiving",
    "busy",
    "stream",
    "poll",
    "websocket",
    "closing",
)

#: The outcomes always reported for each kind of long-lived connection in
#: C{gracesvc_drain_longlived_total}, even before any ended so.
LONG_LIVED_OUTCOMES = {
    "websocket": LONGLIVED_OUTCOMES,
    "stream": ("clean", "cut"),
    "poll": ("clean", "cut"),
}


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
            "busy (a request being answered), stream (answering with an event "
            "stream), poll (a long poll waiting), websocket (upgraded), closing.",
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
        longLived = CounterMetricFamily(
            "gracesvc_drain_longlived",
            "Long-lived connections in progress when a drain began, by kind "
            "(websocket, stream, poll) and how they ended: clean (wrapped up in "
            "time after being told to go away), timeout (aborted at its close "
            "timeout), cut (aborted or answered 503 at the cut, the cap or a "
            "second signal).",
            labels=["kind", "outcome"],
        )
        ended = {
            (kind, outcome): 0
            for kind, outcomes in LONG_LIVED_OUTCOMES.items()
            for outcome in outcomes
        }
        ended.update(drain.longLived.outcomes)
        for (kind, outcome), count in sorted(ended.items()):
            longLived.add_metric([kind, outcome], count)
        yield longLived
        yield CounterMetricFamily(
            "gracesvc_ws_sends_dropped_after_close",
            "WebSocket messages and pings the application sent after the "
            "connection's Close: dropped (RFC 6455 forbids them), not raised.",
            value=drain.longLived.sendsDropped.get("websocket", 0),
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
_FIRST_BOUND = DURATION_BUCKETS[0]


#: Status codes below this are counted in a list indexed by the code.
_LISTED_CODES = 600


class _RouteCounts:
    """
    The counts of one route label: responses by status code, and the
    duration histogram.

    Lists indexed by the status code and the bucket: CPython 3.11 updates
    a list item with specialized instructions, for about a third of what a
    dictionary update costs.
    """

    __slots__ = ("codes", "otherCodes", "histogram", "sum")

    def __init__(self) -> None:
        #: responses by status code, for codes from 0 to L{_LISTED_CODES} - 1.
        self.codes = [0] * _LISTED_CODES
        #: responses with any other status code (Twisted accepts any int).
        self.otherCodes: dict[int, int] = {}
        #: a count per bucket of L{DURATION_BUCKETS}, the last one +Inf.
        self.histogram = [0] * (len(DURATION_BUCKETS) + 1)
        self.sum = 0.0

    def byCode(self) -> list[tuple[int, int]]:
        """
        @return: (status code, responses) for every code seen, sorted.
        """
        counts = [(code, n) for code, n in enumerate(self.codes) if n]
        return sorted(counts + list(self.otherCodes.items()))


class _RequestCollector(Collector):
    """
    The per-request counter and histogram, kept as plain numbers and turned
    into metric families when Prometheus scrapes.

    Everything runs in the reactor thread (the scrape too, see
    L{MetricsResource}), so no lock is needed, where C{prometheus_client}'s
    C{Counter} and C{Histogram} take a lock per value updated.  The counting
    itself is L{Metrics.requestDone}'s.
    """

    def __init__(self) -> None:
        self._created = time.time()
        #: route label -> its counts, added by the first response counted.
        self.routes: dict[str, _RouteCounts] = {}

    def collect(self) -> Iterator[Metric]:
        routes = sorted(self.routes.items())
        requests = CounterMetricFamily(
            "gracesvc_requests",
            "HTTP responses completed, by route and status code.",
            labels=["route", "code"],
        )
        for route, counts in routes:
            for code, n in counts.byCode():
                requests.add_metric([route, str(code)], n, created=self._created)
        yield requests
        durations = HistogramMetricFamily(
            "gracesvc_request_duration_seconds",
            "Time from a request fully received to its response completed.",
            labels=["route"],
        )
        bounds = [floatToGoString(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for route, counts in routes:
            durations.add_metric(
                [route],
                list(zip(bounds, accumulate(counts.histogram), strict=True)),
                sum_value=counts.sum,
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
        requests = _RequestCollector()
        self.registry.register(requests)
        self._routes = requests.routes

    def requestDone(self, request: Request, seconds: float) -> None:
        """
        Count a completed response, under its route (see L{routeOf}).

        @param seconds: from the request fully received to the response
            completed.
        """
        # Every response comes here, so it finds the route as routeOf does
        # without calling it: each call is a good part of the cost.
        label: RouteLabel | None = getattr(request, _ROUTE_ATTRIBUTE, None)
        if isinstance(label, str):
            route = label
        elif label is None:
            route = OTHER_ROUTE
        else:
            try:
                route = label(request)
            except Exception:
                log.failure("finding the route of a request failed")
                route = OTHER_ROUTE
        self.responseDone(route, request.code, seconds)

    def responseDone(self, route: str, code: int, seconds: float) -> None:
        """
        Count a completed response whose route label is known already (the
        ASGI path's, which has no L{Request}; and L{requestDone}'s once it
        found it).

        @param seconds: from the request received to the response completed.
        """
        counts = self._routes.get(route)
        if counts is None:
            counts = self._routes[route] = _RouteCounts()
        if 0 <= code < _LISTED_CODES:
            counts.codes[code] += 1
        else:
            counts.otherCodes[code] = counts.otherCodes.get(code, 0) + 1
        # Most responses fall in the first bucket: no bisection for them.
        if seconds <= _FIRST_BOUND:
            counts.histogram[0] += 1
        else:
            counts.histogram[bisect_left(DURATION_BUCKETS, seconds)] += 1
        counts.sum += seconds

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
