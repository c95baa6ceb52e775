"""Logging that never blocks a tail: records go through a bounded queue to one named listener.

A slow or blocked log sink (a full stderr pipe) must cost a tail thread nothing: callers only
append to an in-memory queue. When the queue is full, DEBUG/INFO/WARNING records are dropped and
counted; ERROR and above keep a reserved share of the queue. The listener (an OS thread, also
under gevent) writes the records, says once how many were dropped, and flushes at ``stop``.
"""
from __future__ import annotations

import _queue
import logging
import logging.config
import logging.handlers
import os
import sys
from collections import Counter
from typing import Any, TextIO

from ..config import Config, ConfigError, read_toml
from .profiler import OSThread

LISTENER_NAME = "kt-log-listener"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DEBUG_FORMAT = ("%(asctime)s %(levelname)s %(threadName)s %(name)s "
                "%(filename)s:%(lineno)d %(funcName)s: %(message)s")


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Puts records on a queue that never blocks; drops (and counts) what does not fit.

    ``reserve`` slots at the end of the queue are kept for ERROR and above. The check comes
    before the record is formatted, so a dropped record costs a ``qsize()`` and a count.
    """

    def __init__(self, queue: Any, capacity: int, reserve: int) -> None:
        super().__init__(queue)
        self.capacity = capacity
        self.reserve = min(reserve, capacity - 1)
        self.dropped: Counter[str] = Counter()  # level name -> records dropped; under self.lock

    def emit(self, record: logging.LogRecord) -> None:
        size = self.queue.qsize()
        room = self.capacity if record.levelno >= logging.ERROR else self.capacity - self.reserve
        if size >= room:
            self.dropped[record.levelname] += 1
            return
        super().emit(record)

    def dropped_total(self) -> int:
        return sum(self.dropped.values())


class OwnedQueueListener(logging.handlers.QueueListener):
    """A QueueListener whose thread is named, owned (role "logging"), an OS thread under gevent,
    and that reports drops in one line each time the queue drains after some."""

    def __init__(self, queue: Any, source: DroppingQueueHandler,
                 *handlers: logging.Handler) -> None:
        super().__init__(queue, *handlers, respect_handler_level=True)
        self.source = source
        self._reported = 0
        self._worker: OSThread | None = None

    def forget_parent(self, queue: Any) -> None:
        """After a fork: the parent's thread is not ours, nor its queue."""
        self.queue = queue
        self._reported = 0
        self._worker = None

    def start(self) -> None:
        self._worker = OSThread(LISTENER_NAME, self._monitor, role="logging", owner="logsetup")
        self._worker.start()

    def stop(self, timeout: float = 5.0) -> bool:
        """Flush what is queued, then end the thread; False if the sink stayed blocked."""
        if self._worker is None:
            return True
        self.enqueue_sentinel()
        done = self._worker.join(timeout)
        self._worker = None
        return done

    def dequeue(self, block: bool) -> Any:
        record = super().dequeue(block)
        if record is self._sentinel:
            self._report_drops()  # the final flush: say what was lost before the end
        return record

    def handle(self, record: logging.LogRecord) -> None:
        super().handle(record)
        if self.queue.qsize() == 0:
            self._report_drops()

    def _report_drops(self) -> None:
        dropped = self.source.dropped_total()
        if dropped > self._reported:
            levels = ", ".join(f"{n} {lvl}" for lvl, n in sorted(self.source.dropped.items()))
            self._reported = dropped
            super().handle(logging.LogRecord(
                __name__, logging.WARNING, __file__, 0,
                "log sink too slow: dropped %d records so far (%s)", (dropped, levels), None))


class LogPipeline:
    """The installed handler and its listener; ``start`` again after a fork (gunicorn workers)."""

    def __init__(self, handler: DroppingQueueHandler, listener: OwnedQueueListener) -> None:
        self.handler = handler
        self.listener = listener

    def start(self) -> None:
        self.listener.start()

    def forget_parent(self) -> None:
        """In a forked child: a fresh queue and counts. Records queued before the fork are the
        parent's to write (else each would print twice); the child's listener is not running
        until ``start``."""
        self.handler.queue = _queue.SimpleQueue()
        self.handler.dropped = Counter()
        self.listener.forget_parent(self.handler.queue)

    def stop(self, timeout: float = 5.0) -> bool:
        return self.listener.stop(timeout)

    def dropped_total(self) -> int:
        return self.handler.dropped_total()

    def route(self, logger: logging.Logger) -> None:
        """Send a logger that does not propagate (gunicorn's) through the queue too."""
        for h in list(logger.handlers):
            logger.removeHandler(h)
        logger.addHandler(self.handler)


_current: LogPipeline | None = None
_SRCFILE = logging._srcfile  # type: ignore[attr-defined]


