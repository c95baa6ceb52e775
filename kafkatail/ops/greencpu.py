"""Per-greenlet CPU under the gevent worker, where the OS sees one thread for every tail.

A greenlet switch tracer reads the OS thread's CPU clock (``time.thread_time``, one
``clock_gettime``) at every switch and charges the time since the previous switch to the
greenlet being switched away from. Under monkey-patching a "thread" is a greenlet and its
``ident`` is ``id(greenlet)``, so the totals line up with ``threading.enumerate()``. Exact to the
switch: time spent in the hub (the event loop itself) is charged to the hub.
"""
from __future__ import annotations

import sys
import threading
import time
from typing import Any, Callable

import greenlet


class GreenletCPU:
    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.greenlets: dict[int, greenlet.greenlet] = {}
        self._last = time.thread_time()
        self._previous: Callable[[str, Any], Any] | None = None

    def install(self) -> "GreenletCPU":
        """Chain in front of any tracer already installed (gevent's monitor uses one)."""
        self._previous = greenlet.settrace(self._trace)
        return self

    def _trace(self, event: str, args: Any) -> None:
        if event in ("switch", "throw"):
            now = time.thread_time()
            origin = args[0]
            key = id(origin)
            self.cpu[key] = self.cpu.get(key, 0.0) + now - self._last
            self.greenlets[key] = origin
            self._last = now
        if self._previous is not None:
            self._previous(event, args)

    def totals(self) -> dict[int, float]:
        """CPU seconds per live thread ident; entries of finished greenlets are dropped."""
        live = {t.ident for t in threading.enumerate()}
        for key in [k for k in self.cpu if k not in live]:
            del self.cpu[key]
            self.greenlets.pop(key, None)
        return dict(self.cpu)

    def frame(self, ident: int) -> Any:
        """The current frame of the greenlet behind a thread ident (None if unknown)."""
        g = self.greenlets.get(ident)
        if g is greenlet.getcurrent():
            return sys._getframe(1)
        return getattr(g, "gr_frame", None)


def percentages(before: dict[int, float], after: dict[int, float],
                seconds: float) -> dict[int, tuple[float, float]]:
    """ident -> (total CPU s, % of a core over the interval) from two ``totals()``."""
    return {k: (v, 100.0 * (v - before.get(k, 0.0)) / seconds if seconds > 0 else 0.0)
            for k, v in after.items()}


_installed: GreenletCPU | None = None


def install() -> GreenletCPU:
    """The process's one accountant, installed on first use (call it in the worker)."""
    global _installed
    if _installed is None:
        _installed = GreenletCPU().install()
    return _installed


def installed() -> GreenletCPU | None:
    return _installed
