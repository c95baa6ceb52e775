"""``WS /ws/tail/<topic>``: parse the request, then hand the socket to a TailSession."""
from __future__ import annotations

from flask import current_app, request
from flask_sock import Sock

from ..tail import frames
from ..tail.request import BadRequest, parse
from ..tail.session import TailSession, refuse


def register(sock: Sock) -> None:
    @sock.route("/ws/tail/<path:topic>")
    def tail(ws, topic: str) -> None:
        ext = current_app.extensions["kafkatail"]
        try:
            req = parse(topic, request.args)
        except BadRequest as exc:
            refuse(ws, frames.Close(frames.BAD_REQUEST, str(exc)))
            return
        TailSession(ws, ext["pool"], req, ext["config"], request.remote_addr or "").run()
