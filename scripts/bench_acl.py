"""Topic rules: the pattern trie against a linear scan, 1,000 rules and 10,000 topics.

The linear scans are what a first version would write: every rule in turn, either translated to
a regex with the same segment semantics (``*`` one segment, ``**`` any, deny wins), or handed to
``fnmatch.fnmatchcase`` (whose ``*`` crosses dots, so it only approximates the rules; it is here
because it is the usual first attempt). The trie's answers are checked against the regex scan.
Prints an RST table.

    python scripts/bench_acl.py [--rules 1000] [--topics 10000] [--seed 1] [--repeat 5]
"""
from __future__ import annotations

import argparse
import fnmatch
import random
import re
import time

from kafkatail.security.trie import PatternTrie

DOMAINS = [f"d{i}" for i in range(40)]
# Topics come from more domains than the rules mention: many are allowed by no rule at all,
# the case where a linear scan has to try every rule.
TOPIC_DOMAINS = [f"d{i}" for i in range(80)]
SERVICES = [f"svc{i}" for i in range(60)]
REGIONS = ["eu", "us", "ap", "sa", "af"]
KINDS = ["events", "logs", "audit", "metrics", "cdc", "dlq"]


def make_rules(n: int, rng: random.Random) -> list[str]:
    """Rules of the shapes people write: exact names, one-segment wildcards, subtrees, denies."""
    rules = []
    for _ in range(n):
        d, s, r, k = (rng.choice(DOMAINS), rng.choice(SERVICES), rng.choice(REGIONS),
                      rng.choice(KINDS))
        shape = rng.random()
        if shape < 0.4:
            rule = f"{d}.{s}.{r}.{k}"
        elif shape < 0.7:
            rule = f"{d}.*.{r}.{k}"
        elif shape < 0.93:
            rule = f"{d}.{s}.**"
        elif shape < 0.95:
            rule = f"**.{k}.{r}"
        else:
            rule = f"!{d}.**.audit"
        rules.append(rule)
    return rules


def make_topics(n: int, rng: random.Random) -> list[str]:
    return [".".join((rng.choice(TOPIC_DOMAINS), rng.choice(SERVICES), rng.choice(REGIONS),
                      rng.choice(KINDS))) for _ in range(n)]


def _regex(pattern: str) -> re.Pattern[str]:
    """The same semantics as the trie, over ``"." + name``: each segment is ``\\.segment``."""
    parts = []
    for seg in pattern.split("."):
        parts.append({"*": r"\.[^.]*", "**": r"(?:\.[^.]*)*"}.get(seg, r"\." + re.escape(seg)))
    return re.compile("".join(parts))


class RegexScan:
    def __init__(self, rules: list[str]) -> None:
        self.allow = [_regex(r) for r in rules if not r.startswith("!")]
        self.deny = [_regex(r[1:]) for r in rules if r.startswith("!")]

    def match(self, name: str) -> bool:
        dotted = "." + name
        return (any(p.fullmatch(dotted) for p in self.allow)
                and not any(p.fullmatch(dotted) for p in self.deny))


class FnmatchScan:
    def __init__(self, rules: list[str]) -> None:
        self.allow = [r for r in rules if not r.startswith("!")]
        self.deny = [r[1:] for r in rules if r.startswith("!")]

    def match(self, name: str) -> bool:
        return (any(fnmatch.fnmatchcase(name, p) for p in self.allow)
                and not any(fnmatch.fnmatchcase(name, p) for p in self.deny))


def timed(fn, *args, repeat: int = 1):
    """fn's result and its best time over ``repeat`` runs (the machine is shared: noise adds)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rules", type=int, default=1000)
    ap.add_argument("--topics", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=5, help="best of this many runs")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    rules, topics = make_rules(args.rules, rng), make_topics(args.topics, rng)

    trie = PatternTrie(rules)
    allowed = [t for t in topics if trie.match(t)]
    refused = [t for t in topics if not trie.match(t)]
    rows = []
    for label, cls in (("trie (kafkatail)", PatternTrie),
                       ("linear scan, regex per rule", RegexScan),
                       ("linear scan, fnmatch", FnmatchScan)):
        matcher, build = timed(cls, rules)
        matcher.match(topics[0])  # fnmatch compiles lazily into its cache: not part of the run
        found, took = timed(lambda: [matcher.match(t) for t in topics], repeat=args.repeat)
        if cls is RegexScan:
            assert found == [trie.match(t) for t in topics], "trie and regex scan disagree"
        per = [timed(lambda ts=ts: [matcher.match(t) for t in ts], repeat=args.repeat)[1]
               / len(ts) * 1e6
               for ts in (allowed, refused)]
        rows.append((label, build * 1000, took * 1000, *per))

    print(f"{args.rules} rules, {args.topics} topics ({len(allowed)} allowed, {len(refused)} "
          f"refused), seed {args.seed}, best of {args.repeat}; trie and regex scan agree on every "
          "topic\n")
    header = ("matcher", "build ms", "all topics ms", "us/allowed", "us/refused", "vs trie")
    widths = (28, 9, 14, 11, 11, 8)
    line = "  ".join("=" * w for w in widths)
    print(line)
    print("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    print(line)
    base = rows[0][2]
    for label, build, took, per_allowed, per_refused in rows:
        cells = (label, f"{build:.1f}", f"{took:.1f}", f"{per_allowed:.2f}", f"{per_refused:.2f}",
                 f"{took / base:.1f}x")
        print("  ".join(c.ljust(w) for c, w in zip(cells, widths)))
    print(line)


if __name__ == "__main__":
    main()
