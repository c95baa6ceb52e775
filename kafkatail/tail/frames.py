"""The server-to-client frames of the tail protocol and its close codes.

Every frame is one JSON text message with a ``type``; a batch of records is one frame.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

NORMAL = 1000
GOING_AWAY = 1001
UNSUPPORTED = 1003
POLICY = 1008
TOO_BIG = 1009
INTERNAL = 1011
TRY_AGAIN = 1013
BAD_REQUEST = 4400
UNAUTHORIZED = 4401
FORBIDDEN = 4403
NOT_FOUND = 4404

dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


class Close(Exception):
    """End a tail with a WebSocket close code and a human reason."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason[:120]


def hello(topic: str, partitions: list[dict[str, int]], options: Mapping[str, Any]) -> str:
    return dumps({"type": "hello", "topic": topic, "partitions": partitions, "options": options})


def messages_joined(parts: list[str]) -> str:
    """A messages frame from record arrays already encoded (``Batch.json``), without re-encoding."""
    return '{"type":"messages","messages":[' + ",".join(parts) + "]}"


def status(state: str, **detail: Any) -> str:
    return dumps({"type": "status", "status": state, **detail})


def dropped(count: int, partitions: Mapping[int, list[int]], reason: str | None = None) -> str:
    """Records this client will never get, as [first, last] offsets per partition. No reason:
    its outbox overflowed; ``retention``: they were deleted before it could read them."""
    frame = {"type": "dropped", "count": count,
             "partitions": {str(p): r for p, r in partitions.items()}}
    if reason:
        frame["reason"] = reason
    return dumps(frame)


def ends(partitions: Mapping[int, int]) -> str:
    """The high watermark per partition, as the last fetch saw it: the client's lag is this minus
    its next offset, with no request of its own."""
    return dumps({"type": "ends", "partitions": {str(p): o for p, o in partitions.items()}})


def error(code: int, message: str, **detail: Any) -> str:
    return dumps({"type": "error", "code": code, "message": message, **detail})
