"""The ``services`` worker: findings (``diagnostics.findings.v1``) and predictions
(``maintenance.predictions.v1``) in, bookings, webhook events (outbox) and owner notifications
out, all in one database transaction per batch; offsets are committed after it.

A replayed record changes nothing: the inbox (``service_inbox``) remembers every applied event
id. A record that breaks its topic's contract goes to ``services.dlq`` with the reason.
Periodically (``services_retry_s``) the worker retries bookings no center could take and opens
bookings for routine services that became due.

Each booking created or changed is logged after the commit with the correlation id of the
record that caused it (its ``correlation_id`` header, set by the diagnostics worker from the
telemetry that raised the finding; else the event id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.errors import Conflict
from core.logging import bind, record_correlation_id
from core.runner import BatchHandler, DeadLetter, HandlerResult
from services import repository, service
from services.issues import BadEvent, IssueSignal, decode_finding, decode_prediction

log = logging.getLogger(__name__)

TRANSACTION_ATTEMPTS = 3
INBOX_RETENTION = timedelta(days=30)


@dataclass(frozen=True, slots=True)
class _Traced:
    signal: IssueSignal
    correlation_id: str


@dataclass(frozen=True, slots=True)
class _BookingOutcome:
    correlation_id: str
    vin: str
    issue_key: str
    booking_id: str
    outcome: str
    """``created`` (a new booking) or ``updated`` (evidence added, possibly escalated)."""
    urgency: str
    state: str
    escalations: int


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
        signals: list[_Traced] = []
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
                    cid = record_correlation_id(record.headers) or signal.event_id
                    signals.append(_Traced(signal, cid))
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

    def _apply(self, signals: list[_Traced]) -> int:
        """Apply the batch in one transaction (retried when contention or a lost connection
        aborts it); returns how many signals changed a booking (the rest were replays)."""
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                now = utcnow()
                with session_scope(self.engine) as session:
                    outcomes = [
                        outcome
                        for traced in signals
                        if (outcome := self._apply_one(session, traced, now)) is not None
                    ]
            except (Conflict, OperationalError) as exc:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise
                log.warning("booking transaction failed (%s); retrying", exc)
                time.sleep(0.2 * attempt)
                continue
            for outcome in outcomes:  # committed: now they happened
                _log_outcome(outcome)
            return len(outcomes)
        raise AssertionError("unreachable")

    def _apply_one(
        self, session: Session, traced: _Traced, now: datetime
    ) -> _BookingOutcome | None:
        signal = traced.signal
        with bind(correlation_id=traced.correlation_id, vin=signal.vin):
            booking = service.apply_signal(session, self.settings, signal, now)
        if booking is None:
            return None
        return _BookingOutcome(
            correlation_id=traced.correlation_id,
            vin=signal.vin,
            issue_key=signal.issue_key,
            booking_id=str(booking.id),
            outcome="created" if booking.created_at == now else "updated",
            urgency=booking.urgency,
            state=booking.state,
            escalations=booking.escalations,
        )


def _log_outcome(outcome: _BookingOutcome) -> None:
    with bind(correlation_id=outcome.correlation_id, vin=outcome.vin):
        log.info(
            "booking %s %s for %s (%s, %s)",
            outcome.booking_id,
            outcome.outcome,
            outcome.issue_key,
            outcome.urgency,
            outcome.state,
            extra={
                "booking_id": outcome.booking_id,
                "outcome": f"booking_{outcome.outcome}",
                "issue_key": outcome.issue_key,
                "escalations": outcome.escalations,
            },
        )


def build_services_handler(settings: Settings) -> ServicesHandler:
    return ServicesHandler(settings)
