"""
Hostile and broken clients, end to end: a real C{twistd -n gracesvc}, raw
sockets on loopback.

Each bad client gets a 4xx answer or a closed connection, leaves no
traceback in the log, and does not stop the service from answering another
client meanwhile.  The clients that would hold a connection open forever (a
slow one, one that stalls in a body, one that never reads) cannot hold the
drain past the cap: the process exits within C{--shutdown-timeout} of the
signal.

Without a drain, gracesvc's deadlines bound them (see
C{tests/e2e/test_openinternet.py}): a request head must arrive within
C{--header-timeout} (10 s) of its first byte, a body that stalls is closed
after C{--keep-alive-timeout} (75 s), a client that takes nothing of its
answers is aborted after C{--write-timeout} (60 s).  The tests here run
shorter than those: once a stop signal arrives, the drain's cut (a 503 for
an unanswered request, an abort for a request still arriving) and its cap
(an abort for what cannot be flushed) bound them all.
"""

from __future__ import annotations

import signal
import socket
import threading
import time

from gracesvc.testing import get
from gracesvc.testing.process import RawClient, Twistd
from tests.support.clients import readUntilClosed
from tests.support.endtoend import EndToEndTestCase, waitFor, waitForServer

#: The C{--shutdown-timeout} the tests run with.
CAP = 1.0

#: How late after the cap the process may exit (room for a loaded machine).
EXIT_MARGIN = 0.5


def connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


class HostileTestCase(EndToEndTestCase):
    cap = CAP

    def startTwistd(self, *args: str, **kwargs: object) -> Twistd:
        return super().startTwistd(
            "--shutdown-timeout", repr(self.cap), *args, **kwargs
        )

    def socketTo(self, twistd: Twistd) -> socket.socket:
        sock = connect(twistd.port)
        self.addCleanup(sock.close)
        return sock

    def assertServes(self, twistd: Twistd, within: float = 2.0) -> None:
        """
        Another client gets C{/healthz} answered normally, and soon.
        """
        startedAt = time.monotonic()
        with RawClient(twistd.port, timeout=within + 1) as client:
            client.send(get("/healthz"))
            response = client.readResponse()
        self.assertEqual((response.code, response.body), (200, b'{"status": "ok"}'))
        self.assertLess(time.monotonic() - startedAt, within)

    def assertRefused(
        self, twistd: Twistd, request: bytes, code: bytes = b"400"
    ) -> None:
        """
        C{request} on a connection of its own is answered C{code} (a 4xx) and
        the connection closed; the service goes on serving.
        """
        sock = self.socketTo(twistd)
        sock.sendall(request)
        data, end = readUntilClosed(sock)
        self.assertNotEqual(
            end, "open", f"no answer, connection open: {request[:80]!r}"
        )
        self.assertTrue(
            data.startswith(b"HTTP/1.1 " + code + b" "),
            f"{request[:80]!r} answered {data[:80]!r}",
        )
        self.assertServes(twistd)

    def assertClosedWithoutAnswer(self, sock: socket.socket) -> None:
        data, end = readUntilClosed(sock)
        self.assertIn(end, ("closed", "reset"))
        self.assertEqual(data, b"")

    def stopAndAssertExit(self, twistd: Twistd, signum: int = signal.SIGTERM) -> None:
        """
        Signal; the process exits within the cap with the signal's status,
        and its log holds no traceback.
        """
        sentAt = twistd.signal(signum)
        self.assertEqual(twistd.wait(self.cap + 10), -signum)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, self.cap + EXIT_MARGIN)
        self.assertCleanLog(twistd)


