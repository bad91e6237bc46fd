"""
The master of C{--workers N} (L{gracesvc._workers.master}), in memory: a fake
reactor that records the processes it spawns, fake process transports,
and time driven by hand.
"""

from __future__ import annotations

import json
import os
import signal
import socket

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.drain import Drain
from gracesvc._workers.command import workerCommand
from gracesvc._workers.liveness import MAX_RESTART_DELAY, restartDelay
from gracesvc._workers.master import (
    KILL_AFTER,
    Master,
    MasterPhase,
    WorkerState,
)
from gracesvc._workers.sockets import SharedSocket
from tests.support.process import FakeProcess
from tests.support.service import FakeSignals
from tests.support.workers import (
    MasterTestCase,
    ProcessReactor,
    exits,
    ready,
    transportOf,
)


class StartTests(MasterTestCase):
    def test_spawnsWorkersOnTheSharedSockets(self) -> None:
        """
        Each worker is a fresh twistd gracesvc with the plugin options, its
        control pipes on fds 3 and 4 and the shared socket on fd 5, told
        which it is in C{--worker-spec}.
        """
        self.assertEqual(len(self.reactor.spawned), 2)
        worker, args, childFDs = self.reactor.spawned[1]
        self.assertEqual(childFDs[3], "r")
        self.assertEqual(childFDs[4], "w")
        self.assertEqual(childFDs[5], self.shared.fileno())
        self.assertEqual((childFDs[1], childFDs[2]), (1, 2))
        self.assertIn("gracesvc", args)
        self.assertIn("--ping-delay=0", args)
        spec = json.loads(args[-1].split("=", 1)[1])
        self.assertEqual(spec["generation"], 1)
        self.assertEqual(spec["slot"], 1)
        self.assertEqual(spec["listeners"], [["tcp:0", 5, socket.AF_INET]])

    def test_readyOnceEveryWorkerIs(self) -> None:
        """
        The master is ready when every worker of the first generation has
        said it is.
        """
        first, second = self.generation(1)
        ready(first)
        self.assertEqual(self.master.phase, MasterPhase.STARTING)
        ready(second)
        self.assertEqual(self.master.phase, MasterPhase.SERVING)
        self.assertIn(("ready", None), self.steps())

    def test_aWorkerThatDiesBeforeReadyStopsTheStart(self) -> None:
        """
        A first-generation worker that exits before it is ready stops the
        start: exit status 1, the others killed, no new worker started.
        """
        first, second = self.generation(1)
        exits(first, status=1)
        self.assertEqual(self.master.exitStatus, 1)
        self.assertEqual(self.reactor.stops, 1)
        self.assertTrue(self.drain.draining)
        [critical] = [e for e in self.events if "cannot start" in e["log_format"]]
        self.assertIn("exit status 1", critical["why"])
        self.assertEqual(transportOf(second).commands()[0]["command"], "drain")
        self.reactor.advance(60)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_bootTimeout(self) -> None:
        """
        A first generation not ready within the boot timeout stops the start.
        """
        ready(self.generation(1)[0])
        self.reactor.advance(10)
        self.assertEqual(self.master.exitStatus, 1)


class ReloadTests(MasterTestCase):
    def test_sighupStartsTheNextGeneration(self) -> None:
        """
        SIGHUP is handled on the reactor's thread: it starts generation 2.
        """
        self.serving()
        self.signals.deliver(signal.SIGHUP)
        self.assertEqual(self.generation(2), [])
        self.reactor.turn()
        self.assertEqual(len(self.generation(2)), 2)

    def test_oldGenerationDrainsOnlyOnceTheNewOneIsReady(self) -> None:
        old = self.serving()
        self.master.reload()
        new = self.generation(2)
        ready(new[0])
        self.assertEqual([transportOf(w).commands() for w in old], [[], []])
        ready(new[1])
        for worker in old:
            [command] = transportOf(worker).commands()
            self.assertEqual(command["command"], "drain")
            self.assertEqual(command["reason"], "reload")
            self.assertIs(command["drainDelay"], False)
            self.assertEqual(worker.workerState, WorkerState.RETIRING)
        self.assertEqual(self.master.generation, 2)
        self.assertEqual(self.master.reloads, {"ok": 1, "failed": 0})
        # The retired workers exiting is no crash: nothing is replaced.
        for worker in old:
            exits(worker)
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_aNewWorkerThatDiesBeforeReadyKeepsTheOld(self) -> None:
        """
        A reload whose new worker dies before it is ready fails: the old
        generation is told nothing and keeps serving; the new workers
        that are ready drain (they may hold connections), those still
        starting are killed.
        """
        old = self.serving()
        self.master.reload()
        readyOne, dying = self.generation(2)
        ready(readyOne)
        exits(dying, status=1)
        self.assertEqual([transportOf(w).commands() for w in old], [[], []])
        self.assertEqual(transportOf(readyOne).commands()[0]["command"], "drain")
        self.assertEqual(self.master.generation, 1)
        self.assertEqual(self.master.reloads, {"ok": 0, "failed": 1})
        self.assertEqual(self.master.phase, MasterPhase.SERVING)
        self.assertIn(("reload", "failed"), self.steps())
        self.assertFalse(self.drain.draining)

    def test_aStuckNewGenerationTimesOut(self) -> None:
        old = self.serving()
        self.master.reload()
        stuck = self.generation(2)
        self.reactor.advance(10)
        self.assertEqual([transportOf(w).signals for w in stuck], [["KILL"], ["KILL"]])
        self.assertEqual([transportOf(w).commands() for w in old], [[], []])
        self.assertEqual(self.master.reloads["failed"], 1)
        # The next reload is a new generation, never a reused number.
        self.master.reload()
        self.assertEqual(len(self.generation(3)), 2)

    def test_reloadsDuringAReloadRunOnceAfterIt(self) -> None:
        self.serving()
        self.master.reload()
        self.master.reload()
        self.master.reload()
        for worker in self.generation(2):
            ready(worker)
        self.assertEqual(len(self.generation(3)), 2)
        for worker in self.generation(3):
            ready(worker)
        self.assertEqual(self.generation(4), [])
        self.assertEqual(self.master.generation, 3)


