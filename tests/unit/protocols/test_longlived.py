"""
Event streams and long polls under a drain, as a client on the wire sees
them: in-memory connections to a real L{DrainingSite}, time driven by a
L{Clock}, the stream parsed from the client's bytes as C{EventSource} would.
"""

from __future__ import annotations

import json
from random import Random
from typing import Any, cast

from klein import Klein
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http import Request
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from gracesvc._apps.demo import Ticker
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.longlived import EventStream, LongPoll, drainOf, formatEvent
from gracesvc.testing import Client, Response, Wire, get, parseEventStream

EVENT_SOURCE = "Accept: text/event-stream"


def ticking(wire: Wire) -> list[object]:
    """
    @return: the delayed calls on the wire's clock but the connections' own
        idle timeouts and head deadlines: the ticks, the polls' timeouts.
    """
    return [
        call
        for call in wire.clock.getDelayedCalls()
        if "TimeoutMixin" not in repr(call) and "_headDeadline" not in repr(call)
    ]


def captureLog(wire: Wire) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    wire.drain.log = Logger(observer=cast(ILogObserver, events.append))
    return events


def stream(client: Client) -> tuple[Response, list[dict[str, str]]]:
    """
    @return: the client's one response so far, complete or not, and the
        events of its body.
    """
    [response] = client.received
    return response, parseEventStream(response.body)


def shutdownRetry(event: dict[str, str]) -> int:
    """
    Check a C{shutdown} event as the notes specify it.

    @return: its C{retry:}.
    """
    assert event["event"] == "shutdown", event
    assert "id" not in event, event
    retry = int(event["retry"])
    assert json.loads(event["data"]) == {"reason": "shutdown", "retry": retry}
    return retry


class FormatTests(SynchronousTestCase):
    def test_fields(self) -> None:
        self.assertEqual(
            formatEvent("a\nb\r\nc\rd", event="tick", id="7", retry=1500),
            b"event: tick\nid: 7\ndata: a\ndata: b\ndata: c\ndata: d\nretry: 1500\n\n",
        )
        self.assertEqual(formatEvent(""), b"data: \n\n")
        self.assertEqual(formatEvent(retry=0), b"retry: 0\n\n")
        self.assertEqual(
            parseEventStream(formatEvent("x\ny", event="e", id="1")),
            [{"event": "e", "id": "1", "data": "x\ny"}],
        )

    def test_fieldsThatWouldBreakTheStream(self) -> None:
        for kwargs in [
            {"event": "a\nb"},
            {"id": "1\r2"},
            {"id": "1\x002"},
            {"retry": -1},
        ]:
            with self.assertRaises(ValueError):
                formatEvent("x", **kwargs)  # type: ignore[arg-type]

    def test_parserDropsAnUnfinishedEvent(self) -> None:
        self.assertEqual(
            parseEventStream(b": comment\ndata: 1\n\ndata: 2\n"), [{"data": "1"}]
        )


