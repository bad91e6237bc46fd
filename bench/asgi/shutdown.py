"""
The shutdown of each ASGI server, side by side: the same application
(C{bench.asgiapps:app}, and C{bench.asgifastapi:noticeApp} for the goodbye),
SIGINT to the server's main process, the cap at 5 s unless a scenario says
otherwise.  Each figure is taken from outside, by real clients over
loopback (raw sockets, C{curl -N}, the C{websockets} library), beside what
the application recorded it was told.
"""

from __future__ import annotations

import functools
import importlib
import json
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench.asgi.clients import WebSocketClient, webSocketsAtSignal
from bench.asgi.servers import BARE, NOTICE, Options, Server, refusedAt, start
from gracesvc.testing import get
from gracesvc.testing.process import CURL, CurlStream, InFlight


@dataclass
class Sizes:
    repeats: int = 3
    inFlight: int = 20
    sleep: float = 2.0
    settle: float = 0.5
    cap: float = 5.0
    overCap: float = 1.0
    overSleep: float = 10.0
    webSockets: int = 50
    streams: int = 20


SMOKE = Sizes(
    repeats=1,
    inFlight=3,
    sleep=0.5,
    settle=0.2,
    cap=2.0,
    overCap=1.0,
    overSleep=3.0,
    webSockets=3,
    streams=2,
)


@dataclass
class Row:
    """
    One measure: its target for gracesvc, and each server's figure.
    """

    measure: str
    target: str
    cells: dict[str, str]


#: A scenario: one server, the sizes -> (measure, target, figure) triples.
Figures = list[tuple[str, str, str]]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:,.1f} ms"


def timing(values: Sequence[float]) -> str:
    """
    @return: the median, with the max when there are several.
    """
    if not values:
        return "-"
    if len(values) == 1:
        return ms(values[0])
    return f"{ms(statistics.median(values))} (max {ms(max(values))})"


def tally(values: Sequence[int], of: int) -> str:
    """
    @return: C{"20/20"} if every run agrees, else each run's count.
    """
    if values and all(v == values[0] for v in values):
        return f"{values[0]}/{of}"
    return "runs " + ", ".join(map(str, values)) + f" /{of}"


def kinds(counter: Counter[str]) -> str:
    """
    @return: C{"reset x3, 503 x2"}, the most common first.
    """
    return ", ".join(f"{k} x{n}" for k, n in counter.most_common())


def byRun(runs: Sequence[Counter[str]]) -> str:
    """
    @return: what L{kinds} says of one run, if every run agrees (C{"... in
        3/3 runs"}), else of each run, separated by C{" / "}.
    """
    texts = [kinds(c) or "none" for c in runs]
    if all(t == texts[0] for t in texts):
        return texts[0] + (
            f" in {len(texts)}/{len(texts)} runs" if len(texts) > 1 else ""
        )
    return " / ".join(texts)


def _sameInRuns(texts: Sequence[str]) -> str:
    """
    @return: C{"503 in 3/3 runs"} if every run says the same, else each.
    """
    if texts and all(t == texts[0] for t in texts):
        return texts[0] + (
            f" in {len(texts)}/{len(texts)} runs" if len(texts) > 1 else ""
        )
    return " / ".join(texts)


