"""Give threads OS-visible names so ``top -H``, ``ps -L`` and leakcheck can tell them apart.

Linux keeps 15 bytes of a thread's name (``/proc/PID/task/TID/comm``); Python 3.11 never sets
it, so every Python thread would show the interpreter's name. ``set_native_name`` sets it for
the calling thread with ``prctl(PR_SET_NAME)``.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading

_PR_SET_NAME = 15
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None


def native_name(name: str) -> bytes:
    """The 15-byte OS name for a Python thread name: keep the head and the unique tail."""
    raw = name.encode("utf-8", "replace")
    if len(raw) <= 15:
        return raw
    return raw[:9] + b"~" + raw[-5:]


def set_native_name(name: str) -> None:
    """Set the calling thread's OS name (no-op off Linux)."""
    if _libc is not None:
        _libc.prctl(_PR_SET_NAME, ctypes.c_char_p(native_name(name)), 0, 0, 0)


def rename(thread: threading.Thread, name: str) -> None:
    """Name another, already running thread: its Python name and, through /proc, its OS name."""
    thread.name = name
    if thread.native_id is None:
        return
    try:
        with open(f"/proc/self/task/{thread.native_id}/comm", "wb") as fh:
            fh.write(native_name(name))
    except OSError:
        pass
