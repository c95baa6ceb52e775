"""Tests of what only Apache Kafka can show: real SASL/TLS listeners and ACLs, transactions,
compaction, ListOffsets with multi-record batches. ``make test-kafka`` runs them (the session
broker is then Apache Kafka); on any other broker they skip, naming that target."""
from __future__ import annotations

import secrets

import pytest

from .idp import TokenEndpoint


@pytest.fixture(scope="session")
def apache(cluster):
    """The session's Apache Kafka launcher (listeners, users, test CA)."""
    if cluster.kind != "kafka":
        pytest.skip(f"needs Apache Kafka, the session runs on {cluster.describe()}: "
                    "make test-kafka (KAFKATAIL_TEST_BROKER=kafka)")
    return cluster.broker


@pytest.fixture
def oidc():
    endpoint = TokenEndpoint("alice", "oidc-" + secrets.token_hex(8))
    yield endpoint
    endpoint.stop()
