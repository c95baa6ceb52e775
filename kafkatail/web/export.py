"""``GET /api/topics/<topic>/export``: a bounded range of a topic as NDJSON or CSV, streamed.

An export is a tail like any other (a dedicated ConsumerThread from the pool, the same
decoding, Schema Registry, masking, filters and ``until``), whose records go to an HTTP
response instead of a socket. It is bounded three ways: ``until`` (default: the end offsets when
the export starts, so it always finishes), ``max`` (at most ``export_max_records``) and
``export_max_bytes`` of output. A slow reader slows the consumer (a dedicated tail waits for its
outbox), and a reader that goes away releases the tail: the WSGI server closes the response.
"""
from __future__ import annotations

import csv
import io
import json
import re
import threading
import time
from dataclasses import replace
from typing import Any, Iterator

from flask import Blueprint, Response, current_app, jsonify, request

from ..security.access import current_identity
from ..tail import frames
from ..tail.outbox import Outbox
from ..tail.records import JSON_ENCODINGS, Batch, record_json
from ..tail.request import BadRequest, TailRequest, parse, parse_until
from .api import broker_errors

bp = Blueprint("kafkatail_export", __name__)
broker_errors(bp)

FORMATS = {"ndjson": "application/x-ndjson", "csv": "text/csv"}
CSV_COLUMNS = ["partition", "offset", "timestamp", "key", "key_encoding", "value", "encoding",
               "headers"]
# How long the response waits for the tail between checks that its reader is still there.
_WAKE_S = 1.0
# An export whose ``until`` lies ahead waits for records live; a reader that left is only seen
# when a write fails, so an export with nothing to write ends after this long.
EXPORT_IDLE_S = 60.0


@bp.get("/api/topics/<path:topic>/export")
def export(topic: str):
    """``from`` (default earliest), ``until`` (default: the end now), ``partitions``,
    ``filter``, ``regex``, ``where``, ``max``, ``format`` ndjson or csv."""
    ext = current_app.extensions["kafkatail"]
    config = ext["config"]
    fmt = request.args.get("format", "ndjson")
    if fmt not in FORMATS:
        return jsonify(error="format: one of ndjson, csv"), 400
    identity = current_identity()
    try:
        req = parse(topic, {"from": "earliest", **request.args, "format": "auto"})
        if identity is None or not identity.may_tail(req.topic):
            return jsonify(error=f"not allowed to tail {req.topic}"), 403
        req = replace(req, unmasked=identity.unmasked, max_records=min(
            req.max_records or config.export_max_records, config.export_max_records))
        if req.until is None:
            req = _until_now(ext["metadata"], req)
    except BadRequest as exc:
        return jsonify(error=str(exc)), 400
    if req is None:
        return jsonify(error=f"unknown topic {topic}"), 404
    out = Export(ext["pool"], req, config, request.remote_addr or "", fmt)
    try:
        out.open()
    except frames.Close as refused:
        return jsonify(error=refused.reason), 503
    return Response(out, mimetype=FORMATS[fmt], headers={
        "Content-Disposition": f'attachment; filename="{req.topic}.{fmt}"',
        "Cache-Control": "no-store"})


def _until_now(metadata: Any, req: TailRequest) -> TailRequest | None:
    """The request bounded at the topic's end offsets now (None: no such topic)."""
    found = metadata.topic(req.topic)
    if found is None:
        return None
    ends = ",".join(f"{p['partition']}:{p['latest']}" for p in found["partitions"]
                    if req.partitions is None or p["partition"] in req.partitions)
    return replace(req, until=parse_until(f"offsets:{ends}"))


