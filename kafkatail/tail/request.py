"""Parse a tail's query string into a TailRequest, or a BadRequest that becomes close 4400.

Pure logic: no Kafka, no Flask. Everything a client may put in the URL is validated here once,
so the consumer thread only ever sees well-formed requests.
"""
from __future__ import annotations

import logging
import re
# re's own parser (private, stable since 3.11): inspects a pattern without compiling it.
import re._constants as sre_constants
import re._parser as sre_parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterator, Mapping, Sequence

import regex

log = logging.getLogger(__name__)

FORMATS = ("auto", "text", "json", "base64")
MAX_TOPIC_LEN = 249
MAX_PATTERN_LEN = 512
MAX_FILTER_LEN = 1024
MAX_LAST_N = 100_000
MAX_MAX = 10_000_000
MAX_PARTITIONS = 10_000
# A regex is bounded three ways: its length, its size once repeats are expanded (what the
# compiler allocates: ``(?:a{65535}){65535}`` would take gigabytes), and a time budget per search.
MAX_PATTERN_WEIGHT = 10_000
REGEX_BUDGET_S = 0.1
# Overruns before a regex is switched off; more than one, so a search that was merely descheduled
# on a loaded machine does not silence a sound filter.
REGEX_OVERRUNS = 3

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")


class BadRequest(ValueError):
    """A client mistake in the tail request; its message is the close reason."""


@dataclass(frozen=True)
class StartAt:
    """Where each partition starts: kind is latest, earliest, last, time or offsets."""

    kind: str
    last: int = 0
    timestamp_ms: int = 0
    offsets: Mapping[int, int] = field(default_factory=dict)


class _Trip:
    """Counts a regex's budget overruns; at REGEX_OVERRUNS it is tripped and matches nothing."""

    __slots__ = ("overruns",)

    def __init__(self) -> None:
        self.overruns = 0


