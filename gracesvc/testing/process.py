"""
Real C{twistd -n gracesvc} processes and raw socket clients, for the
end-to-end tests and the benchmarks.

Every process is started on a free loopback port, in its own temporary
directory, and is killed by its pid when the test ends.
"""

from __future__ import annotations

import base64
import os
import random
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence

from . import Response, get, parseResponses, samples

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


#: Where L{freePort} picks from: below Linux's ephemeral ports (32768 and
#: up), which the kernel hands to clients' sockets and to C{bind(0)}, so
#: that a client connecting elsewhere never holds a port a server is about
#: to listen on.
PORTS = range(20000, 32000)


def freePort() -> int:
    """
    @return: a loopback TCP port nobody is listening on right now, drawn at
        random from L{PORTS}.  Under pytest-xdist each worker draws from
        its own share of them (its subprocesses too, through the
        environment), so that two tests running at once never pick the
        same port in the moment between picking and listening.
    """
    ports = PORTS
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if worker.startswith("gw") and worker[2:].isdigit() and workers > 0:
        share = len(PORTS) // workers
        first = PORTS.start + int(worker[2:]) % workers * share
        ports = range(first, first + share)
    for _ in range(100):
        port = random.choice(ports)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise OSError(f"no free port in {ports}")


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
        newSession: bool = False,
        openFiles: int | None = None,
    ) -> None:
        """
        @param newSession: start it in a session (and process group) of its
            own, so that a test can signal the group.
        @param openFiles: its limit on open descriptors (soft and hard, as
            C{ulimit -n} sets them), if not this process's.
        """
        self.directory = tempfile.mkdtemp(prefix=prefix)
        self.logPath = os.path.join(self.directory, "output.log")
        self._log = open(self.logPath, "wb")

        def preexec() -> None:
            _defaultSigint()
            if openFiles is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (openFiles, openFiles))

        self.process = subprocess.Popen(
            argv,
            cwd=self.directory,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=passFds,
            preexec_fn=preexec,
            start_new_session=newSession,
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
        newSession: bool = False,
        openFiles: int | None = None,
    ) -> None:
        """
        @param args: options for the plugin.
        @param reactor: twistd's C{--reactor} (C{asyncio}, say), if not the
            default.
        @param newSession: see L{Process.__init__}.
        @param openFiles: see L{Process.__init__}.
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
        super().__init__(
            argv, env=env, passFds=passFds, newSession=newSession, openFiles=openFiles
        )

    def waitUntilServing(self, timeout: float = 15.0, path: str = "/healthz") -> Twistd:
        """
        Wait until C{path} answers 200.

        @raise AssertionError: if it does not within C{timeout}, or the
            process exits.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.exited:
                raise AssertionError(f"twistd exited early:\n{self.log()}")
            try:
                with RawClient(self.port, timeout=1) as client:
                    client.send(get(path, "Connection: close"))
                    if client.readResponse().code == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        raise AssertionError(f"twistd not serving after {timeout}s:\n{self.log()}")


def childPids(pid: int) -> list[int]:
    """
    @return: the pids of C{pid}'s children, from C{/proc} (empty once it
        has exited).
    """
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(child) for child in f.read().split()]
    except OSError:
        return []


