"""The one reader of ``/proc`` in kafkatail: tasks, their OS names and stat lines, fds (Linux).

Everything else in the package that wants to know about a process asks this module or psutil
(psutil has no per-thread names, states or start times, nor a way to rename another thread).
Functions take a pid (an int, or ``"self"`` for this process); a thread or fd that is gone by
the time it is read is reported as missing, not raised, since threads come and go between a
listing and a read. A listing of a process that is gone raises FileNotFoundError.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Union

Pid = Union[int, str]
"""A process id, or ``"self"``."""

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class TaskStat:
    """What a thread's ``stat`` line says, in the units kafkatail uses."""

    comm: str
    state: str
    cpu_s: float        # user + system, since the task started
    start_ticks: int    # start time in clock ticks since boot: (tid, start) is unique


def task_ids(pid: Pid = "self") -> frozenset[int]:
    """Native thread ids of a process (``/proc/PID/task``): every thread, Python-made or not.
    FileNotFoundError if the process is gone."""
    return frozenset(map(int, os.listdir(f"/proc/{pid}/task")))


def task_exists(tid: int, pid: Pid = "self") -> bool:
    """Is this thread of the process still there?"""
    return os.path.exists(f"/proc/{pid}/task/{tid}")


def open_fds(pid: Pid = "self") -> frozenset[int]:
    """Open fd numbers of a process; for ``self``, without the fd the listing itself used."""
    fds = sorted(map(int, os.listdir(f"/proc/{pid}/fd")))
    if pid == "self":
        # The listing used the lowest free fd and has closed it: the first one not open now.
        for fd in fds:
            try:
                os.fstat(fd)
            except OSError:
                fds.remove(fd)
                break
    return frozenset(fds)


def fd_target(pid: Pid, fd: int) -> str:
    """What an fd points at (a path, ``socket:[inode]``, ``pipe:[inode]``...)."""
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except OSError as exc:
        return f"<{exc.strerror}>"


def _read_comm(pid: Pid, tid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/task/{tid}/comm", encoding="utf-8", errors="replace") as fh:
            return fh.read().rstrip("\n")
    except OSError:
        return None


def comm(pid: Pid, tid: int) -> str:
    """A thread's OS name (15 bytes at most; the interpreter's name unless someone set it), or
    ``?`` if the thread is gone."""
    name = _read_comm(pid, tid)
    return "?" if name is None else name


def comms(pid: Pid = "self", tids: Iterable[int] | None = None) -> dict[int, str]:
    """The OS names of a process's threads (of ``tids``, or of all), tid -> name; threads that
    are gone are left out."""
    out = {}
    for tid in task_ids(pid) if tids is None else tids:
        name = _read_comm(pid, tid)
        if name is not None:
            out[tid] = name
    return out


def set_comm(tid: int, name: bytes) -> bool:
    """Set the OS name of a thread of this process (any thread, not only the caller: what
    ``prctl`` cannot do); False if it is gone or may not be renamed."""
    try:
        with open(f"/proc/self/task/{tid}/comm", "wb") as fh:
            fh.write(name)
        return True
    except OSError:
        return False


def task_stat(pid: Pid, tid: int) -> TaskStat | None:
    """A thread's ``/proc/PID/task/TID/stat``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    # comm is in parentheses and may itself contain spaces or ')'.
    lpar, rpar = raw.index(b"("), raw.rindex(b")")
    rest = raw[rpar + 2:].split()
    # Fields after comm, from 0: state (field 3), utime 14, stime 15, starttime 22.
    return TaskStat(raw[lpar + 1:rpar].decode("utf-8", "replace"), rest[0].decode(),
                    (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[19]))


def thread_cpu(pid: Pid, tid: int) -> float:
    """CPU seconds (user + system) a thread has used since it started; 0.0 if it is gone."""
    stat = task_stat(pid, tid)
    return stat.cpu_s if stat is not None else 0.0

