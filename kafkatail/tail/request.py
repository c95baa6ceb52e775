"""Parse a tail's query string into a TailRequest, or a BadRequest that becomes close 4400.

Pure logic: no Kafka, no Flask. Everything a client may put in the URL is validated here once,
so the consumer thread only ever sees well-formed requests.
"""
from __future__ import annotations

import logging
import re
import sys
import time
# re's own parser (private, stable since 3.11): inspects a pattern without compiling it.
import re._constants as sre_constants
import re._parser as sre_parse
from bisect import bisect_left
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Iterator, Mapping, Sequence

import regex

from .where import Where, compile_where

log = logging.getLogger(__name__)

FORMATS = ("auto", "text", "json", "base64")
MAX_TOPIC_LEN = 249
MAX_PATTERN_LEN = 512
MAX_FILTER_LEN = 1024
MAX_LAST_N = 100_000
MAX_MAX = 10_000_000
MAX_PARTITIONS = 10_000
# A regex is bounded four ways: its length, its size once repeats are expanded (what the
# compiler allocates: ``(?:a{65535}){65535}`` would take gigabytes), the backtracking paths its
# shape allows (``(?:.|.){25}`` tries 2**25 ways to fail), and a time budget per search.
MAX_PATTERN_WEIGHT = 10_000
# Measured with the regex module: about 3 us per path per start position, so 10**4 paths cost
# some 30 ms over a 60-character record, a third of the budget; 2**15 paths already overran it.
MAX_REGEX_PATHS = 10_000
REGEX_BUDGET_S = 0.1
# The time a new regex may take on a short probe text (``_probe``) before it is refused.
REGEX_PROBE_S = 0.05
# A batch's budget grows with its bytes at this rate: a sound regex scans hundreds of MB/s, a
# clumsy one (x+y+z over long runs of x) 2-3 MB/s; an exponential one never gets this far.
REGEX_MIN_BYTES_PER_S = 2_000_000
# Overruns before a regex is switched off; more than one, so a search that was merely descheduled
# on a loaded machine does not silence a sound filter.
REGEX_OVERRUNS = 3
# How long a caller whose regexes overran REGEX_OVERRUNS times has its regexes refused.
REGEX_COOLDOWN_S = 60.0

_TOPIC_RE = re.compile(r"[A-Za-z0-9._-]{1,249}")
# ASCII only: \d and str.isdigit() take every script's digits, and superscripts too.
_DIGITS = re.compile(r"[0-9]+")
_INT = re.compile(r"-?[0-9]+")


class BadRequest(ValueError):
    """A client mistake in the tail request; its message is the close reason."""


@dataclass(frozen=True)
class StartAt:
    """Where each partition starts: kind is latest, earliest, last, time or offsets."""

    kind: str
    last: int = 0
    timestamp_ms: int = 0
    offsets: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Until:
    """Where a tail ends (``until=``): at the first record of each partition at or after a time,
    or at an offset per partition (kcat's ``-o e@<ts>`` / an end offset, exclusive)."""

    timestamp_ms: int | None = None
    offsets: Mapping[int, int] = field(default_factory=dict)

    def cut(self, partition: int, recs: list) -> tuple[list, bool]:
        """The records before the bound, and whether this partition reached it."""
        if self.timestamp_ms is not None:
            bound = self.timestamp_ms
            for i, rec in enumerate(recs):
                if rec.timestamp >= bound:
                    return recs[:i], True
            return recs, False
        bound = self.offsets[partition]
        i = bisect_left(recs, bound, key=_offset)
        return recs[:i], i < len(recs) or recs[-1].offset + 1 >= bound

    def passed(self, cursor: Mapping[int, int], reached: set, at_end: bool,
               now_ms: int) -> bool:
        """Has every partition passed its bound? A partition with nothing at or after the time
        has passed once the tail is at its end and the time is past."""
        if self.timestamp_ms is not None:
            return all(p in reached for p in cursor) or (at_end and now_ms >= self.timestamp_ms)
        return all(cursor[p] >= self.offsets[p] for p in cursor)

    def describe(self) -> str:
        if self.timestamp_ms is not None:
            return f"ts:{self.timestamp_ms}"
        return "offsets:" + ",".join(f"{p}:{o}" for p, o in sorted(self.offsets.items()))


def _offset(rec: Any) -> int:
    return rec.offset


