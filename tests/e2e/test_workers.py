"""
C{twistd -n gracesvc --workers N} end to end: a real master in a process
group of its own, real workers, real signals, real clients on a free
loopback port.  Every process is killed by its pid at the end, the workers
too (found as the master's children in C{/proc}).
"""

from __future__ import annotations

import collections
import datetime
import os
import shutil
import signal
import socket
import ssl
import tempfile
import time

import twisted.test
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from twisted.trial.unittest import SynchronousTestCase

from gracesvc.testing import get, samples
from gracesvc.testing.h2 import H2SocketClient
from gracesvc.testing.process import (
    InFlight,
    MasterProcess,
    RawClient,
    alive,
    childPids,
    connectRefused,
    freePort,
    waitUntilRefused,
)
from tests.support.clients import Load, failures
from tests.support.deploy import (
    SYSTEMD_SOCKET,
    WORKERS_SERVICE,
    SocketActivated,
    SystemdSocketTestCase,
    systemdUnit,
)
from tests.support.endtoend import runTwistd, waitFor, waitUntilRead

#: An app a test can break and mend between reloads (C{--app app:resource}).
APP = """
from twisted.web.resource import Resource


class Version(Resource):
    isLeaf = True

    def render_GET(self, request):
        return b"VERSION"


resource = Version()
"""


class MasterProcessTestCase(SynchronousTestCase):
    """
    Tests of a real C{--workers} tree (not the in-memory C{MasterTestCase}
    of the unit tests).
    """

    def start(self, *args: str, workers: int = 2, **kwargs: object) -> MasterProcess:
        master = MasterProcess(*args, workers=workers, **kwargs)
        self.addCleanup(master.kill)
        return master.waitUntilReady()


