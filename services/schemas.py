"""API schemas of proactive service (requests validate, responses document)."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Annotated, Any

from pydantic import AfterValidator, AnyHttpUrl, AwareDatetime, BaseModel, field_validator
from pydantic import Field as PydanticField

from core.vehicles.models import TimeZoneName
from core.vin import VinStr
from services.models import BookingState, Capability, DeliveryState, Urgency
from services.slots import OpeningHours


def _check_opening_hours(spec: dict[str, list[str]]) -> dict[str, list[str]]:
    return OpeningHours.parse(spec).to_spec()  # OpeningHoursError is a ValueError: a 422


OpeningHoursSpec = Annotated[
    dict[str, list[str]],
    PydanticField(
        examples=[{"mon": ["08:00-12:00", "13:00-17:00"], "sat": ["09:00-13:00"]}],
        description="Weekly opening hours in the center's local time; days left out are closed.",
    ),
    AfterValidator(_check_opening_hours),
]
CenterCode = Annotated[
    str, PydanticField(pattern=r"^[a-z0-9][a-z0-9._-]{1,63}$", examples=["berlin-mitte"])
]
WebhookUrl = Annotated[AnyHttpUrl, PydanticField(examples=["https://dms.example.com/hooks/fleet"])]
PartName = Annotated[
    str,
    PydanticField(
        pattern=r"^[a-z0-9_]+(\.[a-z0-9_]+)*$",
        max_length=64,
        examples=["engine.coolant_pump", "brake_pad.row1.left"],
    ),
]
DtcCode = Annotated[str, PydanticField(pattern=r"^[PCBU][0-3][0-9A-F]{3}(-[0-9A-F]{2})?$")]


def _unique(values: list[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


class ServiceCenterIn(BaseModel):
    code: CenterCode
    name: str = PydanticField(min_length=1, max_length=200)
    latitude: float = PydanticField(ge=-90, le=90)
    longitude: float = PydanticField(ge=-180, le=180)
    time_zone: TimeZoneName
    opening_hours: OpeningHoursSpec
    closed_dates: list[date] = PydanticField(default_factory=list, max_length=366)
    capabilities: list[Capability] = PydanticField(min_length=1)
    bays: int = PydanticField(ge=1, le=200, description="Bookings one slot can hold.")
    slot_minutes: int = PydanticField(default=60, ge=15, le=480)
    webhook_url: WebhookUrl | None = None

    _dedupe = field_validator("capabilities", "closed_dates")(_unique)


class ServiceCenterPatch(BaseModel):
    """Fields to change; the rest stay."""

    name: str | None = PydanticField(default=None, min_length=1, max_length=200)
    latitude: float | None = PydanticField(default=None, ge=-90, le=90)
    longitude: float | None = PydanticField(default=None, ge=-180, le=180)
    time_zone: TimeZoneName | None = None
    opening_hours: OpeningHoursSpec | None = None
    closed_dates: list[date] | None = PydanticField(default=None, max_length=366)
    capabilities: list[Capability] | None = PydanticField(default=None, min_length=1)
    bays: int | None = PydanticField(default=None, ge=1, le=200)
    slot_minutes: int | None = PydanticField(default=None, ge=15, le=480)
    webhook_url: WebhookUrl | None = None
    active: bool | None = None


class ServiceCenterRead(BaseModel):
    id: uuid.UUID
    code: str
    name: str
    latitude: float
    longitude: float
    time_zone: str
    opening_hours: dict[str, list[str]]
    closed_dates: list[str]
    capabilities: list[str]
    bays: int
    slot_minutes: int
    active: bool
    webhook_url: str | None
    previous_secret_valid_until: datetime | None
    created_at: datetime
    updated_at: datetime


class ServiceCenterCreated(BaseModel):
    center: ServiceCenterRead
    webhook_secret: str | None = PydanticField(
        description="Signing secret (`whsec_...`), shown once; null without a webhook URL."
    )


class WebhookSecretRotated(BaseModel):
    webhook_secret: str = PydanticField(description="The new secret, shown once.")
    previous_secret_valid_until: datetime | None = PydanticField(
        description="Deliveries carry a signature with the old secret too until then (null: "
        "there was no old secret, e.g. the webhook URL was added after registration)."
    )


class EvidenceRead(BaseModel):
    source: str
    observed_at: str
    text: str
    model_config = {"extra": "allow"}


class BookingRead(BaseModel):
    id: uuid.UUID
    vin: str
    issue_key: str
    issue: str
    """The issue in plain words."""
    kind: str
    capability: str
    state: BookingState
    urgency: Urgency
    due_by: datetime
    center_id: uuid.UUID | None
    center_code: str | None
    slot_start: datetime | None
    slot_end: datetime | None
    slot_local: str | None
    """The slot in the center's local time, e.g. ``2026-11-24 09:00 Europe/Berlin``."""
    bay: int | None
    distance_km: float | None
    after_due: bool
    summary: str
    evidence: list[dict[str, Any]]
    escalations: int
    previous_booking_id: uuid.UUID | None
    decline_reason: str | None
    outcome: dict[str, Any] | None
    version: int
    created_at: datetime
    updated_at: datetime
    completed_at: datetime | None


class BookingRequest(BaseModel):
    """An operator asks for a booking by hand (for example after a customer call)."""

    vin: VinStr
    issue_key: str = PydanticField(
        pattern=r"^[a-z0-9_]+(\.[A-Za-z0-9_]+)*$",
        max_length=64,
        examples=["brake_pads", "routine", "dtc.P0300"],
    )
    urgency: Urgency = Urgency.medium
    note: str = PydanticField(default="", max_length=500)


class DeclineIn(BaseModel):
    reason: str = PydanticField(min_length=1, max_length=500)


class RescheduleIn(BaseModel):
    slot_start: AwareDatetime = PydanticField(
        description="Start of one of the center's slots (see GET .../slots)."
    )


class CompleteIn(BaseModel):
    parts_replaced: list[PartName] = PydanticField(default_factory=list, max_length=50)
    codes_cleared: list[DtcCode] = PydanticField(default_factory=list, max_length=100)
    notes: str = PydanticField(default="", max_length=2000)
    odometer_km: float | None = PydanticField(default=None, ge=0, le=10_000_000)

    _dedupe = field_validator("parts_replaced", "codes_cleared")(_unique)


class SlotRead(BaseModel):
    slot_start: datetime
    slot_end: datetime
    local: str
    free_bays: int


class NotificationRead(BaseModel):
    id: uuid.UUID
    vin: str
    booking_id: uuid.UUID | None
    kind: str
    title: str
    body: str
    created_at: datetime


class WebhookAttemptRead(BaseModel):
    attempt: int
    url: str
    started_at: datetime
    duration_ms: float
    status_code: int | None
    error: str | None
    response_excerpt: str | None


class WebhookEventRead(BaseModel):
    id: uuid.UUID
    center_id: uuid.UUID
    booking_id: uuid.UUID | None
    type: str
    delivery_state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class WebhookEventDetail(WebhookEventRead):
    payload: dict[str, Any]
    attempt_log: list[WebhookAttemptRead]
