"""
The public names are the private objects, re-exported.
"""

from twisted.trial.unittest import SynchronousTestCase

import gracesvc
from gracesvc._core import connections as _connections
from gracesvc._core import drain as _drain
from gracesvc._core import policy as _policy
from gracesvc._process import service as _service
from gracesvc._protocols import answers as _answers
from gracesvc._protocols import http1 as _http
from gracesvc._protocols import longlived as _events
from gracesvc._protocols import site as _site
from gracesvc._protocols import websocket as _websocket


class PublicAPITests(SynchronousTestCase):
    def test_exports(self) -> None:
        self.assertEqual(
            {name: getattr(gracesvc, name) for name in gracesvc.__all__},
            {
                "Drain": _drain.Drain,
                "DrainPolicy": _policy.DrainPolicy,
                "HookPhase": _policy.HookPhase,
                "Phase": _policy.Phase,
                "IDrainableConnection": _connections.IDrainableConnection,
                "DrainingChannel": _http.DrainingChannel,
                "DrainingSite": _site.DrainingSite,
                "EventStream": _events.EventStream,
                "LongPoll": _events.LongPoll,
                "ResponseCutAtCap": _answers.ResponseCutAtCap,
                "drainOf": _events.drainOf,
                "GracefulService": _service.GracefulService,
                "ListenFailed": _service.ListenFailed,
                "DrainingWebSocket": _websocket.DrainingWebSocket,
                "WebSocketPolicy": _websocket.WebSocketPolicy,
            },
        )

    def test_asgiExports(self) -> None:
        """
        C{gracesvc.asgi} is what an ASGI application imports: the
        middleware, and the room's own error and extension name.
        """
        import gracesvc.asgi
        from gracesvc._asgi import spec as _spec

        self.assertEqual(
            {name: getattr(gracesvc.asgi, name) for name in gracesvc.asgi.__all__},
            {
                "ShutdownNotice": gracesvc.asgi.ShutdownNotice,
                "ClientDisconnected": _spec.ClientDisconnected,
                "SHUTDOWN_NOTICE": _spec.SHUTDOWN_NOTICE,
            },
        )
