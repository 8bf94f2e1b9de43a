"""Principals, their API credentials, and the identity a request handler sees."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, model_validator
from pydantic import Field as PydanticField
from sqlalchemy import Boolean, ForeignKey, String, Uuid
from sqlmodel import Field, SQLModel

from core.db import UtcDateTime, utcnow
from core.vin import VinStr


class Role(StrEnum):
    admin = "admin"
    fleet_operator = "fleet_operator"
    service_center = "service_center"
    insurer = "insurer"
    partner = "partner"
    owner = "owner"
    """A driver or private owner: grants consents and disputes trips for the vehicles linked
    to it (``vehicle_owner``)."""
    vehicle = "vehicle"


# Roles are stored as plain strings, not a native PostgreSQL ENUM: adding a role later is then a
# code change, not a schema migration, and SQLite behaves the same.
ROLE_TYPE = String(32)


class Principal(SQLModel, table=True):
    """Someone or something that calls the API: a person, an organisation's system, a vehicle."""

    __tablename__ = "principal"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    name: str = Field(sa_type=String(100), unique=True, index=True)
    role: Role = Field(sa_type=ROLE_TYPE, index=True)
    # A vehicle principal is bound to one VIN (one identity per vehicle). No foreign key to
    # `vehicle`: a car may receive its credential at the factory before it is registered.
    vin: str | None = Field(
        default=None, sa_type=String(17), unique=True, index=True, nullable=True
    )
    org_ref: str | None = Field(default=None, sa_type=String(100), nullable=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    disabled: bool = Field(default=False, sa_type=Boolean)


class ApiCredential(SQLModel, table=True):
    """A bearer token ``flt_<key_id>_<secret>``; only a hash of the secret is stored."""

    __tablename__ = "api_credential"

    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True, sa_type=Uuid)
    principal_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[
            ForeignKey("principal.id", ondelete="CASCADE", name="fk_api_credential_principal_id")
        ],
        index=True,
    )
    key_id: str = Field(sa_type=String(32), unique=True, index=True)
    # sha256 hex of the secret. A slow password hash (bcrypt, argon2) protects low-entropy human
    # passwords against guessing; our secrets are 256-bit random values that cannot be guessed,
    # so a fast hash loses nothing, and verification stays cheap on every ingest request.
    secret_hash: str = Field(sa_type=String(64))
    description: str = Field(default="", sa_type=String(200))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)
    last_used_at: datetime | None = Field(default=None, sa_type=UtcDateTime, nullable=True)


@dataclass(frozen=True, slots=True)
class AuthenticatedPrincipal:
    """Who is calling: what request handlers receive after the bearer token is verified."""

    principal_id: uuid.UUID
    name: str
    role: Role
    vin: str | None
    org_ref: str | None
    credential_id: uuid.UUID


@dataclass(frozen=True, slots=True)
class VehiclePrincipal(AuthenticatedPrincipal):
    """An authenticated vehicle; its VIN is always set."""

    vin: str

    @classmethod
    def from_principal(cls, principal: AuthenticatedPrincipal) -> VehiclePrincipal:
        if principal.role is not Role.vehicle or principal.vin is None:
            raise ValueError("not a vehicle principal")
        return cls(**{f.name: getattr(principal, f.name) for f in fields(principal)})


# --- API schemas -------------------------------------------------------------------------------


class CredentialIssue(BaseModel):
    """Options for a new credential."""

    expires_at: datetime | None = PydanticField(
        default=None, description="Timezone-aware expiry; none means the credential never expires."
    )
    description: str = PydanticField(default="", max_length=200)

    @model_validator(mode="after")
    def _expiry_is_aware(self) -> CredentialIssue:
        if self.expires_at is not None and self.expires_at.tzinfo is None:
            raise ValueError("expires_at needs a time zone, e.g. 2030-01-01T00:00:00Z")
        return self


class PrincipalCreate(CredentialIssue):
    """A new principal together with its first credential."""

    name: str = PydanticField(min_length=1, max_length=100, pattern=r"^\S(.*\S)?$")
    role: Role
    vin: VinStr | None = PydanticField(default=None, description="Required for role vehicle.")
    org_ref: str | None = PydanticField(default=None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _vin_matches_role(self) -> PrincipalCreate:
        if self.role is Role.vehicle and self.vin is None:
            raise ValueError("vin is required for a vehicle principal")
        if self.role is not Role.vehicle and self.vin is not None:
            raise ValueError(f"vin is only allowed for vehicle principals, not {self.role.value}")
        return self


class CredentialRead(BaseModel):
    key_id: str
    description: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None


class PrincipalRead(BaseModel):
    id: uuid.UUID
    name: str
    role: Role
    vin: str | None
    org_ref: str | None
    created_at: datetime
    disabled: bool
    credentials: list[CredentialRead] = []


class IssuedCredential(BaseModel):
    """Returned once when a credential is created: the token is not stored and not shown again."""

    principal: PrincipalRead
    credential: CredentialRead
    token: str = PydanticField(description="Bearer token; store it now, it cannot be retrieved.")


class Me(BaseModel):
    principal_id: uuid.UUID
    name: str
    role: Role
    vin: str | None
    org_ref: str | None

    @classmethod
    def of(cls, principal: AuthenticatedPrincipal) -> Me:
        return cls(
            principal_id=principal.principal_id,
            name=principal.name,
            role=principal.role,
            vin=principal.vin,
            org_ref=principal.org_ref,
        )