class CrashTests(MasterTestCase):
    def test_crashedWorkerIsReplacedAtOnce(self) -> None:
        first, second = self.serving()
        self.reactor.advance(60)
        exits(first, status=None, sig=signal.SIGKILL)
        self.reactor.advance(0)
        [replacement] = self.generation(1)[2:]
        self.assertEqual(replacement.slot, first.slot)
        self.assertEqual(transportOf(second).commands(), [])
        self.assertIn(("worker_replaced", None), self.steps())

    def test_workersThatKeepDyingAreRestartedWithBackoff(self) -> None:
        self.serving()
        self.reactor.advance(60)
        worker = self.generation(1)[0]
        delays = []
        for _ in range(6):
            exits(worker, status=1)
            restart = self.master.slots[0].restart
            assert restart is not None
            delays.append(round(restart.getTime() - self.reactor.seconds(), 3))
            self.reactor.advance(restart.getTime() - self.reactor.seconds())
            worker = self.reactor.spawned[-1][0]
            self.assertEqual(worker.slot, 0)
        self.assertEqual(delays, [0.0, 0.1, 0.2, 0.4, 0.8, 1.6])
        self.assertEqual(self.master.restarts, 6)

    def test_restartDelay(self) -> None:
        self.assertEqual(
            [restartDelay(n) for n in range(1, 9)],
            [0.0, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, MAX_RESTART_DELAY],
        )


class StopTests(MasterTestCase):
    def test_oneDrainForTheTree(self) -> None:
        """
        The master's drain closes its copy of the shared socket, then tells
        every worker to drain with the signal's time; it is done, and the
        master may exit, when the last worker has exited.
        """
        workers = self.serving()
        self.drain.start("SIGTERM", "SIGTERM", startedAt=999.5)
        self.assertTrue(self.shared.closed)
        for worker in workers:
            [command] = transportOf(worker).commands()
            self.assertEqual(command["command"], "drain")
            self.assertEqual(command["startedAt"], 999.5)
            self.assertIs(command["drainDelay"], True)
        [trigger] = self.reactor.triggers["before"]["shutdown"]
        waiting = trigger[0]()
        exits(workers[0])
        self.assertNoResult(waiting)
        exits(workers[1])
        self.successResultOf(waiting)
        self.assertTrue(self.drain.finished)

    def test_workersStartingAtTheSignalDrainToo(self) -> None:
        """
        A reload under way when the signal comes: its workers drain too,
        and nothing new starts.
        """
        self.serving()
        self.master.reload()
        self.drain.start("SIGTERM")
        self.assertEqual(
            [transportOf(w).commands()[0]["command"] for w in self.generation(2)],
            ["drain", "drain"],
        )
        self.master.reload()
        exits(self.generation(1)[0], status=1)
        self.reactor.advance(10)
        self.assertEqual(len(self.reactor.spawned), 4)

    def test_capForcesThenKills(self) -> None:
        """
        At the cap the workers still running are told to force, then
        killed if they have not exited shortly after.
        """
        workers = self.serving()
        self.drain.start("SIGTERM")
        self.reactor.advance(self.shutdownTimeout)
        # The cut's 503s get their moment to flush before the cap aborts.
        self.reactor.advance(0.1)
        for worker in workers:
            self.assertEqual(transportOf(worker).commands()[-1]["command"], "force")
        exits(workers[0])
        self.reactor.advance(KILL_AFTER)
        self.assertEqual(transportOf(workers[0]).signals, [])
        self.assertEqual(transportOf(workers[1]).signals, ["KILL"])

    def test_secondSignalForces(self) -> None:
        workers = self.serving()
        self.drain.start("SIGTERM")
        self.drain.forceStop("second signal, SIGTERM")
        for worker in workers:
            self.assertEqual(transportOf(worker).commands()[-1]["command"], "force")


