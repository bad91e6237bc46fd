"""
The cost of the drain layer: server CPU time per request on C{GET /ping}
with C{--ping-delay 0}, C{twistd -n gracesvc} against the same Klein
routes served by a plain C{Site} with no drain layer (C{bench/plain.tac}),
both under twistd and both logging access lines alike.

    .venv/bin/python -m bench.throughput [--rounds 10] [--duration 4] [--smoke]
    .venv/bin/python -m bench.throughput --against REV

With C{--against REV} a third server joins each round: C{twistd -n
gracesvc} from the git revision C{REV} (extracted with C{git archive} into
C{bench/out/}), loaded at the same time as the other two, so that a change
to the code is measured against what it changed, side by side in one run
(REV's CPU time per request / this checkout's).

Each round starts a fresh gracesvc and a fresh plain server side by side,
pinned to the same core, and loads both at the same time, one load
generator each, for C{--duration} seconds after C{--warmup}: whatever
else runs on the machine meanwhile falls on both alike.  (Loading them in
turn, even ABBA, let a disturbance that came and went with the rounds'
rhythm, such as a test suite running beside them, tilt whole runs either
way.)
A round's figure is plain's CPU time per request divided by gracesvc's,
each from the server's own CPU time, all its threads
(C{/proc/PID/task/*/schedstat}, nanoseconds)
over the requests its load generator counted; the headline is the median
over rounds.  A fresh pair per round also samples another CPython memory
layout each time, which alone moves a process's cost by a few tenths of a
percent (see C{bench.instructions}).

Requests per second are printed too: with both servers on one core they
share it, and their ratio follows the CPU-time ratio, but the rate itself
follows every change of the machine's load.

Uses wrk (C{apt-get install wrk}) when installed, else a small Python load
generator.  On a machine with two cores or more, the servers are pinned to
core 0 and the load generators to core 1.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench._common import (
    DEFAULT_OUT,
    ROOT,
    cores,
    machine,
    startGracesvc,
    startServer,
    stopServer,
    table,
)
from bench._net import pythonLoad
from gracesvc.testing.process import Twistd

TARGET = 0.97
INSTALL_WRK = (
    "wrk is not installed; for figures worth publishing install it "
    "(Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)"
)


def accessLine(path: str) -> re.Pattern[bytes]:
    """
    @return: what matches the access log line of a C{GET path} answered 200.
    """
    return re.compile(b'"GET ' + re.escape(path.encode("ascii")) + b' HTTP/1\\.1" 200 ')


class Load:
    """
    One load generator, pinned to C{cpu} if given.
    """

    def __init__(
        self, tool: str, connections: int, cpu: int | None, path: str = "/ping"
    ) -> None:
        self.tool = tool
        self.connections = connections
        self.cpu = cpu
        self.path = path

    def run(self, port: int, duration: float) -> tuple[float, int, str]:
        """
        @return: (requests per second, requests answered, problems).
        """
        if self.tool == "wrk":
            return self._wrk(port, duration)
        return self._python(port, duration)

    def runTogether(
        self, ports: Sequence[int], duration: float
    ) -> list[tuple[float, int, str]]:
        """
        Load every port in C{ports} at the same time, one generator each.

        @return: what L{run} returns, for each port.
        """
        results: list[tuple[float, int, str]] = [(0.0, 0, "not run")] * len(ports)

        def one(i: int) -> None:
            results[i] = self.run(ports[i], duration)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(ports))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return results

    def _wrk(self, port: int, duration: float) -> tuple[float, int, str]:
        argv = [
            "wrk",
            "-t1",
            f"-c{self.connections}",
            f"-d{max(1, round(duration))}s",
            f"http://127.0.0.1:{port}{self.path}",
        ]
        if self.cpu is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(self.cpu)] + argv
        out = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30
        ).stdout
        rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
        total = re.search(r"(\d+) requests in", out)
        problems = []
        for pattern in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: [^\n]+"):
            found = re.search(pattern, out)
            if found:
                problems.append(found.group(0))
        if rps is None or total is None:
            return 0.0, 0, f"wrk printed no figures: {out!r}"
        return float(rps.group(1)), int(total.group(1)), "; ".join(problems)

    def _python(self, port: int, duration: float) -> tuple[float, int, str]:
        before = os.sched_getaffinity(0)
        try:
            if self.cpu is not None:
                os.sched_setaffinity(0, {self.cpu})
            answered, elapsed = pythonLoad(port, self.path, self.connections, duration)
        finally:
            os.sched_setaffinity(0, before)
        return answered / elapsed, answered, ""


@dataclass
class Round:
    """
    One fresh gracesvc and one fresh plain server, loaded at the same time.
    """

    rps: dict[str, float] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)
    accessPerRequest: dict[str, float] = field(default_factory=dict)
    #: access log lines beyond the requests wrk counted: requests in flight
    #: when a wrk run stopped, at most one per connection and run.
    accessExtra: dict[str, int] = field(default_factory=dict)

    def cpuPerRequest(self, kind: str) -> float:
        requests = self.requests.get(kind, 0)
        return self.cpu[kind] / requests if requests else 0.0

    def cpuRatio(self, kind: str = "plain", to: str = "gracesvc") -> float:
        """
        @return: C{kind}'s CPU time per request / C{to}'s.
        """
        base = self.cpuPerRequest(to)
        return self.cpuPerRequest(kind) / base if base else 0.0

    def rpsRatio(self, kind: str = "gracesvc", to: str = "plain") -> float:
        """
        @return: C{kind}'s requests per second / C{to}'s.
        """
        base = self.rps.get(to, 0.0)
        return self.rps.get(kind, 0.0) / base if base else 0.0


KINDS = ("gracesvc", "plain")

#: The kind of the server from another revision (C{--against}).
AGAINST = "against"


def checkoutOf(revision: str) -> str:
    """
    @return: a directory holding the tree of git C{revision} of this
        checkout, extracted once into C{bench/out/}.
    """
    commit = subprocess.run(
        ["git", "rev-parse", "--verify", f"{revision}^{{commit}}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    directory = os.path.join(DEFAULT_OUT, f"against-{commit[:12]}")
    if not os.path.isdir(directory):
        os.makedirs(DEFAULT_OUT, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", "--format=tar", commit],
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
        partial = directory + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(partial, filter="data")
        os.rename(partial, directory)
    return directory


def startAgainst(checkout: str) -> Twistd:
    """
    Start C{twistd -n gracesvc} from C{checkout} (see L{checkoutOf}): its
    C{gracesvc} package and twistd plugin come first on the path.
    """
    path = os.environ.get("PYTHONPATH")
    env = dict(
        os.environ,
        PYTHONPATH=checkout if not path else f"{checkout}{os.pathsep}{path}",
    )
    return startGracesvc("--ping-delay", "0", env=env)


def measureRound(
    load: Load,
    warmup: float,
    duration: float,
    serverCpu: int | None,
    start: Callable[[str], Twistd] | None = None,
    kinds: Sequence[str] = KINDS,
) -> Round:
    """
    Start the servers, warm them, load them all at once, stop them.

    @param start: starts the server of a kind (C{"gracesvc"} or
        C{"plain"}); L{startServer} with no ping delay if L{None}.
    @param kinds: the kinds of server, each loaded by a generator of its
        own.
    """
    servers: dict[str, Twistd] = {}
    result = Round()
    served = dict.fromkeys(kinds, 0)
    try:
        for kind in kinds:
            servers[kind] = startServer(kind, 0.0) if start is None else start(kind)
            if serverCpu is not None:
                os.sched_setaffinity(servers[kind].pid, {serverCpu})
        ports = [servers[kind].port for kind in kinds]
        for kind, (_, requests, _) in zip(
            kinds, load.runTogether(ports, warmup), strict=True
        ):
            served[kind] += requests
        before = {kind: cpuSeconds(servers[kind].pid) for kind in kinds}
        runs = load.runTogether(ports, duration)
        for kind, (rps, requests, problems) in zip(kinds, runs, strict=True):
            result.cpu[kind] = cpuSeconds(servers[kind].pid) - before[kind]
            result.rps[kind], result.requests[kind] = rps, requests
            result.problems[kind] = problems
            served[kind] += requests
    finally:
        logs = {kind: stopServer(twistd) for kind, twistd in servers.items()}
    for kind, log in logs.items():
        lines = len(accessLine(load.path).findall(log.encode("utf-8")))
        result.accessPerRequest[kind] = lines / served[kind] if served[kind] else 0.0
        result.accessExtra[kind] = lines - served[kind]
    return result


def cpuSeconds(pid: int) -> float:
    """
    @return: the CPU time process C{pid} has used so far, all its threads
        together: the sum of each thread's C{/proc/PID/task/TID/schedstat}
        (nanoseconds) where the kernel keeps it, else user + system time
        from C{/proc/PID/stat} (clock ticks).

    C{/proc/PID/schedstat} alone is the main thread's: a WSGI server's
    application runs in its pool's threads, about half its CPU time, which
    that figure leaves out.  A thread that ends between two readings takes
    its time with it; the pools measured here keep their threads while
    they are loaded.
    """
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total += int(f.read().split()[0])
            except FileNotFoundError:
                # The thread ended since the listing.
                continue
        if total:
            return total / 1e9
    except (OSError, IndexError, ValueError):
        pass
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spread(values: Sequence[float]) -> str:
    return f"{min(values):.3f}-{max(values):.3f}" if len(values) > 1 else "-"


def addRoundOptions(parser: argparse.ArgumentParser) -> None:
    """
    Add the options of a benchmark made of L{measureRound}s: C{--rounds},
    C{--duration}, C{--warmup}, C{--connections}, C{--tool}, C{--no-pin}
    and C{--smoke} (see L{smokeSizes}).
    """
    parser.add_argument(
        "--rounds",
        type=int,
        default=10,
        help="rounds, each with a fresh pair of servers (default 10)",
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=4.0,
        help="seconds measured per round (default 4)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load on each fresh server before it is measured (default 1)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=10,
        help="keep-alive connections (default 10)",
    )
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin servers and load to cores"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one short round: does it still work?"
    )


def smokeSizes(args: argparse.Namespace) -> None:
    """
    With C{--smoke}, one short round: does it still work?
    """
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3


def chooseTool(requested: str, prog: str) -> str | None:
    """
    @param requested: C{--tool}: C{wrk}, C{python}, or C{auto} for wrk
        where it is installed.
    @param prog: the benchmark's name, to begin what it says.
    @return: the load generator to use (C{"wrk"} or C{"python"}), having
        said why if it falls back to Python's; L{None} if wrk was asked
        for and is not installed (said on standard error).
    """
    if requested in ("auto", "wrk") and shutil.which("wrk") is None:
        if requested == "wrk":
            print(f"{prog}: {INSTALL_WRK}.", file=sys.stderr)
            return None
        print(
            f"{prog}: {INSTALL_WRK}. Falling back to the Python load "
            "generator: it may saturate before the server does, which pulls the "
            "req/s ratio towards 1 (the CPU-time ratio is still right)."
        )
        return "python"
    return "wrk" if requested == "auto" else requested


def pinning(noPin: bool) -> tuple[int | None, int | None]:
    """
    @param noPin: C{--no-pin}.
    @return: the core the servers are pinned to and the core the load
        generators are pinned to: 0 and 1 on a machine with two cores or
        more, unless C{noPin}; else L{None} and L{None}.
    """
    if noPin or cores() < 2:
        return None, None
    return 0, 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    addRoundOptions(parser)
    parser.add_argument(
        "--against",
        metavar="REV",
        help="also load gracesvc of this git revision, side by side in each round",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"exit 3 if the CPU-time ratio is below {TARGET}",
    )
    args = parser.parse_args(argv)
    smokeSizes(args)
    tool = chooseTool(args.tool, "bench.throughput")
    if tool is None:
        return 2
    serverCpu, loadCpu = pinning(args.no_pin)
    pin = serverCpu is not None
    load = Load(tool, args.connections, loadCpu)

    print(
        f"bench.throughput: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"GET /ping, --ping-delay 0, {args.connections} keep-alive connections, load: {tool}"
        + (" -t1" if tool == "wrk" else "")
        + (f" on core {loadCpu}, servers on core {serverCpu}" if pin else ", unpinned")
        + f" (one generator per server); {args.rounds} round"
        f"{'s' if args.rounds != 1 else ''}, each a fresh pair of servers loaded at "
        f"the same time for {args.duration:g} s after {args.warmup:g} s warm-up"
    )
    kinds: tuple[str, ...] = KINDS
    start: Callable[[str], Twistd] | None = None
    if args.against is not None:
        checkout = checkoutOf(args.against)
        kinds = (*KINDS, AGAINST)

        def start(kind: str) -> Twistd:
            if kind == AGAINST:
                return startAgainst(checkout)
            return startServer(kind, 0.0)

        print(f"against: gracesvc of {args.against}, from {checkout}")
    sys.stdout.flush()
    began = time.monotonic()
    rounds = [
        measureRound(load, args.warmup, args.duration, serverCpu, start, kinds)
        for _ in range(args.rounds)
    ]

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.1f}"

    rows = [
        (
            str(i),
            us(r.cpuPerRequest("gracesvc")),
            us(r.cpuPerRequest("plain")),
            f"{r.cpuRatio():.3f}",
            f"{r.rps['gracesvc']:.0f}",
            f"{r.rps['plain']:.0f}",
            f"{r.rpsRatio():.3f}",
        )
        for i, r in enumerate(rounds, 1)
    ]
    cpuRatios = [r.cpuRatio() for r in rounds]
    rpsRatios = [r.rpsRatio() for r in rounds]
    ratio = statistics.median(cpuRatios)
    ok = ratio >= TARGET

    def median(f: Callable[[Round], float]) -> float:
        return statistics.median(f(r) for r in rounds)

    rows.append(
        (
            "**median**",
            us(median(lambda r: r.cpuPerRequest("gracesvc"))),
            us(median(lambda r: r.cpuPerRequest("plain"))),
            f"**{ratio:.3f}** (target >= {TARGET}: {'yes' if ok else 'NO'})",
            f"{median(lambda r: r.rps['gracesvc']):.0f}",
            f"{median(lambda r: r.rps['plain']):.0f}",
            f"{statistics.median(rpsRatios):.3f}",
        )
    )
    print()
    print(
        table(
            [
                "round",
                "gracesvc CPU us/req",
                "plain CPU us/req",
                "plain / gracesvc (CPU)",
                "gracesvc req/s",
                "plain req/s",
                "gracesvc / plain (req/s)",
            ],
            rows,
        )
    )
    print(
        f"\nserver CPU time per request, plain / gracesvc: median {ratio:.3f}, "
        f"rounds {spread(cpuRatios)}"
    )
    if args.against is not None:
        againstRatios = [r.cpuRatio(AGAINST) for r in rounds]
        print(
            f"server CPU time per request, gracesvc of {args.against} / this "
            f"gracesvc: median {statistics.median(againstRatios):.3f}, rounds "
            f"{spread(againstRatios)}; per request: "
            f"{us(median(lambda r: r.cpuPerRequest(AGAINST)))} us against "
            f"{us(median(lambda r: r.cpuPerRequest('gracesvc')))} us"
        )
    print(
        f"requests per second, gracesvc / plain: median "
        f"{statistics.median(rpsRatios):.3f}, rounds {spread(rpsRatios)} (moves "
        "with other load on the machine)"
    )
    access = {
        k: statistics.median(r.accessPerRequest[k] for r in rounds) for k in KINDS
    }
    print(
        f"access log lines per request: gracesvc {access['gracesvc']:.2f}, plain {access['plain']:.2f} "
        "(both should be 1.00: both log alike)"
    )
    extra = {k: [r.accessExtra[k] for r in rounds] for k in ("gracesvc", "plain")}
    print(
        f"access log lines beyond the requests counted, by round: gracesvc "
        f"{extra['gracesvc']}, plain {extra['plain']} (each from 0 to "
        f"{2 * load.connections}: the requests in flight as the warm-up's and "
        f"the measure's wrk stopped)"
    )
    problems = [
        f"{kind} round {i}: {problem}"
        for i, r in enumerate(rounds, 1)
        for kind, problem in r.problems.items()
        if problem
    ]
    for p in problems:
        print(f"problem: {p}")
    print(f"{args.rounds} rounds in {time.monotonic() - began:.0f} s")
    if problems or min(n for r in rounds for n in r.requests.values()) <= 0:
        return 1
    if args.check and not ok:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
