"""
The drain's invariants on generated client programs, in memory.

The in-memory twin of C{tests/e2e/test_property.py}: Hypothesis drives
clients of a L{DrainingSite} on a L{Clock} (connect, send a whole request,
part of one, pipeline two, open an event stream, long poll, close, let time
pass; open a WebSocket to C{/ws}, send on it, close it or drop it, with a
client that answers the server's Close or one that never does) with the
drain starting, and sometimes forced, in between, and checks after every
step and at the end what a user relies on:

  1. every request sent whole on a connection the server had not closed
     gets exactly one complete response, its normal answer or a 503 with
     C{Retry-After}, in order;
  2. every response written after the drain began says C{Connection:
     close};
  3. the drain is done by the cap, and at once when forced;
  4. nothing is logged as a failure;
  5. a WebSocket gets only WebSocket frames after its 101 (never an HTTP
     response, never a protocol error): the echo of each message it sent,
     then, when the drain goes away (not before the listeners close), the
     goodbye and a Close 1001 with its reason, and no data after it; it is
     closed as soon as its client answers the Close, at the close timeout
     if it never does, and never later than the cut;
  6. a WebSocket upgrade asked for after the signal gets a 503 with
     C{Retry-After} and C{Connection: close}.
  7. an event stream is 200 C{text/event-stream}, never a 503; its ticks
     are numbered 1, 2, ...; one opened before the drain goes on until the
     listeners close, then ends with a C{shutdown} event (a C{retry:}, no
     C{id:}) and a complete response, unless forced; one the server began
     to answer after the drain began (sent after it, or pipelined behind a
     slower response) is only a C{retry:}.

An example takes milliseconds, so the default run tries many, derandomized
so that C{make check} gives the same verdict every time;
C{GRACESVC_PROPERTY_EXAMPLES=n} asks for n random ones.
"""

from __future__ import annotations

import os
from typing import Any, cast

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.logger import ILogObserver, Logger
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._protocols.websocket import DrainingWebSocket, WebSocketPolicy
from gracesvc.testing import (
    Client,
    Response,
    WebSocketClient,
    Wire,
    get,
    parseEventStream,
)

EXAMPLES = int(os.environ.get("GRACESVC_PROPERTY_EXAMPLES") or 0)

#: Each kind of request and its normal answer's status.
REQUESTS = {
    "ping": (get("/ping"), 200),
    "healthz": (get("/healthz"), 200),
    "missing": (get("/missing"), 404),
    "close": (get("/ping", "Connection: close"), 200),
    "poll": (get("/poll"), 200),
}

#: What an event stream is owed.
STREAM = "stream"


class Conversation:
    """
    One client connection and what the server owes it.

    @ivar owed: the normal answer's status for each request sent whole, or
        L{STREAM} for an event stream.
    @ivar done: the client sends nothing more (it sent part of a request,
        asked for the connection to close, or opened an event stream).
    @ivar beforeDrain: how many responses had begun when the drain began.
    """

    def __init__(self, client: Client) -> None:
        self.client = client
        self.owed: list[int | str] = []
        self.done = False
        self.beforeDrain: int | None = None


class Socket:
    """
    One WebSocket client and what the server owes it.

    @ivar sent: the messages it sent while open, each owed an echo.
    @ivar closedByClient: it sent a Close of its own, or dropped TCP.
    """

    def __init__(self, client: WebSocketClient, askedAt: float | None) -> None:
        self.client = client
        self.askedAt = askedAt
        self.sent: list[str] = []
        self.closedByClient = False


