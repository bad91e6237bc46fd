"""
Smoke runs of the benchmarks under C{bench/}: each script, at tiny sizes
(C{--smoke}), still runs to the end and prints its table, so that the
benchmarks cannot rot.  They measure nothing worth reading here: like the
end-to-end tests they start real twistd processes on loopback ports, and
each run is bounded in time.

They need neither wrk, valgrind nor matplotlib: without wrk the throughput
benchmark falls back to its Python load generator, without valgrind the
instructions benchmark says it skipped, and without matplotlib the scale
benchmark says it skipped the plot.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class BenchSmokeTests(SynchronousTestCase):
    def runBench(self, name: str, *args: str) -> str:
        """
        Run C{python -m bench.NAME --smoke ARGS} from the repository root.

        @return: its standard output, once it has exited 0.
        """
        result = subprocess.run(
            [sys.executable, "-m", f"bench.{name}", "--smoke", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        self.assertEqual(
            result.returncode, 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
        self.assertNotIn("Traceback", result.stdout + result.stderr)
        return result.stdout

    def row(self, output: str, measure: str) -> str:
        """
        @return: the table row of C{output} that starts with C{measure}.
        """
        for line in output.splitlines():
            if line.startswith(f"| {measure}"):
                return line
        self.fail(f"no row {measure!r} in:\n{output}")

    def test_shutdown(self) -> None:
        """
        Every acceptance figure is measured, none fails with an error, and
        the in-flight requests complete.
        """
        output = self.runBench("shutdown")
        self.assertIn("| measure ", output)
        self.assertNotIn("ERROR", output)
        self.assertIn("3/3", self.row(output, "3 /ping (0.5 s) in flight at SIGINT"))
        for measure in [
            "  SIGINT -> first refused connect",
            "  last response -> process exit",
            "no traffic: SIGINT -> process exit",
            "second SIGINT during the drain -> process exit",
            "  last closing handshake done (the server's TCP close) -> process exit",
            "20 WebSockets opened and closed, then SIGINT: process exit",
            "  SIGINT -> last poll answered",
        ]:
            self.assertRegex(self.row(output, measure), r"\d+\.\d ms")
        self.assertIn("20/20", self.row(output, "20 WebSockets at SIGINT"))
        self.assertIn(
            "0/20", self.row(output, "  protocol errors (bad frame, data after Close")
        )
        self.assertRegex(
            self.row(output, "WebSocket client that never reads"), r"\d\.\d{3} s; reset"
        )
        self.assertIn("503 + Retry-After", self.row(output, "  new upgrade at 0.15 s"))
        self.assertIn("2/2", self.row(output, "2 long polls at SIGINT"))
        streams = self.row(output, "3 event streams (curl -N")
        if shutil.which("curl") is None:
            self.assertIn("skipped: curl is not installed", streams)
        else:
            self.assertIn("3/3", streams)
            self.assertRegex(
                self.row(output, "  SIGINT -> last curl exited"), r"\d+\.\d ms"
            )
            self.assertIn(
                "5/5", self.row(output, "  ended cleanly (shutdown event + curl")
            )

    def test_apps(self) -> None:
        """
        The users' apps' figures are measured: Flask, the stuck thread at
        the cap, Klein on both reactors.
        """
        output = self.runBench("apps")
        self.assertNotIn("ERROR", output)
        for label in [
            "Flask (--wsgi)",
            "Klein async def (--app)",
            "Klein awaiting asyncio.sleep",
        ]:
            self.assertIn("3/3", self.row(output, label))
        self.assertIn("503 + Retry-After", self.row(output, "Flask view sleeping 60 s"))

    def test_throughput(self) -> None:
        """
        Both servers are measured, with wrk where it is installed, and the
        ratio is printed.
        """
        output = self.runBench("throughput")
        self.assertRegex(self.row(output, "**median**"), r"\*\*\d+\.\d{3}\*\*")
        self.assertIn("load: wrk" if shutil.which("wrk") else "load: python", output)
        # Both log alike: one line per request, and one more for each
        # request in flight as a wrk run stopped (10 connections, two runs).
        match = re.search(
            r"access log lines beyond the requests counted, by round: "
            r"gracesvc \[(-?\d+)\], plain \[(-?\d+)\] \(each from 0 to 20",
            output,
        )
        assert match is not None, output
        for extra in match.groups():
            self.assertTrue(0 <= int(extra) <= 20, match.group(0))

    def test_throughputWithoutWrk(self) -> None:
        """
        The Python load generator, what a machine without wrk uses.
        """
        output = self.runBench("throughput", "--tool", "python")
        self.assertIn("load: python", output)
        self.assertRegex(self.row(output, "**median**"), r"\*\*\d+\.\d{3}\*\*")

    def test_asgilayer(self) -> None:
        """
        The ASGI HTTP/1.1 path with its drain and without are measured side
        by side, with gracesvc as shipped beside them, and the ratio is
        printed with its verdict.
        """
        output = self.runBench("asgilayer", "--shipped")
        self.assertIn("load: wrk" if shutil.which("wrk") else "load: python", output)
        self.assertRegex(output, r"bench\.asgilayer: .*, load average \d+\.\d\d")
        median = self.cells(output, "**median**")
        self.assertEqual(len(median), 9, median)
        for cell in (median[1], median[2], median[6]):
            self.assertRegex(cell, r"^\d+\.\d$")
        self.assertRegex(
            median[3], r"^\*\*\d+\.\d{3}\*\* \(target >= 0\.97: (yes|NO)\)$"
        )
        self.assertRegex(
            output,
            r"server CPU time per request, no drain / drain: median \d+\.\d{3}",
        )

    def test_scale(self) -> None:
        """
        gracesvc answers every request in flight and the plain app none; the
        plot is written where matplotlib is installed.
        """
        out = tempfile.mkdtemp(prefix="gracesvc-bench-")
        self.addCleanup(shutil.rmtree, out, True)
        output = self.runBench("scale", "--out", out)
        answered = self.row(output, "/ping answered 200")
        self.assertRegex(answered, r"\| 20/20 +\| 0/20 ")
        self.assertIn("50/50", self.row(output, "idle keep-alive connections closed"))
        plot = os.path.join(out, "shutdown-timeline.png")
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            self.assertIn("plot skipped: matplotlib is not installed", output)
        else:
            self.assertIn(f"plot: {plot}", output)
            self.assertTrue(os.path.getsize(plot) > 0)

    def test_layers(self) -> None:
        """
        The in-memory cost of each layer is measured for all three sites.
        """
        output = self.runBench("layers")
        for server in [
            "plain Site (bench/plain.tac)",
            "DrainingSite, drain layer only",
            "as twistd -n gracesvc builds it",
        ]:
            self.assertRegex(self.row(output, server), r"\| \d+\.\d +\| [+-]\d+\.\d ")

    def test_instructions(self) -> None:
        """
        Both servers are counted under callgrind where valgrind is installed;
        without it the benchmark says it skipped.
        """
        output = self.runBench("instructions")
        if shutil.which("valgrind") is None:
            self.assertIn("skipped", output)
            return
        self.assertRegex(self.row(output, "**mean**"), r"\*\*\d\.\d{4}\*\*")

    def test_h2(self) -> None:
        """
        The HTTP/2 drain's figures are measured; what they count is right
        even at smoke size (their times are not judged here).
        """
        for tool in ("h2load", "nghttp"):
            if shutil.which(tool) is None:
                raise SkipTest(f"{tool} not found: apt-get install nghttp2-client")
        output = self.runBench("h2")
        self.assertIn("8 succeeded, 0 failed, 0 errored", output)
        self.assertIn("status None, RST_STREAM None; GOAWAYs [(1, 0)]", output)
        self.assertIn("streams [200]", output)
        self.assertIn("20/20 answered", output)
        self.assertIn("cutting 2 requests in flight", output)

    def cells(self, output: str, measure: str) -> list[str]:
        """
        @return: the cells of the table row of C{output} that starts with
            C{measure}, stripped, the measure first.
        """
        return [c.strip() for c in self.row(output, measure).split("|")[1:-1]]

    def asgi(self, *parts: str) -> tuple[str, list[str]]:
        """
        Run C{bench.asgi --smoke} for C{parts}, gracesvc beside
        uvicorn[standard] (the baseline of its ratios).

        @return: its output, and what each server's cells say when it
            cannot run (uvicorn where the C{bench} extra is not installed,
            gracesvc before it serves C{--asgi}), or C{"ready"}.
        """
        from bench.asgi.servers import GRACESVC, UVICORN

        args = [a for part in parts for a in ("--only", part)]
        output = self.runBench(
            "asgi", "--server", "gracesvc", "--server", "uvicorn", *args
        )
        self.assertNotIn("ERROR", output)
        return output, [s.missing() or "ready" for s in (GRACESVC, UVICORN)]

    def test_asgiShutdown(self) -> None:
        """
        C{bench.asgi}'s shutdown table: the requests in flight are answered,
        and a server that cannot run says why in its cells.
        """
        output, ready = self.asgi("shutdown")
        inFlight = self.cells(output, "3 requests (0.5 s) in flight at SIGINT")
        self.assertEqual(inFlight[2:], ["3/3" if r == "ready" else r for r in ready])

    def test_asgiLoad(self) -> None:
        """
        C{bench.asgi}'s throughput, memory and scale parts each print their
        table, with a figure for each server that can run.
        """
        from bench.asgi.servers import GRACESVC, UVICORN

        output, ready = self.asgi("throughput", "memory", "scale")
        for heading in [
            "## Throughput, bare ASGI GET /hello",
            "## Throughput, FastAPI JSON endpoint GET /json",
            "## Memory",
            "## Scale",
        ]:
            self.assertIn(heading, output)
        for server, state in zip((GRACESVC, UVICORN), ready, strict=True):
            throughput = self.cells(output, server.header())
            if state == "ready":
                self.assertRegex(throughput[2], r"^\d+\.\d")
            else:
                self.assertEqual(throughput[1], state)

    def test_asgiWorkers(self) -> None:
        """
        C{bench.asgi}'s workers, reloads and HTTP/2 parts each print their
        table; gracesvc's reload fails no request, and its HTTP/2 requests
        in flight all succeed.
        """
        from bench.asgi.servers import GRACESVC

        output, ready = self.asgi("workers", "h2")
        for heading in ["## Workers, bare ASGI GET /hello", "## HTTP/2"]:
            self.assertIn(heading, output)
        if ready[0] != "ready":
            self.assertIn(ready[0], output)
            return
        reloads = self.cells(output, "1 in ")
        self.assertRegex(reloads[0], r"^1 in [\d.]+ s, 0 failed$")
        self.assertEqual(reloads[3], "0")
        h2 = output.split("## HTTP/2", 1)[1]
        self.assertEqual(
            self.row(h2, GRACESVC.header()).count("8 succeeded, 0 failed, 0 errored"), 2
        )

    def test_workers(self) -> None:
        """
        C{bench.workers}: every section prints its table; with 20 in flight
        at each SIGTERM, all 20 are answered.
        """
        if shutil.which("wrk") is None:
            raise SkipTest("bench.workers needs wrk (apt-get install wrk)")
        output = self.runBench("workers")
        self.assertIn("20/20", self.row(output, "master"))
        self.assertIn("20/20", self.row(output, "process group"))
        self.assertIn("0 failed", self.row(output, "1 in"))
        self.assertIn(
            "replacement started after", self.row(output, "SIGKILL one worker")
        )

    def test_hostile(self) -> None:
        """
        Every attack runs against both servers and is measured; gracesvc
        meets the targets the smoke sizes can show.
        """
        output = self.runBench("hostile")
        for attack in [
            "storm: 300 connects",
            "slow: 20 heads at 1 byte/s",
            "limit: 40 connections, limit 20",
            "emfile: ulimit -n 128, 300 connects held",
            "wspush: 20 MiB to a WebSocket that never reads",
            "fragments: 65536 B in 2-byte fragments",
            "stall: a 1 GiB download never read",
        ]:
            row = self.row(output, attack)
            self.assertIn("| gracesvc", row)
        self.assertRegex(self.row(output, "slow: 20 heads"), r"\| 20/20 +\| 20/20")
        self.assertIn("closed 1009", self.row(output, "fragments: 65536 B"))
        # One HTTP/2 attack, or a row saying bench/_h2attacks.py is not here.
        self.assertRegex(output, r"\| h2: ")

    def test_soak(self) -> None:
        """
        The mixed traffic runs across reloads and the processes are
        measured; HTTP/1.1, WebSockets and event streams lose nothing.
        """
        output = self.runBench("soak")
        for kind in ["http/1.1", "websocket", "event stream"]:
            self.assertRegex(self.row(output, kind), r"\| 0 +\| yes")
        self.assertRegex(output, r"reloads: [12] ")
        self.assertIn("| master, between reloads", output)
