# -*- test-case-name: tests.unit.core.test_tally -*-
"""
What a drain counts, for the metrics and for the last lines it logs.
"""

from __future__ import annotations

from typing import Literal

from twisted.logger import Logger

#: How a long-lived connection the drain told to go away ended (see
#: L{LongLivedTally}).
LongLivedOutcome = Literal["clean", "timeout", "cut"]

#: Every L{LongLivedOutcome}, in the order logs and metrics give them.
LONGLIVED_OUTCOMES: tuple[LongLivedOutcome, ...] = ("clean", "timeout", "cut")


class LongLivedTally:
    """
    How the long-lived connections (WebSockets, event streams) that the
    drain told to go away ended, counted by kind (C{"websocket"},
    C{"stream"}) and L{LongLivedOutcome}:

      - C{"clean"}: closed before its own close timeout (a WebSocket's
        closing handshake completed, or its client left);
      - C{"timeout"}: aborted at its close timeout (a client that never
        answered);
      - C{"cut"}: aborted at the cut, at the cap or on a second signal.

    The connections count themselves, each once; the drain's last log lines
    (L{DrainTally.report}) and the metrics read the counts.  The drain knows
    no protocol: a kind is only a label.
    """

    def __init__(self) -> None:
        #: the count of each (kind, outcome) seen.
        self.outcomes: dict[tuple[str, LongLivedOutcome], int] = {}
        #: by kind, what the application sent after its connection's close
        #: began, dropped instead of raised.
        self.sendsDropped: dict[str, int] = {}

    def ended(self, kind: str, outcome: LongLivedOutcome) -> None:
        """
        A connection of C{kind} told to go away ended with C{outcome}.
        """
        key = (kind, outcome)
        self.outcomes[key] = self.outcomes.get(key, 0) + 1

    def sendDropped(self, kind: str) -> None:
        """
        The application sent on a connection of C{kind} whose close had
        begun; it was dropped.
        """
        self.sendsDropped[kind] = self.sendsDropped.get(kind, 0) + 1

    def byKind(self) -> dict[str, dict[LongLivedOutcome, int]]:
        """
        @return: for each kind counted, every outcome's count (0 included).
        """
        kinds: dict[str, dict[LongLivedOutcome, int]] = {}
        for (kind, outcome), n in self.outcomes.items():
            kinds.setdefault(kind, dict.fromkeys(LONGLIVED_OUTCOMES, 0))[outcome] = n
        return kinds


class DrainTally:
    """
    The counts of one drain: the requests completed during it and those
    cut, the tracked work it gave up on, and how the long-lived connections
    it told to go away ended.  The metrics read them, and L{report} closes
    the drain's log with them.

    The connections report their requests through the drain
    (L{gracesvc._core.drain.Drain.requestCompleted},
    L{gracesvc._core.drain.Drain.requestCut}).  The drain of a worker
    tree's master counts none: its connections are the workers, and each
    worker's own drain counts its requests.
    """

    def __init__(self) -> None:
        #: requests completed after the drain began.
        self.completedDuringDrain = 0
        #: requests answered with a 503 or aborted at the cap or on a
        #: second signal.
        self.requestsCut = 0
        #: tracked Deferreds still pending when the drain gave up on them,
        #: and cleanup hooks it gave up on.
        self.abandoned = 0
        #: how the long-lived connections told to go away ended.
        self.longLived = LongLivedTally()

    def report(self, log: Logger, outcome: str, duration: float) -> None:
        """
        Log the drain's last lines: how the long-lived connections ended, if
        any were told to go away, then C{Server exiting} with the counts.

        @param log: the drain's log.
        @param outcome: how the drain ended: C{drained}, C{cap} or
            C{forced}.
        @param duration: how long the drain took, in seconds.
        """
        kinds = self.longLived.byKind()
        if kinds:
            log.info(
                "Long-lived connections told to go away: {summary}",
                summary="; ".join(
                    f"{kind} {n['clean']} clean, {n['timeout']} timed out, "
                    f"{n['cut']} cut"
                    for kind, n in sorted(kinds.items())
                ),
                outcomes=kinds,
                step="longlived",
            )
        log.info(
            "Server exiting ({outcome}): {completed} requests completed during "
            "the drain, {cut} cut, {abandoned} tracked tasks abandoned, drain "
            "took {duration:.3f}s",
            outcome=outcome,
            completed=self.completedDuringDrain,
            cut=self.requestsCut,
            abandoned=self.abandoned,
            duration=duration,
            step="done",
        )