class RegexCharge:
    """The budget overruns of one caller's regexes (an identity; an address when anonymous),
    shared by every socket it opens, so reconnecting does not start it over. At
    ``REGEX_OVERRUNS`` its regexes match nothing and new ones are refused, until
    ``REGEX_COOLDOWN_S`` has passed since the last overrun."""

    __slots__ = ("overruns", "last", "clock")

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.overruns = 0
        self.last = 0.0
        self.clock = clock

    def overran(self) -> int:
        now = self.clock()
        if now - self.last >= REGEX_COOLDOWN_S:
            self.overruns = 0
        self.overruns += 1
        self.last = now
        return self.overruns

    @property
    def tripped(self) -> bool:
        return (self.overruns >= REGEX_OVERRUNS
                and self.clock() - self.last < REGEX_COOLDOWN_S)

    def refusal(self) -> str:
        """Why a tripped caller's new regex is refused."""
        wait = max(1, round(REGEX_COOLDOWN_S - (self.clock() - self.last)))
        return (f"regex: your regexes overran their {REGEX_BUDGET_S:g} s budget "
                f"{self.overruns} times; regexes are refused for {wait} s")


class _Budget:
    """What is left of a matcher's time for the batch it is filtering."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = REGEX_BUDGET_S


@dataclass(frozen=True)
class Matcher:
    """Case-insensitive substring and/or regex over a record's key, value and headers.

    A regex has ``REGEX_BUDGET_S`` of search time per batch, and more for a large batch
    (``begin_batch``); a batch that
    runs out stops there, the rest of it counting as no match, and is one overrun charged to
    the caller (``compile_matcher``'s ``charge``). After ``REGEX_OVERRUNS`` of them the caller's regexes match
    nothing, so a pathological pattern costs its feed a few budgets, never minutes, however
    many sockets carry it. Searches release the GIL (``concurrent``): other threads run on.
    """

    substring: str = ""
    pattern: regex.Pattern | None = None
    where: Where | None = None
    _charge: RegexCharge = field(default_factory=RegexCharge, compare=False, repr=False)
    _budget: _Budget = field(default_factory=_Budget, compare=False, repr=False)

    @property
    def active(self) -> bool:
        """A substring or regex to search (``where`` is asked separately, of whole records)."""
        return bool(self.substring) or self.pattern is not None

    @property
    def selective(self) -> bool:
        """Some records may not pass: a search or a ``where``."""
        return self.active or self.where is not None

    @property
    def tripped(self) -> bool:
        """The caller's regexes overran their budget REGEX_OVERRUNS times and match nothing."""
        return self.pattern is not None and self._charge.tripped

    def begin_batch(self, size: int) -> None:
        """A new batch of ``size`` bytes: the regex's time budget starts again, with time to
        scan that many bytes at ``REGEX_MIN_BYTES_PER_S``."""
        self._budget.left = REGEX_BUDGET_S + size / REGEX_MIN_BYTES_PER_S

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
        budget = self._budget
        if budget.left <= 0 or self._charge.tripped:
            return False
        texts = [t for t in (key, value) if t]
        if headers:
            texts.extend(_header_texts(headers))
        search = self.pattern.search
        start = time.monotonic()
        try:
            for text in texts:
                left = budget.left - (time.monotonic() - start)
                if left <= 0:
                    raise TimeoutError
                if search(text, timeout=left, concurrent=True):
                    return True
            return False
        except TimeoutError:
            budget.left = 0.0
            overruns = self._charge.overran()
            log.warning("regex %r overran its %g s budget on a batch (%d of %d)%s",
                        self.pattern.pattern[:80], REGEX_BUDGET_S, overruns, REGEX_OVERRUNS,
                        "; its caller's regexes now match nothing"
                        if overruns >= REGEX_OVERRUNS else "")
            return False
        finally:
            if budget.left > 0:
                budget.left -= time.monotonic() - start

    def describe(self) -> dict[str, str]:
        return {"filter": self.substring, "regex": self.pattern.pattern if self.pattern else "",
                "where": self.where.source if self.where else ""}


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
    until: Until | None = None
    # The caller's token lets it see records before the [[mask]] rules.
    unmasked: bool = False

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
                "max": self.max_records, "format": self.format,
                "until": self.until.describe() if self.until else None,
                **self.matcher.describe()}


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
        return StartAt("offsets", offsets=_offsets(raw[len("offsets:"):], "from"))
    raise BadRequest("from: use latest, earliest, -N, ts:<epoch-ms|ISO-8601> or offsets:<p>:<o>,...")


