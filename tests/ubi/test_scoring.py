"""UBI scores: known answers, monotonicity, shrinking intervals, reproducibility, disputes."""

from __future__ import annotations

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ubi.events import DrivingEvent, EventType
from ubi.scoring import (
    SCORE_VERSION,
    PeriodScore,
    ScoreParams,
    assign_events,
    score_period,
    score_trip,
)
from ubi.trips import Trip

VIN = "WVWZZZ1JZXW000001"
OTHER_VIN = "WVWZZZ1JZXW000002"
DAY_MS = 86_400_000
T0 = 1_709_251_200_000  # 2024-03-01T00:00:00Z
PERIOD_START_MS, PERIOD_END_MS = T0, T0 + 30 * DAY_MS
Z95 = 1.959963984540054


def _trip(
    day: int,
    *,
    km: float = 50.0,
    hours: float = 1.0,
    night_s: float = 0.0,
    speeding_s: float = 0.0,
    vin: str = VIN,
    start_ms: int | None = None,
) -> Trip:
    start = T0 + day * DAY_MS + 8 * 3_600_000 if start_ms is None else start_ms
    duration_s = hours * 3600.0
    return Trip(
        vin=vin,
        trip_id=f"{vin}:{start}",
        start_ms=start,
        end_ms=start + round(duration_s * 1000),
        start_local="",
        end_local="",
        time_zone="UTC",
        distance_m=km * 1000.0,
        distance_source="odometer",
        duration_s=duration_s,
        moving_s=duration_s,
        idle_s=0.0,
        night_s=night_s,
        speeding_s=speeding_s,
        night_share=night_s / duration_s if duration_s else 0.0,
        speeding_share=speeding_s / duration_s if duration_s else 0.0,
        speed_limit_source="fallback",
        samples=100,
    )


def _event(
    trip: Trip,
    kind: EventType = EventType.HARSH_BRAKING,
    *,
    severity: int = 1,
    offset_ms: int = 60_000,
) -> DrivingEvent:
    start = trip.start_ms + offset_ms
    return DrivingEvent(trip.vin, kind, start, start + 2000, 4.0, severity, "accelerometer")


def _period(
    trips: list[Trip], events: list[DrivingEvent], excluded_trip_ids: frozenset[str] = frozenset()
) -> PeriodScore:
    return score_period(
        VIN,
        trips,
        events,
        period_start_ms=PERIOD_START_MS,
        period_end_ms=PERIOD_END_MS,
        excluded_trip_ids=excluded_trip_ids,
    )


def _week(km: float = 50.0) -> list[Trip]:
    return [_trip(day, km=km) for day in range(5)]


# -- known answers ------------------------------------------------------------------------------
def test_clean_driving_gives_raw_100_and_credibility_weighted_score() -> None:
    result = _period(_week(), [])
    assert result.raw_score == 100.0
    assert set(result.sub_scores.values()) == {100.0}
    z = 250 / (250 + 500)
    assert result.credibility == round(z, 4)
    assert result.score == round(z * 100 + (1 - z) * 75, 2)  # 83.33
    assert result.reasons == []
    assert result.score_version == SCORE_VERSION
    assert (result.distance_km, result.hours, result.trips) == (250.0, 5.0, 5)


def test_one_moderate_brake_in_exactly_100_km() -> None:
    trip = _trip(0, km=100.0)
    result = score_trip(trip, [_event(trip)])
    assert result.rates_per_100km["harsh_braking"] == 1.0
    assert result.sub_scores["braking"] == round(100 * math.exp(-1 / 5), 2) == 81.87
    raw = 0.3 * 100 * math.exp(-1 / 5) + 0.7 * 100
    assert result.raw_score == round(raw, 2)
    z = 100 / 600
    assert result.score == round(z * raw + (1 - z) * 75, 2)
    [reason] = result.reasons
    assert reason.code == "HARSH_BRAKING"
    assert reason.points_lost == round(z * 0.3 * (100 - 100 * math.exp(-1 / 5)), 2)
    assert "1 event" in reason.text and "100.0 km" in reason.text


