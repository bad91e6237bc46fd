"""
The shutdown timeline under load: 1,000 C{/ping} requests in flight and
5,000 idle keep-alive connections (each answered one request first) open at
SIGINT, gracesvc against the same routes with no drain layer
(C{bench/plain.tac}).  Also the server's peak memory per connection, and a
plot of the timeline.

    .venv/bin/python -m bench.scale [--busy 1000] [--idle 5000] [--runs 3]
                                    [--smoke] [--out bench/out]

The client side is one thread with a selector over non-blocking sockets.
Every ~10 ms it samples the requests in flight (sent, not yet answered) and
the connections open, as the clients see them; after the signal it tries a
new connection every 2 ms until one is refused.  The process's exit is seen
through a pidfd.  The plot goes to C{OUT/shutdown-timeline.png} (needs
matplotlib: C{pip install matplotlib}, or the C{bench} extra).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._common import (
    DEFAULT_OUT,
    machine,
    ms,
    procStatus,
    raiseFileLimit,
    secs,
    startServer,
    summary,
    table,
)
from bench._net import ANSWERED, CLOSED, Fleet
from gracesvc.testing import get

#: How long the idle connections have been quiet at the signal, at least:
#: more than gracesvc's idle grace (0.5 s), so they are idle, not just used.
IDLE_QUIET = 0.6


@dataclass
class Sizes:
    busy: int = 1000
    idle: int = 5000
    pingDelay: float = 3.0
    settle: float = 0.5
    cap: float = 10.0
    runs: int = 3


SMOKE = Sizes(busy=20, idle=50, pingDelay=1.0, settle=0.2, cap=5.0, runs=1)


@dataclass
class Run:
    kind: str
    busy: int = 0
    idle: int = 0
    serverInFlight: int | None = None  # as gracesvc logged it at the signal
    completed: int = 0
    saidClose: int = 0
    lost: int = 0
    idleClosed: int = 0
    idleClosedClean: int = 0
    refused: bool = False
    toRefusal: float | None = None
    toIdleClosed: float | None = None
    toLastResponse: float | None = None
    lastResponseToExit: float | None = None
    toExit: float | None = None
    status: int | None = None
    baselineKiB: int = 0
    peakKiB: int = 0
    timeline: list[tuple[float, int, int, int, int]] = field(default_factory=list)
    drainLog: str = ""
    serverFileLimit: int | None = None

    @property
    def perConnectionKiB(self) -> float:
        connections = self.busy + self.idle
        return (self.peakKiB - self.baselineKiB) / connections if connections else 0.0


def openFilesLimit(pid: int) -> int | None:
    """
    @return: the soft limit on open files of process C{pid}.
    """
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max open files"):
                    return int(line.split()[3])
    except (OSError, ValueError, IndexError):
        pass
    return None


def scenario(kind: str, s: Sizes) -> Run:
    """
    One run against a fresh server of C{kind} ("gracesvc" or "plain").
    """
    run = Run(kind, busy=s.busy, idle=s.idle)
    twistd = startServer(kind, s.pingDelay, "--shutdown-timeout", repr(s.cap))
    fleet = Fleet(twistd.port)
    try:
        run.baselineKiB = procStatus(twistd.pid).get("VmRSS", 0)
        run.serverFileLimit = openFilesLimit(twistd.pid)
        window = 48  # below Twisted's listen backlog of 50
        setup = 60 + (s.busy + s.idle) / 100
        idle = fleet.connect(s.idle, "idle", window, timeout=setup)
        busy = fleet.connect(s.busy, "busy", window, timeout=setup)
        # Let the idle connections be quiet for longer than gracesvc's idle
        # grace at the signal: idle, not just used.
        quietUntil = fleet.now + IDLE_QUIET - s.settle
        fleet.run(lambda: fleet.now >= quietUntil, IDLE_QUIET)
        fleet.watchExit(twistd.pid)
        fleet.sampleEvery = 0.01
        fleet.send(busy, get("/ping"))
        fleet.run(lambda: False, s.settle)
        run.peakKiB = procStatus(twistd.pid).get("VmHWM", 0)

        sentAt = twistd.signal(signal.SIGINT)
        fleet.probeEvery = 0.002
        fleet.run(
            lambda: (
                fleet.exitedAt is not None
                and fleet.open == 0
                and fleet.refusedAt is not None
            ),
            s.cap + 5,
        )
        fleet.probeEvery = None
        fleet.run(lambda: False, 0.1)  # a little of the timeline after exit
        run.status = twistd.wait(10)
        exitedAt = min(t for t in (fleet.exitedAt, twistd.exitedAt) if t is not None)

        answered = [c for c in busy if c.answeredAt is not None and c.code == 200]
        run.completed = len(answered)
        run.saidClose = sum(c.saidClose for c in answered)
        run.lost = sum(c.answeredAt is None for c in busy)
        closed = [c for c in idle if c.state == CLOSED and c.closedAt is not None]
        run.idleClosed = len(closed)
        run.idleClosedClean = sum(not c.reset and not c.unexpected for c in closed)
        if fleet.refusedAt is not None:
            run.refused = True
            run.toRefusal = fleet.refusedAt - sentAt
        if closed and len(closed) == len(idle):
            run.toIdleClosed = max(c.closedAt for c in closed) - sentAt  # type: ignore[type-var,operator]
        if answered:
            last = max(c.answeredAt for c in answered)  # type: ignore[type-var]
            run.toLastResponse = last - sentAt  # type: ignore[operator]
            run.lastResponseToExit = exitedAt - last  # type: ignore[operator]
        run.toExit = exitedAt - sentAt
        run.timeline = [
            (t - sentAt, w, o, a, lost) for t, w, o, a, lost in fleet.timeline
        ]
        log = twistd.log()
        started = re.search(
            r"Shutdown Server \.\.\. \([^)]*\): (\d+) requests in flight", log
        )
        if started:
            run.serverInFlight = int(started.group(1))
        run.drainLog = "\n".join(
            line.split("] ", 1)[-1]
            for line in log.splitlines()
            if "Shutdown Server" in line
            or "Server exiting" in line
            or "Listeners closed" in line
        )
        assert all(c.state in (ANSWERED, CLOSED) for c in busy) or kind == "plain"
    finally:
        fleet.close()
        twistd.kill()
    return run


def figures(runs: list[Run], s: Sizes) -> list[tuple[str, str, str, str]]:
    g = [r for r in runs if r.kind == "gracesvc"]
    p = [r for r in runs if r.kind == "plain"]

    def each(rs: list[Run], f: object) -> str:
        values = [f(r) for r in rs]  # type: ignore[operator]
        if len(set(values)) == 1:
            return str(values[0]) + (f" (all {len(rs)} runs)" if len(rs) > 1 else "")
        return "runs: " + ", ".join(map(str, values))

    def timing(rs: list[Run], attr: str, unit: str = "ms") -> str:
        values = [getattr(r, attr) for r in rs]
        if any(v is None for v in values):
            got = [v for v in values if v is not None]
            return (
                (summary(got, unit) + f" ({len(values) - len(got)} runs: none)")
                if got
                else "none"
            )
        return summary(values, unit)

    b, i = s.busy, s.idle
    rows = [
        (
            "/ping in flight at SIGINT (gracesvc's log)",
            each(g, lambda r: r.serverInFlight),
            "-",
            f"{b}",
        ),
        (
            f"/ping answered 200 (of {b})",
            each(g, lambda r: f"{r.completed}/{b}"),
            each(p, lambda r: f"{r.completed}/{b}"),
            f"{b}/{b}",
        ),
        (
            "  with Connection: close",
            each(g, lambda r: f"{r.saidClose}/{r.completed}"),
            each(p, lambda r: f"{r.saidClose}/{r.completed}"),
            "all",
        ),
        (
            f"idle keep-alive connections closed by the server (of {i})",
            each(g, lambda r: f"{r.idleClosed}/{i}"),
            each(p, lambda r: f"{r.idleClosed}/{i}"),
            f"{i}/{i}",
        ),
        (
            "  closed cleanly (FIN, nothing sent)",
            each(g, lambda r: f"{r.idleClosedClean}/{r.idleClosed}"),
            each(p, lambda r: f"{r.idleClosedClean}/{r.idleClosed}"),
            "all",
        ),
        (
            "new connections refused after SIGINT",
            each(g, lambda r: "yes" if r.refused else "NO"),
            each(p, lambda r: "yes" if r.refused else "NO"),
            "yes",
        ),
        (
            "SIGINT -> first refused connect",
            timing(g, "toRefusal"),
            timing(p, "toRefusal"),
            "< 20 ms (at 20 in flight)",
        ),
        (
            "SIGINT -> all idle connections closed",
            timing(g, "toIdleClosed"),
            timing(p, "toIdleClosed"),
            "< 0.6 s",
        ),
        (
            "SIGINT -> last /ping answered",
            timing(g, "toLastResponse", "s"),
            timing(p, "toLastResponse", "s"),
            f"~ {s.pingDelay - s.settle:g} s (ping delay - {s.settle:g} s)",
        ),
        (
            "last response -> process exit",
            timing(g, "lastResponseToExit"),
            timing(p, "lastResponseToExit"),
            "< 25 ms",
        ),
        (
            f"SIGINT -> process exit (cap {s.cap:g} s)",
            timing(g, "toExit", "s"),
            timing(p, "toExit", "s"),
            f"< {s.cap:g} s",
        ),
        (
            "exit status",
            each(g, lambda r: r.status),
            each(p, lambda r: r.status),
            "-2 (SIGINT)",
        ),
        (
            "server's open files limit",
            each(g, lambda r: r.serverFileLimit),
            each(p, lambda r: r.serverFileLimit),
            f">= {b + i + 100}",
        ),
        (
            "server RSS before connections",
            memory(g, "baselineKiB"),
            memory(p, "baselineKiB"),
            "-",
        ),
        (
            f"server peak RSS (VmHWM) with {b} in flight + {i} idle",
            memory(g, "peakKiB"),
            memory(p, "peakKiB"),
            "-",
        ),
        ("  per connection", perConnection(g), perConnection(p), "-"),
    ]
    return rows


def memory(rs: list[Run], attr: str) -> str:
    if not rs:
        return "-"
    return f"{statistics.median(getattr(r, attr) for r in rs) / 1024:.1f} MiB"


def perConnection(rs: list[Run]) -> str:
    if not rs:
        return "-"
    return f"{statistics.median(r.perConnectionKiB for r in rs):.1f} KiB"


def plot(runs: list[Run], s: Sizes, path: str) -> str:
    """
    Plot the timeline of the last run of each kind.

    @return: what was done, for the output.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (
            "plot skipped: matplotlib is not installed "
            "(.venv/bin/pip install 'matplotlib>=3.7', or the bench extra)"
        )
    last = {r.kind: r for r in runs}
    kinds = [k for k in ("gracesvc", "plain") if k in last]
    fig, axes = plt.subplots(
        len(kinds), 1, figsize=(10, 3.6 * len(kinds)), sharex=True, squeeze=False
    )
    titles = {
        "gracesvc": "twistd -n gracesvc",
        "plain": "plain Klein app (same routes, no drain layer)",
    }
    end = max(max((t for t, *_ in last[k].timeline), default=0.0) for k in kinds)
    for ax, kind in zip(axes[:, 0], kinds, strict=False):
        r = last[kind]
        t = [x[0] for x in r.timeline]
        ax.plot(
            t,
            [x[2] for x in r.timeline],
            color="tab:blue",
            lw=4,
            alpha=0.6,
            label="open client connections",
        )
        ax.plot(
            t,
            [x[1] for x in r.timeline],
            color="tab:orange",
            lw=2,
            label="/ping requests in flight",
        )
        ax.plot(
            t,
            [x[3] for x in r.timeline],
            color="tab:green",
            lw=1.5,
            ls="--",
            label="/ping responses received",
        )
        ax.plot(
            t,
            [x[4] for x in r.timeline],
            color="tab:red",
            lw=1.5,
            ls="--",
            label="/ping lost (connection closed, no response)",
        )
        ax.axvline(0, color="tab:red", lw=1.5)
        ax.annotate(
            "SIGINT",
            (0, 1),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -12),
            textcoords="offset points",
            color="tab:red",
            ha="right",
        )
        if r.toRefusal is not None:
            ax.axvline(r.toRefusal, color="grey", lw=1, ls=":")
            ax.annotate(
                "new connects refused",
                (r.toRefusal, 0.3),
                xycoords=("data", "axes fraction"),
                xytext=(2, 0),
                textcoords="offset points",
                color="grey",
                fontsize=8,
                rotation=90,
            )
        if r.toExit is not None:
            ax.axvline(r.toExit, color="black", lw=1.5)
            ax.annotate(
                "exit",
                (r.toExit, 1),
                xycoords=("data", "axes fraction"),
                xytext=(3, -12),
                textcoords="offset points",
            )
        verdictText = (
            f"{r.completed}/{r.busy} /ping answered, {r.idleClosed}/{r.idle} idle closed, "
            f"exit {secs(r.toExit)} after SIGINT"
        )
        if r.lastResponseToExit is not None:
            verdictText += f", {ms(r.lastResponseToExit)} after the last response"
        ax.set_title(f"{titles[kind]}: {verdictText}", fontsize=9.5)
        ax.set_ylabel("count")
        ax.set_ylim(0, (r.busy + r.idle) * 1.08)
        ax.grid(alpha=0.3)
        ax.legend(loc="center right", fontsize=8)
    axes[-1, 0].set_xlabel("seconds since SIGINT")
    axes[-1, 0].set_xlim(-s.settle, end + 0.05)
    fig.suptitle(
        f"Shutdown with {s.busy} requests in flight and {s.idle} idle keep-alive connections "
        f"(ping delay {s.pingDelay:g} s)\n{machine()}",
        fontsize=10,
    )
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"plot: {path}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--busy", type=int, help="/ping requests in flight at SIGINT (default 1000)"
    )
    parser.add_argument(
        "--idle", type=int, help="idle keep-alive connections (default 5000)"
    )
    parser.add_argument(
        "--runs", type=int, help="runs of each server, alternating (default 3)"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny sizes: does it still work?"
    )
    parser.add_argument(
        "--out", default=DEFAULT_OUT, help="where the plot goes (default bench/out)"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 3 if a gracesvc target is missed"
    )
    args = parser.parse_args(argv)
    s = SMOKE if args.smoke else Sizes()
    s.busy = args.busy if args.busy is not None else s.busy
    s.idle = args.idle if args.idle is not None else s.idle
    s.runs = max(1, args.runs) if args.runs is not None else s.runs

    needed = 2 * (s.busy + s.idle) + 500
    limit = raiseFileLimit(needed)
    if limit < needed:
        print(
            f"bench.scale: the open files limit is {limit}, {needed} are needed "
            "(one socket per connection on each side); raise the hard limit "
            "(ulimit -Hn) or use --busy/--idle",
            file=sys.stderr,
        )
        return 2

    print(
        f"bench.scale: {machine()}"
        + (" [smoke: tiny sizes, figures not meaningful]" if args.smoke else "")
    )
    print(
        f"{s.busy} /ping (delay {s.pingDelay:g} s) in flight + {s.idle} idle keep-alive connections "
        f"(quiet >= {IDLE_QUIET:g} s) at SIGINT, shutdown cap {s.cap:g} s; {s.runs} runs of each server, alternating; "
        f"open files limit {limit} (inherited by the servers)"
    )
    sys.stdout.flush()
    began = time.monotonic()
    runs: list[Run] = []
    for _ in range(s.runs):
        for kind in ("gracesvc", "plain"):
            runs.append(scenario(kind, s))
    print()
    print(
        table(
            ["measure", "gracesvc", "plain Klein", "target (gracesvc)"],
            figures(runs, s),
        )
    )
    print()
    print(plot(runs, s, os.path.join(args.out, "shutdown-timeline.png")))
    lastG = [r for r in runs if r.kind == "gracesvc"][-1]
    print(
        "gracesvc's own account of its last drain:\n  "
        + lastG.drainLog.replace("\n", "\n  ")
    )
    print(f"{len(runs)} runs in {time.monotonic() - began:.0f} s")
    if args.check:
        g = [r for r in runs if r.kind == "gracesvc"]
        ok = all(
            r.completed == s.busy
            and r.idleClosed == s.idle
            and r.refused
            and r.lastResponseToExit is not None
            and r.lastResponseToExit < 0.025
            and r.toExit is not None
            and r.toExit < s.cap
            for r in g
        )
        return 0 if ok else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