def parse_until(raw: str | None) -> Until | None:
    raw = (raw or "").strip()
    if not raw:
        return None
    if raw.startswith("ts:"):
        return Until(timestamp_ms=parse_timestamp(raw[3:], "until"))
    if raw.startswith("offsets:"):
        return Until(offsets=_offsets(raw[len("offsets:"):], "until"))
    raise BadRequest("until: use ts:<epoch-ms|ISO-8601> or offsets:<p>:<o>,...")


def _offsets(raw: str, key: str) -> dict[int, int]:
    """``<partition>:<offset>[,...]``, each partition once."""
    offsets: dict[int, int] = {}
    for item in raw.split(","):
        p, sep, o = item.partition(":")
        if not sep:
            raise BadRequest(f"{key}: offsets must be offsets:<partition>:<offset>[,...]")
        partition, offset = _int(p, key), _int(o, key)
        if partition < 0 or offset < 0:
            raise BadRequest(f"{key}: partitions and offsets must be 0 or more")
        if partition in offsets:
            raise BadRequest(f"{key}: partition {partition} given twice")
        if len(offsets) >= MAX_PARTITIONS:
            raise BadRequest(f"{key}: at most {MAX_PARTITIONS} offsets")
        offsets[partition] = offset
    return offsets


def parse_timestamp(raw: str, key: str = "from") -> int:
    """Epoch milliseconds or an ISO-8601 date-time (UTC when no zone is given)."""
    raw = raw.strip()
    if _DIGITS.fullmatch(raw):
        # Past 16 digits it is out of range anyway: int() is never handed thousands of them.
        value = int(raw) if len(raw) <= 16 else 2**53
    else:
        try:
            dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise BadRequest(f"{key}: ts: needs epoch milliseconds or an ISO-8601 date-time") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=timezone.utc)
        value = int(dt.timestamp() * 1000)
    if not 0 <= value < 2**53:
        raise BadRequest(f"{key}: ts: out of range")
    return value


def parse_partitions(raw: str | None) -> tuple[int, ...] | None:
    if raw is None or not raw.strip():
        return None
    parts = sorted({_int(p, "partitions") for p in raw.split(",")})
    if parts[0] < 0 or len(parts) > MAX_PARTITIONS:
        raise BadRequest("partitions: a comma list of partition numbers (0 or more)")
    return tuple(parts)


def compile_matcher(substring: str | None, regex: str | None,
                    charge: RegexCharge | None = None, where: str | None = None) -> Matcher:
    """A Matcher whose regex overruns, from the first probe on, are charged to ``charge`` (the
    caller's account); a tripped account's regexes are refused before they are compiled."""
    charge = charge or RegexCharge()
    try:
        compiled = compile_where(where.strip()) if where and where.strip() else None
    except ValueError as exc:
        raise BadRequest(f"where: {exc}") from None
    substring = substring or ""
    regex = regex or ""
    if len(substring) > MAX_FILTER_LEN:
        raise BadRequest(f"filter: longer than {MAX_FILTER_LEN} characters")
    if len(regex) > MAX_PATTERN_LEN:
        raise BadRequest(f"regex: longer than {MAX_PATTERN_LEN} characters")
    for key, text in (("filter", substring), ("regex", regex)):
        try:  # a JSON control frame can carry "\ud800", which no frame echoing it could send
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{key}: not valid Unicode (a lone surrogate)") from None
    if regex and charge.tripped:
        raise BadRequest(charge.refusal())
    return Matcher(substring.lower(), compile_regex(regex, charge) if regex else None, compiled,
                   charge)


