"""
The drain's figures for users' own apps: a Flask app on threads
(C{--wsgi}), a Klein app with C{async def} routes (C{--app}) on the default
reactor and on asyncio, each in fresh C{twistd -n gracesvc} processes over
loopback; and the cost of serving a Flask app under gracesvc against
C{twistd web --wsgi}, side by side.

    .venv/bin/python -m bench.apps [--repeats 5] [--rounds 5] [--smoke] [--check]
"""

from __future__ import annotations

import shutil
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench._common import cores
from bench.shutdown import Row, cutAtCap, drainInFlight, judge, runScenarios
from bench.throughput import Load, measureRound
from gracesvc.testing.process import Twistd

FLASK = "tests.apps.flaskapp:app"
KLEIN = "tests.apps.kleinapp:app"


@dataclass
class Sizes:
    repeats: int = 5
    inFlight: int = 20
    sleep: float = 2.0
    settle: float = 0.5
    cap: float = 1.0
    rounds: int = 10
    duration: float = 4.0
    warmup: float = 1.0


SMOKE = Sizes(
    repeats=1,
    inFlight=3,
    sleep=0.5,
    settle=0.2,
    cap=0.5,
    rounds=1,
    duration=1.0,
    warmup=0.3,
)

#: The throughput target: gracesvc's CPU time per request at most this much
#: above twistd web's.
THROUGHPUT_TARGET = 0.97


def startWSGI(kind: str) -> Twistd:
    """
    Serve the Flask app with C{twistd -n gracesvc --wsgi} or with
    C{twistd -n web --wsgi}, and wait until it answers.
    """
    if kind == "gracesvc":
        twistd = Twistd("--wsgi", FLASK)
    else:
        twistd = Twistd("--wsgi", FLASK.replace(":", "."), plugin="web")
    try:
        return twistd.waitUntilServing(path="/hello")
    except BaseException:
        twistd.kill()
        raise


def wsgiThroughput(s: Sizes) -> list[Row]:
    """
    A trivial Flask route (C{/hello}) under C{gracesvc --wsgi} and under
    C{twistd web --wsgi}: each round a fresh pair pinned to core 0, loaded
    at the same time by one wrk each on core 1
    (L{bench.throughput.measureRound}); the server's CPU time per request,
    and requests per second.
    """
    tool = "wrk" if shutil.which("wrk") else "python"
    pin = cores() >= 2
    serverCpu, loadCpu = (0, 1) if pin else (None, None)
    load = Load(tool, 10, loadCpu, path="/hello")

    def start(kind: str) -> Twistd:
        return startWSGI("gracesvc" if kind == "gracesvc" else "web")

    rounds = [
        measureRound(load, s.warmup, s.duration, serverCpu, start)
        for _ in range(s.rounds)
    ]
    cpuRatios = [r.cpuRatio() for r in rounds]
    rpsRatios = [r.rpsRatio() for r in rounds]
    cpuRatio = statistics.median(cpuRatios)
    rpsRatio = statistics.median(rpsRatios)
    grace = statistics.median(r.cpuPerRequest("gracesvc") for r in rounds)
    web = statistics.median(r.cpuPerRequest("plain") for r in rounds)
    return [
        Row(
            f"Flask /hello, twistd web --wsgi / gracesvc --wsgi ({tool}, {s.rounds} "
            f"rounds of fresh pairs loaded at the same time, {s.duration:g} s each): "
            "server CPU per request",
            f"{web * 1e6:.0f} / {grace * 1e6:.0f} µs: {cpuRatio:.3f} "
            f"(rounds {min(cpuRatios):.3f}-{max(cpuRatios):.3f})",
            f">= {THROUGHPUT_TARGET}",
            judge([cpuRatio], float("inf"), above=THROUGHPUT_TARGET),
        ),
        Row(
            "  req/s, gracesvc / twistd web",
            f"{rpsRatio:.3f} (rounds {min(rpsRatios):.3f}-{max(rpsRatios):.3f})",
            f">= {THROUGHPUT_TARGET}",
            judge([rpsRatio], float("inf"), above=THROUGHPUT_TARGET),
        ),
    ]


def inFlightAtSignal(
    s: Sizes, label: str, path: str, body: bytes, *args: str, reactor: str | None = None
) -> list[Row]:
    """
    C{s.inFlight} requests for C{path} (which answers C{body} after
    C{s.sleep} seconds) in flight at SIGINT.
    """
    return drainInFlight(
        f"{label}: {s.inFlight} requests ({s.sleep:g} s) in flight at SIGINT "
        f"answered 200",
        path,
        body,
        args,
        repeats=s.repeats,
        inFlight=s.inFlight,
        settle=s.settle,
        wait=s.sleep + 10,
        reactor=reactor,
    )


def flaskInFlight(s: Sizes) -> list[Row]:
    return inFlightAtSignal(
        s, "Flask (--wsgi)", f"/sleep/{s.sleep!r}", b"slept\n", "--wsgi", FLASK
    )


def kleinInFlight(s: Sizes) -> list[Row]:
    return inFlightAtSignal(
        s, "Klein async def (--app)", f"/sleep/{s.sleep!r}", b"slept\n", "--app", KLEIN
    )


def kleinOnAsyncio(s: Sizes) -> list[Row]:
    return inFlightAtSignal(
        s,
        "Klein awaiting asyncio.sleep (-r asyncio --app)",
        f"/asyncio-sleep/{s.sleep!r}",
        b"slept on asyncio\n",
        "--app",
        KLEIN,
        reactor="asyncio",
    )


def flaskStuckThread(s: Sizes) -> list[Row]:
    """
    A Flask view sleeping 60 s in its thread, with a short cap.
    """
    return cutAtCap(
        f"Flask view sleeping 60 s, cap {s.cap:g} s: client gets 503 + Retry-After",
        "  SIGINT -> process exit, its thread abandoned",
        "/sleep/60.0",
        ["--wsgi", FLASK, "--shutdown-timeout", repr(s.cap)],
        repeats=s.repeats,
        cap=s.cap,
        settle=0.3,
        limit=s.cap + 0.2,
    )


SCENARIOS: list[tuple[str, Callable[[Sizes], list[Row]]]] = [
    ("flask", flaskInFlight),
    ("stuck", flaskStuckThread),
    ("klein", kleinInFlight),
    ("asyncio", kleinOnAsyncio),
    ("throughput", wsgiThroughput),
]


def main(argv: Sequence[str] | None = None) -> int:
    return runScenarios(
        argv, "python -m bench.apps", __doc__ or "", SCENARIOS, Sizes(), SMOKE
    )


if __name__ == "__main__":
    sys.exit(main())
