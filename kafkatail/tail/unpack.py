"""Fetched records to ConsumerRecords: kafka-python's unpacking, with v2 batches decoded in
one loop (issue #27).

kafka-python reads a v2 record through six ``decode_varint`` calls and a ``DefaultRecord`` of
seven properties, then checks a CRC that v2 records do not have, calls two deserializers and
builds the ``ConsumerRecord`` through its namedtuple ``__new__``: 4.2 us a 200-byte record
(polls of 500), more than all of kafkatail's own work on it. ``unpack_records`` decodes a v2
batch's records in one loop instead, short varints read inline, and makes each ConsumerRecord
with ``tuple.__new__``: 2.0 us. Everything at the batch level stays kafka-python's: the CRC
check, decompression (``DefaultRecordBatch``), read_committed's aborted transactions, control
batches. Legacy (v0, v1) batches are unpacked as kafka-python does, and consumers with
deserializers go through kafka-python's own unpacking. One difference: a corrupt record fails
its batch before any of it is returned, not after the records ahead of it.
"""
from __future__ import annotations

from typing import Any, Iterator

from kafka import errors as Errors
from kafka.consumer.fetcher import ConsumerRecord, Fetcher, IsolationLevel
from kafka.record.util import decode_varint

_original = Fetcher.PartitionRecords._unpack_records
_new = tuple.__new__


def unpack_records(self: Any, tp: Any, records: Any, key_deserializer: Any,
                   value_deserializer: Any) -> Iterator[ConsumerRecord]:
    """``Fetcher.PartitionRecords._unpack_records`` (kafka-python 3.0), yielding the same
    records in the same order, with the same position (``next_fetch_offset``) after each."""
    if key_deserializer is not None or value_deserializer is not None:
        yield from _original(self, tp, records, key_deserializer, value_deserializer)
        return
    try:
        batch = records.next_batch()
        last_batch = None
        while batch is not None:
            last_batch = batch
            if self.check_crcs and not batch.validate_crc():
                raise Errors.CorruptRecordError(
                    "Record batch for partition %s at offset %s failed crc check" % (
                        self.topic_partition, batch.base_offset))
            if batch.magic == 2:
                if _skipped(self, batch):
                    self.next_fetch_offset = batch.next_offset
                    batch = records.next_batch()
                    continue
                decoded = decode_v2(batch, tp.topic, tp.partition)
                # kafka-python's fetch metrics: the batch's bytes, not the sum of its records'.
                self.records_read += len(decoded)
                self.bytes_read += batch.size_in_bytes
                for record in decoded:
                    self.next_fetch_offset = record[3] + 1
                    yield record
            else:
                yield from _legacy(self, tp, batch)
            batch = records.next_batch()
        # As kafka-python: a v2 batch's last offset survives compaction of its last record, so
        # the next fetch starts past the batch, not at a record it no longer holds.
        if last_batch is not None and last_batch.magic == 2:
            self.next_fetch_offset = last_batch.next_offset
        self.drain()
    except StopIteration:
        # A StopIteration would end this generator silently, as if the fetch had ended.
        raise RuntimeError("StopIteration raised unpacking messageset") from None


def _skipped(self: Any, batch: Any) -> bool:
    """kafka-python's batch-level filter: is this v2 batch an aborted transaction's (under
    read_committed) or a control batch, neither of which a consumer returns? Updates the
    aborted producers and the partition's leader epoch as it does."""
    self.leader_epoch = batch.leader_epoch
    if self.isolation_level == IsolationLevel.READ_COMMITTED and batch.has_producer_id():
        self._consume_aborted_transactions_up_to(batch.last_offset)
        if self._contains_abort_marker(batch):
            self.aborted_producer_ids.discard(batch.producer_id)
        elif self._is_batch_aborted(batch):
            return True
    return batch.is_control_batch


def _legacy(self: Any, tp: Any, batch: Any) -> Iterator[ConsumerRecord]:
    """A v0 or v1 batch's records, as kafka-python unpacks them (these carry a CRC each)."""
    for record in batch:
        if self.check_crcs and not record.validate_crc():
            raise Errors.CorruptRecordError(
                "Record for partition %s at offset %s failed crc check" % (
                    self.topic_partition, record.offset))
        key, value = record.key, record.value
        self.records_read += 1
        self.bytes_read += record.size_in_bytes
        self.next_fetch_offset = record.offset + 1
        yield ConsumerRecord(
            tp.topic, tp.partition, self.leader_epoch, record.offset, record.timestamp,
            record.timestamp_type, key, value, record.headers, record.checksum,
            -1 if key is None else len(key), -1 if value is None else len(value), -1)


