"""All SQL of service centers, bookings, notifications, outcomes and the services inbox
(the webhook outbox's is in ``services.outbox``). Nothing here commits."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from core.vehicles.models import Vehicle, VehicleStatus
from core.vehicles.repository import get_vehicle_status
from services.models import (
    OPEN_STATES,
    SLOT_HOLDING_STATES,
    Booking,
    BookingState,
    OwnerNotification,
    ServiceCenter,
    ServiceInbox,
    ServiceOutcome,
    VehicleServiceBaseline,
)

_INBOX: Table = ServiceInbox.__table__  # type: ignore[attr-defined]
_BASELINE: Table = VehicleServiceBaseline.__table__  # type: ignore[attr-defined]


def _insert(session: Session, table: Table) -> Any:
    if session.get_bind().dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


# --- centers -------------------------------------------------------------------------------


def add(session: Session, row: Any) -> None:
    session.add(row)
    session.flush()


def get_center(session: Session, center_id: uuid.UUID) -> ServiceCenter | None:
    query = select(ServiceCenter).where(ServiceCenter.id == center_id)
    return session.exec(query.execution_options(populate_existing=True)).first()


def get_center_by_code(session: Session, code: str) -> ServiceCenter | None:
    query = select(ServiceCenter).where(ServiceCenter.code == code)
    return session.exec(query.execution_options(populate_existing=True)).first()


def list_centers(
    session: Session, *, active: bool | None = None, limit: int = 100, offset: int = 0
) -> list[ServiceCenter]:
    query = select(ServiceCenter).order_by(col(ServiceCenter.code))
    if active is not None:
        query = query.where(ServiceCenter.active == active)
    query = query.limit(limit).offset(offset).execution_options(populate_existing=True)
    return list(session.exec(query))


def centers_by_id(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, ServiceCenter]:
    if not ids:
        return {}
    query = select(ServiceCenter).where(col(ServiceCenter.id).in_(set(ids)))
    return {center.id: center for center in session.exec(query)}


def active_centers(session: Session) -> list[ServiceCenter]:
    """Every active center (capability filtering happens in Python: the list is JSON)."""
    query = select(ServiceCenter).where(ServiceCenter.active == True)  # noqa: E712
    return list(session.exec(query.execution_options(populate_existing=True)))


def slot_usage(
    session: Session, center_id: uuid.UUID, start: datetime, end: datetime
) -> dict[datetime, set[int]]:
    """Bays held per slot start (UTC) at a center, for slots starting in ``[start, end)``."""
    query = select(Booking.slot_start, Booking.bay).where(
        Booking.center_id == center_id,
        col(Booking.state).in_([s.value for s in SLOT_HOLDING_STATES]),
        col(Booking.slot_start) >= start,
        col(Booking.slot_start) < end,
    )
    used: dict[datetime, set[int]] = defaultdict(set)
    for slot_start, bay in session.exec(query):
        if slot_start is not None and bay is not None:
            used[slot_start].add(bay)
    return used


# --- bookings --------------------------------------------------------------------------------


def get_booking(
    session: Session, booking_id: uuid.UUID, *, for_update: bool = False
) -> Booking | None:
    query = select(Booking).where(Booking.id == booking_id)
    if for_update:
        query = query.with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).first()


def open_booking(
    session: Session, vin: str, issue_key: str, *, for_update: bool = False
) -> Booking | None:
    query = select(Booking).where(
        Booking.vin == vin,
        Booking.issue_key == issue_key,
        col(Booking.state).in_([s.value for s in OPEN_STATES]),
    )
    if for_update:
        query = query.with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).first()


def list_bookings(
    session: Session,
    *,
    center_id: uuid.UUID | None = None,
    vin: str | None = None,
    states: Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[Booking]:
    query = select(Booking)
    if center_id is not None:
        query = query.where(Booking.center_id == center_id)
    if vin is not None:
        query = query.where(Booking.vin == vin)
    if states:
        query = query.where(col(Booking.state).in_(list(states)))
    query = query.order_by(col(Booking.created_at).desc(), col(Booking.id)).limit(limit)
    query = query.offset(offset).execution_options(populate_existing=True)
    return list(session.exec(query))


def unassigned_bookings(session: Session, limit: int = 200) -> list[Booking]:
    query = (
        select(Booking)
        .where(Booking.state == BookingState.unassigned.value)
        .order_by(col(Booking.due_by))
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    return list(session.exec(query.execution_options(populate_existing=True)))


def claim_inbox(session: Session, event_id: str, now: datetime) -> bool:
    """Record that ``event_id`` is being applied; False when it was applied before."""
    insert = _insert(session, _INBOX).values(event_id=event_id, received_at=now)
    statement = insert.on_conflict_do_nothing(index_elements=["event_id"])
    return session.execute(statement.returning(_INBOX.c.event_id)).first() is not None


def prune_inbox(session: Session, before: datetime) -> int:
    result = session.execute(_INBOX.delete().where(_INBOX.c.received_at < before))
    return int(result.rowcount)  # type: ignore[attr-defined]


# --- vehicles as the services domain sees them ---------------------------------------------


def vehicle_status(session: Session, vin: str) -> VehicleStatus | None:
    return get_vehicle_status(session, vin)


def vehicle_exists(session: Session, vin: str) -> bool:
    return session.exec(select(Vehicle.vin).where(Vehicle.vin == vin)).first() is not None


def routine_candidates(session: Session) -> list[tuple[str, datetime, float | None, Any]]:
    """Per registered vehicle: (vin, registered at, odometer in m or None, baseline row or
    None)."""
    query = (
        select(Vehicle.vin, Vehicle.created_at, VehicleStatus.odometer_m, VehicleServiceBaseline)
        .join(VehicleStatus, col(VehicleStatus.vin) == col(Vehicle.vin), isouter=True)
        .join(
            VehicleServiceBaseline,
            col(VehicleServiceBaseline.vin) == col(Vehicle.vin),
            isouter=True,
        )
    )
    return [tuple(row) for row in session.exec(query)]  # type: ignore[misc]


def set_baseline(
    session: Session, vin: str, serviced_at: datetime, odometer_m: float, *, from_service: bool
) -> None:
    insert = _insert(session, _BASELINE).values(
        vin=vin, serviced_at=serviced_at, odometer_m=odometer_m, from_service=from_service
    )
    if from_service:
        statement = insert.on_conflict_do_update(
            index_elements=["vin"],
            set_={
                "serviced_at": insert.excluded.serviced_at,
                "odometer_m": insert.excluded.odometer_m,
                "from_service": insert.excluded.from_service,
            },
        )
    else:  # a first-seen baseline never replaces a recorded one
        statement = insert.on_conflict_do_nothing(index_elements=["vin"])
    session.execute(statement)


# --- notifications and outcomes ------------------------------------------------------------


def list_notifications(
    session: Session, vin: str, *, limit: int = 50, offset: int = 0
) -> list[OwnerNotification]:
    query = (
        select(OwnerNotification)
        .where(OwnerNotification.vin == vin)
        .order_by(col(OwnerNotification.created_at).desc(), col(OwnerNotification.id))
        .limit(limit)
        .offset(offset)
    )
    return list(session.exec(query))


def list_outcomes(session: Session, *, since: datetime | None = None) -> list[ServiceOutcome]:
    query = select(ServiceOutcome).order_by(col(ServiceOutcome.completed_at))
    if since is not None:
        query = query.where(col(ServiceOutcome.completed_at) >= since)
    return list(session.exec(query))


def count_bookings(session: Session, *, states: Sequence[str] | None = None) -> int:
    query = select(func.count()).select_from(Booking)
    if states:
        query = query.where(col(Booking.state).in_(list(states)))
    return int(session.exec(query).one())
