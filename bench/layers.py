"""
Where the drain layer's cost goes, per request, measured in one process:
CPU time of C{GET /ping} pushed through a server channel over an in-memory
transport, for the plain C{Site} of C{bench/plain.tac}, for a
C{DrainingSite} alone (the drain layer, no metrics), and for the site
C{twistd -n gracesvc} builds (C{gracesvc.tap.makeService}).

    .venv/bin/python -m bench.layers [--rounds 15] [--requests 3000] [--smoke]

No sockets and no reactor, so no system calls: the absolute cost is about a
third of a real request's, and the share of the layer is about three times
larger than C{bench.throughput} can see.  What it is for: a figure that
barely moves with other load on the machine (it takes the least CPU time of
C{--rounds} runs), to tell which layer costs what.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.web.resource import IResource
from twisted.web.server import Site

from bench._common import machine, table
from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.demo import GraceApp
from gracesvc._core.drain import Drain
from gracesvc._process.service import GracefulService
from gracesvc._protocols.site import DrainingSite

REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class ReactorClock(Clock):
    """
    A L{Clock} whose C{seconds} is C{time.time}, a C function, as the real
    reactor's is: C{Clock.seconds} is a Python method, and a layer that reads
    the time (the drain layer does, twice per request) would be charged for
    that call, which twistd does not make.
    """

    seconds = staticmethod(time.time)


def demo(clock: Clock, drain: Drain) -> IResource:
    """
    @return: the demo app behind the operational routes, as twistd's
        gracesvc serves it.
    """
    return withOperationalRoutes(GraceApp(clock, drain, 0).resource(), drain, None)


def plainSite(clock: Clock) -> Site:
    return Site(demo(clock, Drain(clock)), reactor=clock)


def drainingSite(clock: Clock) -> Site:
    drain = Drain(clock)
    return DrainingSite(demo(clock, drain), drain, reactor=clock)


def shippedSite(clock: Clock) -> Site:
    from gracesvc.tap import Options, makeService

    options = Options(reactor=clock)
    options.parseOptions(["--ping-delay", "0", "--listen", "tcp:0:interface=127.0.0.1"])
    # makeService starts catching SIGINT and SIGTERM for twistd's start-up;
    # this process keeps its own handlers.
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        service = makeService(options)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert isinstance(service, GracefulService)
    site = service.factory
    assert isinstance(site, Site)
    return site


VARIANTS: list[tuple[str, Callable[[Clock], Site]]] = [
    ("plain Site (bench/plain.tac)", plainSite),
    ("DrainingSite, drain layer only", drainingSite),
    ("as twistd -n gracesvc builds it", shippedSite),
]


def perRequest(makeSite: Callable[[Clock], Site], requests: int) -> float:
    """
    @return: CPU seconds per request through a fresh channel of a fresh site.
    """
    site = makeSite(ReactorClock())
    site.logPath = "/dev/null"  # both log alike, to nowhere
    site.startFactory()
    try:
        channel: Any = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 40000))
        transport = StringTransport()
        channel.makeConnection(transport)
        for _ in range(200):
            channel.dataReceived(REQUEST)
            transport.clear()
        if b"pong" not in transport.value() and not _answers(channel, transport):
            raise RuntimeError("the site does not answer GET /ping")
        gc.collect()
        began = time.process_time()
        for _ in range(requests):
            channel.dataReceived(REQUEST)
            transport.clear()
        return (time.process_time() - began) / requests
    finally:
        site.stopFactory()


def _answers(channel: Any, transport: StringTransport) -> bool:
    channel.dataReceived(REQUEST)
    answered = b'{"message": "pong"}' in transport.value()
    transport.clear()
    return answered


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.layers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="runs of each variant, interleaved (default 15)",
    )
    parser.add_argument(
        "--requests", type=int, default=3000, help="requests per run (default 3000)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="a few requests: does it still work?"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.requests = 2, 200

    print(
        f"bench.layers: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"GET /ping, in memory; least CPU time of {args.rounds} interleaved runs of {args.requests} requests"
    )
    sys.stdout.flush()
    best = {name: float("inf") for name, _ in VARIANTS}
    for _ in range(args.rounds):
        for name, makeSite in VARIANTS:
            best[name] = min(best[name], perRequest(makeSite, args.requests))
    base = best[VARIANTS[0][0]]
    rows = [
        (name, f"{cost * 1e6:.1f}", f"{(cost - base) * 1e6:+.1f}", f"{base / cost:.3f}")
        for name, cost in best.items()
    ]
    print()
    print(table(["server", "CPU us/request", "vs plain (us)", "plain / this"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
