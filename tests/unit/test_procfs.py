"""ops.procfs (the one reader of /proc), the sampler's psutil figures, and the one grouping rule."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

from kafkatail.ops import procfs
from kafkatail.ops.sampling import ThreadSampler
from kafkatail.ops.threads import group_prefix, rename, set_os_thread_name, thread_group


@pytest.fixture
def parked():
    """A named thread that waits until the test ends."""
    stop = threading.Event()
    t = threading.Thread(target=stop.wait, name="kt-test-parked", daemon=True)
    t.start()
    yield t
    stop.set()
    t.join(5)


def test_tasks_names_and_stats_of_this_process(parked):
    assert {os.getpid(), parked.native_id} <= procfs.task_ids()
    assert procfs.task_exists(parked.native_id) and not procfs.task_exists(2**22 + 1)
    rename(parked, "kt-test-renamed")
    assert procfs.comm("self", parked.native_id) == "kt-test-renamed"
    assert procfs.comms(tids=[parked.native_id, 2**22 + 1]) == {parked.native_id: "kt-test-renamed"}
    stat = procfs.task_stat(os.getpid(), parked.native_id)
    assert stat.comm == "kt-test-renamed" and stat.state in "SR" and stat.start_ticks > 0
    assert procfs.task_stat("self", 2**22 + 1) is None and procfs.comm("self", 2**22 + 1) == "?"
    assert procfs.thread_cpu("self", threading.get_native_id()) > 0


def test_set_os_thread_name_names_the_calling_thread_in_15_bytes():
    seen = []

    def run() -> None:
        set_os_thread_name("kt-a-very-long-thread-name-17")
        seen.append(procfs.comm("self", threading.get_native_id()))

    t = threading.Thread(target=run)
    t.start()
    t.join(5)
    assert seen == ["kt-a-very~me-17"]   # head and unique tail, as ops.threads.native_name


def test_open_fds_leaves_out_the_listing_and_names_targets(tmp_path):
    before = procfs.open_fds()
    with open(tmp_path / "held", "w") as fh:
        now = procfs.open_fds()
        assert now - before == {fh.fileno()}
        assert procfs.fd_target("self", fh.fileno()) == str(tmp_path / "held")
    assert procfs.open_fds() == before
    assert procfs.fd_target("self", 10**6).startswith("<")


def test_gone_process_raises_on_listing():
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    with pytest.raises(FileNotFoundError):
        procfs.task_ids(proc.pid)
    with pytest.raises(ProcessLookupError):
        ThreadSampler(proc.pid).sample()


def test_sampler_cpu_per_thread_over_the_interval(parked):
    sampler = ThreadSampler()
    sampler.sample()
    end = time.thread_time() + 0.2
    while time.thread_time() < end:
        pass
    sample = sampler.sample()
    me = next(t for t in sample.threads.values() if t.tid == threading.get_native_id())
    idle = next(t for t in sample.threads.values() if t.tid == parked.native_id)
    # Its 0.2 s of CPU over the interval, however long a loaded machine made that interval,
    # less a 10 ms tick of /proc's resolution and then some: a delta read as 0.19 s came out
    # a float rounding under 100 * 0.19 / interval.
    assert me.cpu_pct >= 100 * 0.18 / sample.interval and me.cpu_s >= 0.18
    assert idle.cpu_pct < 5
    assert idle.comm == procfs.comm("self", parked.native_id) and idle.state == "S"
    assert sample.fds >= len(procfs.open_fds())   # psutil's count includes its own listing
    assert sample.rss > 0 and sample.cpu_s > 0 and sample.interval > 0


@pytest.mark.parametrize("name, group, shown, prefix", [
    ("kt-tail-t-17", "kt-tail-t-*", "kt-tail-t-", "kt-tail-t"),
    ("kafka-io-leaky-12", "kafka-io-leaky-*", "kafka-io-leaky-", "kafka-io-leaky"),
    ("Thread-7 (tail_forever)", "Thread-* (tail_forever)", "Thread- (tail_forever)",
     "Thread- (tail_forever)"),
    ("kafka-io-7-0", "kafka-io-*", "kafka-io-", "kafka-io"),
    ("gw-worker-0", "gw-worker-*", "gw-worker-", "gw-worker"),
    ("ThreadPoolExecutor-0_3", "ThreadPoolExecutor-*", "ThreadPoolExecutor-",
     "ThreadPoolExecutor"),
    ("kt-tail-events.v2-5", "kt-tail-events.v2-*", "kt-tail-events.v2-", "kt-tail-events.v2"),
    ("worker12", "worker*", "worker", "worker"),
    ("conn-7f3a9c", "conn-*", "conn-", "conn"),
    ("page-view-consumer", "page-view-consumer", "page-view-consumer", "page-view-consumer"),
    ("12", "12", "12", "12"),
])
def test_one_grouping_rule(name, group, shown, prefix):
    assert thread_group(name) == group
    assert thread_group(name, "") == shown
    assert group_prefix(name) == prefix
