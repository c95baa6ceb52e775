"""Rate limits and the regex bounds: pure logic, on a fake clock where time matters."""
from __future__ import annotations

import time

import pytest
import regex

from kafkatail.security.limits import RateLimiter, TokenBucket
from kafkatail.tail import request as rq
from kafkatail.tail.records import select
from kafkatail.tail.request import BadRequest, compile_matcher, parse


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_burst_then_rate():
    clock = Clock()
    b = TokenBucket(rate=2, burst=3, clock=clock)
    assert [b.take() for _ in range(4)] == [True, True, True, False]
    assert b.wait_s() == pytest.approx(0.5)
    clock.now += 0.5
    assert b.take() and not b.take()
    clock.now += 100
    assert sum(b.take() for _ in range(10)) == 3  # refills to the burst, no further


def test_zero_rate_is_off():
    assert all(TokenBucket(0, 1).take() for _ in range(1000))
    assert RateLimiter(0, 1).take("a") == 0


def test_limiter_is_per_key_and_bounded():
    clock = Clock()
    lim = RateLimiter(rate=1, burst=2, max_keys=3, clock=clock)
    assert lim.take("a") == 0 and lim.take("a") == 0
    assert lim.take("a") == pytest.approx(1.0)
    assert lim.take("b") == 0  # another address has its own bucket
    for key in ("c", "d", "e"):
        lim.take(key)
    assert len(lim._buckets) == 3 and "a" not in lim._buckets


@pytest.mark.parametrize("pattern, needle", [
    ("(a+)+$", "nested repeats"),
    (r"(\w+\s?)*$", "nested repeats"),
    ("(x+x+)+y", "nested repeats"),
    ("(?:a{65535}){65535}", "too large"),
    ("a{20000}", "too large"),
    ("(", r"missing \)"),
])
def test_risky_or_broken_regex_is_refused_before_compiling(pattern, needle):
    with pytest.raises(BadRequest, match=needle) as e:
        compile_matcher(None, pattern)
    assert str(e.value).startswith("regex:")


# Shapes whose alternatives or variable-length parts can match the same text, repeated: each
# search tries every way to split the text among them before it fails.
EXPONENTIAL = [r"(?:.|.){25}\b\B", "(a|a)*$", "(a|aa)+b", "(a|aa)*$", "(a|ab|b)*$",
               "(?:a|a){30}", r"(?:\d|\d){20}\b\B", r"(.|\s)*x", "(?:a{1,3}){100}b"]
# Sound patterns, including ones whose alternatives share a first character but never the same
# text (POST|PUT, a|ab), and polynomial ones the search budget bounds (a+a+a+a+b).
SOUND = ["(GET|POST|PUT)", "(?:GET|POST|PUT)+", "(a|b)*", r"\d{1,3}(\.\d{1,3}){3}",
         r"(\d+\.){3}\d+", ".*error.*timeout", r"^\w+@\w+\.com$", "(?i)k", "x+y+z",
         "(foo|bar)+", r"[a-z]+-\d+", "(a|ab)*c", r"(\w+\s?){3}", r"(?:\w|\d){25}!",
         r"\d{3}ms", "(a|b)+c", "(?:a{100}){100}", r"(\d+)-\1", "(?<=id=)\\d+", "^ERROR", "k1",
         r"\d+", "(?i)K", r"(\d)\1", "(?<=a+)b", ".{0,100}a.{0,100}b"]
# Accepted, and slow on long runs all the same: polynomial, or just under MAX_REGEX_PATHS (2**13).
BUDGETED = ["a+a+a+a+b", r"(?:a|a){13}\b\B"]
# Adversarial texts: runs of one character, as long as a short record or a longer one, cut by
# a character that makes the match fail late.
PROBES = [(start + (c * run + end) * 12)[:length] for start in ("", "x")
          for c in ("a", "1", " ", "ab") for run in (19, 29, 99, 300) for end in ("", "!", "b")
          for length in (60, 300)]


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_exponential_regex_shapes_are_refused(pattern):
    with pytest.raises(BadRequest, match="exponential time") as e:
        compile_matcher(None, pattern)
    assert len(str(e.value)) <= 120  # whole in a close reason


@pytest.mark.parametrize("pattern", SOUND + BUDGETED)
def test_ordinary_regexes_compile(pattern):
    assert compile_matcher(None, pattern).pattern is not None


def _overruns(pattern: str, timeout: float) -> bool:
    compiled = regex.compile(pattern)
    for text in PROBES:
        try:
            compiled.search(text, timeout=timeout)
        except TimeoutError:
            return True
    return False


