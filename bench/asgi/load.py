"""
The ASGI servers under load, side by side: CPU time per request and
requests per second (C{wrk}), resident memory per idle keep-alive
connection, 10,000 idle connections and 1,000 requests in flight at
SIGTERM, and gracesvc's C{--workers 2} against one process.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import signal
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from bench._net import ANSWERED, CLOSED, Fleet
from bench.asgi.servers import (
    BARE,
    GRACESVC,
    UVICORN,
    Options,
    Server,
    groupCpuSeconds,
    groupRssBytes,
    processCpuSeconds,
    start,
)
from gracesvc.testing import get

#: The server every ratio is taken to.
BASELINE = UVICORN


@dataclass
class Measure:
    """
    One server, one round: its CPU time per request and its rate.
    """

    cpu: float
    rps: float
    problems: str = ""


@dataclass
class Throughput:
    """
    Every round's measures, by server key.
    """

    measures: dict[str, list[Measure]] = field(default_factory=dict)
    ratios: dict[str, list[float]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def wrk(
    port: int, path: str, seconds: float, connections: int, cpu: int | None
) -> tuple[int, float, str, float]:
    """
    Run C{wrk -t1} on C{path} for C{seconds}, pinned to core C{cpu} if
    given.

    @return: requests counted, requests per second, what went wrong, and
        the CPU time wrk itself used.
    """
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    argv.append(f"http://127.0.0.1:{port}{path}")
    if cpu is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert process.stdout is not None
    output = process.stdout.read().decode("utf-8", "replace")
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    used = usage.ru_utime + usage.ru_stime
    total = re.search(r"(\d+) requests in", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    problems = "; ".join(
        m.group(0)
        for m in re.finditer(
            r"(Non-2xx or 3xx responses: \d+|Socket errors: [^\n]+)", output
        )
    )
    if total is None or rate is None:
        return 0, 0.0, f"wrk printed no figures: {output.strip()[-300:]!r}", used
    return int(total.group(1)), float(rate.group(1)), problems, used


def throughput(
    servers: Sequence[Server],
    app: str,
    path: str,
    rounds: int,
    duration: float,
    warmup: float,
    connections: int,
    log: Callable[[str], None],
) -> Throughput:
    """
    Each round starts each server in turn (the order rotating from round to
    round), a fresh process pinned to core 0, loads it with C{wrk -t1}
    pinned to core 1 for C{warmup} and then C{duration} seconds, and divides
    the CPU time of the server's whole process group over the measured run
    by the requests wrk counted.  Each figure is also divided by the same
    round's figure of L{BASELINE}.
    """
    result = Throughput()
    ready = []
    for server in servers:
        missing = server.missing()
        if missing is None:
            ready.append(server)
            result.measures[server.key] = []
            result.ratios[server.key] = []
        else:
            result.skipped[server.key] = missing
    for i in range(rounds):
        shift = i % max(1, len(ready))
        order = ready[shift:] + ready[:shift]
        measured: dict[str, Measure] = {}
        for server in order:
            try:
                measured[server.key] = _measure(
                    server, app, path, duration, warmup, connections
                )
            except Exception as e:
                measured[server.key] = Measure(0.0, 0.0, f"ERROR: {e}"[:200])
            result.measures[server.key].append(measured[server.key])
        base = measured.get(BASELINE.key)
        if base is not None and base.cpu:
            for key, m in measured.items():
                if m.cpu:
                    result.ratios[key].append(m.cpu / base.cpu)
        log(
            f"  round {i + 1}: "
            + "  ".join(
                f"{k}={m.cpu * 1e6:.1f}us/{m.rps:.0f}rps"
                + (f" [{m.problems}]" if m.problems else "")
                for k, m in measured.items()
            )
        )
    return result


def _measure(
    server: Server,
    app: str,
    path: str,
    duration: float,
    warmup: float,
    connections: int,
) -> Measure:
    """
    One server, one round of L{throughput}.
    """
    running = start(server, app, Options(), pin=0)
    try:
        if warmup > 0:
            wrk(running.port, path, warmup, connections, 1)
        before = groupCpuSeconds(running.pid)
        requests, rps, problems, _ = wrk(running.port, path, duration, connections, 1)
        used = groupCpuSeconds(running.pid) - before
    finally:
        running.stop()
    return Measure(used / requests if requests else 0.0, rps, problems)


def spread(values: Sequence[float], digits: int = 3) -> str:
    if not values:
        return "-"
    middle = statistics.median(values)
    if len(values) == 1:
        return f"{middle:.{digits}f}"
    return f"{middle:.{digits}f} ({min(values):.{digits}f}-{max(values):.{digits}f})"


def throughputRows(
    servers: Sequence[Server], t: Throughput
) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for server in servers:
        if server.key in t.skipped:
            rows.append((server.header(), t.skipped[server.key], "-", "-", "-"))
            continue
        ms = [m for m in t.measures[server.key] if m.cpu]
        problems = "; ".join(
            sorted({m.problems for m in t.measures[server.key] if m.problems})
        )
        if not ms:
            rows.append((server.header(), "-", "-", "-", problems))
            continue
        rows.append(
            (
                server.header(),
                f"{statistics.median(m.rps for m in ms):,.0f}",
                spread([m.cpu * 1e6 for m in ms], 1),
                spread(t.ratios[server.key]) if t.ratios[server.key] else "-",
                problems or "-",
            )
        )
    return rows


def fileLimit(wanted: int) -> int:
    """
    Raise this process's limit on open files to C{wanted} (its hard limit
    too, where allowed: root may); children started afterwards inherit it.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            wanted = hard
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        soft = wanted
    return int(soft)


