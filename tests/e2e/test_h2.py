"""
End to end, HTTP/2: a real C{twistd -n gracesvc} on an C{ssl:} listener
(ALPN C{h2}) and a cleartext one with C{--h2c}, real signals, real
clients: C{h2load} and C{nghttp} (Debian's C{nghttp2-client}), C{curl},
Node's built-in C{http2} module, and gracesvc's frame-level client for
the races.  A test whose tool is missing is skipped, saying how to install
it.  Time bounds are generous; C{bench/h2.py} measures the tight figures.
"""

from __future__ import annotations

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

from gracesvc.testing import get
from gracesvc.testing.h2 import NODE_CLIENT, H2SocketClient
from gracesvc.testing.process import InFlight, RawWebSocket, Twistd, freePort
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
    def test_twoGoAwaysAndAPing(self) -> None:
        """
        nghttp -nv sees GOAWAY(2147483647), a PING, then GOAWAY(its stream)
        soon after the signal, and its response.
        """
        nghttp = need("nghttp", "nghttp2-client")
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        client = Process(self, [nghttp, "-nv", f"https://127.0.0.1:{tlsPort}/ping"])
        waitForInFlight(twistd.port, 1)
        sentAt = twistd.signal(signal.SIGTERM)
        output = client.wait()
        frames = re.findall(
            r"\[\s*([\d.]+)\] recv (GOAWAY|PING) frame[^\n]*\n\s*\((\S+)", output
        )
        kinds = [(kind, detail) for _, kind, detail in frames]
        self.assertEqual(kinds[0], ("GOAWAY", f"last_stream_id={MAX_STREAM_ID},"))
        self.assertEqual(kinds[1][0], "PING")
        self.assertEqual(kinds[2][0], "GOAWAY")
        self.assertNotEqual(kinds[2][1], f"last_stream_id={MAX_STREAM_ID},")
        first, final = float(frames[0][0]), float(frames[2][0])
        self.assertLess(final - first, 0.2)
        self.assertLess(client.startedAt + first - sentAt, 0.3)
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
        A stream sent after the first GOAWAY (as by a client that had not
        read it yet): 200.
        One sent after the final GOAWAY: REFUSED_STREAM, at once.  The
        client never ACKs the PING: the final GOAWAY comes by 1 s.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        c = self.frameClient(tlsPort, ackPings=False)
        first = c.request("/ping")
        waitForInFlight(twistd.port, 1)
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 1, 3))
        # The final GOAWAY is due 1 s after the signal (the PING unanswered);
        # the racing stream, answered 1 s after it is sent, goes out well
        # before, so that it is still in flight then and the late stream
        # below finds the connection open: the scenario's own timing.
        time.sleep(max(0.0, sentAt + 0.3 - time.monotonic()))
        racing = c.request("/ping")
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 2, 3))
        self.assertEqual(c.frames.goAways, [(MAX_STREAM_ID, 0), (racing, 0)])
        finalAt = c.frames.firstAt(GoAwayFrame, last_stream_id=racing)
        assert finalAt is not None
        self.assertLess(finalAt - sentAt, 1.3)
        late = c.request("/ping")
        lateAt = time.monotonic()
        self.assertTrue(c.readUntil(lambda: c.frames.streams[late].reset is not None))
        self.assertEqual(c.frames.streams[late].reset, REFUSED_STREAM)
        self.assertLess(c.frames.received[-1][0] - lateAt, 0.2)
        c.readUntil(lambda: c.closedAt is not None)
        self.assertEqual(
            [c.frames.streams[s].status for s in (first, racing)], [200, 200]
        )
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        log = twistd.log()
        self.assertIn("2 requests completed during the drain, 0 cut", log)

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
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 2, 3))
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
        A second signal: the final GOAWAY with the true last stream id,
        then the connection is aborted and the process exits at once.
        """
        twistd, tlsPort = self.startH2("--ping-delay", "30")
        c = self.frameClient(tlsPort, ackPings=False)
        c.request("/ping")
        c.request("/ping")
        waitForInFlight(twistd.port, 2)
        twistd.signal(signal.SIGTERM)
        self.assertTrue(c.readUntil(lambda: len(c.frames.goAways) == 1, 3))
        secondAt = twistd.signal(signal.SIGTERM)
        c.readUntil(lambda: c.closedAt is not None, 3)
        self.assertEqual(c.frames.goAways, [(MAX_STREAM_ID, 0), (3, 0)])
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


class HttpxTests(H2TestCase):
    def test_httpxLosesStreamsOnGoAway(self) -> None:
        """
        httpx (through h2) fails its streams in flight on any GOAWAY
        (python-hyper/h2 #1181): a known failure of the client, kept to
        notice a fix, when this test fails.

        (Not an expected failure: trial's C{todo} fails under pytest, and
        pytest's C{xfail} under trial.)
        """
        try:
            httpx: Any = importlib.import_module("httpx")
        except ImportError:
            raise SkipTest("httpx not installed: pip install 'httpx[http2]'") from None
        twistd, tlsPort = self.startH2("--ping-delay", "1")
        results: list[object] = []

        def get() -> None:
            with httpx.Client(http1=False, http2=True, verify=False) as client:
                try:
                    results.append(
                        client.get(f"https://127.0.0.1:{tlsPort}/ping").status_code
                    )
                except Exception as e:
                    results.append(repr(e))

        threads = [threading.Thread(target=get) for _ in range(2)]
        for t in threads:
            t.start()
        waitForInFlight(twistd.port, 2)
        twistd.signal(signal.SIGTERM)
        for t in threads:
            t.join(10)
        self.assertNotEqual(
            results,
            [200, 200],
            "httpx answered both: python-hyper/h2 #1181 is fixed",
        )
