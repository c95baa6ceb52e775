"""The pattern trie: examples of every rule, and a property test against a linear reference."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkatail.security.trie import PatternError, PatternTrie, split_patterns


def reference_match(patterns: list[str], name: str, sep: str = ".") -> bool:
    """The obvious implementation: every pattern in turn, segments matched recursively."""

    def seg_match(pat: list[str], segs: list[str]) -> bool:
        if not pat:
            return not segs
        head, rest = pat[0], pat[1:]
        if head == "**":
            return any(seg_match(rest, segs[i:]) for i in range(len(segs) + 1))
        if not segs:
            return False
        return (head == "*" or head == segs[0]) and seg_match(rest, segs[1:])

    segs = name.split(sep)
    allow = [p for p in patterns if not p.startswith("!")]
    deny = [p[1:] for p in patterns if p.startswith("!")]
    return (any(seg_match(p.split(sep), segs) for p in allow)
            and not any(seg_match(p.split(sep), segs) for p in deny))


@pytest.mark.parametrize("patterns, name, expected", [
    (["orders.*.eu"], "orders.web.eu", True),
    (["orders.*.eu"], "orders.eu", False),            # * is exactly one segment
    (["orders.*.eu"], "orders.a.b.eu", False),
    (["logs.**"], "logs", True),                      # ** may be zero segments
    (["logs.**"], "logs.app.web.1", True),
    (["logs.**"], "logsx.app", False),
    (["a.**.z"], "a.z", True),
    (["a.**.z"], "a.b.c.z", True),
    (["a.**.z"], "a.b.c.y", False),
    (["**.eu"], "x.y.eu", True),
    (["**"], "anything.at.all", True),
    (["*"], "one", True),
    (["*"], "one.two", False),
    (["ord*"], "orders", False),                      # only whole segments are wildcards
    (["ord*"], "ord*", True),
    (["a.**.**.b"], "a.b", True),
    (["**", "!audit.**"], "audit.login", False),      # deny wins
    (["**", "!audit.**"], "orders", True),
    (["audit.public.*", "!audit.**"], "audit.public.x", False),  # ... at any specificity
    (["!audit.**", "audit.public.*"], "audit.public.x", False),  # ... and in any order
    (["!x"], "x", False),                             # deny alone allows nothing
    ([], "x", False),
])
def test_examples(patterns, name, expected):
    assert PatternTrie(patterns).match(name) is expected
    assert reference_match(patterns, name) is expected


def test_url_paths_with_slash_separator():
    exempt = PatternTrie(["/", "/healthz", "/readyz", "/static/**"], sep="/")
    assert exempt.match("/") and exempt.match("/healthz") and exempt.match("/static/app.js")
    assert exempt.match("/static/a/b/c.css")
    assert not exempt.match("/api/topics") and not exempt.match("/healthz/x")
    assert not exempt.match("/debug/threads") and not exempt.match("")


def test_bad_patterns_are_refused():
    for bad in (["!"], [""]):
        with pytest.raises(PatternError):
            PatternTrie(bad)
    with pytest.raises(PatternError):
        PatternTrie(["a"], sep="")


def test_truthiness_is_whether_anything_can_match():
    assert not PatternTrie([]) and not PatternTrie(["!a"]) and PatternTrie(["a"])


def test_split_patterns():
    assert split_patterns(" orders.*.eu, logs.**  !audit.**,") == ["orders.*.eu", "logs.**",
                                                                   "!audit.**"]
    assert split_patterns("") == []


SEGMENT = st.sampled_from(["a", "b", "c", "", "ab"])
PATTERN_SEGMENT = st.sampled_from(["a", "b", "c", "", "ab", "*", "**"])


def _join(segs: list[str]) -> str:
    return ".".join(segs)


patterns_st = st.lists(
    st.tuples(st.booleans(), st.lists(PATTERN_SEGMENT, min_size=1, max_size=5)).map(
        lambda t: ("!" if t[0] else "") + _join(t[1])).filter(lambda p: p not in ("", "!")),
    max_size=8)
names_st = st.lists(SEGMENT, min_size=1, max_size=6).map(_join)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=patterns_st, names=st.lists(names_st, min_size=1, max_size=10))
def test_trie_agrees_with_linear_reference(patterns, names):
    trie = PatternTrie(patterns)
    for name in names:
        assert trie.match(name) == reference_match(patterns, name), (patterns, name)


@settings(max_examples=200, deadline=None)
@given(patterns=st.lists(st.lists(st.sampled_from(["x", "y", "*", "**", ""]), min_size=1,
                                  max_size=4).map("/".join), max_size=6),
       name=st.lists(st.sampled_from(["x", "y", ""]), min_size=1, max_size=5).map("/".join))
def test_slash_separator_agrees_with_reference(patterns, name):
    patterns = [p for p in patterns if p]
    assert PatternTrie(patterns, sep="/").match(name) == reference_match(patterns, name, "/")
