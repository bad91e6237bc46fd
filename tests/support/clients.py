"""
Clients the end-to-end tests share beyond those of
L{gracesvc.testing.process}: steady load, and what came of each of its
requests.
"""

from __future__ import annotations

import collections
import socket
import threading
import time
from collections.abc import Sequence

from gracesvc.testing import get
from gracesvc.testing.process import RawClient


class Outcome:
    """
    One request a load client made: when it was sent, when it ended, and
    what came of it (C{"ok"} for a 200).
    """

    def __init__(self, sentAt: float, doneAt: float, result: str) -> None:
        self.sentAt = sentAt
        self.doneAt = doneAt
        self.result = result

    def __repr__(self) -> str:
        return f"<Outcome {self.result} at {self.sentAt:.3f}>"


class Load:
    """
    Steady load: a few client threads sending C{GET /ping} back to back on
    keep-alive connections, opening a new connection when the server closes
    one or after a few requests.

    Bounded: each thread stops at L{stop}, after C{maxSeconds}, or after
    C{maxRequests}, whichever comes first.
    """

    def __init__(
        self,
        port: int,
        clients: int = 4,
        requestsPerConnection: int = 5,
        maxSeconds: float = 60.0,
        maxRequests: int = 20000,
        tls: bool = False,
    ) -> None:
        """
        @param tls: whether the clients speak HTTPS (see L{RawClient}).
        """
        self.port = port
        self.tls = tls
        self.requestsPerConnection = requestsPerConnection
        self.deadline = time.monotonic() + maxSeconds
        self.maxRequests = maxRequests
        self.outcomes: list[Outcome] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, daemon=True) for _ in range(clients)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> list[Outcome]:
        """
        Stop the clients and wait for them.

        @return: every outcome, in the order the requests ended.
        """
        self._stop.set()
        for thread in self._threads:
            thread.join(20)
        with self._lock:
            return list(self.outcomes)

    def waitForAnswers(self, count: int, timeout: float = 15.0) -> None:
        """
        Wait until C{count} more requests have been answered 200 from now:
        the load is going through whatever serves it at the moment.

        @raise AssertionError: if they were not within C{timeout}.
        """
        target = self.answered() + count
        deadline = time.monotonic() + timeout
        while self.answered() < target:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"only {count - target + self.answered()} of {count} requests "
                    f"answered within {timeout}s: {failures(self.outcomes)}"
                )
            time.sleep(0.01)

    def answered(self) -> int:
        """
        @return: how many requests have been answered 200 so far.
        """
        with self._lock:
            return sum(1 for o in self.outcomes if o.result == "ok")

    def _running(self, made: int) -> bool:
        return (
            not self._stop.is_set()
            and made < self.maxRequests
            and time.monotonic() < self.deadline
        )

    def _record(self, sentAt: float, result: str) -> None:
        with self._lock:
            self.outcomes.append(Outcome(sentAt, time.monotonic(), result))

    def _client(self) -> None:
        made = 0
        while self._running(made):
            sentAt = time.monotonic()
            try:
                client = RawClient(self.port, timeout=10, tls=self.tls)
            except ConnectionRefusedError:
                self._record(sentAt, "connection refused")
                made += 1
                time.sleep(0.01)
                continue
            except OSError as e:
                self._record(sentAt, f"connect: {e!r}")
                made += 1
                time.sleep(0.01)
                continue
            with client:
                for _ in range(self.requestsPerConnection):
                    if not self._running(made):
                        break
                    made += 1
                    result, closing = self._request(client)
                    self._record(sentAt, result)
                    if result != "ok":
                        time.sleep(0.01)
                        break
                    if closing:
                        break
                    sentAt = time.monotonic()

    def _request(self, client: RawClient) -> tuple[str, bool]:
        """
        @return: what came of one C{GET /ping}, and whether the server is
            closing the connection after it.
        """
        try:
            client.send(get("/ping"))
            response = client.readResponse()
        except TimeoutError:
            return "timeout", True
        except OSError as e:
            return f"{type(e).__name__}: {e}", True
        if response.code != 200:
            return f"HTTP {response.code}", True
        return "ok", response.headers.get(b"connection") == b"close"


def failures(outcomes: Sequence[Outcome]) -> collections.Counter[str]:
    """
    @return: how many requests failed, by what the client saw.
    """
    return collections.Counter(o.result for o in outcomes if o.result != "ok")


def readUntilClosed(sock: socket.socket, timeout: float = 3.0) -> tuple[bytes, str]:
    """
    Read until the server closes the connection, or C{timeout}.

    @return: what was received, and C{"closed"}, C{"reset"} or C{"open"}.
    """
    data = b""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return data, "open"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return data, "reset"
        except TimeoutError:
            return data, "open"
        if not chunk:
            return data, "closed"
        data += chunk
