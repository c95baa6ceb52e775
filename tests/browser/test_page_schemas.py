"""Records in the Schema Registry wire format on the page (issue #24), in headless Chromium: values
and keys the server decoded show as JSON with their format's badge, and their subjects in the
record pane; those it could not decode say why, in the badge's tooltip and in the pane.

Records are written by confluent-kafka's own AvroSerializer through the suite's registry.
"""
from __future__ import annotations

import base64
import json

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

from confluent_kafka.schema_registry import SchemaRegistryClient  # noqa: E402
from confluent_kafka.schema_registry.avro import AvroSerializer  # noqa: E402
from confluent_kafka.serialization import MessageField, SerializationContext  # noqa: E402

from helpers import wait_for  # noqa: E402

from .page import open_page, probe, shot, wait_rows  # noqa: E402

pytestmark = pytest.mark.timeout(120)

ORDER = {"type": "record", "name": "Order", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"}, {"name": "item", "type": "string"},
    {"name": "qty", "type": "int"}]}
ORDER_KEY = {"type": "record", "name": "OrderKey", "namespace": "shop", "fields": [
    {"name": "id", "type": "long"}]}
IMG = "<img src=x onerror=alert(1)>"

# Installed before app.js: records every URL the page fetches under /api/schemas/.
FETCHES = """
window.__schemaFetches = [];
const nativeFetch = window.fetch;
window.fetch = function (url, ...rest) {
  if (String(url).includes('/api/schemas/')) window.__schemaFetches.push(String(url));
  return nativeFetch.call(this, url, ...rest);
};
"""


def order(i: int) -> dict:
    return {"id": i, "item": f"book {IMG}", "qty": i + 1}


def open_counting(browser, server, query: str) -> None:
    browser.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": FETCHES})
    open_page(browser, server, query)


def schema_fetches(browser) -> list[str]:
    return browser.execute_script("return window.__schemaFetches;")


def records(browser) -> list[dict]:
    return browser.execute_script("return window.kafkatail.records();")


def row(browser, offset: int):
    return browser.find_element(By.CSS_SELECTOR, f"#records .record[data-offset='{offset}']")


def badges(cell) -> list[tuple[str, str]]:
    return [(b.get_attribute("textContent"), b.get_attribute("title"))
            for b in cell.find_elements(By.CSS_SELECTOR, ".badge")]


def open_pane(browser, offset: int):
    """Click the row and return the record pane once it shows that record."""
    row(browser, offset).click()
    pane = browser.find_element(By.ID, "detail")
    wait_for(lambda: pane.is_displayed()
             and browser.find_element(By.ID, "detail-title").text.endswith(f"offset {offset}"),
             what=f"the record pane of offset {offset}")
    return pane


def sections(pane) -> dict[str, object]:
    """The pane's sections by the first word of their title (key, value, ...)."""
    out = {}
    for box in pane.find_elements(By.CSS_SELECTOR, "#detail-body section"):
        out[box.find_element(By.CSS_SELECTOR, "h4").text.split(" ")[0]] = box
    return out


def schema_info(box) -> str:
    """The section's subject line, once its look-up has answered."""
    line = box.find_element(By.CSS_SELECTOR, ".schema-info")
    return wait_for(lambda: (lambda t: "looking up" not in t and t)(line.text), 20,
                    what="the schema's subject line")


def close_pane(browser) -> None:
    browser.find_element(By.ID, "detail-close").click()
    wait_for(lambda: not browser.find_element(By.ID, "detail").is_displayed(), what="pane closed")


@pytest.fixture
def registered(make_server_, schema_registry):
    """A server that decodes through the suite's registry."""
    return make_server_(schema_registry_url=schema_registry.url)


