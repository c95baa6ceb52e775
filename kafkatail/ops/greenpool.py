"""gevent's hub threadpool with named OS threads.

Under the gevent worker every tail is a greenlet on one OS thread, except DNS: gevent's default
resolver runs ``getaddrinfo`` (kafka-python resolves a broker on every connect) on the hub's
threadpool, whose OS threads keep the interpreter's name and leave after 5 s idle
(``GEVENT_THREADPOOL_IDLE_TASK_TIMEOUT``). Named, they read as ``kt-gevent-pool`` in ``top -H``,
leakcheck and the reaper's log instead of as one more nameless ``python``.
"""
from __future__ import annotations

import gevent
from gevent.threadpool import ThreadPool, _WorkerGreenlet

from .threads import set_os_thread_name

NAME = "kt-gevent-pool"


class _NamedWorker(_WorkerGreenlet):
    def _begin(self) -> None:  # the first thing the new OS thread runs
        set_os_thread_name(NAME, os_thread=True)
        super()._begin()


class NamedThreadPool(ThreadPool):
    _WorkerGreenlet = _NamedWorker


def install() -> None:
    """Make the hub's threadpool (and any later hub's) a NamedThreadPool; call in the worker."""
    gevent.config.threadpool = NamedThreadPool
    hub = gevent.get_hub()
    old = hub._threadpool
    if old is not None and not isinstance(old, NamedThreadPool):
        hub.threadpool = NamedThreadPool(hub.threadpool_size, hub=hub,
                                         idle_task_timeout=gevent.config.threadpool_idle_task_timeout)
        old.kill()
