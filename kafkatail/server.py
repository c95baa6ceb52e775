"""Run the app under gunicorn (gthread or gevent worker), with a SIGTERM that closes every tail.

gunicorn's graceful stop waits for open connections to end by themselves, which a WebSocket
never does; so each worker reacts to SIGTERM itself: it closes its tails (clients get 1001),
joins their threads, and then lets gunicorn finish the stop. That is the workers' part
(``kafkatail/workers/lifecycle.py``); here are gunicorn's settings, sizes and the log hooks.

Two ways in share one set of settings and hooks (``gunicorn_settings``): ``kafkatail serve``
(``Server``, a programmatic gunicorn application) and plain ``gunicorn -c
conf/gunicorn.conf.py`` (which serves ``kafkatail.wsgi:app``).

Nothing here imports kafka (or the app) at module level: the gevent worker monkey-patches
after the fork, and kafka-python captures ``selectors.DefaultSelector`` at import time, so the
app is imported in the worker, after patching, and never in the master.
"""
from __future__ import annotations

import logging
import os
from typing import Any

from gunicorn.app.base import BaseApplication
from gunicorn.glogging import Logger as GunicornLogger

from .config import Config, ConfigError, check_backend, load
from .ops import logsetup, malloc

log = logging.getLogger(__name__)

CONFIG_ENV = "KAFKATAIL_CONFIG"

# gunicorn's two workers, subclassed so that SIGTERM closes every tail with 1001 and a client
# trickling its request headers (slowloris) holds no request slot past header_timeout_s
# (kafkatail/workers/).
WORKER_CLASSES = {
    "gthread": "kafkatail.workers.gthread.ThreadWorker",
    "gevent": "kafkatail.workers.ggevent.GeventWorker",
}


def config_from_env() -> Config:
    """The config for a server started without kafkatail's CLI: the TOML file named by
    ``$KAFKATAIL_CONFIG`` (optional), then ``KAFKATAIL_<KEY>`` variables."""
    return load(os.environ.get(CONFIG_ENV) or None)


def http_reserve(slots: int) -> int:
    """Connection slots (gthread threads, gevent worker_connections) kept free of tails, so
    plain HTTP (``/healthz``) is still served when the tail cap is reached: a sixteenth, at
    least one."""
    return max(1, slots // 16)


def _slots(config: Config) -> tuple[str, int]:
    """The setting that bounds a worker's open connections, and its value."""
    if config.worker_class == "gthread" and config.threads <= config.worker_connections:
        return "threads", config.threads
    return "worker_connections", config.worker_connections  # gthread also stops accepting there


def _tail_cap(config: Config) -> int:
    name, slots = _slots(config)
    cap = slots - http_reserve(slots)
    if cap < 1:
        raise ConfigError(f"{name}: {slots} leaves no room for tails under {config.worker_class} "
                          f"(one is kept for /healthz); use 2 or more")
    return cap


def worker_config(config: Config) -> Config:
    """The config a worker's app runs with. An open tail holds a connection slot for its whole
    life (a pool thread under gthread, one of ``worker_connections`` under gevent), and a
    request that finds every slot taken waits unanswered, so ``max_tails`` is lowered to leave
    ``http_reserve`` slots for everything else."""
    check_backend(config)
    cap = _tail_cap(config)
    if config.max_tails <= cap:
        return config
    name, slots = _slots(config)
    log.info("%s: max_tails %d lowered to %d per worker (%s %d, %d kept for HTTP)",
             config.worker_class, config.max_tails, cap, name, slots, slots - cap)
    return config.replace(max_tails=cap)


def _worker_exit(arbiter: Any, worker: Any) -> None:
    """In the worker, after gunicorn's last line ("Worker exiting"): write the records still
    queued (the listener is a daemon). gunicorn also calls this hook in the master for a
    worker already gone, where the master's own log pipeline must stay."""
    if worker.pid == os.getpid():
        logsetup.teardown()


def _on_exit(arbiter: Any) -> None:
    """Write the master's last queued records before it ends."""
    logsetup.teardown()


class _QueuedLogger(GunicornLogger):
    """gunicorn's logger, with its error and access logs sent through kafkatail's log queue."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        pipeline = logsetup.current()
        if pipeline is not None:
            pipeline.route(self.error_log)
            pipeline.route(self.access_log)


def gunicorn_settings(config: Config) -> dict[str, Any]:
    """gunicorn's settings and hooks for kafkatail: worker class (kafkatail's subclass of the
    configured one: SIGTERM closes every tail, a deadline for request headers) and sizes,
    timeouts sized against ``shutdown_grace_s``, and logging through kafkatail's queue."""
    return {
        "bind": [config.bind],
        "workers": config.workers,
        "worker_class": WORKER_CLASSES[config.worker_class],
        "threads": config.threads,
        "worker_connections": config.worker_connections,
        "graceful_timeout": int(config.shutdown_grace_s) + 1,
        "timeout": max(30, int(config.shutdown_grace_s) * 3),
        "preload_app": False,  # gevent: the app (and kafka) is imported only after patching
        "worker_exit": _worker_exit,
        "on_exit": _on_exit,
        "accesslog": None,
        "loglevel": config.log_level.lower(),
        "proc_name": "kafkatail",
        "control_socket_disable": True,
        "logger_class": _QueuedLogger,
    }


def prepare_master(config: Config) -> None:
    """What the gunicorn master does before it forks workers: refuse a config no worker could
    run (ConfigError), cap malloc arenas and start the log pipeline (workers inherit both)."""
    check_backend(config)
    _tail_cap(config)
    malloc.tune()
    # kafka-python logs every connect and close at INFO: one line per tail opened or closed.
    # Set before the logging config, which may choose another level for "kafka".
    kafka_level = max(logging.WARNING, logging.getLevelName(config.log_level))
    logging.getLogger("kafka").setLevel(kafka_level)
    logsetup.setup(config)


class Server(BaseApplication):
    """A programmatic gunicorn application serving ``create_app(config)``."""

    def __init__(self, config: Config) -> None:
        self.kt_config = config
        super().__init__()

    def load_config(self) -> None:
        for key, value in gunicorn_settings(self.kt_config).items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from .app import create_app

        return create_app(worker_config(self.kt_config))


def serve(config: Config) -> None:
    """Run until SIGTERM/SIGINT; gunicorn's arbiter owns the process from here."""
    prepare_master(config)
    try:
        Server(config).run()
    finally:
        logsetup.teardown()
