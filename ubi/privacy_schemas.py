"""API schemas of consents, owners, erasure requests and the partner API.

The partner item models are the allowlist of what leaves the platform: :mod:`ubi.partner`
builds them field by field from the stored rows, and nothing else is serialised. They contain
no VIN, position, trace or odometer by construction; ``tests/ubi/test_partner_contract.py``
checks the actual responses.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ubi.models import ErasureState, Purpose


# --- owner side --------------------------------------------------------------------------------
class OwnerLinkIn(BaseModel):
    principal: str = Field(min_length=1, max_length=100, description="Name of an owner principal.")


class OwnerRead(BaseModel):
    vin: str
    principal: str
    principal_id: uuid.UUID
    created_at: datetime


class ConsentIn(BaseModel):
    grantee: str = Field(
        min_length=1, max_length=100, description="Name (or id) of an insurer or partner principal."
    )
    purpose: Purpose
    expires_at: datetime = Field(
        description="Timezone-aware end of the consent; in the future, at most 5 years ahead."
    )

    @model_validator(mode="after")
    def _expiry_is_aware(self) -> ConsentIn:
        if self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone, e.g. 2030-01-01T00:00:00Z")
        return self


class ConsentRead(BaseModel):
    id: uuid.UUID
    vin: str
    grantee: str
    grantee_id: uuid.UUID
    purpose: Purpose
    granted_at: datetime
    expires_at: datetime
    granted_by: str
    revoked_at: datetime | None
    revoked_by: str | None
    active: bool = Field(description="Neither revoked nor expired now.")


class ErasureRead(BaseModel):
    id: uuid.UUID
    vin: str
    requested_at: datetime
    requested_by: str
    due_at: datetime
    state: ErasureState
    completed_at: datetime | None


# --- partner side ------------------------------------------------------------------------------
Number = float | None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SubScores(_Strict):
    """0-100, higher is safer; null without distance."""

    braking: Number = None
    acceleration: Number = None
    cornering: Number = None
    speeding: Number = None
    night: Number = None


class EventCounts(_Strict):
    """Harsh events per type."""

    harsh_braking: int | None = None
    harsh_acceleration: int | None = None
    harsh_cornering: int | None = None


class EventRates(_Strict):
    """Severity-weighted harsh events per 100 km, per type; null without distance."""

    harsh_braking: Number = None
    harsh_acceleration: Number = None
    harsh_cornering: Number = None


class Exposure(_Strict):
    distance_km: Number = None
    hours: Number = None
    trips: int | None = None
    speeding_share: Number = None
    """Share of moving time above the speed limit."""
    night_share: Number = None
    """Share of trip time between 23:00 and 05:00 local time."""


class Reason(_Strict):
    code: str
    points_lost: Number = None
    text: str


class UbiScoreItem(_Strict):
    subject: str = Field(description="Pseudonym of the vehicle for this grantee (`p_...`).")
    purpose: Purpose = Purpose.ubi
    consent_expires_at: datetime
    period_days: int
    period_start: datetime
    period_end: datetime
    score: float
    score_low: float
    score_high: float
    data_sufficient: bool
    score_version: str
    computed_at: datetime
    confidence: Number = None
    credibility: Number = None
    sub_scores: SubScores
    exposure: Exposure
    event_counts: EventCounts
    weighted_event_counts: EventCounts
    """Severity-weighted (1/2/3) counts."""
    rates_per_100km: EventRates
    reasons: list[Reason]
    insufficient_reasons: list[str]
    disputed_trips: int | None = None


class ResidualValue(_Strict):
    score_version: str | None = None
    state_of_health_pct: Number = None
    state_of_health_low_pct: Number = None
    state_of_health_high_pct: Number = None
    state_of_health_capacity_pct: Number = None
    rated_capacity_kwh: Number = None
    remaining_capacity_kwh: Number = None
    remaining_capacity_ah: Number = None
    capacity_fade_pct: Number = None
    fade_pct_per_year: Number = None
    date_soh_80: datetime | None = None
    date_soh_70: datetime | None = None
    expected_soh_pct: Number = None
    warranty_headroom_pts: Number = None
    warranty_years_left: Number = None
    second_life_grade: str | None = None
    residual_value_adjustment_pct: Number = None
    energy_throughput_kwh: Number = None
    equivalent_full_cycles: Number = None
    dc_fast_charge_share: Number = None
    high_soc_share: Number = None
    hours_extreme_temperature: Number = None
    deep_discharge_events: int | None = None
    sessions_used: int | None = None
    quality_flags: list[str] = []


class BatteryScoreItem(_Strict):
    subject: str = Field(description="Pseudonym of the vehicle for this grantee (`p_...`).")
    purpose: Purpose = Purpose.battery
    consent_expires_at: datetime
    soh_pct: Number
    soh_low_pct: Number
    soh_high_pct: Number
    score_version: str
    computed_at: datetime
    residual: ResidualValue


class _Page(_Strict):
    generated_at: datetime
    total: int = Field(description="Subjects with an active consent and a score.")
    limit: int
    offset: int


class UbiScorePage(_Page):
    purpose: Purpose = Purpose.ubi
    items: list[UbiScoreItem]


class BatteryScorePage(_Page):
    purpose: Purpose = Purpose.battery
    items: list[BatteryScoreItem]


class JwkRead(BaseModel):
    kty: str
    crv: str
    x: str
    kid: str
    alg: str
    use: str


class JwkSet(BaseModel):
    keys: Annotated[list[JwkRead], Field(min_length=1)]
