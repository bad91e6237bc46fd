"""
ASGI applications under real C{twistd -n gracesvc --asgi}, drained by real
signals, with real clients: FastAPI (its lifespan and state, both kinds of
event stream, WebSockets, background tasks, errors, the shutdown notice),
Starlette, Django and Channels, a plain ASGI application under HTTP/2
(C{h2load}, Node's C{http2}) and under C{--workers} reloads; and the
one-line errors of what cannot be served.

The test applications (C{tests/apps/}) report what they were told as
C{EVENT ...} lines in the server's log.
"""

from __future__ import annotations

import collections
import os
import select
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator

import httpx
import twisted.test
from twisted.trial.unittest import SkipTest
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK
from websockets.sync.client import connect

from gracesvc.testing.process import (
    CurlStream,
    InFlight,
    MasterProcess,
    Twistd,
    freePort,
)
from tests.support.autobahn import fuzz, wstest
from tests.support.clients import Load, failures
from tests.support.endtoend import (
    EndToEndTestCase,
    runTwistd,
    waitForInFlight,
)

FASTAPI = "tests.apps.fastapiapp:app"
NOTICE = "tests.apps.fastapiapp:noticeApp"
STARLETTE = "tests.apps.starletteapp:app"
CHANNELS = "tests.apps.djangoapp.channelsasgi:application"
RAW = "tests.apps.asgiraw:app"

PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def events(twistd: Twistd) -> list[str]:
    """
    @return: what the test application reported, in order.
    """
    return [
        line.split("EVENT ", 1)[1].strip()
        for line in twistd.log().splitlines()
        if "EVENT " in line
    ]


class WebSocketClient(threading.Thread):
    """
    A client of the C{websockets} library in a thread: it sends one message,
    reads what comes until the server closes, and records how it closed.
    """

    def __init__(self, url: str, hello: str = "hello") -> None:
        super().__init__(daemon=True)
        self.url = url
        self.hello = hello
        self.received: list[str | bytes] = []
        self.closed: ConnectionClosed | None = None
        self.closedAt: float | None = None
        self.error: BaseException | None = None
        self._open = threading.Event()
        self.start()
        if not self._open.wait(10):
            raise AssertionError(f"no WebSocket to {url}: {self.error!r}")

    def run(self) -> None:
        try:
            with connect(self.url, open_timeout=10) as websocket:
                websocket.send(self.hello)
                self.received.append(websocket.recv(timeout=10))
                self._open.set()
                while True:
                    self.received.append(websocket.recv(timeout=15))
        except ConnectionClosed as e:
            self.closed = e
        except BaseException as e:
            self.error = e
        self.closedAt = time.monotonic()


