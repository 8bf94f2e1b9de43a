"""Tables of remote diagnosis and predictive maintenance, and the health read model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow


class DtcEpisode(SQLModel, table=True):
    """One episode of a trouble code on a vehicle: from its first report until it is cleared
    or ages out. A code that comes back opens the next episode."""

    __tablename__ = "dtc_episode"
    __table_args__ = (UniqueConstraint("vin", "code", "episode", name="uq_dtc_episode"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(sa_type=String(17), index=True)
    code: str = Field(sa_type=String(32))
    episode: int = Field(sa_type=Integer)
    state: str = Field(sa_type=String(16), index=True)
    first_seen: datetime = Field(sa_type=UtcDateTime)
    last_seen: datetime = Field(sa_type=UtcDateTime)
    confirmed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    occurrences: int = Field(default=0, sa_type=Integer)
    decoded: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    freeze_frame: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    state_data: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """The tracker's own state of this episode, so a restarted worker continues it."""
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Alarm(SQLModel, table=True):
    """A rule alarm. At most one is open per (vehicle, rule) in real time, and one per
    (vehicle, rule) among the findings in late store-and-forward data (``late``): the partial
    unique index makes the database refuse a second one even if two workers raced."""

    __tablename__ = "alarm"
    __table_args__ = (
        UniqueConstraint("vin", "rule_id", "raised_at", name="uq_alarm_raised"),
        Index(
            "uq_alarm_open",
            "vin",
            "rule_id",
            "late",
            unique=True,
            postgresql_where=text("state = 'open'"),
            sqlite_where=text("state = 'open'"),
        ),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(sa_type=String(17), index=True)
    rule_id: str = Field(sa_type=String(64))
    severity: str = Field(sa_type=String(16))
    state: str = Field(sa_type=String(16))
    late: bool = Field(default=False, sa_type=Boolean)
    raised_at: datetime = Field(sa_type=UtcDateTime)
    cleared_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    value: float | None = Field(default=None, sa_type=Float)
    message: str = Field(default="", sa_type=String(500))
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class DiagnosticsState(SQLModel, table=True):
    """Per vehicle: the rule engine's state at the worker's last checkpoint (windows, pending
    conditions, open alarms), so a restarted worker continues where the committed offsets
    are."""

    __tablename__ = "diagnostics_state"

    vin: str = Field(sa_type=String(17), primary_key=True)
    rules: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class PdmFeatureBucket(SQLModel, table=True):
    """One hour of one vehicle's feature statistics (``diagnostics.features.Buckets``, one row
    as Arrow IPC): what the pdm worker needs to continue its windows after a restart."""

    __tablename__ = "pdm_feature_bucket"

    vin: str = Field(sa_type=String(17), primary_key=True)
    hour: int = Field(sa_type=BigInteger, primary_key=True)
    data: bytes = Field(sa_type=LargeBinary)


class MaintenancePrediction(SQLModel, table=True):
    """The latest failure-risk prediction per (vehicle, component, horizon)."""

    __tablename__ = "maintenance_prediction"
    __table_args__ = (
        UniqueConstraint("vin", "component", "horizon_days", name="uq_prediction_latest"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(sa_type=String(17), index=True)
    component: str = Field(sa_type=String(32))
    horizon_days: int = Field(sa_type=Integer)
    probability: float = Field(sa_type=Float)
    alerting: bool = Field(default=False, sa_type=Boolean)
    model_version: str = Field(sa_type=String(64))
    reasons: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    scored_at: datetime = Field(sa_type=UtcDateTime)
    """Event time of the newest sample the prediction used."""
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class DtcRead(BaseModel):
    code: str
    state: str
    episode: int
    first_seen: datetime
    last_seen: datetime
    confirmed_at: datetime | None
    occurrences: int
    description: str | None
    decoded: dict[str, Any]
    freeze_frame: dict[str, Any]


class AlarmRead(BaseModel):
    rule_id: str
    severity: str
    state: str
    late: bool
    raised_at: datetime
    cleared_at: datetime | None
    value: float | None
    message: str


class PredictionRead(BaseModel):
    component: str
    horizon_days: int
    probability: float
    alerting: bool
    model_version: str
    reasons: list[dict[str, Any]]
    scored_at: datetime


class VehicleHealth(BaseModel):
    """What is wrong with a vehicle now and what is likely to fail soon."""

    vin: str
    status: str
    """ok, attention (an open DTC or alarm, or an alerting prediction) or critical (an open
    critical alarm)."""
    open_dtcs: list[DtcRead]
    open_alarms: list[AlarmRead]
    recent_alarms: list[AlarmRead]
    """Alarms cleared in the last 7 days and late (historical) findings."""
    predictions: list[PredictionRead]