def alive(pid: int) -> bool:
    """
    @return: whether C{pid} runs (a zombie does not).
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class MasterProcess(Twistd):
    """
    C{twistd -n gracesvc --workers N}: the process of a workers' master (a
    L{gracesvc._workers.master.Master} runs in it), in a process group of its
    own; its workers are found as its children in C{/proc} and killed by pid
    too.
    """

    def __init__(self, *args: str, workers: int = 2, **kwargs: object) -> None:
        self.workerPids: set[int] = set()
        self._masterLines: list[str] = []
        self._logOffset = 0
        self._partial = b""
        super().__init__(
            "--workers",
            str(workers),
            *args,
            newSession=True,
            **kwargs,  # type: ignore[arg-type]
        )
        self.workerCount = workers

    def workers(self) -> list[int]:
        """
        @return: the pids of the workers running now (remembered for
            L{kill}).
        """
        pids = childPids(self.pid)
        self.workerPids.update(pids)
        # An exited worker stays a child until the master reaps it.
        return [pid for pid in pids if alive(pid)]

    def masterLog(self) -> str:
        """
        @return: the master's own log lines so far (C{gracesvc master...}),
            read incrementally: under load the whole log, access lines
            included, grows by megabytes, and reading it all on every poll
            would load the machine the figures are measured on.
        """
        self._log.flush()
        with open(self.logPath, "rb") as f:
            f.seek(self._logOffset)
            chunk = f.read()
        self._logOffset += len(chunk)
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        self._masterLines += [
            line.decode("utf-8", "replace")
            for line in lines
            if b"gracesvc master" in line or b"gracesvc:" in line
        ]
        return "\n".join(self._masterLines)

    def waitUntilReady(
        self, timeout: float = 20.0, generation: int = 1
    ) -> MasterProcess:
        """
        Wait until the master logs that a generation is serving, and it
        answers.
        """
        marker = (
            "gracesvc master ready"
            if generation == 1
            else f"reloaded: generation {generation} ready"
        )
        deadline = time.monotonic() + timeout
        while marker not in self.masterLog():
            if self.exited:
                raise AssertionError(f"twistd exited early:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"not ready after {timeout}s:\n{self.log()}")
            time.sleep(0.02)
        self.workers()
        self.waitUntilServing(timeout)
        return self

    def signalGroup(self, signum: int) -> float:
        """
        Send C{signum} to the master's process group.

        @return: C{time.monotonic()} just before it was sent.
        """
        sentAt = time.monotonic()
        os.killpg(self.pid, signum)
        return sentAt

    def kill(self) -> None:
        """
        Kill the master and every worker it ran, by pid.
        """
        self.workers()
        super().kill()
        for pid in self.workerPids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass


def _clientTLS() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["http/1.1"])
    return context


class RawClient:
    """
    A blocking HTTP/1.1 client on a raw socket: what goes over the wire is
    exactly what the test sends.
    """

    def __init__(self, port: int, timeout: float = 15.0, tls: bool = False) -> None:
        """
        @param tls: whether to speak HTTP/1.1 over TLS (ALPN C{http/1.1}, the
            certificate unchecked); an end of TLS without close_notify
            raises L{ssl.SSLEOFError} from L{readResponse} and
            L{waitForClose}.
        """
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            self.sock = _clientTLS().wrap_socket(self.sock, suppress_ragged_eofs=False)
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
    @return: whether a connection to C{port} is refused right now.  A
        connect that times out is not refused: its SYN found the accept
        queue full (the probes of L{waitUntilRefused} fill it when the
        server is slow to accept) and waits for a retransmission.  One
        reset as it completes is: the listening socket closed with it in
        its queue.
    """
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=0.5)
    except (ConnectionRefusedError, ConnectionResetError):
        return True
    except TimeoutError:
        return False
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

    @ivar closedCleanly: with C{untilClosed}, whether the server then
        closed the connection with nothing more sent (over TLS, with
        close_notify: see L{RawClient}).
    """

    def __init__(
        self, port: int, request: bytes, tls: bool = False, untilClosed: bool = False
    ) -> None:
        """
        @param tls: whether to send it over TLS.
        @param untilClosed: whether to read on after the response, until
            the server closes the connection.
        """
        super().__init__(daemon=True)
        self.client = RawClient(port, tls=tls)
        self.client.send(request)
        self.untilClosed = untilClosed
        self.response: Response | None = None
        self.closedCleanly: bool | None = None
        self.error: Exception | None = None
        self.doneAt: float | None = None
        self.start()

    def run(self) -> None:
        try:
            self.response = self.client.readResponse()
            self.doneAt = time.monotonic()
            if self.untilClosed:
                self.closedCleanly = self.client.waitForClose()
        except Exception as e:
            self.error = e
        finally:
            if self.doneAt is None:
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


# WebSockets on raw sockets: the frames are built and parsed here, so that
# what goes over the wire is exactly what the test sends and sees.

OP_CONTINUATION, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA


def wsFrame(opcode: int, payload: bytes, fin: bool = True) -> bytes:
    """
    @return: a masked frame, as a client sends it.
    """
    head = bytes([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 1 << 16:
        head += bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([0x80 | 127]) + n.to_bytes(8, "big")
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


def wsClosePayload(code: int, reason: str = "") -> bytes:
    return code.to_bytes(2, "big") + reason.encode("utf-8")


class WebSocketProtocolError(Exception):
    """
    What the server sent is not a valid WebSocket frame from a server.
    """


def parseFrames(data: bytes) -> tuple[list[tuple[bool, int, bytes]], bytes]:
    """
    Parse the complete unmasked frames at the start of C{data}.

    @return: (fin, opcode, payload) of each, and the bytes left over.
    @raise WebSocketProtocolError: reserved bits, an unknown opcode, a
        masked frame, or a control frame fragmented or longer than 125
        bytes (an HTTP response written into the WebSocket, say).
    """
    frames = []
    while len(data) >= 2:
        first, second = data[0], data[1]
        fin, opcode = bool(first & 0x80), first & 0x0F
        if first & 0x70 or opcode not in (0, 1, 2, 8, 9, 10):
            raise WebSocketProtocolError(f"bad frame header {data[:2]!r}")
        if second & 0x80:
            raise WebSocketProtocolError("masked frame from the server")
        n, offset = second & 0x7F, 2
        if opcode >= 8 and (not fin or n > 125):
            raise WebSocketProtocolError(f"bad control frame {data[:2]!r}")
        if n == 126:
            if len(data) < 4:
                break
            n, offset = int.from_bytes(data[2:4], "big"), 4
        elif n == 127:
            if len(data) < 10:
                break
            n, offset = int.from_bytes(data[2:10], "big"), 10
        if len(data) < offset + n:
            break
        frames.append((fin, opcode, data[offset : offset + n]))
        data = data[offset + n :]
    return frames, data


class RawWebSocket:
    """
    A WebSocket client on a raw socket: the handshake, then frames built
    and parsed here.  Reading is the caller's to drive (L{read}, or a
    selector on C{sock} and L{feed}), so many can be watched at once.

    @ivar status: the handshake response's status (101 if accepted).
    @ivar headers: its headers, names lower-cased.
    @ivar frames: (time.monotonic(), opcode, payload) of every frame
        received after the handshake, in order.
    @ivar closedAt: C{time.monotonic()} when the server closed TCP.
    @ivar reset: whether it was closed with a reset.
    @ivar error: the protocol error found in what the server sent, if any.
    """

    def __init__(self, port: int, path: str = "/ws", timeout: float = 15.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buffer = b""
        self.frames: list[tuple[float, int, bytes]] = []
        self.closedAt: float | None = None
        self.reset = False
        self.error: WebSocketProtocolError | None = None
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.sock.sendall(
            get(
                path,
                "Upgrade: websocket",
                "Connection: Upgrade",
                f"Sec-WebSocket-Key: {key}",
                "Sec-WebSocket-Version: 13",
            )
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed during the handshake: {head!r}")
            head += chunk
        head, self.buffer = head.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {
            name.strip().lower().encode(): value.strip().encode()
            for name, value in (line.split(":", 1) for line in lines[1:])
        }
        if self.status != 101:
            self.buffer = b""
        else:
            self.feed(b"")

    def send(self, opcode: int, payload: bytes) -> None:
        self.sock.sendall(wsFrame(opcode, payload))

    def sendText(self, text: str) -> None:
        self.send(OP_TEXT, text.encode("utf-8"))

    def sendClose(self, code: int, reason: str = "") -> None:
        self.send(OP_CLOSE, wsClosePayload(code, reason))

    def feed(self, data: bytes) -> None:
        """
        Parse C{data}, received just now.
        """
        now = time.monotonic()
        self.buffer += data
        try:
            frames, self.buffer = parseFrames(self.buffer)
        except WebSocketProtocolError as e:
            self.error = e
            self.buffer = b""
            return
        self.frames += [(now, opcode, payload) for _, opcode, payload in frames]

    def read(self) -> bool:
        """
        Read once (blocking, within the socket's timeout) and parse.

        @return: whether the connection is still open.
        """
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            chunk = b""
        if not chunk:
            self.closedAt = time.monotonic()
            return False
        self.feed(chunk)
        return True

    def readUntilClosed(self) -> None:
        """
        Read until the server closes TCP.
        """
        while self.read():
            pass

    @property
    def messages(self) -> list[bytes]:
        """
        The payloads of the (unfragmented) text and binary frames.
        """
        return [p for _, op, p in self.frames if op in (OP_TEXT, OP_BINARY)]

    @property
    def close(self) -> tuple[int, str] | None:
        """
        The code and reason of the server's Close frame, if one came.
        """
        for _, opcode, payload in self.frames:
            if opcode == OP_CLOSE:
                code = int.from_bytes(payload[:2], "big") if payload else 1005
                return code, payload[2:].decode("utf-8")
        return None

    @property
    def closeAt(self) -> float | None:
        """
        C{time.monotonic()} when the server's Close frame arrived.
        """
        for at, opcode, _ in self.frames:
            if opcode == OP_CLOSE:
                return at
        return None

    def disconnect(self) -> None:
        self.sock.close()


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


# What a process holds, read from /proc (Linux), for the tests and benchmarks
# of what clients make a server hold.


def residentMemory(pid: int) -> int:
    """
    @return: the resident memory of process C{pid}, in bytes (C{VmRSS}).
    """
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise OSError(f"no VmRSS for {pid}")


def openDescriptors(pid: int) -> int:
    """
    @return: how many file descriptors process C{pid} has open.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpuSeconds(pid: int) -> float:
    """
    @return: the CPU time process C{pid} has used so far, user and system,
        all its threads.
    """
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def listenBacklogs(address: int | str) -> list[int]:
    """
    @param address: a TCP port, or the path of a Unix socket.
    @return: the backlog the kernel gives each socket listening there
        (C{ss -l}'s Send-Q; several for a port with C{SO_REUSEPORT}).
    """
    if isinstance(address, int):
        command, column = ["ss", "-ltnH", f"sport = :{address}"], 2
    else:
        command, column = ["ss", "-lxH", "src", address], 3
    output = subprocess.run(
        command, capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return [int(line.split()[column]) for line in output.splitlines() if line.strip()]


def webSocketUpgrade(path: str) -> bytes:
    """
    @return: a WebSocket opening handshake for C{path}, for a raw socket.
    """
    key = base64.b64encode(os.urandom(16))
    return (
        b"GET " + path.encode() + b" HTTP/1.1\r\nHost: test\r\n"
        b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
