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

import sys

from twisted.internet.asyncioreactor import AsyncioSelectorReactor


class ReactorMismatch(Exception):
    """
    Another reactor than the asyncio reactor is installed: the message says
    which, for a user.
    """


def installAsyncioReactor() -> AsyncioSelectorReactor:
    """
    Install Twisted's asyncio reactor, on a new event loop, unless it is
    installed already (C{twistd -r asyncio}).

    @return: the asyncio reactor.
    @raise ReactorMismatch: another reactor is installed.
    """
    installed: object = sys.modules.get("twisted.internet.reactor")
    if installed is None:
        from twisted.internet import asyncioreactor

        asyncioreactor.install()
        installed = sys.modules["twisted.internet.reactor"]
    if not isinstance(installed, AsyncioSelectorReactor):
        raise ReactorMismatch(
            f"--asgi runs the application on Twisted's asyncio reactor, but "
            f"{type(installed).__name__} is installed: leave out twistd's "
            f"--reactor, or give -r asyncio"
        )
    return installed
