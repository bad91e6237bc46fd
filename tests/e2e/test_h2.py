"""
End to end, HTTP/2: a real C{twistd -n gracesvc} on an C{ssl:} listener
(ALPN C{h2}) and a cleartext one with C{--h2c}, real signals, real
clients: C{h2load} and C{nghttp} (Debian's C{nghttp2-client}), C{curl},
Node's built-in C{http2} module, and gracesvc's frame-level client for
the races.  A test whose tool is missing is skipped, saying how to install
it.  Time bounds are generous; C{bench/h2.py} measures the tight figures.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from typing import Any

import twisted.test
from hyperframe.frame import GoAwayFrame
from twisted.trial.unittest import SkipTest

from bench._h2attacks import ATTACKS, measure
from gracesvc.testing import get
from gracesvc.testing.h2 import NODE_CLIENT, H2LibraryClient, H2SocketClient
from gracesvc.testing.process import (
    InFlight,
    MasterProcess,
    RawWebSocket,
    Twistd,
    alive,
    freePort,
)
from tests.support.endtoend import EndToEndTestCase, waitForInFlight, waitForServer

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")
MAX_STREAM_ID = 2**31 - 1
REFUSED_STREAM = 7


def need(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise SkipTest(f"{tool} not found: apt-get install {package}")
    return path


class Process:
    """
    A client process, its output gathered, killed by its pid at cleanup.
    """

    def __init__(self, test: EndToEndTestCase, argv: list[str]) -> None:
        self.output = tempfile.TemporaryFile()
        self.startedAt = time.monotonic()
        self.process = subprocess.Popen(
            argv, stdout=self.output, stderr=subprocess.STDOUT
        )
        test.addCleanup(self.kill)

    def wait(self, timeout: float = 15.0) -> str:
        self.process.wait(timeout)
        self.output.seek(0)
        return self.output.read().decode("utf-8", "replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.output.close()


class H2TestCase(EndToEndTestCase):
    def startH2(self, *args: str) -> tuple[Twistd, int]:
        """
        Start twistd with an C{ssl:} listener and a cleartext one with
        C{--h2c} (the one C{waitUntilServing} asks).

        @return: the process and the TLS port; C{twistd.port} is the
            cleartext one.
        """
        tlsPort, plainPort = freePort(), freePort()
        twistd = self.startTwistd(
            "--h2c",
            *args,
            port=plainPort,
            listen=[
                f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={PEM}",
                f"tcp:{plainPort}:interface=127.0.0.1",
            ],
        )
        return twistd, tlsPort

    def frameClient(self, port: int, tls: bool = True, **kw: bool) -> H2SocketClient:
        c = H2SocketClient(port, tls=tls, **kw)
        self.addCleanup(c.close)
        return c


class H2LoadTests(H2TestCase):
    def inFlightAtSIGTERM(self, url: str) -> None:
        """
        h2load -n 64 -c 8 -m 8 on /ping answering in 1 s, SIGTERM once all
        64 are in flight: all 64 succeed, nothing is cut.
        """
        h2load = need("h2load", "nghttp2-client")
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        port = tlsPort if url.startswith("https") else twistd.port
        load = Process(self, [h2load, "-n", "64", "-c", "8", "-m", "8", url % port])
        waitForInFlight(twistd.port, 64)
        twistd.signal(signal.SIGTERM)
        output = load.wait()
        self.assertIn("64 succeeded, 0 failed, 0 errored", output, output)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        log = twistd.log()
        self.assertIn("64 requests completed during the drain, 0 cut", log)
        self.assertCleanLog(twistd)

    def test_tls(self) -> None:
        self.inFlightAtSIGTERM("https://127.0.0.1:%d/ping")

    def test_h2c(self) -> None:
        self.inFlightAtSIGTERM("http://127.0.0.1:%d/ping")


class NghttpTests(H2TestCase):
    def test_quietDrain(self) -> None:
        """
        nghttp -nv sees its response, then a PING, and nothing but the
        GOAWAY (with its stream's id) after it: nghttp, done with its one
        request, may close before reading it.
        """
        nghttp = need("nghttp", "nghttp2-client")
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        client = Process(self, [nghttp, "-nv", f"https://127.0.0.1:{tlsPort}/ping"])
        waitForInFlight(twistd.port, 1)
        twistd.signal(signal.SIGTERM)
        output = client.wait()
        frames = re.findall(
            r"recv (\w+) frame <length=\d+, flags=\S+, stream_id=(\d+)>", output
        )
        kinds = [kind for kind, _ in frames if kind != "SETTINGS"]
        ping = kinds.index("PING")
        self.assertEqual(kinds[:ping], ["HEADERS", "DATA", "DATA"], output)
        self.assertIn(kinds[ping + 1 :], ([], ["GOAWAY"]), output)
        if kinds[ping + 1 :]:
            self.assertIn("last_stream_id=13", output)
        self.assertIn(":status: 200", output)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)


class CurlTests(H2TestCase):
    def test_parallelStreamsAndHTTP11(self) -> None:
        """
        curl --http2 with 8 parallel streams and curl --http1.1 on the same
        TLS listener, plus prior knowledge on the cleartext one: all 200.
        """
        curl = need("curl", "curl")
        version = subprocess.run([curl, "-V"], capture_output=True, text=True)
        if "HTTP2" not in version.stdout:
            raise SkipTest("this curl has no HTTP/2")
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        url = f"https://127.0.0.1:{tlsPort}/ping"
        fmt = ["-w", "%{http_version} %{http_code}\n", "-o", "/dev/null"]
        h2 = Process(
            self,
            [curl, "-sk", "--no-progress-meter", "--http2", "-Z"]
            + ["--parallel-immediate", "-w", "%{http_version} %{http_code}\n"]
            + [url, "-o", "/dev/null"] * 8,
        )
        h1 = Process(self, [curl, "-sk", "--http1.1", *fmt, url])
        h2c = Process(
            self,
            [curl, "-s", "--http2-prior-knowledge", *fmt]
            + [f"http://127.0.0.1:{twistd.port}/ping"],
        )
        waitForInFlight(twistd.port, 10)
        twistd.signal(signal.SIGTERM)
        self.assertEqual(h2.wait().count("2 200"), 8)
        self.assertEqual(h1.wait(), "1.1 200\n")
        self.assertEqual(h2c.wait(), "2 200\n")
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("10 requests completed during the drain, 0 cut", twistd.log())


class NodeTests(H2TestCase):
    def node(self, url: str, n: int, mode: str = "") -> Process:
        node = need("node", "nodejs")
        return Process(self, [node, "-e", NODE_CLIENT, url, str(n), mode])

    def test_sessionCloseWithStreamsInFlight(self) -> None:
        """
        Node's session.close() sends a GOAWAY with 2 requests in flight:
        both are answered (Twisted alone aborted both).
        """
        twistd, tlsPort = self.startH2("--ping-delay", "0.5")
        output = self.node(f"https://127.0.0.1:{tlsPort}", 2, "close").wait()
        self.assertEqual(output.count("status 200"), 2, output)
        self.assertNotIn("error", output)

    def test_drain(self) -> None:
        """
        Node with 2 requests in flight at SIGTERM: both answered; Node
        closes on the GOAWAY, and the process exits soon after.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        client = self.node(f"https://127.0.0.1:{tlsPort}", 2)
        waitForInFlight(twistd.port, 2)
        twistd.signal(signal.SIGTERM)
        output = client.wait()
        self.assertEqual(output.count("status 200"), 2, output)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)


