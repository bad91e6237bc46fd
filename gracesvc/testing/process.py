"""
Real C{twistd -n gracesvc} processes and raw socket clients, for the
end-to-end tests and the benchmarks.

Every process is started on a free loopback port, in its own temporary
directory, and is killed by its pid when the test ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from . import Response, get, parseResponses, samples

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


def freePort() -> int:
    """
    @return: a loopback TCP port nobody is listening on right now.
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _defaultSigint() -> None:
    # A shell starting a background job without job control ignores SIGINT
    # in it; Twisted then leaves SIGINT alone.  The tests send SIGINT on
    # purpose, so give the child Python's default.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Process:
    """
    A child process in a temporary directory of its own, its output in a
    log file there, watched for its exit, and killed by its pid.

    @ivar exitedAt: C{time.monotonic()} when the process exited.
    """

    def __init__(
        self,
        argv: Sequence[str],
        prefix: str = "gracesvc-e2e-",
        env: dict[str, str] | None = None,
        passFds: Sequence[int] = (),
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self.logPath = os.path.join(self.directory, "output.log")
        self._log = open(self.logPath, "wb")
        self.process = subprocess.Popen(
            argv,
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=passFds,
            preexec_fn=_defaultSigint,
        )
        self.pid = self.process.pid
        self.exitedAt: float | None = None
        self._exited = threading.Event()
        threading.Thread(target=self._waitForExit, daemon=True).start()

    def _waitForExit(self) -> None:
        self.process.wait()
        self.exitedAt = time.monotonic()
        self._exited.set()

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def signal(self, signum: int) -> float:
        """
        Send C{signum}.

        @return: C{time.monotonic()} just before it was sent.
        """
        sentAt = time.monotonic()
        os.kill(self.pid, signum)
        return sentAt

    def wait(self, timeout: float) -> int:
        """
        Wait for exit.

        @return: the exit status (negative for a signal, as L{subprocess}).
        @raise AssertionError: if it is still running after C{timeout}.
        """
        if not self._exited.wait(timeout):
            raise AssertionError(f"still running after {timeout}s:\n{self.log()}")
        return int(self.process.returncode)

    def kill(self) -> None:
        """
        Kill the process (by its pid) if it still runs, and remove its
        directory.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._log.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log(self) -> str:
        """
        @return: what the process wrote so far.
        """
        self._log.flush()
        with open(self.logPath, encoding="utf-8", errors="replace") as f:
            return f.read()


class Twistd(Process):
    """
    One C{twistd -n gracesvc} process.
    """

    def __init__(
        self,
        *args: str,
        port: int | None = None,
        listen: Sequence[str] | None = None,
        env: dict[str, str] | None = None,
        passFds: Sequence[int] = (),
        plugin: str = "gracesvc",
        reactor: str | None = None,
    ) -> None:
        """
        @param args: options for the plugin.
        @param reactor: twistd's C{--reactor} (C{asyncio}, say), if not the
            default.
        """
        self.port = port if port is not None else freePort()
        if listen is None:
            listen = [f"tcp:{self.port}:interface=127.0.0.1"]
        argv = [TWISTD, "--pidfile=", "-n"]
        if reactor is not None:
            argv += ["--reactor", reactor]
        argv.append(plugin)
        for description in listen:
            argv += ["--listen", description]
        argv += list(args)
        super().__init__(argv, env=env, passFds=passFds)

    def waitUntilServing(self, timeout: float = 15.0) -> Twistd:
        """
        Wait until C{/healthz} answers 200.

        @raise AssertionError: if it does not within C{timeout}, or the
            process exits.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited:
                raise AssertionError(f"twistd exited early:\n{self.log()}")
            try:
                with RawClient(self.port, timeout=1) as client:
                    client.send(get("/healthz", "Connection: close"))
                    if client.readResponse().code == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"twistd not serving after {timeout}s:\n{self.log()}")


