"""The Kafka runner shared by every worker, and the producer every component uses.

Delivery rules (``docs/topics.md``):

* Producers are idempotent with ``acks=all``; a write is acknowledged to a caller only after
  Kafka acknowledged it.
* Consumers run with auto-commit off, read ``getmany`` batches, hand them to a handler, send
  dead letters (original bytes plus reason headers) and await their acknowledgement, and only
  then commit the offsets the handler reports as durable. A handler that buffers (the Parquet
  archive) reports durability later; nothing is committed before it is stored.
* A rebalance listener flushes and commits finished work before partitions move. aiokafka
  calls it from its coordinator task, so it waits for the batch in hand to finish (one lock
  around batch handling, the handler's tick and commit, and the revocation): offsets of a
  half-processed batch are never committed, and a handler never sees a checkpoint or its state
  reset in the middle of a batch.
* A limit on the invalid ratio stops a worker instead of dead-lettering a whole bad deploy.
* SIGTERM (or ``stop()``) drains: the current batch finishes, the handler flushes, offsets are
  committed, the consumer leaves the group.

Observability (``docs/observability.md``): the ``fleet_worker_*`` metrics are updated once per
batch (and lag once a second), and :meth:`KafkaRunner.serve_ops` makes ``run`` serve
``/metrics``, ``/healthz`` (the poll loop ran recently) and ``/readyz`` (joined the group,
coordinator reachable, database answers) while it runs.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import gc
import json
import logging
import os
import signal
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.logging import bind, record_correlation_id
from core.metrics import OpsServer, WorkerMetrics, database_answers
from core.telemetry import (
    DLQ_DETAIL,
    DLQ_FAILED_AT,
    DLQ_GROUP,
    DLQ_OFFSET,
    DLQ_PARTITION,
    DLQ_REASON,
    DLQ_TOPIC,
)

log = logging.getLogger(__name__)


def make_producer(settings: Settings, **overrides: Any) -> AIOKafkaProducer:
    """An idempotent producer (acks=all). Start it in a lifespan, never at import."""
    config: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 1_048_576,
        "max_request_size": max(2 * settings.ingest_max_decompressed_bytes, 1_048_576),
        "request_timeout_ms": 30_000,
        "client_id": f"fleet-{os.getpid()}",
    }
    config.update(overrides)
    return AIOKafkaProducer(**config)


@dataclass(slots=True)
class DeadLetter:
    """A record that cannot be processed, with a stable reason code and a human detail."""

    record: ConsumerRecord
    reason: str
    detail: Any = None


@dataclass
class HandlerResult:
    dead_letters: list[DeadLetter] = field(default_factory=list)
    processed: int = 0
    duplicates: int = 0


class BatchHandler:
    """What a worker implements. The default reports everything processed as durable, which is
    right for handlers that store results synchronously (a database transaction per batch)."""

    def __init__(self) -> None:
        self._processed_up_to: dict[TopicPartition, int] = {}

    async def start(self) -> None:
        """Open connections (database engine, files). Called once before consuming."""

    async def close(self) -> None:
        """Release resources. Called once after the final commit."""

    async def on_assigned(self, partitions: set[TopicPartition]) -> None:
        """Load per-partition state before the first batch of a newly assigned partition."""

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        """Forget per-partition state after the runner flushed and committed it."""
        for tp in partitions:
            self._processed_up_to.pop(tp, None)

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        raise NotImplementedError

    async def flush(self) -> None:
        """Make everything processed so far durable (called before commit on revoke/stop)."""

    async def tick(self) -> None:
        """Called after every poll, with or without records (time-based flushing)."""

    def mark_processed(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        for tp, records in batch.items():
            if records:
                self._processed_up_to[tp] = records[-1].offset + 1

    def durable_offsets(self) -> dict[TopicPartition, int]:
        """Next offset per partition that is safe to commit (everything before it is stored)."""
        return dict(self._processed_up_to)


class DlqLimitExceeded(RuntimeError):
    """The worker refused to continue: too many records would be dead-lettered."""


class InvalidRatioLimit:
    """Sliding window over the last ``window`` records (after ``min_messages`` have been seen):
    more than ``max_ratio`` invalid stops the worker (after arroyo's ``DlqLimit``)."""

    def __init__(self, max_ratio: float, min_messages: int, window: int = 1000) -> None:
        self.max_ratio = max_ratio
        self.min_messages = min_messages
        self._window: collections.deque[tuple[int, int]] = collections.deque()
        self._valid = 0
        self._invalid = 0
        self._window_size = max(window, min_messages)

    def record(self, valid: int, invalid: int) -> None:
        self._window.append((valid, invalid))
        self._valid += valid
        self._invalid += invalid
        while (
            self._window and self._valid + self._invalid - sum(self._window[0]) >= self._window_size
        ):
            v, i = self._window.popleft()
            self._valid -= v
            self._invalid -= i
        total = self._valid + self._invalid
        if total >= self.min_messages and self._invalid / total > self.max_ratio:
            raise DlqLimitExceeded(
                f"{self._invalid} of the last {total} records were invalid "
                f"(limit {self.max_ratio:.0%}); stopping instead of dead-lettering them"
            )


@dataclass
class RunnerStats:
    consumed: int = 0
    processed: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    commits: int = 0
    batches: int = 0
    rebalances: int = 0
    started_at: float = field(default_factory=time.time)
    last_poll_at: float = 0.0
    lag: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "consumed": self.consumed,
            "processed": self.processed,
            "dead_lettered": self.dead_lettered,
            "duplicates": self.duplicates,
            "commits": self.commits,
            "batches": self.batches,
            "rebalances": self.rebalances,
            "started_at": self.started_at,
            "last_poll_at": self.last_poll_at,
            "lag": self.lag,
            "pid": os.getpid(),
        }


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, runner: KafkaRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        self.runner._ready -= revoked
        if revoked:
            async with self.runner.batch_lock:
                await self.runner.flush_and_commit()
                await self.runner.handler.on_revoked(revoked)
                for tp in revoked:
                    self.runner._committed.pop(tp, None)

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        self.runner.stats.rebalances += 1
        self.runner.metrics.rebalances.inc()
        log.info("assigned %s", sorted((tp.topic, tp.partition) for tp in assigned))
        try:
            if assigned:
                await self.runner.handler.on_assigned(assigned)
        except BaseException as exc:
            self.runner._assign_error = exc  # the poll loop raises it
            raise
        self.runner._ready |= assigned


