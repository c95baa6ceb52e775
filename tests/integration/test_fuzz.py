"""Hostile input, generated: query parameters, topic names, control frames and API paths against
the real in-process server and broker. Every input yields a working tail (a hello, and an answer
to a probe) or a documented close code with a reason; never HTTP 500, never a stack trace in the
log; the thread guard checks that nothing is left behind."""
from __future__ import annotations

import json
import logging
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
import websocket
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from helpers import Closed, WsClient

# The close codes README.rst documents for input a client controls (1011 is a server fault), and
# the router's HTTP 404 for a path that names no route (a topic with a newline, say).
DOCUMENTED = {1000, 1008, 1009, 1013, 4400, 4401, 4403, 4404, 404}
MAX_INBOUND = 4096
FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def topic(cluster):
    name = f"kt-fuzz.{uuid.uuid4().hex[:8]}"
    cluster.create_topic(name, partitions=2)
    cluster.produce(name, [(f"k{i}", json.dumps({"i": i, "s": "x" * 50}), i % 2)
                           for i in range(20)])
    return name


@pytest.fixture
def fuzz_server(make_server_):
    return make_server_(anonymous_topics="kt-fuzz.** !kt-fuzz.secret.**", connect_rate_per_client=0,
                        max_inbound_bytes=MAX_INBOUND)


@pytest.fixture
def clean_log(caplog):
    caplog.set_level(logging.WARNING)
    yield caplog
    bad = [r for r in caplog.records if r.exc_info or "Traceback" in r.getMessage()]
    assert not bad, [r.getMessage()[:300] for r in bad]


text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40)
# Digits of other scripts and superscripts: str.isdigit() passes them, int() may not.
unicode_digits = st.text(st.characters(categories=("Nd", "No")), min_size=1, max_size=6)
numbers = st.one_of(st.integers(-2**70, 2**70).map(str), unicode_digits,
                    unicode_digits.map(lambda d: "-" + d))


