"""The validate-and-archive worker (``fleet worker archive``).

It is the validation stage for everything on ``telemetry.v1``, whether it came through the HTTP
ingest or straight from a vehicle: records that do not decode or validate go to
``telemetry.dlq`` with the reason; valid messages are deduplicated on ``(vin, message_id)`` and
written to the Parquet archive. Offsets are committed only after a roll is stored.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.runner import BatchHandler, DeadLetter, HandlerResult
from core.signals import merged_catalog
from core.telemetry import decode
from ingestion import columnar
from ingestion.archive import ParquetArchive, PreparedRoll, RollBuffer, RowBuffer
from ingestion.columnar import ColumnarBuffer, DecoderSpec
from ingestion.validation import FastValidator, Limits, Validator, decode_errors

log = logging.getLogger(__name__)

DEDUP_WINDOW_S = 6 * 3600


class ArchiveHandler(BatchHandler):
    def __init__(
        self,
        archive: ParquetArchive,
        validator: Validator,
        *,
        fast: FastValidator | None = None,
        native: DecoderSpec | None = None,
        roll_bytes: int,
        roll_seconds: float,
        dedup_window_s: int = DEDUP_WINDOW_S,
    ) -> None:
        super().__init__()
        self.archive = archive
        self.validator = validator
        self.fast = fast
        self.native = native
        if native is not None and fast is None:
            raise ValueError("the native decoder needs the typed fast path for its fallbacks")
        self.roll_bytes = roll_bytes
        self.roll_seconds = roll_seconds
        self.dedup_window_s = dedup_window_s
        self.coverage: dict[tuple[str, int], list[tuple[int, int]]] = {}
        self.stored: dict[tuple[str, str], tuple[int, int]] = {}
        self.buffer = self._new_buffer()
        self.buffer_keys: dict[tuple[str, str], tuple[int, int]] = {}
        self.pending: dict[TopicPartition, int] = {}
        self.durable: dict[TopicPartition, int] = {}
        self._rolled_keys: collections.deque[tuple[float, list[tuple[str, str]]]] = (
            collections.deque()
        )
        self._write: asyncio.Task[None] | None = None
        self.replays_skipped = 0
        self.archived_messages = 0
        self.rolls = 0

    def _new_buffer(self) -> RollBuffer:
        if self.native is not None:
            return ColumnarBuffer(spec=self.native)
        return RowBuffer(typed_fields=self.fast.field_of if self.fast else None)

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        keys = {(tp.topic, tp.partition) for tp in partitions}
        since = int((time.time() - self.dedup_window_s) * 1000)
        manifests = await asyncio.to_thread(self.archive.manifests, since)
        renamed = await asyncio.to_thread(self.archive.recover, manifests)
        if renamed:
            log.warning("rolled forward %d archive files of interrupted rolls", renamed)
        for manifest in manifests:
            for r in manifest["ranges"]:
                key = (r["topic"], r["partition"])
                if key in keys:
                    self.coverage.setdefault(key, []).append((r["first"], r["last"]))
        stored = await asyncio.to_thread(self.archive.stored_keys, manifests, keys)
        self.stored.update(stored)
        log.info("archive state loaded: %d rolls, %d message keys", len(manifests), len(stored))

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        await super().on_revoked(partitions)
        for tp in partitions:
            self.coverage.pop((tp.topic, tp.partition), None)
            self.pending.pop(tp, None)
            self.durable.pop(tp, None)
        gone = {tp.partition for tp in partitions}
        self.stored = {k: v for k, v in self.stored.items() if v[0] not in gone}

    def _covered(self, topic: str, partition: int, offset: int) -> bool:
        return any(
            first <= offset <= last for first, last in self.coverage.get((topic, partition), ())
        )

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        result = HandlerResult()
        now_ms = int(time.time() * 1000)
        for tp, records in batch.items():
            if not records:
                continue
            if isinstance(self.buffer, ColumnarBuffer):
                self._process_columnar(tp, records, now_ms, result)
            else:
                for record in records:
                    self._process_record(record, now_ms, result)
            self.pending[tp] = records[-1].offset + 1
        # No roll here: the runner sends this batch's dead letters first and then calls tick(),
        # so a roll (whose manifest covers dead-lettered offsets) never precedes their send.
        return result

    def _process_columnar(
        self,
        tp: TopicPartition,
        records: Sequence[ConsumerRecord],
        now_ms: int,
        result: HandlerResult,
    ) -> None:
        """The hot path: the native decoder validates each record and appends its rows; the
        records it refuses go through the Python validators (which name the error)."""
        buffer = self.buffer
        assert isinstance(buffer, ColumnarBuffer)
        topic, partition = tp.topic, tp.partition
        spans = self.coverage.get((topic, partition))
        first_offset, last_offset = records[0].offset, records[-1].offset
        maybe_covered = bool(spans) and any(
            lo <= last_offset and first_offset <= hi for lo, hi in spans or ()
        )
        push = buffer.decoder.push
        first = last = -1  # offsets of the first and last record handled (not replays)
        accepted = size = 0
        for record in records:
            offset = record.offset
            if maybe_covered and self._covered(topic, partition, offset):
                self.replays_skipped += 1
                continue
            if first < 0:
                first = offset
            last = offset
            raw = record.value
            timestamp = record.timestamp
            reference_ms = timestamp if timestamp and timestamp > 0 else now_ms
            got = push(raw, reference_ms, partition, offset, timestamp) if raw else None
            if got is None:
                letter = self._check(record, now_ms)
                if isinstance(letter, DeadLetter):
                    result.dead_letters.append(letter)
                    continue
                # Valid, but in a form the native decoder leaves to Python (a duplicate JSON
                # key, an integer beyond 64 bits in an unstored field...): store its canonical
                # encoding, which it accepts.
                assert self.fast is not None
                canonical = self.fast.canonical_json(letter)
                got = push(canonical, reference_ms, partition, offset, timestamp)
                if got is None:
                    result.dead_letters.append(
                        DeadLetter(record, "internal_error", "valid, but the archive refused it")
                    )
                    log.error("native decoder refused a valid record at %s:%s", tp, offset)
                    continue
            if record.key != got[0].encode():
                buffer.decoder.discard_last()
                result.dead_letters.append(
                    DeadLetter(record, "key_mismatch", "the record key must be the message's VIN")
                )
                continue
            here = (partition, offset)
            previous = self.stored.get(got) or self.buffer_keys.get(got)
            if previous is not None and previous != here:
                buffer.decoder.discard_last()
                result.duplicates += 1
                continue
            self.buffer_keys[got] = here
            accepted += 1
            size += len(raw)
        if first >= 0:
            buffer.note_range(topic, partition, first, last)
        buffer.messages += accepted
        buffer.approx_bytes += size
        result.processed += accepted

    def _process_record(self, record: ConsumerRecord, now_ms: int, result: HandlerResult) -> None:
        topic, partition, offset = record.topic, record.partition, record.offset
        if self._covered(topic, partition, offset):
            self.replays_skipped += 1
            return
        letter = self._check(record, now_ms)
        if isinstance(letter, DeadLetter):
            result.dead_letters.append(letter)
            self.buffer.note_offset(topic, partition, offset)
            return
        message = letter
        key = (message.vin, message.message_id)
        here = (partition, offset)
        previous = self.stored.get(key) or self.buffer_keys.get(key)
        if previous is not None and previous != here:
            result.duplicates += 1
            self.buffer.note_offset(topic, partition, offset)
            return
        size = len(record.value or b"")
        assert isinstance(self.buffer, RowBuffer)
        if self.fast is not None:
            self.buffer.add_typed(
                message,
                topic=topic,
                partition=partition,
                offset=offset,
                received_at=record.timestamp,
                size=size,
            )
        else:
            self.buffer.add(
                message,
                topic=topic,
                partition=partition,
                offset=offset,
                received_at=record.timestamp,
                catalog=self.archive.catalog,
                size=size,
            )
        self.buffer_keys[key] = here
        result.processed += 1

    def _check(self, record: ConsumerRecord, now_ms: int) -> Any:
        """The typed message of a valid record, or its dead letter."""
        if not record.value:
            return DeadLetter(record, "empty_value", "record has no value")
        # Late data is legitimate on the bus (store-and-forward): judge age by when Kafka got it.
        reference_ms = record.timestamp if record.timestamp and record.timestamp > 0 else now_ms
        if self.fast is not None:
            typed = self.fast.decode_valid(record.value, reference_ms)
            if typed is not None:
                return _keyed_by_vin(record, typed)
        try:
            message = decode(record.value)
        except msgspec.MsgspecError as exc:
            errors = decode_errors(exc)
            return DeadLetter(record, errors[0].type, [e.as_dict() for e in errors])
        errors = self.validator.validate(message, reference_ms)
        if errors:
            return DeadLetter(record, errors[0].type, [e.as_dict() for e in errors[:20]])
        return _keyed_by_vin(
            record, self.fast.from_message(message) if self.fast is not None else message
        )

    async def tick(self) -> None:
        due = self.buffer.approx_bytes >= self.roll_bytes or (
            time.monotonic() - self.buffer.opened_at >= self.roll_seconds
        )
        if due and (self.buffer.ranges or self.pending != self.durable):
            await self.roll()

    async def roll(self) -> None:
        """Close the buffer as a roll. Arrow columns are built here; sorting, compression and
        the atomic commit run on a thread while consumption goes on (at most one roll in
        flight). Offsets become durable only when that roll has committed."""
        await self._wait_for_write()
        buffer, keys, pending = self.buffer, self.buffer_keys, dict(self.pending)
        self.buffer, self.buffer_keys = self._new_buffer(), {}
        if not buffer.ranges:
            self.durable.update(pending)  # nothing consumed since the last committed roll
            self._prune()
            return
        prepared = self.archive.prepare_roll(buffer)
        # Later records must already see these keys and offsets as stored (dedup), even while
        # the files are being written; a failed write stops the worker before any commit.
        for (topic, partition), (first, last) in buffer.ranges.items():
            self.coverage.setdefault((topic, partition), []).append((first, last))
        self.stored.update(keys)
        self._rolled_keys.append((time.monotonic(), list(keys)))
        self._write = asyncio.create_task(self._commit(prepared, pending))

    async def _commit(self, prepared: PreparedRoll, pending: dict[TopicPartition, int]) -> None:
        rolled = await asyncio.to_thread(self.archive.commit_roll, prepared)
        self.rolls += 1
        self.archived_messages += rolled.messages
        self.durable.update(pending)
        self._prune()

    async def _wait_for_write(self) -> None:
        if self._write is not None:
            write, self._write = self._write, None
            await write  # re-raises a failed write: the worker stops without committing

    def _prune(self) -> None:
        """Keep memory bounded: offsets below the committed position are never replayed, and
        keys older than the dedup window are forgotten."""
        for tp, committed in self.durable.items():
            spans = self.coverage.get((tp.topic, tp.partition))
            if spans:
                self.coverage[(tp.topic, tp.partition)] = [s for s in spans if s[1] >= committed]
        horizon = time.monotonic() - self.dedup_window_s
        while self._rolled_keys and self._rolled_keys[0][0] < horizon:
            for key in self._rolled_keys.popleft()[1]:
                self.stored.pop(key, None)

    async def flush(self) -> None:
        await self.roll()
        await self._wait_for_write()

    async def close(self) -> None:
        if self._write is not None:
            self._write.cancel()
            with contextlib.suppress(BaseException):
                await self._write

    def durable_offsets(self) -> dict[TopicPartition, int]:
        return dict(self.durable)


def _keyed_by_vin(record: ConsumerRecord, message: Any) -> Any:
    """The message, or a dead letter when the record is not keyed by its VIN (the key decides
    the partition, and so per-vehicle order and deduplication)."""
    if record.key != message.vin.encode():
        return DeadLetter(record, "key_mismatch", "the record key must be the message's VIN")
    return message


def build_archive_handler(settings: Settings) -> ArchiveHandler:
    catalog = merged_catalog(settings.vss_catalog_path)
    limits = Limits.from_settings(settings)
    archive = ParquetArchive(settings.archive_location)
    # The typed fast path covers the product catalog; a full VSS catalog uses the dict path.
    fast = (
        FastValidator(catalog, limits)
        if settings.vss_catalog_path is None and FastValidator.usable(catalog, limits)
        else None
    )
    native = (
        DecoderSpec.build(archive.schema, catalog, limits)
        if fast is not None and settings.archive_native_decoder and columnar.available()
        else None
    )
    return ArchiveHandler(
        archive,
        Validator(catalog, limits),
        fast=fast,
        native=native,
        roll_bytes=settings.archive_roll_bytes,
        roll_seconds=settings.archive_roll_seconds,
    )