class MalformedRequestTests(HostileTestCase):
    def test_malformedRequestLines(self) -> None:
        twistd = self.startTwistd()
        for request in [
            b"THIS IS NOT HTTP AT ALL\r\n\r\n",
            b"GET\r\n\r\n",
            b"GET /healthz\r\nHost: test\r\n\r\n",
            b"\x00\x01\x02 \xff\xfe \x80\r\n\r\n",
        ]:
            self.assertRefused(twistd, request)
        self.stopAndAssertExit(twistd)

    def test_badHeaderSyntax(self) -> None:
        twistd = self.startTwistd()
        for header in [b"NoColonHere", b"Bad Name: 1", b"X-Nul: a\x00b", b": empty"]:
            self.assertRefused(
                twistd,
                b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + header + b"\r\n\r\n",
            )
        self.stopAndAssertExit(twistd)

    def test_oversizedHeaders(self) -> None:
        """
        More than 16 KiB of headers, or more than 500 of them, is a 400
        (Twisted's C{totalHeadersSize} and C{maxHeaders}); a single line over
        16 KiB closes the connection unanswered (C{LineReceiver.MAX_LENGTH}).
        """
        twistd = self.startTwistd()
        many = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"x" * 500) for i in range(40))
        self.assertRefused(
            twistd, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + many + b"\r\n"
        )
        numerous = b"".join(b"X-%d: 1\r\n" % (i,) for i in range(600))
        self.assertRefused(
            twistd, b"GET /healthz HTTP/1.1\r\nHost: test\r\n" + numerous + b"\r\n"
        )
        sock = self.socketTo(twistd)
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Huge: " + b"x" * 20000)
        self.assertClosedWithoutAnswer(sock)
        self.assertServes(twistd)
        self.stopAndAssertExit(twistd)

    def test_invalidContentLength(self) -> None:
        """
        An invalid or repeated C{Content-Length}, an unknown
        C{Transfer-Encoding}, or both framings at once (a request smuggling
        attempt) is a 400.
        """
        twistd = self.startTwistd()
        for headers in [
            b"Content-Length: abc\r\n",
            b"Content-Length: -5\r\n",
            b"Content-Length: 1e3\r\n",
            b"Content-Length: 5\r\nContent-Length: 6\r\n",
            b"Transfer-Encoding: gzip\r\n",
            b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ]:
            self.assertRefused(
                twistd,
                b"POST /healthz HTTP/1.1\r\nHost: test\r\n" + headers + b"\r\nhello",
            )
        self.stopAndAssertExit(twistd)


class ShortBodyTests(HostileTestCase):
    request = (
        b"POST /healthz HTTP/1.1\r\nHost: test\r\nContent-Length: 100\r\n\r\nshort"
    )

    def test_bodyShorterThanAnnouncedThenClose(self) -> None:
        twistd = self.startTwistd()
        sock = self.socketTo(twistd)
        sock.sendall(self.request)
        waitForServer(
            twistd.port,
            lambda state: state.connections["receiving"] >= 1,
            "receiving the body",
        )
        sock.close()
        self.assertServes(twistd)
        self.stopAndAssertExit(twistd)

    def test_bodyShorterThanAnnouncedThenStall(self) -> None:
        """
        The server waits for the rest of the body (the keep-alive timeout,
        75 s, would answer it 408); the service serves others meanwhile; at the
        drain's cut the stalled connection is aborted, so it does not hold
        the exit.
        """
        twistd = self.startTwistd()
        sock = self.socketTo(twistd)
        sock.sendall(self.request)
        data, end = readUntilClosed(sock, 0.3)
        self.assertEqual((data, end), (b"", "open"))
        self.assertServes(twistd)
        self.stopAndAssertExit(twistd)
        self.assertClosedWithoutAnswer(sock)


