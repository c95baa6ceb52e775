"""A reaper pass joins orphaned tails only: every tail whose owner still runs is left alone.

Issue #29 (mutation C: the reaper's "is the owner still alive?" check removed, so a pass releases
every tail). The pass is driven here with ``tick()``, not by waiting for the timer, over one
tail of each kind a server holds: two viewers of a shared live feed, a historical tail on its own
thread, and a paused viewer. Each is still served afterwards.
"""
from __future__ import annotations

from helpers import WsClient


def test_a_reaper_pass_leaves_live_tails_alone(cluster, make_server_):
    # The timer never fires during the test, and the historical tail is not handed to the feed
    # (that happens once caught up, every status_interval_s).
    server = make_server_(reaper_interval_s=600, status_interval_s=600)
    pool = server.pool
    reaper = server.app.extensions["kafkatail"]["reaper"]
    topic = cluster.create_topic()
    # One record per batch: Tansu's latest offset is the last batch's base offset + 1.
    cluster.produce(topic, [(f"k{i}", f"old{i}") for i in range(20)], flush_each=True)
    url = server.ws_url(f"/ws/tail/{topic}")
    live = [WsClient(url) for _ in range(2)]
    for c in live:
        c.status("live")
    history = WsClient(url + "?from=earliest")
    assert [r["value"] for r in history.collect(20)] == [f"old{i}" for i in range(20)]
    history.status("caught-up")
    paused = WsClient(url)
    paused.status("live")
    paused.send({"op": "pause"})
    paused.status("paused")

    kinds = sorted((v.describe()["shared"], v.describe()["state"]) for v in pool.tails())
    assert kinds == [(False, "live"), (True, "live"), (True, "live"), (True, "paused")], kinds
    threads = pool.threads()
    assert sorted(t.shared for t in threads) == [False, True], [t.describe() for t in threads]
    tails = {v.tail_id for v in pool.tails()}
    reaped = pool.reaped_total

    reaper.tick()

    assert pool.reaped_total == reaped, "a reaper pass released tails whose owners still run"
    assert {v.tail_id for v in pool.tails()} == tails and pool.stuck == []
    assert all(t.is_alive() for t in threads), [t.describe() for t in threads]
    # Still served: each gets what is produced after the pass (the paused one once resumed).
    cluster.produce(topic, [(f"k{i}", f"new{i}") for i in range(5)])
    new = [f"new{i}" for i in range(5)]
    for c in live:
        assert [r["value"] for r in c.collect(5)] == new
    assert [r["value"] for r in history.collect(25)[20:]] == new
    paused.send({"op": "resume"})
    paused.status("live")
    assert [r["value"] for r in paused.collect(5)] == new
    for c in live + [history, paused]:
        assert c.close_code is None, (c.close_code, c.close_reason)
    assert pool.reaped_total == reaped and len(pool) == 4
