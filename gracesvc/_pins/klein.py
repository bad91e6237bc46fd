# -*- test-case-name: tests.unit.pins.test_klein -*-
"""
Every Klein internal gracesvc relies on, in one place.

Klein turns a handler's coroutine into a Deferred with
L{ensureDeferred <twisted.internet.defer.ensureDeferred>}, and has no public
way to choose another runner: an C{async def} handler
awaiting an asyncio future cannot run on the asyncio reactor (see
L{gracesvc._apps.coroutines}).  Each name here drives one private
attribute of Klein 24.8, says why it is needed, and is pinned by
C{tests/unit/pins/test_klein.py}, as in L{gracesvc._pins.twisted}.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import klein._app
from twisted.internet.defer import Deferred


def replaceKleinEnsureDeferred(ensure: Callable[[Any], Deferred[Any]]) -> None:
    """
    Have every Klein app in the process turn its handlers' coroutines into
    Deferreds with C{ensure} instead of
    L{ensureDeferred <twisted.internet.defer.ensureDeferred>}.

    Internals: C{klein._app._call} calls the C{ensureDeferred} global of
    C{klein._app} on what a handler returns when it is a coroutine; that
    global is replaced, for every Klein app in the process.
    """
    # Not an attribute of klein._app for the type checker: it is an import.
    setattr(klein._app, "ensureDeferred", ensure)  # noqa: B010
