"""Fixes for kafka-python 3.0.x, applied on import of the tail core.

1. ``KafkaNetSocket.connect`` creates a socket and awaits the connect; when the broker refuses
   or times out, the exception leaves the socket open, held only by the failed coroutine's
   frames. It closes when the cyclic garbage collector next runs, so during a broker outage every
   reconnect attempt of every tail holds an fd for an unbounded time. The patched ``connect``
   closes it at once. ``tests/integration/test_lifecycle.py`` measures the fds.
2. ``KafkaConnectionManager`` builds its ``ClusterMetadata`` without the client's
   ``allow_auto_create_topics``, so every metadata request for an assigned topic asks the broker
   to create it: a topic deleted while tailed comes straight back. The patched constructor passes
   the setting on. ``tests/regression/test_faults.py`` deletes a tailed topic.
3. A connection whose connect or handshake is still under way when the client closes (seen under
   gevent, about one run in six, right after a tailed topic was deleted) is in no list the close
   walks, and its socket stayed ESTABLISHED for good. Every socket ``connect`` makes is recorded
   against its ``NetworkSelector``, and the selector's ``close`` closes whichever are still open.
   ``tests/regression/test_faults.py`` (gevent) counts the process's fds after such a close.
4. A TLS handshake that fails (an untrusted certificate, a plaintext listener) raises out of
   ``KafkaSSLTransport.handshake`` with its socket open, held by the traceback's frames: one
   CLOSE_WAIT socket per attempt until the cyclic GC runs. The patched handshake closes it.
5. When a read returns data and then end-of-file, the transport drops the data and aborts: a
   broker's last answer before it hangs up is lost. That answer is how a refused SASL login is
   told (SaslAuthenticate with the broker's message), so a wrong password looked like a broker
   that drops connections. The patched read hands the data to the connection first and aborts
   on the next turn of the IO loop, once the request waiting for that answer has failed.
   ``tests/apache_kafka/test_failures.py`` checks the reason of each.
6. A batch whose codec the client cannot decode raises ``UnsupportedCodecError`` out of poll
   with no partition or offset. The patched record unpacking raises ``UndecodableBatch``
   naming both, so the tail can stop that partition and go on with the others
   (``tests/integration/test_codecs.py``).
7. Not a bug but the cost of every record: the record unpacking is ``unpack.unpack_records``,
   kafka-python's with v2 batches decoded in one loop (twice as fast; see that module).

Not a patch but the same library's habit: ``construct`` builds any kafka-python client so that a
constructor that raises leaves no IO thread or socket behind (the tail's consumers, the metadata
client and the demo traffic's admin client and producer all go through it).
"""
from __future__ import annotations

import logging
import re
import threading
import time
import weakref
from typing import Any, TypeVar

from kafka import errors as Errors
from kafka.net.inet import KafkaNetSocket
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector
from kafka.consumer.fetcher import Fetcher
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

from . import unpack
from .failures import UndecodableBatch

log = logging.getLogger(__name__)
_C = TypeVar("_C")

_original = KafkaNetSocket.connect
_original_manager_init = KafkaConnectionManager.__init__
_original_selector_close = NetworkSelector.close
_original_handshake = KafkaSSLTransport.handshake
_original_read = KafkaTCPTransport._read_from_sock
_original_unpack = Fetcher.PartitionRecords._unpack_records
_CODEC = re.compile(r"for (\w+) compression|compression type: (\w+)")

# NetworkSelector -> the sockets connect made for it (both weak: they come and go with it).
_sockets: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_sockets_lock = threading.Lock()


async def _connect(self: Any, net: Any, addrinfo: tuple, socket_options: Any = (),
                   timeout_at: float | None = None) -> Any:
    family, sock_type, proto, _canonname, sockaddr = addrinfo
    sock = self.socket(family, sock_type, proto)
    with _sockets_lock:
        _sockets.setdefault(net, weakref.WeakSet()).add(sock)
    try:
        sock.setblocking(False)
        for option in socket_options:
            sock.setsockopt(*option)
        return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
    except BaseException:
        sock.close()
        raise


