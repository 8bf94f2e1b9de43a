"""Tables of proactive service: service centers, maintenance bookings, the webhook outbox and
its delivery log, owner notifications, service outcomes (PdM labels) and the worker's inbox.

Invariants the database itself enforces, so two racing workers or requests cannot break them:

* one *open* booking per (vehicle, issue): a partial unique index over the open states;
* a bay of a slot is held by at most one active booking: a partial unique index over
  (center, slot start, bay) for the states that hold a slot;
* a finding or prediction event is applied once: ``service_inbox`` is keyed by its id.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    Uuid,
    text,
)
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow


class Capability(StrEnum):
    """What a service center can work on; every issue needs one."""

    ev_high_voltage = "ev_high_voltage"
    brakes = "brakes"
    tires = "tires"
    cooling = "cooling"
    lv_12v = "lv_12v"
    general = "general"
    """Diagnosis of codes the platform cannot attribute, and routine service."""


class BookingState(StrEnum):
    unassigned = "unassigned"
    """No capable center had a free slot; the worker retries."""
    proposed = "proposed"
    """Sent to the center, waiting for it to accept (or decline, or reschedule)."""
    accepted = "accepted"
    completed = "completed"
    declined = "declined"
    """Terminal for the center that declined; the issue moves on to a new booking."""
    cancelled = "cancelled"


OPEN_STATES = (BookingState.unassigned, BookingState.proposed, BookingState.accepted)
SLOT_HOLDING_STATES = (BookingState.proposed, BookingState.accepted, BookingState.completed)


class Urgency(StrEnum):
    routine = "routine"
    low = "low"
    medium = "medium"
    high = "high"
    critical = "critical"

    @property
    def rank(self) -> int:
        return _URGENCY_ORDER.index(self)


_URGENCY_ORDER = list(Urgency)


class DeliveryState(StrEnum):
    pending = "pending"
    delivered = "delivered"
    dead = "dead"
    """Every attempt failed; an operator can replay it."""
    no_endpoint = "no_endpoint"
    """The center has no webhook URL: the event is only in the log (and its booking API)."""


def _in(column: str, states: tuple[StrEnum, ...]) -> Any:
    return text(f"{column} IN ({', '.join(repr(s.value) for s in states)})")


class ServiceCenter(SQLModel, table=True):
    __tablename__ = "service_center"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    code: str = Field(sa_type=String(64), unique=True, index=True)
    """Stable short name; a service-center credential is bound to it (principal ``org_ref``)."""
    name: str = Field(sa_type=String(200))
    latitude: float = Field(sa_type=Float)
    longitude: float = Field(sa_type=Float)
    time_zone: str = Field(sa_type=String(64))
    opening_hours: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """``services.slots.OpeningHours.to_spec()``: {"mon": ["08:00-12:00", ...], ...}."""
    closed_dates: list[str] = Field(default_factory=list, sa_type=JSON)
    capabilities: list[str] = Field(default_factory=list, sa_type=JSON)
    bays: int = Field(sa_type=Integer)
    """Capacity: bookings one slot can hold."""
    slot_minutes: int = Field(default=60, sa_type=Integer)
    active: bool = Field(default=True, sa_type=Boolean)
    webhook_url: str | None = Field(default=None, sa_type=String(500))
    webhook_secret: str | None = Field(default=None, sa_type=String(100))
    webhook_previous_secret: str | None = Field(default=None, sa_type=String(100))
    webhook_previous_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """Until then deliveries are signed with both secrets (rotation without a missed one)."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Booking(SQLModel, table=True):
    __tablename__ = "booking"
    __table_args__ = (
        Index(
            "uq_booking_open_issue",
            "vin",
            "issue_key",
            unique=True,
            postgresql_where=_in("state", OPEN_STATES),
            sqlite_where=_in("state", OPEN_STATES),
        ),
        Index(
            "uq_booking_slot_bay",
            "center_id",
            "slot_start",
            "bay",
            unique=True,
            postgresql_where=_in("state", SLOT_HOLDING_STATES),
            sqlite_where=_in("state", SLOT_HOLDING_STATES),
        ),
        Index("ix_booking_center_state", "center_id", "state"),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    vin: str = Field(sa_type=String(17), index=True)
    issue_key: str = Field(sa_type=String(64))
    """What is wrong, e.g. ``coolant_pump``, ``dtc.P0300``, ``routine``."""
    kind: str = Field(sa_type=String(16))
    """``diagnostic`` (a finding), ``predictive`` (a prediction) or ``routine``."""
    capability: str = Field(sa_type=String(32))
    state: str = Field(sa_type=String(16), index=True)
    urgency: str = Field(sa_type=String(16))
    due_by: datetime = Field(sa_type=UtcDateTime)
    """The work should be done before this (the predicted failure window, or the urgency's
    lead time)."""
    center_id: uuid.UUID | None = Field(
        default=None,
        sa_type=Uuid,
        sa_column_args=[ForeignKey("service_center.id", name="fk_booking_center_id")],
    )
    slot_start: datetime | None = Field(default=None, sa_type=UtcDateTime)
    slot_end: datetime | None = Field(default=None, sa_type=UtcDateTime)
    bay: int | None = Field(default=None, sa_type=Integer)
    distance_km: float | None = Field(default=None, sa_type=Float)
    after_due: bool = Field(default=False, sa_type=Boolean)
    """No capable center had a slot before ``due_by``; this is the earliest one after it."""
    summary: str = Field(default="", sa_type=String(500))
    evidence: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    """The findings and predictions behind the booking, oldest first."""
    escalations: int = Field(default=0, sa_type=Integer)
    declined_by: list[str] = Field(default_factory=list, sa_type=JSON)
    """Centers (ids) that declined this issue; it is not offered to them again."""
    previous_booking_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    """The declined booking this one continues."""
    decline_reason: str | None = Field(default=None, sa_type=String(500))
    outcome: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    version: int = Field(default=1, sa_type=Integer)
    """Increases on every change; webhook payloads carry it so receivers keep the newest."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class WebhookEvent(SQLModel, table=True):
    """The outbox: one event for one center, written in the transaction that changed the
    booking. Its id is the ``webhook-id`` idempotency key of every delivery attempt."""

    __tablename__ = "webhook_event"
    __table_args__ = (
        Index(
            "ix_webhook_event_due",
            "next_attempt_at",
            postgresql_where=text("delivery_state = 'pending'"),
            sqlite_where=text("delivery_state = 'pending'"),
        ),
    )

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    center_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[ForeignKey("service_center.id", name="fk_webhook_event_center_id")],
        index=True,
    )
    booking_id: uuid.UUID | None = Field(default=None, sa_type=Uuid, index=True)
    type: str = Field(sa_type=String(64))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """The body: ``{"type", "timestamp", "data"}`` (Standard Webhooks)."""
    delivery_state: str = Field(sa_type=String(16))
    attempts: int = Field(default=0, sa_type=Integer)
    next_attempt_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    leased_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    """A dispatcher claimed it until then; after a crash another one retries it."""
    last_error: str | None = Field(default=None, sa_type=String(500))
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one row per HTTP attempt."""

    __tablename__ = "webhook_attempt"

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    event_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[
            ForeignKey("webhook_event.id", ondelete="CASCADE", name="fk_webhook_attempt_event_id")
        ],
        index=True,
    )
    attempt: int = Field(sa_type=Integer)
    url: str = Field(sa_type=String(500))
    started_at: datetime = Field(sa_type=UtcDateTime)
    duration_ms: float = Field(sa_type=Float)
    status_code: int | None = Field(default=None, sa_type=Integer)
    error: str | None = Field(default=None, sa_type=String(500))
    """``timeout``, ``connect_error``, ``http_503`` ... or None when delivered."""
    response_excerpt: str | None = Field(default=None, sa_type=String(500))


