"""
Threads that never return, against the shutdown cap: real twistd processes
(C{bench/threadcap.tac}), real sockets, SIGTERM, and the time from the
signal to exit::

    .venv/bin/python -m bench.threadcap [--cap 2]

Each scenario prints when the process exited after SIGTERM, its exit
status, and what the clients got.  The stock row runs the same routes on
Twisted's own WSGI support and thread pools: the process is still running
when the scenario gives up on it and kills it.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

from gracesvc.testing import get  # noqa: E402
from gracesvc.testing.process import InFlight, RawClient, Twistd, freePort  # noqa: E402

from ._common import ROOT

TAC = os.path.join(ROOT, "bench", "threadcap.tac")


def scenario(
    name: str, requests: list[str], cap: float, stock: bool = False
) -> tuple[str, str, str, str]:
    port = freePort()
    env = dict(
        os.environ,
        GRACESVC_BENCH_PORT=str(port),
        GRACESVC_CAP=repr(cap),
        GRACESVC_STOCK="1" if stock else "0",
    )
    twistd = Twistd(TAC, port=port, listen=[], env=env, plugin="-y")
    try:
        twistd.waitUntilServing()
        inFlight = []
        for path in requests:
            if path.startswith("/spawn"):
                with RawClient(port) as c:
                    c.send(get(path, "Connection: close"))
                    c.readResponse()
            else:
                inFlight.append(InFlight(port, get(path)))
        time.sleep(0.3)
        sentAt = twistd.signal(signal.SIGTERM)
        giveUp = cap + 5
        try:
            status = str(twistd.wait(giveUp))
            exited = f"{twistd.exitedAt - sentAt:.2f}s"  # type: ignore[operator]
        except AssertionError:
            status, exited = "-", f"still running at {giveUp:g}s: killed"
        for f in inFlight:
            f.join(1)
        got = ", ".join(
            str(f.response.code) if f.response else type(f.error).__name__
            for f in inFlight
        )
        log = twistd.log()
        abandoned = [
            line.split("] ", 1)[-1]
            for line in log.splitlines()
            if "Giving up on" in line or "Server exiting" in line
        ]
        return name, exited, status, f"{got or '-'} | {' | '.join(abandoned)}"
    finally:
        twistd.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cap", type=float, default=2.0)
    cap = parser.parse_args(argv).cap
    rows = [
        scenario(
            "WSGI thread sleeping 60s + 1 queued",
            ["/wsgi/sleep/60", "/wsgi/sleep/60"],
            cap,
        ),
        scenario("WSGI thread sleeping 1s", ["/wsgi/sleep/1"], cap),
        scenario("deferToThread 60s, untracked", ["/spawn/60"], cap),
        scenario("deferToThread 60s, tracked", ["/spawn/60/tracked"], cap),
        scenario("deferToThread 1s, tracked", ["/spawn/1/tracked"], cap),
        scenario(
            "stock Twisted: WSGI thread sleeping 60s",
            ["/wsgi/sleep/60"],
            cap,
            stock=True,
        ),
        scenario("stock Twisted: deferToThread 60s", ["/spawn/60"], cap, stock=True),
    ]
    print(f"cap (--shutdown-timeout) = {cap:g}s; exit = time from SIGTERM to exit")
    for name, exited, status, got in rows:
        print(f"{name:42} exit {exited:>28}  status {status:>4}  {got}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