def test_severity_counts_as_its_weight() -> None:
    trip = _trip(0, km=100.0)
    severe = score_trip(trip, [_event(trip, severity=3)])
    three = score_trip(trip, [_event(trip, offset_ms=k * 120_000) for k in range(1, 4)])
    assert severe.weighted_event_counts["harsh_braking"] == 3
    assert severe.event_counts["harsh_braking"] == 1
    assert severe.sub_scores == three.sub_scores
    assert severe.rates_per_100km["harsh_braking"] == 3.0


def test_speeding_and_night_shares() -> None:
    trips = [_trip(d, hours=1.0, speeding_s=360.0, night_s=720.0) for d in range(5)]
    result = _period(trips, [])
    assert result.speeding_share == 0.1
    assert result.night_share == 0.2
    assert result.sub_scores["speeding"] == round(100 * math.exp(-1), 2)
    assert result.sub_scores["night"] == round(100 * math.exp(-1), 2)


def test_zero_distance_gives_the_prior_with_the_prior_interval() -> None:
    parked = _trip(0, km=0.0, hours=0.0)
    for result in (score_trip(parked, [_event(parked, offset_ms=0)]), _period([], [])):
        assert result.score == 75.0
        assert result.raw_score is None
        assert result.credibility == 0.0
        assert set(result.sub_scores.values()) == {None}
        assert (result.score_low, result.score_high) == (
            round(75 - Z95 * 12, 2),
            round(75 + Z95 * 12, 2),
        )
        assert not result.data_sufficient
        assert result.insufficient_reasons == [
            "INSUFFICIENT_DISTANCE",
            "INSUFFICIENT_TRIPS",
            "INSUFFICIENT_DRIVING_TIME",
        ]
        assert result.reasons == []
        json.dumps(result.as_dict())


# -- sufficiency ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trips", "reasons"),
    [
        ([_trip(d, km=15.0, hours=0.5) for d in range(5)], ["INSUFFICIENT_DISTANCE"]),
        ([_trip(d, km=60.0, hours=1.5) for d in range(2)], ["INSUFFICIENT_TRIPS"]),
        ([_trip(d, km=30.0, hours=0.3) for d in range(5)], ["INSUFFICIENT_DRIVING_TIME"]),
        ([_trip(d, km=30.0, hours=0.5) for d in range(5)], []),
    ],
)
def test_sufficiency_flags(trips: list[Trip], reasons: list[str]) -> None:
    result = _period(trips, [])
    assert result.insufficient_reasons == reasons
    assert result.data_sufficient == (not result.insufficient_reasons)


def test_sufficiency_at_the_minimums_exactly() -> None:
    result = _period([_trip(d, km=20.0, hours=0.4) for d in range(5)], [])
    assert result.distance_km == 100.0
    assert result.hours == 2.0
    assert result.data_sufficient
    assert not _period(_week()[:4], []).data_sufficient


# -- reason codes -------------------------------------------------------------------------------
def test_reasons_ordered_by_points_lost_and_at_most_three() -> None:
    trips = [_trip(d, km=100.0, hours=2.0, speeding_s=360.0, night_s=144.0) for d in range(5)]
    events = [_event(t, EventType.HARSH_BRAKING, severity=3) for t in trips]
    events += [_event(trips[0], EventType.HARSH_CORNERING, offset_ms=300_000)]
    result = _period(trips, events)
    codes = [r.code for r in result.reasons]
    assert codes == ["HARSH_BRAKING", "SPEEDING", "NIGHT_DRIVING"]  # cornering cut off
    points = [r.points_lost for r in result.reasons]
    assert points == sorted(points, reverse=True)
    z = result.credibility
    braking = result.sub_scores["braking"]
    assert braking is not None
    assert result.reasons[0].points_lost == pytest.approx(z * 0.3 * (100 - braking), abs=0.02)


def test_reason_points_add_up_with_the_prior_share() -> None:
    trips = _week(km=100.0)
    events = [_event(trips[0], EventType.HARSH_ACCELERATION)]
    result = _period(trips, events)
    z = 500 / 1000
    [reason] = result.reasons
    assert reason.code == "HARSH_ACCELERATION"
    assert 100 - result.score == pytest.approx(reason.points_lost + (1 - z) * 25, abs=0.02)


