"""The telemetry message contract (version 1), shared by HTTP ingest, direct Kafka producers,
the simulator and every worker. Documented in ``docs/telemetry.md``.

A message is one vehicle's batch of samples; each sample has its own event time and a map of
VSS signal paths to values. Ingest and every sink are idempotent on ``(vin, message_id)``.
"""

from __future__ import annotations

import msgspec

SCHEMA_VERSION = 1

# JSON scalar or list of strings (DTC lists). Checked against the signal catalog by the validator.
SignalValue = bool | int | float | str | list[str]


class Sample(msgspec.Struct, forbid_unknown_fields=True):
    ts: int
    """Event time in milliseconds since the Unix epoch (UTC)."""
    signals: dict[str, SignalValue]
    """VSS path -> value, e.g. ``{"Vehicle.Speed": 52.4}``."""


class TelemetryMessage(msgspec.Struct, forbid_unknown_fields=True):
    vin: str
    message_id: str
    """Unique per VIN (a UUID is a good choice); a re-sent message keeps its id."""
    seq: int
    """Per-vehicle sequence number, increasing; gaps show lost messages on the vehicle side."""
    samples: list[Sample]
    v: int = SCHEMA_VERSION
    sent_at: int | None = None
    """When the vehicle sent the message (ms since epoch); late store-and-forward data has
    ``sent_at`` well after its samples' ``ts``."""


# Kafka record headers on telemetry topics.
HEADER_SOURCE = "source"  # b"http" or b"kafka" (direct produce; absent means direct)
HEADER_RECEIVED_AT = "received_at"  # ms since epoch, set by the HTTP ingest

# Dead-letter headers (see docs/topics.md).
DLQ_REASON = "dlq.reason"
DLQ_DETAIL = "dlq.detail"
DLQ_TOPIC = "dlq.source.topic"
DLQ_PARTITION = "dlq.source.partition"
DLQ_OFFSET = "dlq.source.offset"
DLQ_GROUP = "dlq.consumer.group"
DLQ_FAILED_AT = "dlq.failed_at"

_decoder = msgspec.json.Decoder(TelemetryMessage)
_encoder = msgspec.json.Encoder()


def decode(raw: bytes) -> TelemetryMessage:
    """Decode JSON bytes; raises ``msgspec.ValidationError``/``DecodeError`` naming the field."""
    try:
        return _decoder.decode(raw)
    except UnicodeDecodeError as exc:  # msgspec lets this one through as is
        raise msgspec.DecodeError(f"invalid UTF-8: {exc.reason} at byte {exc.start}") from None


def encode(message: TelemetryMessage) -> bytes:
    return _encoder.encode(message)
