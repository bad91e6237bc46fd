"""
Ten minutes of everything: mixed traffic against C{--workers 2} with a
SIGHUP reload every 30 s, the resident memory and open descriptors of the
master and of each worker recorded all along::

    .venv/bin/python -m bench.soak                     # 10 minutes
    .venv/bin/python -m bench.soak --minutes 3 --reload-every 20
    .venv/bin/python -m bench.soak --smoke             # a few seconds
    .venv/bin/python -m bench.soak --revision main     # another revision's server

The traffic, all at once, from real clients:

  - HTTP/1.1: four httpx clients (keep-alive), C{GET /ping} in a loop;
  - HTTP/2: two httpx clients (the C{h2} library, prior knowledge on the
    C{--h2c} listener), four requests at a time;
  - WebSockets: two loops of the C{websockets} library opening C{/ws},
    echoing a message and closing;
  - event streams: two loops of httpx reading two events of C{/events}
    and closing.

Failed requests are counted per kind.  A WebSocket or an event stream the
server ends at a reload (Close 1001, the shutdown event) is not a failure:
that is the drain telling the client to reconnect; an upgrade refused with
503 during a worker's drain and retried is counted as retried.  An HTTP/2
request the client retried on its own (a stream the server refused before
processing it) is answered.

Done when: 0 failed requests, and the master's and each worker
generation's resident memory and descriptors within 5 % of their values
after the first minute (a worker generation: the median over the middle
half of its life, slot by slot, against the first generation started
after the first minute).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench._common import ROOT, machine, table, verdict
from gracesvc.testing.process import MasterProcess, residentMemory

#: How far a value may move from its reference.
TOLERANCE = 0.05


@dataclass
class Tally:
    ok: Counter[str] = field(default_factory=Counter)
    failed: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)

    def fail(self, kind: str, error: BaseException | str) -> None:
        self.failed[kind] += 1
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.errors[f"{kind}: {text[:120]}"] += 1


# The clients.


async def http1(port: int, tally: Tally, stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=10
    ) as client:
        while not stop.is_set():
            try:
                response = await client.get("/ping")
                if response.status_code == 200:
                    tally.ok["http/1.1"] += 1
                else:
                    tally.fail("http/1.1", f"status {response.status_code}")
            except Exception as e:
                tally.fail("http/1.1", e)
            await asyncio.sleep(0.01)


async def http2(port: int, tally: Tally, stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", http1=False, http2=True, timeout=10
    ) as client:

        async def one() -> None:
            try:
                response = await client.get("/ping")
                if response.status_code == 200 and response.http_version == "HTTP/2":
                    tally.ok["h2"] += 1
                else:
                    tally.fail("h2", f"{response.http_version} {response.status_code}")
            except Exception as e:
                tally.fail("h2", e)

        while not stop.is_set():
            await asyncio.gather(*(one() for _ in range(4)))
            await asyncio.sleep(0.01)


async def webSockets(port: int, tally: Tally, stop: asyncio.Event) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    while not stop.is_set():
        try:
            async with connect(f"ws://127.0.0.1:{port}/ws") as ws:
                await ws.send("hello")
                while True:
                    message = await asyncio.wait_for(ws.recv(), 10)
                    if message == "hello":
                        break
                tally.ok["websocket"] += 1
        except InvalidStatus as e:
            if e.response.status_code == 503:
                tally.retried["websocket"] += 1
            else:
                tally.fail("websocket", e)
        except ConnectionClosed as e:
            if e.rcvd is not None and e.rcvd.code in (1001, 1012):
                tally.retried["websocket"] += 1
            else:
                tally.fail("websocket", e)
        except Exception as e:
            tally.fail("websocket", e)
        await asyncio.sleep(0.05)


async def eventStreams(port: int, tally: Tally, stop: asyncio.Event) -> None:
    import httpx

    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=10
    ) as client:
        while not stop.is_set():
            try:
                async with client.stream(
                    "GET", "/events", headers={"Accept": "text/event-stream"}
                ) as response:
                    if response.status_code != 200:
                        tally.fail("event stream", f"status {response.status_code}")
                        continue
                    events = 0
                    async for line in response.aiter_lines():
                        if line.startswith("event: shutdown"):
                            tally.retried["event stream"] += 1
                            break
                        if line.startswith("event: tick"):
                            events += 1
                            if events == 2:
                                tally.ok["event stream"] += 1
                                break
                    else:
                        if events < 2:
                            # Ended by the drain with only a retry: field.
                            tally.retried["event stream"] += 1
            except Exception as e:
                tally.fail("event stream", e)
            await asyncio.sleep(0.05)


async def traffic(port: int, seconds: float, tally: Tally) -> None:
    stop = asyncio.Event()
    tasks = (
        [http1(port, tally, stop) for _ in range(4)]
        + [http2(port, tally, stop) for _ in range(2)]
        + [webSockets(port, tally, stop) for _ in range(2)]
        + [eventStreams(port, tally, stop) for _ in range(2)]
    )
    running = [asyncio.ensure_future(t) for t in tasks]
    await asyncio.sleep(seconds)
    stop.set()
    await asyncio.wait(running, timeout=30)


# The processes.


def _socketTables(port: int) -> tuple[set[str], set[str]]:
    """
    @return: the inodes of the TCP connections to C{port} (in any state
        but LISTEN: a worker's clients' connections, which come and go with
        the traffic), and the inodes of every other socket the kernel lists
        (TCP and Unix).
    """
    connections, others = set(), set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    local, state, inode = fields[1], fields[3], fields[9]
                    if state != "0A" and int(local.rsplit(":", 1)[1], 16) == port:
                        connections.add(inode)
                    else:
                        others.add(inode)
        except OSError:
            continue
    try:
        with open("/proc/net/unix") as f:
            next(f)
            for line in f:
                fields = line.split()
                if len(fields) > 6:
                    others.add(fields[6])
    except OSError:
        pass
    return connections, others


def fixedDescriptors(pid: int, port: int) -> int:
    """
    @return: the descriptors process C{pid} has open, less its clients'
        connections to C{port}: the ones a leak would grow.  A socket the
        kernel no longer lists once the descriptors are read was a
        connection opened or closed meanwhile, and does not count either.
    """
    directory = f"/proc/{pid}/fd"
    targets = []
    for name in os.listdir(directory):
        try:
            targets.append(os.readlink(os.path.join(directory, name)))
        except OSError:
            continue
    connections, others = _socketTables(port)
    count = 0
    for target in targets:
        if target.startswith("socket:["):
            inode = target[8:-1]
            if inode in connections or inode not in others:
                continue
        count += 1
    return count


@dataclass
class Sample:
    at: float
    rss: int
    fds: int


class Recorder(threading.Thread):
    """
    Every second, the resident memory and descriptors of the master and of
    each worker, and which generation and slot each worker is (from the
    master's log).
    """

    STARTED = re.compile(r"started <worker (\d+) of generation (\d+) pid (\d+)")

    def __init__(self, master: MasterProcess, startedAt: float) -> None:
        super().__init__(daemon=True)
        self.master = master
        self.startedAt = startedAt
        self.samples: dict[int, list[Sample]] = {}
        self.workers: dict[int, tuple[int, int]] = {}
        self._halt = threading.Event()
        self.start()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            self.sample()

    def sample(self) -> None:
        now = time.monotonic() - self.startedAt
        for generation in self.STARTED.finditer(self.master.masterLog()):
            slot, number, pid = (int(g) for g in generation.groups())
            self.workers[pid] = (number, slot)
        for pid in [self.master.pid, *self.master.workers()]:
            try:
                sample = Sample(
                    now, residentMemory(pid), fixedDescriptors(pid, self.master.port)
                )
            except OSError:
                continue
            self.samples.setdefault(pid, []).append(sample)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def steady(samples: Sequence[Sample]) -> tuple[float, float] | None:
    """
    @return: the median resident memory and descriptors over the middle
        half of a worker's life.
    """
    if len(samples) < 4:
        return None
    middle = samples[len(samples) // 4 : 3 * len(samples) // 4]
    return (
        statistics.median(s.rss for s in middle),
        statistics.median(s.fds for s in middle),
    )


def deviation(value: float, reference: float) -> float:
    return abs(value - reference) / reference if reference else 0.0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--reload-every", type=float, default=30.0)
    parser.add_argument(
        "--reference",
        type=float,
        default=60.0,
        help="seconds after which the values are taken as the reference",
    )
    parser.add_argument("--smoke", action="store_true", help="a few seconds")
    parser.add_argument(
        "--revision",
        metavar="REV",
        help="serve gracesvc of this git revision instead of this checkout's "
        "(extracted into bench/out/, as bench.throughput --against does)",
    )
    args = parser.parse_args(argv)
    seconds, every, reference = args.minutes * 60, args.reload_every, args.reference
    if args.smoke:
        seconds, every, reference = 7.0, 2.5, 2.0
    os.chdir(ROOT)
    print(f"bench.soak: {machine()}, load average {os.getloadavg()[0]:.2f}")
    print(
        f"{seconds:g} s of traffic, SIGHUP every {every:g} s, reference after "
        f"{reference:g} s"
    )
    print()
    env = None
    if args.revision is not None:
        from bench.throughput import checkoutOf

        checkout = checkoutOf(args.revision)
        path = os.environ.get("PYTHONPATH")
        env = dict(
            os.environ,
            PYTHONPATH=checkout if not path else f"{checkout}{os.pathsep}{path}",
        )
        print(f"serving gracesvc of {args.revision}, from {checkout}")
    master = MasterProcess("--h2c", "--ping-delay", "0.02", workers=2, env=env)
    try:
        master.waitUntilReady(timeout=60)
        startedAt = time.monotonic()
        recorder = Recorder(master, startedAt)
        reloads: list[str] = []
        reloadTimes: list[float] = []

        def reloadEvery() -> None:
            generation = 1
            while time.monotonic() - startedAt + every < seconds:
                time.sleep(every)
                generation += 1
                sentAt = time.monotonic()
                reloadTimes.append(sentAt - startedAt)
                master.signal(signal.SIGHUP)
                try:
                    master.waitUntilReady(timeout=60, generation=generation)
                    reloads.append(f"{time.monotonic() - sentAt:.1f} s")
                except AssertionError:
                    reloads.append("not ready")

        reloader = threading.Thread(target=reloadEvery, daemon=True)
        reloader.start()
        tally = Tally()
        asyncio.run(traffic(master.port, seconds, tally))
        reloader.join(70)
        recorder.stop()
        master.signal(signal.SIGTERM)
        master.wait(30)
    finally:
        log = master.log()
        master.kill()
    rows = []
    for kind in ["http/1.1", "h2", "websocket", "event stream"]:
        rows.append(
            (
                kind,
                str(tally.ok[kind]),
                str(tally.retried[kind]),
                str(tally.failed[kind]),
                verdict(tally.failed[kind] == 0),
            )
        )
    print(
        table(
            ["traffic", "answered", "ended by a reload, retried", "failed", "0 failed"],
            rows,
        )
    )
    if tally.errors:
        print()
        for error, n in tally.errors.most_common(8):
            print(f"- {n} x {error}")
    print()
    print(
        f"reloads: {len(reloads)} ({', '.join(reloads[:5])}{', ...' if len(reloads) > 5 else ''})"
    )
    print()
    print(
        table(
            ["process", "measure", "reference", "later", "max change", "within 5 %"],
            processRows(recorder, master.pid, reference, reloadTimes),
        )
    )
    unclean = [
        line for line in log.splitlines() if "Traceback" in line or "#critical]" in line
    ]
    if unclean:
        print()
        print(
            f"log: {len(unclean)} tracebacks or critical lines, the first: {unclean[0]}"
        )
    return 0


Row = tuple[str, str, str, str, str, str]


def compare(label: str, lives: list[tuple[str, tuple[float, float]]]) -> list[Row]:
    """
    @param lives: (name, (RSS, descriptors)) of each steady spell, the
        reference first.
    @return: a row for RSS and one for descriptors: each later spell
        against the reference.
    """
    if len(lives) < 2:
        return [(label, "-", "too few spells after the reference", "", "", "-")]
    rows = []
    for name, index, unit, scale in (("RSS", 0, " MB", 1e6), ("descriptors", 1, "", 1)):
        reference = lives[0][1][index]
        values = [values[index] for _, values in lives[1:]]
        change = max(deviation(v, reference) for v in values)
        rows.append(
            (
                f"{label}, {lives[0][0]} to {lives[-1][0]}",
                name,
                f"{reference / scale:.1f}{unit}",
                f"{min(values) / scale:.1f} to {max(values) / scale:.1f}{unit}",
                f"{change * 100:.1f} %",
                verdict(change <= TOLERANCE),
            )
        )
    return rows


def processRows(
    recorder: Recorder, masterPid: int, reference: float, reloads: Sequence[float]
) -> list[Row]:
    """
    The master's spells are the times between two reloads; a worker's, its
    life.  Each is taken as the median over its middle half.
    """
    masterSamples = recorder.samples.get(masterPid, [])
    bounds = [0.0, *reloads, float("inf")]
    spells = []
    for start, end in zip(bounds, bounds[1:], strict=False):
        values = steady([s for s in masterSamples if start <= s.at < end])
        if values is not None and start >= reference:
            spells.append((f"{start:.0f} s", values))
    rows = compare("master, between reloads", spells)
    bySlot: dict[int, list[tuple[int, tuple[float, float]]]] = {}
    for pid, samples in recorder.samples.items():
        if pid not in recorder.workers:
            continue
        generation, slot = recorder.workers[pid]
        values = steady(samples)
        if values is not None and samples[0].at >= reference:
            bySlot.setdefault(slot, []).append((generation, values))
    for slot, generations in sorted(bySlot.items()):
        generations.sort()
        rows += compare(
            f"worker slot {slot}, generations",
            [(str(g), values) for g, values in generations],
        )
    return rows


if __name__ == "__main__":
    sys.exit(main())
