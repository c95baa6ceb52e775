"""The pure parts of scripts/benchlib.py: percentiles, the Kafka request counter, profiles."""
from __future__ import annotations

import struct
import sys
from collections import Counter
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))
from benchlib import FETCH, RequestCounter, percentile, top_self_frames  # noqa: E402


def request(api_key: int, client_id: str | None, body: bytes = b"") -> bytes:
    """A Kafka request frame: size, api_key, api_version, correlation_id, client_id, body."""
    cid = (b"\xff\xff" if client_id is None
           else struct.pack(">h", len(client_id)) + client_id.encode())
    payload = struct.pack(">hhi", api_key, 11, 7) + cid + body
    return struct.pack(">i", len(payload)) + payload


def test_percentile_interpolates_between_ranks():
    assert percentile([5.0], 99) == 5.0
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile(list(range(101)), 99) == 99
    assert percentile([10, 0, 20], 100) == 20 and percentile([10, 0, 20], 0) == 0
    with pytest.raises(ValueError):
        percentile([], 50)


def test_counter_counts_frames_by_api_key_and_client_split_anywhere():
    stream = (request(FETCH, "kt-feed-1", b"x" * 300) + request(3, "kt-feed-1")
              + request(FETCH, "kt-7", b"y" * 70_000) + request(FETCH, None)
              + request(0, "producer", b"z" * 5))
    for chunk in (1, 3, 13, 4096, len(stream)):
        counts: Counter = Counter()
        counter = RequestCounter(counts)
        for i in range(0, len(stream), chunk):
            counter.feed(stream[i:i + chunk])
        assert counts == {(FETCH, "kt-feed-1"): 1, (3, "kt-feed-1"): 1, (FETCH, "kt-7"): 1,
                          (FETCH, ""): 1, (0, "producer"): 1}, chunk


def test_counter_waits_for_a_whole_header():
    frame = request(FETCH, "kt-feed-12", b"body")
    counts: Counter = Counter()
    counter = RequestCounter(counts)
    counter.feed(frame[:15])  # size and header, but the client id is cut
    assert not counts
    counter.feed(frame[15:])
    assert counts == {(FETCH, "kt-feed-12"): 1}


def test_top_self_frames_adds_up_the_innermost_frame():
    folded = ("consumer;kt-feed-1;run;poll;_poll 60\n"
              "consumer;kt-feed-1;run;deliver;dumps 30\n"
              "http;kt-ws-1;send;dumps 10\n")
    top = top_self_frames(folded, 2)
    assert top == [("_poll", 60.0), ("dumps", 40.0)]
    assert top_self_frames("", 3) == []
