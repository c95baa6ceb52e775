"""scripts/leakcheck.py against live processes: the outage's leak, healthy kafkatail, a hot thread.

leakcheck runs as the operator runs it, a subprocess pointed at another pid; every target is a
real process on real sockets, and the Kafka clients talk to the session's real broker.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import urllib.request
import uuid
from pathlib import Path
from typing import Iterator

import psutil
import pytest

from kafkatail.broker import free_port, wait_for_port
from kafkatail.leakcheck import main
from kafkatail.security.tokens import hash_token

from helpers import WsClient

ROOT = Path(__file__).resolve().parents[2]
LEAKCHECK = [sys.executable, str(ROOT / "scripts" / "leakcheck.py")]
LEAKY_APP = Path(__file__).with_name("leaky_app.py")


def leakcheck(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(LEAKCHECK + list(args), capture_output=True, text=True, timeout=timeout)
    print(r.stdout, r.stderr, sep="")
    return r


def stop(proc: subprocess.Popen) -> None:
    """Kill a target and everything it started, then reap it."""
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        kids = []
    for p in [proc, *kids]:
        try:
            p.kill()
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    proc.wait(10)
    psutil.wait_procs(kids, timeout=5)
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def spawn() -> Iterator:
    """Start target processes; each is killed at the end of the test, whatever happened."""
    procs: list[subprocess.Popen] = []

    def start(argv: list[str], **kw) -> subprocess.Popen:
        procs.append(subprocess.Popen(argv, **kw))
        return procs[-1]

    yield start
    for p in procs:
        stop(p)


def test_leaky_app_is_critical_and_names_the_growing_group(cluster, spawn, tmp_path):
    topic = cluster.create_topic()
    port = free_port()
    with open(tmp_path / "leaky.log", "w") as log:
        app = spawn([sys.executable, str(LEAKY_APP), cluster.bootstrap, topic, str(port)],
                    stdout=log, stderr=subprocess.STDOUT)
    assert wait_for_port("127.0.0.1", port, 20), (tmp_path / "leaky.log").read_text()

    views = 0
    done = threading.Event()

    def page_views() -> None:
        # ~12 page views a second for as long as leakcheck samples (capped): steady growth.
        nonlocal views
        while not done.is_set() and views < 60:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
            views += 1
            done.wait(0.08)

    driver = threading.Thread(target=page_views, name="test-page-views", daemon=True)
    driver.start()
    try:
        r = leakcheck("--pid", str(app.pid), "--interval", "0.5", "--samples", "6",
                      "--url", f"http://127.0.0.1:{port}")
    finally:
        done.set()
        driver.join(10)
    assert 30 <= views <= 60
    assert r.returncode == 2, r.stdout
    status = r.stdout.strip().splitlines()[-1]
    assert status.startswith("LEAKCHECK CRITICAL - thread count growing ")
    # Both leaked threads of a page view, by their Python names, ids stripped.
    assert "kafka-io-leaky- +" in status and "Thread- (tail_forever) +" in status
    # The newest leaked thread's stack is shown, and it points at the loop that never ends.
    assert "leaky_app.py:29 in tail_forever" in r.stdout
    assert "keep the default OS name 'python'" in r.stdout
    assert "WARNING: fd count growing" in r.stdout


def test_healthy_kafkatail_with_open_tails_is_ok(cluster, spawn):
    topic = cluster.create_topic()
    port = free_port()
    kt = spawn([sys.executable, "-m", "kafkatail", "serve", "--bootstrap-servers",
                cluster.bootstrap, "--bind", f"127.0.0.1:{port}"],
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert wait_for_port("127.0.0.1", port, 30)
    clients = [WsClient(f"ws://127.0.0.1:{port}/ws/tail/{topic}") for _ in range(4)]
    try:
        for c in clients:
            c.status("live")
        r = leakcheck("--pid", str(kt.pid), "--children", "--interval", "0.5", "--samples", "4",
                      "-n", "100", "--url", f"http://127.0.0.1:{port}")
    finally:
        for c in clients:
            c.close()
    assert r.returncode == 0, r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("LEAKCHECK OK - 2 processes, ")
    # The worker's tails are visible by their OS names (gunicorn master + one worker).
    assert r.stdout.count("kafka-io-kt-") >= 1 and "kt-ws-" in r.stdout


BURNER = """
import sys, threading
def burn():
    print(threading.get_native_id(), flush=True)
    while True:
        pass
