from helpers import WsClient


def test_tail_from_earliest_receives_records(cluster, server):
    topic = cluster.create_topic(partitions=2)
    cluster.produce(topic, [(f"k{i}", f"v{i}", i % 2) for i in range(10)])
    c = WsClient(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
    hello = c.hello()
    assert [p["partition"] for p in hello["partitions"]] == [0, 1]
    recs = c.collect(10)
    assert sorted(r["value"] for r in recs) == sorted(f"v{i}" for i in range(10))
    c.close()
