"""
The cost of the drain layer: requests per second on C{GET /ping} with
C{--ping-delay 0}, C{twistd -n gracesvc} against the same Klein routes
served by a plain C{Site} with no drain layer (C{bench/plain.tac}), both
under twistd and both logging access lines alike.  Rounds alternate
gracesvc, plain, gracesvc, plain, ...; the figure is the ratio of the
medians.

    .venv/bin/python -m bench.throughput [--rounds 5] [--duration 5] [--smoke]

Uses wrk (C{apt-get install wrk}) when installed, else a small Python load
generator.  On a machine with two cores or more, the server is pinned to
core 0 and the load generator to core 1.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from bench._common import cores, machine, startServer, stopServer, table
from bench._net import pythonLoad
from gracesvc.testing.process import Twistd

TARGET = 0.97
INSTALL_WRK = (
    "wrk is not installed; for figures worth publishing install it "
    "(Debian/Ubuntu: sudo apt-get install wrk; macOS: brew install wrk)"
)
ACCESS_LINE = re.compile(rb'"GET /ping HTTP/1\.1" 200 ')


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


def measure(
    kind: str, load: Load, warmup: float, duration: float, serverCpu: int | None
) -> dict[str, object]:
    twistd: Twistd = startServer(kind, 0.0)
    try:
        if serverCpu is not None:
            os.sched_setaffinity(twistd.pid, {serverCpu})
        _, warmRequests, _ = load.run(twistd.port, warmup)
        cpuBefore = cpuSeconds(twistd.pid)
        rps, requests, problems = load.run(twistd.port, duration)
        cpu = cpuSeconds(twistd.pid) - cpuBefore
    finally:
        log = stopServer(twistd)
    accessLines = len(ACCESS_LINE.findall(log.encode("utf-8")))
    served = warmRequests + requests
    return {
        "rps": rps,
        "requests": requests,
        "problems": problems,
        "accessPerRequest": accessLines / served if served else 0.0,
        "cpuPerRequest": cpu / requests if requests else 0.0,
    }


def cpuSeconds(pid: int) -> float:
    """
    @return: the user + system CPU time process C{pid} has used so far.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--rounds", type=int, default=5, help="alternating rounds (default 5)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=5.0,
        help="seconds measured per run (default 5)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=1.0,
        help="seconds of load before each run (default 1)",
    )
    parser.add_argument(
        "--connections",
        type=int,
        default=10,
        help="keep-alive connections (default 10)",
    )
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--no-pin", action="store_true", help="do not pin server and load to cores"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one short round: does it still work?"
    )
    parser.add_argument(
        "--check", action="store_true", help=f"exit 3 if the ratio is below {TARGET}"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.duration, args.warmup = 1, 1.0, 0.3

    tool = args.tool
    if tool in ("auto", "wrk") and shutil.which("wrk") is None:
        if tool == "wrk":
            print(f"bench.throughput: {INSTALL_WRK}.", file=sys.stderr)
            return 2
        print(
            f"bench.throughput: {INSTALL_WRK}. Falling back to the Python load "
            "generator: it may saturate before the server does, which pulls the "
            "ratio towards 1."
        )
        tool = "python"
    elif tool == "auto":
        tool = "wrk"
    pin = not args.no_pin and cores() >= 2
    serverCpu, loadCpu = (0, 1) if pin else (None, None)
    load = Load(tool, args.connections, loadCpu)

    print(
        f"bench.throughput: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"GET /ping, --ping-delay 0, {args.connections} keep-alive connections, load: {tool}"
        + (" -t1" if tool == "wrk" else "")
        + (f" on core {loadCpu}, server on core {serverCpu}" if pin else ", unpinned")
        + f"; {args.rounds} round{'s' if args.rounds != 1 else ''} of {args.duration:g} s after {args.warmup:g} s warm-up, "
        "alternating gracesvc, plain"
    )
    sys.stdout.flush()
    results: dict[str, list[dict[str, object]]] = {"gracesvc": [], "plain": []}
    began = time.monotonic()
    for _ in range(args.rounds):
        for kind in ("gracesvc", "plain"):
            results[kind].append(
                measure(kind, load, args.warmup, args.duration, serverCpu)
            )

    def f(r: dict[str, object], key: str) -> float:
        return float(r[key])  # type: ignore[arg-type]

    def us(seconds: float) -> str:
        return f"{seconds * 1e6:.0f}"

    rows = []
    for i, (a, b) in enumerate(
        zip(results["gracesvc"], results["plain"], strict=False), 1
    ):
        ratio = f(a, "rps") / f(b, "rps") if f(b, "rps") else 0.0
        rows.append(
            (
                str(i),
                f"{f(a, 'rps'):.0f}",
                f"{f(b, 'rps'):.0f}",
                f"{ratio:.3f}",
                us(f(a, "cpuPerRequest")),
                us(f(b, "cpuPerRequest")),
            )
        )
    medians = {k: statistics.median(f(r, "rps") for r in v) for k, v in results.items()}
    cpu = {
        k: statistics.median(f(r, "cpuPerRequest") for r in v)
        for k, v in results.items()
    }
    ratio = medians["gracesvc"] / medians["plain"] if medians["plain"] else 0.0
    ok = ratio >= TARGET
    rows.append(
        (
            "**median**",
            f"**{medians['gracesvc']:.0f}**",
            f"**{medians['plain']:.0f}**",
            f"**{ratio:.3f}** (target >= {TARGET}: {'yes' if ok else 'NO'})",
            us(cpu["gracesvc"]),
            us(cpu["plain"]),
        )
    )
    print()
    print(
        table(
            [
                "round",
                "gracesvc req/s",
                "plain Klein req/s",
                "gracesvc / plain",
                "gracesvc CPU us/req",
                "plain CPU us/req",
            ],
            rows,
        )
    )
    paired = (
        statistics.median(
            f(a, "rps") / f(b, "rps")
            for a, b in zip(results["gracesvc"], results["plain"], strict=False)
            if f(b, "rps")
        )
        if medians["plain"]
        else 0.0
    )
    print(
        f"\nmedian of the per-round ratios (each pair run back to back): {paired:.3f}"
    )
    if cpu["gracesvc"] > 0:
        print(
            f"server CPU time per request, plain / gracesvc: {cpu['plain'] / cpu['gracesvc']:.3f} "
            "(the same ratio measured by CPU time: less sensitive to other load on the machine)"
        )
    access = {
        k: statistics.median(float(r["accessPerRequest"]) for r in v)
        for k, v in results.items()
    }  # type: ignore[arg-type]
    print(
        f"access log lines per request: gracesvc {access['gracesvc']:.2f}, plain {access['plain']:.2f} "
        "(both should be 1.00: both log alike)"
    )
    problems = [
        f"{k} round {i}: {r['problems']}"
        for k, v in results.items()
        for i, r in enumerate(v, 1)
        if r["problems"]
    ]
    for p in problems:
        print(f"problem: {p}")
    print(f"{args.rounds * 2} runs in {time.monotonic() - began:.0f} s")
    if problems or min(medians.values()) <= 0:
        return 1
    if args.check and not ok:
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
