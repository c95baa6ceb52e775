"""The tools behind ``scripts/bench.py``: a server process, WebSocket clients, paced producers,
a Kafka request-counting proxy, the outage design rebuilt, and the arithmetic of the table.

Kept apart from bench.py so the pure parts (percentiles, the Kafka frame counter, the profile
summary) have unit tests, and bench.py reads as the list of measurements it makes.
"""
from __future__ import annotations

import base64
import functools
import json
import multiprocessing
import os
import platform
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Any, Callable

import psutil
import websocket
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from kafkatail.broker import (BrokerError, EmbeddedBroker, die_with_parent, free_port,
                              tansu_binary, wait_for_port)
from kafkatail.ops.profiler import parse_folded
from kafkatail.testing.server import ServerProcess

# What every bench server runs with: the suite's open access, no per-address connection limit,
# room for 1,000 tails on one gevent worker (a sixteenth of worker_connections is kept for HTTP).
BASE_CONFIG: dict[str, object] = {
    "anonymous_topics": "**", "debug_access": "open", "connect_rate_per_client": 0,
    "max_tails": 5000, "max_tails_per_client": 5000, "max_tails_per_topic": 5000,
    "worker_connections": 1200, "threads": 300,
}
FETCH = 1  # Kafka API key of a Fetch request


