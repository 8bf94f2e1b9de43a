"""Rules for principals and credentials. Nothing here commits; callers own the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from core.auth import repository
from core.auth.cache import CredentialCache
from core.auth.models import (
    ApiCredential,
    AuthenticatedPrincipal,
    CredentialIssue,
    CredentialRead,
    Principal,
    PrincipalCreate,
    PrincipalRead,
    Role,
)
from core.auth.tokens import (
    format_token,
    hash_secret,
    new_key_id,
    new_secret,
    parse_token,
    secret_matches,
)
from core.db import utcnow
from core.errors import Conflict, NotFound, ValidationFailed

LAST_USED_RESOLUTION = timedelta(minutes=1)


def issue_credential(
    session: Session,
    principal: Principal,
    *,
    expires_at: datetime | None = None,
    description: str = "",
) -> tuple[ApiCredential, str]:
    """Create a credential for ``principal``; the plaintext token is returned only here."""
    _refuse_past_expiry(expires_at)
    key_id, secret = new_key_id(), new_secret()
    credential = ApiCredential(
        principal_id=principal.id,
        key_id=key_id,
        secret_hash=hash_secret(secret),
        expires_at=expires_at,
        description=description,
    )
    repository.add_credential(session, credential)
    return credential, format_token(key_id, secret)


def verify_token(
    session: Session, token: str, *, now: datetime | None = None
) -> AuthenticatedPrincipal | None:
    """The principal behind ``token``, or None if it is malformed, unknown, revoked, expired or
    belongs to a disabled principal. Records ``last_used_at`` (coarsely) on success."""
    verified = _verify(session, token, now or utcnow())
    return None if verified is None else verified[0]


def authenticate(
    session: Session, token: str, cache: CredentialCache | None = None
) -> AuthenticatedPrincipal | None:
    """``verify_token`` behind the TTL cache (see ``core.auth.cache`` for the staleness bound)."""
    if cache is not None and (cached := cache.get(token)) is not None:
        return cached
    verified = _verify(session, token, utcnow())
    if verified is None:
        return None
    principal, expires_at = verified
    if cache is not None:
        cache.put(token, principal, expires_at=expires_at)
    return principal


def create_principal_with_credential(
    session: Session,
    name: str,
    role: Role | str,
    vin: str | None = None,
    org_ref: str | None = None,
    expires_at: datetime | None = None,
    description: str = "",
) -> tuple[Principal, str]:
    """Validate, create a principal and its first credential; returns the plaintext token.

    Raises ``ValidationFailed`` (bad field) or ``Conflict`` (name or VIN already taken)."""
    try:
        data = PrincipalCreate(
            name=name,
            role=role,  # type: ignore[arg-type]
            vin=vin,
            org_ref=org_ref,
            expires_at=expires_at,
            description=description,
        )
    except ValidationError as exc:
        raise ValidationFailed(validation_detail(exc)) from exc
    principal, _credential, token = register_principal(session, data)
    return principal, token


def register_principal(
    session: Session, data: PrincipalCreate
) -> tuple[Principal, ApiCredential, str]:
    _refuse_past_expiry(data.expires_at)
    _refuse_taken_identity(session, data)
    principal = Principal(name=data.name, role=data.role, vin=data.vin, org_ref=data.org_ref)
    try:
        repository.add_principal(session, principal)
    except IntegrityError as exc:  # a concurrent request won the race for the name or VIN
        raise Conflict(f"principal {data.name!r} or its VIN already exists") from exc
    credential, token = issue_credential(
        session, principal, expires_at=data.expires_at, description=data.description
    )
    return principal, credential, token


def issue_additional_credential(
    session: Session, principal_id: uuid.UUID, data: CredentialIssue
) -> tuple[Principal, ApiCredential, str]:
    principal = repository.get_principal(session, principal_id)
    if principal is None:
        raise NotFound(f"no principal with id {principal_id}")
    credential, token = issue_credential(
        session, principal, expires_at=data.expires_at, description=data.description
    )
    return principal, credential, token


def revoke_credential(
    session: Session, key_id: str, *, now: datetime | None = None
) -> ApiCredential:
    """Revoke by public key id. Revoking twice keeps the first revocation time."""
    credential = repository.get_credential_by_key_id(session, key_id)
    if credential is None:
        raise NotFound(f"no credential with key id {key_id!r}")
    if credential.revoked_at is None:
        credential.revoked_at = now or utcnow()
        session.add(credential)
        session.flush()
    return credential


def set_principal_disabled(session: Session, principal_id: uuid.UUID, disabled: bool) -> Principal:
    principal = repository.get_principal(session, principal_id)
    if principal is None:
        raise NotFound(f"no principal with id {principal_id}")
    principal.disabled = disabled
    session.add(principal)
    session.flush()
    return principal


def list_principals(
    session: Session, *, role: Role | None = None, limit: int = 100, offset: int = 0
) -> list[PrincipalRead]:
    principals = repository.list_principals(session, role=role, limit=limit, offset=offset)
    credentials = repository.credentials_by_principal(session, [p.id for p in principals])
    return [principal_read(p, credentials.get(p.id, [])) for p in principals]


def principal_read(principal: Principal, credentials: list[ApiCredential]) -> PrincipalRead:
    return PrincipalRead(
        id=principal.id,
        name=principal.name,
        role=Role(principal.role),
        vin=principal.vin,
        org_ref=principal.org_ref,
        created_at=principal.created_at,
        disabled=principal.disabled,
        credentials=[credential_read(c) for c in credentials],
    )


def credential_read(credential: ApiCredential) -> CredentialRead:
    return CredentialRead.model_validate(credential, from_attributes=True)


def validation_detail(exc: ValidationError) -> list[dict[str, object]]:
    """Pydantic errors in the shape the HTTP error handler uses: field location and message."""
    return [
        {"loc": list(err["loc"]), "msg": err["msg"], "type": err["type"]} for err in exc.errors()
    ]


def _verify(
    session: Session, token: str, now: datetime
) -> tuple[AuthenticatedPrincipal, datetime | None] | None:
    """The principal and the credential's expiry, or None when the token must be refused."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    found = repository.find_credential_with_principal(session, parsed.key_id)
    if found is None:
        return None
    credential, principal = found
    if not secret_matches(parsed.secret, credential.secret_hash):
        return None
    if not credential_usable(credential, principal, now):
        return None
    repository.record_use(session, credential.id, now, LAST_USED_RESOLUTION)
    return authenticated_principal(principal, credential), credential.expires_at