class EventStreamTests(SynchronousTestCase):
    def test_ticksWithIdsOnAChunkedStream(self) -> None:
        """
        C{GET /events} answers 200 at once with the event-stream headers and
        no length (so chunked), then a tick event every tick, ids from 1;
        the connection's state is C{stream}, one request in flight.
        """
        wire = Wire(tick=0.5)
        client = wire.connect()
        client.send(get("/events"))
        response, events = stream(client)
        self.assertEqual((response.code, response.complete, events), (200, False, []))
        self.assertEqual(response.headers[b"content-type"], b"text/event-stream")
        self.assertEqual(response.headers[b"cache-control"], b"no-cache")
        self.assertEqual(response.headers[b"transfer-encoding"], b"chunked")
        self.assertNotIn(b"content-length", response.headers)
        self.assertEqual((client.server.state, client.server.inFlight), ("stream", 1))
        wire.advance(1.6)
        _, events = stream(client)
        self.assertEqual(
            events,
            [
                {"event": "tick", "id": str(n), "data": json.dumps({"tick": n})}
                for n in (1, 2, 3)
            ],
        )

    def test_resumesFromLastEventId(self) -> None:
        """
        A reconnecting client's next id follows its C{Last-Event-ID}; an id
        that is not a tick's starts over.
        """
        wire = Wire(tick=0.5)
        resumed = wire.connect()
        resumed.send(get("/events", "Last-Event-ID: 41"))
        fresh = wire.connect()
        fresh.send(get("/events", "Last-Event-ID: nonsense"))
        wire.advance(1.1)
        self.assertEqual([e["id"] for e in stream(resumed)[1]], ["42", "43"])
        self.assertEqual([e["id"] for e in stream(fresh)[1]], ["1", "2"])

    def test_shutdownEventWhenTheListenersClose(self) -> None:
        """
        With a drain delay, the stream goes on ticking until the listeners
        close; then it gets a C{shutdown} event with a jittered C{retry:}
        and no C{id:}, its terminating chunk, and the connection closes: the
        drain is done at once.
        """
        wire = Wire(tick=0.5, drainDelay=1, shutdownTimeout=5)
        clients = [wire.connect() for _ in range(5)]
        for c in clients:
            c.send(get("/events"))
        wire.advance(0.6)
        done = wire.drain.start()
        wire.advance(0.95)
        for c in clients:
            response, events = stream(c)
            self.assertFalse(response.complete)
            self.assertFalse(c.closed)
            self.assertEqual([e["event"] for e in events], ["tick"] * 3)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.successResultOf(done)
        retries = set()
        for c in clients:
            response, events = stream(c)
            self.assertTrue(response.complete)
            self.assertTrue(c.protocol.data.endswith(b"0\r\n\r\n"))
            self.assertTrue(c.closed)
            self.assertEqual([e["event"] for e in events], ["tick"] * 3 + ["shutdown"])
            retry = shutdownRetry(events[-1])
            self.assertTrue(1000 <= retry <= 2000, retry)
            retries.add(retry)
        self.assertGreater(len(retries), 1, "jittered")
        self.assertEqual(wire.drain.longLived.outcomes, {("stream", "clean"): 5})
        self.assertEqual(wire.drain.requestsCut, 0)
        self.assertEqual(wire.clock.getDelayedCalls(), [], "nothing ticks on")

    def test_newStreamDuringTheDrainGetsOnlyRetry(self) -> None:
        """
        From the signal on, a new stream is 200 with only a C{retry:} field
        and ends, saying C{Connection: close}: never a 503, which would make
        C{EventSource} give up for good.
        """
        wire = Wire(drainDelay=1, shutdownTimeout=5)
        wire.drain.start()
        client = wire.connect()
        client.send(get("/events", EVENT_SOURCE))
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertEqual(response.headers[b"content-type"], b"text/event-stream")
        self.assertEqual(response.headers[b"connection"], b"close")
        [event] = parseEventStream(response.body)
        self.assertEqual(list(event), ["retry"])
        self.assertTrue(1000 <= int(event["retry"]) <= 2000)
        self.assertTrue(client.closed)
        self.assertEqual(wire.drain.longLived.outcomes, {})

    def test_applicationHeadersStayOnTheRetryAnswer(self) -> None:
        """
        A cross-origin C{EventSource} needs the application's CORS headers on
        the C{retry:} answer too, or it gives up for good.
        """

        def make(wire: Wire) -> IResource:
            class Stream(Resource):
                isLeaf = True

                def render_GET(self, request: IRequest) -> object:
                    request.setHeader(b"Access-Control-Allow-Origin", b"*")
                    EventStream(request, wire.drain)
                    return NOT_DONE_YET

            return Stream()

        wire = Wire(resource=make, drainDelay=1)
        wire.drain.start()
        client = wire.connect()
        client.send(get("/"))
        [response] = client.responses
        self.assertEqual(response.headers[b"access-control-allow-origin"], b"*")
        self.assertEqual(list(parseEventStream(response.body)[0]), ["retry"])

    def test_clientThatLeavesIsForgotten(self) -> None:
        """
        A stream whose client went away is no longer told to wrap up, and
        nothing ticks for it.
        """
        wire = Wire(tick=0.5)
        events = captureLog(wire)
        client = wire.connect()
        client.send(get("/events"))
        wire.advance(0.6)
        client.close()
        self.assertEqual(ticking(wire), [])
        wire.drain.addHook("goingAway", lambda: None)
        self.successResultOf(wire.drain.start())
        [goingAway] = [e for e in events if e.get("step") == "going_away"]
        self.assertEqual(goingAway["responses"], 0)
        self.assertEqual(wire.drain.longLived.outcomes, {})

    def test_jitterFromTheGivenRandom(self) -> None:
        """
        The retry told is C{retry} plus a random part of C{jitter}, from the
        source of randomness given.
        """
        wire = Wire()
        retries = []

        class Stream(Resource):
            isLeaf = True

            def render_GET(self, request: IRequest) -> object:
                EventStream(request, wire.drain, 3000, 50, random=Random(7))
                return NOT_DONE_YET

        wire.site.resource = Stream()
        for _ in range(2):
            c = wire.connect()
            c.send(get("/"))
            retries.append(c)
        wire.drain.start()
        wire.flush()
        expected = 3000 + Random(7).randint(0, 50)
        for c in retries:
            self.assertEqual(shutdownRetry(stream(c)[1][-1]), expected)

    def test_aPlainResourceWithALastWord(self) -> None:
        """
        A plain resource can stream too (returning C{NOT_DONE_YET}); its
        C{goingAway} callback sends a last event before the C{shutdown}
        event; sending after the end is refused.
        """
        streams: list[EventStream] = []

        def make(wire: Wire) -> IResource:
            class Stream(Resource):
                isLeaf = True

                def render_GET(self, request: IRequest) -> object:
                    s = EventStream(
                        request,
                        wire.drain,
                        goingAway=lambda s: s.send("bye", event="goodbye"),
                    )
                    s.send("hello")
                    streams.append(s)
                    return NOT_DONE_YET

            return Stream()

        wire = Wire(resource=make)
        client = wire.connect()
        client.send(get("/anything"))
        [s] = streams
        self.assertIsNone(s.lastEventId)
        ended = s.whenEnded()
        self.assertNoResult(ended)
        wire.drain.start()
        wire.flush()
        self.successResultOf(ended)
        self.successResultOf(s.whenEnded())
        events = stream(client)[1]
        self.assertEqual(
            [(e.get("event"), e["data"]) for e in events[:2]],
            [(None, "hello"), ("goodbye", "bye")],
        )
        shutdownRetry(events[2])
        self.assertTrue(s.ended)
        self.assertFalse(s.send("too late"))

    def test_failingLastWordIsLoggedAndTheStreamStillEnds(self) -> None:
        def make(wire: Wire) -> IResource:
            def fails(s: EventStream) -> None:
                raise RuntimeError("boom")

            class Stream(Resource):
                isLeaf = True

                def render_GET(self, request: IRequest) -> object:
                    EventStream(request, wire.drain, goingAway=fails)
                    return NOT_DONE_YET

            return Stream()

        wire = Wire(resource=make)
        client = wire.connect()
        client.send(get("/"))
        done = wire.drain.start()
        wire.flush()
        self.successResultOf(done)
        shutdownRetry(stream(client)[1][-1])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_applicationEndsItsStream(self) -> None:
        """
        The application may end a stream itself: a complete response, the
        connection kept alive, nothing told to it at going away.
        """
        streams: list[EventStream] = []

        def make(wire: Wire) -> IResource:
            class Stream(Resource):
                isLeaf = True

                def render_GET(self, request: IRequest) -> object:
                    streams.append(EventStream(request, wire.drain))
                    return NOT_DONE_YET

            return Stream()

        wire = Wire(resource=make)
        client = wire.connect()
        client.send(get("/"))
        streams[0].end()
        wire.flush()
        [response] = client.responses
        self.assertEqual(response.body, b"")
        self.assertEqual(client.server.state, "idle")
        self.assertFalse(client.closed)
        done = wire.drain.start()
        wire.advance(0.6)
        self.successResultOf(done)
        self.assertEqual(wire.drain.longLived.outcomes, {})

    def test_headAnswersTheHeadersAndEnds(self) -> None:
        wire = Wire()
        client = wire.connect()
        client.send(b"HEAD /events HTTP/1.1\r\nHost: test\r\n\r\n")
        self.assertIn(b"200 OK", client.protocol.data)
        self.assertIn(b"text/event-stream", client.protocol.data)
        self.assertEqual(client.server.state, "idle")