# -- arithmetic ------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks, as numpy's default."""
    if not values:
        raise ValueError("percentile of no values")
    s = sorted(values)
    pos = (len(s) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def top_self_frames(folded: str, n: int = 5) -> list[tuple[str, float]]:
    """The n functions holding the most samples at the top of their stack, with their share (%)
    of all samples: where the CPU of a folded profile went."""
    stacks = parse_folded(folded)
    total = sum(count for _, count in stacks)
    own: Counter[str] = Counter()
    for stack, count in stacks:
        own[stack[-1]] += count
    return [(frame, 100 * count / total) for frame, count in own.most_common(n)] if total else []


def rst_table(header: list[str], rows: list[list[str]]) -> str:
    """An RST simple table, each column as wide as its widest cell."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([rule, line(header), rule, *map(line, rows), rule])


def machine() -> dict[str, object]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh
                          if line.startswith("model name")), "")
    except OSError:
        pass
    import kafka
    from kafka.record import util
    return {"nproc": os.cpu_count(), "cpu": model or platform.processor(),
            "python": platform.python_version(), "load_avg": [round(x, 2) for x in os.getloadavg()],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            # kafka-python checks every batch's CRC-32C, in pure Python unless crc32c is installed:
            # most of its consume cost, so it decides the delivery rows.
            "kafka_python": kafka.__version__,
            "kafka_crc32c": "C (crc32c package)" if util.crc32c_c else "pure Python"}


def raise_fd_limit(need: int = 0) -> int:
    """Thousands of sockets (clients here, tails in the server, which inherits the limit: raise it
    before starting servers). The soft limit goes to the hard one, and the hard one to ``need``
    where this process may raise it (root); returns the soft limit now in force."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < need:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (need, need))
            return need
        except (ValueError, OSError):
            pass  # not allowed: the hard limit is what there is
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def room_for(tails: int) -> dict[str, int]:
    """Server config with room for ``tails`` tails on one worker, beyond BASE_CONFIG's 1,000:
    worker_connections with its sixteenth kept for HTTP, and the three tail caps."""
    slots = max(int(BASE_CONFIG["worker_connections"]), tails + tails // 8 + 64)
    caps = max(int(BASE_CONFIG["max_tails"]), slots)
    return {"worker_connections": slots, "max_tails": caps, "max_tails_per_client": caps,
            "max_tails_per_topic": caps}


def wait_until(pred: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(every)


# -- the server under test -----------------------------------------------------------------
class Server(ServerProcess):
    """``kafkatail serve`` with the bench's base config (open access, room for many tails)."""

    def __init__(self, bootstrap: str, worker_class: str = "gthread", **config: object) -> None:
        super().__init__(bootstrap, worker_class, **{**BASE_CONFIG, **config})


class Usage:
    """CPU (% of one core) and RSS of a process over a window: ``with Usage(p) as u: ...``."""

    def __init__(self, proc: psutil.Process) -> None:
        self.proc = proc

    def __enter__(self) -> "Usage":
        self._times, self._t = self.proc.cpu_times(), time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        t, t0 = self.proc.cpu_times(), self._times
        self.seconds = time.monotonic() - self._t
        # The kernel's share (system) is what sending bytes costs; user is Python's.
        self.user_pct = 100 * (t.user - t0.user) / self.seconds
        self.system_pct = 100 * (t.system - t0.system) / self.seconds
        self.cpu_pct = self.user_pct + self.system_pct
        self.rss_mb = self.proc.memory_info().rss / 2**20
        self.threads = self.proc.num_threads()
        self.fds = self.proc.num_fds()


# -- clients ---------------------------------------------------------------------------------
# What Chromium and Firefox send; websocket-client cannot decompress, so only raw readers ask.
DEFLATE_OFFER = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"


def connect(url: str, deflate: bool = False) -> websocket.WebSocket:
    return websocket.create_connection(url, timeout=30, skip_utf8_validation=True,
                                       header=[DEFLATE_OFFER] if deflate else None)


def handshake(url: str, deflate: bool = False, timeout: float = 30) -> websocket.WebSocket:
    """A client WebSocket like ``connect``'s, its upgrade read in two recv calls instead of
    websocket-client's one per byte of the response head (most of this process's ~1 ms per
    socket). The server's Sec-WebSocket-Accept is not checked. Raises ConnectionError with the
    status line if the answer is not 101."""
    u = urllib.parse.urlsplit(url)
    sock = socket.create_connection((u.hostname, u.port), timeout)
    key = base64.b64encode(os.urandom(16)).decode()
    offer = DEFLATE_OFFER + "\r\n" if deflate else ""
    try:
        sock.sendall(f"GET {u.path}{'?' + u.query if u.query else ''} HTTP/1.1\r\n"
                     f"Host: {u.netloc}\r\nOrigin: http://{u.netloc}\r\nUpgrade: websocket\r\n"
                     f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\n{offer}\r\n".encode())
        # Peeked, then only the head taken: the frames behind it stay for the reader.
        while (end := (head := sock.recv(8192, socket.MSG_PEEK)).find(b"\r\n\r\n")) < 0:
            if not head:
                raise ConnectionError("closed during the handshake")
            time.sleep(0.001)  # the head arrived in pieces: rare
        sock.recv(end + 4)
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["101"]:
            raise ConnectionError(status)
    except BaseException:
        sock.close()
        raise
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.sock, ws.connected = sock, True
    return ws


class Drain(threading.Thread):
    """Reads many WebSockets on one thread so a thousand clients cost one thread here.

    ``raw``: bytes are read and dropped, nothing parsed (pings go unanswered: give the server
    a long ping interval). Otherwise each frame is read whole, pings are answered, and each
    text frame goes to ``on_text(ws, text, received_at)``.
    """

    def __init__(self, on_text: Callable[[Any, str, float], None] | None = None,
                 raw: bool = False) -> None:
        super().__init__(name="bench-drain", daemon=True)
        self.on_text = on_text
        self.raw = raw
        self.bytes = 0
        self.closed = 0
        self.close_codes: Counter = Counter()  # close code, or the error, of each closed socket
        # epoll: registering from another thread while this one waits in select is safe.
        self._sel = selectors.EpollSelector()
        self._halt = threading.Event()

    def add(self, ws: websocket.WebSocket) -> None:
        self._sel.register(ws.sock, selectors.EVENT_READ, ws)

    def run(self) -> None:
        while not self._halt.is_set():
            texts = []
            for key, _ in self._sel.select(0.05):
                ws = key.data
                try:
                    if self.raw:
                        data = ws.sock.recv(1 << 20)
                        self.bytes += len(data)
                        if not data:
                            self._gone(key, "EOF")
                        continue
                    opcode, data = ws.recv_data(control_frame=True)
                    if opcode == websocket.ABNF.OPCODE_TEXT and self.on_text:
                        texts.append((ws, data, time.time()))
                    elif opcode == websocket.ABNF.OPCODE_CLOSE:
                        self._gone(key, int.from_bytes(data[:2], "big") if len(data) >= 2 else 1005)
                except (OSError, websocket.WebSocketException) as exc:
                    self._gone(key, type(exc).__name__)
            # Every ready socket is read before any text is handled, so the time a frame is
            # stamped with does not include handling the frames of the sockets read before it.
            for ws, data, now in texts:
                self.on_text(ws, data.decode() if isinstance(data, bytes) else data, now)

    def _gone(self, key: selectors.SelectorKey, why: int | str) -> None:
        self._sel.unregister(key.fileobj)
        self.closed += 1
        self.close_codes[why] += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self._sel.close()


def open_sockets(url: str, n: int, drain: Drain, deflate: bool = False, threads: int = 8
                 ) -> tuple[list[websocket.WebSocket], Counter]:
    """n WebSockets to ``url`` read by ``drain``, opened by ``threads`` threads at once (the
    server's handshake is the slow half, and one at a time neither side is busy); returns the
    sockets and the failures by reason (status line or error), which are not retried.
    Below the gevent worker's header_conns_per_client (32), so no handshake is refused for it."""
    def one(_: int) -> websocket.WebSocket | str:
        try:
            ws = handshake(url, deflate)
        except OSError as exc:
            return str(exc) or type(exc).__name__
        drain.add(ws)
        return ws

    with ThreadPoolExecutor(threads, thread_name_prefix="bench-open") as pool:
        results = list(pool.map(one, range(n)))
    failed = Counter(r for r in results if isinstance(r, str))
    return [r for r in results if not isinstance(r, str)], failed


def open_tails(server: Server, path: str, n: int, drain: Drain,
               deflate: bool = False) -> list[websocket.WebSocket]:
    """n tails of ``path``, read by ``drain`` (raw, if they ask for ``deflate`` as browsers do);
    returns once the server counts them all."""
    assert drain.raw or not deflate
    before = server.tails()
    sockets, failed = open_sockets(server.ws_url(path), n, drain, deflate)
    if failed:
        close_all(sockets)
        raise ConnectionError(f"{sum(failed.values())} of {n} tails not opened: {dict(failed)}")
    wait_until(lambda: server.tails() >= before + n, 60, f"{n} tails open", 0.2)
    return sockets


def close_all(sockets: list[websocket.WebSocket]) -> None:
    for ws in sockets:
        sock = ws.sock  # None once websocket-client closed it itself
        if sock is None:
            continue
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()


# Once in every record of a messages frame (records.py's ``"partition":N,"offset":N``) and in no
# other frame of the protocol, nor in ``value()``'s fields.
RECORD_MARKER = b'"offset":'


class MarkerCount:
    """Records in one socket's raw byte stream, counted as RECORD_MARKERs without parsing frames
    (frames are unmasked and, without deflate, their JSON is the bytes themselves; a frame header
    only ever sits between two frames, never inside a marker). A marker split between two reads
    is found in the last ``len - 1`` bytes kept from before."""

    KEEP = len(RECORD_MARKER) - 1

    def __init__(self) -> None:
        self.records = 0
        self._tail = b""

    def feed(self, buf: bytearray, n: int) -> None:
        """Count the first n bytes of ``buf``."""
        joined = self._tail + bytes(buf[:min(n, self.KEEP)])
        # joined's two parts are each shorter than a marker: any marker in it spans them.
        self.records += buf.count(RECORD_MARKER, 0, n) + joined.count(RECORD_MARKER)
        self._tail = joined[-self.KEEP:] if n < self.KEEP else bytes(buf[n - self.KEEP:n])


class InflateMemo:
    """Records in compressed messages (RECORD_MARKERs in each, inflated), remembered for the
    last ``size`` distinct messages. permessage-deflate without context takeover makes every
    message stand alone, and a shared feed sends the same compressed bytes to every viewer of
    one wire format: each distinct message is then inflated once per client process, not once
    per socket."""

    def __init__(self, size: int = 256) -> None:
        self.size = size
        self.inflated = 0  # messages inflated (memo misses)
        self._counts: dict[bytes, int] = {}

    def count(self, payload: bytes) -> int:
        records = self._counts.get(payload)
        if records is None:
            # RFC 7692: the sender's trailing 00 00 ff ff was cut off; a fresh inflater per
            # message, as the server keeps no context between them.
            text = zlib.decompressobj(-15).decompress(payload + b"\x00\x00\xff\xff")
            records = text.count(RECORD_MARKER)
            self.inflated += 1
            if len(self._counts) >= self.size:
                del self._counts[next(iter(self._counts))]  # the oldest
            self._counts[payload] = records
        return records


class FrameCount:
    """Records in one socket's server-to-client WebSocket frames (unmasked; 7, 16 or 64-bit
    lengths; a frame may split across reads anywhere), as RECORD_MARKERs in each message:
    compressed ones (RSV1) through ``memo``, the others in their bytes. For clients that
    negotiated permessage-deflate, whose bytes MarkerCount cannot read. Control frames are
    skipped; a fragmented message is joined first."""

    def __init__(self, memo: InflateMemo) -> None:
        self.records = self.messages = self.compressed = 0
        self._memo = memo
        self._buf = bytearray()
        self._parts: list[bytes] | None = None  # a fragmented message so far
        self._rsv1 = 0  # of its first frame

    def feed(self, buf: bytearray, n: int) -> None:
        """Count the first n bytes of ``buf``."""
        data = self._buf
        data += memoryview(buf)[:n]
        pos, end = 0, len(data)
        with memoryview(data) as view:  # released before ``data`` is resized
            while end - pos >= 2:
                size, head = data[pos + 1] & 0x7F, 2
                if size == 126:
                    if end - pos < 4:
                        break
                    size, head = int.from_bytes(view[pos + 2:pos + 4], "big"), 4
                elif size == 127:
                    if end - pos < 10:
                        break
                    size, head = int.from_bytes(view[pos + 2:pos + 10], "big"), 10
                stop = pos + head + size
                if stop > end:
                    break
                b0 = data[pos]
                if not b0 & 0x08:  # a data frame: text, binary or continuation
                    self._frame(b0, bytes(view[pos + head:stop]))
                pos = stop
        del data[:pos]

    def _frame(self, b0: int, payload: bytes) -> None:
        if self._parts is not None or not b0 & 0x80:  # part of a fragmented message
            if self._parts is None:
                self._parts, self._rsv1 = [], b0 & 0x40
            self._parts.append(payload)
            if not b0 & 0x80:
                return
            payload, rsv1, self._parts = b"".join(self._parts), self._rsv1, None
        else:
            rsv1 = b0 & 0x40
        self.messages += 1
        if rsv1:
            self.compressed += 1
            self.records += self._memo.count(payload)
        else:
            self.records += payload.count(RECORD_MARKER)


def count_records(url: str, n: int, conn: Any, deflate: bool = False) -> None:
    """A client process: n tails of ``url`` read raw, records counted per socket with no ping
    answered (give the server a long ping interval). Plain: MarkerCount, no frame parsed.
    ``deflate``: the handshakes ask for permessage-deflate as Chromium does, and FrameCount
    parses the frames, inflating each distinct compressed message once (InflateMemo).
    ``conn`` (a Pipe end) gets "open" once all are open (or the error), then answers each
    "counts" with (records per socket, bytes, sockets closed, message stats) until "stop"."""
    try:
        sockets = [handshake(url, deflate).sock for _ in range(n)]
    except OSError as exc:
        conn.send(f"{type(exc).__name__}: {exc}")
        return
    memo = InflateMemo()
    counters = [FrameCount(memo) if deflate else MarkerCount() for _ in sockets]
    sel = selectors.EpollSelector()
    for sock, counter in zip(sockets, counters):
        sel.register(sock, selectors.EVENT_READ, counter)
    sel.register(conn, selectors.EVENT_READ, None)
    buf = bytearray(1 << 18)
    total = closed = 0
    conn.send("open")
    while True:
        for key, _ in sel.select(1.0):
            counter = key.data
            if counter is None:
                if conn.recv() == "stop":
                    for sock in sockets:
                        sock.close()
                    return
                stats = Counter(inflated=memo.inflated)
                if deflate:
                    stats.update(messages=sum(c.messages for c in counters),
                                 compressed=sum(c.compressed for c in counters))
                conn.send(([c.records for c in counters], total, closed, stats))
                continue
            try:
                got = key.fileobj.recv_into(buf)
            except OSError:
                got = 0
            if not got:
                sel.unregister(key.fileobj)
                closed += 1
                continue
            total += got
            counter.feed(buf, got)


class CountingClients:
    """n tails of ``url`` in ``processes`` client processes (count_records), so that reading
    and counting a thousand busy sockets is not limited by this process's GIL, nor slows the
    paced producer on it; ``deflate``: they ask for permessage-deflate, as browsers do.
    ``counts()``: records per socket, all processes together."""

    def __init__(self, url: str, n: int, processes: int, deflate: bool = False) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
        self._conns, self.procs = [], []
        for i in range(processes):
            mine, theirs = ctx.Pipe()
            proc = ctx.Process(target=count_records, name=f"bench-counter-{i}", daemon=True,
                               args=(url, n // processes + (i < n % processes), theirs, deflate))
            proc.start()
            theirs.close()  # the child's end is the child's: its exit then ends our recv
            self._conns.append(mine)
            self.procs.append(proc)
        for conn in self._conns:
            try:
                answer = conn.recv() if conn.poll(120) else "no answer within 120 s"
            except EOFError:
                answer = "it exited"
            if answer != "open":
                self.stop()
                raise ConnectionError(f"a counting client could not open its tails: {answer}")

    def counts(self) -> tuple[list[int], int, int, Counter]:
        """Records per socket, bytes read, sockets closed and message stats (with deflate:
        messages, compressed ones, inflated ones) so far, over all processes."""
        for conn in self._conns:
            conn.send("counts")
        records, total, closed, stats = [], 0, 0, Counter()
        for conn in self._conns:
            r, t, c, s = conn.recv()
            records += r
            total += t
            closed += c
            stats += s
        return records, total, closed, stats

    def stop(self) -> None:
        for conn, proc in zip(self._conns, self.procs):
            try:
                conn.send("stop")
            except OSError:
                pass
            proc.join(10)
            if proc.is_alive():
                proc.kill()


# -- records ---------------------------------------------------------------------------------
def value(seq: int, size: int = 200) -> bytes:
    """A JSON record value of about ``size`` bytes carrying its produce time (epoch seconds)."""
    head = {"t": time.time(), "seq": seq, "user": f"user-{seq % 977}", "event": "page_view",
            "path": f"/shop/items/{seq % 5003}", "status": 200}
    raw = json.dumps(head, separators=(",", ":"))
    return (raw[:-1] + ',"pad":"' + "x" * max(0, size - len(raw) - 9) + '"}').encode()


@functools.lru_cache(maxsize=1)
def security() -> dict[str, Any]:
    """kafka-python settings from ``KAFKATAIL_KAFKA_PROPERTIES`` (a cluster given with
    ``--bootstrap`` that needs TLS or SASL; the servers started here read the same file)."""
    path = os.environ.get("KAFKATAIL_KAFKA_PROPERTIES")
    if not path:
        return {}
    from kafkatail.config import load
    from kafkatail.tail.clientconf import kafka_python
    return kafka_python(load(None, overrides={"kafka_properties": path}))


def producer(bootstrap: str, **kw: Any) -> KafkaProducer:
    return KafkaProducer(bootstrap_servers=bootstrap, acks=1, **kw, **security())


def produce_bulk(bootstrap: str, topic: str, n: int) -> None:
    p = producer(bootstrap, linger_ms=20, batch_size=1 << 18)
    try:
        for seq in range(n):
            p.send(topic, value(seq), partition=0)
        p.flush(120)
    finally:
        p.close(10)


# ``value()``'s fields as Avro, for records of the same content in both formats.
BENCH_AVRO = json.dumps({"type": "record", "name": "PageView", "fields": [
    {"name": "t", "type": "double"}, {"name": "seq", "type": "long"},
    {"name": "user", "type": "string"}, {"name": "event", "type": "string"},
    {"name": "path", "type": "string"}, {"name": "status", "type": "int"},
    {"name": "pad", "type": "string"}]})


def produce_avro(bootstrap: str, topic: str, n: int, registry_url: str) -> None:
    """``n`` records of ``value()``'s content, written by confluent-kafka's AvroSerializer."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    serialize = AvroSerializer(SchemaRegistryClient({"url": registry_url}), BENCH_AVRO)
    context = SerializationContext(topic, MessageField.VALUE)
    p = producer(bootstrap, linger_ms=20, batch_size=1 << 18)
    try:
        for seq in range(n):
            p.send(topic, serialize(json.loads(value(seq)), context), partition=0)
        p.flush(120)
    finally:
        p.close(10)


class PacedProducer(threading.Thread):
    """Produces ``rate`` records a second in 5 ms ticks, each stamped as it is sent."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        super().__init__(name="bench-producer", daemon=True)
        self.topic, self.rate = topic, rate
        self.sent = 0
        self._producer = producer(bootstrap, linger_ms=0)
        self._halt = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self._halt.wait(0.005):
            due = int((time.monotonic() - start) * self.rate)
            while self.sent < due:
                self._producer.send(self.topic, value(self.sent), partition=0)
                self.sent += 1

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self._producer.close(10)


def raw_consume_rate(bootstrap: str, topic: str, n: int, max_poll_records: int = 500,
                     fetch_max_wait_ms: int = 500, backend: str = "kafka-python") -> float:
    """Records a second a plain kafka-python consumer loop reads from offset 0, construction
    included (as the server's includes its own), with the server's poll settings.
    ``backend="confluent"``: the same loop with a confluent-kafka Consumer (assign, consume)."""
    if backend == "confluent":
        return raw_confluent_rate(bootstrap, topic, n, max_poll_records, fetch_max_wait_ms)
    start = time.monotonic()
    c = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False,
                      max_poll_records=max_poll_records, fetch_max_wait_ms=fetch_max_wait_ms,
                      **security())
    try:
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek(tp, 0)
        got = 0
        while got < n:
            got += sum(len(recs) for recs in c.poll(timeout_ms=1000).values())
        return got / (time.monotonic() - start)
    finally:
        c.close()


def raw_confluent_rate(bootstrap: str, topic: str, n: int, max_poll_records: int = 500,
                       fetch_max_wait_ms: int = 500) -> float:
    """Records a second a plain confluent-kafka loop reads from offset 0 (construction
    included): ``consume(max_poll_records, 1 s)`` batches, every message's value touched."""
    from confluent_kafka import Consumer
    from confluent_kafka import TopicPartition as CTP

    start = time.monotonic()
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-raw",
                  "enable.auto.commit": False, "fetch.wait.max.ms": fetch_max_wait_ms})
    try:
        c.assign([CTP(topic, 0, 0)])
        got = 0
        while got < n:
            # Never ask for more than is left: consume() waits its timeout for a full batch.
            for m in c.consume(min(max_poll_records, n - got), 1.0):
                if m.error() is None:
                    m.value()
                    got += 1
        return got / (time.monotonic() - start)
    finally:
        c.close()


class RawLatency(threading.Thread):
    """A plain kafka-python consumer in this process reading the paced records from offset 0:
    the latency the broker and client library give before kafkatail adds anything."""

    def __init__(self, bootstrap: str, topic: str, measuring: threading.Event,
                 fetch_max_wait_ms: int = 500) -> None:
        super().__init__(name="bench-raw-latency", daemon=True)
        self.measuring = measuring
        self.latencies: list[float] = []
        self._halt = threading.Event()
        self._consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                       enable_auto_commit=False,
                                       fetch_max_wait_ms=fetch_max_wait_ms, **security())
        tp = TopicPartition(topic, 0)
        self._consumer.assign([tp])
        self._consumer.seek(tp, 0)

    def run(self) -> None:
        while not self._halt.is_set():
            for recs in self._consumer.poll(timeout_ms=200).values():
                now = time.time()
                if self.measuring.is_set():
                    self.latencies.extend(now - json.loads(r.value)["t"] for r in recs)

    def stop(self) -> None:
        self._halt.set()
        self.join(10)
        self._consumer.close()


# -- a broker behind a proxy that counts requests -----------------------------------------------
class RequestCounter:
    """Parses the client-to-broker byte stream of one connection into Kafka request frames
    (4-byte big-endian size, then int16 api_key, int16 version, int32 correlation id, int16-length
    client id) and counts them by (api_key, client_id). Bytes may arrive split anywhere."""

    HEADER = 10  # api_key, api_version, correlation_id, client_id length

    def __init__(self, counts: Counter) -> None:
        self.counts = counts
        self._buf = bytearray()
        self._skip = 0

    def feed(self, data: bytes) -> None:
        if self._skip:
            taken = min(self._skip, len(data))
            self._skip -= taken
            data = data[taken:]
        self._buf += data
        while len(self._buf) >= 4 + self.HEADER:
            size = int.from_bytes(self._buf[:4], "big")
            id_len = int.from_bytes(self._buf[12:14], "big", signed=True)
            need = 4 + min(size, self.HEADER + max(id_len, 0))
            if len(self._buf) < need:
                return
            api_key = int.from_bytes(self._buf[4:6], "big", signed=True)
            client = self._buf[14:14 + id_len].decode("utf-8", "replace") if id_len > 0 else ""
            self.counts[(api_key, client)] += 1
            if len(self._buf) >= 4 + size:
                del self._buf[:4 + size]
            else:
                self._skip = 4 + size - len(self._buf)
                self._buf.clear()


class CountingProxy(threading.Thread):
    """TCP proxy to a broker, two pump threads per connection; counts requests as it relays."""

    def __init__(self, upstream: tuple[str, int], port: int) -> None:
        super().__init__(name="bench-proxy", daemon=True)
        self.upstream = upstream
        self.counts: Counter = Counter()
        self._listen = socket.create_server(("127.0.0.1", port))
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()

    def fetches(self, prefix: str = "kt-") -> int:
        """Fetch requests so far from clients whose id starts with ``prefix`` (the server's)."""
        with self._lock:
            return sum(n for (key, client), n in self.counts.items()
                       if key == FETCH and client.startswith(prefix))

    def run(self) -> None:
        while True:
            try:
                down, _ = self._listen.accept()
                up = socket.create_connection(self.upstream)
            except OSError:
                return
            for s in (down, up):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socks += [down, up]
            counter = RequestCounter(Counter())
            threading.Thread(target=self._pump, args=(down, up, counter), daemon=True,
                             name="bench-proxy-up").start()
            threading.Thread(target=self._pump, args=(up, down, None), daemon=True,
                             name="bench-proxy-down").start()

    def _pump(self, src: socket.socket, dst: socket.socket, counter: RequestCounter | None) -> None:
        try:
            while data := src.recv(1 << 16):
                if counter is not None:
                    counter.feed(data)
                    with self._lock:
                        self.counts.update(counter.counts)
                    counter.counts.clear()
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def stop(self) -> None:
        self._listen.close()
        self.join(5)
        for s in self._socks:
            s.close()


class ProxiedBroker(EmbeddedBroker):
    """A Tansu broker that advertises a counting proxy's address, so every connection a client
    makes after bootstrap goes through the proxy too."""

    def start(self, timeout: float = 20.0) -> "ProxiedBroker":
        self.proxy = CountingProxy((self.host, self.port), free_port(self.host))
        proxy_url = f"tcp://{self.host}:{self.proxy._listen.getsockname()[1]}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [tansu_binary(), "broker", "--listener-url", f"tcp://{self.host}:{self.port}",
                 "--advertised-listener-url", proxy_url, "--storage-engine", "memory://tansu/"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=die_with_parent,
                env={**os.environ, "RUST_LOG": "warn"})
        if not wait_for_port(self.host, self.port, timeout):
            self.stop()
            raise BrokerError(f"tansu did not start: {self.log_tail()}")
        self.proxy.start()
        return self

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.proxy._listen.getsockname()[1]}"

    def stop(self, timeout: float = 5.0) -> None:
        if getattr(self, "proxy", None) is not None:
            self.proxy.stop()
        super().stop(timeout)


# -- the outage design -----------------------------------------------------------------------
LEAKY_APP = '''
import sys, threading
from flask import Flask
from kafka import KafkaConsumer
BOOTSTRAP, TOPIC, PORT = sys.argv[1], sys.argv[2], int(sys.argv[3])
app = Flask(__name__)

def tail_forever():
    consumer = KafkaConsumer(TOPIC, bootstrap_servers=BOOTSTRAP)
    for message in consumer:   # the outage: no timeout, no stop, no close
        pass

@app.get("/")
def page():
    threading.Thread(target=tail_forever, daemon=True).start()
    return "tailing\\n"

app.run(host="127.0.0.1", port=PORT, threaded=True)
'''


class LeakyApp:
    """The original server's design: every page view starts a consumer thread nobody stops."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen([sys.executable, "-c", LEAKY_APP, bootstrap, topic,
                                      str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port("127.0.0.1", self.port, 30):
            self.stop()
            raise RuntimeError("leaky app did not start")
        self.worker = psutil.Process(self.proc.pid)

    def view(self) -> None:
        urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=30).read()

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()
