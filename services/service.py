"""Rules of proactive service: placing bookings in slots, turning issue signals into bookings
(deduplicated and escalated), the service center's actions and routine schedules.

Nothing here commits; callers own the transaction. Every change of a booking writes, in the
same transaction, the webhook event for its center (``services.outbox``) and, where the owner
should know, an owner notification, so the database, the deliveries and what the owner was
told never disagree.

**No double booking.** A booking holds one bay of one slot, and the partial unique index
``uq_booking_slot_bay`` (center, slot start, bay) refuses a second active holder. Placement
reads the free bays and claims one inside a SAVEPOINT. When a concurrent transaction took it
first (PostgreSQL raises a unique violation), the loser locks that center's row, so the crowd
that collided queues up instead of colliding again, reads again and takes the next bay. The
first attempt locks nothing: transactions placing at different centers never wait on each
other. (A transaction that lost races at two centers can deadlock with another; PostgreSQL
aborts one, and the worker retries its transaction.) SQLite has one writer: placement first
takes its write lock, so reads are current and the savepoint never fails there.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from core.auth.models import AuthenticatedPrincipal, Role
from core.config import Settings
from core.db import utcnow, write_lock
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from services import outbox, repository
from services.geo import haversine_km
from services.issues import LEAD_TIME, IssueSignal, issue_type, routine_signal
from services.models import (
    OPEN_STATES,
    Booking,
    BookingState,
    OwnerNotification,
    ServiceCenter,
    ServiceOutcome,
    Urgency,
)
from services.schemas import (
    BookingRead,
    BookingRequest,
    CompleteIn,
    ServiceCenterCreated,
    ServiceCenterIn,
    ServiceCenterPatch,
    ServiceCenterRead,
    SlotRead,
    WebhookSecretRotated,
)
from services.slots import OpeningHours, SlotGrid
from services.webhooks import new_secret

log = logging.getLogger(__name__)

MAX_PLACEMENT_ATTEMPTS = 8
MAX_EVIDENCE = 50
ACTIVE_SLOT_STATES = (BookingState.proposed.value, BookingState.accepted.value)


@dataclass(frozen=True)
class Placement:
    center: ServiceCenter
    slot_start: datetime
    slot_end: datetime
    bay: int
    distance_km: float | None
    after_due: bool


def grid_of(center: ServiceCenter) -> SlotGrid:
    hours = OpeningHours.parse(center.opening_hours, center.closed_dates)
    return SlotGrid(hours, center.time_zone, center.slot_minutes, center.bays)


# --- service centers -------------------------------------------------------------------------


def create_center(session: Session, data: ServiceCenterIn) -> ServiceCenterCreated:
    if repository.get_center_by_code(session, data.code) is not None:
        raise Conflict(f"a service center with code {data.code!r} already exists")
    now = utcnow()
    secret = new_secret() if data.webhook_url is not None else None
    center = ServiceCenter(
        code=data.code,
        name=data.name,
        latitude=data.latitude,
        longitude=data.longitude,
        time_zone=data.time_zone,
        opening_hours=data.opening_hours,
        closed_dates=sorted(d.isoformat() for d in data.closed_dates),
        capabilities=[c.value for c in data.capabilities],
        bays=data.bays,
        slot_minutes=data.slot_minutes,
        webhook_url=None if data.webhook_url is None else str(data.webhook_url),
        webhook_secret=secret,
        created_at=now,
        updated_at=now,
    )
    _check_grid(center)
    write_lock(session)  # SQLite: the savepoint nests in this transaction
    try:
        with session.begin_nested():
            repository.add(session, center)
    except IntegrityError:
        raise Conflict(f"a service center with code {data.code!r} already exists") from None
    return ServiceCenterCreated(center=center_read(center), webhook_secret=secret)


def update_center(
    session: Session, center_id: uuid.UUID, patch: ServiceCenterPatch
) -> ServiceCenterRead:
    center = _center(session, center_id)
    changes = patch.model_dump(exclude_unset=True)
    for name, value in changes.items():
        if name == "capabilities":
            value = [c.value if hasattr(c, "value") else c for c in value]
        elif name == "closed_dates":
            value = sorted(d.isoformat() for d in value)
        elif name == "webhook_url" and value is not None:
            value = str(value)
        setattr(center, name, value)
    _check_grid(center)
    center.updated_at = utcnow()
    session.add(center)
    session.flush()
    return center_read(center)


def rotate_webhook_secret(
    session: Session, settings: Settings, center_id: uuid.UUID
) -> WebhookSecretRotated:
    """A new signing secret; deliveries carry signatures with the old one too for the
    overlap (``webhook_rotation_overlap_h``), so receivers switch without a missed event."""
    center = _center(session, center_id)
    now = utcnow()
    until = now + timedelta(hours=settings.webhook_rotation_overlap_h)
    previous = center.webhook_secret
    center.webhook_previous_secret = previous
    center.webhook_previous_until = until if previous else None
    center.webhook_secret = new_secret()
    center.updated_at = now
    session.add(center)
    session.flush()
    return WebhookSecretRotated(
        webhook_secret=center.webhook_secret,
        previous_secret_valid_until=center.webhook_previous_until,
    )


def _check_grid(center: ServiceCenter) -> None:
    """Opening hours, slot length and capacity must make a grid with at least one slot."""
    try:
        grid_of(center)
    except ValueError as exc:
        raise ValidationFailed(
            [{"loc": ["body", "slot_minutes"], "msg": str(exc), "type": "value_error"}]
        ) from None


def get_center(session: Session, center_id: uuid.UUID) -> ServiceCenterRead:
    return center_read(_center(session, center_id))


def free_slots(
    session: Session, center: ServiceCenter, start: datetime, end: datetime
) -> list[SlotRead]:
    grid = grid_of(center)
    if end <= start:
        raise ValidationFailed(
            [{"loc": ["query", "to"], "msg": "`to` must be after `from`", "type": "value_error"}]
        )
    if end - start > timedelta(days=31):
        raise ValidationFailed(
            [{"loc": ["query", "to"], "msg": "at most 31 days at once", "type": "value_error"}]
        )
    usage = repository.slot_usage(session, center.id, start, end)
    slots = []
    for slot in grid.slots(start, end):
        free = center.bays - len(usage.get(slot, ()))
        if free > 0:
            slots.append(
                SlotRead(
                    slot_start=slot,
                    slot_end=grid.slot_end(slot),
                    local=local_time(slot, center),
                    free_bays=free,
                )
            )
    return slots


def center_of_principal(session: Session, principal: AuthenticatedPrincipal) -> ServiceCenter:
    """The center a service-center credential belongs to (its principal's ``org_ref`` is the
    center's code)."""
    if principal.role is not Role.service_center:
        raise Forbidden(f"requires role service_center; this credential has role {principal.role}")
    center = (
        repository.get_center_by_code(session, principal.org_ref) if principal.org_ref else None
    )
    if center is None:
        raise Forbidden(
            "this service-center credential is not bound to a registered center "
            "(its principal's org_ref must be the center's code)"
        )
    return center


def _center(session: Session, center_id: uuid.UUID) -> ServiceCenter:
    center = repository.get_center(session, center_id)
    if center is None:
        raise NotFound(f"no service center with id {center_id}")
    return center


# --- placement -----------------------------------------------------------------------------


def candidate_centers(
    session: Session,
    settings: Settings,
    vin: str,
    capability: str,
    *,
    exclude: Sequence[str] = (),
) -> list[tuple[ServiceCenter, float | None]]:
    """Active centers with ``capability``, nearest first (within ``services_max_distance_km``
    of the vehicle's last position). Without a known position: every capable center, by
    code (the operator sees ``distance_km: null``)."""
    excluded = set(exclude)
    centers = [
        c
        for c in repository.active_centers(session)
        if capability in c.capabilities and str(c.id) not in excluded
    ]
    status = repository.vehicle_status(session, vin)
    if status is None or status.latitude is None or status.longitude is None:
        return [(c, None) for c in sorted(centers, key=lambda c: c.code)]
    lat, lon = status.latitude, status.longitude
    ranked = sorted(
        ((c, haversine_km(lat, lon, c.latitude, c.longitude)) for c in centers),
        key=lambda item: (item[1], item[0].code),
    )
    return [(c, d) for c, d in ranked if d <= settings.services_max_distance_km]


def find_placement(
    session: Session,
    settings: Settings,
    candidates: Sequence[tuple[ServiceCenter, float | None]],
    due_by: datetime,
    now: datetime,
) -> Placement | None:
    """The nearest candidate with a free slot that ends by ``due_by``; when none has one, the
    earliest free slot of any candidate within ``services_search_days`` (``after_due``)."""
    earliest = now + timedelta(hours=settings.services_min_notice_h)
    grids = [(center, distance, grid_of(center)) for center, distance in candidates]
    if due_by > earliest:
        for center, distance, grid in grids:
            found = _first_free(session, center, grid, earliest, due_by)
            if found is not None:
                return Placement(
                    center, found[0], grid.slot_end(found[0]), found[1], distance, False
                )
    horizon = max(earliest, due_by) + timedelta(days=settings.services_search_days)
    best: Placement | None = None
    for center, distance, grid in grids:
        found = _first_free(session, center, grid, earliest, horizon)
        if found is not None and (best is None or found[0] < best.slot_start):
            best = Placement(
                center,
                found[0],
                grid.slot_end(found[0]),
                found[1],
                distance,
                grid.slot_end(found[0]) > due_by,
            )
    return best


def _first_free(
    session: Session, center: ServiceCenter, grid: SlotGrid, start: datetime, end: datetime
) -> tuple[datetime, int] | None:
    usage = repository.slot_usage(session, center.id, start, end)
    slot = grid.first_free({s: len(bays) for s, bays in usage.items()}, start, end)
    if slot is None:
        return None
    bay = grid.free_bay(usage.get(slot, set()))
    assert bay is not None  # first_free only returns slots with a free bay
    return slot, bay


def _lock_center(session: Session, center_id: uuid.UUID) -> None:
    """After losing a race for a bay: queue behind the center's other placers (row lock on
    PostgreSQL, held until commit), so a crowd of requests does not keep colliding. Only the
    losers lock, one center each time, so the common path stays lock-free."""
    # FOR NO KEY UPDATE: it queues the losers but does not conflict with the KEY SHARE lock
    # that inserting a booking (its foreign key to the center) takes; FOR UPDATE would, and
    # two losers that had each inserted a booking before would deadlock.
    session.execute(
        select(ServiceCenter.id)
        .where(ServiceCenter.id == center_id)
        .with_for_update(key_share=True)
    )


def _assign(booking: Booking, placement: Placement | None) -> None:
    if placement is None:
        booking.state = BookingState.unassigned.value
        booking.center_id = booking.slot_start = booking.slot_end = booking.bay = None
        booking.distance_km = None
        booking.after_due = False
        return
    booking.state = BookingState.proposed.value
    booking.center_id = placement.center.id
    booking.slot_start, booking.slot_end = placement.slot_start, placement.slot_end
    booking.bay = placement.bay
    booking.distance_km = None if placement.distance_km is None else round(placement.distance_km, 1)
    booking.after_due = placement.after_due


def _place(
    session: Session,
    settings: Settings,
    booking: Booking,
    now: datetime,
    *,
    only_center: ServiceCenter | None = None,
    only_if_earlier: bool = False,
) -> Placement | None:
    """(Re)place an existing booking; returns the placement made or None when it stayed."""
    write_lock(session)
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        if only_center is not None:
            candidates = [(only_center, booking.distance_km)]
        else:
            candidates = candidate_centers(
                session, settings, booking.vin, booking.capability, exclude=booking.declined_by
            )
        placement = find_placement(session, settings, candidates, booking.due_by, now)
        if placement is None or (
            only_if_earlier
            and booking.slot_start is not None
            and placement.slot_start >= booking.slot_start
        ):
            return None
        try:
            with session.begin_nested():
                _assign(booking, placement)
                booking.updated_at = now
                session.add(booking)
                session.flush()
            return placement
        except IntegrityError:
            _lock_center(session, placement.center.id)  # a concurrent one took it: queue up
    raise Conflict("no free slot could be claimed (heavy contention); retry", code="contention")


# --- bookings from issue signals -----------------------------------------------------------


def apply_signal(
    session: Session, settings: Settings, signal: IssueSignal, now: datetime | None = None
) -> Booking | None:
    """Create or escalate the vehicle's open booking for the signal's issue. Returns the
    booking, or None when the signal was applied before (a replay) or the vehicle is not
    registered."""
    now = now or utcnow()
    if not repository.vehicle_exists(session, signal.vin):
        # Not claimed in the inbox: replayed after the vehicle is registered, it books.
        log.warning("no booking for unregistered vehicle %s (%s)", signal.vin, signal.issue_key)
        return None
    if not repository.claim_inbox(session, signal.event_id, now):
        return None
    booking = repository.open_booking(session, signal.vin, signal.issue_key, for_update=True)
    if booking is None:
        booking, created = _create(session, settings, signal, now)
        if created:
            return booking
    _add_evidence(session, settings, booking, signal, now)
    return booking


def request_booking(
    session: Session, settings: Settings, data: BookingRequest, *, requested_by: str
) -> Booking:
    """An operator's booking; an open booking for the same issue is escalated instead."""
    now = utcnow()
    if not repository.vehicle_exists(session, data.vin):
        raise NotFound(f"no vehicle with VIN {data.vin}")
    text = f"Requested by {requested_by}" + (f": {data.note}" if data.note else "")
    signal = IssueSignal(
        event_id=f"manual:{uuid.uuid4().hex}",
        vin=data.vin,
        issue_key=data.issue_key,
        kind="routine" if data.issue_key == "routine" else "diagnostic",
        urgency=data.urgency,
        due_by=now + LEAD_TIME[data.urgency],
        observed_at=now,
        evidence={"source": "operator", "observed_at": now.isoformat(), "text": text},
    )
    booking = apply_signal(session, settings, signal, now)
    assert booking is not None
    return booking


def _create(
    session: Session, settings: Settings, signal: IssueSignal, now: datetime
) -> tuple[Booking, bool]:
    """A new booking for the signal and True; or, when a concurrent transaction opened one for
    the same issue first, that one and False (the caller adds the signal to it)."""
    issue = signal.issue
    write_lock(session)
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        candidates = candidate_centers(session, settings, signal.vin, issue.capability)
        placement = find_placement(session, settings, candidates, signal.due_by, now)
        booking = Booking(
            vin=signal.vin,
            issue_key=signal.issue_key,
            kind=signal.kind,
            capability=issue.capability.value,
            state=BookingState.unassigned.value,
            urgency=signal.urgency.value,
            due_by=signal.due_by,
            summary=str(signal.evidence.get("text", ""))[:500],
            evidence=[signal.evidence],
            created_at=now,
            updated_at=now,
        )
        _assign(booking, placement)
        try:
            with session.begin_nested():
                session.add(booking)
                session.flush()
        except IntegrityError:
            existing = repository.open_booking(
                session, signal.vin, signal.issue_key, for_update=True
            )
            if existing is not None:
                return existing, False
            if placement is not None:
                _lock_center(session, placement.center.id)
            continue
        _announce(
            session,
            booking,
            placement.center if placement else None,
            "booking.created",
            "booked",
            now,
        )
        return booking, True
    raise Conflict("no free slot could be claimed (heavy contention); retry", code="contention")


def _add_evidence(
    session: Session, settings: Settings, booking: Booking, signal: IssueSignal, now: datetime
) -> None:
    evidence = [*booking.evidence, signal.evidence]
    if len(evidence) > MAX_EVIDENCE:  # keep the first (why it was opened) and the newest
        evidence = [evidence[0], *evidence[-(MAX_EVIDENCE - 1) :]]
    booking.evidence = evidence
    booking.version += 1
    booking.updated_at = now
    worse = Urgency(signal.urgency).rank > Urgency(booking.urgency).rank
    sooner = signal.due_by < booking.due_by
    if not (worse or sooner):
        session.add(booking)
        session.flush()
        return
    booking.escalations += 1
    if worse:
        booking.urgency = signal.urgency.value
        booking.summary = str(signal.evidence.get("text", booking.summary))[:500]
    booking.due_by = min(booking.due_by, signal.due_by)
    session.add(booking)
    session.flush()
    center = repository.get_center(session, booking.center_id) if booking.center_id else None
    if booking.state == BookingState.unassigned.value:
        placement = _place(session, settings, booking, now)
        if placement is not None:
            _announce(session, booking, placement.center, "booking.created", "booked", now)
            return
    elif (
        center is not None
        and booking.slot_end is not None
        and booking.slot_end > booking.due_by
        # Too late now: an earlier slot at the same center (it already knows the vehicle);
        # the center confirms the new time again.
        and _place(session, settings, booking, now, only_center=center, only_if_earlier=True)
    ):
        booking.state = BookingState.proposed.value
        session.add(booking)
        session.flush()
    _announce(session, booking, center, "booking.escalated", "escalated", now)


# --- the service center's actions ----------------------------------------------------------


def booking_for_center(
    session: Session, center: ServiceCenter, booking_id: uuid.UUID, *, for_update: bool = False
) -> Booking:
    """The booking if it is this center's; 404 otherwise (another center's bookings do not
    exist for it)."""
    booking = repository.get_booking(session, booking_id, for_update=for_update)
    if booking is None or booking.center_id != center.id:
        raise NotFound(f"no booking with id {booking_id} for this service center")
    return booking


def accept(session: Session, center: ServiceCenter, booking_id: uuid.UUID) -> Booking:
    booking = booking_for_center(session, center, booking_id, for_update=True)
    if booking.state == BookingState.accepted.value:
        return booking  # accepting twice is harmless (a retried request)
    _require_state(booking, (BookingState.proposed.value,), "accept")
    now = utcnow()
    booking.state = BookingState.accepted.value
    _touch(session, booking, now)
    _notify(session, booking, center, "confirmed")
    return booking


def decline(
    session: Session, settings: Settings, center: ServiceCenter, booking_id: uuid.UUID, reason: str
) -> tuple[Booking, Booking]:
    """Decline; the issue moves on to a new booking at the next capable center (never back
    to one that declined it). Returns (declined, follow-up)."""
    booking = booking_for_center(session, center, booking_id, for_update=True)
    _require_state(booking, ACTIVE_SLOT_STATES, "decline")
    now = utcnow()
    booking.state = BookingState.declined.value
    booking.decline_reason = reason
    _touch(session, booking, now)
    follow = Booking(
        vin=booking.vin,
        issue_key=booking.issue_key,
        kind=booking.kind,
        capability=booking.capability,
        state=BookingState.unassigned.value,
        urgency=booking.urgency,
        due_by=booking.due_by,
        summary=booking.summary,
        evidence=list(booking.evidence),
        escalations=booking.escalations,
        declined_by=[*booking.declined_by, str(center.id)],
        previous_booking_id=booking.id,
        created_at=now,
        updated_at=now,
    )
    session.add(follow)
    session.flush()
    placement = _place(session, settings, follow, now)
    new_center = placement.center if placement else None
    _announce(session, follow, new_center, "booking.created", "moved", now)
    return booking, follow


def reschedule(
    session: Session, center: ServiceCenter, booking_id: uuid.UUID, slot_start: datetime
) -> Booking:
    """Move the booking to another slot of the same center; rescheduling accepts it."""
    booking = booking_for_center(session, center, booking_id, for_update=True)
    _require_state(booking, ACTIVE_SLOT_STATES, "reschedule")
    now = utcnow()
    grid = grid_of(center)
    if slot_start <= now:
        raise _slot_error("slot_start is in the past")
    if not grid.is_slot(slot_start):
        raise _slot_error(
            f"{local_time(slot_start, center)} is not a slot start of this center "
            f"(opening hours {center.opening_hours}, {center.slot_minutes}-minute slots)"
        )
    if booking.slot_start == slot_start:
        booking.state = BookingState.accepted.value
        _touch(session, booking, now)
        return booking
    write_lock(session)
    for _ in range(MAX_PLACEMENT_ATTEMPTS):
        used = repository.slot_usage(session, center.id, slot_start, grid.slot_end(slot_start))
        bay = grid.free_bay(used.get(slot_start, set()))
        if bay is None:
            raise Conflict(
                f"the slot {local_time(slot_start, center)} is fully booked", code="slot_full"
            )
        try:
            with session.begin_nested():
                booking.slot_start, booking.slot_end = slot_start, grid.slot_end(slot_start)
                booking.bay = bay
                booking.after_due = booking.slot_end > booking.due_by
                booking.state = BookingState.accepted.value
                _touch(session, booking, now)
            break
        except IntegrityError:
            _lock_center(session, center.id)
    else:
        raise Conflict("the slot could not be claimed (heavy contention); retry", code="contention")
    _notify(session, booking, center, "rescheduled")
    return booking


def complete(
    session: Session, center: ServiceCenter, booking_id: uuid.UUID, work: CompleteIn
) -> Booking:
    """Record the work done. Each replaced part becomes a label for predictive maintenance
    (``service_outcome``); the vehicle's routine-service baseline restarts here."""
    booking = booking_for_center(session, center, booking_id, for_update=True)
    if booking.state == BookingState.completed.value:
        raise Conflict("the booking is already completed", code="already_completed")
    if booking.state == BookingState.proposed.value:
        raise Conflict("accept the booking before completing it", code="invalid_state")
    _require_state(booking, (BookingState.accepted.value,), "complete")
    now = utcnow()
    booking.state = BookingState.completed.value
    booking.completed_at = now
    booking.outcome = work.model_dump()
    _touch(session, booking, now)
    found_at = _first_observed(booking)
    for part in work.parts_replaced:
        session.add(
            ServiceOutcome(
                booking_id=booking.id,
                vin=booking.vin,
                issue_key=booking.issue_key,
                part=part,
                found_at=found_at,
                completed_at=now,
                codes_cleared=list(work.codes_cleared),
            )
        )
    odometer_m = work.odometer_km * 1000 if work.odometer_km is not None else None
    if odometer_m is None:
        status = repository.vehicle_status(session, booking.vin)
        odometer_m = status.odometer_m if status is not None else None
    if odometer_m is not None:
        repository.set_baseline(session, booking.vin, now, odometer_m, from_service=True)
    session.flush()
    _notify(session, booking, center, "completed")
    return booking


def cancel(session: Session, booking_id: uuid.UUID, reason: str) -> Booking:
    """An operator cancels an open booking; its center is told."""
    booking = repository.get_booking(session, booking_id, for_update=True)
    if booking is None:
        raise NotFound(f"no booking with id {booking_id}")
    _require_state(booking, tuple(s.value for s in OPEN_STATES), "cancel")
    now = utcnow()
    booking.state = BookingState.cancelled.value
    booking.decline_reason = reason
    _touch(session, booking, now)
    center = repository.get_center(session, booking.center_id) if booking.center_id else None
    _announce(session, booking, center, "booking.cancelled", "cancelled", now)
    return booking


def _require_state(booking: Booking, allowed: Sequence[str], action: str) -> None:
    if booking.state not in allowed:
        raise Conflict(
            f"cannot {action} a booking that is {booking.state} "
            f"(allowed from: {', '.join(allowed)})",
            code="invalid_state",
        )


def _slot_error(message: str) -> ValidationFailed:
    return ValidationFailed(
        [{"loc": ["body", "slot_start"], "msg": message, "type": "value_error"}]
    )


def _touch(session: Session, booking: Booking, now: datetime) -> None:
    booking.version += 1
    booking.updated_at = now
    session.add(booking)
    session.flush()


def _first_observed(booking: Booking) -> datetime:
    for item in booking.evidence:
        try:
            return datetime.fromisoformat(str(item["observed_at"]))
        except (KeyError, ValueError):
            continue
    return booking.created_at


# --- retries and routine schedules ---------------------------------------------------------


def retry_unassigned(session: Session, settings: Settings, now: datetime | None = None) -> int:
    """Try again to place bookings no center could take; returns how many were placed."""
    now = now or utcnow()
    placed = 0
    for booking in repository.unassigned_bookings(session):
        placement = _place(session, settings, booking, now)
        if placement is not None:
            booking.version += 1
            _announce(session, booking, placement.center, "booking.created", "booked", now)
            placed += 1
    return placed


def due_routine_services(
    session: Session, settings: Settings, now: datetime | None = None
) -> list[IssueSignal]:
    """Routine services that became due, by distance (``services_routine_km`` since the last
    service) or by time (``services_routine_days``). A vehicle without a recorded service
    counts from when the platform first saw its odometer (distance) and from its
    registration (time)."""
    now = now or utcnow()
    signals = []
    for vin, registered_at, odometer_m, baseline in repository.routine_candidates(session):
        if baseline is None and odometer_m is not None:
            repository.set_baseline(session, vin, registered_at, odometer_m, from_service=False)
        since = baseline.serviced_at if baseline is not None else registered_at
        km = None
        if baseline is not None and odometer_m is not None:
            km = max(0.0, (odometer_m - baseline.odometer_m) / 1000)
        if km is not None and km >= settings.services_routine_km:
            reason = "distance"
        elif now - since >= timedelta(days=settings.services_routine_days):
            reason = "time"
        else:
            continue
        signals.append(routine_signal(vin, now=now, since=since, km_since=km, reason=reason))
    return signals


# --- reads, webhook events and owner notifications -----------------------------------------


def list_bookings(
    session: Session,
    *,
    center_id: uuid.UUID | None = None,
    vin: str | None = None,
    states: Sequence[str] | None = None,
    limit: int = 100,
    offset: int = 0,
) -> list[BookingRead]:
    bookings = repository.list_bookings(
        session, center_id=center_id, vin=vin, states=states, limit=limit, offset=offset
    )
    centers = repository.centers_by_id(session, [b.center_id for b in bookings if b.center_id])
    return [booking_read(b, centers.get(b.center_id) if b.center_id else None) for b in bookings]


def read_booking(session: Session, booking: Booking) -> BookingRead:
    center = repository.get_center(session, booking.center_id) if booking.center_id else None
    return booking_read(booking, center)


def booking_read(booking: Booking, center: ServiceCenter | None) -> BookingRead:
    return BookingRead(
        id=booking.id,
        vin=booking.vin,
        issue_key=booking.issue_key,
        issue=issue_type(booking.issue_key).title,
        kind=booking.kind,
        capability=booking.capability,
        state=BookingState(booking.state),
        urgency=Urgency(booking.urgency),
        due_by=booking.due_by,
        center_id=booking.center_id,
        center_code=center.code if center is not None else None,
        slot_start=booking.slot_start,
        slot_end=booking.slot_end,
        slot_local=local_time(booking.slot_start, center)
        if center is not None and booking.slot_start is not None
        else None,
        bay=booking.bay,
        distance_km=booking.distance_km,
        after_due=booking.after_due,
        summary=booking.summary,
        evidence=list(booking.evidence),
        escalations=booking.escalations,
        previous_booking_id=booking.previous_booking_id,
        decline_reason=booking.decline_reason,
        outcome=booking.outcome,
        version=booking.version,
        created_at=booking.created_at,
        updated_at=booking.updated_at,
        completed_at=booking.completed_at,
    )


def center_read(center: ServiceCenter) -> ServiceCenterRead:
    return ServiceCenterRead(
        id=center.id,
        code=center.code,
        name=center.name,
        latitude=center.latitude,
        longitude=center.longitude,
        time_zone=center.time_zone,
        opening_hours=dict(center.opening_hours),
        closed_dates=list(center.closed_dates),
        capabilities=list(center.capabilities),
        bays=center.bays,
        slot_minutes=center.slot_minutes,
        active=center.active,
        webhook_url=center.webhook_url,
        previous_secret_valid_until=center.webhook_previous_until,
        created_at=center.created_at,
        updated_at=center.updated_at,
    )


def local_time(moment: datetime, center: ServiceCenter) -> str:
    local = moment.astimezone(grid_of(center).zone)
    return f"{local:%Y-%m-%d %H:%M} {center.time_zone}"


def _announce(
    session: Session,
    booking: Booking,
    center: ServiceCenter | None,
    event_type: str,
    notification: str,
    now: datetime,
) -> None:
    """The center's webhook event (outbox) and the owner's notification, in this
    transaction."""
    if center is not None:
        data = booking_read(booking, center).model_dump(mode="json")
        outbox.enqueue(
            session, center, event_type=event_type, data=data, booking_id=booking.id, now=now
        )
    _notify(session, booking, center, notification)


def _notify(session: Session, booking: Booking, center: ServiceCenter | None, kind: str) -> None:
    title, body = notification_text(booking, center, kind)
    # Stamped with the clock, not the batch's ``now``: several notices of one batch (booked,
    # then escalated) keep their order.
    session.add(
        OwnerNotification(
            vin=booking.vin,
            booking_id=booking.id,
            kind=kind,
            title=title,
            body=body,
            created_at=utcnow(),
        )
    )
    session.flush()


def notification_text(booking: Booking, center: ServiceCenter | None, kind: str) -> tuple[str, str]:
    """What the owner reads: what, why, where and when, in plain words."""
    issue = issue_type(booking.issue_key).title
    why = booking.summary.rstrip(".") if booking.summary else ""
    where = ""
    if center is not None and booking.slot_start is not None:
        distance = f" ({booking.distance_km:.0f} km away)" if booking.distance_km else ""
        local = booking.slot_start.astimezone(grid_of(center).zone)
        where = f"{center.name}{distance} on {local:%A %d %B at %H:%M} (local time)"
    urgent = {
        "critical": "Please stop driving as soon as it is safe and have it checked. ",
        "high": "Please have it checked soon. ",
    }.get(booking.urgency, "")
    titles = {
        "booked": f"Service needed: {issue}",
        "moved": f"Service appointment moved: {issue}",
        "escalated": f"More urgent now: {issue}",
        "confirmed": f"Appointment confirmed: {issue}",
        "rescheduled": f"Appointment changed: {issue}",
        "completed": f"Service done: {issue}",
        "cancelled": f"Appointment cancelled: {issue}",
    }
    if kind == "completed":
        parts = (booking.outcome or {}).get("parts_replaced") or []
        done = f" Replaced: {', '.join(parts)}." if parts else ""
        return titles[
            kind
        ], f"{center.name if center else 'The service center'} finished the work on {issue}.{done}"
    if kind == "cancelled":
        return titles[kind], f"The appointment for {issue} was cancelled."
    if not where:
        return titles.get(kind, titles["booked"]), (
            f"{urgent}Why: {why}. We have not found a service center with a free appointment "
            f"nearby yet; we keep trying and will tell you as soon as one is booked."
        )
    tail = {
        "booked": "The service center will confirm the appointment.",
        "moved": "The first service center could not take it; this one will confirm.",
        "escalated": "The problem got worse since it was first reported.",
        "confirmed": "The service center confirmed the appointment.",
        "rescheduled": "The service center changed the time.",
    }[kind]
    return titles[kind], f"{urgent}Why: {why}. Appointment: {where}. {tail}"
