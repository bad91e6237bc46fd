"""
The control channel (L{gracesvc._workers.channel}): its lines, as both ends
read them, and the commands that are answered.
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase

from gracesvc._workers.channel import ControlReader, Requests, decode, encode


class CodecTests(SynchronousTestCase):
    def test_roundTrip(self) -> None:
        line = encode({"command": "drain", "startedAt": 1.5})
        self.assertTrue(line.endswith(b"\n"))
        self.assertEqual(decode(line.strip()), {"command": "drain", "startedAt": 1.5})

    def test_notAnObject(self) -> None:
        for line in (b"", b"garbage", b"[1]", b'"drain"', b"\xff\xfe", b"{"):
            self.assertIsNone(decode(line), line)


class ControlReaderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.malformed: list[bytes] = []
        self.tooLong: list[None] = []
        self.reader = ControlReader(
            self.messages.append,
            self.malformed.append,
            lambda: self.tooLong.append(None),
            maxLine=16,
        )

    def test_linesSplitAnyhow(self) -> None:
        """
        Messages are read whole however the pipe splits them, several in
        one read or one over several.
        """
        for chunk in (b'{"a":1}\n{"b"', b":2}", b"\n", b'{"c":3}\n{'):
            self.reader.dataReceived(chunk)
        self.assertEqual(self.messages, [{"a": 1}, {"b": 2}, {"c": 3}])
        self.reader.dataReceived(b"}\n")
        self.assertEqual(self.messages[-1], {})

    def test_malformedLinesAreReported(self) -> None:
        self.reader.dataReceived(b'garbage\n[1]\n\xff\n{"ok":1}\n')
        self.assertEqual(self.malformed, [b"garbage", b"[1]", b"\xff"])
        self.assertEqual(self.messages, [{"ok": 1}])

    def test_overlongLinesAreSkippedWhole(self) -> None:
        """
        A line longer than the limit is reported once and skipped whole:
        in one read, or over several, before its end has arrived; the next
        line is read.
        """
        self.reader.dataReceived(b"x" * 17 + b'\n{"a":1}\n')
        self.assertEqual((len(self.tooLong), self.messages), (1, [{"a": 1}]))
        self.reader.dataReceived(b"y" * 10)
        self.reader.dataReceived(b"y" * 10)
        self.assertEqual(len(self.tooLong), 2)
        self.reader.dataReceived(b"y" * 100)
        self.reader.dataReceived(b'yyy\n{"b":2}\n')
        self.assertEqual(len(self.tooLong), 2)
        self.assertEqual(self.messages, [{"a": 1}, {"b": 2}])
        self.assertEqual(self.malformed, [])

    def test_lineAtTheLimit(self) -> None:
        line = b'{"k":"' + b"v" * 8 + b'"}'
        self.assertEqual(len(line), 16)
        self.reader.dataReceived(line[:10])
        self.reader.dataReceived(line[10:] + b"\n")
        self.assertEqual((self.messages, self.tooLong), ([{"k": "v" * 8}], []))


class RequestsTests(SynchronousTestCase):
    def test_answered(self) -> None:
        """
        Each command asked goes out with an id of its own; its answer, by
        that id, fires its Deferred, whatever the order.
        """
        sent: list[dict[str, Any]] = []
        requests = Requests()
        first = requests.ask(sent.append, {"command": "metrics"})
        second = requests.ask(sent.append, {"command": "metrics"})
        self.assertEqual(len(requests), 2)
        self.assertEqual([m["command"] for m in sent], ["metrics", "metrics"])
        self.assertNotEqual(sent[0]["id"], sent[1]["id"])
        requests.answered({"id": sent[1]["id"], "text": "2"})
        self.assertNoResult(first)
        self.assertEqual(self.successResultOf(second)["text"], "2")
        requests.answered({"id": sent[0]["id"], "text": "1"})
        self.assertEqual(self.successResultOf(first)["text"], "1")
        self.assertEqual(len(requests), 0)

    def test_lateOrUnknownAnswersAreDropped(self) -> None:
        sent: list[dict[str, Any]] = []
        requests = Requests()
        d = requests.ask(sent.append, {"command": "metrics"})
        d.cancel()
        self.failureResultOf(d, CancelledError)
        self.assertEqual(len(requests), 0)
        requests.answered({"id": sent[0]["id"]})
        requests.answered({"id": "x"})
        requests.answered({})
