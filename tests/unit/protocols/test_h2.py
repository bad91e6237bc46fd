"""
HTTP/2 under the drain, as a frame-level client on the wire sees it:
in-memory HTTP/2 connections (L{gracesvc.testing.h2.H2WireClient}) to a
real L{DrainingSite}, time driven by a L{Clock}.
"""

from __future__ import annotations

from hyperframe.frame import (
    GoAwayFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from gracesvc._metrics.collectors import H2Collector
from gracesvc._protocols.h2 import PING_DATA
from gracesvc.testing import Wire, get, samples
from gracesvc.testing.h2 import PREFACE, H2WireClient

REFUSED_STREAM = 7
CANCEL = 8
ENHANCE_YOUR_CALM = 11


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
    return Wire(h2c=True, **kwargs)  # type: ignore[arg-type]


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


def kinds(c: H2WireClient) -> list[str]:
    """
    @return: the kinds of the frames C{c} read, in order, with their stream
        (C{"DATA1"}, C{"PING"}, C{"GOAWAY"}), SETTINGS and WINDOW_UPDATE
        left out.
    """
    names = []
    for _, frame in c.frames.received:
        if isinstance(frame, (SettingsFrame, WindowUpdateFrame)):
            continue
        name = type(frame).__name__.removesuffix("Frame").upper()
        names.append(name + (str(frame.stream_id) if frame.stream_id else ""))
    return names


class DrainTests(SynchronousTestCase):
    def test_quietDrain(self) -> None:
        """
        At the drain nothing is sent at once; the streams in flight are
        answered; then a PING, and on its ACK one GOAWAY with the highest
        stream dispatched, the last frame: the connection closes and the
        drain is done.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        sids = [c.request("/ping") for _ in range(2)]
        w.drain.start()
        w.flush()
        self.assertEqual((c.frames.goAways, c.frames.pings), ([], []))
        w.advance(1.0)
        self.assertEqual([c.streams[s].status for s in sids], [200, 200])
        self.assertEqual(c.frames.goAways, [(3, 0)])
        self.assertEqual(c.frames.pings, [PING_DATA])
        self.assertEqual(kinds(c)[-4:], ["DATA1", "DATA3", "PING", "GOAWAY"], kinds(c))
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)
        self.assertEqual(w.drain.completedDuringDrain, 2)
        self.assertEqual(w.drain.requestsCut, 0)
        self.assertEqual(w.site.h2Tally.goAways["acked"], 1)

    def test_nothingAfterTheGoAway(self) -> None:
        """
        What the client sends after the GOAWAY (a PING, a new stream) is
        not answered: an h2-based client raises on any frame after a
        GOAWAY.
        """
        w = wire(shutdownTimeout=10)
        c = H2WireClient(w)
        c.request("/healthz")
        w.drain.start()
        w.flush()
        self.assertEqual(kinds(c)[-1], "GOAWAY")
        count = len(c.frames.received)
        c.send(PingFrame(0, opaque_data=b"87654321").serialize())
        c.request("/healthz")
        self.assertEqual(len(c.frames.received), count)

    def test_newStreamsParked(self) -> None:
        """
        A stream opened once the drain has begun is parked: it never
        reaches the application and is never answered (no RST_STREAM,
        which httpx turns into an error); the connection's window is given
        its body back, its stream's is not; the GOAWAY's last stream id,
        below it, tells the client to retry it elsewhere.
        """
        held = Held()
        w = wire(resource=held)
        c = H2WireClient(w)
        first = c.request("/held")
        w.drain.start()
        w.flush()
        late = c.request("/held", method="POST", body=b"x" * 40000)
        self.assertEqual(len(held.requests), 1)
        stream = c.streams[late]
        self.assertEqual((stream.status, stream.reset), (None, None))
        self.assertIsNotNone(c.frames.firstAt(WindowUpdateFrame, stream_id=0))
        self.assertIsNone(c.frames.firstAt(WindowUpdateFrame, stream_id=late))
        self.assertEqual(w.drain.inFlight, 1)
        self.assertEqual(w.site.h2Tally.parked, 1)
        held.requests[0].finish()  # type: ignore[attr-defined]
        w.advance(0.1)
        self.assertEqual(c.streams[first].status, 200)
        self.assertEqual(c.frames.goAways, [(first, 0)])
        self.assertIsNone(c.streams[late].reset)
        self.assertTrue(w.drain.finished)

    def test_unansweredPingWaitsAtLeast50ms(self) -> None:
        """
        A client that never answers the PING gets the GOAWAY
        clamp(4 x the SETTINGS round trip, 50 ms, 1 s) after it: here the
        round trip is nothing, so 50 ms.
        """
        w = wire(pingDelay=0.5, shutdownTimeout=5)
        c = H2WireClient(w, ackPings=False)
        sid = c.request("/ping")
        w.drain.start()
        w.advance(0.5)
        self.assertEqual(c.streams[sid].status, 200)
        pingAt = c.frames.firstAt(PingFrame)
        self.assertIsNotNone(pingAt)
        w.advance(0.04)
        self.assertEqual(c.frames.goAways, [])
        w.advance(0.02)
        self.assertEqual(c.frames.goAways, [(sid, 0)])
        goAwayAt = c.frames.firstAt(GoAwayFrame)
        assert goAwayAt is not None and pingAt is not None
        self.assertAlmostEqual(goAwayAt - pingAt, 0.05, delta=0.011)
        self.assertEqual(w.site.h2Tally.goAways["timer"], 1)

    def test_pingWaitFollowsTheRoundTrip(self) -> None:
        """
        The wait for the PING's ACK is four round trips of the connection's
        first SETTINGS, up to 1 s.
        """
        for roundTrip, wait in [(0.1, 0.4), (0.5, 1.0)]:
            w = wire(shutdownTimeout=10)
            c = H2WireClient(w, ackPings=False, ackSettingsAfter=roundTrip)
            w.clock.advance(roundTrip)
            w.flush()
            w.drain.start()
            w.flush()
            pingAt = c.frames.firstAt(PingFrame)
            w.advance(wait - 0.02)
            self.assertEqual(c.frames.goAways, [])
            w.advance(0.04)
            self.assertEqual(c.frames.goAways, [(0, 0)])
            goAwayAt = c.frames.firstAt(GoAwayFrame)
            assert goAwayAt is not None and pingAt is not None
            self.assertAlmostEqual(goAwayAt - pingAt, wait, delta=0.011)

    def test_pingWaitBoundedByTheCap(self) -> None:
        """
        With the cap near, the GOAWAY comes by half the time left to it.
        """
        w = wire(shutdownTimeout=0.5)
        c = H2WireClient(w, ackPings=False, ackSettingsAfter=0.3)
        w.advance(0.31)
        w.drain.start()
        w.advance(0.3)
        at = c.frames.firstAt(GoAwayFrame)
        assert at is not None and w.drain.startedAt is not None
        self.assertLessEqual(at - w.drain.startedAt, 0.25 + 0.011)
        self.assertTrue(c.closed)

    def test_idleConnectionClosesOnPingAck(self) -> None:
        """
        An idle connection closes as soon as its client answered the PING.
        """
        w = wire()
        c = H2WireClient(w)
        c.request("/healthz")
        w.drain.start()
        w.flush()
        self.assertEqual(c.frames.goAways, [(1, 0)])
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)
        assert w.drain.finishedAt is not None and w.drain.startedAt is not None
        self.assertEqual(w.drain.finishedAt, w.drain.startedAt)

    def test_connectionDuringTheDelayServesItsFirstRead(self) -> None:
        """
        A connection opened during the drain delay (the listeners still
        open) serves the streams its client sent with its preface, as a
        new HTTP/1.1 connection serves its first request; later ones are
        parked.
        """
        w = wire(drainDelay=1.0)
        w.drain.start()
        c = H2WireClient(w, connect=False)
        first, data = c.frames.request("/healthz")
        c.send(c.frames.preface() + data)
        self.assertEqual(c.streams[first].status, 200)
        self.assertEqual(c.frames.goAways, [(first, 0)])
        self.assertTrue(c.closed)

    def test_clientGoAwayFinishesStreams(self) -> None:
        """
        A client's GOAWAY(NO_ERROR) with streams open, as Node's
        C{session.close()} sends: they are answered, then the quiet close.
        No drain involved.
        """
        w = wire(pingDelay=1)
        c = H2WireClient(w)
        sids = [c.request("/ping") for _ in range(2)]
        c.send(c.frames.goAway(0))
        self.assertEqual(c.frames.goAways, [])
        self.assertEqual(w.drain.inFlight, 2)
        w.advance(1.0)
        self.assertEqual([c.streams[s].status for s in sids], [200, 200])
        self.assertEqual(c.frames.goAways, [(3, 0)])
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
        RST_STREAM(CANCEL) for one mid-response; then the PING and the
        GOAWAY, after all of them.  The 503 and the cancel are counted as
        cut, the refusal as refused.
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
        self.assertEqual(kinds(c)[-2:], ["PING", "GOAWAY"])
        self.assertEqual(c.frames.goAways, [(arriving, 0)])
        self.assertTrue(c.closed)
        self.assertTrue(w.drain.finished)

    def test_secondSignalAborts(self) -> None:
        """
        A second signal aborts the connection, its streams counted as cut;
        the GOAWAY is written first.
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
        self.assertEqual(c.frames.goAways, [(1, 0)])
        self.assertEqual(w.site.h2Tally.goAways, {"acked": 0, "timer": 0, "abort": 1})

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
        The GOAWAYs sent, the streams parked and the connections by
        protocol are exposed.
        """
        held = Held()
        w = wire(resource=held)
        w.metrics.registry.register(H2Collector(w.drain, w.site.h2Tally))
        c = H2WireClient(w)
        c.request("/held")
        w.connect().send(get("/healthz"))
        before = samples(w.metrics.exposition())
        byProtocol = "gracesvc_open_connections_by_protocol"
        self.assertEqual(before[(byProtocol, (("protocol", "h2"),))], 1)
        self.assertEqual(before[(byProtocol, (("protocol", "http/1.1"),))], 1)
        w.drain.start()
        w.flush()
        c.request("/held")
        held.requests[0].finish()  # type: ignore[attr-defined]
        w.advance(0.1)
        after = samples(w.metrics.exposition())
        goAways = "gracesvc_h2_goaway_sent_total"
        self.assertEqual(after[(goAways, (("phase", "acked"),))], 1)
        self.assertEqual(after[(goAways, (("phase", "timer"),))], 0)
        self.assertEqual(after[("gracesvc_h2_streams_parked_total", ())], 1)
        self.assertEqual(after[("gracesvc_h2_ping_rtt_seconds_count", ())], 1)

    def test_pingAckOfAnotherPingIgnored(self) -> None:
        """
        Only the ACK of the drain's own PING brings the GOAWAY.
        """
        w = wire()
        c = H2WireClient(w, ackPings=False)
        c.request("/healthz")
        w.drain.start()
        w.flush()
        c.send(PingFrame(0, opaque_data=b"12345678", flags=["ACK"]).serialize())
        self.assertEqual(c.frames.goAways, [])


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
        w.advance(0.01)
        self.assertTrue(flood.closed)
        self.assertTrue(flood.frames.goAways)
        self.assertEqual((w.drain.connections, w.drain.inFlight), (1, 1))
        self.assertEqual(w.site.h2Tally.closedFor["protocol_error"], 1)
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
        gets the quiet close (a PING, the GOAWAY).
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
        self.assertEqual(kinds(c)[-2:], ["PING", "GOAWAY"])
        self.assertEqual(c.frames.goAways, [(sid, 0)])
        self.assertTrue(c.closed)

    def test_pingsAreNotActivity(self) -> None:
        """
        A client that only sends PINGs does not keep an idle connection
        open: the idle timeout (the keep-alive timeout, 75 s) counts from
        its last stream.
        """
        w = wire()
        c = H2WireClient(w)
        c.request("/healthz")
        for _ in range(8):
            w.clock.advance(10)
            c.send(PingFrame(0, opaque_data=b"keepaliv").serialize())
        w.clock.advance(1)
        w.flush()
        self.assertEqual(c.frames.goAways, [(1, 0)])
        self.assertTrue(c.closed)

    def test_streamsAreActivity(self) -> None:
        """
        A request restarts the idle timeout.
        """
        w = wire()
        c = H2WireClient(w)
        for _ in range(3):
            w.clock.advance(50)
            c.request("/healthz")
        self.assertEqual(c.frames.goAways, [])
        self.assertFalse(c.closed)

    def test_prefaceDeadline(self) -> None:
        """
        A client that trickles the cleartext preface is closed when its
        deadline (10 s from its first byte) passes, preface or not.
        """
        w = wire()
        c = H2WireClient(w, connect=False)
        preface = c.frames.preface()
        for i in range(9):
            c.send(preface[i : i + 1])
            w.clock.advance(1.0)
        self.assertFalse(c.closed)
        w.clock.advance(1.0)
        w.flush()
        self.assertTrue(c.closed)
        self.assertEqual(w.drain.connections, 0)

    def test_prefaceDeadlineAfterTheSwitch(self) -> None:
        """
        The deadline holds after the switch to HTTP/2 too: a client that
        sent the 24 bytes but never its SETTINGS is closed 10 s after its
        first byte, and counted.
        """
        w = wire()
        c = H2WireClient(w, connect=False)
        c.send(PREFACE)
        w.clock.advance(9.9)
        self.assertFalse(c.closed)
        w.clock.advance(0.2)
        w.flush()
        self.assertTrue(c.closed)
        self.assertEqual(w.site.h2Tally.closedFor["preface_timeout"], 1)

    def test_prefaceDeadlineAfterALPN(self) -> None:
        """
        Over TLS, the deadline starts when the handshake chose h2.
        """
        w = wire()
        c = H2WireClient(w, connect=False, tls=True)
        c.server.handshakeCompleted()
        w.clock.advance(10.1)
        w.flush()
        self.assertTrue(c.closed)

    def test_completePrefaceDisarmsTheDeadline(self) -> None:
        """
        Once the client's SETTINGS arrived, the deadline is gone.
        """
        w = wire()
        c = H2WireClient(w)
        w.clock.advance(30)
        w.flush()
        self.assertFalse(c.closed)

    def test_settingsFlood(self) -> None:
        """
        A client that sends SETTINGS (or PINGs) faster than allowed, even
        one that reads every ACK: GOAWAY(ENHANCE_YOUR_CALM), closed.
        """
        for frame in [SettingsFrame(0), PingFrame(0, opaque_data=b"flooding")]:
            w = wire()
            c = H2WireClient(w)
            c.send(frame.serialize() * 1500)
            w.advance(0.1)
            self.assertEqual(c.frames.goAways[-1:], [(0, ENHANCE_YOUR_CALM)])
            self.assertTrue(c.closed)
            self.assertEqual(w.site.h2Tally.closedFor["control_flood"], 1)

    def test_controlFramesAtAnHonestRate(self) -> None:
        """
        The same frames at 50 a second, for a minute: served.
        """
        w = wire()
        c = H2WireClient(w)
        for _ in range(600):
            c.send(PingFrame(0, opaque_data=b"friendly").serialize() * 5)
            w.clock.advance(0.1)
        self.assertEqual(c.frames.goAways, [])
        self.assertEqual(len(c.frames.pings), 0)
        self.assertFalse(c.closed)

    def test_priorityForIdleStreamsKeptNowhere(self) -> None:
        """
        PRIORITY frames for streams that never open do not grow the
        priority tree, and count as control frames.
        """
        w = wire()
        c = H2WireClient(w)
        frames = b"".join(
            PriorityFrame(sid, depends_on=0, stream_weight=16).serialize()
            for sid in range(1, 2600, 2)
        )
        c.send(frames)
        w.advance(0.1)
        self.assertEqual(c.frames.goAways[-1:], [(0, ENHANCE_YOUR_CALM)])

    def test_framesPerTurn(self) -> None:
        """
        One read holding more frames than a turn allows (256) is handed to
        h2 a turn at a time: the rest waits for the next turn, and the
        transport is not read meanwhile.
        """
        w = wire()
        c = H2WireClient(w)
        written = len(b"".join(c.serverTransport.stream))
        ack = PingFrame(0, opaque_data=b"turnturn", flags=["ACK"]).serialize()
        c.server.dataReceived(PingFrame(0, opaque_data=b"turnturn").serialize() * 600)
        now = b"".join(c.serverTransport.stream)[written:]
        self.assertEqual(now.count(ack), 256)
        w.flush()
        acks = [f for _, f in c.frames.received if isinstance(f, PingFrame)]
        self.assertEqual(len(acks), 600)
        self.assertFalse(c.closed)

    def test_rapidReset(self) -> None:
        """
        Streams opened and reset at once (CVE-2023-44487): Twisted's bucket
        of resets (1,000 at once) gives GOAWAY(ENHANCE_YOUR_CALM).
        """
        w = wire(pingDelay=10)
        c = H2WireClient(w)
        for _ in range(1100):
            sid, data = c.frames.request("/ping")
            c.clientTransport.write(
                data + RstStreamFrame(sid, error_code=CANCEL).serialize()
            )
            if c.closed:
                break
            w.flush()
        self.assertEqual(c.frames.goAways[-1][1], ENHANCE_YOUR_CALM)
        self.assertTrue(c.closed)
        self.assertEqual(w.site.h2Tally.closedFor["rapid_reset"], 1)
        self.assertEqual(w.drain.inFlight, 0)

    def test_requestAndItsResetInOneRead(self) -> None:
        """
        A request and its reset read together: the request never reaches
        the application (h2 has closed the stream before the handler could
        answer it), and nothing fails.
        """
        held = Held()
        w = wire(resource=held)
        c = H2WireClient(w)
        sid, data = c.frames.request("/held")
        c.send(data + RstStreamFrame(sid, error_code=CANCEL).serialize())
        self.assertEqual(held.requests, [])
        self.assertEqual(w.drain.inFlight, 0)
        self.assertEqual(self.flushLoggedErrors(), [])
        c.request("/held")
        self.assertEqual(len(held.requests), 1)


class BoundedOutputTests(SynchronousTestCase):
    def writer(self, chunks: int, size: int = 65536) -> Resource:
        class Writer(Resource):
            isLeaf = True

            def __init__(self) -> None:
                super().__init__()
                self.requests: list[object] = []

            def render_GET(self, request: object) -> object:
                self.requests.append(request)
                for _ in range(chunks):
                    request.write(b"x" * size)  # type: ignore[attr-defined]
                return NOT_DONE_YET

        return Writer()

    def test_bigWriteToAReaderPasses(self) -> None:
        """
        A 1.5 MiB response written at once (more than a stream may have
        written while blocked) to a client that reads: all of it arrives.
        """
        w = wire(resource=self.writer(1, 3 << 19))
        c = H2WireClient(w)
        sid = c.request("/")
        w.advance(1)
        self.assertEqual(len(c.streams[sid].body), 3 << 19)
        self.assertIsNone(c.streams[sid].reset)

    def test_writesToAClientThatDoesNotOpenItsWindow(self) -> None:
        """
        A client that never opens its window while the application keeps
        writing: past 1 MiB written while blocked, the stream is reset
        (CANCEL) and its queue dropped; the connection serves on.
        """
        w = wire(resource=self.writer(40))
        c = H2WireClient(w, openWindows=False)
        sid = c.request("/")
        w.advance(0.5)
        self.assertEqual(c.streams[sid].reset, CANCEL)
        self.assertLessEqual(len(c.streams[sid].body), 65535)
        self.assertEqual(w.site.h2Tally.streamsCancelled["buffer"], 1)
        self.assertEqual(w.drain.inFlight, 0)
        self.assertFalse(c.closed)

    def test_connectionBuffer(self) -> None:
        """
        Over all its streams, a connection holds at most 4 MiB written while
        blocked.
        """
        w = wire(resource=self.writer(12))
        c = H2WireClient(w, openWindows=False)
        sids = [c.request("/") for _ in range(8)]
        w.advance(0.5)
        self.assertGreaterEqual([c.streams[s].reset for s in sids].count(CANCEL), 2)

    def test_stalledStream(self) -> None:
        """
        A stream blocked with bytes queued for 60 s is reset.
        """
        w = wire(resource=self.writer(4))
        c = H2WireClient(w, openWindows=False)
        sid = c.request("/")
        w.advance(59)
        self.assertIsNone(c.streams[sid].reset)
        w.advance(1.1)
        self.assertEqual(c.streams[sid].reset, CANCEL)
        self.assertEqual(w.site.h2Tally.streamsCancelled["stalled"], 1)


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