class ControlLineTests(MasterTestCase):
    def test_malformedLinesAreIgnored(self) -> None:
        """
        Garbage on a worker's control pipe is logged and skipped; the
        master goes on, and a line split across reads is whole again.
        """
        worker = self.generation(1)[0]
        worker.childDataReceived(3, b"not json\n[1, 2]\n\xff\xfe\n{}\n")
        worker.childDataReceived(3, b'{"event": "re')
        self.assertEqual(worker.workerState, WorkerState.STARTING)
        worker.childDataReceived(3, b'ady"}\n')
        self.assertEqual(worker.workerState, WorkerState.READY)
        warnings = [e for e in self.events if e["log_level"].name == "warn"]
        self.assertEqual(len(warnings), 4)

    def test_otherFdsAreNotControl(self) -> None:
        worker = self.generation(1)[0]
        worker.childDataReceived(1, b'{"event": "ready"}\n')
        self.assertEqual(worker.workerState, WorkerState.STARTING)

    def test_overlongLineIsDropped(self) -> None:
        worker = self.generation(1)[0]
        worker.childDataReceived(3, b"x" * 70000)
        worker.childDataReceived(3, b'\n{"event": "ready"}\n')
        self.assertEqual(worker.workerState, WorkerState.READY)


class LivenessTests(MasterTestCase):
    def test_readyWorkersArePinged(self) -> None:
        workers = self.serving()
        self.reactor.advance(5)
        for worker in workers:
            self.assertEqual(transportOf(worker).allCommands(), [{"command": "ping"}])

    def test_aSilentWorkerIsKilledAndReplaced(self) -> None:
        """
        A worker that answers no ping for C{workerTimeout} is killed, and
        replaced as a crashed one is; one that answers is left alone.
        """
        stuck, answering = self.serving()
        for _ in range(7):
            self.reactor.advance(5)
            answering.childDataReceived(3, b'{"event": "pong"}\n')
        self.assertEqual(transportOf(stuck).signals, ["KILL"])
        self.assertEqual(transportOf(answering).signals, [])
        self.assertIn(("worker_timeout", None), self.steps())
        exits(stuck, status=None, sig=signal.SIGKILL)
        self.reactor.advance(0)
        self.assertEqual([w.slot for w in self.generation(1)[2:]], [stuck.slot])

    def test_noPingsOnceDraining(self) -> None:
        workers = self.serving()
        self.drain.start("SIGTERM")
        self.reactor.advance(4.5)
        for worker in workers:
            self.assertEqual(
                [c["command"] for c in transportOf(worker).allCommands()], ["drain"]
            )


class NotifyTests(MasterTestCase):
    def test_readyReloadingStopping(self) -> None:
        """
        Under systemd's C{Type=notify}: ready once every worker is, reloading
        until the next generation is ready (or failed), stopping at the drain.
        """
        self.assertEqual(self.states, [])
        self.serving()
        self.assertEqual(self.states, ["READY=1"])
        self.master.reload()
        self.assertEqual(self.states[-1], "RELOADING=1")
        for worker in self.generation(2):
            ready(worker)
        self.assertEqual(self.states[-1], "READY=1")
        self.master.reload()
        exits(self.generation(3)[0], status=1)
        self.assertEqual(self.states[-2:], ["RELOADING=1", "READY=1"])
        self.drain.start("SIGTERM")
        self.assertEqual(self.states[-1], "STOPPING=1")


class ReusePortTests(SynchronousTestCase):
    def test_eachSlotAdoptsItsOwnSocket(self) -> None:
        """
        With C{--reuse-port} sockets (one per slot), a worker gets its slot's
        and the shared ones, numbered from fd 5 in the order given; the
        worker that replaces it gets the same.
        """
        reactor = ProcessReactor()
        sockets = [
            SharedSocket("tcp:8080", socket.socket(), slot=0),
            SharedSocket("tcp:8080", socket.socket(), slot=1),
            SharedSocket("unix:/s", socket.socket(socket.AF_UNIX)),
        ]
        for shared in sockets:
            self.addCleanup(shared.stopListening)
        master = Master(
            reactor,
            Drain(reactor),
            lambda: sockets,
            workerCommand([], executable="python", acceptLimit=0),
            2,
            process=FakeProcess(FakeSignals()),
        )
        master.startService()

        def closeDevnull() -> None:
            if master._devnull is not None:
                os.close(master._devnull)

        self.addCleanup(closeDevnull)
        for slot, (_worker, args, childFDs) in enumerate(reactor.spawned):
            self.assertEqual(
                (childFDs[5], childFDs[6]),
                (sockets[slot].fileno(), sockets[2].fileno()),
            )
            self.assertNotIn(7, childFDs)
            spec = json.loads(args[-1].split("=", 1)[1])
            self.assertEqual(spec["acceptLimit"], 0)
            self.assertEqual([fd for _, fd, _ in spec["listeners"]], [5, 6])
        for worker, _, _ in reactor.spawned:
            ready(worker)
        first = reactor.spawned[1][0]
        reactor.advance(60)
        exits(first, status=None, sig=signal.SIGKILL)
        reactor.advance(0)
        self.assertEqual(reactor.spawned[2][2][5], sockets[1].fileno())
        # The drain closes every one.
        master.drain.start("SIGTERM")
        self.assertTrue(all(shared.closed for shared in sockets))
