"""``where``: a CEL expression over a record, e.g. ``value.user.id == 42 && headers["trace-id"]
== "abc"`` or ``value.amount > 1000.0``.

CEL is data, not code: it cannot reach the server beyond the record it is given (Kafka UI's
Groovy filters became CVE-2023-52251; it moved to CEL). The engine is Google's cel-cpp through
``cel-expr-python``, chosen by measurement (``scripts/bench_where.py``): 10 us a record beside
33 us for the Rust binding and 200-320 us for the pure-Python one, the only one with a bound
on the work one record can cost (10,000 loop iterations, 32 levels of nesting), and errors as
values instead of exceptions. It holds the GIL while it evaluates, so the expression is
bounded up front (length, the engine's caps, ``max_value_bytes``) rather than interrupted.

Names: ``key`` (the text, or the decoded JSON of a framed key), ``value`` (the decoded JSON, or
the text), ``headers`` (name to value), ``partition``, ``offset``, ``timestamp`` (ms) and
``size``. A record on which the expression errors (a missing field, a wrong type) does not
match. An expression that does not compile raises ValueError with the parser's position.
"""
from __future__ import annotations

import re
from typing import Any

import orjson
from cel_expr_python import cel

MAX_WHERE_LEN = 2048
_T = cel.Type
# Numbers are dynamic, so ``offset > 1.5`` compiles as CEL's own int/double comparison does.
_ENV = cel.NewEnv(variables={
    "key": _T.DYN, "value": _T.DYN, "headers": _T.Map(_T.STRING, _T.DYN),
    "partition": _T.DYN, "offset": _T.DYN, "timestamp": _T.DYN, "size": _T.DYN})
_POSITION = re.compile(r"<input>:(-?\d+):(-?\d+): (.*)")
_JSON = frozenset({"json", "avro", "protobuf", "json-schema"})


class Where:
    """A compiled expression; ``matches`` is called once per record and viewer."""

    __slots__ = ("source", "_expr")

    def __init__(self, source: str, expr: Any) -> None:
        self.source = source
        self._expr = expr

    def matches(self, item: dict[str, Any], text: str | None) -> bool:
        """Does the protocol record ``item`` (whose value's text is ``text``) pass?"""
        try:
            result = self._expr.eval(_ENV.Activation(_activation(item, text)))
            return result.value() is True
        except RuntimeError:  # the engine's iteration cap, or a value it cannot take
            return False


def compile_where(source: str) -> Where:
    """``source`` compiled once; ValueError says where it is wrong."""
    if len(source) > MAX_WHERE_LEN:
        raise ValueError(f"longer than {MAX_WHERE_LEN} characters")
    try:
        source.encode("utf-8")
        return Where(source, _ENV.compile(source))
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    except RuntimeError as exc:
        raise ValueError(_problem(str(exc))) from None


def _problem(message: str) -> str:
    """The first error of the engine's message, as "line L, column C: what"."""
    for line in message.splitlines():
        found = _POSITION.search(line)
        if found and int(found[1]) > 0:
            return f"line {found[1]}, column {found[2]}: {found[3]}"
        if found:
            return found[3]
    first = message.splitlines()[0] if message else "cannot be compiled"
    return first.split(": ", 1)[-1][:300]


def _activation(item: dict[str, Any], text: str | None) -> dict[str, Any]:
    value: Any = text
    if item["encoding"] in _JSON and text is not None:
        value = orjson.loads(text) if not isinstance(item["value"], (dict, list)) \
            else item["value"]
    key = item["key"]
    if key is not None and item.get("key_encoding") in _JSON - {"json"}:
        key = orjson.loads(key)
    headers = {h[0]: h[1] for h in item["headers"]} if item["headers"] else {}
    return {"key": key, "value": value, "headers": headers, "partition": item["partition"],
            "offset": item["offset"], "timestamp": item["timestamp"], "size": item["size"]}
