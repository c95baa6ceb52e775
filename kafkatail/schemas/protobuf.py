"""Protobuf payloads as JSON: the schema built into descriptors once, each record parsed by the
protobuf runtime and written in the proto3 JSON mapping.

A registry serves a Protobuf schema as ``.proto`` text (Confluent's, whatever was registered) or
as the base64 ``FileDescriptorProto`` a client registered (simpler registries, Apicurio), and
a reference in either form. Text is compiled by protoc from grpcio-tools, in process. Imports
the Confluent serializers never send as references (``google/protobuf/``, ``google/type/``,
``confluent/``) are taken from the Python modules that define them, and protoc also finds the
well-known types bundled with grpcio-tools.

Every field is shown, defaults included, under its name in the ``.proto``; int64 as a string,
bytes in base64, enums by name, Timestamp and Duration in their JSON forms.
"""
from __future__ import annotations

import base64
import binascii
import functools
import importlib
import importlib.resources
import math
import os
import re
import sys
import tempfile
import threading
from typing import Any, Callable, Iterable, Mapping

import orjson
from google.protobuf import descriptor_pb2, json_format, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from google.protobuf.descriptor_pool import DescriptorPool
from google.protobuf.internal.type_checkers import ToShortestFloat
from google.protobuf.message import DecodeError, Message
from grpc_tools import protoc

from . import SchemaError

# Every declaration in a .proto has a ';' or a '{', neither of which base64 has: a schema of
# base64 characters alone is a serialized FileDescriptorProto.
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]*")
_IMPORT = re.compile(r'\bimport\s+(?:public\s+|weak\s+|option\s+)?"([^"]+)"')
# A builtin import -> the package of its generated ``_pb2`` modules (same relative path).
_BUILTIN = re.compile(r"(google/protobuf|google/type|confluent)/([a-z0-9_/]+)\.proto")
_BUILTIN_PACKAGES = {"google/protobuf": "google.protobuf", "google/type": "google.type",
                     "confluent": "confluent_kafka.schema_registry.confluent"}
_WELL_KNOWN = str(importlib.resources.files("grpc_tools") / "_proto")
# protoc's main is not known to be thread-safe, and its diagnostics go to file descriptor 2.
_PROTOC_LOCK = threading.Lock()
_MAX_VARINT = 10
# Well-known types whose JSON is no object of their fields: the ones ToJsonString writes, and
# the ones left to json_format (Any needs the pool, Struct's values are dynamic).
_TEXT_TYPES = {"google.protobuf.Timestamp", "google.protobuf.Duration"}
_JSON_FORMAT_TYPES = {"google.protobuf.Any", "google.protobuf.FieldMask", "google.protobuf.Struct",
                      "google.protobuf.Value", "google.protobuf.ListValue"}
_REASON_CHARS = 240


def protobuf_decoder(schema: str, references: Mapping[str, str]) -> Callable[[bytes], str]:
    """``decode(payload) -> JSON text`` for payloads written with ``schema``.

    ``references`` maps each import name to its schema, transitively resolved, in either form.
    ``payload`` is what follows the 5-byte header: the message indexes, then the message; the
    JSON is compact, its keys in declaration order. Raises SchemaError when the schema cannot
    be built, and ``decode`` raises it (and nothing else) for a payload it cannot read.
    """
    root = _root_name(references)
    texts: dict[str, str] = {}
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    for name, source in {**references, root: schema}.items():
        if _BASE64.fullmatch(source):
            files[name] = _from_base64(name, source)
        else:
            texts[name] = source
    if texts:
        files = {**_compile(texts, files), **files}
    pool = _pool(files, root)
    try:
        return _decoder(pool.FindFileByName(root), pool)
    except (KeyError, TypeError, ValueError) as exc:  # a map entry without key or value...
        raise SchemaError(f"Protobuf schema cannot be built: {_first_line(exc)}") from None


def _root_name(references: Mapping[str, str]) -> str:
    """A file name for the schema itself (protoc names it in errors) that no import uses."""
    name = "schema.proto"
    while name in references:
        name = "_" + name
    return name


