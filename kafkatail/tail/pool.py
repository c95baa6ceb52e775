"""ConsumerPool: the only owner of ConsumerThreads, from admission to join, and of viewers.

Modelled on CPython's ``concurrent.futures.thread``: the pool starts every thread it owns,
keeps a registry of them, stops and joins them on ``shutdown()``, and registers with
``threading._register_atexit`` so interpreter exit stops the threads before it joins them.
Nothing outside the pool starts, stops or joins a ConsumerThread, or writes ``viewer.thread``;
a thread holds no reference to the pool, and tells it what it needs through ``_Reports`` (a
weak reference): caught up, or idle past its linger. The reaper calls ``reap`` for tails
whose session died without releasing them.

Each socket gets a Viewer. Live viewers of the same topic and partitions share one feed
(reference-counted: the last viewer out leaves it to linger ``feed_linger_s``, then it stops);
historical viewers get a dedicated thread that hands them to the feed once caught up.
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
from ..schemas.decoding import Schemas
from . import frames
from .consumer import ConsumerThread, Dedicated, Reading, Shared
from .feed import Feed
from .masking import Masks
from .outbox import ByteBudget, Outbox
from .request import TailRequest
from .viewer import Viewer

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
    def __init__(self, config: Config, schemas: Schemas | None = None,
                 masks: Masks | None = None) -> None:
        self.config = config
        self.schemas = schemas
        self.masks = masks
        self._lock = threading.Lock()
        self._viewers: dict[int, Viewer] = {}
        self._threads: set[ConsumerThread] = set()
        self._feeds: dict[tuple, ConsumerThread] = {}
        self._per_client: Counter[str] = Counter()
        self._per_topic: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self._feed_ids = itertools.count(1)
        self._shutdown = False
        self.stuck: list[ConsumerThread] = []
        self.started_total = 0
        self.reaped_total = 0
        self.threads_started = 0
        self.threads_joined = 0
        self.handovers = 0
        # Totals of tails already released; live tails are added when read (see totals()).
        self._closed_totals = Counter()
        self._reports = _Reports(self)
        # What every viewer's outbox holds, in record bytes, against outbox_total_bytes.
        self.outbox_bytes = ByteBudget(config.outbox_total_bytes)
        _pools.add(self)

    def open(self, request: TailRequest, outbox: Outbox, client: str = "",
             owner: Any = None) -> Viewer:
        """Admit a tail within the limits and start serving it; raises Close when refused.

        ``owner`` (anything with ``name`` and ``is_alive()``; default the calling thread) must
        call ``release``; if it stops being alive first, the reaper releases the tail.
        """
        cfg = self.config
        with self._lock:
            if self._shutdown or _shutting_down:
                raise frames.Close(frames.GOING_AWAY, "server shutting down")
            if len(self._viewers) >= cfg.max_tails:
                raise frames.Close(frames.TRY_AGAIN, f"server at capacity ({cfg.max_tails} tails)")
            if self._per_client[client] >= cfg.max_tails_per_client:
                raise frames.Close(frames.TRY_AGAIN,
                                   f"too many tails from {client} ({cfg.max_tails_per_client})")
            if self._per_topic[request.topic] >= cfg.max_tails_per_topic:
                raise frames.Close(frames.TRY_AGAIN,
                                   f"too many tails on {request.topic} ({cfg.max_tails_per_topic})")
            viewer = Viewer(request, outbox, next(self._ids), client,
                            owner or threading.current_thread())
            if cfg.share_live_feeds and request.start.kind == "latest":
                self._join_feed(viewer)
            else:
                self._start(viewer, Dedicated(cfg))
            self._viewers[viewer.tail_id] = viewer
            self._per_client[client] += 1
            self._per_topic[request.topic] += 1
            self.started_total += 1
        return viewer

    def _start(self, viewer: Viewer, reading: Reading,
               start: dict[int, int] | None = None) -> None:
        """Under the lock: a thread for the viewer's topic and partitions, registered, started
        and owned by the pool from here on; the viewer is its first."""
        request = viewer.request
        feed = Feed(request.topic, request.partitions, self.config, viewer,
                    reading.replay_records(), start, self.schemas,
                    self.masks.for_topic(request.topic) if self.masks else None)
        thread_id = next(self._feed_ids) if reading.shared else viewer.tail_id
        thread = ConsumerThread(feed, reading, self.config, thread_id, self._reports)
        if reading.shared:
            REGISTRY.register(thread, "consumer", owner="pool", topic=thread.topic)
            self._feeds[thread.key] = thread
        else:
            REGISTRY.register(thread, "consumer", owner=viewer.owner.name, topic=thread.topic,
                              client=viewer.client, tail_id=viewer.tail_id)
        viewer.thread = thread
        self._threads.add(thread)
        self.threads_started += 1
        thread.start()

    def _join_feed(self, viewer: Viewer) -> None:
        """Under the lock: the feed for the viewer's topic and partitions takes it, or a new one
        starts at the viewer's cursor (latest if it has none)."""
        thread = self._feeds.get((viewer.request.topic, viewer.request.partitions))
        if thread is not None and thread.feed.adopt(viewer):
            viewer.thread = thread
        else:
            self._start(viewer, Shared(self.config), start=viewer.cursor)

    def _share(self, viewer: Viewer, thread: ConsumerThread) -> bool:
        """A caught-up dedicated thread's viewer moves to the feed, no gap, no duplicate.
        False (the thread keeps it) if the feed is too far ahead to replay."""
        with self._lock:
            if viewer.released or self._shutdown or viewer.paused:
                return False
            shared = self._feeds.get(thread.key)
            try:
                if shared is not None and not shared.feed.adopt(viewer):
                    if not shared.closed:
                        return False
                    shared = None
            except frames.Close:
                return False
            if shared is None:
                self._start(viewer, Shared(self.config), start=dict(viewer.cursor or {}))
            else:
                viewer.thread = shared
            thread.feed.remove(viewer)
            self.handovers += 1
            return True

    def _retire(self, thread: ConsumerThread) -> bool:
        """A feed lingered with no viewers: stop it unless one joined."""
        with self._lock:
            if not thread.feed.retire():
                return False
            thread.stop()
            if self._feeds.get(thread.key) is thread:
                del self._feeds[thread.key]
            return True

    def set_paused(self, viewer: Viewer, paused: bool) -> None:
        """Pause or resume a viewer; under the pool lock, so it cannot race a handover."""
        with self._lock:
            thread = viewer.thread
            if viewer.released or thread is None or thread.feed.set_paused(viewer, paused):
                return
            # Resumed behind its feed's replay window: it reads on its own until caught up.
            thread.feed.remove(viewer)
            viewer.paused = False
            viewer.caught_up = False
            self._start(viewer, Dedicated(self.config))

    def release(self, viewer: Viewer, timeout: float | None = None) -> bool:
        """Stop serving a viewer, and stop and join its thread if nobody else needs it.
        False if that thread did not end in time."""
        with self._lock:
            if self._viewers.pop(viewer.tail_id, None) is None:
                return True
            viewer.released = True
            self._closed_totals.update(_totals(viewer))
            self._per_client[viewer.client] -= 1
            self._per_topic[viewer.request.topic] -= 1
            if not self._per_client[viewer.client]:
                del self._per_client[viewer.client]
            if not self._per_topic[viewer.request.topic]:
                del self._per_topic[viewer.request.topic]
            thread = viewer.thread
            left = thread.feed.remove(viewer) if thread is not None else 0
            if thread is None or left or (thread.shared and self.config.feed_linger_s > 0
                                          and not thread.closed and not self._shutdown):
                thread = None
            else:
                thread.stop()  # first: the discard below wakes a thread waiting on this outbox
                if (thread.shared and thread.feed.retire()
                        and self._feeds.get(thread.key) is thread):
                    del self._feeds[thread.key]
            viewer.outbox.discard()
            self._collect()
        if thread is None:
            return True
        return self._join(thread, timeout)

    def _join(self, thread: ConsumerThread, timeout: float | None) -> bool:
        thread.stop()
        if timeout is None:
            timeout = self.config.poll_timeout_ms / 1000 + self.config.request_timeout_ms / 1000
        thread.join(timeout)
        with self._lock:
            if thread.is_alive():
                if thread not in self.stuck:
                    self.stuck.append(thread)
                log.warning("consumer thread %s did not stop within %.1fs", thread.name, timeout)
                return False
            if thread in self._threads:
                self._threads.discard(thread)
                self.threads_joined += 1
        return True

    def _collect(self) -> None:
        """Under the lock: forget threads that ended by themselves (handed over, retired,
        failed), and the feeds among them: a feed that could not start leaves nothing behind."""
        for t in [t for t in self._threads if t.started and not t.is_alive()]:
            t.join()
            self._threads.discard(t)
            self.threads_joined += 1
            if self._feeds.get(t.key) is t:
                del self._feeds[t.key]

    def reap(self, grace: float) -> list[tuple[Viewer, bool]]:
        """Release every tail whose owner (its session's thread) died without releasing it, and
        wake the session of any tail whose thread ended without closing it: the reaper calls this
        each round. Each reaped viewer, with whether its thread ended within ``grace``."""
        with self._lock:
            self._collect()
            tails = list(self._viewers.values())
        reaped = []
        for viewer in tails:
            if viewer.owner.is_alive():
                if not viewer.is_alive() and not viewer.stopping:
                    viewer.outbox.wake()  # its thread ended without closing it: the session ends it
                continue
            if viewer.released:
                continue  # its session released it, and ended, after the list was taken
            reaped.append((viewer, self.release(viewer, timeout=grace)))
            self.reaped_total += 1
        return reaped

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """Refuse new tails, ask every tail to close with 1001, and join the threads."""
        with self._lock:
            self._shutdown = True
            viewers = list(self._viewers.values())
            threads = list(self._threads)
        for v in viewers:
            v.outbox.close(frames.GOING_AWAY, "server shutting down")
        for t in threads:
            t.stop()
        if wait:
            deadline = time.monotonic() + (timeout if timeout is not None
                                           else self.config.shutdown_grace_s)
            for t in threads:
                t.join(max(0.0, deadline - time.monotonic()))
            with self._lock:
                self._collect()

    def totals(self) -> Counter:
        """Records, record bytes and drops delivered by every tail so far, closed or open."""
        with self._lock:
            out = Counter(self._closed_totals)
            for v in self._viewers.values():
                out.update(_totals(v))
        return out

    def tails(self) -> list[Viewer]:
        with self._lock:
            return list(self._viewers.values())

    def threads(self) -> list[ConsumerThread]:
        """Every live consumer thread the pool owns: feeds and dedicated."""
        with self._lock:
            self._collect()
            return list(self._threads)

    def feeds(self) -> dict[str, int]:
        """Viewers per shared feed, by topic (a topic may have one feed per partition set)."""
        with self._lock:
            out: Counter[str] = Counter()
            for thread in self._feeds.values():
                out[thread.topic] += len(thread.feed.viewers)
            return dict(out)

    def __len__(self) -> int:
        # No lock: /healthz must answer whatever holds the pool (len of a dict is atomic).
        return len(self._viewers)

    def per_topic(self) -> dict[str, int]:
        with self._lock:
            return dict(self._per_topic)


class _Reports:
    """What a ConsumerThread may tell the pool that owns it, through a weak reference (a thread
    never keeps its pool alive): caught up (hand the viewer to the shared feed) and idle past
    linger (retire). The pool decides; True means it took the step and the thread ends."""

    def __init__(self, pool: ConsumerPool) -> None:
        self._pool = weakref.ref(pool)

    def caught_up(self, thread: ConsumerThread, viewer: Viewer) -> bool:
        pool = self._pool()
        return pool is not None and pool._share(viewer, thread)

    def idle(self, thread: ConsumerThread) -> bool:
        pool = self._pool()
        return pool is None or pool._retire(thread)


def _totals(v: Viewer) -> dict[str, int]:
    box = v.outbox
    return {"records": v.sent, "bytes": v.sent_bytes, "dropped": box.dropped_total,
            "frames_direct": box.frames_direct, "frames_queued": box.frames_queued}
