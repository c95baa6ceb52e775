"""Records in the Confluent wire format, decoded through a Schema Registry: the registry client
(``registry``), one decoder per schema type (``avro``, ``protobuf``, ``jsonschema``) and the
cache the feed asks (``decoding``)."""


class SchemaError(ValueError):
    """A payload its schema cannot read, or a schema that cannot be built: the message is the
    reason a record goes out undecoded, short and free of record data."""
