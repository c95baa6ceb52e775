"""A fix for kafka-python 3.0.x: close the socket of a failed connection attempt.

``KafkaNetSocket.connect`` creates a socket and awaits the connect; when the broker refuses or
times out, the exception leaves the socket open, held only by the failed coroutine's frames. It
closes when the cyclic garbage collector next runs, so during a broker outage every reconnect
attempt of every tail holds an fd for an unbounded time. The patched ``connect`` closes it at once.
Applied on import of the tail core; ``tests/integration/test_lifecycle.py`` measures the fds.
"""
from __future__ import annotations

from typing import Any

from kafka.net.inet import KafkaNetSocket

_original = KafkaNetSocket.connect


async def _connect(self: Any, net: Any, addrinfo: tuple, socket_options: Any = (),
                   timeout_at: float | None = None) -> Any:
    family, sock_type, proto, _canonname, sockaddr = addrinfo
    sock = self.socket(family, sock_type, proto)
    try:
        sock.setblocking(False)
        for option in socket_options:
            sock.setsockopt(*option)
        return await self.sock_connect(net, sock, sockaddr, timeout_at=timeout_at)
    except BaseException:
        sock.close()
        raise


def apply() -> None:
    if KafkaNetSocket.connect is _original:
        KafkaNetSocket.connect = _connect  # type: ignore[method-assign]
