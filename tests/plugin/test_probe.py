"""ProcessProbe watches another process (and its children) for threads and fds it keeps."""
from __future__ import annotations

import subprocess
import sys
from typing import Iterator

import pytest

from kafkatail.testing.probe import ProcessProbe

# A process that starts and stops named threads, and opens files, when told on stdin.
WORKER = r'''
import subprocess
import sys
import threading

batches, files, child = [], [], None


def park(name, stop):
    with open("/proc/thread-self/comm", "w") as fh:
        fh.write(name[:15])
    stop.wait()


for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "spawn":
        stop = threading.Event()
        batches.append(stop)
        for i in range(int(args[0])):
            name = f"{args[1]}-{i}"
            threading.Thread(target=park, args=(name, stop), name=name).start()
    elif cmd == "stop":  # no join: the probe's grace period waits for them
        for stop in batches:
            stop.set()
        batches.clear()
    elif cmd == "open":
        files.append(open(__file__))
    elif cmd == "close":
        for fh in files:
            fh.close()
        files.clear()
    elif cmd == "fork":
        child = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        child.stdin.write("ping\n")
        child.stdin.flush()
        child.stdout.readline()  # the child has started up
    elif cmd == "child":
        child.stdin.write(" ".join(args) + "\n")
        child.stdin.flush()
        child.stdout.readline()
    print("ok", flush=True)  # also the answer to "ping"
for stop in batches:
    stop.set()
if child:
    child.stdin.close()
    child.wait()
'''


class Worker:
    def __init__(self, script: str) -> None:
        self.proc = subprocess.Popen([sys.executable, script], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.send("ping")  # started up: what it holds now is its baseline

    def send(self, command: str) -> None:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        assert self.proc.stdout.readline() == "ok\n"

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)
        self.proc.stdout.close()


@pytest.fixture
def worker(tmp_path) -> Iterator[Worker]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    w = Worker(str(script))
    yield w
    w.close()


def test_probe_catches_growth_reports_names_and_passes_after_stop(worker):
    probe = ProcessProbe(worker.pid)
    probe.baseline()
    worker.send("spawn 3 gw-worker")
    worker.send("spawn 1 kafka-io-7")
    worker.send("open")

    result = probe.settle(grace=0.2)
    assert not result.ok
    assert result.threads == result.baseline_threads + 4
    assert result.fds == result.baseline_fds + 1
    assert sorted(t.name for t in result.new_threads) == [
        "gw-worker-0", "gw-worker-1", "gw-worker-2", "kafka-io-7-0"]
    report = result.report()
    assert "ProcessProbe NOT settled" in report
    assert "  gw-worker x3" in report and "  kafka-io x1" in report
    assert f"pid {worker.pid} fd" in report and "worker.py" in report
    with pytest.raises(AssertionError, match="gw-worker x3"):
        probe.assert_settled(grace=0.05)

    worker.send("stop")
    worker.send("close")
    settled = probe.assert_settled(grace=5)
    assert settled.ok and settled.threads <= settled.baseline_threads
    assert settled.report().startswith("ProcessProbe settled")


def test_include_children_counts_the_process_tree(worker):
    worker.send("fork")
    tree = ProcessProbe(worker.pid, include_children=True)
    parent_only = ProcessProbe(worker.pid)
    tree.baseline()
    parent_only.baseline()
    worker.send("child spawn 2 uv-worker")

    result = tree.settle(grace=0.2)
    assert not result.ok
    child = [p for p in result.processes if p.pid != worker.pid]
    assert len(child) == 1 and child[0].threads == child[0].baseline_threads + 2
    assert {t.pid for t in result.new_threads} == {child[0].pid}
    assert f"pid {child[0].pid} " in result.report() and "uv-worker x2" in result.report()
    assert parent_only.settle(grace=0.05).ok  # without the children the growth is invisible

    worker.send("child stop")
    tree.assert_settled(grace=5)


def test_settle_before_baseline_is_an_error(worker):
    with pytest.raises(RuntimeError, match="before baseline"):
        ProcessProbe(worker.pid).settle()
