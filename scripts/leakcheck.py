#!/usr/bin/env python3
"""leakcheck: is this live process leaking threads, or burning CPU in one? Ask /proc, not logs.

kafkatail exists because a server started one Kafka consumer thread per page view and never
stopped it: thousands of identical threads, 90% CPU, and nothing in the logs. This is the tool
an operator points at such a process (kafkatail or any other Python process)::

    scripts/leakcheck.py --pid 4242 [--children] [--snapshot PATH | --url BASE] [--json]

It samples every thread of the process over a short window (``--samples`` x ``--interval``)
with kafkatail's ``ThreadSampler``, shows the busiest threads like ``top -H`` with CPU% over the
whole window, the thread and fd trend, and Python stacks for the threads it flags. Stacks come
from the best source available: a JSON snapshot the server wrote (``--snapshot``), the server's
``/debug/threads`` (``--url``; an admin token in ``$KAFKATAIL_TOKEN`` is sent as a header), else
``py-spy dump`` if installed and permitted, else none.

Findings and the exit status follow the monitoring-plugin convention (0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN), so the same command serves a human at a terminal and a Nagios check:

- thread count growing (monotonic over the window, by ``--min-growth`` or more): CRITICAL
- more threads than ``--max-threads``: CRITICAL
- a thread above ``--max-thread-cpu`` percent of a core: CRITICAL
- ``--max-group`` or more threads sharing one name once ids are stripped: WARNING
- more than ``--max-unnamed`` threads, and most of them, still carrying the process's own OS
  name: WARNING. A healthy kafkatail keeps one unnamed gunicorn gthread pool thread per open
  tail next to three named ones (``kt-ws-``, ``kt-tail-``, ``kafka-io-kt-``), so only a process
  where top -H cannot tell most threads apart is flagged; a leak of unnamed threads in a
  well-named process is still caught by the growth finding.
- fd count growing (monotonic, by ``--min-fd-growth`` or more): WARNING

It reads /proc once per process per sample and runs at most one ``py-spy`` per process, never
anything per thread, so it is safe against a process with thousands of threads.

``--profile SECONDS`` asks where the CPU goes instead::

    scripts/leakcheck.py --profile 10 --url http://host:8080 [--out hot] [--mode cpu|wall]
    scripts/leakcheck.py --profile 10 --pid 4242 [--children]          # py-spy, needs ptrace

It fetches an on-CPU flame graph from the server's ``/debug/profile`` (folded stacks, taken inside
the process, no privileges), prints the hottest functions and stacks, and with ``--out PREFIX``
writes ``PREFIX.folded``, ``PREFIX.svg`` and ``PREFIX.speedscope.json``. Without a URL, or when
it does not answer, it runs ``py-spy record`` on ``--pid`` if py-spy is installed and may attach
(ptrace); otherwise it says why in one line and exits 3.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, Sequence

import psutil

try:
    from kafkatail.ops import profiler
    from kafkatail.ops.sampling import ProcessSample, ThreadSample, ThreadSampler, sample_process
except ImportError:  # run from a checkout where kafkatail is not installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from kafkatail.ops import profiler
    from kafkatail.ops.sampling import ProcessSample, ThreadSample, ThreadSampler, sample_process

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATUS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")
STACK_LINES = 8          # innermost frames shown per stack in human output
PYSPY_TIMEOUT_S = 10.0
URL_TIMEOUT_S = 5.0

# A trailing id: digits (``-12``, ``-0_12``, ``-3.0.12``) or a hex id of 6+ characters, before an
# optional Python default-name suffix such as `` (target)`` in ``Thread-7 (target)``.
_ID_TAIL = re.compile(r"(?:\d+(?:[._:]\d+)*|(?<=[-_.:~])[0-9a-f]{6,})(?=(?: \([\w.<>]*\))?$)")


def group_of(name: str) -> str:
    """The name with its trailing id stripped: ``kafka-io-kt-12`` -> ``kafka-io-kt-``."""
    return _ID_TAIL.sub("", name, count=1) or name


class Unknown(Exception):
    """The check cannot say anything about the process: exit 3 with this one-line message."""


# -- stacks ---------------------------------------------------------------------------------
@dataclass
class PyThread:
    """What a stacks source knows of one thread, matched to /proc by native_id == tid."""

    name: str
    role: str
    stack: list[str]     # innermost last, one frame per line


@dataclass
class Stacks:
    source: str                                   # one line: where from, or why there are none
    threads: dict[int, PyThread] = field(default_factory=dict)


def parse_snapshot(doc: Any) -> tuple[int, dict[int, PyThread]]:
    """The ``{"pid": ..., "threads": [...]}`` document of --snapshot and /debug/threads."""
    if not isinstance(doc, dict) or not isinstance(doc.get("threads"), list):
        raise ValueError('expected {"pid": int, "threads": [...]}')
    threads = {}
    for t in doc["threads"]:
        threads[int(t["native_id"])] = PyThread(str(t.get("name") or ""), str(t.get("role") or ""),
                                                [str(line) for line in t.get("stack") or []])
    return int(doc["pid"]), threads


def load_given(args: argparse.Namespace) -> tuple[str, int, dict[int, PyThread]] | str:
    """The stacks document --snapshot or --url names: (label, pid, threads), or why not."""
    if args.snapshot:
        label = f"snapshot {args.snapshot}"
        try:
            with open(args.snapshot, encoding="utf-8") as fh:
                return (label, *parse_snapshot(json.load(fh)))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"{label} unreadable: {exc}"
    url = args.url.rstrip("/") + "/debug/threads"
    label = f"GET {url}"
    try:
        with open_url(url, URL_TIMEOUT_S) as resp:
            return (label, *parse_snapshot(json.load(resp)))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"{label} failed: {exc}"


def open_url(url: str, timeout: float) -> Any:
    """GET with the admin token from $KAFKATAIL_TOKEN, if set: /debug is admin-only by default."""
    req = urllib.request.Request(url)
    token = os.environ.get("KAFKATAIL_TOKEN")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    return urllib.request.urlopen(req, timeout=timeout)


def pyspy_exe() -> str | None:
    """py-spy on PATH, or next to this Python (a virtualenv's bin that is not on PATH)."""
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


def pyspy(pid: int) -> Stacks | str:
    """``py-spy dump --json`` of one process, or why it could not be had."""
    exe = pyspy_exe()
    if exe is None:
        return "py-spy not installed"
    try:
        run = subprocess.run([exe, "dump", "--pid", str(pid), "--json"], capture_output=True,
                             text=True, timeout=PYSPY_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"py-spy timed out after {PYSPY_TIMEOUT_S:.0f}s"
    if run.returncode != 0:
        first = (run.stderr.strip().splitlines() or [f"exit {run.returncode}"])[0]
        return f"py-spy failed: {first}"
    try:
        threads = {
            int(t["os_thread_id"]): PyThread(
                t.get("thread_name") or "", "",
                [f"{f['filename']}:{f['line']} in {f['name']}" for f in reversed(t["frames"])])
            for t in json.loads(run.stdout) if t.get("os_thread_id") is not None}
    except (ValueError, KeyError, TypeError) as exc:
        return f"py-spy output unreadable: {exc}"
    return Stacks(f"py-spy dump --pid {pid}", threads)


def stacks_for(pid: int, given: tuple[str, int, dict[int, PyThread]] | str | None) -> Stacks:
    """Best source first: the --snapshot/--url document if it is this pid's, else py-spy."""
    why: list[str] = []
    if isinstance(given, tuple):
        label, doc_pid, threads = given
        if doc_pid == pid:
            return Stacks(label, threads)
        why.append(f"{label} is for pid {doc_pid}")
    elif given is not None:
        why.append(given)
    spied = pyspy(pid)
    if isinstance(spied, Stacks):
        spied.source += "".join(f" ({w})" for w in why)
        return spied
    why.append(spied)
    return Stacks("none (" + "; ".join(why) + ")")


# -- sampling -------------------------------------------------------------------------------
@dataclass
class Watched:
    """One process under watch: its samples, and the sampler that yields window CPU%."""

    pid: int
    sampler: ThreadSampler
    samples: list[ProcessSample] = field(default_factory=list)
    gone: bool = False


def sample_window(pids: Sequence[int], samples: int, interval: float) -> list[Watched]:
    """``samples`` snapshots of every process, ``interval`` apart on a fixed schedule.

    Only the first and last go through the ThreadSampler, so the last carries each thread's
    CPU% over the whole window; the ones between only feed the thread and fd trend.
    """
    watched = [Watched(pid, ThreadSampler(pid)) for pid in pids]
    start = time.monotonic()
    for i in range(samples):
        time.sleep(max(0.0, start + i * interval - time.monotonic()))
        for w in watched:
            if w.gone:
                continue
            try:
                w.samples.append(w.sampler.sample() if i in (0, samples - 1)
                                 else sample_process(w.pid))
            except ProcessLookupError:
                w.gone = True
    return watched


# -- findings -------------------------------------------------------------------------------
@dataclass
class Finding:
    code: str
    severity: int                  # WARNING or CRITICAL
    message: str
    example: ThreadSample | None = None   # a thread the finding points at, for its stack
    also: tuple[ThreadSample, ...] = ()   # more threads whose stacks tell the same story


def growing(values: list[int], margin: int) -> bool:
    """Never falling from one sample to the next, and up by ``margin`` or more overall."""
    return (all(b >= a for a, b in zip(values, values[1:]))
            and values[-1] - values[0] >= margin)


class Report:
    """One process's window: trend, top threads, findings and status."""

    def __init__(self, w: Watched, stacks: Stacks, args: argparse.Namespace) -> None:
        self.pid = w.pid
        self.samples = w.samples
        self.last = w.samples[-1]
        self.stacks = stacks
        self.threads = [len(s.threads) for s in w.samples]
        self.fds = [s.fds for s in w.samples]
        main = next((t for t in self.last.threads.values() if t.tid == w.pid), None)
        self.comm = main.comm if main else "?"
        try:
            self.cmdline = " ".join(" ".join(psutil.Process(w.pid).cmdline()).split())
        except psutil.Error:
            self.cmdline = ""
        self.top = self.last.top(args.top)
        self.findings = self._find(args)
        self.status = max((f.severity for f in self.findings), default=OK)

    def name(self, t: ThreadSample) -> str:
        """The thread's best name: its Python name when a stacks source knows it, else its comm."""
        known = self.stacks.threads.get(t.tid)
        return known.name if known and known.name else t.comm

    def _find(self, args: argparse.Namespace) -> list[Finding]:
        out: list[Finding] = []
        first, last = self.samples[0], self.last
        unnamed = [t for t in last.threads.values() if t.comm == self.comm and t.tid != self.pid]
        groups: dict[str, list[ThreadSample]] = {}
        for t in last.threads.values():
            groups.setdefault(group_of(self.name(t)), []).append(t)

        if growing(self.threads, args.min_growth):
            grew = Counter({g: len(ts) for g, ts in groups.items()})
            grew.subtract(group_of(self.name(t)) for t in first.threads.values())
            top = [(g, n) for g, n in grew.most_common(2) if n > 0]
            out.append(Finding(
                "threads-growing", CRITICAL,
                f"thread count growing {self.threads[0]} -> {self.threads[-1]} ("
                + ", ".join(f"{g} +{n}" for g, n in top) + ")",
                # The newest of each group that grew: a leak often grows two at once (a loop
                # and its client's IO thread), and which grew by one more is chance.
                newest(groups[top[0][0]]) if top else None,
                tuple(newest(groups[g]) for g, _ in top[1:])))
        if len(last.threads) > args.max_threads:
            out.append(Finding("threads-over-max", CRITICAL,
                               f"{len(last.threads)} threads > --max-threads {args.max_threads}"))
        for t in last.top():
            if t.cpu_pct <= args.max_thread_cpu:
                break
            out.append(Finding("hot-thread", CRITICAL,
                               f"hot thread {t.tid} ({t.nid}) {self.name(t)} at {t.cpu_pct:.0f}% "
                               f"CPU > --max-thread-cpu {args.max_thread_cpu:g}", t))
        for g, ts in sorted(groups.items(), key=lambda kv: -len(kv[1])):
            # Threads known only by the default OS name are the unnamed finding's business.
            if len(ts) >= args.max_group and g != group_of(self.comm):
                out.append(Finding("big-group", WARNING,
                                   f"{g} x{len(ts)} threads share one name "
                                   f"(>= --max-group {args.max_group})", newest(ts)))
        if len(unnamed) > args.max_unnamed and 2 * len(unnamed) > len(last.threads):
            named = Counter(group_of(self.name(t)) for t in unnamed if self.name(t) != t.comm)
            also = ("; Python names " + ", ".join(f"{g} x{n}" for g, n in named.most_common(3))
                    if named else "")
            out.append(Finding("default-names", WARNING,
                               f"{len(unnamed)} of {len(last.threads)} threads keep the default "
                               f"OS name {self.comm!r} (> --max-unnamed {args.max_unnamed}): "
                               f"name them (prctl PR_SET_NAME) so top -H and ps -L can tell "
                               f"them apart{also}"))
        if min(self.fds) >= 0 and growing(self.fds, args.min_fd_growth):
            out.append(Finding("fds-growing", WARNING,
                               f"fd count growing {self.fds[0]} -> {self.fds[-1]}"))
        out.sort(key=lambda f: -f.severity)
        return out

    def thread_json(self, t: ThreadSample) -> dict[str, Any]:
        known = self.stacks.threads.get(t.tid)
        return {"tid": t.tid, "nid": t.nid, "comm": t.comm, "name": self.name(t),
                "role": known.role if known else "", "state": t.state,
                "cpu_pct": round(t.cpu_pct, 1), "cpu_s": round(t.cpu_s, 2),
                "stack": known.stack if known else []}

    def as_json(self) -> dict[str, Any]:
        return {
            "pid": self.pid, "comm": self.comm, "cmdline": self.cmdline,
            "status": STATUS[self.status], "exit": self.status,
            "samples": {"count": len(self.samples), "window_s": round(self.last.interval, 2),
                        "threads": self.threads, "fds": self.fds, "rss": self.last.rss,
                        "cpu_pct": round(self.last.cpu_pct, 1)},
            "stacks": self.stacks.source,
            "top": [self.thread_json(t) for t in self.top],
            "findings": [{"code": f.code, "severity": STATUS[f.severity].lower(),
                          "level": f.severity, "message": f.message,
                          "example": self.thread_json(f.example) if f.example else None,
                          "also": [self.thread_json(t) for t in f.also]}
                         for f in self.findings],
        }

    def as_text(self) -> list[str]:
        fds = " -> ".join(map(str, self.fds)) if min(self.fds) >= 0 else "n/a (no permission)"
        lines = [
            f"pid {self.pid} {self.comm}: {self.cmdline[:100]}",
            f"  {len(self.samples)} samples over {self.last.interval:.1f}s, "
            f"CPU {self.last.cpu_pct:.0f}%, RSS {self.last.rss / 2**20:.0f} MiB",
            f"  threads {' -> '.join(map(str, self.threads))}",
            f"  fds     {fds}",
            f"  {'TID':>8} {'NID':>9} S {'CPU%':>6} {'TIME+':>9}  {'COMM':<15} NAME",
        ]
        for t in self.top:
            known = self.stacks.threads.get(t.tid)
            extra = " ".join(filter(None, [known.name, f"[{known.role}]" if known.role else ""])
                             ) if known else ""
            lines.append(f"  {t.tid:>8} {t.nid:>9} {t.state} {t.cpu_pct:>6.1f} "
                         f"{cputime(t.cpu_s):>9}  {t.comm:<15} {extra}".rstrip())
        lines.append(f"  stacks: {self.stacks.source}")
        for f in self.findings:
            lines.append(f"  {STATUS[f.severity]}: {f.message}")
            for example in filter(None, (f.example, *f.also)):
                known = self.stacks.threads.get(example.tid)
                if known and known.stack:
                    lines.append(f"    stack of {example.tid} ({example.nid}) {known.name}:")
                    lines.extend(f"      {line}" for line in known.stack[-STACK_LINES:])
        return lines


def newest(threads: list[ThreadSample]) -> ThreadSample:
    return max(threads, key=lambda t: t.start_ticks)


def cputime(seconds: float) -> str:
    """``top``'s TIME+: minutes:seconds.hundredths."""
    return f"{int(seconds // 60)}:{seconds % 60:05.2f}"


# -- profile --------------------------------------------------------------------------------
PROFILE_GRACE_S = 30.0   # beyond the profile's own seconds: a queued request, py-spy's start
PROFILE_FRAMES = 4       # innermost frames shown per top stack
_DENIED = ("permission denied", "operation not permitted", "ptrace")


@dataclass
class Flame:
    """Folded stacks from one source, hottest first, and what one count means."""

    source: str
    unit: str
    stacks: profiler.Folded

    @property
    def total(self) -> int:
        return sum(n for _, n in self.stacks)

    def functions(self) -> list[tuple[str, int]]:
        """Self time per function: the leaf frame's counts, summed."""
        leaves: Counter = Counter()
        for stack, n in self.stacks:
            leaves[stack[-1]] += n
        return leaves.most_common()


def profile_from_url(base: str, seconds: float, hz: int, mode: str) -> Flame | str:
    """The server's own sampler: ``/debug/profile`` in folded format, or why not."""
    query = urllib.parse.urlencode({"seconds": f"{seconds:g}", "hz": hz, "mode": mode,
                                    "format": "folded"})
    url = f"{base.rstrip('/')}/debug/profile?{query}"
    try:
        with open_url(url, seconds + PROFILE_GRACE_S) as resp:
            text = resp.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        with exc:
            detail = exc.read(500).decode("utf-8", "replace").strip()
        return f"GET {url} answered {exc.code}: {detail or exc.reason}"
    except (OSError, ValueError) as exc:
        return f"GET {url} failed: {exc}"
    unit = (f"{1000 / hz:g} ms of CPU" if mode == "cpu"
            else f"one thread seen at one tick ({1000 / hz:g} ms)")
    return Flame(f"GET {url}", unit, profiler.parse_folded(text))


def profile_with_pyspy(pid: int, seconds: float, hz: int, mode: str,
                       children: bool) -> Flame | str:
    """``py-spy record`` of a process from outside (needs ptrace), or why it could not be had."""
    exe = pyspy_exe()
    if exe is None:
        return "py-spy not installed (pip install py-spy)"
    with tempfile.TemporaryDirectory(prefix="leakcheck-") as tmp:
        raw = Path(tmp) / "stacks.txt"
        argv = [exe, "record", "--pid", str(pid), "--duration", str(math.ceil(seconds)),
                "--rate", str(hz), "--format", "raw", "--output", str(raw), "--threads",
                "--nonblocking"] + (["--idle"] if mode == "wall" else []) + (
                    ["--subprocesses"] if children else [])
        try:
            run = subprocess.run(argv, capture_output=True, text=True,
                                 timeout=seconds + PROFILE_GRACE_S)
        except subprocess.TimeoutExpired:
            return f"py-spy record timed out after {seconds + PROFILE_GRACE_S:.0f}s"
        if run.returncode != 0 or not raw.exists():
            said = [line.strip() for line in (run.stderr + run.stdout).splitlines()]
            first = next((line for line in said if line.lower().startswith("error")),
                         next(filter(None, said), f"exit {run.returncode}"))
            denied = next((line for line in said if any(d in line.lower() for d in _DENIED)),
                          None)
            if denied:
                cause = first if denied == first else f"{first} {denied}"
                return (f"py-spy may not attach to pid {pid} ({cause}): it needs ptrace, "
                        f"i.e. the same user and CAP_SYS_PTRACE (docker run --cap-add "
                        f"SYS_PTRACE) or kernel.yama.ptrace_scope=0; use --url BASE to profile "
                        f"from inside the server instead")
            return f"py-spy record failed: {first}"
        # py-spy starts a stack with its thread (and, with --subprocesses, its process before
        # that): make it (process, thread, frames...) like the server's (role, thread, frames...).
        stacks = [(s if s[0].startswith("process ") else [f"pid {pid}", *s], n)
                  for s, n in profiler.parse_folded(raw.read_text(errors="replace"))]
    unit = f"one sample ({1000 / hz:g} ms) of a {'' if mode == 'wall' else 'non-idle '}thread"
    return Flame(f"py-spy record --pid {pid}", unit, stacks)


def take_profile(args: argparse.Namespace) -> tuple[Flame, list[str]]:
    """The server's sampler if --url answers, else py-spy on --pid; raises Unknown with every
    reason when neither gives a profile."""
    why: list[str] = []
    if args.url:
        flame = profile_from_url(args.url, args.profile, args.hz, args.mode)
        if isinstance(flame, Flame):
            return flame, why
        why.append(flame)
    if args.pid is None:
        why.append("no --pid for a py-spy fallback")
    else:
        flame = profile_with_pyspy(args.pid, args.profile, args.hz, args.mode, args.children)
        if isinstance(flame, Flame):
            return flame, why
        why.append(flame)
    raise Unknown("no profile: " + "; ".join(why))


def save_profile(flame: Flame, prefix: str) -> list[str]:
    """PREFIX.folded, PREFIX.svg and PREFIX.speedscope.json; returns their paths."""
    Path(prefix).parent.mkdir(parents=True, exist_ok=True)
    title = f"{flame.source}: {flame.total} counts, 1 = {flame.unit}"
    paths = []
    for fmt, ext in (("folded", "folded"), ("svg", "svg"), ("speedscope", "speedscope.json")):
        path = f"{prefix}.{ext}"
        Path(path).write_text(profiler.render(flame.stacks, fmt, title)[0], encoding="utf-8")
        paths.append(path)
    return paths


def profile_text(flame: Flame, top: int) -> list[str]:
    total = flame.total or 1
    lines = [f"profile: {flame.source}", f"  {flame.total} counts, 1 count = {flame.unit}",
             "  hottest functions (self):"]
    lines += [f"    {100 * n / total:5.1f}% {n:>6}  {label}"
              for label, n in flame.functions()[:top]]
    lines.append("  hottest stacks (innermost first):")
    for stack, n in flame.stacks[:top]:
        frames = " <- ".join(reversed(stack[2:][-PROFILE_FRAMES:]))
        more = " <- ..." if len(stack) - 2 > PROFILE_FRAMES else ""
        lines.append(f"    {100 * n / total:5.1f}% {n:>6}  [{' '.join(stack[:2])}] {frames}{more}")
    return lines


def profile_main(args: argparse.Namespace) -> int:
    try:
        flame, why = take_profile(args)
    except Unknown as exc:
        if args.json:
            print(json.dumps({"status": "UNKNOWN", "exit": UNKNOWN, "summary": str(exc)}))
        else:
            print(f"LEAKCHECK UNKNOWN - {exc}")
        return UNKNOWN
    written = save_profile(flame, args.out) if args.out else []
    hottest = flame.functions()[:1]
    line = (f"profile of {flame.total} counts, hottest {hottest[0][0]} "
            f"{100 * hottest[0][1] / flame.total:.0f}%" if hottest
            else "profile of 0 counts: nothing ran on the CPU (try --mode wall)")
    if args.json:
        print(json.dumps({
            "status": "OK", "exit": OK, "summary": line, "source": flame.source,
            "unit": flame.unit, "total": flame.total, "notes": why, "files": written,
            "functions": [{"frame": f, "count": n} for f, n in flame.functions()[:args.top]],
            "stacks": [{"stack": s, "count": n} for s, n in flame.stacks[:args.top]]}, indent=1))
        return OK
    print("\n".join(profile_text(flame, args.top)))
    for note in why:
        print(f"note: {note}")
    for path in written:
        print(f"wrote {path}")
    print(f"LEAKCHECK OK - {line}")
    return OK


# -- command line ---------------------------------------------------------------------------
class Parser(argparse.ArgumentParser):
    """argparse, but usage errors are UNKNOWN (exit 3) in one line, as monitoring expects."""

    def error(self, message: str) -> NoReturn:
        print(f"LEAKCHECK UNKNOWN - bad arguments: {message} (see --help)")
        sys.exit(UNKNOWN)


def number(kind: type, low: float, strict: bool = False):
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < low or (strict and value == low):
            raise argparse.ArgumentTypeError(
                f"{text} must be {'greater than' if strict else 'at least'} {low:g}")
        return value
    return parse


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = Parser(prog="leakcheck", description=__doc__.splitlines()[0],
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--pid", type=number(int, 1),
                   help="process to check (with --profile: to profile with py-spy)")
    p.add_argument("--children", action="store_true",
                   help="also check its child processes, recursively (gunicorn workers)")
    p.add_argument("--interval", type=number(float, 0, strict=True), default=1.0,
                   help="seconds between samples")
    p.add_argument("--samples", type=number(int, 2), default=5, help="samples to take")
    p.add_argument("-n", "--top", type=number(int, 1), default=10, help="threads to list")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--snapshot", metavar="PATH", help="thread snapshot JSON the server wrote")
    src.add_argument("--url", metavar="BASE",
                     help="server base URL serving /debug/threads (and /debug/profile)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--max-threads", type=number(int, 1), default=500,
                   help="CRITICAL above this many threads")
    p.add_argument("--max-thread-cpu", type=number(float, 0, strict=True), default=80.0,
                   help="CRITICAL for a thread above this CPU%% (of one core) over the window")
    p.add_argument("--max-group", type=number(int, 2), default=50,
                   help="WARNING for this many threads sharing one name prefix")
    p.add_argument("--max-unnamed", type=number(int, 0), default=10,
                   help="WARNING above this many threads (if also over half of them) with the "
                        "process's default OS name")
    p.add_argument("--min-growth", type=number(int, 1), default=3,
                   help="CRITICAL when the thread count grows monotonically by this many")
    p.add_argument("--min-fd-growth", type=number(int, 1), default=10,
                   help="WARNING when the fd count grows monotonically by this many")
    prof = p.add_argument_group("profile (instead of the leak check)")
    prof.add_argument("--profile", metavar="SECONDS", type=number(float, profiler.MIN_SECONDS),
                      help="take a flame graph over SECONDS from --url's /debug/profile, "
                           "else with py-spy on --pid")
    prof.add_argument("--hz", type=number(int, profiler.MIN_HZ), default=100,
                      help="samples a second")
    prof.add_argument("--mode", choices=profiler.MODES, default="cpu",
                      help="cpu: only threads using the CPU; wall: every thread")
    prof.add_argument("--out", metavar="PREFIX",
                      help="write PREFIX.folded, PREFIX.svg and PREFIX.speedscope.json")
    args = p.parse_args(argv)
    if args.profile is None and args.pid is None:
        p.error("--pid is required (or --profile SECONDS with --url)")
    if args.profile is not None:
        if args.pid is None and args.url is None:
            p.error("--profile needs --url BASE or --pid PID")
        if args.snapshot:
            p.error("--snapshot does not apply to --profile")
        if args.profile > profiler.MAX_SECONDS or args.hz > profiler.MAX_HZ:
            p.error(f"--profile is at most {profiler.MAX_SECONDS:g} s and --hz at most "
                    f"{profiler.MAX_HZ}")
    return args


def targets(pid: int, children: bool) -> list[int]:
    try:
        proc = psutil.Process(pid)
        kids = proc.children(recursive=True) if children else []
    except psutil.NoSuchProcess:
        raise Unknown(f"no such process: {pid}") from None
    except psutil.AccessDenied:
        raise Unknown(f"no permission to inspect process {pid}") from None
    return [pid] + [k.pid for k in kids]


def check(args: argparse.Namespace) -> tuple[int, list[Report], list[str]]:
    """Sample, fetch stacks, judge. Returns (status, reports, notes)."""
    pids = targets(args.pid, args.children)
    try:
        watched = sample_window(pids, args.samples, args.interval)
    except PermissionError as exc:
        raise Unknown(f"no permission to read /proc of process {args.pid}: {exc}") from None
    if not watched[0].samples:
        raise Unknown(f"no such process: {args.pid}")
    if watched[0].gone:
        raise Unknown(f"process {args.pid} exited during sampling")
    notes = [f"child {w.pid} exited during sampling" for w in watched[1:] if w.gone]
    given = load_given(args) if args.snapshot or args.url else None
    reports = [Report(w, stacks_for(w.pid, given), args) for w in watched if not w.gone]
    return max(r.status for r in reports), reports, notes


def summary(status: int, reports: list[Report]) -> str:
    if status == OK:
        n = sum(r.threads[-1] for r in reports)
        hot = max((t.cpu_pct for r in reports for t in r.top), default=0.0)
        procs = f"{len(reports)} processes, " if len(reports) > 1 else ""
        return f"{procs}{n} threads, busiest thread {hot:.0f}% CPU, no findings"
    many = len(reports) > 1
    return "; ".join((f"pid {r.pid}: " if many else "") + f.message
                     for r in reports for f in r.findings if f.severity == status)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        return profile_main(args)
    try:
        status, reports, notes = check(args)
    except Unknown as exc:
        if args.json:
            print(json.dumps({"status": "UNKNOWN", "exit": UNKNOWN, "summary": str(exc),
                              "processes": [], "notes": []}))
        else:
            print(f"LEAKCHECK UNKNOWN - {exc}")
        return UNKNOWN
    line = summary(status, reports)
    if args.json:
        print(json.dumps({"status": STATUS[status], "exit": status, "summary": line,
                          "processes": [r.as_json() for r in reports], "notes": notes}, indent=1))
    else:
        for r in reports:
            print("\n".join(r.as_text()))
        for note in notes:
            print(f"note: {note}")
        print(f"LEAKCHECK {STATUS[status]} - {line}")
    return status


if __name__ == "__main__":
    sys.exit(main())
