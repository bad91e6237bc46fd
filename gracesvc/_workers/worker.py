# -*- test-case-name: tests.unit.workers.test_worker -*-
"""
The worker's side of C{--workers}: its end of the control channel
(L{gracesvc._workers.channel}), which obeys the master, and the labels its
log lines carry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.application.service import Service
from twisted.internet.defer import Deferred
from twisted.internet.error import ReactorNotRunning
from twisted.internet.interfaces import IListeningPort, IReactorCore
from twisted.internet.protocol import Protocol
from twisted.logger import ILogObserver, Logger
from twisted.python.failure import Failure
from zope.interface import provider

from gracesvc._core.drain import Drain
from gracesvc._pins.twisted import limitAccepts
from gracesvc._process.effects import ProcessEffects, exitAtOnce
from gracesvc._workers.channel import (
    WORKER_READS,
    WORKER_WRITES,
    ControlReader,
    Message,
    encode,
)


class ControlProtocol(Protocol):
    """
    The worker's end of the control channel: commands in, events out.
    """

    log = Logger()

    def __init__(self, control: WorkerControl) -> None:
        self.control = control
        self.reader = ControlReader(
            control.commandReceived, self._malformed, self._tooLong
        )

    def dataReceived(self, data: bytes) -> None:
        self.reader.dataReceived(data)

    def _malformed(self, line: bytes) -> None:
        self.log.warn(
            "gracesvc worker: ignoring a malformed control line {line!r}",
            line=line[:200],
        )

    def _tooLong(self) -> None:
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
    well as the master: L{gracesvc._process.signals.StopSignals} made with
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
        whenReady: Callable[[], Deferred[None]] | None = None,
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
        @param whenReady: the worker's service's readiness (its ports accept:
            an ASGI application has started up), which it tells its master;
            when the reactor runs if L{None}.
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
        self.whenReady = whenReady
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
        whenReady = self.whenReady
        if whenReady is None:
            self.reactor.callWhenRunning(self._ready)
        else:
            whenReady().addCallback(lambda _: self._ready())
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

    def send(self, message: Message) -> None:
        """
        Write C{message} to the master, unless it is gone.
        """
        if self.protocol is not None and self.protocol.transport is not None:
            self.protocol.transport.write(encode(message))

    def commandReceived(self, message: Message) -> None:
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
        self.drain.start(reason, startedAt=startedAt, keepDrainDelay=keepDrainDelay)
        self._stopReactor()

    def _stopReactor(self) -> None:
        try:
            self.reactor.stop()
        except ReactorNotRunning:
            pass


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
