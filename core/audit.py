"""The audit log: an append-only, hash-chained record of security-relevant actions (campaign
launches, approvals and pauses, key changes, consent changes, partner data access).

Each event's ``hash`` is sha256 over the previous event's hash and this event's canonical JSON
(sequence number, time, actor, action, subject, details), so removing, reordering or editing
any event breaks every hash after it; :func:`verify_chain` finds the first broken link.
Appends serialize on the single ``audit_head`` row (locked ``FOR UPDATE`` on PostgreSQL; SQLite
has one writer), so the chain stays linear under concurrent writers. Nothing here commits:
an event is part of the transaction of the action it records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import JSON, BigInteger, Integer, String
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Field, Session, SQLModel, col, select

from core.db import UtcDateTime, utcnow, write_lock

GENESIS = "0" * 64


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"

    seq: int = Field(
        sa_type=BigInteger, primary_key=True, sa_column_kwargs={"autoincrement": False}
    )
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    actor: str = Field(sa_type=String(100))
    action: str = Field(sa_type=String(64), index=True)
    subject: str = Field(sa_type=String(200), index=True)
    details: dict[str, Any] = Field(default_factory=dict, sa_type=JSON)
    prev_hash: str = Field(sa_type=String(64))
    hash: str = Field(sa_type=String(64))


class AuditHead(SQLModel, table=True):
    """One row (id 1): the newest event's sequence number and hash."""

    __tablename__ = "audit_head"

    id: int = Field(default=1, primary_key=True, sa_type=Integer)
    seq: int = Field(default=0, sa_type=BigInteger)
    hash: str = Field(default=GENESIS, sa_type=String(64))


def event_hash(
    prev_hash: str,
    seq: int,
    at: datetime,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any],
) -> str:
    body = orjson.dumps(
        {
            "seq": seq,
            "at": at.isoformat(),
            "actor": actor,
            "action": action,
            "subject": subject,
            "details": details,
        },
        option=orjson.OPT_SORT_KEYS,
    )
    return hashlib.sha256(prev_hash.encode() + b"\n" + body).hexdigest()


def record(
    session: Session,
    *,
    actor: str,
    action: str,
    subject: str,
    details: dict[str, Any] | None = None,
    at: datetime | None = None,
) -> AuditEvent:
    """Append an event in the caller's transaction."""
    at = at or utcnow()
    write_lock(session)
    details = orjson.loads(orjson.dumps(details or {}))  # exactly what is hashed and stored
    session.execute(_insert_head(session))  # the first append of all creates the head
    head = session.exec(
        select(AuditHead)
        .where(AuditHead.id == 1)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).one()
    seq = head.seq + 1
    digest = event_hash(head.hash, seq, at, actor, action, subject, details)
    event = AuditEvent(
        seq=seq,
        at=at,
        actor=actor,
        action=action,
        subject=subject,
        details=details,
        prev_hash=head.hash,
        hash=digest,
    )
    head.seq, head.hash = seq, digest
    session.add(event)
    session.add(head)
    session.flush()
    return event


def _insert_head(session: Session) -> Any:
    table = AuditHead.__table__  # type: ignore[attr-defined]
    insert = (postgresql if session.get_bind().dialect.name == "postgresql" else sqlite).insert
    return (
        insert(table)
        .values(id=1, seq=0, hash=GENESIS)
        .on_conflict_do_nothing(index_elements=["id"])
    )


@dataclass(frozen=True)
class ChainCheck:
    ok: bool
    events: int
    first_bad_seq: int | None = None
    reason: str | None = None


def verify_chain(session: Session, *, batch: int = 5000) -> ChainCheck:
    """Recompute every hash from the first event; the first mismatch is reported."""
    prev, expected_seq, count = GENESIS, 1, 0
    last = 0
    while True:
        rows = session.exec(
            select(AuditEvent)
            .where(col(AuditEvent.seq) > last)
            .order_by(col(AuditEvent.seq))
            .limit(batch)
        ).all()
        if not rows:
            break
        for event in rows:
            if event.seq != expected_seq:
                return ChainCheck(False, count, expected_seq, "missing event")
            if event.prev_hash != prev:
                return ChainCheck(False, count, event.seq, "broken link to the previous event")
            digest = event_hash(
                prev, event.seq, event.at, event.actor, event.action, event.subject, event.details
            )
            if digest != event.hash:
                return ChainCheck(False, count, event.seq, "event was modified")
            prev, expected_seq, count = event.hash, expected_seq + 1, count + 1
        last = rows[-1].seq
    head = session.get(AuditHead, 1)
    if head is not None and (head.seq, head.hash) != (count, prev):
        return ChainCheck(False, count, count + 1, "events after the last one are missing")
    return ChainCheck(True, count)


def list_events(
    session: Session,
    *,
    action: str | None = None,
    subject: str | None = None,
    limit: int = 100,
    before_seq: int | None = None,
) -> list[AuditEvent]:
    query = select(AuditEvent).order_by(col(AuditEvent.seq).desc()).limit(limit)
    if action is not None:
        query = query.where(AuditEvent.action == action)
    if subject is not None:
        query = query.where(AuditEvent.subject == subject)
    if before_seq is not None:
        query = query.where(col(AuditEvent.seq) < before_seq)
    return list(session.exec(query))
