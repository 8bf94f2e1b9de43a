"""All SQL for principals and credentials."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from core.auth.models import ApiCredential, Principal, Role


def add_principal(session: Session, principal: Principal) -> Principal:
    session.add(principal)
    session.flush()
    return principal


def get_principal(session: Session, principal_id: uuid.UUID) -> Principal | None:
    return session.get(Principal, principal_id)


def get_principal_by_name(session: Session, name: str) -> Principal | None:
    return session.exec(select(Principal).where(Principal.name == name)).first()


def get_principal_by_vin(session: Session, vin: str) -> Principal | None:
    return session.exec(select(Principal).where(Principal.vin == vin)).first()


def list_principals(
    session: Session, *, role: Role | None = None, limit: int = 100, offset: int = 0
) -> list[Principal]:
    """Newest first, so a principal just created is on the first page."""
    query = select(Principal).order_by(col(Principal.created_at).desc(), col(Principal.id))
    if role is not None:
        query = query.where(Principal.role == role)
    return list(session.exec(query.limit(limit).offset(offset)))


def credentials_by_principal(
    session: Session, principal_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[ApiCredential]]:
    """Credentials of many principals in one query, oldest first."""
    grouped: dict[uuid.UUID, list[ApiCredential]] = defaultdict(list)
    if not principal_ids:
        return grouped
    query = (
        select(ApiCredential)
        .where(col(ApiCredential.principal_id).in_(principal_ids))
        .order_by(col(ApiCredential.created_at))
    )
    for credential in session.exec(query):
        grouped[credential.principal_id].append(credential)
    return grouped


def add_credential(session: Session, credential: ApiCredential) -> ApiCredential:
    session.add(credential)
    session.flush()
    return credential


def get_credential_by_key_id(session: Session, key_id: str) -> ApiCredential | None:
    return session.exec(select(ApiCredential).where(ApiCredential.key_id == key_id)).first()


def find_credential_with_principal(
    session: Session, key_id: str
) -> tuple[ApiCredential, Principal] | None:
    return _credential_with_principal(session, col(ApiCredential.key_id) == key_id)


def find_credential_by_id_with_principal(
    session: Session, credential_id: uuid.UUID
) -> tuple[ApiCredential, Principal] | None:
    return _credential_with_principal(session, col(ApiCredential.id) == credential_id)


def _credential_with_principal(
    session: Session, condition: Any
) -> tuple[ApiCredential, Principal] | None:
    query = (
        select(ApiCredential, Principal)
        .join(Principal, col(Principal.id) == col(ApiCredential.principal_id))
        .where(condition)
    )
    row = session.exec(query).first()
    return None if row is None else (row[0], row[1])


def record_use(
    session: Session, credential_id: uuid.UUID, now: datetime, resolution: timedelta
) -> None:
    """Set ``last_used_at``, at most once per ``resolution``: an audit hint, not a hot write."""
    last_used = col(ApiCredential.last_used_at)
    session.execute(
        update(ApiCredential)
        .where(col(ApiCredential.id) == credential_id)
        .where(or_(last_used.is_(None), last_used < now - resolution))
        .values(last_used_at=now)
    )
