"""
Applications for gracesvc to serve, importable as C{tests.apps.*}: what
C{--app} and C{--wsgi} load in the tests.
"""
