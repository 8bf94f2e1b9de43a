"""Consents: an owner (or an operator for them) lets a named insurer or partner read one
purpose (``ubi`` or ``battery``) of one vehicle until a date.

A consent is active while it is neither revoked nor expired; partner reads check that on every
request, so a revocation or an expiry takes effect with the next request, no cache in between.
Granting again while a consent for the same (vehicle, grantee, purpose) is active moves its
expiry instead of adding a second row; grants of one vehicle are serialized on its registry row
so two concurrent grants cannot create two. Every grant and revocation is audited
(``consent.granted``, ``consent.revoked``). Nothing here commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlmodel import Session, col, select

from core import audit
from core.auth.models import Principal, Role
from core.auth.repository import get_principal, get_principal_by_name
from core.db import utcnow, write_lock
from core.errors import NotFound, ValidationFailed
from core.vehicles import repository as vehicles
from ubi.models import Consent, Purpose

GRANTEE_ROLES = frozenset({Role.insurer, Role.partner})
MAX_YEARS = 5


@dataclass(frozen=True)
class ConsentView:
    """A consent with its grantee's name (what the API and CLI show)."""

    consent: Consent
    grantee_name: str

    def is_active(self, now: datetime) -> bool:
        return _active(self.consent, now)


def grant(
    session: Session,
    vin: str,
    grantee_name_or_id: str | uuid.UUID,
    purpose: Purpose | str,
    expires_at: datetime,
    granted_by: str,
    *,
    now: datetime | None = None,
) -> Consent:
    """Let the grantee read ``purpose`` of ``vin`` until ``expires_at``.

    422 when the grantee is unknown, disabled or not an insurer or partner, the purpose is
    unknown, or ``expires_at`` is naive, not in the future or more than 5 years ahead; 404 for
    an unregistered VIN."""
    now = now or utcnow()
    purpose = _purpose(purpose)
    _check_expiry(expires_at, now)
    grantee = _grantee(session, grantee_name_or_id)
    write_lock(session)
    if vehicles.get_vehicle(session, vin, for_update=True) is None:
        raise NotFound(f"no vehicle with VIN {vin}")
    consent = _active_consent(session, vin, grantee.id, purpose, now)
    extended = consent is not None
    if consent is None:
        consent = Consent(
            vin=vin,
            grantee_id=grantee.id,
            purpose=purpose,
            granted_at=now,
            expires_at=expires_at,
            granted_by=granted_by,
        )
    else:
        consent.expires_at = expires_at
        consent.granted_by = granted_by
    session.add(consent)
    session.flush()
    audit.record(
        session,
        actor=granted_by,
        action="consent.granted",
        subject=f"vehicle:{vin}",
        details={
            "consent_id": str(consent.id),
            "grantee": grantee.name,
            "grantee_id": str(grantee.id),
            "purpose": purpose.value,
            "expires_at": expires_at.astimezone(UTC).isoformat(),
            "extended": extended,
        },
        at=now,
    )
    return consent