class DrainMachine(RuleBasedStateMachine):
    """
    Clients of one L{Wire}, and what each is owed.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conversations: list[Conversation] = []
        self.sockets: list[Socket] = []
        self.startedAt: float | None = None
        self.forced = False
        self.forcedAt: float | None = None
        self.failures: list[dict[str, Any]] = []
        self.wire = Wire()

    @initialize(
        pingDelay=st.sampled_from([0, 0.3, 1.0, 3.0]),
        drainDelay=st.sampled_from([0, 0.4, 1.5]),
        shutdownTimeout=st.sampled_from([1.0, 2.0, 5.0]),
        closeTimeout=st.sampled_from([0.3, 1.0, 3.0]),
        tick=st.sampled_from([0.3, 10.0]),
    )
    def configure(
        self,
        pingDelay: float,
        drainDelay: float,
        shutdownTimeout: float,
        closeTimeout: float,
        tick: float,
    ) -> None:
        self.wire = Wire(
            shutdownTimeout=shutdownTimeout,
            drainDelay=min(drainDelay, shutdownTimeout / 2),
            pingDelay=pingDelay,
            webSocketPolicy=WebSocketPolicy(closeTimeout=closeTimeout),
            tick=tick,
        )

        def observe(event: dict[str, Any]) -> None:
            if event.get("log_failure") is not None:
                self.failures.append(event)

        observer = cast(ILogObserver, observe)
        self.wire.drain.log = Logger(observer=observer)
        self.savedLog = DrainingWebSocket.log
        DrainingWebSocket.log = Logger(observer=observer)

    def sender(self, index: int) -> Conversation | None:
        """
        @return: the conversation at C{index}, if its client may still send.
        """
        if not self.conversations:
            return None
        c = self.conversations[index % len(self.conversations)]
        return None if c.done or c.client.closed else c

    @precondition(lambda self: len(self.conversations) < 4)
    @rule()
    def connect(self) -> None:
        if self.wire.drain.listenersClosed:
            return  # refused: the listener is closed
        c = Conversation(self.wire.connect())
        if self.startedAt is not None:
            c.beforeDrain = 0
        self.conversations.append(c)

    @rule(index=st.integers(0, 3), kind=st.sampled_from(sorted(REQUESTS)))
    def send(self, index: int, kind: str) -> None:
        c = self.sender(index)
        if c is not None:
            data, code = REQUESTS[kind]
            c.owed.append(code)
            c.done = kind == "close"
            c.client.send(data)

    @rule(index=st.integers(0, 3))
    def pipeline(self, index: int) -> None:
        c = self.sender(index)
        if c is not None:
            c.owed += [200, 200]
            c.client.send(get("/healthz") + get("/ping"))

    @rule(index=st.integers(0, 3))
    def openStream(self, index: int) -> None:
        c = self.sender(index)
        if c is not None:
            c.owed.append(STREAM)
            c.done = True
            c.client.send(get("/events", "Accept: text/event-stream"))

    @rule(index=st.integers(0, 3), length=st.integers(1, 30))
    def sendPart(self, index: int, length: int) -> None:
        c = self.sender(index)
        if c is not None:
            c.done = True
            c.client.send(get("/ping")[:length])

    @rule(index=st.integers(0, 3))
    def close(self, index: int) -> None:
        c = self.sender(index)
        if c is not None:
            self.conversations.remove(c)
            c.client.close()

    @precondition(lambda self: len(self.sockets) < 4)
    @rule(answersClose=st.booleans())
    def connectWebSocket(self, answersClose: bool) -> None:
        if self.wire.drain.listenersClosed:
            return  # refused: the listener is closed
        socket = Socket(
            self.wire.connectWebSocket(answersClose=answersClose), self.startedAt
        )
        self.sockets.append(socket)

    def openSocket(self, index: int) -> Socket | None:
        if not self.sockets:
            return None
        s = self.sockets[index % len(self.sockets)]
        return s if s.client.open and not s.client.closed else None

    @rule(index=st.integers(0, 3), text=st.text(max_size=20))
    def sendOnWebSocket(self, index: int, text: str) -> None:
        s = self.openSocket(index)
        if s is not None:
            s.sent.append(text)
            s.client.sendText(text)

    @rule(index=st.integers(0, 3))
    def closeWebSocket(self, index: int) -> None:
        s = self.openSocket(index)
        if s is not None:
            s.closedByClient = True
            s.client.closeHandshake(1000)

    @rule(index=st.integers(0, 3))
    def dropWebSocket(self, index: int) -> None:
        s = self.openSocket(index)
        if s is not None:
            s.closedByClient = True
            s.client.close()

    @rule(seconds=st.sampled_from([0.01, 0.1, 0.3, 0.6, 1.0]))
    def wait(self, seconds: float) -> None:
        self.wire.advance(seconds)

    @precondition(lambda self: self.startedAt is None)
    @rule()
    def signal(self) -> None:
        self.startDrain()
        self.wire.flush()

    def startDrain(self) -> None:
        self.startedAt = self.wire.clock.seconds()
        for c in self.conversations:
            c.beforeDrain = len(c.client.received)
        self.wire.drain.start("SIGTERM", "SIGTERM")

    @precondition(lambda self: self.startedAt is not None and not self.forced)
    @rule()
    def secondSignal(self) -> None:
        self.forced = True
        self.forcedAt = self.wire.clock.seconds()
        self.wire.drain.forceStop("second signal", "SIGTERM")
        self.wire.flush()
        assert self.wire.drain.finished, "a forced stop ends the drain at once"

    @invariant()
    def answeredAsOwed(self) -> None:
        for c in self.conversations:
            responses = c.client.responses
            assert len(responses) <= len(c.owed), (c.owed, responses)
            received = c.client.received
            for index, (response, code) in enumerate(
                zip(received, c.owed, strict=False)
            ):
                if code == STREAM:
                    late = c.beforeDrain is not None and index >= c.beforeDrain
                    self.checkStream(response, late)
                elif response.code == 503:
                    assert b"retry-after" in response.headers, response
                else:
                    assert response.code == code, (code, response)
            if c.client.closed and not self.forced:
                assert len(responses) == len(c.owed), (c.owed, responses)
            if c.beforeDrain is not None:
                for response in responses[c.beforeDrain :]:
                    assert response.headers.get(b"connection") == b"close", response

    @invariant()
    def webSocketsAsOwed(self) -> None:
        drain = self.wire.drain
        policy = self.wire.site.webSocketPolicy
        for s in self.sockets:
            c = s.client
            assert c.failures == [], c.failures
            assert c.afterClose == [], c.afterClose
            if s.askedAt is not None:
                # Asked for after the signal: refused.
                assert c.rejected == 503, c.rejected
                assert c.rejectedHeaders.get(b"retry-after"), c.rejectedHeaders
                assert c.rejectedHeaders.get(b"connection") == b"close"
                continue
            assert c.accepted
            echoes = c.messages[: len(s.sent)]
            assert echoes == s.sent, (echoes, s.sent)
            rest = c.messages[len(s.sent) :]
            if c.closeCode is None:
                assert rest == [], rest
                continue
            assert c.closeReceivedAt is not None
            if c.closeCode == 1000:
                # The answer to the client's own Close.
                assert s.closedByClient and rest == [], (c.closeCode, rest)
                assert c.closed
                continue
            assert (c.closeCode, c.closeReason) == (1001, "server shutting down")
            assert len(rest) == 1 and '"goodbye"' in str(rest[0]), rest
            assert self.startedAt is not None
            goneAwayAt = self.startedAt + min(drain.drainDelay, drain.policy.cutAfter)
            assert c.closeReceivedAt >= goneAwayAt - 1e-6, (c.closeReceivedAt,)
            if c.answersClose:
                assert c.closed and c.closedAt == c.closeReceivedAt
            elif c.closed and not self.forced:
                assert c.closedAt is not None
                due = min(
                    c.closeReceivedAt + policy.closeTimeout,
                    self.startedAt + drain.policy.cutAfter,
                )
                assert abs(c.closedAt - due) < 0.011, (c.closedAt, due)
            if c.closed:
                assert c.closedAt is not None
                assert c.closedAt <= self.startedAt + drain.shutdownTimeout + 1e-6

    def checkStream(self, response: Response, late: bool) -> None:
        """
        Invariant 5, for one event stream received so far.

        @param late: whether the server began to answer it after the drain
            began.
        """
        assert response.code == 200, response
        assert response.headers[b"content-type"] == b"text/event-stream"
        events = parseEventStream(response.body)
        if late:
            assert response.complete, response
            [event] = events
            assert list(event) == ["retry"] and event["retry"].isdigit(), events
            return
        drain = self.wire.drain
        ticks = [e for e in events if e.get("event") == "tick"]
        assert [e["id"] for e in ticks] == [str(n) for n in range(1, len(ticks) + 1)]
        if not drain.listenersClosed and not self.forced:
            assert not response.complete, "a stream ended before going away"
        if drain.listenersClosed and not self.forced:
            assert response.complete, "a stream not ended at going away"
        if response.complete:
            assert events[:-1] == ticks, events
            last = events[-1]
            assert last.get("event") == "shutdown" and "id" not in last, last
            assert last["retry"].isdigit(), last

    def teardown(self) -> None:
        DrainingWebSocket.log = self.savedLog
        if self.startedAt is None:
            self.startDrain()
        assert self.startedAt is not None
        drain = self.wire.drain
        self.wire.advance(drain.shutdownTimeout + 0.05)
        assert drain.finished, "done by the cap"
        assert drain.finishedAt is not None
        assert drain.finishedAt - self.startedAt <= drain.shutdownTimeout + 1e-6
        for c in self.conversations:
            assert c.client.closed, "every connection closed by the end"
        for s in self.sockets:
            assert s.client.closed, "every WebSocket closed by the end"
        self.answeredAsOwed()
        self.webSocketsAsOwed()
        outcomes = sum(
            n
            for (kind, _), n in drain.longLived.outcomes.items()
            if kind == "websocket"
        )
        assert outcomes <= len(self.sockets), drain.longLived.outcomes
        assert not self.failures, self.failures


DrainMachine.TestCase.settings = settings(
    max_examples=EXAMPLES or 150,
    stateful_step_count=25,
    derandomize=not EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


class DrainPropertyTests(SynchronousTestCase):
    def test_drainInvariants(self) -> None:
        """
        The invariants of the module docstring hold on every generated
        program.
        """
        DrainMachine.TestCase("runTest").runTest()