class FrameTests(H2TestCase):
    def test_racingStreams(self) -> None:
        """
        A stream sent after the signal, while another is answered, is
        parked: never answered, never reset; the GOAWAY, after the first
        stream's answer and the PING (never ACKed here: by 1 s), has the
        first stream's id, so the client knows the other was not processed.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        c = self.frameClient(tlsPort, ackPings=False)
        first = c.request("/ping")
        waitForInFlight(twistd.port, 1)
        sentAt = twistd.signal(signal.SIGTERM)
        # (The listeners are closed: nothing to ask the server.  The first
        # stream is answered 1 s after it was sent.)
        time.sleep(max(0.0, sentAt + 0.2 - time.monotonic()))
        racing = c.request("/ping")
        self.assertTrue(c.readUntil(lambda: c.frames.streams[first].ended, 3))
        answeredAt = c.frames.received[-1][0]
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 1, 3))
        self.assertEqual(c.frames.goAways, [(first, 0)])
        goAwayAt = c.frames.firstAt(GoAwayFrame)
        assert goAwayAt is not None
        self.assertLess(goAwayAt - answeredAt, 1.3)
        c.readUntil(lambda: c.closedAt is not None)
        self.assertEqual(c.frames.streams[first].status, 200)
        self.assertEqual(
            (c.frames.streams[racing].status, c.frames.streams[racing].reset),
            (None, None),
        )
        self.assertIsInstance(c.frames.received[-1][1], GoAwayFrame)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("1 requests completed during the drain, 0 cut", twistd.log())

    def test_idleConnectionsExitAtOnce(self) -> None:
        """
        20 idle HTTP/2 connections (clients that close when the server
        does): the process exits well within a second of the signal.
        """
        twistd, tlsPort = self.startH2()
        clients = [self.frameClient(tlsPort) for _ in range(20)]
        for c in clients:
            c.request("/healthz")
            self.assertTrue(c.readUntil(lambda c=c: c.frames.streams[1].ended))
        sentAt = twistd.signal(signal.SIGTERM)
        stop = threading.Event()

        def readAll() -> None:
            while not stop.is_set():
                socks = [c.sock for c in clients if c.closedAt is None]
                if not socks:
                    return
                select.select(socks, [], [], 0.05)
                for c in clients:
                    if c.closedAt is None and not c.read(0):
                        c.close()

        reader = threading.Thread(target=readAll, daemon=True)
        reader.start()
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)
        stop.set()
        reader.join(5)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 0.8)

    def test_clientThatNeverClosesIsLingeredOut(self) -> None:
        """
        An idle client that answers the PING but never closes: TCP is
        closed after the short linger (250 ms), not at the cap.
        """
        twistd, tlsPort = self.startH2("--shutdown-timeout", "10")
        c = self.frameClient(tlsPort)
        c.request("/healthz")
        self.assertTrue(c.readUntil(lambda: c.frames.streams[1].ended))
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 1, 3))
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)
        assert twistd.exitedAt is not None
        self.assertGreater(twistd.exitedAt - sentAt, 0.2)
        self.assertLess(twistd.exitedAt - sentAt, 1.0)

    def test_cutAndCap(self) -> None:
        """
        A stream still unanswered at the cut gets a 503 with Retry-After;
        the process exits at the cap, the stream counted as cut.
        """
        twistd, tlsPort = self.startH2(
            "--ping-delay", "30", "--shutdown-timeout", "1.5"
        )
        c = self.frameClient(tlsPort)
        sid = c.request("/ping")
        waitForInFlight(twistd.port, 1)
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertTrue(c.readUntil(lambda: c.frames.streams[sid].ended, 5))
        self.assertEqual(c.frames.streams[sid].status, 503)
        self.assertEqual(c.frames.streams[sid].headers[b"retry-after"], b"2")
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 1.5 + 0.5)
        self.assertIn("0 requests completed during the drain, 1 cut", twistd.log())

    def test_secondSignal(self) -> None:
        """
        A second signal: the GOAWAY with the true last stream id, then the
        connection is closed and the process exits at once.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "30")
        c = self.frameClient(tlsPort, ackPings=False)
        c.request("/ping")
        c.request("/ping")
        waitForInFlight(twistd.port, 2)
        sentAt = twistd.signal(signal.SIGTERM)
        time.sleep(max(0.0, sentAt + 0.2 - time.monotonic()))
        secondAt = twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: c.closedAt is not None, 3)
        self.assertEqual(c.frames.goAways, [(3, 0)])
        twistd.wait(5)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - secondAt, 0.5)
        self.assertIn("cutting 2 requests in flight", twistd.log())


