"""The page where access is locked: a bearer token from Settings, and the page mounted under a
host app's URL prefix with the host's own login."""
from __future__ import annotations

import uuid

import pytest

from kafkatail.config import Config
from kafkatail.security.tokens import hash_token

from helpers import PREFIX, HostServer, close_all, wait_for

from .page import install_probe, markers, open_page, wait_rows

By = pytest.importorskip("selenium.webdriver.common.by", reason="selenium not installed (dev extra)").By

pytestmark = pytest.mark.timeout(120)

TOKEN = "viewer-" + uuid.uuid4().hex


def test_token_from_settings_opens_a_locked_tail(cluster, make_server_, browser):
    server = make_server_(tokens={"viewer": {"sha256": hash_token(TOKEN), "topics": ["**"]}},
                          anonymous_topics="", debug_access="admin")
    t = cluster.create_topic()
    cluster.produce(t, [(None, f"v{i}") for i in range(5)])
    open_page(browser, server, f"topic={t}&from=earliest")
    wait_for(lambda: any("unauthorized" in m for m in markers(browser)), what="a 4401 marker")
    browser.find_element(By.ID, "open-settings").click()
    field = browser.find_element(By.ID, "set-token")
    field.send_keys(TOKEN)
    browser.execute_script("arguments[0].dispatchEvent(new Event('change'))", field)
    assert browser.execute_script("return sessionStorage.getItem('kafkatail.token')") == TOKEN
    browser.get(server.url(f"/?topic={t}&from=earliest"))
    assert len(wait_rows(browser, 5)) == 5
    assert TOKEN not in browser.current_url


def test_page_under_a_host_prefix_with_the_host_login(cluster, browser):
    server = HostServer(Config(bootstrap_servers=cluster.bootstrap, poll_timeout_ms=200,
                               ping_interval_s=5, status_interval_s=1, request_timeout_ms=3000))
    server.thread.start()
    try:
        t = f"kt-embed.{uuid.uuid4().hex[:8]}.public"
        cluster.create_topic(t)
        cluster.produce(t, [(None, f"v{i}") for i in range(4)])
        browser.get(server.url("/"))
        browser.execute_async_script(
            "fetch('/login', {method: 'POST', body: new URLSearchParams({user: 'alice'})})"
            ".then(() => arguments[0]());")
        install_probe(browser)
        browser.get(server.url(f"{PREFIX}/?topic={t}&from=earliest"))
        assert len(wait_rows(browser, 4)) == 4
        options = wait_for(lambda: browser.execute_script(
            "return [...document.querySelectorAll('#topic-list option')].map(o => o.value);"),
            what="the topic list from the prefixed /api/topics")
        assert t in options
    finally:
        close_all()
        browser.get("about:blank")  # the page's socket closes before the server stops
        server.stop()