class FastAPITests(EndToEndTestCase):
    def test_drainPerKindOfConnection(self) -> None:
        """
        SIGTERM with requests in flight, event streams (FastAPI's own and
        sse-starlette's), WebSockets and a background task under way: the
        requests complete, the streams end cleanly with the server's goodbye
        (curl exits 0) and their generators stop, the WebSockets get Close
        1001 with the closing handshake and the application is told 1001,
        the background task completes, and the lifespan shuts down (its
        pool closed) after all that, before the exit.
        """
        twistd = self.startTwistd("--asgi", FASTAPI)
        port = twistd.port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            self.assertEqual(client.get("/ping").json(), {"pong": True, "pool": True})
            self.assertEqual(client.get("/background").json(), {"queued": "yes"})
        streams = [CurlStream(port, "/events") for _ in range(3)]
        streams.append(CurlStream(port, "/sse"))
        for stream, second in zip(streams, [b"id: 1"] * 3 + [b"data: 1"], strict=True):
            self.addCleanup(stream.kill)
            self.assertTrue(stream.waitFor(second), stream.output)
        sockets = [WebSocketClient(f"ws://127.0.0.1:{port}/ws") for _ in range(5)]
        requests = [
            InFlight(port, b"GET /slow?seconds=1.5 HTTP/1.1\r\nHost: x\r\n\r\n")
            for _ in range(5)
        ]
        waitForInFlight(port, 5 + 4)
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        for r in requests:
            r.join(5)
            self.assertIsNone(r.error)
            assert r.response is not None
            self.assertEqual(
                (r.response.code, r.response.body), (200, b'{"slept":1.5}')
            )
        for stream in streams:
            self.assertEqual(stream.wait(), 0, stream.stderr)
            self.assertIn(b": server shutting down\nretry: ", stream.output)
            assert stream.exitedAt is not None
            self.assertLess(stream.exitedAt - sentAt, 0.5)
        for websocket in sockets:
            websocket.join(5)
            self.assertIsInstance(websocket.closed, ConnectionClosedOK)
            assert websocket.closed is not None and websocket.closed.rcvd is not None
            self.assertEqual(websocket.closed.rcvd.code, 1001)
        told = events(twistd)
        self.assertEqual(told.count("ws disconnect 1001"), 5)
        self.assertEqual(told.count("stream ended"), 3)
        self.assertIn("sse-starlette stream ended", told)
        self.assertEqual(told.count("background done"), 1)
        last = told.index("lifespan shutdown")
        self.assertEqual(told[last:], ["lifespan shutdown", "pool closed"])
        log = twistd.log()
        self.assertRegex(
            log,
            r"Server exiting \(drained\): 9 requests completed during the drain, 0 cut",
        )
        self.assertLess(
            log.index("ASGI lifespan shutdown complete"), log.index("Server exiting")
        )
        self.assertCleanLog(twistd)

    def test_errorsThenShutdownNoticeGoodbye(self) -> None:
        """
        Errors as uvicorn answers them: a raise before the response starts
        is a 500, one after it cuts the body short (curl reports the
        truncation), each logged once.  Then, behind C{ShutdownNotice}, a
        WebSocket handler sends its own goodbye and closes with 1001 itself
        when the server goes away: each client reads the goodbye, then a
        clean close.
        """
        twistd = self.startTwistd("--asgi", NOTICE)
        with httpx.Client(base_url=f"http://127.0.0.1:{twistd.port}") as client:
            self.assertEqual(client.get("/error-before").status_code, 500)
            self.assertEqual(client.get("/ping").status_code, 200)
        stream = CurlStream(twistd.port, "/error-after")
        self.assertEqual(stream.wait(), 18)
        self.assertEqual(stream.output, b"first part\n")
        sockets = [
            WebSocketClient(f"ws://127.0.0.1:{twistd.port}/goodbye") for _ in range(10)
        ]
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        for websocket in sockets:
            websocket.join(5)
            self.assertEqual(
                websocket.received, ["hello", "goodbye: reconnect elsewhere"]
            )
            self.assertIsInstance(websocket.closed, ConnectionClosedOK)
        self.assertEqual(events(twistd).count("goodbye sent"), 10)
        log = twistd.log()
        self.assertIn("shutdown notice wanted", log)
        self.assertEqual(log.count("Exception in ASGI application"), 2)
        self.assertEqual(log.count("#error]"), 2)


