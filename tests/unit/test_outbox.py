import json

from kafkatail.tail import frames
from kafkatail.tail.outbox import Outbox


def batch(start, n, partition=0):
    return [{"partition": partition, "offset": o, "size": 1} for o in range(start, start + n)]


def decoded(out):
    return [json.loads(f) for f in out]


def test_frames_keep_order_and_batches_merge():
    box = Outbox(100)
    box.put_frame(frames.status("live"))
    box.put_records(batch(0, 3))
    box.put_records(batch(3, 2))
    box.put_frame(frames.status("caught-up"))
    out, close = box.take()
    kinds = [f["type"] for f in decoded(out)]
    assert kinds == ["status", "messages", "status"] and close is None
    assert len(decoded(out)[1]["messages"]) == 5


def test_drop_oldest_keeps_newest_and_reports_ranges():
    box = Outbox(5)
    box.put_records(batch(0, 4))
    box.put_records(batch(4, 4))
    out, _ = box.take()
    d = decoded(out)
    assert d[0] == {"type": "dropped", "count": 3, "partitions": {"0": [0, 2]}}
    assert [m["offset"] for m in d[1]["messages"]] == [3, 4, 5, 6, 7]
    assert box.dropped_total == 3


def test_disconnect_policy_closes_and_aborts():
    aborted = []
    box = Outbox(2, "disconnect")
    box.abort = lambda: aborted.append(True)
    box.put_records(batch(0, 3))
    _, close = box.take()
    assert close.code == frames.POLICY and aborted == [True]


def test_notify_on_every_put_and_close():
    calls = []
    box = Outbox(10, notify=lambda: calls.append(1))
    box.put_frame("x")
    box.put_records(batch(0, 1))
    box.put_records([])
    box.close(1000, "done")
    assert len(calls) == 3


def test_stall_detection():
    aborted = []
    box = Outbox(10)
    box.abort = lambda: aborted.append(True)
    assert not box.check_stall(0.0)
    box.sending(True)
    assert box.check_stall(-1.0)
    assert aborted and box.take()[1].code == frames.POLICY
