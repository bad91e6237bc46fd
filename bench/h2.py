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
        key = kind
        if kind == "GOAWAY":
            key = "final" if "notice" in at else "notice"
        at.setdefault(key, float(t))
        if kind == "DATA":
            at["lastData"] = float(t)
    lastIDs = re.findall(r"recv GOAWAY frame[^\n]*\n\s*\(last_stream_id=(\d+)", output)
    notice = at.get("notice")

    def after(key: str) -> str:
        t = at.get(key)
        return "-" if t is None or notice is None else ms(t - notice)

    measured = (
        f"GOAWAY({lastIDs[0] if lastIDs else '?'}) at "
        f"~{ms(None if notice is None else startedAt + notice - sentAt)}, PING "
        f"+{after('PING')}, GOAWAY({lastIDs[-1] if lastIDs else '?'}) "
        f"+{after('final')}"
    )
    ok = (
        lastIDs[:1] == [str(MAX_STREAM_ID)]
        and notice is not None
        and at.get("final") is not None
        and at["final"] - notice < 0.05
    )
    return [
        (
            f"nghttp -nv ({how}): frames after SIGTERM (nghttp's clock, ~ms)",
            measured,
            "GOAWAY(2147483647), PING, GOAWAY(last) within 50 ms",
            verdict(ok),
        ),
    ]


def race(tls: bool = True) -> list[Row]:
    twistd, tlsPort = start("--ping-delay", "1.5")
    how = "TLS" if tls else "h2c"
    try:
        c = H2SocketClient(tlsPort if tls else twistd.port, tls=tls, ackPings=False)
        first = c.request("/ping")
        time.sleep(0.2)
        sentAt = twistd.signal(signal.SIGTERM)
        time.sleep(0.05)
        racing = c.request("/ping")
        c.readUntil(lambda: len(c.frames.goAways) >= 2, 3)
        finalAt = c.frames.received[-1][0] if len(c.frames.goAways) >= 2 else None
        late = c.request("/ping")
        lateAt = time.monotonic()
        c.readUntil(lambda: c.frames.streams[late].reset is not None, 3)
        refusedAfter = (
            c.frames.received[-1][0] - lateAt
            if c.frames.streams[late].reset is not None
            else None
        )
        c.readUntil(lambda: c.closedAt is not None, 5)
        c.close()
    finally:
        log = finish(twistd)
    statuses = [c.frames.streams[s].status for s in (first, racing)]
    return [
        (
            f"stream sent after the first GOAWAY, before reading it ({how})",
            f"{statuses[1]}",
            "200",
            verdict(statuses == [200, 200]),
        ),
        (
            f"stream sent after the final GOAWAY ({how})",
            f"RST_STREAM({c.frames.streams[late].reset}) in {ms(refusedAfter)}",
            "REFUSED_STREAM (7) within 50 ms",
            verdict(
                c.frames.streams[late].reset == 7
                and refusedAfter is not None
                and refusedAfter <= 0.05
            ),
        ),
        (
            f"client never ACKs the PING ({how}): final GOAWAY after the signal",
            f"{ms(None if finalAt is None else finalAt - sentAt)}; streams "
            f"{statuses}; server: {drained(log)}",
            "by 1 s, streams complete",
            verdict(
                finalAt is not None
                and finalAt - sentAt <= 1.05
                and statuses == [200] * 2
            ),
        ),
    ]


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
        firstAt = twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: len(c.frames.goAways) >= 1, 3)
        noticeAfter = c.frames.received[-1][0] - firstAt
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
            "first GOAWAY after SIGTERM (frame client reading)",
            ms(noticeAfter),
            "within 50 ms",
            verdict(noticeAfter <= 0.05),
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
        rows += throughput(3, 10000)
    print(f"HTTP/2 drain figures: {machine()}")
    print()
    print(table(["figure", "measured", "target", "met"], rows))


if __name__ == "__main__":
    main()
