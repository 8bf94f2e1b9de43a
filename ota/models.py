"""Tables of over-the-air updates: software images, signed metadata files, campaigns and their
vehicles, per-ECU install records, vehicle manifests, reports, the software-identification
register (RXSWIN) and update records (UN R156)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    Uuid,
)
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow


class CampaignState(StrEnum):
    draft = "draft"
    approved = "approved"
    running = "running"
    paused = "paused"
    completed = "completed"
    aborted = "aborted"


class SoftwareImage(SQLModel, table=True):
    """One software image for one or more ECU hardware variants; the bytes live in the object
    store under ``storage_key`` (content-addressed by sha256)."""

    __tablename__ = "software_image"
    __table_args__ = (UniqueConstraint("name", "version", name="uq_software_image_version"),)

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    name: str = Field(sa_type=String(100), index=True)
    """What it is, e.g. ``bms-firmware``; with ``version`` unique."""
    version: str = Field(sa_type=String(64))
    release_counter: int = Field(sa_type=Integer)
    """Uptane's anti-rollback counter: a vehicle never installs a lower one."""
    hardware_ids: list[str] = Field(default_factory=list, sa_type=JSON)
    dependencies: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    """Other ECUs' versions this image needs: ``{"hardware_id", "min_version"}``."""
    sha256: str = Field(sa_type=String(64), index=True)
    length: int = Field(sa_type=BigInteger)
    storage_key: str = Field(sa_type=String(200))
    filename: str = Field(sa_type=String(200))
    """Target file name in the Image repository (per hardware id: ``<hw>/<filename>``)."""
    uploaded_by: str = Field(default="", sa_type=String(100))
    targets_version: int | None = Field(default=None, sa_type=Integer)
    """The Image repository's targets version that first listed it; None until published
    (with an offline targets key: after ``fleet ota targets publish``)."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class TufFile(SQLModel, table=True):
    """A signed metadata file of the Image repository or the Director (the store every API
    replica serves from)."""

    __tablename__ = "tuf_file"

    path: str = Field(sa_type=String(200), primary_key=True)
    data: bytes = Field(sa_type=LargeBinary)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Campaign(SQLModel, table=True):
    __tablename__ = "ota_campaign"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    name: str = Field(sa_type=String(200))
    image_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[ForeignKey("software_image.id", name="fk_ota_campaign_image_id")],
    )
    state: str = Field(sa_type=String(24), index=True)
    target_filter: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    waves: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    gate: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    salt: str = Field(sa_type=String(64))
    current_wave: int = Field(default=0, sa_type=Integer)
    update_kind: str = Field(default="soft", sa_type=String(8))
    """``soft`` needs the driver's consent; ``forced`` does not."""
    deadline: datetime | None = Field(default=None, sa_type=UtcDateTime)
    maintenance_windows: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    preconditions: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    """Carried in the signed Director metadata, checked by the vehicle (``min_soc_pct``,
    ``parked``)."""
    requires_approval: bool = Field(default=False, sa_type=Boolean)
    created_by: str = Field(default="", sa_type=String(100))
    approved_by: str | None = Field(default=None, sa_type=String(100))
    pause_reason: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    launched_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class CampaignVehicle(SQLModel, table=True):
    __tablename__ = "ota_campaign_vehicle"
    __table_args__ = (Index("ix_ota_campaign_vehicle_wave", "campaign_id", "wave"),)

    campaign_id: uuid.UUID = Field(
        sa_type=Uuid,
        primary_key=True,
        sa_column_args=[
            ForeignKey("ota_campaign.id", ondelete="CASCADE", name="fk_ota_cv_campaign_id")
        ],
    )
    vin: str = Field(sa_type=String(17), primary_key=True, index=True)
    wave: int = Field(sa_type=Integer)
    late: bool = Field(default=False, sa_type=Boolean)
    """Became eligible after the launch and joined the running campaign."""
    released: bool = Field(default=False, sa_type=Boolean)
    """Its wave has started: the Director lists the image for it."""


class InstallRecord(SQLModel, table=True):
    """Per vehicle and ECU: the install's state machine (``ota.records``)."""

    __tablename__ = "ota_install_record"
    __table_args__ = (
        UniqueConstraint("campaign_id", "vin", "ecu_id", name="uq_ota_install_record"),
        Index("ix_ota_install_record_state", "campaign_id", "state"),
    )

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    campaign_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[
            ForeignKey("ota_campaign.id", ondelete="CASCADE", name="fk_ota_ir_campaign_id")
        ],
    )
    vin: str = Field(sa_type=String(17), index=True)
    ecu_id: str = Field(sa_type=String(64))
    hardware_id: str = Field(sa_type=String(64))
    wave: int = Field(sa_type=Integer)
    attempt: int = Field(default=1, sa_type=Integer)
    state: str = Field(sa_type=String(16))
    last_seq: int = Field(default=-1, sa_type=BigInteger)
    error_code: str | None = Field(default=None, sa_type=String(64))
    error_detail: str | None = Field(default=None, sa_type=String(500))
    from_version: str | None = Field(default=None, sa_type=String(64))
    to_version: str = Field(sa_type=String(64))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class VehicleReport(SQLModel, table=True):
    """Every install report as received (HTTP or ``ota.reports.v1``); (vin, report_id) makes a
    redelivered report a no-op."""

    __tablename__ = "ota_report"
    __table_args__ = (UniqueConstraint("vin", "report_id", name="uq_ota_report"),)

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(sa_type=String(17), index=True)
    report_id: str = Field(sa_type=String(64))
    campaign_id: uuid.UUID | None = Field(default=None, sa_type=Uuid)
    body: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class VehicleManifest(SQLModel, table=True):
    """The latest version manifest a vehicle sent on check-in (per-ECU installed images)."""

    __tablename__ = "ota_vehicle_manifest"

    vin: str = Field(sa_type=String(17), primary_key=True)
    ecus: list[dict[str, Any]] = Field(default_factory=list, sa_type=JSON)
    received_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class Rxswin(SQLModel, table=True):
    """Software-identification register (UN R156 RXSWIN): per vehicle, the identifier of its
    type-approval-relevant software set, updated when an update changes it."""

    __tablename__ = "ota_rxswin"

    vin: str = Field(sa_type=String(17), primary_key=True)
    rxswin: str = Field(sa_type=String(128))
    software: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    """ECU id -> software version the identifier covers."""
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class UpdateRecord(SQLModel, table=True):
    """One completed update of a vehicle: its configuration before and after (UN R156)."""

    __tablename__ = "ota_update_record"

    id: int | None = Field(default=None, primary_key=True, sa_type=Integer)
    vin: str = Field(sa_type=String(17), index=True)
    campaign_id: uuid.UUID = Field(sa_type=Uuid)
    before: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    after: dict[str, str] = Field(default_factory=dict, sa_type=JSON)
    rxswin_before: str | None = Field(default=None, sa_type=String(128))
    rxswin_after: str | None = Field(default=None, sa_type=String(128))
    completed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
