"""Releasing a tail ends its thread by the thread's stop Event, in-process (issue #29).

A dedicated thread also ends by itself once ``release`` has emptied its viewer list: at the
check after its next ``poll``. So the test puts the thread where that check comes late: it has
read the whole topic (the next poll waits its full ``poll_timeout_ms``: there is nothing to
fetch) and waits in ``Dedicated.hold`` for a client that never reads. ``release`` wakes it (the
outbox is discarded); with its Event set it leaves at the top of the loop, at once. Without the
Event (``stop()`` setting nothing, or the loop not looking at it) it polls once more, and ends only
after that poll, a full poll timeout later. The poll timeout is long here (3 s) so that
difference is far wider than a loaded machine's noise.

(Releasing a thread that is still fetching, or a feed, cannot tell the two apart: it ends in
under a poll timeout either way. One window remains: ``release`` wakes the thread before it
sets the Event, so a thread scheduled in between polls once more; that takes the releasing
thread losing the GIL within a few microseconds, and was never seen here, even under load.)
"""
from __future__ import annotations

import socket
import time

import websocket
from kafka import KafkaProducer

from helpers import WsClient, wait_for

POLL_MS = 3000
# Released while held, the thread ends at once; its consumer then closes. Without the Event it
# ends after one more full poll (POLL_MS). Half of it: generous, and still well apart.
BOUND_S = POLL_MS / 1000 / 2
BIG = 50            # 200 KB records: 10 MB, more than the socket buffers take...
MAX_RECORDS = 200   # ...fewer than half the outbox cap, so the tail reads them all; then...
# ...one batch of small records, half the cap on its own: one poll (a poll takes at most half
# the cap) puts them all in the outbox, and then the thread waits.
SMALL = MAX_RECORDS // 2


def never_reads(url: str) -> websocket.WebSocket:
    """A client with a 4 KB receive buffer that never reads (nor answers pings)."""
    ws = websocket.create_connection(url, timeout=10,
                                     sockopt=((socket.SOL_SOCKET, socket.SO_RCVBUF, 4096),))
    WsClient.adopt(ws)  # closed by the suite after the test
    return ws


def produce_one_batch(cluster, topic: str, n: int) -> None:
    """n small records in one producer batch, so one poll fetches them all."""
    producer = KafkaProducer(bootstrap_servers=cluster.bootstrap, client_id="kt-test-producer",
                             linger_ms=1000, batch_size=1 << 20, **cluster.client_settings)
    try:
        for i in range(n):
            producer.send(topic, key=f"s{i}".encode(), value=b"s" * 100)
        producer.flush()
    finally:
        producer.close(timeout=5)


def test_release_ends_a_thread_by_its_stop_event(cluster, make_server_):
    # No hand-over to a feed: the tail keeps its own thread once caught up.
    server = make_server_(poll_timeout_ms=POLL_MS, outbox_max_records=MAX_RECORDS,
                          outbox_max_bytes=256 << 20, send_timeout_s=60, ping_interval_s=60,
                          share_live_feeds=False)
    pool = server.pool
    topic = cluster.create_topic()
    cluster.produce(topic, [(f"k{i}", "v" * 200_000) for i in range(BIG)])
    never_reads(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    wait_for(lambda: len(pool.tails()) == 1, 10, pool.tails)
    [viewer] = pool.tails()
    state = lambda: (viewer.cursor, viewer.outbox.behind(), viewer.describe())  # noqa: E731
    # Read to the end: the socket is full (its session blocked sending), the rest queued.
    wait_for(lambda: viewer.cursor == {0: BIG}, 60, state)
    assert not viewer.outbox.behind(), state()
    produce_one_batch(cluster, topic, SMALL)
    # All read, and the thread waits in Dedicated.hold for the client: its next poll finds nothing.
    wait_for(lambda: viewer.cursor == {0: BIG + SMALL} and viewer.outbox.behind(), 30, state)
    [thread] = pool.threads()
    assert thread is viewer.thread and not thread.shared and not viewer.done
    assert thread.is_alive() and not thread.stopping

    start = time.monotonic()
    joined = pool.release(viewer)  # joins the thread (for up to poll + request timeout)
    took = time.monotonic() - start
    assert joined and not thread.is_alive(), thread.describe()
    assert took <= BOUND_S, (
        f"the released thread ended {took * 1000:.0f} ms after release (bound "
        f"{BOUND_S * 1000:.0f} ms, poll timeout {POLL_MS} ms): not by its stop Event")
    assert thread.stopping, "release did not set the thread's stop Event"
    assert thread not in pool.threads() and pool.stuck == []
    print(f"released while held: thread ended in {took * 1000:.0f} ms "
          f"(poll timeout {POLL_MS} ms, bound {BOUND_S * 1000:.0f} ms)")
