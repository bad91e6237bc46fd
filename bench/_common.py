"""
What the benchmarks share: starting servers, summarising timings, printing
tables, describing the machine.
"""

from __future__ import annotations

import datetime
import os
import platform
import resource
import statistics
import subprocess
import sys
from collections.abc import Iterable, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    # So that "python bench/x.py" finds tests.twistdproc as "-m bench.x" does.
    sys.path.insert(0, ROOT)

from gracesvc.testing.process import Twistd, freePort  # noqa: E402

PLAIN_TAC = os.path.join(ROOT, "bench", "plain.tac")
DEFAULT_OUT = os.path.join(ROOT, "bench", "out")


def startGracesvc(*args: str, **kwargs: object) -> Twistd:
    """
    Start C{twistd -n gracesvc} with C{args} on a free loopback port and
    wait until it serves.
    """
    twistd = Twistd(*args, **kwargs)  # type: ignore[arg-type]
    try:
        return twistd.waitUntilServing()
    except BaseException:
        twistd.kill()
        raise


def startPlain(pingDelay: float) -> Twistd:
    """
    Start C{bench/plain.tac} (the same routes, no drain layer) under twistd
    on a free loopback port and wait until it serves.
    """
    port = freePort()
    env = dict(
        os.environ,
        GRACESVC_BENCH_PORT=str(port),
        GRACESVC_BENCH_PING_DELAY=repr(pingDelay),
    )
    twistd = Twistd(PLAIN_TAC, port=port, listen=[], env=env, plugin="-y")
    try:
        return twistd.waitUntilServing()
    except BaseException:
        twistd.kill()
        raise


def startServer(kind: str, pingDelay: float, *args: str) -> Twistd:
    """
    @param kind: C{"gracesvc"} or C{"plain"}.
    @param args: more options for gracesvc.
    """
    if kind == "gracesvc":
        return startGracesvc("--ping-delay", repr(pingDelay), *args)
    return startPlain(pingDelay)


def stopServer(twistd: Twistd, timeout: float = 10.0) -> str:
    """
    SIGTERM, wait for exit, and kill (by pid) if it does not.

    @return: the server's log (its directory is gone afterwards).
    """
    import signal

    try:
        if twistd.process.poll() is None:
            twistd.signal(signal.SIGTERM)
            twistd.wait(timeout)
    except AssertionError:
        pass
    finally:
        log = twistd.log()
        twistd.kill()
    return log


def raiseFileLimit(wanted: int) -> int:
    """
    Raise this process's soft limit on open files towards C{wanted} (within
    the hard limit).  Children started afterwards inherit it.

    @return: the soft limit now in force.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    return int(soft)


def procStatus(pid: int) -> dict[str, int]:
    """
    @return: the C{Vm*} lines of C{/proc/PID/status}, in KiB.
    """
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("Vm"):
                    name, value = line.split(":", 1)
                    values[name] = int(value.split()[0])
    except OSError:
        pass
    return values


def cores() -> int:
    return os.cpu_count() or 1


def machine() -> str:
    """
    @return: one line: date, cores, Python, Twisted, and the commit measured.
    """
    import twisted

    try:
        head = subprocess.run(
            ["git", "-C", ROOT, "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        head = ""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{now}, {cores()} cores ({platform.machine()}), Python "
        f"{platform.python_version()}, Twisted {twisted.__version__}"
        + (f", gracesvc {head}" if head else "")
    )


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.1f} ms"


def secs(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds:.3f} s"


def summary(values: Sequence[float], unit: str = "ms") -> str:
    """
    @return: C{"median X, max Y (n=N)"} in C{unit} ("ms" or "s").
    """
    if not values:
        return "no data"
    fmt = ms if unit == "ms" else secs
    if len(values) == 1:
        return fmt(values[0])
    return (
        f"median {fmt(statistics.median(values))}, max {fmt(max(values))} "
        f"(n={len(values)})"
    )


def verdict(ok: bool | None) -> str:
    return {True: "yes", False: "**NO**", None: "-"}[ok]


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """
    @return: a Markdown table, columns padded for the terminal.
    """
    cells = [list(headers)] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return (
            "| "
            + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=False))
            + " |"
        )

    out = [line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(row) for row in cells[1:]]
    return "\n".join(out)