def mostly(valid: list[str], *hostile: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Valid values three times in four, so whole requests are often valid enough to tail."""
    good, bad = st.sampled_from(valid), st.one_of(*hostile)
    return st.sampled_from([True, True, True, False]).flatmap(lambda ok: good if ok else bad)


from_values = mostly(
    ["latest", "earliest", "-1", "-5", "ts:0", "ts:2026-01-01T00:00:00", "offsets:0:0,1:3"],
    st.sampled_from(["-0", "-100001", "ts:9999999999999999", "offsets:0:0,0:1", "offsets:7:0",
                     "offsets:-1:0", "offsets:", "ts:x"]),
    numbers.map(lambda n: "-" + n), numbers.map(lambda n: "ts:" + n),
    st.lists(st.tuples(st.integers(-3, 9), st.integers(-3, 10**12)), max_size=4).map(
        lambda ps: "offsets:" + ",".join(f"{p}:{o}" for p, o in ps)),
    st.lists(st.tuples(numbers, numbers), min_size=1, max_size=3).map(
        lambda ps: "offsets:" + ",".join(f"{p}:{o}" for p, o in ps)),
    text)
params = st.fixed_dictionaries({}, optional={
    "from": from_values,
    "partitions": mostly(["0", "1", "0,1"], st.sampled_from(["7", "-1", "0,,1", ""]), numbers,
                         text),
    "filter": mostly(["k1", "", "x"], st.just("x" * 2000), text),
    "regex": mostly(["", "k1", r"\d+", "(?i)K", "x+y+z", "(a|aa)+b", r"(\d)\1"],
                    st.sampled_from(["(a+)+$", r"(\w+\s?)*$", "(?:a{9999}){9999}", "[",
                                     "(?P<x>", r"\1", "a" * 600, "(?<=a+)b",
                                     r"(?:.|.){25}\b\B"]), text),
    "max": mostly(["1", "5", "100"], st.sampled_from(["0", "10000001", "-3", "1e3"]), numbers,
                  text),
    "format": mostly(["auto", "text", "json", "base64"], st.just("xml"), text),
    "junk": text,
})
topics = mostly(["TOPIC"], st.sampled_from(["kt-fuzz.secret.x", "kt-fuzz.absent", "../etc/passwd",
                                           "a" * 300, "%00", "."]), text.filter(bool))


def _path(topic_name: str) -> str:
    return "/ws/tail/" + urllib.parse.quote(topic_name, safe="")


def open_tail(server, path: str) -> tuple[WsClient | None, tuple[int | None, str] | None]:
    """(client, None) after a hello, or (None, (code, reason)) when the server closed first."""
    try:
        ws = websocket.create_connection(server.ws_url(path), timeout=10)
    except websocket.WebSocketBadStatusException as exc:
        # Only the router may answer before the upgrade: a path no route takes ("0\n").
        assert exc.status_code == 404, f"handshake answered HTTP {exc.status_code} for {path}"
        return None, (404, "no route")
    c = WsClient.adopt(ws)
    try:
        c.until(lambda f: f["type"] == "hello", timeout=15)
    except Closed as closed:
        c.close()
        return None, (closed.code, closed.reason)
    return c, None


def assert_documented(outcome: tuple[int | None, str], what: object) -> None:
    code, reason = outcome
    assert code in DOCUMENTED and reason, (code, reason, what)


@FUZZ
@given(topic_name=topics, query=params)
def test_query_parameters(fuzz_server, topic, clean_log, topic_name, query):
    path = _path(topic if topic_name == "TOPIC" else topic_name)
    path += "?" + urllib.parse.urlencode(query) if query else ""
    c, refused = open_tail(fuzz_server, path)
    if refused:
        event(f"refused {refused[0]} ({refused[1].partition(':')[0][:20]})")
        assert_documented(refused, path)
        return
    try:
        c.send({"op": "filter", "filter": "", "regex": ""})  # the tail answers while it lives
        c.until(lambda f: f["type"] == "status" and f["status"] == "filter", timeout=15)
        event("working tail")
    except Closed as closed:  # e.g. max reached: 1000
        event(f"closed {closed.code}")
        assert_documented((closed.code, closed.reason), path)
    finally:
        c.close()


control_frames = st.one_of(
    st.sampled_from(['{"op":"pause"}', '{"op":"resume"}', '{"op":"filter","filter":"k1"}',
                     '{"op":"filter","regex":"(a+)+"}', '{"op":"filter","regex":"["}',
                     '{"op":"filter","filter":1}', '{"op":"explode"}', "[1]", "null", "{}",
                     '{"op":"filter","regex":"' + "a" * 700 + '"}', "x" * (MAX_INBOUND + 1)]),
    st.dictionaries(st.sampled_from(["op", "filter", "regex", "x"]),
                    st.one_of(st.none(), st.booleans(), st.integers(), text,
                              st.sampled_from(["pause", "resume", "filter"]),
                              st.text(st.characters(categories=("Cs",)), min_size=1, max_size=3)),
                    max_size=3).map(json.dumps),
    # Nested 400 to 4,096 deep, around the JSON decoder's recursion limit (1,000), still under
    # MAX_INBOUND.
    st.sampled_from(["[", '[{"":']).flatmap(
        lambda p: st.integers(400, MAX_INBOUND // len(p)).map(lambda n: p * n)),
    text,
    st.binary(max_size=64))


@FUZZ
@given(frames=st.lists(control_frames, min_size=1, max_size=12))
def test_control_frames(fuzz_server, topic, clean_log, frames):
    c, refused = open_tail(fuzz_server, _path(topic) + "?from=-2")
    assert refused is None, refused
    try:
        for frame in frames:
            if isinstance(frame, bytes):
                c.ws.send_binary(frame)
            else:
                c.send(frame)
        c.send({"op": "filter", "filter": "", "regex": ""})
        c.until(lambda f: f["type"] == "status" and f["status"] == "filter", timeout=15)
        event("working tail")
    except Closed as closed:
        event(f"closed {closed.code}")
        assert_documented((closed.code, closed.reason), frames)
    except (BrokenPipeError, ConnectionResetError, websocket.WebSocketConnectionClosedException):
        # The server closed while we were still sending: its close frame says why.
        outcome = c.closed(5)
        event(f"closed {outcome[0]} while sending")
        assert_documented(outcome, frames)
    finally:
        c.close()


@FUZZ
@given(name=st.one_of(text, st.sampled_from(["kt-fuzz.secret.x", "kt-fuzz.absent", "%2e%2e"])),
       query=st.dictionaries(st.sampled_from(["token", "x", "top"]), text, max_size=2))
def test_api_paths_never_500(fuzz_server, topic, clean_log, name, query):
    path = "/api/topics/" + urllib.parse.quote(name, safe="")
    path += "?" + urllib.parse.urlencode(query) if query else ""
    try:
        with urllib.request.urlopen(fuzz_server.url(path), timeout=10) as resp:
            status = resp.status
    except urllib.error.HTTPError as err:
        with err:
            status, body, kind = err.code, err.read(), err.headers.get_content_type()
        if kind == "application/json":  # kafkatail's own answer names the problem
            assert json.loads(body)["error"], body
        else:  # the router's: a path no route takes (an empty name, say)
            assert status == 404, (status, body[:200])
    assert status in (200, 400, 403, 404), (status, path)
