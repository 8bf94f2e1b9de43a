"""UBI results in the database: storing trips and events with their scores, the period score
of a vehicle, and disputes.

The period score covers the ``ubi_period_days`` ending at the end of the vehicle's latest trip
(not the wall clock), so the same trips give the same score whenever it is computed: by the
``ubi`` worker after each checkpoint, after a dispute, or by ``fleet score ubi --archive`` from
the Parquet archive (``ubi/batch.py``), which uses these same functions.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from core import audit
from core.db import utcnow, write_lock
from core.errors import Conflict, NotFound
from ubi import repository
from ubi.events import DrivingEvent, EventType
from ubi.models import UbiEvent, UbiTrip
from ubi.scoring import PeriodScore, ScoreParams, assign_events, score_period, score_trip
from ubi.trips import Trip

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


def to_ms(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


def event_id(event: DrivingEvent) -> str:
    return f"{event.vin}:{event.type.value}:{event.start_ms}"


# -- rows <-> analytic objects ---------------------------------------------------------------
def trip_row(trip: Trip, events: Sequence[DrivingEvent], params: ScoreParams) -> dict[str, Any]:
    return {
        "trip_id": trip.trip_id,
        "vin": trip.vin,
        "start_at": to_dt(trip.start_ms),
        "end_at": to_dt(trip.end_ms),
        "start_local": trip.start_local,
        "end_local": trip.end_local,
        "time_zone": trip.time_zone,
        "distance_m": trip.distance_m,
        "distance_source": trip.distance_source,
        "duration_s": trip.duration_s,
        "moving_s": trip.moving_s,
        "idle_s": trip.idle_s,
        "night_s": trip.night_s,
        "speeding_s": trip.speeding_s,
        "night_share": trip.night_share,
        "speeding_share": trip.speeding_share,
        "speed_limit_source": trip.speed_limit_source,
        "samples": trip.samples,
        "score": score_trip(trip, events, params).as_dict(),
        "updated_at": utcnow(),
    }


def trip_from_row(row: UbiTrip) -> Trip:
    return Trip(
        vin=row.vin,
        trip_id=row.trip_id,
        start_ms=to_ms(row.start_at),
        end_ms=to_ms(row.end_at),
        start_local=row.start_local,
        end_local=row.end_local,
        time_zone=row.time_zone,
        distance_m=row.distance_m,
        distance_source=row.distance_source,
        duration_s=row.duration_s,
        moving_s=row.moving_s,
        idle_s=row.idle_s,
        night_s=row.night_s,
        speeding_s=row.speeding_s,
        night_share=row.night_share,
        speeding_share=row.speeding_share,
        speed_limit_source=row.speed_limit_source,
        samples=row.samples,
    )


def event_row(event: DrivingEvent, trip_id: str | None) -> dict[str, Any]:
    return {
        "event_id": event_id(event),
        "vin": event.vin,
        "trip_id": trip_id,
        "type": event.type.value,
        "start_at": to_dt(event.start_ms),
        "end_at": to_dt(event.end_ms),
        "peak_mps2": event.peak_mps2,
        "severity": event.severity,
        "source": event.source,
    }


def event_from_row(row: UbiEvent) -> DrivingEvent:
    return DrivingEvent(
        vin=row.vin,
        type=EventType(row.type),
        start_ms=to_ms(row.start_at),
        end_ms=to_ms(row.end_at),
        peak_mps2=row.peak_mps2,
        severity=row.severity,
        source=row.source,
    )


# -- storing results ------------------------------------------------------------------------------
def store_results(
    session: Session,
    trips: Sequence[Trip],
    events: Sequence[DrivingEvent],
    *,
    period_days: int,
    params: ScoreParams | None = None,
) -> set[str]:
    """Store new trips and events (idempotent), rescore every trip that gained an event, and
    recompute the period score of the vehicles concerned; returns those VINs."""
    params = params or ScoreParams()
    if not trips and not events:
        return set()
    # Trips that already exist and contain one of the new events are rescored too (an event
    # may be decided after its trip ended).
    known = {t.trip_id: t for t in trips}
    by_vin: dict[str, list[int]] = {}
    for event in events:
        by_vin.setdefault(event.vin, []).append(event.start_ms)
    for vin, starts in by_vin.items():
        rows = repository.trips_between(
            session,
            vin,
            to_dt(min(starts)) - timedelta(days=2),
            to_dt(max(starts)) + timedelta(milliseconds=1),
        )
        for row in rows:
            begin, end = to_ms(row.start_at), to_ms(row.end_at)
            if any(begin <= start <= end for start in starts):
                known.setdefault(row.trip_id, trip_from_row(row))
    affected = sorted(known.values(), key=lambda t: (t.vin, t.start_ms))
    # Events of those trips: the new ones plus those stored before (without their trip then).
    pool: dict[str, DrivingEvent] = {event_id(e): e for e in events}
    for trip in affected:
        for stored in repository.events_between(
            session, trip.vin, to_dt(trip.start_ms), to_dt(trip.end_ms)
        ):
            pool.setdefault(stored.event_id, event_from_row(stored))
    by_trip = assign_events(affected, pool.values())
    owner = {event_id(e): trip_id for trip_id, evs in by_trip.items() for e in evs}
    repository.upsert_events(
        session, [event_row(e, owner.get(key)) for key, e in sorted(pool.items())]
    )
    repository.upsert_trips(session, [trip_row(t, by_trip[t.trip_id], params) for t in affected])
    vins = {t.vin for t in affected} | {e.vin for e in events}
    for vin in sorted(vins):
        refresh_period_score(session, vin, period_days=period_days, params=params)
    return vins


def period_score(
    trips: Iterable[Trip],
    events: Iterable[DrivingEvent],
    vin: str,
    *,
    period_days: int,
    excluded: frozenset[str] = frozenset(),
    params: ScoreParams | None = None,
) -> PeriodScore | None:
    """The score over the ``period_days`` ending when the vehicle's latest trip ended (None
    without trips)."""
    trips = [t for t in trips if t.vin == vin]
    if not trips:
        return None
    end_ms = max(t.end_ms for t in trips) + 1
    start_ms = end_ms - period_days * 86_400_000
    return score_period(
        vin,
        trips,
        events,
        period_start_ms=start_ms,
        period_end_ms=end_ms,
        excluded_trip_ids=excluded,
        params=params or ScoreParams(),
    )


def score_row(score: PeriodScore, period_days: int) -> dict[str, Any]:
    return {
        "vin": score.vin,
        "period_days": period_days,
        "period_start": score.period_start,
        "period_end": score.period_end,
        "score": score.score,
        "score_low": score.score_low,
        "score_high": score.score_high,
        "data_sufficient": score.data_sufficient,
        "score_version": score.score_version,
        "payload": score.as_dict(),
        "computed_at": utcnow(),
    }


def refresh_period_score(
    session: Session, vin: str, *, period_days: int, params: ScoreParams | None = None
) -> PeriodScore | None:
    """Recompute and store the vehicle's period score from its stored trips and events."""
    end = repository.latest_trip_end(session, vin)
    if end is None:
        return None
    start = end - timedelta(days=period_days)
    rows = repository.trips_between(session, vin, start, end + timedelta(milliseconds=1))
    trips = [trip_from_row(r) for r in rows]
    excluded = frozenset(r.trip_id for r in rows if r.disputed_at is not None)
    events = [
        event_from_row(r)
        for r in repository.events_between(session, vin, start, end + timedelta(milliseconds=1))
    ]
    score = period_score(
        trips, events, vin, period_days=period_days, excluded=excluded, params=params
    )
    if score is not None:
        repository.upsert_scores(session, [score_row(score, period_days)])
    return score