class Export:
    """The response body: an iterable of text chunks the WSGI server writes, and ``close()``,
    which it calls however the response ends; the tail is released there."""

    def __init__(self, pool: Any, req: Any, config: Any, client: str, fmt: str) -> None:
        self.pool = pool
        self.request = req
        self.fmt = fmt
        self.max_bytes = config.export_max_bytes
        self._wake = threading.Event()
        self.outbox = Outbox(config.outbox_max_records, notify=self._wake.set,
                             max_bytes=config.outbox_max_bytes, budget=pool.outbox_bytes)
        self.client = client
        self._topic = json.dumps(req.topic)
        self.viewer = None
        self._thread = threading.current_thread()
        self._closed = False

    # The pool's owner protocol: who holds the tail, and whether it still does.
    @property
    def name(self) -> str:
        return self._thread.name

    def is_alive(self) -> bool:
        return not self._closed and self._thread.is_alive()

    def open(self) -> None:
        self.viewer = self.pool.open(self.request, self.outbox, self.client, owner=self)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.pool.release(self.viewer)

    def __iter__(self) -> Iterator[str]:
        written = 0
        if self.fmt == "csv":
            yield _csv_row(CSV_COLUMNS)
        last = time.monotonic()
        while True:
            self._wake.wait(_WAKE_S)
            self._wake.clear()
            items, ending = self.outbox.take()
            if any(not isinstance(item, str) or item.startswith('{"type":"messages"')
                   for item in items):
                last = time.monotonic()
            elif ending is None and time.monotonic() - last > EXPORT_IDLE_S:
                yield self._end(f"no record for {EXPORT_IDLE_S:g} s")
                return
            for item in items:
                lines = [self._line(r) for r in _records(item)]
                room = self._room(lines, self.max_bytes - written)
                chunk = "".join(lines[:room])
                written += len(chunk.encode("utf-8"))
                if chunk:
                    yield chunk
                if room < len(lines):
                    yield self._end(f"export_max_bytes ({self.max_bytes}) reached")
                    return
            self.outbox.sent()
            if ending is not None:
                yield self._end(ending.reason)
                return
            if not self.viewer.is_alive():
                yield self._end("tail ended unexpectedly")
                return

    @staticmethod
    def _room(lines: list[str], left: int) -> int:
        """How many of ``lines`` fit in ``left`` bytes of UTF-8."""
        for i, line in enumerate(lines):
            left -= len(line.encode("utf-8"))
            if left < 0:
                return i
        return len(lines)

    def _line(self, rec: dict) -> str:
        if self.fmt == "csv":
            return _csv_row(_csv_fields(rec))
        return f'{{"topic":{self._topic},{record_json(rec)[1:]}\n'

    def _end(self, reason: str) -> str:
        return json.dumps({"type": "end", "reason": reason}) + "\n" if self.fmt == "ndjson" else ""


def _records(item: Batch | str) -> list[dict]:
    """The records of an outbox item: a Batch, or batches joined into one ``messages`` frame
    (their values parsed back: re-encoded as protocol records, with JSON values as text)."""
    if isinstance(item, Batch):
        return item.records
    if not item.startswith('{"type":"messages"'):
        return []
    records = json.loads(item)["messages"]
    for rec in records:
        if rec["encoding"] in JSON_ENCODINGS:
            rec["value"] = json.dumps(rec["value"], separators=(",", ":"), ensure_ascii=False)
    return records


def _csv_fields(rec: dict) -> list:
    value = rec["value"]
    return [rec["partition"], rec["offset"], rec["timestamp"], _cell(rec["key"] or ""),
            rec["key_encoding"] or "", _cell("" if value is None else value), rec["encoding"],
            _cell(json.dumps(rec["headers"], ensure_ascii=False)) if rec["headers"] else ""]


def _cell(text: str) -> str:
    """A text cell a spreadsheet will not run: one starting with = + - @ (or a tab or carriage
    return) gets a leading ', as OWASP advises against CSV formula injection; a plain number
    such as -3 is left as it is."""
    if text[:1] in _FORMULA_START and not _NUMBER(text):
        return "'" + text
    return text


_FORMULA_START = frozenset("=+-@\t\r")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?").fullmatch


def _csv_row(fields: list) -> str:
    out = io.StringIO()
    csv.writer(out).writerow(fields)
    return out.getvalue()
