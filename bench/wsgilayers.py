"""
Where the cost of C{gracesvc --wsgi} over C{twistd web --wsgi} goes: the
Flask app of C{bench.apps} served layer by layer (C{bench/wsgi.tac}), each
pair of neighbouring layers loaded side by side as C{bench.apps} loads its
pair (L{bench.throughput.measureRound}'s method: fresh pairs each round,
pinned to one core, one wrk each).

    .venv/bin/python -m bench.wsgilayers [--rounds 6] [--duration 3] [PAIR ...]

For each pair: the server CPU time per request of each, their ratio (the
layer below over the layer above: below 1 means the layer costs), and the
context switches per request of each process (every thread's, from
C{/proc/PID/task/*/status}).  CPU time is the whole process's (see
L{bench.throughput.cpuSeconds}); the reactor thread's alone is shown too.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import statistics
import sys
from collections.abc import Sequence

from bench._common import PLAIN_TAC, cores, machine, stopServer, table
from bench.apps import startWSGI
from bench.throughput import Load, cpuSeconds
from gracesvc.testing.process import Twistd, freePort

WSGI_TAC = os.path.join(os.path.dirname(PLAIN_TAC), "wsgi.tac")

#: Named servers: C{twistd web --wsgi}, C{gracesvc --wsgi}, and the layers
#: of C{bench/wsgi.tac} in between (site, resource, pool, root).
SERVERS = {
    "web": None,
    "gracesvc": None,
    "tac-web": "plain,stock,web,bare",
    "pool": "plain,stock,drained,bare",
    "resource": "plain,drained,drained,bare",
    "site": "draining,drained,drained,bare",
    "site-stock": "draining,stock,drained,bare",
    "root": "draining,drained,drained,operational",
}

#: Neighbouring layers, below first.
PAIRS = {
    "aa": ("web", "web"),
    "tac": ("web", "tac-web"),
    "pool": ("tac-web", "pool"),
    "resource": ("pool", "resource"),
    "site": ("resource", "site"),
    "site-stock": ("pool", "site-stock"),
    "root": ("site", "root"),
    "tap": ("root", "gracesvc"),
    "all": ("web", "gracesvc"),
}


def start(name: str) -> Twistd:
    layers = SERVERS[name]
    if layers is None:
        return startWSGI(name)
    port = freePort()
    env = dict(os.environ, GRACESVC_BENCH_PORT=str(port), GRACESVC_BENCH_WSGI=layers)
    twistd = Twistd(WSGI_TAC, port=port, listen=[], env=env, plugin="-y")
    try:
        return twistd.waitUntilServing(path="/hello")
    except BaseException:
        twistd.kill()
        raise


def mainThreadSeconds(pid: int) -> float:
    """
    @return: the CPU time of process C{pid}'s main thread, the reactor's.
    """
    with open(f"/proc/{pid}/schedstat") as f:
        return int(f.read().split()[0]) / 1e9


def contextSwitches(pid: int) -> int:
    """
    @return: the voluntary and involuntary context switches of every
        thread of process C{pid} still alive.
    """
    total = 0
    for status in glob.glob(f"/proc/{pid}/task/*/status"):
        try:
            with open(status) as f:
                for line in f:
                    if line.endswith("ctxt_switches:", 0, line.find(":") + 1):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def measurePair(
    load: Load, names: tuple[str, str], warmup: float, duration: float, cpu: int | None
) -> list[tuple[float, float, float]]:
    """
    @return: (CPU seconds per request, of the reactor's thread, context
        switches) per request of each server of C{names}, loaded at the
        same time.
    """
    servers: list[Twistd] = []
    try:
        for name in names:
            servers.append(start(name))
            if cpu is not None:
                os.sched_setaffinity(servers[-1].pid, {cpu})
        ports = [s.port for s in servers]
        load.runTogether(ports, warmup)
        cpuBefore = [cpuSeconds(s.pid) for s in servers]
        mainBefore = [mainThreadSeconds(s.pid) for s in servers]
        switchesBefore = [contextSwitches(s.pid) for s in servers]
        runs = load.runTogether(ports, duration)
        result = []
        for s, (_, requests, problems), c, m, w in zip(
            servers, runs, cpuBefore, mainBefore, switchesBefore, strict=True
        ):
            if problems or not requests:
                raise RuntimeError(f"load problems: {problems or 'no requests'}")
            result.append(
                (
                    (cpuSeconds(s.pid) - c) / requests,
                    (mainThreadSeconds(s.pid) - m) / requests,
                    (contextSwitches(s.pid) - w) / requests,
                )
            )
        return result
    finally:
        for s in servers:
            stopServer(s)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.wsgilayers", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("pairs", nargs="*", choices=[[], *PAIRS], default=[])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    args = parser.parse_args(argv)
    pin = cores() >= 2
    serverCpu, loadCpu = (0, 1) if pin else (None, None)
    tool = "wrk" if shutil.which("wrk") else "python"
    load = Load(tool, 10, loadCpu, path="/hello")
    print(f"bench.wsgilayers: {machine()}")
    rows = []
    for pair in args.pairs or list(PAIRS):
        below, above = PAIRS[pair]
        rounds = [
            measurePair(load, (below, above), args.warmup, args.duration, serverCpu)
            for _ in range(args.rounds)
        ]
        ratios = [b[0] / a[0] for b, a in rounds]
        mainRatios = [b[1] / a[1] for b, a in rounds]
        rows.append(
            (
                pair,
                f"{below} / {above}",
                f"{statistics.median(b[0] for b, _ in rounds) * 1e6:.0f} / "
                f"{statistics.median(a[0] for _, a in rounds) * 1e6:.0f}",
                f"{statistics.median(ratios):.3f} "
                f"({min(ratios):.3f}-{max(ratios):.3f})",
                f"{statistics.median(mainRatios):.3f}",
                f"{statistics.median(b[2] for b, _ in rounds):.2f} / "
                f"{statistics.median(a[2] for _, a in rounds):.2f}",
            )
        )
        print(" | ".join(rows[-1]), flush=True)
    print()
    print(
        table(
            [
                "pair",
                "below / above",
                "CPU us/req",
                "CPU ratio below/above (rounds)",
                "reactor thread's CPU ratio",
                "ctx switches/req",
            ],
            rows,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