# -- disputes -------------------------------------------------------------------------------------
def _locked_trip(session: Session, vin: str, trip_id: str) -> UbiTrip:
    write_lock(session)
    trip = repository.get_trip(session, trip_id, for_update=True)
    if trip is None or trip.vin != vin:
        raise NotFound(f"vehicle {vin} has no trip {trip_id!r}")
    return trip


def dispute_trip(
    session: Session,
    vin: str,
    trip_id: str,
    *,
    reason: str,
    actor: str,
    period_days: int,
) -> tuple[UbiTrip, PeriodScore | None]:
    """Mark a trip as not driven by the insured driver (a passenger trip); the period score is
    recomputed without it at once. Disputing again is a no-op; 409 if it was disputed for a
    different reason."""
    trip = _locked_trip(session, vin, trip_id)
    if trip.disputed_at is not None:
        if trip.dispute_reason != reason:
            raise Conflict(
                f"trip {trip_id} is already disputed ({trip.dispute_reason!r}, "
                f"{trip.disputed_at.isoformat()})"
            )
    else:
        trip.disputed_at = utcnow()
        trip.dispute_reason = reason
        trip.disputed_by = actor
        session.add(trip)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="ubi.trip_disputed",
            subject=f"vehicle:{vin}",
            details={"trip_id": trip_id, "reason": reason},
        )
    score = refresh_period_score(session, vin, period_days=period_days)
    return trip, score


def withdraw_dispute(
    session: Session, vin: str, trip_id: str, *, actor: str, period_days: int
) -> tuple[UbiTrip, PeriodScore | None]:
    trip = _locked_trip(session, vin, trip_id)
    if trip.disputed_at is not None:
        trip.disputed_at = trip.dispute_reason = trip.disputed_by = None
        session.add(trip)
        session.flush()
        audit.record(
            session,
            actor=actor,
            action="ubi.dispute_withdrawn",
            subject=f"vehicle:{vin}",
            details={"trip_id": trip_id},
        )
    return trip, refresh_period_score(session, vin, period_days=period_days)
