"""Masking rules: parsing, each action on fields, wildcards, headers, keys and text, patterns,
and a property test that no masked value survives in what is shown."""
from __future__ import annotations

import json
import logging
from collections import namedtuple

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kafkatail.tail.masking import Masker, check_masks, parse_rules
from kafkatail.tail.records import Batch, decode_batch, record_json

KEY = b"k" * 32


def masker(*tables, topic="pay.eu"):
    return Masker.for_topic(parse_rules(list(tables)), topic, KEY)


def run(m, value, encoding="json", key=None, key_encoding=None, headers=()):
    text = json.dumps(value, separators=(",", ":")) if encoding == "json" else value
    k, ke, v, e, h = m.record(key, key_encoding, text, encoding, [list(x) for x in headers])
    return k, ke, (json.loads(v) if e == "json" else v), e, h


ORDER = {"card": {"number": "4111111111111111", "exp": "12/29"},
         "customer": {"email": "ada@example.com", "name": "Ada"},
         "lines": [{"sku": "a", "email": "x@y.z"}, {"sku": "b", "email": "p@q.r"}], "amount": 12}


def test_redact_hash_and_remove_fields():
    _, _, v, _, _ = run(masker({"topics": ["pay.*"], "fields": ["value.card.number"]}), ORDER)
    assert v["card"] == {"number": "***", "exp": "12/29"}
    m = masker({"topics": ["pay.*"], "fields": ["value.customer.email"], "action": "hash"})
    _, _, v, _, _ = run(m, ORDER)
    again = run(m, ORDER)[2]
    assert v["customer"]["email"].startswith("hash:") and v == again
    assert v["customer"]["email"] != run(m, {**ORDER, "customer": {"email": "b@x"}})[2][
        "customer"]["email"]
    _, _, v, _, _ = run(masker({"topics": ["pay.*"], "fields": ["value.card"],
                                "action": "remove"}), ORDER)
    assert "card" not in v and v["amount"] == 12


def test_a_wildcard_is_one_level_of_keys_or_elements():
    _, _, v, _, _ = run(masker({"topics": ["**"], "fields": ["value.lines.*.email",
                                                             "value.*.email"]}), ORDER)
    assert [line["email"] for line in v["lines"]] == ["***", "***"]
    assert v["customer"]["email"] == "***" and v["customer"]["name"] == "Ada"


def test_a_pattern_masks_only_its_matches_and_numbers_count_as_text():
    rule = {"topics": ["**"], "pattern": r"\d{13,19}"}
    value = {"note": "card 4111111111111111 used", "n": 4111111111111111, "small": 7}
    _, _, v, _, h = run(masker(rule), value, headers=[("x-card", "4111111111111111"),
                                                      ("bin", "AAEC", "base64")])
    assert v == {"note": "card *** used", "n": "***", "small": 7}
    assert h == [["x-card", "***"], ["bin", "AAEC", "base64"]]
    k, _, t, _, _ = run(masker(rule), "paid with 4111111111111111", "text", key="4111111111111111",
                        key_encoding="text")
    assert (k, t) == ("***", "paid with ***")


def test_keys_headers_text_and_binary_values():
    m = masker({"topics": ["**"], "fields": ["key", "headers.authorization", "value"]})
    k, ke, v, e, h = run(m, "c2VjcmV0", "base64", key="user-42", key_encoding="text",
                         headers=[("authorization", "Bearer abc"), ("trace", "t1")])
    assert (k, ke, v, e) == ("***", "text", "***", "text")
    assert h == [["authorization", "***"], ["trace", "t1"]]
    m = masker({"topics": ["**"], "fields": ["headers.authorization", "value"],
                "action": "remove"})
    _, _, v, e, h = run(m, {"a": 1}, headers=[("authorization", "Bearer abc")])
    assert (v, e, h) == (None, "null", [])


def test_a_decoded_key_is_masked_by_its_fields():
    m = masker({"topics": ["**"], "fields": ["key.ssn"]})
    k, ke, _, _, _ = run(m, {"a": 1}, key='{"ssn":"123-45-6789","id":1}', key_encoding="avro")
    assert (json.loads(k), ke) == ({"ssn": "***", "id": 1}, "avro")


