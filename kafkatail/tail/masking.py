"""Masking: what no viewer may see is replaced on the server, before any filter looks at a record.

Rules are ``[[mask]]`` tables in the config::

    [[mask]]
    topics = ["payments.**"]                  # patterns, as for tokens
    fields = ["value.card.number", "value.*.email", "key", "headers.authorization"]
    pattern = "\\\\d{13,19}"                     # optional: only what it matches, in text
    action = "redact"                         # redact ("***"), hash or remove

A field is a dot path into the decoded value or key (``*`` is any key of an object, or any
element of an array, at one level) or ``headers.<name>``. Without ``pattern`` the field's whole
value is masked; with one, each match in its text (a number's JSON text counts as text) is. A
rule with a pattern and no fields applies it to the key, every header and every string in the
value. ``hash`` is a keyed hash (HMAC-SHA256 with ``mask_hash_key``): equal inputs give equal
outputs, so a masked id can still be followed, and it cannot be reversed without the key.

Masking runs in ``records.decode_batch`` right after decoding, so filters, regexes and every
frame (the page's downloads come from frames) see only the masked record: a search for a masked
value finds nothing.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

import orjson

from ..clientprops import expand
from ..security.trie import PatternError, PatternTrie

ACTIONS = ("redact", "hash", "remove")
REDACTED = "***"
_KEYS = {"topics", "fields", "pattern", "action"}
_REMOVE = object()  # a field's value once ``remove`` has taken it


@dataclass(frozen=True)
class Rule:
    """One ``[[mask]]`` table, checked and compiled."""

    topics: PatternTrie
    paths: tuple[tuple[str, ...], ...]    # each starts with "value" or "key"
    headers: frozenset[str]
    pattern: re.Pattern | None
    action: str


def check_masks(tables: Any) -> str | None:
    """The problem with ``[[mask]]`` tables, or None (a config check)."""
    try:
        parse_rules(tables)
    except ValueError as exc:
        return str(exc)
    return None


def parse_rules(tables: Any) -> list[Rule]:
    if not isinstance(tables, list):
        return _fail("must be [[mask]] tables")
    return [_rule(i, t) for i, t in enumerate(tables)]


def _fail(problem: str) -> Any:
    raise ValueError(problem)


def _rule(i: int, table: Any) -> Rule:
    where = f"[[mask]] number {i + 1}"
    if not isinstance(table, dict) or set(table) - _KEYS:
        _fail(f"{where}: keys are {', '.join(sorted(_KEYS))}")
    action = table.get("action", "redact")
    if action not in ACTIONS:
        _fail(f"{where}: action must be one of {', '.join(ACTIONS)}")
    topics, fields = table.get("topics"), table.get("fields", [])
    if not isinstance(topics, list) or not topics or not isinstance(fields, list):
        _fail(f"{where}: topics (a list of patterns) is required, fields is a list")
    try:
        trie = PatternTrie([str(t) for t in topics])
    except PatternError as exc:
        _fail(f"{where}: topics: {exc}")
    pattern = table.get("pattern")
    try:
        compiled = re.compile(pattern) if pattern is not None else None
    except (re.error, TypeError) as exc:
        _fail(f"{where}: pattern: {exc}")
    if not fields and compiled is None:
        _fail(f"{where}: give fields, a pattern, or both")
    paths, headers = [], set()
    for field in fields:
        parts = str(field).split(".")
        if parts[0] == "headers" and len(parts) > 1:
            headers.add(".".join(parts[1:]))
        elif parts[0] in ("value", "key") and all(parts):
            paths.append(tuple(parts))
        else:
            _fail(f"{where}: field {field!r} must start with value, key or headers.")
    return Rule(trie, tuple(paths), frozenset(headers), compiled, action)


class Masker:
    """The rules that apply to one topic, applied to decoded records."""

    def __init__(self, rules: Sequence[Rule], key: bytes) -> None:
        self.rules = tuple(rules)
        self._key = key

    @classmethod
    def for_topic(cls, rules: Iterable[Rule], topic: str, key: bytes) -> "Masker | None":
        mine = [r for r in rules if r.topics.match(topic)]
        return cls(mine, key) if mine else None

    def hash(self, text: str) -> str:
        return "hash:" + hmac.new(self._key, text.encode("utf-8"), hashlib.sha256).hexdigest()[:24]

    def record(self, key: str | None, key_encoding: str | None, value: Any, encoding: str,
               headers: list) -> tuple[str | None, str | None, Any, str, list]:
        """(key, key_encoding, value, encoding, headers) masked. ``value`` is the frame's value:
        JSON text for JSON encodings, else text or base64. A masked JSON value comes back as
        JSON text, a removed value as None (encoding ``null``), a masked binary one as text."""
        doc = _parse(value) if encoding in _JSON else _TEXT
        keydoc = _parse(key) if key is not None and key_encoding in _JSON else _TEXT
        for rule in self.rules:
            mask = self._action(rule)
            for path in rule.paths:
                if path[0] == "value" and doc is not _TEXT:
                    doc = _at(doc, path[1:], rule, mask)
                elif path[0] == "value":
                    value, encoding = _whole(value, encoding, path, rule, mask)
                elif keydoc is not _TEXT:
                    keydoc = _at(keydoc, path[1:], rule, mask)
                else:
                    key, key_encoding = _whole(key, key_encoding, path, rule, mask)
            if rule.headers:
                headers = _headers(headers, lambda n: n in rule.headers, rule, mask)
            if rule.pattern is not None and not rule.paths and not rule.headers:
                doc = _deep(doc, rule, mask) if doc is not _TEXT else doc
                keydoc = _deep(keydoc, rule, mask) if keydoc is not _TEXT else keydoc
                if doc is _TEXT:
                    value, encoding = _whole(value, encoding, ("value",), rule, mask)
                if keydoc is _TEXT:
                    key, key_encoding = _whole(key, key_encoding, ("key",), rule, mask)
                headers = _headers(headers, lambda n: True, rule, mask)
        if doc is not _TEXT:
            value, encoding = (None, "null") if doc is _REMOVE else (_dump(doc), encoding)
        if keydoc is not _TEXT:
            key, key_encoding = (None, None) if keydoc is _REMOVE else (_dump(keydoc), key_encoding)
        return key, key_encoding, value, encoding, headers

    def _action(self, rule: Rule) -> Callable[[str], Any]:
        if rule.action == "redact":
            return lambda text: REDACTED
        if rule.action == "hash":
            return self.hash
        return lambda text: "" if rule.pattern is not None else _REMOVE


_JSON = frozenset({"json", "avro", "protobuf", "json-schema"})
_TEXT = object()  # the value is not JSON: whole-value rules and patterns only


def _parse(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)  # numbers past 64 bits, which orjson refuses


def _dump(doc: Any) -> str:
    try:
        return orjson.dumps(doc).decode("utf-8")
    except TypeError:
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def _leaf_text(leaf: Any) -> str:
    return leaf if isinstance(leaf, str) else _dump(leaf)


def _sub(text: str, rule: Rule, mask: Callable[[str], Any]) -> str:
    return rule.pattern.sub(lambda m: mask(m.group(0)), text)


def _masked_leaf(leaf: Any, rule: Rule, mask: Callable[[str], Any]) -> Any:
    """A whole field masked, or with a pattern, its matches (a number matched turns to text)."""
    if rule.pattern is None:
        return mask(_leaf_text(leaf))
    if isinstance(leaf, (dict, list)):
        return _deep(leaf, rule, mask)
    text = _leaf_text(leaf)
    masked = _sub(text, rule, mask)
    return leaf if masked == text else masked


def _whole(text: str | None, encoding: str | None, path: tuple[str, ...], rule: Rule,
           mask: Callable) -> tuple[Any, Any]:
    """A value or key that is not JSON (text or base64): only a rule on the whole of it applies,
    and a pattern only to text. Returns it with its encoding (masked base64 becomes text)."""
    if text is None or len(path) != 1 or (rule.pattern is not None and encoding != "text"):
        return text, encoding
    if rule.pattern is not None:
        return _sub(text, rule, mask), encoding
    out = mask(text)
    if out is _REMOVE:
        return None, "null" if path[0] == "value" else None
    return out, "text"


def _at(doc: Any, path: Sequence[str], rule: Rule, mask: Callable) -> Any:
    """``doc`` with the fields ``path`` names masked (``*``: every key or element)."""
    if not path:
        return _masked_leaf(doc, rule, mask)
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        names = list(doc) if head == "*" else [head] if head in doc else []
        for name in names:
            out = _at(doc[name], rest, rule, mask)
            if out is _REMOVE:
                del doc[name]
            else:
                doc[name] = out
    elif isinstance(doc, list) and (head == "*" or head.isdigit()):
        indexes = range(len(doc)) if head == "*" else [int(head)] if int(head) < len(doc) else []
        for i in reversed(indexes):
            out = _at(doc[i], rest, rule, mask)
            if out is _REMOVE:
                del doc[i]
            else:
                doc[i] = out
    return doc


def _deep(doc: Any, rule: Rule, mask: Callable) -> Any:
    """Every string (and number) in ``doc`` with the pattern's matches masked."""
    if isinstance(doc, dict):
        return {k: _deep(v, rule, mask) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_deep(v, rule, mask) for v in doc]
    if doc is None or isinstance(doc, bool):
        return doc
    return _masked_leaf(doc, rule, mask)