def _configured_sinks(path: str) -> list[logging.Handler]:
    """Apply the ``log_config`` file (dictConfig's schema in TOML) and take its root handlers
    away from the root logger: they become the listener's sinks, behind the queue."""
    where = f"log_config {path}"
    spec = read_toml(path, where)
    spec.setdefault("version", 1)
    spec.setdefault("disable_existing_loggers", False)
    root = spec.get("root", {})
    if not root.get("handlers"):
        raise ConfigError(f"{where}: [root] handlers names no sink")
    if "level" in root:
        raise ConfigError(f"{where}: the root level is log_level; set that instead")
    for name, section in spec.get("loggers", {}).items():
        if section.get("handlers"):
            raise ConfigError(f"{where}: loggers.{name}: handlers go on [root] only (every record "
                              f"passes one queue); give this logger a level, the handler a filter")
    try:
        logging.config.dictConfig(spec)
    except (ValueError, TypeError, AttributeError, ImportError) as exc:
        raise ConfigError(f"{where}: {exc}") from None
    root_logger = logging.getLogger()
    sinks = list(root_logger.handlers)
    for h in sinks:
        root_logger.removeHandler(h)
    return sinks


def _formats(sinks: list[logging.Handler]) -> str:
    return " ".join(getattr(h.formatter, "_fmt", None) or "" for h in sinks)


def setup(config: Config, stream: TextIO | None = None) -> LogPipeline:
    """Route the root logger through a bounded queue to its sinks and start the listener. The
    sinks are ``log_config``'s root handlers, or one handler on ``stream`` (stderr).

    Caller lookup (file, line, function) is a frame walk on every call: on only with ``debug``
    or a format that prints it. Thread and process fields are not gathered unless a format
    prints them. Raises ConfigError for a ``log_config`` file that cannot be used.
    """
    global _current
    teardown()
    debug = config.debug
    if config.log_config:
        sinks = _configured_sinks(config.log_config)
    else:
        sink = logging.StreamHandler(stream if stream is not None else sys.stderr)
        sink.setFormatter(logging.Formatter(DEBUG_FORMAT if debug else FORMAT))
        sinks = [sink]
    formats = _formats(sinks)
    caller = debug or any(f in formats for f in ("filename", "lineno", "funcName", "pathname",
                                                 "module"))
    logging._srcfile = _SRCFILE if caller else None  # type: ignore[attr-defined]
    logging.logThreads = "thread" in formats
    logging.logProcesses = "process" in formats
    logging.logMultiprocessing = "processName" in formats
    capacity = config.log_queue_size
    handler = DroppingQueueHandler(_queue.SimpleQueue(), capacity, max(1, capacity // 10))
    listener = OwnedQueueListener(handler.queue, handler, *sinks)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(config.log_level)
    logging.captureWarnings(True)
    _current = LogPipeline(handler, listener)
    _current.start()
    return _current


def teardown(timeout: float = 5.0) -> bool:
    """Flush and stop the listener, detach the handler, restore logging's defaults; False if
    the sink stayed blocked past ``timeout``."""
    global _current
    if _current is None:
        return True
    pipeline, _current = _current, None
    done = pipeline.stop(timeout)
    logging.getLogger().removeHandler(pipeline.handler)
    if done:  # a sink still blocked holds its lock: leave it to the process's exit
        for sink in pipeline.listener.handlers:
            sink.close()
    logging.captureWarnings(False)
    logging._srcfile = _SRCFILE  # type: ignore[attr-defined]
    logging.logThreads = True
    logging.logProcesses = True
    logging.logMultiprocessing = True
    return done


# Sinks whose lock the forking thread holds; a blocked sink is waited for this long at most.
_held_at_fork: list[logging.Handler] = []
_FORK_WAIT_S = 1.0


def _before_fork() -> None:
    """Hold every sink's lock across a fork (gunicorn's master forking a worker), so the
    listener is not halfway through a write: the child would inherit that stream's buffer
    locked by a thread it does not have, and its own listener die on it ("reentrant call")."""
    if _current is not None:
        for sink in _current.listener.handlers:
            if sink.lock is not None and sink.lock.acquire(timeout=_FORK_WAIT_S):
                _held_at_fork.append(sink)


def _after_fork_in_parent() -> None:
    while _held_at_fork:
        _held_at_fork.pop().release()


def _after_fork_in_child() -> None:
    # logging gives every handler a fresh lock in the child (it registered its hook first).
    _held_at_fork.clear()
    if _current is not None:
        _current.forget_parent()


os.register_at_fork(before=_before_fork, after_in_parent=_after_fork_in_parent,
                    after_in_child=_after_fork_in_child)


def current() -> LogPipeline | None:
    """The pipeline ``setup`` installed in this process, if any."""
    return _current


def dropped_total() -> int:
    """Records dropped because the log queue was full (0 when ``setup`` was not used)."""
    return _current.dropped_total() if _current is not None else 0
