"""Pseudonyms: what insurers and partners see instead of VINs.

A pseudonym is ``p_`` + the first 26 characters (130 bits) of the lowercase base32 encoding of
``HMAC-SHA256(secret, f"{grantee_id}:{vin}")`` with the secret of the current key version
(``pseudonym_key``). The grantee is part of the message, so two partners receive unrelated
pseudonyms for the same vehicle and cannot join their data sets on them; without the secret
a pseudonym cannot be linked to a VIN by trying candidate VINs.

Every pseudonym handed out is stored in ``pseudonym`` (pseudonym -> VIN, grantee, key version)
so that a partner's request for one subject is a lookup, not a search over all vehicles.

**Rotation** (:func:`rotate_key`, ``fleet consent rotate-pseudonyms``) retires the current
version and creates the next one. From then on every grantee sees new pseudonyms, and the old
ones stop resolving at once: :func:`resolve` only accepts the current version, and the mappings
of retired versions are deleted in the same transaction. The retired secret is wiped too, so an
old pseudonym can no longer be recomputed from a VIN by anyone, us included. Partners must
therefore treat a rotation as "all subjects are new"; announce it to them before rotating.

Nothing here commits; callers own the transaction.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Table, delete, func
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session, col, select

from core import audit
from core.db import utcnow, write_lock
from ubi.models import Pseudonym, PseudonymKey

PREFIX = "p_"
LENGTH = 26
PATTERN = rf"^{PREFIX}[a-z2-7]{{{LENGTH}}}$"
_KEYS: Table = PseudonymKey.__table__  # type: ignore[attr-defined]
_MAPPINGS: Table = Pseudonym.__table__  # type: ignore[attr-defined]
_CHUNK = 500


def compute(secret: bytes, grantee_id: uuid.UUID, vin: str) -> str:
    """The pseudonym of ``vin`` for ``grantee_id`` under ``secret`` (pure function)."""
    digest = hmac.new(secret, f"{grantee_id}:{vin}".encode(), hashlib.sha256).digest()
    return PREFIX + base64.b32encode(digest).decode("ascii").lower()[:LENGTH]


def current_key(session: Session) -> PseudonymKey:
    """The key version in use, creating version 1 (or the one after the last retired) when
    there is none.

    Two first callers at once cannot create two keys: the insert is ``ON CONFLICT DO NOTHING``
    on the version (the primary key), the loser waits for the winner's commit and reads its
    row."""
    key = _current(session)
    if key is not None:
        return key
    write_lock(session)
    latest = session.exec(select(func.max(PseudonymKey.version))).one()
    session.execute(
        _insert(session, _KEYS)
        .values(version=(latest or 0) + 1, secret=secrets.token_bytes(32), created_at=utcnow())
        .on_conflict_do_nothing(index_elements=["version"])
    )
    key = _current(session)
    if key is None:  # only if a concurrent rotation retired it in between; its successor wins
        raise RuntimeError("no current pseudonym key after creating one")
    return key


def pseudonym_for(session: Session, grantee_id: uuid.UUID, vin: str) -> str:
    """The pseudonym of ``vin`` for ``grantee_id``; the mapping row is stored (idempotent)."""
    return pseudonyms_for(session, grantee_id, [vin])[vin]


def pseudonyms_for(session: Session, grantee_id: uuid.UUID, vins: Iterable[str]) -> dict[str, str]:
    """Pseudonyms of many VINs for one grantee (VIN -> pseudonym), stored in a few statements."""
    key = current_key(session)
    mapping = {vin: compute(key.secret, grantee_id, vin) for vin in dict.fromkeys(vins)}
    rows = [
        {
            "pseudonym": pseudonym,
            "vin": vin,
            "grantee_id": grantee_id,
            "key_version": key.version,
            "created_at": utcnow(),
        }
        for vin, pseudonym in mapping.items()
    ]
    for start in range(0, len(rows), _CHUNK):
        # No conflict target: the pseudonym (primary key) and (vin, grantee, version) are both
        # unique, and a row that exists under either is the same row.
        session.execute(
            _insert(session, _MAPPINGS)
            .values(rows[start : start + _CHUNK])
            .on_conflict_do_nothing()
        )
    return mapping


def resolve(session: Session, grantee_id: uuid.UUID, pseudonym: str) -> str | None:
    """The VIN behind ``pseudonym`` for this grantee under the current key; None otherwise
    (unknown, another grantee's, or from a retired key version)."""
    key = _current(session)
    if key is None:
        return None
    query = select(Pseudonym.vin).where(
        Pseudonym.pseudonym == pseudonym,
        Pseudonym.grantee_id == grantee_id,
        Pseudonym.key_version == key.version,
    )
    return session.exec(query).first()


def rotate_key(session: Session, *, actor: str = "system") -> int:
    """Retire the current key version and create the next; returns the new version.

    Old pseudonyms stop resolving at once (their mappings are deleted, the retired secret is
    wiped). A rotation that finds the current key already retired by a concurrent rotation
    returns that rotation's version instead of rotating twice. Audited as
    ``pseudonym.key_rotated``."""
    write_lock(session)
    current = current_key(session)
    locked = session.exec(
        select(PseudonymKey)
        .where(PseudonymKey.version == current.version)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    if locked.retired_at is not None:  # a concurrent rotation committed while we waited
        return current_key(session).version
    new_version = locked.version + 1
    locked.retired_at = utcnow()
    locked.secret = b""
    session.add(locked)
    session.add(PseudonymKey(version=new_version, secret=secrets.token_bytes(32)))
    session.flush()
    retired = delete(Pseudonym).where(col(Pseudonym.key_version) < new_version)
    removed = int(session.execute(retired).rowcount or 0)  # type: ignore[attr-defined]
    audit.record(
        session,
        actor=actor,
        action="pseudonym.key_rotated",
        subject="pseudonym-key",
        details={"retired_version": locked.version, "version": new_version, "removed": removed},
    )
    return new_version


def forget_vehicle(session: Session, vin: str) -> int:
    """Delete every pseudonym mapping of ``vin`` (erasure); returns how many were deleted."""
    result = session.execute(delete(Pseudonym).where(col(Pseudonym.vin) == vin))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _current(session: Session) -> PseudonymKey | None:
    query = (
        select(PseudonymKey)
        .where(col(PseudonymKey.retired_at).is_(None))
        .order_by(col(PseudonymKey.version).desc())
        .limit(1)
        .execution_options(populate_existing=True)
    )
    return session.exec(query).first()


def _insert(session: Session, table: Table) -> Any:
    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(table)
