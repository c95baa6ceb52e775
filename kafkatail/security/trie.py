"""Segment-wildcard patterns compiled into a trie: topic rules (``orders.*.eu``, ``logs.**``,
``!audit.**``) and auth-exempt URL paths (``/static/**``) with the same code.

A name is split on the separator into segments. In a pattern ``*`` matches exactly one segment,
``**`` any number of segments (zero included), and any other segment matches itself only (so
``ord*`` is the literal segment ``ord*``). A pattern starting with ``!`` denies.

The rule: a name matches when at least one allow pattern matches it and no deny pattern does.
Deny always wins, whatever the order or the specificity of the patterns: ``!audit.**`` cannot be
undone by a later ``audit.public.*``; to open part of a denied tree, narrow the deny instead.

Matching walks every pattern at once, one step per segment of the name, so its cost grows with
the name's length and the trie's branching at the visited nodes, not with the number of
patterns, which is the point: a linear scan over a few hundred patterns per request is slow.
"""
from __future__ import annotations

import re
from typing import Iterable

STAR = "*"
GLOBSTAR = "**"
DENY = "!"

_SPLIT = re.compile(r"[\s,]+")


class PatternError(ValueError):
    """A pattern that cannot be compiled; the message names it."""


class _Node:
    __slots__ = ("literal", "star", "globstar", "loops", "end", "closure")

    def __init__(self, loops: bool = False) -> None:
        self.literal: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.globstar: _Node | None = None
        # A node reached through ``**`` may consume further segments and stay where it is.
        self.loops = loops
        self.end = False
        # This node and the ``**`` node below it (``**`` may match zero segments); set by seal().
        self.closure: tuple[_Node, ...] = (self,)

    def seal(self) -> None:
        self.closure = (self,) if self.globstar is None else (self, self.globstar)
        for child in self.literal.values():
            child.seal()
        for child in (self.star, self.globstar):
            if child is not None:
                child.seal()


class _Trie:
    """One set of patterns (allow or deny); ``match`` is true when any of them matches."""

    def __init__(self) -> None:
        self.root = _Node()
        self.size = 0

    def add(self, segments: list[str]) -> None:
        node = self.root
        previous = None
        for seg in segments:
            if seg == GLOBSTAR:
                if previous == GLOBSTAR:
                    continue  # a.**.**.b is a.**.b
                if node.globstar is None:
                    node.globstar = _Node(loops=True)
                node = node.globstar
            elif seg == STAR:
                if node.star is None:
                    node.star = _Node()
                node = node.star
            else:
                child = node.literal.get(seg)
                if child is None:
                    child = node.literal[seg] = _Node()
                node = child
            previous = seg
        node.end = True
        self.size += 1

    def match(self, segments: list[str]) -> bool:
        if not self.size:
            return False
        states = self.root.closure
        for seg in segments:
            step: list[_Node] = []
            for node in states:
                if node.loops:
                    if node.end:
                        return True  # a pattern ending in ** matches whatever follows
                    step.append(node)
                child = node.literal.get(seg)
                if child is not None:
                    step += child.closure
                if node.star is not None:
                    step += node.star.closure
            if not step:
                return False
            # Paths through ** can reach one node twice; keep each once (dicts keep order).
            states = dict.fromkeys(step) if len(step) > 1 else step
        return any(node.end for node in states)


class PatternTrie:
    """Allow and ``!deny`` patterns, compiled once; ``match(name)`` applies the deny-wins rule."""

    def __init__(self, patterns: Iterable[str], sep: str = ".") -> None:
        if not sep:
            raise PatternError("the separator must not be empty")
        self.sep = sep
        self.patterns: tuple[str, ...] = tuple(patterns)
        self._allow = _Trie()
        self._deny = _Trie()
        for pattern in self.patterns:
            deny = pattern.startswith(DENY)
            body = pattern[1:] if deny else pattern
            if not body:
                raise PatternError(f"pattern {pattern!r} is empty")
            (self._deny if deny else self._allow).add(body.split(sep))
        self._allow.root.seal()
        self._deny.root.seal()

    def match(self, name: str) -> bool:
        segments = name.split(self.sep)
        return self._allow.match(segments) and not self._deny.match(segments)

    def __bool__(self) -> bool:
        """True when some name could match: at least one allow pattern."""
        return self._allow.size > 0

    def __repr__(self) -> str:
        return f"PatternTrie({list(self.patterns)!r}, sep={self.sep!r})"


def split_patterns(raw: str) -> list[str]:
    """``"orders.*.eu, logs.** !audit.**"`` -> the patterns (commas and/or whitespace between)."""
    return [p for p in _SPLIT.split(raw.strip()) if p]