class DrainOfTests(SynchronousTestCase):
    def test_anAppServedByGracesvcFindsTheDrain(self) -> None:
        """
        An application served by C{twistd gracesvc --app} never sees the
        drain: the helpers find it from the request.
        """
        app = Klein()
        found: list[object] = []

        @app.route("/events")
        def events(request: IRequest) -> Deferred[None]:
            found.append(drainOf(request))
            stream = EventStream(request)
            stream.send("hello")
            return stream.whenEnded()

        @app.route("/poll")
        def poll(request: IRequest) -> Deferred[None]:
            return LongPoll(request).answerWith(Deferred())

        wire = Wire(resource=app.resource())
        streamClient, pollClient = wire.connect(), wire.connect()
        streamClient.send(get("/events"))
        pollClient.send(get("/poll"))
        self.assertEqual(
            (streamClient.server.state, pollClient.server.state), ("stream", "poll")
        )
        self.assertEqual(found, [wire.drain])
        done = wire.drain.start()
        wire.flush()
        self.successResultOf(done)
        received = stream(streamClient)[1]
        self.assertEqual(received[0], {"data": "hello"})
        shutdownRetry(received[1])
        [answer] = pollClient.responses
        self.assertEqual(json.loads(answer.body)["status"], "reconnect")
        # Klein saw the requests finished: it did not finish them again.
        self.assertEqual(self.flushWarnings(), [])

    def test_outsideADrainingSite(self) -> None:
        request = DummyRequest([b"events"])
        with self.assertRaises(ValueError) as caught:
            EventStream(cast(IRequest, request))
        self.assertIn("not served by a DrainingSite", str(caught.exception))


