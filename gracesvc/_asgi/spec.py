# -*- test-case-name: tests.unit.asgi.test_resource,tests.unit.asgi.test_websocket,tests.unit.asgi.test_lifespan -*-
"""
What gracesvc says of itself to an ASGI application, and the ASGI
specification's facts every part of the room shares.
"""

from __future__ import annotations

from typing import Literal

#: The C{asgi} key of an HTTP scope.  HTTP C{spec_version} 2.3, not 2.4:
#: from 2.4 on, Starlette stops listening for C{http.disconnect} during a
#: streaming response and would never notice an event stream gracesvc ends.
HTTP_ASGI = {"version": "3.0", "spec_version": "2.3"}

#: The C{asgi} key of a WebSocket scope: 2.5 (a reason with
#: C{websocket.disconnect}; a send after the close raises an L{OSError}).
WEBSOCKET_ASGI = {"version": "3.0", "spec_version": "2.5"}

#: The C{asgi} key of the lifespan scope.
LIFESPAN_ASGI = {"version": "3.0", "spec_version": "2.0"}

#: The extension an application opts in to, in its
#: C{lifespan.startup.complete}, to be told when the server goes away and
#: how long is left until the cut (see C{gracesvc.asgi.ShutdownNotice}).
SHUTDOWN_NOTICE = "lifespan.shutdown.notice"


#: C{--asgi-lifespan}: C{auto} runs the lifespan if the application
#: supports it, C{on} requires it, C{off} never runs it.
LifespanMode = Literal["auto", "on", "off"]

LIFESPAN_MODES: tuple[LifespanMode, ...] = ("auto", "on", "off")


class ClientDisconnected(OSError):
    """
    A WebSocket message the application sent after the connection closed,
    or after the server's Close: what the ASGI specification has C{send}
    raise then (an L{OSError}, never logged as an error by the server).
    """
