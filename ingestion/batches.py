"""Kafka records of ``telemetry.v1`` as Arrow tables, for the analytic workers.

Every analytic (diagnosis rules, DTC lifecycle, PdM features, trips, battery health) is a
function over a table in the archive's schema, so the streaming workers and the batch commands
that read the Parquet archive run the same code. This turns one consumer batch into such a
table: the native decoder when it is built, else the typed Python path. Records that are not
valid are skipped and counted; the archive worker is the one that dead-letters them, so each
bad record is reported once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import pyarrow as pa
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.db import make_engine
from core.runner import BatchHandler, make_producer
from core.signals import CATALOG
from core.telemetry import decode
from ingestion import columnar
from ingestion.archive import RowBuffer, archive_schema
from ingestion.columnar import ColumnarBuffer, DecoderSpec
from ingestion.validation import FastValidator, Limits, Validator

_encode = msgspec.json.Encoder().encode


@dataclass
class DecodedBatch:
    table: pa.Table
    """One row per sample of every valid record, in the archive's schema (unsorted)."""
    records: int
    skipped: int
    """Records that were not valid telemetry (dead-lettered by the archive worker)."""


class TelemetryBatchDecoder:
    """Decode consumer batches of telemetry records into Arrow tables."""

    def __init__(self, limits: Limits, *, native: bool = True) -> None:
        self.schema = archive_schema(CATALOG)
        self.fast = FastValidator(CATALOG, limits)
        self.validator = Validator(CATALOG, limits)
        self._native = (
            ColumnarBuffer(spec=DecoderSpec.build(self.schema, CATALOG, limits))
            if native and columnar.available()
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> TelemetryBatchDecoder:
        return cls(Limits.from_settings(settings), native=settings.archive_native_decoder)

    @property
    def native(self) -> bool:
        return self._native is not None

    def decode(self, records: Iterable[ConsumerRecord], now_ms: int | None = None) -> DecodedBatch:
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        count = skipped = 0
        if self._native is not None:
            push = self._native.decoder.push
            for record in records:
                count += 1
                raw, timestamp = record.value, record.timestamp
                reference_ms = timestamp if timestamp and timestamp > 0 else now_ms
                got = (
                    push(raw, reference_ms, record.partition, record.offset, timestamp)
                    if raw
                    else None
                )
                if got is None:
                    typed = self._typed(record, reference_ms)
                    if typed is not None:
                        canonical = self.fast.canonical_json(typed)
                        got = push(
                            canonical, reference_ms, record.partition, record.offset, timestamp
                        )
                if got is None or record.key != got[0].encode():
                    if got is not None:
                        self._native.decoder.discard_last()
                    skipped += 1
            return DecodedBatch(self._native.to_table(self.schema), count, skipped)
        buffer = RowBuffer(typed_fields=self.fast.field_of)
        for record in records:
            count += 1
            timestamp = record.timestamp
            reference_ms = timestamp if timestamp and timestamp > 0 else now_ms
            typed = self._typed(record, reference_ms)
            if typed is None or record.key != typed.vin.encode():
                skipped += 1
                continue
            buffer.add_typed(
                typed,
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                received_at=timestamp,
                size=len(record.value or b""),
            )
        return DecodedBatch(buffer.to_table(self.schema), count, skipped)

    def _typed(self, record: ConsumerRecord, reference_ms: int) -> Any | None:
        """The typed message of a valid record (the fast path, then the reference path)."""
        if not record.value:
            return None
        typed = self.fast.decode_valid(record.value, reference_ms)
        if typed is not None:
            return typed
        try:
            message = decode(record.value)
        except msgspec.MsgspecError:
            return None
        if self.validator.validate(message, reference_ms, max_errors=1):
            return None
        return self.fast.from_message(message)


class TelemetryTableHandler(BatchHandler):
    """Base of the analytic workers (diagnostics, pdm): consumer batches decoded into tables,
    a database engine and a producer for what they find, and offsets that become durable only
    at the subclass's checkpoints (after what the records produced is stored).

    Subclasses call :meth:`decode` in ``process``, :meth:`publish` after their database commit,
    and :meth:`mark_durable` with the snapshot :meth:`pending_offsets` took before storing."""

    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.decoder = TelemetryBatchDecoder.from_settings(settings)
        self.engine = make_engine(settings)
        self.producer: AIOKafkaProducer | None = None
        self._pending: dict[TopicPartition, int] = {}
        self._durable: dict[TopicPartition, int] = {}
        self.skipped = 0

    async def start(self) -> None:
        self.producer = make_producer(self.settings)
        await self.producer.start()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        self.engine.dispose()

    def decode(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> DecodedBatch:
        """The batch's valid records as one table; their offsets become pending."""
        decoded = self.decoder.decode([record for part in batch.values() for record in part])
        for tp, part in batch.items():
            if part:
                self._pending[tp] = part[-1].offset + 1
        self.skipped += decoded.skipped
        return decoded

    def pending_offsets(self) -> dict[TopicPartition, int]:
        return dict(self._pending)

    def mark_durable(self, offsets: Mapping[TopicPartition, int]) -> None:
        self._durable.update(offsets)

    def durable_offsets(self) -> dict[TopicPartition, int]:
        return dict(self._durable)

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await super().on_revoked(partitions)
        for tp in partitions:
            self._pending.pop(tp, None)
            self._durable.pop(tp, None)

    async def publish(self, topic: str, items: Iterable[tuple[str, Mapping[str, Any]]]) -> int:
        """Send ``(vin, value)`` items keyed by VIN and wait until all are acknowledged."""
        assert self.producer is not None
        futures = [
            await self.producer.send(topic, _encode(value), key=vin.encode())
            for vin, value in items
        ]
        await asyncio.gather(*futures)
        return len(futures)
