"""The vehicle registry: vehicles, their ECU inventory, and the API schemas that validate them."""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, datetime
from enum import StrEnum
from functools import lru_cache
from typing import Annotated
from zoneinfo import available_timezones

from pydantic import AfterValidator, BaseModel, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import JSON, Float, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow
from core.vin import VinStr

MIN_MODEL_YEAR = 1980
# JSONB on PostgreSQL so tag filters can use containment (and a GIN index if fleets grow).
TAGS_TYPE = JSON().with_variant(JSONB(), "postgresql")


class Powertrain(StrEnum):
    bev = "bev"
    ice = "ice"
    phev = "phev"
    hev = "hev"


class Vehicle(SQLModel, table=True):
    __tablename__ = "vehicle"

    vin: str = Field(sa_type=String(17), primary_key=True)
    model: str = Field(sa_type=String(64), index=True)
    model_year: int = Field(sa_type=Integer, index=True)
    region: str = Field(sa_type=String(16), index=True)
    time_zone: str = Field(sa_type=String(64))
    powertrain: Powertrain = Field(sa_type=String(8))
    tags: list[str] = Field(default_factory=list, sa_type=TAGS_TYPE)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Ecu(SQLModel, table=True):
    """One electronic control unit of a vehicle and the software it runs."""

    __tablename__ = "ecu"
    __table_args__ = (UniqueConstraint("vin", "ecu_id", name="uq_ecu_vin_ecu_id"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(
        sa_type=String(17),
        sa_column_args=[ForeignKey("vehicle.vin", ondelete="CASCADE", name="fk_ecu_vin_vehicle")],
    )
    ecu_id: str = Field(sa_type=String(64))
    hardware_id: str = Field(sa_type=String(64))
    software_version: str = Field(sa_type=String(64))


class VehicleStatus(SQLModel, table=True):
    """The last known position and odometer of a vehicle (written by the diagnostics worker at
    its checkpoints), for whoever needs "where is it now" without reading telemetry."""

    __tablename__ = "vehicle_status"

    vin: str = Field(sa_type=String(17), primary_key=True)
    position_ts: datetime | None = Field(default=None, sa_type=UtcDateTime)
    latitude: float | None = Field(default=None, sa_type=Float)
    longitude: float | None = Field(default=None, sa_type=Float)
    odometer_ts: datetime | None = Field(default=None, sa_type=UtcDateTime)
    odometer_m: float | None = Field(default=None, sa_type=Float)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


# --- validation --------------------------------------------------------------------------------

_REGION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,15}$")


@lru_cache(maxsize=1)
def _iana_zones() -> frozenset[str]:
    # "localtime" is the host's zone, not an IANA name.
    return frozenset(available_timezones() - {"localtime"})


def _check_time_zone(name: str) -> str:
    if name not in _iana_zones():
        raise ValueError(f"{name!r} is not an IANA time zone name (e.g. Europe/Berlin)")
    return name


def _check_region(code: str) -> str:
    if not _REGION_RE.match(code):
        raise ValueError("a region is a short code: 1-16 letters, digits, '-' or '_' (e.g. EU)")
    return code


def _check_model_year(year: int) -> int:
    latest = date.today().year + 2
    if not MIN_MODEL_YEAR <= year <= latest:
        raise ValueError(f"model_year must be between {MIN_MODEL_YEAR} and {latest}")
    return year


TimeZoneName = Annotated[
    str, PydanticField(examples=["Europe/Berlin"]), AfterValidator(_check_time_zone)
]
RegionCode = Annotated[str, PydanticField(examples=["EU"]), AfterValidator(_check_region)]
ModelYear = Annotated[int, PydanticField(examples=[2024]), AfterValidator(_check_model_year)]
ShortText = Annotated[str, PydanticField(min_length=1, max_length=64, pattern=r"^\S(.*\S)?$")]


class EcuIn(BaseModel):
    ecu_id: ShortText = PydanticField(examples=["BMS"])
    hardware_id: ShortText = PydanticField(examples=["BMS-HW-3"])
    software_version: ShortText = PydanticField(examples=["4.2.0"])


def _check_unique_ecu_ids(ecus: list[EcuIn]) -> list[EcuIn]:
    counts = Counter(ecu.ecu_id for ecu in ecus)
    duplicates = sorted(ecu_id for ecu_id, count in counts.items() if count > 1)
    if duplicates:
        raise ValueError(f"ecu_id must be unique per vehicle; repeated: {', '.join(duplicates)}")
    return ecus


EcuList = Annotated[
    list[EcuIn], PydanticField(max_length=256), AfterValidator(_check_unique_ecu_ids)
]


class VehicleIn(BaseModel):
    """A vehicle as registered by an operator; the ECU list replaces the stored inventory."""

    vin: VinStr
    model: ShortText
    model_year: ModelYear
    region: RegionCode
    time_zone: TimeZoneName
    powertrain: Powertrain
    tags: list[ShortText] = PydanticField(default_factory=list, max_length=32)
    ecus: EcuList = PydanticField(default_factory=list)

    @field_validator("tags")
    @classmethod
    def _dedupe_tags(cls, tags: list[str]) -> list[str]:
        return list(dict.fromkeys(tags))


class EcuInventory(BaseModel):
    """The complete ECU inventory of one vehicle (``PUT`` replaces what is stored)."""

    ecus: EcuList


class EcuRead(BaseModel):
    ecu_id: str
    hardware_id: str
    software_version: str


class VehicleRead(BaseModel):
    vin: str
    model: str
    model_year: int
    region: str
    time_zone: str
    powertrain: Powertrain
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    ecus: list[EcuRead]


class VehicleFilter(BaseModel):
    """List filters; every given field must match."""

    model: str | None = None
    model_year: int | None = None
    region: str | None = None
    tag: str | None = None


class BulkUpsertResult(BaseModel):
    created: int
    updated: int
