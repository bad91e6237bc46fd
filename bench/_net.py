"""
Many HTTP/1.1 keep-alive client connections on raw non-blocking sockets,
driven by one selector in one thread: the client side of C{bench.scale} and
the fallback load generator of C{bench.throughput}.

It knows nothing of Twisted: what it measures is what any client on the
wire would see.
"""

from __future__ import annotations

import errno
import os
import selectors
import socket
import time
from collections.abc import Callable

from gracesvc.testing import get

# Connection states.
CONNECTING = "connecting"  # connect() in progress
WARMING = "warming"  # its first request (the warm request) sent, not yet answered
IDLE = "idle"  # answered, nothing sent since
WAITING = "waiting"  # a request sent, not yet answered
ANSWERED = "answered"  # the request sent after warming was answered
CLOSED = "closed"


class Conn:
    """
    One client connection and what happened to it.

    @ivar sentAt: when the request after warming was sent.
    @ivar answeredAt: when its response was complete.
    @ivar closedAt: when the peer's close was seen (EOF or reset).
    """

    __slots__ = (
        "sock",
        "role",
        "state",
        "buf",
        "sentAt",
        "answeredAt",
        "closedAt",
        "code",
        "saidClose",
        "reset",
        "unexpected",
    )

    def __init__(self, sock: socket.socket, role: str) -> None:
        self.sock = sock
        self.role = role
        self.state = CONNECTING
        self.buf = b""
        self.sentAt: float | None = None
        self.answeredAt: float | None = None
        self.closedAt: float | None = None
        self.code: int | None = None
        self.saidClose = False
        self.reset = False
        self.unexpected = b""


