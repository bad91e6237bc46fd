"""
Benchmarks of gracesvc, run from outside the process with raw sockets.

One module per subject, each run as C{python -m bench.NAME} from the
repository root: C{shutdown} (the drain's acceptance figures, each beside
its target), C{apps} (users' apps: WSGI, Klein, asyncio), C{throughput},
C{instructions} and C{layers} (the cost of the drain layer),
C{asgilayer} (the same on the ASGI HTTP/1.1 path), C{scale}
(1,000 requests in flight and 5,000 idle connections at SIGINT), C{h2},
C{workers}, C{wsgilayers}, C{threadcap}, and C{asgi} (C{--asgi} beside the
ASGI servers a user would pick instead, on the applications of
C{asgiapps} and C{asgifastapi}).  C{bench/README.md} says what
each measures and needs; C{docs/benchmarks.md} holds their figures.

Each but C{wsgilayers} and C{threadcap} takes C{--smoke} (tiny sizes, a few
seconds), which C{tests/bench/test_smoke.py} (C{make smoke}) runs so that
they cannot rot.
"""
