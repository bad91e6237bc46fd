"""
HTTP/2 under the drain, as a frame-level client on the wire sees it:
in-memory HTTP/2 connections (L{gracesvc.testing.h2.H2WireClient}) to a
real L{DrainingSite}, time driven by a L{Clock}.
"""

from __future__ import annotations

from hyperframe.frame import GoAwayFrame, PingFrame, WindowUpdateFrame
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gracesvc._metrics.collectors import H2Collector
from gracesvc._protocols.h2 import (
    MAX_STREAM_ID,
    PING_DATA,
)
from gracesvc.testing import Wire, get, samples
from gracesvc.testing.h2 import H2WireClient

REFUSED_STREAM = 7
CANCEL = 8


class Held(Resource):
    """
    C{/held} answers nothing until the test says; C{/partial} writes a
    first chunk and holds the rest.
    """

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.requests: list[object] = []

    def render(self, request: object) -> object:
        self.requests.append(request)
        if getattr(request, "path", b"") == b"/partial":
            request.write(b"partial")  # type: ignore[attr-defined]
        return NOT_DONE_YET


def wire(**kwargs: object) -> Wire:
    w = Wire(h2c=True, **kwargs)  # type: ignore[arg-type]
    w.metrics.registry.register(H2Collector(w.drain, w.site.h2Tally))
    return w


