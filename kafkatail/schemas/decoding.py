"""Decoders by schema id, shared by every feed of a process, fetched off the feed's thread.

A feed asks ``Schemas.decoder(id, deadline)`` for each framed key or value. A cached decoder
answers at once. A new id starts one fetch (never two for the same id) on the registry pool's
threads, and the feed waits for it until ``deadline`` at most, once: a later record that meets
the same fetch still running does not wait again, so a registry that hangs costs a feed one
short wait, not one per poll. A failure is remembered, briefly when the registry could not
answer (``retry_s``), longer when it said the id does not exist (``unknown_ttl_s``): while it
is remembered, records go out undecoded at once, with the reason, and nothing spins.
"""
from __future__ import annotations

import importlib
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Callable, NamedTuple

from ..ops.threads import REGISTRY
from . import SchemaError
from .registry import RegistryClient, RegistryError

log = logging.getLogger(__name__)

# The registry's schemaType (absent: AVRO) -> encoding shown in frames, and the decoder's
# builder, imported when first needed (protoc and the protobuf runtime load only for Protobuf).
_TYPES = {
    "AVRO": ("avro", "kafkatail.schemas.avro", "avro_decoder"),
    "PROTOBUF": ("protobuf", "kafkatail.schemas.protobuf", "protobuf_decoder"),
    "JSON": ("json-schema", "kafkatail.schemas.jsonschema", "json_schema_decoder"),
}


class Decoder(NamedTuple):
    """How to read one schema id's payloads: ``decode(payload) -> JSON text``."""

    encoding: str
    decode: Callable[[bytes], str]


class _Fetch:
    """One fetch in flight, and whether a feed has already waited for it."""

    __slots__ = ("future", "waited")

    def __init__(self, future: Future) -> None:
        self.future = future
        self.waited = False


class Schemas:
    """The decoder cache and the threads (``kt-registry``) that fill it; ``close`` joins them."""

    def __init__(self, client: RegistryClient, wait_s: float = 0.25, cache_size: int = 1000,
                 unknown_ttl_s: float = 30.0, retry_s: float = 2.0, workers: int = 2) -> None:
        self.client = client
        self.wait_s = wait_s
        self.cache_size = cache_size
        self.unknown_ttl_s = unknown_ttl_s
        self.retry_s = retry_s
        self._decoders: dict[int, Decoder] = {}
        self._failed: dict[int, tuple[float, str]] = {}
        self._fetching: dict[int, _Fetch] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="kt-registry",
                                        initializer=_registered)

    def decoder(self, schema_id: int, deadline: float) -> Decoder:
        """The decoder for ``schema_id``, waiting for a new one until ``deadline`` (a monotonic
        time) at most; ``SchemaError`` with the reason when there is none (yet)."""
        found = self._decoders.get(schema_id)
        if found is not None:
            return found
        fetch = self._fetch(schema_id)
        if not fetch.waited:
            fetch.waited = True
            wait((fetch.future,), timeout=max(0.0, deadline - time.monotonic()))
        if not fetch.future.done():
            raise SchemaError(f"schema {schema_id}: the registry has not answered yet")
        return self._outcome(schema_id, fetch.future)

    def subjects(self, schema_id: int) -> tuple[str, list[dict]]:
        """(encoding, the subjects and versions that hold ``schema_id``), asked of the registry
        on the caller's thread within the client's timeout; RegistryError when it cannot say.
        Not cached: a page asks once for a record it opens, and a subject may take the id in a
        new version at any time."""
        found = self._decoders.get(schema_id)
        encoding = found.encoding if found is not None else _encoding(
            self.client.fetch(schema_id).schema_type)
        return encoding, self.client.versions(schema_id)

    def close(self) -> None:
        """Stop fetching and join the registry threads (a fetch under way ends at its timeout)."""
        with self._lock:
            self._closed = True
        self._pool.shutdown(wait=True, cancel_futures=True)
        self.client.close()

    def _fetch(self, schema_id: int) -> _Fetch:
        """The fetch of ``schema_id`` in flight, started if none is; raises while a failure is
        remembered."""
        with self._lock:
            failed = self._failed.get(schema_id)
            if failed is not None:
                if failed[0] > time.monotonic():
                    raise SchemaError(failed[1])
                del self._failed[schema_id]
            fetch = self._fetching.get(schema_id)
            if fetch is not None:
                return fetch
            if self._closed:
                raise SchemaError("the server is shutting down")
            fetch = self._fetching[schema_id] = _Fetch(self._pool.submit(self._build, schema_id))
        # Outside the lock: a fetch already done runs _settle, which takes it, right here.
        fetch.future.add_done_callback(lambda f: self._settle(schema_id, f))
        return fetch

    def _outcome(self, schema_id: int, future: Future) -> Decoder:
        if future.cancelled():
            raise SchemaError("the server is shutting down")
        exc = future.exception()
        if exc is not None:
            raise SchemaError(_reason(schema_id, exc))
        return future.result()

    def _build(self, schema_id: int) -> Decoder:
        fetched = self.client.fetch(schema_id)
        kind = _TYPES.get(fetched.schema_type)
        if kind is None:
            raise SchemaError(f"schema type {fetched.schema_type} is not supported")
        encoding, module, name = kind
        build = getattr(importlib.import_module(module), name)
        return Decoder(encoding, build(fetched.schema, fetched.references))

    def _settle(self, schema_id: int, future: Future) -> None:
        """A fetch ended: keep its decoder, or remember its failure for a while."""
        exc = None if future.cancelled() else future.exception()
        with self._lock:
            self._fetching.pop(schema_id, None)
            if future.cancelled():
                return
            if exc is None:
                while len(self._decoders) >= self.cache_size:
                    del self._decoders[next(iter(self._decoders))]
                self._decoders[schema_id] = future.result()
                return
            final = isinstance(exc, SchemaError) or getattr(exc, "unknown", False)
            ttl = self.unknown_ttl_s if final else self.retry_s
            self._failed[schema_id] = (time.monotonic() + ttl, _reason(schema_id, exc))
        if not isinstance(exc, (SchemaError, RegistryError)):
            log.error("schema %d: fetch failed", schema_id, exc_info=exc)


def _registered() -> None:
    """In each registry thread as it starts: named in the thread table (top -H, /debug)."""
    REGISTRY.register(threading.current_thread(), "registry", owner="schemas")


def _encoding(schema_type: str) -> str:
    kind = _TYPES.get(schema_type)
    return kind[0] if kind else schema_type.lower()


def _reason(schema_id: int, exc: BaseException) -> str:
    if isinstance(exc, RegistryError):
        return f"schema {schema_id}: {exc}" + ("" if exc.unknown else " (retrying)")
    if isinstance(exc, SchemaError):
        return f"schema {schema_id}: {exc}"
    return f"schema {schema_id}: cannot be read ({type(exc).__name__})"
