# -*- test-case-name: tests.unit.workers.test_master -*-
"""
C{twistd gracesvc --workers N}: a master process that owns the listening
sockets and runs N gracesvc worker processes on them.

The master creates each socket once with the L{socket} module, never
accepts on it and only ever C{close()}s it: a C{shutdown()} of one copy of
a shared listening socket stops it listening in every process.  Each
worker is a fresh C{twistd gracesvc} (so a reload loads new code) that
adopts the sockets (fds 5...) and talks to the master on a pair of pipes
(fds 3 and 4, see L{gracesvc._workers.worker}).

The master's own stop is a L{Drain} whose connections are the worker
processes (L{WorkerProcess} provides L{IDrainableConnection}) and whose
listeners are the shared sockets: on the first SIGINT/SIGTERM it closes
its copies of the sockets, then tells every worker to drain with the
signal's time, so that one cap holds for the whole tree; it is done when
the last worker has exited, and at the cap it forces what is left.  A
second signal forces, as in a single process.

SIGHUP reloads: generation g+1 is started on the same sockets, and only
once all of it is ready is generation g told to drain.  If g+1 cannot
start, g keeps serving.  A worker that crashes, or answers no ping for
the worker timeout, is replaced, with backoff.  With C{--metrics-listen}
the master serves the whole tree's metrics (L{gracesvc._metrics.tree});
under systemd's C{Type=notify} it reports READY/RELOADING/STOPPING.

(The master's drain logs its workers as "connections": that is what they
are to it.)
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import stat
import sys
from collections.abc import Callable, MutableMapping, Sequence
from dataclasses import dataclass
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

from gracesvc._core.drain import Drain, IDrainableConnection
from gracesvc._pins.twisted import ListeningSpec, exitSignal
from gracesvc._process.effects import ProcessEffects, exitAtOnce
from gracesvc._workers.worker import WORKER_READS, WORKER_WRITES, decode, encode

#: The first fd of the adopted sockets in a worker.
FIRST_SOCKET_FD = 5

#: A worker that dies within this many seconds of being ready (or before)
#: died young: its slot's next start waits (see L{restartDelay}).
YOUNG = 1.0

#: The longest wait before restarting a slot whose workers keep dying.
MAX_RESTART_DELAY = 5.0

#: How long a worker told to stop at once has before it is killed.
KILL_AFTER = 0.25

#: The longest control line a worker may write (its metrics are one line).
MAX_UP_LINE = 1 << 22

#: The longest time between two liveness pings to a ready worker.
PING_INTERVAL = 5.0

#: Connections accepted per wake-up in a worker (see
#: L{gracesvc._pins.twisted.limitAccepts}).
ACCEPT_LIMIT = 1


def restartDelay(youngDeaths: int) -> float:
    """
    @param youngDeaths: how many workers in a row died young in a slot.
    @return: how long to wait before starting its next one: at once after
        the first, then 0.1 s doubling up to L{MAX_RESTART_DELAY}.
    """
    if youngDeaths <= 1:
        return 0.0
    return float(min(MAX_RESTART_DELAY, 0.1 * 2 ** (youngDeaths - 2)))


def systemdNotifier(environ: MutableMapping[str, str]) -> Callable[[str], None]:
    """
    @return: what tells systemd the service's state (C{READY=1},
        C{RELOADING=1}, C{STOPPING=1}) on C{NOTIFY_SOCKET} under
        C{Type=notify}; without it, what does nothing.  C{NOTIFY_SOCKET} is
        taken out of C{environ}, so that the workers do not inherit it.
    """
    path = environ.pop("NOTIFY_SOCKET", "")
    if not path:
        return lambda state: None
    if path.startswith("@"):
        path = "\0" + path[1:]

    def notify(state: str) -> None:
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode("utf-8"), path)
        except OSError:
            pass

    return notify


class SharedSocket:
    """
    A listening socket the master owns and every worker adopts.

    It stands as a listener of the master's drain: L{stopListening} only
    closes the master's copy (never C{shutdown()}), so the workers keep
    accepting on theirs until each drains.
    """

    def __init__(
        self,
        description: str,
        sock: socket.socket,
        unlinkPath: str | None = None,
        slot: int | None = None,
        tls: bool = False,
    ) -> None:
        """
        @param slot: the one worker slot that adopts it (a C{--reuse-port}
            socket of that slot's own), or L{None} for every worker.
        @param tls: whether the workers serve TLS on it (an C{ssl:}
            listener, whose certificate each worker reads).
        """
        self.description = description
        self.slot = slot
        self.tls = tls
        self.socket = sock
        self.family = int(sock.family)
        self.unlinkPath = unlinkPath
        self.closed = False

    def fileno(self) -> int:
        return self.socket.fileno()

    def address(self) -> str:
        """
        @return: what it listens on, for the log.
        """
        name = self.socket.getsockname()
        if isinstance(name, tuple):
            return f"{name[0]}:{name[1]}"
        return str(name)

    def stopListening(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.socket.close()
        if self.unlinkPath is not None:
            try:
                os.unlink(self.unlinkPath)
            except OSError:
                pass

    # The rest of IListeningPort, which the drain does not call.
    def startListening(self) -> None:
        pass

    def getHost(self) -> str:
        return self.address()


def openSharedSocket(
    description: str, spec: ListeningSpec, slot: int | None = None, tls: bool = False
) -> SharedSocket:
    """
    Create the socket C{spec} describes (see
    L{gracesvc._pins.twisted.listeningSpec}), listening.

    @param slot: with C{SO_REUSEPORT}, for this worker slot alone (TCP
        only); L{None}: one socket for every worker.
    @param tls: whether the workers serve TLS on it (see L{SharedSocket}).
    @raise OSError: it cannot be created (a port in use, say).
    """
    if spec[0] == "tcp":
        _, family, interface, port, backlog = spec  # type: ignore[misc]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if slot is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            host = interface or ("::" if family == socket.AF_INET6 else "")
            sock.bind((host, port))
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return SharedSocket(description, sock, slot=slot, tls=tls)
    if spec[0] == "unix":
        _, path, backlog, mode = spec  # type: ignore[misc]
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)
            except FileNotFoundError:
                pass
            sock.bind(path)
            os.chmod(path, mode)
            sock.listen(backlog)
        except OSError:
            sock.close()
            raise
        return SharedSocket(description, sock, unlinkPath=path)
    _, fd, family = spec  # type: ignore[misc]
    return SharedSocket(
        description, socket.socket(family, socket.SOCK_STREAM, fileno=fd)
    )


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
        #: when the worker last wrote a control line (see L{Master.ping}).
        self.lastHeard = self.startedAt
        self._buffer = b""
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
        if childFD != WORKER_WRITES:
            return
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > MAX_UP_LINE:
            self.master.log.warn(
                "gracesvc master: {worker} wrote an overlong control line",
                worker=repr(self),
            )
            self._buffer = b""
        for line in lines:
            message = decode(line)
            if message is None:
                self.master.log.warn(
                    "gracesvc master: ignoring a malformed control line from "
                    "{worker}: {line!r}",
                    worker=repr(self),
                    line=line[:200],
                )
                continue
            self.lastHeard = self.master.reactor.seconds()
            self.master.messageReceived(self, message)

    def processEnded(self, reason: Failure) -> None:
        if self._kill is not None and self._kill.active():
            self._kill.cancel()
        previous, self.workerState = self.workerState, WorkerState.EXITED
        self.master.workerExited(self, describeExit(reason), previous)

    def send(self, message: dict[str, Any]) -> None:
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
class Slot:
    """
    One of the N places a worker serves in.
    """

    index: int
    youngDeaths: int = 0
    restart: IDelayedCall | None = None


class Master(Service):
    """
    The master of C{--workers N}: see the module docstring.

    @ivar generation: the generation serving (or starting, at first).
    @ivar exitStatus: set when the start failed: the master exits with it.
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
        @param reactor: provides L{IReactorProcess}, L{IReactorCore} and
            L{IReactorTime}.
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
            L{systemdNotifier}).
        """
        super().__init__()
        self.reactor = reactor
        self.drain = drain
        self._openSockets = sockets
        #: (description, endpoint) to serve the tree's metrics on, if any.
        self.metricsEndpoint: tuple[str, Any] | None = None
        self.workerCommand = workerCommand
        self.workerCount = workers
        self.bootTimeout = bootTimeout
        self.workerTimeout = workerTimeout
        self.notify = notify
        self.pingInterval = min(PING_INTERVAL, workerTimeout / 3)
        self._pinging: IDelayedCall | None = None
        self._metricsRequests: dict[int, Deferred[str]] = {}
        self._metricsIds = itertools.count()
        self.process = process
        self.executable = executable
        self.phase = MasterPhase.STARTING
        self.sockets: list[SharedSocket] = []
        self.workers: list[WorkerProcess] = []
        self.slots = [Slot(i) for i in range(workers)]
        self.generation = 1
        #: the newest generation started, ready or not: never reused.
        self.newest = 1
        self.booting: int | None = None
        self.reloadQueued = False
        self.reloads = {"ok": 0, "failed": 0}
        self.restarts = 0
        self.exitStatus: int | None = None
        self.stopReason = "stop"
        self._bootTimer: IDelayedCall | None = None
        self._exitWaiters: list[Deferred[None]] = []
        self._devnull: int | None = None

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
        if self.metricsEndpoint is not None:
            self._serveMetrics(*self.metricsEndpoint)
        for shared in self.sockets:
            self.drain.addListener(shared)  # type: ignore[arg-type]
            self.log.info(
                "gracesvc master listening on {description} ({address})",
                description=shared.description,
                address=shared.address(),
            )

    def _serveMetrics(self, description: str, endpoint: Any) -> None:
        """
        Serve the tree's metrics (see L{gracesvc._metrics.tree}) on
        C{endpoint}, until the master exits.
        """
        from twisted.web.server import Site

        from gracesvc._metrics.tree import TreeMetrics, TreeMetricsResource

        site = Site(TreeMetricsResource(TreeMetrics(self)), reactor=self.reactor)
        site.noisy = False
        failures: list[Failure] = []
        endpoint.listen(site).addCallbacks(
            lambda port: self.log.info(
                "gracesvc master serving metrics on {description} ({address})",
                description=description,
                address=str(port.getHost()),
            ),
            failures.append,
        )
        if failures:
            self.log.critical(
                "gracesvc: cannot listen on {description}: {error}",
                description=description,
                error=failures[0].getErrorMessage(),
            )
            raise SystemExit(1)

    def startService(self) -> None:
        super().startService()
        self._openAll()
        self.drain.addHook("draining", self._stopping, name="stop the workers")
        self.reactor.addSystemEventTrigger("before", "shutdown", self._shutdown)
        self.reactor.addSystemEventTrigger("after", "shutdown", self._exit)
        self.process.signals.signal(signal.SIGHUP, self._sighup)
        self._startGeneration(self.generation)
        self._pinging = self.reactor.callLater(self.pingInterval, self.ping)

    def _sighup(self, signum: int, frame: FrameType | None) -> None:
        self.reactor.callFromThread(self.reload)

    def _startGeneration(self, generation: int) -> None:
        self.booting = self.newest = generation
        self.log.info(
            "gracesvc master: starting generation {generation}: {workers} workers",
            generation=generation,
            workers=self.workerCount,
            step="generation_start",
        )
        self._bootTimer = self.reactor.callLater(
            self.bootTimeout, self._bootTimedOut, generation
        )
        for slot in self.slots:
            self._spawn(generation, slot)

    def _spawn(self, generation: int, slot: Slot) -> WorkerProcess:
        slot.restart = None
        worker = WorkerProcess(self, generation, slot.index)
        sockets = [s for s in self.sockets if s.slot in (None, slot.index)]
        argv = self.workerCommand(generation, slot.index, sockets)
        if self._devnull is None:
            self._devnull = os.open(os.devnull, os.O_RDWR)
        childFDs: dict[int, int | str] = {
            0: self._devnull,
            1: 1,
            2: 2,
            WORKER_WRITES: "r",
            WORKER_READS: "w",
        }
        for i, shared in enumerate(sockets):
            childFDs[FIRST_SOCKET_FD + i] = shared.fileno()
        self.workers.append(worker)
        self.drain.connectionOpened(worker)
        proc: IReactorProcess = self.reactor
        proc.spawnProcess(worker, self.executable, argv, env=None, childFDs=childFDs)
        self.log.info(
            "gracesvc master: started {worker}",
            worker=repr(worker),
            generation=generation,
            slot=slot.index,
            pid=worker.pid,
        )
        return worker

    def messageReceived(self, worker: WorkerProcess, message: dict[str, Any]) -> None:
        """
        A control message from C{worker}.
        """
        event = message.get("event")
        if event == "ready":
            self._workerReady(worker)
        elif event == "pong":
            pass
        elif event == "metrics":
            key = message.get("id")
            waiting = self._metricsRequests.pop(
                key if isinstance(key, int) else -1, None
            )
            if waiting is not None:
                waiting.callback(str(message.get("text", "")))
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
        key = next(self._metricsIds)

        def cancel(d: Deferred[str]) -> None:
            self._metricsRequests.pop(key, None)

        d: Deferred[str] = Deferred(cancel)
        self._metricsRequests[key] = d
        worker.send({"command": "metrics", "id": key})
        return d

    def ping(self) -> None:
        """
        Ping every ready worker; kill one that has said nothing for
        C{workerTimeout} (stuck in a loop, say): it is then replaced as a
        crashed one is.  Workers starting or draining are left alone: the
        boot timeout and the cap bound those.
        """
        self._pinging = None
        if self.drain.draining:
            return
        now = self.reactor.seconds()
        for worker in list(self.workers):
            if worker.workerState is not WorkerState.READY:
                continue
            silent = now - worker.lastHeard
            if silent > self.workerTimeout:
                self.log.warn(
                    "gracesvc master: {worker} silent for {silent:.1f}s: killing it",
                    worker=repr(worker),
                    silent=silent,
                    generation=worker.generation,
                    slot=worker.slot,
                    step="worker_timeout",
                )
                worker.kill()
            else:
                worker.send({"command": "ping"})
        self._pinging = self.reactor.callLater(self.pingInterval, self.ping)

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
        if self.drain.draining:
            return
        if worker.generation != self.booting:
            return
        generation = [w for w in self.workers if w.generation == worker.generation]
        if len(generation) == self.workerCount and all(
            w.workerState is WorkerState.READY for w in generation
        ):
            self._generationReady(worker.generation)

    def _generationReady(self, generation: int) -> None:
        if self._bootTimer is not None and self._bootTimer.active():
            self._bootTimer.cancel()
        self._bootTimer = None
        self.booting = None
        previous = self.generation
        self.generation = generation
        self.notify("READY=1")
        if self.phase is MasterPhase.STARTING:
            self.phase = MasterPhase.SERVING
            self.log.info(
                "gracesvc master ready: {workers} workers of generation "
                "{generation} serving",
                workers=self.workerCount,
                generation=generation,
                step="ready",
            )
        else:
            self.phase = MasterPhase.SERVING
            now = self.reactor.seconds()
            retired = 0
            for w in list(self.workers):
                if w.generation == previous and w.workerState is not WorkerState.EXITED:
                    w.retire(now, "reload", drainDelay=False)
                    retired += 1
            self.reloads["ok"] += 1
            self.log.info(
                "gracesvc master: reloaded: generation {generation} ready, "
                "{retired} workers of generation {previous} draining",
                generation=generation,
                previous=previous,
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
        if self.phase in (MasterPhase.STARTING, MasterPhase.RELOADING):
            self.reloadQueued = True
            return
        self.log.info(
            "gracesvc master: SIGHUP: reloading", step="reload", outcome="start"
        )
        self.phase = MasterPhase.RELOADING
        self.notify("RELOADING=1")
        self._startGeneration(self.newest + 1)

    def _reloadFailed(self, generation: int, why: str) -> None:
        if self._bootTimer is not None and self._bootTimer.active():
            self._bootTimer.cancel()
        self._bootTimer = None
        self.booting = None
        self.phase = MasterPhase.SERVING
        self.notify("READY=1")
        self.reloads["failed"] += 1
        now = self.reactor.seconds()
        for w in list(self.workers):
            if w.generation != generation:
                continue
            if w.workerState is WorkerState.READY:
                # It may have accepted connections already: drain them.
                w.retire(now, "reload failed", drainDelay=False)
            elif w.workerState is WorkerState.STARTING:
                w.workerState = WorkerState.RETIRING
                w.kill()
        self.log.error(
            "gracesvc master: reload failed: {why}; generation {current} keeps serving",
            why=why,
            current=self.generation,
            failed=generation,
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

    def _bootTimedOut(self, generation: int) -> None:
        self._bootTimer = None
        why = f"generation {generation} not ready after {self.bootTimeout:g}s"
        if self.phase is MasterPhase.STARTING:
            self._failStart(why)
        else:
            self._reloadFailed(generation, why)

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
        self.drain.connectionClosed(worker)
        if not self.workers:
            waiters, self._exitWaiters = self._exitWaiters, []
            for d in waiters:
                d.callback(None)
        if self.drain.draining or previous is WorkerState.RETIRING:
            return
        if worker.generation == self.booting:
            why = f"{worker!r} exited before its generation was ready ({how})"
            if self.phase is MasterPhase.STARTING:
                self._failStart(why)
            else:
                self._reloadFailed(worker.generation, why)
        elif (
            worker.generation == self.generation
            and self.phase is not MasterPhase.STARTING
        ):
            self._replace(worker, how)

    def _replace(self, worker: WorkerProcess, how: str) -> None:
        slot = self.slots[worker.slot]
        young = (
            worker.readyAt is None or self.reactor.seconds() - worker.readyAt < YOUNG
        )
        slot.youngDeaths = slot.youngDeaths + 1 if young else 1
        delay = restartDelay(slot.youngDeaths)
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
        if slot.restart is not None and slot.restart.active():
            return
        slot.restart = self.reactor.callLater(
            delay, self._respawn, worker.generation, slot
        )

    def _respawn(self, generation: int, slot: Slot) -> None:
        slot.restart = None
        if self.drain.draining:
            return
        # A reload that finished meanwhile made a newer generation current.
        if generation != self.generation:
            return
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
        self.phase = MasterPhase.STOPPING
        self.notify("STOPPING=1")
        self.stopReason = self._stopReasonNow()
        if self._pinging is not None and self._pinging.active():
            self._pinging.cancel()
        if self._bootTimer is not None and self._bootTimer.active():
            self._bootTimer.cancel()
        for slot in self.slots:
            if slot.restart is not None and slot.restart.active():
                slot.restart.cancel()
            slot.restart = None

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


#: How a worker is started: twistd's own entry point, so that the worker
#: runs exactly what C{twistd gracesvc} runs.
TWISTD_ENTRY = "from twisted.scripts.twistd import run; run()"


#: twistd's own options a worker gets as its master got them: the rest
#: (--pidfile, --logfile, --uid, daemonizing...) are the master's alone.
INHERITED_TWISTD_OPTIONS = {"--reactor": "-r", "--logger": None}


def twistdArguments(argv: Sequence[str], plugin: str = "gracesvc") -> list[str]:
    """
    @param argv: the master's command line after the program name.
    @return: the twistd options (before C{plugin}) in
        L{INHERITED_TWISTD_OPTIONS}, to give every worker.
    """
    options = list(argv[: list(argv).index(plugin)]) if plugin in argv else []
    inherited: list[str] = []
    for i, arg in enumerate(options):
        for long, short in INHERITED_TWISTD_OPTIONS.items():
            if arg.startswith(long + "="):
                inherited.append(arg)
            elif arg in (long, short) and i + 1 < len(options):
                inherited += [long, options[i + 1]]
    return inherited


def workerCommand(
    pluginArguments: Sequence[str],
    executable: str = sys.executable,
    metricsRoute: bool = True,
    twistd: Sequence[str] = (),
    acceptLimit: int = ACCEPT_LIMIT,
) -> Callable[[int, int, Sequence[SharedSocket]], list[str]]:
    """
    @param pluginArguments: the plugin options every worker gets.
    @param twistd: twistd's own options every worker gets (see
        L{twistdArguments}).
    @param acceptLimit: connections a worker accepts per wake-up (0:
        Twisted's default, when no other worker shares its sockets).
    @param metricsRoute: whether the workers serve C{/metrics} on the main
        listeners (not when the master serves the tree's on
        C{--metrics-listen}).
    @return: what makes the argv of a worker from its generation, slot and
        the shared sockets (adopted as fds 5...).
    """

    def command(
        generation: int, slot: int, sockets: Sequence[SharedSocket]
    ) -> list[str]:
        spec = {
            "generation": generation,
            "slot": slot,
            "acceptLimit": acceptLimit,
            "metricsRoute": metricsRoute,
            # A TLS listener has a fourth item, so that a worker too old to
            # serve TLS refuses the spec rather than serve cleartext on it.
            "listeners": [
                [shared.description, FIRST_SOCKET_FD + i, shared.family]
                + ([True] if shared.tls else [])
                for i, shared in enumerate(sockets)
            ],
        }
        return [
            executable,
            "-c",
            TWISTD_ENTRY,
            "--pidfile=",
            "--nodaemon",
            *twistd,
            "gracesvc",
            *pluginArguments,
            f"--worker-spec={json.dumps(spec, separators=(',', ':'))}",
        ]

    return command


def reusePortSockets(
    description: str, spec: ListeningSpec, workers: int, tls: bool = False
) -> list[SharedSocket]:
    """
    One C{SO_REUSEPORT} socket per worker slot on the TCP address C{spec}
    describes: the kernel spreads new connections over them by hash, so
    every worker gets its share however busy the machine (a worker that is
    not scheduled when connections arrive misses them on a shared socket).
    A slot's socket outlives its workers (the master holds it), so a
    reload or a replacement loses none of its queue; but while a slot has
    no worker ready, its connections wait.

    @raise OSError: one cannot be created; those made are closed.
    """
    opened = [openSharedSocket(description, spec, slot=0, tls=tls)]
    try:
        # Port 0 picks a port: the other slots share the one picked.
        port = opened[0].socket.getsockname()[1]
        rest = (*spec[:3], port, *spec[4:])
        for slot in range(1, workers):
            opened.append(openSharedSocket(description, rest, slot=slot, tls=tls))
    except OSError:
        for shared in opened:
            shared.stopListening()
        raise
    return opened


def makeMaster(options: Any, process: ProcessEffects) -> Service:
    """
    Make the master of C{--workers N} from parsed L{gracesvc.tap.Options},
    and catch SIGINT and SIGTERM from now on.
    """
    from gracesvc._core.drain import DrainPolicy
    from gracesvc._process.service import ListenFailed
    from gracesvc._process.signals import StopSignals

    reactor = options["reactor"]
    policy = options["policy"]
    drain = Drain(reactor, policy=DrainPolicy(shutdownTimeout=policy.shutdownTimeout))
    # Its lines count the workers as "connections": say whose drain it is.
    drain.log = Logger(namespace="gracesvc master drain")
    specs = options["listening-specs"]

    def sockets() -> list[SharedSocket]:
        opened: list[SharedSocket] = []
        for description, spec, tls in specs:
            try:
                if options["reuse-port"] and spec[0] == "tcp":
                    opened += reusePortSockets(
                        description, spec, options["workers"], tls=tls
                    )
                else:
                    opened.append(openSharedSocket(description, spec, tls=tls))
            except OSError as e:
                for shared in opened:
                    shared.stopListening()
                Master.log.critical(
                    "gracesvc: {error}",
                    error=str(
                        ListenFailed(
                            f"cannot listen on {description}: {e.strerror or e}"
                        )
                    ),
                )
                raise SystemExit(1) from None
        return opened

    stopSignals = StopSignals(reactor, drain, process.signals)
    stopSignals.catch()
    master = Master(
        reactor,
        drain,
        sockets,
        workerCommand(
            options.workerArguments(),
            metricsRoute=options["metrics-listen"] is None,
            twistd=twistdArguments(sys.argv[1:]),
            acceptLimit=0 if options["reuse-port"] else ACCEPT_LIMIT,
        ),
        options["workers"],
        process,
        bootTimeout=options["worker-boot-timeout"],
        workerTimeout=options["worker-timeout"],
        notify=systemdNotifier(os.environ),
    )
    reactor.callWhenRunning(stopSignals.watch)
    if options["metrics-listen"] is not None:
        master.metricsEndpoint = (
            options["metrics-listen"],
            options["metrics-endpoint"],
        )
    return master
