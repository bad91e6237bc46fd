# -*- test-case-name: tests.unit.workers.test_worker -*-
"""
The control channel between the workers' master and each worker: one JSON
object per line, on a pair of pipes (the worker writes to fd 3 and reads
fd 4), and the worker's side of it.

Up, worker to master::

    {"event": "ready", "pid": 1234, "generation": 2, "slot": 0}

Down, master to worker::

    {"command": "drain", "startedAt": 1700000000.123, "reason": "SIGTERM",
     "drainDelay": true}
    {"command": "force", "reason": "second signal, SIGTERM"}
    {"command": "ping"}                 (answered with {"event": "pong"})
    {"command": "metrics", "id": 7}     (answered with {"event": "metrics",
                                         "id": 7, "text": "<exposition>"})

C{startedAt} is wall-clock time (what a reactor's C{seconds()} gives), so
that every process of the tree counts its cap from the master's signal.
End of file on fd 4 means the master is gone, even killed with SIGKILL:
the worker drains and exits, and the port is freed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.application.service import Service
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.logger import ILogObserver, Logger
from twisted.protocols.basic import LineOnlyReceiver
from twisted.python.failure import Failure
from zope.interface import provider

from gracesvc._core.drain import Drain
from gracesvc._pins.twisted import limitAccepts
from gracesvc._process.effects import ProcessEffects, exitAtOnce

#: The worker's ends of the control pipes.
WORKER_WRITES = 3
WORKER_READS = 4

#: The longest control line either side accepts.
MAX_LINE = 65536


def encode(message: dict[str, Any]) -> bytes:
    """
    @return: C{message} as one control line.
    """
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> dict[str, Any] | None:
    """
    @return: the JSON object on C{line}, or L{None} if it is not one (the
        other side wrote garbage, or something else wrote to the pipe):
        a bad line is logged by the caller and otherwise ignored.
    """
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


class ControlProtocol(LineOnlyReceiver):
    """
    The worker's end of the control channel: commands in, events out.
    """

    delimiter = b"\n"
    MAX_LENGTH = MAX_LINE
    log = Logger()

    def __init__(self, control: WorkerControl) -> None:
        self.control = control

    def lineReceived(self, line: bytes) -> None:
        message = decode(line)
        if message is None:
            self.log.warn(
                "gracesvc worker: ignoring a malformed control line {line!r}",
                line=line[:200],
            )
            return
        self.control.commandReceived(message)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.log.warn("gracesvc worker: ignoring an overlong control line")

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.control.masterGone()


class WorkerControl(Service):
    """
    A worker's link to its master, as a child of the worker's service.

    Once the reactor runs (the service listens on its adopted sockets by
    then), it tells the master it is ready.  A C{drain} command starts the
    drain with the master's start time, so one cap holds for the whole
    tree, and stops the reactor; a C{force} forces it.  When the master is
    gone (end of file), the worker drains as if told to.

    A stop signal sent to the whole process group reaches the worker as
    well as the master: L{gracesvc._process.service.StopSignals} made with
    C{joinStartedDrain} counts the first one as the same stop, whichever
    arrives first.
    """

    log = Logger()

    def __init__(
        self,
        reactor: IReactorCore,
        drain: Drain,
        ports: list[IListeningPort],
        generation: int,
        slot: int,
        acceptLimit: int,
        process: ProcessEffects,
        writeFd: int = WORKER_WRITES,
        readFd: int = WORKER_READS,
        exposition: Callable[[], bytes] | None = None,
    ) -> None:
        """
        @param ports: the service's drained ports, filled in as it listens.
        @param acceptLimit: accept at most this many connections per
            wake-up on each port (0: Twisted's default), so that the
            workers share the connections.
        @param process: the worker's process, which it leaves at once when
            the reactor has stopped (see
            L{gracesvc._process.effects.exitAtOnce}).
        @param exposition: the worker's metrics, for the master's scrapes.
        """
        self.reactor = reactor
        self.drain = drain
        self.ports = ports
        self.generation = generation
        self.slot = slot
        self.acceptLimit = acceptLimit
        self.writeFd = writeFd
        self.readFd = readFd
        self.process = process
        self.exposition = exposition
        self.protocol: ControlProtocol | None = None
        self._masterGone = False

    def startService(self) -> None:
        from twisted.internet.stdio import StandardIO

        super().startService()
        self.protocol = ControlProtocol(self)
        StandardIO(  # type: ignore[call-arg]
            self.protocol,
            stdin=self.readFd,
            stdout=self.writeFd,
            reactor=self.reactor,
        )
        self.reactor.callWhenRunning(self._ready)
        self.reactor.addSystemEventTrigger(
            "after", "shutdown", exitAtOnce, self.reactor, self.process
        )

    def _ready(self) -> None:
        if self.acceptLimit:
            for port in self.ports:
                limitAccepts(port, self.acceptLimit)
        self.send(
            {
                "event": "ready",
                "pid": self.process.pid,
                "generation": self.generation,
                "slot": self.slot,
            }
        )

    def send(self, message: dict[str, Any]) -> None:
        """
        Write C{message} to the master, unless it is gone.
        """
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.write(encode(message))

    def commandReceived(self, message: dict[str, Any]) -> None:
        """
        Obey one command from the master; an unknown one is logged.
        """
        command = message.get("command")
        if command == "drain":
            startedAt = message.get("startedAt")
            self._drainNow(
                str(message.get("reason", "master")),
                startedAt if isinstance(startedAt, int | float) else None,
                keepDrainDelay=bool(message.get("drainDelay", True)),
            )
        elif command == "ping":
            self.send({"event": "pong"})
        elif command == "metrics":
            text = b"" if self.exposition is None else self.exposition()
            self.send(
                {
                    "event": "metrics",
                    "id": message.get("id"),
                    "text": text.decode("utf-8"),
                }
            )
        elif command == "force":
            draining = self.drain.draining
            self.drain.forceStop(f"master: {message.get('reason', 'force')}")
            if not draining:
                self._stopReactor()
        else:
            self.log.warn(
                "gracesvc worker: ignoring an unknown control command {command!r}",
                command=command,
            )

    def masterGone(self) -> None:
        """
        The master closed its end: it exited, or was killed.
        """
        if self._masterGone:
            return
        self._masterGone = True
        if not self.drain.draining:
            self.log.warn("gracesvc worker: the master is gone, draining")
        self._drainNow("master gone", None, keepDrainDelay=True)

    def _drainNow(
        self, reason: str, startedAt: float | None, keepDrainDelay: bool
    ) -> None:
        # Whatever started a drain already (a signal to this process, the
        # service stopping) stops the reactor too.
        if self.drain.draining:
            return
        if not keepDrainDelay:
            # A reload: the new generation already accepts on the same
            # sockets, so there is nothing for a load balancer to notice.
            self.drain.policy = dataclasses.replace(self.drain.policy, drainDelay=0.0)
        self.drain.start(reason, startedAt=startedAt)
        self._stopReactor()

    def _stopReactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


class WorkerCollector(Collector):
    """
    C{gracesvc_worker_info{generation, slot, pid} 1} on a worker's
    C{/metrics}: which worker of the tree answered the scrape (each has a
    registry of its own; the master does not aggregate them yet).
    """

    def __init__(self, generation: int, slot: int) -> None:
        self.generation = generation
        self.slot = slot

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "gracesvc_worker_info",
            "The worker of --workers that answered this scrape.",
            labels=["generation", "slot", "pid"],
        )
        info.add_metric([str(self.generation), str(self.slot), str(os.getpid())], 1)
        yield info


def workerLogLabeller(generation: int, slot: int) -> ILogObserver:
    """
    @return: a log observer that names the worker in every event it sees:
        C{worker} and C{generation} fields for structured observers (the
        JSON log), and a system such as C{worker 0 g2
        gracesvc._core.drain.Drain#info} for twistd's text log, so that the lines
        of several workers on one output can be told apart.  Add it to the
        publisher before the observers that write, which see the event
        after it.
    """
    label = f"worker {slot} g{generation}"

    @provider(ILogObserver)
    def labelEvent(event: dict[str, Any]) -> None:
        event.setdefault("worker", slot)
        event.setdefault("generation", generation)
        system = event.get("log_system")
        if system == "-":
            event["log_system"] = label
        elif system is None:
            level = getattr(event.get("log_level"), "name", "-")
            namespace = event.get("log_namespace", "-")
            event["log_system"] = f"{label} {namespace}#{level}"

    observer: ILogObserver = labelEvent
    return observer