class StreamAtTheCutTests(SynchronousTestCase):
    """
    What the cut does to a long response the drain could not wrap up: an
    application's own stream, not an L{EventStream}, marked as one.
    """

    def wire(self, kind: str, writeHeaders: bool) -> Wire:
        def make(wire: Wire) -> IResource:
            class Own(Resource):
                isLeaf = True

                def render_GET(self, request: Request) -> object:
                    if writeHeaders:
                        request.write(b"")
                    channel = request.channel
                    assert isinstance(channel, DrainingChannel)
                    channel.longResponseStarted(request, kind)  # type: ignore[arg-type]
                    return NOT_DONE_YET

            return Own()

        return Wire(resource=make, shutdownTimeout=1)

    def test_streamIsAbortedNeverAnswered503(self) -> None:
        """
        At the cut, a stream is aborted, even one that has not written its
        headers yet: never a 503 into it.  It counts as cut.
        """
        for writeHeaders in (True, False):
            wire = self.wire("stream", writeHeaders)
            client = wire.connect()
            client.send(get("/"))
            self.assertEqual(client.server.state, "stream")
            done = wire.drain.start()
            wire.advance(1)
            self.successResultOf(done)
            self.assertTrue(client.closed)
            self.assertNotIn(b"503", client.protocol.data)
            self.assertEqual(wire.drain.requestsCut, 1)
            self.assertEqual(wire.drain.longLived.outcomes, {("stream", "cut"): 1})

    def test_pollNotAnsweredGets503(self) -> None:
        wire = self.wire("poll", writeHeaders=False)
        client = wire.connect()
        client.send(get("/"))
        self.assertEqual(client.server.state, "poll")
        wire.drain.start()
        wire.advance(1)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(wire.drain.longLived.outcomes, {("poll", "cut"): 1})

    def test_secondSignalCutsStreams(self) -> None:
        wire = Wire(tick=0.5, drainDelay=1)
        client = wire.connect()
        client.send(get("/events"))
        wire.drain.start("SIGINT")
        wire.drain.forceStop()
        wire.flush()
        # iosim delivers the abort as a close: no terminating chunk.
        self.assertFalse(stream(client)[0].complete)
        self.assertEqual(wire.drain.longLived.outcomes, {("stream", "cut"): 1})

    def test_eventSourceAnsweredAtTheCutWithRetry(self) -> None:
        """
        A request that asks for an event stream and is unanswered at the cut
        (or read after it) gets 200 with a C{retry:} of about the 503's
        C{Retry-After}, not a 503 that would end C{EventSource} for good.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=2)
        client = wire.connect()
        client.send(get("/ping", EVENT_SOURCE) + get("/events", EVENT_SOURCE))
        wire.drain.start()
        wire.advance(2)
        responses = client.responses
        self.assertEqual([r.code for r in responses], [200, 200])
        for response in responses:
            self.assertEqual(response.headers[b"content-type"], b"text/event-stream")
            [event] = parseEventStream(response.body)
            self.assertTrue(2000 <= int(event["retry"]) < 3000, event)


class LongPollTests(SynchronousTestCase):
    def test_answeredAtTheNextTick(self) -> None:
        wire = Wire(tick=0.5)
        client = wire.connect()
        client.send(get("/poll"))
        self.assertEqual((client.server.state, client.server.inFlight), ("poll", 1))
        wire.advance(0.6)
        [response] = client.responses
        self.assertEqual(
            (response.code, json.loads(response.body)),
            (200, {"status": "tick", "tick": 1}),
        )
        self.assertEqual(response.headers[b"content-type"], b"application/json")
        self.assertEqual(client.server.state, "idle")
        self.assertEqual(ticking(wire), [])
        self.assertEqual(self.flushWarnings(), [])

    def test_answeredAtOnceWhenTheListenersClose(self) -> None:
        """
        A pending poll is still waiting during the drain delay, and is
        answered the moment the listeners close: 200, a jittered C{retry},
        C{Connection: close}.
        """
        wire = Wire(tick=60, drainDelay=1, shutdownTimeout=5)
        clients = [wire.connect() for _ in range(10)]
        for c in clients:
            c.send(get("/poll"))
        done = wire.drain.start()
        wire.advance(0.95)
        self.assertEqual([c.responses for c in clients], [[]] * 10)
        wire.advance(0.1)
        self.successResultOf(done)
        retries = set()
        for c in clients:
            [response] = c.responses
            body = json.loads(response.body)
            self.assertEqual(
                (response.code, body["status"], response.headers[b"connection"]),
                (200, "reconnect", b"close"),
            )
            self.assertTrue(1000 <= body["retry"] <= 2000)
            retries.add(body["retry"])
            self.assertTrue(c.closed)
        self.assertGreater(len(retries), 1)
        self.assertEqual(wire.drain.longLived.outcomes, {("poll", "clean"): 10})
        self.assertEqual(wire.clock.getDelayedCalls(), [])

    def test_newPollDuringTheDrainAnsweredAtOnce(self) -> None:
        wire = Wire(tick=60, drainDelay=1)
        wire.drain.start()
        client = wire.connect()
        client.send(get("/poll"))
        [response] = client.responses
        self.assertEqual(json.loads(response.body)["status"], "reconnect")
        self.assertEqual(response.headers[b"connection"], b"close")

    def test_timesOut(self) -> None:
        wire = Wire(tick=60)
        client = wire.connect()
        client.send(get("/poll"))
        wire.clock.advance(29.9)
        wire.flush()
        self.assertEqual(client.responses, [])
        wire.clock.advance(0.1)
        wire.flush()
        [response] = client.responses
        self.assertEqual(json.loads(response.body), {"status": "timeout"})

    def test_clientThatLeavesCancelsTheWait(self) -> None:
        wire = Wire(tick=60)
        client = wire.connect()
        client.send(get("/poll"))
        client.close()
        self.assertEqual(ticking(wire), [])
        self.successResultOf(wire.drain.start())

    def kleinWire(self, news: Deferred[bytes], **kwargs: Any) -> Wire:
        def make(wire: Wire) -> IResource:
            app = Klein()

            @app.route("/poll")
            def poll(request: IRequest) -> Deferred[None]:
                return LongPoll(request, wire.drain, **kwargs).answerWith(news)

            return app.resource()

        return Wire(resource=make)

    def test_ownReconnectBodyAndNewsCancelled(self) -> None:
        """
        The application picks the body the drain answers with; its own
        Deferred is cancelled then.
        """
        cancelled: list[object] = []
        news: Deferred[bytes] = Deferred(cancelled.append)
        wire = self.kleinWire(
            news,
            retry=0,
            jitter=0,
            reconnect=lambda ms: b"again in %d" % (ms,),
            contentType=b"text/plain",
        )
        client = wire.connect()
        client.send(get("/poll"))
        wire.drain.start()
        wire.flush()
        [response] = client.responses
        self.assertEqual(response.body, b"again in 0")
        self.assertEqual(response.headers[b"content-type"], b"text/plain")
        self.assertEqual(cancelled, [news])

    def test_failingNewsIsTheHandlersError(self) -> None:
        """
        A Deferred that fails reaches the handler's error handling: Klein's
        500.
        """
        news: Deferred[bytes] = Deferred()
        wire = self.kleinWire(news)
        client = wire.connect()
        client.send(get("/poll"))
        news.errback(RuntimeError("no news"))
        wire.flush()
        [response] = client.responses
        self.assertEqual(response.code, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        done = wire.drain.start()
        wire.advance(0.6)
        self.successResultOf(done)

    def test_answerOnce(self) -> None:
        polls: list[LongPoll] = []

        def make(wire: Wire) -> IResource:
            class Poll(Resource):
                isLeaf = True

                def render_GET(self, request: IRequest) -> object:
                    polls.append(LongPoll(request, wire.drain))
                    return NOT_DONE_YET

            return Poll()

        wire = Wire(resource=make)
        client = wire.connect()
        client.send(get("/"))
        [poll] = polls
        self.assertTrue(poll.answer(b"first"))
        self.assertFalse(poll.answer(b"second"))
        wire.flush()
        self.assertEqual([r.body for r in client.responses], [b"first"])
        done = wire.drain.start()
        wire.advance(0.6)
        self.successResultOf(done)
        self.assertEqual(wire.drain.longLived.outcomes, {})


class TickerTests(SynchronousTestCase):
    def test_failingListenerIsLoggedAndTheOthersTick(self) -> None:
        clock = Clock()
        ticker = Ticker(clock, 1)
        ticks: list[int] = []

        def fails(n: int) -> None:
            raise RuntimeError("boom")

        ticker.subscribe(fails)
        stop = ticker.subscribe(ticks.append)
        clock.pump([0.7] * 3)
        self.assertEqual(ticks, [1, 2])
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 2)
        self.assertEqual([c.getTime() for c in clock.getDelayedCalls()], [3])
        stop()
        self.assertEqual(len(clock.getDelayedCalls()), 1)


class LogTests(SynchronousTestCase):
    def test_goingAwayAndOutcomesLogged(self) -> None:
        """
        The C{going_away} step says how many long responses were told and
        what the connections were doing; a C{longlived} step before C{done}
        sums up how they ended.
        """
        wire = Wire(tick=60)
        events = captureLog(wire)
        for path in ("/events", "/events", "/poll"):
            wire.connect().send(get(path))
        wire.drain.start()
        wire.flush()
        steps = {e["step"]: e for e in events}
        self.assertEqual(list(steps)[-2:], ["longlived", "done"])
        self.assertEqual(steps["going_away"]["responses"], 3)
        self.assertEqual(steps["going_away"]["states"], {"stream": 2, "poll": 1})
        self.assertEqual(steps["going_away"]["connectionStates"], "1 poll, 2 stream")
        self.assertEqual(
            steps["longlived"]["outcomes"],
            {
                "poll": {"clean": 1, "timeout": 0, "cut": 0},
                "stream": {"clean": 2, "timeout": 0, "cut": 0},
            },
        )
