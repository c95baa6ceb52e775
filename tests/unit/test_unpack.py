"""unpack.unpack_records yields what kafka-python's own unpacking yields, record for record and
position for position: fields, null and empty keys and values, headers, every varint width,
timestamps, codecs, read_committed's aborted transactions, control batches, legacy batches, a
fetch starting mid-batch, corrupt records."""
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import TopicPartition
from kafka.consumer.fetcher import Fetcher, IsolationLevel
from kafka.errors import CorruptRecordError
from kafka.protocol.old.fetch import AbortedTransaction
from kafka.record import MemoryRecords
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.legacy_records import LegacyRecordBatchBuilder
from kafka.record.util import calc_crc32c

from kafkatail.tail import unpack

TP = TopicPartition("t", 3)
NONE, GZIP, SNAPPY, LZ4, ZSTD = range(5)
CONTROL, LOG_APPEND_TIME = DefaultRecordBatch.CONTROL_MASK, DefaultRecordBatch.TIMESTAMP_TYPE_MASK


class Theirs(Fetcher.PartitionRecords):
    _unpack_records = unpack._original


class Ours(Fetcher.PartitionRecords):
    _unpack_records = unpack.unpack_records


def v2_batch(base, records, codec=NONE, pid=-1, transactional=False, attrs=0, epoch=5):
    """One v2 batch of (timestamp, key, value, headers) at ``base``; ``attrs`` ORs in what only
    a broker sets (control, log append time), with the CRC made anew."""
    b = DefaultRecordBatchBuilder(2, codec, transactional, pid, 0 if pid >= 0 else -1,
                                  0 if pid >= 0 else -1, 1 << 24)
    for i, (ts, key, value, headers) in enumerate(records):
        b.append(i, ts, key, value, headers)
    buf = b.build()
    struct.pack_into(">q", buf, 0, base)
    struct.pack_into(">i", buf, 12, epoch)  # the partition leader epoch, outside the CRC
    if attrs:
        at = DefaultRecordBatch.ATTRIBUTES_OFFSET
        struct.pack_into(">h", buf, at, struct.unpack_from(">h", buf, at)[0] | attrs)
        struct.pack_into(">I", buf, DefaultRecordBatch.CRC_OFFSET,
                         calc_crc32c(memoryview(buf)[at:]))
    return bytes(buf)


def legacy_batch(base, records, magic=1):
    b = LegacyRecordBatchBuilder(magic, NONE, 1 << 24)
    for i, (ts, key, value, _headers) in enumerate(records):
        b.append(base + i, ts if magic else None, key, value)
    return bytes(b.build())


def read(cls, data, fetch_offset=0, chunk=7, **kw):
    """Every take(chunk) of a PartitionRecords: (records, position after) each."""
    part = cls(fetch_offset, TP, MemoryRecords(data), **kw)
    out = []
    while part:
        got = part.take(chunk)
        out.append((got, part.next_fetch_offset, part.leader_epoch))
    return out


def same(data, **kw):
    theirs = read(Theirs, data, **kw)
    assert read(Ours, data, **kw) == theirs
    return [r for got, _, _ in theirs for r in got]


def plain(n, start=0, ts=1_700_000_000_000):
    return [(ts + i, None, b'{"n":%d}' % i, []) for i in range(start, start + n)]


def test_fields_keys_values_and_headers_as_kafka_python_reads_them():
    records = [
        (1, b"k", b"v", []),
        (2, None, None, []),
        (3, b"", b"", []),
        (4, b"\x00\x01", b"x" * 300, [("h", b"1"), ("n\u00e9", None), ("e", b"")]),
        (5, b"k" * 70_000, b"y" * 9_000, [("big", b"z" * 200)]),
    ]
    got = same(v2_batch(10, records))
    assert [r.offset for r in got] == [10, 11, 12, 13, 14]
    assert got[3].headers == [("h", b"1"), ("n\u00e9", None), ("e", b"")]
    assert got[3].serialized_header_size == 1 + 3 + 1 + 1
    assert (got[1].key, got[1].value, got[1].serialized_key_size) == (None, None, -1)
    assert got[0].leader_epoch == 5 and got[0].timestamp_type == 0


