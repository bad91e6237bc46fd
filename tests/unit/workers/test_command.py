"""
How the master starts a worker (L{gracesvc._workers.command}): its argv,
the twistd options it inherits, its C{--worker-spec} and its fds.
"""

from __future__ import annotations

import json
import socket

from twisted.trial.unittest import SynchronousTestCase

from gracesvc._workers.command import (
    AdoptedListener,
    WorkerSpec,
    parseWorkerSpec,
    twistdArguments,
    workerCommand,
    workerFDs,
)
from gracesvc._workers.sockets import SharedSocket


class CommandTests(SynchronousTestCase):
    def test_twistdOptionsInherited(self) -> None:
        """
        A worker runs on the master's reactor and logger; the pid file, log
        file, user and daemonizing stay the master's.
        """
        argv = [
            "--pidfile=/run/g.pid",
            "-r",
            "asyncio",
            "--logger=gracesvc.jsonlog.observer",
            "--logfile",
            "/var/log/g.log",
            "--uid",
            "nobody",
            "-n",
            "gracesvc",
            "--reactor",
            "poll",
        ]
        self.assertEqual(
            twistdArguments(argv),
            ["--reactor", "asyncio", "--logger=gracesvc.jsonlog.observer"],
        )
        self.assertEqual(twistdArguments(["gracesvc"]), [])
        self.assertEqual(twistdArguments(["-m"]), [])
        command = workerCommand([], executable="python", twistd=["-r", "poll"])
        self.assertEqual(
            command(1, 0, [])[3:8],
            ["--pidfile=", "--nodaemon", "-r", "poll", "gracesvc"],
        )


class TLSListenerTests(SynchronousTestCase):
    def test_workerSpecMarksTLSListeners(self) -> None:
        """
        An C{ssl:} listener's socket reaches the workers as a listener with
        a fourth item, true, which the worker's options read as TLS (a
        worker too old to serve TLS refuses it); the others keep three.
        """
        description = "ssl:8443:privateKey=server.pem"
        sockets = [
            SharedSocket(description, socket.socket(), tls=True),
            SharedSocket("tcp:8080", socket.socket()),
        ]
        for shared in sockets:
            self.addCleanup(shared.stopListening)
        args = workerCommand([], executable="python")(1, 0, sockets)
        text = args[-1].split("=", 1)[1]
        self.assertEqual(
            json.loads(text)["listeners"],
            [
                [description, 5, socket.AF_INET, True],
                ["tcp:8080", 6, socket.AF_INET],
            ],
        )
        self.assertEqual(
            list(parseWorkerSpec(text).listeners),
            [
                (description, 5, socket.AF_INET, True),
                ("tcp:8080", 6, socket.AF_INET, False),
            ],
        )


class WorkerSpecTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        spec = WorkerSpec(
            generation=2,
            slot=1,
            acceptLimit=0,
            metricsRoute=False,
            listeners=(AdoptedListener("unix:/s", 5, socket.AF_UNIX, False),),
        )
        self.assertEqual(parseWorkerSpec(spec.toJSON()), spec)

    def test_defaults(self) -> None:
        """
        A spec without C{acceptLimit} nor C{metricsRoute} accepts as Twisted
        does and serves its C{/metrics}.
        """
        spec = parseWorkerSpec(
            '{"generation": 2, "slot": 1, "listeners": [["tcp:8080", 5, 2]]}'
        )
        self.assertEqual((spec.acceptLimit, spec.metricsRoute), (0, True))
        self.assertEqual(spec.listeners, (("tcp:8080", 5, 2, False),))

    def test_notASpec(self) -> None:
        for text in ("{", "[]", '"spec"', '{"generation": 1}', '{"slot": "x"}'):
            with self.assertRaises(ValueError) as caught:
                parseWorkerSpec(text)
            self.assertTrue(str(caught.exception).startswith("not a worker spec: "))


class WorkerFDsTests(SynchronousTestCase):
    def test_fds(self) -> None:
        """
        A worker reads C{stdin}, writes to the master's output, has the
        control pipes on 3 (its to write) and 4 (its to read), and the
        sockets from 5 on.
        """
        sockets = [SharedSocket("tcp:0", socket.socket()) for _ in range(2)]
        for shared in sockets:
            self.addCleanup(shared.stopListening)
        self.assertEqual(
            workerFDs(9, sockets),
            {
                0: 9,
                1: 1,
                2: 2,
                3: "r",
                4: "w",
                5: sockets[0].fileno(),
                6: sockets[1].fileno(),
            },
        )
