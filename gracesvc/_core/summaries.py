# -*- test-case-name: tests.unit.core.test_summaries -*-
"""
Log lines for events that can come by the thousand: one line for the first,
then at most one a second saying how many followed.

A server on the open internet meets floods (a connection storm past its
limit, a thousand slow clients timed out, a process out of file
descriptors); a line per event would flood the log and cost more than the
event itself.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel

from gracesvc._core.timers import cancelCall


class LogSummary:
    """
    One kind of event, logged as a summary: the first event after a quiet
    spell at once (C{first}), then, for each C{interval} in which more
    came, one line with their number (C{summary}, whose C{{count}} and
    C{{interval}} fields say how many and over what time).  A spell ends
    with the first interval in which none came.

    @ivar total: every event so far.
    """

    def __init__(
        self,
        clock: IReactorTime,
        log: Logger,
        first: str,
        summary: str,
        level: LogLevel = LogLevel.info,
        interval: float = 1.0,
    ) -> None:
        """
        @param first: the format of the line for the first event of a
            spell, with the event's own fields.
        @param summary: the format of the line for those that followed,
            with C{{count}}, C{{interval}} and the last event's fields.
        @param level: the level of both.
        @param interval: seconds between two summaries.
        """
        self._clock = clock
        self._log = log
        self._first = first
        self._summary = summary
        self._level = level
        self.interval = interval
        self.total = 0
        self._pending = 0
        self._fields: dict[str, object] = {}
        self._call: IDelayedCall | None = None

    def event(self, **fields: object) -> None:
        """
        One more event, with the fields its lines name.
        """
        self.total += 1
        if self._call is None:
            self._log.emit(self._level, self._first, **fields)
            self._call = self._clock.callLater(self.interval, self._summarize)
            return
        self._pending += 1
        self._fields = fields

    def stop(self) -> None:
        """
        Log what is pending now, and start afresh.
        """
        cancelCall(self._call)
        self._call = None
        self._flush()

    def _summarize(self) -> None:
        self._call = None
        if self._flush():
            self._call = self._clock.callLater(self.interval, self._summarize)

    def _flush(self) -> bool:
        count, self._pending = self._pending, 0
        if not count:
            return False
        self._log.emit(
            self._level,
            self._summary,
            **{**self._fields, "count": count, "interval": self.interval},
        )
        return True