threading.Thread(target=burn, name="hot-loop", daemon=True).start()
sys.stdin.read()
"""


def test_hot_thread_is_named_first_with_its_snapshot_stack(spawn, tmp_path):
    proc = spawn([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 text=True)
    hot = int(proc.stdout.readline())
    # What the server's snapshot writer would write; leakcheck matches it by native_id == tid.
    snapshot = tmp_path / "threads.json"
    snapshot.write_text(json.dumps({"pid": proc.pid, "threads": [
        {"native_id": proc.pid, "name": "MainThread", "os_name": "python", "role": "server",
         "stack": ["<string>:8 in <module>"]},
        {"native_id": hot, "name": "hot-loop", "os_name": "python", "role": "unknown",
         "stack": ["threading.py:1002 in _bootstrap", "<string>:5 in burn"]},
    ]}))
    # 50 rather than the default 80: the burner holds one core only if the box is not busy.
    r = leakcheck("--pid", str(proc.pid), "--interval", "0.4", "--samples", "4",
                  "--snapshot", str(snapshot), "--max-thread-cpu", "50")
    assert r.returncode == 2, r.stdout
    lines = r.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["TID", "NID"])
    first = lines[header + 1].split()
    assert first[:2] == [str(hot), hex(hot)] and first[-2:] == ["hot-loop", "[unknown]"]
    assert f"stacks: snapshot {snapshot}" in r.stdout
    finding = next(i for i, line in enumerate(lines) if f"CRITICAL: hot thread {hot} " in line)
    assert lines[finding + 1].strip() == f"stack of {hot} ({hex(hot)}) hot-loop:"
    assert lines[finding + 3].strip() == "<string>:5 in burn"
    assert lines[-1].startswith(f"LEAKCHECK CRITICAL - hot thread {hot} ({hex(hot)}) hot-loop at ")


def test_unknown_pid_and_bad_arguments_exit_3_in_one_line():
    with open("/proc/sys/kernel/pid_max") as fh:
        no_such = fh.read().strip()  # pids stay below pid_max: this one never exists
    for args in (["--pid", no_such], ["--pid", no_such, "--json"], [], ["--pid", "abc"],
                 ["--pid", "1", "--samples", "1"], ["--pid", "1", "--interval", "0"],
                 ["--pid", "1", "--bogus"], ["--pid", "1", "--snapshot", "x", "--url", "y"],
                 ["--profile", "1"], ["--profile", "61", "--url", "y"],
                 ["--profile", "1", "--url", "y", "--mode", "gpu"]):
        r = leakcheck(*args)
        assert r.returncode == 3, (args, r.stdout, r.stderr)
        assert r.stderr == "" and len(r.stdout.splitlines()) == 1, (args, r.stdout, r.stderr)
        if "--json" in args:
            assert json.loads(r.stdout) == {"status": "UNKNOWN", "exit": 3, "processes": [],
                                            "notes": [], "summary": f"no such process: {no_such}"}
        elif args[:2] == ["--pid", no_such]:
            assert r.stdout == f"LEAKCHECK UNKNOWN - no such process: {no_such}\n"
        else:
            assert r.stdout.startswith("LEAKCHECK UNKNOWN - bad arguments: "), args


def test_the_script_is_a_thin_entry_to_the_package_main(capsys):
    """scripts/leakcheck.py only runs kafkatail.leakcheck.main, which returns its status (for
    ``kafkatail leakcheck``) instead of exiting, usage errors and --help included."""
    script = LEAKCHECK[1]
    text = Path(script).read_text()
    assert len(text.splitlines()) < 60 and "sys.path" not in text
    assert main(["--pid", "abc"]) == 3
    assert capsys.readouterr().out.startswith("LEAKCHECK UNKNOWN - bad arguments: ")
    assert main(["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: leakcheck ")


PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]])
sys.stdin.read()
child.kill()
"""
CHILD = """
import threading
stop = threading.Event()
for i in range(4):
    threading.Thread(target=stop.wait, name=f"idle-{i}").start()
print("ready", flush=True)
"""


def test_json_with_children_reports_the_child(spawn):
    parent = spawn([sys.executable, "-c", PARENT, CHILD], stdin=subprocess.PIPE,
                   stdout=subprocess.PIPE, text=True)
    assert parent.stdout.readline() == "ready\n"
    child = psutil.Process(parent.pid).children()[0].pid
    r = leakcheck("--pid", str(parent.pid), "--children", "--json", "--interval", "0.2",
                  "--samples", "3")
    assert r.returncode == 0, r.stdout
    doc = json.loads(r.stdout)
    assert doc["status"] == "OK" and doc["exit"] == 0 and doc["summary"]
    procs = {p["pid"]: p for p in doc["processes"]}
    assert list(procs) == [parent.pid, child]
    kid = procs[child]
    assert kid["samples"]["count"] == 3 and kid["samples"]["threads"] == [5, 5, 5]
    assert len(kid["samples"]["fds"]) == 3 and kid["samples"]["window_s"] > 0
    assert kid["status"] == "OK" and kid["findings"] == []
    # py-spy (dev extra) gives stacks where it may attach; else leakcheck says why there are none.
    assert kid["stacks"].startswith(("none (", f"py-spy dump --pid {child}")), kid["stacks"]
    row = kid["top"][0]
    assert set(row) == {"tid", "nid", "comm", "name", "role", "state", "cpu_pct", "cpu_s", "stack"}
    assert {t["tid"] for t in kid["top"]} == {int(t) for t in os.listdir(f"/proc/{child}/task")}


