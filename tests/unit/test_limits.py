"""Rate limits and the regex bounds: pure logic, on a fake clock where time matters."""
from __future__ import annotations

import time

import pytest

from kafkatail.security.limits import RateLimiter, TokenBucket
from kafkatail.tail import request as rq
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


@pytest.mark.parametrize("pattern", [r"\d{3}ms", "x+y+z", "(a|b)+c", "(?:a{100}){100}",
                                     r"(\d+)-\1", "(?<=id=)\\d+", "^ERROR"])
def test_ordinary_regexes_compile(pattern):
    assert compile_matcher(None, pattern).pattern is not None


def test_regex_over_budget_trips_and_then_matches_nothing(caplog):
    # Exponential in the regex module too, and not caught by the nesting check.
    m = compile_matcher(None, "(a|aa)+b")
    for _ in range(rq.REGEX_OVERRUNS):
        assert not m.tripped
        t0 = time.monotonic()
        assert not m.matches(None, "a" * 64)
        assert time.monotonic() - t0 < rq.REGEX_BUDGET_S * 3 + 0.5
    assert m.tripped
    t0 = time.monotonic()
    assert not m.matches(None, "aab")  # would match, but a tripped regex no longer runs
    assert time.monotonic() - t0 < 0.01
    assert [r.levelname for r in caplog.records] == ["WARNING"] * rq.REGEX_OVERRUNS
    assert all("budget" in r.getMessage() and not r.exc_info for r in caplog.records)
    assert caplog.records[-1].getMessage().endswith("it now matches nothing")


def test_a_sound_regex_keeps_matching_after_one_overrun():
    m = compile_matcher(None, "(a|aa)+b")
    assert not m.matches(None, "a" * 64)  # one overrun
    assert m.matches(None, "aab") and not m.tripped


def test_many_offsets_are_capped():
    raw = "offsets:" + ",".join(f"{p}:0" for p in range(rq.MAX_PARTITIONS + 1))
    with pytest.raises(BadRequest, match="at most"):
        parse("t", {"from": raw})
