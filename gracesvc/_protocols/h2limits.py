# -*- test-case-name: tests.unit.protocols.test_h2limits -*-
"""
What one HTTP/2 client may cost the server, and the meters that hold it
to that: L{H2Limits}, the limits of a
L{gracesvc._protocols.h2.DrainingH2Connection}; L{FrameMeter}, which cuts
what a connection reads into turns of a bounded number of frames;
L{TokenBucket}, which bounds the rate of the frames a client makes the
server answer.

The floods they answer, and what h2 and Twisted already bound:

  - rapid reset (CVE-2023-44487): Twisted's own bucket of resets (1,000,
    then 33 a second) ends in C{GOAWAY(ENHANCE_YOUR_CALM)};
  - CONTINUATION floods (CVE-2024-27316 and kin): h2 refuses a header
    block of more than 64 frames (C{PROTOCOL_ERROR});
  - HPACK bombs: h2 refuses a header list of more than 64 KiB once
    decoded;
  - SETTINGS, PING, PRIORITY and unknown-frame floods: h2 answers each
    frame at once, about 9 microseconds of the reactor's time each; a
    client that reads its ACKs is never slowed by Twisted's bound on
    buffered control frames.  L{TokenBucket} over these frames, then
    C{GOAWAY(ENHANCE_YOUR_CALM)};
  - one read of 64 KiB of such frames holds the reactor for 64 ms, the
    whole service with it: L{FrameMeter} hands h2 at most
    C{framesPerTurn} frames a reactor turn, and reads no more meanwhile;
  - a client that never opens its flow-control window (or never reads)
    while the application keeps writing: Twisted queues every byte.
    L{H2Limits.streamBuffer} and L{H2Limits.connectionBuffer} bound what
    is written while blocked, L{H2Limits.stallTimeout} how long a blocked
    stream may wait.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet.interfaces import IReactorTime

#: The length of an HTTP/2 frame header.
FRAME_HEADER = 9

#: The client connection preface (RFC 9113 section 3.4), which comes before
#: the first frame.
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass(frozen=True)
class H2Limits:
    """
    The limits of one HTTP/2 connection.

    @ivar prefaceTimeout: seconds the client has to complete its preface
        (the 24 bytes and its first SETTINGS), counted from when the
        connection became HTTP/2 (ALPN C{h2}, or the first bytes of a
        cleartext preface); then the connection is closed.  The head
        deadline of HTTP/1.1, as Go's C{prefaceTimeout}.
    @ivar framesPerTurn: the most frames handed to h2 in one reactor turn;
        the rest waits for the next turn, and the connection is not read
        meanwhile.
    @ivar controlFrameBurst: how many frames that make the server answer
        or work without a stream to show for it (SETTINGS, PING, PRIORITY,
        unknown frames, resets of streams never dispatched) a client may
        send at once...
    @ivar controlFrameRate: ...and a second after that; past it, the
        connection gets C{GOAWAY(ENHANCE_YOUR_CALM)} and is closed.
    @ivar streamBuffer: the most bytes the application may write to one
        stream while it is blocked (the client's flow-control window is
        used up, or the connection's transport is full); the client
        opening its window starts the count again.  Past it the stream is
        reset (C{CANCEL}).
    @ivar connectionBuffer: the same over all the streams of a connection.
    @ivar stallTimeout: seconds a stream may stay blocked with bytes
        queued before it is reset (C{CANCEL}), as nginx's C{send_timeout}.
    """

    prefaceTimeout: float = 10.0
    framesPerTurn: int = 256
    controlFrameBurst: int = 1000
    controlFrameRate: float = 100.0
    streamBuffer: int = 1 << 20
    connectionBuffer: int = 4 << 20
    stallTimeout: float = 60.0


class TokenBucket:
    """
    A bucket of C{burst} tokens, refilled at C{rate} a second.
    """

    def __init__(self, burst: int, rate: float, clock: IReactorTime) -> None:
        self._burst = burst
        self._rate = rate
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock.seconds()

    def take(self) -> bool:
        """
        @return: whether a token was left (and is now taken).
        """
        now = self._clock.seconds()
        # The reactor's clock is the wall clock: a step backwards refills
        # nothing.
        elapsed = max(0.0, now - self._at)
        self._at = now
        self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True


class FrameMeter:
    """
    Follows the frame boundaries of what an HTTP/2 server reads, to cut it
    into turns of at most so many frames.
    """

    def __init__(self) -> None:
        #: bytes before the next frame header: the preface first, then
        #: each frame's payload.
        self._skip = len(PREFACE)
        #: the part of the next frame header read so far.
        self._header = b""

    def split(self, data: bytes, maxFrames: int) -> int:
        """
        Count the frames that begin in C{data}, up to C{maxFrames}.

        @return: how many bytes of C{data} hold at most C{maxFrames} frame
            beginnings (the meter has counted them, and will count the
            rest when given them again); all of it if it holds no more.
        """
        i = 0
        frames = 0
        end = len(data)
        while i < end:
            if self._skip:
                taken = min(self._skip, end - i)
                i += taken
                self._skip -= taken
                continue
            if not self._header and frames == maxFrames:
                return i
            needed = FRAME_HEADER - len(self._header)
            self._header += data[i : i + needed]
            i += min(needed, end - i)
            if len(self._header) < FRAME_HEADER:
                break
            header, self._header = self._header, b""
            self._skip = int.from_bytes(header[:3], "big")
            frames += 1
        return end
