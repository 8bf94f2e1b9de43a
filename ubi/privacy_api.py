"""HTTP routes of the privacy side: vehicle owners, consents, erasure requests, and the
signed partner API.

* Owners (role ``owner``, linked to the vehicle), admins and fleet operators grant, list and
  revoke consents; admins and fleet operators link owners; owners and admins request erasure.
* Insurers and partners read scores of vehicles with an active consent *to them* for the
  purpose, under pseudonyms. A pseudonym that is unknown, another grantee's, from a retired key,
  or not (any more) consented is one and the same 404, so existence does not leak.
* Every partner response body (errors too) is serialised once and signed:
  ``X-Fleet-Signature`` is a compact JWS with a detached payload over exactly those bytes,
  verifiable offline with the JWK set at ``GET /v1/partner/keys`` (``ubi.signing``).
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Path, Query, Response, status
from pydantic import BaseModel

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal, require_roles
from core.auth.models import AuthenticatedPrincipal, Role
from core.config import Settings
from core.db import utcnow
from core.deps import SessionDep, SettingsDep
from core.errors import NotFound, error_body
from core.vin import VinStr
from ubi import access, consent, partner, signing
from ubi.models import ErasureRequest
from ubi.privacy_schemas import (
    BatteryScoreItem,
    BatteryScorePage,
    ConsentIn,
    ConsentRead,
    ErasureRead,
    JwkSet,
    OwnerLinkIn,
    OwnerRead,
    UbiScoreItem,
    UbiScorePage,
)

router = APIRouter(prefix="/v1", responses=AUTH_ERROR_RESPONSES)

Operator = Annotated[
    AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.fleet_operator))
]
Grantee = Annotated[AuthenticatedPrincipal, Depends(require_roles(Role.insurer, Role.partner))]
AdminOrOwner = Annotated[AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.owner))]
ConsentId = Annotated[uuid.UUID, Path(description="Consent id")]
Pseudonym = Annotated[str, Path(max_length=40, description="The subject's pseudonym (`p_...`)")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Not found (`not_found`)"}}
INVALID: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such vehicle (`not_found`)"},
    422: {"description": "Unknown grantee or principal, wrong role, bad expiry"},
}
SIGNED: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Signed body",
        "headers": {
            signing.HEADER: {
                "description": "Compact JWS (EdDSA) with detached payload over the body bytes",
                "schema": {"type": "string"},
            }
        },
    },
}
SIGNED_ITEM: dict[int | str, dict[str, Any]] = {
    **SIGNED,
    404: {"description": "Unknown subject, or no active consent for it (`not_found`)"},
}


# --- owners and consents -----------------------------------------------------------------------


@router.post(
    "/vehicles/{vin}/owners",
    status_code=status.HTTP_201_CREATED,
    responses=INVALID,
    tags=["consent"],
)
def link_owner(
    vin: VinStr, body: OwnerLinkIn, session: SessionDep, operator: Operator
) -> OwnerRead:
    """Link an `owner` principal to a vehicle: it may then grant consents and request erasure
    for it. Linking again changes nothing."""
    link = access.link_owner(session, vin, body.principal, actor=operator.name)
    return OwnerRead(
        vin=link.vin,
        principal=body.principal,
        principal_id=link.principal_id,
        created_at=link.created_at,
    )


@router.post(
    "/vehicles/{vin}/consents",
    status_code=status.HTTP_201_CREATED,
    responses=INVALID,
    tags=["consent"],
)
def grant_consent(
    vin: VinStr, body: ConsentIn, session: SessionDep, principal: CurrentPrincipal
) -> ConsentRead:
    """Let an insurer or partner read one purpose of this vehicle until `expires_at`.
    Granting again while the consent is active moves its expiry (same id)."""
    access.authorize_vehicle(session, principal, vin)
    granted = consent.grant(
        session, vin, body.grantee, body.purpose, body.expires_at, granted_by=principal.name
    )
    return _consent_read(consent.get_consent(session, granted.id, vin))


@router.get("/vehicles/{vin}/consents", responses=NOT_FOUND, tags=["consent"])
def list_consents(
    vin: VinStr, session: SessionDep, principal: CurrentPrincipal
) -> list[ConsentRead]:
    """Every consent of the vehicle, active, expired and revoked, newest first."""
    access.authorize_vehicle(session, principal, vin)
    return [_consent_read(view) for view in consent.list_consents(session, vin)]


@router.delete("/vehicles/{vin}/consents/{consent_id}", responses=NOT_FOUND, tags=["consent"])
def revoke_consent(
    vin: VinStr, consent_id: ConsentId, session: SessionDep, principal: CurrentPrincipal
) -> ConsentRead:
    """Revoke at once: the grantee's next request no longer sees the vehicle. Revoking again
    returns the record unchanged."""
    access.authorize_vehicle(session, principal, vin)
    consent.revoke(session, consent_id, vin, revoked_by=principal.name)
    return _consent_read(consent.get_consent(session, consent_id, vin))


# --- erasure -------------------------------------------------------------------------------------


@router.post(
    "/vehicles/{vin}/erasure",
    status_code=status.HTTP_202_ACCEPTED,
    responses=NOT_FOUND,
    tags=["consent"],
)
def request_erasure(
    vin: VinStr, session: SessionDep, settings: SettingsDep, principal: CurrentPrincipal
) -> ErasureRead:
    """Ask for the vehicle's personal data to be erased; it is carried out by `due_at`."""
    from ubi.erasure import request_erasure as request

    access.authorize_vehicle(session, principal, vin, operator_roles=frozenset({Role.admin}))
    created = request(session, vin, requested_by=principal.name, settings=settings)
    return ErasureRead.model_validate(created, from_attributes=True)


