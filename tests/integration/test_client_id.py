"""The ``client.id`` property: what the brokers see (their logs, quotas) for every client,
while each client's IO thread keeps kafkatail's own name, so the thread table and the reaper
still tell the tails apart."""
from __future__ import annotations

import threading

from kafkatail.clientprops import ClientProps
from kafkatail.config import Config
from kafkatail.tail.backend import open_consumer


def test_client_id_goes_to_the_broker_and_threads_keep_their_names(cluster):
    config = Config(bootstrap_servers=cluster.bootstrap,
                    kafka=ClientProps({"client.id": "viewer-x"}))
    consumers = [open_consumer(config, f"kt-{n}") for n in (77, 78)]
    try:
        assert [c.config["client_id"] for c in consumers] == ["viewer-x", "viewer-x"]
        names = {t.name for t in threading.enumerate()}
        assert {"kafka-io-kt-77", "kafka-io-kt-78"} <= names
        assert "kafka-io-viewer-x" not in names
    finally:
        for c in consumers:
            c.close()