class WorkersTestCase(MasterProcessTestCase):
    def inFlightAtSignal(self, toGroup: bool) -> None:
        """
        20 C{/ping} in flight, then SIGTERM to the master or to its group:
        all 20 answered, new connections refused at once, the whole tree
        gone soon after the last response.
        """
        master = self.start("--ping-delay", "1.5", "--shutdown-timeout", "5")
        workers = master.workers()
        self.assertEqual(len(workers), 2)
        requests = []
        for _ in range(20):
            requests.append(InFlight(master.port, get("/ping")))
            # Paced, so that both workers get some: each accepts one
            # connection per wake-up.
            time.sleep(0.01)
        waitUntilRead(*(r.client.sock for r in requests))
        if toGroup:
            sentAt = master.signalGroup(signal.SIGTERM)
        else:
            sentAt = master.signal(signal.SIGTERM)
        refusedAt = waitUntilRefused(master.port)
        status = master.wait(10)
        for request in requests:
            request.join(10)
        codes = collections.Counter(
            r.response.code if r.response else repr(r.error) for r in requests
        )
        lastResponse = max(r.doneAt or 0 for r in requests)
        assert master.exitedAt is not None
        print(
            f"\n--workers 2, SIGTERM to the {'group' if toGroup else 'master'}: "
            f"{codes[200]}/20 answered, refused after "
            f"{(refusedAt - sentAt) * 1000:.1f} ms, master exit "
            f"{(master.exitedAt - lastResponse) * 1000:.1f} ms after the last "
            f"response"
        )
        self.assertEqual(codes, {200: 20}, master.log())
        self.assertEqual(status, -signal.SIGTERM)
        self.assertLess(refusedAt - sentAt, 0.5)
        self.assertLess(master.exitedAt - lastResponse, 0.5)
        self.assertEqual([p for p in workers if alive(p)], [])
        log = master.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Forced stop", log)
        self.assertEqual(log.count("Server exiting (drained)"), 3)

    def test_sigtermToTheMaster(self) -> None:
        self.inFlightAtSignal(toGroup=False)

    def test_sigtermToTheProcessGroup(self) -> None:
        """
        The workers get the signal directly as well as the master's drain
        command: the same stop, not a second signal.
        """
        self.inFlightAtSignal(toGroup=True)

    def test_secondSignalForces(self) -> None:
        """
        A second SIGTERM to the master stops the tree at once: the 10 s
        requests in flight are cut.
        """
        master = self.start("--ping-delay", "10", "--shutdown-timeout", "8")
        requests = [InFlight(master.port, get("/ping")) for _ in range(4)]
        waitUntilRead(*(r.client.sock for r in requests))
        master.signal(signal.SIGTERM)
        waitUntilRefused(master.port)
        sentAt = master.signal(signal.SIGTERM)
        master.wait(5)
        assert master.exitedAt is not None
        self.assertLess(master.exitedAt - sentAt, 1.0)
        self.assertIn("Forced stop", master.log())
        for request in requests:
            request.join(5)
            self.assertIsNone(request.response)

    def test_reusePort(self) -> None:
        """
        C{--reuse-port}: a socket per worker slot; every worker serves, a
        reload under load loses nothing, and the tree stops as usual.
        """
        metricsPort = freePort()
        master = self.start(
            "--reuse-port",
            "--ping-delay",
            "0.01",
            "--metrics-listen",
            f"tcp:{metricsPort}:interface=127.0.0.1",
        )
        load = Load(master.port, clients=8, requestsPerConnection=1)
        self.addCleanup(load.stop)
        load.waitForAnswers(50)
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=2)
        load.waitForAnswers(50)
        outcomes = load.stop()
        with RawClient(metricsPort) as client:
            client.send(get("/metrics", "Connection: close"))
            scraped = samples(client.readResponse().body)
        slots = {
            dict(labels)["worker"]
            for (name, labels), value in scraped.items()
            if name == "gracesvc_requests_total" and value > 0
        }
        self.assertEqual(failures(outcomes), collections.Counter())
        self.assertGreater(len(outcomes), 50)
        self.assertEqual(slots, {"0", "1"})
        master.signal(signal.SIGTERM)
        self.assertEqual(master.wait(10), -signal.SIGTERM)
        self.assertTrue(connectRefused(master.port))

    def test_oneCapForTheTree(self) -> None:
        """
        Requests longer than the cap: each worker answers them 503 with
        C{Retry-After} just before the cap, and the whole tree is gone
        within it (and a little for the exits), counted from the signal.
        """
        master = self.start("--ping-delay", "10", "--shutdown-timeout", "1")
        workers = master.workers()
        requests = [InFlight(master.port, get("/ping")) for _ in range(6)]
        waitUntilRead(*(r.client.sock for r in requests))
        sentAt = master.signal(signal.SIGTERM)
        master.wait(5)
        assert master.exitedAt is not None
        for request in requests:
            request.join(5)
            assert request.response is not None, request.error
            self.assertEqual(request.response.code, 503)
            self.assertIn(b"retry-after", request.response.headers)
        print(f"\ncap 1 s, 10 s requests: tree gone {master.exitedAt - sentAt:.3f}s")
        self.assertLess(master.exitedAt - sentAt, 1.15)
        self.assertEqual([p for p in workers if alive(p)], [])

    def test_reloadsUnderLoadLoseNothing(self) -> None:
        """
        Three SIGHUPs under load: every request answered, a new generation
        of workers each time, the old ones gone.
        """
        master = self.start("--ping-delay", "0.01")
        load = Load(master.port)
        self.addCleanup(load.stop)
        load.waitForAnswers(50)
        previous = set(master.workers())
        for generation in (2, 3, 4):
            master.signal(signal.SIGHUP)
            master.waitUntilReady(generation=generation)
            waitFor(
                lambda old=previous: not any(alive(p) for p in old),  # type: ignore[misc]
                10,
                lambda: f"old workers still running:\n{master.log()}",
            )
            current = set(master.workers())
            self.assertEqual(len(current), 2)
            self.assertFalse(current & previous)
            previous = current
            load.waitForAnswers(30)
        outcomes = load.stop()
        print(f"\n3 reloads under load: {len(outcomes)} requests, {failures(outcomes)}")
        self.assertEqual(failures(outcomes), collections.Counter())
        self.assertGreater(len(outcomes), 100)
        self.assertNotIn("Traceback", master.log())

    def test_unbootableGenerationKeepsTheOld(self) -> None:
        """
        A reload whose new code does not import fails, and the old
        generation keeps serving; once mended, the next reload serves the
        new code.
        """
        appDirectory = tempfile.mkdtemp(prefix="gracesvc-e2e-app-")
        path = os.path.join(appDirectory, "app.py")
        with open(path, "w") as f:
            f.write(APP.replace("VERSION", "v1"))
        env = dict(os.environ, PYTHONPATH=appDirectory, PYTHONDONTWRITEBYTECODE="1")
        master = self.start("--app", "app:resource", env=env)
        workers = set(master.workers())

        def body() -> bytes:
            with RawClient(master.port) as client:
                client.send(get("/", "Connection: close"))
                return client.readResponse().body

        self.assertEqual(body(), b"v1")
        with open(path, "w") as f:
            f.write("raise RuntimeError('broken deploy')\n")
        load = Load(master.port)
        self.addCleanup(load.stop)
        master.signal(signal.SIGHUP)
        waitFor(
            lambda: "reload failed" in master.log(),
            20,
            lambda: f"no failed reload:\n{master.log()}",
        )
        load.waitForAnswers(30)
        outcomes = load.stop()
        self.assertEqual(failures(outcomes), collections.Counter())
        # The failed generation's workers exit on their own after the
        # failure is logged: wait for them, not for a moment.
        waitFor(
            lambda: set(master.workers()) == workers,
            10,
            lambda: f"workers {master.workers()}, not the old {workers}",
        )
        self.assertEqual(body(), b"v1")
        with open(path, "w") as f:
            f.write(APP.replace("VERSION", "v2 mended"))
        master.signal(signal.SIGHUP)
        master.waitUntilReady(generation=3)
        waitFor(
            lambda: not any(alive(p) for p in workers),
            10,
            lambda: f"old workers still running:\n{master.log()}",
        )
        self.assertEqual(body(), b"v2 mended")

    def test_sigkillMasterFreesThePort(self) -> None:
        """
        SIGKILL to the master: its workers see the control pipe close, drain
        and exit, and the port is free, within the cap and 0.5 s.
        """
        master = self.start("--ping-delay", "0.2", "--shutdown-timeout", "2")
        workers = master.workers()
        requests = [InFlight(master.port, get("/ping")) for _ in range(4)]
        waitUntilRead(*(r.client.sock for r in requests))
        killedAt = master.signal(signal.SIGKILL)
        waitFor(
            lambda: not any(alive(p) for p in workers) and connectRefused(master.port),
            2.5,
            lambda: f"workers or port still there:\n{master.log()}",
        )
        goneAfter = time.monotonic() - killedAt
        print(f"\nmaster SIGKILL: workers gone and port free after {goneAfter:.3f}s")
        for request in requests:
            request.join(5)
            self.assertIsNotNone(request.response, repr(request.error))

    def test_sigkillWorkerIsReplaced(self) -> None:
        """
        SIGKILL to one worker under load: its replacement is started at
        once (within 1 s; how soon it is ready, which is how long a Python
        process takes to import and start, is C{bench.workers}' figure),
        it becomes ready, and only requests on the victim's connections
        fail.
        """
        master = self.start("--ping-delay", "0.01")
        load = Load(master.port, clients=4)
        self.addCleanup(load.stop)
        load.waitForAnswers(50)
        victim, survivor = master.workers()
        killedAt = time.monotonic()
        os.kill(victim, signal.SIGKILL)
        waitFor(
            lambda: len(set(master.workers()) - {victim, survivor}) == 1,
            5,
            lambda: f"not replaced:\n{master.log()}",
        )
        startedAfter = time.monotonic() - killedAt
        waitFor(
            lambda: master.log().count(" ready> ready") == 3,
            15,
            lambda: f"replacement not ready:\n{master.log()}",
        )
        readyAfter = time.monotonic() - killedAt
        load.waitForAnswers(50)
        outcomes = load.stop()
        failed = failures(outcomes)
        print(
            f"\nworker SIGKILL: replacement started after {startedAfter:.3f}s, "
            f"ready after {readyAfter:.3f}s; {len(outcomes)} requests, {dict(failed)}"
        )
        self.assertLess(startedAfter, 1.0)
        self.assertLessEqual(sum(failed.values()), 4)
        self.assertTrue(alive(survivor))

    def test_stuckWorkerIsReplaced(self) -> None:
        """
        A worker that stops answering the master (SIGSTOP here, a loop that
        never returns to the reactor in real life) is killed after
        C{--worker-timeout} and replaced.
        """
        master = self.start("--worker-timeout", "1")
        stuck, other = master.workers()
        os.kill(stuck, signal.SIGSTOP)
        waitFor(
            lambda: not alive(stuck) and len(master.workers()) == 2,
            5,
            lambda: f"not replaced:\n{master.log()}",
        )
        self.assertIn("silent for", master.masterLog())
        self.assertIn(other, master.workers())
        with RawClient(master.port) as client:
            client.send(get("/healthz", "Connection: close"))
            self.assertEqual(client.readResponse().code, 200)

    def test_systemdNotify(self) -> None:
        """
        With C{NOTIFY_SOCKET} (C{Type=notify}): READY=1 once the workers
        are, RELOADING=1 and READY=1 around a reload, STOPPING=1 at the
        drain; the workers do not inherit the socket.
        """
        directory = tempfile.mkdtemp(prefix="gracesvc-e2e-notify-")
        path = os.path.join(directory, "notify")
        receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(receiver.close)
        receiver.bind(path)
        receiver.settimeout(15)
        master = self.start(env=dict(os.environ, NOTIFY_SOCKET=path))
        self.assertEqual(receiver.recv(100), b"READY=1")
        worker = master.workers()[0]
        with open(f"/proc/{worker}/environ", "rb") as f:
            self.assertNotIn(b"NOTIFY_SOCKET", f.read())
        master.signal(signal.SIGHUP)
        self.assertEqual(receiver.recv(100), b"RELOADING=1")
        self.assertEqual(receiver.recv(100), b"READY=1")
        master.signal(signal.SIGTERM)
        self.assertEqual(receiver.recv(100), b"STOPPING=1")
        master.wait(10)

    def test_treeMetrics(self) -> None:
        """
        The master serves the whole tree's metrics on C{--metrics-listen}:
        every worker's requests, labelled with the worker, and its own.
        """
        metricsPort = freePort()
        master = self.start(
            "--ping-delay",
            "0",
            "--metrics-listen",
            f"tcp:{metricsPort}:interface=127.0.0.1",
        )
        for _ in range(20):
            with RawClient(master.port) as client:
                client.send(get("/ping", "Connection: close"))
                self.assertEqual(client.readResponse().code, 200)
        with RawClient(metricsPort) as client:
            client.send(get("/metrics", "Connection: close"))
            scraped = samples(client.readResponse().body)
        served = {
            dict(labels)["worker"]: value
            for (name, labels), value in scraped.items()
            if name == "gracesvc_requests_total" and dict(labels)["route"] == "/ping"
        }
        print(f"\ntree metrics: /ping by worker {served}")
        self.assertEqual(sum(served.values()), 20)
        self.assertEqual(scraped[("gracesvc_workers", (("state", "ready"),))], 2)
        with RawClient(master.port) as client:
            client.send(get("/metrics", "Connection: close"))
            self.assertEqual(client.readResponse().code, 404)

    def test_workersRunOnTheMastersReactor(self) -> None:
        master = self.start("--ping-delay", "0", reactor="asyncio")
        for pid in master.workers():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                self.assertIn(b"\0--reactor\0asyncio\0gracesvc\0", f.read())
        self.assertEqual(master.log().count("AsyncioSelectorReactor"), 3)
        with RawClient(master.port) as client:
            client.send(get("/ping", "Connection: close"))
            self.assertEqual(client.readResponse().code, 200)

    def test_workerThatCannotStart(self) -> None:
        """
        A worker that cannot start (an app that does not import) stops the
        start: one line from the master, exit status 1, no crash loop.
        """
        master = MasterProcess("--app", "no_such_module:app", workers=2)
        self.addCleanup(master.kill)
        self.assertEqual(master.wait(20), 1)
        log = master.log()
        self.assertEqual(log.count("cannot start the workers"), 1, log)
        self.assertLessEqual(log.count("started <worker"), 2, log)
        self.assertNotIn("Traceback", log)


