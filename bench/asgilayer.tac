"""
The ASGI HTTP/1.1 path with and without the drain: the two servers of
C{bench.asgilayer}.

Both serve C{bench.asgiapps:app} through the same L{ASGIHTTPFactory} on
Twisted's asyncio reactor (uvloop's loop where it is installed, as
C{--asgi-loop auto} picks), its lifespan run, no metrics, no access log,
the start-up heap frozen once the reactor runs (as twistd's gracesvc
does).  C{GRACESVC_BENCH_ASGI_DRAIN} chooses the drain the factory is
given::

    GRACESVC_BENCH_PORT=8081 GRACESVC_BENCH_ASGI_DRAIN=drain \\
        .venv/bin/twistd --pidfile= -n -y bench/asgilayer.tac

  - C{drain}: gracesvc's L{Drain}, as twistd's gracesvc gives it;
  - C{none}: L{NeverDrain}, a L{Drain} that never drains and is told
    nothing: its C{draining} and C{cutting} stay false, and what a
    connection tells it (opened, closed, a request completed or cut, a
    stream to end when it goes away) does nothing.

Neither drains on SIGTERM: nothing starts the drain, and the reactor stops
as C{bench/plain.tac}'s does.
"""

import os

from gracesvc._asgi.loop import installAsyncioReactor

reactor = installAsyncioReactor("auto")

from collections.abc import Callable  # noqa: E402

from twisted.application import service, strports  # noqa: E402

from bench.asgiapps import app as application_  # noqa: E402
from gracesvc._asgi.app import ASGIApp  # noqa: E402
from gracesvc._asgi.http1 import ASGIHTTPFactory  # noqa: E402
from gracesvc._asgi.lifespan import Lifespan  # noqa: E402
from gracesvc._core.connections import IDrainableConnection  # noqa: E402
from gracesvc._core.drain import Drain  # noqa: E402
from gracesvc._pins.twisted import asyncioLoopOf  # noqa: E402
from gracesvc._process.heap import freezeStartupHeap  # noqa: E402


class NeverDrain(Drain):
    """
    A L{Drain} that is never started and keeps nothing: the connections'
    reports to it do nothing.  A subclass, so that what a connection reads
    of it (C{draining}, C{cutting}, C{clock}, C{policy}) is read the same
    way as from the real one.
    """

    def connectionOpened(self, connection: IDrainableConnection) -> None:
        pass

    def connectionClosed(self, connection: IDrainableConnection) -> None:
        pass

    def requestCompleted(self) -> None:
        pass

    def requestCut(self) -> None:
        pass

    def whenGoingAway(self, callback: Callable[[], object]) -> Callable[[], None]:
        return lambda: None


DRAINS = {"drain": Drain, "none": NeverDrain}

port = int(os.environ["GRACESVC_BENCH_PORT"])
kind = os.environ.get("GRACESVC_BENCH_ASGI_DRAIN", "drain")
if kind not in DRAINS:
    raise SystemExit(
        f"GRACESVC_BENCH_ASGI_DRAIN: expected one of {', '.join(DRAINS)}, got {kind!r}"
    )

drain = DRAINS[kind](reactor)
asgi = ASGIApp(application_, asyncioLoopOf(reactor))
lifespan = Lifespan(asgi)
factory = ASGIHTTPFactory(asgi, drain, ready=lambda: lifespan.ready, accessLog=False)


def started() -> None:
    lifespan.startup()
    freezeStartupHeap()


reactor.callWhenRunning(started)

application = service.Application(f"asgilayer-{kind}")
strports.service(
    f"tcp:{port}:interface=127.0.0.1", factory, reactor
).setServiceParent(application)
