"""Authentication and authorization dependencies: ``CurrentPrincipal``, ``require_roles``,
``VehicleAuth``.

Verification runs in its own short transaction (not the request's ``SessionDep``): it commits
the ``last_used_at`` hint at once and holds no row lock while the handler works, and a cache
hit touches no database at all.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.engine import Engine

from core.auth.cache import CredentialCache
from core.auth.models import AuthenticatedPrincipal, Role, VehiclePrincipal
from core.auth.service import authenticate
from core.auth.sessions import (
    CSRF_HEADER,
    SAFE_METHODS,
    SESSION_COOKIE,
    csrf_matches,
    resolve_session,
)
from core.db import session_scope
from core.errors import Forbidden, Unauthorized

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="API credential issued by an admin: `Authorization: Bearer flt_<key_id>_<secret>`",
)
_cache_lock = threading.Lock()

# For routers' OpenAPI: every authenticated route may answer these ({"error", "detail"} bodies).
AUTH_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"description": "Missing, invalid, expired or revoked credential (`unauthorized`)"},
    403: {"description": "The credential's role may not do this (`forbidden`)"},
}


def get_credential_cache(request: Request) -> CredentialCache:
    """The app's credential cache, created on first use with ``credential_cache_ttl_s``."""
    state = request.app.state
    cache: CredentialCache | None = getattr(state, "credential_cache", None)
    if cache is None:
        with _cache_lock:
            cache = getattr(state, "credential_cache", None)
            if cache is None:
                cache = CredentialCache(state.settings.credential_cache_ttl_s)
                state.credential_cache = cache
    return cache


async def get_current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> AuthenticatedPrincipal:
    """The caller, from ``Authorization: Bearer`` or else the web console's session cookie
    (which needs ``X-CSRF-Token`` on state-changing methods; see ``core.auth.sessions``)."""
    if not request.headers.get("authorization") and (
        session_id := request.cookies.get(SESSION_COOKIE)
    ):
        return await _session_principal(request, session_id)
    token = _bearer_token(request, credentials)
    cache = get_credential_cache(request)
    principal = cache.get(token)
    if principal is None:
        engine: Engine = request.app.state.engine
        principal = await run_in_threadpool(_authenticate_in_own_session, engine, token, cache)
    if principal is None:
        raise Unauthorized("invalid, expired or revoked API credential")
    return principal


CurrentPrincipal = Annotated[AuthenticatedPrincipal, Depends(get_current_principal)]


def require_roles(*roles: Role) -> Callable[..., Awaitable[AuthenticatedPrincipal]]:
    """A dependency that admits only principals holding one of ``roles`` (403 otherwise)."""
    if not roles:
        raise ValueError("require_roles needs at least one role")
    allowed = frozenset(roles)
    names = " or ".join(role.value for role in roles)

    async def _require(principal: CurrentPrincipal) -> AuthenticatedPrincipal:
        if principal.role not in allowed:
            raise Forbidden(f"requires role {names}; this credential has role {principal.role}")
        return principal

    return _require


async def get_vehicle_principal(principal: CurrentPrincipal) -> VehiclePrincipal:
    if principal.role is not Role.vehicle or principal.vin is None:
        raise Forbidden(f"requires role vehicle; this credential has role {principal.role}")
    return VehiclePrincipal.from_principal(principal)


VehicleAuth = Annotated[VehiclePrincipal, Depends(get_vehicle_principal)]
AdminAuth = Annotated[AuthenticatedPrincipal, Depends(require_roles(Role.admin))]


def _bearer_token(request: Request, credentials: HTTPAuthorizationCredentials | None) -> str:
    if credentials is not None and credentials.credentials:
        return credentials.credentials
    if request.headers.get("authorization"):
        raise Unauthorized("the Authorization header must be `Bearer <token>`")
    raise Unauthorized("missing credential: send `Authorization: Bearer <token>`")


async def _session_principal(request: Request, session_id: str) -> AuthenticatedPrincipal:
    settings = request.app.state.settings
    engine: Engine = request.app.state.engine
    idle = timedelta(minutes=settings.console_idle_minutes)

    def resolve() -> AuthenticatedPrincipal | None:
        with session_scope(engine) as session:
            found = resolve_session(session, session_id, idle_timeout=idle)
            return None if found is None else found[0]

    principal = await run_in_threadpool(resolve)
    if principal is None:
        raise Unauthorized(
            "the console session has ended (logged out, expired or revoked); log in again"
        )
    if request.method not in SAFE_METHODS and not csrf_matches(
        session_id, request.headers.get(CSRF_HEADER)
    ):
        raise Forbidden(
            f"a console request that changes something needs the {CSRF_HEADER} header "
            "from the login response"
        )
    return principal


def _authenticate_in_own_session(
    engine: Engine, token: str, cache: CredentialCache
) -> AuthenticatedPrincipal | None:
    with session_scope(engine) as session:
        return authenticate(session, token, cache)
