"""[[mask]] rules as the page shows them, in headless Chromium: a masked field reads ``***`` in the
list, in the record pane (tree and text views, headers) and in the NDJSON download, and the
unmasked value is nowhere in the page: not in its text, its attributes nor its console API."""
from __future__ import annotations

import json

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

from helpers import wait_for

from .page import open_page, wait_rows

pytestmark = pytest.mark.timeout(120)

CARD = "4111111111111111"
SECRET = "Bearer s3cret-token"
RULES = [{"topics": ["**"], "fields": ["value.card.number", "headers.authorization"],
          "action": "redact"},
         {"topics": ["**"], "pattern": r"\b\d{13,19}\b"}]

# Everything the page holds as text: the DOM's text and every attribute (titles, data-*), the
# form's values, and the records behind the virtual list.
PAGE_TEXT = """
const parts = [document.documentElement.textContent];
for (const node of document.querySelectorAll('*')) {
  for (const attr of node.attributes) parts.push(attr.value);
  if ('value' in node && typeof node.value === 'string') parts.push(node.value);
}
parts.push(JSON.stringify(window.kafkatail.records()));
return parts.join('\\n');
"""


def finished_downloads(folder, pattern: str) -> list:
    """Downloads matching ``pattern`` once Chromium has written them (it reserves the name with
    an empty file and writes into a ``.crdownload`` beside it)."""
    if any(folder.glob("*.crdownload")):
        return []
    return [p for p in folder.glob(pattern) if p.stat().st_size > 0]


def payment(i: int) -> tuple:
    return (f"order-{i}", json.dumps({"card": {"number": CARD, "exp": "12/29"},
                                      "note": f"paid with {CARD}", "amount": 10 + i}),
            None, [("authorization", SECRET.encode()), ("trace", f"t-{i}".encode())])


def assert_nowhere(browser) -> None:
    text = browser.execute_script(PAGE_TEXT)
    assert CARD not in text and SECRET not in text and "s3cret" not in text


def test_masked_fields_in_the_list_the_pane_and_the_download(cluster, make_server_, browser,
                                                             tmp_path):
    server = make_server_(mask=RULES)
    t = cluster.create_topic()
    cluster.produce(t, [payment(i) for i in range(3)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 3)
    # The list: the row's value and headers.
    row = browser.find_element(By.CSS_SELECTOR, '#records .record[data-offset="0"]')
    value = row.find_element(By.CSS_SELECTOR, ".c-val").get_attribute("textContent")
    assert '"number":"***"' in value and '"note":"paid with ***"' in value
    assert row.find_element(By.CSS_SELECTOR, ".c-hdrs").get_attribute("textContent") == (
        "authorization: ***trace: t-0")
    # The pane: every level of the tree, then the value's text view, and the headers table.
    row.click()
    pane = browser.find_element(By.ID, "detail")
    wait_for(lambda: pane.is_displayed() and "12/29" in pane.get_attribute("textContent"),
             what="the record pane")
    for tree in pane.find_elements(By.CSS_SELECTOR, "details"):
        if not tree.get_attribute("open"):
            browser.execute_script("arguments[0].open = true;", tree)
    wait_for(lambda: '"number": "***"' in pane.get_attribute("textContent"),
             what="the masked number in the tree")
    headers = {th.get_attribute("textContent"): td.get_attribute("textContent") for th, td in zip(
        pane.find_elements(By.CSS_SELECTOR, ".hdrs th"), pane.find_elements(By.CSS_SELECTOR, ".hdrs td"))}
    assert headers == {"authorization": "***", "trace": "t-0"}
    text_view = next(b for b in pane.find_elements(By.CSS_SELECTOR, "button.view") if b.text == "text")
    text_view.click()
    shown = wait_for(lambda: pane.find_element(By.CSS_SELECTOR, ".views pre").get_attribute("textContent"),
                     what="the text view")
    assert json.loads(shown) == {"card": {"number": "***", "exp": "12/29"},
                                 "note": "paid with ***", "amount": 10}
    assert_nowhere(browser)
    # The NDJSON download: the records as the page holds them, masked.
    browser.execute_cdp_cmd("Browser.setDownloadBehavior",
                            {"behavior": "allow", "downloadPath": str(tmp_path)})
    browser.find_element(By.ID, "download").click()
    done = wait_for(lambda: finished_downloads(tmp_path, "*.ndjson"), what="the downloaded file")
    content = done[0].read_text(encoding="utf-8")
    assert CARD not in content and "s3cret" not in content
    lines = [json.loads(line) for line in content.splitlines()]
    assert [r["offset"] for r in lines] == [0, 1, 2]
    for r in lines:
        assert r["value"]["card"] == {"number": "***", "exp": "12/29"}
        assert r["value"]["note"] == "paid with ***"
        assert r["headers"][0] == ["authorization", "***"]


def test_a_search_for_the_masked_value_finds_nothing(cluster, make_server_, browser):
    server = make_server_(mask=RULES)
    t = cluster.create_topic()
    cluster.produce(t, [payment(i) for i in range(2)] + [("plain", "no card here")])
    open_page(browser, server, f"topic={t}&from=earliest&filter={CARD}")
    wait_for(lambda: "caught up" in browser.find_element(By.ID, "status-detail").text,
             what="the tail caught up")
    # A filter for what is masked matches nothing; one for the mask's output matches the records.
    assert browser.execute_script("return window.kafkatail.records().length;") == 0
    open_page(browser, server, f"topic={t}&from=earliest&filter=paid+with+***")
    assert len(wait_rows(browser, 2)) == 2
    assert_nowhere(browser)
