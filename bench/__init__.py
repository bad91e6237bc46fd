"""
Benchmarks of gracesvc, run from outside the process with raw sockets.

  - C{python -m bench.shutdown}: the acceptance figures of the drain,
    each beside its target;
  - C{python -m bench.throughput}: requests per second of gracesvc against
    the same Klein routes with no drain layer;
  - C{python -m bench.scale}: the shutdown timeline with 1,000 requests in
    flight and 5,000 idle keep-alive connections, gracesvc against the plain
    app, peak memory, and a plot;
  - C{python -m bench.layers}: the CPU cost per request of each layer, in
    memory, a figure that barely moves with other load on the machine.

Each takes C{--smoke} (tiny sizes, a few seconds), which
C{tests/e2e/test_bench_smoke.py} runs so that they cannot rot.  Run them from
the repository root.
"""
