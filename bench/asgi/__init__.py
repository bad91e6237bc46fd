"""
gracesvc's C{--asgi} beside the ASGI servers a user would pick instead:
uvicorn (C{[standard]}: httptools and uvloop; and with C{--http h11 --loop
asyncio}), hypercorn, granian and daphne, each serving the same application
(L{bench.asgiapps}, L{bench.asgifastapi}), side by side in one run::

    .venv/bin/python -m bench.asgi                 # every part, about 15 minutes
    .venv/bin/python -m bench.asgi --only shutdown # one part
    .venv/bin/python -m bench.asgi --smoke         # tiny sizes: does it run?

The parts: C{shutdown} (L{bench.asgi.shutdown}), C{throughput},
C{memory}, C{scale} and C{workers} (L{bench.asgi.load}), C{h2}
(L{bench.asgi.h2}).  C{--server KEY} limits the servers.  A server that is
not installed (the C{bench} extra has them all) or a gracesvc without
C{--asgi} gets its reason in each of its cells instead of a figure.
"""
