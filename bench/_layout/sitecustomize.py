"""
Put on C{PYTHONPATH} by C{bench.instructions} only: shifts CPython's memory
layout by an amount chosen by C{GRACESVC_BENCH_LAYOUT}, before anything else
is imported.

CPython 3.11 finds a type's attributes through a 4096-entry cache indexed
by the type's version tag (handed out in the order types are first looked
up) XOR the attribute name's address.  Which hot lookups collide there, and
miss, is fixed for a given set of imports and allocations, and changes with
any of them: a few thousand instructions per request either way, for no
reason in the code measured.  Creating a number of throwaway types, and
keeping a number of strings, both drawn from the layout number, moves every
later version tag and address, so that each layout samples another
collision pattern and the mean over layouts is the cost to expect.
"""

import os as _os

_LAYOUT = int(_os.environ.get("GRACESVC_BENCH_LAYOUT", "0") or 0)

if _LAYOUT:
    import random as _random

    _rng = _random.Random(_LAYOUT)
    for _i in range(_rng.randrange(4096)):
        getattr(type(f"_Layout{_i}", (), {}), "x", None)
    _KEEP = ["x" * _rng.randrange(1, 200) for _ in range(_rng.randrange(2000))]