def credential_usable(credential: ApiCredential, principal: Principal, now: datetime) -> bool:
    if credential.revoked_at is not None or principal.disabled:
        return False
    return credential.expires_at is None or credential.expires_at > now


def authenticated_principal(
    principal: Principal, credential: ApiCredential
) -> AuthenticatedPrincipal:
    return AuthenticatedPrincipal(
        principal_id=principal.id,
        name=principal.name,
        role=Role(principal.role),
        vin=principal.vin,
        org_ref=principal.org_ref,
        credential_id=credential.id,
    )


def _refuse_past_expiry(expires_at: datetime | None) -> None:
    if expires_at is None:
        return
    if expires_at.tzinfo is None:
        raise ValidationFailed(
            [{"loc": ["expires_at"], "msg": "expires_at needs a time zone", "type": "value_error"}]
        )
    if expires_at <= utcnow():
        raise ValidationFailed(
            [{"loc": ["expires_at"], "msg": "expires_at is in the past", "type": "value_error"}]
        )


def _refuse_taken_identity(session: Session, data: PrincipalCreate) -> None:
    if repository.get_principal_by_name(session, data.name) is not None:
        raise Conflict(f"a principal named {data.name!r} already exists")
    if data.vin is not None and repository.get_principal_by_vin(session, data.vin) is not None:
        raise Conflict(f"a principal for VIN {data.vin} already exists")
