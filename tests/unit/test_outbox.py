import json

from kafkatail.tail import frames
from kafkatail.tail.outbox import ByteBudget, Outbox
from kafkatail.tail.records import Batch


def batch(start, n, partition=0, size=1):
    """Protocol records of ``size`` bytes each."""
    return Batch([{"partition": partition, "offset": o, "timestamp": 0, "key": None,
                   "key_encoding": None, "value": "v", "encoding": "text", "headers": [],
                   "size": size} for o in range(start, start + n)])


def decoded(out):
    """Frames as the client reads them (a lone batch comes back as the Batch itself)."""
    return [json.loads(f if isinstance(f, str) else frames.messages_joined([f.json()]))
            for f in out]


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
    box = Outbox(2, "disconnect", abort=lambda: aborted.append(True))
    box.put_records(batch(0, 3))
    _, close = box.take()
    assert close.code == frames.POLICY and aborted == [True]


def test_notify_on_every_put_and_close():
    calls = []
    box = Outbox(10, notify=lambda: calls.append(1))
    box.put_frame("x")
    box.put_records(batch(0, 1))
    box.put_records(Batch([]))
    box.close(1000, "done")
    assert len(calls) == 3


def test_stall_detection():
    aborted = []
    box = Outbox(10, abort=lambda: aborted.append(True))
    assert not box.check_stall(0.0)
    box.put_records(batch(0, 1))
    box.take()
    assert box.check_stall(-1.0)
    assert aborted and box.take()[1].code == frames.POLICY


class Writer:
    """A socket's non-blocking write, as the outbox sees it: answers what it is told to."""

    def __init__(self, answer=True):
        self.answer = answer
        self.batches = []

    def __call__(self, batch):
        self.batches.append(batch)
        return self.answer


def test_an_idle_socket_is_written_by_the_producer():
    calls = []
    writer = Writer()
    box = Outbox(10, notify=lambda: calls.append(1), writer=writer)
    box.put_records(batch(0, 2))
    assert [len(b) for b in writer.batches] == [2] and not calls
    assert box.take() == ([], None) and box.frames_direct == 1


def test_nothing_is_written_past_what_is_queued_or_being_sent():
    writer = Writer()
    box = Outbox(100, writer=writer)
    box.put_frame(frames.status("live"))
    box.put_records(batch(0, 1))  # behind a queued frame
    assert not writer.batches
    out, _ = box.take()  # the socket side is now sending
    box.put_records(batch(1, 1))
    assert not writer.batches
    box.sent()
    out2, _ = box.take()
    box.sent()
    assert [f["type"] for f in decoded(out + out2)] == ["status", "messages", "messages"]
    box.put_records(batch(2, 1))
    assert len(writer.batches) == 1 and box.frames_queued == 2


def test_a_refused_write_queues_and_a_partial_one_wakes_the_socket():
    calls = []
    writer = Writer(False)
    box = Outbox(100, notify=lambda: calls.append(1), writer=writer)
    box.put_records(batch(0, 1))
    out, _ = box.take()
    assert [m["offset"] for m in decoded(out)[0]["messages"]] == [0]
    box.sent()
    calls.clear()
    writer.answer = None
    box.put_records(batch(1, 1))
    assert calls == [1] and box.frames_direct == 1
    assert box.take() == ([], None)
    assert box.check_stall(-1.0)  # finishing the remainder counts as sending


def test_drops_are_reported_before_anything_is_written_directly():
    writer = Writer(False)
    box = Outbox(2, writer=writer)
    box.put_records(batch(0, 3))
    writer.answer = True
    box.put_records(batch(3, 1))
    assert len(writer.batches) == 1  # the first try only: a dropped frame is owed first
    out, _ = box.take()
    assert decoded(out)[0]["type"] == "dropped"


def test_bytes_cap_drops_oldest_once_behind():
    """A put made while under half the byte cap may overshoot it (a waiting producer's one
    poll); a put made while behind is cut back to the cap, oldest first, with the ranges."""
    box = Outbox(1000, max_bytes=1000)
    box.put_records(batch(0, 12, size=100))    # was not behind: kept whole, 1,200 bytes
    assert box.behind()
    box.put_records(batch(12, 3, size=100))    # behind: cut to 1,000 bytes
    out, _ = box.take()
    d = decoded(out)
    assert d[0] == {"type": "dropped", "count": 5, "partitions": {"0": [0, 4]}}
    assert [m["offset"] for m in d[1]["messages"]] == list(range(5, 15))
    assert not box.behind()


def test_process_budget_is_shared_and_given_back():
    budget = ByteBudget(1000)
    slow, other = Outbox(1000, budget=budget), Outbox(1000, budget=budget)
    slow.put_records(batch(0, 9, size=100))
    other.put_records(batch(0, 2, size=100))   # over the budget: other is now behind
    assert budget.total == 1100 and other.behind()
    other.put_records(batch(2, 1, size=100))   # put while behind: cut until under the budget
    assert budget.total <= 1000 and other.dropped_total >= 1
    slow.discard()
    other.take()
    assert budget.total == 0
    slow.put_records(batch(9, 1, size=100))    # released: takes nothing more
    assert budget.total == 0


def test_disconnect_policy_applies_to_bytes():
    aborted = []
    box = Outbox(1000, policy="disconnect", max_bytes=1000, abort=lambda: aborted.append(True))
    box.put_records(batch(0, 6, size=100))
    box.put_records(batch(6, 6, size=100))
    _, close = box.take()
    assert aborted and close.code == frames.POLICY
