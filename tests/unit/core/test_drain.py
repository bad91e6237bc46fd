"""
The drain's timeline, alone (with connections of the test's own) and as a
client on the wire sees it (in-memory connections to a real
L{DrainingSite}), time driven by a L{Clock}.  What the HTTP/1.1 channel
does under the drain is tested in C{tests/unit/protocols/test_http1.py}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase
from zope.interface.verify import verifyObject

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.policy import Phase
from gracesvc.testing import Wire, get
from tests.support.drain import FakePort, Multiplexed, captureLog


class DrainLifecycleTests(SynchronousTestCase):
    def test_idleServiceStopsAtOnce(self) -> None:
        """
        With nothing in flight, the drain closes the listeners and is done
        in the same call.
        """
        wire = Wire()
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        self.successResultOf(wire.drain.start())
        self.assertEqual(port.closedAt, 0)

    def test_listenersCloseBeforeIdleConnections(self) -> None:
        """
        Without a drain delay, the listeners are closed first and idle
        connections only once they are: closing thousands of idle
        connections in the signal's reactor turn would delay the port's
        close by that much.  A response written in between already says
        C{Connection: close}.
        """
        wire = Wire(pingDelay=0)
        closing: Deferred[None] = Deferred()

        class SlowPort(FakePort):
            def stopListening(self) -> Deferred[None] | None:
                return closing

        wire.drain.addListener(SlowPort(wire.clock))
        idle = wire.connect()
        wire.advance(5)
        busy = wire.connect()
        wire.drain.start()
        wire.flush()
        self.assertFalse(idle.closed)
        busy.send(get("/ping"))
        self.assertEqual(busy.responses[0].headers[b"connection"], b"close")
        self.assertTrue(busy.closed)
        closing.callback(None)
        wire.flush()
        self.assertTrue(idle.closed)

    def test_inFlightRequestCompletes(self) -> None:
        """
        A request in flight at the signal is answered in full, with
        C{Connection: close}, and the drain ends when its connection closes.
        """
        wire = Wire(pingDelay=2)
        client = wire.connect()
        client.send(get("/ping"))
        wire.advance(0.5)
        done = wire.drain.start()
        wire.advance(1.4)
        self.assertNoResult(done)
        self.assertEqual(client.responses, [])
        wire.advance(0.2)
        [response] = client.responses
        self.assertEqual(response.code, 200)
        self.assertEqual(response.body, b'{"message": "pong"}')
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.completedDuringDrain, 1)
        self.assertEqual(wire.drain.requestsCut, 0)

    def test_doneOnlyAfterTheLastBytesAreDelivered(self) -> None:
        """
        When the handler finishes, the response is still in the transport's
        buffer: the drain waits for the connection to close after flushing,
        not for the request to finish (else the reactor's disconnectAll would
        throw the response away).
        """
        wire = Wire(pingDelay=2)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.clock.advance(2)  # the handler answers; nothing moved yet
        self.assertNoResult(done)
        self.assertEqual(client.protocol.data, b"")
        wire.flush()
        self.assertEqual(len(client.responses), 1)
        self.successResultOf(done)

    def test_manyInFlightAllComplete(self) -> None:
        """
        Twenty requests in flight at the signal all get their answer.
        """
        wire = Wire(pingDelay=2)
        clients = [wire.connect() for _ in range(20)]
        for client in clients:
            client.send(get("/ping"))
        done = wire.drain.start()
        self.assertEqual(wire.drain.inFlight, 20)
        wire.advance(2.1)
        self.successResultOf(done)
        self.assertEqual([[r.code for r in c.responses] for c in clients], [[200]] * 20)
        self.assertEqual(wire.drain.completedDuringDrain, 20)

    def test_startTwiceIsOneDrain(self) -> None:
        """
        The signal trigger and C{stopService} both start the drain; the
        second call waits for the same drain.
        """
        wire = Wire(pingDelay=1)
        wire.connect().send(get("/ping"))
        first = wire.drain.start()
        second = wire.drain.start()
        wire.advance(1.1)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual(wire.drain.completedDuringDrain, 1)

    def test_logsStartAndSummary(self) -> None:
        """
        The drain logs C{Shutdown Server ...} with the number in flight, and
        C{Server exiting} with what was completed and cut and how long it took.
        """
        wire = Wire(pingDelay=1.5)
        events = captureLog(wire.drain)
        wire.drain.addListener(FakePort(wire.clock))
        wire.connect().send(get("/ping"))
        wire.drain.start("SIGINT")
        wire.advance(1.6)
        steps = [e["step"] for e in events]
        self.assertEqual(steps, ["start", "listeners_closed", "progress", "done"])
        start, done = events[0], events[-1]
        self.assertEqual(start["inFlight"], 1)
        self.assertIn("Shutdown Server", start["log_format"])
        self.assertIn("Server exiting", done["log_format"])
        self.assertEqual((done["completed"], done["cut"]), (1, 0))
        self.assertAlmostEqual(done["duration"], 1.5, delta=0.02)


class CapTests(SynchronousTestCase):
    def test_unansweredRequestGets503AtTheCap(self) -> None:
        """
        A request still unanswered near the cap is answered with a 503,
        C{Retry-After} and C{Connection: close}, and the drain is done by the
        cap.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.85)
        self.assertNoResult(done)
        wire.advance(0.1)
        [response] = client.responses
        self.assertEqual(response.code, 503)
        self.assertEqual(response.headers[b"retry-after"], b"1")
        self.assertEqual(response.headers[b"connection"], b"close")
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.requestsCut, 1)
        self.assertEqual(wire.drain.completedDuringDrain, 0)

    def test_503SurvivesAReactorLateForTheCut(self) -> None:
        """
        A reactor that gets to the cut late (a loaded machine: no CPU from
        before the cut until after the cap) runs the cut and the cap in one
        turn.  The 503 the cut writes is still in Twisted's write buffer
        then: the cap must not abort the connection before it is flushed.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.8)
        # The stall: the cut's and the cap's timers run together, with no
        # I/O in between.
        wire.clock.advance(0.3)
        wire.flush()
        self.assertEqual([r.code for r in client.responses], [503])
        self.assertFalse(client.reset)
        self.assertTrue(client.closed)
        self.successResultOf(done)
        self.assertEqual(wire.drain.requestsCut, 1)

    def test_clientThatNeverReadsIsAbortedAtTheCap(self) -> None:
        """
        A connection that does not close after the 503 (its client reads
        nothing) cannot hold the drain past the cap.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=2)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        # Stop moving bytes: the connection can never finish closing.
        wire.clients.remove(client)
        wire.advance(1.95)
        self.assertNoResult(done)
        wire.advance(0.05)
        self.successResultOf(done)

    def test_capCountsFromTheSignal(self) -> None:
        """
        A signal handled late (the reactor was busy) still has the drain end
        within the cap of the signal.
        """
        wire = Wire(pingDelay=10, shutdownTimeout=1)
        client = wire.connect()
        client.send(get("/ping"))
        wire.clock.advance(0.4)
        done = wire.drain.start(startedAt=0.0)
        wire.advance(0.45)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.assertEqual([r.code for r in client.responses], [503])
        self.successResultOf(done)

    def test_trackedWorkThatNeverFinishesIsAbandoned(self) -> None:
        """
        A tracked Deferred that never fires holds the drain until the cap,
        no longer.
        """
        wire = Wire(shutdownTimeout=3)
        work: Deferred[None] = Deferred()
        wire.drain.track(work)
        done = wire.drain.start()
        wire.advance(2.9)
        self.assertNoResult(done)
        wire.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(wire.drain.abandoned, 1)
        # Given up on, not cancelled: a timeout on a list of Deferreds would
        # have cancelled the work itself.
        self.assertNoResult(work)


