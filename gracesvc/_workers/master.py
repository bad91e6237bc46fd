# -*- test-case-name: tests.unit.workers.test_master -*-
"""
C{twistd gracesvc --workers N}: a master process that owns the listening
sockets (L{gracesvc._workers.sockets}) and runs N gracesvc worker processes
on them.

Each worker is a fresh C{twistd gracesvc} (so a reload loads new code,
see L{gracesvc._workers.command}) that adopts the sockets (fds 5...) and
talks to the master on a pair of pipes (fds 3 and 4, see
L{gracesvc._workers.channel}).

The master's own stop is a L{Drain} whose connections are the worker
processes (L{WorkerProcess} provides L{IDrainableConnection}) and whose
listeners are the shared sockets: on the first SIGINT/SIGTERM it closes
its copies of the sockets, then tells every worker to drain with the
signal's time, so that one cap holds for the whole tree; it is done when
the last worker has exited, and at the cap it forces what is left.  A
second signal forces, as in a single process.

The workers are started by L{Generation}: SIGHUP reloads, starting
generation g+1 on the same sockets, and only once all of it is ready is
generation g told to drain.  If g+1 cannot start, g keeps serving.  A
worker that crashes, or answers no ping for the worker timeout (see
L{gracesvc._workers.liveness}), is replaced, with backoff.  The master
asks its workers for their metrics on request (L{Master.requestMetrics},
for L{gracesvc._metrics.tree}), and tells the service manager its state
(C{notify}, see L{gracesvc._workers.systemd}).

(The master's drain logs its workers as "connections": that is what they
are to it.)
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import FrameType
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated, ReactorNotRunning
from twisted.internet.interfaces import IDelayedCall, IReactorProcess
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.timers import cancelCall
from gracesvc._pins.twisted import exitSignal
from gracesvc._process.effects import ProcessEffects, exitAtOnce
from gracesvc._workers.channel import (
    WORKER_READS,
    WORKER_WRITES,
    ControlReader,
    Message,
    Requests,
    encode,
)
from gracesvc._workers.command import workerFDs
from gracesvc._workers.liveness import Liveness, Slot
from gracesvc._workers.sockets import SharedSocket

#: How long a worker told to stop at once has before it is killed.
KILL_AFTER = 0.25


class WorkerState(Enum):
    """
    Where a worker process stands, as the master sees it.
    """

    STARTING = "starting"
    READY = "ready"
    #: Told to drain (a reload retired its generation, or the tree stops).
    RETIRING = "retiring"
    EXITED = "exited"


@implementer(IDrainableConnection)
class WorkerProcess(ProcessProtocol):
    """
    One worker process: the master's view of it, and, for the master's
    drain, one connection to wait for.

    @ivar inFlight: always 0 for the master's drain: the worker counts its
        own requests.
    """

    inFlight = 0

    def __init__(self, master: Master, generation: int, slot: int) -> None:
        self.master = master
        self.generation = generation
        self.slot = slot
        self.workerState = WorkerState.STARTING
        self.pid: int | None = None
        self.startedAt = master.reactor.seconds()
        self.readyAt: float | None = None
        #: When the worker last wrote a control line (see L{Liveness}).
        self.lastHeard = self.startedAt
        self._reader = ControlReader(
            self._messageReceived, self._malformed, self._tooLong
        )
        self._kill: IDelayedCall | None = None

    @property
    def state(self) -> str:
        """
        For the master drain's connection states: the worker's state.
        """
        return f"worker {self.workerState.value}"

    def __repr__(self) -> str:
        return (
            f"<worker {self.slot} of generation {self.generation} "
            f"pid {self.pid} {self.workerState.value}>"
        )

    def connectionMade(self) -> None:
        self.pid = getattr(self.transport, "pid", None)

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == WORKER_WRITES:
            self._reader.dataReceived(data)

    def _messageReceived(self, message: Message) -> None:
        self.lastHeard = self.master.reactor.seconds()
        self.master.messageReceived(self, message)

    def _malformed(self, line: bytes) -> None:
        self.master.log.warn(
            "gracesvc master: ignoring a malformed control line from "
            "{worker}: {line!r}",
            worker=repr(self),
            line=line[:200],
        )

    def _tooLong(self) -> None:
        self.master.log.warn(
            "gracesvc master: {worker} wrote an overlong control line",
            worker=repr(self),
        )

    def processEnded(self, reason: Failure) -> None:
        cancelCall(self._kill)
        self._kill = None
        previous, self.workerState = self.workerState, WorkerState.EXITED
        self.master.workerExited(self, describeExit(reason), previous)

    @property
    def answersPings(self) -> bool:
        """
        Whether L{Liveness} pings it: it is ready, neither starting nor
        draining.
        """
        return self.workerState is WorkerState.READY

    def send(self, message: Message) -> None:
        """
        Write a command to the worker; one that has exited is not written to.
        """
        if self.workerState is WorkerState.EXITED or self.transport is None:
            return
        try:
            self.transport.writeToChild(WORKER_READS, encode(message))
        except (KeyError, OSError):
            pass

    def retire(self, startedAt: float, reason: str, drainDelay: bool) -> None:
        """
        Tell the worker to drain, its cap counted from C{startedAt}.

        @param drainDelay: whether it keeps its drain delay (not on a
            reload: the next generation serves the same sockets already).
        """
        if self.workerState is WorkerState.EXITED:
            return
        self.workerState = WorkerState.RETIRING
        self.send(
            {
                "command": "drain",
                "startedAt": startedAt,
                "reason": reason,
                "drainDelay": drainDelay,
            }
        )

    def kill(self, delay: float = 0.0) -> None:
        """
        SIGKILL the worker, after C{delay} seconds if it is still running.
        """
        if self.workerState is WorkerState.EXITED:
            return
        if delay > 0:
            if self._kill is None:
                self._kill = self.master.reactor.callLater(delay, self.kill)
            return
        try:
            self.transport.signalProcess("KILL")  # type: ignore[union-attr]
        except Exception:
            pass

    # IDrainableConnection, for the master's drain.

    def beginDrain(self) -> None:
        startedAt = self.master.drain.startedAt
        assert startedAt is not None
        self.retire(startedAt, self.master.stopReason, drainDelay=True)

    def cut(self, retryAfter: int) -> int:
        # The worker cuts its own requests at its own cut.
        return 0

    def abort(self) -> None:
        self.send({"command": "force", "reason": self.master.stopReason})
        self.kill(KILL_AFTER)


def describeExit(reason: Failure) -> str:
    """
    @return: how a process ended, for a log line.
    """
    value = reason.value
    if isinstance(value, ProcessDone):
        return "exit status 0"
    if isinstance(value, ProcessTerminated):
        if value.signal is not None:
            return f"signal {signal.Signals(value.signal).name}"
        return f"exit status {value.exitCode}"
    return str(value)


class MasterPhase(Enum):
    """
    Where the master stands.
    """

    #: The first generation is starting; the master is not ready.
    STARTING = "starting"
    SERVING = "serving"
    #: A new generation is starting while the current one serves.
    RELOADING = "reloading"
    STOPPING = "stopping"


@dataclass
class Generation:
    """
    The N workers started together, from the same code: they become ready
    together (or the start or the reload fails), serve together, and are
    retired together when the next generation is ready.  A worker that
    replaces one of them joins its generation.

    @ivar number: counts from 1 and is never reused, a failed generation's
        included.
    @ivar size: how many workers it has when it is whole.
    @ivar workers: its workers running, while it is starting or serving.
    @ivar bootTimer: fails the generation if it is not ready in time.
    """

    number: int
    size: int
    workers: list[WorkerProcess] = field(default_factory=list)
    bootTimer: IDelayedCall | None = None

    def ready(self) -> bool:
        """
        @return: whether all of it is ready.
        """
        return len(self.workers) == self.size and all(
            w.workerState is WorkerState.READY for w in self.workers
        )

    def booted(self) -> None:
        """
        It is ready, or it failed: its boot timer is done.
        """
        cancelCall(self.bootTimer)
        self.bootTimer = None

    def retire(self, now: float) -> int:
        """
        The next generation is ready: tell every worker to drain, without
        the drain delay (the next generation serves the same sockets
        already).

        @return: how many were told.
        """
        running = [w for w in self.workers if w.workerState is not WorkerState.EXITED]
        for w in running:
            w.retire(now, "reload", drainDelay=False)
        return len(running)

    def abandon(self, now: float) -> None:
        """
        It failed to start: those ready drain (they may have accepted
        connections already), those starting are killed.
        """
        for w in list(self.workers):
            if w.workerState is WorkerState.READY:
                w.retire(now, "reload failed", drainDelay=False)
            elif w.workerState is WorkerState.STARTING:
                w.workerState = WorkerState.RETIRING
                w.kill()


class Master(Service):
    """
    The master of C{--workers N}: see the module docstring.

    @ivar serving: the generation serving, once the first is ready.
    @ivar booting: the generation starting (the first, or a reload's).
    @ivar reloadQueued: a reload was asked for while one ran: it runs next.
    @ivar exitStatus: set when the start failed: the master exits with it.
    @ivar metricsRequests: the workers' metrics asked for and not answered.
    """

    log = Logger()

    def __init__(
        self,
        reactor: Any,
        drain: Drain,
        sockets: Callable[[], Sequence[SharedSocket]],
        workerCommand: Callable[[int, int, Sequence[SharedSocket]], list[str]],
        workers: int,
        process: ProcessEffects,
        bootTimeout: float = 60.0,
        executable: str = sys.executable,
        workerTimeout: float = 30.0,
        notify: Callable[[str], None] = lambda state: None,
    ) -> None:
        """
        @param reactor: provides
            L{twisted.internet.interfaces.IReactorProcess},
            L{twisted.internet.interfaces.IReactorCore} and
            L{twisted.internet.interfaces.IReactorTime}.
        @param drain: the master's drain: its listeners are the shared
            sockets and its connections the workers.
        @param sockets: opens the shared sockets (while the process may
            still be root).
        @param workerCommand: the argv of a worker, from its generation,
            slot and the sockets.
        @param workers: how many.
        @param process: the master's process: its SIGHUP reloads, and it
            leaves at once once every worker is gone.
        @param bootTimeout: how long a generation has to become ready.
        @param workerTimeout: how long a ready worker may leave the
            master's pings unanswered before it is killed and replaced.
        @param notify: tells the service manager the state (see
            L{gracesvc._workers.systemd.systemdNotifier}).
        """
        super().__init__()
        self.reactor = reactor
        self.drain = drain
        self._openSockets = sockets
        self.workerCommand = workerCommand
        self.workerCount = workers
        self.process = process
        self.bootTimeout = bootTimeout
        self.executable = executable
        self.notify = notify
        self.liveness = Liveness(
            reactor, lambda: self.workers, workerTimeout, self._silent
        )
        self.sockets: list[SharedSocket] = []
        self.workers: list[WorkerProcess] = []
        self.slots = [Slot(i) for i in range(workers)]
        self.serving: Generation | None = None
        self.booting: Generation | None = None
        self.reloadQueued = False
        self._numbers = itertools.count(1)
        self.reloads = {"ok": 0, "failed": 0}
        self.restarts = 0
        self.exitStatus: int | None = None
        self.stopReason = "stop"
        self.metricsRequests = Requests()
        self._exitWaiters: list[Deferred[None]] = []
        self._devnull: int | None = None

    @property
    def phase(self) -> MasterPhase:
        """
        Where the master stands, from its generations.
        """
        if self.drain.draining:
            return MasterPhase.STOPPING
        if self.serving is None:
            return MasterPhase.STARTING
        if self.booting is not None:
            return MasterPhase.RELOADING
        return MasterPhase.SERVING

    @property
    def generation(self) -> int:
        """
        The number of the generation serving (or of the first, until it
        serves).
        """
        return 1 if self.serving is None else self.serving.number

    # Start.

    def privilegedStartService(self) -> None:
        """
        Open the shared sockets, while the process may still be root.
        """
        super().privilegedStartService()
        self._openAll()

    def _openAll(self) -> None:
        if self.sockets:
            return
        self.sockets = list(self._openSockets())
        for shared in self.sockets:
            self.drain.addListener(shared)  # type: ignore[arg-type]
            backlog = shared.backlog()
            self.log.info(
                "gracesvc master listening on {description} ({address}), "
                "backlog {backlog}",
                description=shared.description,
                address=shared.address(),
                backlog="unknown" if backlog is None else backlog,
            )

    def startService(self) -> None:
        super().startService()
        self._openAll()
        self.drain.addHook("draining", self._stopping, name="stop the workers")
        self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit)
        self.process.signals.signal(signal.SIGHUP, self._sighup)
        self._startGeneration()
        self.liveness.start()

    def _sighup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def _startGeneration(self) -> None:
        generation = self.booting = Generation(next(self._numbers), self.workerCount)
        self.log.info(
            "gracesvc master: starting generation {generation}: {workers} workers",
            generation=generation.number,
            workers=self.workerCount,
            step="generation_start",
        )
        generation.bootTimer = self.reactor.callLater(
            self.bootTimeout, self._bootTimedOut, generation
        )
        for slot in self.slots:
            self._spawn(generation, slot)

    def _spawn(self, generation: Generation, slot: Slot) -> WorkerProcess:
        slot.cancelRestart()
        worker = WorkerProcess(self, generation.number, slot.index)
        sockets = [s for s in self.sockets if s.slot in (None, slot.index)]
        argv = self.workerCommand(generation.number, slot.index, sockets)
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_RDWR)
        self.workers.append(worker)
        generation.workers.append(worker)
        self.drain.connectionOpened(worker)
        proc: IReactorProcess = self.reactor
        proc.spawnProcess(
            worker,
            self.executable,
            argv,
            env=None,
            childFDs=workerFDs(self._devnull, sockets),
        )
        self.log.info(
            "gracesvc master: started {worker}",
            worker=repr(worker),
            generation=generation.number,
            slot=slot.index,
            pid=worker.pid,
        )
        return worker

    def messageReceived(self, worker: WorkerProcess, message: Message) -> None:
        """
        A control message from C{worker}.
        """
        event = message.get("event")
        if event == "ready":
            self._workerReady(worker)
        elif event == "pong":
            pass
        elif event == "metrics":
            self.metricsRequests.answered(message)
        else:
            self.log.warn(
                "gracesvc master: ignoring {message!r} from {worker}",
                message=message,
                worker=repr(worker),
            )

    def requestMetrics(self, worker: WorkerProcess) -> Deferred[str]:
        """
        Ask C{worker} for its metrics.

        @return: a Deferred firing with its exposition text; cancel it to
            stop waiting.
        """
        asked = self.metricsRequests.ask(worker.send, {"command": "metrics"})
        return asked.addCallback(lambda answer: str(answer.get("text", "")))

    def _silent(self, worker: WorkerProcess, silent: float) -> None:
        """
        C{worker} answered no ping for the worker timeout (stuck in a loop,
        say): kill it, to be replaced as a crashed one is.
        """
        self.log.warn(
            "gracesvc master: {worker} silent for {silent:.1f}s: killing it",
            worker=repr(worker),
            silent=silent,
            generation=worker.generation,
            slot=worker.slot,
            step="worker_timeout",
        )
        worker.kill()

    def _workerReady(self, worker: WorkerProcess) -> None:
        if worker.workerState is not WorkerState.STARTING:
            return
        worker.workerState = WorkerState.READY
        worker.readyAt = self.reactor.seconds()
        self.log.info(
            "gracesvc master: {worker} ready",
            worker=repr(worker),
            generation=worker.generation,
            slot=worker.slot,
            pid=worker.pid,
        )
        booting = self.booting
        if not self.drain.draining and booting is not None and booting.ready():
            self._generationReady(booting)

    def _generationReady(self, generation: Generation) -> None:
        generation.booted()
        previous, self.serving, self.booting = self.serving, generation, None
        self.notify("READY=1")
        if previous is None:
            self.log.info(
                "gracesvc master ready: {workers} workers of generation "
                "{generation} serving",
                workers=self.workerCount,
                generation=generation.number,
                step="ready",
            )
        else:
            retired = previous.retire(self.reactor.seconds())
            self.reloads["ok"] += 1
            self.log.info(
                "gracesvc master: reloaded: generation {generation} ready, "
                "{retired} workers of generation {previous} draining",
                generation=generation.number,
                previous=previous.number,
                retired=retired,
                step="reload",
                outcome="ok",
            )
        self._reloadIfQueued()

    # Reload.

    def reload(self) -> None:
        """
        Start the next generation; retire the current one once it is ready.
        A reload asked for while one runs (or while starting) runs after it,
        once however often it was asked for.
        """
        if self.drain.draining:
            return
        if self.phase is not MasterPhase.SERVING:
            self.reloadQueued = True
            return
        self.log.info(
            "gracesvc master: SIGHUP: reloading", step="reload", outcome="start"
        )
        self.notify("RELOADING=1")
        self._startGeneration()

    def _reloadFailed(self, generation: Generation, why: str) -> None:
        generation.booted()
        self.booting = None
        self.notify("READY=1")
        self.reloads["failed"] += 1
        generation.abandon(self.reactor.seconds())
        self.log.error(
            "gracesvc master: reload failed: {why}; generation {current} keeps serving",
            why=why,
            current=self.generation,
            failed=generation.number,
            step="reload",
            outcome="failed",
        )
        self._reloadIfQueued()

    def _reloadIfQueued(self) -> None:
        """
        A reload ended: run the one a SIGHUP queued meanwhile, if any.
        """
        if self.reloadQueued:
            self.reloadQueued = False
            self.reload()

    def _bootFailed(self, generation: Generation, why: str) -> None:
        if self.serving is None:
            self._failStart(why)
        else:
            self._reloadFailed(generation, why)

    def _bootTimedOut(self, generation: Generation) -> None:
        generation.bootTimer = None
        why = f"generation {generation.number} not ready after {self.bootTimeout:g}s"
        self._bootFailed(generation, why)

    # Exits.

    def workerExited(
        self, worker: WorkerProcess, how: str, previous: WorkerState
    ) -> None:
        """
        C{worker} exited, C{how}, from state C{previous}.
        """
        self.log.info(
            "gracesvc master: {worker} exited ({how})",
            worker=repr(worker),
            how=how,
            generation=worker.generation,
            slot=worker.slot,
            pid=worker.pid,
        )
        self.workers.remove(worker)
        for generation in (self.booting, self.serving):
            if generation is not None and worker in generation.workers:
                generation.workers.remove(worker)
        self.drain.connectionClosed(worker)
        if not self.workers:
            waiters, self._exitWaiters = self._exitWaiters, []
            for d in waiters:
                d.callback(None)
        if self.drain.draining or previous is WorkerState.RETIRING:
            return
        if self.booting is not None and worker.generation == self.booting.number:
            why = f"{worker!r} exited before its generation was ready ({how})"
            self._bootFailed(self.booting, why)
        elif self.serving is not None and worker.generation == self.serving.number:
            self._replace(worker, how)

    def _replace(self, worker: WorkerProcess, how: str) -> None:
        slot = self.slots[worker.slot]
        delay = slot.died(worker.readyAt, self.reactor.seconds())
        self.restarts += 1
        self.log.warn(
            "gracesvc master: {worker} died ({how}): replacing it in {delay:.1f}s",
            worker=repr(worker),
            how=how,
            delay=delay,
            generation=worker.generation,
            slot=worker.slot,
            step="worker_replaced",
        )
        generation = self.serving
        assert generation is not None
        slot.restartIn(self.reactor, delay, lambda: self._respawn(generation, slot))

    def _respawn(self, generation: Generation, slot: Slot) -> None:
        # A reload that finished meanwhile made a newer generation current.
        if generation is self.serving and not self.drain.draining:
            self._spawn(generation, slot)

    def _failStart(self, why: str) -> None:
        """
        The first generation could not start: stop everything, exit 1.
        """
        if self.exitStatus is not None:
            return
        self.exitStatus = 1
        self.log.critical("gracesvc: cannot start the workers: {why}", why=why)
        self.stopReason = "start failed"
        self.drain.start("start failed")
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass

    # Stop.

    def _stopping(self) -> None:
        """
        The master's drain began: no more starts; the workers are told to
        drain when the shared sockets are closed (L{WorkerProcess.beginDrain}).
        """
        self.notify("STOPPING=1")
        self.stopReason = self._stopReasonNow()
        self.liveness.stop()
        if self.booting is not None:
            self.booting.booted()
        for slot in self.slots:
            slot.cancelRestart()

    def _stopReasonNow(self) -> str:
        signum = exitSignal(self.reactor)
        if self.exitStatus is not None:
            return "start failed"
        return signal.Signals(signum).name if signum is not None else "stop"

    def whenAllExited(self) -> Deferred[None]:
        """
        @return: a Deferred that fires when no worker runs.
        """
        if not self.workers:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._exitWaiters.append(d)
        return d

    def _shutdown(self) -> Deferred[None]:
        """
        The reactor stops: wait for the drain and for every worker to exit.
        Once the drain is done (at the cap at the latest), what still runs
        is killed.
        """
        self.drain.start("reactor stopped")

        def drained(_: object) -> Deferred[None]:
            for w in list(self.workers):
                w.kill(KILL_AFTER)
            return self.whenAllExited()

        return self.drain.whenDone().addCallback(drained)

    def _exit(self) -> None:
        """
        The reactor has stopped and every worker is gone: leave at once,
        with the stop signal's status, or 1 after a failed start.
        """
        exitAtOnce(self.reactor, self.process, self.exitStatus or 0)
