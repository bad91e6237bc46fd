"""
The acceptance figures of the drain, measured from outside the process: a
real C{twistd -n gracesvc}, real signals, raw sockets (HTTP, and WebSockets
whose frames are built and parsed here) on loopback.  Prints one table,
each figure beside its target.

    .venv/bin/python -m bench.shutdown [--repeats 5] [--smoke] [--check]

Timing figures are measured C{--repeats} times, each on a fresh process, and
given as median and max.  The "ok" column says C{yes} when every run met the
target, C{median only} when the median did and some run did not (a loaded
machine), C{**NO**} when the median missed.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import signal
import socket
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from bench._common import (
    DEFAULT_OUT,
    machine,
    raiseFileLimit,
    startGracesvc,
    summary,
    table,
)
from gracesvc.testing import get, parseEventStream
from gracesvc.testing.process import (
    CURL,
    OP_CLOSE,
    OP_TEXT,
    CurlStream,
    InFlight,
    RawClient,
    RawWebSocket,
    pingBackToBack,
    waitForConnections,
    waitUntilRefused,
    wsClosePayload,
    wsFrame,
)

PONG = b'{"message": "pong"}'


@dataclass
class Sizes:
    repeats: int = 5
    inFlight: int = 20
    pingDelay: float = 2.0
    settle: float = 0.5
    cap: float = 1.0
    drainDelay: float = 1.0
    keepAliveClients: int = 10
    keepAliveRuns: int = 3
    keepAliveFor: float = 1.0
    idleClients: int = 10
    webSockets: int = 500
    closedWebSockets: int = 250
    streams: int = 20
    polls: int = 10


SMOKE = Sizes(
    repeats=1,
    inFlight=3,
    pingDelay=0.5,
    settle=0.2,
    cap=0.5,
    drainDelay=0.3,
    keepAliveClients=3,
    keepAliveRuns=1,
    keepAliveFor=0.3,
    idleClients=3,
    webSockets=20,
    closedWebSockets=20,
    streams=3,
    polls=2,
)


@dataclass
class Row:
    measure: str
    figure: str
    target: str
    ok: str = "-"


def judge(values: Sequence[float], limit: float, above: float | None = None) -> str:
    """
    @return: C{yes} if every value is within (C{above}, C{limit}), C{median
        only} if the median is, else C{**NO**}.
    """
    if not values:
        return "**NO**"

    def within(v: float) -> bool:
        return v < limit and (above is None or v >= above)

    if all(within(v) for v in values):
        return "yes"
    if within(statistics.median(values)):
        return "median only"
    return "**NO**"


def allOk(flags: Sequence[bool]) -> str:
    return "yes" if flags and all(flags) else "**NO**"


def counts(values: Sequence[int], of: int) -> str:
    """
    @return: C{"20/20 in 5/5 runs"} or C{"runs: 20, 19/20"}.
    """
    if values and all(v == values[0] for v in values):
        return f"{values[0]}/{of}" + (
            f" in {len(values)}/{len(values)} runs" if len(values) > 1 else ""
        )
    return "runs: " + ", ".join(str(v) for v in values) + f" /{of}"


def inRuns(what: str, flags: Sequence[bool]) -> str:
    """
    @return: C{"503 in 5/5 runs"}, or C{"503"} for a single run.
    """
    if len(flags) == 1:
        return what if flags[0] else f"not {what}"
    return f"{what} in {sum(flags)}/{len(flags)} runs"


def closeTimes(clients: Sequence[RawClient], timeout: float) -> tuple[list[float], int]:
    """
    Wait until the server has closed every client's connection.

    @return: C{time.monotonic()} of each close seen, and how many closed
        cleanly (FIN, nothing more sent).
    """
    selector = selectors.DefaultSelector()
    for c in clients:
        selector.register(c.sock, selectors.EVENT_READ, c)
    times: list[float] = []
    clean = 0
    deadline = time.monotonic() + timeout
    try:
        while len(times) < len(clients) and time.monotonic() < deadline:
            for key, _ in selector.select(deadline - time.monotonic()):
                c = key.data
                try:
                    chunk: bytes | None = c.sock.recv(65536)
                except ConnectionResetError:
                    chunk = None
                if chunk:
                    c.buffer += chunk
                    continue
                times.append(time.monotonic())
                clean += chunk == b"" and not c.buffer
                selector.unregister(c.sock)
    finally:
        selector.close()
    return times, clean


# The scenarios.  Each starts its own processes and kills them by pid.


def inFlightAtSignal(s: Sizes) -> list[Row]:
    return drainInFlight(
        f"{s.inFlight} /ping ({s.pingDelay:g} s) in flight at SIGINT: complete "
        f"with 200 pong",
        "/ping",
        PONG,
        ["--ping-delay", repr(s.pingDelay)],
        repeats=s.repeats,
        inFlight=s.inFlight,
        settle=s.settle,
        wait=s.pingDelay + 10,
    )


def drainInFlight(
    label: str,
    path: str,
    body: bytes,
    args: Sequence[str],
    repeats: int,
    inFlight: int,
    settle: float,
    wait: float,
    reactor: str | None = None,
) -> list[Row]:
    """
    C{inFlight} requests for C{path} (each answered C{body}) in flight at
    SIGINT, in C{repeats} fresh C{twistd -n gracesvc ARGS}: how many are
    answered, with C{Connection: close}; the exit status; how soon new
    connections are refused; how soon after the last response the process
    is gone.
    """
    completed, saidClose, refusal, toExit, statuses = [], [], [], [], []
    for _ in range(repeats):
        twistd = startGracesvc(*args, reactor=reactor)
        try:
            requests = [InFlight(twistd.port, get(path)) for _ in range(inFlight)]
            time.sleep(settle)
            sentAt = twistd.signal(signal.SIGINT)
            refusedAt = waitUntilRefused(twistd.port)
            statuses.append(twistd.wait(wait))
            for r in requests:
                r.join(5)
            ok = [
                r
                for r in requests
                if r.response and r.response.code == 200 and r.response.body == body
            ]
            completed.append(len(ok))
            saidClose.append(
                sum(
                    r.response.headers.get(b"connection") == b"close"
                    for r in ok
                    if r.response
                )
            )
            refusal.append(refusedAt - sentAt)
            done = [r.doneAt for r in ok if r.doneAt is not None]
            assert twistd.exitedAt is not None
            if done:
                toExit.append(twistd.exitedAt - max(done))
        finally:
            twistd.kill()
    n = inFlight
    return [
        Row(
            label, counts(completed, n), f"{n}/{n}", allOk([c == n for c in completed])
        ),
        Row(
            "  of which say Connection: close",
            counts(saidClose, n),
            f"{n}/{n}",
            allOk([c == n for c in saidClose]),
        ),
        Row(
            "  exit status",
            ", ".join(sorted({str(x) for x in statuses})),
            "-2 (SIGINT)",
            allOk([x == -signal.SIGINT for x in statuses]),
        ),
        Row(
            "  SIGINT -> first refused connect",
            summary(refusal),
            "< 20 ms",
            judge(refusal, 0.020),
        ),
        Row(
            "  last response -> process exit",
            summary(toExit),
            "< 25 ms",
            judge(toExit, 0.025),
        ),
    ]


def capAnswers503(s: Sizes) -> list[Row]:
    return cutAtCap(
        f"/ping {s.cap * 10:g} s, cap {s.cap:g} s: client gets 503 + Retry-After",
        "  SIGINT -> process exit",
        "/ping",
        ["--ping-delay", repr(s.cap * 10), "--shutdown-timeout", repr(s.cap)],
        repeats=s.repeats,
        cap=s.cap,
        settle=0.2,
        limit=s.cap + 0.15,
    )


def cutAtCap(
    label: str,
    exitLabel: str,
    path: str,
    args: Sequence[str],
    repeats: int,
    cap: float,
    settle: float,
    limit: float,
) -> list[Row]:
    """
    One request for C{path} that outlasts the cap C{cap}, in C{repeats}
    fresh C{twistd -n gracesvc ARGS}: does its client get the 503 with
    C{Retry-After}, and how soon after SIGINT is the process gone?
    """
    got503, toExit = [], []
    for _ in range(repeats):
        twistd = startGracesvc(*args)
        try:
            request = InFlight(twistd.port, get(path))
            time.sleep(settle)
            sentAt = twistd.signal(signal.SIGINT)
            twistd.wait(cap + 10)
            request.join(5)
            r = request.response
            got503.append(bool(r and r.code == 503 and b"retry-after" in r.headers))
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - sentAt)
        finally:
            twistd.kill()
    return [
        Row(label, inRuns("503 + Retry-After", got503), "503", allOk(got503)),
        Row(exitLabel, summary(toExit, "s"), f"< {limit:g} s", judge(toExit, limit)),
    ]


def idleExit(s: Sizes) -> list[Row]:
    toExit = []
    for _ in range(s.repeats):
        twistd = startGracesvc()
        try:
            time.sleep(0.1)
            sentAt = twistd.signal(signal.SIGINT)
            twistd.wait(10)
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - sentAt)
        finally:
            twistd.kill()
    return [
        Row(
            "no traffic: SIGINT -> process exit",
            summary(toExit),
            "< 30 ms",
            judge(toExit, 0.030),
        )
    ]


def backToBack(s: Sizes) -> list[Row]:
    """
    Clients sending requests back to back on keep-alive connections across
    SIGINT.  A request is lost if it was sent and never answered, or if a
    connection was closed in any way other than cleanly after a response
    that said C{Connection: close}.
    """
    lost, sentTotal, problems = [], 0, []
    for _ in range(s.keepAliveRuns):
        twistd = startGracesvc("--ping-delay", "0.01")
        try:
            outcomes: list[tuple[int, int, str]] = []
            giveUpAt = time.monotonic() + s.keepAliveFor + 8

            def client(
                port: int = twistd.port,
                until: float = giveUpAt,
                into: list[tuple[int, int, str]] = outcomes,
            ) -> None:
                into.append(pingBackToBack(port, until))

            threads = [
                threading.Thread(target=client, daemon=True)
                for _ in range(s.keepAliveClients)
            ]
            for t in threads:
                t.start()
            time.sleep(s.keepAliveFor)
            twistd.signal(signal.SIGINT)
            twistd.wait(10)
            for t in threads:
                t.join(10)
            missing = s.keepAliveClients - len(outcomes)
            lost.append(
                sum(sent - answered for sent, answered, _ in outcomes) + missing
            )
            sentTotal += sum(sent for sent, _, _ in outcomes)
            problems += [p for _, _, p in outcomes if p] + ["client hung"] * missing
        finally:
            twistd.kill()
    figure = f"{sum(lost)} lost of {sentTotal} sent (runs: {', '.join(map(str, lost))})"
    if problems:
        figure += f"; {len(problems)} connection problems: {problems[0]}"
    return [
        Row(
            f"{s.keepAliveClients} back-to-back keep-alive clients across SIGINT, "
            f"{s.keepAliveRuns} run{'s' if s.keepAliveRuns != 1 else ''}: requests lost",
            figure,
            "0",
            allOk([sum(lost) == 0 and not problems]),
        )
    ]


def idleKeepAliveClosed(s: Sizes, quietFor: float, label: str) -> list[Row]:
    """
    C{idleClients} keep-alive connections, each answered C{quietFor} seconds
    before SIGINT, while one C{/ping} holds the process up.
    """
    closedWithin, clean = [], []
    for _ in range(s.repeats):
        twistd = startGracesvc("--ping-delay", repr(quietFor + 1.0))
        idle: list[RawClient] = []
        try:
            busy = InFlight(twistd.port, get("/ping"))
            for _ in range(s.idleClients):
                c = RawClient(twistd.port)
                idle.append(c)
                c.send(get("/healthz"))
                c.readResponse()
            time.sleep(quietFor)
            sentAt = twistd.signal(signal.SIGINT)
            times, cleanCount = closeTimes(idle, 5)
            if len(times) == len(idle):
                closedWithin.append(max(times) - sentAt)
            clean.append(cleanCount)
            twistd.wait(10)
            busy.join(5)
        finally:
            for c in idle:
                c.close()
            twistd.kill()
    n = s.idleClients
    return [
        Row(
            f"{n} idle keep-alive connections ({label}): all closed by the server within",
            summary(closedWithin, "s") + f"; clean close {counts(clean, n)}",
            "< 0.6 s",
            judge(closedWithin, 0.6) if len(closedWithin) == s.repeats else "**NO**",
        ),
    ]


def lateRequest(s: Sizes) -> list[Row]:
    good = []
    for _ in range(s.repeats):
        twistd = startGracesvc("--ping-delay", "0.1")
        try:
            with RawClient(twistd.port) as c:
                time.sleep(0.1)
                twistd.signal(signal.SIGINT)
                time.sleep(0.05)
                c.send(get("/ping"))
                try:
                    response = c.readResponse()
                    good.append(
                        response.code == 200
                        and response.headers.get(b"connection") == b"close"
                        and c.waitForClose()
                    )
                except ConnectionError:
                    good.append(False)
            twistd.wait(10)
        finally:
            twistd.kill()
    return [
        Row(
            "request 50 ms after SIGINT on a connection opened before it",
            inRuns("200 + Connection: close", good),
            "200 + Connection: close",
            allOk(good),
        )
    ]


def silentConnection(s: Sizes) -> list[Row]:
    toExit = []
    for _ in range(s.repeats):
        twistd = startGracesvc()
        try:
            with RawClient(twistd.port):
                time.sleep(0.1)
                sentAt = twistd.signal(signal.SIGINT)
                twistd.wait(10)
                assert twistd.exitedAt is not None
                toExit.append(twistd.exitedAt - sentAt)
        finally:
            twistd.kill()
    return [
        Row(
            "silent connection open: SIGINT -> process exit",
            summary(toExit, "s"),
            "< 1.1 s",
            judge(toExit, 1.1),
        )
    ]


def drainDelay(s: Sizes) -> list[Row]:
    delay = s.drainDelay
    readyz, ping, refusal = [], [], []
    for _ in range(s.repeats):
        twistd = startGracesvc(
            "--drain-delay",
            repr(delay),
            "--ping-delay",
            "0",
            "--shutdown-timeout",
            repr(delay + 2),
        )
        try:
            sentAt = twistd.signal(signal.SIGINT)
            readyzOk = pingOk = True
            for at in (0.3 * delay, 0.8 * delay):
                time.sleep(max(0.0, sentAt + at - time.monotonic()))
                with RawClient(twistd.port) as c:
                    c.send(get("/readyz"))
                    readyzOk &= c.readResponse().code == 503
                with RawClient(twistd.port) as c:
                    c.send(get("/ping"))
                    r = c.readResponse()
                    pingOk &= r.code == 200 and r.headers.get(b"connection") == b"close"
            refusal.append(waitUntilRefused(twistd.port) - sentAt)
            readyz.append(readyzOk)
            ping.append(pingOk)
            twistd.wait(10)
        finally:
            twistd.kill()
    return [
        Row(
            f"--drain-delay {delay:g}: /readyz at {0.3 * delay:g} s and {0.8 * delay:g} s",
            inRuns("503", readyz),
            "503",
            allOk(readyz),
        ),
        Row(
            "  /ping at the same times",
            inRuns("200 + Connection: close", ping),
            "200",
            allOk(ping),
        ),
        Row(
            "  SIGINT -> first refused connect",
            summary(refusal, "s"),
            f"{delay:g}-{delay + 0.1:g} s",
            judge(refusal, delay + 0.1, above=delay - 0.005),
        ),
    ]


def secondSignal(s: Sizes) -> list[Row]:
    toExit, statuses = [], []
    for _ in range(s.repeats):
        twistd = startGracesvc("--ping-delay", "10", "--shutdown-timeout", "8")
        try:
            InFlight(twistd.port, get("/ping"))
            time.sleep(0.2)
            twistd.signal(signal.SIGINT)
            time.sleep(0.3)
            secondAt = twistd.signal(signal.SIGINT)
            statuses.append(twistd.wait(10))
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - secondAt)
        finally:
            twistd.kill()
    return [
        Row(
            "second SIGINT during the drain -> process exit",
            summary(toExit),
            "< 100 ms",
            judge(toExit, 0.100),
        )
    ]


# WebSockets.


class Fleet:
    """
    Raw WebSocket clients to C{/ws} of one server, driven from one thread
    with a selector: each sends a message every C{every} seconds until the
    server's Close arrives, answers that Close at once, and reads until the
    server closes TCP.

    A client has a protocol error if a frame it received does not parse
    (an HTTP response written into it, say), if data comes after the Close,
    if a send fails, or if its connection is reset.
    """

    def __init__(self, port: int, n: int, every: float = 0.1) -> None:
        self.clients = [RawWebSocket(port) for _ in range(n)]
        self.every = every
        self.answeredAt: dict[RawWebSocket, float] = {}
        self.sendErrors: dict[RawWebSocket, str] = {}
        for c in self.clients:
            c.sock.setblocking(False)
        now = time.monotonic()
        # Staggered, so that the sends spread over the period.
        self.nextSend = {
            c: now + every * i / max(1, n) for i, c in enumerate(self.clients)
        }
        self.selector = selectors.DefaultSelector()
        for c in self.clients:
            self.selector.register(c.sock, selectors.EVENT_READ, c)

    def run(self, until: float, stopWhenAllClosed: bool = True) -> None:
        """
        Send, read and answer until C{until} (C{time.monotonic()}), or until
        every connection is closed.
        """
        while time.monotonic() < until:
            if stopWhenAllClosed and all(c.closedAt is not None for c in self.clients):
                return
            now = time.monotonic()
            for c, at in self.nextSend.items():
                if at <= now and c.close is None and c.closedAt is None:
                    self._send(c, wsFrame(OP_TEXT, b"tick"))
                    self.nextSend[c] = at + self.every
            timeout = max(0.0, min(min(self.nextSend.values()), until) - now)
            for key, _ in self.selector.select(min(timeout, 0.01)):
                self._read(key.data)

    def _send(self, c: RawWebSocket, frame: bytes) -> None:
        try:
            c.sock.send(frame)
        except OSError as e:
            self.sendErrors.setdefault(c, repr(e))

    def _read(self, c: RawWebSocket) -> None:
        try:
            chunk = c.sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionResetError:
            c.reset = True
            chunk = b""
        if not chunk:
            c.closedAt = time.monotonic()
            self.selector.unregister(c.sock)
            return
        c.feed(chunk)
        if c not in self.answeredAt and c.close is not None:
            self._send(c, wsFrame(OP_CLOSE, wsClosePayload(c.close[0])))
            self.answeredAt[c] = time.monotonic()

    def told(self, c: RawWebSocket) -> bool:
        """
        @return: whether C{c} got the goodbye, then Close 1001 with its
            reason, and nothing after.
        """
        ops = [op for _, op, _ in c.frames]
        if OP_CLOSE not in ops or ops.index(OP_CLOSE) != len(ops) - 1:
            return False
        messages = c.messages
        try:
            goodbye = json.loads(messages[-1])
        except (IndexError, ValueError):
            return False
        return (
            goodbye.get("type") == "goodbye"
            and "reconnect_ms" in goodbye
            and c.close == (1001, "server shutting down")
        )

    def protocolErrors(self) -> int:
        return sum(
            bool(c.error or c.reset or c in self.sendErrors) for c in self.clients
        )

    def close(self) -> None:
        self.selector.close()
        for c in self.clients:
            c.disconnect()


#: Where L{plotWebSockets} draws.
WEBSOCKET_PLOT = os.path.join(DEFAULT_OUT, "websocket-timeline.png")


def plotWebSockets(
    closes: Sequence[float], ends: Sequence[float], exitAt: float, n: int
) -> None:
    """
    Draw, for one run, how the WebSockets open at SIGINT closed: when each
    client received the server's Close frame and when the server closed TCP
    (after the client's Close), and when the process exited.  Skipped
    without matplotlib (the C{bench} extra).
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for times, label, color in [
        (closes, "Close 1001 frame received by the client", "tab:orange"),
        (ends, "closing handshake done (server closed TCP)", "tab:blue"),
    ]:
        ms = sorted(t * 1000 for t in times)
        ax.step(ms, range(1, len(ms) + 1), where="post", color=color, label=label)
    ax.axvline(0, color="tab:red", lw=1.5)
    ax.annotate("SIGINT", (0, n), color="tab:red", ha="right", va="top")
    ax.axvline(exitAt * 1000, color="grey", ls=":")
    ax.annotate("process exit", (exitAt * 1000, n / 2), color="grey", ha="left")
    ax.set_xlabel("ms since SIGINT")
    ax.set_ylabel("WebSockets")
    ax.set_title(f"twistd -n gracesvc: {n} WebSockets open at SIGINT")
    ax.legend(loc="lower right")
    fig.tight_layout()
    os.makedirs(os.path.dirname(WEBSOCKET_PLOT), exist_ok=True)
    fig.savefig(WEBSOCKET_PLOT, dpi=100)
    plt.close(fig)


def webSocketsAtSignal(s: Sizes) -> list[Row]:
    n = s.webSockets
    raiseFileLimit(4 * n + 256)
    told, lastClose, errors, toExit, fromAnswer, statuses = [], [], [], [], [], []
    for _ in range(s.repeats):
        twistd = startGracesvc()
        fleet = None
        try:
            fleet = Fleet(twistd.port, n)
            fleet.run(time.monotonic() + s.settle, stopWhenAllClosed=False)
            sentAt = twistd.signal(signal.SIGINT)
            fleet.run(sentAt + 5)
            statuses.append(twistd.wait(10))
            told.append(sum(fleet.told(c) for c in fleet.clients))
            closes = [c.closeAt for c in fleet.clients if c.closeAt is not None]
            if len(closes) == n:
                lastClose.append(max(closes) - sentAt)
            errors.append(fleet.protocolErrors())
            assert twistd.exitedAt is not None
            ends = [c.closedAt for c in fleet.clients if c.closedAt is not None]
            if len(ends) == n:
                toExit.append(twistd.exitedAt - max(ends))
            if len(fleet.answeredAt) == n:
                fromAnswer.append(twistd.exitedAt - max(fleet.answeredAt.values()))
            plotWebSockets(
                [t - sentAt for t in closes],
                [t - sentAt for t in ends],
                twistd.exitedAt - sentAt,
                n,
            )
        finally:
            if fleet is not None:
                fleet.close()
            twistd.kill()
    return [
        Row(
            f"{n} WebSockets at SIGINT (each sending every 100 ms): goodbye, then "
            f"Close 1001 + reason",
            counts(told, n),
            f"{n}/{n}",
            allOk([t == n for t in told]),
        ),
        Row(
            "  SIGINT -> last Close frame received",
            summary(lastClose),
            "< 500 ms",
            judge(lastClose, 0.5) if len(lastClose) == s.repeats else "**NO**",
        ),
        Row(
            "  protocol errors (bad frame, data after Close, reset, failed send)",
            counts(errors, n),
            "0",
            allOk([e == 0 for e in errors]),
        ),
        Row(
            "  last closing handshake done (the server's TCP close) -> process exit",
            summary(toExit),
            "< 25 ms",
            judge(toExit, 0.025) if len(toExit) == s.repeats else "**NO**",
        ),
        Row(
            "  (last client Close frame sent -> process exit)",
            summary(fromAnswer),
            "-",
        ),
        Row(
            "  exit status",
            ", ".join(sorted({str(x) for x in statuses})),
            "-2 (SIGINT)",
            allOk([x == -signal.SIGINT for x in statuses]),
        ),
    ]


#: Linux's TCP states (C{tcpi_state} of C{TCP_INFO}).
TCP_ESTABLISHED, TCP_CLOSE, TCP_CLOSE_WAIT = 1, 7, 8


def watchUnread(
    sock: socket.socket, timeout: float
) -> tuple[float | None, float | None, int]:
    """
    Watch a socket that is never read: only peeked at, and its TCP state
    looked up (a reset leaves the unread bytes readable).

    @return: C{time.monotonic()} when its first bytes arrived, and when the
        connection stopped being established, if they did within
        C{timeout}; and its TCP state then (C{TCP_CLOSE} after a reset).
    """
    arrived = ended = None
    state = TCP_ESTABLISHED
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if arrived is None:
            try:
                if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT):
                    arrived = time.monotonic()
            except (BlockingIOError, ConnectionResetError):
                pass
        state = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1)[0]
        if state != TCP_ESTABLISHED:
            ended = time.monotonic()
            break
        time.sleep(0.0005)
    return arrived, ended, state


