"""Limits per client: token buckets for rates (connections and requests per address, control
frames per socket), and a bounded ledger of per-caller accounts (regex overruns).

A bucket allows ``rate`` per second sustained, up to ``burst`` at once; a rate of 0 turns the
limit off.
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class TokenBucket:
    """Not thread-safe: one owner (a socket's handler), or the lock of a RateLimiter."""

    __slots__ = ("rate", "burst", "level", "stamp", "clock")

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1, burst)
        self.level = float(self.burst)
        self.clock = clock
        self.stamp = clock()

    def take(self) -> bool:
        """Spend one token if there is one; False means over the limit."""
        if self.rate <= 0:
            return True
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.level >= 1:
            self.level -= 1
            return True
        return False

    def wait_s(self) -> float:
        """Seconds until the next token."""
        return 0.0 if self.rate <= 0 or self.level >= 1 else (1 - self.level) / self.rate


class RateLimiter:
    """One bucket per key (client address), for at most ``max_keys`` keys (a ``Ledger``): the
    least recently seen are forgotten first, so memory stays bounded whatever addresses connect."""

    def __init__(self, rate: float, burst: int, max_keys: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: Ledger[TokenBucket] = Ledger(
            lambda: TokenBucket(self.rate, self.burst, self.clock), max_keys)
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """0 when allowed; otherwise the seconds to wait before trying again."""
        if self.rate <= 0:
            return 0.0
        bucket = self._buckets[key]
        with self._lock:
            if bucket.take():
                return 0.0
            return max(bucket.wait_s(), 0.001)


class Ledger(Generic[T]):
    """One account per key (a caller), made by ``factory`` on first use, for at most
    ``max_keys`` keys: the least recently used are forgotten first, so memory stays bounded."""

    def __init__(self, factory: Callable[[], T], max_keys: int = 10_000) -> None:
        self.factory = factory
        self.max_keys = max_keys
        self._accounts: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def __getitem__(self, key: str) -> T:
        with self._lock:
            account = self._accounts.get(key)
            if account is None:
                account = self._accounts[key] = self.factory()
                if len(self._accounts) > self.max_keys:
                    self._accounts.popitem(last=False)
            else:
                self._accounts.move_to_end(key)
            return account

    def __len__(self) -> int:
        return len(self._accounts)

    def __contains__(self, key: object) -> bool:
        return key in self._accounts
