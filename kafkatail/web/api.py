"""JSON API: topics and their offsets, the topic overview, schema ids' subjects, liveness and
readiness."""
from __future__ import annotations

from flask import Blueprint, current_app, jsonify

from ..schemas.registry import RegistryError
from ..security.access import current_identity
from ..tail import clientconf
from ..tail.backend import BrokerUnavailable, TopicDenied
from ..tail.failures import FAILURES
from ..tail.metadata import MetadataBusy
from ..tail.request import BadRequest, parse_topic

bp = Blueprint("kafkatail_api", __name__)


def _ext() -> dict:
    return current_app.extensions["kafkatail"]


def _unavailable(exc: BrokerUnavailable):
    return jsonify(error="broker unavailable", reason=str(exc)), 503


def _busy(exc: MetadataBusy):
    return jsonify(error="busy", reason=str(exc)), 503, {"Retry-After": "1"}


def _denied(exc: TopicDenied):
    security = clientconf.security(_ext()["config"].kafka).describe()
    return jsonify(error=FAILURES.denied(exc.topic, security)), 403


def broker_errors(blueprint: Blueprint) -> None:
    """The JSON answers of a route that asks the cluster: 503 while it is unreachable or the
    metadata client is busy, 403 when its ACLs deny the topic."""
    blueprint.register_error_handler(BrokerUnavailable, _unavailable)
    blueprint.register_error_handler(MetadataBusy, _busy)
    blueprint.register_error_handler(TopicDenied, _denied)


broker_errors(bp)


@bp.get("/api/topics")
def topics():
    """Only the topics the caller may tail."""
    identity = current_identity()
    return jsonify(topics=[t for t in _ext()["metadata"].topics()
                           if identity is not None and identity.may_tail(t["name"])])


@bp.get("/api/overview")
def overview():
    """The page's start screen: every topic the caller may tail with its partitions, retained
    records, recent rate (records/s) and newest record's time (epoch ms), at most
    ``OVERVIEW_MAX_TOPICS`` of them (``truncated`` says when there were more). One metadata
    pass every few seconds serves every caller (``tail.metadata.Overview``)."""
    identity = current_identity()
    found = _ext()["metadata"].overview(
        lambda name: identity is not None and identity.may_tail(name))
    return jsonify(found)


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


@bp.get("/api/schemas/<int:schema_id>")
def schema(schema_id: int):
    """Which subjects and versions hold a schema id, for the page to name a record's schema.

    A subject named for a topic (``<topic>-key`` / ``-value``) is listed only to a caller that
    may tail that topic; the schema's text is not served."""
    schemas = _ext()["schemas"]
    if schemas is None:
        return jsonify(error="no schema registry configured (schema_registry_url)"), 404
    try:
        encoding, versions = schemas.subjects(schema_id)
    except RegistryError as exc:
        return jsonify(error=f"schema {schema_id}: {exc}"), 404 if exc.unknown else 503
    identity = current_identity()
    shown = [v for v in versions if _may_see(identity, str(v["subject"]))]
    return jsonify(id=schema_id, encoding=encoding, subjects=shown)


def _may_see(identity, subject: str) -> bool:
    topic, sep, role = subject.rpartition("-")
    if sep and role in ("key", "value"):
        return identity is not None and identity.may_tail(topic)
    return identity is not None
