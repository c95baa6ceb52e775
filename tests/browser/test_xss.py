"""Markup from records and from the server's echoes of user input renders as text in Chromium.

``test_page.py`` covers a plain text value, a key and a header. Here: JSON values in the row and
in the record pane (every tree level built), a crafted link naming a topic with markup, and a filter with markup that the server
echoes back in its hello and status frames.
"""
from __future__ import annotations

import json
import urllib.parse

import pytest

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

from helpers import wait_for
from .page import open_page, probe, wait_rows, wait_state

pytestmark = pytest.mark.timeout(120)

IMG = "<img src=x onerror=alert(1)>"
SCRIPT = "</script><script>alert(2)</script>"
# Elements markup would create, and inline handlers anywhere in the document.
INJECTED_JS = """
return document.querySelectorAll(
  '#records img, #records script, #records svg, #status img, #status script, ' +
  '[onerror], [onload], [onclick]').length;
"""


def assert_inert(browser) -> None:
    assert browser.execute_script(INJECTED_JS) == 0
    assert probe(browser)["alerts"] == 0


def test_markup_in_json_values_stays_text_in_the_row_and_the_record_pane(cluster, server,
                                                                          browser):
    t = cluster.create_topic()
    doc = {IMG: SCRIPT, "list": [IMG, {"<svg onload=alert(3)>": 1}]}
    cluster.produce(t, [(SCRIPT, json.dumps(doc), None, [(IMG, SCRIPT.encode())])])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_rows(browser, 1)
    row = browser.find_element(By.CSS_SELECTOR, "#records .record")
    assert IMG in row.find_element(By.CSS_SELECTOR, ".c-val").get_attribute("textContent")
    assert row.find_element(By.CSS_SELECTOR, ".c-key").get_attribute("textContent") == SCRIPT
    row.click()  # the record pane: key, headers and the value as a JSON tree
    pane = browser.find_element(By.ID, "detail")
    wait_for(lambda: pane.is_displayed() and SCRIPT in pane.get_attribute("textContent"),
             what="the record pane")
    for tree in pane.find_elements(By.CSS_SELECTOR, "details"):  # build every level
        if not tree.get_attribute("open"):
            browser.execute_script("arguments[0].open = true;", tree)
    wait_for(lambda: "<svg onload=alert(3)>" in pane.get_attribute("textContent"),
             what="the nested JSON level")
    assert browser.execute_script(
        "return document.querySelectorAll('#detail img, #detail script, #detail svg').length;") == 0
    assert_inert(browser)


def test_markup_in_a_linked_topic_name_stays_text(server, browser):
    """A crafted link (``/?topic=<img ...>``): the page shows the name and the server's 4400."""
    open_page(browser, server, "from=earliest&topic=" + urllib.parse.quote(IMG))
    wait_state(browser, "closed")
    assert browser.find_element(By.ID, "topic").get_attribute("value") == IMG
    assert "4400" in browser.find_element(By.ID, "status-detail").get_attribute("textContent")
    assert_inert(browser)


def test_markup_in_a_live_filter_echo_stays_text(cluster, server, browser):
    t = cluster.create_topic()
    cluster.produce(t, [("k", f"value with {IMG}")])
    open_page(browser, server, f"topic={t}&from=earliest&filter=" + urllib.parse.quote(IMG))
    wait_rows(browser, 1)
    assert browser.find_element(By.ID, "filter").get_attribute("value") == IMG
    value = browser.find_element(By.CSS_SELECTOR, "#records .record .c-val")
    assert value.get_attribute("textContent") == f"value with {IMG}"
    assert_inert(browser)