# -- assignment, disputes, selection -------------------------------------------------------------
def test_assign_events_by_vin_and_inclusive_window() -> None:
    first, second = _trip(0), _trip(1)
    at_start = _event(first, offset_ms=0)
    at_end = _event(first, offset_ms=first.end_ms - first.start_ms)
    after = _event(first, offset_ms=first.end_ms - first.start_ms + 1)
    other = DrivingEvent(OTHER_VIN, EventType.HARSH_BRAKING, second.start_ms + 1, 0, 4.0, 1, "x")
    assigned = assign_events([second, first], [after, other, at_end, at_start])
    assert assigned == {first.trip_id: [at_start, at_end], second.trip_id: []}


def test_events_outside_trips_are_ignored_and_counted() -> None:
    trips = _week()
    inside = [_event(trips[1])]
    between = _event(trips[1], offset_ms=5 * 3_600_000)  # after the trip ended
    other_vin = DrivingEvent(OTHER_VIN, EventType.HARSH_BRAKING, trips[2].start_ms, 0, 4.0, 1, "x")
    before_period = _event(trips[0], offset_ms=-2 * DAY_MS)
    base = _period(trips, inside)
    noisy = _period(trips, [*inside, between, other_vin, before_period])
    assert noisy.unassigned_events == 1
    assert base.unassigned_events == 0
    assert {**noisy.as_dict(), "unassigned_events": 0} == base.as_dict()
    lone = score_trip(trips[1], [*inside, between, other_vin])
    assert lone.as_dict() == score_trip(trips[1], inside).as_dict()


def test_disputed_trips_are_left_out_with_their_events() -> None:
    trips = [*_week(), _trip(5, km=80.0, night_s=3600.0)]
    disputed = trips[-1]
    events = [_event(trips[0]), _event(disputed, severity=3), _event(disputed, offset_ms=90_000)]
    excluded = _period(trips, events, excluded_trip_ids=frozenset({disputed.trip_id}))
    without = _period(trips[:-1], events[:1])
    assert excluded.disputed_trips == 1
    assert excluded.unassigned_events == 0
    assert {**excluded.as_dict(), "disputed_trips": 0} == without.as_dict()
    assert excluded.score > _period(trips, events).score


def test_disputed_ids_outside_the_period_are_not_counted() -> None:
    result = _period(_week(), [], excluded_trip_ids=frozenset({"nope", _trip(40).trip_id}))
    assert result.disputed_trips == 0


def test_period_takes_trips_by_start_in_half_open_interval() -> None:
    at_start = _trip(0, start_ms=T0)
    before = _trip(0, start_ms=T0 - 1)
    at_end = _trip(0, start_ms=PERIOD_END_MS)
    other = _trip(1, vin=OTHER_VIN)
    result = _period([before, at_start, at_end, other], [_event(before), _event(at_end)])
    assert result.trips == 1
    assert result.event_counts["harsh_braking"] == 0
    as_dict = result.as_dict()
    assert as_dict["period_start"] == "2024-03-01T00:00:00.000Z"
    assert as_dict["period_end"] == "2024-03-31T00:00:00.000Z"


def test_replayed_events_count_once_and_conflicting_trip_ids_fail() -> None:
    trips = _week()
    event = _event(trips[0])
    assert _period(trips, [event, event]).as_dict() == _period(trips, [event]).as_dict()
    clash = _trip(0, km=1.0)
    with pytest.raises(ValueError, match="share the id"):
        _period([*trips, clash], [])


def test_params_are_validated() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        ScoreParams(night_weight=0.5)
    with pytest.raises(ValueError, match="scales"):
        ScoreParams(braking_scale=0.0)


# -- properties -----------------------------------------------------------------------------------
_KINDS = st.sampled_from(list(EventType))