def _openIdle(fleet: Fleet, n: int) -> list[object]:
    return list(fleet.connect(n, "idle", window=200, timeout=120))


def memory(
    servers: Sequence[Server], n: int, rounds: int, log: Callable[[str], None]
) -> dict[str, list[float] | str]:
    """
    Resident memory per idle keep-alive connection: a fresh server on core
    0 (keep-alive raised to 300 s where the server has a timeout), 200
    connections opened, each answered C{GET /hello}, and closed (a warm-up),
    then its process group's resident memory read; C{n} connections opened
    from core 1, each answered C{GET /hello} and left open; after 1 s the
    memory again.  The figure is the difference over C{n}.
    """
    out: dict[str, list[float] | str] = {}
    affinity = os.sched_getaffinity(0)
    for server in servers:
        missing = server.missing()
        if missing is not None:
            out[server.key] = missing
            continue
        try:
            out[server.key] = _memoryRounds(server, n, rounds, affinity)
        except Exception as e:
            out[server.key] = f"ERROR: {e}"[:200]
        log(f"  {server.key}: {out[server.key]}")
    return out


def _memoryRounds(
    server: Server, n: int, rounds: int, affinity: set[int]
) -> list[float]:
    """
    L{memory}'s C{rounds} for one server.

    @return: the bytes per connection of each round.
    """
    figures: list[float] = []
    for _ in range(rounds):
        running = start(
            server, BARE, Options(keepAlive=300, connections=n + 1024), pin=0
        )
        try:
            if len(affinity) > 1:
                os.sched_setaffinity(0, {1})
            warm = Fleet(running.port, get("/hello"))
            try:
                _openIdle(warm, 200)
            finally:
                warm.close()
            time.sleep(1.0)
            before = groupRssBytes(running.pid)
            fleet = Fleet(running.port, get("/hello"))
            try:
                _openIdle(fleet, n)
                time.sleep(1.0)
                after = groupRssBytes(running.pid)
            finally:
                fleet.close()
        finally:
            os.sched_setaffinity(0, affinity)
            running.stop()
        figures.append((after - before) / n)
    return figures


@dataclass
class Scale:
    answered: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    toExit: list[float] = field(default_factory=list)
    idleClosed: list[float] = field(default_factory=list)


def scale(
    servers: Sequence[Server],
    idle: int,
    busy: int,
    sleep: float,
    runs: int,
    log: Callable[[str], None],
) -> dict[str, Scale | str]:
    """
    C{idle} keep-alive connections (each answered C{GET /hello}, then
    quiet) and C{busy} more, each with a C{GET /sleep/SECONDS} in flight,
    at SIGTERM: how many of those are answered, how soon the process exits
    after the last, how soon the idle connections are closed.
    """
    out: dict[str, Scale | str] = {}
    for server in servers:
        missing = server.missing()
        if missing is not None:
            out[server.key] = missing
            continue
        figures = Scale()
        try:
            for _ in range(runs):
                _scaleRun(server, idle, busy, sleep, figures)
        except Exception as e:
            out[server.key] = f"ERROR: {e}"[:200]
            log(f"  {server.key}: {out[server.key]}")
            continue
        out[server.key] = figures
        log(
            f"  {server.key}: answered {figures.answered}, exit after the last "
            + ", ".join(f"{t * 1000:.1f} ms" for t in figures.toExit)
        )
    return out


def _scaleRun(
    server: Server, idle: int, busy: int, sleep: float, figures: Scale
) -> None:
    """
    One run of L{scale}, its figures added to C{figures}.
    """
    running = start(
        server, BARE, Options(cap=10, keepAlive=300, connections=idle + busy + 1024)
    )
    fleet = Fleet(running.port, get("/hello"))
    try:
        quiet = fleet.connect(idle, "idle", window=200, timeout=120)
        active = fleet.connect(busy, "busy", window=200, timeout=60)
        fleet.send(active, get(f"/sleep/{sleep:g}"))
        # Long enough for every request to reach the application, well
        # before the first is answered.
        fleet.run(lambda: False, min(0.5, sleep / 4))
        fleet.watchExit(running.pid)
        sentAt = running.signal(signal.SIGTERM)

        def done() -> bool:
            return (
                fleet.exitedAt is not None
                and all(c.state in (ANSWERED, CLOSED) for c in active)
                and all(c.state == CLOSED for c in quiet)
            )

        fleet.run(done, sleep + 15)
        running.wait(15)
    finally:
        fleet.close()
        running.kill()
    answered = [c for c in active if c.answeredAt is not None and c.code == 200]
    figures.answered.append(len(answered))
    figures.lost.append(busy - len(answered))
    exitedAt = fleet.exitedAt or running.exitedAt
    last = max((c.answeredAt for c in answered if c.answeredAt), default=None)
    if last is not None and exitedAt is not None:
        figures.toExit.append(exitedAt - last)
    closed = [c.closedAt for c in quiet if c.closedAt is not None]
    if len(closed) == idle:
        figures.idleClosed.append(max(closed) - sentAt)


