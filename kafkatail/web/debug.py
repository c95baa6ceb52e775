"""``/debug/threads`` (every thread: name, role, tail, CPU, stack), ``/debug/profile`` (a flame
graph of every thread) and ``/metrics`` (Prometheus)."""
from __future__ import annotations

import os
import threading
import time
from collections import Counter

from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from ..ops import greencpu, logsetup
from ..ops.profiler import MAX_HZ, MAX_SECONDS, MIN_HZ, MIN_SECONDS, MODES, Busy, Profiler
from ..ops.reaper import thread_table
from ..ops.sampling import ThreadSampler
from ..ops.threads import REGISTRY, green, native_role, native_tasks

bp = Blueprint("kafkatail_debug", __name__)


def _ext() -> dict:
    return current_app.extensions["kafkatail"]


@bp.get("/debug/threads")
def threads():
    """Like ``top -H`` + ``jstack``: ``?top=N`` keeps the N hottest threads, ``?window=S`` samples
    S seconds now instead of using the reaper's last interval."""
    try:
        top = int(request.args.get("top", 0))
        window = float(request.args.get("window", 0))
    except ValueError:
        return jsonify(error="top and window must be numbers"), 400
    if not 0 <= window <= 10 or top < 0:
        return jsonify(error="window must be 0-10 s and top 0 or more"), 400
    reaper = _ext()["reaper"]
    sample, green_cpu = reaper.latest, reaper.green_latest
    acct = greencpu.installed()
    if window or sample is None:
        sampler = ThreadSampler()
        sampler.sample()
        before = acct.totals() if acct else {}
        time.sleep(window or 0.5)  # the measurement window itself
        sample = sampler.sample()
        if acct:
            green_cpu = greencpu.percentages(before, acct.totals(), sample.interval)
    rows = thread_table(sample, green_cpu if acct else None)
    rows.sort(key=lambda r: (r["cpu_pct"] or 0, r["cpu_total_s"] or 0), reverse=True)
    if top:
        rows = rows[:top]
    return jsonify(pid=sample.pid, interval_s=round(sample.interval, 3), threads=rows,
                   process={"threads": len(sample.threads), "fds": sample.fds,
                            "rss": sample.rss, "cpu_pct": round(sample.cpu_pct, 1)})


@bp.get("/debug/profile")
def profile():
    """Sample every thread's stack ``?hz=M`` times a second for ``?seconds=N`` and answer a flame
    graph: ``format=svg`` (open in a browser), ``folded`` (flamegraph.pl) or ``speedscope``
    (open in speedscope.app). ``mode=cpu`` (default) counts a thread only for the CPU it used,
    ``mode=wall`` every thread at every tick. One profile at a time: 409 while another runs."""
    fmt = request.args.get("format", "svg")
    mode = request.args.get("mode", "cpu")
    try:
        seconds = float(request.args.get("seconds", 5))
        hz = int(request.args.get("hz", 100))
    except ValueError:
        return jsonify(error="seconds and hz must be numbers"), 400
    if fmt not in ("svg", "folded", "speedscope"):
        return jsonify(error="format must be svg, folded or speedscope"), 400
    if mode not in MODES:
        return jsonify(error=f"mode must be {' or '.join(MODES)}"), 400
    if not (MIN_SECONDS <= seconds <= MAX_SECONDS and MIN_HZ <= hz <= MAX_HZ):
        return jsonify(error=f"seconds must be {MIN_SECONDS:g}-{MAX_SECONDS:g} and hz "
                             f"{MIN_HZ}-{MAX_HZ}"), 400
    profiler = _ext().get("profiler") or _ext().setdefault("profiler", Profiler())
    try:
        result = profiler.run(seconds, hz, mode=mode)
    except ValueError as exc:   # mode=cpu where per-thread CPU clocks cannot be read
        return jsonify(error=str(exc)), 400
    except Busy:
        return jsonify(error="a profile is already running; try again when it ends"), 409
    body, mimetype = result.render(fmt)
    return Response(body, mimetype=mimetype)


@bp.get("/debug/runtime")
def runtime():
    """How this worker runs: concurrency model, whether kafka-python got gevent's selector, and
    whether it checks batch CRCs in C (in pure Python they cost most of a fetch's CPU)."""
    import selectors
    import sys

    from kafka import KafkaConsumer
    from kafka.record import util as record_util

    kafka_selector = KafkaConsumer.DEFAULT_CONFIG["selector"]
    return jsonify(
        python=sys.version.split()[0], pid=os.getpid(), green=green(),
        worker_class=_ext()["config"].worker_class,
        kafka_selector=f"{kafka_selector.__module__}.{kafka_selector.__name__}",
        kafka_selector_is_default=kafka_selector is selectors.DefaultSelector,
        kafka_crc32c_native=record_util.crc32c_c is not None)