def nonReadingWebSocket(s: Sizes) -> list[Row]:
    afterClose, toExit, resets = [], [], []
    for _ in range(s.repeats):
        twistd = startGracesvc("--close-timeout", "1")
        ws = None
        try:
            ws = RawWebSocket(twistd.port)
            time.sleep(0.1)
            sentAt = twistd.signal(signal.SIGINT)
            arrived, aborted, state = watchUnread(ws.sock, 5)
            resets.append(state == TCP_CLOSE)
            twistd.wait(10)
            if arrived is not None and aborted is not None:
                afterClose.append(aborted - arrived)
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - sentAt)
        finally:
            if ws is not None:
                ws.disconnect()
            twistd.kill()
    return [
        Row(
            "WebSocket client that never reads: Close frame -> aborted",
            summary(afterClose, "s") + "; " + inRuns("reset", resets),
            "1.0 +- 0.1 s",
            judge(afterClose, 1.1, above=0.9)
            if len(afterClose) == s.repeats and all(resets)
            else "**NO**",
        ),
        Row(
            "  alone: SIGINT -> process exit",
            summary(toExit, "s"),
            "<= 1.1 s",
            judge(toExit, 1.1),
        ),
    ]


def closedWebSocketsThenSignal(s: Sizes) -> list[Row]:
    n = s.closedWebSockets
    toExit, openAtSignal = [], []
    for _ in range(s.repeats):
        twistd = startGracesvc()
        try:
            for _ in range(n):
                ws = RawWebSocket(twistd.port)
                ws.sendClose(1000)
                ws.readUntilClosed()
                ws.disconnect()
            time.sleep(0.1)
            sentAt = twistd.signal(signal.SIGINT)
            twistd.wait(10)
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - sentAt)
            openAtSignal.append("0 connections open" in twistd.log())
        finally:
            twistd.kill()
    return [
        Row(
            f"{n} WebSockets opened and closed, then SIGINT: process exit",
            summary(toExit),
            "< 30 ms",
            judge(toExit, 0.030),
        ),
        Row(
            "  connections the drain found open",
            inRuns("0", openAtSignal),
            "0",
            allOk(openAtSignal),
        ),
    ]


