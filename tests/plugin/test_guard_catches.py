"""The guard fails tests that leave threads or fds behind, and says where they came from."""
from __future__ import annotations

import os
import re
import signal

import pytest

from .conftest import outcomes

pytest_plugins = ["pytester"]

FAST = ("--threadguard", "--threadguard-grace=0.3")

# The outage: each page view started a consumer thread that looped forever.
OUTAGE = '''
import threading
import time

import pytest


def consume_forever():
    while True:  # stands in for `for message in consumer:`
        time.sleep(0.05)


def page_view():
    threading.Thread(target=consume_forever, name="page-view-consumer", daemon=True).start()


def test_page_view():
    page_view()


class Tail:
    """The fixed design: poll with a timeout, check a stop Event every turn."""

    def __init__(self):
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name="kt-tail-orders")

    def run(self):
        while not self.stop.wait(0.05):
            pass


def test_tail_stopped_in_finally():
    tail = Tail()
    tail.thread.start()
    try:
        pass  # the page view
    finally:
        tail.stop.set()
        tail.thread.join()


@pytest.fixture
def tail():
    tail = Tail()
    tail.thread.start()
    yield tail
    tail.stop.set()  # no join: the guard's grace period waits for the thread to leave


def test_tail_stopped_in_teardown(tail):
    assert tail.thread.is_alive()
'''


def test_outage_pattern_fails_with_the_start_line_and_the_fix_passes(inner):
    path = inner.pytester.makepyfile(test_outage=OUTAGE)
    start_line = 1 + next(n for n, line in enumerate(path.read_text().splitlines())
                          if 'name="page-view-consumer"' in line)
    result = inner.run(*FAST)
    assert outcomes(result) == {
        "test_outage.py::test_page_view": {"PASSED", "ERROR"},
        "test_outage.py::test_tail_stopped_in_finally": {"PASSED"},
        "test_outage.py::test_tail_stopped_in_teardown": {"PASSED"},
    }
    result.stdout.fnmatch_lines([
        "*ERROR at teardown of test_page_view*",
        "threadguard: left behind after 0.3*s: thread 'page-view-consumer' started at "
        f"test_outage.py:{start_line}",
        "  python threads: 2 (baseline 1)",
        "Thread 'page-view-consumer' nid=* (nid=0x*) daemon=True cpu=*",
        f"  started at {path}:{start_line} in page_view",
        f"      called from {path}:*in test_page_view",
        "  stack (most recent call last):",
        "*in consume_forever",
        "      time.sleep(0.05)",
        '*allow=[[]r"^page-view-consumer"[]]*',
    ])
    nid = re.search(r"nid=(\d+) \(nid=(0x[0-9a-f]+)\)", result.stdout.str())
    assert int(nid.group(1)) == int(nid.group(2), 16)


def test_thread_that_stops_within_the_grace_period_passes(inner):
    inner.pytester.makepyfile(test_slow_stop='''
        import threading, time

        def test_worker_that_needs_half_a_second():
            threading.Thread(target=time.sleep, args=(0.5,), name="slow-stopper").start()
    ''')
    result = inner.run("--threadguard", "--threadguard-grace=3")
    result.assert_outcomes(passed=1)
    result.stdout.fnmatch_lines(["slowest settles:", "  0.[5-9]*s test_slow_stop.py::*"])


def test_non_daemon_and_daemon_leaks_are_both_caught(inner):
    inner.pytester.makeconftest('''
        import threading
        STOP = threading.Event()

        def pytest_unconfigure():
            STOP.set()  # lets the non-daemon thread go, so the run can exit
    ''')
    inner.pytester.makepyfile(test_kinds='''
        import threading
        from conftest import STOP

        def test_non_daemon():
            threading.Thread(target=STOP.wait, name="worker-non-daemon").start()

        def test_daemon():
            threading.Thread(target=STOP.wait, name="worker-daemon", daemon=True).start()
    ''')
    result = inner.run(*FAST)
    result.assert_outcomes(passed=2, errors=2)
    result.stdout.fnmatch_lines(["Thread 'worker-non-daemon' * daemon=False *"])
    result.stdout.fnmatch_lines(["Thread 'worker-daemon' * daemon=True *"])


