"""``--profile``: a flame graph from the server's own sampler (``/debug/profile``) or py-spy."""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import tempfile
import urllib.error
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from ..ops import profiler
from .stacks import open_url, pyspy_exe
from .status import OK, UNKNOWN, Unknown

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
