"""
The cost of the drain layer on the ASGI HTTP/1.1 path: server CPU time per
request on a bare ASGI C{GET /hello}, the path with gracesvc's drain
against the same path with a drain that never drains, both built by
C{bench/asgilayer.tac}.

    .venv/bin/python -m bench.asgilayer [--rounds 10] [--duration 4] [--smoke]
    .venv/bin/python -m bench.asgilayer --shipped

What the two servers share: one twistd process each, Twisted's asyncio
reactor on uvloop's loop where uvloop is installed (else asyncio's), as
C{--asgi-loop auto} picks; the same C{ASGIHTTPFactory} (so the same
C{ASGIConnection} and C{Cycle}, with the default header and keep-alive
timeouts) serving the same application, C{bench.asgiapps:app}, its
lifespan run; no metrics, no access log, no HTTP/2, no WebSocket handshake;
the start-up heap frozen once the reactor runs.

What differs, and only that: the drain the factory is given.

  - C{drain}: gracesvc's C{Drain}, as C{twistd gracesvc --asgi} gives it
    (C{gracesvc._wiring}): each connection is added to its set when
    accepted and taken out when closed, which also checks whether the
    drain is done.
  - C{none}: C{NeverDrain}, a C{Drain} whose methods a connection calls do
    nothing (connection opened or closed, request completed or cut, a
    stream to end when it goes away), never started.

The branches of the path that ask the drain whether it is draining or
cutting (a few attribute reads per request) run in both servers alike: the
path has no variant without them, so their cost is not in the figure; nor
is the set of running tasks the application keeps (C{ASGIApp.tasks}, which
the shutdown cancels the leftovers of), which both keep.

Each round starts both servers fresh, pinned to the same core, and loads
them at the same time, one load generator each on the other core, as
C{bench.throughput} does (its machinery, see there): a round's figure is
the no-drain server's CPU time per request divided by the drain server's,
each from its own CPU time (every thread, C{/proc/PID/task/*/schedstat})
over the requests its load generator counted; the headline is the median
over rounds, against the target: the drain costs at most 3 %, a ratio of
at least 0.97.

With C{--shipped} a third server joins each round, for context:
C{twistd -n gracesvc --asgi bench.asgiapps:app --no-access-log} as a user
runs it (metrics, HTTP/2 negotiation, WebSockets, the connection limit),
loaded at the same time as the other two.

Uses wrk (C{apt-get install wrk}) when installed, else a small Python load
generator.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from bench._common import ROOT, machine, startGracesvc, table
from bench.throughput import (
    TARGET,
    Load,
    Round,
    addRoundOptions,
    chooseTool,
    measureRound,
    pinning,
    smokeSizes,
    spread,
)
from gracesvc.testing.process import Twistd, freePort

TAC = os.path.join(ROOT, "bench", "asgilayer.tac")

#: The path with gracesvc's drain, the same path with one that never
#: drains, and gracesvc as shipped (C{--shipped}).
DRAIN, NONE, SHIPPED = "drain", "none", "shipped"

#: The application both servers serve, and the route loaded.
APP = "bench.asgiapps:app"
PATH = "/hello"


def environment(**more: str) -> dict[str, str]:
    """
    @return: this process's environment, the repository first on
        C{PYTHONPATH} (for C{bench.asgiapps}, whatever the server's working
        directory), with C{more}.
    """
    path = os.environ.get("PYTHONPATH")
    return dict(
        os.environ,
        PYTHONPATH=ROOT if not path else f"{ROOT}{os.pathsep}{path}",
        **more,
    )


def startServer(kind: str) -> Twistd:
    """
    Start the server of C{kind} on a free loopback port and wait until it
    serves: C{bench/asgilayer.tac} with its drain (L{DRAIN}) or with none
    (L{NONE}), or C{twistd -n gracesvc --asgi} (L{SHIPPED}).
    """
    if kind == SHIPPED:
        return startGracesvc("--asgi", APP, "--no-access-log", env=environment())
    port = freePort()
    env = environment(GRACESVC_BENCH_PORT=str(port), GRACESVC_BENCH_ASGI_DRAIN=kind)
    twistd = Twistd(TAC, port=port, listen=[], env=env, plugin="-y")
    try:
        return twistd.waitUntilServing()
    except BaseException:
        twistd.kill()
        raise


def loopName() -> str:
    """
    @return: the event loop the servers run on, as C{--asgi-loop auto}
        picks it in this environment.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        return f"uvloop {version('uvloop')}"
    except PackageNotFoundError:
        return "asyncio's own loop (uvloop is not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.asgilayer", description=__doc__.split("\n\n")[0]
    )
    addRoundOptions(parser)
    parser.add_argument(
        "--shipped",
        action="store_true",
        help="also load twistd -n gracesvc --asgi as shipped, side by side in each round",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 3 if the CPU-time ratio is below {TARGET}",
    )
    args = parser.parse_args(argv)
    smokeSizes(args)
    tool = chooseTool(args.tool, "bench.asgilayer")
    if tool is None:
        return 2
    serverCpu, loadCpu = pinning(args.no_pin)
    load = Load(tool, args.connections, loadCpu, path=PATH)
    kinds: tuple[str, ...] = (DRAIN, NONE, SHIPPED) if args.shipped else (DRAIN, NONE)

    print(
        f"bench.asgilayer: {machine()}, load average "
        + ", ".join(f"{x:.2f}" for x in os.getloadavg())
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"GET {PATH} of {APP}, on Twisted's asyncio reactor on {loopName()}; "
        f"{args.connections} keep-alive connections, load: {tool}"
        + (" -t1" if tool == "wrk" else "")
        + (
            f" on core {loadCpu}, servers on core {serverCpu}"
            if serverCpu is not None
            else ", unpinned"
        )
        + f" (one generator per server); {args.rounds} round"
        f"{'s' if args.rounds != 1 else ''}, each fresh servers loaded at "
        f"the same time for {args.duration:g} s after {args.warmup:g} s warm-up"
    )
    print(
        "servers: drain = bench/asgilayer.tac with gracesvc's Drain; none = "
        "the same with NeverDrain"
        + (
            "; shipped = twistd -n gracesvc --asgi --no-access-log"
            if args.shipped
            else ""
        )
    )
    sys.stdout.flush()
    began = time.monotonic()
    rounds = [
        measureRound(load, args.warmup, args.duration, serverCpu, startServer, kinds)
        for _ in range(args.rounds)
    ]

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.1f}"

    def median(f: Callable[[Round], float]) -> float:
        return statistics.median(f(r) for r in rounds)

    cpuRatios = [r.cpuRatio(NONE, DRAIN) for r in rounds]
    rpsRatios = [r.rpsRatio(DRAIN, NONE) for r in rounds]
    ratio = statistics.median(cpuRatios)
    ok = ratio >= TARGET

    headers = [
        "round",
        "drain CPU us/req",
        "no drain CPU us/req",
        "no drain / drain (CPU)",
        "drain req/s",
        "no drain req/s",
    ]
    if args.shipped:
        headers += ["shipped CPU us/req", "no drain / shipped (CPU)", "shipped req/s"]

    def row(label: str, f: Callable[[Callable[[Round], float]], float]) -> list[str]:
        cells = [
            label,
            us(f(lambda r: r.cpuPerRequest(DRAIN))),
            us(f(lambda r: r.cpuPerRequest(NONE))),
            f"{f(lambda r: r.cpuRatio(NONE, DRAIN)):.3f}",
            f"{f(lambda r: r.rps[DRAIN]):.0f}",
            f"{f(lambda r: r.rps[NONE]):.0f}",
        ]
        if args.shipped:
            cells += [
                us(f(lambda r: r.cpuPerRequest(SHIPPED))),
                f"{f(lambda r: r.cpuRatio(NONE, SHIPPED)):.3f}",
                f"{f(lambda r: r.rps[SHIPPED]):.0f}",
            ]
        return cells

    def each(r: Round) -> Callable[[Callable[[Round], float]], float]:
        return lambda f: f(r)

    rows = [row(str(i), each(r)) for i, r in enumerate(rounds, 1)]
    last = row("**median**", median)
    last[3] = f"**{ratio:.3f}** (target >= {TARGET}: {'yes' if ok else 'NO'})"
    rows.append(last)
    print()
    print(table(headers, rows))
    print(
        f"\nserver CPU time per request, no drain / drain: median {ratio:.3f}, "
        f"rounds {spread(cpuRatios)} (target >= {TARGET}, the drain costing at "
        f"most 3 %: {'met' if ok else 'NOT met'})"
    )
    print(
        f"requests per second, drain / no drain: median "
        f"{statistics.median(rpsRatios):.3f}, rounds {spread(rpsRatios)} (moves "
        "with other load on the machine)"
    )
    if args.shipped:
        shipped = [r.cpuRatio(NONE, SHIPPED) for r in rounds]
        print(
            f"server CPU time per request, no drain / shipped gracesvc: median "
            f"{statistics.median(shipped):.3f}, rounds {spread(shipped)} (for "
            "context: the shipped server has metrics, HTTP/2 negotiation and "
            "more, which are not the drain)"
        )
    problems = [
        f"{kind} round {i}: {problem}"
        for i, r in enumerate(rounds, 1)
        for kind, problem in r.problems.items()
        if problem
    ]
    for p in problems:
        print(f"problem: {p}")
    print(
        f"{args.rounds} rounds in {time.monotonic() - began:.0f} s; load average "
        "at the end " + ", ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    if problems or min(n for r in rounds for n in r.requests.values()) <= 0:
        return 1
    if args.check and not ok:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
