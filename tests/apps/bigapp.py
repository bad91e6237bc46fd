"""
Responses bigger than a client's flow-control window, written as an
application that ignores backpressure writes them, served with
C{--app tests.apps.bigapp:Root}.
"""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import Resource


class Big(Resource):
    """
    C{/big/<KiB>}: that many KiB, written at once in 16 KiB writes, with no
    producer.
    """

    isLeaf = True

    def render_GET(self, request: IRequest) -> bytes:
        kib = int(request.postpath[0]) if request.postpath else 1024
        chunk = b"x" * 16384
        for _ in range(kib // 16):
            request.write(chunk)
        return b""


class Root(Resource):
    """
    C{/big/<KiB>}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.putChild(b"big", Big())
