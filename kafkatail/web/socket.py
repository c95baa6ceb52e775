"""``WS /ws/tail/<topic>``: check who asks and for what, then hand the socket to a TailSession.

Refusals happen after the upgrade, as close codes with reasons a browser can show: 4403 for a
foreign origin or a topic the caller may not tail, 4401 without a valid identity, 4400 for a bad
request. The connection rate per address is checked before the upgrade (``Access.guard``).
"""
from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, current_app, request
from flask_sock import Sock
from simple_websocket import ConnectionClosed

from ..security.access import TOKEN_PARAMS, URL_TOKEN
from ..security.limits import TokenBucket
from ..security.origin import origin_allowed
from ..security.tokens import Unauthenticated
from ..tail import frames
from ..tail.request import BadRequest, parse
from ..tail.session import TailSession, refuse, send_close

log = logging.getLogger(__name__)


def blueprint(sock: Sock) -> Blueprint:
    """A fresh blueprint holding the socket route (one per app: Flask freezes a registered one)."""
    bp = Blueprint("kafkatail_socket", __name__)

    @sock.route("/ws/tail/<path:topic>", bp=bp)
    def tail(ws, topic: str) -> None:
        ext = current_app.extensions["kafkatail"]
        client = request.remote_addr or ""
        if not origin_allowed(request.headers.get("Origin"), request.host, ext["origins"],
                              request.scheme):
            log.warning("refused tail of %r from origin %r (client %s)", topic,
                        request.headers.get("Origin"), client)
            refuse(ws, frames.Close(frames.FORBIDDEN, "origin not allowed"))
            return
        if any(p in request.args for p in TOKEN_PARAMS):
            refuse(ws, frames.Close(frames.BAD_REQUEST, URL_TOKEN))
            return
        access = ext["access"]
        try:
            identity = access.identify(request)
        except Unauthenticated as exc:
            reason = str(exc)  # not the exception: a log record holding it pins every frame
            log.info("refused tail of %r from %s: %s", topic, client, reason)
            refuse(ws, frames.Close(frames.UNAUTHORIZED, reason))
            return
        if identity is None:
            log.info("refused tail of %r from %s: no credentials", topic, client)
            refuse(ws, frames.Close(frames.UNAUTHORIZED, "authentication required: send a "
                                    "bearer token (header or kafkatail.bearer.<token> "
                                    "subprotocol)"))
            return
        charge = access.regex_charge(identity, client)
        try:
            req = parse(topic, request.args, charge)
        except BadRequest as exc:
            refuse(ws, frames.Close(frames.BAD_REQUEST, str(exc)))
            return
        if not identity.may_tail(req.topic):
            log.warning("refused tail of %s to %s (client %s): topic not allowed", req.topic,
                        identity.name, client)
            refuse(ws, frames.Close(frames.FORBIDDEN, f"not allowed to tail {req.topic}"))
            return
        limit_controls(ws, access.control_bucket())
        TailSession(ws, ext["pool"], req, ext["config"], client, charge).run()

    return bp


def limit_controls(ws: Any, bucket: TokenBucket) -> None:
    """Cap the control frames a socket may send: beyond the bucket, close 1008 with a reason.

    Wraps the socket's ``receive``, the one call the session reads control frames with; raising
    ConnectionClosed there ends the session the way a vanished peer does.
    """
    receive = ws.receive

    def limited(timeout: float | None = None) -> Any:
        raw = receive(timeout)
        if raw is not None and not bucket.take():
            send_close(ws, frames.Close(
                frames.POLICY, f"more than {bucket.rate:g} control frames a second"))
            raise ConnectionClosed(frames.POLICY, "control frame rate")
        return raw

    ws.receive = limited
