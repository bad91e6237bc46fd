"""
Event streams and long polls across a real shutdown: C{twistd -n gracesvc},
real signals, C{curl -N} reading C{/events} and raw sockets waiting on
C{/poll}.  Time bounds are generous (a loaded CI machine must not flake);
the tight figures are measured by C{bench/shutdown.py}.
"""

from __future__ import annotations

import json
import signal
import time

from gracesvc.testing import get, parseEventStream
from gracesvc.testing.process import (
    CURL,
    CurlStream,
    InFlight,
    RawClient,
    Twistd,
    waitForConnections,
)
from tests.support.endtoend import EndToEndTestCase, waitForDraining

TICK = b"event: tick"


class EventsTestCase(EndToEndTestCase):
    def setUp(self) -> None:
        if CURL is None:
            self.skipTest("curl is not installed (.ci/run installs it)")

    def curl(self, twistd: Twistd, path: str = "/events", *headers: str) -> CurlStream:
        c = CurlStream(twistd.port, path, *headers)
        self.addCleanup(c.kill)
        return c

    def assertShutdownEnd(self, c: CurlStream) -> None:
        """
        C{c} exited 0 after a stream that ends with the C{shutdown} event.
        """
        self.assertEqual(c.wait(), 0, c.stderr)
        events = parseEventStream(c.output)
        self.assertTrue(c.output.endswith(b"\n\n"), c.output[-200:])
        last = events[-1]
        self.assertEqual(last["event"], "shutdown")
        self.assertNotIn("id", last)
        retry = int(last["retry"])
        self.assertTrue(1000 <= retry <= 2000, retry)
        self.assertEqual(json.loads(last["data"])["retry"], retry)
        self.assertLessEqual({e["event"] for e in events[:-1]}, {"tick"})


class StreamTests(EventsTestCase):
    def test_twentyStreamsEndCleanlyAtSIGINT(self) -> None:
        """
        20 C{curl -N} streams open at SIGINT each get the C{shutdown} event
        and a clean end (curl exits 0), promptly; the process exits with
        SIGINT's status, having counted 20 clean streams.
        """
        twistd = self.startTwistd("--tick", "0.1")
        streams = [self.curl(twistd) for _ in range(20)]
        for c in streams:
            self.assertTrue(c.waitFor(TICK), c.stderr)
        waitForConnections(twistd.port, stream=20)
        sentAt = twistd.signal(signal.SIGINT)
        for c in streams:
            self.assertShutdownEnd(c)
        lastEnd = max(c.exitedAt for c in streams if c.exitedAt)
        self.assertLess(lastEnd - sentAt, 2.0)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        log = twistd.log()
        self.assertIn("Going away: 20 long responses told to wrap up", log)
        self.assertIn(
            "Long-lived connections told to go away: stream 20 clean, 0 timed out, 0 cut",
            log,
        )
        self.assertIn("0 cut", log)
        self.assertCleanLog(twistd)

    def test_reconnectResumesFromLastEventId(self) -> None:
        twistd = self.startTwistd("--tick", "0.1")
        c = self.curl(twistd, "/events", "Last-Event-ID: 41")
        self.assertTrue(c.waitFor(b"id: 43\n"))
        events = parseEventStream(c.output)
        self.assertEqual([e["id"] for e in events[:2]], ["42", "43"])
        twistd.signal(signal.SIGTERM)
        self.assertShutdownEnd(c)
        twistd.wait(10)


class AppStreamTests(EventsTestCase):
    def test_anAppsOwnStreamEndsCleanly(self) -> None:
        """
        A Klein app served with C{--app} makes an L{EventStream} from the
        request alone; SIGTERM ends it with the C{shutdown} event.
        """
        twistd = self.startTwistd("--app", "tests.apps.kleinapp:app")
        c = self.curl(twistd, "/feed")
        self.assertTrue(c.waitFor(b"event: greeting\ndata: hello from klein\n\n"))
        twistd.signal(signal.SIGTERM)
        self.assertEqual(c.wait(), 0, c.stderr)
        events = parseEventStream(c.output)
        self.assertEqual(events[-1]["event"], "shutdown")
        self.assertEqual(twistd.wait(10), -signal.SIGTERM)
        self.assertIn("stream 1 clean, 0 timed out, 0 cut", twistd.log())
        self.assertCleanLog(twistd)


class LongPollTests(EventsTestCase):
    def test_tenLongPollsAnsweredAtSIGINT(self) -> None:
        twistd = self.startTwistd("--tick", "60")
        polls = [InFlight(twistd.port, get("/poll")) for _ in range(10)]
        waitForConnections(twistd.port, poll=10)
        self.assertEqual([p.response for p in polls], [None] * 10)
        sentAt = twistd.signal(signal.SIGINT)
        for p in polls:
            p.join(5)
            assert p.response is not None, p.error
            self.assertEqual(
                (p.response.code, p.response.headers[b"connection"]),
                (200, b"close"),
            )
            self.assertEqual(json.loads(p.response.body)["status"], "reconnect")
        lastAnswer = max(p.doneAt for p in polls if p.doneAt)
        self.assertLess(lastAnswer - sentAt, 2.0)
        self.assertEqual(twistd.wait(10), -signal.SIGINT)
        self.assertIn("poll 10 clean, 0 timed out, 0 cut", twistd.log())
        self.assertCleanLog(twistd)


class DrainDelayTests(EventsTestCase):
    def test_nothingEndsBeforeTheListenersClose(self) -> None:
        """
        With C{--drain-delay 1}, streams and polls open at the signal go on
        until the listeners close, then end; meanwhile a new stream gets
        only a C{retry:} and ends cleanly, and a new poll is answered at
        once.
        """
        twistd = self.startTwistd(
            "--tick", "60", "--drain-delay", "1", "--shutdown-timeout", "4"
        )
        streams = [self.curl(twistd) for _ in range(3)]
        polls = [InFlight(twistd.port, get("/poll")) for _ in range(2)]
        waitForConnections(twistd.port, stream=3, poll=2)
        sentAt = twistd.signal(signal.SIGINT)
        waitForDraining(twistd.port)
        late = self.curl(twistd)
        self.assertEqual(late.wait(), 0, late.stderr)
        [retryOnly] = parseEventStream(late.output)
        self.assertEqual(list(retryOnly), ["retry"])
        with RawClient(twistd.port) as client:
            client.send(get("/poll"))
            answer = client.readResponse()
        self.assertEqual(json.loads(answer.body)["status"], "reconnect")
        self.assertLess(time.monotonic() - sentAt, 0.9)
        self.assertEqual([c.exited for c in streams], [False] * 3)
        self.assertEqual([p.response for p in polls], [None] * 2)
        for c in streams:
            self.assertShutdownEnd(c)
            assert c.exitedAt is not None
            self.assertGreaterEqual(c.exitedAt - sentAt, 1.0)
            self.assertLess(c.exitedAt - sentAt, 2.5)
        for p in polls:
            p.join(5)
            assert p.response is not None and p.doneAt is not None
            self.assertEqual(json.loads(p.response.body)["status"], "reconnect")
            self.assertGreaterEqual(p.doneAt - sentAt, 1.0)
        twistd.wait(10)
        self.assertCleanLog(twistd)
