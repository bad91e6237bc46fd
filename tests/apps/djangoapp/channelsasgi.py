"""
A Channels router, as a Channels project's C{asgi.py} writes it: Django's
views for HTTP, consumers for WebSockets
(C{--asgi tests.apps.djangoapp.channelsasgi:application}).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.apps.djangoapp.settings")
django = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from django.urls import path  # noqa: E402

from tests.apps.djangoapp.consumers import EchoConsumer, JsonConsumer  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django,
        "websocket": URLRouter(
            [
                path("ws/echo", EchoConsumer.as_asgi()),
                path("ws/json", JsonConsumer.as_asgi()),
            ]
        ),
    }
)
