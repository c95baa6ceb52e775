"""The Flask app factory, and ``init_app`` for mounting kafkatail inside an existing Flask app."""
from __future__ import annotations

import logging

from flask import Flask
from flask_sock import Sock
from werkzeug.middleware.proxy_fix import ProxyFix

from .config import Config, check_backend
from .security.access import Access, Authorize
from .security.origin import parse_allowed
from .security.tokens import SUBPROTOCOL
from .tail import clientconf, failures
from .tail.masking import Masks
from .tail.metadata import Metadata
from .tail.pool import ConsumerPool
from .ops.reaper import Reaper
from .schemas import connect
from .web import api, debug, export, page, socket
from .web.pings import Pinger

log = logging.getLogger(__name__)


def init_app(app: Flask, config: Config, authorize: Authorize | None = None,
             url_prefix: str = "") -> ConsumerPool:
    """Register kafkatail's routes on ``app``; returns the pool that owns its tail threads.

    ``authorize(request) -> Identity | None`` lets a host app admit its own users (its session,
    say) when no bearer token is presented; ``url_prefix`` mounts every route under a path.
    Call ``shutdown(app)`` when the host app stops: it closes every tail with 1001.
    """
    sec = clientconf.security(config.kafka)
    failures.install(sec.describe(), sec.trust)
    log.info("kafka: %s at %s%s", sec.describe(), config.bootstrap_servers,
             f"; properties not used by a viewer: {', '.join(sec.ignored)}" if sec.ignored else "")
    schemas = connect.schemas(config)
    pool = ConsumerPool(config, schemas, Masks.from_config(config))
    reaper = Reaper(pool, config)
    pinger = Pinger(config.ping_interval_s)
    access = Access(config, authorize, url_prefix)
    app.extensions["kafkatail"] = {"config": config, "pool": pool, "metadata": Metadata(config),
                                   "origins": parse_allowed(config.allowed_origins),
                                   "reaper": reaper, "pinger": pinger, "access": access,
                                   "schemas": schemas}
    # No "ping_interval": the Pinger pings every socket (one thread, not a timer per socket).
    app.config["SOCK_SERVER_OPTIONS"] = {
        "max_message_size": config.max_inbound_bytes,
        "subprotocols": [SUBPROTOCOL],
    }
    for bp in (socket.blueprint(Sock(app)), api.bp, export.bp, page.bp, debug.bp):
        app.register_blueprint(bp, url_prefix=url_prefix or None)
        # Only kafkatail's own routes: a host app's routes keep their own rules.
        app.before_request_funcs.setdefault(bp.name, []).append(access.guard)
    reaper.start()
    pinger.start()
    return pool


def create_app(config: Config | None = None) -> Flask:
    config = config or Config()
    check_backend(config)
    app = Flask(__name__, static_folder=None)
    if config.proxy_hops:
        # X-Forwarded-Proto too: the Origin check compares the scheme the browser used.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=config.proxy_hops,  # type: ignore[method-assign]
                                x_proto=config.proxy_hops)
    logging.getLogger("kafkatail").setLevel(config.log_level)
    init_app(app, config)
    return app


def shutdown(app: Flask, timeout: float | None = None) -> None:
    """Close every tail (1001), join their threads, close the metadata client and the schema
    registry's threads, stop the reaper and the pinger."""
    ext = app.extensions["kafkatail"]
    ext["pool"].shutdown(wait=True, timeout=timeout)
    ext["metadata"].close()
    if ext["schemas"] is not None:
        ext["schemas"].close()
    ext["reaper"].stop()
    ext["pinger"].stop()
