# -*- test-case-name: tests.unit.workers.test_channel -*-
"""
The control channel between the workers' master and each worker: one JSON
object per line, on a pair of pipes (the worker writes to fd 3 and reads
fd 4).  Both ends frame it with L{ControlReader}, under one size limit.

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

import itertools
import json
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred

#: The worker's ends of the control pipes.
WORKER_WRITES = 3
WORKER_READS = 4

#: The longest control line either end accepts: a worker's metrics, which
#: it sends up as one line, grow with the routes it serves.
MAX_LINE = 1 << 22

#: A control message.
Message = dict[str, Any]


def encode(message: Message) -> bytes:
    """
    @return: C{message} as one control line.
    """
    return json.dumps(message, separators=(",", ":")).encode("utf-8") + b"\n"


def decode(line: bytes) -> Message | None:
    """
    @return: the JSON object on C{line}, or L{None} if it is not one (the
        other side wrote garbage, or something else wrote to the pipe).
    """
    try:
        message = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    return message if isinstance(message, dict) else None


class ControlReader:
    """
    Reads control lines from the bytes of a pipe as they arrive, however
    they are split: each complete line is decoded and handed on, and what
    is not a message is reported and skipped, so that the channel goes on.

    A line longer than L{MAX_LINE} is reported once and skipped whole,
    including the part that has not arrived yet.
    """

    def __init__(
        self,
        messageReceived: Callable[[Message], object],
        malformed: Callable[[bytes], object],
        tooLong: Callable[[], object],
        maxLine: int = MAX_LINE,
    ) -> None:
        """
        @param messageReceived: called with each message.
        @param malformed: called with a line that is not a JSON object.
        @param tooLong: called for each line longer than C{maxLine}.
        """
        self._messageReceived = messageReceived
        self._malformed = malformed
        self._tooLong = tooLong
        self.maxLine = maxLine
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False

    def dataReceived(self, data: bytes) -> None:
        """
        Read the next bytes of the pipe.
        """
        *lines, rest = data.split(b"\n")
        if lines:
            skipFirst = self._skipping
            lines[0] = b"".join(self._parts) + lines[0]
            self._parts, self._size, self._skipping = [], 0, False
            for line in lines[1:] if skipFirst else lines:
                self._lineReceived(line)
        if rest and not self._skipping:
            self._parts.append(rest)
            self._size += len(rest)
            if self._size > self.maxLine:
                self._parts, self._size, self._skipping = [], 0, True
                self._tooLong()

    def _lineReceived(self, line: bytes) -> None:
        if len(line) > self.maxLine:
            self._tooLong()
            return
        message = decode(line)
        if message is None:
            self._malformed(line)
        else:
            self._messageReceived(message)


class Requests:
    """
    Commands that the other end answers: each is sent with an C{id} that
    its answer carries back.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, Deferred[Message]] = {}
        self._ids = itertools.count()

    def __len__(self) -> int:
        """
        @return: how many are waiting for their answer.
        """
        return len(self._waiting)

    def ask(
        self, send: Callable[[Message], object], command: Message
    ) -> Deferred[Message]:
        """
        Send C{command} with C{send}, with an C{id} added.

        @return: a Deferred firing with the answer; cancel it to stop
            waiting.
        """
        key = next(self._ids)

        def cancel(d: Deferred[Message]) -> None:
            self._waiting.pop(key, None)

        d: Deferred[Message] = Deferred(cancel)
        self._waiting[key] = d
        send({**command, "id": key})
        return d

    def answered(self, message: Message) -> None:
        """
        An answer came: fire what waits for it.  An answer nothing waits
        for (it came too late) is dropped.
        """
        key = message.get("id")
        waiting = self._waiting.pop(key if isinstance(key, int) else -1, None)
        if waiting is not None:
            waiting.callback(message)
