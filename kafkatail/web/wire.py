"""Wire: one socket's outgoing bytes, framed so that many sockets can share them.

simple-websocket frames every message itself, per socket: with permessage-deflate (every browser
asks for it) that is one zlib compression per viewer per batch, and each send is a wake-up of the
socket's own thread. A shared feed instead frames a batch once per wire format (``Wire.key``:
plain, or deflate at one window size, never with context kept between messages, so a message
compresses to the same bytes whatever was sent before) and writes those bytes straight to every
idle viewer's socket without blocking (``try_send``). Whatever a socket cannot take at once
stays in the Wire, and the socket's session thread sends it before anything else.
"""
from __future__ import annotations

import socket
import struct
import threading
import zlib
from typing import Any

from wsproto import WSConnection
from wsproto.extensions import PerMessageDeflate

_FIN_TEXT = 0x81
_RSV1 = 0x40
_U16 = struct.Struct("!BBH").pack
_U64 = struct.Struct("!BBQ").pack


def text_frame(text: str, deflate_bits: int | None = None) -> bytes:
    """A whole server-to-client text message (unmasked, one frame), compressed if asked."""
    payload = text.encode("utf-8")
    head = _FIN_TEXT
    if deflate_bits is not None:
        c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -deflate_bits)
        payload = (c.compress(payload) + c.flush(zlib.Z_SYNC_FLUSH))[:-4]
        head |= _RSV1
    n = len(payload)
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return _U16(head, 126, n) + payload
    return _U64(head, 127, n) + payload


def negotiated_deflate(connection: WSConnection) -> PerMessageDeflate | None:
    """The permessage-deflate state wsproto agreed for this connection, if any."""
    # The one private attribute of another library kafkatail reads: simple-websocket builds the
    # extension inside its accept, and wsproto keeps it only on its frame protocol
    # (``Connection._proto``), yet a frame built once for many sockets must use the window this
    # one agreed. Should wsproto move it, this finds nothing and shared frames go out
    # uncompressed (a message without RSV1): slower, still correct.
    proto = getattr(connection.connection, "_proto", None)
    for ext in getattr(proto, "extensions", ()):
        if isinstance(ext, PerMessageDeflate) and ext.enabled():
            return ext
    return None


class Wire:
    """The socket proxy simple-websocket writes through, and the feed's non-blocking writer.

    Every write is whole and in order: one writer at a time (the session, the ping thread or the
    feed), ``sendall`` under a lock (simple-websocket's own ``sock.send`` ignores short writes),
    and a remainder left by a non-blocking write goes out before anything else.
    """

    def __init__(self, sock: socket.socket, deflate: PerMessageDeflate | None) -> None:
        self._sock = sock
        self._lock = threading.Lock()
        self._pending = b""
        self._closed = False
        if deflate is not None:
            # wsproto's own compressor (error and status frames) must also start each message
            # afresh, or its back-references would reach into bytes it did not send.
            deflate.server_no_context_takeover = True
            self.deflate_bits: int | None = deflate.server_max_window_bits
        else:
            self.deflate_bits = None
        self.key = "plain" if self.deflate_bits is None else f"deflate-{self.deflate_bits}"
        self._nowait = _nonblocking_send(sock)

    def frame(self, text: str) -> bytes:
        return text_frame(text, self.deflate_bits)

    @property
    def nonblocking(self) -> bool:
        """``try_send`` can write at all (not on a socket with a timeout of its own)."""
        return self._nowait is not None

    # -- simple-websocket's socket ---------------------------------------------------------
    def send(self, data: bytes) -> int:
        with self._lock:
            self._send_pending()
            self._sock.sendall(data)
        return len(data)

    def close(self) -> None:
        # Under the lock: the feed must never write to a closed (and perhaps reused) fd.
        with self._lock:
            self._closed = True
            self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    # -- the feed's side --------------------------------------------------------------------
    def try_send(self, data: bytes) -> bool | None:
        """Write without blocking if no one else is writing: True if the socket took it all,
        None if it took part (the rest waits for ``flush``), False if nothing was written."""
        if self._nowait is None or not self._lock.acquire(blocking=False):
            return False
        try:
            if self._pending or self._closed:
                return False
            try:
                sent = self._nowait(data)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                # The peer is gone: the session learns it from its reader; nothing is pending.
                return True
            if sent == len(data):
                return True
            self._pending = data[sent:]
            return None
        finally:
            self._lock.release()

    def flush(self) -> None:
        """Send what a non-blocking write left, blocking (the session's thread only)."""
        with self._lock:
            self._send_pending()

    def _send_pending(self) -> None:
        if self._pending:
            pending, self._pending = self._pending, b""
            self._sock.sendall(pending)


def _nonblocking_send(sock: Any) -> Any:
    """A send that returns at once, for this kind of socket; None if there is none.

    A blocking socket takes MSG_DONTWAIT; a gevent socket (non-blocking underneath) takes a zero
    timeout. A socket with a Python timeout would wait for room even with MSG_DONTWAIT. Judged by
    the socket ``send`` belongs to, so a wrapper that hands ``send`` through (the gevent worker's
    ``HeadFirst``) counts as the socket it wraps.
    """
    send = getattr(sock, "send", None)
    owner = getattr(send, "__self__", None)
    if type(owner).__module__.startswith("gevent"):
        return lambda data: send(data, 0, timeout=0.0)
    if isinstance(owner, socket.socket) and owner.gettimeout() is None:
        return lambda data: send(data, socket.MSG_DONTWAIT)
    return None
