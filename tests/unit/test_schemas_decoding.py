"""The decoder cache: one fetch per id, a wait bounded by the deadline and taken once, failures
remembered (briefly when the registry could not answer), a bounded cache, threads joined."""
import json
import threading
import time

import pytest

from kafkatail.schemas import SchemaError
from kafkatail.schemas.decoding import Schemas
from kafkatail.schemas.registry import Fetched, RegistryError
from tests.helpers import wait_for

AVRO = json.dumps({"type": "record", "name": "R", "fields": [{"name": "n", "type": "long"}]})


class FakeClient:
    """Pure logic under test: a registry that answers from a dict, when let through."""

    def __init__(self, schemas=None):
        self.schemas = schemas or {}
        self.calls = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail = None
        self.closed = False

    def fetch(self, schema_id):
        self.calls.append(schema_id)
        assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        if schema_id not in self.schemas:
            raise RegistryError("id not found in the registry", unknown=True)
        kind, text = self.schemas[schema_id]
        return Fetched(schema_id, kind, text, {})

    def close(self):
        self.closed = True


@pytest.fixture
def made():
    out = []

    def make(client, **kw):
        s = Schemas(client, **kw)
        out.append(s)
        return s
    yield make
    for s in out:
        s.close()


def soon(seconds=2.0):
    return time.monotonic() + seconds


def test_a_known_schema_decodes_and_is_fetched_once(made):
    client = FakeClient({7: ("AVRO", AVRO)})
    schemas = made(client)
    for _ in range(50):
        decoder = schemas.decoder(7, soon())
    assert decoder.encoding == "avro"
    assert decoder.decode(b"\x54") == '{"n":42}'
    assert client.calls == [7]


def test_concurrent_lookups_share_one_fetch(made):
    client = FakeClient({7: ("JSON", "{}")})
    client.gate.clear()
    schemas = made(client)
    results = []

    def look():
        try:
            results.append(schemas.decoder(7, soon(5)).encoding)
        except SchemaError as exc:
            results.append(str(exc))
    threads = [threading.Thread(target=look, name=f"look-{i}") for i in range(8)]
    for t in threads:
        t.start()
    wait_for(lambda: client.calls, 5, "the fetch to start")
    client.gate.set()
    for t in threads:
        t.join(10)
    assert client.calls == [7]
    # The first to ask waited and got it; the others either waited on the same fetch or were
    # told it has not answered yet: never a second fetch.
    assert "json-schema" in results and len(results) == 8


def test_a_hung_registry_costs_one_wait_then_none(made):
    client = FakeClient({7: ("AVRO", AVRO)})
    client.gate.clear()
    schemas = made(client)
    start = time.monotonic()
    with pytest.raises(SchemaError, match="has not answered yet"):
        schemas.decoder(7, time.monotonic() + 0.2)
    first = time.monotonic() - start
    start = time.monotonic()
    for _ in range(100):
        with pytest.raises(SchemaError, match="has not answered yet"):
            schemas.decoder(7, time.monotonic() + 0.2)
    later = time.monotonic() - start
    assert 0.15 < first < 2.0
    assert later < 0.15, "a fetch already waited for must not be waited for again"
    client.gate.set()
    assert wait_for(lambda: _decodes(schemas, 7), 5, "the schema once the registry answers")
    assert client.calls == [7]


def _decodes(schemas, schema_id):
    try:
        return schemas.decoder(schema_id, time.monotonic()).encoding
    except SchemaError:
        return None


def test_an_unknown_id_is_remembered_and_not_asked_again_at_once(made):
    client = FakeClient()
    schemas = made(client, unknown_ttl_s=30)
    for _ in range(20):
        with pytest.raises(SchemaError, match="schema 9: id not found"):
            schemas.decoder(9, soon())
    assert client.calls == [9]


def test_a_registry_down_is_retried_after_a_short_pause_only(made):
    client = FakeClient({7: ("AVRO", AVRO)})
    client.fail = RegistryError("registry http://r unreachable: connection refused")
    schemas = made(client, retry_s=0.3)
    with pytest.raises(SchemaError, match=r"unreachable: connection refused \(retrying\)"):
        schemas.decoder(7, soon())
    for _ in range(100):
        with pytest.raises(SchemaError, match="retrying"):
            schemas.decoder(7, soon())
    assert client.calls == [7], "no fetch while the failure is remembered: nothing spins"
    client.fail = None
    assert wait_for(lambda: _decodes(schemas, 7), 5, "a decoder once the registry is back")
    assert client.calls == [7, 7]


def test_an_unsupported_type_and_a_broken_schema_are_reasons_not_crashes(made):
    client = FakeClient({1: ("XML", "<x/>"), 2: ("AVRO", "{not json")})
    schemas = made(client)
    with pytest.raises(SchemaError, match="schema type XML is not supported"):
        schemas.decoder(1, soon())
    with pytest.raises(SchemaError, match="Avro schema cannot be read"):
        schemas.decoder(2, soon())


def test_the_cache_is_bounded(made):
    client = FakeClient({i: ("JSON", "{}") for i in range(1, 30)})
    schemas = made(client, cache_size=5)
    for i in range(1, 30):
        schemas.decoder(i, soon())
    assert wait_for(lambda: len(schemas._decoders) == 5, 5, "the cache at its bound")
    schemas.decoder(1, soon())
    assert client.calls.count(1) == 2


def test_close_joins_the_registry_threads_and_closes_the_client():
    client = FakeClient({i: ("JSON", "{}") for i in range(1, 5)})
    schemas = Schemas(client, workers=2)
    for i in range(1, 5):
        schemas.decoder(i, soon())
    assert any(t.name.startswith("kt-registry") for t in threading.enumerate())
    schemas.close()
    assert not any(t.name.startswith("kt-registry") for t in threading.enumerate())
    assert client.closed
    with pytest.raises(SchemaError, match="shutting down"):
        schemas.decoder(99, soon())
