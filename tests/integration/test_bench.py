"""``make bench`` in miniature, pointed at the session's cluster as at an external one: the script
keeps working, says which broker it measured, and leaves no topic behind.

Only that it runs is asserted, never how fast: numbers come from ``make bench`` on a quiet machine.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_runs_against_an_external_cluster_and_deletes_its_topics(cluster, tmp_path):
    before = cluster.topics()
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick",
                        "--rows", "stop,outage", "--window", "1", "--bootstrap", cluster.bootstrap,
                        "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["broker"] == f"the cluster at {cluster.bootstrap}"
    assert f"broker: the cluster at {cluster.bootstrap}" in r.stdout
    rows = {(row["measure"], row["setup"].split(",")[0]): row["values"] for row in result["rows"]}
    stops = [v for (measure, _), v in rows.items() if measure.startswith("stop latency")]
    assert len(stops) == 2 and all(len(v["samples"]) == 5 for v in stops)
    leaky = rows["after 30 page views, idle", "outage design: thread per view"]
    ours = rows["after 30 page views, idle", "kafkatail"]
    assert leaky["threads"] > 30 and ours["threads"] < 10
    assert cluster.topics() == before
