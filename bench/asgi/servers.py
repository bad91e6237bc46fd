"""
The ASGI servers C{bench.asgi} runs side by side, each a fresh process in a
session (and process group) of its own, started with the command line a
user would type, and stopped by its pid (its process group only if it does
not exit).
"""

from __future__ import annotations

import datetime
import importlib.metadata
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from bench._common import DEFAULT_OUT, ROOT
from bench.asgiapps import RECORD_ENV, readRecords
from gracesvc.testing import get
from gracesvc.testing.process import Process, RawClient, freePort

BIN = os.path.dirname(sys.executable)

#: The applications, as each server is told to import them.
BARE = "bench.asgiapps:app"
FASTAPI = "bench.asgifastapi:app"
NOTICE = "bench.asgifastapi:noticeApp"


@dataclass(frozen=True)
class Options:
    """
    What one server process is started with, beyond its application.

    Every server runs without an access log (gracesvc where it has
    C{--no-access-log}), logging warnings and errors only where it can be
    told to.

    @ivar cap: the shutdown cap, in each server's own option (gracesvc's
        C{--shutdown-timeout}, uvicorn's C{--timeout-graceful-shutdown},
        hypercorn's C{--graceful-timeout}, granian's
        C{--workers-kill-timeout}; daphne has none).
    @ivar tls: (certificate, PKCS#8 key) to serve TLS (HTTP/2 through ALPN
        where the server speaks it) instead of cleartext.
    @ivar h2c: serve cleartext HTTP/2 to clients with prior knowledge, where
        an option is needed for it.
    @ivar workers: worker processes, where not the server's default.
    @ivar keepAlive: seconds an idle keep-alive connection is kept open,
        where the server's default is shorter.
    @ivar connections: how many connections it must hold open at once,
        where the server's default holds fewer (granian's C{--backpressure}
        is its backlog, 1,024, by default: it stops accepting beyond).
    """

    cap: float = 5.0
    tls: tuple[str, str] | None = None
    h2c: bool = False
    workers: int | None = None
    keepAlive: float | None = None
    connections: int | None = None


@dataclass(frozen=True)
class Server:
    """
    One ASGI server: how to start it, and how to tell whether it is here.

    @ivar key: its name on the command line (C{--server KEY}).
    @ivar title: its column's header, without the version.
    @ivar distribution: the package whose version is shown, and whose
        absence skips it.
    @ivar needs: modules it needs besides (C{httptools}, C{uvloop}, ...).
    @ivar build: the command line, from the port, the application and the
        options.
    @ivar http2: L{None} if it serves HTTP/2, else why not.
    @ivar h2c: L{None} if it serves cleartext HTTP/2, else why not.
    @ivar cap: whether it has a shutdown cap.
    """

    key: str
    title: str
    distribution: str
    build: Callable[[int, str, Options], list[str]]
    needs: tuple[str, ...] = ()
    http2: str | None = None
    h2c: str | None = None
    cap: bool = True

    def version(self) -> str:
        try:
            return importlib.metadata.version(self.distribution)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    def header(self) -> str:
        return f"{self.title} {self.version()}"

    def missing(self) -> str | None:
        """
        @return: why it cannot run here, or L{None} if it can.
        """
        if self.distribution == "gracesvc":
            if not gracesvcServesASGI():
                return GRACESVC_NO_ASGI
            if (
                self.key == "gracesvc-asyncio"
                and "--asgi-loop=" not in gracesvcOptions()
            ):
                return "not available (no --asgi-loop)"
            return None
        for module in (self.distribution.lower(), *self.needs):
            if importlib.util.find_spec(module) is None:
                return f"not installed ({module})"
        return None


GRACESVC_NO_ASGI = "not available (no --asgi)"

_helpText: str | None = None


def gracesvcOptions() -> str:
    """
    @return: what C{twistd gracesvc --help} says (once).
    """
    global _helpText
    if _helpText is None:
        try:
            _helpText = subprocess.run(
                [os.path.join(BIN, "twistd"), "gracesvc", "--help"],
                capture_output=True,
                text=True,
                timeout=60,
            ).stdout
        except (OSError, subprocess.SubprocessError):
            _helpText = ""
    return _helpText


