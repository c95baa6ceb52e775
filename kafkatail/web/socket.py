"""``WS /ws/tail/<topic>``: check who asks and for what, then hand the socket to a TailSession.

Refusals happen after the upgrade, as close codes with reasons a browser can show: 4403 for a
foreign origin or a topic the caller may not tail, 4401 without a valid identity, 4400 for a bad
request. The connection rate per address is checked before the upgrade (``Access.guard``). The
socket Flask-Sock accepted is wrapped first (``WebSocket``: whole writes, a cap on control frames),
so a refusal and a session write it the same way.
"""
from __future__ import annotations

import dataclasses
import logging

from flask import Blueprint, current_app, request
from flask_sock import Sock

from ..security.access import TOKEN_PARAMS, URL_TOKEN
from ..security.origin import origin_allowed
from ..security.tokens import Unauthenticated
from ..tail import frames
from ..tail.request import BadRequest, parse
from .session import TailSession
from .websocket import WebSocket

log = logging.getLogger(__name__)


def blueprint(sock: Sock) -> Blueprint:
    """A fresh blueprint holding the socket route (one per app: Flask freezes a registered one)."""
    bp = Blueprint("kafkatail_socket", __name__)

    @sock.route("/ws/tail/<path:topic>", bp=bp)
    def tail(ws, topic: str) -> None:
        ext = current_app.extensions["kafkatail"]
        access = ext["access"]
        websocket = WebSocket(ws, access.control_bucket(), ext["pinger"])
        client = request.remote_addr or ""
        if not origin_allowed(request.headers.get("Origin"), request.host, ext["origins"],
                              request.scheme):
            log.warning("refused tail of %r from origin %r (client %s)", topic,
                        request.headers.get("Origin"), client)
            websocket.refuse(frames.Close(frames.FORBIDDEN, "origin not allowed"))
            return
        if any(p in request.args for p in TOKEN_PARAMS):
            websocket.refuse(frames.Close(frames.BAD_REQUEST, URL_TOKEN))
            return
        try:
            identity = access.identify(request)
        except Unauthenticated as exc:
            reason = str(exc)  # not the exception: a log record holding it pins every frame
            log.info("refused tail of %r from %s: %s", topic, client, reason)
            websocket.refuse(frames.Close(frames.UNAUTHORIZED, reason))
            return
        if identity is None:
            log.info("refused tail of %r from %s: no credentials", topic, client)
            websocket.refuse(frames.Close(frames.UNAUTHORIZED, "authentication required: send "
                                          "a bearer token (header or kafkatail.bearer.<token> "
                                          "subprotocol)"))
            return
        charge = access.regex_charge(identity, client)
        try:
            req = parse(topic, request.args, charge)
        except BadRequest as exc:
            websocket.refuse(frames.Close(frames.BAD_REQUEST, str(exc)))
            return
        if not identity.may_tail(req.topic):
            log.warning("refused tail of %s to %s (client %s): topic not allowed", req.topic,
                        identity.name, client)
            websocket.refuse(frames.Close(frames.FORBIDDEN, f"not allowed to tail {req.topic}"))
            return
        if identity.unmasked:
            req = dataclasses.replace(req, unmasked=True)
        TailSession(websocket, ext["pool"], req, ext["config"], client, charge).run()

    return bp
