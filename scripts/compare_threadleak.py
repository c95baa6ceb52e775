#!/usr/bin/env python3
"""Run the same leaky tests under pytest-threadleak and kafkatail's threadguard; print RST.

Writes one test file per leak kind to a temp dir, runs each plugin over them in a fresh
pytest, and tells for each case whether the plugin caught the leak, missed it or raised a
false alarm; then times N trivial tests with each plugin and with none (best of R runs) to
give the overhead per test. Needs ``pip install pytest-threadleak``. Usage::

    python scripts/compare_threadleak.py [--tests 1000] [--repeat 5] [--grace 2]
"""
from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CONFTEST = '''
import threading

STOP = threading.Event()


def pytest_unconfigure():
    STOP.set()  # lets leaked non-daemon threads go, so the run can exit
'''

# name: (what it shows, whether it leaks, test source)
CASES = {
    "python": ("non-daemon thread left running", True, '''
import threading
from conftest import STOP

def test_python():
    threading.Thread(target=STOP.wait, name="left-running").start()
'''),
    "daemon": ("daemon thread left running", True, '''
import threading
from conftest import STOP

def test_daemon():
    threading.Thread(target=STOP.wait, name="left-running", daemon=True).start()
'''),
    "stops": ("thread that stops 0.5 s after the test (clean)", False, '''
import threading, time

def test_stops():
    threading.Thread(target=time.sleep, args=(0.5,), name="finishing").start()
'''),
    "native": ("``_thread.start_new_thread`` left running", True, '''
import _thread
from conftest import STOP

def test_native():
    _thread.start_new_thread(STOP.wait, ())
'''),
    "fd": ("file descriptor left open", True, '''
import os
KEPT = []

def test_fd():
    KEPT.append(open(os.devnull))
'''),
    "clean": ("clean test", False, '''
import threading

def test_clean():
    t = threading.Thread(target=lambda: None)
    t.start()
    t.join()
'''),
}

TRIVIAL = '''
import pytest

@pytest.mark.parametrize("i", range({n}))
def test_trivial(i):
    assert i >= 0
'''


# Times the test loop only (no interpreter start, no collection) into $LOOP_SECONDS_FILE.
TIMING_CONFTEST = '''
import os
import time

import pytest


@pytest.hookimpl(wrapper=True)
def pytest_runtestloop(session):
    start = time.perf_counter()
    try:
        return (yield)
    finally:
        with open(os.environ["LOOP_SECONDS_FILE"], "w") as fh:
            fh.write(repr(time.perf_counter() - start))
'''


def guard_args() -> list[str]:
    """Load the plugin by entry-point name when installed, else by module name."""
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value == "kafkatail.testing.plugin":
            return ["-p", ep.name]
    return ["-p", "kafkatail.testing.plugin"]


def block_guard() -> list[str]:
    for ep in importlib.metadata.entry_points(group="pytest11"):
        if ep.value == "kafkatail.testing.plugin":
            return ["-p", f"no:{ep.name}"]
    return []


def pytest_run(workdir: Path, *args: str) -> str:
    """Run pytest in ``workdir`` in a fresh interpreter; returns its output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "LOOP_SECONDS_FILE": str(workdir / "loop-seconds")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "-rA", "-W", "ignore::DeprecationWarning", *args],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=600)
    return proc.stdout


def loop_seconds(workdir: Path, *args: str) -> float:
    """Seconds the test loop of one run took (the timing conftest writes them)."""
    pytest_run(workdir, *args)
    return float((workdir / "loop-seconds").read_text())


def flagged(output: str) -> set[str]:
    """Test files with an ERROR or FAILED line in the short summary."""
    return {m.group(1) for m in re.finditer(r"^(?:ERROR|FAILED) test_(\w+)\.py::", output, re.M)}


def verdict(leaks: bool, caught: bool) -> str:
    if leaks:
        return "caught" if caught else "**missed**"
    return "**false alarm**" if caught else "passed"


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tests", type=int, default=1000, help="trivial tests for the overhead")
    ap.add_argument("--repeat", type=int, default=5, help="runs of each; the fastest counts")
    ap.add_argument("--grace", type=float, default=2.0, help="threadguard grace in seconds")
    opts = ap.parse_args()
    try:
        threadleak = importlib.metadata.version("pytest-threadleak")
    except importlib.metadata.PackageNotFoundError:
        sys.exit("needs pytest-threadleak: pip install pytest-threadleak")

    guard = [*guard_args(), "-p", "no:threadleak", "--threadguard", "--threadguard-fds",
             f"--threadguard-grace={opts.grace}"]
    leak = [*block_guard(), "--threadleak"]
    with tempfile.TemporaryDirectory(prefix="threadleak-compare-") as tmp:
        cases = Path(tmp, "cases")
        cases.mkdir()
        (cases / "conftest.py").write_text(CONFTEST)
        for name, (_, _, source) in CASES.items():
            (cases / f"test_{name}.py").write_text(source)
        by_leak = flagged(pytest_run(cases, *leak))
        by_guard = flagged(pytest_run(cases, *guard))

        trivial = Path(tmp, "trivial")
        trivial.mkdir()
        (trivial / "conftest.py").write_text(TIMING_CONFTEST)
        (trivial / "test_trivial.py").write_text(TRIVIAL.format(n=opts.tests))
        runs = {"no plugin": [*block_guard(), "-p", "no:threadleak"],
                "pytest-threadleak": leak, "threadguard": guard[:-2],
                "threadguard, fds on": guard[:-1]}
        best = {label: min(loop_seconds(trivial, *args) for _ in range(opts.repeat))
                for label, args in runs.items()}

    print(rst_table(
        ["case", f"pytest-threadleak {threadleak}", "kafkatail threadguard"],
        [[what, verdict(leaks, name in by_leak), verdict(leaks, name in by_guard)]
         for name, (what, leaks, _) in CASES.items()]))
    print(f"\nthreadguard ran with ``--threadguard --threadguard-fds --threadguard-grace="
          f"{opts.grace:g}``; pytest-threadleak with ``--threadleak``.\n")
    none = best["no plugin"]
    print(rst_table(
        ["plugin", "per test", "overhead per test"],
        [[label, f"{1000 * seconds / opts.tests:.3f} ms", "" if label == "no plugin"
          else f"{1000 * (seconds - none) / opts.tests:+.3f} ms"]
         for label, seconds in best.items()]))
    print(f"\n{opts.tests} trivial tests, test loop timed (no start-up, no collection), best "
          f"of {opts.repeat} runs each; {os.cpu_count()} cores, Python {sys.version.split()[0]}.")


if __name__ == "__main__":
    main()