def gracesvcServesASGI() -> bool:
    """
    @return: whether this gracesvc has C{--asgi}.
    """
    return "--asgi=" in gracesvcOptions()


def _gracesvcOn(loop: str) -> Callable[[int, str, Options], list[str]]:
    def build(port: int, app: str, o: Options) -> list[str]:
        return [*_gracesvc(port, app, o), "--asgi-loop", loop]

    return build


def _gracesvc(port: int, app: str, o: Options) -> list[str]:
    listen = f"tcp:{port}:interface=127.0.0.1"
    if o.tls is not None:
        cert, key = o.tls
        listen = f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}"
    argv = [os.path.join(BIN, "twistd"), "--pidfile=", "-n", "gracesvc"]
    argv += ["--listen", listen, "--asgi", app, "--shutdown-timeout", f"{o.cap:g}"]
    if "--no-access-log" in gracesvcOptions():
        # As every other server here runs.
        argv.append("--no-access-log")
    if o.h2c:
        argv.append("--h2c")
    if o.workers is not None:
        argv += ["--workers", str(o.workers)]
    return argv


def _uvicorn(*flags: str) -> Callable[[int, str, Options], list[str]]:
    def build(port: int, app: str, o: Options) -> list[str]:
        argv = [os.path.join(BIN, "uvicorn"), app, "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--log-level", "warning", "--no-access-log"]
        # It takes whole seconds.
        argv += ["--timeout-graceful-shutdown", str(max(1, round(o.cap)))]
        argv += flags
        if o.tls is not None:
            argv += ["--ssl-certfile", o.tls[0], "--ssl-keyfile", o.tls[1]]
        if o.workers is not None:
            argv += ["--workers", str(o.workers)]
        if o.keepAlive is not None:
            argv += ["--timeout-keep-alive", str(round(o.keepAlive))]
        return argv

    return build


def _hypercorn(port: int, app: str, o: Options) -> list[str]:
    argv = [os.path.join(BIN, "hypercorn"), app, "--bind", f"127.0.0.1:{port}"]
    argv += ["--graceful-timeout", f"{o.cap:g}", "--log-level", "warning"]
    if o.tls is not None:
        argv += ["--certfile", o.tls[0], "--keyfile", o.tls[1]]
    if o.workers is not None:
        argv += ["--workers", str(o.workers)]
    if o.keepAlive is not None:
        argv += ["--keep-alive", f"{o.keepAlive:g}"]
    return argv


def _granian(port: int, app: str, o: Options) -> list[str]:
    argv = [os.path.join(BIN, "granian"), "--interface", "asgi"]
    argv += ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"]
    # Whole seconds, 1 at least.
    argv += ["--workers-kill-timeout", str(max(1, round(o.cap)))]
    if o.tls is not None:
        argv += ["--ssl-certificate", o.tls[0], "--ssl-keyfile", o.tls[1]]
    if o.workers is not None:
        argv += ["--workers", str(o.workers)]
    if o.connections is not None:
        # It accepts no more than --backpressure connections per worker,
        # and few more than its backlog in any reasonable time.
        room = str(max(1024, o.connections))
        argv += ["--backpressure", room, "--backlog", room]
    return argv + [app]


def _daphne(port: int, app: str, o: Options) -> list[str]:
    # -v 0: no access log (verbosity 1, the default, writes one to stdout).
    argv = [os.path.join(BIN, "daphne"), "-v", "0"]
    if o.tls is not None:
        cert, key = o.tls
        argv += [
            "-e",
            f"ssl:{port}:interface=127.0.0.1:privateKey={key}:certKey={cert}",
        ]
    else:
        argv += ["-b", "127.0.0.1", "-p", str(port)]
    return argv + [app]