def test_rules_apply_to_their_topics_only():
    assert masker({"topics": ["hr.**"], "fields": ["value"]}, topic="pay.eu") is None


@pytest.mark.parametrize("tables, problem", [
    ({"topics": ["a"]}, "must be [[mask]] tables"),
    ([{"topics": ["a"], "fields": ["value.x"], "action": "shred"}], "action must be one of"),
    ([{"fields": ["value.x"]}], "topics (a list of patterns) is required"),
    ([{"topics": ["a"]}], "give fields, a pattern, or both"),
    ([{"topics": ["a"], "fields": ["body.x"]}], "must start with value, key or headers."),
    ([{"topics": ["a"], "pattern": "("}], "pattern:"),
    ([{"topics": ["a"], "fields": ["value"], "colour": "red"}], "keys are"),
])
def test_bad_tables_are_named(tables, problem):
    assert problem in (check_masks(tables) or "")


SECRET = st.from_regex(r"SECRET[0-9]{4}", fullmatch=True)
LEAF = st.one_of(st.integers(), st.booleans(), st.none(), st.text(max_size=8), SECRET)
DOC = st.recursive(LEAF, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from("abcde"), inner, max_size=4)),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(doc=DOC, key=st.one_of(st.none(), SECRET, st.text(max_size=6)),
       header=st.one_of(SECRET, st.text(max_size=6)),
       action=st.sampled_from(["redact", "hash", "remove"]))
def test_no_masked_value_survives_anywhere(doc, key, header, action):
    m = masker({"topics": ["**"], "pattern": r"SECRET[0-9]{4}", "action": action})
    k, _, v, _, h = m.record(key, "text" if key is not None else None,
                             json.dumps(doc), "json", [["h", header]])
    assert "SECRET" not in json.dumps([k, v, h])


@settings(max_examples=200, deadline=None)
@given(doc=st.dictionaries(st.sampled_from("abc"), st.dictionaries(st.sampled_from("xyz"),
                                                                  SECRET, min_size=1), min_size=1),
       action=st.sampled_from(["redact", "hash", "remove"]))
def test_a_wildcard_field_rule_leaves_no_value_it_names(doc, action):
    m = masker({"topics": ["**"], "fields": ["value.*.x", "value.*.y", "value.*.z"],
                "action": action})
    _, _, v, _, _ = m.record(None, None, json.dumps(doc), "json", [])
    assert "SECRET" not in (v or "")


RECORD = namedtuple("RECORD", "partition offset timestamp key value headers serialized_key_size "
                              "serialized_value_size serialized_header_size")
RAW = st.one_of(DOC.map(lambda d: json.dumps(d).encode()), st.text(max_size=30).map(str.encode),
                SECRET.map(str.encode), st.binary(max_size=20))


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(RAW, min_size=1, max_size=5), key=st.one_of(st.none(), SECRET),
       action=st.sampled_from(["redact", "hash", "remove"]),
       fields=st.sampled_from([[], ["value.a", "value.*.b", "key", "headers.h"], ["value"]]))
def test_no_masked_value_reaches_a_frame_an_export_line_or_a_log(values, key, action, fields,
                                                                  caplog):
    """Frames are Batch.json(), export lines record_json(): both from decode_batch's output."""
    caplog.set_level(logging.DEBUG)
    rules = [{"topics": ["**"], "pattern": r"SECRET[0-9]{4}", "action": action}]
    if fields:
        rules.append({"topics": ["**"], "fields": fields, "action": action})
    m = masker(*rules)
    recs = [RECORD(0, i, 0, key.encode() if key else None, raw, [("h", raw)], 1, len(raw), 1)
            for i, raw in enumerate(values)]
    decoded = decode_batch(recs, "auto", 1 << 20, masker=m)
    shown = Batch([d[0] for d in decoded]).json() + "".join(record_json(d[0]) for d in decoded)
    shown += json.dumps([[d[1], d[2]] for d in decoded])  # what filters see
    assert "SECRET" not in shown
    assert not any("SECRET" in r.getMessage() for r in caplog.records)
    caplog.clear()
