"""``/v1/session``: log in to the web console with an API credential, read the session, log
out. See ``core.auth.sessions`` for the cookie and CSRF rules."""

from __future__ import annotations

from datetime import datetime, timedelta

from fastapi import APIRouter, Request, Response, status
from pydantic import BaseModel, Field

from core import audit
from core.auth import service
from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal
from core.auth.models import AuthenticatedPrincipal, Me
from core.auth.sessions import (
    CONSOLE_ROLES,
    CSRF_HEADER,
    SESSION_COOKIE,
    close_session,
    csrf_token,
    open_session,
    resolve_session,
)
from core.deps import SessionDep, SettingsDep
from core.errors import Forbidden, Unauthorized

router = APIRouter(prefix="/v1", tags=["console"], responses=AUTH_ERROR_RESPONSES)


class Login(BaseModel):
    token: str = Field(
        min_length=1,
        max_length=200,
        description="An API credential of role admin, fleet_operator or service_center.",
    )


class SessionRead(BaseModel):
    principal: Me
    csrf_token: str = Field(
        description=f"Send it as `{CSRF_HEADER}` on every POST, PUT, PATCH and DELETE."
    )
    expires_at: datetime


@router.post("/session", status_code=status.HTTP_201_CREATED)
def log_in(
    body: Login, response: Response, session: SessionDep, settings: SettingsDep
) -> SessionRead:
    """Exchange an operator credential for a console session (``HttpOnly`` cookie)."""
    principal = service.verify_token(session, body.token.strip())
    if principal is None:
        raise Unauthorized("invalid, expired or revoked API credential")
    if principal.role not in CONSOLE_ROLES:
        allowed = ", ".join(sorted(role.value for role in CONSOLE_ROLES))
        raise Forbidden(f"the console is for roles {allowed}; this credential has {principal.role}")
    lifetime = timedelta(hours=settings.console_session_hours)
    session_id, row = open_session(session, principal, lifetime=lifetime)
    audit.record(
        session,
        actor=principal.name,
        action="console.login",
        subject=f"principal:{principal.principal_id}",
        details={"role": principal.role.value},
    )
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        max_age=int(lifetime.total_seconds()),
        path="/",
        secure=settings.console_cookie_secure,
        httponly=True,
        samesite="strict",
    )
    response.headers["Cache-Control"] = "no-store"
    return _session_read(principal, session_id, row.expires_at)


@router.get("/session")
def read_session(
    request: Request, response: Response, session: SessionDep, settings: SettingsDep
) -> SessionRead:
    """The current console session and its CSRF token (after a page reload)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    found = None
    if session_id:
        idle = timedelta(minutes=settings.console_idle_minutes)
        found = resolve_session(session, session_id, idle_timeout=idle)
    if session_id is None or found is None:
        raise Unauthorized("not logged in to the console")
    principal, row = found
    response.headers["Cache-Control"] = "no-store"
    return _session_read(principal, session_id, row.expires_at)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def log_out(
    request: Request, response: Response, principal: CurrentPrincipal, session: SessionDep
) -> None:
    """End the console session (needs the CSRF token, like every other change)."""
    session_id = request.cookies.get(SESSION_COOKIE)
    if session_id is None:
        raise Unauthorized("log out ends a console session; this request carries none")
    close_session(session, session_id)
    audit.record(
        session,
        actor=principal.name,
        action="console.logout",
        subject=f"principal:{principal.principal_id}",
    )
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")


def _session_read(
    principal: AuthenticatedPrincipal, session_id: str, expires_at: datetime
) -> SessionRead:
    return SessionRead(
        principal=Me.of(principal),
        csrf_token=csrf_token(session_id),
        expires_at=expires_at,
    )