def test_decoded_avro_values_and_keys_show_as_json_with_their_format(
        cluster, registered, schema_registry, browser):
    t = cluster.create_topic()
    with SchemaRegistryClient({"url": schema_registry.url}) as client:  # closes its connections
        values = AvroSerializer(client, json.dumps(ORDER))
        keys = AvroSerializer(client, json.dumps(ORDER_KEY))
        wire = [(keys({"id": i}, SerializationContext(t, MessageField.KEY)),
                 values(order(i), SerializationContext(t, MessageField.VALUE))) for i in range(2)]
    cluster.produce(t, wire)
    open_counting(browser, registered, f"topic={t}&from=earliest")
    wait_rows(browser, 2)
    recs = records(browser)
    assert [(r["encoding"], r["key_encoding"]) for r in recs] == [("avro", "avro")] * 2
    value_id, key_id = recs[0]["value_schema_id"], recs[0]["key_schema_id"]
    assert value_id != key_id

    for i, (key_wire, value_wire) in enumerate(wire):
        r = row(browser, i)
        val = r.find_element(By.CSS_SELECTOR, ".c-val")
        [(text, title)] = badges(val)
        assert text == f"avro · schema {value_id}"
        assert "decoded through the Schema Registry" in title
        # The value is its JSON, as an "encoding": "json" one: no payload, no wire bytes.
        shown = val.find_element(By.CSS_SELECTOR, ".json").get_attribute("textContent")
        assert shown == json.dumps(order(i), separators=(",", ":"))
        assert val.get_attribute("textContent") == text + shown
        assert base64.b64encode(value_wire[5:]).decode() not in val.get_attribute("textContent")
        key = r.find_element(By.CSS_SELECTOR, ".c-key")
        [(text, title)] = badges(key)
        assert text == "avro" and f"decoded through the Schema Registry: avro, schema id {key_id}" in title
        assert key.get_attribute("textContent") == text + json.dumps({"id": i}, separators=(",", ":"))
        assert "undecoded" not in r.get_attribute("textContent")

    pane = open_pane(browser, 0)
    box = sections(pane)
    assert box["value"].find_element(By.CSS_SELECTOR, "h4").text.startswith(
        f"value · avro · schema {value_id} · ")
    assert [b.text for b in box["value"].find_elements(By.CSS_SELECTOR, ".view")] == ["tree", "text"]
    tree = box["value"].find_element(By.CSS_SELECTOR, "details.jt")
    assert tree.get_attribute("open") and '"item": ' in tree.text and IMG in tree.text
    assert schema_info(box["value"]) == f"subject {t}-value · version 1"
    assert box["key"].find_element(By.CSS_SELECTOR, "h4").text == f"key · avro · schema {key_id}"
    assert schema_info(box["key"]) == f"subject {t}-key · version 1"
    assert box["key"].find_elements(By.CSS_SELECTOR, "details.jt")  # the key's document, as a tree
    assert not pane.find_elements(By.CSS_SELECTOR, ".decode-error")
    shot(browser, "page-schemas")

    # Every schema id is asked for once: the second record and the first again use the answers.
    pane = open_pane(browser, 1)
    assert schema_info(sections(pane)["value"]) == f"subject {t}-value · version 1"
    close_pane(browser)
    pane = open_pane(browser, 0)
    assert schema_info(sections(pane)["key"]) == f"subject {t}-key · version 1"
    assert sorted(u.rsplit("/", 1)[1] for u in schema_fetches(browser)) == sorted(
        [str(value_id), str(key_id)])
    assert probe(browser)["alerts"] == 0
    assert browser.execute_script("return document.querySelectorAll('#records img, #detail img').length;") == 0


def test_an_unknown_schema_id_shows_undecoded_with_the_reason(
        cluster, registered, schema_registry, browser):
    t = cluster.create_topic()
    value = b"\x00" + (987654).to_bytes(4, "big") + b"xx"
    key = b"\x00" + (987655).to_bytes(4, "big") + b"yy"
    cluster.produce(t, [(key, value), ("plain", "still text")])
    open_counting(browser, registered, f"topic={t}&from=earliest")
    wait_rows(browser, 2)
    rec = records(browser)[0]
    reason, key_reason = rec["decode_error"], rec["key_decode_error"]
    assert "987654" in reason and "987655" in key_reason

    r = row(browser, 0)
    val = r.find_element(By.CSS_SELECTOR, ".c-val")
    assert badges(val) == [("schema 987654 · undecoded", reason)]
    assert base64.b64encode(b"xx").decode() in val.get_attribute("textContent")
    key_cell = r.find_element(By.CSS_SELECTOR, ".c-key")
    assert badges(key_cell) == [("schema 987655 · undecoded", key_reason)]
    assert key_cell.get_attribute("textContent").endswith(base64.b64encode(key).decode())
    assert not badges(row(browser, 1).find_element(By.CSS_SELECTOR, ".c-val"))

    pane = open_pane(browser, 0)
    box = sections(pane)
    assert box["value"].find_element(By.CSS_SELECTOR, "h4").text.startswith(
        "value · json · schema 987654, undecoded · ")
    assert box["value"].find_element(By.CSS_SELECTOR, ".decode-error").text == f"not decoded: {reason}"
    assert box["key"].find_element(By.CSS_SELECTOR, ".decode-error").text == f"not decoded: {key_reason}"
    info = schema_info(box["value"])
    assert info.startswith("subject unknown: ") and "987654" in info, info
    assert schema_info(box["key"]).startswith("subject unknown: ")
    shot(browser, "page-schemas-undecoded")
    # A failed look-up is kept too: opening the record again asks nothing more.
    close_pane(browser)
    pane = open_pane(browser, 0)
    assert schema_info(sections(pane)["value"]) == info
    assert sorted(u.rsplit("/", 1)[1] for u in schema_fetches(browser)) == ["987654", "987655"]


def test_without_a_registry_the_pane_says_so(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [("k", b"\x00\x00\x00\x00\x07\x0corder1")])
    open_counting(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    reason = records(browser)[0]["decode_error"]
    assert "no schema registry configured" in reason
    assert badges(row(browser, 0).find_element(By.CSS_SELECTOR, ".c-val")) == [
        ("schema 7 · undecoded", reason)]
    box = sections(open_pane(browser, 0))
    assert box["value"].find_element(By.CSS_SELECTOR, ".decode-error").text == f"not decoded: {reason}"
    assert schema_info(box["value"]) == f"subject unknown: {reason}"