class HostileTests(H2TestCase):
    def test_misbehavingClientsBreakNothing(self) -> None:
        """
        A protocol error, bytes that are neither the preface nor HTTP/1.1 on
        h2c, a flood of 300 streams at once and a client GOAWAY with an
        error: each is closed.  A client that starts a 16 MiB frame of an
        unknown type and stalls does not hold the drain.  A good stream in
        flight is still answered through the drain, and the log has no
        traceback.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        good = self.frameClient(tlsPort)
        sid = good.request("/ping")
        broken = self.frameClient(tlsPort)
        broken.send(b"\x00\x00\x08\x06\x00\x00\x00\x00\x01" + b"x" * 8)
        flood = self.frameClient(tlsPort)
        flood.send(b"".join(flood.frames.request("/ping")[1] for _ in range(300)))
        erring = self.frameClient(tlsPort)
        erring.request("/ping")
        erring.send(erring.frames.goAway(0, errorCode=2))
        for c in (broken, flood, erring):
            self.assertTrue(c.readUntil(lambda c=c: c.closedAt is not None, 5))
        with socket.create_connection(("127.0.0.1", twistd.port), timeout=5) as raw:
            raw.sendall(b"\x00" * 9 + b"GET / HTTP/1.1\r\n\r\n")
            self.assertTrue(raw.recv(100).startswith(b"HTTP/1.1 400"))
        stalled = self.frameClient(tlsPort)
        stalled.send(b"\xff" * 64)
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertTrue(good.readUntil(lambda: good.frames.streams[sid].ended, 5))
        self.assertEqual(good.frames.streams[sid].status, 200)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 3)
        self.assertCleanLog(twistd)


class TogetherTests(H2TestCase):
    def test_h2cWebSocketAndHTTP11OnOneListener(self) -> None:
        """
        On one cleartext listener with --h2c: an HTTP/2 stream and an
        HTTP/1.1 request in flight are answered, a WebSocket gets its Close,
        and the process exits soon after.
        """
        twistd, _ = self.startH2("--ping-delay", "1")
        h2 = self.frameClient(twistd.port, tls=False)
        sid = h2.request("/ping")
        h1 = InFlight(twistd.port, get("/ping"))
        ws = RawWebSocket(twistd.port)
        self.addCleanup(ws.disconnect)
        waitForServer(
            twistd.port,
            lambda state: state.inFlight >= 2 and state.connections["websocket"] >= 1,
            "2 requests in flight and a WebSocket open",
        )
        twistd.signal(signal.SIGTERM)
        wsReader = threading.Thread(target=ws.readUntilClosed, daemon=True)
        wsReader.start()
        h2.readUntil(lambda: h2.closedAt is not None, 5)
        h1.join(5)
        wsReader.join(5)
        self.assertEqual(h2.frames.streams[sid].status, 200)
        self.assertEqual(h1.response and h1.response.code, 200)
        self.assertEqual(ws.close and ws.close[0], 1001)
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)
        self.assertIn("2 requests completed during the drain, 0 cut", twistd.log())


def importHttpx() -> Any:
    try:
        return importlib.import_module("httpx")
    except ImportError:
        raise SkipTest("httpx not installed: pip install 'httpx[http2]'") from None


class HttpxTests(H2TestCase):
    def test_inFlightAcrossADrain(self) -> None:
        """
        httpx (through h2, which takes any GOAWAY as the end and raises on
        any frame after it) with 20 requests in flight on one connection at
        SIGTERM: all 20 answered, the process exits soon after.
        """
        httpx = importHttpx()
        twistd, tlsPort = self.startH2("--ping-delay", "1")

        async def fetch() -> list[object]:
            async with httpx.AsyncClient(http1=False, http2=True, verify=False) as c:

                async def one() -> object:
                    try:
                        r = await c.get(f"https://127.0.0.1:{tlsPort}/ping")
                        return r.status_code
                    except Exception as e:
                        return repr(e)

                return list(await asyncio.gather(*(one() for _ in range(20))))

        results: list[object] = []
        runner = threading.Thread(target=lambda: results.extend(asyncio.run(fetch())))
        runner.start()
        waitForInFlight(twistd.port, 20)
        twistd.signal(signal.SIGTERM)
        runner.join(10)
        self.assertEqual(results, [200] * 20)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("20 requests completed during the drain, 0 cut", twistd.log())


class ReloadTests(H2TestCase):
    def test_h2LibraryAcrossReloads(self) -> None:
        """
        Under --workers 2, three SIGHUP reloads while a client on the h2
        library (retrying only what RFC 9113 allows: streams above the
        GOAWAY's last stream id, refused streams) keeps 10 requests in
        flight over h2c: every request answered.
        """
        master = MasterProcess("--h2c", "--ping-delay", "0.2", workers=2)
        self.addCleanup(master.kill)
        master.waitUntilReady()
        stop = threading.Event()
        library = H2LibraryClient(master.port)
        answered: list[object] = []

        def h2library() -> None:
            while not stop.is_set():
                answered.extend(library.fetch(["/ping"] * 10))
            library.close()

        thread = threading.Thread(target=h2library)
        thread.start()
        try:
            for generation in (2, 3, 4):
                time.sleep(0.5)
                master.signal(signal.SIGHUP)
                master.waitUntilReady(generation=generation)
            time.sleep(0.5)
        finally:
            stop.set()
            thread.join(15)
        print(
            f"\nh2 library across 3 reloads: {len(answered)} requests on "
            f"{library.tally.connections} connections, {library.tally.retried} "
            f"retried, failed: {library.tally.failed[:3]}"
        )
        self.assertEqual(library.tally.failed, [])
        self.assertEqual([a for a in answered if a != 200], [])
        self.assertGreater(library.tally.connections, 3)
        self.assertGreater(len(answered), 60)

    def test_httpxInFlightAcrossAReload(self) -> None:
        """
        Under --workers 2, httpx with 20 requests in flight on one
        connection at SIGHUP: all 20 answered by the old worker; the next
        ones, on the same client once the old worker has gone, go to the
        new generation: the first alone, which reads the old connection's
        GOAWAY and is retried on a new one, then nine at once.

        httpx (httpcore 1.0) loses requests it starts at once on an HTTP/2
        connection its server has closed, whichever server and whatever
        the server sent: those that write or read after the peer's reset
        fail with C{WriteError} or C{ReadError}, and one that starts while
        another task reads the GOAWAY fails with C{RemoteProtocolError}
        (the h2 library refuses to send after a GOAWAY, and httpcore does
        not take that for the retryable C{ConnectionNotAvailable} it makes
        of a stream above the GOAWAY's last stream id).
        """
        httpx = importHttpx()
        master = MasterProcess("--h2c", "--ping-delay", "1", workers=2)
        self.addCleanup(master.kill)
        master.waitUntilReady()
        url = f"http://127.0.0.1:{master.port}/ping"
        results: list[object] = []
        go = threading.Event()

        async def fetch() -> None:
            async with httpx.AsyncClient(http1=False, http2=True) as c:

                async def one() -> object:
                    try:
                        return (await c.get(url)).status_code
                    except Exception as e:
                        return repr(e)

                results.extend(await asyncio.gather(*(one() for _ in range(20))))
                await asyncio.get_running_loop().run_in_executor(None, go.wait, 20)
                results.append(await one())
                results.extend(await asyncio.gather(*(one() for _ in range(9))))

        runner = threading.Thread(target=lambda: asyncio.run(fetch()))
        runner.start()
        waitForInFlight(master.port, 20)
        old = master.workers()
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=2)
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in old) and time.monotonic() < deadline:
            time.sleep(0.02)
        go.set()
        runner.join(20)
        self.assertEqual(results, [200] * 30)


class AttackTests(H2TestCase):
    def test_attacksEndInAGoAwayOrAClose(self) -> None:
        """
        Rapid reset, a CONTINUATION flood, a PING flood from a client that
        never reads, an HPACK bomb, a SETTINGS flood from one that reads,
        and a client that never opens its window on big responses: each
        connection is ended by the server (a GOAWAY, a close, its streams
        reset), a few times each over a second, while an honest client is
        answered all along; the server's memory stays put, its log clean.
        """
        twistd = self.startTwistd(
            "--h2c", "--app", "tests.apps.bigapp:Root", "--shutdown-timeout", "1"
        )
        sizes = {"zero-window": 10}
        for name, attack in ATTACKS.items():
            run = measure(
                attack,
                twistd.port,
                twistd.port,
                twistd.pid,
                duration=0.3,
                size=sizes.get(name, 5000),
                timeout=5,
            )
            self.assertTrue(
                all(o.stopped for o in run.outcomes), f"{name}: {run.outcomes}"
            )
            self.assertLess(run.rssGrowth, 10 << 20, name)
            self.assertGreater(run.honestRequests, 0, name)
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertCleanLog(twistd)
