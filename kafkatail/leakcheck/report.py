"""One process's window: the samples, what they show (findings), and the report as text or JSON."""
from __future__ import annotations

import argparse
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

import psutil

from ..ops.sampling import ProcessSample, ThreadSample, ThreadSampler, sample_process
from ..ops.threads import thread_group
from .stacks import Stacks
from .status import CRITICAL, OK, STATUS, WARNING

STACK_LINES = 8          # innermost frames shown per stack in human output


def group_of(name: str) -> str:
    """A thread's group as leakcheck shows it, the id left out: ``kafka-io-kt-12`` ->
    ``kafka-io-kt-`` (``threads.thread_group``)."""
    return thread_group(name, "")


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