class SlowClient(threading.Thread):
    """
    Sends C{data} one byte every C{interval}, until told to stop or the
    server closes the connection.
    """

    def __init__(self, port: int, data: bytes, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.sock = connect(port)
        self.data = data
        self.interval = interval
        self.sent = 0
        self.stopped = threading.Event()
        self.error: OSError | None = None
        self.start()

    def run(self) -> None:
        for i in range(len(self.data)):
            if self.stopped.wait(self.interval):
                return
            try:
                self.sock.send(self.data[i : i + 1])
            except OSError as e:
                self.error = e
                return
            self.sent += 1

    def stop(self) -> None:
        self.stopped.set()
        self.join(5)
        self.sock.close()


class SlowClientTests(HostileTestCase):
    def test_slowClientsCannotHoldTheDrain(self) -> None:
        """
        Two clients send a byte every 250 ms, one still in its request line,
        one in its headers, never finishing.  Every byte resets Twisted's
        idle timeout, so only the drain ends them: the process exits within
        the cap, and others are served meanwhile.
        """
        twistd = self.startTwistd()
        inLine = SlowClient(twistd.port, b"GET /healthz" + b"z" * 1000)
        inHeaders = SlowClient(
            twistd.port,
            b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"s" * 1000,
        )
        self.addCleanup(inLine.stop)
        self.addCleanup(inHeaders.stop)
        waitFor(
            lambda: inLine.sent > 1 and inHeaders.sent > 1,
            10,
            lambda: f"sent {inLine.sent} and {inHeaders.sent} bytes",
        )
        waitForServer(
            twistd.port,
            lambda state: state.connections["receiving"] >= 2,
            "receiving both requests",
        )
        self.assertServes(twistd)
        self.assertGreater(inLine.sent, 1)
        self.assertGreater(inHeaders.sent, 1)
        self.stopAndAssertExit(twistd)
        for client in (inLine, inHeaders):
            self.assertClosedWithoutAnswer(client.sock)


def sendUntilBlocked(
    sock: socket.socket, request: bytes, limit: int, seconds: float = 5.0
) -> int:
    """
    Send C{request} over and over on C{sock}, never reading, until C{limit}
    requests are sent, the server stops reading (a send blocks for 0.2 s),
    or C{seconds} pass.

    @return: how many requests were sent whole.
    """
    sock.setblocking(False)
    outgoing = b""
    sentBytes = 0
    blockedSince: float | None = None
    deadline = time.monotonic() + seconds
    while sentBytes < limit * len(request) and time.monotonic() < deadline:
        if len(outgoing) < 64 * len(request):
            outgoing += request * 64
        try:
            n = sock.send(outgoing)
        except BlockingIOError:
            now = time.monotonic()
            if blockedSince is None:
                blockedSince = now
            elif now - blockedSince > 0.2:
                break
            time.sleep(0.01)
            continue
        blockedSince = None
        outgoing = outgoing[n:]
        sentBytes += n
    sock.setblocking(True)
    return sentBytes // len(request)


class NonReadingClientTests(HostileTestCase):
    def test_clientThatNeverReadsCannotHoldTheExit(self) -> None:
        """
        A client pipelines requests for the largest answer there is
        (C{/metrics}, 4.5 KiB) and never reads one: its socket buffers fill
        at once, and then Twisted's write buffer, which Twisted lets grow
        (it pauses reading only between requests, and these are answered as
        they are read).  Others are served meanwhile, and the process exits
        within the cap: at the cut the request still arriving is aborted, at
        the cap whatever cannot be flushed.
        """
        twistd = self.startTwistd()
        sock = socket.socket()
        self.addCleanup(sock.close)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", twistd.port))
        # 1 KiB a request: Twisted answers all it reads at once (64 KiB)
        # before it looks at anything else; keep that short here (see the
        # next test for when it is not).
        request = get("/metrics", "X-Pad: " + "p" * 1000)
        sent = sendUntilBlocked(sock, request, limit=3000)
        self.assertGreater(sent, 1000)
        self.assertServes(twistd)
        self.stopAndAssertExit(twistd)
        _, end = readUntilClosed(sock)
        self.assertNotEqual(end, "open")


class PipelinedFloodTests(HostileTestCase):
    def test_pipelinedFloodCannotHoldTheExit(self) -> None:
        """
        A client pipelines 20,000 C{GET /healthz} at once and never reads.

        Twisted answers all it has read (64 KiB at a time: some 1,700
        requests, most of a second of work here) in one go, without
        returning to the reactor: meanwhile other clients wait, a signal is
        not handled and no timer fires.  So the bound here allows one such
        batch past the cap.  Measured on a 2-core machine: exits 0.2 to 0.7 s
        past a 1 s cap when the drain counted its cap from when the reactor
        got to the signal and its cut waited for another batch; 0.01 s once
        it counts from the signal and parses pipelined requests one per
        reactor turn.

        Another client is answered once the batch in progress is done: 0.4
        to 0.8 s on an idle 2-core machine, 3.3 to 4 s (a timeout once) with
        two CPU hogs running beside the suite, where the 3 s this allowed
        failed one run in four.  The bound only shows that the flood does
        not shut others out.
        """
        twistd = self.startTwistd()
        sock = self.socketTo(twistd)
        sent = sendUntilBlocked(sock, get("/healthz"), limit=20000)
        self.assertGreater(sent, 5000)
        self.assertServes(twistd, within=10.0)
        sentAt = twistd.signal(signal.SIGTERM)
        self.assertEqual(twistd.wait(self.cap + 10), -signal.SIGTERM)
        assert twistd.exitedAt is not None
        self.assertLess(twistd.exitedAt - sentAt, self.cap + 1.0)
        self.assertCleanLog(twistd)
        _, end = readUntilClosed(sock)
        self.assertNotEqual(end, "open")