class ServingTests(SynchronousTestCase):
    def test_inFlightCountsStreams(self) -> None:
        """
        The drain counts each stream in flight, and none once answered.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        sids = [c.request("/ping") for _ in range(3)]
        self.assertEqual((w.drain.inFlight, w.drain.connections), (3, 1))
        w.advance(1.0)
        self.assertEqual([c.streams[s].status for s in sids], [200] * 3)
        self.assertEqual(w.drain.inFlight, 0)

    def test_protocolErrorClosesOnlyThatConnection(self) -> None:
        """
        A client breaking the protocol gets a GOAWAY and is closed; the
        drain forgets it and still drains the others.
        """
        w = wire(pingDelay=1)
        good = H2WireClient(w)
        sid = good.request("/ping")
        bad = H2WireClient(w)
        bad.send(b"\x00\x00\x04\x08\x00\x00\x00\x00\x00" + b"\x00" * 4)
        self.assertTrue(bad.closed)
        self.assertTrue(bad.frames.goAways)
        self.assertEqual(w.drain.connections, 1)
        w.drain.start()
        w.advance(1.0)
        self.assertEqual(good.streams[sid].status, 200)
        self.assertTrue(w.drain.finished)


class DrainTests(SynchronousTestCase):
    def test_twoPhaseGoAway(self) -> None:
        """
        At the drain: GOAWAY(2^31-1) and a PING; on its ACK, GOAWAY with the
        highest stream accepted.  The streams in flight complete, then the
        connection closes and the drain is done.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        sids = [c.request("/ping") for _ in range(2)]
        w.drain.start()
        w.flush()
        self.assertEqual(c.frames.goAways, [(MAX_STREAM_ID, 0), (3, 0)])
        self.assertEqual(c.frames.pings, [PING_DATA])
        self.assertFalse(c.closed)
        w.advance(1.0)
        self.assertEqual([c.streams[s].status for s in sids], [200, 200])
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)
        self.assertEqual(w.drain.completedDuringDrain, 2)
        self.assertEqual(w.drain.requestsCut, 0)

    def test_streamAfterFinalGoAwayRefused(self) -> None:
        """
        A stream above the final GOAWAY's last stream id gets
        RST_STREAM(REFUSED_STREAM), never reaches the application, and the
        connection's flow-control credit its body used is given back.
        """
        held = Held()
        w = wire(resource=held)
        c = H2WireClient(w)
        first = c.request("/held")
        w.drain.start()
        w.flush()
        self.assertEqual(c.frames.goAways[-1], (first, 0))
        late = c.request("/held", method="POST", body=b"x" * 40000)
        self.assertEqual(c.streams[late].reset, REFUSED_STREAM)
        self.assertEqual(len(held.requests), 1)
        self.assertIsNotNone(c.frames.firstAt(WindowUpdateFrame, stream_id=0))
        self.assertEqual(w.drain.inFlight, 1)
        self.assertEqual(w.site.h2Tally.refused, 1)

    def test_streamAfterNoticeServed(self) -> None:
        """
        A stream sent after the first GOAWAY, before the client answered
        the PING, is served; without the ACK, the final GOAWAY comes after
        min(1 s, half the time to the cut), and the streams complete.
        """
        w = wire(pingDelay=1.5, shutdownTimeout=5)
        c = H2WireClient(w, ackPings=False)
        first = c.request("/ping")
        w.drain.start()
        w.flush()
        self.assertEqual(c.frames.goAways, [(MAX_STREAM_ID, 0)])
        w.advance(0.5)
        racing = c.request("/ping")
        self.assertEqual(w.drain.inFlight, 2)
        w.advance(0.49)
        self.assertEqual(len(c.frames.goAways), 1)
        w.advance(0.02)
        self.assertEqual(c.frames.goAways[-1], (racing, 0))
        at = c.frames.firstAt(GoAwayFrame, last_stream_id=racing)
        assert at is not None and w.drain.startedAt is not None
        self.assertAlmostEqual(at - w.drain.startedAt, 1.0, delta=0.02)
        w.advance(1.5)
        self.assertEqual([c.streams[s].status for s in (first, racing)], [200, 200])
        self.assertTrue(w.drain.finished)

    def test_noticeWaitIsHalfTheTimeToTheCut(self) -> None:
        """
        With a short cap the final GOAWAY comes at half the time to the cut.
        """
        w = wire(shutdownTimeout=1.0)
        c = H2WireClient(w, ackPings=False)
        c.request("/ping")
        w.drain.start()
        w.advance(0.5)
        self.assertEqual(len(c.frames.goAways), 2)
        at = c.frames.firstAt(GoAwayFrame, last_stream_id=1)
        assert at is not None and w.drain.startedAt is not None
        self.assertLessEqual(at - w.drain.startedAt, (1.0 - 0.1) / 2 + 0.01)

    def test_idleConnectionClosesOnPingAck(self) -> None:
        """
        An idle connection closes as soon as its client answered the PING.
        """
        w = wire()
        c = H2WireClient(w)
        c.request("/healthz")
        w.drain.start()
        w.flush()
        self.assertEqual(c.frames.goAways, [(MAX_STREAM_ID, 0), (1, 0)])
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)
        assert w.drain.finishedAt is not None and w.drain.startedAt is not None
        self.assertEqual(w.drain.finishedAt, w.drain.startedAt)

    def test_clientGoAwayFinishesStreams(self) -> None:
        """
        A client's GOAWAY(NO_ERROR) with streams open, as Node's
        C{session.close()} sends: they are answered, then the connection
        closes.  No drain involved.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        sids = [c.request("/ping") for _ in range(2)]
        c.send(c.frames.goAway(0))
        self.assertEqual(c.frames.goAways, [(3, 0)])
        self.assertEqual(w.drain.inFlight, 2)
        w.advance(1.0)
        self.assertEqual([c.streams[s].status for s in sids], [200, 200])
        self.assertTrue(c.closed)
        self.assertEqual(w.drain.connections, 0)

    def test_clientGoAwayWithErrorAborts(self) -> None:
        """
        A client's GOAWAY with an error code ends its streams at once.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        c.request("/ping")
        c.send(c.frames.goAway(0, errorCode=2))
        self.assertTrue(c.closed)
        self.assertEqual(w.drain.connections, 0)

    def test_cutByProgress(self) -> None:
        """
        At the cut: REFUSED_STREAM for a request still arriving, 503 with
        Retry-After for one the application holds unanswered,
        RST_STREAM(CANCEL) for one mid-response.  The 503 and the cancel
        are counted as cut, the refusal as refused.
        """
        held = Held()
        w = wire(resource=held, shutdownTimeout=2)
        c = H2WireClient(w)
        unanswered = c.request("/held")
        partial = c.request("/partial")
        arriving = c.request("/held", method="POST", endStream=False)
        c.send(c.frames.data(arriving, b"half", endStream=False))
        self.assertEqual(w.drain.inFlight, 3)
        w.drain.start()
        w.advance(1.95)
        self.assertEqual(c.streams[unanswered].status, 503)
        self.assertEqual(c.streams[unanswered].headers[b"retry-after"], b"2")
        self.assertEqual(c.streams[partial].reset, CANCEL)
        self.assertEqual(c.streams[arriving].reset, REFUSED_STREAM)
        self.assertEqual(w.drain.requestsCut, 2)
        self.assertEqual(w.site.h2Tally.refused, 1)
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)

    def test_secondSignalAborts(self) -> None:
        """
        A second signal aborts the connection, its streams counted as cut;
        a final GOAWAY is written first.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w, ackPings=False)
        c.request("/ping")
        w.drain.start()
        w.flush()
        w.drain.forceStop()
        w.flush()
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)
        self.assertEqual(w.drain.requestsCut, 1)
        self.assertEqual(w.site.h2Tally.goAways, {"notice": 1, "final": 1})

    def test_h2AndHTTP11DrainTogether(self) -> None:
        """
        Streams and HTTP/1.1 requests in flight on one site both complete.
        """
        w = wire(pingDelay=1)
        h2 = H2WireClient(w)
        sid = h2.request("/ping")
        h1 = w.connect()
        h1.send(get("/ping"))
        w.drain.start()
        w.advance(1.0)
        self.assertEqual(h2.streams[sid].status, 200)
        self.assertEqual([r.code for r in h1.responses], [200])
        self.assertTrue(w.drain.finished)

    def test_metrics(self) -> None:
        """
        The GOAWAYs sent, the streams refused and the connections by
        protocol are exposed.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        c.request("/ping")
        w.connect().send(get("/healthz"))
        before = samples(w.metrics.exposition())
        byProtocol = "gracesvc_open_connections_by_protocol"
        self.assertEqual(before[(byProtocol, (("protocol", "h2"),))], 1)
        self.assertEqual(before[(byProtocol, (("protocol", "http/1.1"),))], 1)
        w.drain.start()
        w.flush()
        c.request("/ping")
        after = samples(w.metrics.exposition())
        goAways = "gracesvc_h2_goaway_sent_total"
        self.assertEqual(after[(goAways, (("phase", "notice"),))], 1)
        self.assertEqual(after[(goAways, (("phase", "final"),))], 1)
        self.assertEqual(after[("gracesvc_h2_streams_refused_total", ())], 1)
        self.assertEqual(after[("gracesvc_h2_ping_rtt_seconds_count", ())], 1)
        self.assertEqual(after[("gracesvc_requests_in_flight", ())], 1)

    def test_pingAckOfAnotherPingIgnored(self) -> None:
        """
        Only the ACK of the drain's own PING ends the notice phase.
        """
        w = wire()
        c = H2WireClient(w, ackPings=False)
        c.request("/ping")
        w.drain.start()
        w.flush()
        c.send(PingFrame(0, opaque_data=b"12345678", flags=["ACK"]).serialize())
        self.assertEqual(len(c.frames.goAways), 1)