@router.get("/erasure-requests/{request_id}", responses=NOT_FOUND, tags=["consent"])
def read_erasure_request(
    request_id: uuid.UUID, session: SessionDep, principal: AdminOrOwner
) -> ErasureRead:
    """An erasure request's state: admins see any, an owner the ones it made."""
    found = session.get(ErasureRequest, request_id)
    if found is None or (principal.role is Role.owner and found.requested_by != principal.name):
        raise NotFound(f"no erasure request with id {request_id}")
    return ErasureRead.model_validate(found, from_attributes=True)


# --- partner API -------------------------------------------------------------------------------


@router.get(
    "/partner/keys",
    tags=["partner"],
    response_model=JwkSet,
)
def partner_keys(settings: SettingsDep) -> Response:
    """The public keys (JWK set) that verify `X-Fleet-Signature`; no credential needed."""
    body = orjson.dumps(signing.jwks(settings))
    return Response(
        body, media_type="application/jwk-set+json", headers={"Cache-Control": "max-age=300"}
    )


@router.get("/partner/ubi/scores", tags=["partner"], response_model=UbiScorePage, responses=SIGNED)
def partner_ubi_scores(
    session: SessionDep,
    settings: SettingsDep,
    principal: Grantee,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    """UBI scores of the vehicles whose owners consented to *you* for `ubi`, by pseudonym."""
    now = utcnow()
    page = partner.ubi_scores(
        session,
        principal,
        period_days=settings.ubi_period_days,
        limit=limit,
        offset=offset,
        now=now,
    )
    body = UbiScorePage(
        generated_at=now, total=page.total, limit=limit, offset=offset, items=page.items
    )
    return _signed(settings, body)


@router.get(
    "/partner/ubi/scores/{pseudonym}",
    tags=["partner"],
    response_model=UbiScoreItem,
    responses=SIGNED_ITEM,
)
def partner_ubi_score(
    pseudonym: Pseudonym, session: SessionDep, settings: SettingsDep, principal: Grantee
) -> Response:
    item = partner.ubi_score(session, principal, pseudonym, period_days=settings.ubi_period_days)
    return _signed(settings, item)


@router.get(
    "/partner/battery/scores",
    tags=["partner"],
    response_model=BatteryScorePage,
    responses=SIGNED,
)
def partner_battery_scores(
    session: SessionDep,
    settings: SettingsDep,
    principal: Grantee,
    limit: Limit = 100,
    offset: Offset = 0,
) -> Response:
    """Battery health and residual value of the vehicles consented to *you* for `battery`."""
    now = utcnow()
    page = partner.battery_scores(session, principal, limit=limit, offset=offset, now=now)
    body = BatteryScorePage(
        generated_at=now, total=page.total, limit=limit, offset=offset, items=page.items
    )
    return _signed(settings, body)


@router.get(
    "/partner/battery/scores/{pseudonym}",
    tags=["partner"],
    response_model=BatteryScoreItem,
    responses=SIGNED_ITEM,
)
def partner_battery_score(
    pseudonym: Pseudonym, session: SessionDep, settings: SettingsDep, principal: Grantee
) -> Response:
    item = partner.battery_score(session, principal, pseudonym)
    return _signed(settings, item)


# --- helpers -------------------------------------------------------------------------------------


def _signed(settings: Settings, model: BaseModel | None) -> Response:
    """Serialise once, sign those bytes. ``None`` is the subject-level 404, returned (not
    raised) so that the audit event of the refused read is committed with the request; it does
    not echo the path, which could be anything the caller typed."""
    if model is None:
        content: Any = error_body("not_found", "no such subject, or no active consent for it")
        status_code = status.HTTP_404_NOT_FOUND
    else:
        content, status_code = model.model_dump(mode="json"), status.HTTP_200_OK
    body = orjson.dumps(content)
    return Response(
        body,
        status_code=status_code,
        media_type="application/json",
        headers={signing.HEADER: signing.sign(settings, body), "Cache-Control": "no-store"},
    )


def _consent_read(view: consent.ConsentView) -> ConsentRead:
    c = view.consent
    return ConsentRead(
        id=c.id,
        vin=c.vin,
        grantee=view.grantee_name,
        grantee_id=c.grantee_id,
        purpose=c.purpose,
        granted_at=c.granted_at,
        expires_at=c.expires_at,
        granted_by=c.granted_by,
        revoked_at=c.revoked_at,
        revoked_by=c.revoked_by,
        active=view.is_active(utcnow()),
    )
