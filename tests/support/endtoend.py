"""
What the end-to-end tests share: a test case that starts C{twistd -n
gracesvc} and reads its log, twistd run to completion, and waits on what a
running server reports.

Every wait here polls a state (a count in the server's C{/metrics}, its
sockets' queues in the kernel, a condition the test gives) every 10 to
20 ms, and fails after a bound, saying what it waited for.
"""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from twisted.trial.unittest import SynchronousTestCase

from gracesvc.testing import get, samples
from gracesvc.testing.process import TWISTD, Process, RawClient, Twistd

#: What a server's log must never hold: a traceback, a failure Twisted did
#: not see handled, or an event logged as an error or worse.
UNCLEAN = ("Traceback", "Unhandled", "#critical]", "#error]")

#: Prometheus samples as L{gracesvc.testing.samples} parses them.
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class EndToEndTestCase(SynchronousTestCase):
    """
    Tests of one real C{twistd -n gracesvc} process.

    @ivar twistd: the process L{startTwistd} started last.
    """

    def startTwistd(self, *args: str, **kwargs: object) -> Twistd:
        """
        Start C{twistd -n gracesvc} with C{args} (and L{Twistd}'s keyword
        arguments), killed by its pid when the test ends, and wait until it
        serves.
        """
        twistd = Twistd(*args, **kwargs)  # type: ignore[arg-type]
        self.addCleanup(twistd.kill)
        self.twistd = twistd
        return twistd.waitUntilServing()

    def assertCleanLog(self, process: Process) -> None:
        """
        The log of C{process} holds none of L{UNCLEAN}.
        """
        log = process.log()
        for text in UNCLEAN:
            self.assertNotIn(text, log)


def runTwistd(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd} with C{argv} to completion, in a temporary directory of
    its own, its output captured.
    """
    directory = tempfile.mkdtemp(prefix="gracesvc-e2e-")
    return subprocess.run(
        [TWISTD, *argv],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def waitFor(
    condition: Callable[[], bool], timeout: float, what: Callable[[], str]
) -> None:
    """
    Poll C{condition} every 20 ms until true.

    @raise AssertionError: with C{what()} if it is still false after
        C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what())
        time.sleep(0.02)


@dataclass(frozen=True)
class ServerState:
    """
    What a server's C{/metrics} says, less the scrape's own request and
    connection where the scrape counts itself.

    @ivar samples: every sample scraped, as they came.
    @ivar inFlight: requests received and not yet answered (summed over
        the workers of a C{--workers} tree).
    @ivar connections: open connections by state.
    @ivar draining: whether a drain has begun.
    """

    samples: Samples = field(repr=False)
    inFlight: float
    connections: dict[str, float]
    draining: bool

    @property
    def openConnections(self) -> float:
        return sum(self.connections.values())


def serverState(
    port: int, path: str = "/metrics", countsItself: bool = True
) -> ServerState:
    """
    Scrape C{path} on C{port} once.

    @param countsItself: whether the scrape is served by the site it
        measures (C{/metrics} on the listener it reports on): it is then a
        request in flight and a busy connection itself, which are left out.
        A C{--metrics-listen} endpoint counts nothing of its own.
    """
    with RawClient(port) as client:
        client.send(get(path, "Connection: close"))
        scraped = samples(client.readResponse().body)
    own = 1 if countsItself else 0
    connections: dict[str, float] = {}
    for (name, labels), value in scraped.items():
        if name == "gracesvc_open_connections":
            state = dict(labels)["state"]
            connections[state] = connections.get(state, 0) + value
    if own:
        connections["busy"] = connections.get("busy", 0) - own
    return ServerState(
        samples=scraped,
        inFlight=total(scraped, "gracesvc_requests_in_flight") - own,
        connections=connections,
        draining=total(scraped, "gracesvc_draining") > 0,
    )


def total(scraped: Samples, name: str, **labels: str) -> float:
    """
    @return: the sum of the samples named C{name} whose labels include
        C{labels}.
    """
    wanted = set(labels.items())
    return sum(
        value
        for (sample, sampleLabels), value in scraped.items()
        if sample == name and wanted <= set(sampleLabels)
    )


def waitForServer(
    port: int,
    condition: Callable[[ServerState], bool],
    what: str,
    timeout: float = 10.0,
    path: str = "/metrics",
    countsItself: bool = True,
) -> ServerState:
    """
    Scrape every 10 ms until C{condition} holds of the server's state.

    @param what: what is awaited, for the failure's message.
    @return: the state that met it.
    @raise AssertionError: if none did within C{timeout}.
    """
    deadline = time.monotonic() + timeout
    while True:
        state = serverState(port, path, countsItself)
        if condition(state):
            return state
        if time.monotonic() > deadline:
            raise AssertionError(
                f"never {what} within {timeout}s: {state.inFlight:g} in flight, "
                f"connections {state.connections}, draining {state.draining}"
            )
        time.sleep(0.01)


def waitForInFlight(
    port: int,
    requests: int,
    timeout: float = 10.0,
    path: str = "/metrics",
    countsItself: bool = True,
) -> ServerState:
    """
    Wait until the server counts at least C{requests} requests in flight:
    they arrived, and their handlers run.
    """
    return waitForServer(
        port,
        lambda state: state.inFlight >= requests,
        f"{requests} requests in flight",
        timeout,
        path,
        countsItself,
    )


def waitForDraining(
    port: int, timeout: float = 10.0, path: str = "/metrics", countsItself: bool = True
) -> ServerState:
    """
    Wait until the server says its drain has begun: the signal was handled.
    (Its listener must still answer: during a drain delay, or on a
    C{--metrics-listen} endpoint.)
    """
    return waitForServer(
        port, lambda state: state.draining, "draining", timeout, path, countsItself
    )


def _procAddress(address: tuple[str, int]) -> str:
    host, port = address[:2]
    return f"{socket.inet_aton(host)[::-1].hex().upper()}:{port:04X}"


def _tcpQueues() -> dict[tuple[str, str], tuple[int, int]]:
    """
    @return: the send and receive queues (bytes) of every IPv4 TCP socket
        of this machine, by local and remote address as C{/proc/net/tcp}
        writes them.
    """
    queues = {}
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            sendQueue, receiveQueue = fields[4].split(":")
            queues[fields[1], fields[2]] = (int(sendQueue, 16), int(receiveQueue, 16))
    return queues


def waitUntilRead(*clients: socket.socket, timeout: float = 10.0) -> None:
    """
    Wait until the server has read everything sent so far on each of
    C{clients} (loopback IPv4 connections): none of it waits unacknowledged
    in the client's socket, or unread in the server's.

    A request whose bytes the server has read has reached its handler:
    Twisted dispatches a request in the turn that reads its end.  This
    works where C{/metrics} cannot tell: a reactor blocked by a handler, or
    a worker of a C{--workers} tree.  A connection already closed counts
    as read.
    """
    ends = []
    for client in clients:
        try:
            ends.append(
                (_procAddress(client.getsockname()), _procAddress(client.getpeername()))
            )
        except OSError:
            continue
    deadline = time.monotonic() + timeout
    while True:
        queues = _tcpQueues()
        unread = [
            (client, server)
            for client, server in ends
            if queues.get((client, server), (0, 0))[0]
            or queues.get((server, client), (0, 0))[1]
        ]
        if not unread:
            return
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{len(unread)} of {len(ends)} connections still unread after "
                f"{timeout}s"
            )
        time.sleep(0.01)
