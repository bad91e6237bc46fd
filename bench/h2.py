"""
The HTTP/2 drain's figures, each beside its target, measured on real
C{twistd -n gracesvc} processes over loopback, TLS (ALPN h2) and cleartext
(C{--h2c}), with C{h2load} and C{nghttp} (Debian's C{nghttp2-client}),
Node's C{http2} and gracesvc's frame-level client::

    .venv/bin/python -m bench.h2            # every figure
    .venv/bin/python -m bench.h2 --smoke    # tiny sizes, no throughput

Times are taken client-side with C{time.monotonic()}; the signal's time is
just before C{kill()}.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

import twisted.test  # noqa: E402  (after bench._common puts the checkout first)
from hyperframe.frame import DataFrame, GoAwayFrame

from bench._common import PLAIN_TAC, machine, ms, table, verdict
from gracesvc.testing.h2 import NODE_CLIENT, H2SocketClient
from gracesvc.testing.process import Twistd, freePort

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
MAX_STREAM_ID = 2**31 - 1


Row = tuple[str, str, str, str]


def start(*args: str) -> tuple[Twistd, int]:
    """
    @return: a serving gracesvc with an C{ssl:} listener and a cleartext one
        with C{--h2c} (C{twistd.port}), and the TLS port.
    """
    tlsPort, plainPort = freePort(), freePort()
    twistd = Twistd(
        "--h2c",
        *args,
        port=plainPort,
        listen=[
            f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={PEM}",
            f"tcp:{plainPort}:interface=127.0.0.1",
        ],
    )
    try:
        twistd.waitUntilServing()
    except BaseException:
        twistd.kill()
        raise
    return twistd, tlsPort


def finish(twistd: Twistd, timeout: float = 15.0) -> str:
    try:
        twistd.wait(timeout)
    except AssertionError:
        pass
    log = twistd.log()
    twistd.kill()
    return log


def drained(log: str) -> str:
    m = re.search(r"(\d+) requests completed during the drain, (\d+) cut", log)
    return f"{m.group(1)} completed, {m.group(2)} cut" if m else "?"


def h2loadInFlight(scheme: str, n: int, c: int, m: int) -> list[Row]:
    twistd, tlsPort = start("--ping-delay", "1")
    port = tlsPort if scheme == "https" else twistd.port
    try:
        load = subprocess.Popen(
            ["h2load", "-n", str(n), "-c", str(c), "-m", str(m)]
            + [f"{scheme}://127.0.0.1:{port}/ping"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)
        sentAt = twistd.signal(signal.SIGTERM)
        output, _ = load.communicate(timeout=20)
        doneAt = time.monotonic()
    finally:
        log = finish(twistd)
    counts = re.search(r"(\d+) succeeded, (\d+) failed, (\d+) errored", output)
    measured = counts.group(0) if counts else output.strip()[-200:]
    ok = counts is not None and counts.group(0) == f"{n} succeeded, 0 failed, 0 errored"
    exitAfter = twistd.exitedAt - sentAt if twistd.exitedAt else None
    return [
        (
            f"h2load -n {n} -c {c} -m {m} {scheme}, 1 s /ping, SIGTERM at 0.5 s",
            f"{measured}; server: {drained(log)}; exit {ms(exitAfter)} after "
            f"the signal, {ms(None if twistd.exitedAt is None else twistd.exitedAt - doneAt + 0)} from h2load's end",
            f"{n} succeeded, 0 failed, 0 errored, 0 cut",
            verdict(ok and ", 0 cut" in drained(log)),
        )
    ]


def nghttpFrames(tls: bool = True) -> list[Row]:
    twistd, tlsPort = start("--ping-delay", "1")
    url = (
        f"https://127.0.0.1:{tlsPort}/ping"
        if tls
        else f"http://127.0.0.1:{twistd.port}/ping"
    )
    how = "TLS" if tls else "h2c"
    try:
        startedAt = time.monotonic()
        client = subprocess.Popen(
            ["nghttp", "-nv", url],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)
        sentAt = twistd.signal(signal.SIGTERM)
        output, _ = client.communicate(timeout=15)
    finally:
        finish(twistd)
    frames = re.findall(r"\[\s*([\d.]+)\] recv (GOAWAY|PING|DATA) frame", output)
    at: dict[str, float] = {}
    for t, kind in frames:
        if kind == "DATA":
            at["lastData"] = float(t)
        else:
            at.setdefault(kind, float(t))
    kinds = [kind for _, kind in frames]
    lastIDs = re.findall(r"recv GOAWAY frame[^\n]*\n\s*\(last_stream_id=(\d+)", output)
    last = at.get("lastData")

    def after(key: str) -> str:
        t = at.get(key)
        return "-" if t is None or last is None else ms(t - last)

    measured = (
        f"last DATA ~{ms(None if last is None else startedAt + last - sentAt)} "
        f"after the signal; PING +{after('PING')}; "
        f"GOAWAY({lastIDs[0] if lastIDs else '-'}) +{after('GOAWAY')}"
    )
    ping = kinds.index("PING") if "PING" in kinds else None
    ok = (
        ping is not None
        and kinds[ping + 1 :] in ([], ["GOAWAY"])
        and "DATA" not in kinds[ping:]
        and at["PING"] - (last or 0) < 0.05
        and lastIDs in ([], ["13"])
    )
    return [
        (
            f"nghttp -nv ({how}): frames after SIGTERM (nghttp's clock, ~ms)",
            measured,
            "response, PING, GOAWAY(13) at most, nothing after; PING within 50 ms",
            verdict(ok),
        ),
    ]


def race(tls: bool = True) -> list[Row]:
    twistd, tlsPort = start("--ping-delay", "1")
    how = "TLS" if tls else "h2c"
    try:
        c = H2SocketClient(tlsPort if tls else twistd.port, tls=tls, ackPings=False)
        first = c.request("/ping")
        time.sleep(0.2)
        twistd.signal(signal.SIGTERM)
        time.sleep(0.05)
        racing = c.request("/ping")
        c.readUntil(lambda: len(c.frames.goAways) >= 1, 3)
        answeredAt = c.frames.firstAt(DataFrame, stream_id=first)
        goAwayAt = c.frames.firstAt(GoAwayFrame)
        c.readUntil(lambda: c.closedAt is not None, 5)
        c.close()
    finally:
        log = finish(twistd)
    parked = c.frames.streams[racing]
    goAways = c.frames.goAways
    wait = None if goAwayAt is None or answeredAt is None else goAwayAt - answeredAt
    return [
        (
            f"stream sent after the signal, before the GOAWAY ({how})",
            f"status {parked.status}, RST_STREAM {parked.reset}; GOAWAYs {goAways}",
            "parked (no answer, no RST), one GOAWAY below its id: retried",
            verdict(
                parked.status is None
                and parked.reset is None
                and goAways == [(first, 0)]
            ),
        ),
        (
            f"client never ACKs the PING ({how}): GOAWAY after the last response",
            f"{ms(wait)}; streams {[c.frames.streams[first].status]}; "
            f"server: {drained(log)}",
            "<= clamp(4 x SETTINGS round trip, 50 ms, 1 s), stream complete",
            verdict(
                wait is not None
                and wait <= 1.05
                and c.frames.streams[first].status == 200
            ),
        ),
    ]


def httpxInFlight(tls: bool = True) -> list[Row]:
    """
    httpx (through h2) with 20 requests in flight on one connection at
    SIGTERM.
    """
    import asyncio

    import httpx

    twistd, tlsPort = start("--ping-delay", "1")
    scheme, port = ("https", tlsPort) if tls else ("http", twistd.port)
    results: list[object] = []

    async def fetch() -> None:
        async with httpx.AsyncClient(http1=False, http2=True, verify=False) as c:

            async def one() -> object:
                try:
                    return (
                        await c.get(f"{scheme}://127.0.0.1:{port}/ping")
                    ).status_code
                except Exception as e:
                    return type(e).__name__

            async def signal_() -> None:
                await asyncio.sleep(0.5)
                twistd.signal(signal.SIGTERM)

            both = await asyncio.gather(signal_(), *(one() for _ in range(20)))
            results.extend(both[1:])

    try:
        asyncio.run(fetch())
    finally:
        log = finish(twistd)
    n = results.count(200)
    return [
        (
            f"httpx (h2) with 20 in flight at SIGTERM ({scheme})",
            f"{n}/20 answered; server: {drained(log)}",
            "20/20",
            verdict(n == 20),
        )
    ]


def attacks(full: bool) -> list[Row]:
    """
    Each attack of L{bench._h2attacks}, repeated for 3 s (1 s at smoke
    size) while an honest client is timed.
    """
    from bench._h2attacks import ATTACKS, measure

    twistd, _ = start("--app", "tests.apps.bigapp:Root")
    sizes = {"zero-window": 20} if full else {"zero-window": 5}
    rows: list[Row] = []
    try:
        for name, attack in ATTACKS.items():
            kwargs: dict[str, object] = {"timeout": 10.0}
            if name in sizes:
                kwargs["size"] = sizes[name]
            elif not full:
                kwargs["size"] = 2000
            run = measure(
                attack,
                twistd.port,
                twistd.port,
                twistd.pid,
                duration=3.0 if full else 1.0,
                **kwargs,
            )
            ends: dict[str, int] = {}
            for o in run.outcomes:
                key = o.ended + ("" if o.errorCode is None else f"({o.errorCode})")
                ends[key] = ends.get(key, 0) + 1
            stopped = all(o.stopped for o in run.outcomes)
            rows.append(
                (
                    f"{run.outcomes[0].name.split(' (')[0]}: {len(run.outcomes)} "
                    "connections",
                    f"ended {ends}; honest p99 {ms(run.honestP99)} (max "
                    f"{ms(run.honestMax)}, {run.honestRequests} requests); RSS "
                    f"+{run.rssGrowth / 1e6:.1f} MB",
                    "each ended; p99 < 50 ms; RSS < +10 MB",
                    verdict(stopped and run.honestP99 < 0.05 and run.rssGrowth < 10e6),
                )
            )
    finally:
        twistd.signal(signal.SIGTERM)
        finish(twistd)
    return rows


def idle(n: int, tls: bool = True) -> list[Row]:
    twistd, tlsPort = start()
    how = "TLS" if tls else "h2c"
    clients: list[H2SocketClient] = []
    try:
        for _ in range(n):
            c = H2SocketClient(tlsPort if tls else twistd.port, tls=tls)
            c.request("/healthz")
            c.readUntil(lambda c=c: c.frames.streams[1].ended, 5)
            clients.append(c)
        time.sleep(0.2)
        sentAt = twistd.signal(signal.SIGTERM)
        giveUpAt = time.monotonic() + 10
        while not twistd.exited and time.monotonic() < giveUpAt:
            socks = [c.sock for c in clients if c.closedAt is None]
            if socks:
                select.select(socks, [], [], 0.01)
            for c in clients:
                if c.closedAt is None and not c.read(0):
                    c.close()
            if not socks:
                time.sleep(0.001)
        twistd.wait(10)
    finally:
        for c in clients:
            c.close()
        finish(twistd)
    exitAfter = twistd.exitedAt - sentAt if twistd.exitedAt else None
    return [
        (
            f"{n} idle h2 connections ({how}): exit after SIGTERM",
            ms(exitAfter),
            "<= 100 ms",
            verdict(exitAfter is not None and exitAfter <= 0.1),
        )
    ]


def node() -> list[Row]:
    if shutil.which("node") is None:
        return [("Node session.close()", "node not found", "both 200", "-")]
    twistd, tlsPort = start("--ping-delay", "0.5")
    try:
        output = subprocess.run(
            ["node", "-e", NODE_CLIENT, f"https://127.0.0.1:{tlsPort}", "2", "close"],
            capture_output=True,
            text=True,
            timeout=15,
        ).stdout
    finally:
        twistd.signal(signal.SIGTERM)
        finish(twistd)
    n = output.count("status 200")
    return [
        (
            "Node session.close() with 2 requests in flight, no shutdown",
            f"{n} of 2 answered 200",
            "both 200",
            verdict(n == 2),
        )
    ]


def cutAndCap() -> list[Row]:
    cap = 2.0
    twistd, tlsPort = start("--ping-delay", "30", "--shutdown-timeout", str(cap))
    try:
        c = H2SocketClient(tlsPort)
        sid = c.request("/ping")
        time.sleep(0.2)
        sentAt = twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: c.frames.streams[sid].ended, cap + 1)
        twistd.wait(cap + 2)
        c.close()
    finally:
        log = finish(twistd)
    status = c.frames.streams[sid].status
    exitAfterCap = twistd.exitedAt - sentAt - cap if twistd.exitedAt else None
    return [
        (
            f"cut and cap ({cap:g} s): unanswered stream; exit after the cap",
            f"{status} Retry-After {c.frames.streams[sid].headers.get(b'retry-after', b'-').decode()}; "
            f"exit {ms(exitAfterCap)} after the cap; server: {drained(log)}",
            "503 + Retry-After, <= 100 ms, 1 cut",
            verdict(
                status == 503
                and exitAfterCap is not None
                and exitAfterCap <= 0.1
                and "0 completed, 1 cut" in drained(log)
            ),
        )
    ]


def secondSignal() -> list[Row]:
    twistd, tlsPort = start("--ping-delay", "30")
    try:
        c = H2SocketClient(tlsPort, ackPings=False)
        c.request("/ping")
        c.request("/ping")
        time.sleep(0.2)
        c.readUntil(lambda: False, 0.1)
        twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: bool(c.frames.goAways or c.frames.pings), 0.3)
        framesAfter = len(c.frames.goAways) + len(c.frames.pings)
        secondAt = twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: c.closedAt is not None, 3)
        twistd.wait(5)
        c.close()
    finally:
        log = finish(twistd)
    exitAfter = twistd.exitedAt - secondAt if twistd.exitedAt else None
    cut = re.search(r"cutting (\d+) requests in flight", log)
    return [
        (
            "PING or GOAWAY in the 0.3 s after SIGTERM, two streams held",
            str(framesAfter),
            "0: the streams are served, no GOAWAY yet",
            verdict(framesAfter == 0),
        ),
        (
            "second signal with 2 streams in flight",
            f"GOAWAYs {c.frames.goAways}; exit {ms(exitAfter)} after it; "
            f"{cut.group(0) if cut else '?'}",
            "final GOAWAY(3), exit <= 100 ms, 2 cut",
            verdict(
                c.frames.goAways[-1:] == [(3, 0)]
                and exitAfter is not None
                and exitAfter <= 0.1
                and cut is not None
                and cut.group(1) == "2"
            ),
        ),
    ]


def throughput(rounds: int, n: int) -> list[Row]:
    """
    h2load on /ping (no delay) over TLS: gracesvc against the same routes
    on Twisted's stock Site and H2Connection (bench/plain.tac), fresh
    servers, ABBA.  The figure is the server's CPU time per request
    (all its threads, see L{bench.throughput.cpuSeconds}), which holds
    still on a shared machine where requests per second do not (see
    C{bench.throughput}).
    """
    from bench.throughput import cpuSeconds

    cpu: dict[str, list[float]] = {"gracesvc": [], "stock": []}
    rates: dict[str, list[float]] = {"gracesvc": [], "stock": []}

    def startStock() -> tuple[Twistd, int]:
        port, tlsPort = freePort(), freePort()
        env = dict(
            os.environ,
            GRACESVC_BENCH_PORT=str(port),
            GRACESVC_BENCH_PING_DELAY="0",
            GRACESVC_BENCH_TLS=f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={PEM}",
        )
        twistd = Twistd(PLAIN_TAC, port=port, listen=[], env=env, plugin="-y")
        twistd.waitUntilServing()
        return twistd, tlsPort

    for _ in range(rounds):
        for kind in ("gracesvc", "stock", "stock", "gracesvc"):
            twistd, tlsPort = (
                start("--ping-delay", "0") if kind == "gracesvc" else startStock()
            )
            try:
                before = cpuSeconds(twistd.pid)
                output = subprocess.run(
                    ["h2load", "-n", str(n), "-c", "4", "-m", "10"]
                    + [f"https://127.0.0.1:{tlsPort}/ping"],
                    capture_output=True,
                    text=True,
                    timeout=120,
                ).stdout
                used = cpuSeconds(twistd.pid) - before
            finally:
                twistd.kill()
            m = re.search(r"finished in [\d.]+m?s, ([\d.]+) req/s", output)
            if m and f"{n} succeeded" in output:
                rates[kind].append(float(m.group(1)))
                cpu[kind].append(used / n * 1e6)
    g = statistics.median(cpu["gracesvc"]) if cpu["gracesvc"] else 0.0
    s = statistics.median(cpu["stock"]) if cpu["stock"] else 0.0
    ratio = s / g if g else 0.0
    gr = statistics.median(rates["gracesvc"]) if rates["gracesvc"] else 0.0
    sr = statistics.median(rates["stock"]) if rates["stock"] else 0.0
    return [
        (
            f"h2 cost, h2load -n {n} -c 4 -m 10 /ping over TLS, ABBA x{rounds}: "
            "stock CPU/request over gracesvc's",
            f"{g:.1f} vs stock {s:.1f} CPU us/request: ratio {ratio:.3f} "
            f"({gr:.0f} vs {sr:.0f} req/s on a shared machine)",
            ">= 0.97",
            verdict(ratio >= 0.97),
        )
    ]


def exitAfterLastByte(tls: bool) -> list[Row]:
    """
    A client that closes once its stream is answered and the final GOAWAY
    read (as nghttp, h2load and Node do): the process exits after its
    last byte by how much?
    """
    twistd, tlsPort = start("--ping-delay", "1")
    how = "TLS" if tls else "h2c"
    lastAt = None
    try:
        c = H2SocketClient(tlsPort if tls else twistd.port, tls=tls)
        sid = c.request("/ping")
        time.sleep(0.3)
        twistd.signal(signal.SIGTERM)
        c.readUntil(
            lambda: c.frames.streams[sid].ended and len(c.frames.goAways) == 2, 5
        )
        lastAt = c.frames.received[-1][0]
        c.close()
        twistd.wait(5)
    finally:
        finish(twistd)
    after = twistd.exitedAt - lastAt if twistd.exitedAt and lastAt else None
    return [
        (
            f"exit after the last byte, client closing on GOAWAY ({how})",
            ms(after),
            "<= 50 ms",
            verdict(after is not None and after <= 0.05),
        )
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, quick")
    options = parser.parse_args()
    for tool in ("h2load", "nghttp"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install nghttp2-client", file=sys.stderr)
            raise SystemExit(1)
    rows: list[Row] = []
    if options.smoke:
        rows += h2loadInFlight("https", 8, 2, 4)
        rows += nghttpFrames()
        rows += exitAfterLastByte(tls=True)
        rows += race()
        rows += idle(5)
        rows += secondSignal()
        rows += httpxInFlight()
    else:
        rows += h2loadInFlight("https", 64, 8, 8)
        rows += h2loadInFlight("http", 64, 8, 8)
        rows += nghttpFrames()
        rows += nghttpFrames(tls=False)
        rows += exitAfterLastByte(tls=True)
        rows += exitAfterLastByte(tls=False)
        rows += race()
        rows += race(tls=False)
        rows += idle(100)
        rows += idle(100, tls=False)
        rows += node()
        rows += cutAndCap()
        rows += secondSignal()
        rows += httpxInFlight()
        rows += httpxInFlight(tls=False)
        rows += attacks(full=True)
        rows += throughput(3, 10000)
    print(f"HTTP/2 drain figures: {machine()}")
    print()
    print(table(["figure", "measured", "target", "met"], rows))


if __name__ == "__main__":
    main()
