# -*- test-case-name: tests.unit.core.test_calls -*-
"""
Calling code that belongs to an application: it may raise, return a value,
a L{Deferred} or a coroutine, and none of it may stop the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure


def callLogged(
    f: Callable[[], object], log: Logger, what: str, **fields: Any
) -> Deferred[object] | None:
    """
    Call C{f}; an exception it raises, or a failure of what it returns, is
    logged with C{log.failure(what, **fields)} and goes no further.

    @param what: the log's format string for the failure.
    @param fields: the log event's fields.
    @return: what C{f} returned, as a L{Deferred} if it was one or a
        coroutine (its failures already logged and consumed: it fires with
        L{None} then); L{None} if it raised or returned anything else.
    """
    try:
        result = f()
    except Exception:
        log.failure(what, **fields)
        return None
    if isinstance(result, Deferred):
        d: Deferred[object] = result
    elif hasattr(result, "__await__"):
        d = ensureDeferred(result)  # type: ignore[arg-type]
    else:
        return None

    def failed(failure: Failure) -> None:
        log.failure(what, failure=failure, **fields)

    return d.addErrback(failed)
