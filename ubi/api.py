"""Driving and battery results for the people a vehicle belongs to: its owner (role ``owner``,
linked to the vehicle) and fleet operators. Trips carry no positions. Insurers and partners
read scores elsewhere (``ubi/privacy_api.py``), pseudonymised and under consent."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal
from core.deps import SessionDep, SettingsDep
from core.errors import NotFound
from core.vin import VinStr
from ubi import repository, service
from ubi.access import authorize_vehicle
from ubi.models import BatteryHealthRecord, UbiTrip

router = APIRouter(prefix="/v1", tags=["ubi"], responses=AUTH_ERROR_RESPONSES)

TripId = Annotated[str, Path(min_length=20, max_length=48, pattern=r"^[A-HJ-NPR-Z0-9]{17}:\d+$")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]


class DisputeReason(StrEnum):
    passenger = "passenger"
    """The insured driver was a passenger."""
    not_driving = "not_driving"
    """Someone else drove (or the vehicle was moved by a workshop, a tow, a ferry)."""


class DisputeIn(BaseModel):
    reason: DisputeReason
    note: str | None = Field(default=None, max_length=150, pattern=r"^[^\x00]*$")


class TripRead(BaseModel):
    trip_id: str
    start_at: datetime
    end_at: datetime
    start_local: str
    end_local: str
    distance_km: float
    duration_min: float
    idle_min: float
    night_share: float
    speeding_share: float
    speed_limit_source: str
    score: dict[str, Any]
    disputed: bool
    dispute_reason: str | None
    disputed_at: datetime | None


class DisputeResult(BaseModel):
    trip: TripRead
    period_score: dict[str, Any] | None
    """The vehicle's period score, recomputed without the disputed trip."""


def _trip(row: UbiTrip) -> TripRead:
    return TripRead(
        trip_id=row.trip_id,
        start_at=row.start_at,
        end_at=row.end_at,
        start_local=row.start_local,
        end_local=row.end_local,
        distance_km=round(row.distance_m / 1000, 3),
        duration_min=round(row.duration_s / 60, 2),
        idle_min=round(row.idle_s / 60, 2),
        night_share=row.night_share,
        speeding_share=row.speeding_share,
        speed_limit_source=row.speed_limit_source,
        score=row.score,
        disputed=row.disputed_at is not None,
        dispute_reason=row.dispute_reason,
        disputed_at=row.disputed_at,
    )


@router.get("/vehicles/{vin}/trips", response_model=list[TripRead])
def list_trips(
    vin: VinStr,
    principal: CurrentPrincipal,
    session: SessionDep,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[TripRead]:
    """The vehicle's trips, newest first, each with its own score."""
    authorize_vehicle(session, principal, vin)
    return [_trip(r) for r in repository.vehicle_trips(session, vin, limit=limit, offset=offset)]


@router.post("/vehicles/{vin}/trips/{trip_id}/dispute", response_model=DisputeResult)
def dispute_trip(
    vin: VinStr,
    trip_id: TripId,
    body: DisputeIn,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> DisputeResult:
    """Dispute a trip ("I was a passenger", "someone else drove"): the period score is
    recomputed without it at once (409 if already disputed with another reason)."""
    authorize_vehicle(session, principal, vin)
    reason = body.reason.value + (f": {body.note}" if body.note else "")
    trip, score = service.dispute_trip(
        session,
        vin,
        trip_id,
        reason=reason,
        actor=principal.name,
        period_days=settings.ubi_period_days,
    )
    return DisputeResult(trip=_trip(trip), period_score=score.as_dict() if score else None)


@router.delete("/vehicles/{vin}/trips/{trip_id}/dispute", response_model=DisputeResult)
def withdraw_dispute(
    vin: VinStr,
    trip_id: TripId,
    principal: CurrentPrincipal,
    session: SessionDep,
    settings: SettingsDep,
) -> DisputeResult:
    """Withdraw a dispute: the trip counts again."""
    authorize_vehicle(session, principal, vin)
    trip, score = service.withdraw_dispute(
        session, vin, trip_id, actor=principal.name, period_days=settings.ubi_period_days
    )
    return DisputeResult(trip=_trip(trip), period_score=score.as_dict() if score else None)


@router.get("/vehicles/{vin}/ubi-score")
def ubi_score(
    vin: VinStr, principal: CurrentPrincipal, session: SessionDep, settings: SettingsDep
) -> dict[str, Any]:
    """The current score over the trailing period (``FLEET_UBI_PERIOD_DAYS``): sub-scores,
    exposure, interval, data sufficiency, reason codes, score version."""
    authorize_vehicle(session, principal, vin)
    row = repository.get_score(session, vin, settings.ubi_period_days)
    if row is None:
        raise NotFound(f"vehicle {vin} has no UBI score yet (no completed trip)")
    return {**row.payload, "computed_at": row.computed_at.isoformat()}


@router.get("/vehicles/{vin}/battery")
def battery_health(vin: VinStr, principal: CurrentPrincipal, session: SessionDep) -> dict[str, Any]:
    """State of health with its interval, fade, projections, stress exposure, the residual
    score and the recent charge sessions."""
    authorize_vehicle(session, principal, vin)
    row = session.get(BatteryHealthRecord, vin)
    if row is None:
        raise NotFound(f"vehicle {vin} has no battery health yet (no charge session seen)")
    sessions = repository.battery_sessions(session, vin, limit=50)
    return {
        "health": row.health,
        "residual": row.residual,
        "computed_at": row.computed_at.isoformat(),
        "sessions": [s.payload for s in sessions],
    }