@pytest.mark.parametrize("codec", [NONE, GZIP, SNAPPY, LZ4, ZSTD])
def test_every_codec_and_many_records(codec):
    # 10,000 records: offset deltas and timestamp deltas past two varint bytes.
    records = [(1_700_000_000_000 + 40 * i, None, b"v%d" % i, []) for i in range(10_000)]
    got = same(v2_batch(0, records, codec=codec), chunk=500)
    assert len(got) == 10_000 and got[-1].timestamp == 1_700_000_000_000 + 40 * 9_999


def test_log_append_time_and_negative_timestamp_deltas():
    records = [(1000, None, b"a", []), (900, None, b"b", []), (5000, None, b"c", [])]
    assert [r.timestamp for r in same(v2_batch(0, records))] == [1000, 900, 5000]
    got = same(v2_batch(0, records, attrs=LOG_APPEND_TIME))
    assert {r.timestamp for r in got} == {5000} and got[0].timestamp_type == 1


def test_a_fetch_from_inside_a_compressed_batch_starts_at_its_offset():
    data = v2_batch(0, plain(50), codec=GZIP) + v2_batch(50, plain(50, 50))
    assert [r.offset for r in same(data, fetch_offset=37)] == list(range(37, 100))


def marker(base, pid, abort):
    return v2_batch(base, [(0, struct.pack(">hh", 0, 0 if abort else 1), b"\x00" * 6, [])],
                    pid=pid, transactional=True, attrs=CONTROL)


@pytest.mark.parametrize("isolation", [IsolationLevel.READ_COMMITTED,
                                       IsolationLevel.READ_UNCOMMITTED])
def test_aborted_transactions_and_control_batches(isolation):
    data = (v2_batch(0, plain(3), pid=7, transactional=True)
            + marker(3, 7, abort=True)
            + v2_batch(4, plain(2, 4), pid=8, transactional=True)
            + marker(6, 8, abort=False)
            + v2_batch(7, plain(2, 7))
            # The abort marker ended producer 7's aborted transaction: its next one commits.
            + v2_batch(9, plain(2, 9), pid=7, transactional=True)
            + marker(11, 7, abort=False))
    got = same(data, isolation_level=isolation,
               aborted_transactions=[AbortedTransaction(producer_id=7, first_offset=0)])
    committed = [4, 5, 7, 8, 9, 10]
    assert [r.offset for r in got] == (committed if isolation == IsolationLevel.READ_COMMITTED
                                       else [0, 1, 2] + committed)


@pytest.mark.parametrize("magic", [0, 1])
def test_legacy_batches_beside_v2_ones(magic):
    data = legacy_batch(0, plain(5), magic) + v2_batch(5, plain(5, 5))
    assert [r.offset for r in same(data)] == list(range(10))


def test_a_record_whose_fields_do_not_fill_its_length_is_corrupt_for_both():
    data = bytearray(v2_batch(0, plain(3)))
    data[DefaultRecordBatch.HEADER_STRUCT.size] += 2  # the first record's length, one more
    at = DefaultRecordBatch.ATTRIBUTES_OFFSET
    struct.pack_into(">I", data, DefaultRecordBatch.CRC_OFFSET, calc_crc32c(memoryview(data)[at:]))
    for cls in (Theirs, Ours):
        with pytest.raises(CorruptRecordError):
            read(cls, bytes(data))


def test_a_consumer_with_deserializers_gets_kafka_pythons_own_path():
    data = v2_batch(0, plain(3))

    class Upper:
        def deserialize(self, topic, headers, data):
            return data.upper()
    kw = {"value_deserializer": Upper()}
    assert read(Ours, data, **kw) == read(Theirs, data, **kw)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(
    st.integers(0, 1 << 41), st.none() | st.binary(max_size=300),
    st.none() | st.binary(max_size=20_000),
    st.lists(st.tuples(st.text(max_size=20), st.none() | st.binary(max_size=300)),
             max_size=3)), min_size=1, max_size=40), st.integers(0, 1 << 40),
    st.sampled_from([NONE, GZIP]), st.integers(1, 50))
def test_any_batch_reads_as_kafka_python_reads_it(records, base, codec, chunk):
    same(v2_batch(base, records, codec=codec), fetch_offset=base, chunk=chunk)
