"""Bookings on the real database (PostgreSQL in CI): slot allocation (capacity, opening
hours, time zones, no double booking under concurrency), nearest capable center,
deduplication and escalation, decline and reschedule, completion as labels, routine
schedules, and what the owner is told."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core.config import Settings
from core.db import session_scope
from core.errors import Conflict, ValidationFailed
from core.vehicles.models import VehicleIn, VehicleStatus
from core.vehicles.service import bulk_register_vehicles
from services import outbox, repository, service
from services.issues import IssueSignal
from services.models import (
    Booking,
    OwnerNotification,
    ServiceCenter,
    ServiceOutcome,
    Urgency,
    WebhookEvent,
)
from services.schemas import CompleteIn, ServiceCenterIn
from tests.helpers import issue_signal as signal
from tests.helpers import new_vin

BERLIN = (52.52, 13.405)
POTSDAM = (52.39, 13.065)
HAMBURG = (53.55, 9.99)
WEEKDAYS = {day: ["08:00-12:00", "13:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")}


def add_center(
    engine: Engine,
    *,
    at: tuple[float, float] = BERLIN,
    capabilities: tuple[str, ...] = ("cooling", "lv_12v", "general"),
    bays: int = 2,
    hours: dict[str, list[str]] | None = None,
    time_zone: str = "Europe/Berlin",
    slot_minutes: int = 60,
    webhook_url: str | None = "http://127.0.0.1:9/hook",
) -> ServiceCenter:
    code = f"sc-{uuid.uuid4().hex[:10]}"
    data = ServiceCenterIn(
        code=code,
        name=f"Center {code}",
        latitude=at[0],
        longitude=at[1],
        time_zone=time_zone,
        opening_hours=hours or WEEKDAYS,
        capabilities=list(capabilities),  # type: ignore[arg-type]
        bays=bays,
        slot_minutes=slot_minutes,
        webhook_url=webhook_url,  # type: ignore[arg-type]
    )
    with session_scope(engine) as session:
        created = service.create_center(session, data)
        center = repository.get_center(session, created.center.id)
    assert center is not None
    return center


def add_vehicle(
    engine: Engine, *, at: tuple[float, float] | None = BERLIN, odometer_m: float | None = None
) -> str:
    vin = new_vin()
    with session_scope(engine) as session:
        bulk_register_vehicles(
            session,
            [
                VehicleIn(
                    vin=vin,
                    model="Sim",
                    model_year=2022,
                    region="EU",
                    time_zone="Europe/Berlin",
                    powertrain="ice",
                )
            ],
        )
        now = datetime.now(UTC)
        session.merge(
            VehicleStatus(
                vin=vin,
                position_ts=now if at else None,
                latitude=at[0] if at else None,
                longitude=at[1] if at else None,
                odometer_ts=now if odometer_m is not None else None,
                odometer_m=odometer_m,
            )
        )
    return vin


def apply(engine: Engine, settings: Settings, sig: IssueSignal, now: datetime) -> Booking | None:
    with session_scope(engine) as session:
        return service.apply_signal(session, settings, sig, now)


def events_of(engine: Engine, booking_id: uuid.UUID) -> list[WebhookEvent]:
    with session_scope(engine) as session:
        return list(reversed(outbox.list_events(session, booking_id=booking_id)))


# A Monday morning, so the week's slots are predictable (min notice 2 h: first slot 10:00).
MONDAY = datetime(2030, 6, 3, 6, 0, tzinfo=UTC)  # 08:00 in Berlin (CEST)


def test_capacity_fills_a_slot_then_the_next(engine: Engine, db_settings: Settings) -> None:
    add_center(engine, bays=2)
    vins = [add_vehicle(engine) for _ in range(5)]
    bookings = [apply(engine, db_settings, signal(v, now=MONDAY), MONDAY) for v in vins]
    slots = [(b.slot_start, b.bay) for b in bookings if b is not None]
    assert len(set(slots)) == 5
    first = datetime(2030, 6, 3, 8, 0, tzinfo=UTC)  # 10:00 Berlin: 2 h notice after 08:00
    assert [s for s, _ in slots] == [
        first,
        first,
        first + timedelta(hours=1),
        first + timedelta(hours=1),
        first + timedelta(hours=3),
    ]
    # 12:00-13:00 is the lunch break: the fifth goes to 13:00, not 12:00.
    assert [bay for _, bay in slots][:4] == [0, 1, 0, 1]


def test_opening_hours_are_the_centers_local_time(engine: Engine, db_settings: Settings) -> None:
    # A Tokyo center open 09:00-10:00 with one bay: one booking per day, always 09:00 JST.
    add_center(
        engine,
        at=(35.68, 139.69),
        bays=1,
        time_zone="Asia/Tokyo",
        hours={d: ["09:00-10:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat")},
    )
    vins = [add_vehicle(engine, at=(35.7, 139.7)) for _ in range(3)]
    bookings = [
        apply(engine, db_settings, signal(v, due_in=timedelta(days=10), now=MONDAY), MONDAY)
        for v in vins
    ]
    starts = [b.slot_start for b in bookings if b is not None and b.slot_start is not None]
    assert len(starts) == 3
    # 09:00 JST is 00:00 UTC; MONDAY is 06:00 UTC, so Monday's slot has passed.
    assert starts == [datetime(2030, 6, d, 0, 0, tzinfo=UTC) for d in (4, 5, 6)]
    with session_scope(engine) as session:
        reads = service.list_bookings(session, vin=vins[0])
    assert reads[0].slot_local == "2030-06-04 09:00 Asia/Tokyo"


def test_nearest_capable_center_with_a_slot_before_the_due_date(
    engine: Engine, db_settings: Settings
) -> None:
    no_cooling = add_center(engine, at=BERLIN, capabilities=("tires",))
    potsdam = add_center(engine, at=POTSDAM, bays=1)
    hamburg = add_center(engine, at=HAMBURG, bays=1)
    vin = add_vehicle(engine, at=(52.50, 13.30))
    booking = apply(engine, db_settings, signal(vin, now=MONDAY), MONDAY)
    assert booking is not None
    assert booking.center_id == potsdam.id != no_cooling.id
    assert booking.distance_km is not None and 10 < booking.distance_km < 25
    assert not booking.after_due
    # Hamburg is 260 km away: beyond services_max_distance_km (150), never proposed.
    assert hamburg.id not in {booking.center_id}

    # Fill Potsdam up to the due date: the next one gets the earliest slot after it.
    for _ in range(30):
        apply(engine, db_settings, signal(add_vehicle(engine), now=MONDAY), MONDAY)
    late = apply(engine, db_settings, signal(add_vehicle(engine), now=MONDAY), MONDAY)
    assert late is not None and late.center_id == potsdam.id
    assert late.after_due and late.slot_end is not None and late.slot_end > late.due_by


def test_replayed_signal_changes_nothing(engine: Engine, db_settings: Settings) -> None:
    add_center(engine)
    vin = add_vehicle(engine)
    sig = signal(vin, now=MONDAY)
    first = apply(engine, db_settings, sig, MONDAY)
    assert first is not None
    assert apply(engine, db_settings, sig, MONDAY) is None
    with session_scope(engine) as session:
        booking = repository.get_booking(session, first.id)
        assert booking is not None and len(booking.evidence) == 1 and booking.version == 1
    assert [e.type for e in events_of(engine, first.id)] == ["booking.created"]


def test_worsening_issue_escalates_the_same_booking(engine: Engine, db_settings: Settings) -> None:
    add_center(engine, bays=1)
    vin = add_vehicle(engine)
    # A 30-day prediction first: low urgency, a slot late in the window.
    early = apply(
        engine,
        db_settings,
        signal(vin, urgency=Urgency.low, due_in=timedelta(days=14), now=MONDAY),
        MONDAY,
    )
    assert early is not None
    # Other vehicles fill the first days, so the low-urgency booking is not at the front.
    assert early.slot_start is not None
    # Then a critical alarm for the same issue: the same booking, now critical, due in 1 day.
    later = MONDAY + timedelta(hours=1)
    for _ in range(3):
        apply(
            engine,
            db_settings,
            signal(add_vehicle(engine), "lv_battery", due_in=timedelta(days=14), now=later),
            later,
        )
    critical = apply(
        engine,
        db_settings,
        signal(vin, urgency=Urgency.critical, due_in=timedelta(days=1), now=later),
        later,
    )
    assert critical is not None and critical.id == early.id
    assert critical.urgency == "critical" and critical.escalations == 1
    assert critical.due_by == later + timedelta(days=1)
    assert len(critical.evidence) == 2
    with session_scope(engine) as session:
        open_ = repository.list_bookings(session, vin=vin)
        notes = repository.list_notifications(session, vin)
    assert len(open_) == 1
    assert [e.type for e in events_of(engine, early.id)] == ["booking.created", "booking.escalated"]
    assert notes[0].kind == "escalated" and "Please stop driving" in notes[0].body
    # A weaker signal afterwards adds evidence but does not de-escalate.
    weaker = MONDAY + timedelta(hours=2)
    again = apply(
        engine,
        db_settings,
        signal(vin, urgency=Urgency.medium, due_in=timedelta(days=7), now=weaker),
        weaker,
    )
    assert again is not None and again.urgency == "critical" and again.escalations == 1


def test_escalation_moves_a_too_late_slot_earlier(engine: Engine, db_settings: Settings) -> None:
    center = add_center(engine, bays=1)
    vin = add_vehicle(engine)
    # Book a slot far ahead: the first 2 days are taken by others at first...
    blockers = []
    for _ in range(16):
        b = apply(
            engine,
            db_settings,
            signal(add_vehicle(engine), "lv_battery", due_in=timedelta(days=14), now=MONDAY),
            MONDAY,
        )
        assert b is not None
        blockers.append(b)
    low = apply(
        engine,
        db_settings,
        signal(vin, urgency=Urgency.low, due_in=timedelta(days=14), now=MONDAY),
        MONDAY,
    )
    assert low is not None and low.slot_start is not None
    assert low.slot_start >= MONDAY + timedelta(days=2)
    # ... then one of those early bookings is cancelled, and the issue turns critical.
    with session_scope(engine) as session:
        service.cancel(session, blockers[0].id, "customer sold the car")
    critical = apply(
        engine,
        db_settings,
        signal(vin, urgency=Urgency.critical, due_in=timedelta(days=1), now=MONDAY),
        MONDAY,
    )
    assert critical is not None and critical.center_id == center.id
    assert critical.slot_start == blockers[0].slot_start
    assert critical.state == "proposed" and not critical.after_due


def test_without_a_capable_center_the_booking_waits_and_is_placed_later(
    engine: Engine, db_settings: Settings
) -> None:
    add_center(engine, capabilities=("tires",))
    vin = add_vehicle(engine)
    waiting = apply(engine, db_settings, signal(vin, now=MONDAY), MONDAY)
    assert waiting is not None and waiting.state == "unassigned" and waiting.center_id is None
    with session_scope(engine) as session:
        note = repository.list_notifications(session, vin)[0]
    assert "not found a service center" in note.body
    add_center(engine, capabilities=("cooling",))
    with session_scope(engine) as session:
        assert service.retry_unassigned(session, db_settings, MONDAY) >= 1  # shared DB: maybe more
        booking = repository.get_booking(session, waiting.id)
    assert booking is not None and booking.state == "proposed"
    assert [e.type for e in events_of(engine, waiting.id)] == ["booking.created"]


def test_decline_moves_the_issue_to_the_next_center(engine: Engine, db_settings: Settings) -> None:
    near = add_center(engine, at=BERLIN)
    far = add_center(engine, at=POTSDAM)
    vin = add_vehicle(engine, at=BERLIN)
    booking = apply(engine, db_settings, signal(vin, now=MONDAY), MONDAY)
    assert booking is not None and booking.center_id == near.id
    with session_scope(engine) as session:
        declined, follow = service.decline(session, db_settings, near, booking.id, "no parts")
    assert declined.state == "declined" and declined.decline_reason == "no parts"
    assert follow.center_id == far.id and follow.state == "proposed"
    assert follow.previous_booking_id == booking.id and follow.evidence == booking.evidence
    with session_scope(engine) as session:
        _, last = service.decline(session, db_settings, far, follow.id, "fully booked")
    assert last.state == "unassigned"  # never offered back to a center that declined it
    with session_scope(engine) as session, pytest.raises(Conflict):
        service.accept(session, near, booking.id)


def test_center_actions_follow_the_state_machine(engine: Engine, db_settings: Settings) -> None:
    center = add_center(engine, bays=1)
    vin = add_vehicle(engine, odometer_m=42_000_000.0)
    booking = apply(engine, db_settings, signal(vin, now=MONDAY), MONDAY)
    assert booking is not None and booking.slot_start is not None
    work = CompleteIn(
        parts_replaced=["engine.coolant_pump"], codes_cleared=["P0217"], odometer_km=42_100
    )
    with session_scope(engine) as session, pytest.raises(Conflict, match="accept the booking"):
        service.complete(session, center, booking.id, work)
    grid = service.grid_of(center)
    now = datetime.now(UTC)
    slots = list(grid.slots(now + timedelta(days=1), now + timedelta(days=8)))
    with session_scope(engine) as session:
        with pytest.raises(ValidationFailed):
            service.reschedule(session, center, booking.id, slots[0] + timedelta(minutes=7))
        moved = service.reschedule(session, center, booking.id, slots[0])
        assert moved.state == "accepted" and moved.slot_start == slots[0]
    other = apply(engine, db_settings, signal(add_vehicle(engine), now=MONDAY), MONDAY)
    assert other is not None
    with session_scope(engine) as session:
        with pytest.raises(Conflict, match="fully booked"):  # one bay, already ours
            service.reschedule(session, center, other.id, slots[0])
        service.accept(session, center, booking.id)  # accepting twice is harmless
        done = service.complete(session, center, booking.id, work)
        assert done.state == "completed" and done.outcome is not None
        outcomes = session.exec(select(ServiceOutcome).where(ServiceOutcome.vin == vin)).all()
        baseline = session.get(__import__("services.models").models.VehicleServiceBaseline, vin)
        with pytest.raises(Conflict, match="already completed"):
            service.complete(session, center, booking.id, work)
    assert [(o.part, o.codes_cleared) for o in outcomes] == [("engine.coolant_pump", ["P0217"])]
    assert outcomes[0].found_at == MONDAY
    assert baseline is not None and baseline.from_service and baseline.odometer_m == 42_100_000


def test_routine_service_by_distance(engine: Engine, db_settings: Settings) -> None:
    add_center(engine, capabilities=("general",))
    vin = add_vehicle(engine, odometer_m=10_000_000.0)
    now = datetime.now(UTC)
    with session_scope(engine) as session:
        assert [
            s.vin for s in service.due_routine_services(session, db_settings, now) if s.vin == vin
        ] == []  # first sight: the baseline is set
        status = session.get(VehicleStatus, vin)
        assert status is not None
        status.odometer_m = 10_000_000.0 + 15_001_000.0
        session.add(status)
    with session_scope(engine) as session:
        due = [s for s in service.due_routine_services(session, db_settings, now) if s.vin == vin]
    assert len(due) == 1 and due[0].evidence["reason"] == "distance"
    booking = apply(engine, db_settings, due[0], now)
    assert booking is not None and booking.issue_key == "routine"
    assert booking.urgency == "routine" and booking.kind == "routine"
    assert apply(engine, db_settings, due[0], now) is None  # the next check does not duplicate


def test_owner_notification_explains_in_plain_words(engine: Engine, db_settings: Settings) -> None:
    center = add_center(engine)
    vin = add_vehicle(engine)
    sig = signal(vin, urgency=Urgency.critical, due_in=timedelta(days=1), now=MONDAY)
    sig.evidence["text"] = "Engine coolant at 121.0 C, above 110 C for 45 s"
    booking = apply(engine, db_settings, sig, MONDAY)
    assert booking is not None
    with session_scope(engine) as session:
        note = session.exec(select(OwnerNotification).where(OwnerNotification.vin == vin)).one()
    assert note.title == "Service needed: the engine cooling system (coolant pump)"
    assert "Why: Engine coolant at 121.0 C" in note.body
    assert f"{center.name}" in note.body and "Monday 03 June at 10:00 (local time)" in note.body
    assert "stop driving" in note.body


def test_no_double_booking_under_concurrent_requests(engine: Engine, db_settings: Settings) -> None:
    """Many transactions place bookings at one small center at the same moment; the database
    must end with every slot's bookings on distinct bays and never above capacity."""
    center = add_center(engine, bays=2, slot_minutes=60)
    vins = [add_vehicle(engine) for _ in range(24)]
    barrier = threading.Barrier(len(vins))
    errors: list[BaseException] = []

    def book(vin: str) -> None:
        try:
            barrier.wait(timeout=30)
            with Session(engine, expire_on_commit=False) as session:
                service.apply_signal(session, db_settings, signal(vin, now=MONDAY), MONDAY)
                session.commit()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=book, args=(vin,)) for vin in vins]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    with session_scope(engine) as session:
        rows = session.exec(select(Booking).where(col(Booking.vin).in_(vins))).all()
    assert [(b.state, b.center_id) for b in rows] == [("proposed", center.id)] * len(vins)
    per_slot = Counter(b.slot_start for b in rows)
    assert max(per_slot.values()) <= center.bays
    assert len({(b.slot_start, b.bay) for b in rows}) == len(rows)
    # And capacity is used, not wasted: 24 bookings in 2 bays fill exactly 12 slots.
    assert len(per_slot) == 12


def _count(engine: Engine, model: Any, **where: Any) -> int:
    with session_scope(engine) as session:
        query = select(model)
        for name, value in where.items():
            query = query.where(getattr(model, name) == value)
        return len(session.exec(query).all())