class _Collector:
    """Reads the pool and the thread registry at scrape time: nothing on the per-record path."""

    def __init__(self, ext: dict) -> None:
        self.ext = ext

    def collect(self):
        pool = self.ext["pool"]
        yield GaugeMetricFamily("kafkatail_tails_active", "Open tails.", value=len(pool))
        yield from _thread_metrics()
        yield from _delivery_metrics(pool.totals())
        yield from _health_metrics(pool)
        yield from _feed_metrics(pool)


def _thread_metrics():
    """Python threads by role (the registry), and native ones by their OS names."""
    roles = Counter(REGISTRY.info(t).role for t in threading.enumerate())
    g = GaugeMetricFamily("kafkatail_threads", "Python threads by role.", labels=["role"])
    for role, n in sorted(roles.items()):
        g.add_metric([role], n)
    yield g
    native = Counter(native_role(comm) for comm in native_tasks().values())
    g = GaugeMetricFamily("kafkatail_native_threads",
                          "OS threads with no Python thread, by role (librdkafka's rdk:* "
                          "are kafka-io).", labels=["role"])
    for role, n in sorted(native.items()):
        g.add_metric([role], n)
    yield g


def _delivery_metrics(totals: Counter):
    """What every tail so far delivered (``pool.totals()``)."""
    for name, key, doc in (
            ("kafkatail_records_sent", "records", "Records delivered to clients."),
            ("kafkatail_record_bytes_sent", "bytes",
             "Kafka record bytes (key+value+headers) delivered to clients."),
            ("kafkatail_records_dropped", "dropped",
             "Records dropped by full outboxes (drop-oldest policy).")):
        yield CounterMetricFamily(name, doc, value=totals[key])
    frames_sent = CounterMetricFamily(
        "kafkatail_record_frames_sent", "Record frames sent, by the thread that wrote them: "
        "the consumer thread to an idle socket, or the socket's own session.",
        labels=["writer"])
    frames_sent.add_metric(["consumer"], totals["frames_direct"])
    frames_sent.add_metric(["session"], totals["frames_queued"])
    yield frames_sent


def _health_metrics(pool):
    """Tails started and reaped, log records and outbox bytes lost or held, stuck threads."""
    yield CounterMetricFamily("kafkatail_tails_started", "Tails started.",
                              value=pool.started_total)
    yield CounterMetricFamily("kafkatail_tails_reaped", "Orphaned tails joined by the reaper.",
                              value=pool.reaped_total)
    yield CounterMetricFamily("kafkatail_log_records_dropped",
                              "Log records dropped because the log queue was full.",
                              value=logsetup.dropped_total())
    yield GaugeMetricFamily("kafkatail_outbox_bytes",
                            "Record bytes queued for clients that are behind, all together.",
                            value=pool.outbox_bytes.total)
    yield GaugeMetricFamily("kafkatail_threads_stuck", "Tail threads that did not stop.",
                            value=len(pool.stuck))


def _feed_metrics(pool):
    """Tails per topic, viewers of shared feeds, consumer threads by kind, started and joined,
    handovers."""
    t = GaugeMetricFamily("kafkatail_topic_tails", "Open tails per topic.", labels=["topic"])
    for topic, n in sorted(pool.per_topic().items()):
        t.add_metric([topic], n)
    yield t
    feeds = GaugeMetricFamily("kafkatail_feed_viewers",
                              "Viewers of shared live feeds, per topic.", labels=["topic"])
    for topic, n in sorted(pool.feeds().items()):
        feeds.add_metric([topic], n)
    yield feeds
    threads = pool.threads()
    c = GaugeMetricFamily("kafkatail_consumer_threads",
                          "Consumer threads: shared feeds and dedicated (historical) tails.",
                          labels=["kind"])
    c.add_metric(["shared"], sum(t.shared for t in threads))
    c.add_metric(["dedicated"], sum(not t.shared for t in threads))
    yield c
    yield CounterMetricFamily("kafkatail_feed_handovers",
                              "Historical tails that caught up and joined a shared feed.",
                              value=pool.handovers)
    # Started minus joined is the consumer threads alive now: a leak shows as a growing gap.
    yield CounterMetricFamily("kafkatail_consumer_threads_started",
                              "Consumer threads the pool started.", value=pool.threads_started)
    yield CounterMetricFamily("kafkatail_consumer_threads_joined",
                              "Consumer threads the pool joined.", value=pool.threads_joined)


@bp.get("/metrics")
def metrics():
    ext = _ext()
    registry = ext.get("metrics")
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        registry.register(_Collector(ext))
        registry = ext.setdefault("metrics", registry)
    return Response(generate_latest(registry), mimetype="text/plain; version=0.0.4")
