"""
The gracesvc Klein routes with no drain layer: the baseline of the benchmarks.

C{GraceApp} is given a L{Drain} that is never started (so C{/readyz} stays
200) and is served by a plain L{twisted.web.server.Site}, under twistd like
gracesvc, so that both log access lines alike::

    GRACESVC_BENCH_PORT=8081 GRACESVC_BENCH_PING_DELAY=0 \\
        .venv/bin/twistd --pidfile= -n -y bench/plain.tac

With C{GRACESVC_BENCH_TLS=ssl:PORT:privateKey=PEM} it listens there too:
Twisted's own ALPN switch then serves HTTP/2 with its stock
C{H2Connection} (the baseline of C{bench/h2.py}).

On SIGINT it does what any Twisted web app does: stops listening and drops
every connection, answered or not.
"""

import os

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.web.server import Site

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._apps.demo import GraceApp
from gracesvc._core.drain import Drain

port = int(os.environ["GRACESVC_BENCH_PORT"])
pingDelay = float(os.environ.get("GRACESVC_BENCH_PING_DELAY", "5"))

drain = Drain(reactor)
app = GraceApp(reactor, drain, pingDelay)
site = Site(withOperationalRoutes(app.resource(), drain, None), reactor=reactor)

application = service.Application("plain-klein")
strports.service(f"tcp:{port}:interface=127.0.0.1", site, reactor).setServiceParent(
    application
)
if os.environ.get("GRACESVC_BENCH_TLS"):
    strports.service(os.environ["GRACESVC_BENCH_TLS"], site, reactor).setServiceParent(
        application
    )