def _headers(headers: list, chosen: Callable[[str], bool], rule: Rule,
             mask: Callable) -> list:
    """Header values masked (a pattern: text values only; a whole binary one becomes text)."""
    out = []
    for header in headers:
        name, raw = header[0], header[1]
        if raw is None or not chosen(name):
            out.append(header)
        elif rule.pattern is not None:
            out.append(header if len(header) > 2 else [name, _sub(raw, rule, mask)])
        elif (masked := mask(raw)) is not _REMOVE:
            out.append([name, masked])
    return out


class Masks:
    """Every rule of the configuration, and the hash key: a Masker per topic on demand."""

    def __init__(self, rules: Sequence[Rule], key: bytes) -> None:
        self.rules = tuple(rules)
        self.key = key

    @classmethod
    def from_config(cls, config: Any, env: Mapping[str, str] | None = None) -> "Masks":
        """``[[mask]]`` and ``mask_hash_key`` (``${env:}``/``${file:}`` resolved); without a key,
        one per process, so hashes differ after a restart."""
        configured = expand(config.mask_hash_key, os.environ if env is None else env,
                            "mask_hash_key")
        key = configured.encode("utf-8") if configured else secrets.token_bytes(32)
        return cls(parse_rules(config.mask), key)

    def for_topic(self, topic: str) -> Masker | None:
        return Masker.for_topic(self.rules, topic, self.key)
