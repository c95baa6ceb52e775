"""Retention in the page: records deleted while it was away. DeleteRecords is what moves a
partition's earliest offset as retention does, and Tansu's memory storage has none, so this runs
on Apache Kafka (``apache_kafka``) whatever the session's broker."""
from __future__ import annotations

import pytest

from helpers import wait_for
from .page import by_partition, conn_state, markers, open_page, wait_rows, wait_state


@pytest.fixture(scope="session")
def cluster(apache_kafka):
    return apache_kafka


def test_records_deleted_while_away_show_as_skipped_once(cluster, make_server_, browser):
    """Records retention deleted while the page was disconnected show as one "skipped" marker;
    the next reconnect resumes after them instead of reporting them again."""
    t = cluster.create_topic(partitions=2)
    first = make_server_()
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20)], flush_each=True)
    open_page(browser, first, f"topic={t}&from=earliest")
    wait_rows(browser, 20)
    first.stop()
    wait_for(lambda: conn_state(browser) == "reconnecting", what="the page noticing the stop")
    cluster.produce(t, [(None, f"v{i}", i % 2) for i in range(20, 30)], flush_each=True)
    cluster.delete_records(t, {0: 15})
    second = make_server_(port=first.port)
    wait_for(lambda: "skipped 5 records (deleted by retention): p0 10–14" in markers(browser),
             timeout=30, what="the retention marker")
    found = wait_rows(browser, 25)
    assert by_partition(found) == {0: list(range(10)), 1: list(range(15))}
    second.stop()
    wait_for(lambda: conn_state(browser) == "reconnecting", what="the page noticing the stop")
    make_server_(port=first.port)
    wait_for(lambda: sum("reconnected after" in m for m in markers(browser)) == 2,
             timeout=30, what="a second reconnected marker")
    wait_state(browser, "live")
    reconnect = [m for m in markers(browser) if "reconnected after" in m]
    assert "offsets:0:15,1:15" in reconnect[1]
    assert sum("deleted by retention" in m for m in markers(browser)) == 1
