"""The command line: options, the leak check's run, the summary line and ``main``."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any, NoReturn, Sequence

import psutil

from ..ops import profiler
from .flames import profile_main
from .report import Report, sample_window
from .stacks import load_given, stacks_for
from .status import OK, STATUS, UNKNOWN, Unknown

DESCRIPTION = ("leakcheck: is this live process leaking threads, or burning CPU in one? "
               "Ask /proc, not logs.")


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
    p = Parser(prog="leakcheck", description=DESCRIPTION,
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


def main(argv: list[str] | None = None) -> int:
    """Run leakcheck on ``argv`` (default: the command line's); returns the exit status, also
    for ``--help`` and bad arguments (printed as one UNKNOWN line), without raising SystemExit."""
    try:
        args = parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else UNKNOWN
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
