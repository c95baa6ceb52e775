"""Is a faster JSON library worth a dependency? The stdlib's parse and encode of one batch
against orjson's, and kafkatail's decode with and without its check that a value is JSON
(orjson, the stdlib only on a refusal: ``json`` against ``text`` format, the difference being the
check) and its whole decode and frame, per record (issue #9). Not part of make bench.

    .venv/bin/python scripts/bench_json.py
"""
from __future__ import annotations

import json
import statistics
import time

import orjson

from kafkatail.tail.frames import dumps
from kafka.consumer.fetcher import ConsumerRecord

from kafkatail.tail.records import Batch, decode_batch, select
from kafkatail.tail.request import Matcher

BATCH, CALLS, REPEATS = 100, 200, 15


def _refuse(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")


# The stdlib's parse as kafkatail configures it: NaN and Infinity are not JSON.
STDLIB_LOADS = json.JSONDecoder(parse_constant=_refuse).decode

VALUES = [json.dumps({"order_id": 100000 + i, "customer": f"c-{i % 977}",
                      "items": [{"sku": f"sku-{i % 50}", "qty": i % 5 + 1, "price": 12.5}],
                      "total": 62.5, "currency": "EUR", "status": "created"})
          for i in range(BATCH)]
RECORDS = [{"partition": 0, "offset": i, "timestamp": 1764700000000 + i, "key": f"k{i}",
            "key_encoding": "text", "value": json.loads(v), "encoding": "json", "headers": [],
            "size": len(v) + 4} for i, v in enumerate(VALUES)]

CONSUMED = [ConsumerRecord("t", 0, 0, i, 1764700000000 + i, 0, b"k%d" % i, v.encode(), [], None, 4,
                           len(v), -1) for i, v in enumerate(VALUES)]


def decode_and_frame() -> str:
    """kafkatail's whole per-record path for an unfiltered viewer: decode, check, frame JSON."""
    return Batch(select(decode_batch(CONSUMED, "auto", 65536), Matcher())).json()


CASES = {
    "decode: json (stdlib)": lambda: [STDLIB_LOADS(v) for v in VALUES],
    "decode: orjson.loads": lambda: [orjson.loads(v) for v in VALUES],
    "kafkatail: decode, text": lambda: decode_batch(CONSUMED, "text", 65536),
    "kafkatail: decode, json": lambda: decode_batch(CONSUMED, "json", 65536),
    "kafkatail: decode + frame": decode_and_frame,
    "encode: json (stdlib)": lambda: dumps(RECORDS),
    "encode: orjson.dumps": lambda: orjson.dumps(RECORDS).decode(),
}


def main() -> None:
    per_record: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(REPEATS):  # interleaved, so a noisy neighbour hits every case alike
        for name, case in CASES.items():
            t = time.perf_counter()
            for _ in range(CALLS):
                case()
            per_record[name].append((time.perf_counter() - t) / CALLS / BATCH * 1e6)
    size = sum(map(len, VALUES)) / BATCH
    print(f"{BATCH}-record batches of {size:.0f} B JSON values, median of {REPEATS}:")
    for name, us in per_record.items():
        print(f"  {name:26s} {statistics.median(us):5.2f} us/record")


if __name__ == "__main__":
    main()
