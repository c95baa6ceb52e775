"""Pinger: one thread keeps every socket of the process alive, instead of a timer per socket.

Each socket is pinged once per ``ping_interval_s``; one that has not answered the previous ping
by then is closed (1008) and cut, so a peer silent for two intervals is dropped, as
simple-websocket does when each socket pings for itself. That way costs a selector and a timer
per socket per interval (at 10,000 idle tails on one gevent worker, most of the worker's idle
CPU); here the sockets sit in a wheel of ``SLOTS`` slots turned once per interval / SLOTS, so a
tick visits only the sockets due, and an idle tail costs one ping write per interval.

A ping never blocks the pinger: it is written only if the socket takes it at once. A socket
that could not take it (a send in progress, a full buffer) is not judged that round: it is
busy sending, and a send that hangs is the feed's stall check's to end (``send_timeout_s``).
"""
from __future__ import annotations

import logging
import struct
import threading
from typing import Protocol

from ..ops.threads import REGISTRY, set_os_thread_name

log = logging.getLogger(__name__)

SLOTS = 10
PING = b"\x89\x00"  # FIN, opcode 9, no payload: a server's frames are not masked
_TIMEOUT = 1008


class Pingable(Protocol):
    def ping(self) -> bool | None: ...


def close_frame(code: int, reason: str) -> bytes:
    """A whole close frame (the reason cut to fit a control frame's 125 bytes)."""
    payload = struct.pack("!H", code) + reason.encode()[:123]
    return bytes((0x88, len(payload))) + payload


PING_TIMEOUT = close_frame(_TIMEOUT, "Ping/Pong timeout")


class Pinger(threading.Thread):
    def __init__(self, interval_s: float) -> None:
        super().__init__(name="kt-pinger", daemon=True)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._wheel: list[set[Pingable]] = [set() for _ in range(SLOTS)]
        self._slot_of: dict[Pingable, int] = {}
        self._turn = 0
        self._stop_event = threading.Event()
        REGISTRY.register(self, "pinger", owner="app")

    def add(self, sock: Pingable) -> None:
        """Ping ``sock`` from one interval from now on (it has just been greeted)."""
        with self._lock:
            slot = (self._turn - 1) % SLOTS
            self._wheel[slot].add(sock)
            self._slot_of[sock] = slot

    def discard(self, sock: Pingable) -> None:
        with self._lock:
            slot = self._slot_of.pop(sock, None)
            if slot is not None:
                self._wheel[slot].discard(sock)

    def __len__(self) -> int:
        return len(self._slot_of)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(timeout)

    def run(self) -> None:
        set_os_thread_name(self.name)
        while not self._stop_event.wait(self.interval_s / SLOTS):
            self.tick()

    def tick(self) -> None:
        """Ping the sockets of the next slot; forget those that are gone."""
        with self._lock:
            due = list(self._wheel[self._turn])
            self._turn = (self._turn + 1) % SLOTS
        for sock in due:
            try:
                pinged = sock.ping()
            except Exception:
                log.exception("ping failed; the socket is no longer pinged")
                pinged = None
            if pinged is None:
                self.discard(sock)