class FrameworkTests(EndToEndTestCase):
    def test_starlette(self) -> None:
        """
        Starlette: the lifespan's state in a request, a C{StreamingResponse}
        event stream ended by the server (the application told by
        C{http.disconnect}), a C{WebSocketEndpoint} told 1001.
        """
        twistd = self.startTwistd("--asgi", STARLETTE)
        port = twistd.port
        self.assertEqual(
            httpx.get(f"http://127.0.0.1:{port}/hello").json(),
            {"hello": "from the lifespan"},
        )
        stream = CurlStream(port, "/events")
        self.addCleanup(stream.kill)
        self.assertTrue(stream.waitFor(b"data: 1"))
        websocket = WebSocketClient(f"ws://127.0.0.1:{port}/ws")
        twistd.signal(signal.SIGINT)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        self.assertEqual(stream.wait(), 0)
        websocket.join(5)
        self.assertIsInstance(websocket.closed, ConnectionClosedOK)
        self.assertEqual(
            sorted(events(twistd)),
            ["starlette disconnect 1001", "starlette stream ended"],
        )
        self.assertCleanLog(twistd)

    def test_djangoAndChannels(self) -> None:
        """
        Django under Channels' router: served without a lifespan (said
        once), async and sync views, a 10 MB upload, a streaming response
        ended by the server; a consumer that closes itself (4000) is still
        told of the disconnect, an open one gets 1001 at the shutdown.
        """
        twistd = self.startTwistd("--asgi", CHANNELS)
        port = twistd.port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            self.assertEqual(client.get("/async").json()["view"], "async")
            self.assertEqual(client.get("/sync").json()["view"], "sync")
            upload = client.post("/upload", content=b"x" * 10_000_000)
            self.assertEqual(upload.json(), {"received": 10_000_000})
        with connect(f"ws://127.0.0.1:{port}/ws/echo") as websocket:
            websocket.send("one")
            self.assertEqual(websocket.recv(timeout=5), "one")
            websocket.send("close")
            with self.assertRaises(ConnectionClosed):
                websocket.recv(timeout=5)
            self.assertEqual(websocket.close_code, 4000)
        stream = CurlStream(port, "/stream")
        self.addCleanup(stream.kill)
        self.assertTrue(stream.waitFor(b"data: 1"))
        open_ = WebSocketClient(f"ws://127.0.0.1:{port}/ws/echo")
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertEqual(stream.wait(), 0)
        open_.join(5)
        self.assertIsInstance(open_.closed, ConnectionClosedOK)
        told = events(twistd)
        self.assertIn("channels disconnect 4000", told)
        self.assertIn("channels disconnect 1001", told)
        self.assertIn("django stream ended", told)
        self.assertEqual(twistd.log().count("ASGI lifespan unsupported"), 1)
        self.assertCleanLog(twistd)


