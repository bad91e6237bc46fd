# -*- test-case-name: tests.unit.asgi.test_app -*-
"""
An ASGI application as gracesvc serves it.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from typing import Any

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime

#: An ASGI 3 application: C{await app(scope, receive, send)}.
ASGIApplication = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]

#: The route label of a request whose application left no route in its
#: scope (see L{routeOf}).
ASGI_ROUTE = "asgi"


class ASGIApp:
    """
    One ASGI application and what every connection serving it shares: the
    asyncio loop its tasks run on (the one Twisted's asyncio reactor runs),
    the state its lifespan startup left, and the tasks running now.

    @ivar application: the ASGI callable.
    @ivar loop: where its tasks are created.
    @ivar state: the lifespan's C{scope["state"]}, shallow-copied into each
        connection's scope; L{None} when the application has no lifespan
        (nothing is copied then).
    @ivar tasks: the application tasks running now, each a request's or a
        WebSocket's: what is cancelled and awaited before the reactor stops.
    @ivar lifespanTask: the task of its lifespan, once started.
    @ivar noticeWanted: whether it opted in to the shutdown notice (see
        L{gracesvc._asgi.lifespan}): its WebSockets get the time to say
        goodbye before the server's Close.
    """

    def __init__(
        self, application: ASGIApplication, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.application = application
        self.loop = loop
        self.state: dict[str, Any] | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.lifespanTask: asyncio.Task[None] | None = None
        self.noticeWanted = False
        self._track: Callable[[Deferred[None]], object] | None = None

    def run(self, call: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """
        Run one call of the application (a connection's) in a task of its
        own on L{loop}: a real asyncio task, as anyio and sniffio expect.

        @return: the task, in L{tasks} until it is done.
        """
        task = self.loop.create_task(call)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        if self._track is not None:
            self._track(_whenDone(task))
        return task

    def trackWith(self, track: Callable[[Deferred[None]], object]) -> None:
        """
        From now on, hand each task, the running ones first, to C{track} as
        a Deferred that fires (with L{None}, whatever the task's outcome)
        when it is done: the drain waits for them (see
        L{gracesvc._core.drain.Drain.track}), so that what an application
        does after its response (Starlette's background tasks) is not lost.
        """
        self._track = track
        for task in list(self.tasks):
            track(_whenDone(task))

    async def settle(self, within: float) -> None:
        """
        Let the application's abandoned asynchronous generators end before
        its lifespan shuts down: an event stream's generator that its
        framework stopped iterating (at the client's C{http.disconnect})
        without closing it runs its C{finally} only when it is collected,
        in an C{aclose()} task the loop's finalizer hook creates; a cycle
        (an exception's traceback) can keep it for a full collection.  So:
        collect, give the finalizer hook's tasks two turns to start, and
        wait up to C{within} seconds for every such task.  Other tasks (the
        application's own background loops) are not waited for: the
        lifespan's shutdown is where they are stopped.
        """
        gc.collect()
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        closing = [
            task
            for task in asyncio.all_tasks(self.loop)
            if type(task.get_coro()).__name__ == "async_generator_athrow"
        ]
        if closing:
            await asyncio.wait(closing, timeout=within)

    def stopTasks(self, clock: IReactorTime, within: float) -> Deferred[None]:
        """
        Cancel every task left, the lifespan's included, and wait for them
        to end; then close the asynchronous generators left suspended (an
        event stream's generator whose response was cancelled while it
        waited at a C{yield}), so that their C{finally} blocks run.  All
        before the reactor stops, so that no task is destroyed pending, and
        at most C{within} seconds.

        @return: a Deferred that fires when all that is done, or after
            C{within} seconds.
        """
        tasks = [task for task in self.tasks if not task.done()]
        lifespan = self.lifespanTask
        if lifespan is not None and not lifespan.done():
            tasks.append(lifespan)
        done: Deferred[None] = Deferred()
        left = len(tasks)

        def finished(_: object = None) -> None:
            if not done.called:
                timer.cancel()
                done.callback(None)

        def ended(task: asyncio.Task[None]) -> None:
            nonlocal left
            left -= 1
            if not left:
                closeGenerators()

        def closeGenerators() -> None:
            self.loop.create_task(self.loop.shutdown_asyncgens()).add_done_callback(
                finished
            )

        def timedOut() -> None:
            if not done.called:
                done.callback(None)

        timer = clock.callLater(max(0.0, within), timedOut)
        if not tasks:
            closeGenerators()
        for task in tasks:
            task.add_done_callback(ended)
            task.cancel()
        return done

    def scopeState(self) -> dict[str, Any] | None:
        """
        @return: a shallow copy of the lifespan's state for one connection's
            scope, as the specification asks, or L{None} if there is none.
        """
        state = self.state
        return None if state is None else state.copy()


def _whenDone(task: asyncio.Task[None]) -> Deferred[None]:
    """
    @return: a Deferred that fires with L{None} when C{task} is done,
        whatever its outcome (which its connection has dealt with).
    """
    done: Deferred[None] = Deferred()
    task.add_done_callback(lambda _: done.callback(None))
    return done


def routeOf(scope: MutableMapping[str, Any]) -> str:
    """
    @return: the route the framework matched, for the metrics: the C{path}
        of the C{route} Starlette and FastAPI leave in the scope (after the
        application ran), else L{ASGI_ROUTE}.  Never the raw path.
    """
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else ASGI_ROUTE
