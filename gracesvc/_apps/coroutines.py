# -*- test-case-name: tests.unit.apps.test_coroutines -*-
"""
C{async def} Klein handlers on the asyncio reactor, awaiting asyncio
libraries and Deferreds alike.

Klein runs a handler's coroutine with L{ensureDeferred}, which can only
await Deferreds: awaiting an asyncio future (C{asyncio.sleep}, aiohttp, an
asyncio database driver) fails with C{RuntimeError: await wasn't used with
future}.  And asyncio libraries expect to run in an asyncio task
(C{asyncio.timeout} and aiohttp's timeouts look up the current task).  So
on the asyncio reactor each coroutine runs in an asyncio task of its own,
and a Deferred it awaits is waited for through an asyncio future.
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from inspect import iscoroutine
from typing import Any, TypeVar

from twisted.internet.asyncioreactor import AsyncioSelectorReactor
from twisted.internet.defer import CancelledError, Deferred, ensureDeferred
from twisted.python.failure import Failure

from gracesvc._pins.klein import replaceKleinEnsureDeferred

_T = TypeVar("_T")


def ensureDeferredOnAsyncio(
    coro: Coroutine[Any, Any, _T] | Deferred[_T],
) -> Deferred[_T]:
    """
    Like L{ensureDeferred}, but where an asyncio event loop is running (the
    asyncio reactor's), run a coroutine as an asyncio task that can await
    both asyncio futures and Deferreds.

    Cancelling the returned Deferred (as Klein does when the client goes
    away, or the drain cuts the request) cancels the task, and so what the
    coroutine awaits; it then fails with Twisted's L{CancelledError}, as a
    cancelled Deferred does.
    """
    if not iscoroutine(coro):
        return ensureDeferred(coro)
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return ensureDeferred(coro)
    task = loop.create_task(_nativeAwaitingDeferreds(coro, loop))
    d: Deferred[_T] = Deferred.fromFuture(task)
    return d.addErrback(_asTwistedCancel)


async def _nativeAwaitingDeferreds(
    coro: Coroutine[Any, Any, _T], loop: asyncio.AbstractEventLoop
) -> _T:
    """
    L{_awaitingDeferreds} as a native coroutine: since Python 3.12,
    C{create_task} takes nothing else (a generator-based coroutine is
    refused).
    """
    return await _awaitingDeferreds(coro, loop)


def _asTwistedCancel(failure: Failure) -> Failure:
    if failure.check(asyncio.CancelledError):
        return Failure(CancelledError())
    return failure


@types.coroutine
def _awaitingDeferreds(
    coro: Coroutine[Any, Any, _T], loop: asyncio.AbstractEventLoop
) -> Generator[Any, None, _T]:
    """
    Run C{coro} inside an asyncio task, where a Deferred cannot be awaited:
    each Deferred it awaits is waited for through an asyncio future, and
    anything else it awaits is the task's.

    C{coro} is resumed with C{send(None)} once what it awaits is done: a
    Deferred's C{__await__} and a future's then read their own result.
    """
    thrown: BaseException | None = None
    while True:
        try:
            if thrown is None:
                awaited = coro.send(None)
            else:
                awaited, thrown = coro.throw(thrown), None
        except StopIteration as e:
            result: _T = e.value
            return result
        if isinstance(awaited, Deferred):
            waiter: asyncio.Future[None] = loop.create_future()
            awaited.addBoth(_wake, waiter)
            try:
                yield from waiter
            except BaseException as e:
                # The task was cancelled: so is what the coroutine awaits.
                if not awaited.called:
                    awaited.cancel()
                awaited.addErrback(lambda _: None)
                thrown = e
        else:
            try:
                yield awaited
            except BaseException as e:
                thrown = e


def _wake(result: object, waiter: asyncio.Future[None]) -> object:
    if not waiter.done():
        waiter.set_result(None)
    # Left on the Deferred: the coroutine's await reads it.
    return result


def runKleinCoroutinesOnAsyncio(reactor: object) -> bool:
    """
    If C{reactor} is the asyncio reactor, have every Klein app run its
    C{async def} handlers with L{ensureDeferredOnAsyncio} (see
    L{replaceKleinEnsureDeferred}).

    @return: whether it did.
    """
    if not isinstance(reactor, AsyncioSelectorReactor):
        return False
    replaceKleinEnsureDeferred(ensureDeferredOnAsyncio)
    return True
