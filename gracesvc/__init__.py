"""
gracesvc: a Twisted/Klein web service that stops without losing work.

The drain library: L{Drain} runs the shutdown timeline, shaped by a
L{DrainPolicy}, through each L{Phase}, running the application's hooks in
their L{HookPhase}; L{DrainingSite} makes a Twisted web site's connections
take part in it, and L{GracefulService} listens on endpoints and drains on
SIGINT/SIGTERM.
L{DrainingWebSocket} closes the site's WebSockets as L{WebSocketPolicy}
says; L{EventStream} and L{LongPoll} are long-lived responses that end when
the drain tells them to, cleanly; L{drainOf} finds the drain serving a
request.
"""

from gracesvc._core.connections import IDrainableConnection
from gracesvc._core.drain import Drain
from gracesvc._core.policy import DrainPolicy, HookPhase, Phase
from gracesvc._process.service import GracefulService, ListenFailed
from gracesvc._protocols.answers import ResponseCutAtCap
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.longlived import EventStream, LongPoll, drainOf
from gracesvc._protocols.site import DrainingSite
from gracesvc._protocols.websocket import DrainingWebSocket, WebSocketPolicy

__all__ = [
    "Drain",
    "DrainPolicy",
    "DrainingChannel",
    "DrainingSite",
    "DrainingWebSocket",
    "EventStream",
    "GracefulService",
    "HookPhase",
    "IDrainableConnection",
    "ListenFailed",
    "LongPoll",
    "Phase",
    "ResponseCutAtCap",
    "WebSocketPolicy",
    "drainOf",
]