GRACESVC = Server("gracesvc", "gracesvc", "gracesvc", _gracesvc)
GRACESVC_ASYNCIO = Server(
    "gracesvc-asyncio",
    "gracesvc --asgi-loop asyncio",
    "gracesvc",
    _gracesvcOn("asyncio"),
)
UVICORN = Server(
    "uvicorn",
    "uvicorn[standard]",
    "uvicorn",
    _uvicorn(),
    needs=("httptools", "uvloop", "websockets"),
    http2="uvicorn[standard] (httptools) speaks no HTTP/2",
    h2c="uvicorn[standard] (httptools) speaks no HTTP/2",
)
UVICORN_ASYNCIO = Server(
    "uvicorn-asyncio",
    "uvicorn httptools, asyncio loop",
    "uvicorn",
    _uvicorn("--http", "httptools", "--loop", "asyncio"),
    needs=("httptools",),
)
UVICORN_H11 = Server(
    "uvicorn-h11",
    "uvicorn h11",
    "uvicorn",
    _uvicorn("--http", "h11", "--loop", "asyncio"),
    needs=("h11",),
)
UVICORN_H2 = Server(
    "uvicorn-zttp",
    "uvicorn --http zttp --http2",
    "uvicorn",
    _uvicorn("--http", "zttp", "--http2"),
    needs=("zttp",),
)
HYPERCORN = Server("hypercorn", "hypercorn", "hypercorn", _hypercorn)
GRANIAN = Server("granian", "granian", "granian", _granian)
DAPHNE = Server(
    "daphne",
    "daphne",
    "daphne",
    _daphne,
    h2c="daphne speaks HTTP/2 only over TLS",
    cap=False,
)

#: Every server, in the order of the tables' columns.
ALL = (
    GRACESVC,
    GRACESVC_ASYNCIO,
    UVICORN,
    UVICORN_ASYNCIO,
    UVICORN_H11,
    UVICORN_H2,
    HYPERCORN,
    GRANIAN,
    DAPHNE,
)
BY_KEY = {s.key: s for s in ALL}


class Running:
    """
    One server process, serving: its port, what its application recorded,
    its exit.
    """

    def __init__(
        self,
        server: Server,
        app: str,
        options: Options,
        pin: int | None = None,
        port: int | None = None,
    ) -> None:
        self.server = server
        self.port = port if port is not None else freePort()
        self.options = options
        self.records = tempfile.mkdtemp(prefix="gracesvc-asgibench-")
        argv = server.build(self.port, app, options)
        if pin is not None and shutil.which("taskset"):
            argv = ["taskset", "-c", str(pin), *argv]
        path = os.environ.get("PYTHONPATH")
        env = dict(
            os.environ,
            PYTHONPATH=ROOT if not path else f"{ROOT}{os.pathsep}{path}",
            **{RECORD_ENV: self.records},
        )
        self.process = Process(
            argv, prefix="gracesvc-asgibench-", env=env, newSession=True
        )
        self.pid = self.process.pid

    def waitUntilServing(self, timeout: float = 30.0) -> Running:
        """
        Wait until C{GET /healthz} answers 200.

        @raise RuntimeError: if it does not within C{timeout}, or the
            process exits; the process is killed then.
        """
        deadline = time.monotonic() + timeout
        tls = self.options.tls is not None
        while time.monotonic() < deadline:
            if self.process.exited:
                break
            try:
                with RawClient(self.port, timeout=2, tls=tls) as client:
                    client.send(get("/healthz", "Connection: close"))
                    if client.readResponse().code == 200:
                        return self
            except OSError:
                time.sleep(0.02)
        log = self.process.log()
        self.kill()
        raise RuntimeError(
            f"{self.server.key} not serving after {timeout:g}s: {log[-1500:]}"
        )

    @property
    def exited(self) -> bool:
        return self.process.exited

    @property
    def exitedAt(self) -> float | None:
        return self.process.exitedAt

    def signal(self, signum: int) -> float:
        """
        Send C{signum} to the server's main process.

        @return: C{time.monotonic()} just before it was sent.
        """
        return self.process.signal(signum)

    def wait(self, timeout: float) -> int | None:
        """
        @return: the exit status, or L{None} if it still runs after
            C{timeout}.
        """
        try:
            return self.process.wait(timeout)
        except AssertionError:
            return None

    def recorded(self) -> list[dict[str, Any]]:
        """
        @return: what the application recorded so far (see
            L{bench.asgiapps.readRecords}).
        """
        return readRecords(self.records)

    def stop(self, timeout: float = 15.0) -> None:
        """
        SIGTERM, and wait for the exit; then L{kill}.
        """
        if not self.process.exited:
            try:
                self.process.signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            self.wait(timeout)
        self.kill()

    def kill(self) -> None:
        """
        Kill the main process if it still runs, then whatever is left of its
        process group (workers of a server that did not stop them), and
        remove its directories.
        """
        self.process.kill()
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        shutil.rmtree(self.records, ignore_errors=True)

    def log(self) -> str:
        return self.process.log()