def webSocketDrainDelay(s: Sizes) -> list[Row]:
    delay = s.drainDelay
    firstClose, refused = [], []
    for _ in range(s.repeats):
        twistd = startGracesvc(
            "--drain-delay", repr(delay), "--shutdown-timeout", repr(delay + 2)
        )
        fleet = None
        try:
            fleet = Fleet(twistd.port, 10)
            sentAt = twistd.signal(signal.SIGINT)
            fleet.run(sentAt + delay / 2, stopWhenAllClosed=False)
            late = RawWebSocket(twistd.port)
            refused.append(
                late.status == 503
                and b"retry-after" in late.headers
                and late.headers.get(b"connection") == b"close"
            )
            late.disconnect()
            fleet.run(sentAt + delay + 3)
            twistd.wait(10)
            closes = [c.closeAt for c in fleet.clients if c.closeAt is not None]
            if closes:
                firstClose.append(min(closes) - sentAt)
        finally:
            if fleet is not None:
                fleet.close()
            twistd.kill()
    return [
        Row(
            f"--drain-delay {delay:g}: SIGINT -> first WebSocket Close frame",
            summary(firstClose, "s"),
            f">= {delay:g} s",
            judge(firstClose, delay + 0.1, above=delay)
            if len(firstClose) == s.repeats
            else "**NO**",
        ),
        Row(
            f"  new upgrade at {delay / 2:g} s",
            inRuns("503 + Retry-After + Connection: close", refused),
            "503",
            allOk(refused),
        ),
    ]


