"""A feed's greeting reports what retention deleted below a viewer's start (pure logic:
the broker-backed case is test_protocol.py::test_resume_below_retention_reports_the_deleted_offsets)."""
from __future__ import annotations

import json

from kafkatail.config import Config
from kafkatail.tail.feed import Feed
from kafkatail.tail.outbox import Outbox
from kafkatail.tail.request import parse
from kafkatail.tail.viewer import Viewer


def _greeted(viewer, earliest, start):
    """The frames a dedicated feed sends a viewer it greets once positioned (no broker needed)."""
    Feed("t", None, Config(), viewer, 0).position(start, earliest, {p: 10 for p in start})
    return [json.loads(f) for f in viewer.outbox.take()[0]]


def test_retention_gap_frame_for_a_new_request_and_for_a_cursor():
    """Offsets asked for (or a cursor carried over) below the earliest one become a
    ``dropped`` frame with reason ``retention``; the cursor moves past them."""
    new = Viewer(parse("t", {"from": "offsets:0:2,1:7"}), Outbox(100), 1, "c", None)
    hello, dropped = _greeted(new, {0: 5, 1: 0}, {0: 5, 1: 7})
    assert [p["start"] for p in hello["partitions"]] == [5, 7]
    assert dropped == {"type": "dropped", "count": 3, "partitions": {"0": [2, 4]},
                       "reason": "retention"}
    moved = Viewer(parse("t", {}), Outbox(100), 2, "c", None)
    moved.cursor, moved.greeted = {0: 1, 1: 3}, True
    assert _greeted(moved, {0: 4, 1: 3}, {0: 4, 1: 3}) == [
        {"type": "dropped", "count": 3, "partitions": {"0": [1, 3]}, "reason": "retention"}]
    assert moved.cursor == {0: 4, 1: 3}
    kept = Viewer(parse("t", {"from": "offsets:0:5"}), Outbox(100), 3, "c", None)
    assert [f["type"] for f in _greeted(kept, {0: 5}, {0: 5})] == ["hello"]
