#!/usr/bin/env python3
"""kafkatail's benchmark (issue #9): one table, every row measured in the same run.

Starts an embedded Tansu broker, Apache Kafka (``--broker kafka``), or both one after the other
(``--broker tansu,kafka``: every row once on each), or uses the cluster ``--bootstrap`` or
``KAFKATAIL_TEST_BOOTSTRAP`` names (with ``KAFKATAIL_KAFKA_PROPERTIES`` for one that needs TLS
or SASL: its clients and servers all read that file); and ``kafkatail serve`` processes as
production runs them, drives
them from this process (WebSocket clients, paced producers, a plain kafka-python consumer for the
reference rate) and measures the server's gunicorn worker with psutil. Rows:

- ``delivery``: records/s to one WebSocket client from ``earliest`` (connect to last record) vs a
  plain KafkaConsumer loop here (construction to last record), best of alternating runs; with
  ``filter``, once per backend (``--backend``: kafka-python and confluent by default)
- ``filter``:   records/s scanned from ``earliest`` by a filter that matches nothing (connect to
  the ``caught-up`` status)
- ``latency``:  produce-to-client latency at 1k records/s to 10 live clients (each value carries
  its send time), next to a plain KafkaConsumer here reading the same records
- ``idle``:     worker CPU and RSS with idle tails of one topic open (gevent up to 10,000, and
  gthread), the clients answering the server's pings; whether any was refused or closed
- ``stop``:     socket close (at a random point of the consumer's poll) until /metrics, read
  every 5 ms, no longer counts the consumer thread: a dedicated tail, and a feed's last viewer
- ``fanout``:   live viewers at 2k records/s, shared feed vs dedicated consumers: worker CPU,
  and Fetch requests counted by a proxy between the server and the embedded broker (not counted
  on an external cluster, whose brokers advertise their own addresses); the shared feed
  also with clients that ask for permessage-deflate, as browsers do
- ``viewers``:  1,000 viewers of one live topic at 2k records/s on one gevent worker (shared
  feed) beside 1 viewer: worker CPU, and the share of the records produced that each viewer got,
  counted per socket by client processes reading raw bytes
- ``schemas``:  records/s to one client from ``earliest`` of Avro records (written by
  confluent-kafka's AvroSerializer, decoded through a Schema Registry: the suite's own, in this
  process) beside JSON records of the same content, alternating, best of each
- ``outage``:   the original design (a consumer thread per page view, never stopped) vs kafkatail
  after 300 page views: threads, fds, idle CPU

Usage::

    python scripts/bench.py [--quick] [--rows delivery,latency,...] [--out bench.json]
                            [--backend kafka-python,confluent] [--broker tansu,kafka]
                            [--bootstrap HOST:PORT]
                            [--profile DIR]

Not part of CI; needs a quiet machine for numbers worth comparing (the load average is printed).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import threading
import time
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

import psutil
import websocket

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchlib import (  # noqa: E402
    CountingClients, Drain, LeakyApp, PacedProducer, ProxiedBroker, RawLatency, Server, Usage,
    close_all, connect, machine, open_sockets, open_tails, percentile, produce_avro, produce_bulk,
    raise_fd_limit, raw_consume_rate, room_for, rst_table, top_self_frames, wait_until)

from kafkatail.testing.kafka import (  # noqa: E402
    BOOTSTRAP_ENV, BROKER_ENV, BROKERS, Cluster, start_cluster)
from kafkatail.testing.registry import RegistryServer  # noqa: E402

ROWS = ("delivery", "filter", "latency", "idle", "stop", "fanout", "viewers", "schemas", "outage")
NO_MATCH = "zq-no-such-text-zq"


class Bench:
    """Sizes for one run, the shared broker, the rows measured so far, optional profiles."""

    def __init__(self, opts: argparse.Namespace) -> None:
        q = opts.quick
        self.records = opts.records or (20_000 if q else 200_000)
        self.window = opts.window or (3.0 if q else 15.0)
        self.idle = {"gevent": [10, 100] if q else [10, 200, 1000, 10_000],
                     "gthread": [10] if q else [10, 100]}
        self.viewers = 20 if q else 200
        self.crowd, self.crowd_rate = (50, 500) if q else (1000, 2000)  # the viewers row
        self.views = 30 if q else 300
        self.stop_samples = 5 if q else 30
        self.repeats = 1 if q else 3
        self.worker_class = opts.worker_class
        self.use(opts.backends[0])
        self.profile_dir = Path(opts.profile) if opts.profile else None
        self.rows: list[dict[str, Any]] = []
        self.cluster: Cluster | None = None
        self.broker = ""  # named in each row's setup when the run measures several brokers
        self.topics: list[str] = []
        # Raised before any server starts: they inherit it.
        self.fd_limit = raise_fd_limit(fds_for(max(*self.idle["gevent"], self.crowd)))

    def use(self, backend: str) -> None:
        """The backend of the delivery and filter rows' servers; the other rows keep the default
        (kafka-python: the idle rows run gevent, which the confluent backend refuses)."""
        self.backend = backend
        self.server_config = {"consumer_backend": backend}

    def add(self, measure: str, setup: str, result: str, target: str = "",
            met: bool | None = None, **values: Any) -> None:
        if target and met is not None:
            target += " (met)" if met else " (missed)"
        if self.broker:
            setup = f"{self.broker}: {setup}"
        row = {"measure": measure, "setup": setup, "result": result, "target": target,
               "broker": self.broker, "values": values}
        self.rows.append(row)
        print(f"  {measure} | {setup} | {result} | {target}", file=sys.stderr, flush=True)

    def profile(self, server: Server, label: str, seconds: float) -> None:
        """With --profile: a folded profile of the worker under the row's load, saved and
        summarised (top self frames) in the last row's values."""
        if self.profile_dir is None:
            return
        try:
            folded = server.profile(seconds)
        except OSError as exc:  # a saturated worker may not answer in time
            self.rows[-1]["values"]["profile_top"] = [[f"no profile: {exc}", 0]]
            return
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        (self.profile_dir / f"{label}.folded").write_text(folded)
        self.rows[-1]["values"]["profile_top"] = [
            [frame, round(pct, 1)] for frame, pct in top_self_frames(folded, 8)]

    def topic(self, prefix: str) -> str:
        """A new topic, deleted at the end of the run on an external cluster."""
        name = self.cluster.create_topic(self.cluster.unique_topic(prefix))
        self.topics.append(name)
        return name

    def delete_topics(self) -> None:
        for name in self.topics:
            try:
                self.cluster.delete_topic(name)
            except Exception as exc:  # noqa: BLE001 - report, and go on with the others
                print(f"could not delete topic {name}: {exc}", file=sys.stderr)


