"""``WS /ws/tail/<topic>``: parse the request, then hand the socket to a TailSession."""
from __future__ import annotations

import logging

from flask import current_app, request
from flask_sock import Sock

from ..security.origin import origin_allowed
from ..tail import frames
from ..tail.request import BadRequest, parse
from ..tail.session import TailSession, refuse

log = logging.getLogger(__name__)


def register(sock: Sock) -> None:
    @sock.route("/ws/tail/<path:topic>")
    def tail(ws, topic: str) -> None:
        ext = current_app.extensions["kafkatail"]
        if not origin_allowed(request.headers.get("Origin"), request.host, ext["origins"]):
            log.warning("refused tail of %s from origin %r (client %s)", topic,
                        request.headers.get("Origin"), request.remote_addr)
            refuse(ws, frames.Close(frames.FORBIDDEN, "origin not allowed"))
            return
        try:
            req = parse(topic, request.args)
        except BadRequest as exc:
            refuse(ws, frames.Close(frames.BAD_REQUEST, str(exc)))
            return
        TailSession(ws, ext["pool"], req, ext["config"], request.remote_addr or "").run()
