"""
The worker's side of the control channel (L{gracesvc._workers.worker}), in
memory: commands fed to its protocol, events read from a string transport.
"""

from __future__ import annotations

import json
import signal
from typing import Any, cast

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.internet.testing import StringTransport
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.drain import Drain
from gracesvc._process.signals import StopSignals
from gracesvc._workers.channel import encode
from gracesvc._workers.worker import ControlProtocol, WorkerControl
from tests.support.process import FakeProcess
from tests.support.service import (
    SIGTERM,
    FakeReactor,
    FakeSignals,
    makeService,
)


class WorkerControlTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = FakeReactor()
        self.reactor.advance(100)
        service = makeService(self.reactor)
        service.startService()
        self.drain = service.drain
        self.drain.policy = type(self.drain.policy)(shutdownTimeout=5, drainDelay=2)
        self.drain.track(Deferred())
        self.process = FakeProcess(FakeSignals())
        self.control = WorkerControl(
            self.reactor, self.drain, [], 3, 1, 0, self.process
        )
        self.events: list[dict[str, Any]] = []
        self.control.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.protocol = ControlProtocol(self.control)
        self.protocol.log = self.control.log
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.control.protocol = self.protocol

    def command(self, message: dict[str, Any]) -> None:
        self.protocol.dataReceived(encode(message))

    def test_readySaysWhichWorker(self) -> None:
        self.control._ready()
        message = json.loads(self.transport.value())
        self.assertEqual(
            (message["event"], message["generation"], message["slot"]),
            ("ready", 3, 1),
        )
        self.assertEqual(message["pid"], self.process.pid)

    def test_drainCountsTheCapFromTheMastersSignal(self) -> None:
        self.command({"command": "drain", "startedAt": 99.25, "reason": "SIGTERM"})
        self.assertEqual(self.drain.startedAt, 99.25)
        self.assertEqual(self.drain.capAt, 104.25)
        self.assertEqual(self.drain.drainDelay, 2)
        self.assertEqual(self.reactor.stops, 1)

    def test_reloadDrainSkipsTheDrainDelay(self) -> None:
        self.command({"command": "drain", "startedAt": 100, "drainDelay": False})
        self.assertEqual(self.drain.drainDelay, 0)
        self.assertTrue(self.drain.listenersClosed)

    def test_drainTwiceIsOneDrain(self) -> None:
        self.command({"command": "drain", "startedAt": 100})
        self.command({"command": "drain", "startedAt": 100})
        self.assertEqual(self.reactor.stops, 1)
        self.assertFalse(self.drain.finished)

    def test_pingIsAnswered(self) -> None:
        self.command({"command": "ping"})
        self.assertEqual(json.loads(self.transport.value()), {"event": "pong"})
        self.assertFalse(self.drain.draining)

    def test_metricsForTheMaster(self) -> None:
        self.control.exposition = lambda: b"# metrics\n"
        self.command({"command": "metrics", "id": 7})
        self.assertEqual(
            json.loads(self.transport.value()),
            {"event": "metrics", "id": 7, "text": "# metrics\n"},
        )

    def test_force(self) -> None:
        self.command({"command": "drain", "startedAt": 100})
        self.command({"command": "force", "reason": "second signal"})
        self.assertTrue(self.drain.finished)
        self.assertEqual(self.reactor.stops, 1)

    def test_masterGoneDrains(self) -> None:
        """
        End of file on the command pipe: the master is gone (even killed),
        so the worker drains and exits, freeing the port.
        """
        self.protocol.connectionLost(Failure(EOFError()))
        self.assertTrue(self.drain.draining)
        self.assertEqual(self.drain.startedAt, 100)
        self.assertEqual(self.reactor.stops, 1)

    def test_garbageIsIgnored(self) -> None:
        self.protocol.dataReceived(b"nonsense\n[]\n")
        self.command({"command": "explode"})
        self.assertFalse(self.drain.draining)
        self.assertEqual(len(self.events), 3)

    def test_acceptLimitOnReady(self) -> None:
        class Port:
            numberAccepts = 100
            connected = True

            def doRead(self) -> None:
                pass

        port = Port()
        control = WorkerControl(
            self.reactor,
            self.drain,
            [cast(IListeningPort, port)],
            1,
            0,
            1,
            self.process,
        )
        control._ready()
        port.doRead()
        self.assertEqual(port.numberAccepts, 1)


class JoinedSignalTests(SynchronousTestCase):
    """
    A worker's L{StopSignals} (C{joinStartedDrain}): a signal to the
    process group reaches the worker as well as its master, whose drain
    command may come first.
    """

    def setUp(self) -> None:
        self.reactor = FakeReactor()
        service = makeService(self.reactor)
        service.startService()
        self.drain: Drain = service.drain
        self.drain.track(Deferred())
        self.signals = FakeSignals()
        self.stopSignals = StopSignals(
            self.reactor, self.drain, self.signals, joinStartedDrain=True
        )
        self.stopSignals.catch()
        self.stopSignals.watch()
        self.reactor.start(self.signals)

    def test_signalAfterTheMastersCommandJoinsIt(self) -> None:
        self.drain.start("SIGTERM")
        self.signals.deliver(SIGTERM)
        self.reactor.turn()
        self.assertFalse(self.drain.finished)
        self.signals.deliver(signal.SIGINT)
        self.reactor.turn()
        self.assertTrue(self.drain.finished)

    def test_commandReadBetweenSignalAndItsHandling(self) -> None:
        """
        The signal arrives, then the reactor reads the master's command
        (started the drain, stopped the reactor) before it runs the
        signal's work: the signal joins that drain and does not stop the
        reactor again (C{ReactorNotRunning}, logged with a traceback).
        """
        self.signals.deliver(SIGTERM)
        self.drain.start("SIGTERM")
        self.reactor.stop()
        self.reactor.turn()
        self.reactor.turn()
        self.assertEqual(self.reactor.stops, 1)
        self.assertFalse(self.drain.finished)

    def test_withoutJoiningItForces(self) -> None:
        """
        A process that is no worker counts it as a second stop, as before.
        """
        stopSignals = StopSignals(self.reactor, self.drain, self.signals)
        stopSignals.catch()
        self.drain.start("service stopped")
        self.signals.deliver(SIGTERM)
        self.reactor.turn()
        self.assertTrue(self.drain.finished)


class WorkerLogTests(SynchronousTestCase):
    def test_eventsNameTheWorker(self) -> None:
        """
        Every event names the worker: fields for structured observers, and
        the system of twistd's text log.
        """
        from twisted.logger import LogLevel, formatEventAsClassicLogText

        from gracesvc._workers.worker import workerLogLabeller

        label = workerLogLabeller(generation=2, slot=1)
        event: dict[str, Any] = {
            "log_namespace": "gracesvc._core.drain.Drain",
            "log_level": LogLevel.info,
            "log_format": "drained",
            "log_time": 0,
        }
        label(event)
        self.assertEqual((event["worker"], event["generation"]), (1, 2))
        text = formatEventAsClassicLogText(event)
        assert text is not None
        self.assertIn("[worker 1 g2 gracesvc._core.drain.Drain#info] drained", text)
        legacy: dict[str, Any] = {"log_system": "-", "log_format": "x"}
        label(legacy)
        self.assertEqual(legacy["log_system"], "worker 1 g2")
