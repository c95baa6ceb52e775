"""Python names and stacks for a process's threads, from the best source there is: the server's
snapshot (``--snapshot``) or ``/debug/threads`` (``--url``), else ``py-spy dump``, else none."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PYSPY_TIMEOUT_S = 10.0
URL_TIMEOUT_S = 5.0


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