def endedWithShutdown(c: CurlStream) -> bool:
    """
    @return: whether curl exited 0 after a stream whose last event is the
        C{shutdown} event: a jittered C{retry:}, no C{id:}.
    """
    if c.status != 0 or not c.output.endswith(b"\n\n"):
        return False
    events = parseEventStream(c.output)
    if not events:
        return False
    last = events[-1]
    return (
        last.get("event") == "shutdown"
        and "id" not in last
        and last.get("retry", "").isdigit()
    )


def noCurl(label: str) -> list[Row]:
    return [Row(label, "skipped: curl is not installed", "-", "-")]


def eventStreams(s: Sizes) -> list[Row]:
    """
    C{s.streams} C{curl -N} reading C{/events} (a tick every 0.1 s) at
    SIGINT: each should get the C{shutdown} event and end cleanly.
    """
    n = s.streams
    label = f"{n} event streams (curl -N, tick 0.1 s) at SIGINT: shutdown event + curl exit 0"
    if CURL is None:
        return noCurl(label)
    clean, lastEnd, toExit = [], [], []
    for _ in range(s.repeats):
        twistd = startGracesvc("--tick", "0.1")
        streams: list[CurlStream] = []
        try:
            streams = [CurlStream(twistd.port) for _ in range(n)]
            for c in streams:
                c.waitFor(b"event: tick")
            sentAt = twistd.signal(signal.SIGINT)
            for c in streams:
                c.wait(10)
            twistd.wait(10)
            clean.append(sum(endedWithShutdown(c) for c in streams))
            lastEnd.append(max(c.exitedAt or sentAt + 10 for c in streams) - sentAt)
            assert twistd.exitedAt is not None
            toExit.append(twistd.exitedAt - sentAt)
        finally:
            for c in streams:
                c.kill()
            twistd.kill()
    return [
        Row(label, counts(clean, n), f"{n}/{n}", allOk([c == n for c in clean])),
        Row(
            "  SIGINT -> last curl exited",
            summary(lastEnd),
            "< 500 ms",
            judge(lastEnd, 0.5),
        ),
        Row(
            "  SIGINT -> process exit", summary(toExit), "< 500 ms", judge(toExit, 0.5)
        ),
    ]


