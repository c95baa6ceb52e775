"""[[mask]] rules on a real server: masked in every frame, before filters (a search for a masked
value finds nothing), for dedicated tails and shared feeds alike, on decoded Avro too, and
only a token with ``unmasked = true`` sees the record as it is."""
from __future__ import annotations

import json

import websocket
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from helpers import WsClient, tail
from kafkatail.security.tokens import hash_token

CARD = "4111111111111111"
RULES = [{"topics": ["**"], "fields": ["value.card.number", "headers.authorization"]},
         {"topics": ["**"], "fields": ["value.customer.email"], "action": "hash"},
         {"topics": ["**"], "pattern": r"\b\d{13,19}\b"}]
OPS, PLAIN = "ops-token-unmasked", "plain-token"
TOKENS = {"ops": {"sha256": hash_token(OPS), "topics": ["**"], "unmasked": True},
          "plain": {"sha256": hash_token(PLAIN), "topics": ["**"]}}


def records(n: int = 3) -> list[tuple]:
    return [(f"k{i}", json.dumps({"card": {"number": CARD, "exp": "12/29"},
                                   "customer": {"email": f"user{i}@example.com"},
                                   "note": f"paid with {CARD}", "i": i}),
             None, [("authorization", b"Bearer s3cret"), ("trace", b"t-1")])
            for i in range(n)]


def as_token(server, path: str, token: str) -> WsClient:
    return WsClient.adopt(websocket.create_connection(
        server.ws_url(path), timeout=10, header=[f"Authorization: Bearer {token}"]))


def test_masked_in_frames_and_before_filters(cluster, make_server_, backend):
    server = make_server_(mask=RULES)
    t = cluster.create_topic()
    cluster.produce(t, records())
    recs = tail(server, t, "from=earliest").collect(3)
    text = json.dumps(recs)
    assert CARD not in text and "s3cret" not in text and "example.com" not in text
    value = recs[0]["value"]
    assert value["card"] == {"number": "***", "exp": "12/29"} and value["note"] == "paid with ***"
    assert value["customer"]["email"].startswith("hash:")
    assert len({r["value"]["customer"]["email"] for r in recs}) == 3
    assert recs[0]["headers"] == [["authorization", "***"], ["trace", "t-1"]]
    # Nobody can probe a masked value by searching for it.
    probe = tail(server, t, f"from=earliest&filter={CARD}")
    probe.status("caught-up")
    assert probe.records == []
    assert len(tail(server, t, "from=earliest&filter=paid+with+***").collect(3)) == 3


def test_only_an_unmasked_token_sees_the_record_as_it_is(cluster, make_server_):
    server = make_server_(mask=RULES, tokens=TOKENS, anonymous_topics="")
    t = cluster.create_topic()
    # Two live viewers on one shared feed, one of each kind, then records.
    plain = as_token(server, f"/ws/tail/{t}", PLAIN)
    ops = as_token(server, f"/ws/tail/{t}", OPS)
    plain.status("live")
    ops.status("live")
    cluster.produce(t, records(2))
    assert CARD not in json.dumps(plain.collect(2))
    seen = ops.collect(2)
    assert seen[0]["value"]["card"]["number"] == CARD
    assert seen[0]["headers"][0] == ["authorization", "Bearer s3cret"]
    assert server.pool.feeds() == {t: 2}, "both viewers read one shared feed"


def test_decoded_avro_is_masked(cluster, make_server_, schema_registry):
    schema = {"type": "record", "name": "Pay", "fields": [
        {"name": "card", "type": "string"}, {"name": "amount", "type": "long"}]}
    server = make_server_(schema_registry_url=schema_registry.url,
                          mask=[{"topics": ["**"], "fields": ["value.card"]}])
    t = cluster.create_topic()
    ser = AvroSerializer(SchemaRegistryClient({"url": schema_registry.url}), json.dumps(schema))
    cluster.produce(t, [("k", ser({"card": CARD, "amount": 5},
                                  SerializationContext(t, MessageField.VALUE)))])
    rec = tail(server, t, "from=earliest").collect(1)[0]
    assert (rec["encoding"], rec["value"]) == ("avro", {"card": "***", "amount": 5})
