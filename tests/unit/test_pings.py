"""The Pinger's wheel: each socket pinged once per turn, sockets that are gone forgotten, and
its thread ends when stopped."""
from __future__ import annotations

import struct

from kafkatail.web.pings import PING_TIMEOUT, SLOTS, Pinger, close_frame

from helpers import wait_for


class FakeSocket:
    def __init__(self, answers: list[bool | None] | None = None) -> None:
        self.pings = 0
        self.answers = answers or []

    def ping(self) -> bool | None:
        self.pings += 1
        return self.answers.pop(0) if self.answers else True


def test_each_socket_is_pinged_once_per_turn_of_the_wheel():
    p = Pinger(interval_s=20)
    socks = [FakeSocket() for _ in range(25)]
    for s in socks:
        p.add(s)
    for _ in range(SLOTS - 1):
        p.tick()
    assert [s.pings for s in socks] == [0] * 25  # added just now: first ping a turn later
    p.tick()
    assert [s.pings for s in socks] == [1] * 25
    for _ in range(3 * SLOTS):
        p.tick()
    assert [s.pings for s in socks] == [4] * 25


def test_a_socket_added_mid_turn_waits_a_whole_turn():
    p = Pinger(interval_s=20)
    for _ in range(3):
        p.tick()
    s = FakeSocket()
    p.add(s)
    ticks = 0
    while not s.pings:
        p.tick()
        ticks += 1
    assert ticks == SLOTS


def test_gone_and_discarded_sockets_are_forgotten():
    p = Pinger(interval_s=20)
    gone, busy, kept = FakeSocket([None]), FakeSocket([False]), FakeSocket()
    for s in (gone, busy, kept):
        p.add(s)
    assert len(p) == 3
    for _ in range(SLOTS):
        p.tick()
    assert len(p) == 2  # busy (not pinged this round) stays
    p.discard(kept)
    p.discard(kept)  # twice is harmless
    for _ in range(SLOTS):
        p.tick()
    assert (gone.pings, busy.pings, kept.pings) == (1, 2, 1)
    assert len(p) == 1


def test_the_thread_pings_on_its_own_and_ends_when_stopped():
    p = Pinger(interval_s=0.05)
    s = FakeSocket()
    p.add(s)
    p.start()
    try:
        wait_for(lambda: s.pings >= 3, 5, lambda: s.pings)
    finally:
        p.stop()
    assert not p.is_alive()


def test_close_frame_is_a_whole_control_frame():
    assert PING_TIMEOUT == b"\x88\x13" + struct.pack("!H", 1008) + b"Ping/Pong timeout"
    long = close_frame(1011, "x" * 500)
    assert long[1] == 125 and len(long) == 127


def test_a_socket_whose_ping_fails_costs_the_others_nothing(caplog):
    class Broken(FakeSocket):
        def ping(self):
            raise RuntimeError("a bug of ours")
    p = Pinger(interval_s=20)
    broken, fine = Broken(), FakeSocket()
    p.add(broken)
    p.add(fine)
    for _ in range(SLOTS):
        p.tick()
    assert fine.pings == 1 and len(p) == 1
    assert "ping failed" in caplog.text