def longPolls(s: Sizes) -> list[Row]:
    """
    C{s.polls} long polls waiting on C{/poll} (no tick due for 60 s) at
    SIGINT: each should be answered at once.
    """
    n = s.polls
    answered, lastAnswer = [], []
    for _ in range(s.repeats):
        twistd = startGracesvc("--tick", "60")
        try:
            polls = [InFlight(twistd.port, get("/poll")) for _ in range(n)]
            waitForConnections(twistd.port, poll=n)
            sentAt = twistd.signal(signal.SIGINT)
            for p in polls:
                p.join(10)
            twistd.wait(10)
            answered.append(
                sum(
                    p.response is not None
                    and p.response.code == 200
                    and p.response.headers.get(b"connection") == b"close"
                    and json.loads(p.response.body).get("status") == "reconnect"
                    for p in polls
                )
            )
            lastAnswer.append(max(p.doneAt or sentAt + 10 for p in polls) - sentAt)
        finally:
            twistd.kill()
    return [
        Row(
            f"{n} long polls at SIGINT: 200 reconnect + Connection: close",
            counts(answered, n),
            f"{n}/{n}",
            allOk([a == n for a in answered]),
        ),
        Row(
            "  SIGINT -> last poll answered",
            summary(lastAnswer),
            "< 500 ms",
            judge(lastAnswer, 0.5),
        ),
    ]


