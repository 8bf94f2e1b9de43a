"""The webhook outbox: every SQL statement of webhook delivery, plus its two small rules
(retry backoff and which secrets sign). Nothing here commits: callers own the transaction.

An event is written by :func:`enqueue` in the transaction that changes its booking (the
transactional outbox), so a webhook goes out if and only if the change was committed. The
dispatcher (``services.delivery``) claims due events with a lease, POSTs them and records each
attempt with :func:`record_attempt`.

Claiming is one statement, ``UPDATE ... WHERE id IN (SELECT ... FOR UPDATE SKIP LOCKED LIMIT n)
RETURNING id``: on PostgreSQL concurrent dispatchers skip each other's rows instead of waiting
for them or taking them twice; SQLite has one writer at a time, so the same statement is atomic
there too. The lease (``leased_until``) lets another dispatcher retry an event whose dispatcher
died mid-delivery; deliveries are therefore at least once, and receivers deduplicate on the
event id (``webhook-id``).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import orjson
from sqlalchemy import Table, and_, case, func, insert, literal_column, or_, select, update
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col
from sqlmodel import select as sqlmodel_select

from core.errors import Conflict, NotFound
from services.models import DeliveryState, ServiceCenter, WebhookAttempt, WebhookEvent

_EVENT: Table = WebhookEvent.__table__  # type: ignore[attr-defined]
_ATTEMPT: Table = WebhookAttempt.__table__  # type: ignore[attr-defined]
# A literal, not a bound parameter, so PostgreSQL can match the partial index
# ``ix_webhook_event_due`` (``WHERE delivery_state = 'pending'``) in generic plans too.
_PENDING: ColumnElement[bool] = _EVENT.c.delivery_state == literal_column("'pending'")

BACKOFF_FLOOR = 0.1
"""A retry waits at least this fraction of its exponential step, so jitter never makes it
hammer a struggling receiver immediately."""
TEXT_LIMIT = 500
"""Length of the ``last_error`` and ``response_excerpt`` columns."""


@dataclass(frozen=True)
class AttemptResult:
    """One HTTP attempt as the dispatcher saw it (a ``webhook_attempt`` row without its event)."""

    number: int
    """1 for the first attempt of the event (since its last replay)."""
    url: str
    started_at: datetime
    duration_ms: float
    status_code: int | None = None
    error: str | None = None
    """``timeout``, ``connect_error``, ``http_503`` ... or None when delivered."""
    response_excerpt: str | None = None


class Backlog(NamedTuple):
    pending: int
    next_due_at: datetime | None
    """When the earliest pending event can be claimed (its lease counts); None: no pending."""


def has_endpoint(center: ServiceCenter) -> bool:
    """Whether deliveries to the center are possible: a URL and a secret to sign with."""
    return bool(center.webhook_url and center.webhook_secret)


def enqueue(
    session: Session,
    center: ServiceCenter,
    *,
    event_type: str,
    data: dict[str, Any],
    booking_id: uuid.UUID | None,
    now: datetime,
) -> WebhookEvent:
    """Add an event for the center to the outbox, in the caller's transaction.

    It is ``pending`` (due now) when the active center has an endpoint, else ``no_endpoint``:
    only in the log, replayable once the center sets a URL. ``data`` is normalised to plain
    JSON (UUIDs and datetimes become strings) so the stored payload is exactly what is sent."""
    deliverable = center.active and has_endpoint(center)
    event = WebhookEvent(
        center_id=center.id,
        booking_id=booking_id,
        type=event_type,
        payload={
            "type": event_type,
            "timestamp": iso_utc(now),
            "data": orjson.loads(orjson.dumps(data)),
        },
        delivery_state=DeliveryState.pending if deliverable else DeliveryState.no_endpoint,
        next_attempt_at=now if deliverable else None,
        created_at=now,
    )
    session.add(event)
    return event


def claim_due(
    session: Session,
    now: datetime,
    limit: int,
    lease_s: float,
    *,
    center_ids: Collection[uuid.UUID] | None = None,
) -> list[tuple[WebhookEvent, ServiceCenter]]:
    """Lease up to ``limit`` due events (longest overdue first) until ``now + lease_s``.

    Pending events whose center lost its endpoint since they were enqueued become
    ``no_endpoint`` instead of being returned. ``center_ids`` restricts the claim to those
    centers (a test's, or a dispatcher dedicated to some centers)."""
    if limit <= 0:
        return []
    due = (
        select(_EVENT.c.id)
        .where(
            _PENDING,
            _EVENT.c.next_attempt_at <= now,
            or_(_EVENT.c.leased_until.is_(None), _EVENT.c.leased_until < now),
        )
        .order_by(_EVENT.c.next_attempt_at, _EVENT.c.created_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    if center_ids is not None:
        due = due.where(_EVENT.c.center_id.in_(list(center_ids)))
    claim = (
        update(_EVENT)
        .where(_EVENT.c.id.in_(due))
        .values(leased_until=now + timedelta(seconds=lease_s))
        .returning(_EVENT.c.id)
    )
    claimed_ids = list(session.execute(claim).scalars())
    if not claimed_ids:
        return []
    events = session.exec(
        sqlmodel_select(WebhookEvent)
        .where(col(WebhookEvent.id).in_(claimed_ids))
        .order_by(col(WebhookEvent.next_attempt_at), col(WebhookEvent.created_at))
        .execution_options(populate_existing=True)
    ).all()
    center_query = sqlmodel_select(ServiceCenter).where(
        col(ServiceCenter.id).in_({event.center_id for event in events})
    )
    centers = {center.id: center for center in session.exec(center_query)}
    ready = [(event, centers[event.center_id]) for event in events]
    orphaned = [event.id for event, center in ready if not has_endpoint(center)]
    if orphaned:
        session.execute(
            update(_EVENT)
            .where(_EVENT.c.id.in_(orphaned))
            .values(
                delivery_state=DeliveryState.no_endpoint.value,
                next_attempt_at=None,
                leased_until=None,
            )
        )
    return [(event, center) for event, center in ready if has_endpoint(center)]


def record_attempt(
    session: Session,
    event_id: uuid.UUID,
    result: AttemptResult,
    *,
    delivered: bool,
    next_attempt_at: datetime | None,
    dead: bool,
) -> bool:
    """Log an attempt and move its event on: ``delivered``, ``dead``, or pending again until
    ``next_attempt_at``; the lease is released.

    The event changes only while it is still pending at attempt ``result.number - 1``, so a
    dispatcher that lost its lease (or a replay in between) cannot count an attempt twice or
    undo a newer outcome; returns whether it changed. The attempt row is written either way:
    the request was sent."""
    if delivered and dead:
        raise ValueError("an attempt cannot both deliver the event and make it dead")
    if not delivered and not dead and next_attempt_at is None:
        raise ValueError("a failed attempt that is not the last needs next_attempt_at")
    if delivered:
        state = DeliveryState.delivered
    else:
        state = DeliveryState.dead if dead else DeliveryState.pending
    values: dict[str, Any] = {
        "delivery_state": state.value,
        "attempts": result.number,
        "leased_until": None,
        "next_attempt_at": next_attempt_at if state is DeliveryState.pending else None,
        "last_error": None if delivered else _clip(result.error or "failed"),
    }
    if delivered:
        values["delivered_at"] = result.started_at + timedelta(milliseconds=result.duration_ms)
    change = (
        update(_EVENT)
        .where(_EVENT.c.id == event_id, _PENDING, _EVENT.c.attempts == result.number - 1)
        .values(**values)
    )
    changed = session.execute(change).rowcount == 1  # type: ignore[attr-defined]
    session.execute(
        insert(_ATTEMPT).values(
            event_id=event_id,
            attempt=result.number,
            url=_clip(result.url),
            started_at=result.started_at,
            duration_ms=result.duration_ms,
            status_code=result.status_code,
            error=_clip(result.error),
            response_excerpt=_clip(result.response_excerpt),
        )
    )
    return changed


def replay(session: Session, event_id: uuid.UUID, now: datetime) -> WebhookEvent:
    """Send an event again, with the same id (receivers deduplicate on it).

    A delivered, dead or ``no_endpoint`` event becomes pending, due now, with a fresh budget of
    attempts (the log keeps the earlier ones; numbering restarts at 1). A pending event is
    just made due now (an attempt in flight keeps its lease)."""
    event = session.exec(
        sqlmodel_select(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if event is None:
        raise NotFound(f"webhook event {event_id} not found")
    center = session.get(ServiceCenter, event.center_id)
    if center is None or not has_endpoint(center):
        raise Conflict("the service center has no webhook endpoint", code="no_webhook_endpoint")
    if event.delivery_state != DeliveryState.pending:
        event.delivery_state = DeliveryState.pending
        event.attempts = 0
        event.leased_until = None
        event.delivered_at = None
    event.next_attempt_at = now
    session.add(event)
    session.flush()
    return event


def list_events(
    session: Session,
    *,
    center_id: uuid.UUID | None = None,
    booking_id: uuid.UUID | None = None,
    state: DeliveryState | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[WebhookEvent]:
    """Events, newest first."""
    query = sqlmodel_select(WebhookEvent).execution_options(populate_existing=True)
    if center_id is not None:
        query = query.where(WebhookEvent.center_id == center_id)
    if booking_id is not None:
        query = query.where(WebhookEvent.booking_id == booking_id)
    if state is not None:
        query = query.where(WebhookEvent.delivery_state == DeliveryState(state).value)
    query = query.order_by(col(WebhookEvent.created_at).desc(), col(WebhookEvent.id).desc())
    return list(session.exec(query.limit(limit).offset(offset)))


def get_event_with_attempts(
    session: Session, event_id: uuid.UUID
) -> tuple[WebhookEvent, list[WebhookAttempt]] | None:
    """An event and its delivery log, in the order the attempts were made."""
    event = session.exec(
        sqlmodel_select(WebhookEvent)
        .where(WebhookEvent.id == event_id)
        .execution_options(populate_existing=True)
    ).first()
    if event is None:
        return None
    attempts = session.exec(
        sqlmodel_select(WebhookAttempt)
        .where(WebhookAttempt.event_id == event_id)
        .order_by(col(WebhookAttempt.id))
    ).all()
    return event, list(attempts)


def pending_backlog(
    session: Session, *, center_ids: Collection[uuid.UUID] | None = None
) -> Backlog:
    """How many events are pending and when the first of them can be claimed."""
    leased_later = and_(
        _EVENT.c.leased_until.is_not(None), _EVENT.c.leased_until > _EVENT.c.next_attempt_at
    )
    claimable_at = case((leased_later, _EVENT.c.leased_until), else_=_EVENT.c.next_attempt_at)
    query = select(func.count(), func.min(claimable_at)).where(_PENDING)
    if center_ids is not None:
        query = query.where(_EVENT.c.center_id.in_(list(center_ids)))
    pending, next_due_at = session.execute(query).one()
    return Backlog(pending=pending, next_due_at=next_due_at)


def backoff_s(attempt: int, base_s: float, max_s: float, rng: random.Random) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    "Full jitter" from the AWS Architecture Blog's *Exponential Backoff And Jitter*: a uniform
    draw below the exponential step ``min(max_s, base_s * 2 ** (attempt - 1))`` (attempt 1
    waits up to ``base_s``), which spreads out the retries of many events that failed
    together; unlike plain full jitter the draw starts at ``BACKOFF_FLOOR`` of the step."""
    if attempt < 1:
        raise ValueError("attempts are numbered from 1")
    step = min(max_s, base_s * 2.0 ** min(attempt - 1, 64))
    return rng.uniform(BACKOFF_FLOOR * step, step)


def signing_secrets(center: ServiceCenter, now: datetime) -> list[str]:
    """The secrets a delivery is signed with: the current one first, and the previous one while
    its rotation overlap lasts (a receiver that has either accepts the delivery)."""
    secrets = [center.webhook_secret] if center.webhook_secret else []
    until = center.webhook_previous_until
    if center.webhook_previous_secret and until is not None and until > now:
        secrets.append(center.webhook_previous_secret)
    return secrets


def iso_utc(moment: datetime) -> str:
    """ISO-8601 in UTC with a ``Z`` (``2025-01-31T08:00:00.000000Z``)."""
    if moment.tzinfo is None:
        raise ValueError(f"a timezone-aware datetime is needed, got {moment!r}")
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clip(text: str | None) -> str | None:
    return None if text is None else text[:TEXT_LIMIT]
