"""One client against everyone else: attacks on ``kafkatail serve`` (gthread and gevent), each
measured from outside the server process as the attack pass that found them measured them."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import websocket

from integration.test_lifecycle import wait_for
from integration.wsclient import TailClient


def close_code(url: str) -> int | None:
    """Open a tail and read until the server closes it; the close code."""
    ws = websocket.create_connection(url, timeout=20)
    try:
        while True:
            opcode, data = ws.recv_data(control_frame=True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None
    finally:
        ws.shutdown()  # the server has closed: no close handshake left to wait for


def refused_tails(server, paths: list[str]) -> list[int | None]:
    with ThreadPoolExecutor(8, thread_name_prefix="kt-test-attacker") as pool:
        return list(pool.map(lambda p: close_code(server.ws_url(p)), paths))


def series(server) -> set[str]:
    """The /metrics series (names with labels) other than the process collector's."""
    return {k for k in server.metrics() if not k.startswith("process_")}


def test_failed_tails_leave_nothing_behind(server_process, cluster):
    """Finding 3: tails of topics that do not exist, or of partitions a topic lacks, each close
    (4404, 4400) and leave no pool entry, no metric series and no memory behind."""
    topic = f"kt-hostile.{uuid.uuid4().hex[:8]}"
    cluster.create_topic(topic, partitions=2)
    server = server_process(feed_linger_s=0.5, ping_interval_s=60)
    live = TailClient(server.ws_url(f"/ws/tail/{topic}"))
    live.status("live")

    def attack(n: int) -> list[int | None]:
        paths = [f"/ws/tail/kt-missing.{uuid.uuid4().hex[:12]}" if i % 4 else
                 f"/ws/tail/{topic}?partitions={i % 97 + 2}" for i in range(n)]
        return refused_tails(server, paths)

    codes = attack(200)  # warm-up: allocator pools, imports, the metadata of the cluster
    assert set(codes) == {4404, 4400}, codes
    wait_for(lambda: server.tails() == 1, 30, server.tails)
    before, rss_before = series(server), server.worker.memory_info().rss
    codes = attack(1000)
    assert set(codes) == {4404, 4400}
    wait_for(lambda: server.tails() == 1 and server.consumer_threads() == 1, 30,
             lambda: (server.tails(), server.consumer_threads()))
    after, rss_after = series(server), server.worker.memory_info().rss
    assert after == before, sorted(after ^ before)[:10]
    grown = (rss_after - rss_before) / 2**20
    print(f"{server_process.worker_class}: RSS +{grown:.1f} MB over 1,000 refused tails")
    assert grown < 8
    live.close()
