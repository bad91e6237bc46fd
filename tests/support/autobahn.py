"""
The Autobahn WebSocket test suite's fuzzing client, as the process tests
run it against a server's WebSocket echo: C{wstest}, from the Python 2.7
virtualenv C{make autobahn} makes, skipped (saying why) where there is
none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SkipTest, SynchronousTestCase

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def wstest() -> str:
    """
    @return: the Autobahn test suite's C{wstest}, in the Python 2.7
        virtualenv C{make autobahn} makes.
    @raise SkipTest: where there is none, saying why.
    """
    path = os.environ.get("GRACESVC_WSTEST") or os.path.join(
        ROOT, ".venv-autobahn", "bin", "wstest"
    )
    if os.access(path, os.X_OK):
        return path
    if not any(
        subprocess.run(
            [python2, "-c", "import sys; assert sys.version_info[:2] == (2, 7)"],
            capture_output=True,
            timeout=10,
        ).returncode
        == 0
        for python2 in [
            "/root/.pyenv/versions/2.7.18/bin/python",
            shutil.which("python2.7") or "python2.7",
        ]
        if os.access(python2, os.X_OK)
    ):
        raise SkipTest(
            "the Autobahn test suite needs Python 2.7 (autobahntestsuite is "
            "Python 2 only), and this machine has none"
        )
    raise SkipTest(
        f"no Autobahn test suite at {path}: run make autobahn (a Python 2.7 "
        f"virtualenv with autobahntestsuite)"
    )


def fuzz(case: SynchronousTestCase, url: str) -> None:
    """
    Run the fuzzing client against the WebSocket echo at C{url}: cases 1-7
    (framing, pings, reserved bits, opcodes, fragmentation, UTF-8,
    closing), 9.1.1-9.2.3 and 9.7-9.8 (messages up to the 1 MiB limit) and
    10 (auto-fragmentation); compression (12, 13) is not offered.

    @raise AssertionError: through C{case}, if a case fails or too few ran.
    @raise SkipTest: there is no C{wstest} here.
    """
    binary = wstest()
    reports = tempfile.mkdtemp(prefix="gracesvc-autobahn-")
    case.addCleanup(shutil.rmtree, reports, True)
    spec = os.path.join(reports, "fuzzingclient.json")
    with open(spec, "w") as f:
        json.dump(
            {
                "outdir": reports,
                "servers": [{"agent": "gracesvc", "url": url}],
                "cases": AUTOBAHN_CASES,
                "exclude-cases": [],
                "exclude-agent-cases": {},
            },
            f,
        )
    result = subprocess.run(
        [binary, "-m", "fuzzingclient", "-s", spec],
        cwd=reports,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
        # Not the runner's PYTHONPATH (trial -j gives its workers one), whose
        # Python 3 modules the Python 2.7 of wstest cannot import.
        env={
            k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")
        },
    )
    case.assertEqual(result.returncode, 0, result.stdout + result.stderr)
    with open(os.path.join(reports, "index.json")) as f:
        index = json.load(f)
    behaviours: dict[str, list[str]] = {}
    for name, outcome in index["gracesvc"].items():
        for key in ("behavior", "behaviorClose"):
            behaviours.setdefault(outcome[key], []).append(name)
    case.assertNotIn("FAILED", behaviours, behaviours.get("FAILED"))
    case.assertGreater(len(index["gracesvc"]), 250)


#: The Autobahn cases run: all but 9's larger messages (above the 1 MiB
#: default limit, and slow) and compression.
AUTOBAHN_CASES = [
    "1.*",
    "2.*",
    "3.*",
    "4.*",
    "5.*",
    "6.*",
    "7.*",
    "9.1.1",
    "9.1.2",
    "9.1.3",
    "9.2.1",
    "9.2.2",
    "9.2.3",
    "9.7.*",
    "9.8.*",
    "10.*",
]