class HTTP2Tests(EndToEndTestCase):
    def test_h2loadOverTLSAndH2c(self) -> None:
        """
        C{h2load -n 64 -c 8 -m 8} against a 1 s ASGI endpoint over TLS and
        over h2c at once, SIGTERM while all are in flight: 128 succeeded,
        nothing cut; Node's C{http2} client is answered before.
        """
        h2load = shutil.which("h2load")
        if h2load is None:
            raise SkipTest("h2load not installed (apt-get install nghttp2-client)")
        tlsPort, plainPort = freePort(), freePort()
        twistd = self.startTwistd(
            "--asgi",
            RAW,
            "--h2c",
            port=plainPort,
            listen=[
                f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={PEM}",
                f"tcp:{plainPort}:interface=127.0.0.1",
            ],
        )
        node = shutil.which("node")
        if node is not None:
            script = (
                "const s = require('http2').connect(process.argv[1]);"
                "const r = s.request({':path': '/hello'});"
                "let b = ''; r.on('response', h => console.log(h[':status']));"
                "r.on('data', d => b += d);"
                "r.on('end', () => { console.log(b.trim()); s.close(); });"
            )
            result = subprocess.run(
                [node, "-e", script, f"http://127.0.0.1:{plainPort}"],
                capture_output=True,
                text=True,
                timeout=30,
            )
            self.assertEqual(result.stdout.split(), ["200", "hello"], result.stderr)
        loads = [
            subprocess.Popen(
                [h2load, "-n", "64", "-c", "8", "-m", "8", url],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            for url in (
                f"https://127.0.0.1:{tlsPort}/slow?seconds=1",
                f"http://127.0.0.1:{plainPort}/slow?seconds=1",
            )
        ]
        waitForInFlight(plainPort, 128)
        twistd.signal(signal.SIGTERM)
        for load in loads:
            output, _ = load.communicate(timeout=30)
            self.assertIn("64 succeeded, 0 failed, 0 errored", output, output)
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("128 requests completed during the drain, 0 cut", twistd.log())
        self.assertCleanLog(twistd)

    def test_uploadStreamedAndDrained(self) -> None:
        """
        httpx uploads slowly over h2c: the application receives the first
        chunk long before the client has sent the last.  SIGTERM during a
        second upload: it completes, is answered, and the process exits by
        the signal.
        """
        twistd = self.startTwistd("--asgi", RAW, "--h2c")
        url = f"http://127.0.0.1:{twistd.port}/upload"
        piece = b"x" * 20000
        sentAll: list[float] = []

        def slowly(signalAfterFirst: bool = False) -> Iterator[bytes]:
            for n in range(4):
                if n:
                    time.sleep(0.3)
                    if n == 1 and signalAfterFirst:
                        twistd.signal(signal.SIGTERM)
                yield piece
            sentAll.append(time.monotonic())

        with httpx.Client(http1=False, http2=True, timeout=10) as client:
            response = client.post(url, content=slowly())
            self.assertEqual(response.http_version, "HTTP/2")
            self.assertEqual(response.status_code, 200)
            received = [line.split() for line in response.text.splitlines()]
            self.assertEqual(sum(int(size) for _, size in received), 4 * len(piece))
            # The first chunk reached the application while the client
            # still had 0.9 s of sending ahead.
            self.assertLess(float(received[0][0]), sentAll[0] - 0.6)

            response = client.post(url, content=slowly(signalAfterFirst=True))
            self.assertEqual(response.status_code, 200)
            received = [line.split() for line in response.text.splitlines()]
            self.assertEqual(sum(int(size) for _, size in received), 4 * len(piece))
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("0 cut", twistd.log())
        self.assertNotIn("upload disconnect", events(twistd))
        self.assertCleanLog(twistd)


class PlainASGITests(EndToEndTestCase):
    def test_nodeWebSocketAndEventStreams(self) -> None:
        """
        A plain ASGI echo and event stream: Node's C{WebSocket} gets its
        echo and a Close 1001; curl's streams end cleanly; the application
        is told 1001 and C{http.disconnect}; the lifespan shuts down after
        the last of them; the process exits soon after the signal.
        """
        node = shutil.which("node")
        if node is None:
            raise SkipTest("node not installed")
        twistd = self.startTwistd("--asgi", RAW)
        port = twistd.port
        script = (
            "const ws = new WebSocket(process.argv[1]);"
            "ws.onopen = () => ws.send('from node');"
            "ws.onmessage = e => console.log('message', e.data);"
            "ws.onclose = e => console.log('close', e.code, e.wasClean);"
        )
        client = subprocess.Popen(
            [
                node,
                "--experimental-websocket",
                "-e",
                script,
                f"ws://127.0.0.1:{port}/ws",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self.addCleanup(client.kill)
        streams = [CurlStream(port, "/events") for _ in range(5)]
        for stream in streams:
            self.addCleanup(stream.kill)
            self.assertTrue(stream.waitFor(b"data: 1"))
        assert client.stdout is not None
        readable, _, _ = select.select([client.stdout], [], [], 10)
        self.assertTrue(readable, "Node's WebSocket never got its echo")
        echoed = client.stdout.readline()
        sentAt = twistd.signal(signal.SIGINT)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        output, _ = client.communicate(timeout=10)
        self.assertEqual(
            [echoed.strip(), *output.splitlines()],
            ["message from node", "close 1001 true"],
        )
        for stream in streams:
            self.assertEqual(stream.wait(), 0)
        told = events(twistd)
        self.assertEqual(told.count("events disconnect"), 5)
        self.assertIn("ws disconnect 1001", told)
        self.assertEqual(told[-1], "lifespan shutdown")
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, 1.0)
        self.assertCleanLog(twistd)

    def test_autobahn(self) -> None:
        """
        The Autobahn fuzzing client's cases, as run for C{/ws}, against a
        plain ASGI echo: no case fails.
        """
        wstest()
        twistd = self.startTwistd("--asgi", RAW)
        fuzz(self, f"ws://127.0.0.1:{twistd.port}/ws")
        twistd.signal(signal.SIGINT)
        twistd.wait(10)
        self.assertIn("0 connections open", twistd.log())
        self.assertCleanLog(twistd)

    def test_workersReloadUnderLoad(self) -> None:
        """
        C{--workers 2 --asgi}: each worker runs the lifespan, a reload's
        new generation is ready only once its startup completed, and a
        SIGHUP under load fails no request (C{bench.asgi} runs ten).
        """
        master = MasterProcess("--asgi", RAW, workers=2)
        self.addCleanup(master.kill)
        master.waitUntilReady()
        load = Load(master.port)
        self.addCleanup(load.stop)
        load.waitForAnswers(50)
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=2)
        load.waitForAnswers(30)
        outcomes = load.stop()
        self.assertEqual(failures(outcomes), collections.Counter())
        master.signal(signal.SIGTERM)
        master.wait(15)
        log = master.log()
        self.assertEqual(log.count("EVENT lifespan startup"), 4)
        self.assertEqual(log.count("EVENT lifespan shutdown"), 4)
        self.assertNotIn("Traceback", log)


class UsageTests(EndToEndTestCase):
    def assertOneLineError(
        self, result: subprocess.CompletedProcess[str], text: str
    ) -> None:
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        output = (result.stdout + result.stderr).strip()
        self.assertIn(text, output)
        self.assertNotIn("Traceback", output)

    def test_oneLineErrors(self) -> None:
        """
        An application that does not import, the wrong kind of object,
        another reactor given explicitly, --asgi beside --wsgi: one line,
        exit status 1, nothing listens.
        """
        port = str(freePort())
        listen = ["--listen", f"tcp:{port}:interface=127.0.0.1"]
        self.assertOneLineError(
            runTwistd("-n", "gracesvc", *listen, "--asgi", "nosuchmodule:app"),
            "--asgi 'nosuchmodule:app': cannot import module 'nosuchmodule'",
        )
        self.assertOneLineError(
            runTwistd("-n", "gracesvc", *listen, "--asgi", "tests.apps.flaskapp:app"),
            "serve it with --wsgi",
        )
        self.assertOneLineError(
            runTwistd("-r", "poll", "-n", "gracesvc", *listen, "--asgi", RAW),
            "--asgi runs the application on Twisted's asyncio reactor, but "
            "PollReactor is installed",
        )
        self.assertOneLineError(
            runTwistd("-n", "gracesvc", *listen, "--asgi", RAW, "--wsgi", RAW),
            "--wsgi and --asgi cannot be used together",
        )

    def test_failedStartupExits1(self) -> None:
        """
        C{lifespan.startup.failed}: one line, exit status 1, and nothing
        was ever accepted.
        """
        port = freePort()
        result = runTwistd(
            "--pidfile=",
            "-n",
            "gracesvc",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--asgi",
            "tests.apps.asgiraw:failingStartup",
        )
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        self.assertIn(
            "gracesvc: ASGI lifespan startup failed: no database at all",
            result.stdout,
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)

    def test_noLifespanIsServedWithout(self) -> None:
        """
        An application that raises on the lifespan scope is served without
        one, said once; with C{--asgi-lifespan on} it does not start.
        """
        twistd = self.startTwistd("--asgi", "tests.apps.asgiraw:noLifespan")
        self.assertEqual(httpx.get(f"http://127.0.0.1:{twistd.port}/").text, "hello\n")
        twistd.signal(signal.SIGTERM)
        twistd.wait(10)
        self.assertEqual(twistd.log().count("ASGI lifespan unsupported"), 1)
        self.assertCleanLog(twistd)
        port = freePort()
        result = runTwistd(
            "--pidfile=",
            "-n",
            "gracesvc",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--asgi",
            "tests.apps.asgiraw:noLifespan",
            "--asgi-lifespan",
            "on",
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("the lifespan is required (--asgi-lifespan on)", result.stdout)