@dataclass(frozen=True)
class Matcher:
    """Case-insensitive substring and/or regex over a record's key, value and headers.

    A regex search that takes longer than ``REGEX_BUDGET_S`` stops and counts as no match, with
    a warning; after ``REGEX_OVERRUNS`` of them the matcher trips and matches nothing from then
    on, so one pathological pattern costs a shared consumer a few budgets, never minutes per
    record.
    """

    substring: str = ""
    pattern: regex.Pattern | None = None
    _trip: _Trip = field(default_factory=_Trip, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return bool(self.substring) or self.pattern is not None

    @property
    def tripped(self) -> bool:
        """The regex overran its time budget REGEX_OVERRUNS times and now matches nothing."""
        return self._trip.overruns >= REGEX_OVERRUNS

    def matches(self, key: str | None, value: str | None,
                headers: Sequence[Sequence[Any]] = ()) -> bool:
        """Does the record pass? Both the substring and the regex (when set) must be found,
        each in the key, the value or a header name or value. ``headers`` are as the protocol
        sends them (``[name, value]``, or ``[name, base64, "base64"]``), decoded once per record."""
        if self.substring and not self._contains(key, value, headers):
            return False
        return self.pattern is None or self._search(key, value, headers)

    def _contains(self, key: str | None, value: str | None,
                  headers: Sequence[Sequence[Any]]) -> bool:
        needle = self.substring
        if (key and needle in key.lower()) or (value and needle in value.lower()):
            return True
        return bool(headers) and any(needle in text.lower() for text in _header_texts(headers))

    def _search(self, key: str | None, value: str | None,
                headers: Sequence[Sequence[Any]]) -> bool:
        trip = self._trip
        if trip.overruns >= REGEX_OVERRUNS:
            return False
        search = self.pattern.search
        try:
            if ((key and search(key, timeout=REGEX_BUDGET_S))
                    or (value and search(value, timeout=REGEX_BUDGET_S))):
                return True
            return bool(headers) and any(search(text, timeout=REGEX_BUDGET_S)
                                         for text in _header_texts(headers))
        except TimeoutError:
            trip.overruns += 1
            log.warning("regex %r overran its %g s budget on one record (%d of %d)%s",
                        self.pattern.pattern[:80], REGEX_BUDGET_S, trip.overruns,
                        REGEX_OVERRUNS, "; it now matches nothing"
                        if trip.overruns >= REGEX_OVERRUNS else "")
            return False

    def describe(self) -> dict[str, str]:
        return {"filter": self.substring, "regex": self.pattern.pattern if self.pattern else ""}


def _header_texts(headers: Sequence[Sequence[Any]]) -> Iterator[str]:
    """The non-empty names and values of decoded headers: what a filter searches in them."""
    for header in headers:
        if header[0]:
            yield header[0]
        if header[1]:
            yield header[1]


@dataclass(frozen=True)
class TailRequest:
    topic: str
    start: StartAt
    partitions: tuple[int, ...] | None = None
    matcher: Matcher = Matcher()
    max_records: int | None = None
    format: str = "auto"

    def describe(self) -> dict[str, object]:
        """The effective options, echoed to the client in the hello frame."""
        start = self.start
        if start.kind == "last":
            frm = f"-{start.last}"
        elif start.kind == "time":
            frm = f"ts:{start.timestamp_ms}"
        elif start.kind == "offsets":
            frm = "offsets:" + ",".join(f"{p}:{o}" for p, o in sorted(start.offsets.items()))
        else:
            frm = start.kind
        return {"from": frm, "partitions": list(self.partitions) if self.partitions else None,
                "max": self.max_records, "format": self.format, **self.matcher.describe()}


def parse_topic(topic: str) -> str:
    if not _TOPIC_RE.fullmatch(topic or ""):
        raise BadRequest("topic: must be 1-249 characters of letters, digits, '.', '_' or '-'")
    return topic


def parse_start(raw: str | None) -> StartAt:
    raw = (raw or "latest").strip()
    if raw in ("latest", "end", "now"):
        return StartAt("latest")
    if raw in ("earliest", "beginning"):
        return StartAt("earliest")
    if raw.startswith("-"):
        n = _int(raw[1:], "from")
        if not 1 <= n <= MAX_LAST_N:
            raise BadRequest(f"from: -N needs 1 <= N <= {MAX_LAST_N}")
        return StartAt("last", last=n)
    if raw.startswith("ts:"):
        return StartAt("time", timestamp_ms=parse_timestamp(raw[3:]))
    if raw.startswith("offsets:"):
        offsets: dict[int, int] = {}
        for item in raw[len("offsets:"):].split(","):
            p, sep, o = item.partition(":")
            if not sep:
                raise BadRequest("from: offsets must be offsets:<partition>:<offset>[,...]")
            partition, offset = _int(p, "from"), _int(o, "from")
            if partition < 0 or offset < 0:
                raise BadRequest("from: partitions and offsets must be 0 or more")
            if partition in offsets:
                raise BadRequest(f"from: partition {partition} given twice")
            if len(offsets) >= MAX_PARTITIONS:
                raise BadRequest(f"from: at most {MAX_PARTITIONS} offsets")
            offsets[partition] = offset
        return StartAt("offsets", offsets=offsets)
    raise BadRequest("from: use latest, earliest, -N, ts:<epoch-ms|ISO-8601> or offsets:<p>:<o>,...")


def parse_timestamp(raw: str) -> int:
    """Epoch milliseconds or an ISO-8601 date-time (UTC when no zone is given)."""
    raw = raw.strip()
    if raw.isdigit():
        value = int(raw)
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest("from: ts: needs epoch milliseconds or an ISO-8601 date-time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = int(dt.timestamp() * 1000)
    if not 0 <= value < 2**53:
        raise BadRequest("from: ts: out of range")
    return value


def parse_partitions(raw: str | None) -> tuple[int, ...] | None:
    if raw is None or not raw.strip():
        return None
    parts = sorted({_int(p, "partitions") for p in raw.split(",")})
    if parts[0] < 0 or len(parts) > MAX_PARTITIONS:
        raise BadRequest("partitions: a comma list of partition numbers (0 or more)")
    return tuple(parts)


def compile_matcher(substring: str | None, regex: str | None) -> Matcher:
    substring = substring or ""
    regex = regex or ""
    if len(substring) > MAX_FILTER_LEN:
        raise BadRequest(f"filter: longer than {MAX_FILTER_LEN} characters")
    if len(regex) > MAX_PATTERN_LEN:
        raise BadRequest(f"regex: longer than {MAX_PATTERN_LEN} characters")
    return Matcher(substring.lower(), compile_regex(regex) if regex else None)


def compile_regex(pattern: str) -> regex.Pattern:
    """Python ``re`` syntax, checked before compiling: no nested unbounded repeats (``(a+)+``),
    and at most ``MAX_PATTERN_WEIGHT`` once repeats are expanded; compiled with ``regex``,
    whose searches take a timeout."""
    try:
        tree = sre_parse.parse(pattern)
        weight = _weight(tree, False)
    except (re.error, RecursionError, OverflowError) as exc:
        raise BadRequest(f"regex: {exc}") from None
    if weight > MAX_PATTERN_WEIGHT:
        raise BadRequest(f"regex: too large once repeats are expanded ({weight} > "
                         f"{MAX_PATTERN_WEIGHT})")
    try:
        return regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, MemoryError) as exc:
        raise BadRequest(f"regex: {exc}") from None


_REPEATS = (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT, sre_constants.POSSESSIVE_REPEAT)


def _weight(tree: sre_parse.SubPattern, in_unbounded: bool) -> int:
    """Items the compiler would emit; raises re.error on a nested unbounded repeat."""
    total = 0
    for op, av in tree:
        if op in _REPEATS:
            low, high, body = av
            unbounded = high == sre_constants.MAXREPEAT
            if unbounded and in_unbounded:
                raise re.error("nested repeats like (a+)+ can take exponential time")
            total += max(1, low if unbounded else high) * _weight(body, in_unbounded or unbounded)
        else:
            total += sum(_weight(c, in_unbounded) for c in _subpatterns(av)) or 1
    return total


def _subpatterns(av: object):
    """The groups, branches and assertions inside one parsed item's argument."""
    if isinstance(av, sre_parse.SubPattern):
        yield av
    elif isinstance(av, (tuple, list)):
        for item in av:
            yield from _subpatterns(item)


def parse(topic: str, args: Mapping[str, str]) -> TailRequest:
    """Build a TailRequest from the path topic and the query arguments."""
    max_raw = args.get("max")
    max_records = None
    if max_raw not in (None, ""):
        max_records = _int(max_raw, "max")
        if not 1 <= max_records <= MAX_MAX:
            raise BadRequest(f"max: needs 1 <= max <= {MAX_MAX}")
    fmt = args.get("format") or "auto"
    if fmt not in FORMATS:
        raise BadRequest("format: one of " + ", ".join(FORMATS))
    start = parse_start(args.get("from"))
    partitions = parse_partitions(args.get("partitions"))
    if start.kind == "offsets" and partitions is None:
        partitions = tuple(sorted(start.offsets))
    return TailRequest(
        topic=parse_topic(topic),
        start=start,
        partitions=partitions,
        matcher=compile_matcher(args.get("filter"), args.get("regex")),
        max_records=max_records,
        format=fmt,
    )


def _int(raw: str, key: str) -> int:
    raw = raw.strip()
    if not raw or len(raw) > 19 or not raw.lstrip("-").isdigit():
        raise BadRequest(f"{key}: {raw[:40]!r} is not a whole number")
    return int(raw)