NATIVE = '''
import _thread
import time


def spin():
    while True:
        time.sleep(0.05)


def test_raw_thread():
    _thread.start_new_thread(spin, ())
'''


def test_thread_without_a_threading_object_is_caught_by_its_native_id(inner):
    path = inner.pytester.makepyfile(test_native=NATIVE)
    result = inner.run(*FAST)
    assert outcomes(result) == {"test_native.py::test_raw_thread": {"PASSED", "ERROR"}}
    result.stdout.fnmatch_lines([
        "*1 native thread(s) with no threading.Thread",
        "  python threads: 1 (baseline 1)",
        "  native threads: 2 (baseline 1)",
        "Native thread tid=* (nid=0x*) comm='*' cpu=*: no threading.Thread*",
        "Python code in a thread with no threading.Thread, ident=0x*",
        f"  started at {path}:11 in test_raw_thread",
        "*in spin",
    ])


def test_pytest_threadleak_misses_the_native_thread(inner):
    pytest.importorskip("pytest_threadleak")
    inner.pytester.makepyfile(test_native=NATIVE)
    result = inner.run("--threadleak", plugin=False)
    result.assert_outcomes(passed=1)


def test_fd_leak_is_caught_with_fds_on_and_ignored_without(inner):
    inner.pytester.makepyfile(test_fd='''
        KEPT = []

        def test_opens_and_forgets(tmp_path):
            KEPT.append(open(tmp_path / "forgotten.log", "w"))
    ''')
    result = inner.run(*FAST, "--threadguard-fds")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*left behind after *: 1 fd(s)",
                                 "New file descriptors:", "  fd * -> */forgotten.log"])
    inner.run(*FAST).assert_outcomes(passed=1)


def test_fds_on_from_ini(inner):
    inner.pytester.makeini("[pytest]\nthreadguard = true\nthreadguard_fds = true\n"
                           "threadguard_grace = 0.2\n")
    inner.pytester.makepyfile(test_fd='''
        import socket
        KEPT = []

        def test_socket():
            KEPT.append(socket.socket())
    ''')
    result = inner.run()
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["  fd * -> socket:[[]*[]]"])


CHILDREN = '''
import subprocess
import sys

import pytest

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_server_left_running():
    proc = subprocess.Popen(SLEEPER)  # a broker or server no one stops
    with open("leftover.pid", "w") as fh:
        fh.write(str(proc.pid))


def test_server_stopped():
    proc = subprocess.Popen(SLEEPER)
    proc.kill()
    proc.wait()


@pytest.fixture(scope="session")
def session_broker():
    proc = subprocess.Popen(SLEEPER)  # outlives each test by design: adopted as baseline
    yield proc
    proc.kill()
    proc.wait()


def test_uses_the_session_broker(session_broker):
    assert session_broker.poll() is None
'''


def test_a_child_process_left_running_is_caught_with_procs_on(inner):
    """A test that starts a JVM (or any server) and does not stop it leaves a process behind:
    the same rule as a thread."""
    inner.pytester.makepyfile(test_children=CHILDREN)
    result = inner.run(*FAST, "--threadguard-procs")
    assert outcomes(result) == {
        "test_children.py::test_server_left_running": {"PASSED", "ERROR"},
        "test_children.py::test_server_stopped": {"PASSED"},
        "test_children.py::test_uses_the_session_broker": {"PASSED"},
    }
    result.stdout.fnmatch_lines(["threadguard: left behind after *s: 1 child process(es)",
                                 "Child processes still running:",
                                 "  pid * *python* -c import time; time.sleep(60)"])
    kill_leftover(inner)


def test_child_processes_are_not_checked_without_procs(inner):
    inner.pytester.makepyfile(test_children=CHILDREN)
    result = inner.run(*FAST)
    result.assert_outcomes(passed=3)
    kill_leftover(inner)


def kill_leftover(inner) -> None:
    """The inner run's process left running on purpose."""
    os.kill(int((inner.pytester.path / "leftover.pid").read_text()), signal.SIGKILL)