def _manager_init(self: Any, net: Any, **configs: Any) -> None:
    _original_manager_init(self, net, **configs)
    if "allow_auto_create_topics" in configs:
        self.cluster.config["allow_auto_create_topics"] = configs["allow_auto_create_topics"]


def _selector_close(self: Any) -> None:
    _original_selector_close(self)
    with _sockets_lock:
        left = list(_sockets.pop(self, ()))
    for sock in left:
        if sock.fileno() != -1:
            sock.close()


async def _handshake(self: Any) -> None:
    try:
        await _original_handshake(self)
    except BaseException:
        self._close()
        raise


async def _read_from_sock(self: Any) -> None:
    while self._read and not self._closed:
        await self._net.wait_read(self._sock)
        data, err = self._sock_recv()
        if data and self._protocol is not None:
            self.last_read = time.monotonic()
            if self._protocol._sensors:
                self._protocol._sensors.bytes_received.record(len(data))
            try:
                self._protocol.data_received(data)
            except Errors.KafkaProtocolError as exc:
                return self.abort(error=exc)
            if err:
                # After the request waiting for this answer has run: it fails with the broker's
                # reason, not with the disconnect.
                self._net.call_soon(lambda: self.abort(error=err))
                return None
        if err:
            return self.abort(error=err)


def _unpack_records(self: Any, tp: Any, *args: Any) -> Any:
    try:
        yield from unpack.unpack_records(self, tp, *args)
    except Errors.UnsupportedCodecError as exc:
        found = _CODEC.search(str(exc))
        codec = (found.group(1) or f"compression type {found.group(2)}") if found else \
            "an unknown codec"
        raise UndecodableBatch(tp.topic, tp.partition, self.next_fetch_offset, codec) from None


def apply() -> None:
    if KafkaNetSocket.connect is _original:
        KafkaNetSocket.connect = _connect  # type: ignore[method-assign]
    if KafkaConnectionManager.__init__ is _original_manager_init:
        KafkaConnectionManager.__init__ = _manager_init  # type: ignore[method-assign]
    if NetworkSelector.close is _original_selector_close:
        NetworkSelector.close = _selector_close  # type: ignore[method-assign]
    if KafkaSSLTransport.handshake is _original_handshake:
        KafkaSSLTransport.handshake = _handshake  # type: ignore[method-assign]
    if Fetcher.PartitionRecords._unpack_records is _original_unpack:
        Fetcher.PartitionRecords._unpack_records = _unpack_records  # type: ignore[method-assign]
    if KafkaTCPTransport._read_from_sock is _original_read:
        KafkaTCPTransport._read_from_sock = _read_from_sock  # type: ignore[method-assign]


def construct(cls: type[_C], **configs: Any) -> _C:
    """Build a kafka-python client (``KafkaConsumer``, ``KafkaAdminClient``, ``KafkaProducer``)
    that leaves nothing behind when its constructor raises.

    kafka-python 3 starts the client's ``kafka-io-*`` thread and opens sockets before it
    bootstraps, so a broker that is down (a bootstrap timeout) makes the constructor raise with
    that thread still running. Every network client the constructor makes goes through a factory
    that keeps a handle on it (wrapping a ``kafka_client`` given in ``configs``), and each is
    closed here before the exception goes on.
    """
    made: list[Any] = []
    make = configs.pop("kafka_client", None) or cls.DEFAULT_CONFIG["kafka_client"]  # type: ignore[attr-defined]

    def factory(**kw: Any) -> Any:
        made.append(make(**kw))
        return made[-1]

    try:
        return cls(kafka_client=factory, **configs)  # type: ignore[call-arg]
    except BaseException:
        for client in made:
            try:
                client.close()
            except Exception:
                log.debug("closing half-built %s client failed", cls.__name__, exc_info=True)
        raise


def io_thread(client: Any) -> threading.Thread | None:
    """The ``kafka-io-*`` thread of a built kafka-python client (its NetworkSelector's), if any."""
    return getattr(getattr(client, "_net", None), "_io_thread", None)
