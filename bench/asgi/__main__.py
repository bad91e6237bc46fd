"""
C{python -m bench.asgi}: see L{bench.asgi}.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._common import cores, machine, table
from bench.asgi import h2, load, shutdown
from bench.asgi.servers import (
    ALL,
    BARE,
    DAPHNE,
    FASTAPI,
    GRACESVC,
    GRACESVC_ASYNCIO,
    GRANIAN,
    HYPERCORN,
    UVICORN,
    UVICORN_ASYNCIO,
    UVICORN_H2,
    UVICORN_H11,
    Server,
    chosen,
)


@dataclass
class Sizes:
    """
    Everything but the shutdown scenarios' sizes (L{shutdown.Sizes}).
    """

    rounds: int = 5
    duration: float = 4.0
    warmup: float = 1.0
    connections: int = 50
    memoryConnections: int = 10_000
    memoryRounds: int = 2
    scaleIdle: int = 10_000
    scaleBusy: int = 1_000
    scaleSleep: float = 2.0
    scaleRuns: int = 1
    workerRounds: int = 3
    reloads: int = 10
    reloadSpare: float = 3.0
    h2Requests: int = 64
    h2Clients: int = 8
    h2Streams: int = 8


SMOKE = Sizes(
    rounds=1,
    duration=0.5,
    warmup=0.0,
    connections=10,
    memoryConnections=200,
    memoryRounds=1,
    scaleIdle=100,
    scaleBusy=20,
    scaleSleep=1.0,
    scaleRuns=1,
    workerRounds=1,
    reloads=1,
    reloadSpare=0.5,
    h2Requests=8,
    h2Clients=2,
    h2Streams=4,
)

#: The servers of each part, unless C{--server} names others.
SHUTDOWN = (GRACESVC, UVICORN, UVICORN_H11, HYPERCORN, GRANIAN, DAPHNE)
THROUGHPUT = (
    GRACESVC,
    GRACESVC_ASYNCIO,
    UVICORN,
    UVICORN_ASYNCIO,
    UVICORN_H11,
    HYPERCORN,
    GRANIAN,
    DAPHNE,
)
MEMORY = (GRACESVC, UVICORN, UVICORN_H11, HYPERCORN, GRANIAN, DAPHNE)
SCALE = (GRACESVC, UVICORN, HYPERCORN, GRANIAN, DAPHNE)
WORKERS = (GRACESVC, UVICORN)
HTTP2 = (GRACESVC, UVICORN, UVICORN_H2, HYPERCORN, GRANIAN, DAPHNE)

PARTS = ("shutdown", "throughput", "memory", "scale", "workers", "h2")


def say(line: str) -> None:
    print(line, flush=True)


def shutdownPart(keys: Sequence[str], s: shutdown.Sizes) -> None:
    servers = chosen(keys, SHUTDOWN)
    say(
        f"\n## Shutdown: SIGINT to the server's main process, cap {s.cap:g} s unless "
        f"said, median of {s.repeats} fresh processes (max in brackets)\n"
    )
    rows = shutdown.rows(servers, s, say)
    say("")
    say(
        table(
            ["at SIGINT", "target (gracesvc)", *(x.header() for x in servers)],
            [(r.measure, r.target, *(r.cells[x.key] for x in servers)) for r in rows],
        )
    )


def throughputPart(keys: Sequence[str], z: Sizes) -> None:
    if shutil.which("wrk") is None:
        say("\n## Throughput: skipped: wrk is not installed (apt-get install wrk)")
        return
    servers = chosen(keys, THROUGHPUT)
    for title, app, path in (
        ("bare ASGI GET /hello", BARE, "/hello"),
        ("FastAPI JSON endpoint GET /json", FASTAPI, "/json"),
    ):
        say(
            f"\n## Throughput, {title}: wrk -t1 -c{z.connections} on core 1, the server "
            f"on core 0, {z.rounds} rounds of {z.duration:g} s after {z.warmup:g} s "
            f"warm-up, a fresh process each\n"
        )
        if app == FASTAPI and not _fastapi():
            say("skipped: fastapi is not installed (pip install -e '.[bench]')")
            continue
        t = load.throughput(
            servers, app, path, z.rounds, z.duration, z.warmup, z.connections, say
        )
        say("")
        say(
            table(
                [
                    "server",
                    "req/s (median)",
                    "CPU µs/request, median (min-max)",
                    f"CPU ratio to {load.BASELINE.title}, same round",
                    "wrk's complaints",
                ],
                load.throughputRows(servers, t),
            )
        )


def _fastapi() -> bool:
    return importlib.util.find_spec("fastapi") is not None


def memoryPart(keys: Sequence[str], z: Sizes) -> None:
    limit = load.fileLimit(2 * z.memoryConnections + 4096)
    say(
        f"\n## Memory: resident memory per idle keep-alive connection, "
        f"{z.memoryConnections:,} open (each answered GET /hello), the whole process "
        f"group, {z.memoryRounds} rounds; open-files limit {limit:,}\n"
    )
    servers = chosen(keys, MEMORY)
    figures = load.memory(servers, z.memoryConnections, z.memoryRounds, say)
    rows = []
    for server in servers:
        f = figures[server.key]
        if isinstance(f, str):
            rows.append((server.header(), f, "-"))
        else:
            rows.append(
                (
                    server.header(),
                    f"{sorted(f)[len(f) // 2]:,.0f}",
                    f"{min(f):,.0f}-{max(f):,.0f}",
                )
            )
    say("")
    say(table(["server", "bytes per connection", "min-max"], rows))


def scalePart(keys: Sequence[str], z: Sizes) -> None:
    limit = load.fileLimit(2 * (z.scaleIdle + z.scaleBusy) + 4096)
    say(
        f"\n## Scale: {z.scaleIdle:,} idle keep-alive connections and "
        f"{z.scaleBusy:,} requests in flight (/sleep/{z.scaleSleep:g}) at SIGTERM, "
        f"cap 10 s; open-files limit {limit:,}\n"
    )
    servers = chosen(keys, SCALE)
    figures = load.scale(
        servers, z.scaleIdle, z.scaleBusy, z.scaleSleep, z.scaleRuns, say
    )
    rows = []
    for server in servers:
        f = figures[server.key]
        if isinstance(f, str):
            rows.append((server.header(), f, "-", "-"))
            continue
        rows.append(
            (
                server.header(),
                shutdown.tally(f.answered, z.scaleBusy),
                shutdown.timing(f.toExit),
                shutdown.timing(f.idleClosed),
            )
        )
    say("")
    say(
        table(
            [
                "server",
                "in flight answered 200",
                "last response -> exit",
                "SIGTERM -> last idle connection closed",
            ],
            rows,
        )
    )


_WORKER_HEADERS = [
    "server",
    "1 process req/s",
    "2 workers req/s",
    "ratio",
    "cores busy, median (min-max): 1 process / 2 workers",
    "busier worker's share of the workers' CPU",
]


def _workerRow(server: Server, f: load.Workers | str) -> tuple[str, ...]:
    if isinstance(f, str):
        return (server.header(), f, "-", "-", "-", "-")
    one = statistics.median(f.rps["1"])
    two = statistics.median(f.rps["2"])
    return (
        server.header(),
        f"{one:,.0f}",
        f"{two:,.0f}",
        f"{two / one:.2f}x" if one else "-",
        f"wrk {load.spread(f.loadCores['1'], 2)} / "
        f"{load.spread(f.loadCores['2'], 2)}; server "
        f"{load.spread(f.serverCores['1'], 2)} / "
        f"{load.spread(f.serverCores['2'], 2)}; anything else "
        f"{load.spread(f.otherCores['1'], 2)} / {load.spread(f.otherCores['2'], 2)}",
        load.spread(f.busiestShare, 2),
    )


def workersPart(keys: Sequence[str], z: Sizes) -> None:
    if shutil.which("wrk") is None:
        say("\n## Workers: skipped: wrk is not installed (apt-get install wrk)")
        return
    servers = chosen(keys, WORKERS)
    for title, app, path in (
        ("bare ASGI GET /hello", BARE, "/hello"),
        ("FastAPI GET /json", FASTAPI, "/json"),
    ):
        say(
            f"\n## Workers, {title}: 2 worker processes against one, wrk -t1 "
            f"-c{z.connections} unpinned on the same {cores()} cores, "
            f"{z.workerRounds} rounds of {z.duration:g} s, alternating\n"
        )
        if app == FASTAPI and not _fastapi():
            say("skipped: fastapi is not installed (pip install -e '.[bench]')")
            continue
        figures = load.workers(
            servers, app, path, z.workerRounds, z.duration, z.warmup, z.connections, say
        )
        say("")
        say(table(_WORKER_HEADERS, [_workerRow(s, figures[s.key]) for s in servers]))

    if GRACESVC in servers:
        say(
            f"\n## Reloads: gracesvc --asgi --workers 2, {z.reloads} SIGHUPs under wrk "
            "-t1 -c20 --latency on /ping plus one client opening a connection per "
            "request\n"
        )
        missing = GRACESVC.missing()
        row = (
            [missing] + ["-"] * 6
            if missing is not None
            else load.reloads(z.reloads, 20, z.reloadSpare)
        )
        say(
            table(
                [
                    "reloads",
                    "wrk run",
                    "wrk requests",
                    "wrk errors",
                    "p99",
                    "max",
                    "new connections",
                ],
                [row],
            )
        )


def h2Part(keys: Sequence[str], z: Sizes) -> None:
    say(
        f"\n## HTTP/2: h2load -n {z.h2Requests} -c {z.h2Clients} -m {z.h2Streams} "
        f"on /sleep/1, SIGTERM at 0.5 s, cap 5 s\n"
    )
    servers = chosen(keys, HTTP2)
    rows = h2.rows(servers, z.h2Requests, z.h2Clients, z.h2Streams, say)
    say("")
    say(table(["server", "TLS (ALPN h2)", "h2c (prior knowledge)"], rows))


def _load() -> str:
    """
    @return: the machine's load average over 1, 5 and 15 minutes: other
        work on it moves every figure but the ratios within a round.
    """
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.asgi",
        description="gracesvc --asgi beside uvicorn, hypercorn, granian and daphne.",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=PARTS,
        help="run only this part (repeatable)",
    )
    parser.add_argument(
        "--server",
        action="append",
        default=[],
        choices=[s.key for s in ALL],
        help="run only this server (repeatable); each part has its own default",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: does it still run?"
    )
    parser.add_argument(
        "--repeats", type=int, help="fresh processes per shutdown figure (default 3)"
    )
    parser.add_argument("--rounds", type=int, help="throughput rounds (default 5)")
    parser.add_argument(
        "--duration", type=float, help="seconds of each measured wrk run (default 4)"
    )
    args = parser.parse_args(argv)
    s = shutdown.SMOKE if args.smoke else shutdown.Sizes()
    z = SMOKE if args.smoke else Sizes()
    if args.repeats is not None:
        s.repeats = max(1, args.repeats)
    if args.rounds is not None:
        z.rounds = max(1, args.rounds)
    if args.duration is not None:
        z.duration = args.duration
    parts: dict[str, Callable[[], None]] = {
        "shutdown": lambda: shutdownPart(args.server, s),
        "throughput": lambda: throughputPart(args.server, z),
        "memory": lambda: memoryPart(args.server, z),
        "scale": lambda: scalePart(args.server, z),
        "workers": lambda: workersPart(args.server, z),
        "h2": lambda: h2Part(args.server, z),
    }
    say(
        f"bench.asgi: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    say(f"load average at the start: {_load()}")
    servers = chosen(args.server, ALL)
    say(
        "servers: "
        + "; ".join(
            f"{s.header()}" + (f" ({s.missing()})" if s.missing() else "")
            for s in servers
        )
    )
    if GRACESVC in servers and GRACESVC.missing() is None:
        loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
        say(f"gracesvc --asgi runs on {loop} (--asgi-loop auto)")
    began = time.monotonic()
    for name in PARTS:
        if args.only and name not in args.only:
            continue
        parts[name]()
        say(f"(load average after {name}: {_load()})")
    say(
        f"\nbench.asgi: done in {time.monotonic() - began:,.0f} s; load average "
        f"at the end: {_load()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
