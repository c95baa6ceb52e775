"""A shared feed gathers polls before writing (``feed_writes_per_s``, ``feed_max_delay_ms``).

Pure logic: the ConsumerThread is never started and the records are stand-ins with an offset.
"""
from collections import namedtuple
from types import SimpleNamespace

import pytest
from kafka import TopicPartition

from kafkatail.config import Config
from kafkatail.tail import consumer as consumer_mod
from kafkatail.tail.consumer import ConsumerThread
from kafkatail.tail.outbox import Outbox
from kafkatail.tail.request import parse
from kafkatail.tail.viewer import Viewer

Rec = namedtuple("Rec", "offset")
TP0, TP1 = TopicPartition("t", 0), TopicPartition("t", 1)


@pytest.fixture
def clock(monkeypatch):
    now = SimpleNamespace(t=1000.0)
    monkeypatch.setattr(consumer_mod, "time", SimpleNamespace(monotonic=lambda: now.t))
    return now


def feed(viewers, shared=True, **settings):
    def viewer(i):
        return Viewer(parse("t", {}), Outbox(100), i, "test", owner=None)
    thread = ConsumerThread(None, "t", None, Config(**settings), 1, shared, viewer(0))
    for i in range(1, viewers):
        assert thread.adopt(viewer(i))
    return thread


def recs(start, n):
    return [Rec(o) for o in range(start, start + n)]


def test_a_feed_with_few_viewers_writes_every_poll(clock):
    polled = {TP0: recs(0, 3)}
    assert feed(3)._gather(polled) is polled  # 3 / 4000 s is under a millisecond


@pytest.mark.parametrize("kind", [{"shared": False}, {"feed_writes_per_s": 0},
                                  {"feed_max_delay_ms": 0}])
def test_dedicated_tails_and_a_zero_setting_never_hold(clock, kind):
    shared = kind.pop("shared", True)
    polled = {TP0: recs(0, 3)}
    assert feed(200, shared, **kind)._gather(polled) is polled


def test_200_viewers_get_50_ms_of_polls_as_one_delivery_in_order(clock):
    thread = feed(200)
    assert thread._gather({TP0: recs(0, 2)}) == {}
    assert thread._poll_ms(500) == 50  # the next poll waits only until the delivery is due
    clock.t += 0.020
    assert thread._gather({TP0: recs(2, 2), TP1: recs(0, 1)}) == {}
    assert thread._poll_ms(500) == 30
    clock.t += 0.030
    ready = thread._gather({})
    assert ready == {TP0: recs(0, 4), TP1: recs(0, 1)}
    assert thread._gather({}) == {} and thread._poll_ms(500) == 500  # nothing held any more


def test_the_delay_is_capped_by_feed_max_delay_ms(clock):
    thread = feed(200, feed_max_delay_ms=10)
    assert thread._gather({TP0: recs(0, 1)}) == {}
    assert thread._poll_ms(500) == 10
    clock.t += 0.010
    assert thread._gather({}) == {TP0: recs(0, 1)}


def test_a_poll_s_worth_of_records_goes_out_at_once(clock):
    thread = feed(200, max_poll_records=10)
    assert thread._gather({TP0: recs(0, 6)}) == {}
    assert thread._gather({TP0: recs(6, 4)}) == {TP0: recs(0, 10)}


def test_held_polls_are_copied_not_extended_in_place(clock):
    thread = feed(200)
    first = recs(0, 2)
    thread._gather({TP0: first})
    thread._gather({TP0: recs(2, 1)})
    assert first == recs(0, 2)