# -- rows ------------------------------------------------------------------------------------
def stop_all(*stops: Callable[[], None] | None) -> None:
    """Call every stop in order even if one fails: a server left running skews later rows."""
    with ExitStack() as stack:
        for stop in reversed(stops):
            if stop:
                stack.callback(stop)


def read_records(ws: websocket.WebSocket, n: int, until: Callable[[str], bool] | None = None
                 ) -> tuple[int, int]:
    """Read frames until n records (plus reported drops) arrived, or ``until(frame)``; counts
    records without decoding them (the client must not be the bottleneck)."""
    got = dropped = 0
    while got + dropped < n:
        opcode, data = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            break
        text = data.decode()
        if text.startswith('{"type":"messages"'):
            got += text.count('"offset":')
        elif text.startswith('{"type":"dropped"'):
            dropped += json.loads(text)["count"]
        elif until and until(text):
            break
    return got, dropped


def row_delivery_and_filter(b: Bench, rows: set[str]) -> None:
    topic = b.topic("bulk")
    t = time.monotonic()
    produce_bulk(b.cluster.bootstrap, topic, b.records)
    print(f"  produced {b.records:,} records in {time.monotonic() - t:.1f} s", file=sys.stderr)
    server = Server(b.cluster.bootstrap, b.worker_class, **b.server_config)
    try:
        if "delivery" in rows:
            raw_rates, ws_rates, cpu_us, drops = [], [], [], 0
            for _ in range(b.repeats):
                raw_rates.append(raw_consume_rate(b.cluster.bootstrap, topic, b.records,
                                                  backend=b.backend))
                # The worker's CPU per record is steadier than rates on a machine whose speed
                # swings between runs.
                with Usage(server.worker) as u:
                    start = time.monotonic()
                    ws = connect(server.ws_url(f"/ws/tail/{topic}?from=earliest&max={b.records}"))
                    got, dropped = read_records(ws, b.records)
                    ws_rates.append(got / (time.monotonic() - start))
                ws.close()
                cpu_us.append(u.cpu_pct / 100 * u.seconds / max(got, 1) * 1e6)
                drops += dropped
            raw, rate = max(raw_rates), max(ws_rates)
            b.add(f"delivery from earliest, {b.records:,} records",
                  f"1 client, {b.worker_class}, {b.backend} backend, best of {b.repeats}",
                  f"{rate:,.0f} rec/s = {rate / raw:.2f}x raw {b.backend} ({raw:,.0f} rec/s); "
                  f"worker CPU {min(cpu_us):.1f} us/record"
                  + (f"; {drops} dropped" if drops else ""),
                  *((">= 0.80x", rate / raw >= 0.8) if b.backend == "kafka-python"
                    else (">= 150k rec/s", rate >= 150_000)), rate=rate, raw=raw, ratio=rate / raw,
                  dropped=drops, runs=ws_rates, raw_runs=raw_rates, worker_cpu_us=cpu_us)
            if b.profile_dir:
                profiler = threading.Thread(target=b.profile, args=(server, "delivery", 5))
                profiler.start()
                ws = connect(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
                while profiler.is_alive():
                    read_records(ws, b.records)
                    ws.close()
                    ws = connect(server.ws_url(f"/ws/tail/{topic}?from=earliest"))
                ws.close()
        if "filter" in rows:
            for kind, query in (("substring", f"filter={NO_MATCH}"),
                                ("regex", f"regex={NO_MATCH}-(a|b)\\d+")):
                start = time.monotonic()
                ws = connect(server.ws_url(f"/ws/tail/{topic}?from=earliest&{query}"))
                read_records(ws, 1, lambda text: '"caught-up"' in text)
                rate = b.records / (time.monotonic() - start)
                ws.close()
                b.add(f"filter scan from earliest, {b.records:,} records",
                      f"{kind}, matches nothing, {b.worker_class}, {b.backend} backend",
                      f"{rate:,.0f} rec/s (connect to caught-up)", rate=rate)
    finally:
        server.stop()


def row_latency(b: Bench, rate: int = 1000, clients: int = 10) -> None:
    # Tansu answers a Fetch late (up to its max wait) even when records are there, so the
    # default poll_timeout_ms (which caps fetch_max_wait_ms) is also run against a short one.
    for poll_ms in (500, 50):
        _latency(b, rate, clients, poll_ms)


def _latency(b: Bench, rate: int, clients: int, poll_ms: int) -> None:
    topic = b.topic("latency")
    server = Server(b.cluster.bootstrap, b.worker_class, poll_timeout_ms=poll_ms)
    latencies: list[float] = []
    live = set()
    measuring = threading.Event()

    def on_text(ws: Any, text: str, now: float) -> None:
        if text.startswith('{"type":"messages"'):
            if measuring.is_set():
                latencies.extend(now - m["value"]["t"] for m in json.loads(text)["messages"])
        elif '"status":"live"' in text:
            live.add(ws)

    drain = Drain(on_text)
    drain.start()
    producer = raw = None
    try:
        raw = RawLatency(b.cluster.bootstrap, topic, measuring, fetch_max_wait_ms=poll_ms)
        raw.start()
        sockets = open_tails(server, f"/ws/tail/{topic}", clients, drain)
        wait_until(lambda: len(live) == clients, 30, "clients live")
        producer = PacedProducer(b.cluster.bootstrap, topic, rate)
        producer.start()
        time.sleep(2)  # warm-up: the first records pay for connections and metadata
        measuring.set()
        sent = producer.sent
        time.sleep(b.window)
        measuring.clear()
        sent = producer.sent - sent
        ms = [1000 * x for x in latencies]
        p50, p99 = percentile(ms, 50), percentile(ms, 99)
        raw_ms = [1000 * x for x in raw.latencies]
        raw50, raw99 = percentile(raw_ms, 50), percentile(raw_ms, 99)
        b.add(f"latency, produce to client, {rate:,} rec/s", f"{clients} clients, "
              f"{b.worker_class}, poll_timeout_ms={poll_ms}",
              f"p50 {p50:.1f} ms, p99 {p99:.1f} ms; plain kafka-python: "
              f"p50 {raw50:.1f} ms, p99 {raw99:.1f} ms ({p50 / raw50:.2f}x, {p99 / raw99:.2f}x)",
              "p99 <= 50 ms; p50 and p99 <= 1.2x plain",
              p99 <= 50 and p50 <= 1.2 * raw50 and p99 <= 1.2 * raw99, p50_ms=p50, p99_ms=p99,
              max_ms=max(ms),
              received=len(ms), sent=sent, raw_p50_ms=raw50, raw_p99_ms=raw99)
        b.profile(server, f"latency-{poll_ms}", 10)
        close_all(sockets)
    finally:
        stop_all(producer and producer.stop, raw and raw.stop, drain.stop, server.stop)


def fds_for(tails: int) -> int:
    """Descriptors each side needs for ``tails`` tails (RLIMIT_NOFILE is per process: this one
    holds the client sockets, the server's worker, which inherits the limit, the others): one
    socket a tail (the worker had 10,012 fds with 10,000 tails), a quarter more for sockets still
    closing, and 1,000 for broker connections, logs and the rest."""
    return tails + tails // 4 + 1000


def idle_target(worker_class: str, n: int) -> str:
    """The idle row's target at this size: gevent's, at 1,000 tails and at 10,000."""
    if worker_class != "gevent" or n < 1000:
        return ""
    limits = "< 10% of a core, < 1 GB RSS" if n >= 10_000 else "< 5% CPU, < 300 MB"
    return f"{limits}, none refused or closed"


def row_idle(b: Bench) -> None:
    for worker_class, counts in b.idle.items():
        topic = b.topic("idle")
        room = room_for(counts[-1])
        server = Server(b.cluster.bootstrap, worker_class, **room)
        drain = Drain(lambda *_: None)  # answers the server's pings, as a browser does
        drain.start()
        sockets: list[Any] = []
        refused: Counter = Counter()
        setup = f"{worker_class}, one topic, clients answer pings (every 20 s)"
        if room["worker_connections"] > 1200:
            setup += f", worker_connections {room['worker_connections']:,}"
        try:
            for n in counts:
                if fds_for(n) > b.fd_limit:
                    b.add(f"{n:,} idle tails", setup, f"not measured: RLIMIT_NOFILE {b.fd_limit:,}"
                          f" < {fds_for(n):,}", idle_target(worker_class, n), False, tails=n)
                    break
                start = time.monotonic()
                opened, failed = open_sockets(server.ws_url(f"/ws/tail/{topic}"),
                                              n - len(sockets) - sum(refused.values()), drain)
                opening = time.monotonic() - start, len(opened)
                sockets += opened
                refused += failed
                try:
                    wait_until(lambda: server.tails() >= len(sockets) - drain.closed, 60,
                               "tails counted", 0.2)
                except TimeoutError:
                    pass  # the row says how many the server counts
                time.sleep(3)  # greetings sent, feed settled
                with Usage(server.worker) as u:
                    time.sleep(b.window)
                tails, consumers = server.tails(), server.consumer_threads()
                clean = not refused and not drain.closed and tails == n
                target = idle_target(worker_class, n)
                met = None
                if target:
                    met = (u.cpu_pct < (10 if n >= 10_000 else 5)
                           and u.rss_mb < (1024 if n >= 10_000 else 300) and clean)
                b.add(f"{n:,} idle tails", setup,
                      f"{u.cpu_pct:.2f}% CPU, {u.rss_mb:.0f} MB RSS, {u.threads} threads, "
                      f"{consumers} consumer{'s' if consumers != 1 else ''}; server counts "
                      f"{tails:,} tails, {sum(refused.values())} refused, {drain.closed} closed"
                      + ("" if clean else f" ({_reasons(refused + drain.close_codes)})")
                      + f"; {opening[1]:,} opened in {opening[0]:.1f} s",
                      target, met, tails=n, server_tails=tails, cpu_pct=u.cpu_pct,
                      rss_mb=u.rss_mb, threads=u.threads, fds=u.fds, consumer_threads=consumers,
                      refused=dict(refused), closed={str(k): v for k, v in
                                                     drain.close_codes.items()},
                      open_s=opening[0], opened=opening[1])
            b.profile(server, f"idle-{worker_class}-{counts[-1]}", 10)
        finally:
            stop_all(lambda: close_all(sockets), drain.stop, server.stop)


def _reasons(counts: Counter) -> str:
    """``why`` x count, most first: close codes, refusals' status lines, errors."""
    return ", ".join(f"{why} x{k}" for why, k in counts.most_common(4))


def row_stop(b: Bench) -> None:
    for label, config in (("dedicated tail", {"share_live_feeds": False}),
                          ("feed's last viewer, linger 0", {"feed_linger_s": 0})):
        topic = b.topic("stop")
        server = Server(b.cluster.bootstrap, b.worker_class, **config)
        samples = []
        try:
            for _ in range(b.stop_samples):
                ws = connect(server.ws_url(f"/ws/tail/{topic}"))
                read_records(ws, 1, lambda text: '"status":"live"' in text)
                wait_until(lambda: server.consumer_threads() == 1, 10, "consumer thread up")
                # A close lands anywhere in the thread's poll, as a user's does.
                time.sleep(random.uniform(0, 0.5))
                start = time.monotonic()
                ws.close(timeout=2)
                wait_until(lambda: server.consumer_threads() == 0, 10, "consumer thread gone",
                           every=0.005)
                samples.append(1000 * (time.monotonic() - start))
        finally:
            server.stop()
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        b.add("stop latency, close to thread exit", f"{label}, {b.worker_class}, "
              f"{len(samples)} closes",
              f"p50 {p50:.0f} ms, p99 {p99:.0f} ms (poll_timeout_ms 500)",
              p50_ms=p50, p99_ms=p99, samples=samples)


def delivered(server: Server) -> tuple[float | None, float]:
    """Records delivered so far (sent minus dropped by full outboxes) and when that was read;
    None if a saturated worker did not answer /metrics within two minutes."""
    try:
        m = server.metrics(timeout=120)
    except OSError:
        return None, time.monotonic()
    return (m["kafkatail_records_sent_total"] - m["kafkatail_records_dropped_total"],
            time.monotonic())


def row_fanout(b: Bench, rate: int = 2000) -> None:
    """On an embedded Tansu, behind a proxy that counts Fetch requests; on Apache Kafka or an
    external cluster (whose brokers advertise their own addresses), uncounted."""
    proxied = ProxiedBroker().start() if b.cluster.kind == "tansu" else None
    bootstrap = proxied.bootstrap if proxied else b.cluster.bootstrap
    cluster = Cluster(bootstrap, proxied) if proxied else b.cluster
    fetches = proxied.proxy.fetches if proxied else lambda: None
    cpu_one = None
    try:
        for n, shared, deflate in ((1, True, False), (b.viewers, True, False),
                                   (b.viewers, True, True), (b.viewers, False, False)):
            topic = cluster.create_topic(cluster.unique_topic("fanout"))
            if not proxied:
                b.topics.append(topic)
            # Clients here read raw bytes and answer no pings: a long ping interval.
            server = Server(bootstrap, b.worker_class, share_live_feeds=shared,
                            ping_interval_s=600)
            drain = Drain(raw=True)
            drain.start()
            producer = None
            try:
                sockets = open_tails(server, f"/ws/tail/{topic}", n, drain, deflate)
                wait_until(lambda: server.consumer_threads() == (1 if shared else n), 60,
                           "consumers up")
                time.sleep(3)
                producer = PacedProducer(bootstrap, topic, rate)
                producer.start()
                time.sleep(3)  # warm-up
                m0, f0, d0 = delivered(server), fetches(), drain.bytes
                with Usage(server.worker) as u:
                    time.sleep(b.window)
                f1, d1, m1 = fetches(), drain.bytes, delivered(server)
                fetch_rate = (f1 - f0) / u.seconds if proxied else None
                mb_s = (d1 - d0) / u.seconds / 2**20
                answered = m0[0] is not None and m1[0] is not None
                rate_out = (m1[0] - m0[0]) / (m1[1] - m0[1]) if answered else None
                kind = "shared feed" if shared else "dedicated consumers"
                if deflate:
                    kind += ", clients ask for deflate"
                target, met = "", None
                if n == 1:
                    cpu_one = u.cpu_pct
                elif shared and cpu_one:
                    target, met = "< 2x the CPU of 1 viewer", u.cpu_pct < 2 * cpu_one
                b.add(f"{n} viewer{'s' if n > 1 else ''}, {rate:,} rec/s",
                      f"{kind}, {b.worker_class}",
                      f"{u.cpu_pct:.1f}% CPU (user {u.user_pct:.0f}, system {u.system_pct:.0f}), "
                      + (f"{fetch_rate:.1f} Fetch/s to the broker, " if proxied else "")
                      + (f"{rate_out:,.0f}" if rate_out is not None else "? (/metrics timed out)")
                      + f" of {n * rate:,} rec/s delivered ({mb_s:.1f} MB/s)",
                      target, met, viewers=n, shared=shared, deflate=deflate, cpu_pct=u.cpu_pct,
                      user_pct=u.user_pct, system_pct=u.system_pct,
                      fetch_per_s=fetch_rate, delivered_per_s=rate_out, client_mb_s=mb_s,
                      rss_mb=u.rss_mb)
                b.profile(server, f"fanout-{n}-{'shared' if shared else 'dedicated'}"
                          + ("-deflate" if deflate else ""), 10)
                close_all(sockets)
            finally:
                stop_all(producer and producer.stop, drain.stop, server.stop)
    finally:
        if proxied:
            proxied.stop()


def cpu_seconds(procs: list[psutil.Process]) -> float:
    return sum(t.user + t.system for t in (p.cpu_times() for p in procs))


def row_viewers(b: Bench, processes: int = 2) -> None:
    """1 viewer, then ``b.crowd``, of one live topic at ``b.crowd_rate`` rec/s on one gevent
    worker (shared feed): the worker's CPU, and each viewer's share of the records produced in
    the window, counted per socket by ``processes`` client processes (CountingClients). Twice:
    plain clients, then clients whose handshakes ask for permessage-deflate as Chromium's and
    Firefox's do (the feed compresses each batch once per wire format, and every such viewer
    gets the same bytes); each crowd is compared with one viewer of its own wire format."""
    for deflate in (False, True):
        cpu_one = None
        for n in (1, b.crowd):
            cpu_one = _viewers(b, n, deflate, cpu_one, processes)


def _viewers(b: Bench, n: int, deflate: bool, cpu_one: float | None, processes: int
             ) -> float | None:
    """One measurement of the viewers row; returns the worker's CPU with one viewer."""
    topic = b.topic("viewers")
    # The counting clients answer no pings: a long ping interval.
    server = Server(b.cluster.bootstrap, "gevent", ping_interval_s=600, **room_for(n))
    clients = producer = None
    try:
        clients = CountingClients(server.ws_url(f"/ws/tail/{topic}"), n, min(n, processes),
                                  deflate)
        wait_until(lambda: server.tails() == n and server.consumer_threads() == 1, 60,
                   "viewers and their feed up")
        time.sleep(3)
        producer = PacedProducer(b.cluster.bootstrap, topic, b.crowd_rate)
        producer.start()
        time.sleep(3)  # warm-up
        procs = [psutil.Process(p.pid) for p in clients.procs]
        m0, sent0, (got0, bytes0, _, st0), c0 = (delivered(server), producer.sent,
                                                 clients.counts(), cpu_seconds(procs))
        with Usage(server.worker) as u:
            time.sleep(b.window)
        got1, bytes1, closed, st1 = clients.counts()
        sent1, m1, c1 = producer.sent, delivered(server), cpu_seconds(procs)
        produced = sent1 - sent0
        shares = sorted((g1 - g0) / max(produced, 1) for g0, g1 in zip(got0, got1))
        counted = (sum(got1) - sum(got0)) / u.seconds
        answered = m0[0] is not None and m1[0] is not None
        rate_out = (m1[0] - m0[0]) / (m1[1] - m0[1]) if answered else None
        client_pct = 100 * (c1 - c0) / u.seconds
        mb_s = (bytes1 - bytes0) / u.seconds / 2**20
        every = shares[0] >= 0.9 and not closed
        if n == 1:
            cpu_one = u.cpu_pct
            target, met, vs_one = "every viewer >= 90% of the rate", every, ""
        else:
            target = "< 3x the CPU of 1 viewer, every viewer >= 90% of the rate"
            met = bool(cpu_one) and u.cpu_pct < 3 * cpu_one and every
            vs_one = f" = {u.cpu_pct / cpu_one:.2f}x one viewer" if cpu_one else ""
        messages, compressed, inflated = (st1[k] - st0[k] for k in
                                          ("messages", "compressed", "inflated"))
        counting = "records in its raw bytes"
        if deflate:
            counting = ("records in its frames, each distinct compressed message inflated once "
                        "per process")
        b.add(f"{n:,} viewer{'s' if n > 1 else ''}, {b.crowd_rate:,} rec/s",
              "shared feed, gevent" + (", clients ask for permessage-deflate (as Chromium)"
                                       if deflate else "")
              + f"; {len(procs)} client process{'es' if len(procs) > 1 else ''} on the same "
              f"cores count each socket's {counting}",
              f"{u.cpu_pct:.1f}% CPU (user {u.user_pct:.0f}, system {u.system_pct:.0f})"
              f"{vs_one}; slowest viewer {shares[0]:.0%} of the {produced / u.seconds:,.0f}"
              f" rec/s produced, median {percentile(shares, 50):.0%}"
              + (f", {closed} closed" if closed else "")
              + f"; clients counted {counted:,.0f} rec/s, server "
              + (f"{rate_out:,.0f}" if rate_out is not None else "? (/metrics timed out)")
              + f" ({mb_s:.{0 if mb_s >= 10 else 2}f} MB/s"
              + (f" compressed, {compressed / max(messages, 1):.0%} of {messages / u.seconds:,.0f}"
                 f" msg/s, {inflated / u.seconds:,.0f} inflated/s" if deflate else "")
              + f"); clients {client_pct:.0f}% CPU",
              target, met, viewers=n, deflate=deflate, cpu_pct=u.cpu_pct, user_pct=u.user_pct,
              system_pct=u.system_pct, rss_mb=u.rss_mb, produced_per_s=produced / u.seconds,
              share_min=shares[0], share_median=percentile(shares, 50), closed=closed,
              counted_per_s=counted, delivered_per_s=rate_out, client_cpu_pct=client_pct,
              client_processes=len(procs), client_mb_s=mb_s,
              messages_per_s=messages / u.seconds, compressed_share=compressed / max(messages, 1),
              inflated_per_s=inflated / u.seconds)
        b.profile(server, f"viewers-{n}" + ("-deflate" if deflate else ""), 10)
    finally:
        stop_all(producer and producer.stop, clients and clients.stop, server.stop)
    return cpu_one


def row_schemas(b: Bench) -> None:
    n = b.records // 4
    json_topic, avro_topic = b.topic("json"), b.topic("avro")
    with RegistryServer() as registry:
        produce_bulk(b.cluster.bootstrap, json_topic, n)
        produce_avro(b.cluster.bootstrap, avro_topic, n, registry.url)
        server = Server(b.cluster.bootstrap, b.worker_class, schema_registry_url=registry.url)
        rates: dict[str, list[float]] = {"json": [], "avro": []}
        try:
            for _ in range(b.repeats):
                for kind, topic in (("json", json_topic), ("avro", avro_topic)):
                    start = time.monotonic()
                    ws = connect(server.ws_url(f"/ws/tail/{topic}?from=earliest&max={n}"))
                    got, _ = read_records(ws, n)
                    rates[kind].append(got / (time.monotonic() - start))
                    ws.close()
        finally:
            server.stop()
    avro, plain = max(rates["avro"]), max(rates["json"])
    b.add(f"Avro beside JSON, {n:,} records each", f"1 client from earliest, {b.worker_class}, "
          f"same content, best of {b.repeats}",
          f"Avro {avro:,.0f} rec/s = {avro / plain:.2f}x JSON ({plain:,.0f} rec/s)",
          ">= 0.50x", avro / plain >= 0.5, avro=avro, json=plain, runs=rates)


def _settled(proc: Any, timeout: float = 120) -> None:
    """Wait until a process's thread count stops changing (3 reads 0.5 s apart)."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and (len(seen) < 3 or len(set(seen[-3:])) > 1):
        seen.append(proc.num_threads())
        time.sleep(0.5)


def row_outage(b: Bench) -> None:
    topic = b.topic("outage")
    leaky = LeakyApp(b.cluster.bootstrap, topic)
    try:
        for _ in range(b.views):
            leaky.view()
        _settled(leaky.worker)
        with Usage(leaky.worker) as u:
            time.sleep(b.window)
        b.add(f"after {b.views} page views, idle", "outage design: thread per view, never "
              "stopped",
              f"{u.threads} threads, {u.fds} fds, {u.cpu_pct:.1f}% CPU, {u.rss_mb:.0f} MB RSS",
              threads=u.threads, fds=u.fds, cpu_pct=u.cpu_pct, rss_mb=u.rss_mb)
    finally:
        leaky.stop()
    server = Server(b.cluster.bootstrap, b.worker_class)
    try:
        for _ in range(b.views):
            ws = connect(server.ws_url(f"/ws/tail/{topic}"))
            read_records(ws, 1, lambda text: '"type":"hello"' in text)
            ws.close(timeout=2)
        wait_until(lambda: server.tails() == 0 and server.consumer_threads() == 0, 60,
                   "tails and feeds gone")
        with Usage(server.worker) as u:
            time.sleep(b.window)
        b.add(f"after {b.views} page views, idle", f"kafkatail, {b.worker_class}: each tail "
              "opened, closed",
              f"{u.threads} threads, {u.fds} fds, {u.cpu_pct:.1f}% CPU, {u.rss_mb:.0f} MB RSS",
              threads=u.threads, fds=u.fds, cpu_pct=u.cpu_pct, rss_mb=u.rss_mb)
    finally:
        server.stop()


# -- main ------------------------------------------------------------------------------------
def render(info: dict[str, Any], rows: list[dict[str, Any]], window: float) -> str:
    table = rst_table(["measure", "setup", "result", "target"],
                      [[r["measure"], r["setup"], r["result"], r["target"]] for r in rows])
    return (f"{table}\n\n{info['date']}; {info['nproc']} x {info['cpu']}, Python "
            f"{info['python']}, kafka-python {info['kafka_python']} (CRC-32C in "
            f"{info['kafka_crc32c']}), broker: {info['broker']}, load average "
            f"{info['load_avg'][0]} at the start. CPU is "
            f"% of one core used by the gunicorn worker over {window:g} s.")


def run_rows(b: Bench, opts: argparse.Namespace, rows: set[str]) -> None:
    if rows & {"delivery", "filter"}:
        for backend in opts.backends:
            b.use(backend)
            row_delivery_and_filter(b, rows)
        b.use(opts.backends[0])
    for name, fn in (("latency", row_latency), ("idle", row_idle), ("stop", row_stop),
                     ("fanout", row_fanout), ("viewers", row_viewers), ("schemas", row_schemas),
                     ("outage", row_outage)):
        if name in rows:
            fn(b)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"comma list of: {', '.join(ROWS)}")
    ap.add_argument("--records", type=int, help="records for delivery and filter rows")
    ap.add_argument("--window", type=float, help="seconds each CPU measurement lasts")
    ap.add_argument("--worker-class", default="gthread", choices=("gthread", "gevent"),
                    help="worker for every row but idle (which runs both)")
    ap.add_argument("--backend", default="kafka-python,confluent",
                    help="comma list of kafka-python, confluent: the delivery and filter rows run "
                    "once per backend (server's consumer_backend, and the raw consume rate it is "
                    "compared with); the other rows use the first")
    ap.add_argument("--bootstrap", default=os.environ.get(BOOTSTRAP_ENV),
                    help=f"measure against this cluster (default: ${BOOTSTRAP_ENV}, else an "
                    "embedded Tansu); the bench creates its topics there and deletes them after")
    ap.add_argument("--broker", default=os.environ.get(BROKER_ENV) or "tansu",
                    help="comma list of tansu, kafka: the broker(s) the bench starts, the rows "
                    "run once on each, back to back (default: $%s, else tansu); kafka is Apache "
                    "Kafka, fetched with Maven once" % BROKER_ENV)
    ap.add_argument("--out", help="also write the table and every number as JSON here")
    ap.add_argument("--profile", metavar="DIR",
                    help="profile the worker under each row's load; folded files go to DIR")
    opts = ap.parse_args()
    rows = set(opts.rows.split(","))
    if rows - set(ROWS):
        ap.error(f"unknown rows: {', '.join(sorted(rows - set(ROWS)))}")
    opts.backends = opts.backend.split(",")
    if set(opts.backends) - {"kafka-python", "confluent"}:
        ap.error(f"unknown backend in {opts.backend}")
    info = machine()
    b = Bench(opts)
    opts.brokers = opts.broker.split(",")
    if set(opts.brokers) - set(BROKERS):
        ap.error(f"unknown broker in {opts.broker}: use {', '.join(BROKERS)}")
    clusters = ([(None, f"the cluster at {opts.bootstrap}")] if opts.bootstrap
                else [(kind, None) for kind in opts.brokers])
    brokers = []
    for kind, label in clusters:
        with ExitStack() as stack:
            if kind is None:
                b.cluster = Cluster(opts.bootstrap)
                stack.callback(b.delete_topics)
            else:
                gen = start_cluster(kind)
                b.cluster = next(gen)
                stack.callback(gen.close)
                label = b.cluster.describe()
            brokers.append(label)
            b.broker = (b.cluster.broker.name if b.cluster.kind == "kafka" else "Tansu"
                        ) if len(clusters) > 1 else ""
            print(f"broker: {label}", file=sys.stderr, flush=True)
            run_rows(b, opts, rows)
            if kind == "kafka":
                launcher = b.cluster.broker
                rss = psutil.Process(launcher.proc.pid).memory_info().rss / 2**20
                b.add("Apache Kafka launcher", f"{launcher.heap_mb} MB heap, after the rows "
                      "above", f"ready in {launcher.start_seconds:.1f} s, JVM RSS {rss:.0f} MB",
                      "< 20 s, < 1 GB", launcher.start_seconds < 20 and rss < 1024,
                      start_s=launcher.start_seconds, rss_mb=rss)
    info["broker"] = "; ".join(brokers)
    text = render(info, b.rows, b.window)
    print(text)
    for row in b.rows:
        if "profile_top" in row["values"]:
            print(f"\nprofile, {row['measure']} ({row['setup']}): "
                  + "; ".join(f"{f} {p}%" for f, p in row["values"]["profile_top"]))
    if opts.out:
        Path(opts.out).write_text(json.dumps({"machine": info, "quick": opts.quick,
                                              "rows": b.rows, "table": text}, indent=2))


if __name__ == "__main__":
    main()
