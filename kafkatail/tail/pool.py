"""ConsumerPool: the only owner of ConsumerThreads, from admission to join.

Modelled on CPython's ``concurrent.futures.thread``: the pool starts every thread it owns,
keeps a registry of them, stops and joins them on ``shutdown()``, and registers with
``threading._register_atexit`` so interpreter exit stops the threads before it joins them.
Nothing outside the pool starts or joins a ConsumerThread.
"""
from __future__ import annotations

import itertools
import logging
import threading
import time
import weakref
from collections import Counter
from typing import Any

from ..config import Config
from ..ops.threads import REGISTRY
from . import frames
from .consumer import ConsumerThread
from .outbox import Outbox
from .request import TailRequest

log = logging.getLogger(__name__)

_pools: "weakref.WeakSet[ConsumerPool]" = weakref.WeakSet()
_shutting_down = False


def _python_exit() -> None:
    global _shutting_down
    _shutting_down = True
    for pool in list(_pools):
        pool.shutdown(wait=True)


threading._register_atexit(_python_exit)  # type: ignore[attr-defined]


class ConsumerPool:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._threads: dict[int, ConsumerThread] = {}
        self._per_client: Counter[str] = Counter()
        self._per_topic: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._shutdown = False
        self.stuck: list[ConsumerThread] = []
        self.started_total = 0
        self.joined_total = 0
        self.reaped_total = 0
        # Totals of tails already released; live tails are added when read (see totals()).
        self._closed_totals = Counter()
        _pools.add(self)

    def open(self, request: TailRequest, outbox: Outbox, client: str = "",
             owner: Any = None) -> ConsumerThread:
        """Admit a tail within the limits and start its thread; raises Close when refused.

        ``owner`` (anything with ``name`` and ``is_alive()``; default the calling thread) must
        call ``release``; if it stops being alive first, the reaper releases the tail.
        """
        cfg = self.config
        with self._lock:
            if self._shutdown or _shutting_down:
                raise frames.Close(frames.GOING_AWAY, "server shutting down")
            if len(self._threads) >= cfg.max_tails:
                raise frames.Close(frames.TRY_AGAIN, f"server at capacity ({cfg.max_tails} tails)")
            if self._per_client[client] >= cfg.max_tails_per_client:
                raise frames.Close(frames.TRY_AGAIN,
                                   f"too many tails from {client} ({cfg.max_tails_per_client})")
            if self._per_topic[request.topic] >= cfg.max_tails_per_topic:
                raise frames.Close(frames.TRY_AGAIN,
                                   f"too many tails on {request.topic} ({cfg.max_tails_per_topic})")
            thread = ConsumerThread(request, outbox, cfg, next(self._ids), client,
                                    owner or threading.current_thread())
            REGISTRY.register(thread, "consumer", owner=thread.owner.name, topic=request.topic,
                              client=client, tail_id=thread.tail_id)
            self._threads[thread.tail_id] = thread
            self._per_client[client] += 1
            self._per_topic[request.topic] += 1
            self.started_total += 1
        thread.start()
        return thread

    def release(self, thread: ConsumerThread, timeout: float | None = None) -> bool:
        """Stop a tail's thread, join it and forget it. False if it did not end in time."""
        thread.stop()
        if timeout is None:
            timeout = self.config.poll_timeout_ms / 1000 + self.config.request_timeout_ms / 1000
        thread.join(timeout)
        with self._lock:
            if self._threads.pop(thread.tail_id, None) is None:
                return not thread.is_alive()
            self._closed_totals.update(_totals(thread))
            self._per_client[thread.client] -= 1
            self._per_topic[thread.request.topic] -= 1
            if not self._per_client[thread.client]:
                del self._per_client[thread.client]
            if not self._per_topic[thread.request.topic]:
                del self._per_topic[thread.request.topic]
            if thread.is_alive():
                self.stuck.append(thread)
                log.warning("tail thread %s did not stop within %.1fs", thread.name, timeout)
                return False
            self.joined_total += 1
        return True

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new tails, ask every tail to close with 1001, and join the threads."""
        with self._lock:
            self._shutdown = True
            threads = list(self._threads.values())
        for t in threads:
            t.outbox.close(frames.GOING_AWAY, "server shutting down")
            t.stop()
        if wait:
            deadline = time.monotonic() + (timeout if timeout is not None
                                           else self.config.shutdown_grace_s)
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))

    def totals(self) -> Counter:
        """Records, record bytes and drops delivered by every tail so far, closed or open."""
        with self._lock:
            out = Counter(self._closed_totals)
            for t in self._threads.values():
                out.update(_totals(t))
        return out

    def tails(self) -> list[ConsumerThread]:
        with self._lock:
            return list(self._threads.values())

    def __len__(self) -> int:
        with self._lock:
            return len(self._threads)

    def per_topic(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_topic)


def _totals(t: ConsumerThread) -> dict[str, int]:
    return {"records": t.sent, "bytes": t.sent_bytes, "dropped": t.outbox.dropped_total}