def decode_v2(batch: Any, topic: str, partition: int) -> list[ConsumerRecord]:
    """Every record of a v2 ``DefaultRecordBatch`` (decompressed here if it is compressed), with
    kafka-python's checks: CorruptRecordError if a record's fields do not fill its length, or
    the records do not fill the batch."""
    batch._maybe_uncompress()
    data = bytes(batch._buffer)  # once a batch: slices of bytes are the keys and values
    head = batch._header_data
    log_append = batch.timestamp_type == batch.LOG_APPEND_TIME
    try:
        records, end = _records(
            data, batch._pos, head[12], topic, partition, head[2], head[0],
            head[8] if log_append else head[7], not log_append, batch.timestamp_type)
    except (ValueError, IndexError) as err:
        raise Errors.CorruptRecordError(f"Found invalid record structure: {err!r}") from None
    if end != len(data):
        raise Errors.CorruptRecordError(
            f"{len(data) - end} unconsumed bytes after all records consumed")
    return records


def _records(data: bytes, pos: int, count: int, topic: str, partition: int, epoch: int,
             base_offset: int, base_time: int, time_deltas: bool,
             time_type: int) -> tuple[list[ConsumerRecord], int]:
    """``count`` v2 records from ``data[pos:]``, and the position after them. Record: length,
    attributes (int8), timestamp delta, offset delta, key length, key, value length, value,
    headers; each number a zigzag varint ``n``, ``(n >> 1) ^ -(n & 1)``, read inline when it
    fits one byte, and two for the length, offset delta and value length (under 8 KB, past 64
    records): a call per field cost more than the rest of the record."""
    out: list[ConsumerRecord] = []
    append, varint = out.append, decode_varint
    for _ in range(count):
        n = data[pos]
        if n < 0x80:
            length, pos = (n >> 1) ^ -(n & 1), pos + 1
        elif data[pos + 1] < 0x80:
            n = (n & 0x7f) | data[pos + 1] << 7
            length, pos = (n >> 1) ^ -(n & 1), pos + 2
        else:
            length, pos = varint(data, pos)
        start, n = pos, data[pos + 1]  # past the attributes
        if n < 0x80:
            delta, pos = (n >> 1) ^ -(n & 1), pos + 2
        else:
            delta, pos = varint(data, pos + 1)
        n = data[pos]
        if n < 0x80:
            offset, pos = (n >> 1) ^ -(n & 1), pos + 1
        elif data[pos + 1] < 0x80:
            n = (n & 0x7f) | data[pos + 1] << 7
            offset, pos = (n >> 1) ^ -(n & 1), pos + 2
        else:
            offset, pos = varint(data, pos)
        n = data[pos]
        if n < 0x80:
            key_size, pos = (n >> 1) ^ -(n & 1), pos + 1
        else:
            key_size, pos = varint(data, pos)
        key = None if key_size < 0 else data[pos:pos + key_size]
        pos += key_size if key_size > 0 else 0
        n = data[pos]
        if n < 0x80:
            value_size, pos = (n >> 1) ^ -(n & 1), pos + 1
        elif data[pos + 1] < 0x80:
            n = (n & 0x7f) | data[pos + 1] << 7
            value_size, pos = (n >> 1) ^ -(n & 1), pos + 2
        else:
            value_size, pos = varint(data, pos)
        value = None if value_size < 0 else data[pos:pos + value_size]
        pos += value_size if value_size > 0 else 0
        headers, header_size, pos = ([], -1, pos + 1) if data[pos] == 0 else _headers(data, pos)
        if pos - start != length:
            raise Errors.CorruptRecordError(f"Invalid record size: expected to read {length} "
                                            f"bytes in record payload, but read {pos - start}")
        append(_new(ConsumerRecord, (
            topic, partition, epoch, base_offset + offset,
            base_time + delta if time_deltas else base_time, time_type, key, value, headers,
            None, -1 if key is None else key_size, -1 if value is None else value_size,
            header_size)))
    return out, pos


def _headers(data: bytes, pos: int) -> tuple[list[tuple[str, bytes | None]], int, int]:
    """A record's headers from their count at ``pos``: (headers, their size as kafka-python
    counts it, the position after them)."""
    count, pos = decode_varint(data, pos)
    if count < 0:
        raise Errors.CorruptRecordError(f"Found invalid number of record headers {count}")
    headers: list[tuple[str, bytes | None]] = []
    size = 0
    for _ in range(count):
        name_size, pos = decode_varint(data, pos)
        if name_size < 0:
            raise Errors.CorruptRecordError(f"Invalid negative header key size {name_size}")
        name, pos = data[pos:pos + name_size].decode("utf-8"), pos + name_size
        value_size, pos = decode_varint(data, pos)
        if value_size < 0:
            value = None
        else:
            value, pos = data[pos:pos + value_size], pos + value_size
            size += value_size
        headers.append((name, value))
        size += name_size
    return headers, size if headers else -1, pos