def start(
    server: Server,
    app: str = BARE,
    options: Options | None = None,
    pin: int | None = None,
) -> Running:
    """
    Start C{server} serving C{app} on a free loopback port and wait until it
    serves.
    """
    return Running(server, app, options or Options(), pin).waitUntilServing()


def groupPids(pgid: int) -> list[int]:
    """
    @return: the processes of process group C{pgid}.
    """
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.getpgid(int(name)) == pgid:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def groupCpuSeconds(pgid: int) -> float:
    """
    @return: the CPU time of every thread of every process of process group
        C{pgid} so far (the sum of their C{schedstat}).
    """
    return sum(processCpuSeconds(pgid).values())


def processCpuSeconds(pgid: int) -> dict[int, float]:
    """
    @return: by process of process group C{pgid}, the CPU time of all its
        threads so far (the sum of their C{schedstat}).
    """
    times: dict[int, float] = {}
    for pid in groupPids(pgid):
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        total = 0
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
        times[pid] = total / 1e9
    return times


def groupRssBytes(pgid: int) -> int:
    """
    @return: the resident memory of every process of process group C{pgid}.
    """
    total = 0
    for pid in groupPids(pgid):
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def connectRefused(port: int) -> bool | None:
    """
    @return: whether a connection to C{port} is refused right now; L{None}
        if the connect neither succeeded nor failed within 20 ms (its SYN
        found the accept queue full).
    """
    s = socket.socket()
    s.settimeout(0.02)
    try:
        s.connect(("127.0.0.1", port))
    except ConnectionRefusedError:
        return True
    except OSError:
        return None
    finally:
        s.close()
    return False


def refusedAt(running: Running, timeout: float) -> float | None:
    """
    Try to connect every millisecond until refused or the process exits.

    @return: C{time.monotonic()} of the first refusal, or L{None} if the
        process exited (or the time ran out) first.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not running.exited:
        if connectRefused(running.port):
            return time.monotonic()
        time.sleep(0.001)
    return None


def certificate() -> tuple[str, str]:
    """
    @return: a self-signed certificate for C{localhost} and its key in
        PKCS#8 (granian takes no other), made once into C{bench/out/}.
    """
    directory = os.path.join(DEFAULT_OUT, "asgi-tls")
    cert = os.path.join(directory, "cert.pem")
    key = os.path.join(directory, "key.pem")
    if os.path.exists(cert) and os.path.exists(key):
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    signed = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(_loopback())]
            ),
            critical=False,
        )
        .sign(private, hashes.SHA256())
    )
    os.makedirs(directory, exist_ok=True)
    with open(key, "wb") as f:
        f.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    with open(cert, "wb") as f:
        f.write(signed.public_bytes(serialization.Encoding.PEM))
    return cert, key


def _loopback() -> Any:
    import ipaddress

    return ipaddress.ip_address("127.0.0.1")


def chosen(keys: Sequence[str], default: Sequence[Server]) -> list[Server]:
    """
    @return: the servers named by C{keys} (in the order of L{ALL}), or
        C{default} if none is named.
    """
    if not keys:
        return list(default)
    return [s for s in ALL if s.key in keys]
