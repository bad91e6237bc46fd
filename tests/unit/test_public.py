"""
The public names are the private objects, re-exported.
"""

from twisted.trial.unittest import SynchronousTestCase

import gracesvc
from gracesvc import _drain, _events, _http, _service, _websocket


class PublicAPITests(SynchronousTestCase):
    def test_exports(self) -> None:
        self.assertEqual(
            {name: getattr(gracesvc, name) for name in gracesvc.__all__},
            {
                "Drain": _drain.Drain,
                "IDrainableConnection": _drain.IDrainableConnection,
                "DrainingChannel": _http.DrainingChannel,
                "DrainingSite": _http.DrainingSite,
                "EventStream": _events.EventStream,
                "LongPoll": _events.LongPoll,
                "ResponseCutAtCap": _http.ResponseCutAtCap,
                "drainOf": _events.drainOf,
                "GracefulService": _service.GracefulService,
                "ListenFailed": _service.ListenFailed,
                "DrainingWebSocket": _websocket.DrainingWebSocket,
                "WebSocketPolicy": _websocket.WebSocketPolicy,
            },
        )
