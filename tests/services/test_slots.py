"""Service-center slots: opening hours parsing, the slot grid across time zones and DST changes,
first free slot and bay, and great-circle distances."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import assume, given, reject, settings
from hypothesis import strategies as st

from services.geo import EARTH_RADIUS_KM, check_coordinates, haversine_km
from services.slots import (
    END_OF_DAY,
    WEEKDAYS,
    OpeningHours,
    OpeningHoursError,
    SlotGrid,
)

BERLIN = ZoneInfo("Europe/Berlin")
WORKSHOP_SPEC = {
    "mon": ["08:00-12:00", "13:00-17:00"],
    "tue": ["08:00-12:00", "13:00-17:00"],
    "wed": ["08:00-12:00", "13:00-17:00"],
    "thu": ["08:00-12:00", "13:00-17:00"],
    "fri": ["08:00-12:00", "13:00-17:00"],
    "sat": ["09:00-12:00"],
}
HOLIDAY = date(2026, 6, 4)  # a Thursday
WORKSHOP = OpeningHours.parse(WORKSHOP_SPEC, closed_dates=[HOLIDAY.isoformat()])


def berlin_grid(
    hours: OpeningHours = WORKSHOP, slot_minutes: int = 30, capacity: int = 2
) -> SlotGrid:
    return SlotGrid(hours, "Europe/Berlin", slot_minutes, capacity)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


def minute_of_day(moment: time) -> int:
    return 24 * 60 if moment == END_OF_DAY else moment.hour * 60 + moment.minute


def local_times(grid: SlotGrid, slots: list[datetime]) -> list[str]:
    return [slot.astimezone(grid.zone).strftime("%H:%M") for slot in slots]


def day_slots(grid: SlotGrid, day: date) -> list[datetime]:
    start = datetime.combine(day, time(0), tzinfo=grid.zone)
    return list(grid.slots(start, start + timedelta(days=1)))


# --- opening hours -------------------------------------------------------------------------


def test_parse_builds_a_monday_first_week_with_missing_days_closed() -> None:
    hours = OpeningHours.parse(
        {"sat": ["13:00-17:30", "09:00-12:00"], "mon": ["22:00-24:00"]},
        closed_dates=["2026-12-25", date(2026, 1, 1)],
    )
    assert hours.weekly == (
        ((time(22), END_OF_DAY),),
        (),
        (),
        (),
        (),
        ((time(9), time(12)), (time(13), time(17, 30))),  # sorted
        (),
    )
    assert hours.closed_dates == frozenset({date(2026, 12, 25), date(2026, 1, 1)})


def test_parse_accepts_intervals_that_touch_and_whitespace_around_the_dash() -> None:
    hours = OpeningHours.parse({"tue": [" 08:00 - 12:00 ", "12:00-13:00"]})
    assert hours.weekly[1] == ((time(8), time(12)), (time(12), time(13)))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"monday": ["08:00-12:00"]}, r"unknown day 'monday'"),
        ({"Mon": ["08:00-12:00"]}, r"unknown day 'Mon'"),
        ({"mon": ["8:00-12:00"]}, r"mon: '8:00-12:00' is not of the form 'HH:MM-HH:MM'"),
        ({"tue": ["08:00"]}, r"tue: '08:00' is not of the form"),
        ({"wed": ["08:00–12:00"]}, r"wed: '08:00–12:00' is not of the form"),  # en dash
        ({"thu": ["08:00-12:00,13:00-17:00"]}, r"thu: '08:00-12:00,13:00-17:00' is not of"),
        ({"fri": ["25:00-26:00"]}, r"fri: '25:00-26:00' has an invalid time"),
        ({"fri": ["08:60-09:00"]}, r"fri: '08:60-09:00' has an invalid time"),
        ({"fri": ["08:00-24:30"]}, r"fri: '08:00-24:30' has an invalid time"),
        ({"sat": ["24:00-24:00"]}, r"sat: '24:00-24:00' has an invalid time"),
        ({"sat": ["12:00-08:00"]}, r"sat: '12:00-08:00' does not start before it ends"),
        ({"sun": ["09:00-09:00"]}, r"sun: '09:00-09:00' does not start before it ends"),
        (
            {"mon": ["13:00-17:00", "08:00-13:30"]},
            r"mon: '13:00-17:00' overlaps '08:00-13:30'",
        ),
        ({"tue": ["08:00-12:00", "08:00-12:00"]}, r"tue: '08:00-12:00' overlaps '08:00-12:00'"),
        ({"wed": ["08:00-17:00", "10:00-11:00"]}, r"wed: '10:00-11:00' overlaps '08:00-17:00'"),
        ({"thu": "08:00-12:00"}, r"thu: expected a list of 'HH:MM-HH:MM', got '08:00-12:00'"),
        ({"fri": [800]}, r"fri: 800 is not a 'HH:MM-HH:MM' string"),
        ({}, r"closed all week"),
        ({"mon": [], "sun": []}, r"closed all week"),
    ],
)
def test_parse_refuses_bad_specs_naming_the_day_and_entry(
    spec: dict[str, list[str]], message: str
) -> None:
    with pytest.raises(OpeningHoursError, match=message):
        OpeningHours.parse(spec)


@pytest.mark.parametrize(
    ("closed", "message"),
    [
        ("2026-13-01", r"closed date '2026-13-01' is not an ISO date"),
        ("25.12.2026", r"closed date '25.12.2026' is not an ISO date"),
        (datetime(2026, 12, 25), r"must be a date, not a datetime"),
    ],
)
def test_parse_refuses_bad_closed_dates(closed: str | date, message: str) -> None:
    with pytest.raises(OpeningHoursError, match=message):
        OpeningHours.parse({"mon": ["08:00-12:00"]}, closed_dates=[closed])


def test_parse_refuses_a_lone_string_of_closed_dates() -> None:
    with pytest.raises(OpeningHoursError, match="closed_dates must be a list"):
        OpeningHours.parse({"mon": ["08:00-12:00"]}, closed_dates="2026-12-25")


def test_opening_hours_errors_are_value_errors() -> None:
    with pytest.raises(ValueError, match="closed all week"):
        OpeningHours.parse({})


@pytest.mark.parametrize(
    ("weekly", "message"),
    [
        ((((time(8), time(12)),),) * 6, r"need 7 days, got 6"),
        (
            (((time(13), time(17)), (time(8), time(12))),) + ((),) * 6,
            r"mon: '08:00-12:00' is out of order with '13:00-17:00'",
        ),
        (((), ((time(8, 0, 30), time(12)),)) + ((),) * 5, r"tue: 08:00:30 is not a whole minute"),
        ((((time(12), time(8)),),) + ((),) * 6, r"mon: '12:00-08:00' does not start before"),
        ((((time(8), time(12, tzinfo=UTC)),),) + ((),) * 6, r"mon: opening times are local"),
    ],
)
def test_direct_construction_is_validated_too(
    weekly: tuple[tuple[tuple[time, time], ...], ...], message: str
) -> None:
    with pytest.raises(OpeningHoursError, match=message):
        OpeningHours(weekly=weekly)


def test_to_spec_round_trips_through_json() -> None:
    hours = OpeningHours.parse(
        {"sun": ["18:00-24:00"], "mon": ["13:00-17:30", "08:00-12:00"]},
        closed_dates=["2026-12-26", "2026-01-01", "2026-12-25"],
    )
    spec = json.loads(json.dumps(hours.to_spec()))
    assert spec == {"mon": ["08:00-12:00", "13:00-17:30"], "sun": ["18:00-24:00"]}
    assert list(spec) == ["mon", "sun"]
    assert hours.closed_dates_spec() == ["2026-01-01", "2026-12-25", "2026-12-26"]
    assert OpeningHours.parse(spec, hours.closed_dates_spec()) == hours


@st.composite
def opening_hours(draw: st.DrawFn, closed_from: date = date(2026, 1, 1)) -> OpeningHours:
    """Random valid weekly hours (minute precision, intervals may touch, 24:00 possible) and a
    few closed dates within a fortnight of ``closed_from``."""
    weekly = []
    for _ in WEEKDAYS:
        bounds = sorted(draw(st.lists(st.integers(0, 1440), max_size=6)))
        pairs = [
            (start, end)
            for start, end in zip(bounds[::2], bounds[1::2], strict=False)
            if start < end
        ]
        weekly.append(
            tuple(
                (
                    time(start // 60, start % 60),
                    END_OF_DAY if end == 1440 else time(*divmod(end, 60)),
                )
                for start, end in pairs
                # consecutive pairs drawn from a sorted list never overlap, but may touch
            )
        )
    assume(any(weekly))
    closed = draw(st.frozensets(st.integers(0, 14), max_size=4))
    return OpeningHours(
        weekly=tuple(weekly),
        closed_dates=frozenset(closed_from + timedelta(days=offset) for offset in closed),
    )


@given(opening_hours())
def test_any_valid_hours_round_trip_through_their_spec(hours: OpeningHours) -> None:
    assert OpeningHours.parse(hours.to_spec(), hours.closed_dates_spec()) == hours


# --- the slot grid --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"time_zone": "Europe/Berlinn"}, r"unknown IANA time zone 'Europe/Berlinn'"),
        ({"time_zone": "Europe"}, r"unknown IANA time zone 'Europe'"),
        ({"time_zone": ""}, r"unknown IANA time zone ''"),
        ({"time_zone": "../etc/passwd"}, r"unknown IANA time zone"),
        ({"slot_minutes": 0}, r"slot_minutes must be within 15\.\.480, got 0"),
        ({"slot_minutes": 10}, r"slot_minutes must be within 15\.\.480, got 10"),
        ({"slot_minutes": 481}, r"slot_minutes must be within 15\.\.480, got 481"),
        ({"slot_minutes": 30.0}, r"slot_minutes must be an int"),
        ({"capacity": 0}, r"capacity must be at least 1, got 0"),
        ({"capacity": True}, r"capacity must be an int"),
    ],
)
def test_slot_grid_refuses_bad_settings(kwargs: dict[str, object], message: str) -> None:
    arguments = {"hours": WORKSHOP, "time_zone": "Europe/Berlin", "slot_minutes": 30, "capacity": 2}
    with pytest.raises(ValueError, match=message):
        SlotGrid(**(arguments | kwargs))  # type: ignore[arg-type]


def test_slot_grid_refuses_hours_too_short_for_one_slot() -> None:
    hours = OpeningHours.parse({"mon": ["08:00-08:30"], "tue": ["09:00-09:45"]})
    with pytest.raises(ValueError, match="long enough for a 60-minute slot"):
        SlotGrid(hours, "UTC", 60, 1)
    assert SlotGrid(hours, "UTC", 45, 1).is_slot(utc(2026, 6, 2, 9, 0))  # a Tuesday


def test_a_normal_week_has_the_lunch_break_the_holiday_and_sunday_closed() -> None:
    grid = berlin_grid()
    monday = date(2026, 6, 1)
    week = {
        monday + timedelta(days=n): day_slots(grid, monday + timedelta(days=n)) for n in range(7)
    }

    assert local_times(grid, week[monday]) == [
        "08:00", "08:30", "09:00", "09:30", "10:00", "10:30", "11:00", "11:30",
        "13:00", "13:30", "14:00", "14:30", "15:00", "15:30", "16:00", "16:30",
    ]  # fmt: skip
    assert week[monday][0] == utc(2026, 6, 1, 6, 0)  # CEST is UTC+2
    assert all(slot.tzinfo is UTC for slot in week[monday])
    assert week[HOLIDAY] == []
    assert week[date(2026, 6, 7)] == []  # Sunday
    assert local_times(grid, week[date(2026, 6, 6)]) == [
        "09:00",
        "09:30",
        "10:00",
        "10:30",
        "11:00",
        "11:30",
    ]
    assert len(day_slots(grid, date(2026, 6, 11))) == 16  # the next Thursday is open again

    # The whole week at once is the same slots, ascending.
    start = datetime(2026, 6, 1, tzinfo=BERLIN)
    whole_week = list(grid.slots(start, start + timedelta(days=7)))
    assert whole_week == [slot for day in sorted(week) for slot in week[day]]
    assert len(whole_week) == 4 * 16 + 6


def test_winter_slots_are_one_hour_later_in_utc() -> None:
    grid = berlin_grid()
    assert day_slots(grid, date(2026, 1, 5))[0] == utc(2026, 1, 5, 7, 0)  # CET is UTC+1


def test_the_window_is_half_open_and_may_start_mid_slot() -> None:
    grid = berlin_grid()
    slots = list(grid.slots(utc(2026, 6, 1, 6, 10), utc(2026, 6, 1, 7, 30)))
    assert slots == [utc(2026, 6, 1, 6, 30), utc(2026, 6, 1, 7, 0)]
    assert list(grid.slots(utc(2026, 6, 1, 7, 30), utc(2026, 6, 1, 7, 30))) == []
    assert list(grid.slots(utc(2026, 6, 2), utc(2026, 6, 1))) == []


def test_the_same_local_opening_is_a_different_utc_instant_per_zone() -> None:
    hours = OpeningHours.parse({day: ["08:00-10:00"] for day in WEEKDAYS})
    tokyo = SlotGrid(hours, "Asia/Tokyo", 60, 1)
    new_york = SlotGrid(hours, "America/New_York", 60, 1)
    window = (utc(2026, 6, 1), utc(2026, 6, 2))

    # Tokyo is UTC+9: 09:00 on June 1 is 00:00Z, and 08:00 on June 2 is 23:00Z on June 1.
    assert list(tokyo.slots(*window)) == [utc(2026, 6, 1, 0), utc(2026, 6, 1, 23)]
    assert list(new_york.slots(*window)) == [utc(2026, 6, 1, 12), utc(2026, 6, 1, 13)]  # EDT

    # A window given in another zone selects the same instants; results are always UTC.
    window_in_tokyo = (window[0].astimezone(tokyo.zone), window[1].astimezone(tokyo.zone))
    from_tokyo_window = list(new_york.slots(*window_in_tokyo))
    assert from_tokyo_window == list(new_york.slots(*window))
    assert all(slot.tzinfo is UTC for slot in from_tokyo_window)


def test_a_window_in_local_midnights_of_another_zone() -> None:
    hours = OpeningHours.parse({day: ["08:00-10:00"] for day in WEEKDAYS})
    tokyo = SlotGrid(hours, "Asia/Tokyo", 60, 1)
    new_york = ZoneInfo("America/New_York")
    # June 1 in New York runs 04:00Z June 1 .. 04:00Z June 2: Tokyo's 08:00 and 09:00 of June 2.
    start = datetime(2026, 6, 1, tzinfo=new_york)
    assert list(tokyo.slots(start, start + timedelta(days=1))) == [
        utc(2026, 6, 1, 23),
        utc(2026, 6, 2, 0),
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda g: list(g.slots(datetime(2026, 6, 1), utc(2026, 6, 2))),
        lambda g: list(g.slots(utc(2026, 6, 1), datetime(2026, 6, 2))),
        lambda g: g.is_slot(datetime(2026, 6, 1, 8)),
        lambda g: g.slot_end(datetime(2026, 6, 1, 8)),
        lambda g: g.first_free({}, datetime(2026, 6, 1), utc(2026, 6, 2)),
        lambda g: g.first_free({datetime(2026, 6, 1, 6): 1}, utc(2026, 6, 1), utc(2026, 6, 2)),
    ],
)
def test_naive_datetimes_are_refused(call: Callable[[SlotGrid], object]) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        call(berlin_grid())


# --- daylight saving time -------------------------------------------------------------------

NIGHT_SHIFT = OpeningHours.parse({"sun": ["01:00-04:00"]})


def test_spring_forward_skips_the_missing_wall_times() -> None:
    grid = berlin_grid(NIGHT_SHIFT)
    # 2026-03-29: Berlin clocks jump from 02:00 CET to 03:00 CEST; 02:00 and 02:30 never exist.
    slots = day_slots(grid, date(2026, 3, 29))
    assert local_times(grid, slots) == ["01:00", "01:30", "03:00", "03:30"]
    assert slots == [
        utc(2026, 3, 29, 0, 0),
        utc(2026, 3, 29, 0, 30),
        utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 29, 1, 30),
    ]
    assert len(set(slots)) == len(slots)
    # 01:30 CET + 30 minutes is 03:00 CEST: the slot ends where the next begins, no overlap.
    assert grid.slot_end(slots[1]) == slots[2]


def test_fall_back_gives_the_repeated_hour_once() -> None:
    grid = berlin_grid(NIGHT_SHIFT)
    # 2026-10-25: Berlin clocks go back from 03:00 CEST to 02:00 CET; 02:00-03:00 happens twice.
    slots = day_slots(grid, date(2026, 10, 25))
    assert local_times(grid, slots) == ["01:00", "01:30", "02:00", "02:30", "03:00", "03:30"]
    assert slots == [
        utc(2026, 10, 24, 23, 0),
        utc(2026, 10, 24, 23, 30),
        utc(2026, 10, 25, 0, 0),  # 02:00 CEST, the first 02:00
        utc(2026, 10, 25, 0, 30),
        utc(2026, 10, 25, 2, 0),  # 03:00 CET
        utc(2026, 10, 25, 2, 30),
    ]
    assert all(earlier < later for earlier, later in zip(slots, slots[1:], strict=False))
    second_two_o_clock = datetime(2026, 10, 25, 2, 0, fold=1, tzinfo=BERLIN)
    assert second_two_o_clock.astimezone(UTC) == utc(2026, 10, 25, 1, 0)
    assert not grid.is_slot(second_two_o_clock)
    first_two_o_clock = datetime(2026, 10, 25, 2, 0, tzinfo=BERLIN)
    assert grid.is_slot(first_two_o_clock)
    # Bookings keyed by local ambiguous times still count against the right slot.
    assert grid.first_free({first_two_o_clock: 2}, slots[2], slots[-1]) == slots[3]
    assert grid.first_free({second_two_o_clock: 2}, slots[2], slots[-1]) == slots[2]


@pytest.mark.parametrize(
    ("time_zone", "day", "expected_slots"),
    [
        ("Europe/Berlin", date(2026, 3, 29), 96 - 4),  # 02:00-03:00 missing
        ("Europe/Berlin", date(2026, 10, 25), 96),  # 02:00-03:00 twice, counted once
        ("Australia/Lord_Howe", date(2026, 10, 4), 96 - 2),  # a 30-minute jump at 02:00
        ("Australia/Lord_Howe", date(2026, 4, 5), 96),
        ("America/Santiago", date(2026, 9, 6), 96 - 4),  # 00:00-01:00 missing: no midnight
        ("America/Santiago", date(2026, 4, 4), 96),  # 23:00-24:00 twice
        ("Asia/Kathmandu", date(2026, 3, 29), 96),  # UTC+05:45, no DST
    ],
)
def test_a_round_the_clock_center_has_one_slot_per_existing_wall_time(
    time_zone: str, day: date, expected_slots: int
) -> None:
    grid = SlotGrid(OpeningHours.parse({d: ["00:00-24:00"] for d in WEEKDAYS}), time_zone, 15, 1)
    slots = day_slots(grid, day)
    assert len(slots) == len(set(slots)) == expected_slots
    assert all(slot.astimezone(grid.zone).date() == day for slot in slots)

    # is_slot agrees with slots() minute by minute around the change.
    start = datetime.combine(day - timedelta(days=1), time(0), tzinfo=UTC)
    end = start + timedelta(days=3)
    expected = set(grid.slots(start, end))
    minutes = (start + timedelta(minutes=n) for n in range(3 * 24 * 60))
    assert {moment for moment in minutes if grid.is_slot(moment)} == expected


# --- slot rules -----------------------------------------------------------------------------


def test_a_slot_that_would_overrun_the_interval_is_dropped() -> None:
    hours = OpeningHours.parse({"mon": ["08:00-10:00", "13:00-14:00"]})
    grid = SlotGrid(hours, "UTC", 45, 1)
    slots = day_slots(grid, date(2026, 6, 1))
    # 09:30-10:15 would overrun 10:00, and 13:45-14:30 would overrun 14:00.
    assert local_times(grid, slots) == ["08:00", "08:45", "13:00"]
    assert not grid.is_slot(utc(2026, 6, 1, 9, 30))


def test_a_center_open_until_midnight_has_its_last_slot_at_half_past_eleven() -> None:
    grid = SlotGrid(OpeningHours.parse({"fri": ["22:00-24:00"]}), "Europe/Berlin", 30, 1)
    slots = day_slots(grid, date(2026, 6, 5))
    assert local_times(grid, slots) == ["22:00", "22:30", "23:00", "23:30"]
    assert grid.slot_end(slots[-1]) == datetime(2026, 6, 6, 0, 0, tzinfo=BERLIN)


def test_is_slot_is_true_only_for_exact_slot_starts() -> None:
    grid = berlin_grid()
    slot = datetime(2026, 6, 1, 8, 30, tzinfo=BERLIN)
    assert grid.is_slot(slot)
    assert grid.is_slot(slot.astimezone(UTC))
    assert grid.is_slot(slot.astimezone(ZoneInfo("Asia/Tokyo")))
    assert not grid.is_slot(slot + timedelta(minutes=1))
    assert not grid.is_slot(slot + timedelta(seconds=1))
    assert not grid.is_slot(slot + timedelta(microseconds=1))
    assert not grid.is_slot(slot + timedelta(minutes=15))
    assert not grid.is_slot(datetime(2026, 6, 1, 12, 0, tzinfo=BERLIN))  # lunch
    assert not grid.is_slot(datetime(2026, 6, 1, 17, 0, tzinfo=BERLIN))  # closing time
    assert not grid.is_slot(datetime(2026, 6, 1, 7, 30, tzinfo=BERLIN))  # before opening
    assert not grid.is_slot(datetime(2026, 6, 4, 8, 30, tzinfo=BERLIN))  # holiday
    assert not grid.is_slot(datetime(2026, 6, 7, 8, 30, tzinfo=BERLIN))  # Sunday
    assert grid.is_slot(datetime(2026, 6, 1, 8, 0, tzinfo=UTC))  # 10:00 local
    assert not grid.is_slot(datetime(2026, 6, 1, 10, 0, tzinfo=UTC))  # 12:00 local, lunch


def test_slot_end_is_in_utc_and_slot_length_later() -> None:
    grid = berlin_grid(slot_minutes=45)
    start = datetime(2026, 6, 1, 8, 0, tzinfo=BERLIN)
    assert grid.slot_end(start) == utc(2026, 6, 1, 6, 45)
    assert grid.slot_end(start).tzinfo is UTC


def test_slot_end_counts_elapsed_time_not_wall_time_across_fall_back() -> None:
    grid = berlin_grid(NIGHT_SHIFT)
    # 02:30 CEST (the first one) + 30 minutes is 02:00 CET, not the wall-clock 03:00.
    first_half_past_two = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN)
    assert grid.slot_end(first_half_past_two) == utc(2026, 10, 25, 1, 0)


def test_sixty_days_of_half_hour_slots() -> None:
    grid = berlin_grid()
    start = datetime(2026, 3, 2, tzinfo=BERLIN)  # a Monday; 60 days span the March DST change
    slots = list(grid.slots(start, start + timedelta(days=60)))
    # 8 weeks and 4 days (Mon-Thu) of 5 x 16 + 6 slots a week; no holiday in this window.
    assert len(slots) == 8 * (5 * 16 + 6) + 4 * 16
    assert len(set(slots)) == len(slots)
    assert slots == sorted(slots)


# --- first free slot and bay ----------------------------------------------------------------


def test_first_free_skips_full_slots() -> None:
    grid = berlin_grid(capacity=2)
    eight, half_past, nine = (
        datetime(2026, 6, 1, 8, 0, tzinfo=BERLIN).astimezone(UTC) + timedelta(minutes=m)
        for m in (0, 30, 60)
    )
    evening = utc(2026, 6, 1, 18)
    assert grid.first_free({}, eight, evening) == eight
    assert grid.first_free({eight: 1}, eight, evening) == eight
    assert grid.first_free({eight: 2}, eight, evening) == half_past
    assert grid.first_free({eight: 2, half_past: 3}, eight, evening) == nine
    # Keys in another zone name the same instants.
    assert grid.first_free({eight.astimezone(BERLIN): 2}, eight, evening) == half_past


def test_first_free_respects_earliest_and_latest() -> None:
    grid = berlin_grid(capacity=1)
    eight = datetime(2026, 6, 1, 8, 0, tzinfo=BERLIN)
    half_past = eight + timedelta(minutes=30)
    # earliest mid-slot moves on to the next slot start
    assert grid.first_free({}, eight + timedelta(minutes=1), eight + timedelta(hours=2)) == (
        half_past
    )
    # the slot must end by `latest`
    assert grid.first_free({}, eight, half_past) == eight
    assert grid.first_free({}, eight, half_past - timedelta(minutes=1)) is None
    assert grid.first_free({eight: 1}, eight, half_past + timedelta(minutes=29)) is None
    assert grid.first_free({eight: 1}, eight, half_past + timedelta(minutes=30)) == half_past
    assert grid.first_free({}, half_past, eight) is None


def test_first_free_moves_to_the_next_open_day_when_a_day_is_full() -> None:
    grid = berlin_grid(capacity=1)
    wednesday = date(2026, 6, 3)
    taken = dict.fromkeys(day_slots(grid, wednesday), 1)
    start = datetime.combine(wednesday, time(0), tzinfo=BERLIN)
    # Thursday is the holiday, so Friday 08:00 is next.
    assert grid.first_free(taken, start, start + timedelta(days=7)) == datetime(
        2026, 6, 5, 8, 0, tzinfo=BERLIN
    )
    assert grid.first_free(taken, start, start + timedelta(days=2)) is None


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        ([], 0),
        ([0], 1),
        ([0, 2], 1),
        ({1, 0}, 2),
        ((2, 1), 0),
        ([0, 1, 2], None),
        ([0, 1, 2, 7], None),
        ([5, 9], 0),
    ],
)
def test_free_bay_is_the_smallest_unused_bay(used: list[int], expected: int | None) -> None:
    assert berlin_grid(capacity=3).free_bay(used) == expected


# --- properties -----------------------------------------------------------------------------

ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Asia/Kathmandu",
    "Australia/Lord_Howe",
    "America/Santiago",
    "America/St_Johns",
    "Africa/Casablanca",
    "Pacific/Apia",
]


@st.composite
def grids_and_windows(draw: st.DrawFn) -> tuple[SlotGrid, datetime, datetime]:
    window_start = draw(
        st.datetimes(
            min_value=datetime(2024, 1, 1),
            max_value=datetime(2027, 12, 31),
            timezones=st.sampled_from([UTC, BERLIN, ZoneInfo("America/Santiago")]),
        )
    )
    hours = draw(opening_hours(closed_from=window_start.date()))
    slot_minutes = draw(st.integers(15, 480))
    time_zone = draw(st.sampled_from(ZONES))
    try:
        grid = SlotGrid(hours, time_zone, slot_minutes, capacity=1)
    except ValueError:  # no interval long enough for one slot
        reject()
    window_end = window_start + timedelta(minutes=draw(st.integers(0, 10 * 24 * 60)))
    return grid, window_start, window_end


@settings(deadline=None)
@given(grids_and_windows())
def test_every_slot_is_a_slot_inside_opening_hours_and_they_ascend(
    grid_and_window: tuple[SlotGrid, datetime, datetime],
) -> None:
    grid, start, end = grid_and_window
    slots = list(grid.slots(start, end))
    assert all(earlier < later for earlier, later in zip(slots, slots[1:], strict=False))
    for slot in slots:
        assert slot.tzinfo is UTC
        assert start <= slot < end
        assert grid.is_slot(slot)
        local = slot.astimezone(grid.zone)
        assert local.second == local.microsecond == 0
        assert local.date() not in grid.hours.closed_dates
        minute = minute_of_day(local.time())
        assert any(
            minute_of_day(opens) <= minute
            and (minute - minute_of_day(opens)) % grid.slot_minutes == 0
            and minute + grid.slot_minutes <= minute_of_day(closes)
            for opens, closes in grid.hours.weekly[local.weekday()]
        )


# --- geo ------------------------------------------------------------------------------------

BERLIN_CENTER = (52.5200, 13.4050)
MUNICH_CENTER = (48.1351, 11.5820)


def test_haversine_known_distances() -> None:
    assert haversine_km(*BERLIN_CENTER, *MUNICH_CENTER) == pytest.approx(504, abs=1)
    assert haversine_km(*MUNICH_CENTER, *BERLIN_CENTER) == pytest.approx(
        haversine_km(*BERLIN_CENTER, *MUNICH_CENTER)
    )
    assert haversine_km(*BERLIN_CENTER, *BERLIN_CENTER) == 0.0
    half_circumference = math.pi * EARTH_RADIUS_KM
    assert half_circumference == pytest.approx(20015, abs=1)
    assert haversine_km(0.0, 0.0, 0.0, 180.0) == pytest.approx(half_circumference)
    assert haversine_km(90.0, 0.0, -90.0, 0.0) == pytest.approx(half_circumference)
    assert haversine_km(10.0, 20.0, -10.0, -160.0) == pytest.approx(half_circumference)
    # Across the antimeridian: 1 degree of longitude at the equator, not 359.
    assert haversine_km(0.0, 179.5, 0.0, -179.5) == pytest.approx(111.2, abs=0.1)


@pytest.mark.parametrize(
    ("lat", "lon", "message"),
    [
        (90.5, 0.0, r"latitude 90\.5 is out of range \[-90, 90\]"),
        (-91.0, 0.0, r"latitude -91\.0 is out of range"),
        (0.0, 180.01, r"longitude 180\.01 is out of range \[-180, 180\]"),
        (0.0, -200.0, r"longitude -200\.0 is out of range"),
        (math.nan, 0.0, r"latitude nan is not a finite number"),
        (0.0, math.inf, r"longitude inf is not a finite number"),
        (0.0, -math.inf, r"longitude -inf is not a finite number"),
    ],
)
def test_check_coordinates_names_the_bad_coordinate(lat: float, lon: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_coordinates(lat, lon)


@pytest.mark.parametrize(
    ("lat", "lon"), [(90.0, 180.0), (-90.0, -180.0), (0.0, 0.0), (52.52, 13.4)]
)
def test_check_coordinates_accepts_the_whole_range(lat: float, lon: float) -> None:
    check_coordinates(lat, lon)
