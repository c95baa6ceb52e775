"""The Flask app factory, and ``init_app`` for mounting kafkatail inside an existing Flask app."""
from __future__ import annotations

import logging

from flask import Flask
from flask_sock import Sock
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Config
from .security.origin import parse_allowed
from .tail.metadata import Metadata
from .tail.pool import ConsumerPool
from .ops.reaper import Reaper
from .web import api, debug, page, socket


def init_app(app: Flask, config: Config) -> ConsumerPool:
    """Register kafkatail's routes on ``app``; returns the pool that owns its tail threads.

    Call ``shutdown(app)`` when the host app stops: it closes every tail with 1001.
    """
    pool = ConsumerPool(config)
    reaper = Reaper(pool, config)
    app.extensions["kafkatail"] = {"config": config, "pool": pool, "metadata": Metadata(config),
                                   "origins": parse_allowed(config.allowed_origins),
                                   "reaper": reaper}
    app.config["SOCK_SERVER_OPTIONS"] = {
        "ping_interval": config.ping_interval_s,
        "max_message_size": config.max_inbound_bytes,
    }
    sock = Sock(app)
    socket.register(sock)
    app.register_blueprint(api.bp)
    app.register_blueprint(page.bp)
    app.register_blueprint(debug.bp)
    reaper.start()
    return pool


def create_app(config: Config | None = None) -> Flask:
    config = config or Config()
    app = Flask(__name__, static_folder=None)
    if config.proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops)  # type: ignore[method-assign]
    logging.getLogger("kafkatail").setLevel(config.log_level)
    init_app(app, config)
    return app


def shutdown(app: Flask, timeout: float | None = None) -> None:
    """Close every tail (1001), join their threads, close the metadata client, stop the reaper."""
    ext = app.extensions["kafkatail"]
    ext["pool"].shutdown(wait=True, timeout=timeout)
    ext["metadata"].close()
    ext["reaper"].stop()