def _from_base64(name: str, source: str) -> descriptor_pb2.FileDescriptorProto:
    try:
        data = base64.b64decode("".join(source.split()), validate=True)
        proto = descriptor_pb2.FileDescriptorProto.FromString(data)
    except (binascii.Error, DecodeError):
        raise SchemaError(f"{name} is neither .proto text nor a FileDescriptorProto") from None
    proto.name = name  # dependents import it by its reference name
    return proto


def _compile(texts: Mapping[str, str], given: Mapping[str, descriptor_pb2.FileDescriptorProto]
             ) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The ``.proto`` texts compiled with protoc, with every file they import: the ones ``given``
    as descriptors and builtins from a descriptor set, well-known types also from grpcio-tools."""
    imports = {m for text in texts.values() for m in _IMPORT.findall(text)}
    known = {**_builtins(imports - texts.keys() - given.keys()), **given}
    with tempfile.TemporaryDirectory(prefix="kafkatail-proto-") as tmp:
        src, given_set, out = (os.path.join(tmp, n) for n in ("src", "given.pb", "out.pb"))
        paths = [_write_source(src, name, text) for name, text in texts.items()]
        with open(given_set, "wb") as f:
            f.write(descriptor_pb2.FileDescriptorSet(file=list(known.values())).SerializeToString())
        code, diagnostics = _run_protoc(
            ["protoc", f"--proto_path={src}", f"--proto_path={_WELL_KNOWN}",
             f"--descriptor_set_in={given_set}", f"--descriptor_set_out={out}",
             "--include_imports", *paths], src + os.sep, imports)
        if code != 0:
            raise SchemaError(f"protoc: {diagnostics or f'failed (exit {code})'}")
        with open(out, "rb") as f:
            compiled = descriptor_pb2.FileDescriptorSet.FromString(f.read())
    return {proto.name: proto for proto in compiled.file}


def _write_source(src: str, name: str, text: str) -> str:
    """Writes one ``.proto`` under ``src`` at its import path, which must stay inside ``src``."""
    parts = name.split("/")
    if any(p in ("", ".", "..") for p in parts) or "\\" in name or "\0" in name:
        raise SchemaError(f"import name {name!r} is not a relative path")
    path = os.path.join(src, *parts)
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError:
        raise SchemaError(f"import name {name!r} cannot be a file") from None
    return path


def _run_protoc(args: list[str], src_prefix: str, imports: Iterable[str]) -> tuple[int, str]:
    """protoc's exit code and its diagnostics on our sources and imports, paths made relative.

    Under the lock, file descriptor 2 goes to a temporary file for the call alone. Lines that
    name none of those files (another thread's output in those milliseconds) are written back
    to stderr, so the reason holds protoc's words alone.
    """
    prefixes = (src_prefix, *(f"{name}: " for name in imports))
    with _PROTOC_LOCK, tempfile.TemporaryFile() as captured:
        if sys.stderr is not None:
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(captured.fileno(), 2)
            code = protoc.main(args)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        captured.seek(0)
        lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
    ours = [line.removeprefix(src_prefix).strip() for line in lines if line.startswith(prefixes)]
    foreign = "".join(line for line in lines if not line.startswith(prefixes))
    if foreign:
        os.write(2, foreign.encode())
    reason = "; ".join(ours)
    return code, reason if len(reason) <= _REASON_CHARS else reason[:_REASON_CHARS - 3] + "..."


def _builtins(names: Iterable[str]) -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The builtin files among ``names`` that this process can import, with their imports."""
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    pending = list(names)
    while pending:
        name = pending.pop()
        if name not in found and (proto := _builtin(name)) is not None:
            found[name] = proto
            pending.extend(proto.dependency)
    return found


def _builtin(name: str) -> descriptor_pb2.FileDescriptorProto | None:
    """A builtin import from the module generated for it (``google/type/money.proto`` from
    ``google.type.money_pb2``), or None when it is no builtin or its module is not installed."""
    match = _BUILTIN.fullmatch(name)
    if match is None:
        return None
    module = f"{_BUILTIN_PACKAGES[match[1]]}.{match[2].replace('/', '.')}_pb2"
    try:
        serialized = importlib.import_module(module).DESCRIPTOR.serialized_pb
    except (ImportError, AttributeError):
        return None
    return descriptor_pb2.FileDescriptorProto.FromString(serialized)


def _pool(files: Mapping[str, descriptor_pb2.FileDescriptorProto], root: str) -> DescriptorPool:
    """A new pool (two versions of a schema share file names) with ``root`` and its imports,
    each added after the files it imports."""
    pool = DescriptorPool()
    added: set[str] = set()

    def add(name: str, importers: tuple[str, ...]) -> None:
        if name in added:
            return
        if not isinstance(name, str):  # upb gives a proto2 string that is not UTF-8 as bytes
            raise SchemaError("an import name is not UTF-8")
        if name in importers:
            raise SchemaError(f"import cycle through {name}")
        proto = files[name] if name in files else _builtin(name)
        if proto is None:
            raise SchemaError(f"import {name} is missing from the references")
        for dependency in proto.dependency:
            add(dependency, importers + (name,))
        try:
            pool.Add(proto)
        except (TypeError, ValueError, KeyError) as exc:
            raise SchemaError(f"Protobuf schema cannot be built: {_first_line(exc)}") from None
        added.add(name)

    add(root, ())
    return pool


def _message_classes(file: FileDescriptor) -> dict[tuple[int, ...], type]:
    """Every message class of ``file`` by its message indexes: the top-level message's position
    in the file, then each nested type's position in its parent, in declaration order."""
    pending: list[tuple[tuple[int, ...], Descriptor]] = [
        ((i,), d) for i, d in enumerate(file.message_types_by_name.values())]
    classes = {}
    while pending:
        path, descriptor = pending.pop()
        classes[path] = message_factory.GetMessageClass(descriptor)
        pending.extend((path + (i,), d) for i, d in enumerate(descriptor.nested_types))
    return classes


def _decoder(file: FileDescriptor, pool: DescriptorPool) -> Callable[[bytes], str]:
    writers: dict[str, Callable[[Message], Any]] = {}
    readers = {path: (cls.FromString, _message_writer(cls.DESCRIPTOR, writers, pool))
               for path, cls in _message_classes(file).items()}
    depth = max(map(len, readers), default=0)

    def decode(payload: bytes) -> str:
        path, start = _message_indexes(payload, depth)
        reader = readers.get(path)
        if reader is None:
            raise SchemaError(f"message index {list(path)} is not in the schema")
        parse, write = reader
        try:
            message = parse(memoryview(payload)[start:])
        except DecodeError:
            raise SchemaError("payload does not match its Protobuf schema") from None
        try:
            return orjson.dumps(write(message)).decode("utf-8")
        except Exception:  # an Any of a type the schema lacks, a Timestamp out of range, a
            # proto2 string that is not UTF-8...: whatever it is, the record goes out undecoded
            raise SchemaError("decoded Protobuf message cannot be shown as JSON") from None
    return decode


def _message_writer(descriptor: Descriptor, writers: dict[str, Callable[[Message], Any]],
                    pool: DescriptorPool) -> Callable[[Message], Any]:
    """What json_format.MessageToDict makes of a message (proto3 JSON mapping, names as in the
    .proto, fields without presence always), 3x as fast: each field's conversion is chosen once,
    and keys come in declaration order, the same in every record. Well-known types with a JSON
    form of their own, and messages with extensions, are left to json_format. ``writers`` holds
    those made so far, by full name (a type may contain itself)."""
    name = descriptor.full_name
    if name in writers:
        return writers[name]
    if name in _TEXT_TYPES:
        writers[name] = _to_json_string
    elif descriptor.file.name == "google/protobuf/wrappers.proto":
        writers[name] = _wrapper_writer(_value_converter(descriptor.fields_by_name["value"],
                                                         writers, pool))
    elif name in _JSON_FORMAT_TYPES or descriptor.extension_ranges:
        writers[name] = functools.partial(
            json_format.MessageToDict, preserving_proto_field_name=True,
            always_print_fields_with_no_presence=True, descriptor_pool=pool)
    else:
        fields: list[tuple[str, bool, Callable[[Any], Any] | None]] = []
        # the class's HasField: a field of that name would hide the instance's
        has_field = message_factory.GetMessageClass(descriptor).HasField
        writers[name] = functools.partial(_write_fields, fields, has_field)
        fields.extend((f.name, f.has_presence, _field_converter(f, writers, pool))
                      for f in descriptor.fields)
    return writers[name]


def _write_fields(fields: list[tuple[str, bool, Callable[[Any], Any] | None]],
                  has_field: Callable[[Message, str], bool], message: Message) -> dict:
    """A regular message's fields by name, those with presence only when set."""
    out = {}
    for name, presence, convert in fields:
        if presence and not has_field(message, name):
            continue
        value = getattr(message, name)
        out[name] = value if convert is None else convert(value)
    return out


def _to_json_string(message: Message) -> str:
    return message.ToJsonString()


def _wrapper_writer(convert: Callable[[Any], Any] | None) -> Callable[[Message], Any]:
    def write(message: Message) -> Any:
        return message.value if convert is None else convert(message.value)
    return write


def _field_converter(field: FieldDescriptor, writers: dict[str, Callable[[Message], Any]],
                     pool: DescriptorPool) -> Callable[[Any], Any] | None:
    """A field's value (a map, a repeated field, a single value) made JSON-ready, or None
    when it already is."""
    entry = field.message_type
    if entry is not None and entry.GetOptions().map_entry:
        key_is_bool = entry.fields_by_name["key"].type == FieldDescriptor.TYPE_BOOL
        convert = _value_converter(entry.fields_by_name["value"], writers, pool)

        def write_map(values: Mapping) -> dict:
            return {(("true" if k else "false") if key_is_bool else str(k)):
                    (v if convert is None else convert(v)) for k, v in values.items()}
        return write_map
    convert = _value_converter(field, writers, pool)
    if not field.is_repeated:
        return convert
    if convert is None:
        return list

    def write_list(values: Iterable) -> list:
        return [convert(v) for v in values]
    return write_list


def _value_converter(field: FieldDescriptor, writers: dict[str, Callable[[Message], Any]],
                     pool: DescriptorPool) -> Callable[[Any], Any] | None:
    """One value of the field made JSON-ready: 64-bit integers as strings, bytes in base64,
    enums by name (an unknown number as itself), floats that JSON lacks as strings."""
    kind = field.cpp_type
    if kind == FieldDescriptor.CPPTYPE_MESSAGE:
        return _message_writer(field.message_type, writers, pool)
    if kind == FieldDescriptor.CPPTYPE_ENUM:
        if field.enum_type.full_name == "google.protobuf.NullValue":
            return _null
        names = {v.number: v.name for v in field.enum_type.values}
        return lambda number: names.get(number, number)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return _base64
    if kind in (FieldDescriptor.CPPTYPE_INT64, FieldDescriptor.CPPTYPE_UINT64):
        return str
    if kind == FieldDescriptor.CPPTYPE_DOUBLE:
        return _double
    if kind == FieldDescriptor.CPPTYPE_FLOAT:
        return _float
    return None


def _null(_: Any) -> None:
    return None


def _base64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _double(value: float) -> float | str:
    if math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _float(value: float) -> float | str:
    """A float field as the shortest decimal that reads back as the same 32-bit float."""
    return ToShortestFloat(value) if math.isfinite(value) else _double(value)


def _message_indexes(payload: bytes, depth: int) -> tuple[tuple[int, ...], int]:
    """The message indexes that lead ``payload`` and where the message starts: a zigzag varint
    count then as many zigzag varints, a count of 0 (one 0 byte, mostly) meaning ``[0]``."""
    if payload[:1] == b"\0":
        return (0,), 1
    count, pos = _zigzag(payload, 0)
    if count == 0:
        return (0,), pos
    if not 0 < count <= depth:
        raise SchemaError("message indexes are not valid")
    path = []
    for _ in range(count):
        index, pos = _zigzag(payload, pos)
        path.append(index)
    return tuple(path), pos


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it."""
    value = shift = 0
    for end in range(pos, min(pos + _MAX_VARINT, len(data))):
        byte = data[end]
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), end + 1
    raise SchemaError("message indexes are not valid")


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:_REASON_CHARS]
