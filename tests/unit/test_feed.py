"""The Feed on its own: no thread, no socket, no broker. Records are ConsumerRecord stand-ins."""
from __future__ import annotations

import json
from collections import namedtuple

from kafka import TopicPartition

from kafkatail.config import Config
from kafkatail.tail.feed import Feed
from kafkatail.tail.outbox import Outbox
from kafkatail.tail.records import Batch
from kafkatail.tail.request import parse
from kafkatail.tail.viewer import Viewer

Rec = namedtuple("Rec", "topic partition offset timestamp key value headers serialized_key_size "
                        "serialized_value_size serialized_header_size")
TP0 = TopicPartition("t", 0)


def recs(start: int, n: int, partition: int = 0) -> list[Rec]:
    return [Rec("t", partition, o, 1000 + o, None, f"v{o}".encode(), [], -1, 2, -1)
            for o in range(start, start + n)]


def viewer(tail_id: int = 1, **query: str) -> Viewer:
    return Viewer(parse("t", query), Outbox(1000), tail_id, "test", owner=None)


def shared(first: Viewer, replay: int = 5, start: dict | None = None) -> Feed:
    return Feed("t", None, Config(), first, replay, start)


def frames_of(v: Viewer) -> list[dict]:
    """What the viewer's socket would get: control frames, and record offsets per batch."""
    out = []
    for item in v.outbox.take()[0]:
        if isinstance(item, Batch):
            out.append({"offsets": [r["offset"] for r in item.records]})
        else:
            msg = json.loads(item)
            out.append({"offsets": [r["offset"] for r in msg["messages"]]}
                       if msg["type"] == "messages" else msg)
    return out


def offsets(v: Viewer) -> list[int]:
    return [o for f in frames_of(v) for o in f.get("offsets", ())]


def test_position_greets_each_viewer_with_hello_then_live_and_sets_its_cursor():
    v = viewer()
    feed = shared(v)
    feed.position({0: 7}, {0: 0}, {0: 7})
    hello, live = frames_of(v)
    assert hello["type"] == "hello" and hello["partitions"] == [
        {"partition": 0, "start": 7, "end": 7, "earliest": 0}]
    assert live == {"type": "status", "status": "live"}
    assert v.cursor == {0: 7}


def test_a_dedicated_feed_greets_with_hello_only_and_its_thread_says_live():
    v = viewer()
    Feed("t", None, Config(), v, 0).position({0: 0}, {0: 0}, {0: 3})
    assert [f["type"] for f in frames_of(v)] == ["hello"]


def test_take_delivers_past_each_viewer_s_cursor_once():
    a, b = viewer(1), viewer(2)
    feed = shared(a)
    feed.position({0: 0}, {0: 0}, {0: 0})
    assert feed.adopt(b)
    frames_of(a), frames_of(b)
    b.cursor[0] = 2  # b has already seen 0 and 1 (say it came from a dedicated thread)
    feed.take({TP0: recs(0, 4)})
    feed.take({TP0: recs(2, 4)})  # overlapping: nothing is delivered twice
    assert offsets(a) == [0, 1, 2, 3, 4, 5]
    assert offsets(b) == [2, 3, 4, 5]
    assert feed.next == {0: 6}


def test_a_late_viewer_replays_the_window_and_one_behind_it_is_refused():
    first = viewer(1)
    feed = shared(first, replay=3)
    feed.position({0: 0}, {0: 0}, {0: 0})
    feed.take({TP0: recs(0, 5)})  # the window now holds 2, 3, 4
    late = viewer(2)
    late.cursor, late.greeted = {0: 3}, True
    assert feed.adopt(late)
    assert offsets(late) == [3, 4]
    behind = viewer(3)
    behind.cursor, behind.greeted = {0: 1}, True
    assert not feed.adopt(behind)
    assert behind not in feed.viewers


def test_pause_then_resume_replays_what_was_missed_within_the_window():
    a, b = viewer(1), viewer(2)
    feed = shared(a, replay=10)
    feed.position({0: 0}, {0: 0}, {0: 0})
    assert feed.adopt(b)
    frames_of(b)
    assert feed.set_paused(b, True)
    feed.take({TP0: recs(0, 3)})
    assert feed.paused() is False  # a is still reading
    assert feed.set_paused(b, False)
    got = frames_of(b)
    assert [f.get("status") for f in got if f.get("type") == "status"] == ["paused", "live"]
    assert [o for f in got for o in f.get("offsets", ())] == [0, 1, 2]


def test_resuming_behind_the_window_is_refused_for_a_thread_of_its_own():
    a, b = viewer(1), viewer(2)
    feed = shared(a, replay=2)
    feed.position({0: 0}, {0: 0}, {0: 0})
    assert feed.adopt(b)
    assert feed.set_paused(b, True)
    feed.take({TP0: recs(0, 5)})
    assert feed.set_paused(b, False) is False
    assert b.paused


def test_max_ends_the_viewer_at_exactly_n_across_takes():
    v = viewer(max="3")
    feed = shared(v)
    feed.position({0: 0}, {0: 0}, {0: 0})
    frames_of(v)
    feed.take({TP0: recs(0, 2)})
    feed.take({TP0: recs(2, 2)})
    feed.take({TP0: recs(4, 2)})
    items, close = v.outbox.take()
    assert close is not None and close.code == 1000
    assert v.done and v.sent == 3


def test_a_filter_selects_per_viewer_from_one_shared_decode():
    plain, filtered = viewer(1), viewer(2, filter="v2")
    feed = shared(plain)
    feed.position({0: 0}, {0: 0}, {0: 0})
    assert feed.adopt(filtered)
    frames_of(plain), frames_of(filtered)
    feed.take({TP0: recs(0, 4)})
    assert offsets(plain) == [0, 1, 2, 3]
    assert offsets(filtered) == [2]


def test_pass_marker_moves_the_edge_and_the_viewers_standing_at_it():
    a, b = viewer(1), viewer(2)
    feed = shared(a)
    feed.position({0: 4}, {0: 0}, {0: 4})
    assert feed.adopt(b)
    b.cursor[0] = 2  # not standing at the edge
    feed.pass_marker(0, 4, 6)
    assert feed.next == {0: 6} and a.cursor == {0: 6} and b.cursor == {0: 2}
    feed.pass_marker(0, 4, 9)  # a stale edge: nothing moves
    assert feed.next == {0: 6}


def test_retire_only_when_empty_and_then_it_takes_no_one():
    a = viewer(1)
    feed = shared(a)
    assert not feed.retire()
    assert feed.remove(a) == 0
    assert feed.retire()
    assert not feed.adopt(viewer(2))


def test_close_all_closes_every_viewer_and_the_feed():
    a, b = viewer(1), viewer(2)
    feed = shared(a)
    assert feed.adopt(b)
    feed.close_all(1011, "internal error")
    assert feed.closed
    assert all(v.outbox.take()[1].code == 1011 for v in (a, b))
