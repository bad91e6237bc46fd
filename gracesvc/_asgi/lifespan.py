# -*- test-case-name: tests.unit.asgi.test_lifespan -*-
"""
The ASGI lifespan protocol on the drain's timeline.

  - L{Lifespan.startup}, once the reactor runs and before any connection is
    accepted: C{lifespan.startup}, and the service accepts once the
    application answers C{lifespan.startup.complete}.  Its
    C{scope["state"]} is then copied into every connection's scope (see
    L{gracesvc._asgi.app.ASGIApp.state}).  C{lifespan.startup.failed} is a
    L{LifespanFailed}: one line, exit status 1.  An application that raises
    on the lifespan scope (Django's, Channels' routers) or returns without
    starting up is served without a lifespan, said once in the log (with
    C{--asgi-lifespan on}, that is a failure too).
  - L{Lifespan.goingAway}, when the drain goes away: the shutdown notice,
    C{{"type": "lifespan.shutdown.notice", "deadline": seconds to the
    cut}}, to an application that opted in: the lifespan scope advertises
    C{extensions: {"lifespan.shutdown.notice": {}}}, and the application
    puts the same in its C{lifespan.startup.complete}.  Never to one that
    did not: Starlette's lifespan takes any second message as the shutdown.
  - L{Lifespan.shutdown}, in the drain's cleanup phase (after the last
    connection closed, within the cap): C{lifespan.shutdown}, waited for
    until C{lifespan.shutdown.complete} or C{lifespan.shutdown.failed}
    (logged).  A second signal skips the cleanup, and with it this.

The lifespan's task is the application's like any other: what is left of
it at the end is cancelled (see L{gracesvc._asgi.app.ASGIApp.stopTasks}).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import MutableMapping
from enum import Enum
from typing import Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from gracesvc._asgi.app import ASGIApp
from gracesvc._asgi.spec import LIFESPAN_ASGI, SHUTDOWN_NOTICE, LifespanMode


class LifespanFailed(Exception):
    """
    The application's lifespan startup failed: the message is one line,
    for a user.
    """


#: How long the lifespan shutdown waits, at most, for the asynchronous
#: generators the connections left to end (see L{ASGIApp.settle}).
SETTLE_WITHIN = 1.0


class LifespanState(Enum):
    """
    Where an application's lifespan is.
    """

    #: not started yet.
    IDLE = "idle"
    #: C{lifespan.startup} sent, its answer awaited.
    STARTING = "starting"
    #: the application started up: connections are served.
    STARTED = "started"
    #: the application has no lifespan (or C{--asgi-lifespan off}).
    UNSUPPORTED = "unsupported"
    #: C{lifespan.startup.failed}, or an error with C{--asgi-lifespan on}.
    FAILED = "failed"
    #: C{lifespan.shutdown} sent, its answer awaited.
    STOPPING = "stopping"
    #: the lifespan is over.
    STOPPED = "stopped"


class Lifespan:
    """
    The lifespan of one application in one process (the specification's
    "once per event loop": once per worker of C{--workers}).

    @ivar state: where it is.
    @ivar noticeWanted: whether the application opted in to the shutdown
        notice.
    """

    log = Logger()

    def __init__(self, app: ASGIApp, mode: LifespanMode = "auto") -> None:
        """
        @param app: the application, whose C{state} this sets once it
            started up.
        @param mode: see L{LifespanMode}.
        """
        self.app = app
        self.mode = mode
        self.state = LifespanState.IDLE
        self.noticeWanted = False
        self._scopeState: dict[str, Any] = {}
        self._inbox: deque[MutableMapping[str, Any]] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._started: Deferred[None] | None = None
        self._stopped: Deferred[None] | None = None

    @property
    def ready(self) -> bool:
        """
        Whether connections may be served: the application started up, or
        has no lifespan.
        """
        return self.state in (LifespanState.STARTED, LifespanState.UNSUPPORTED)

    def startup(self) -> Deferred[None]:
        """
        Run the lifespan startup, on the application's loop (call it once
        the reactor runs).

        @return: a Deferred that fires when connections may be served, or
            fails with L{LifespanFailed}.
        """
        started: Deferred[None] = Deferred()
        self._started = started
        if self.mode == "off":
            self.state = LifespanState.UNSUPPORTED
            started.callback(None)
            return started
        self.state = LifespanState.STARTING
        scope: dict[str, Any] = {
            "type": "lifespan",
            "asgi": LIFESPAN_ASGI,
            "state": self._scopeState,
            "extensions": {SHUTDOWN_NOTICE: {}},
        }
        self._inbox.append({"type": "lifespan.startup"})
        task: asyncio.Task[None] = self.app.loop.create_task(
            self.app.application(scope, self._receive, self._send)  # type: ignore[arg-type]
        )
        self._task = task
        self.app.lifespanTask = task
        task.add_done_callback(self._ended)
        return started

    def goingAway(self, deadline: float) -> None:
        """
        The drain goes away: send the shutdown notice, if the application
        opted in to it.

        @param deadline: the seconds until the cut.
        """
        if self.noticeWanted and self.state is LifespanState.STARTED:
            self._deliver(
                {"type": "lifespan.shutdown.notice", "deadline": max(0.0, deadline)}
            )

    def shutdown(self) -> Deferred[None]:
        """
        Run the lifespan shutdown (in the drain's cleanup phase).

        @return: a Deferred that fires when the application is done with it
            (its failure logged); at once if it has no lifespan running.
        """
        stopped: Deferred[None] = Deferred()
        if self.state is LifespanState.STARTING and self._task is not None:
            # Stopped before it started up: nothing to shut down.
            self._task.cancel()
        if self.state is not LifespanState.STARTED:
            stopped.callback(None)
            return stopped
        self.state = LifespanState.STOPPING
        self._stopped = stopped
        # First the finally blocks of the generators the connections left
        # (an event stream's), which may still use what the shutdown closes.
        settling = self.app.loop.create_task(self.app.settle(SETTLE_WITHIN))
        self.app.tasks.add(settling)
        settling.add_done_callback(self.app.tasks.discard)

        def settled(task: asyncio.Task[None]) -> None:
            if not task.cancelled() and self.state is LifespanState.STOPPING:
                self._deliver({"type": "lifespan.shutdown"})

        settling.add_done_callback(settled)
        return stopped

    # The application's side.

    async def _receive(self) -> MutableMapping[str, Any]:
        while not self._inbox:
            waiter = self._waiter = self.app.loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        return self._inbox.popleft()

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        kind = message.get("type")
        if kind == "lifespan.startup.complete" and self.state is LifespanState.STARTING:
            extensions = message.get("extensions") or {}
            self.noticeWanted = self.app.noticeWanted = SHUTDOWN_NOTICE in extensions
            self.app.state = self._scopeState
            self.state = LifespanState.STARTED
            self.log.info(
                "ASGI lifespan startup complete{notice}",
                notice=", shutdown notice wanted" if self.noticeWanted else "",
            )
            self._fireStarted()
        elif kind == "lifespan.startup.failed" and self.state is LifespanState.STARTING:
            self._fail(f"startup failed: {_oneLine(message.get('message', ''))}")
        elif kind == "lifespan.shutdown.complete" and (
            self.state is LifespanState.STOPPING
        ):
            self.log.info("ASGI lifespan shutdown complete")
            self._fireStopped()
        elif kind == "lifespan.shutdown.failed" and (
            self.state is LifespanState.STOPPING
        ):
            self.log.warn(
                "ASGI lifespan shutdown failed: {message}",
                message=_oneLine(message.get("message", "")),
            )
            self._fireStopped()
        else:
            raise RuntimeError(
                f"unexpected ASGI message {kind!r} in the lifespan ({self.state.value})"
            )

    def _deliver(self, message: MutableMapping[str, Any]) -> None:
        self._inbox.append(message)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # The task's end.

    def _ended(self, task: asyncio.Task[None]) -> None:
        error = None if task.cancelled() else task.exception()
        state = self.state
        if state is LifespanState.STARTING:
            why = (
                "it was cancelled"
                if task.cancelled()
                else f"it raised {_describe(error)}"
                if error is not None
                else "it returned without starting up"
            )
            if self.mode == "on":
                self._fail(f"the lifespan is required (--asgi-lifespan on), and {why}")
                return
            self.log.info(
                "ASGI lifespan unsupported by the application ({why}): serving "
                "it without",
                why=why,
            )
            self.state = LifespanState.UNSUPPORTED
            self._fireStarted()
            return
        if error is not None and state is not LifespanState.FAILED:
            self.log.failure(
                "ASGI lifespan task failed",
                failure=Failure(error, type(error), error.__traceback__),
                level=LogLevel.error,
            )
        if state is LifespanState.STOPPING:
            self._fireStopped()
        elif state is LifespanState.STARTED:
            # Over before its shutdown: there is nothing left to shut down.
            self.state = LifespanState.STOPPED

    def _fail(self, why: str) -> None:
        self.state = LifespanState.FAILED
        started, self._started = self._started, None
        if started is not None:
            started.errback(LifespanFailed(f"ASGI lifespan {why}"))

    def _fireStarted(self) -> None:
        started, self._started = self._started, None
        if started is not None:
            started.callback(None)

    def _fireStopped(self) -> None:
        self.state = LifespanState.STOPPED
        stopped, self._stopped = self._stopped, None
        if stopped is not None:
            stopped.callback(None)


def _oneLine(text: object) -> str:
    return " ".join(str(text).split()) or "(no message)"


def _describe(error: BaseException) -> str:
    text = _oneLine(error) if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
