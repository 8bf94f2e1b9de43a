"""HTTP routes of the audit log (admins only): the events, newest first, and a chain check."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from core import audit
from core.auth.deps import AUTH_ERROR_RESPONSES, AdminAuth
from core.deps import SessionDep

router = APIRouter(prefix="/v1/audit", tags=["audit"], responses=AUTH_ERROR_RESPONSES)


class AuditEventRead(BaseModel):
    seq: int
    at: datetime
    actor: str
    action: str
    subject: str
    details: dict[str, Any]
    prev_hash: str
    hash: str


class ChainRead(BaseModel):
    ok: bool
    events: int
    first_bad_seq: int | None
    reason: str | None


@router.get("")
def list_audit_events(
    session: SessionDep,
    _admin: AdminAuth,
    action: Annotated[str | None, Query(max_length=64)] = None,
    subject: Annotated[str | None, Query(max_length=200)] = None,
    before_seq: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[AuditEventRead]:
    """Events newest first; page with `before_seq` (the last `seq` of the previous page)."""
    events = audit.list_events(
        session, action=action, subject=subject, limit=limit, before_seq=before_seq
    )
    return [AuditEventRead.model_validate(e, from_attributes=True) for e in events]


@router.get("/verify")
def verify_audit_chain(session: SessionDep, _admin: AdminAuth) -> ChainRead:
    """Recompute the hash chain from the first event."""
    check = audit.verify_chain(session)
    return ChainRead(
        ok=check.ok, events=check.events, first_bad_seq=check.first_bad_seq, reason=check.reason
    )