class HostileClientTests(SynchronousTestCase):
    def test_floodOfStreams(self) -> None:
        """
        More streams at once than the connection allows (100): that client
        is closed with a GOAWAY; the drain forgets it and drains the rest.
        """
        w = wire(pingDelay=1)
        good = H2WireClient(w)
        sid = good.request("/ping")
        flood = H2WireClient(w)
        data = b"".join(flood.frames.request("/ping")[1] for _ in range(150))
        flood.send(data)
        self.assertTrue(flood.closed)
        self.assertTrue(flood.frames.goAways)
        self.assertEqual((w.drain.connections, w.drain.inFlight), (1, 1))
        w.drain.start()
        w.advance(1.0)
        self.assertEqual(good.streams[sid].status, 200)
        self.assertTrue(w.drain.finished)

    def test_garbageAfterThePreface(self) -> None:
        """
        A frame the protocol forbids after the preface (DATA on stream 0):
        a GOAWAY, closed.
        """
        w = wire()
        c = H2WireClient(w)
        c.send(b"\x00\x00\x01\x00\x00\x00\x00\x00\x00x")
        self.assertTrue(c.closed)
        self.assertEqual(w.drain.connections, 0)

    def test_idleTimeoutIsGraceful(self) -> None:
        """
        Twisted's idle timeout no longer sends GOAWAY(PROTOCOL_ERROR) over
        a stream in flight: a slow stream is answered; an idle connection
        gets its final GOAWAY and closes.
        """
        w = wire(pingDelay=90)
        c = H2WireClient(w)
        sid = c.request("/ping")
        w.clock.advance(61)
        w.flush()
        self.assertEqual(c.frames.goAways, [])
        w.clock.advance(30)
        w.flush()
        self.assertEqual(c.streams[sid].status, 200)
        # The idle timeout is the keep-alive timeout, 75 s.
        w.clock.advance(76)
        w.flush()
        self.assertEqual(c.frames.goAways, [(sid, 0)])
        self.assertTrue(c.closed)


