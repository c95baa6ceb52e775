"""Tests of what only Apache Kafka can show: real SASL/TLS listeners and ACLs, transactions,
compaction, ListOffsets with multi-record batches. Their ``cluster`` is Apache Kafka: the
session's under ``make test-kafka``, else one started for them (``apache_kafka``)."""
from __future__ import annotations

import secrets

import pytest

from .idp import TokenEndpoint


@pytest.fixture(scope="session")
def cluster(apache_kafka):
    return apache_kafka


@pytest.fixture(scope="session")
def apache(cluster):
    """The Apache Kafka launcher (listeners, users, test CA)."""
    return cluster.broker


@pytest.fixture
def oidc():
    endpoint = TokenEndpoint("alice", "oidc-" + secrets.token_hex(8))
    yield endpoint
    endpoint.stop()