class TrackTests(SynchronousTestCase):
    def test_drainWaitsForTrackedWork(self) -> None:
        """
        Work handed to C{track} holds the drain until it finishes, and its
        result is unchanged for the application.
        """
        wire = Wire()
        work: Deferred[str] = Deferred()
        self.assertIs(wire.drain.track(work), work)
        done = wire.drain.start()
        self.assertNoResult(done)
        work.callback("saved")
        self.successResultOf(done)
        self.assertEqual(self.successResultOf(work), "saved")

    def test_failedTrackedWorkIsLoggedAndDoesNotStopTheDrain(self) -> None:
        """
        A tracked Deferred that fails ends its wait like a success, and the
        failure is logged, not lost.
        """
        wire = Wire()
        work: Deferred[None] = Deferred()
        wire.drain.track(work)
        done = wire.drain.start()
        work.errback(ValueError("disk full"))
        self.successResultOf(done)
        self.failureResultOf(work, ValueError)
        self.assertEqual(len(self.flushLoggedErrors(ValueError)), 1)

    def test_alreadyFiredWorkIsNotWaitedFor(self) -> None:
        wire = Wire()
        work: Deferred[int] = Deferred()
        work.callback(1)
        wire.drain.track(work)
        self.successResultOf(wire.drain.start())