def test_profile_from_the_servers_own_sampler(server, hot_thread, tmp_path):
    """--profile --url: the in-process on-CPU sampler names the hot function, and --out writes the
    three files a person opens (svg in a browser, speedscope.json in speedscope.app)."""
    r = leakcheck("--profile", "1", "--url", server.url(""), "--out", str(tmp_path / "hot"),
                  "-n", "5")
    assert r.returncode == 0, r.stdout
    lines = r.stdout.splitlines()
    assert lines[0].startswith(f"profile: GET {server.url('/debug/profile?seconds=1&hz=100')}")
    first = lines[lines.index("  hottest functions (self):") + 1].split()
    assert float(first[0].rstrip("%")) >= 80 and first[2] == "spin", r.stdout
    assert lines[-1].startswith("LEAKCHECK OK - profile of ") and " hottest spin (" in lines[-1]
    stacks = (tmp_path / "hot.folded").read_text().splitlines()
    assert stacks and all(line.rsplit(" ", 1)[1].isdigit() for line in stacks)
    assert any(";kt-test-hot;" in line and ";spin (conftest.py:" in line for line in stacks)
    assert (tmp_path / "hot.svg").read_text().startswith("<svg")
    doc = json.loads((tmp_path / "hot.speedscope.json").read_text())
    assert doc["profiles"][0]["name"].endswith("/kt-test-hot"), doc["profiles"][0]["name"]


def _pyspy_may_attach(spawn) -> bool:
    probe = spawn([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=os.path.dirname(sys.executable))
    assert exe, "py-spy is in the dev extra"
    return subprocess.run([exe, "dump", "--pid", str(probe.pid)], capture_output=True,
                          timeout=30).returncode == 0


def test_profile_falls_back_to_pyspy_when_the_url_does_not_answer(spawn):
    if not _pyspy_may_attach(spawn):
        pytest.skip("this machine denies ptrace; the denial message has its own test")
    proc = spawn([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 text=True)
    hot = int(proc.stdout.readline())
    dead = f"http://127.0.0.1:{free_port()}"
    r = leakcheck("--profile", "1", "--url", dead, "--pid", str(proc.pid))
    assert r.returncode == 0, r.stdout
    assert r.stdout.startswith(f"profile: py-spy record --pid {proc.pid}\n")
    assert f"note: GET {dead}/debug/profile?" in r.stdout and "Connection refused" in r.stdout
    assert f"[pid {proc.pid} thread ({hot}): hot-loop] burn (<string>:5)" in r.stdout
    assert r.stdout.splitlines()[-1].startswith("LEAKCHECK OK - profile of ")


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None,
                    reason="dropping CAP_SYS_PTRACE from the bounding set needs root and setpriv")
def test_profile_says_why_when_pyspy_may_not_attach(spawn):
    """Without CAP_SYS_PTRACE (most containers), py-spy cannot attach: one clear line, exit 3."""
    proc = spawn([sys.executable, "-c", BURNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                 text=True)
    proc.stdout.readline()
    r = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--inh-caps=-sys_ptrace",
                        *LEAKCHECK, "--profile", "1", "--pid", str(proc.pid)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and r.stderr == "", (r.stdout, r.stderr)
    assert len(r.stdout.splitlines()) == 1, r.stdout
    assert r.stdout.startswith(f"LEAKCHECK UNKNOWN - no profile: py-spy may not attach to pid "
                               f"{proc.pid} (")
    assert "Permission denied" in r.stdout and "CAP_SYS_PTRACE" in r.stdout
    assert "use --url BASE" in r.stdout


def test_profile_of_a_locked_server_needs_the_admin_token(make_server_, hot_thread, monkeypatch):
    admin = "admin-" + uuid.uuid4().hex
    server = make_server_(tokens={"ops": {"sha256": hash_token(admin), "topics": ["**"],
                                          "admin": True}}, debug_access="admin")
    monkeypatch.delenv("KAFKATAIL_TOKEN", raising=False)
    r = leakcheck("--profile", "0.5", "--url", server.url(""))
    assert r.returncode == 3 and "answered 403" in r.stdout, r.stdout  # anonymous, not admin
    monkeypatch.setenv("KAFKATAIL_TOKEN", admin)
    r = leakcheck("--profile", "0.5", "--url", server.url(""))
    assert r.returncode == 0 and " hottest spin (" in r.stdout.splitlines()[-1], r.stdout