def compile_regex(pattern: str, charge: RegexCharge | None = None) -> regex.Pattern:
    """Python ``re`` syntax, checked before compiling: no nested unbounded repeats (``(a+)+``),
    at most ``MAX_PATTERN_WEIGHT`` once repeats are expanded, and at most ``MAX_REGEX_PATHS``
    backtracking paths (``(?:.|.){25}``: see ``_Paths``); compiled with ``regex``, whose
    searches take a timeout, and tried on a few short texts (``_probe``)."""
    try:
        tree = sre_parse.parse(pattern)
        weight = _weight(tree, False)
        shape = _Paths(tree) if weight <= MAX_PATTERN_WEIGHT else None
        paths = shape.count() if shape is not None else 0
    except (re.error, RecursionError, OverflowError) as exc:
        raise BadRequest(f"regex: {exc}") from None
    if weight > MAX_PATTERN_WEIGHT:
        raise BadRequest(f"regex: too large once repeats are expanded ({weight} > "
                         f"{MAX_PATTERN_WEIGHT})")
    if paths > MAX_REGEX_PATHS:
        raise BadRequest(f"regex: a repeat whose parts can match the same text takes exponential "
                         f"time (~{paths:.0e} paths > {MAX_REGEX_PATHS})")
    try:
        compiled = regex.compile(pattern)
    except (regex.error, RecursionError, OverflowError, MemoryError) as exc:
        raise BadRequest(f"regex: {exc}") from None
    _probe(compiled, shape.codes, charge or RegexCharge())
    return compiled


def _probe(compiled: regex.Pattern, codes: frozenset[int], charge: RegexCharge) -> None:
    """Search runs of one character each (common ones, and the pattern's own literals): a sound
    pattern takes microseconds, one that backtracks exponentially takes seconds. This catches
    what the parse tree hides: ``re``'s parser folds ``[a-z]|\\w`` into one class, while the
    ``regex`` engine backtracks over both branches. Refused only on CPU time spent (a search
    merely descheduled on a loaded machine runs into the budget with little), and charged to
    the caller: each refusal cost the server its budget."""
    chars = list(_PROBE_CHARS) + sorted(chr(c) for c in codes if c < 0x110000)[:_PROBE_LITERALS]
    for ch in chars:
        cpu = time.thread_time()
        try:
            compiled.search(ch * _PROBE_LEN, timeout=REGEX_PROBE_S, concurrent=True)
        except TimeoutError:
            if time.thread_time() - cpu >= REGEX_PROBE_S / 2:
                charge.overran()
                raise BadRequest(f"regex: over {REGEX_PROBE_S * 1000:g} ms on {_PROBE_LEN} "
                                 f"{ch!r} characters; it backtracks too much") from None
            return


_PROBE_CHARS = "aA0 _.-\n"
_PROBE_LITERALS = 8
_PROBE_LEN = 64


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


_SATURATED = 10**18
_IGNORECASE = sre_constants.SRE_FLAG_IGNORECASE
_CATEGORIES = {getattr(sre_constants, name): re.compile(rx) for name, rx in (
    ("CATEGORY_DIGIT", r"\d"), ("CATEGORY_NOT_DIGIT", r"\D"), ("CATEGORY_SPACE", r"\s"),
    ("CATEGORY_NOT_SPACE", r"\S"), ("CATEGORY_WORD", r"\w"), ("CATEGORY_NOT_WORD", r"\W"),
    ("CATEGORY_LINEBREAK", "\n"), ("CATEGORY_NOT_LINEBREAK", "[^\n]"))}
# Characters every pattern is probed with besides its own literals: Latin-1, and a few from
# other scripts, spaces and digits, so that ``\w`` and ``\d`` overlap as they do at run time.
_SAMPLES = [chr(c) for c in range(256)] + list(
    "\u0416\u4e2d\u0660\u2028\u3000\U0001f600\U0010ffff")


def _mul(a: int, b: int) -> int:
    return min(a * b, _SATURATED)


def _pow(base: int, exp: int) -> int:
    return 1 if base <= 1 else _SATURATED if exp >= 64 else min(base ** exp, _SATURATED)


def _cases(ch: str) -> set[str]:
    return {c for c in (ch, ch.lower(), ch.upper()) if len(c) == 1}


