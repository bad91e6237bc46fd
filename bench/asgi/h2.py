"""
HTTP/2 at SIGTERM, side by side: C{h2load -n 64 -c 8 -m 8} against
C{/sleep/1} of the bare application, SIGTERM 0.5 s after h2load started,
over TLS (ALPN h2) and cleartext with prior knowledge (h2c).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Sequence

from bench.asgi.servers import BARE, Options, Server, certificate, start

#: What C{h2load} says when every request succeeded.
ALL_SUCCEEDED = re.compile(r"(\d+) succeeded, (\d+) failed, (\d+) errored")


def inFlight(
    server: Server, tls: bool, n: int, clients: int, streams: int, cap: float
) -> str:
    """
    @return: what h2load counted, and when the server exited after the
        signal and after h2load's end.
    """
    reason = server.http2 if tls else server.h2c or server.http2
    if reason is not None:
        return f"not measured: {reason}"
    options = Options(cap=cap, tls=certificate() if tls else None, h2c=not tls)
    running = start(server, BARE, options)
    scheme = "https" if tls else "http"
    try:
        load = subprocess.Popen(
            ["h2load", "-n", str(n), "-c", str(clients), "-m", str(streams)]
            + [f"{scheme}://127.0.0.1:{running.port}/sleep/1"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)
        sentAt = running.signal(signal.SIGTERM)
        output, _ = load.communicate(timeout=cap + 20)
        doneAt = time.monotonic()
        running.wait(cap + 10)
    finally:
        running.kill()
    counts = ALL_SUCCEEDED.search(output)
    if counts is None:
        last = output.strip().splitlines()[-1:] or ["no output"]
        return f"h2load: {last[0][:120]}"
    text = counts.group(0)
    if "Application protocol" not in output:
        text += " (no h2 negotiated)"
    exitedAt = running.exitedAt
    if exitedAt is not None:
        text += (
            f"; exit {(exitedAt - sentAt) * 1000:,.0f} ms after SIGTERM, "
            f"{(exitedAt - doneAt) * 1000:+,.0f} ms after h2load's end"
        )
    else:
        text += "; still running"
    return text


def rows(
    servers: Sequence[Server],
    n: int,
    clients: int,
    streams: int,
    log: Callable[[str], None],
) -> list[tuple[str, str, str]]:
    """
    @return: (server, TLS figure, h2c figure) for each server.
    """
    out = []
    if shutil.which("h2load") is None:
        return [("-", "h2load not found: apt-get install nghttp2-client", "-")]
    for server in servers:
        missing = server.missing()
        if missing is not None:
            out.append((server.header(), missing, missing))
            continue
        cells = []
        for tls in (True, False):
            try:
                cells.append(inFlight(server, tls, n, clients, streams, 5.0))
            except Exception as e:
                cells.append(f"ERROR: {e!r}"[:300])
        log(f"  {server.key}: TLS {cells[0]}; h2c {cells[1]}")
        out.append((server.header(), cells[0], cells[1]))
    return out