def longLivedDrainDelay(s: Sizes) -> list[Row]:
    """
    Streams and polls open at SIGINT with a drain delay: nothing ends
    before the listeners close.
    """
    delay = s.drainDelay
    label = (
        f"--drain-delay {delay:g}, {s.streams} streams + {s.polls} polls: "
        "SIGINT -> first one ended"
    )
    if CURL is None:
        return noCurl(label)
    firstEnd, lastEnd, clean = [], [], []
    for _ in range(s.repeats):
        twistd = startGracesvc(
            "--tick",
            "60",
            "--drain-delay",
            repr(delay),
            "--shutdown-timeout",
            repr(delay + 2),
        )
        streams: list[CurlStream] = []
        try:
            streams = [CurlStream(twistd.port) for _ in range(s.streams)]
            polls = [InFlight(twistd.port, get("/poll")) for _ in range(s.polls)]
            waitForConnections(twistd.port, stream=s.streams, poll=s.polls)
            sentAt = twistd.signal(signal.SIGINT)
            for c in streams:
                c.wait(10)
            for p in polls:
                p.join(10)
            twistd.wait(10)
            ends = [c.exitedAt or sentAt + 10 for c in streams] + [
                p.doneAt or sentAt + 10 for p in polls
            ]
            firstEnd.append(min(ends) - sentAt)
            lastEnd.append(max(ends) - sentAt)
            clean.append(
                sum(endedWithShutdown(c) for c in streams)
                + sum(p.response is not None and p.response.code == 200 for p in polls)
            )
        finally:
            for c in streams:
                c.kill()
            twistd.kill()
    n = s.streams + s.polls
    return [
        Row(
            label,
            summary(firstEnd, "s"),
            f"{delay:g}-{delay + 0.1:g} s",
            judge(firstEnd, delay + 0.1, above=delay - 0.005),
        ),
        Row(
            "  SIGINT -> last one ended",
            summary(lastEnd, "s"),
            f"< {delay + 0.5:g} s",
            judge(lastEnd, delay + 0.5),
        ),
        Row(
            "  ended cleanly (shutdown event + curl exit 0; poll 200)",
            counts(clean, n),
            f"{n}/{n}",
            allOk([c == n for c in clean]),
        ),
    ]


