"""The in-process sampler and its renderers, and the non-blocking log queue, without a server."""
from __future__ import annotations

import io
import json
import logging
import select
import socket
import threading
import time
from collections import Counter

import pytest

from kafkatail.config import Config
from kafkatail.ops import logsetup
from kafkatail.ops.profiler import Busy, Profile, Profiler, thread_cpu_clock
from kafkatail.ops.threads import REGISTRY


def burn_cpu_here(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(range(1000))


@pytest.fixture
def hot_thread():
    stop = threading.Event()
    t = threading.Thread(target=burn_cpu_here, args=(stop,), name="kt-test-burner")
    REGISTRY.register(t, "consumer", owner="test")
    t.start()
    yield t
    stop.set()
    t.join(5)


def test_profile_names_the_hot_function_at_the_top_of_its_thread(hot_thread):
    prof = Profiler().run(0.5, 200)
    assert prof.samples >= 20
    mine = [(stack, n) for stack, n in prof.folded() if stack[1] == "kt-test-burner"]
    assert mine and all(stack[0] == "consumer" for stack, _ in mine)
    top = max(mine, key=lambda item: item[1])[0]
    assert top[-1].startswith("burn_cpu_here ("), top
    assert not any(s[1] == "kt-profiler" for s, _ in prof.folded()), "the sampler skips itself"
    assert not any(t.name == "kt-profiler" for t in threading.enumerate()), "it stopped itself"


def test_one_profile_at_a_time():
    profiler = Profiler()
    started = threading.Event()
    errors: list[Exception] = []

    def second(_: float) -> None:
        started.set()
        time.sleep(0.01)

    def other() -> None:
        started.wait(5)
        try:
            profiler.run(0.1, 10)
        except Busy as exc:
            errors.append(exc)

    t = threading.Thread(target=other, name="kt-test-second")
    t.start()
    profiler.run(0.3, 10, wait=second)
    t.join(5)
    assert len(errors) == 1 and profiler.profiles_taken == 1


@pytest.mark.parametrize("seconds,hz", [(0.05, 10), (61, 10), (1, 0), (1, 1001)])
def test_bounds(seconds, hz):
    with pytest.raises(ValueError):
        Profiler().run(seconds, hz)


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode"):
        Profiler().run(0.2, 10, mode="gpu")


def park_in_event_wait(stop: threading.Event) -> None:
    stop.wait()


def park_in_select(stop: threading.Event) -> None:
    a, b = socket.socketpair()
    with a, b:
        while not stop.is_set():
            select.select([a], [], [], 0.05)


def spin_for(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(200))


def burn_a_quarter(stop: threading.Event) -> None:
    """About 25% of a core: 30 ms of CPU, then 90 ms asleep."""
    while not stop.is_set():
        spin_for(0.03)
        stop.wait(0.09)


@pytest.fixture
def mixed_threads():
    """A hot thread, a quarter-busy one, and two idle ones parked in Event.wait and select."""
    stop = threading.Event()
    threads = {f.__name__: threading.Thread(target=f, args=(stop,), name=f"kt-test-{f.__name__}")
               for f in (burn_cpu_here, burn_a_quarter, park_in_event_wait, park_in_select)}
    for t in threads.values():
        t.start()
    yield threads
    stop.set()
    for t in threads.values():
        t.join(5)


def per_thread(prof: Profile) -> Counter:
    totals: Counter = Counter()
    for stack, n in prof.folded():
        totals[stack[1]] += n
    return totals


def test_cpu_mode_shows_the_hot_thread_and_not_the_parked_ones(mixed_threads):
    prof = Profiler().run(1.0, 100)
    assert prof.mode == "cpu" and prof.unclocked == 0
    totals = per_thread(prof)
    assert totals["kt-test-park_in_event_wait"] == 0, totals
    assert totals["kt-test-park_in_select"] <= 1, totals
    hot, quarter = totals["kt-test-burn_cpu_here"], totals["kt-test-burn_a_quarter"]
    assert hot >= 10 and sum(totals.values()) - hot - quarter <= 0.1 * hot, totals
    top = max(((s, n) for s, n in prof.folded() if s[1] == "kt-test-burn_cpu_here"),
              key=lambda item: item[1])[0]
    assert top[-1].startswith("burn_cpu_here ("), top


def test_wall_mode_still_counts_every_thread_every_tick(mixed_threads):
    prof = Profiler().run(0.5, 100, mode="wall")
    totals = per_thread(prof)
    for name in ("kt-test-park_in_event_wait", "kt-test-park_in_select", "kt-test-burn_cpu_here"):
        assert totals[name] == prof.samples, (name, totals)
    wait = [s for s, _ in prof.folded() if s[1] == "kt-test-park_in_event_wait"]
    assert wait and wait[0][-1].startswith("wait ("), wait


def test_cpu_counts_add_up_to_the_cpu_each_thread_used(mixed_threads):
    """A count is 1/hz s of CPU: the profile's total per thread matches the thread's own CPU clock
    over the same time (a sample-if-the-clock-moved rule over-counts short bursts several times)."""
    clocks = {name: thread_cpu_clock(t.native_id) for name, t in mixed_threads.items()}
    before = {name: time.clock_gettime_ns(c) for name, c in clocks.items()}
    prof = Profiler().run(2.0, 100)
    used = {name: (time.clock_gettime_ns(c) - before[name]) / 1e9 for name, c in clocks.items()}
    totals = per_thread(prof)
    for name in ("burn_cpu_here", "burn_a_quarter"):
        profiled = totals[f"kt-test-{name}"] / prof.hz
        # One tick of slack at each end, plus the CPU used between the clock reads and the profile.
        assert abs(profiled - used[name]) <= 0.1 * used[name] + 0.03, (name, profiled, used)
    assert used["burn_a_quarter"] > 0.1, used


def _profile() -> Profile:
    prof = Profile(1.0, 100, samples=7)
    code_a, code_b = burn_cpu_here.__code__, test_bounds.__code__
    prof.add("consumer", "kt-tail-t-1", [code_b, code_a], 5)
    prof.add("reaper", "kt-reaper", [code_b], 2)
    return prof


def test_folded_text_is_one_line_per_stack_with_role_and_thread_first():
    body, mimetype = _profile().render("folded")
    assert mimetype == "text/plain"
    lines = body.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("consumer;kt-tail-t-1;test_bounds (test_profiler.py:")
    assert ";burn_cpu_here (test_profiler.py:" in lines[0] and lines[0].endswith(" 5")
    assert lines[1].startswith("reaper;kt-reaper;") and lines[1].endswith(" 2")


def test_speedscope_document_follows_the_file_format():
    doc = json.loads(_profile().render("speedscope")[0])
    assert doc["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    names = [f["name"] for f in doc["shared"]["frames"]]
    assert names == ["test_bounds", "burn_cpu_here"]
    first = doc["profiles"][0]
    assert first["type"] == "sampled" and first["name"] == "consumer/kt-tail-t-1"
    assert first["samples"] == [[0, 1]] and first["weights"] == [5] and first["endValue"] == 5
    assert all(isinstance(f["line"], int) and f["file"] == "test_profiler.py"
               for f in doc["shared"]["frames"])


def test_svg_is_self_contained():
    body, mimetype = _profile().render("svg")
    assert mimetype == "image/svg+xml" and body.startswith("<svg")
    assert "http" not in body.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "burn_cpu_here" in body and "<title>" in body
    assert "kt-tail-t-*" in body and "kt-tail-t-1" not in body   # one flame per thread group


def test_threads_that_come_and_go_during_a_profile_are_charged_all_their_cpu():
    """Short-lived threads (idents reused as they go) are charged for their CPU from their start:
    a thread first seen after the first tick is new, so all of its CPU is owed."""
    stop = threading.Event()
    lifetimes: list[tuple[float, float]] = []

    def churn() -> None:
        while not stop.is_set():
            t = threading.Thread(target=spin_for, args=(0.02,), name="kt-test-short")
            began = time.monotonic()
            t.start()
            t.join()
            lifetimes.append((began, time.monotonic()))

    churner = threading.Thread(target=churn, name="kt-test-churn")
    churner.start()
    try:
        t0 = time.monotonic()
        prof = Profiler().run(1.5, 100)
        t1 = time.monotonic()
    finally:
        stop.set()
        churner.join(5)
    inside = sum(t0 < began and ended < t1 for began, ended in lifetimes)
    short = [(s, n) for s, n in prof.folded() if s[1] == "kt-test-short"]
    # Each ran 20 ms of CPU (2 ticks). What a thread runs after the last tick that sees it
    # (and its carried fraction) is lost with it: about 1 tick each. Charging nothing before
    # the first sighting, as for threads already running at the start, leaves ~0.5 each.
    assert sum(n for _, n in short) >= 0.8 * inside >= 8, (inside, short)
    assert any(s[-1].startswith("spin_for (") for s, _ in short), short


@pytest.fixture
def pipeline():
    sink = io.StringIO()
    yield logsetup.setup(Config(log_queue_size=20), stream=sink), sink
    logsetup.teardown()


def test_log_queue_drops_below_error_when_full_and_counts(pipeline):
    pipe, sink = pipeline
    pipe.stop()                      # nobody drains: the queue fills as behind a blocked sink
    log = logging.getLogger("kafkatail.test")
    for i in range(100):
        log.warning("w %d", i)
    assert pipe.handler.queue.qsize() == 18   # 2 of 20 reserved for ERROR
    log.error("kept")
    log.error("kept too")
    log.error("no room")
    assert pipe.dropped_total() == 83 and pipe.handler.dropped["ERROR"] == 1
    assert logsetup.dropped_total() == 83
    pipe.start()
    assert pipe.stop()
    out = sink.getvalue()
    assert "kept too" in out and "no room" not in out
    assert out.count("dropped 83 records") == 1, out[-500:]


def test_caller_lookup_only_with_debug(pipeline):
    assert logging._srcfile is None and not logging.logThreads
    logsetup.setup(Config(debug=True), stream=io.StringIO())
    assert logging._srcfile is not None and logging.logThreads


def test_listener_is_an_owned_named_thread(pipeline):
    listeners = [t for t in threading.enumerate() if t.name == logsetup.LISTENER_NAME]
    assert len(listeners) == 1 and REGISTRY.info(listeners[0]).role == "logging"

    def os_name() -> str:
        with open(f"/proc/self/task/{listeners[0].native_id}/comm") as fh:
            return fh.read().strip()

    deadline = time.monotonic() + 5
    while os_name() != logsetup.LISTENER_NAME[:15] and time.monotonic() < deadline:
        time.sleep(0.01)  # the thread names itself first thing; wait for that, with a deadline
    assert os_name() == logsetup.LISTENER_NAME[:15]
