"""
Users' own apps under real C{twistd -n gracesvc --app/--wsgi}, drained by
real signals: a Flask app on threads, a Klein app with C{async def} routes
(on the default reactor and on asyncio), a plain L{Resource} tree, and the
one-line errors for apps that cannot be served.
"""

from __future__ import annotations

import signal

from gracesvc.testing import get
from gracesvc.testing.process import InFlight, RawClient, waitUntilRefused
from tests.support.endtoend import (
    EndToEndTestCase,
    runTwistd,
    waitForInFlight,
    waitUntilRead,
)

FLASK = "tests.apps.flaskapp:app"
KLEIN = "tests.apps.kleinapp:app"
TREE = "tests.apps.resourceapp:Root"


class DrainAppTests(EndToEndTestCase):
    def assertDrains(
        self, path: str, body: bytes, *args: str, reactor: str | None = None
    ) -> None:
        """
        20 requests for C{path} in flight at SIGINT each get C{body}; new
        connections are refused promptly, the process exits soon after the
        last response with SIGINT's status, and nothing is logged as an
        error.
        """
        twistd = self.startTwistd(*args, reactor=reactor)
        requests = [InFlight(twistd.port, get(path)) for _ in range(20)]
        waitForInFlight(twistd.port, 20)
        sentAt = twistd.signal(signal.SIGINT)
        refusedAt = waitUntilRefused(twistd.port)
        status = twistd.wait(10)
        for r in requests:
            r.join(5)
        self.assertEqual(
            [
                (r.error, r.response and (r.response.code, r.response.body))
                for r in requests
            ],
            [(None, (200, body))] * 20,
        )
        self.assertEqual(status, -signal.SIGINT)
        self.assertLess(refusedAt - sentAt, 0.5)
        lastResponse = max(r.doneAt for r in requests if r.doneAt)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - lastResponse, 0.5)
        # Not "20 completed": a WSGI response is finished only once its
        # thread is done with the app's iterable, and a client that has read
        # the whole body may close first.  Nothing may be cut.
        self.assertRegex(
            twistd.log(),
            r"Server exiting \(drained\): \d+ requests completed during the drain, 0 cut",
        )
        self.assertCleanLog(twistd)

    def test_flaskRequestsInFlightComplete(self) -> None:
        """
        A Flask view that sleeps 2 s in its thread: all 20 in flight at the
        signal are answered.
        """
        self.assertDrains("/sleep/2.0", b"slept\n", "--wsgi", FLASK)

    def test_kleinAsyncRoutesComplete(self) -> None:
        self.assertDrains("/sleep/2.0", b"slept\n", "--app", KLEIN)

    def test_kleinAsyncRoutesCompleteOnAsyncio(self) -> None:
        """
        Under C{twistd -r asyncio}, a handler awaiting C{asyncio.sleep}
        drains like any other.
        """
        self.assertDrains(
            "/asyncio-sleep/2.0",
            b"slept on asyncio\n",
            "--app",
            KLEIN,
            reactor="asyncio",
        )

    def test_appFactoryGetsTheDrainForItsHooks(self) -> None:
        """
        C{--app MODULE:FACTORY} whose factory takes C{drain}: the app adds a
        cleanup hook, which runs after the last response of the drain.
        """
        twistd = self.startTwistd("--app", "tests.apps.kleinapp:withPool")
        requests = [InFlight(twistd.port, get("/sleep/1.0")) for _ in range(3)]
        waitForInFlight(twistd.port, 3)
        twistd.signal(signal.SIGINT)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        for r in requests:
            r.join(5)
        self.assertEqual([r.response and r.response.code for r in requests], [200] * 3)
        log = twistd.log()
        self.assertIn("kleinapp: pool closed", log)
        self.assertLess(
            log.rindex('"GET /sleep/1.0 HTTP/1.1" 200'), log.index("pool closed")
        )
        self.assertCleanLog(twistd)

    def test_stuckFlaskThreadCannotHoldTheExit(self) -> None:
        """
        A Flask view sleeping 60 s with a 1 s cap: the client gets the 503
        with C{Retry-After}, and the process exits by about the cap, its
        thread abandoned.
        """
        twistd = self.startTwistd("--wsgi", FLASK, "--shutdown-timeout", "1")
        request = InFlight(twistd.port, get("/sleep/60.0"))
        waitForInFlight(twistd.port, 1)
        sentAt = twistd.signal(signal.SIGINT)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        request.join(5)
        assert request.response is not None and twistd.exitedAt is not None
        self.assertEqual(request.response.code, 503)
        self.assertEqual(request.response.headers[b"retry-after"], b"1")
        self.assertLess(twistd.exitedAt - sentAt, 1.5)
        self.assertIn("Giving up on 1 threads", twistd.log())
        self.assertCleanLog(twistd)

    def test_handlerBlockingTheReactorCannotHoldTheExit(self) -> None:
        """
        A handler that blocks the reactor's thread for 30 s (C{time.sleep}
        in C{render_GET}) with a 1 s cap: no timer of the drain can run, and
        the watchdog ends the process just after the cap, by the signal,
        saying where the reactor's thread was.
        """
        twistd = self.startTwistd("--app", TREE, "--shutdown-timeout", "1")
        request = InFlight(twistd.port, get("/block/30"))
        # The reactor is blocked from the turn it reads the request on: no
        # scrape can ask it.
        waitUntilRead(request.client.sock)
        sentAt = twistd.signal(signal.SIGINT)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        request.join(5)
        assert twistd.exitedAt is not None
        self.assertGreater(twistd.exitedAt - sentAt, 1.0)
        self.assertLess(twistd.exitedAt - sentAt, 1.5)
        log = twistd.log()
        self.assertIn("The process did not exit by the cap: exiting now", log)
        self.assertRegex(log, r"thread was at resourceapp\.py:\d+ in render_GET")


