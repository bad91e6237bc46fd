# -*- test-case-name: tests.unit.protocols.test_h2 -*-
"""
The Prometheus collectors of what the protocols and the workers tally: the
protocols keep plain counts, and only this package knows Prometheus.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.registry import Collector

from gracesvc._core.drain import Drain
from gracesvc._protocols.h2 import H2Tally


class H2Collector(Collector):
    """
    The HTTP/2 metrics, read from an L{H2Tally} and the L{Drain} when
    Prometheus scrapes.
    """

    def __init__(self, drain: Drain, tally: H2Tally) -> None:
        self.drain = drain
        self.tally = tally

    def collect(self) -> Iterator[Metric]:
        tally = self.tally
        goAways = CounterMetricFamily(
            "gracesvc_h2_goaway_sent",
            "HTTP/2 GOAWAY frames sent by the quiet drain, one per connection "
            "at most, by how it came: acked (on the ACK of the PING sent once "
            "no dispatched stream was open), timer (that PING unanswered in "
            "time), abort (at the cap or on a second signal).",
            labels=["phase"],
        )
        for phase, n in sorted(tally.goAways.items()):
            goAways.add_metric([phase], n)
        yield goAways
        yield CounterMetricFamily(
            "gracesvc_h2_streams_parked",
            "HTTP/2 streams a draining connection never dispatched: above its "
            "GOAWAY's last stream id, their clients retry them elsewhere.",
            value=tally.parked,
        )
        yield CounterMetricFamily(
            "gracesvc_h2_streams_refused",
            "HTTP/2 streams answered RST_STREAM(REFUSED_STREAM) at the cut, "
            "their request not yet handed to the application.  The client may "
            "retry them elsewhere.",
            value=tally.refused,
        )
        closed = CounterMetricFamily(
            "gracesvc_h2_connections_closed_for",
            "HTTP/2 connections closed for what their client did: "
            "protocol_error, rapid_reset (too many stream resets), "
            "control_flood (too many SETTINGS, PING, PRIORITY or other "
            "frames with no stream), preface_timeout.",
            labels=["reason"],
        )
        for reason, n in sorted(tally.closedFor.items()):
            closed.add_metric([reason], n)
        yield closed
        cancelled = CounterMetricFamily(
            "gracesvc_h2_streams_cancelled",
            "HTTP/2 streams reset (CANCEL) because their client did not read: "
            "buffer (more written while blocked than allowed), stalled "
            "(blocked too long).",
            labels=["reason"],
        )
        for reason, n in sorted(tally.streamsCancelled.items()):
            cancelled.add_metric([reason], n)
        yield cancelled
        roundTrips = SummaryMetricFamily(
            "gracesvc_h2_ping_rtt_seconds",
            "Round trips of the drain's PING (sent once no dispatched stream "
            "is open; its ACK brings the GOAWAY).",
            count_value=tally.pingAcks,
            sum_value=tally.pingRoundTrips,
        )
        yield roundTrips
        byProtocol = GaugeMetricFamily(
            "gracesvc_open_connections_by_protocol",
            "Open connections, by protocol: http/1.1 (WebSockets included) or h2.",
            labels=["protocol"],
        )
        h2open = min(tally.open, self.drain.connections)
        byProtocol.add_metric(["http/1.1"], self.drain.connections - h2open)
        byProtocol.add_metric(["h2"], h2open)
        yield byProtocol


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