class TogetherTests(SynchronousTestCase):
    def test_streamsWebSocketsAndHTTP11(self) -> None:
        """
        An HTTP/2 stream, a WebSocket and an HTTP/1.1 request on one site
        drain together: the stream and the request are answered, the
        WebSocket says goodbye, and the drain ends with no connection left.
        """
        w = wire(pingDelay=1)
        h2 = H2WireClient(w)
        sid = h2.request("/ping")
        h1 = w.connect()
        h1.send(get("/ping"))
        ws = w.connectWebSocket()
        self.assertEqual((w.drain.connections, w.drain.inFlight), (3, 2))
        w.drain.start()
        w.advance(1.0)
        self.assertEqual(h2.streams[sid].status, 200)
        self.assertEqual([r.code for r in h1.responses], [200])
        self.assertEqual(ws.closeCode, 1001)
        self.assertTrue(w.drain.finished)
        self.assertEqual(w.drain.connections, 0)

    def test_eventStreamWrapsUpUnderH2(self) -> None:
        """
        An event stream served over HTTP/2 is told to wrap up when the
        listeners close, as over HTTP/1.1, and ends its stream.
        """
        w = wire()
        c = H2WireClient(w)
        sid = c.request("/events")
        w.advance(0.6)
        self.assertIn(b"event: tick", c.streams[sid].body)
        w.drain.start()
        w.advance(0.1)
        self.assertIn(b"event: shutdown", c.streams[sid].body)
        self.assertTrue(c.streams[sid].ended)
        self.assertTrue(w.drain.finished)
        self.assertEqual(w.drain.longLived.outcomes, {("stream", "clean"): 1})

    def test_eventStreamCutUnderH2(self) -> None:
        """
        An event stream over HTTP/2 aborted by a second signal is counted as
        a long-lived response cut.
        """
        w = wire(drainDelay=1)
        c = H2WireClient(w)
        c.request("/events")
        w.advance(0.6)
        w.drain.start()
        w.flush()
        w.drain.forceStop()
        self.assertEqual(w.drain.longLived.outcomes, {("stream", "cut"): 1})

    def test_drainOfUnderH2(self) -> None:
        """
        L{gracesvc.drainOf} finds the drain of a request served over HTTP/2.
        """
        from gracesvc import drainOf

        found: list[object] = []

        class Finder(Resource):
            isLeaf = True

            def render_GET(self, request: object) -> bytes:
                found.append(drainOf(request))  # type: ignore[arg-type]
                return b"ok"

        w = wire(resource=Finder())
        c = H2WireClient(w)
        sid = c.request("/")
        self.assertEqual(c.streams[sid].status, 200)
        self.assertEqual(found, [w.drain])

    def test_switchedAfterTheCutRefusesEverything(self) -> None:
        """
        A connection that switches to HTTP/2 after the cut (its TLS
        handshake was late) says GOAWAY(0) and closes: no stream of it
        reaches the app.
        """
        held = Held()
        w = wire(resource=held, shutdownTimeout=2)
        early = w.connect()
        w.drain.start()
        w.clock.advance(1.95)
        self.assertTrue(w.drain.cutting)
        early.close()
        c = H2WireClient(w)
        c.request("/held")
        self.assertEqual(c.frames.goAways, [(0, 0)])
        self.assertTrue(c.closed)
        self.assertEqual(held.requests, [])
