# -*- test-case-name: tests.unit.workers.test_command -*-
"""
How the master starts a worker: a fresh C{twistd gracesvc} (so that a
reload loads new code) with the plugin options as they were given, the
twistd options it inherits, and a C{--worker-spec} that tells it which
worker it is and which inherited fds are its listening sockets.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from gracesvc._workers.channel import WORKER_READS, WORKER_WRITES
from gracesvc._workers.sockets import SharedSocket

#: The first fd of the adopted sockets in a worker.
FIRST_SOCKET_FD = 5

#: Connections accepted per wake-up in a worker (see
#: L{gracesvc._pins.twisted.limitAccepts}).
ACCEPT_LIMIT = 1


class AdoptedListener(NamedTuple):
    """
    A listening socket a worker adopts from its master.
    """

    #: The C{--listen} description the master was given.
    description: str
    #: The fd the worker inherits it as.
    fd: int
    #: Its address family.
    family: int
    #: Whether the worker serves TLS on it (an C{ssl:} description, whose
    #: certificate the worker reads).
    tls: bool


@dataclass(frozen=True)
class WorkerSpec:
    """
    What the master tells a worker it starts, in C{--worker-spec}.
    """

    generation: int
    slot: int
    #: Connections to accept per wake-up on each socket (0: Twisted's
    #: default, when no other worker shares its sockets).
    acceptLimit: int
    #: Whether the worker serves C{/metrics} on its listeners (not when the
    #: master serves the whole tree's on C{--metrics-listen}).
    metricsRoute: bool
    listeners: tuple[AdoptedListener, ...]

    def toJSON(self) -> str:
        """
        @return: the spec as C{--worker-spec} carries it.
        """
        spec = {
            "generation": self.generation,
            "slot": self.slot,
            "acceptLimit": self.acceptLimit,
            "metricsRoute": self.metricsRoute,
            # A TLS listener has a fourth item, so that a worker too old to
            # serve TLS refuses the spec rather than serve cleartext on it.
            "listeners": [
                [listener.description, listener.fd, listener.family]
                + ([True] if listener.tls else [])
                for listener in self.listeners
            ],
        }
        return json.dumps(spec, separators=(",", ":"))


def parseWorkerSpec(text: str) -> WorkerSpec:
    """
    @return: the worker spec a master wrote (see L{WorkerSpec.toJSON}).
    @raise ValueError: it is not one.
    """
    try:
        spec = json.loads(text)
        # A fourth item, true, marks a TLS listener; a master of a version
        # without TLS listeners wrote three.
        listeners = tuple(
            AdoptedListener(str(d), int(fd), int(f), bool(tls and tls[0]))
            for d, fd, f, *tls in spec["listeners"]
        )
        return WorkerSpec(
            generation=int(spec["generation"]),
            slot=int(spec["slot"]),
            acceptLimit=int(spec.get("acceptLimit", 0)),
            metricsRoute=bool(spec.get("metricsRoute", True)),
            listeners=listeners,
        )
    except (ValueError, TypeError, KeyError, AttributeError) as e:
        raise ValueError(f"not a worker spec: {e}") from None


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
        the shared sockets it adopts (as fds 5..., see L{workerFDs}).
    """

    def command(
        generation: int, slot: int, sockets: Sequence[SharedSocket]
    ) -> list[str]:
        spec = WorkerSpec(
            generation,
            slot,
            acceptLimit,
            metricsRoute,
            tuple(
                AdoptedListener(
                    shared.description, FIRST_SOCKET_FD + i, shared.family, shared.tls
                )
                for i, shared in enumerate(sockets)
            ),
        )
        return [
            executable,
            "-c",
            TWISTD_ENTRY,
            "--pidfile=",
            "--nodaemon",
            *twistd,
            "gracesvc",
            *pluginArguments,
            f"--worker-spec={spec.toJSON()}",
        ]

    return command


def workerFDs(stdin: int, sockets: Sequence[SharedSocket]) -> dict[int, int | str]:
    """
    @param stdin: what the worker reads as its standard input (the null
        device: the control channel is on its own pipes).
    @return: the fds a worker is started with: the master's standard output
        and error, the control pipes (L{WORKER_WRITES} from the worker,
        L{WORKER_READS} to it), and C{sockets} from L{FIRST_SOCKET_FD} on,
        in the order L{workerCommand} lists them.
    """
    childFDs: dict[int, int | str] = {
        0: stdin,
        1: 1,
        2: 2,
        WORKER_WRITES: "r",
        WORKER_READS: "w",
    }
    for i, shared in enumerate(sockets):
        childFDs[FIRST_SOCKET_FD + i] = shared.fileno()
    return childFDs