class _Paths:
    """Estimates how many ways a parsed pattern can match one text: the paths a backtracking
    search may try before it gives up.

    Two alternatives of a branch are ambiguous when they can begin with the same character
    (first-character sets, over a pattern's literals, range ends and ``_SAMPLES``; what is not
    analysed counts as any character) and their leading characters never differ, or when both
    can match nothing; an ambiguous branch has
    the sum of its alternatives' paths, a clean one the largest. A bounded repeat raises its
    body's paths to its upper count; an unbounded one repeats an ambiguous body without limit.
    Inside another repeat, a bounded repeat of variable length that can stop where what follows
    it could start offers one path per count it can stop at (``(?:a{1,3}){30}``: 3**30).
    Unbounded repeats in sequence (``a+a+a+``, ``(?:a+){3}``) cost a polynomial of the text's
    length, not of the pattern's; the search budget bounds them.
    """

    def __init__(self, tree: sre_parse.SubPattern) -> None:
        self.icase = bool(tree.state.flags & _IGNORECASE)
        self.tree = tree
        codes: set[int] = set()
        self._collect(tree, codes)
        # The code points the pattern names (literals, range ends): what _probe tries too.
        self.codes = frozenset(codes)
        chars = set(_SAMPLES)
        for code in codes:
            chars.update(chr(c) for c in (code - 1, code, code + 1) if 0 <= c <= sys.maxunicode)
        self.all = frozenset(c for ch in chars for c in _cases(ch))
        self._firsts: dict[tuple[int, bool], tuple[frozenset[str], bool]] = {}
        self._categories: dict[object, frozenset[str]] = {}

    def count(self) -> int:
        return self._paths(self.tree, frozenset(), False, self.icase)

    def _collect(self, tree: sre_parse.SubPattern, codes: set[int]) -> None:
        for op, av in tree:
            if op in (sre_constants.LITERAL, sre_constants.NOT_LITERAL):
                codes.add(av)
            elif op is sre_constants.IN:
                for item_op, item_av in av:
                    if item_op is sre_constants.LITERAL:
                        codes.add(item_av)
                    elif item_op is sre_constants.RANGE:
                        codes.update(item_av)
            for sub in _subpatterns(av):
                self._collect(sub, codes)

    def _paths(self, items: sre_parse.SubPattern, follow: frozenset[str], repeated: bool,
               icase: bool) -> int:
        """Paths through a sequence followed by a character in ``follow`` (empty: the end);
        ``repeated``: the sequence runs once per iteration of an enclosing repeat."""
        total = 1
        for op, av in reversed(list(items)):
            total = _mul(total, self._item_paths(op, av, follow, repeated, icase))
            first, nullable = self._item_first(op, av, icase)
            follow = first | follow if nullable else first
        return total

    def _item_paths(self, op: object, av: Any, follow: frozenset[str], repeated: bool,
                    icase: bool) -> int:
        if op is sre_constants.SUBPATTERN:
            return self._paths(av[3], follow, repeated, _flags(icase, av[1], av[2]))
        if op is sre_constants.ATOMIC_GROUP:
            return self._paths(av, follow, repeated, icase)
        if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            return self._paths(av[1], frozenset(), False, icase)
        if op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
            alternatives = av[1] if op is sre_constants.BRANCH else [av[1], av[2] or ()]
            paths, entries = [], []
            for alt in alternatives:
                paths.append(self._paths(alt, follow, repeated, icase))
                first, nullable = self._first(alt, icase)
                entries.append((first | follow if nullable else first, nullable,
                                self._prefix(alt, icase)))
            ambiguous = any((n1 and n2) or (f1 & f2 and all(a & b for a, b in zip(p1, p2)))
                            for i, (f1, n1, p1) in enumerate(entries)
                            for f2, n2, p2 in entries[i + 1:])
            return min(sum(paths), _SATURATED) if ambiguous else max(paths)
        if op in _REPEATS:
            low, high, body = av
            if high == 0:
                return 1
            first, nullable = self._first(body, icase)
            inner = self._paths(body, first | follow if high > 1 else follow,
                                repeated or high > 1, icase)
            if high == sre_constants.MAXREPEAT:
                return 1 if inner <= 1 else _SATURATED
            total = _pow(inner, high)
            if repeated and high > low and (nullable or first & follow):
                total = _mul(total, high - low + 1)
            return total
        return 1

    def _first(self, items: sre_parse.SubPattern, icase: bool) -> tuple[frozenset[str], bool]:
        """The characters a sequence can begin with, and whether it can match nothing."""
        key = (id(items), icase)
        if key not in self._firsts:
            first: frozenset[str] = frozenset()
            for op, av in items:
                item_first, nullable = self._item_first(op, av, icase)
                first |= item_first
                if not nullable:
                    self._firsts[key] = first, False
                    break
            else:
                self._firsts[key] = first, True
        return self._firsts[key]

    def _prefix(self, items: sre_parse.SubPattern, icase: bool) -> list[frozenset[str]]:
        """The character sets of a sequence's leading one-character items: two alternatives
        that differ at one of these positions (``POST|PUT``) never match the same text."""
        sets = []
        for op, av in items:
            if op not in (sre_constants.LITERAL, sre_constants.NOT_LITERAL, sre_constants.ANY,
                          sre_constants.IN):
                break
            sets.append(self._item_first(op, av, icase)[0])
        return sets

    def _item_first(self, op: object, av: Any, icase: bool) -> tuple[frozenset[str], bool]:
        if op is sre_constants.LITERAL:
            return self._literal(av, icase), False
        if op is sre_constants.NOT_LITERAL:
            return self.all - self._literal(av, icase), False
        if op is sre_constants.ANY:
            return self.all, False
        if op is sre_constants.IN:
            return self._in(av, icase), False
        if op in (sre_constants.AT, sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            return frozenset(), True
        if op is sre_constants.SUBPATTERN:
            return self._first(av[3], _flags(icase, av[1], av[2]))
        if op is sre_constants.ATOMIC_GROUP:
            return self._first(av, icase)
        if op in (sre_constants.BRANCH, sre_constants.GROUPREF_EXISTS):
            alternatives = av[1] if op is sre_constants.BRANCH else [av[1], av[2] or ()]
            firsts = [self._first(alt, icase) for alt in alternatives]
            return frozenset().union(*(f for f, _ in firsts)), any(n for _, n in firsts)
        if op in _REPEATS:
            low, high, body = av
            if high == 0:
                return frozenset(), True
            first, nullable = self._first(body, icase)
            return first, nullable or low == 0
        return self.all, True  # a backreference, or anything else not analysed

    def _literal(self, code: int, icase: bool) -> frozenset[str]:
        ch = chr(code)
        if not icase:
            return frozenset((ch,))
        cases = _cases(ch)
        return frozenset(c for c in self.all if _cases(c) & cases)

    def _in(self, items: list[tuple[object, Any]], icase: bool) -> frozenset[str]:
        """A character class as a set of characters: set operations only, so that a pattern of
        a hundred classes costs no more to check than to parse."""
        members: set[str] = set()
        negate = False
        for op, av in items:
            if op is sre_constants.NEGATE:
                negate = True
            elif op is sre_constants.LITERAL:
                members.add(chr(av))
            elif op is sre_constants.RANGE:
                members.update(c for c in self.all if av[0] <= ord(c) <= av[1])
            elif op is sre_constants.CATEGORY and av in _CATEGORIES:
                if av not in self._categories:
                    self._categories[av] = frozenset(
                        c for c in self.all if _CATEGORIES[av].fullmatch(c))
                members |= self._categories[av]
            else:
                members |= self.all
        if icase:
            members = {c for c in self.all if _cases(c) & members}
        return self.all - members if negate else frozenset(members)


def _flags(icase: bool, add: int, remove: int) -> bool:
    """Whether a group's scoped flags (``(?i:...)``, ``(?-i:...)``) leave it case-insensitive."""
    return (icase or bool(add & _IGNORECASE)) and not remove & _IGNORECASE


def parse(topic: str, args: Mapping[str, str], charge: RegexCharge | None = None) -> TailRequest:
    """Build a TailRequest from the path topic and the query arguments; the regex is charged
    to the caller's ``charge``."""
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
    until = parse_until(args.get("until"))
    if until is not None and until.offsets:
        if partitions is None:
            partitions = tuple(sorted(until.offsets))
        elif set(partitions) - set(until.offsets):
            raise BadRequest("until: offsets must name every partition the tail reads")
    return TailRequest(
        topic=parse_topic(topic),
        start=start,
        partitions=partitions,
        matcher=compile_matcher(args.get("filter"), args.get("regex"), charge, args.get("where")),
        max_records=max_records,
        format=fmt,
        until=until,
    )


def _int(raw: str, key: str) -> int:
    """A whole number in ASCII digits: ``str.isdigit`` also passes ``²``, which int() refuses."""
    raw = raw.strip()
    if len(raw) > 19 or not _INT.fullmatch(raw):
        raise BadRequest(f"{key}: {raw[:40]!r} is not a whole number")
    return int(raw)