def events(records: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [r for r in records if r["event"] == name]


def fate(r: InFlight) -> str:
    """
    @return: what the client of C{r} got: its status (with C{+ Retry-After}
        if it said so), C{reset}, or C{closed} with no response.
    """
    if r.response is not None:
        extra = " + Retry-After" if b"retry-after" in r.response.headers else ""
        return f"{r.response.code}{extra}"
    if r.client.reset or "reset" in repr(r.error):
        return "reset"
    return "closed, no response"


def inFlight(server: Server, s: Sizes) -> Figures:
    """
    C{s.inFlight} requests for C{/sleep/SECONDS} in flight at SIGINT: how
    many are answered; how soon new connections are refused; how soon the
    process exits after the last response; when the lifespan's shutdown
    came.
    """
    answered: list[int] = []
    others: list[Counter[str]] = []
    cancelled: list[int] = []
    refusal: list[float] = []
    onlyAtExit = 0
    toExit: list[float] = []
    afterLast: list[float] = []
    beforeExit: list[float] = []
    noLifespan = 0
    body = b"slept %g" % s.sleep
    for _ in range(s.repeats):
        running = start(server, BARE, Options(cap=s.cap))
        try:
            requests = [
                InFlight(running.port, get(f"/sleep/{s.sleep:g}"))
                for _ in range(s.inFlight)
            ]
            time.sleep(s.settle)
            sentAt = running.signal(signal.SIGINT)
            refused = refusedAt(running, s.cap + 5)
            running.wait(s.cap + 10)
            for r in requests:
                r.join(5)
            records = running.recorded()
        finally:
            running.kill()
        ok = [
            r
            for r in requests
            if r.response and r.response.code == 200 and r.response.body == body
        ]
        answered.append(len(ok))
        others.append(Counter(fate(r) for r in requests if r not in ok))
        cancelled.append(len(events(records, "sleep.cancelled")))
        if refused is None:
            onlyAtExit += 1
        else:
            refusal.append(refused - sentAt)
        last = max((r.doneAt for r in ok if r.doneAt is not None), default=None)
        exitedAt = running.exitedAt
        if last is not None and exitedAt is not None:
            toExit.append(exitedAt - last)
        # The application's own times, on the clock the bench reads too:
        # when its last response was sent, when the lifespan's shutdown came
        # (a client thread's time of receipt is a millisecond or so late).
        shutdowns = events(records, "lifespan.shutdown")
        sent = [r["at"] for r in events(records, "sleep.answered")]
        if not shutdowns:
            noLifespan += 1
        elif sent and exitedAt is not None:
            afterLast.append(shutdowns[0]["at"] - max(sent))
            beforeExit.append(exitedAt - shutdowns[0]["at"])
    n = s.inFlight
    got = tally(answered, n)
    if any(others):
        got += f"; the others: {byRun(others)}"
    if any(cancelled):
        got += f"; app tasks cancelled: {tally(cancelled, n)}"
    refusedText = timing(refusal)
    if onlyAtExit:
        refusedText = (
            "only at exit"
            if not refusal
            else f"{refusedText}; only at exit in {onlyAtExit} runs"
        )
    if noLifespan == s.repeats:
        lifespanText = "never sent"
    else:
        lifespanText = (
            f"{timing(afterLast)} after the last response sent, "
            f"{timing(beforeExit)} before exit"
        )
        if noLifespan:
            lifespanText += f"; not sent in {noLifespan} runs"
    return [
        (
            f"{n} requests ({s.sleep:g} s) in flight at SIGINT: answered 200",
            f"{n}/{n}",
            got,
        ),
        ("  SIGINT -> new connections refused", "< 20 ms", refusedText),
        ("  last response -> exit", "< 25 ms", timing(toExit)),
        (
            "  lifespan shutdown",
            "after the last response sent, before exit",
            lifespanText,
        ),
    ]


def idleExit(server: Server, s: Sizes) -> Figures:
    toExit: list[float] = []
    for _ in range(s.repeats):
        running = start(server, BARE, Options(cap=s.cap))
        try:
            time.sleep(0.2)
            sentAt = running.signal(signal.SIGINT)
            running.wait(s.cap + 10)
        finally:
            running.kill()
        if running.exitedAt is not None:
            toExit.append(running.exitedAt - sentAt)
    return [("no traffic: SIGINT -> exit", "< 15 ms", timing(toExit))]


def overTheCap(server: Server, s: Sizes) -> Figures:
    """
    One request for C{/sleep/10} at SIGINT with the cap at 1 s: what its
    client gets, and when; when the process exits.
    """
    got: list[str] = []
    at: list[float] = []
    toExit: list[float] = []
    for _ in range(s.repeats):
        running = start(server, BARE, Options(cap=s.overCap))
        try:
            request = InFlight(running.port, get(f"/sleep/{s.overSleep:g}"))
            time.sleep(0.3)
            sentAt = running.signal(signal.SIGINT)
            running.wait(s.overSleep + 10)
            request.join(5)
        finally:
            running.kill()
        got.append(fate(request))
        if request.doneAt is not None:
            at.append(request.doneAt - sentAt)
        if running.exitedAt is not None:
            toExit.append(running.exitedAt - sentAt)
    cap = "" if server.cap else " (daphne has no cap)"
    return [
        (
            f"/sleep/{s.overSleep:g} at SIGINT, cap {s.overCap:g} s: the client gets",
            "503 + Retry-After",
            f"{_sameInRuns(got)}, at {timing(at)}{cap}",
        ),
        ("  SIGINT -> exit", f"< {s.overCap * 1000 + 50:,.0f} ms", timing(toExit)),
    ]


def _closeCodes(clients: Sequence[WebSocketClient]) -> str:
    codes = Counter(
        "no Close frame" if c.code is None else f"Close {c.code}" for c in clients
    )
    return kinds(codes)


def _told(records: list[dict[str, Any]], n: int, prefix: str = "ws") -> str:
    """
    @return: what the application's WebSockets were told: the codes of the
        C{websocket.disconnect} they received, their cancellations, and how
        many were told nothing.
    """
    told: Counter[str] = Counter(
        f"{r['code']}" for r in events(records, f"{prefix}.disconnect")
    )
    cancelled = len(events(records, f"{prefix}.cancelled"))
    parts = [f"disconnect {code} x{k}" for code, k in told.most_common()]
    if cancelled:
        parts.append(f"cancelled x{cancelled}")
    nothing = n - sum(told.values()) - cancelled
    if nothing > 0:
        parts.append(f"nothing x{nothing}")
    return ", ".join(parts)


def webSockets(server: Server, s: Sizes) -> Figures:
    """
    C{s.webSockets} WebSockets of the echo, each sending every 100 ms, at
    SIGINT: the Close frame each got, whether the library saw a clean
    closing handshake, what the application was told, when the last Close
    came, when the process exited after the last handshake.
    """
    n = s.webSockets
    codes, clean, told = [], [], []
    lastClose: list[float] = []
    toExit: list[float] = []
    for _ in range(s.repeats):
        running = start(server, BARE, Options(cap=s.cap))
        try:
            clients, sentAt = webSocketsAtSignal(
                running.port,
                n,
                s.settle,
                functools.partial(running.signal, signal.SIGINT),
                s.cap + 5,
            )
            running.wait(s.cap + 10)
            records = running.recorded()
        finally:
            running.kill()
        codes.append(_closeCodes(clients))
        clean.append(sum(c.ok for c in clients))
        told.append(_told(records, n))
        closes = [c.closeAt for c in clients if c.closeAt is not None]
        if closes:
            lastClose.append(max(closes) - sentAt)
        ends = [c.endedAt for c in clients if c.endedAt is not None]
        if ends and len(ends) == n and running.exitedAt is not None:
            toExit.append(running.exitedAt - max(ends))
    return [
        (
            f"{n} WebSockets (echo) at SIGINT: Close frame received",
            f"Close 1001 x{n}",
            " / ".join(sorted(set(codes))),
        ),
        (
            "  clean closing handshake (websockets: ConnectionClosedOK)",
            f"{n}/{n}",
            tally(clean, n),
        ),
        (
            "  the app was told (websocket.disconnect)",
            f"disconnect 1001 x{n}",
            " / ".join(sorted(set(told))),
        ),
        ("  SIGINT -> last Close frame", "< 100 ms", timing(lastClose)),
        ("  the server's last TCP close -> exit", "< 25 ms", timing(toExit)),
    ]


def goodbyes(server: Server, s: Sizes) -> Figures:
    """
    The FastAPI WebSocket echo wrapped in C{gracesvc.asgi.ShutdownNotice}:
    how many clients got its own goodbye before the Close.
    """
    n = s.webSockets
    label = f"{n} FastAPI WebSockets with ShutdownNotice at SIGINT: goodbye, then Close"
    try:
        noticeApp = importlib.import_module("bench.asgifastapi").noticeApp
    except ImportError:
        return [(label, f"{n}/{n}", "not installed (fastapi)")]
    if noticeApp is None:
        return [(label, f"{n}/{n}", "not available (no gracesvc.asgi.ShutdownNotice)")]
    said, clean, codes = [], [], []
    for _ in range(s.repeats):
        running = start(server, NOTICE, Options(cap=s.cap))
        try:
            clients, _ = webSocketsAtSignal(
                running.port,
                n,
                s.settle,
                functools.partial(running.signal, signal.SIGINT),
                s.cap + 5,
            )
            running.wait(s.cap + 10)
        finally:
            running.kill()
        said.append(sum(_saidGoodbye(c) for c in clients))
        clean.append(sum(c.ok for c in clients))
        codes.append(_closeCodes(clients))
    return [
        (label, f"{n}/{n}", tally(said, n)),
        (
            "  Close frame; clean closing handshake",
            f"Close 1001 x{n}; {n}/{n}",
            f"{' / '.join(sorted(set(codes)))}; {tally(clean, n)}",
        ),
    ]


def _saidGoodbye(c: WebSocketClient) -> bool:
    """
    @return: whether the last message C{c} got was the goodbye, and a Close
        came after it (the library delivers no message that came after the
        Close frame: the order is the wire's).
    """
    if not c.messages or c.closeAt is None:
        return False
    try:
        message = json.loads(c.messages[-1][1])
    except ValueError:
        return False
    return isinstance(message, dict) and message.get("type") == "goodbye"


def eventStreams(server: Server, s: Sizes) -> Figures:
    """
    C{s.streams} C{curl -N} reading C{/events} at SIGINT: curl's exit
    status and when; whether the application was told C{http.disconnect}.
    """
    n = s.streams
    label = f"{n} event streams (curl -N) at SIGINT: curl's exit status"
    if CURL is None:
        return [(label, f"0 x{n}", "skipped: curl is not installed")]
    statuses: list[Counter[str]] = []
    lastEnd: list[float] = []
    told: list[int] = []
    other: list[Counter[str]] = []
    toExit: list[float] = []
    for _ in range(s.repeats):
        running = start(server, BARE, Options(cap=s.cap))
        streams: list[CurlStream] = []
        try:
            streams = [CurlStream(running.port, "/events") for _ in range(n)]
            for c in streams:
                if not c.waitFor(b"event: tick"):
                    raise RuntimeError(f"{server.key}: no event: {c.stderr!r}")
            sentAt = running.signal(signal.SIGINT)
            for c in streams:
                try:
                    c.wait(s.cap + 10)
                except AssertionError:
                    pass
            running.wait(s.cap + 10)
            records = running.recorded()
        finally:
            for c in streams:
                c.kill()
            running.kill()
        statuses.append(Counter(f"exit {c.status}" for c in streams))
        ends = [c.exitedAt for c in streams if c.exitedAt is not None]
        if ends:
            lastEnd.append(max(ends) - sentAt)
        told.append(len(events(records, "events.disconnect")))
        other.append(
            Counter(
                r["event"].split(".", 1)[1]
                for r in records
                if r["event"] in ("events.cancelled", "events.sendFailed")
            )
        )
        if running.exitedAt is not None:
            toExit.append(running.exitedAt - sentAt)
    toldText = tally(told, n)
    if any(other):
        toldText += f"; {byRun(other)}"
    return [
        (label, f"exit 0 x{n}", byRun(statuses)),
        ("  SIGINT -> last curl exited", "< 100 ms", timing(lastEnd)),
        ("  the app was told http.disconnect", f"{n}/{n}", toldText),
        ("  SIGINT -> exit", "-", timing(toExit)),
    ]


SCENARIOS: list[tuple[str, Callable[[Server, Sizes], Figures]]] = [
    ("in flight", inFlight),
    ("idle", idleExit),
    ("cap", overTheCap),
    ("websockets", webSockets),
    ("event streams", eventStreams),
    ("notice", goodbyes),
]


def rows(servers: Sequence[Server], s: Sizes, log: Callable[[str], None]) -> list[Row]:
    """
    Run every scenario on every server (those that cannot run get their
    reason in each cell).

    @param log: told one line per scenario and server as it ends.
    """
    out: list[Row] = []
    for name, scenario in SCENARIOS:
        byLabel: dict[str, Row] = {}
        order: list[str] = []
        for server in servers:
            missing = server.missing()
            if missing is not None:
                continue
            began = time.monotonic()
            try:
                figures = scenario(server, s)
            except Exception as e:
                figures = [(name, "-", f"ERROR: {e!r}"[:300])]
            log(f"  {name}, {server.key}: {time.monotonic() - began:.1f} s")
            for measure, target, cell in figures:
                if measure not in byLabel:
                    byLabel[measure] = Row(measure, target, {})
                    order.append(measure)
                byLabel[measure].cells[server.key] = cell
        if not order:
            byLabel[name] = Row(name, "-", {})
            order.append(name)
        for measure in order:
            row = byLabel[measure]
            for server in servers:
                missing = server.missing()
                if missing is not None:
                    row.cells[server.key] = missing
                row.cells.setdefault(server.key, "-")
            out.append(row)
    return out
