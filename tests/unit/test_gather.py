"""A shared feed gathers polls before writing (``feed_writes_per_s``, ``feed_max_delay_ms``).

Pure logic: no thread is started and the records are stand-ins with an offset.
"""
from collections import namedtuple
from types import SimpleNamespace

import pytest
from kafka import TopicPartition

from kafkatail.config import Config
from kafkatail.tail import feed as feed_mod
from kafkatail.tail.consumer import Dedicated, Shared
from kafkatail.tail.feed import Feed, Gathering
from kafkatail.tail.outbox import Outbox
from kafkatail.tail.request import parse
from kafkatail.tail.viewer import Viewer

Rec = namedtuple("Rec", "offset")
TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(feed_mod, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


class Reading:
    """A feed of ``viewers`` viewers read the way ``reading`` reads, and its gathering."""

    def __init__(self, viewers, shared=True, **settings):
        config = Config(**settings)
        self.reading = (Shared if shared else Dedicated)(config)

        def viewer(i):
            return Viewer(parse("t", {}), Outbox(100), i, "test", owner=None)
        self.feed = Feed("t", None, config, viewer(0), self.reading.replay_records())
        for i in range(1, viewers):
            assert self.feed.adopt(viewer(i))
        self.gathering = Gathering(config)

    def gather(self, polled):
        return self.gathering.gather(polled, self.reading.gather_delay(self.feed))

    def poll_ms(self, poll_ms):
        return self.gathering.poll_ms(poll_ms)


def recs(start, n):
    return [Rec(o) for o in range(start, start + n)]


def test_a_feed_with_few_viewers_writes_every_poll(clock):
    polled = {TP0: recs(0, 3)}
    assert Reading(3).gather(polled) is polled  # 3 / 4000 s is under a millisecond


@pytest.mark.parametrize("kind", [{"shared": False}, {"feed_writes_per_s": 0},
                                  {"feed_max_delay_ms": 0}])
def test_dedicated_tails_and_a_zero_setting_never_hold(clock, kind):
    shared = kind.pop("shared", True)
    polled = {TP0: recs(0, 3)}
    assert Reading(200, shared, **kind).gather(polled) is polled


def test_a_poll_after_a_quiet_spell_goes_out_at_once(clock):
    """The pace costs a sparse topic nothing: a record 50 ms or more after the last delivery
    (200 viewers) is delivered as soon as it is polled."""
    feed = Reading(200)
    first = {TP0: recs(0, 1)}
    assert feed.gather(first) is first
    clock.t += 0.051
    second = {TP0: recs(1, 1)}
    assert feed.gather(second) is second and feed.poll_ms(500) == 500


def test_200_viewers_get_polls_within_50_ms_of_a_delivery_as_one_in_order(clock):
    feed = Reading(200)
    assert feed.gather({TP1: recs(0, 1)}) == {TP1: recs(0, 1)}  # the last delivery: at 1000.0
    clock.t += 0.010
    assert feed.gather({TP0: recs(0, 2)}) == {}
    assert feed.poll_ms(500) == 40  # the next poll waits only until the delivery is due
    clock.t += 0.020
    assert feed.gather({TP0: recs(2, 2), TP1: recs(1, 1)}) == {}
    assert feed.poll_ms(500) == 20
    clock.t += 0.020
    ready = feed.gather({})
    assert ready == {TP0: recs(0, 4), TP1: recs(1, 1)}
    assert feed.gather({}) == {} and feed.poll_ms(500) == 500  # nothing held any more
    clock.t += 0.001
    assert feed.gather({TP0: recs(4, 1)}) == {}  # 50 ms after that delivery, not the first


def test_the_delay_is_capped_by_feed_max_delay_ms(clock):
    feed = Reading(200, feed_max_delay_ms=10)
    feed.gather({TP1: recs(0, 1)})
    assert feed.gather({TP0: recs(0, 1)}) == {}
    assert feed.poll_ms(500) == 10
    clock.t += 0.010
    assert feed.gather({}) == {TP0: recs(0, 1)}


def test_a_poll_s_worth_of_records_goes_out_at_once(clock):
    feed = Reading(200, max_poll_records=10)
    feed.gather({TP1: recs(0, 1)})
    assert feed.gather({TP0: recs(0, 6)}) == {}
    assert feed.gather({TP0: recs(6, 4)}) == {TP0: recs(0, 10)}


def test_held_polls_are_copied_not_extended_in_place(clock):
    feed = Reading(200)
    feed.gather({TP1: recs(0, 1)})
    first = recs(0, 2)
    feed.gather({TP0: first})
    feed.gather({TP0: recs(2, 1)})
    assert first == recs(0, 2)
