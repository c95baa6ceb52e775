"""The Guard used directly, without pytest hooks: baseline, settle, report, wrappers undone."""
from __future__ import annotations

import inspect
import threading

import _thread

from kafkatail.testing import threadguard
from kafkatail.testing.threadguard import Guard, wait_until


def test_guard_reports_a_running_thread_then_settles_once_it_stops(tmp_path):
    original_start, original_start_new = threading.Thread.start, _thread.start_new_thread
    guard = Guard(fds=True)
    guard.start()
    assert threading.Thread.start.__code__.co_filename == threadguard.__file__
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="api-worker")
    start_line = inspect.currentframe().f_lineno + 1
    worker.start()
    log = open(tmp_path / "held.log", "w")
    try:
        result = guard.settle(grace=0.05)
        assert not result.ok
        assert [t.name for t in result.comparison.threads] == ["api-worker"]
        report = result.report()
        assert f"started at {__file__}:{start_line} in test_guard_reports" in report
        assert "held.log" in report and "in wait" in report
    finally:
        stop.set()
        log.close()
    try:
        assert guard.settle(grace=5).ok
    finally:
        guard.stop()
    assert threading.Thread.start is original_start
    assert _thread.start_new_thread is original_start_new


def test_wait_until_returns_as_soon_as_clean():
    calls = []
    ok, seconds = wait_until(lambda: calls.append(1) or len(calls) == 3, grace=5)
    assert ok and len(calls) == 3 and seconds < 1
    assert wait_until(lambda: False, grace=0.01)[0] is False
