"""The ``services`` worker: findings (``diagnostics.findings.v1``) and predictions
(``maintenance.predictions.v1``) in, bookings, webhook events (outbox) and owner notifications
out, all in one database transaction per batch; offsets are committed after it.

A replayed record changes nothing: the inbox (``service_inbox``) remembers every applied event
id. A record that breaks its topic's contract goes to ``services.dlq`` with the reason.
Periodically (``services_retry_s``) the worker retries bookings no center could take and opens
bookings for routine services that became due.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import timedelta

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import OperationalError

from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.errors import Conflict
from core.runner import BatchHandler, DeadLetter, HandlerResult
from services import repository, service
from services.issues import BadEvent, IssueSignal, decode_finding, decode_prediction

log = logging.getLogger(__name__)

TRANSACTION_ATTEMPTS = 3
INBOX_RETENTION = timedelta(days=30)


class ServicesHandler(BatchHandler):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.engine = make_engine(settings)
        self.last_periodic = float("-inf")
        self.bookings_changed = 0
        self.replays = 0
        self.ignored = 0

    async def close(self) -> None:
        self.engine.dispose()

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        dead: list[DeadLetter] = []
        signals: list[IssueSignal] = []
        for records in batch.values():
            for record in records:
                try:
                    signal = self.decode(record)
                except BadEvent as exc:
                    dead.append(DeadLetter(record, exc.reason, exc.detail))
                    continue
                if signal is None:
                    self.ignored += 1
                else:
                    signals.append(signal)
        applied = await asyncio.to_thread(self._apply, signals) if signals else 0
        self.mark_processed(batch)  # stored (committed) above: the offsets may be committed
        self.bookings_changed += applied
        self.replays += len(signals) - applied
        processed = sum(len(r) for r in batch.values()) - len(dead)
        return HandlerResult(
            dead_letters=dead, processed=processed, duplicates=len(signals) - applied
        )

    def decode(self, record: ConsumerRecord) -> IssueSignal | None:
        if record.value is None:
            raise BadEvent("empty_value", "the record has no value")
        if record.topic == self.settings.predictions_topic:
            signal = decode_prediction(record.value)
        else:
            signal = decode_finding(record.value)
        if signal is not None and record.key is not None and record.key != signal.vin.encode():
            raise BadEvent("key_mismatch", f"key {record.key!r} is not the VIN {signal.vin}")
        return signal

    async def tick(self) -> None:
        if time.monotonic() - self.last_periodic >= self.settings.services_retry_s:
            self.last_periodic = time.monotonic()
            await asyncio.to_thread(self.periodic)

    def periodic(self) -> None:
        """Retry unplaced bookings, open due routine services, forget old inbox ids."""
        now = utcnow()
        with session_scope(self.engine) as session:
            placed = service.retry_unassigned(session, self.settings, now)
            routine = service.due_routine_services(session, self.settings, now)
            opened = sum(
                service.apply_signal(session, self.settings, s, now) is not None for s in routine
            )
            repository.prune_inbox(session, now - INBOX_RETENTION)
        if placed or opened:
            log.info("placed %d waiting bookings, opened %d routine services", placed, opened)

    def _apply(self, signals: list[IssueSignal]) -> int:
        """Apply the batch in one transaction (retried when contention or a lost connection
        aborts it); returns how many signals changed a booking (the rest were replays)."""
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                now = utcnow()
                with session_scope(self.engine) as session:
                    return sum(
                        service.apply_signal(session, self.settings, s, now) is not None
                        for s in signals
                    )
            except (Conflict, OperationalError) as exc:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise
                log.warning("booking transaction failed (%s); retrying", exc)
                time.sleep(0.2 * attempt)
        raise AssertionError("unreachable")


def build_services_handler(settings: Settings) -> ServicesHandler:
    return ServicesHandler(settings)
