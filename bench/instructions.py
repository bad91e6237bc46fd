"""
The cost of the drain layer in instructions: user-space instructions the
server process executes per C{GET /ping} (C{--ping-delay 0}), counted by
valgrind's callgrind, C{twistd -n gracesvc} against the same Klein routes
served by a plain C{Site} (C{bench/plain.tac}), both under twistd and
logging alike.

    .venv/bin/python -m bench.instructions [--layouts 16] [--requests 1000]
                                           [--smoke]

Needs valgrind (C{apt-get install valgrind}).  Each server runs under
callgrind with instrumentation off until it has served C{--warmup}
requests on one keep-alive connection; then it is switched on, 50 more
requests are served, the counters are zeroed, and C{--requests} requests
are counted, one after the other on the same connection.  No clock, no
scheduler and no other process enters the count: the same server, port and
layout give the same count to within a few hundred instructions in ~740k,
on a quiet machine or a busy one.

What still moves a count is the process's memory layout (see
C{bench/_layout/sitecustomize.py}): which hot attribute lookups of CPython
3.11 collide in its type cache, and the allocators' state, depend on every
import, allocation, environment variable and path, and one layout alone
puts the ratio anywhere within about +-1 %.  So each of C{--layouts}
layouts runs both servers with the same shift, on the same port, and the
figure is the mean over layouts (16 layouts: reruns from different shells
agree to within 0.0005), with the spread of the per-layout ratios.

It counts neither kernel time (the same system calls per request for both
servers) nor cache misses, and runs one connection where
C{bench.throughput} runs ten: it is the figure to compare commits with;
the CPU-time ratio of C{bench.throughput} is the one for the drain
layer's budget.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence

from bench._common import PLAIN_TAC, ROOT, machine, table
from gracesvc.testing import get
from gracesvc.testing.process import TWISTD, Process, RawClient, freePort

LAYOUT_PATH = os.path.join(ROOT, "bench", "_layout")
INSTALL_VALGRIND = (
    "valgrind is not installed (Debian/Ubuntu: sudo apt-get install valgrind)"
)


def serverArgv(kind: str, port: int) -> list[str]:
    if kind == "plain":
        return [sys.executable, TWISTD, "--pidfile=", "-n", "-y", PLAIN_TAC]
    return [
        sys.executable,
        TWISTD,
        "--pidfile=",
        "-n",
        "gracesvc",
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--ping-delay",
        "0",
    ]


def callgrind(pid: int, *args: str) -> str:
    return subprocess.run(
        ["callgrind_control", *args, str(pid)],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout


def count(kind: str, port: int, layout: int, warmup: int, requests: int) -> int:
    """
    @return: instructions the server executed for C{requests} requests.
    """
    path = [LAYOUT_PATH] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    env = dict(
        os.environ,
        PYTHONHASHSEED=str(layout),
        PYTHONPATH=os.pathsep.join(path),
        GRACESVC_BENCH_LAYOUT=str(layout),
        GRACESVC_BENCH_PORT=str(port),
        GRACESVC_BENCH_PING_DELAY="0",
    )
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    valgrind += ["--callgrind-out-file=/dev/null"]
    if shutil.which("setarch"):
        # The same addresses from one run to the next.
        valgrind = ["setarch", os.uname().machine, "-R"] + valgrind
    server = Process(valgrind + serverArgv(kind, port), env=env)
    try:
        deadline = time.monotonic() + 300
        while True:
            try:
                client = RawClient(port, timeout=120)
                break
            except OSError:
                if server.exited or time.monotonic() > deadline:
                    log = server.log()
                    raise RuntimeError(f"{kind} did not start:\n{log}") from None
                time.sleep(0.2)
        request = get("/ping")
        with client:

            def serve(n: int) -> None:
                for _ in range(n):
                    client.send(request)
                    response = client.readResponse()
                    if response.code != 200:
                        raise RuntimeError(f"{kind}: /ping answered {response.code}")

            serve(warmup)
            callgrind(server.pid, "--instr=on")
            serve(50)
            callgrind(server.pid, "--zero")
            serve(requests)
            counters = callgrind(server.pid, "-e")
        server.signal(signal.SIGTERM)
        server.wait(120)
    finally:
        server.kill()
    threads = re.findall(r"Th\s+\d+\s+([\d,]+)", counters)
    if not threads:
        raise RuntimeError(f"no counters from callgrind_control: {counters!r}")
    return sum(int(t.replace(",", "")) for t in threads)


def layoutPort(layout: int) -> int:
    """
    @return: the port for C{layout}: the same one from run to run where it is
        free (the port number is part of the layout too), else any free one.
    """
    port = 18100 + layout
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return freePort()
    return port


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--layouts", type=int, default=16, help="memory layouts (default 16)"
    )
    parser.add_argument(
        "--requests", type=int, default=1000, help="requests counted (default 1000)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=100,
        help="requests before counting starts (default 100)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one small layout: does it still work?"
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.layouts, args.requests, args.warmup = 1, 50, 10
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print(f"bench.instructions: {INSTALL_VALGRIND}: skipped.")
        return 0

    print(
        f"bench.instructions: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"GET /ping, --ping-delay 0, one keep-alive connection; user-space "
        f"instructions per request (callgrind) over {args.requests} requests "
        f"after {args.warmup + 50}, {args.layouts} memory layouts"
    )
    sys.stdout.flush()
    began = time.monotonic()
    kinds = ("gracesvc", "plain")
    perRequest: dict[str, list[float]] = {kind: [] for kind in kinds}
    rows = []
    for layout in range(1, args.layouts + 1):
        port = layoutPort(layout)
        for kind in kinds:
            perRequest[kind].append(
                count(kind, port, layout, args.warmup, args.requests) / args.requests
            )
        grace, plain = perRequest["gracesvc"][-1], perRequest["plain"][-1]
        rows.append(
            (
                str(layout),
                f"{grace:,.0f}",
                f"{plain:,.0f}",
                f"{grace - plain:+,.0f}",
                f"{plain / grace:.4f}",
            )
        )
    grace = statistics.mean(perRequest["gracesvc"])
    plain = statistics.mean(perRequest["plain"])
    ratios = [
        p / g for g, p in zip(perRequest["gracesvc"], perRequest["plain"], strict=True)
    ]
    rows.append(
        (
            "**mean**",
            f"{grace:,.0f}",
            f"{plain:,.0f}",
            f"{grace - plain:+,.0f}",
            f"**{plain / grace:.4f}**",
        )
    )
    print()
    print(
        table(
            [
                "layout",
                "gracesvc instr/req",
                "plain instr/req",
                "gracesvc - plain",
                "plain / gracesvc",
            ],
            rows,
        )
    )
    print(
        f"\ninstructions per request, plain / gracesvc: {plain / grace:.4f} "
        f"(layouts {min(ratios):.4f}-{max(ratios):.4f})"
    )
    print(f"{args.layouts * 2} runs in {time.monotonic() - began:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
