"""JSON API: topics and their offsets, liveness and readiness."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..security.access import current_identity
from ..tail import clientconf
from ..tail.backend import BrokerUnavailable, TopicDenied
from ..tail.failures import FAILURES
from ..tail.metadata import MetadataBusy
from ..tail.request import BadRequest, parse_topic

bp = Blueprint("kafkatail_api", __name__)


def _ext() -> dict:
    return current_app.extensions["kafkatail"]


@bp.errorhandler(BrokerUnavailable)
def _unavailable(exc: BrokerUnavailable):
    return jsonify(error="broker unavailable", reason=str(exc)), 503


@bp.errorhandler(MetadataBusy)
def _busy(exc: MetadataBusy):
    return jsonify(error="busy", reason=str(exc)), 503, {"Retry-After": "1"}


@bp.errorhandler(TopicDenied)
def _denied(exc: TopicDenied):
    security = clientconf.security(_ext()["config"].kafka).describe()
    return jsonify(error=FAILURES.denied(exc.topic, security)), 403


@bp.get("/api/topics")
def topics():
    """Only the topics the caller may tail."""
    identity = current_identity()
    return jsonify(topics=[t for t in _ext()["metadata"].topics()
                           if identity is not None and identity.may_tail(t["name"])])


@bp.get("/api/topics/<path:name>")
def topic(name: str):
    try:
        parse_topic(name)
    except BadRequest as exc:
        return jsonify(error=str(exc)), 400
    identity = current_identity()
    if identity is None or not identity.may_tail(name):
        return jsonify(error=f"not allowed to tail {name}"), 403
    found = _ext()["metadata"].topic(name)
    if found is None:
        return jsonify(error=f"unknown topic {name}"), 404
    return jsonify(found)


@bp.get("/healthz")
def healthz():
    return jsonify(status="ok", tails=len(_ext()["pool"]))


@bp.get("/readyz")
def readyz():
    reason = _ext()["metadata"].unready()
    if reason is None:
        return jsonify(status="ready")
    return jsonify(status="broker unavailable", reason=reason), 503