class KafkaRunner:
    """Consume ``topics`` as consumer group ``group_id`` and feed batches to ``handler``."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        topics: Sequence[str],
        group_id: str,
        handler: BatchHandler,
        dlq_topic: str | None,
        stats_path: Path | None = None,
        max_records: int | None = None,
        auto_offset_reset: str = "earliest",
    ) -> None:
        self.settings = settings
        self.name = name
        self.topics = list(topics)
        self.group_id = group_id
        self.handler = handler
        self.dlq_topic = dlq_topic
        self.stats = RunnerStats()
        self.stats_path = stats_path
        self.max_records = max_records or settings.consumer_max_records
        self.auto_offset_reset = auto_offset_reset
        self.limit = InvalidRatioLimit(settings.dlq_max_invalid_ratio, settings.dlq_min_messages)
        self._stopping = asyncio.Event()
        self.batch_lock = asyncio.Lock()
        """Held while a batch is handled, during tick and commit, and while a revocation
        flushes (see the docstring)."""
        self._committed: dict[TopicPartition, int] = {}
        self._ready: set[TopicPartition] = set()
        """Partitions whose ``handler.on_assigned`` has completed (see ``_when_ready``)."""
        self._assign_error: BaseException | None = None
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.metrics = WorkerMetrics.bind(name)
        self._lag_partitions: set[tuple[str, int]] = set()
        self.ops: OpsServer | None = None

    def serve_ops(self, host: str, port: int) -> None:
        """While ``run`` runs, serve ``/metrics``, ``/healthz`` and ``/readyz`` on
        ``host:port`` (port 0 picks a free one; see ``ops.bound_port``)."""
        self.ops = OpsServer(host, port, liveness=self.liveness, readiness=self.readiness)

    async def liveness(self) -> str | None:
        """None while the poll loop runs (a batch in hand may take a while: the limit is
        ``worker_liveness_s``)."""
        last = max(self.stats.last_poll_at, self.stats.started_at)
        silent = time.time() - last
        if silent > self.settings.worker_liveness_s:
            return f"the poll loop has not run for {silent:.0f} s"
        return None

    async def readiness(self) -> str | None:
        """None when the consumer joined its group (an assignment, or a member of a group
        with more members than partitions), its group coordinator is reachable, and the
        handler's database (if it has one) answers ``SELECT 1``."""
        consumer = self.consumer
        if consumer is None or self._stopping.is_set():
            return "not consuming"
        coordinator = getattr(consumer, "_coordinator", None)
        if getattr(coordinator, "coordinator_id", None) is None:
            return "Kafka group coordinator not reachable"
        if not consumer.assignment() and getattr(coordinator, "generation", -1) < 0:
            return "not yet a member of the consumer group"
        engine = getattr(self.handler, "engine", None)
        if engine is not None:
            return await database_answers(engine)
        return None

    def stop(self) -> None:
        """Ask the loop to drain and stop (safe from a signal handler)."""
        self._stopping.set()

    async def run(self, *, until_idle_s: float | None = None) -> RunnerStats:
        """Run until ``stop()`` (or, for tests and batch jobs, until no record arrived for
        ``until_idle_s`` seconds)."""
        self.stats.started_at = time.time()
        if self.ops is not None:
            await self.ops.start()
        try:
            return await self._run(until_idle_s)
        finally:
            if self.ops is not None:
                await self.ops.stop()

    async def run_until_signalled(self) -> RunnerStats:
        """``run`` until SIGTERM or SIGINT, then drain, commit and stop."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        return await self.run()

    async def _run(self, until_idle_s: float | None) -> RunnerStats:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset=self.auto_offset_reset,
            max_partition_fetch_bytes=16 * 1_048_576,
            fetch_max_bytes=32 * 1_048_576,
            client_id=f"fleet-{self.name}-{os.getpid()}",
            isolation_level="read_committed",
        )
        self.producer = make_producer(self.settings) if self.dlq_topic else None
        await self.handler.start()
        await self.consumer.start()
        # Start-up objects (modules, catalog, decoders) never die: keep them out of the
        # collector's scans, which otherwise cost a sizeable share of per-message CPU.
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)  # fewer young-generation passes on the hot path
        if self.producer:
            await self.producer.start()
        self.consumer.subscribe(self.topics, listener=_Rebalance(self))
        idle_since = time.monotonic()
        last_stats = 0.0
        try:
            while not self._stopping.is_set():
                batch = await self.consumer.getmany(
                    timeout_ms=self.settings.consumer_poll_timeout_ms, max_records=self.max_records
                )
                self.stats.last_poll_at = time.time()
                self.metrics.last_poll.set(self.stats.last_poll_at)
                if batch and not self._ready.issuperset(batch):
                    batch = await self._when_ready(batch)
                if batch or not self.consumer.assignment():
                    # Idle means "assigned and nothing arrived": a slow group join on a busy
                    # machine does not count.
                    idle_since = time.monotonic()
                if batch:
                    async with self.batch_lock:
                        await self._handle(batch)
                elif until_idle_s is not None and time.monotonic() - idle_since > until_idle_s:
                    break
                async with self.batch_lock:
                    await self.handler.tick()
                    await self.commit_durable()
                if time.monotonic() - last_stats > 1.0:
                    last_stats = time.monotonic()
                    self._update_lag()
                    self.write_stats()
            await self.flush_and_commit()
        finally:
            self._update_lag()
            with contextlib.suppress(Exception):
                await self.consumer.stop()
            # A stopped consumer owns no partition: its lag series go (the stats keep the last).
            self.metrics.set_lag({}, self._lag_partitions)
            self._lag_partitions = set()
            if self.producer:
                with contextlib.suppress(Exception):
                    await self.producer.stop()
            await self.handler.close()
            self.write_stats()
        return self.stats

    async def _when_ready(
        self, batch: dict[TopicPartition, list[ConsumerRecord]]
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        """The batch once every partition in it is ready. aiokafka may hand out records of a
        newly assigned partition while the rebalance listener still runs (aio-libs/aiokafka
        #738), i.e. before ``handler.on_assigned`` loaded what the handler needs for it (the
        archive's stored message keys, for one: without them a re-sent message would be
        archived twice). So wait for the listener; records of a partition revoked meanwhile
        are dropped (uncommitted, so its next owner reads them)."""
        assert self.consumer is not None
        while True:
            if self._assign_error is not None:
                raise RuntimeError("the handler failed on a partition assignment") from (
                    self._assign_error
                )
            assigned = self.consumer.assignment()
            if all(tp in self._ready or tp not in assigned for tp in batch):
                return {tp: records for tp, records in batch.items() if tp in self._ready}
            if self._stopping.is_set():
                return {}
            await asyncio.sleep(0.01)

    async def _handle(self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]) -> None:
        started = time.perf_counter()
        count = sum(len(records) for records in batch.values())
        self.stats.consumed += count
        self.stats.batches += 1
        result = await self.handler.process(batch)
        self.limit.record(count - len(result.dead_letters), len(result.dead_letters))
        if result.dead_letters:
            await self._dead_letter(result.dead_letters)
        self.stats.processed += result.processed
        self.stats.duplicates += result.duplicates
        self.stats.dead_lettered += len(result.dead_letters)
        self.metrics.record_batch(
            count,
            result.processed,
            result.duplicates,
            len(result.dead_letters),
            time.perf_counter() - started,
        )

    async def _dead_letter(self, letters: Sequence[DeadLetter]) -> None:
        assert self.producer is not None and self.dlq_topic is not None
        futures = []
        now = str(int(time.time() * 1000)).encode()
        for letter in letters:
            record = letter.record
            headers = list(record.headers or ()) + [
                (DLQ_REASON, letter.reason.encode()),
                (DLQ_DETAIL, json.dumps(letter.detail, default=str).encode()),
                (DLQ_TOPIC, record.topic.encode()),
                (DLQ_PARTITION, str(record.partition).encode()),
                (DLQ_OFFSET, str(record.offset).encode()),
                (DLQ_GROUP, self.group_id.encode()),
                (DLQ_FAILED_AT, now),
            ]
            futures.append(
                await self.producer.send(
                    self.dlq_topic, value=record.value, key=record.key, headers=headers
                )
            )
        await asyncio.gather(*futures)  # durable before the source offsets may be committed
        for letter in letters:  # rare (the invalid-ratio limit bounds them): one line each
            record = letter.record
            with bind(correlation_id=record_correlation_id(record.headers)):
                log.info(
                    "dead-lettered %s:%d@%d: %s",
                    record.topic,
                    record.partition,
                    record.offset,
                    letter.reason,
                    extra={"outcome": "dead_lettered", "reason": letter.reason},
                )

    async def commit_durable(self) -> None:
        """Commit, per partition, the offset up to which the handler has stored everything."""
        assert self.consumer is not None
        offsets = {
            tp: off
            for tp, off in self.handler.durable_offsets().items()
            if off > self._committed.get(tp, -1)
        }
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group moved on (a rebalance we could not finish in time): the partitions'
            # next owner replays from the last commit, and sinks are idempotent.
            log.warning("commit of %d partitions skipped: %s", len(offsets), exc)
            return
        self._committed.update(offsets)
        self.stats.commits += 1
        self.metrics.commits.inc()

    async def flush_and_commit(self) -> None:
        await self.handler.flush()
        await self.commit_durable()

    def _update_lag(self) -> None:
        if self.consumer is None:
            return
        lag: dict[tuple[str, int], int] = {}
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            committed = self._committed.get(tp)
            if high is not None and committed is not None:
                lag[(tp.topic, tp.partition)] = max(high - committed, 0)
        self.stats.lag = {f"{topic}:{partition}": n for (topic, partition), n in lag.items()}
        self.metrics.set_lag(lag, self._lag_partitions)
        self._lag_partitions = set(lag)

    def write_stats(self) -> None:
        """Write counters for ``fleet run``/``fleet demo`` status (atomically)."""
        if self.stats_path is None:
            return
        self.stats_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.stats_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"worker": self.name, **self.stats.as_dict()}))
        tmp.replace(self.stats_path)
