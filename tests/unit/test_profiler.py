"""The in-process sampler and its renderers, and the non-blocking log queue, without a server."""
from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest

from kafkatail.config import Config
from kafkatail.ops import logsetup
from kafkatail.ops.profiler import Busy, Profile, Profiler
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


def _profile() -> Profile:
    prof = Profile(1.0, 100, samples=7)
    code_a, code_b = burn_cpu_here.__code__, test_bounds.__code__
    prof.add("consumer", "kt-tail-t-1", [code_b, code_a], 5)
    prof.add("reaper", "kt-reaper", [code_b], 2)
    return prof


def test_folded_text_is_one_line_per_stack_with_role_and_thread_first():
    lines = _profile().folded_text().splitlines()
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
