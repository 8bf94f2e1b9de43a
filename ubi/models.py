"""Tables of the data value-added modules: trips, driving events and UBI scores (worker ``ubi``),
charge sessions and battery health (worker ``battery``), the workers' checkpointed streaming
state, and the privacy side: vehicle owners, consents, pseudonyms and their keys, erasure
requests (``docs/ubi.md``).

Natural keys make every sink idempotent: a trip is ``<vin>:<start epoch ms>``, an event
``<vin>:<type>:<start epoch ms>``, a charge session ``(vin, start)``; a replayed batch rewrites
the same rows.
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
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow


class Purpose(StrEnum):
    """What a consent allows a grantee to read."""

    ubi = "ubi"
    """Usage-based-insurance scores (per period, with sub-scores and reason codes)."""
    battery = "battery"
    """Battery state of health and the residual-value score."""


class UbiTrip(SQLModel, table=True):
    __tablename__ = "ubi_trip"

    trip_id: str = Field(sa_type=String(48), primary_key=True)
    vin: str = Field(sa_type=String(17), index=True)
    start_at: datetime = Field(sa_type=UtcDateTime, index=True)
    end_at: datetime = Field(sa_type=UtcDateTime)
    start_local: str = Field(sa_type=String(40))
    end_local: str = Field(sa_type=String(40))
    time_zone: str = Field(sa_type=String(64))
    distance_m: float = Field(sa_type=Float)
    distance_source: str = Field(sa_type=String(16))
    duration_s: float = Field(sa_type=Float)
    moving_s: float = Field(sa_type=Float)
    idle_s: float = Field(sa_type=Float)
    night_s: float = Field(sa_type=Float)
    speeding_s: float = Field(sa_type=Float)
    night_share: float = Field(sa_type=Float)
    speeding_share: float = Field(sa_type=Float)
    speed_limit_source: str = Field(sa_type=String(16))
    samples: int = Field(sa_type=Integer)
    score: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """The trip's own score (``ubi.scoring.TripScore.as_dict``)."""
    disputed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    dispute_reason: str | None = Field(default=None, sa_type=String(200), nullable=True)
    disputed_by: str | None = Field(default=None, sa_type=String(100), nullable=True)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class UbiEvent(SQLModel, table=True):
    __tablename__ = "ubi_event"

    event_id: str = Field(sa_type=String(80), primary_key=True)
    vin: str = Field(sa_type=String(17), index=True)
    trip_id: str | None = Field(default=None, sa_type=String(48), index=True, nullable=True)
    type: str = Field(sa_type=String(32))
    start_at: datetime = Field(sa_type=UtcDateTime, index=True)
    end_at: datetime = Field(sa_type=UtcDateTime)
    peak_mps2: float = Field(sa_type=Float)
    severity: int = Field(sa_type=Integer)
    source: str = Field(sa_type=String(32))


class UbiScore(SQLModel, table=True):
    """The current score of a vehicle over the trailing period (recomputed at checkpoints and
    after a dispute)."""

    __tablename__ = "ubi_score"

    vin: str = Field(sa_type=String(17), primary_key=True)
    period_days: int = Field(sa_type=Integer, primary_key=True)
    period_start: datetime = Field(sa_type=UtcDateTime)
    period_end: datetime = Field(sa_type=UtcDateTime)
    score: float = Field(sa_type=Float)
    score_low: float = Field(sa_type=Float)
    score_high: float = Field(sa_type=Float)
    data_sufficient: bool = Field(sa_type=Boolean)
    score_version: str = Field(sa_type=String(32))
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """``ubi.scoring.PeriodScore.as_dict``."""
    computed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class BatterySession(SQLModel, table=True):
    __tablename__ = "battery_session"

    vin: str = Field(sa_type=String(17), primary_key=True)
    start_at: datetime = Field(sa_type=UtcDateTime, primary_key=True)
    end_at: datetime = Field(sa_type=UtcDateTime)
    dc: bool = Field(sa_type=Boolean)
    soc_start_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    soc_end_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    energy_kwh: float | None = Field(default=None, sa_type=Float, nullable=True)
    soh_energy_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    sigma_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    """Figures a rejected session could not give (too short, implausible) are NULL."""
    rejected: str | None = Field(default=None, sa_type=String(32), nullable=True)
    payload: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)


class BatteryHealthRecord(SQLModel, table=True):
    """The current battery health and residual score of a vehicle."""

    __tablename__ = "battery_health"

    vin: str = Field(sa_type=String(17), primary_key=True)
    soh_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    soh_low_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    soh_high_pct: float | None = Field(default=None, sa_type=Float, nullable=True)
    score_version: str = Field(sa_type=String(32))
    health: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    residual: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    computed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class AnalyticsState(SQLModel, table=True):
    """A streaming worker's per-vehicle state at its last checkpoint (msgpack bytes)."""

    __tablename__ = "analytics_state"

    worker: str = Field(sa_type=String(32), primary_key=True)
    vin: str = Field(sa_type=String(17), primary_key=True)
    state: bytes = Field(sa_type=LargeBinary)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class VehicleOwner(SQLModel, table=True):
    """Links an ``owner`` principal (a driver, a private owner) to a vehicle: they grant
    consents and dispute trips for it."""

    __tablename__ = "vehicle_owner"

    vin: str = Field(sa_type=String(17), primary_key=True)
    principal_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[
            ForeignKey("principal.id", ondelete="CASCADE", name="fk_vehicle_owner_principal_id")
        ],
        primary_key=True,
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Consent(SQLModel, table=True):
    __tablename__ = "consent"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    vin: str = Field(sa_type=String(17), index=True)
    grantee_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[ForeignKey("principal.id", name="fk_consent_grantee_id")],
        index=True,
    )
    purpose: Purpose = Field(sa_type=String(16))
    granted_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime)
    granted_by: str = Field(sa_type=String(100))
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    revoked_by: str | None = Field(default=None, sa_type=String(100), nullable=True)


class PseudonymKey(SQLModel, table=True):
    """Keys of the keyed hash that turns (grantee, VIN) into a pseudonym; rotating adds a new
    version, and partners then see new pseudonyms."""

    __tablename__ = "pseudonym_key"

    version: int = Field(
        sa_type=Integer, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    secret: bytes = Field(sa_type=LargeBinary)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    retired_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


class Pseudonym(SQLModel, table=True):
    """The mapping from a pseudonym back to its vehicle (deleted by an erasure)."""

    __tablename__ = "pseudonym"
    __table_args__ = (UniqueConstraint("vin", "grantee_id", "key_version", name="uq_pseudonym"),)

    pseudonym: str = Field(sa_type=String(40), primary_key=True)
    vin: str = Field(sa_type=String(17), index=True)
    grantee_id: uuid.UUID = Field(sa_type=Uuid, index=True)
    key_version: int = Field(sa_type=Integer)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ErasureState(StrEnum):
    pending = "pending"
    done = "done"


class ErasureRequest(SQLModel, table=True):
    __tablename__ = "erasure_request"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    vin: str = Field(sa_type=String(17), index=True)
    requested_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    requested_by: str = Field(sa_type=String(100))
    due_at: datetime = Field(sa_type=UtcDateTime)
    state: ErasureState = Field(default=ErasureState.pending, sa_type=String(16), index=True)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
