"""JSON Schema payloads: the JSON text after the header, shown as it is.

The schema itself is not needed to show the value (the payload is already JSON); it is fetched
only to learn the schema's type. Validating against it would cost per record and tell a viewer
nothing the producer's serializer did not already check.
"""
from __future__ import annotations

from typing import Callable, Mapping

import orjson

from . import SchemaError


def json_schema_decoder(schema: str, references: Mapping[str, str]) -> Callable[[bytes], str]:
    """``decode(payload) -> JSON text``: the payload, once it is checked to be JSON."""
    del schema, references  # the type is all that matters; see the module docstring

    def decode(payload: bytes) -> str:
        try:
            orjson.loads(payload)
            return payload.decode("utf-8")
        except (orjson.JSONDecodeError, UnicodeDecodeError):
            raise SchemaError("payload is not JSON") from None
    return decode