@st.composite
def _driving(draw: st.DrawFn) -> tuple[list[Trip], list[DrivingEvent]]:
    trips: list[Trip] = []
    events: list[DrivingEvent] = []
    for day in range(draw(st.integers(0, 8))):
        hours = draw(st.floats(0.0, 3.0))
        trip = _trip(
            day,
            km=draw(st.floats(0.0, 250.0)),
            hours=hours,
            speeding_s=draw(st.floats(0.0, 1.0)) * hours * 3600,
            night_s=draw(st.floats(0.0, 1.0)) * hours * 3600,
        )
        trips.append(trip)
        span = trip.end_ms - trip.start_ms
        for _ in range(draw(st.integers(0, 6))):
            offset = draw(st.integers(0, span))
            kind, severity = draw(_KINDS), draw(st.integers(1, 3))
            events.append(_event(trip, kind, severity=severity, offset_ms=offset))
    return trips, events


@settings(max_examples=150, deadline=None)
@given(_driving(), st.randoms(use_true_random=False))
def test_shuffled_inputs_give_identical_results(
    driving: tuple[list[Trip], list[DrivingEvent]], rng: random.Random
) -> None:
    trips, events = driving
    shuffled_trips, shuffled_events = trips[:], events[:]
    rng.shuffle(shuffled_trips)
    rng.shuffle(shuffled_events)
    expected = _period(trips, events).as_dict()
    assert _period(shuffled_trips, shuffled_events).as_dict() == expected
    assert json.dumps(expected) == json.dumps(_period(trips, events).as_dict())
    for trip in trips[:2]:
        assert score_trip(trip, shuffled_events) == score_trip(trip, events)


@settings(max_examples=200, deadline=None)
@given(_driving())
def test_interval_contains_score_within_bounds(
    driving: tuple[list[Trip], list[DrivingEvent]],
) -> None:
    trips, events = driving
    results = [_period(trips, events)] + [score_trip(t, events) for t in trips]
    for result in results:
        assert 0 <= result.score_low <= result.score <= result.score_high <= 100
        if result.raw_score is not None:
            assert 0 <= result.raw_score <= 100
        assert len(result.reasons) <= 3
        json.dumps(result.as_dict())


@settings(max_examples=200, deadline=None)
@given(_driving(), _KINDS, st.integers(1, 3), st.data())
def test_another_event_never_raises_the_score(
    driving: tuple[list[Trip], list[DrivingEvent]],
    kind: EventType,
    severity: int,
    data: st.DataObject,
) -> None:
    trips, events = driving
    if not trips:
        return
    trip = data.draw(st.sampled_from(trips))
    offset = data.draw(st.integers(0, trip.end_ms - trip.start_ms))
    extra = _event(trip, kind, severity=severity, offset_ms=offset)
    before, after = _period(trips, events), _period(trips, [*events, extra])
    assert after.score <= before.score
    if before.raw_score is not None and after.raw_score is not None:
        assert after.raw_score <= before.raw_score
    assert score_trip(trip, [*events, extra]).score <= score_trip(trip, events).score


@settings(max_examples=150, deadline=None)
@given(
    km=st.floats(5.0, 200.0),
    speed_kmh=st.floats(20.0, 130.0),
    speeding=st.floats(0.0, 0.5),
    night=st.floats(0.0, 0.5),
    per_trip=st.lists(st.tuples(_KINDS, st.integers(1, 3)), max_size=5),
    copies=st.integers(1, 20),
)
def test_interval_shrinks_with_exposure_at_the_same_rates(
    km: float,
    speed_kmh: float,
    speeding: float,
    night: float,
    per_trip: list[tuple[EventType, int]],
    copies: int,
) -> None:
    """Repeating the same trip (same rates, more exposure) narrows the interval."""

    def repeated(n: int) -> PeriodScore:
        hours = km / speed_kmh
        trips = [
            _trip(
                d,
                km=km,
                hours=hours,
                speeding_s=speeding * hours * 3600,
                night_s=night * hours * 3600,
            )
            for d in range(n)
        ]
        events = [
            _event(t, kind, severity=sev, offset_ms=1000 * (i + 1))
            for t in trips
            for i, (kind, sev) in enumerate(per_trip)
        ]
        return _period(trips, events)

    fewer, more = repeated(copies), repeated(copies + 1)
    assert more.interval_half_width < fewer.interval_half_width
    assert more.credibility > fewer.credibility
    if fewer.score_high < 100 and fewer.score_low > 0:
        assert more.score_high - more.score_low <= fewer.score_high - fewer.score_low
