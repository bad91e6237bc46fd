"""
The open internet at full size: each attack against gracesvc and, in the
same run, against C{twistd web} serving the same app on Twisted's plain
site (what a Twisted user runs without gracesvc), while an honest client
asks for C{/healthz} every 10 ms on a keep-alive connection and its p99
latency is taken over the attack::

    .venv/bin/python -m bench.hostile                 # every attack
    .venv/bin/python -m bench.hostile --only storm    # some of them
    .venv/bin/python -m bench.hostile --smoke         # tiny sizes

The attacks, each beside its target:

  - B{storm}: 5,000 connects in a tight loop.  The kernel's
    C{TcpExtListenOverflows} (C{/proc/net/netstat}, for the whole machine:
    another program overflowing its own listener meanwhile counts too)
    must not move; p99 connect under 5 ms.
  - B{slow}: 1,000 connections each sending its request head a byte a
    second: all closed within C{--header-timeout} (10 s) + 1 s; honest
    p99 under 50 ms meanwhile.
  - B{limit}: 2,000 connections against C{--max-connections 500}, each
    sending a request at once, then each read in turn (and closed unless
    served): past the limit each reads a 503, none is reset, none piles
    up.
  - B{emfile}: the server under C{ulimit -n 256}, 1,000 connects held
    open: its CPU under 10 % while over the limit, at most one log line a
    second, C{/healthz} answered within 1 s after the clients leave; with
    C{--max-connections 0} (descriptors run out) and with the default
    limit (which comes first).
  - B{wspush}: a WebSocket client that never reads while the application
    pushes 100 MiB: closed, the server's memory grown by less than 20 MB.
  - B{fragments}: a 1 MiB WebSocket message of two-byte fragments (half a
    million frames): refused with 1009 at C{--ws-max-message-size} (1 MiB),
    the server's memory grown by little.
  - B{stall}: a client that never reads a 1 GiB download: aborted at
    C{--write-timeout} (set to 5 s here) once the buffers are full; a
    client that reads 16 KiB a second is not.
  - B{h2}: the HTTP/2 attacks of C{bench/_h2attacks.py} (rapid reset,
    CONTINUATION flood, PING flood, HPACK bomb, SETTINGS flood), when that
    module is there: each must end in a GOAWAY or a close, with the honest
    p99 under 50 ms and the server's memory grown by less than 10 MB.

The HTTP/2 attacks are C{bench._h2attacks}' (its C{ATTACKS} and
C{measure}, which runs each from a process of its own so that the honest
client measures the server, not the attacker's share of the interpreter),
against a C{--h2c} listener serving C{tests.apps.bigapp} (big responses,
for the zero-window attack) where it is there.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from bench._common import ROOT, machine, raiseFileLimit, table, verdict
from gracesvc.testing import get, parseResponses
from gracesvc.testing.process import (
    RawClient,
    Twistd,
    cpuSeconds,
    freePort,
    residentMemory,
    webSocketUpgrade,
)

APP = "tests.apps.edgeapp"

#: One row of the table: attack, server, measure, value, target, met.
Row = tuple[str, str, str, str, str, str]


@dataclass(frozen=True)
class Sizes:
    storm: int = 5000
    slow: int = 1000
    limitClients: int = 2000
    limit: int = 500
    held: int = 1000
    openFiles: int = 256
    pushMiB: int = 100
    fragmentBytes: int = 1 << 20
    stallSeconds: float = 5.0
    watch: float = 3.0
    headerTimeout: float = 10.0
    #: how long to wait for what a server may never do (close a client
    #: that does not read, say), on top of what it should take.
    patience: float = 5.0
    #: whether the attacks that wait on what twistd web never does run
    #: against it too.
    baselines: bool = True


SMOKE = Sizes(
    storm=300,
    slow=20,
    limitClients=40,
    limit=20,
    held=300,
    openFiles=128,
    pushMiB=20,
    fragmentBytes=1 << 16,
    stallSeconds=1.0,
    watch=0.5,
    headerTimeout=1.0,
    patience=1.0,
    baselines=False,
)


# The servers.


def gracesvc(
    *args: str, openFiles: int | None = None, app: str | None = None
) -> Twistd:
    """
    @param app: what C{--app} serves: C{tests.apps.edgeapp} by default.
    """
    twistd = Twistd("--app", app or f"{APP}:Root", *args, openFiles=openFiles)
    return _serving(twistd)


def twistdWeb(openFiles: int | None = None) -> Twistd:
    """
    C{twistd web} serving the same app on Twisted's plain site.
    """
    port = freePort()
    twistd = Twistd(
        "--listen",
        f"tcp:{port}:interface=127.0.0.1",
        "--class",
        f"{APP}.Root",
        port=port,
        listen=[],
        plugin="web",
        openFiles=openFiles,
    )
    return _serving(twistd)


def _serving(twistd: Twistd) -> Twistd:
    try:
        return twistd.waitUntilServing(timeout=30)
    except BaseException:
        twistd.kill()
        raise


SERVERS: dict[str, Callable[..., Twistd]] = {
    "gracesvc": gracesvc,
    "twistd web": lambda *args, openFiles=None: twistdWeb(openFiles),
}


def servers(sizes: Sizes) -> list[tuple[str, Callable[..., Twistd]]]:
    """
    @return: the servers an attack runs against: both, but at the smoke
        sizes gracesvc alone (those runs only keep the script from rotting;
        the connection limit's still runs against both).
    """
    if sizes.baselines:
        return list(SERVERS.items())
    return [("gracesvc", SERVERS["gracesvc"])]


@contextmanager
def running(twistd: Twistd) -> Iterator[Twistd]:
    try:
        yield twistd
    finally:
        twistd.kill()


# The honest client.


class Honest(threading.Thread):
    """
    GET C{/healthz} every 10 ms on a keep-alive connection (a new one when
    the server closes it), each latency recorded; a failure counts too.
    """

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.latencies: list[float] = []
        self.failures = 0
        self._halt = threading.Event()
        self._client: RawClient | None = None
        self.start()

    def run(self) -> None:
        while not self._halt.is_set():
            startedAt = time.monotonic()
            try:
                if self._client is None:
                    self._client = RawClient(self.port, timeout=5)
                self._client.send(get("/healthz"))
                response = self._client.readResponse()
                if response.code != 200:
                    raise ConnectionError(response.code)
                self.latencies.append(time.monotonic() - startedAt)
            except (OSError, ConnectionError):
                self.failures += 1
                if self._client is not None:
                    self._client.close()
                self._client = None
            self._halt.wait(0.01)

    def stop(self) -> str:
        """
        @return: the p99 latency, and any failures.
        """
        self._halt.set()
        self.join(10)
        if self._client is not None:
            self._client.close()
        text = p99(self.latencies)
        if self.failures:
            text += f", {self.failures} failed"
        return text

    def p99Seconds(self) -> float:
        return quantile(self.latencies, 0.99)


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def p99(values: Sequence[float]) -> str:
    if not values:
        return "no data"
    return f"p99 {quantile(values, 0.99) * 1000:.1f} ms (n={len(values)})"


# The kernel's and the process's counts.


def listenOverflows() -> int:
    with open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        if names.startswith("TcpExt:"):
            fields = dict(zip(names.split()[1:], values.split()[1:], strict=False))
            return int(fields["ListenOverflows"])
    raise OSError("no TcpExt in /proc/net/netstat")


class MemoryWatch(threading.Thread):
    """
    The resident memory of a process, sampled every 20 ms: its peak.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.before = residentMemory(pid)
        self.peak = self.before
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(0.02):
            try:
                self.peak = max(self.peak, residentMemory(self.pid))
            except OSError:
                return

    def grown(self) -> float:
        """
        @return: how much the peak was above the start, in MB.
        """
        self._halt.set()
        self.join(5)
        return (self.peak - self.before) / 1e6


# The attacks.


def storm(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    raiseFileLimit(sizes.storm + 200)
    for name, start in servers(sizes):
        with running(start()) as twistd:
            honest = Honest(twistd.port)
            time.sleep(0.2)
            before = listenOverflows()
            sockets, times = [], []
            for _ in range(sizes.storm):
                startedAt = time.monotonic()
                try:
                    sockets.append(
                        socket.create_connection(("127.0.0.1", twistd.port), timeout=5)
                    )
                except OSError:
                    pass
                times.append(time.monotonic() - startedAt)
            overflows = listenOverflows() - before
            for sock in sockets:
                sock.close()
            latency = honest.stop()
            connectP99 = quantile(times, 0.99)
            rows += [
                (
                    f"storm: {sizes.storm} connects",
                    name,
                    "TcpExtListenOverflows",
                    f"+{overflows}",
                    "+0",
                    verdict(overflows == 0),
                ),
                (
                    "",
                    name,
                    "connect time",
                    f"p99 {connectP99 * 1000:.2f} ms, max {max(times) * 1000:.1f} ms",
                    "p99 < 5 ms",
                    verdict(connectP99 < 0.005),
                ),
                ("", name, "honest client", latency, "", "-"),
            ]
    return rows


def slowHeads(sizes: Sizes) -> list[Row]:
    """
    C{sizes.slow} connections, each sending a head a byte a second.
    """
    rows: list[Row] = []
    raiseFileLimit(sizes.slow + 200)
    headerTimeout = sizes.headerTimeout
    watchFor = headerTimeout + sizes.patience
    for name, start in servers(sizes):
        args = ("--header-timeout", str(headerTimeout)) if name == "gracesvc" else ()
        with running(start(*args)) as twistd:
            honest = Honest(twistd.port)
            selector = selectors.DefaultSelector()
            opened: dict[socket.socket, float] = {}
            closed: dict[socket.socket, float] = {}
            head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 1000
            for _ in range(sizes.slow):
                sock = socket.create_connection(("127.0.0.1", twistd.port), timeout=5)
                sock.setblocking(False)
                opened[sock] = time.monotonic()
                selector.register(sock, selectors.EVENT_READ)
            sent = 0
            deadline = time.monotonic() + watchFor
            nextByte = time.monotonic()
            while len(closed) < len(opened) and time.monotonic() < deadline:
                if time.monotonic() >= nextByte:
                    for sock in opened:
                        if sock not in closed:
                            try:
                                sock.send(head[sent : sent + 1])
                            except OSError:
                                closed[sock] = time.monotonic()
                                selector.unregister(sock)
                    sent += 1
                    nextByte += 1.0
                for key, _ in selector.select(timeout=0.05):
                    sock = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:
                        closed[sock] = time.monotonic()
                        selector.unregister(sock)
            latency = honest.stop()
            durations = [closed[s] - opened[s] for s in closed]
            inTime = sum(1 for d in durations if d <= headerTimeout + 1)
            for sock in opened:
                sock.close()
            stillOpen = len(opened) - len(closed)
            rows += [
                (
                    f"slow: {sizes.slow} heads at 1 byte/s",
                    name,
                    f"closed within {headerTimeout:g} + 1 s",
                    f"{inTime}/{len(opened)}"
                    + (f" ({stillOpen} open at {watchFor:g} s)" if stillOpen else ""),
                    f"{len(opened)}/{len(opened)}",
                    verdict(inTime == len(opened)),
                ),
                (
                    "",
                    name,
                    "honest client",
                    latency,
                    "p99 < 50 ms",
                    verdict(honest.p99Seconds() < 0.05),
                ),
            ]
            del selector
    return rows


def limit(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    raiseFileLimit(sizes.limitClients + 200)
    for name, start in SERVERS.items():
        args = ("--max-connections", str(sizes.limit)) if name == "gracesvc" else ()
        with running(start(*args)) as twistd:
            honest = Honest(twistd.port)
            time.sleep(0.2)
            sockets = []
            for _ in range(sizes.limitClients):
                try:
                    sock = socket.create_connection(
                        ("127.0.0.1", twistd.port), timeout=5
                    )
                except OSError:
                    continue
                sock.sendall(get("/healthz"))
                sockets.append(sock)
            outcomes: dict[str, int] = {}
            for sock in sockets:
                sock.settimeout(3)
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    kind = "reset"
                except TimeoutError:
                    kind = "no answer"
                else:
                    responses = parseResponses(data)
                    kind = str(responses[0].code) if responses else "closed unanswered"
                outcomes[kind] = outcomes.get(kind, 0) + 1
                if kind != "200":
                    # A client told to come back later goes.
                    sock.close()
            open200 = outcomes.get("200", 0)
            for sock in sockets:
                sock.close()
            latency = honest.stop()
            text = ", ".join(f"{n} {k}" for k, n in sorted(outcomes.items()))
            target = (
                f"<= {sizes.limit} served, the rest 503" if name == "gracesvc" else ""
            )
            rows += [
                (
                    f"limit: {sizes.limitClients} connections, limit {sizes.limit}",
                    name,
                    "answers",
                    text,
                    target,
                    verdict(open200 <= sizes.limit and set(outcomes) <= {"200", "503"})
                    if name == "gracesvc"
                    else "-",
                ),
                (
                    "",
                    name,
                    "honest client (its connection held before)",
                    latency,
                    "",
                    "-",
                ),
            ]
    return rows


def emfile(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    raiseFileLimit(sizes.held + 200)
    cases = [
        (
            "gracesvc --max-connections 0",
            lambda: gracesvc("--max-connections", "0", openFiles=sizes.openFiles),
        ),
        ("gracesvc (default limit)", lambda: gracesvc(openFiles=sizes.openFiles)),
        ("twistd web", lambda: twistdWeb(openFiles=sizes.openFiles)),
    ][:: 1 if sizes.baselines else 3]
    for name, start in cases:
        with running(start()) as twistd:
            logBefore = len(twistd.log().splitlines())
            held = []
            for _ in range(sizes.held):
                try:
                    held.append(
                        socket.create_connection(("127.0.0.1", twistd.port), timeout=1)
                    )
                except OSError:
                    pass
            time.sleep(0.5)
            startedAt, cpuBefore = time.monotonic(), cpuSeconds(twistd.pid)
            time.sleep(sizes.watch)
            elapsed = time.monotonic() - startedAt
            cpu = (cpuSeconds(twistd.pid) - cpuBefore) / elapsed
            lines = twistd.log().splitlines()[logBefore:]
            refusedLines = [
                line
                for line in lines
                if "EMFILE" in line
                or "turned away" in line
                or "Cannot accept" in line
                or "Connection limit" in line
                or "connections refused" in line
                or "accept new connection" in line
            ]
            for sock in held:
                sock.close()
            releasedAt = time.monotonic()
            served: float | None = None
            while time.monotonic() - releasedAt < 10:
                try:
                    with RawClient(twistd.port, timeout=1) as client:
                        client.send(get("/healthz"))
                        if client.readResponse().code == 200:
                            served = time.monotonic() - releasedAt
                            break
                except (OSError, ConnectionError):
                    time.sleep(0.05)
            perSecond = len(refusedLines) / (elapsed + 0.5)
            rows += [
                (
                    f"emfile: ulimit -n {sizes.openFiles}, {sizes.held} connects held",
                    name,
                    "CPU while over the limit",
                    f"{cpu * 100:.1f} %",
                    "< 10 %",
                    verdict(cpu < 0.1),
                ),
                (
                    "",
                    name,
                    "log lines about it",
                    f"{len(refusedLines)} in {elapsed + 0.5:.1f} s",
                    "<= 1 a second",
                    verdict(perSecond <= 1.0 + 1 / (elapsed + 0.5)),
                ),
                (
                    "",
                    name,
                    "/healthz after the clients leave",
                    "never (10 s)" if served is None else f"{served * 1000:.0f} ms",
                    "< 1 s",
                    verdict(served is not None and served < 1.0),
                ),
            ]
    return rows


def wsPush(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for name, start in servers(sizes):
        with running(start()) as twistd:
            watch = MemoryWatch(twistd.pid)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            sock.connect(("127.0.0.1", twistd.port))
            sock.sendall(webSocketUpgrade(f"/push/{sizes.pushMiB}"))
            startedAt = time.monotonic()
            patience = 25 + sizes.patience if sizes is not SMOKE else sizes.patience
            closedAt = _waitForReset(sock, twistd, patience)
            grown = watch.grown()
            sock.close()
            rows += [
                (
                    f"wspush: {sizes.pushMiB} MiB to a WebSocket that never reads",
                    name,
                    "closed",
                    f"no ({patience:g} s)"
                    if closedAt is None
                    else f"after {closedAt - startedAt:.1f} s",
                    "yes",
                    verdict(closedAt is not None),
                ),
                (
                    "",
                    name,
                    "server memory grown",
                    f"{grown:.1f} MB",
                    "< 20 MB",
                    verdict(grown < 20),
                ),
            ]
    return rows


def _waitForReset(sock: socket.socket, twistd: Twistd, timeout: float) -> float | None:
    """
    Wait, reading nothing, until the server has aborted the connection:
    C{SO_ERROR} says a reset came, or the server's side is gone from
    C{/proc/net/tcp}.

    @return: when, or L{None} if not within C{timeout}.
    """
    local = sock.getsockname()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
            return time.monotonic()
        if not _serverSideOpen(local):
            return time.monotonic()
        time.sleep(0.05)
    return None


def _serverSideOpen(client: tuple[str, int]) -> bool:
    """
    @return: whether the server's end of the loopback connection from
        C{client} is still established.
    """
    host, port = client[:2]
    wanted = f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[2] == wanted and fields[3] == "01":
                return True
    return False


def fragments(sizes: Sizes) -> list[Row]:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    rows: list[Row] = []
    for name, start in servers(sizes):
        args = (
            ("--ws-max-message-size", str(sizes.fragmentBytes))
            if name == "gracesvc"
            else ()
        )
        with running(start(*args)) as twistd:
            watch = MemoryWatch(twistd.pid)

            async def send() -> str:
                async with connect(
                    f"ws://127.0.0.1:{twistd.port}/sink", max_size=None
                ) as ws:
                    try:
                        # One more fragment than the limit allows.
                        await ws.send([b"ab"] * (sizes.fragmentBytes // 2 + 1))
                        await asyncio.wait_for(ws.recv(), 2 * sizes.patience)
                    except ConnectionClosed as e:
                        return f"closed {e.rcvd.code}" if e.rcvd else "closed"
                    except TimeoutError:
                        return "accepted, still open"
                return "?"

            startedAt = time.monotonic()
            try:
                outcome = asyncio.run(asyncio.wait_for(send(), 120))
            except Exception as e:
                outcome = f"{type(e).__name__}"
            took = time.monotonic() - startedAt
            grown = watch.grown()
            rows += [
                (
                    f"fragments: {sizes.fragmentBytes} B in 2-byte fragments",
                    name,
                    "outcome",
                    f"{outcome} ({took:.1f} s)",
                    "closed 1009" if name == "gracesvc" else "",
                    verdict(outcome == "closed 1009") if name == "gracesvc" else "-",
                ),
                (
                    "",
                    name,
                    "server memory grown",
                    f"{grown:.1f} MB",
                    f"< {2 * sizes.fragmentBytes / 1e6 + 5:.0f} MB"
                    if name == "gracesvc"
                    else "",
                    verdict(grown < 2 * sizes.fragmentBytes / 1e6 + 5)
                    if name == "gracesvc"
                    else "-",
                ),
            ]
    return rows


def stall(sizes: Sizes) -> list[Row]:
    rows: list[Row] = []
    for name, start in servers(sizes):
        args = (
            ("--write-timeout", str(sizes.stallSeconds)) if name == "gracesvc" else ()
        )
        with running(start(*args)) as twistd:
            stalled = socket.socket()
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            stalled.connect(("127.0.0.1", twistd.port))
            stalled.sendall(get("/big/1024"))
            reader = socket.socket()
            reader.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
            reader.connect(("127.0.0.1", twistd.port))
            reader.sendall(get("/big/1024"))
            reader.settimeout(5)
            startedAt = time.monotonic()
            watchFor = sizes.stallSeconds * 3 + sizes.patience
            readerGot = 0
            stalledAt: float | None = None
            readerCut = False
            while time.monotonic() - startedAt < watchFor:
                try:
                    chunk = reader.recv(1024)
                except OSError:
                    chunk = b""
                if not chunk:
                    readerCut = True
                    break
                readerGot += len(chunk)
                if stalledAt is None and not _serverSideOpen(stalled.getsockname()):
                    stalledAt = time.monotonic()
                time.sleep(1 / 16)
            for sock in (stalled, reader):
                sock.close()
            rows += [
                (
                    "stall: a 1 GiB download never read",
                    name,
                    "aborted",
                    "no"
                    if stalledAt is None
                    else f"after {stalledAt - startedAt:.1f} s",
                    f"after --write-timeout {sizes.stallSeconds:g} s + the buffers"
                    if name == "gracesvc"
                    else "",
                    verdict(stalledAt is not None) if name == "gracesvc" else "-",
                ),
                (
                    "",
                    name,
                    f"a reader of 16 KiB/s, {watchFor:g} s",
                    f"{'cut' if readerCut else 'served'} ({readerGot // 1024} KiB)",
                    "served",
                    verdict(not readerCut),
                ),
            ]
    return rows


def h2Attacks(sizes: Sizes) -> list[Row]:
    """
    The HTTP/2 attacks of C{bench._h2attacks}, each repeated on new
    connections for 3 s (1 s at the smoke sizes) by a process of its own
    while an honest client is timed (its C{measure}).
    """
    import importlib

    try:
        attacks: Any = importlib.import_module("bench._h2attacks")
    except ImportError:
        return [
            (
                "h2: HTTP/2 attacks",
                "gracesvc",
                "-",
                "bench/_h2attacks.py is not here",
                "",
                "-",
            )
        ]
    smoke = not sizes.baselines
    # Big responses for the zero-window attack, where the app is there.
    app = "tests.apps.bigapp:Root" if _importable("tests.apps.bigapp") else None
    rows: list[Row] = []
    with running(gracesvc("--h2c", app=app)) as twistd:
        chosen = list(attacks.ATTACKS.items())
        if smoke:
            # bench.h2 --smoke runs them all small; one keeps this code alive.
            chosen = chosen[:1]
        for name, attack in chosen:
            if name == "zero-window" and app is None:
                continue
            kwargs: dict[str, object] = {"timeout": 10.0}
            if name == "zero-window":
                kwargs["size"] = 5 if smoke else 20
            elif smoke:
                kwargs["size"] = 2000
            run = attacks.measure(
                attack,
                twistd.port,
                twistd.port,
                twistd.pid,
                duration=1.0 if smoke else 3.0,
                **kwargs,
            )
            ends: dict[str, int] = {}
            for outcome in run.outcomes:
                code = "" if outcome.errorCode is None else f"({outcome.errorCode})"
                ends[outcome.ended + code] = ends.get(outcome.ended + code, 0) + 1
            stopped = all(outcome.stopped for outcome in run.outcomes)
            grown = run.rssGrowth / 1e6
            rows += [
                (
                    f"h2: {name}, {len(run.outcomes)} connections",
                    "gracesvc",
                    "ended",
                    ", ".join(f"{n} {k}" for k, n in sorted(ends.items())),
                    "each a GOAWAY or a close",
                    verdict(stopped),
                ),
                (
                    "",
                    "gracesvc",
                    "honest client",
                    f"p99 {run.honestP99 * 1000:.1f} ms (n={run.honestRequests})",
                    "p99 < 50 ms",
                    verdict(run.honestP99 < 0.05),
                ),
                (
                    "",
                    "gracesvc",
                    "server memory grown",
                    f"{grown:.1f} MB",
                    "< 10 MB",
                    verdict(grown < 10),
                ),
            ]
    return rows


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:
        return False


ATTACKS: dict[str, Callable[[Sizes], list[Row]]] = {
    "storm": storm,
    "slow": slowHeads,
    "limit": limit,
    "emfile": emfile,
    "wspush": wsPush,
    "fragments": fragments,
    "stall": stall,
    "h2": h2Attacks,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes")
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(ATTACKS),
        help="run only these attacks (repeat for several)",
    )
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else Sizes()
    os.chdir(ROOT)
    print(f"bench.hostile: {machine()}, load average {os.getloadavg()[0]:.2f}")
    print()
    rows: list[Row] = []
    for name in args.only or list(ATTACKS):
        startedAt = time.monotonic()
        rows += ATTACKS[name](sizes)
        print(f"  {name}: {time.monotonic() - startedAt:.0f} s", file=sys.stderr)
    print(table(["attack", "server", "measure", "measured", "target", "met"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
