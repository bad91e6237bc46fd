"""
gracesvc serving threads that do not return, as C{tap.py} will wire
C{--wsgi} (see C{bench/threadcap.py}, which measures it)::

    GRACESVC_BENCH_PORT=8081 GRACESVC_CAP=2 \\
        .venv/bin/twistd --pidfile= -n -y bench/threadcap.tac

Routes, next to C{/healthz}, C{/readyz} and C{/metrics}:

  - C{/wsgi/sleep/<seconds>}: a WSGI request whose thread sleeps, then
    answers (on a pool of C{GRACESVC_THREADS} threads, default 1);
  - C{/spawn/<seconds>} and C{/spawn/<seconds>/tracked}: start a
    C{deferToThread} that sleeps, tracked by the drain or not, and answer
    at once.

With C{GRACESVC_STOCK=1} the same routes run as Twisted has them: the WSGI
app on C{twisted.web.wsgi.WSGIResource}, the reactor's pool left alone.
"""

import os
import time

from twisted.application import service
from twisted.internet import reactor
from twisted.internet.endpoints import serverFromString
from twisted.internet.threads import deferToThread
from twisted.python.threadpool import ThreadPool
from twisted.web.resource import Resource
from twisted.web.wsgi import WSGIResource

from gracesvc._apps.compose import withOperationalRoutes
from gracesvc._core.drain import Drain
from gracesvc._protocols.site import DrainingSite
from gracesvc._metrics.registry import Metrics
from gracesvc._process.effects import RealProcess
from gracesvc._process.service import TwistdService
from gracesvc._process.signals import StopSignals
from gracesvc._apps.threads import boundReactorThreads
from gracesvc._apps.wsgi import wsgiResource

port = int(os.environ["GRACESVC_BENCH_PORT"])
cap = float(os.environ.get("GRACESVC_CAP", "2"))
threads = int(os.environ.get("GRACESVC_THREADS", "1"))
stock = os.environ.get("GRACESVC_STOCK") == "1"


def sleeper(environ, startResponse):
    seconds = float(environ["PATH_INFO"].rsplit("/", 1)[-1])
    time.sleep(seconds)
    body = b"slept %g\n" % (seconds,)
    startResponse("200 OK", [("Content-Length", str(len(body)))])
    return [body]


class Spawn(Resource):
    isLeaf = True

    def render_GET(self, request):
        seconds = float(request.postpath[0])
        work = deferToThread(time.sleep, seconds)
        if request.postpath[1:] == [b"tracked"]:
            drain.track(work)
        return b"spawned\n"


drain = Drain(reactor, shutdownTimeout=cap)
metrics = Metrics(drain)
tree = Resource()
if stock:
    pool = ThreadPool(threads, threads)
    reactor.callWhenRunning(pool.start)
    reactor.addSystemEventTrigger("after", "shutdown", pool.stop)
    tree.putChild(b"wsgi", WSGIResource(reactor, pool, sleeper))
else:
    boundReactorThreads(reactor, drain)
    tree.putChild(b"wsgi", wsgiResource(sleeper, drain, reactor, threads))
tree.putChild(b"spawn", Spawn())
site = DrainingSite(
    withOperationalRoutes(tree, drain, metrics), drain, metrics, reactor=reactor
)
description = f"tcp:{port}:interface=127.0.0.1"
application = service.Application("threadcap")
process = RealProcess()
stopSignals = StopSignals(
    reactor, drain, process.signals, watchdog=process.capWatchdog(reactor)
)
stopSignals.catch()
TwistdService(
    site,
    [(description, serverFromString(reactor, description))],
    drain,
    reactor,
    stopSignals,
    whenRunning=process.startupDone,
).setServiceParent(application)
