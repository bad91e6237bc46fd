"""
Django views: async and sync, a streaming event stream, an upload, and a
sync view that sleeps (a thread of asgiref's that the cap must not wait
for).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.csrf import csrf_exempt


def report(event: str) -> None:
    print(f"EVENT {event}", flush=True)


async def asyncView(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("seconds", "0"))
    await asyncio.sleep(seconds)
    return JsonResponse({"view": "async", "slept": seconds})


def syncView(request: HttpRequest) -> HttpResponse:
    seconds = float(request.GET.get("seconds", "0"))
    time.sleep(seconds)
    return JsonResponse(
        {"view": "sync", "slept": seconds, "thread": threading.current_thread().name}
    )


async def stream(request: HttpRequest) -> StreamingHttpResponse:
    async def events() -> AsyncIterator[bytes]:
        n = 0
        try:
            while True:
                yield b"data: %d\n\n" % (n,)
                n += 1
                await asyncio.sleep(0.1)
        finally:
            report("django stream ended")

    return StreamingHttpResponse(events(), content_type="text/event-stream")


@csrf_exempt
def upload(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"received": len(request.body)})