def run(*argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """
    Run C{twistd} with C{argv} to completion.
    """
    directory = tempfile.mkdtemp(prefix="gracesvc-e2e-")
    return subprocess.run(
        [TWISTD, *argv],
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


class RawClient:
    """
    A blocking HTTP/1.1 client on a raw socket: what goes over the wire is
    exactly what the test sends.
    """

    def __init__(self, port: int, timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.closedByPeer = False
        self.reset = False

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            chunk = b""
        if not chunk:
            self.closedByPeer = True
            return False
        self.buffer += chunk
        return True

    def readResponse(self) -> Response:
        """
        Read one complete response.

        @raise ConnectionError: if the connection closes before it is
            complete.
        """
        while True:
            responses = parseResponses(self.buffer)
            if responses:
                response = responses[0]
                rest = self.buffer.split(b"\r\n\r\n", 1)[1]
                self.buffer = rest[len(response.body) :]
                return response
            if not self._fill():
                raise ConnectionError(
                    f"connection {'reset' if self.reset else 'closed'} before a "
                    f"complete response; got {self.buffer!r}"
                )

    def waitForClose(self) -> bool:
        """
        Read until the server closes the connection.

        @return: whether it closed cleanly with nothing more sent.
        """
        extra = len(self.buffer)
        while self._fill():
            pass
        return not self.reset and len(self.buffer) == extra

    def close(self) -> None:
        self.sock.close()


def openConnections(port: int) -> dict[str, float]:
    """
    @return: the server's open connections by state, from its C{/metrics}.
    """
    with RawClient(port) as client:
        client.send(get("/metrics", "Connection: close"))
        scraped = samples(client.readResponse().body)
    return {
        dict(labels)["state"]: value
        for (name, labels), value in scraped.items()
        if name == "gracesvc_open_connections"
    }


def waitForConnections(port: int, timeout: float = 10.0, **states: int) -> None:
    """
    Wait until the server counts at least so many open connections in each
    state, e.g. C{waitForConnections(port, stream=20)}.

    @raise AssertionError: if it does not within C{timeout}.
    """
    deadline = time.monotonic() + timeout
    counts: dict[str, float] = {}
    while time.monotonic() < deadline:
        counts = openConnections(port)
        if all(counts.get(s, 0) >= n for s, n in states.items()):
            return
        time.sleep(0.02)
    raise AssertionError(f"open connections never reached {states}: {counts}")


def connectRefused(port: int) -> bool:
    """
    @return: whether a connection to C{port} is refused right now.
    """
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    except ConnectionRefusedError:
        return True
    s.close()
    return False


def waitUntilRefused(port: int, timeout: float = 5.0) -> float:
    """
    Try to connect every millisecond until refused.

    @return: C{time.monotonic()} of the first refusal.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if connectRefused(port):
            return time.monotonic()
        time.sleep(0.001)
    raise AssertionError(f"port {port} still accepting after {timeout}s")


class InFlight(threading.Thread):
    """
    A request sent now whose response is read in the background.
    """

    def __init__(self, port: int, request: bytes) -> None:
        super().__init__(daemon=True)
        self.client = RawClient(port)
        self.client.send(request)
        self.response: Response | None = None
        self.error: Exception | None = None
        self.doneAt: float | None = None
        self.start()

    def run(self) -> None:
        try:
            self.response = self.client.readResponse()
        except Exception as e:
            self.error = e
        finally:
            self.doneAt = time.monotonic()
            self.client.close()


def pingBackToBack(port: int, giveUpAt: float) -> tuple[int, int, str]:
    """
    Send C{/ping} requests back to back on one keep-alive connection until
    a response says C{Connection: close} (then the server must close
    cleanly) or until C{giveUpAt} (C{time.monotonic()}).

    @return: requests sent, responses read, and what went wrong (empty if
        nothing did).
    """
    sent = answered = 0
    problem = ""
    try:
        with RawClient(port, timeout=5) as c:
            while time.monotonic() < giveUpAt:
                c.send(get("/ping"))
                sent += 1
                response = c.readResponse()
                answered += 1
                if response.headers.get(b"connection") == b"close":
                    if not c.waitForClose():
                        problem = "not closed cleanly"
                    break
            else:
                problem = "never told to close"
    except Exception as e:
        problem = repr(e)
    return sent, answered, problem


#: Where C{curl} is, if it is installed.
CURL = shutil.which("curl")


class CurlStream:
    """
    C{curl -sS -N} reading an event stream (or any response) from a
    loopback port, its output gathered in the background, its exit watched.

    @ivar output: what curl has written to its standard output so far.
    @ivar exitedAt: C{time.monotonic()} when curl exited.
    @ivar status: curl's exit status, once it exited (0 for a clean end;
        56 for a connection reset, 18 for a body cut short).
    """

    def __init__(
        self, port: int, path: str = "/events", *headers: str, maxTime: float = 30
    ) -> None:
        """
        @param headers: more request headers, C{"Name: value"}.
        @param maxTime: curl gives up after this many seconds (a test never
            hangs on it).
        @raise RuntimeError: if curl is not installed.
        """
        if CURL is None:
            raise RuntimeError("curl is not installed")
        argv = [CURL, "-sS", "-N", "--max-time", repr(maxTime)]
        for header in ("Accept: text/event-stream", *headers):
            argv += ["-H", header]
        argv.append(f"http://127.0.0.1:{port}{path}")
        self.output = b""
        self.stderr = b""
        self.exitedAt: float | None = None
        self.status: int | None = None
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None and self.process.stderr is not None
        fd = self.process.stdout.fileno()
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            with self._lock:
                self.output += chunk
        self.stderr = self.process.stderr.read()
        self.status = self.process.wait()
        self.exitedAt = time.monotonic()
        self._exited.set()

    def waitFor(self, data: bytes, timeout: float = 10.0) -> bool:
        """
        Wait until the output holds C{data}.

        @return: whether it does (C{False} if curl exited or the time ran
            out first).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if data in self.output:
                    return True
            if self._exited.is_set():
                return data in self.output
            time.sleep(0.005)
        return False

    def wait(self, timeout: float = 10.0) -> int:
        """
        Wait for curl to exit.

        @return: its exit status.
        @raise AssertionError: if it still runs after C{timeout}.
        """
        if not self._exited.wait(timeout):
            raise AssertionError(f"curl still running after {timeout}s")
        assert self.status is not None
        return self.status

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def kill(self) -> None:
        """
        Kill curl (by its pid) if it still runs.
        """
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
