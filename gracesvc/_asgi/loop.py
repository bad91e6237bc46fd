# -*- test-case-name: tests.unit.asgi.test_loop -*-
"""
The event loop an ASGI application runs on: Twisted's asyncio reactor, so
that the application's tasks and gracesvc's drain share one loop and one
thread.

C{twistd -n gracesvc --asgi app:app} needs no C{-r asyncio}: the reactor is
installed here, as C{--asgi} is parsed, before the application is
imported (an application may touch the loop as it is imported) and before
anything else imports C{twisted.internet.reactor}, which installs the
default reactor.  A reactor chosen explicitly (C{twistd -r epoll}) is not
replaced: that is a usage error.  Nothing is taken out of C{sys.modules}
to swap reactors, as Daphne does: the modules that imported the first
reactor would keep it.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Literal

from twisted.internet.asyncioreactor import AsyncioSelectorReactor

from gracesvc._pins.twisted import asyncioLoopOf
from gracesvc._pins.twisted_signals import reinstallChildWaker

#: Which event loop runs the reactor: uvloop's when it is installed
#: (C{auto}), or one of the two.
LoopKind = Literal["auto", "asyncio", "uvloop"]

#: Every L{LoopKind}, as C{--asgi-loop} takes them.
LOOP_KINDS: tuple[LoopKind, ...] = ("auto", "asyncio", "uvloop")


class ReactorMismatch(Exception):
    """
    Another reactor than the asyncio reactor is installed: the message says
    which, for a user.
    """


def newEventLoop(kind: LoopKind = "auto") -> asyncio.AbstractEventLoop:
    """
    @param kind: C{uvloop} for uvloop's loop, C{asyncio} for the standard
        library's, C{auto} for uvloop's if it is installed (C{pip install
        gracesvc[uvloop]}), which costs less CPU per request (see
        C{docs/asgi-http1.md}).
    @return: a new event loop of that kind.
    @raise ReactorMismatch: C{uvloop} was asked for and is not installed.
    """
    if kind != "asyncio":
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise ReactorMismatch(
                    "--asgi-loop uvloop: uvloop is not installed "
                    "(pip install 'gracesvc[uvloop]')"
                ) from None
        else:
            loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
            return loop
    return asyncio.new_event_loop()


def installAsyncioReactor(kind: LoopKind = "auto") -> AsyncioSelectorReactor:
    """
    Install Twisted's asyncio reactor, on a new event loop of C{kind} (see
    L{newEventLoop}), unless it is installed already (C{twistd -r asyncio},
    whose loop is the standard library's).

    On uvloop, Twisted's child-process waker is pointed at again once the
    loop runs (see L{gracesvc._pins.twisted_signals}): without it, the
    master of C{--workers} would never hear that a worker ended.

    @return: the asyncio reactor.
    @raise ReactorMismatch: another reactor is installed, or C{kind} cannot
        be had.
    """
    installed: object = sys.modules.get("twisted.internet.reactor")
    if installed is None:
        from twisted.internet import asyncioreactor

        loop = newEventLoop(kind)
        asyncioreactor.install(loop)
        installed = sys.modules["twisted.internet.reactor"]
        if not isinstance(loop, asyncio.BaseEventLoop):
            # uvloop's: it takes the signal wakeup descriptor as it starts,
            # after the reactor's own signal handling did (callWhenRunning
            # runs before the loop does).
            reactor: AsyncioSelectorReactor = installed  # type: ignore[assignment]
            reactor.callWhenRunning(reactor.callLater, 0, reinstallChildWaker, reactor)
    if not isinstance(installed, AsyncioSelectorReactor):
        raise ReactorMismatch(
            f"--asgi runs the application on Twisted's asyncio reactor, but "
            f"{type(installed).__name__} is installed: leave out twistd's "
            f"--reactor, or give -r asyncio"
        )
    if kind == "uvloop" and isinstance(asyncioLoopOf(installed), asyncio.BaseEventLoop):
        raise ReactorMismatch(
            "--asgi-loop uvloop: twistd -r asyncio runs asyncio's own loop; "
            "leave out -r asyncio"
        )
    return installed
