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
"""
from __future__ import annotations

import threading
import weakref
from typing import Any

from kafka.net.inet import KafkaNetSocket
from kafka.net.manager import KafkaConnectionManager
from kafka.net.selector import NetworkSelector

_original = KafkaNetSocket.connect
_original_manager_init = KafkaConnectionManager.__init__
_original_selector_close = NetworkSelector.close

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


def apply() -> None:
    if KafkaNetSocket.connect is _original:
        KafkaNetSocket.connect = _connect  # type: ignore[method-assign]
    if KafkaConnectionManager.__init__ is _original_manager_init:
        KafkaConnectionManager.__init__ = _manager_init  # type: ignore[method-assign]
    if NetworkSelector.close is _original_selector_close:
        NetworkSelector.close = _selector_close  # type: ignore[method-assign]