def parseResponse(buf: bytes) -> tuple[int, bool, int] | None:
    """
    @return: (status code, whether it says C{Connection: close}, bytes it
        takes) for the complete response at the start of C{buf}, or L{None}
        if it is not complete yet.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return None
    head = buf[:end].lower()
    code = int(head[9:12])
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name == b"content-length":
            length = int(value)
        elif name == b"connection":
            close = value.strip() == b"close"
    total = end + 4 + length
    if len(buf) < total:
        return None
    return code, close, total


class _Probe:
    __slots__ = ("sock", "startedAt")

    def __init__(self, sock: socket.socket, startedAt: float) -> None:
        self.sock = sock
        self.startedAt = startedAt


#: A probe connect neither accepted nor refused by then is given up: its
#: SYN found the accept queue full and waits for a retransmission (1 s).
PROBE_PATIENCE = 0.02


class _Exit:
    __slots__ = ("fd",)

    def __init__(self, fd: int) -> None:
        self.fd = fd


class Fleet:
    """
    Keep-alive connections to one loopback port, and what they saw.

    @ivar open: connections not closed yet.
    @ivar waiting: requests sent after warming and not answered yet (in
        flight, as the client sees it).
    @ivar answered: of those, how many were answered.
    @ivar lost: of those, how many had their connection closed unanswered.
    @ivar timeline: C{(time, waiting, open, answered, lost)} samples.
    @ivar refusedAt: when a probe connect was first refused.
    @ivar exitedAt: when the watched process was seen to exit.
    """

    def __init__(self, port: int, warmRequest: bytes | None = None) -> None:
        """
        @param warmRequest: the request each connection sends first, before
            it counts as open: C{GET /healthz} unless given.
        """
        self.port = port
        self.address = ("127.0.0.1", port)
        self.selector = selectors.DefaultSelector()
        self.conns: list[Conn] = []
        self.open = 0
        self.connecting = 0
        self.connectFailures = 0
        self.waiting = 0
        self.answered = 0
        self.lost = 0
        self.repeat: bytes | None = None
        self.timeline: list[tuple[float, int, int, int, int]] = []
        self.sampleEvery: float | None = None
        self._nextSample = 0.0
        self.probeEvery: float | None = None
        self._nextProbe = 0.0
        self._probes: list[_Probe] = []
        self.probesSent = 0
        self.refusedAt: float | None = None
        self.exitedAt: float | None = None
        self.now = time.monotonic()
        self._warmRequest = get("/healthz") if warmRequest is None else warmRequest

    # Opening connections.

    def connect(self, count: int, role: str, window: int, timeout: float) -> list[Conn]:
        """
        Open C{count} connections, each answered its warm request (see
        L{__init__}) before it counts as open, with at most C{window} being set up at once (the
        server's accept backlog is small).

        @return: the connections, all L{IDLE}.
        @raise RuntimeError: if they are not all open within C{timeout}.
        """
        made: list[Conn] = []
        deadline = time.monotonic() + timeout
        while len(made) < count or self.connecting:
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"only {len(made) - self.connecting} of {count} {role} "
                    f"connections open after {timeout}s"
                )
            while len(made) < count and self.connecting < window:
                made.append(self._startConnect(role))
            self.poll(0.05)
        failed = [c for c in made if c.state != IDLE]
        if failed:
            raise RuntimeError(f"{len(failed)} of {count} {role} connections failed")
        return made

    def _startConnect(self, role: str) -> Conn:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        conn = Conn(sock, role)
        self.conns.append(conn)
        self.connecting += 1
        self.open += 1
        err = sock.connect_ex(self.address)
        if err in (0, errno.EINPROGRESS):
            self.selector.register(sock, selectors.EVENT_WRITE, conn)
        else:
            self._connectFailed(conn)
        return conn

    def _connectFailed(self, conn: Conn) -> None:
        self.connectFailures += 1
        self.connecting -= 1
        self._closed(conn, time.monotonic(), registered=False)

    def _connected(self, conn: Conn) -> None:
        err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self.selector.unregister(conn.sock)
            self._connectFailed(conn)
            return
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.state = WARMING
        self.selector.modify(conn.sock, selectors.EVENT_READ, conn)
        self._send(conn, self._warmRequest)

    # Requests.

    def send(self, conns: list[Conn], request: bytes) -> float:
        """
        Send C{request} on each of C{conns} (all L{IDLE}).

        @return: when the last was sent.
        """
        for conn in conns:
            if conn.state != IDLE:
                continue
            conn.state = WAITING
            conn.sentAt = time.monotonic()
            self.waiting += 1
            self._send(conn, request)
        return time.monotonic()

    def _send(self, conn: Conn, data: bytes) -> None:
        # A request of a few dozen bytes always fits in an empty socket buffer.
        try:
            sent = conn.sock.send(data)
        except OSError:
            sent = -1
        if sent != len(data):
            raise RuntimeError(f"could not send {len(data)} bytes at once ({sent})")

    # The loop.

    def poll(self, timeout: float) -> None:
        """
        Wait up to C{timeout} for events and handle them.
        """
        events = self.selector.select(max(0.0, timeout))
        # Every event of a batch is dated when the batch was known, so that
        # the order in which they are handled does not reorder them.
        self.now = time.monotonic()
        for key, _mask in events:
            item = key.data
            if isinstance(item, Conn):
                if item.state == CONNECTING:
                    self._connected(item)
                else:
                    self._readable(item)
            elif isinstance(item, _Probe):
                self._probeDone(item)
            elif isinstance(item, _Exit):
                self.exitedAt = self.now
                self.selector.unregister(item.fd)
                os.close(item.fd)

    def run(self, until: Callable[[], bool], timeout: float) -> bool:
        """
        Handle events, sample the timeline and probe, until C{until()} or
        C{timeout}.

        @return: whether C{until()} became true.
        """
        deadline = time.monotonic() + timeout
        while True:
            now = self.now = time.monotonic()
            if self.sampleEvery is not None and now >= self._nextSample:
                self.timeline.append(
                    (now, self.waiting, self.open, self.answered, self.lost)
                )
                self._nextSample = now + self.sampleEvery
            if self.probeEvery is not None and now >= self._nextProbe:
                self._probe()
                self._nextProbe = now + self.probeEvery
            if until():
                return True
            if now >= deadline:
                return False
            wake = deadline
            if self.sampleEvery is not None:
                wake = min(wake, self._nextSample)
            if self.probeEvery is not None:
                wake = min(wake, self._nextProbe)
            self.poll(wake - now)

    def _readable(self, conn: Conn) -> None:
        try:
            chunk = conn.sock.recv(65536)
        except ConnectionResetError:
            conn.reset = True
            chunk = b""
        except BlockingIOError:
            return
        now = self.now
        if not chunk:
            self._closed(conn, now)
            return
        conn.buf += chunk
        while conn.buf:
            if conn.state not in (WARMING, WAITING):
                conn.unexpected += conn.buf
                conn.buf = b""
                return
            parsed = parseResponse(conn.buf)
            if parsed is None:
                return
            code, close, used = parsed
            conn.buf = conn.buf[used:]
            conn.code, conn.saidClose = code, close
            if conn.state == WARMING:
                conn.state = IDLE
                self.connecting -= 1
                continue
            conn.answeredAt = now
            self.waiting -= 1
            self.answered += 1
            if self.repeat is not None and not close:
                conn.state = IDLE
                self.send([conn], self.repeat)
            else:
                conn.state = ANSWERED

    def _closed(self, conn: Conn, now: float, registered: bool = True) -> None:
        if conn.state == CLOSED:
            return
        if conn.state == WAITING:
            self.waiting -= 1
            self.lost += 1
        elif conn.state == WARMING:
            self.connecting -= 1
        conn.state = CLOSED
        conn.closedAt = now
        self.open -= 1
        if registered:
            self.selector.unregister(conn.sock)
        conn.sock.close()

    # Probing for refusal, watching the server exit.

    def watchExit(self, pid: int) -> None:
        """
        Note in L{exitedAt} when process C{pid} exits (through a pidfd).
        """
        fd = os.pidfd_open(pid)
        self.selector.register(fd, selectors.EVENT_READ, _Exit(fd))

    def _probe(self) -> None:
        now = time.monotonic()
        for probe in [p for p in self._probes if now - p.startedAt > PROBE_PATIENCE]:
            self._dropProbe(probe)
        if self.refusedAt is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        self.probesSent += 1
        err = sock.connect_ex(self.address)
        if err == errno.EINPROGRESS:
            probe = _Probe(sock, now)
            self._probes.append(probe)
            self.selector.register(sock, selectors.EVENT_WRITE, probe)
            return
        if err == errno.ECONNREFUSED:
            self.refusedAt = time.monotonic()
        sock.close()

    def _dropProbe(self, probe: _Probe) -> None:
        self._probes.remove(probe)
        self.selector.unregister(probe.sock)
        probe.sock.close()

    def _probeDone(self, probe: _Probe) -> None:
        err = probe.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == errno.ECONNREFUSED and self.refusedAt is None:
            self.refusedAt = self.now
        self._dropProbe(probe)

    def close(self) -> None:
        """
        Close every socket still open.
        """
        for conn in self.conns:
            if conn.state != CLOSED:
                conn.state = CLOSED
                conn.sock.close()
        for probe in self._probes:
            probe.sock.close()
        self._probes = []
        self.selector.close()


def pythonLoad(
    port: int, path: str, connections: int, duration: float
) -> tuple[int, float]:
    """
    A small load generator, for when wrk is not installed: C{connections}
    keep-alive connections each sending C{GET path} as soon as the previous
    answer is in, for C{duration} seconds.

    @return: (responses received, seconds measured).
    """
    fleet = Fleet(port)
    try:
        conns = fleet.connect(connections, "load", window=connections, timeout=10)
        request = get(path)
        fleet.repeat = request
        start = time.monotonic()
        before = fleet.answered
        fleet.send(conns, request)
        fleet.run(lambda: False, duration)
        elapsed = time.monotonic() - start
        return fleet.answered - before, elapsed
    finally:
        fleet.close()
