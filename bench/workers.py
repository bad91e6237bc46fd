"""
The figures of C{twistd gracesvc --workers N}::

    python -m bench.workers            # about two minutes
    python -m bench.workers --smoke    # does it still work?

1. Stop: 20 C{/ping} (2 s each) in flight, SIGTERM to the master, then to
   its process group: answered, first refused connect, master exit after
   the last response.
2. Reload: 10 SIGHUPs under C{wrk} (keep-alive) plus a client opening a new
   connection per request: failed requests, refused or reset connections,
   p99 and max latency.
3. Throughput: C{--workers 2} and C{--workers 0} loaded alternately by
   C{wrk -t1 -c50}, round by round: requests/s, the ratio, each worker's
   share of the requests (from its C{/metrics}), server CPU per request.
4. Kills: SIGKILL to the master (workers gone, port free), SIGKILL to a
   worker (replacement ready).

Every master runs in a process group of its own and is killed, with its
workers, by pid at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence

from gracesvc.testing import get, samples
from gracesvc.testing.process import (
    InFlight,
    MasterProcess,
    RawClient,
    Twistd,
    alive,
    connectRefused,
    freePort,
    waitUntilRefused,
)

from ._common import machine, table

TICK = os.sysconf("SC_CLK_TCK")


def cpuSeconds(pid: int) -> float:
    """
    @return: user + system CPU seconds of C{pid} so far (0 once gone).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def start(*args: str, workers: int = 2) -> MasterProcess:
    master = MasterProcess("--ping-delay", "0", *args, workers=workers)
    try:
        return master.waitUntilReady()
    except BaseException:
        master.kill()
        raise


def stop(master: MasterProcess) -> None:
    if not master.exited:
        master.signal(signal.SIGTERM)
        try:
            master.wait(15)
        except AssertionError:
            pass
    master.kill()


# 1. Stop.


def stopFigures(toGroup: bool) -> tuple[str, str, str, str]:
    master = start("--ping-delay", "2", "--shutdown-timeout", "5")
    try:
        requests = []
        for _ in range(20):
            requests.append(InFlight(master.port, get("/ping")))
            time.sleep(0.01)
        time.sleep(0.1)
        sentAt = (
            master.signalGroup(signal.SIGTERM)
            if toGroup
            else master.signal(signal.SIGTERM)
        )
        refusedAt = waitUntilRefused(master.port)
        master.wait(10)
        for r in requests:
            r.join(10)
        answered = sum(1 for r in requests if r.response and r.response.code == 200)
        last = max(r.doneAt or 0 for r in requests)
        assert master.exitedAt is not None
        return (
            "process group" if toGroup else "master",
            f"{answered}/20",
            f"{(refusedAt - sentAt) * 1000:.1f} ms",
            f"{(master.exitedAt - last) * 1000:.1f} ms",
        )
    finally:
        stop(master)


# 2. Reload.


