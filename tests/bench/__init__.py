"""
The benchmarks under C{bench/}, run at tiny sizes so that they cannot rot
(C{make smoke}).
"""
