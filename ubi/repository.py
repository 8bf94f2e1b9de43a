"""All SQL of the ``ubi`` and ``battery`` workers and the score APIs.

Writes are upserts on natural keys (trip id, event id, (vin, session start), (vin, period)),
so a batch replayed after a crash or a rebalance rewrites the same rows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, func
from sqlmodel import Session, col, select

from core.db import upsert, utcnow
from core.vehicles.models import Vehicle
from ubi.models import (
    AnalyticsState,
    BatteryHealthRecord,
    BatterySession,
    ErasureRequest,
    ErasureState,
    UbiEvent,
    UbiScore,
    UbiTrip,
)

CHUNK = 500

_STATE: Table = AnalyticsState.__table__  # type: ignore[attr-defined]
_TRIP: Table = UbiTrip.__table__  # type: ignore[attr-defined]
_EVENT: Table = UbiEvent.__table__  # type: ignore[attr-defined]
_SCORE: Table = UbiScore.__table__  # type: ignore[attr-defined]
_SESSION: Table = BatterySession.__table__  # type: ignore[attr-defined]
_HEALTH: Table = BatteryHealthRecord.__table__  # type: ignore[attr-defined]

_TRIP_DATA = (
    "vin", "start_at", "end_at", "start_local", "end_local", "time_zone", "distance_m",
    "distance_source", "duration_s", "moving_s", "idle_s", "night_s", "speeding_s",
    "night_share", "speeding_share", "speed_limit_source", "samples", "score", "updated_at",
)  # fmt: skip
"""Columns a replayed trip rewrites; the dispute columns are the driver's and stay."""


def _chunks(values: Sequence[str]) -> list[Sequence[str]]:
    return [values[i : i + CHUNK] for i in range(0, len(values), CHUNK)]


# -- streaming state ------------------------------------------------------------------------------
def load_states(session: Session, worker: str, vins: Sequence[str]) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for part in _chunks(vins):
        query = select(AnalyticsState.vin, AnalyticsState.state).where(
            AnalyticsState.worker == worker, col(AnalyticsState.vin).in_(part)
        )
        found.update({vin: bytes(state) for vin, state in session.exec(query)})
    return found


def save_states(session: Session, worker: str, states: Mapping[str, bytes]) -> None:
    now = utcnow()
    rows = [
        {"worker": worker, "vin": vin, "state": state, "updated_at": now}
        for vin, state in sorted(states.items())
    ]
    upsert(session, _STATE, rows, ("worker", "vin"), ("state", "updated_at"))


def erasures_completed(session: Session, vins: Sequence[str]) -> dict[str, datetime]:
    """VIN -> when its latest erasure was carried out."""
    found: dict[str, datetime] = {}
    for part in _chunks(vins):
        query = (
            select(ErasureRequest.vin, func.max(ErasureRequest.completed_at))
            .where(col(ErasureRequest.vin).in_(part), ErasureRequest.state == ErasureState.done)
            .group_by(col(ErasureRequest.vin))
        )
        found.update({vin: at for vin, at in session.exec(query) if at is not None})
    return found


def time_zones(session: Session, vins: Sequence[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in _chunks(vins):
        query = select(Vehicle.vin, Vehicle.time_zone).where(col(Vehicle.vin).in_(part))
        found.update(dict(session.exec(query).all()))
    return found


def vehicle_models(session: Session, vins: Sequence[str]) -> dict[str, tuple[str, str]]:
    """VIN -> (model, powertrain) of registered vehicles."""
    found: dict[str, tuple[str, str]] = {}
    for part in _chunks(vins):
        query = select(Vehicle.vin, Vehicle.model, Vehicle.powertrain).where(
            col(Vehicle.vin).in_(part)
        )
        found.update({vin: (model, str(pt)) for vin, model, pt in session.exec(query)})
    return found


# -- trips, events, scores ------------------------------------------------------------------------
def upsert_trips(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    upsert(session, _TRIP, rows, ("trip_id",), _TRIP_DATA)


def upsert_events(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = ("vin", "trip_id", "type", "start_at", "end_at", "peak_mps2", "severity", "source")
    upsert(session, _EVENT, rows, ("event_id",), columns, keep_existing=("trip_id",))


def upsert_scores(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = (
        "period_start", "period_end", "score", "score_low", "score_high", "data_sufficient",
        "score_version", "payload", "computed_at",
    )  # fmt: skip
    upsert(session, _SCORE, rows, ("vin", "period_days"), columns)


def trips_between(session: Session, vin: str, start: datetime, end: datetime) -> list[UbiTrip]:
    """Trips of a vehicle starting in ``[start, end)``, oldest first."""
    query = (
        select(UbiTrip)
        .where(UbiTrip.vin == vin, UbiTrip.start_at >= start, UbiTrip.start_at < end)
        .order_by(col(UbiTrip.start_at))
    )
    return list(session.exec(query))


def latest_trip_end(session: Session, vin: str) -> datetime | None:
    query = select(UbiTrip.end_at).where(UbiTrip.vin == vin).order_by(col(UbiTrip.end_at).desc())
    return session.exec(query.limit(1)).first()


def events_between(session: Session, vin: str, start: datetime, end: datetime) -> list[UbiEvent]:
    """Events of a vehicle starting in ``[start, end]``."""
    query = (
        select(UbiEvent)
        .where(UbiEvent.vin == vin, UbiEvent.start_at >= start, UbiEvent.start_at <= end)
        .order_by(col(UbiEvent.start_at), col(UbiEvent.type))
    )
    return list(session.exec(query))


def vehicle_trips(
    session: Session, vin: str, *, limit: int = 100, offset: int = 0
) -> list[UbiTrip]:
    query = (
        select(UbiTrip)
        .where(UbiTrip.vin == vin)
        .order_by(col(UbiTrip.start_at).desc())
        .offset(offset)
        .limit(limit)
    )
    return list(session.exec(query))


def get_trip(session: Session, trip_id: str, *, for_update: bool = False) -> UbiTrip | None:
    query = select(UbiTrip).where(UbiTrip.trip_id == trip_id)
    if for_update:
        query = query.with_for_update()
    return session.exec(query).first()


def get_score(session: Session, vin: str, period_days: int) -> UbiScore | None:
    return session.get(UbiScore, (vin, period_days))


# -- battery --------------------------------------------------------------------------------------
def upsert_battery_sessions(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = (
        "end_at", "dc", "soc_start_pct", "soc_end_pct", "energy_kwh", "soh_energy_pct",
        "sigma_pct", "rejected", "payload",
    )  # fmt: skip
    upsert(session, _SESSION, rows, ("vin", "start_at"), columns)


def upsert_battery_health(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    columns = (
        "soh_pct", "soh_low_pct", "soh_high_pct", "score_version", "health", "residual",
        "computed_at",
    )  # fmt: skip
    upsert(session, _HEALTH, rows, ("vin",), columns)


def battery_sessions(session: Session, vin: str, *, limit: int = 200) -> list[BatterySession]:
    query = (
        select(BatterySession)
        .where(BatterySession.vin == vin)
        .order_by(col(BatterySession.start_at).desc())
        .limit(limit)
    )
    return list(session.exec(query))