def wrk(port: int, seconds: float, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{max(1, round(seconds))}s",
            "--latency",
            f"http://127.0.0.1:{port}/ping",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def wrkFigures(out: str) -> dict[str, str]:
    """
    @return: requests, errors, p99 and max from wrk's output.
    """
    figures = {"requests": "?", "errors": "0", "p99": "?", "max": "?"}
    found = re.search(r"(\d+) requests in", out)
    if found:
        figures["requests"] = found.group(1)
    errors = []
    for pattern in (r"Non-2xx or 3xx responses: \d+", r"Socket errors: [^\n]+"):
        match = re.search(pattern, out)
        if match:
            errors.append(match.group(0))
    if errors:
        figures["errors"] = "; ".join(errors)
    match = re.search(r"99%\s+(\S+)", out)
    if match:
        figures["p99"] = match.group(1)
    match = re.search(r"Latency\s+\S+\s+\S+\s+(\S+)", out)
    if match:
        figures["max"] = match.group(1)
    return figures


class NewConnections(threading.Thread):
    """
    One C{GET /ping} per new connection, back to back, counting failures.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.ok = 0
        self.failed: dict[str, int] = {}
        self.stopping = threading.Event()
        self.start()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with RawClient(self.port, timeout=5) as client:
                    client.send(get("/ping", "Connection: close"))
                    code = client.readResponse().code
                result = "ok" if code == 200 else f"HTTP {code}"
            except OSError as e:
                result = type(e).__name__
            if result == "ok":
                self.ok += 1
            else:
                self.failed[result] = self.failed.get(result, 0) + 1


def loadRun(
    master: MasterProcess, seconds: float, connections: int, reloads: int
) -> list[str]:
    """
    Load C{master} with wrk and a new-connection client for C{seconds},
    sending C{reloads} SIGHUPs meanwhile, each once the last one is done.

    @return: the table row.
    """
    load = wrk(master.port, seconds, connections)
    fresh = NewConnections(master.port)
    time.sleep(1)
    began = time.monotonic()
    for _ in range(reloads):
        generation = master.masterLog().count("gracesvc master: SIGHUP") + 2
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=generation)
        time.sleep(0.4)
    took = time.monotonic() - began
    out, _ = load.communicate(timeout=seconds + 60)
    fresh.stopping.set()
    fresh.join(10)
    figures = wrkFigures(out)
    failed = master.masterLog().count("reload failed")
    return [
        f"{reloads} in {took:.1f} s, {failed} failed" if reloads else "none",
        f"{seconds:g} s",
        figures["requests"],
        figures["errors"],
        figures["p99"],
        figures["max"],
        f"{fresh.ok} ok, failed {fresh.failed or 0}",
    ]


def reloadFigures(
    reloads: int, connections: int, seconds: float | None = None
) -> list[list[str]]:
    """
    @return: a row without reloads, then one with C{reloads}, on one master,
        each a load run of C{seconds} (by default about how long the reloads
        take on a loaded 2-core machine, and some).
    """
    master = start()
    try:
        if seconds is None:
            seconds = reloads * 2.5 + 3
        return [
            loadRun(master, seconds, connections, 0),
            loadRun(master, seconds, connections, reloads),
        ]
    finally:
        stop(master)


# 3. Throughput.


def workerRequests(metricsPort: int) -> dict[str, float]:
    """
    @return: by worker slot, the requests it has completed, from the
        master's metrics of the whole tree (C{--metrics-listen}).
    """
    with RawClient(metricsPort) as client:
        client.send(get("/metrics", "Connection: close"))
        scraped = samples(client.readResponse().body)
    counts: dict[str, float] = {}
    for (name, labels), value in scraped.items():
        if name == "gracesvc_requests_total":
            slot = dict(labels)["worker"]
            counts[slot] = counts.get(slot, 0) + value
    return counts


def treeCpu(pid: int, children: Sequence[int]) -> float:
    return cpuSeconds(pid) + sum(cpuSeconds(c) for c in children)


def throughputFigures(
    rounds: int, seconds: float, connections: int, extra: Sequence[str] = ()
) -> list[list[str]]:
    metricsPort = freePort()
    workers = start(
        "--metrics-listen", f"tcp:{metricsPort}:interface=127.0.0.1", *extra
    )
    single = Twistd("--ping-delay", "0", newSession=True)
    rows = []
    try:
        single.waitUntilServing()
        pids = workers.workers()
        for i in range(rounds):
            figures: dict[str, tuple[float, float, float]] = {}
            shares = ""
            order = ["2", "0"] if i % 2 == 0 else ["0", "2"]
            for which in order:
                if which == "2":
                    before = workerRequests(metricsPort)
                    cpu = treeCpu(workers.pid, pids)
                    out, _ = wrk(workers.port, seconds, connections).communicate()
                    cpu = treeCpu(workers.pid, pids) - cpu
                    after = workerRequests(metricsPort)
                    served = {w: n - before.get(w, 0) for w, n in sorted(after.items())}
                    allServed = sum(served.values()) or 1
                    shares = " / ".join(f"{n / allServed:.0%}" for n in served.values())
                else:
                    cpu = cpuSeconds(single.pid)
                    out, _ = wrk(single.port, seconds, connections).communicate()
                    cpu = cpuSeconds(single.pid) - cpu
                rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
                total = re.search(r"(\d+) requests in", out)
                n = int(total.group(1)) if total else 0
                figures[which] = (
                    float(rps.group(1)) if rps else 0.0,
                    cpu / n * 1e6 if n else 0.0,
                    cpu / seconds,
                )
            rows.append(
                [
                    str(i + 1),
                    f"{figures['0'][0]:.0f}",
                    f"{figures['2'][0]:.0f}",
                    f"{figures['2'][0] / (figures['0'][0] or 1):.2f}x",
                    shares,
                    f"{figures['0'][1]:.0f} / {figures['2'][1]:.0f}",
                    f"{figures['0'][2]:.2f} / {figures['2'][2]:.2f}",
                ]
            )
            print(f"  throughput round {i + 1}: {rows[-1]}", flush=True)
    finally:
        stop(workers)
        if not single.exited:
            single.signal(signal.SIGTERM)
            try:
                single.wait(10)
            except AssertionError:
                pass
        single.kill()
    return rows


# 4. Kills.


def killFigures() -> list[list[str]]:
    rows = []
    master = start("--shutdown-timeout", "2")
    try:
        pids = master.workers()
        killedAt = master.signal(signal.SIGKILL)
        deadline = killedAt + 5
        while time.monotonic() < deadline:
            if not any(alive(p) for p in pids) and connectRefused(master.port):
                break
            time.sleep(0.005)
        rows.append(
            [
                "SIGKILL master (cap 2 s)",
                f"workers gone, port free after {time.monotonic() - killedAt:.3f} s",
            ]
        )
    finally:
        master.kill()
    master = start()
    try:
        before = set(master.workers())
        victim = min(before)
        ready = master.masterLog().count(" ready> ready")
        killedAt = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        spawnedAfter = None
        while master.masterLog().count(" ready> ready") == ready:
            if spawnedAfter is None and set(master.workers()) - before:
                spawnedAfter = time.monotonic() - killedAt
            if time.monotonic() > killedAt + 10:
                break
            time.sleep(0.002)
        readyAfter = time.monotonic() - killedAt
        rows.append(
            [
                "SIGKILL one worker",
                f"replacement started after {(spawnedAfter or readyAfter) * 1000:.0f} ms, "
                f"ready after {readyAfter:.3f} s",
            ]
        )
    finally:
        stop(master)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.workers", description=__doc__
    )
    parser.add_argument("--reloads", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="throughput: the workers with --reuse-port",
    )
    parser.add_argument(
        "--only",
        default="stop,reload,throughput,kills",
        help="the sections to run, comma-separated (default: all)",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        args.reloads, args.rounds, args.duration = 1, 1, 0.5
    if shutil.which("wrk") is None:
        print(
            "bench.workers: wrk is not installed (apt-get install wrk)", file=sys.stderr
        )
        return 2
    print(f"bench.workers: {machine()}", flush=True)
    socket.setdefaulttimeout(15)

    sections = set(args.only.split(","))
    if "stop" in sections:
        stopSection()
    if "reload" in sections:
        # The smoke's one reload in a short run: it still shows that
        # a reload under load fails nothing, in a fraction of the time.
        reloadSection(args.reloads, 2.5 if args.smoke else None)
    if "throughput" in sections:
        throughputSection(
            args.rounds, args.duration, ["--reuse-port"] if args.reuse_port else []
        )
    if "kills" in sections:
        print("\n## Kills\n")
        print(table(["what", "figure"], killFigures()))
    return 0


def stopSection() -> None:
    print("\n## Stop: --workers 2, 20 /ping (2 s) in flight, SIGTERM\n")
    stops = [stopFigures(False), stopFigures(True)]
    print(
        table(
            [
                "SIGTERM to",
                "answered",
                "first refused",
                "master exit after last response",
            ],
            stops,
        ),
        flush=True,
    )


def reloadSection(reloads: int, seconds: float | None = None) -> None:
    print(
        f"\n## Reload: --workers 2, {reloads} SIGHUPs under wrk -t1 -c20 "
        "--latency plus one client opening a connection per request\n"
    )
    rows = reloadFigures(reloads, 20, seconds)
    print(
        table(
            [
                "SIGHUPs",
                "wrk run",
                "wrk requests",
                "wrk errors",
                "p99",
                "max",
                "new-connection client",
            ],
            rows,
        ),
        flush=True,
    )


def throughputSection(rounds: int, duration: float, extra: Sequence[str]) -> None:
    print(
        f"\n## Throughput: wrk -t1 -c50 -d{duration:g}s on /ping, --workers 0 "
        f"and --workers 2 {' '.join(extra)} alternately\n"
    )
    throughput = throughputFigures(rounds, duration, 50, extra)
    print(
        table(
            [
                "round",
                "--workers 0 req/s",
                "--workers 2 req/s",
                "ratio",
                "worker shares",
                "server CPU µs/request (0 / 2)",
                "server cores busy (0 / 2)",
            ],
            throughput,
        ),
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