#: A key and certificate that ships with Twisted's tests.
PEM = os.path.join(os.path.dirname(twisted.test.__file__), "server.pem")


def commonName(certificate: x509.Certificate) -> str:
    [attribute] = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attribute.value)


def selfSigned(name: str) -> bytes:
    """
    @return: a new key and a self-signed certificate for C{name}, in one
        PEM file, as C{ssl:}'s C{privateKey} reads them.
    """
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ) + certificate.public_bytes(serialization.Encoding.PEM)


def servedName(port: int) -> str:
    """
    @return: the common name of the certificate served on C{port}.
    """
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        with context.wrap_socket(sock) as tls:
            der = tls.getpeercert(binary_form=True)
    assert der is not None
    return commonName(x509.load_der_x509_certificate(der))


class TLSWorkersTests(MasterProcessTestCase):
    """
    C{--workers 2} on an C{ssl:} listener: the master binds TCP, each
    worker serves TLS on it with the certificate it read.
    """

    def startTLS(self, *args: str, certificate: str = PEM) -> tuple[MasterProcess, int]:
        """
        Start a master with an C{ssl:} listener and a cleartext one (the one
        C{waitUntilReady} asks).

        @return: the master and the TLS port.
        """
        tlsPort, plainPort = freePort(), freePort()
        master = self.start(
            *args,
            port=plainPort,
            listen=[
                f"ssl:{tlsPort}:interface=127.0.0.1:privateKey={certificate}"
                f":certKey={certificate}",
                f"tcp:{plainPort}:interface=127.0.0.1",
            ],
        )
        return master, tlsPort

    def test_httpsInFlightAtSIGTERM(self) -> None:
        """
        20 HTTPS C{/ping} and one HTTP/2 stream (ALPN C{h2}) in flight at
        SIGTERM to the master: all answered, every HTTPS connection then
        closed with close_notify, the TLS port refused at once, the tree
        gone soon after the last response.
        """
        master, tlsPort = self.startTLS(
            "--ping-delay", "1.5", "--shutdown-timeout", "5"
        )
        workers = master.workers()
        h2 = H2SocketClient(tlsPort)
        self.addCleanup(h2.close)
        stream = h2.request("/ping")
        requests = []
        for _ in range(20):
            requests.append(InFlight(tlsPort, get("/ping"), tls=True, untilClosed=True))
            # Paced, so that both workers get some: each accepts one
            # connection per wake-up.
            time.sleep(0.01)
        waitUntilRead(h2.sock, *(r.client.sock for r in requests))
        sentAt = master.signal(signal.SIGTERM)
        refusedAt = waitUntilRefused(tlsPort)
        h2.readUntil(lambda: h2.frames.streams[stream].ended, 10)
        status = master.wait(10)
        for request in requests:
            request.join(10)
        codes = collections.Counter(
            r.response.code if r.response else repr(r.error) for r in requests
        )
        lastResponse = max(r.doneAt or 0 for r in requests)
        assert master.exitedAt is not None
        print(
            f"\n--workers 2 on ssl:, SIGTERM to the master: {codes[200]}/20 "
            f"HTTPS answered, h2 stream {h2.frames.streams[stream].status}, "
            f"refused after {(refusedAt - sentAt) * 1000:.1f} ms, master exit "
            f"{(master.exitedAt - lastResponse) * 1000:.1f} ms after the last "
            f"response"
        )
        self.assertEqual(codes, {200: 20}, master.log())
        self.assertEqual(
            [r.closedCleanly for r in requests],
            [True] * 20,
            [r.error for r in requests],
        )
        self.assertEqual(h2.frames.streams[stream].status, 200)
        self.assertTrue(h2.frames.streams[stream].ended)
        self.assertEqual(status, -signal.SIGTERM)
        self.assertLess(refusedAt - sentAt, 0.5)
        self.assertLess(master.exitedAt - lastResponse, 0.5)
        self.assertEqual([p for p in workers if alive(p)], [])
        log = master.log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("Forced stop", log)
        self.assertEqual(log.count("Server exiting (drained)"), 3)

    def test_httpsReloadsServeARenewedCertificate(self) -> None:
        """
        Two SIGHUPs under HTTPS load: every request answered; the
        certificate renewed in its file before the first is the one the new
        generations serve.
        """
        directory = tempfile.mkdtemp(prefix="gracesvc-e2e-tls-")
        path = os.path.join(directory, "server.pem")
        shutil.copy(PEM, path)
        with open(PEM, "rb") as f:
            original = commonName(x509.load_pem_x509_certificate(f.read()))
        master, tlsPort = self.startTLS("--ping-delay", "0.01", certificate=path)
        self.assertEqual(servedName(tlsPort), original)
        load = Load(tlsPort, clients=3, tls=True)
        self.addCleanup(load.stop)
        load.waitForAnswers(30)
        renewed = os.path.join(directory, "renewed.pem")
        with open(renewed, "wb") as f:
            f.write(selfSigned("renewed.gracesvc.test"))
        os.replace(renewed, path)
        self.assertEqual(servedName(tlsPort), original)
        previous = set(master.workers())
        for generation in (2, 3):
            master.signal(signal.SIGHUP)
            master.waitUntilReady(generation=generation)
            waitFor(
                lambda old=previous: not any(alive(p) for p in old),  # type: ignore[misc]
                10,
                lambda: f"old workers still running:\n{master.log()}",
            )
            previous = set(master.workers())
            load.waitForAnswers(20)
        outcomes = load.stop()
        print(
            f"\n2 reloads under HTTPS load: {len(outcomes)} requests, "
            f"{failures(outcomes)}"
        )
        self.assertEqual(failures(outcomes), collections.Counter(), master.log())
        self.assertGreater(len(outcomes), 50)
        self.assertEqual(servedName(tlsPort), "renewed.gracesvc.test")
        self.assertNotIn("Traceback", master.log())

    def test_unreadableRenewalKeepsTheOldGeneration(self) -> None:
        """
        A certificate file broken before a SIGHUP: the new workers stop with
        one line, the reload fails, and the old generation keeps serving
        HTTPS with the certificate it read.
        """
        directory = tempfile.mkdtemp(prefix="gracesvc-e2e-tls-")
        path = os.path.join(directory, "server.pem")
        shutil.copy(PEM, path)
        master, tlsPort = self.startTLS("--ping-delay", "0", certificate=path)
        workers = set(master.workers())
        with open(path, "w") as f:
            f.write("not a certificate\n")
        master.signal(signal.SIGHUP)
        waitFor(
            lambda: "reload failed" in master.masterLog(),
            20,
            lambda: f"no failed reload:\n{master.log()}",
        )
        self.assertIn("not a usable endpoint", master.log())
        # The rest of the failed generation is stopped after the reload
        # failed: only the old workers are left.
        waitFor(
            lambda: set(master.workers()) == workers,
            10,
            lambda: f"workers {master.workers()}, not {workers}:\n{master.log()}",
        )
        with RawClient(tlsPort, tls=True) as client:
            client.send(get("/ping", "Connection: close"))
            self.assertEqual(client.readResponse().code, 200)
        self.assertNotIn("Traceback", master.log())


