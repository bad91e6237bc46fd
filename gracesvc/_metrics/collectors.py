"""
The Prometheus collectors of what the protocols and the workers tally: the
protocols keep plain counts, and only this package knows Prometheus.
"""
