"""
ASGI applications (FastAPI, Starlette, Django, Channels) under the drain:
their lifespan, their HTTP/1.1 and WebSocket connections on a lean path of
their own, their HTTP/2 streams through Twisted's, each told of the
shutdown in the ASGI specification's own terms.
"""
