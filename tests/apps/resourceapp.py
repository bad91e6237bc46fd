"""
A plain L{twisted.web.resource.Resource} tree, served with
C{--app tests.apps.resourceapp:Root} (a class: called with no arguments).
"""

from __future__ import annotations

import time

from twisted.web.iweb import IRequest
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource


class Text(Resource):
    isLeaf = True

    def __init__(self, text: bytes) -> None:
        super().__init__()
        self.text = text

    def render_GET(self, request: IRequest) -> bytes:
        return self.text


class BlockTheReactor(Resource):
    """
    C{/block/<seconds>}: the mistake the cap must survive, a handler that
    blocks the reactor's thread (C{time.sleep} where C{deferLater} belongs).
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        seconds = float(request.postpath[0]) if request.postpath else 1.0
        time.sleep(seconds)
        return b"woke up\n"


class Users(Resource):
    """
    C{/api/users/<anything>}: a dynamic child per name.
    """

    def getChild(self, path: bytes, request: IRequest) -> Resource:
        return Text(b"user " + path + b"\n")


class Root(Resource):
    """
    C{/} (an index child), C{/hello}, C{/api/users/<name>} and
    C{/block/<seconds>}.
    """

    def getChild(self, path: bytes, request: IRequest) -> IResource:
        return notFound()

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"", Text(b"index\n"))
        self.putChild(b"hello", Text(b"hello from a resource\n"))
        self.putChild(b"block", BlockTheReactor())
        api = Resource()
        api.putChild(b"users", Users())
        self.putChild(b"api", api)
