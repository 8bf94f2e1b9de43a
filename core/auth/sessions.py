"""Browser sessions for the web console: a login with an API credential becomes a session
cookie, and state-changing requests made with that cookie must carry a CSRF token.

- ``POST /v1/session`` takes an operator's API credential (``{"token": "flt_..."}``), checks it
  exactly like a bearer token and stores a server-side session: only ``sha256(session id)``
  is kept, with the credential it came from. The id goes to the browser in an ``HttpOnly``,
  ``SameSite=Strict`` cookie (``Secure`` with ``FLEET_CONSOLE_COOKIE_SECURE``).
- Every request with that cookie and no ``Authorization`` header is authenticated as the
  credential's principal, so the console passes the same role checks as the CLI. Revoking the
  credential, disabling the principal, logging out, ``FLEET_CONSOLE_SESSION_HOURS`` after the
  login or ``FLEET_CONSOLE_IDLE_MINUTES`` without a request end the session.
- The CSRF token is ``HMAC(session id, label)``: the server recomputes it from the cookie, and
  the page learns it only from the login (or ``GET /v1/session``) response body, which another
  site cannot read. ``POST``/``PUT``/``PATCH``/``DELETE`` with the cookie need it in
  ``X-CSRF-Token`` (synchronizer-token pattern); bearer-token calls need none, as browsers
  never attach those by themselves.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, Uuid, delete
from sqlmodel import Field, Session, SQLModel

from core.auth import repository
from core.auth.models import AuthenticatedPrincipal, Role
from core.auth.service import authenticated_principal, credential_usable
from core.db import UtcDateTime, utcnow

SESSION_COOKIE = "fleet_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CONSOLE_ROLES = frozenset({Role.admin, Role.fleet_operator, Role.service_center})
"""Who may log in to the console: people at the operator and at service centers. Vehicles,
owners, insurers and partners use their own APIs."""

_SESSION_BYTES = 32
_CSRF_LABEL = b"fleet-console-csrf-v1"
_LAST_SEEN_RESOLUTION = timedelta(minutes=1)


class ConsoleSession(SQLModel, table=True):
    __tablename__ = "console_session"

    id_hash: str = Field(sa_type=String(64), primary_key=True)
    credential_id: uuid.UUID = Field(
        sa_type=Uuid,
        sa_column_args=[
            ForeignKey(
                "api_credential.id", ondelete="CASCADE", name="fk_console_session_credential_id"
            )
        ],
        index=True,
    )
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    expires_at: datetime = Field(sa_type=UtcDateTime, index=True)
    last_seen_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


def new_session_id() -> str:
    return secrets.token_urlsafe(_SESSION_BYTES)


def session_hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    return hmac.new(session_id.encode(), _CSRF_LABEL, hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(csrf_token(session_id), presented)


def open_session(
    session: Session,
    principal: AuthenticatedPrincipal,
    *,
    lifetime: timedelta,
    now: datetime | None = None,
) -> tuple[str, ConsoleSession]:
    """Store a new session for ``principal`` (already authenticated); returns its id, which
    only the cookie carries. Also sweeps every expired session (an indexed delete)."""
    now = now or utcnow()
    session.execute(
        delete(ConsoleSession).where(ConsoleSession.expires_at <= now)  # type: ignore[arg-type]
    )
    session_id = new_session_id()
    row = ConsoleSession(
        id_hash=session_hash(session_id),
        credential_id=principal.credential_id,
        created_at=now,
        expires_at=now + lifetime,
        last_seen_at=now,
    )
    session.add(row)
    session.flush()
    return session_id, row


def resolve_session(
    session: Session,
    session_id: str,
    *,
    idle_timeout: timedelta,
    now: datetime | None = None,
) -> tuple[AuthenticatedPrincipal, ConsoleSession] | None:
    """The principal behind a session cookie, or None when the session is unknown, expired,
    idle too long, or its credential or principal may no longer be used."""
    now = now or utcnow()
    row = session.get(ConsoleSession, session_hash(session_id))
    if row is None or row.expires_at <= now or row.last_seen_at + idle_timeout <= now:
        return None
    found = repository.find_credential_by_id_with_principal(session, row.credential_id)
    if found is None:
        return None
    credential, principal = found
    if not credential_usable(credential, principal, now):
        return None
    if Role(principal.role) not in CONSOLE_ROLES:
        return None
    if now - row.last_seen_at >= _LAST_SEEN_RESOLUTION:
        row.last_seen_at = now
        session.add(row)
        session.flush()
    return authenticated_principal(principal, credential), row


def close_session(session: Session, session_id: str) -> bool:
    """Delete the session; False when there was none."""
    result = session.execute(
        delete(ConsoleSession).where(
            ConsoleSession.id_hash == session_hash(session_id)  # type: ignore[arg-type]
        )
    )
    return bool(getattr(result, "rowcount", 0))
