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
from gracesvc._process.accepting import AcceptTally
from gracesvc._protocols.deadlines import ClientTally
from gracesvc._protocols.h2 import H2Tally
from gracesvc._protocols.limits import ConnectionLimit


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


# What clients of the open internet were refused or timed out.

#: The kinds of deadline always reported, even before any ran out (see
#: L{ClientTally}).
TIMEOUT_KINDS = (
    "header",
    "body",
    "silent",
    "handshake",
    "keepalive",
    "write",
    "buffer",
)


class ClientCollector(Collector):
    """
    The deadlines, the connection limit and the accept errors of a
    process, read from their plain tallies when Prometheus scrapes.
    """

    def __init__(
        self,
        tally: ClientTally,
        limit: ConnectionLimit | None,
        accepts: AcceptTally,
    ) -> None:
        self.tally = tally
        self.limit = limit
        self.accepts = accepts

    def collect(self) -> Iterator[Metric]:
        timeouts = CounterMetricFamily(
            "gracesvc_client_timeouts",
            "Connections closed by a deadline, by kind: header (a request head "
            "not complete within --header-timeout: 408), body (a request body "
            "stalled for --keep-alive-timeout: 408), silent (no request within "
            "--header-timeout), handshake (TLS), keepalive (idle), write (a "
            "client that took nothing for --write-timeout), buffer (a "
            "WebSocket client past --ws-write-limit).",
            labels=["kind"],
        )
        counts = self.tally.timeouts
        for kind in sorted(set(TIMEOUT_KINDS) | set(counts)):
            timeouts.add_metric([kind], counts.get(kind, 0))
        yield timeouts
        refused = CounterMetricFamily(
            "gracesvc_connections_refused",
            "Connections refused past --max-connections: answered (503 with "
            "Retry-After, or GOAWAY for HTTP/2) or, past a tenth over it, "
            "dropped (closed at once).",
            labels=["reason"],
        )
        limit = self.limit
        refused.add_metric(["answered"], 0 if limit is None else limit.refused)
        refused.add_metric(["dropped"], 0 if limit is None else limit.dropped)
        yield refused
        if limit is not None:
            yield GaugeMetricFamily(
                "gracesvc_connection_limit",
                "The most connections served at once (--max-connections).",
                value=limit.maximum,
            )
        errors = CounterMetricFamily(
            "gracesvc_accept_errors",
            "Connections turned away at the accept, by error (EMFILE: out of "
            "file descriptors; accepted and closed at once, or left queued).",
            labels=["error"],
        )
        for error in sorted(set(self.accepts.refused) | {"EMFILE"}):
            errors.add_metric([error], self.accepts.refused.get(error, 0))
        yield errors


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