class DrainDelayTests(SynchronousTestCase):
    def test_keepsAcceptingForTheDelay(self) -> None:
        """
        With a drain delay, listeners stay open for the delay while
        C{/readyz} answers 503 and requests are still served with
        C{Connection: close}.
        """
        wire = Wire(drainDelay=1, pingDelay=0.1)
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        done = wire.drain.start()
        wire.advance(0.5)
        self.assertIsNone(port.closedAt)
        late = wire.connect()
        late.send(get("/readyz"))
        ping = wire.connect()
        ping.send(get("/ping"))
        wire.advance(0.2)
        self.assertEqual(late.responses[0].code, 503)
        self.assertEqual(ping.responses[0].code, 200)
        self.assertEqual(ping.responses[0].headers[b"connection"], b"close")
        self.assertNoResult(done)
        wire.advance(0.4)
        self.assertAlmostEqual(port.closedAt, 1.0, delta=0.011)
        self.successResultOf(done)

    def test_aDrainMaySkipTheDelay(self) -> None:
        """
        Started without its delay (a worker retired by a reload), the drain
        closes the listeners at once; its policy is left as it was.
        """
        wire = Wire(drainDelay=1)
        events = captureLog(wire.drain)
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        policy = wire.drain.policy
        self.successResultOf(wire.drain.start(keepDrainDelay=False))
        self.assertEqual(port.closedAt, 0)
        self.assertEqual(wire.drain.drainDelay, 0)
        self.assertEqual(events[0]["drainDelay"], 0)
        self.assertIs(wire.drain.policy, policy)
        self.assertEqual(policy.drainDelay, 1)


class ForcedStopTests(SynchronousTestCase):
    def test_secondSignalStopsAtOnce(self) -> None:
        """
        C{forceStop} (a second signal) aborts what is in flight and ends the
        drain at once, counting the cut request.
        """
        wire = Wire(pingDelay=3)
        client = wire.connect()
        client.send(get("/ping"))
        done = wire.drain.start()
        wire.advance(0.5)
        wire.drain.forceStop()
        self.successResultOf(done)
        wire.flush()
        self.assertTrue(client.closed)
        self.assertEqual(client.responses, [])
        self.assertEqual(wire.drain.requestsCut, 1)


class PhaseTests(SynchronousTestCase):
    def test_phasesInOrder(self) -> None:
        """
        A drain with a delay walks SERVING, DELAYING, DRAINING, CUT, DONE,
        each at its time.
        """
        drain = Drain(Clock(), shutdownTimeout=2, drainDelay=0.5)
        clock: Clock = drain.clock  # type: ignore[assignment]
        drain.addListener(FakePort(clock))
        drain.connectionOpened(Multiplexed(1))
        self.assertIs(drain.phase, Phase.SERVING)
        drain.start()
        self.assertIs(drain.phase, Phase.DELAYING)
        self.assertTrue(drain.draining)
        clock.advance(0.5)
        self.assertIs(drain.phase, Phase.DRAINING)
        self.assertTrue(drain.listenersClosed)
        clock.advance(1.39)
        self.assertIs(drain.phase, Phase.DRAINING)
        clock.advance(0.01)
        self.assertIs(drain.phase, Phase.CUT)
        self.assertTrue(drain.cutting)
        clock.advance(0.1)
        self.assertIs(drain.phase, Phase.DONE)
        self.assertTrue(drain.finished)

    def test_listenersCloseBeforeTheCutWhateverTheDelay(self) -> None:
        """
        A drain delay that reaches into the cut's lead still closes the
        listeners before requests are cut: no request is accepted only to
        be cut.
        """
        wire = Wire(shutdownTimeout=1, drainDelay=0.95, pingDelay=10)
        port = FakePort(wire.clock)
        wire.drain.addListener(port)
        client = wire.connect()
        client.send(get("/ping"))
        wire.drain.start()
        wire.advance(0.9)
        self.assertAlmostEqual(port.closedAt, 0.9)
        self.assertEqual(client.responses[0].code, 503)

    def test_secondSignalWhileTheListenersCloseLogsInOrder(self) -> None:
        """
        A forced stop while a listener is still closing ends the log with
        C{done}: the late close is not reported after it.
        """
        wire = Wire()
        events = captureLog(wire.drain)
        closing: Deferred[None] = Deferred()

        class SlowPort(FakePort):
            def stopListening(self) -> Deferred[None] | None:
                return closing

        wire.drain.addListener(SlowPort(wire.clock))
        done = wire.drain.start("SIGINT")
        wire.drain.forceStop()
        self.successResultOf(done)
        closing.callback(None)
        self.assertEqual([e["step"] for e in events], ["start", "forced", "done"])

    def test_lateInputsAreNoOpsOnceDone(self) -> None:
        """
        Once done, starting again, forcing, and the timers' inputs change
        nothing.
        """
        wire = Wire(shutdownTimeout=1)
        events = captureLog(wire.drain)
        self.successResultOf(wire.drain.start())
        wire.drain.start()
        wire.drain.forceStop()
        wire.advance(2)
        self.assertIs(wire.drain.phase, Phase.DONE)
        self.assertEqual([e["step"] for e in events], ["start", "done"])


