"""
The workers' master in memory: a reactor that records the processes it
spawns and connects each to a fake process transport, and a test case with a
L{Master} of two workers started on it, its time driven by hand.
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any, cast

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._core.drain import Drain
from gracesvc._workers.command import workerCommand
from gracesvc._workers.master import Master, WorkerProcess
from gracesvc._workers.sockets import SharedSocket
from tests.support.process import FakeProcess
from tests.support.service import FakeReactor, FakeSignals


class FakeProcessTransport:
    """
    What L{WorkerProcess} needs of its process transport: records what is
    written to the worker and the signals sent.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.written: list[bytes] = []
        self.signals: list[str] = []

    def writeToChild(self, fd: int, data: bytes) -> None:
        assert fd == 4, fd
        self.written.append(data)

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def commands(self) -> list[dict[str, Any]]:
        """
        @return: what the master told the worker, liveness pings left out.
        """
        return [
            command for command in self.allCommands() if command != {"command": "ping"}
        ]

    def allCommands(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in b"".join(self.written).splitlines()]


class ProcessReactor(FakeReactor):
    """
    A L{FakeReactor} whose C{spawnProcess} records the process and connects
    its protocol to a L{FakeProcessTransport}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.spawned: list[tuple[WorkerProcess, list[str], dict[int, Any]]] = []
        self._pids = iter(range(1000, 2000))

    def spawnProcess(
        self,
        processProtocol: WorkerProcess,
        executable: str,
        args: list[str],
        env: dict[str, str] | None = None,
        path: str | None = None,
        uid: int | None = None,
        gid: int | None = None,
        usePTY: bool = False,
        childFDs: dict[int, Any] | None = None,
    ) -> FakeProcessTransport:
        transport = FakeProcessTransport(next(self._pids))
        processProtocol.makeConnection(transport)
        self.spawned.append((processProtocol, args, childFDs or {}))
        return transport


def transportOf(worker: WorkerProcess) -> FakeProcessTransport:
    return cast(FakeProcessTransport, worker.transport)


def ready(worker: WorkerProcess) -> None:
    worker.childDataReceived(3, b'{"event": "ready"}\n')


def exits(
    worker: WorkerProcess, status: int | None = 0, sig: int | None = None
) -> None:
    if status == 0 and sig is None:
        worker.processEnded(Failure(ProcessDone(0)))
    else:
        worker.processEnded(Failure(ProcessTerminated(status, sig)))


class MasterTestCase(SynchronousTestCase):
    workers = 2
    shutdownTimeout = 5.0

    def setUp(self) -> None:
        self.reactor = ProcessReactor()
        self.reactor.advance(1000)
        self.signals = FakeSignals()
        self.drain = Drain(self.reactor, shutdownTimeout=self.shutdownTimeout)
        self.states: list[str] = []
        self.shared = SharedSocket("tcp:0", socket.socket())
        self.addCleanup(self.shared.stopListening)
        self.master = Master(
            self.reactor,
            self.drain,
            lambda: [self.shared],
            workerCommand(["--ping-delay=0"], executable="python"),
            self.workers,
            bootTimeout=10,
            process=FakeProcess(self.signals),
            executable="python",
            notify=self.states.append,
        )
        self.events: list[dict[str, Any]] = []
        self.master.log = Logger(observer=cast(ILogObserver, self.events.append))
        self.master.privilegedStartService()
        self.master.startService()
        self.addCleanup(self._closeDevnull)

    def _closeDevnull(self) -> None:
        if self.master._devnull is not None:
            os.close(self.master._devnull)

    def generation(self, n: int) -> list[WorkerProcess]:
        return [w for w, _, _ in self.reactor.spawned if w.generation == n]

    def serving(self) -> list[WorkerProcess]:
        first = self.generation(1)
        for worker in first:
            ready(worker)
        return first

    def steps(self) -> list[tuple[str, str | None]]:
        return [(e["step"], e.get("outcome")) for e in self.events if "step" in e]
