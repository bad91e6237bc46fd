# -*- test-case-name: tests.unit.protocols.test_longlived -*-
"""
Long-lived responses that end in time: server-sent event streams and long
polls, told by the drain when to wrap up.

An event stream or a long poll never finishes on its own, so a drain would
wait for it until the cap and then cut it: the stream is reset (C{curl -N}
exits 56) and the poll gets a 503.  L{EventStream} and L{LongPoll} take part
in the drain instead, on the timeline of L{gracesvc._core.drain}:

  - from the signal, a B{new} event stream gets 200 with only a C{retry:}
    field and ends (a 503 would make C{EventSource} give up for good), and
    a B{new} long poll is answered at once;
  - when the listeners have closed (after the drain delay: until then
    nothing ends), every event stream gets a last event, C{event:
    shutdown} with a jittered C{retry:}, and ends cleanly; every long poll
    is answered at once.  Their clients reconnect, to another instance by
    then, spread out over the jitter;
  - a response the drain could not wrap up by the cut is aborted (a stream)
    or answered 503 (a poll that has not started its answer).

The drain's connection counts them as C{stream} and C{poll} (the state of
the L{DrainingChannel} answering them), and counts how each one in
progress when the drain began ended (L{LongLivedTally.ended}: C{clean} or
C{cut}).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from random import Random
from typing import cast

from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.http import Request
from twisted.web.iweb import IRequest

from gracesvc._core.drain import Drain
from gracesvc._protocols.answers import LongLivedKind, answerEventStreamRetry
from gracesvc._protocols.http1 import DrainingChannel
from gracesvc._protocols.site import DrainingSite, longLivedHostOf

#: Default reconnection time told to clients, in milliseconds, before
#: jitter.
DEFAULT_RETRY = 1000

#: Default spread of the reconnection time, in milliseconds: each client is
#: told C{retry} plus a random part of this, so that they do not all come
#: back at once.
DEFAULT_JITTER = 1000

_LINE_BREAK = re.compile(r"\r\n|\r|\n")

_random = Random()

log = Logger()


def formatEvent(
    data: str | None = None,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
) -> bytes:
    """
    One event of a C{text/event-stream}, closing blank line included.

    @param data: the event's data; each line of it becomes a C{data:} line.
    @param event: the event's type (C{message} on the client if L{None}).
    @param id: the event's id: what the client sends back as
        C{Last-Event-ID} when it reconnects.
    @param retry: the client's reconnection time from now on, in
        milliseconds.
    @raise ValueError: C{event} or C{id} spans lines, C{id} holds a NUL, or
        C{retry} is negative: the client would misread the stream.
    """
    lines = []
    if event is not None:
        if _LINE_BREAK.search(event):
            raise ValueError(f"an event type is one line, got {event!r}")
        lines.append(f"event: {event}")
    if id is not None:
        if _LINE_BREAK.search(id) or "\0" in id:
            raise ValueError(f"an event id is one line without NUL, got {id!r}")
        lines.append(f"id: {id}")
    if data is not None:
        lines += [f"data: {line}" for line in _LINE_BREAK.split(data)]
    if retry is not None:
        if retry < 0:
            raise ValueError(f"retry is a number of milliseconds >= 0, got {retry}")
        lines.append(f"retry: {retry:d}")
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def drainOf(request: IRequest) -> Drain:
    """
    @return: the drain of the L{DrainingSite} serving C{request}: what an
        application served by C{twistd gracesvc --app} uses, since it never
        made the drain itself.
    @raise ValueError: if C{request} is not served by a L{DrainingSite}.
    """
    channel = getattr(request, "channel", None)
    # Under HTTP/2 the channel is the request's stream, which knows its site.
    site = getattr(channel, "site", None)
    if not isinstance(channel, DrainingChannel) and not isinstance(site, DrainingSite):
        raise ValueError(
            f"{request!r} is not served by a DrainingSite: pass the drain explicitly"
        )
    assert channel is not None
    return channel.site.drain  # type: ignore[no-any-return]


class _LongResponse:
    """
    What L{EventStream} and L{LongPoll} share: a subscription to the drain's
    going away, ended by the response's end or the client's leaving, and
    Deferreds for the end.
    """

    def __init__(
        self,
        request: IRequest,
        drain: Drain | None,
        retry: int,
        jitter: int,
        random: Random | None,
    ) -> None:
        if retry < 0 or jitter < 0:
            raise ValueError(
                f"retry and jitter are milliseconds >= 0, got {retry}, {jitter}"
            )
        self.request = request
        # What Twisted's and Klein's requests are; IRequest lacks notifyFinish.
        self._request = cast(Request, request)
        self.drain = drainOf(request) if drain is None else drain
        self.retry = retry
        self.jitter = jitter
        self._random = _random if random is None else random
        self._ended = False
        self._whenEnded: list[Deferred[None]] = []
        self._unsubscribe: Callable[[], None] = lambda: None
        self._request.notifyFinish().addErrback(self._clientGone)

    @property
    def ended(self) -> bool:
        """
        Whether the response has ended: answered, wrapped up by the drain,
        or its client went away.
        """
        return self._ended

    def whenEnded(self) -> Deferred[None]:
        """
        @return: a new Deferred that fires with L{None} when the response
            has ended (at once if it has).  A Klein route can return it: the
            response is complete by then, and Klein writes nothing more.
        """
        d: Deferred[None] = Deferred()
        if self._ended:
            d.callback(None)
        else:
            self._whenEnded.append(d)
        return d

    def reconnectIn(self) -> int:
        """
        @return: the reconnection time to tell this client: C{retry} plus a
            random part of C{jitter}, in milliseconds.
        """
        return self.retry + self._random.randint(0, self.jitter)

    def _subscribe(self, kind: LongLivedKind) -> None:
        host = longLivedHostOf(self._request)
        if host is not None:
            host.longResponseStarted(self._request, kind)
        self._unsubscribe = self.drain.whenGoingAway(self._goingAway)

    def _goingAway(self) -> None:
        raise NotImplementedError()

    def _end(self, finish: bool = False) -> None:
        """
        The response has ended: stop listening to the drain, and tell
        L{whenEnded}'s Deferreds.

        @param finish: whether to finish the request first (not when the
            client has gone).
        """
        if self._ended:
            return
        self._ended = True
        self._unsubscribe()
        if finish:
            # Before the Deferreds fire: a Klein route returned one, and
            # Klein finishes a request it does not see finished.
            self.request.finish()
        waiters, self._whenEnded = self._whenEnded, []
        for d in waiters:
            d.callback(None)

    def _clientGone(self, reason: Failure) -> None:
        self._end()


class EventStream(_LongResponse):
    """
    A server-sent event stream (C{text/event-stream}) that the drain ends
    cleanly, with a last C{shutdown} event.

    Make one in a handler and send events on it::

        @app.route("/events")
        def events(request):
            stream = EventStream(request)  # or EventStream(request, drain)
            ...  # stream.send(...) as events happen
            return stream.whenEnded()  # a plain resource: NOT_DONE_YET

    It answers 200 at once, with C{Content-Type: text/event-stream},
    C{Cache-Control: no-cache} and no C{Content-Length} (so chunked).  When
    the drain goes away it sends, after an optional last word of the
    application's (C{goingAway}), the event::

        event: shutdown
        data: {"reason": "shutdown", "retry": 1523}
        retry: 1523

    with no C{id:} (the client's C{Last-Event-ID} stays the last event it
    got), then ends the response with its terminating chunk, and the
    connection closes.  A stream asked for after the drain began is only
    C{retry:} and ends at once (C{ended} is then true).

    @ivar lastEventId: the client's C{Last-Event-ID}, where a reconnecting
        client asks to resume; L{None} if it sent none.
    """

    def __init__(
        self,
        request: IRequest,
        drain: Drain | None = None,
        retry: int = DEFAULT_RETRY,
        jitter: int = DEFAULT_JITTER,
        *,
        goingAway: Callable[[EventStream], object] | None = None,
        random: Random | None = None,
    ) -> None:
        """
        @param request: the request to answer with the stream.
        @param drain: the drain that says when to end it; the one of the
            L{DrainingSite} serving C{request} if L{None} (see L{drainOf}).
        @param retry: the reconnection time told to the client when the
            stream ends for the drain, in milliseconds...
        @param jitter: ...plus a random part of this.
        @param goingAway: called with the stream when the drain goes away,
            before the C{shutdown} event: the application's chance to send a
            last event of its own.
        @param random: the source of the jitter.
        """
        super().__init__(request, drain, retry, jitter, random)
        self._goingAwayHook = goingAway
        lastEventId = request.getHeader(b"last-event-id")
        self.lastEventId = (
            None if lastEventId is None else lastEventId.decode("utf-8", "replace")
        )
        if self.drain.draining:
            answerEventStreamRetry(request, self.reconnectIn())
            self._end()
            return
        request.setResponseCode(200)
        request.setHeader(b"Content-Type", b"text/event-stream")
        request.setHeader(b"Cache-Control", b"no-cache")
        # Proxies such as nginx would buffer the stream otherwise.
        request.setHeader(b"X-Accel-Buffering", b"no")
        request.write(b"")
        if request.method == b"HEAD":
            self._end(finish=True)
            return
        self._subscribe("stream")

    def send(self, data: str, event: str | None = None, id: str | None = None) -> bool:
        """
        Send one event (see L{formatEvent}).

        @return: whether it was sent: not once the stream has ended (the
            drain ended it, or the client went away).
        """
        if self._ended:
            return False
        self.request.write(formatEvent(data, event, id))
        return True

    def end(self) -> None:
        """
        End the stream now, cleanly, without a C{shutdown} event: the
        client reconnects after its current reconnection time.
        """
        self._end(finish=True)

    def _goingAway(self) -> None:
        if self._goingAwayHook is not None:
            try:
                self._goingAwayHook(self)
            except Exception:
                log.failure("the going-away hook of an event stream failed")
        if self._ended:
            return
        retry = self.reconnectIn()
        data = json.dumps({"reason": "shutdown", "retry": retry})
        self.request.write(formatEvent(data, event="shutdown", retry=retry))
        self._end(finish=True)


def reconnectBody(retry: int) -> bytes:
    """
    @return: what L{LongPoll} answers by default when the drain goes away:
        C{{"status": "reconnect", "retry": retry}}.
    """
    return json.dumps({"status": "reconnect", "retry": retry}).encode("utf-8")


class LongPoll(_LongResponse):
    """
    A long poll: a request the application answers when it has something
    to say, or that the drain answers at once when it goes away.

    Make one in a handler and answer it when the news comes::

        @app.route("/poll")
        def poll(request):
            return LongPoll(request).answerWith(nextNews())

    When the drain goes away, a poll not answered yet is answered with
    200 and, by default, C{{"status": "reconnect", "retry": 1523}} (the
    milliseconds after which to poll again: C{retry} plus jitter), and the
    application's Deferred is cancelled.  A poll that arrives after the
    drain began is answered so at once (C{ended} is then true).
    """

    def __init__(
        self,
        request: IRequest,
        drain: Drain | None = None,
        retry: int = DEFAULT_RETRY,
        jitter: int = DEFAULT_JITTER,
        *,
        reconnect: Callable[[int], bytes] = reconnectBody,
        contentType: bytes = b"application/json",
        random: Random | None = None,
    ) -> None:
        """
        @param request: the request to answer.
        @param drain: the drain that says when to answer it at once; the one
            of the L{DrainingSite} serving C{request} if L{None} (see
            L{drainOf}).
        @param retry: the milliseconds after which the client should poll
            again, when the drain answers...
        @param jitter: ...plus a random part of this.
        @param reconnect: makes the body the drain answers with, from that
            number of milliseconds.
        @param contentType: the C{Content-Type} of that body.
        @param random: the source of the jitter.
        """
        super().__init__(request, drain, retry, jitter, random)
        self._reconnect = reconnect
        self._contentType = contentType
        self._cancel: Callable[[], None] = lambda: None
        if self.drain.draining:
            self._goingAway()
        else:
            self._subscribe("poll")

    def answer(
        self, body: bytes, contentType: bytes = b"application/json", code: int = 200
    ) -> bool:
        """
        Answer the poll with C{body}, unless it has ended.

        @return: whether it was answered now.
        """
        if self._ended:
            return False
        request = self.request
        request.setResponseCode(code)
        request.setHeader(b"Content-Type", contentType)
        request.setHeader(b"Content-Length", b"%d" % (len(body),))
        request.write(body)
        self._end(finish=True)
        return True

    def answerWith(self, news: Deferred[bytes]) -> Deferred[None]:
        """
        Answer the poll with the JSON bytes C{news} fires with; if the poll
        ends first (the drain answered it, the client went away), cancel
        C{news}.

        @return: a Deferred that fires with L{None} once the poll has
            ended, for a Klein route to return; or fails as C{news} did,
            the poll unanswered, for the handler's error handling (Klein's:
            a 500).
        """
        result: Deferred[None] = Deferred()
        self.whenEnded().addCallback(result.callback)

        def answered(body: bytes) -> None:
            self.answer(body)

        def failed(failure: Failure) -> None:
            if self._ended:
                failure.trap(CancelledError)
                return
            self._ended = True
            self._unsubscribe()
            self._whenEnded = []
            result.errback(failure)

        news.addCallbacks(answered, failed)
        if self._ended:
            news.cancel()
        else:
            self._cancel = news.cancel
        return result

    def _end(self, finish: bool = False) -> None:
        if not self._ended:
            super()._end(finish)
            cancel, self._cancel = self._cancel, lambda: None
            cancel()

    def _goingAway(self) -> None:
        self.answer(self._reconnect(self.reconnectIn()), self._contentType)