class ConnectionKindTests(SynchronousTestCase):
    def test_inFlightCountsRequestsNotConnections(self) -> None:
        """
        The drain counts what each connection has in flight: one connection
        with three streams is three requests, all three cut at the cap.
        """
        drain = Drain(Clock(), shutdownTimeout=1)
        connection = Multiplexed(3)
        verifyObject(IDrainableConnection, connection)
        drain.connectionOpened(connection)
        self.assertEqual((drain.inFlight, drain.connections), (3, 1))
        drain.start()
        drain.clock.advance(0.9)  # type: ignore[attr-defined]
        self.assertEqual(connection.cutWith, 1)
        self.assertEqual(drain.requestsCut, 3)


class HookTests(SynchronousTestCase):
    def drain(self, **kwargs: Any) -> tuple[Drain, Clock, list[dict[str, Any]]]:
        clock = Clock()
        drain = Drain(clock, **kwargs)
        return drain, clock, captureLog(drain)

    def test_phasesInOrderOnTheTimeline(self) -> None:
        """
        C{draining} hooks run at the signal, C{goingAway} hooks and
        subscribers when the listeners have closed (after the drain delay),
        C{cleanup} hooks once the last connection has closed, last added
        first, one after another.
        """
        drain, clock, _ = self.drain(shutdownTimeout=5, drainDelay=1, cleanupBudget=1)
        calls: list[tuple[str, float, int]] = []
        connection = Multiplexed(1)

        def note(what: str) -> Callable[[], None]:
            return lambda: calls.append((what, clock.seconds(), drain.connections))

        first: Deferred[None] = Deferred()
        drain.addHook("draining", note("draining"))
        drain.addHook("goingAway", note("goingAway"))
        drain.addHook("cleanup", lambda: (note("cleanup 1")(), None)[1])
        drain.addHook("cleanup", lambda: (note("cleanup 2")(), first)[1])
        drain.whenGoingAway(note("subscriber"))
        drain.addListener(FakePort(clock))
        drain.connectionOpened(connection)
        done = drain.start()
        clock.advance(1)
        clock.advance(0.5)
        drain.connectionClosed(connection)
        self.assertEqual(
            calls,
            [
                ("draining", 0, 1),
                ("subscriber", 1, 1),
                ("goingAway", 1, 1),
                ("cleanup 2", 1.5, 0),
            ],
        )
        self.assertIs(drain.phase, Phase.CLEANUP)
        self.assertNoResult(done)
        clock.advance(0.2)
        first.callback(None)
        self.assertEqual(calls[-1], ("cleanup 1", 1.7, 0))
        self.successResultOf(done)

    def test_drainingHookIsWaitedForUntilTheCut(self) -> None:
        """
        The drain waits for what a C{draining} or C{goingAway} hook returns,
        as for tracked work: done when it fires, abandoned at the cut.
        """
        drain, clock, _ = self.drain(shutdownTimeout=2)
        work: Deferred[None] = Deferred()
        drain.addHook("goingAway", lambda: work)
        done = drain.start()
        self.assertNoResult(done)
        self.assertEqual(drain.pendingWork, 1)
        work.callback(None)
        self.successResultOf(done)

        drain, clock, _ = self.drain(shutdownTimeout=2)
        drain.addHook("draining", Deferred)
        done = drain.start()
        clock.advance(1.9)
        self.successResultOf(done)
        self.assertEqual(drain.abandoned, 1)

    def test_coroutineHooksAreAwaited(self) -> None:
        drain, clock, _ = self.drain(cleanupBudget=1)
        waited: Deferred[None] = Deferred()
        ran: list[str] = []

        async def cleanUp() -> None:
            await waited
            ran.append("cleaned")

        drain.addHook("cleanup", cleanUp)
        done = drain.start()
        self.assertNoResult(done)
        waited.callback(None)
        self.assertEqual(ran, ["cleaned"])
        self.successResultOf(done)

    def test_failingHooksAreLoggedAndTheShutdownGoesOn(self) -> None:
        drain, clock, events = self.drain(cleanupBudget=1)
        ran: list[str] = []

        def fails() -> None:
            raise RuntimeError("boom")

        drain.addHook("draining", fails, name="broken consumer")
        drain.addHook("cleanup", lambda: ran.append("second"))
        drain.addHook("cleanup", lambda: defer.fail(RuntimeError("later boom")))
        self.successResultOf(drain.start())
        self.assertEqual(ran, ["second"])
        failed = [e for e in events if e.get("log_failure") is not None]
        self.assertEqual(len(failed), 2)
        self.assertEqual(failed[0]["hook"], "broken consumer")
        self.flushLoggedErrors(RuntimeError)

    def test_cleanupOverrunningItsBudgetIsAbandoned(self) -> None:
        """
        A cleanup hook that never finishes is abandoned when the budget is
        spent, with the hooks after it: done within the cap.
        """
        drain, clock, events = self.drain(shutdownTimeout=3, cleanupBudget=0.5)
        ran: list[str] = []
        drain.addHook("cleanup", lambda: ran.append("never reached"))
        drain.addHook("cleanup", Deferred)
        done = drain.start()
        clock.advance(0.4)
        self.assertNoResult(done)
        clock.advance(0.1)
        self.successResultOf(done)
        self.assertEqual(ran, [])
        self.assertEqual(drain.abandoned, 2)
        self.assertIn("cleanup_overrun", [e["step"] for e in events])

    def test_cleanupBudgetIsReservedBeforeTheCap(self) -> None:
        """
        The cut comes early enough to leave the cleanup its budget.
        """
        drain, clock, _ = self.drain(shutdownTimeout=3, cleanupBudget=1)
        connection = Multiplexed(1)
        drain.connectionOpened(connection)
        drain.start()
        self.assertAlmostEqual(drain.deadline, 1.9)
        clock.advance(1.89)
        self.assertIsNone(connection.cutWith)
        clock.advance(0.02)
        self.assertEqual(connection.cutWith, 3)

    def test_secondSignalSkipsTheCleanup(self) -> None:
        drain, clock, events = self.drain(cleanupBudget=1)
        ran: list[str] = []
        drain.addHook("cleanup", lambda: ran.append("cleaned"))
        drain.connectionOpened(Multiplexed(1))
        done = drain.start()
        drain.forceStop()
        self.successResultOf(done)
        self.assertEqual(ran, [])
        steps = [e["step"] for e in events]
        self.assertEqual(steps[-3:], ["forced", "cleanup_skipped", "done"])

    def test_goingAwaySubscriptions(self) -> None:
        """
        A subscriber that unsubscribed is not called; one that subscribes
        after the listeners closed is called at once.
        """
        drain, clock, _ = self.drain()
        called: list[str] = []
        cancel = drain.whenGoingAway(lambda: called.append("gone"))
        cancel()
        drain.connectionOpened(Multiplexed(1))
        drain.start()
        self.assertEqual(called, [])
        drain.whenGoingAway(lambda: called.append("late"))
        self.assertEqual(called, ["late"])

    def test_unknownPhase(self) -> None:
        drain, _, _ = self.drain()
        with self.assertRaises(ValueError):
            drain.addHook("later", lambda: None)  # type: ignore[arg-type]