class WorkerOptionsTests(SynchronousTestCase):
    def test_portInUse(self) -> None:
        """
        A port in use is one line from the master and exit status 1, before
        any worker starts.
        """
        with socket.socket() as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            result = runTwistd(
                "--pidfile=",
                "-n",
                "gracesvc",
                "--listen",
                f"tcp:{port}:interface=127.0.0.1",
                "--workers",
                "2",
            )
        self.assertEqual(result.returncode, 1)
        self.assertIn("Address already in use", result.stdout)
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        self.assertNotIn("started <worker", result.stdout)

    def test_badWorkers(self) -> None:
        """
        A bad C{--workers} is one line on standard error and exit status 1.
        """
        for value in ("-1", "two", "1.5"):
            result = runTwistd("--pidfile=", "-n", "gracesvc", "--workers", value)
            self.assertEqual(result.returncode, 1, value)
            self.assertEqual(len(result.stderr.strip().splitlines()), 1, result.stderr)
            self.assertIn("--workers", result.stderr)
            self.assertNotIn("Traceback", result.stderr)


class SystemdWorkersTests(SystemdSocketTestCase):
    """
    The replacements of C{tests/e2e/test_deploy.py} with
    C{deploy/gracesvc-workers.service} on a socket the test owns, as systemd
    would hand it over.
    """

    unit = WORKERS_SERVICE

    def start(self, listening: socket.socket) -> SocketActivated:
        fdName = systemdUnit(SYSTEMD_SOCKET)["Socket"].get(
            "FileDescriptorName", "gracesvc.socket"
        )
        process = SocketActivated(
            listening, fdName, "--ping-delay", "0.05", unit=self.unit
        )
        workers: set[int] = set()

        def killWorkers() -> None:
            for pid in workers:
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)

        def watch() -> list[int]:
            pids = childPids(process.pid)
            workers.update(pids)
            return pids

        self.addCleanup(killWorkers)
        self.addCleanup(process.kill)
        self.addCleanup(watch)
        waitFor(
            lambda: len(watch()) == 2 or process.exited,
            10,
            lambda: f"no workers:\n{process.log()}",
        )
        return process

    def test_replacementsUnderLoadLoseNothing(self) -> None:
        """
        Three replacements of the C{--workers} command under load lose
        nothing: see L{SystemdSocketTestCase.assertReplacementsLoseNothing}.
        """
        self.assertReplacementsLoseNothing()