@pytest.mark.parametrize("pattern", EXPONENTIAL)
def test_refused_shapes_really_are_slow(pattern):
    # Grounds the estimate in behaviour: some record of at most 300 characters takes each
    # refused shape more than 50 ms (a machine under load only makes that likelier).
    assert _overruns(pattern, 0.05), pattern


@pytest.mark.parametrize("pattern", SOUND)
def test_accepted_patterns_are_fast_on_the_same_probes(pattern):
    assert not _overruns(pattern, 1.0), pattern


def test_regex_over_budget_trips_and_then_matches_nothing(caplog):
    # Polynomial (four a+ share every split of a long run), so the static check lets it through.
    m = compile_matcher(None, "a+a+a+a+b")
    for _ in range(rq.REGEX_OVERRUNS):
        assert not m.tripped
        m.begin_batch(2000)
        t0 = time.monotonic()
        assert not m.matches(None, "a" * 2000)
        assert time.monotonic() - t0 < rq.REGEX_BUDGET_S * 3 + 0.5
    assert m.tripped
    m.begin_batch(5)
    t0 = time.monotonic()
    assert not m.matches(None, "aaaab")  # would match, but a tripped regex no longer runs
    assert time.monotonic() - t0 < 0.01
    assert [r.levelname for r in caplog.records] == ["WARNING"] * rq.REGEX_OVERRUNS
    assert all("budget" in r.getMessage() and not r.exc_info for r in caplog.records)
    assert caplog.records[-1].getMessage().endswith("regexes now match nothing")


def test_a_sound_regex_keeps_matching_after_one_overrun():
    m = compile_matcher(None, "a+a+a+a+b")
    m.begin_batch(2000)
    assert not m.matches(None, "a" * 2000)  # one overrun
    m.begin_batch(5)
    assert m.matches(None, "aaaab") and not m.tripped


def decoded(values):
    return [({"size": len(v), "headers": []}, None, v) for v in values]


def test_the_budget_is_per_batch_not_per_record():
    """Records that each stay under the budget (some 40 ms each here) still spend it together:
    the batch stops at the budget and is one overrun, not twenty searches of 40 ms."""
    m = compile_matcher(None, "a+a+a+a+b")
    t0 = time.monotonic()
    assert select(decoded(["a" * 200] * 20), m) == []
    took = time.monotonic() - t0
    assert m._charge.overruns == 1
    assert took < rq.REGEX_BUDGET_S * 3 + 0.3, took
    assert [r["size"] for r in select(decoded(["aaaab", "xaaaab"]), m)] == [5, 6]  # a new batch


def test_overruns_are_charged_to_the_caller_not_the_socket():
    """Reconnecting does not start over: every matcher charged to one caller shares its
    overruns, until REGEX_COOLDOWN_S after the last."""
    now = [1000.0]
    charge = rq.RegexCharge(clock=lambda: now[0])
    sockets = [compile_matcher(None, "a+a+a+a+b", charge) for _ in range(rq.REGEX_OVERRUNS)]
    for m in sockets:
        m.begin_batch(2000)
        assert not m.matches(None, "a" * 2000)
    assert charge.tripped and all(m.tripped for m in sockets)
    sockets[0].begin_batch(5)
    assert not sockets[0].matches(None, "aaaab")  # matches nothing while tripped
    with pytest.raises(BadRequest, match="refused for 60 s"):
        compile_matcher(None, "b", charge)         # a new socket's or a filter control's regex
    assert compile_matcher(None, "b").matches(None, "b")  # another caller
    now[0] += rq.REGEX_COOLDOWN_S
    later = compile_matcher(None, "b", charge)
    later.begin_batch(1)
    assert later.matches(None, "b") and not charge.tripped


def test_many_offsets_are_capped():
    raw = "offsets:" + ",".join(f"{p}:0" for p in range(rq.MAX_PARTITIONS + 1))
    with pytest.raises(BadRequest, match="at most"):
        parse("t", {"from": raw})


def test_shapes_the_parse_tree_hides_are_refused_by_their_behaviour():
    # re's parser folds the two branches into one class, so the path estimate sees none; the
    # regex engine backtracks over both (seconds on 60 characters).
    charge = rq.RegexCharge()
    with pytest.raises(BadRequest, match="backtracks too much"):
        compile_matcher(None, r"(?:[a-z]|\w){25}\b\B", charge)
    assert charge.overruns == 1  # the probe's time is charged to the caller too
