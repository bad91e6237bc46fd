"""
The open internet, end to end, at sizes of a few seconds each (the full
sizes are C{bench.hostile}'s): a real C{twistd -n gracesvc}, real sockets on
loopback, real clients.

  - a burst of connects while the server does not accept (the listen
    backlog);
  - clients that send their request head a byte at a time, or nothing;
  - idle keep-alive connections;
  - more connections than C{--max-connections};
  - a process out of file descriptors;
  - clients that do not read a large response or a WebSocket's messages,
    and a WebSocket message of many tiny fragments.

Each time an honest client is served meanwhile, and the log holds no
traceback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import tempfile
import threading
import time

from gracesvc._pins.linux import kernelMaxBacklog
from gracesvc.testing import get
from gracesvc.testing.process import (
    MasterProcess,
    RawClient,
    Twistd,
    cpuSeconds,
    freePort,
    listenBacklogs,
    residentMemory,
    webSocketUpgrade,
)
from tests.support.clients import readUntilClosed
from tests.support.deploy import SocketActivated
from tests.support.endtoend import (
    EndToEndTestCase,
    serverState,
    total,
    waitFor,
    waitUntilRead,
)

EDGE_APP = "tests.apps.edgeapp:Root"


def connect(port: int, timeout: float = 5.0) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class OpenInternetTestCase(EndToEndTestCase):
    def assertServes(self, port: int, within: float = 2.0) -> None:
        """
        An honest client gets C{/healthz} answered, and soon.
        """
        startedAt = time.monotonic()
        with RawClient(port, timeout=within + 1) as client:
            client.send(get("/healthz"))
            self.assertEqual(client.readResponse().code, 200)
        self.assertLess(time.monotonic() - startedAt, within)

    def stop(self, twistd: Twistd) -> None:
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertCleanLog(twistd)


def connectBurst(port: int, count: int) -> tuple[list[socket.socket], float]:
    """
    Connect C{count} times as fast as possible.

    @return: the sockets, and the longest connect: a connect whose SYN the
        kernel dropped (its accept queue full) waits a second for the retry.
    """
    sockets = []
    slowest = 0.0
    for _ in range(count):
        startedAt = time.monotonic()
        sockets.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        slowest = max(slowest, time.monotonic() - startedAt)
    return sockets, slowest


class BacklogTests(OpenInternetTestCase):
    def test_aBurstWaitsInTheBacklog(self) -> None:
        """
        Every listener queues the kernel's largest backlog or 2,048: 1,500
        connects made while the server accepts none (it is stopped) all
        complete at once, none dropped to be retried a second later (with
        Twisted's 50, all but 51 would be); once it runs again, it serves.
        The log says the backlog the kernel gave.
        """
        expected = min(kernelMaxBacklog(), 2048)
        twistd = self.startTwistd()
        self.assertEqual(listenBacklogs(twistd.port), [expected])
        self.assertIn(f"backlog {expected}", twistd.log())
        twistd.signal(signal.SIGSTOP)
        try:
            sockets, slowest = connectBurst(twistd.port, 1500)
        finally:
            twistd.signal(signal.SIGCONT)
        try:
            self.assertLess(slowest, 0.5)
            sockets[-1].sendall(get("/healthz", "Connection: close"))
            data, _ = readUntilClosed(sockets[-1], 10)
            self.assertTrue(data.startswith(b"HTTP/1.1 200 "), data[:50])
        finally:
            for sock in sockets:
                sock.close()
        self.assertServes(twistd.port)
        self.stop(twistd)

    def test_givenAndClamped(self) -> None:
        """
        C{--backlog} is applied to every listener, a Unix one included; one
        above the kernel's largest is clamped, which the log says.
        """
        path = os.path.join(tempfile.mkdtemp(prefix="gracesvc-e2e-"), "g.sock")
        port = freePort()
        twistd = self.startTwistd(
            "--backlog",
            "100000",
            port=port,
            listen=[f"tcp:{port}:interface=127.0.0.1", f"unix:{path}"],
        )
        largest = kernelMaxBacklog()
        self.assertEqual(listenBacklogs(port), [largest])
        self.assertEqual(listenBacklogs(path), [largest])
        log = twistd.log()
        self.assertIn("--backlog 100000: the kernel queues at most", log)
        self.assertEqual(log.count(f"backlog {largest}"), 2)
        self.stop(twistd)
        twistd = self.startTwistd(
            "--backlog", "300", port=port, listen=[f"tcp:{port}:interface=127.0.0.1"]
        )
        self.assertEqual(listenBacklogs(port), [300])
        self.stop(twistd)

    def test_workersSockets(self) -> None:
        """
        The sockets the workers' master makes, one per worker slot here
        (C{--reuse-port}; a shared one is made alike), have the backlog too.
        """
        expected = min(kernelMaxBacklog(), 2048)
        master = MasterProcess("--reuse-port", workers=2)
        self.addCleanup(master.kill)
        master.waitUntilReady()
        self.assertEqual(listenBacklogs(master.port), [expected, expected])
        self.assertIn(f"backlog {expected}", master.masterLog())
        master.signal(signal.SIGTERM)
        master.wait(15)


class AdoptedBacklogTests(OpenInternetTestCase):
    def adopt(self, backlog: int, *args: str) -> int:
        """
        Start gracesvc as systemd starts C{deploy/gracesvc.service}, on a
        socket listening with C{backlog}.

        @return: the backlog the socket has once gracesvc serves.
        """
        listening = socket.socket()
        self.addCleanup(listening.close)
        listening.bind(("127.0.0.1", 0))
        listening.listen(backlog)
        port = listening.getsockname()[1]
        twistd = SocketActivated(listening, "gracesvc.socket", *args)
        self.addCleanup(twistd.kill)
        waitFor(
            lambda: self.serves(port) or twistd.exited,
            15,
            lambda: f"not serving:\n{twistd.log()}",
        )
        [got] = listenBacklogs(port)
        twistd.stop()
        self.assertCleanLog(twistd)
        return got

    def serves(self, port: int) -> bool:
        try:
            with RawClient(port, timeout=1) as client:
                client.send(get("/healthz"))
                return client.readResponse().code == 200
        except (OSError, ConnectionError):
            return False

    def test_aSmallBacklogIsRaised(self) -> None:
        """
        A socket systemd made with a small C{Backlog=} gets the default; a
        large one gets C{--backlog} when it is given.
        """
        default = min(kernelMaxBacklog(), 2048)
        self.assertEqual(self.adopt(100), default)
        # (That a larger one is kept: tests/unit/process/test_backlog.py.)
        self.assertEqual(self.adopt(kernelMaxBacklog(), "--backlog", "300"), 300)


class SlowClient(threading.Thread):
    """
    Sends C{head} a byte every C{interval}, until the server closes the
    connection; records what it got and when.
    """

    def __init__(self, port: int, head: bytes, interval: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port)
        self.openedAt = time.monotonic()
        self.head = head
        self.interval = interval
        self.received = b""
        self.closedAt: float | None = None
        self.start()

    def run(self) -> None:
        self.sock.settimeout(self.interval)
        for i in range(len(self.head)):
            try:
                self.sock.send(self.head[i : i + 1])
                chunk = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                break
            self.received += chunk
            if not chunk:
                break
        self.closedAt = time.monotonic()
        self.sock.close()


class HeaderTimeoutTests(OpenInternetTestCase):
    def test_slowHeadsAnswered408InTime(self) -> None:
        """
        Twenty clients sending their head a byte every 0.2 s get a 408 and
        a close at the header timeout (1 s here), not one byte later; ten
        that send nothing are closed without a word; an honest client is
        served meanwhile; the log says it in a few lines, not thirty.
        """
        twistd = self.startTwistd("--header-timeout", "1")
        head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 100
        slow = [SlowClient(twistd.port, head) for _ in range(20)]
        silent = [connect(twistd.port) for _ in range(10)]
        self.assertServes(twistd.port)
        for client in slow:
            client.join(10)
            assert client.closedAt is not None
            self.assertTrue(
                client.received.startswith(b"HTTP/1.1 408 Request Timeout\r\n"),
                client.received,
            )
            self.assertGreater(client.closedAt - client.openedAt, 0.9)
            self.assertLess(client.closedAt - client.openedAt, 2.5)
        for sock in silent:
            self.assertEqual(readUntilClosed(sock, 5), (b"", "closed"))
            sock.close()
        scraped = serverState(twistd.port).samples
        self.assertEqual(
            total(scraped, "gracesvc_client_timeouts_total", kind="header"), 20
        )
        self.assertEqual(
            total(scraped, "gracesvc_client_timeouts_total", kind="silent"), 10
        )
        lines = [line for line in twistd.log().splitlines() if "408" in line]
        self.assertLessEqual(len(lines), 4, lines)
        self.stop(twistd)


class KeepAliveTimeoutTests(OpenInternetTestCase):
    def test_idleConnectionClosedCleanly(self) -> None:
        """
        A keep-alive connection idle for the keep-alive timeout is closed
        cleanly (a FIN, no reset), and one in use is not.
        """
        twistd = self.startTwistd("--keep-alive-timeout", "1")
        with RawClient(twistd.port) as idle, RawClient(twistd.port) as busy:
            idle.send(get("/healthz"))
            idle.readResponse()
            for _ in range(5):
                busy.send(get("/healthz"))
                self.assertEqual(busy.readResponse().code, 200)
                time.sleep(0.3)
            self.assertTrue(idle.waitForClose())
        self.stop(twistd)


class ConnectionLimitTests(OpenInternetTestCase):
    def test_overTheLimitCurlReads503(self) -> None:
        """
        With three connections held (a WebSocket among them), curl's is
        answered 503 with C{Retry-After}, readably; once one closes, curl
        is served.
        """
        twistd = self.startTwistd("--max-connections", "3")
        held = [connect(twistd.port), connect(twistd.port)]
        for sock in held:
            # A byte of a request: the server has accepted it once it has
            # read it (a scrape of /metrics would be one connection more).
            sock.sendall(b"G")
        ws = connect(twistd.port)
        ws.sendall(webSocketUpgrade("/ws"))
        self.assertTrue(ws.recv(4096).startswith(b"HTTP/1.1 101 "))
        waitUntilRead(*held)
        curl = subprocess.run(
            [
                "curl",
                "-s",
                "-i",
                "--max-time",
                "5",
                f"http://127.0.0.1:{twistd.port}/healthz",
            ],
            capture_output=True,
            timeout=10,
        )
        self.assertEqual(curl.returncode, 0, curl.stderr)
        self.assertTrue(curl.stdout.startswith(b"HTTP/1.1 503 "), curl.stdout)
        self.assertIn(b"Retry-After: 1\r\n", curl.stdout)
        held.pop().close()
        waitFor(
            lambda: (
                subprocess.run(
                    [
                        "curl",
                        "-s",
                        "-o",
                        "/dev/null",
                        "-w",
                        "%{http_code}",
                        f"http://127.0.0.1:{twistd.port}/healthz",
                    ],
                    capture_output=True,
                    timeout=10,
                ).stdout
                == b"200"
            ),
            10,
            lambda: "served once a connection closed",
        )
        for sock in [*held, ws]:
            sock.close()
        self.stop(twistd)

    def test_aBurstPastTheLimitReadsItsAnswers(self) -> None:
        """
        Forty connections at once past a limit of two: at most sixteen are
        answered at a time, the others wait in the kernel's queue for their
        turn (the listener pauses), and each reads its 503: none is reset.
        """
        twistd = self.startTwistd("--max-connections", "2")
        held = [connect(twistd.port), connect(twistd.port)]
        for sock in held:
            sock.sendall(b"G")
        waitUntilRead(*held)
        burst = [connect(twistd.port) for _ in range(40)]
        for sock in burst:
            sock.sendall(get("/healthz"))
        for sock in burst:
            data, end = readUntilClosed(sock, 10)
            self.assertTrue(data.startswith(b"HTTP/1.1 503 "), (data[:40], end))
            sock.close()
        for sock in held:
            sock.close()
        self.stop(twistd)


class DescriptorTests(OpenInternetTestCase):
    def holdConnections(self, port: int, count: int) -> list[socket.socket]:
        held = []
        for _ in range(count):
            try:
                held.append(socket.create_connection(("127.0.0.1", port), timeout=2))
            except OSError:
                pass
        return held

    def test_outOfDescriptors(self) -> None:
        """
        With no connection limit and 128 descriptors, 300 connections held:
        the server turns the excess away without spinning (under 10 % of a
        core) and in a few log lines, not three a connection; once they
        leave, it serves within a second.
        """
        twistd = Twistd("--max-connections", "0", openFiles=128)
        self.addCleanup(twistd.kill)
        twistd.waitUntilServing()
        held = self.holdConnections(twistd.port, 300)
        try:
            time.sleep(0.3)
            startedAt, cpuBefore = time.monotonic(), cpuSeconds(twistd.pid)
            time.sleep(1)
            cpu = (cpuSeconds(twistd.pid) - cpuBefore) / (time.monotonic() - startedAt)
            self.assertLess(cpu, 0.1)
        finally:
            for sock in held:
                sock.close()
        startedAt = time.monotonic()
        waitFor(lambda: self.serves(twistd.port), 5, lambda: "serving again")
        self.assertLess(time.monotonic() - startedAt, 1.5)
        log = twistd.log()
        turnedAway = [
            line
            for line in log.splitlines()
            if "Cannot accept" in line or "connections turned away" in line
        ]
        self.assertGreaterEqual(len(turnedAway), 1)
        self.assertLessEqual(len(turnedAway), 6, turnedAway)
        self.assertNotIn("EMFILE recovery", log)
        self.stop(twistd)

    def serves(self, port: int) -> bool:
        try:
            with RawClient(port, timeout=1) as client:
                client.send(get("/healthz"))
                return client.readResponse().code == 200
        except OSError:
            return False

    def test_theDefaultLimitComesFirst(self) -> None:
        """
        With the default connection limit (the descriptors less a fifth),
        the same crowd is told 503 before the descriptors run out.
        """
        twistd = Twistd(openFiles=256)
        self.addCleanup(twistd.kill)
        twistd.waitUntilServing()
        self.assertIn("serving at most 192 connections", twistd.log())
        held = self.holdConnections(twistd.port, 300)
        try:
            waitFor(
                lambda: "Connection limit (192) reached" in twistd.log(),
                5,
                lambda: "the limit reached",
            )
        finally:
            for sock in held:
                sock.close()
        waitFor(lambda: self.serves(twistd.port), 5, lambda: "serving again")
        self.assertNotIn("Cannot accept", twistd.log())
        self.stop(twistd)


class SlowReaderTests(OpenInternetTestCase):
    def download(self, port: int, path: str) -> socket.socket:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", port))
        sock.sendall(get(path))
        return sock

    def test_aClientThatStopsReadingIsAbortedOneThatReadsSlowlyIsNot(self) -> None:
        """
        Two clients of a large download: one reads 4 KiB every 0.3 s, less
        than the transport's buffer in a write timeout (1 s here) but
        something; the other reads nothing.  The second is aborted once
        the buffers are full and the timeout has passed; the first is still
        being served, until it stops reading too.
        """
        twistd = self.startTwistd("--app", EDGE_APP, "--write-timeout", "1")
        reader = self.download(twistd.port, "/big/256")
        stalled = self.download(twistd.port, "/big/256")
        deadline = time.monotonic() + 2.5
        readerGot = 0
        reader.settimeout(2)
        while time.monotonic() < deadline:
            readerGot += len(reader.recv(4096))
            time.sleep(0.3)
        waitFor(
            lambda: (
                total(
                    serverState(twistd.port).samples,
                    "gracesvc_client_timeouts_total",
                    kind="write",
                )
                >= 1
            ),
            10,
            lambda: "the stalled download aborted",
        )
        self.assertGreater(readerGot, 16000)
        _, readerEnd = readUntilClosed(reader, 0.5)
        self.assertEqual(readerEnd, "open")
        scraped = serverState(twistd.port).samples
        self.assertEqual(
            total(scraped, "gracesvc_client_timeouts_total", kind="write"), 1
        )
        reader.close()
        stalled.close()
        self.stop(twistd)


class WebSocketBufferTests(OpenInternetTestCase):
    def test_aClientThatDoesNotReadIsAbortedAndMemoryBounded(self) -> None:
        """
        A WebSocket client that reads nothing while the application pushes
        100 MiB at it is aborted once 1 MiB (C{--ws-write-limit}) waits for
        it; the server's memory grows by a few MiB, not a hundred.
        """
        twistd = self.startTwistd("--app", EDGE_APP, "--ws-write-limit", str(1 << 20))
        before = residentMemory(twistd.pid)
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        sock.connect(("127.0.0.1", twistd.port))
        sock.sendall(webSocketUpgrade("/push/100"))
        waitFor(
            lambda: (
                total(
                    serverState(twistd.port).samples,
                    "gracesvc_client_timeouts_total",
                    kind="buffer",
                )
                == 1
            ),
            15,
            lambda: "the WebSocket aborted",
        )
        grown = residentMemory(twistd.pid) - before
        self.assertLess(grown, 20 << 20)
        self.assertServes(twistd.port)
        self.stop(twistd)

    def test_manyTinyFragmentsMeetTheMessageLimit(self) -> None:
        """
        A message of 40,000 two-byte fragments (80 KB) is closed with 1009
        under a 64 KiB limit, as one frame of that size would be.
        """
        import websockets
        from websockets.asyncio.client import connect as wsConnect

        twistd = self.startTwistd("--ws-max-message-size", "65536")

        async def send() -> int | None:
            async with wsConnect(f"ws://127.0.0.1:{twistd.port}/ws") as ws:
                try:
                    await ws.send(["ab"] * 40000)
                    await ws.recv()
                except websockets.ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd is not None else None
            return None

        self.assertEqual(asyncio.run(asyncio.wait_for(send(), 30)), 1009)
        self.assertServes(twistd.port)
        self.stop(twistd)
