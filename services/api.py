"""HTTP routes of proactive service.

* Fleet operators and admins register service centers, see every booking, request or cancel
  one, and inspect and replay webhook deliveries.
* A service center (role ``service_center``, its principal's ``org_ref`` = the center's code)
  sees only its own bookings and accepts, declines, reschedules and completes them. Another
  center's booking is a 404 to it, not a 403: it does not learn that the booking exists.
* Vehicles read their owner notifications; nothing else here.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, status

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal, require_roles
from core.auth.models import (
    AuthenticatedPrincipal,
    CredentialIssue,
    IssuedCredential,
    PrincipalCreate,
    Role,
)
from core.auth.repository import get_principal_by_name
from core.auth.service import (
    credential_read,
    issue_additional_credential,
    principal_read,
    register_principal,
)
from core.db import utcnow
from core.deps import SessionDep, SettingsDep
from core.errors import Forbidden, NotFound
from core.vehicles.service import ensure_can_read_vehicle
from core.vin import VinStr
from services import outbox, repository, service
from services.models import BookingState, DeliveryState
from services.schemas import (
    BookingRead,
    BookingRequest,
    CompleteIn,
    DeclineIn,
    NotificationRead,
    RescheduleIn,
    ServiceCenterCreated,
    ServiceCenterIn,
    ServiceCenterPatch,
    ServiceCenterRead,
    SlotRead,
    WebhookAttemptRead,
    WebhookEventDetail,
    WebhookEventRead,
    WebhookSecretRotated,
)

router = APIRouter(prefix="/v1", tags=["services"], responses=AUTH_ERROR_RESPONSES)

Operator = Annotated[
    AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.fleet_operator))
]
CenterAuth = Annotated[AuthenticatedPrincipal, Depends(require_roles(Role.service_center))]
OperatorOrCenter = Annotated[
    AuthenticatedPrincipal,
    Depends(require_roles(Role.admin, Role.fleet_operator, Role.service_center)),
]
CenterId = Annotated[uuid.UUID, Path(description="Service center id")]
BookingId = Annotated[uuid.UUID, Path(description="Booking id")]
Limit = Annotated[int, Query(ge=1, le=1000)]
Offset = Annotated[int, Query(ge=0, le=1_000_000_000)]
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"description": "Not found (`not_found`)"}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    404: {"description": "No such booking for this service center (`not_found`)"},
    409: {
        "description": "Not allowed in the booking's state (`invalid_state`), or the slot is "
        "full (`slot_full`)"
    },
}


# --- service centers (operators) ------------------------------------------------------------


@router.post("/service-centers", status_code=status.HTTP_201_CREATED)
def create_service_center(
    body: ServiceCenterIn, session: SessionDep, _operator: Operator
) -> ServiceCenterCreated:
    """Register a service center. With a webhook URL, the response carries the signing
    secret once (`whsec_...`)."""
    return service.create_center(session, body)


@router.get("/service-centers")
def list_service_centers(
    session: SessionDep,
    principal: OperatorOrCenter,
    active: bool | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[ServiceCenterRead]:
    """Operators list every center; a service center gets its own (a list of one)."""
    if principal.role is Role.service_center:
        own = service.center_of_principal(session, principal)
        matches = (active is None or own.active == active) and offset == 0
        return [service.center_read(own)] if matches else []
    centers = repository.list_centers(session, active=active, limit=limit, offset=offset)
    return [service.center_read(c) for c in centers]


@router.get("/service-centers/{center_id}", responses=NOT_FOUND)
def read_service_center(
    center_id: CenterId, session: SessionDep, principal: OperatorOrCenter
) -> ServiceCenterRead:
    """Operators read any center; a service center reads its own."""
    return service.center_read(_visible_center(session, principal, center_id))


@router.patch("/service-centers/{center_id}", responses=NOT_FOUND)
def update_service_center(
    center_id: CenterId, body: ServiceCenterPatch, session: SessionDep, _operator: Operator
) -> ServiceCenterRead:
    """Change opening hours, capacity, capabilities, the webhook URL or deactivate it.
    Existing bookings keep their slots."""
    return service.update_center(session, center_id, body)


@router.post("/service-centers/{center_id}/webhook-secret", responses=NOT_FOUND)
def rotate_webhook_secret(
    center_id: CenterId, session: SessionDep, settings: SettingsDep, _operator: Operator
) -> WebhookSecretRotated:
    """A new signing secret (shown once). Until `previous_secret_valid_until`, deliveries
    carry a signature with the old secret too, so the receiver can switch at its pace."""
    return service.rotate_webhook_secret(session, settings, center_id)


@router.post(
    "/service-centers/{center_id}/credentials",
    status_code=status.HTTP_201_CREATED,
    responses=NOT_FOUND,
)
def issue_center_credential(
    center_id: CenterId, body: CredentialIssue, session: SessionDep, _operator: Operator
) -> IssuedCredential:
    """An API credential for the center's own system (role `service_center`, bound to the
    center by its code). The token is shown once."""
    center = repository.get_center(session, center_id)
    if center is None:
        raise NotFound(f"no service center with id {center_id}")
    name = f"service-center:{center.code}"
    existing = get_principal_by_name(session, name)
    if existing is None:
        data = PrincipalCreate(
            name=name,
            role=Role.service_center,
            org_ref=center.code,
            expires_at=body.expires_at,
            description=body.description,
        )
        principal, credential, token = register_principal(session, data)
    else:
        principal, credential, token = issue_additional_credential(session, existing.id, body)
    return IssuedCredential(
        principal=principal_read(principal, []),
        credential=credential_read(credential),
        token=token,
    )


@router.get("/service-centers/{center_id}/slots", responses=NOT_FOUND)
def list_free_slots(
    center_id: CenterId,
    session: SessionDep,
    principal: OperatorOrCenter,
    start: Annotated[datetime | None, Query(alias="from")] = None,
    end: Annotated[datetime | None, Query(alias="to")] = None,
) -> list[SlotRead]:
    """Slots with a free bay between `from` and `to` (default: the next 7 days; at most 31)."""
    center = _visible_center(session, principal, center_id)
    start = _aware(start, "from") or utcnow()
    end = _aware(end, "to") or start + timedelta(days=7)
    return service.free_slots(session, center, start, end)


# --- bookings ------------------------------------------------------------------------------


@router.post("/bookings", status_code=status.HTTP_201_CREATED, responses=NOT_FOUND)
def request_booking(
    body: BookingRequest, session: SessionDep, settings: SettingsDep, operator: Operator
) -> BookingRead:
    """Book a vehicle in by hand; an open booking for the same issue is escalated instead of
    duplicated (its id is returned)."""
    booking = service.request_booking(session, settings, body, requested_by=operator.name)
    return service.read_booking(session, booking)


@router.get("/bookings")
def list_bookings(
    session: SessionDep,
    principal: OperatorOrCenter,
    vin: VinStr | None = None,
    state: Annotated[list[BookingState] | None, Query()] = None,
    center_id: uuid.UUID | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[BookingRead]:
    """Newest first. A service center gets only its own bookings."""
    center_id = _restrict_to_own(session, principal, center_id, "bookings")
    states = [s.value for s in state] if state else None
    return service.list_bookings(
        session, center_id=center_id, vin=vin, states=states, limit=limit, offset=offset
    )


@router.get("/bookings/{booking_id}", responses=NOT_FOUND)
def read_booking(
    booking_id: BookingId, session: SessionDep, principal: OperatorOrCenter
) -> BookingRead:
    if principal.role is Role.service_center:
        center = service.center_of_principal(session, principal)
        return service.read_booking(
            session, service.booking_for_center(session, center, booking_id)
        )
    booking = repository.get_booking(session, booking_id)
    if booking is None:
        raise NotFound(f"no booking with id {booking_id}")
    return service.read_booking(session, booking)


@router.post("/bookings/{booking_id}/accept", responses=CONFLICT)
def accept_booking(booking_id: BookingId, session: SessionDep, center: CenterAuth) -> BookingRead:
    own = service.center_of_principal(session, center)
    return service.read_booking(session, service.accept(session, own, booking_id))


@router.post("/bookings/{booking_id}/decline", responses=CONFLICT)
def decline_booking(
    booking_id: BookingId,
    body: DeclineIn,
    session: SessionDep,
    settings: SettingsDep,
    center: CenterAuth,
) -> BookingRead:
    """Decline; the platform offers the issue to the next capable center."""
    own = service.center_of_principal(session, center)
    declined, _follow_up = service.decline(session, settings, own, booking_id, body.reason)
    return service.read_booking(session, declined)


@router.post("/bookings/{booking_id}/reschedule", responses=CONFLICT)
def reschedule_booking(
    booking_id: BookingId, body: RescheduleIn, session: SessionDep, center: CenterAuth
) -> BookingRead:
    """Move to another of the center's slots (this also accepts the booking)."""
    own = service.center_of_principal(session, center)
    return service.read_booking(
        session, service.reschedule(session, own, booking_id, body.slot_start)
    )