class OwnerNotification(SQLModel, table=True):
    """What the vehicle's owner is told, in plain words, and why."""

    __tablename__ = "owner_notification"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    vin: str = Field(sa_type=String(17), index=True)
    booking_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    kind: str = Field(sa_type=String(32))
    title: str = Field(sa_type=String(200))
    body: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ServiceOutcome(SQLModel, table=True):
    """Work a center did, per replaced part: the labels predictive maintenance trains on."""

    __tablename__ = "service_outcome"

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    booking_id: uuid.UUID = Field(sa_type=Uuid, index=True)
    vin: str = Field(sa_type=String(17), index=True)
    issue_key: str = Field(sa_type=String(64))
    part: str = Field(sa_type=String(64))
    """Label component, e.g. ``engine.coolant_pump``, ``brake_pad.row1.left``."""
    found_at: datetime = Field(sa_type=UtcDateTime)
    """When the platform first saw the issue (the booking's first evidence)."""
    completed_at: datetime = Field(sa_type=UtcDateTime)
    codes_cleared: list[str] = Field(default_factory=list, sa_type=JSON)


class VehicleServiceBaseline(SQLModel, table=True):
    """When and at what odometer a vehicle was last serviced (routine schedules count from
    here). Starts at the first odometer the platform sees."""

    __tablename__ = "vehicle_service_baseline"

    vin: str = Field(sa_type=String(17), primary_key=True)
    serviced_at: datetime = Field(sa_type=UtcDateTime)
    odometer_m: float = Field(sa_type=Float)
    from_service: bool = Field(default=False, sa_type=Boolean)
    """False: a baseline set when the vehicle was first seen, not a recorded service."""


class ServiceInbox(SQLModel, table=True):
    """Finding and prediction events the services worker already applied (replays skip)."""

    __tablename__ = "service_inbox"

    event_id: str = Field(sa_type=String(64), primary_key=True)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime, index=True)
