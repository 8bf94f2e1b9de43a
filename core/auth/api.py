"""HTTP routes for principals and credentials (admin) and ``/v1/me`` (anyone authenticated)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request, status

from core.auth import service
from core.auth.deps import (
    AUTH_ERROR_RESPONSES,
    AdminAuth,
    CurrentPrincipal,
    get_credential_cache,
)
from core.auth.models import (
    CredentialIssue,
    CredentialRead,
    IssuedCredential,
    Me,
    PrincipalCreate,
    PrincipalRead,
    Role,
)
from core.deps import SessionDep

router = APIRouter(prefix="/v1", tags=["auth"], responses=AUTH_ERROR_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "Unknown principal or credential (`not_found`)"}
}

KeyId = Annotated[str, Path(min_length=1, max_length=32, pattern=r"^[0-9a-f]+$")]


@router.post(
    "/principals",
    status_code=status.HTTP_201_CREATED,
    responses={409: {"description": "Name or VIN already taken (`conflict`)"}},
)
def create_principal(
    body: PrincipalCreate, session: SessionDep, _admin: AdminAuth
) -> IssuedCredential:
    """Create a principal and its first credential. The token is shown in this response only."""
    principal, credential, token = service.register_principal(session, body)
    return IssuedCredential(
        principal=service.principal_read(principal, [credential]),
        credential=service.credential_read(credential),
        token=token,
    )


@router.get("/principals")
def list_principals(
    session: SessionDep,
    _admin: AdminAuth,
    role: Role | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[PrincipalRead]:
    return service.list_principals(session, role=role, limit=limit, offset=offset)


@router.post(
    "/principals/{principal_id}/credentials",
    status_code=status.HTTP_201_CREATED,
    responses=NOT_FOUND,
)
def issue_credential(
    principal_id: uuid.UUID, body: CredentialIssue, session: SessionDep, _admin: AdminAuth
) -> IssuedCredential:
    """Issue another credential (rotation: issue the new one, deploy it, revoke the old)."""
    principal, credential, token = service.issue_additional_credential(session, principal_id, body)
    return IssuedCredential(
        principal=service.principal_read(principal, []),
        credential=service.credential_read(credential),
        token=token,
    )


@router.delete("/credentials/{key_id}", responses=NOT_FOUND)
def revoke_credential(
    key_id: KeyId, request: Request, session: SessionDep, _admin: AdminAuth
) -> CredentialRead:
    """Revoke a credential. Immediate in this process; other API processes stop accepting it
    within ``credential_cache_ttl_s``."""
    credential = service.revoke_credential(session, key_id)
    get_credential_cache(request).invalidate_credential(credential.id)
    return service.credential_read(credential)


@router.get("/me")
def read_me(principal: CurrentPrincipal) -> Me:
    return Me.of(principal)