def revoke(
    session: Session,
    consent_id: uuid.UUID,
    vin: str,
    revoked_by: str,
    *,
    now: datetime | None = None,
) -> Consent:
    """Revoke a consent of ``vin`` at once (404 if it is not one of that vehicle's). Revoking
    again keeps the first revocation and records nothing new."""
    write_lock(session)
    consent = session.exec(
        select(Consent)
        .where(Consent.id == consent_id, Consent.vin == vin)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if consent is None:
        raise NotFound(f"vehicle {vin} has no consent {consent_id}")
    if consent.revoked_at is not None:
        return consent
    now = now or utcnow()
    consent.revoked_at, consent.revoked_by = now, revoked_by
    session.add(consent)
    session.flush()
    grantee = get_principal(session, consent.grantee_id)
    audit.record(
        session,
        actor=revoked_by,
        action="consent.revoked",
        subject=f"vehicle:{vin}",
        details={
            "consent_id": str(consent.id),
            "grantee": grantee.name if grantee is not None else None,
            "grantee_id": str(consent.grantee_id),
            "purpose": str(consent.purpose),
        },
        at=now,
    )
    return consent


def list_consents(session: Session, vin: str) -> list[ConsentView]:
    """Every consent of ``vin``, active or not, newest first."""
    query = (
        select(Consent, Principal.name)
        .join(Principal, col(Principal.id) == col(Consent.grantee_id))
        .where(Consent.vin == vin)
        .order_by(col(Consent.granted_at).desc(), col(Consent.id))
    )
    return [ConsentView(consent, name) for consent, name in session.exec(query)]


def get_consent(session: Session, consent_id: uuid.UUID, vin: str) -> ConsentView:
    query = (
        select(Consent, Principal.name)
        .join(Principal, col(Principal.id) == col(Consent.grantee_id))
        .where(Consent.id == consent_id, Consent.vin == vin)
    )
    row = session.exec(query).first()
    if row is None:
        raise NotFound(f"vehicle {vin} has no consent {consent_id}")
    return ConsentView(row[0], row[1])


def active_subjects(
    session: Session, grantee_id: uuid.UUID, purpose: Purpose | str, now: datetime
) -> list[str]:
    """VINs the grantee may read for ``purpose`` right now, sorted."""
    return sorted(active_expiries(session, grantee_id, purpose, now))


def active_expiries(
    session: Session,
    grantee_id: uuid.UUID,
    purpose: Purpose | str,
    now: datetime,
    vins: list[str] | None = None,
) -> dict[str, datetime]:
    """VIN -> latest expiry of the grantee's active consents for ``purpose`` (optionally only
    among ``vins``)."""
    query = select(Consent.vin, Consent.expires_at).where(
        Consent.grantee_id == grantee_id,
        Consent.purpose == _purpose(purpose).value,
        col(Consent.revoked_at).is_(None),
        col(Consent.expires_at) > now,
    )
    if vins is not None:
        query = query.where(col(Consent.vin).in_(vins))
    expiries: dict[str, datetime] = {}
    for vin, expires_at in session.exec(query):
        if vin not in expiries or expires_at > expiries[vin]:
            expiries[vin] = expires_at
    return expiries


def is_active(
    session: Session, grantee_id: uuid.UUID, vin: str, purpose: Purpose | str, now: datetime
) -> bool:
    return bool(active_expiries(session, grantee_id, purpose, now, [vin]))


def _active(consent: Consent, now: datetime) -> bool:
    return consent.revoked_at is None and consent.expires_at > now


def _active_consent(
    session: Session, vin: str, grantee_id: uuid.UUID, purpose: Purpose, now: datetime
) -> Consent | None:
    query = (
        select(Consent)
        .where(
            Consent.vin == vin,
            Consent.grantee_id == grantee_id,
            Consent.purpose == purpose.value,
            col(Consent.revoked_at).is_(None),
            col(Consent.expires_at) > now,
        )
        .order_by(col(Consent.expires_at).desc())
        .execution_options(populate_existing=True)
    )
    return session.exec(query).first()


def _grantee(session: Session, name_or_id: str | uuid.UUID) -> Principal:
    principal = _find_principal(session, name_or_id)
    problem = None
    if principal is None:
        problem = f"no principal named {name_or_id!s:.100}"
    elif principal.role not in GRANTEE_ROLES:
        problem = (
            f"grantee {principal.name!r} has role {principal.role}; consent can only be given to "
            "an insurer or a partner"
        )
    elif principal.disabled:
        problem = f"grantee {principal.name!r} is disabled"
    if problem is not None or principal is None:
        raise ValidationFailed(_field_error("grantee", problem or "unknown grantee"))
    return principal


def _find_principal(session: Session, name_or_id: str | uuid.UUID) -> Principal | None:
    if isinstance(name_or_id, uuid.UUID):
        return get_principal(session, name_or_id)
    principal = get_principal_by_name(session, name_or_id)
    if principal is None:
        try:
            return get_principal(session, uuid.UUID(name_or_id))
        except ValueError:
            return None
    return principal


def _purpose(purpose: Purpose | str) -> Purpose:
    try:
        return Purpose(purpose)
    except ValueError:
        choices = ", ".join(p.value for p in Purpose)
        raise ValidationFailed(
            _field_error("purpose", f"unknown purpose {purpose!r}; one of {choices}")
        ) from None


def _check_expiry(expires_at: datetime, now: datetime) -> None:
    if expires_at.tzinfo is None:
        problem = "expires_at needs a time zone, e.g. 2030-01-01T00:00:00Z"
    elif expires_at <= now:
        problem = "expires_at must be in the future"
    elif expires_at > _years_later(now, MAX_YEARS):
        problem = f"expires_at may be at most {MAX_YEARS} years ahead"
    else:
        return
    raise ValidationFailed(_field_error("expires_at", problem))


def _years_later(moment: datetime, years: int) -> datetime:
    try:
        return moment.replace(year=moment.year + years)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year + years, day=28)


def _field_error(field: str, message: str) -> list[dict[str, object]]:
    return [{"loc": ["body", field], "msg": message, "type": "value_error"}]