@dataclass
class Workers:
    rps: dict[str, list[float]] = field(default_factory=dict)
    loadCores: dict[str, list[float]] = field(default_factory=dict)
    serverCores: dict[str, list[float]] = field(default_factory=dict)
    #: cores busy with anything else on the machine meanwhile.
    otherCores: dict[str, list[float]] = field(default_factory=dict)
    #: with 2 workers, the busier worker's share of the two workers' CPU
    #: time: 0.5 when the kernel spread the connections evenly.
    busiestShare: list[float] = field(default_factory=list)


def workers(
    servers: Sequence[Server],
    app: str,
    path: str,
    rounds: int,
    duration: float,
    warmup: float,
    connections: int,
    log: Callable[[str], None],
) -> dict[str, Workers | str]:
    """
    Each server with 2 worker processes and with one (gracesvc:
    C{--workers 2} and C{--workers 0}), unpinned, serving C{app}, loaded by
    C{wrk -t1} on C{path} in turn, round by round: requests per second, and
    how much of the machine's cores wrk and the server each used.
    """
    out: dict[str, Workers | str] = {}
    for server in servers:
        missing = server.missing()
        if missing is not None:
            out[server.key] = missing
            continue
        try:
            out[server.key] = _workerRounds(
                server, app, path, rounds, duration, warmup, connections, log
            )
        except Exception as e:
            out[server.key] = f"ERROR: {e}"[:200]
    return out


def _workerRounds(
    server: Server,
    app: str,
    path: str,
    rounds: int,
    duration: float,
    warmup: float,
    connections: int,
    log: Callable[[str], None],
) -> Workers:
    """
    L{workers}' rounds for one server.
    """
    w = Workers()
    configs = {"1": _single(server), "2": Options(workers=2)}
    for i in range(rounds):
        order = ["2", "1"] if i % 2 == 0 else ["1", "2"]
        for which in order:
            running = start(server, app, configs[which])
            try:
                if warmup > 0:
                    wrk(running.port, path, warmup, connections, None)
                before = processCpuSeconds(running.pid)
                machineBefore = machineBusySeconds()
                began = time.monotonic()
                _, rps, _, used = wrk(running.port, path, duration, connections, None)
                elapsed = time.monotonic() - began
                after = processCpuSeconds(running.pid)
                everything = machineBusySeconds() - machineBefore
                spent = sorted(
                    (after[pid] - before.get(pid, 0.0) for pid in after), reverse=True
                )
                served = sum(spent)
            finally:
                running.stop()
            w.rps.setdefault(which, []).append(rps)
            w.loadCores.setdefault(which, []).append(used / elapsed)
            w.serverCores.setdefault(which, []).append(served / elapsed)
            w.otherCores.setdefault(which, []).append(
                max(0.0, everything - served - used) / elapsed
            )
            if which == "2" and len(spent) >= 2 and spent[0] + spent[1] > 0:
                # The two busiest processes are the workers.
                w.busiestShare.append(spent[0] / (spent[0] + spent[1]))
        log(
            f"  {server.key} round {i + 1}: 1 process {w.rps['1'][-1]:,.0f} req/s, "
            f"2 workers {w.rps['2'][-1]:,.0f} req/s"
        )
    return w


def reloads(count: int, connections: int, spare: float = 3.0) -> list[str]:
    """
    C{twistd gracesvc --asgi --workers 2} loaded by C{wrk} on C{/ping} and
    by a client opening a new connection per request, while C{count}
    SIGHUPs reload its workers, each once the last is done (as
    C{bench.workers} does for the built-in app).

    @param spare: seconds of load beyond 2.5 s a reload (as
        C{bench.workers}).
    @return: C{bench.workers}' row: the reloads, the run's length, wrk's
        requests, errors, p99 and max latency, the new connections.
    """
    from bench import workers
    from gracesvc.testing.process import MasterProcess

    master = MasterProcess("--asgi", BARE, workers=2)
    try:
        master.waitUntilReady()
        return workers.loadRun(master, count * 2.5 + spare, connections, count)
    finally:
        workers.stop(master)


def machineBusySeconds() -> float:
    """
    @return: the CPU time every core of the machine has spent busy so far
        (C{/proc/stat}: all but idle and iowait).
    """
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _single(server: Server) -> Options:
    """
    @return: the options of one process serving alone: gracesvc's
        C{--workers 0}; the others' default (one process, or one worker).
    """
    return Options(workers=0) if server is GRACESVC else Options()