SCENARIOS: list[tuple[str, Callable[[Sizes], list[Row]]]] = [
    ("in flight at SIGINT", inFlightAtSignal),
    ("cap", capAnswers503),
    ("no traffic", idleExit),
    ("back-to-back keep-alive", backToBack),
    (
        "idle keep-alive",
        lambda s: idleKeepAliveClosed(s, 0.6, "quiet 0.6 s before SIGINT"),
    ),
    (
        "just-used keep-alive",
        lambda s: idleKeepAliveClosed(s, 0.0, "answered just before SIGINT"),
    ),
    ("late request", lateRequest),
    ("silent connection", silentConnection),
    ("drain delay", drainDelay),
    ("second signal", secondSignal),
    ("websockets at signal", webSocketsAtSignal),
    ("websocket never reads", nonReadingWebSocket),
    ("websockets closed", closedWebSocketsThenSignal),
    ("websocket drain delay", webSocketDrainDelay),
    ("event streams", eventStreams),
    ("long polls", longPolls),
    ("long-lived with drain delay", longLivedDrainDelay),
]


class _HasRepeats(Protocol):
    repeats: int


_Sizes = TypeVar("_Sizes", bound=_HasRepeats)


def runScenarios(
    argv: Sequence[str] | None,
    prog: str,
    doc: str,
    scenarios: Sequence[tuple[str, Callable[[_Sizes], list[Row]]]],
    sizes: _Sizes,
    smoke: _Sizes,
) -> int:
    """
    The command line of a benchmark made of scenarios (this one,
    C{bench.apps}): parse C{--repeats}, C{--smoke}, C{--check} and
    C{--only}, run the scenarios chosen, and print their rows as one table.
    A scenario that raises is one C{ERROR} row, its traceback on standard
    error.

    @param prog: the command, for C{--help}.
    @param doc: the benchmark's module docstring; its first paragraph is
        the description.
    @param scenarios: (name, scenario) pairs, run in this order.
    @param sizes: what the scenarios are run with.
    @param smoke: what they are run with under C{--smoke}.
    @return: the exit status: 1 if a scenario raised, 3 under C{--check}
        if a target was missed, else 0.
    """
    parser = argparse.ArgumentParser(prog=prog, description=doc.split("\n\n")[0])
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help=f"runs of each timing figure (default {sizes.repeats})",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny sizes, one run each: does it still work?",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 3 if a target is missed"
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        help="run only scenarios whose name contains this",
    )
    args = parser.parse_args(argv)
    if args.smoke:
        sizes = smoke
    if args.repeats is not None:
        sizes.repeats = max(1, args.repeats)

    print(
        f"{prog.split()[-1]}: {machine()}"
        + (" [smoke: tiny sizes, targets not meaningful]" if args.smoke else "")
    )
    sys.stdout.flush()
    rows: list[Row] = []
    errors = 0
    began = time.monotonic()
    for name, scenario in scenarios:
        if args.only and not any(o in name for o in args.only):
            continue
        try:
            rows += scenario(sizes)
        except Exception:
            errors += 1
            rows.append(Row(name, "ERROR (traceback on stderr)", "-", "**NO**"))
            traceback.print_exc()
    print()
    print(
        table(
            ["measure", "figure", "target", "ok"],
            [(r.measure, r.figure, r.target, r.ok) for r in rows],
        )
    )
    print(
        f"\n{len(rows)} figures in {time.monotonic() - began:.0f} s; timings are "
        f"median and max of {sizes.repeats} fresh processes each."
    )
    if errors:
        return 1
    if args.check and any(r.ok not in ("yes", "-") for r in rows):
        return 3
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return runScenarios(
        argv, "python -m bench.shutdown", __doc__ or "", SCENARIOS, Sizes(), SMOKE
    )


if __name__ == "__main__":
    sys.exit(main())
