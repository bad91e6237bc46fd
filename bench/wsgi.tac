"""
The Flask app of C{bench.apps} served layer by layer, from what
C{twistd web --wsgi} builds to what C{twistd -n gracesvc --wsgi} builds,
for C{bench.wsgilayers} to tell which layer costs what::

    GRACESVC_BENCH_PORT=8081 GRACESVC_BENCH_WSGI=site,resource,pool,root \\
        .venv/bin/twistd --pidfile= -n -y bench/wsgi.tac

C{GRACESVC_BENCH_WSGI} is four comma-separated choices:
  - site: C{plain} (L{Site}) or C{draining} (L{DrainingSite}, with metrics
    unless the root is bare);
  - resource: C{stock} (Twisted's L{WSGIResource}) or C{drained}
    (L{DrainingWSGIResource});
  - pool: C{web} (a L{ThreadPool} as C{twistd web --wsgi} makes it) or
    C{drained} (L{drainingThreadPool}, gracesvc's);
  - root: C{bare} (the WSGI resource is the root) or C{operational}
    (L{withOperationalRoutes}, with C{/metrics}).
"""

import os

from twisted.application import service, strports
from twisted.internet import reactor
from twisted.python.threadpool import ThreadPool
from twisted.web.server import Site
from twisted.web.wsgi import WSGIResource

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._core.drain import Drain
from gracesvc._protocols.site import DrainingSite
from gracesvc._metrics.registry import Metrics
from gracesvc._apps.threads import drainingThreadPool
from gracesvc._apps.wsgi import DrainingWSGIResource
from tests.apps.flaskapp import app as flask

port = int(os.environ["GRACESVC_BENCH_PORT"])
siteKind, resourceKind, poolKind, rootKind = os.environ["GRACESVC_BENCH_WSGI"].split(
    ","
)

drain = Drain(reactor)
if poolKind == "web":
    pool = ThreadPool()
    reactor.callWhenRunning(pool.start)
else:
    pool = drainingThreadPool(reactor, drain)
if resourceKind == "stock":
    user = WSGIResource(reactor, pool, flask)
else:
    user = DrainingWSGIResource(reactor, pool, flask, drain)
metrics = Metrics(drain)
root = user if rootKind == "bare" else withOperationalRoutes(user, drain, metrics)
if siteKind == "plain":
    site = Site(root, reactor=reactor)
else:
    site = DrainingSite(
        root, drain, None if rootKind == "bare" else metrics, reactor=reactor
    )

application = service.Application("wsgi-layers")
strports.service(f"tcp:{port}:interface=127.0.0.1", site, reactor).setServiceParent(
    application
)
