"""
gracesvc: a Twisted/Klein web service that stops without losing work.

The drain library: L{Drain} runs the shutdown timeline, L{DrainingSite}
makes a Twisted web site's connections take part in it, and
L{GracefulService} listens on endpoints and drains on SIGINT/SIGTERM;
L{DrainingWebSocket} closes the site's WebSockets as L{WebSocketPolicy}
says.
"""

from ._drain import Drain, IDrainableConnection
from ._http import DrainingChannel, DrainingSite, ResponseCutAtCap
from ._service import GracefulService, ListenFailed
from ._websocket import DrainingWebSocket, WebSocketPolicy

__all__ = [
    "Drain",
    "DrainingChannel",
    "DrainingSite",
    "DrainingWebSocket",
    "GracefulService",
    "IDrainableConnection",
    "ListenFailed",
    "ResponseCutAtCap",
    "WebSocketPolicy",
]