class ServeAppTests(EndToEndTestCase):
    def fetch(self, port: int, path: str) -> tuple[int, bytes]:
        with RawClient(port) as client:
            client.send(get(path))
            response = client.readResponse()
        return response.code, response.body

    def test_resourceTreeBesideTheProbes(self) -> None:
        """
        A plain resource tree serves its paths; C{/healthz}, C{/readyz} and
        C{/metrics} are gracesvc's, with the tree's routes as metric labels.
        """
        twistd = self.startTwistd("--app", TREE)
        self.assertEqual(
            self.fetch(twistd.port, "/hello"), (200, b"hello from a resource\n")
        )
        self.assertEqual(
            self.fetch(twistd.port, "/api/users/ann"), (200, b"user ann\n")
        )
        self.assertEqual(self.fetch(twistd.port, "/healthz")[0], 200)
        code, metrics = self.fetch(twistd.port, "/metrics")
        self.assertEqual(code, 200)
        self.assertIn(b'route="/api/users"', metrics)
        self.assertNotIn(b"ann", metrics)
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)

    def test_flaskRoutesAreMetricLabels(self) -> None:
        twistd = self.startTwistd("--wsgi", FLASK)
        self.assertEqual(self.fetch(twistd.port, "/users/7"), (200, b'{"id":7}\n'))
        code, metrics = self.fetch(twistd.port, "/metrics")
        self.assertIn(b'route="/users/<int:userID>"', metrics)
        twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(5), -signal.SIGTERM)


class BadAppTests(EndToEndTestCase):
    def assertOneLineError(self, *args: str, expected: str) -> None:
        result = runTwistd("--pidfile=", "-n", "gracesvc", "--listen", "tcp:0", *args)
        self.assertEqual(result.returncode, 1, result.stdout + result.stderr)
        stderr = result.stderr.strip()
        self.assertNotIn("Traceback", stderr + result.stdout)
        self.assertEqual(len(stderr.splitlines()), 1, stderr)
        self.assertIn(expected, stderr)
        self.assertNotIn("listening on", result.stdout)

    def test_appAndWsgiTogether(self) -> None:
        self.assertOneLineError(
            "--app", TREE, "--wsgi", FLASK, expected="--app and --wsgi cannot"
        )

    def test_moduleThatDoesNotImport(self) -> None:
        self.assertOneLineError(
            "--app", "no_such_module:app", expected="cannot import module"
        )

    def test_missingAttribute(self) -> None:
        self.assertOneLineError(
            "--app", "tests.apps.kleinapp:nothing", expected="nothing"
        )

    def test_wrongKindOfObject(self) -> None:
        self.assertOneLineError("--app", FLASK, expected="--wsgi")
        self.assertOneLineError("--wsgi", KLEIN, expected="--app")

    def test_drainFactoryThatFails(self) -> None:
        """
        A factory taking the drain is called once the service is made: its
        failure is still one line and exit status 1, before anything
        listens.
        """
        self.assertOneLineError(
            "--app",
            "tests.apps.kleinapp:withUnreachablePool",
            expected="calling it raised ConnectionRefusedError: database at "
            "10.0.0.5:5432 refused the connection",
        )

    def test_zeroThreads(self) -> None:
        self.assertOneLineError("--wsgi", FLASK, "--threads", "0", expected="--threads")