@router.post("/bookings/{booking_id}/complete", responses=CONFLICT)
def complete_booking(
    booking_id: BookingId, body: CompleteIn, session: SessionDep, center: CenterAuth
) -> BookingRead:
    """Record the work done: replaced parts become predictive-maintenance labels."""
    own = service.center_of_principal(session, center)
    return service.read_booking(session, service.complete(session, own, booking_id, body))


@router.post("/bookings/{booking_id}/cancel", responses=CONFLICT)
def cancel_booking(
    booking_id: BookingId, body: DeclineIn, session: SessionDep, _operator: Operator
) -> BookingRead:
    """An operator cancels an open booking; the center is told by webhook."""
    return service.read_booking(session, service.cancel(session, booking_id, body.reason))


# --- owner notifications -------------------------------------------------------------------


@router.get("/vehicles/{vin}/notifications")
def list_notifications(
    vin: VinStr,
    session: SessionDep,
    principal: CurrentPrincipal,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> list[NotificationRead]:
    """What the owner was told, newest first: operators, or the vehicle itself."""
    ensure_can_read_vehicle(principal, vin)
    rows = repository.list_notifications(session, vin, limit=limit, offset=offset)
    return [NotificationRead.model_validate(n, from_attributes=True) for n in rows]


# --- webhook delivery log ------------------------------------------------------------------


@router.get("/webhook-events")
def list_webhook_events(
    session: SessionDep,
    principal: OperatorOrCenter,
    center_id: uuid.UUID | None = None,
    booking_id: uuid.UUID | None = None,
    state: DeliveryState | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> list[WebhookEventRead]:
    """Webhook events and their delivery state, newest first (a center sees its own)."""
    center_id = _restrict_to_own(session, principal, center_id, "deliveries")
    events = outbox.list_events(
        session, center_id=center_id, booking_id=booking_id, state=state, limit=limit, offset=offset
    )
    return [WebhookEventRead.model_validate(e, from_attributes=True) for e in events]


@router.get("/webhook-events/{event_id}", responses=NOT_FOUND)
def read_webhook_event(
    event_id: uuid.UUID, session: SessionDep, principal: OperatorOrCenter
) -> WebhookEventDetail:
    """One event with its payload and every delivery attempt."""
    found = outbox.get_event_with_attempts(session, event_id)
    if found is None or not _may_see(session, principal, found[0].center_id):
        raise NotFound(f"no webhook event with id {event_id}")
    event, attempts = found
    return WebhookEventDetail(
        **WebhookEventRead.model_validate(event, from_attributes=True).model_dump(),
        payload=event.payload,
        attempt_log=[WebhookAttemptRead.model_validate(a, from_attributes=True) for a in attempts],
    )


@router.post("/webhook-events/{event_id}/replay", responses=NOT_FOUND)
def replay_webhook_event(
    event_id: uuid.UUID, session: SessionDep, _operator: Operator
) -> WebhookEventRead:
    """Deliver the event again with the same `webhook-id` (receivers deduplicate on it)."""
    event = outbox.replay(session, event_id, utcnow())
    return WebhookEventRead.model_validate(event, from_attributes=True)


# --- helpers -------------------------------------------------------------------------------


def _visible_center(session: Any, principal: AuthenticatedPrincipal, center_id: uuid.UUID) -> Any:
    if principal.role is Role.service_center:
        own = service.center_of_principal(session, principal)
        if own.id != center_id:
            raise NotFound(f"no service center with id {center_id}")
        return own
    center = repository.get_center(session, center_id)
    if center is None:
        raise NotFound(f"no service center with id {center_id}")
    return center


def _restrict_to_own(
    session: Any, principal: AuthenticatedPrincipal, center_id: uuid.UUID | None, what: str
) -> uuid.UUID | None:
    """The center filter of a listing: a service center's own, whatever it asked for."""
    if principal.role is not Role.service_center:
        return center_id
    own: uuid.UUID = service.center_of_principal(session, principal).id
    if center_id is not None and center_id != own:
        raise Forbidden(f"a service center may only list its own {what}")
    return own


def _may_see(session: Any, principal: AuthenticatedPrincipal, center_id: uuid.UUID) -> bool:
    if principal.role is not Role.service_center:
        return True
    return bool(service.center_of_principal(session, principal).id == center_id)


def _aware(value: datetime | None, name: str) -> datetime | None:
    from core.errors import ValidationFailed

    if value is not None and value.tzinfo is None:
        raise ValidationFailed(
            [{"loc": ["query", name], "msg": f"`{name}` needs a time zone", "type": "value_error"}]
        )
    return value
