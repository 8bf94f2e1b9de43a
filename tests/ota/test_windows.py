"""Maintenance windows in the vehicle's local time (DST included), consent and deadlines."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ota.windows import (
    WEEKDAYS,
    MaintenanceWindow,
    UpdateKind,
    WindowSpecError,
    install_decision,
    is_open,
    must_install_by,
    needs_driver_consent,
    next_opening,
    parse_window,
    parse_windows,
)

MINUTE = timedelta(minutes=1)


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def windows(*specs: dict[str, Any]) -> tuple[MaintenanceWindow, ...]:
    return parse_windows(list(specs))


NIGHTS_MON = windows({"days": ["mon"], "start": "22:00", "end": "05:00"})


# --- parsing -----------------------------------------------------------------------------------


def test_parse_a_window_that_crosses_midnight() -> None:
    (window,) = windows({"days": ["Mon", "tue", " FRI "], "start": "22:00", "end": "05:00"})
    assert window == MaintenanceWindow(frozenset({"mon", "tue", "fri"}), 22 * 60, 5 * 60)
    assert window.crosses_midnight
    assert window.to_spec() == {"days": ["mon", "tue", "fri"], "start": "22:00", "end": "05:00"}


def test_a_whole_day_is_00_00_to_24_00() -> None:
    (window,) = windows({"days": ["sun"], "start": "00:00", "end": "24:00"})
    assert not window.crosses_midnight
    assert is_open([window], "UTC", utc(2025, 6, 1, 23, 59, 59, 999_999))  # a Sunday
    assert not is_open([window], "UTC", utc(2025, 6, 2, 0, 0))


@pytest.mark.parametrize(
    ("specs", "field"),
    [
        ("mon 22:00-05:00", "windows"),
        (["mon 22:00-05:00"], "windows[0]"),
        ([{"start": "22:00", "end": "05:00"}], "windows[0].days"),
        ([{"days": [], "start": "22:00", "end": "05:00"}], "windows[0].days"),
        ([{"days": "mon", "start": "22:00", "end": "05:00"}], "windows[0].days"),
        ([{"days": ["mon", "funday"], "start": "22:00", "end": "05:00"}], "windows[0].days[1]"),
        ([{"days": ["mon", 3], "start": "22:00", "end": "05:00"}], "windows[0].days[1]"),
        ([{"days": ["mon"], "end": "05:00"}], "windows[0].start"),
        ([{"days": ["mon"], "start": "25:00", "end": "05:00"}], "windows[0].start"),
        ([{"days": ["mon"], "start": "24:00", "end": "05:00"}], "windows[0].start"),
        ([{"days": ["mon"], "start": "9:00", "end": "17:00"}], "windows[0].start"),
        ([{"days": ["mon"], "start": 900, "end": "17:00"}], "windows[0].start"),
        ([{"days": ["mon"], "start": "22:00", "end": "05:60"}], "windows[0].end"),
        ([{"days": ["mon"], "start": "22:00", "end": "24:01"}], "windows[0].end"),
        ([{"days": ["mon"], "start": "22:00", "end": "22:00"}], "windows[0].end"),
        ([{"days": ["mon"], "start": "22:00", "end": "05:00", "tz": "UTC"}], "windows[0].tz"),
        (
            [{"days": ["mon"], "start": "22:00", "end": "05:00"}, {"days": ["sun"], "start": "x"}],
            "windows[1].start",
        ),
    ],
)
def test_parse_errors_name_the_bad_field(specs: object, field: str) -> None:
    with pytest.raises(WindowSpecError) as error:
        parse_windows(specs)
    assert error.value.field == field
    assert str(error.value).startswith(f"{field}: ")


def window_from(
    days: st.SearchStrategy[frozenset[str]],
    start: st.SearchStrategy[int],
    end: st.SearchStrategy[int],
) -> st.SearchStrategy[MaintenanceWindow]:
    return (
        st.tuples(days, start, end)
        .filter(lambda t: t[1] != t[2])
        .map(lambda t: MaintenanceWindow(*t))
    )


any_days = st.frozensets(st.sampled_from(WEEKDAYS), min_size=1)
window_strategy = window_from(any_days, st.integers(0, 1439), st.integers(0, 1440))


@given(window_strategy)
def test_spec_round_trip(window: MaintenanceWindow) -> None:
    assert parse_window(window.to_spec()) == window


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=12,
)
spec_like = st.fixed_dictionaries(
    {},
    optional={
        "days": st.lists(st.sampled_from([*WEEKDAYS, "MON", "x", "", 1]), max_size=3) | json_values,
        "start": st.sampled_from(["00:00", "23:59", "24:00", "7:00", "12:61"]) | json_values,
        "end": st.sampled_from(["00:00", "24:00", "05:00", "25:00"]) | json_values,
        "extra": json_values,
    },
)


@given(st.lists(spec_like | json_values, max_size=3) | json_values)
def test_the_parser_accepts_or_names_a_field_for_any_json(specs: object) -> None:
    try:
        parsed = parse_windows(specs)
    except WindowSpecError as error:
        assert error.field.startswith("windows")
    else:
        assert parse_windows([w.to_spec() for w in parsed]) == parsed


# --- open or closed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("moment", "open_"),
    [
        (utc(2025, 6, 2, 22, 0), True),  # Monday 22:00
        (utc(2025, 6, 3, 4, 59, 59, 999_999), True),  # Tuesday morning, still Monday's window
        (utc(2025, 6, 3, 5, 0), False),
        (utc(2025, 6, 2, 21, 59), False),
        (utc(2025, 6, 2, 3, 0), False),  # Monday morning belongs to Sunday's night: not listed
        (utc(2025, 6, 1, 23, 0), False),  # Sunday night
        (utc(2025, 6, 3, 22, 0), False),  # Tuesday night
    ],
)
def test_a_window_belongs_to_the_day_it_starts(moment: datetime, open_: bool) -> None:
    assert is_open(NIGHTS_MON, "UTC", moment) is open_


def test_windows_are_in_the_vehicles_local_time() -> None:
    moment = utc(2025, 6, 2, 13, 30)  # Monday 22:30 in Tokyo, 15:30 in Berlin
    assert is_open(NIGHTS_MON, "Asia/Tokyo", moment)
    assert not is_open(NIGHTS_MON, "Europe/Berlin", moment)
    assert is_open(NIGHTS_MON, ZoneInfo("Asia/Tokyo"), moment)


def test_no_windows_means_always_open() -> None:
    assert is_open([], "Europe/Berlin", utc(2025, 6, 2, 13, 30))
    assert next_opening([], "Europe/Berlin", utc(2025, 6, 2, 13, 30)) == utc(2025, 6, 2, 13, 30)


def test_bad_time_zone_and_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="IANA"):
        is_open(NIGHTS_MON, "Mars/Olympus_Mons", utc(2025, 6, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        is_open(NIGHTS_MON, "UTC", datetime(2025, 6, 2))


# --- daylight saving time (Berlin: 2025-03-30 02:00 -> 03:00, 2025-10-26 03:00 -> 02:00) --------

BERLIN = "Europe/Berlin"
NIGHTLY = windows({"days": list(WEEKDAYS), "start": "22:00", "end": "06:00"})


def open_span(ws: tuple[MaintenanceWindow, ...], tz: str, opens: datetime) -> timedelta:
    """How long the window that opens at ``opens`` stays open (minute resolution)."""
    assert is_open(ws, tz, opens) and not is_open(ws, tz, opens - MINUTE)
    moment = opens
    while is_open(ws, tz, moment):
        moment += MINUTE
    return moment - opens


def test_a_night_window_is_shorter_when_clocks_spring_forward_and_longer_when_they_fall_back() -> (
    None
):
    assert open_span(NIGHTLY, BERLIN, utc(2025, 3, 28, 21)) == timedelta(hours=8)
    assert open_span(NIGHTLY, BERLIN, utc(2025, 3, 29, 21)) == timedelta(hours=7)
    assert open_span(NIGHTLY, BERLIN, utc(2025, 10, 25, 20)) == timedelta(hours=9)
    assert next_opening(NIGHTLY, BERLIN, utc(2025, 10, 26, 12)) == utc(2025, 10, 26, 21)


def test_a_window_starting_in_the_spring_forward_gap_opens_when_the_clock_jumps() -> None:
    ws = windows({"days": ["sun"], "start": "02:30", "end": "04:00"})
    # 03:00 CEST is 01:00 UTC; 04:00 CEST is 02:00 UTC.
    assert next_opening(ws, BERLIN, utc(2025, 3, 29, 23)) == utc(2025, 3, 30, 1)
    assert open_span(ws, BERLIN, utc(2025, 3, 30, 1)) == timedelta(hours=1)


def test_a_window_inside_the_gap_waits_for_the_next_week() -> None:
    ny = windows({"days": ["sun"], "start": "02:00", "end": "03:00"})
    # New York skips 02:00-03:00 on 2025-03-09; the next Sunday 02:00 EDT is 06:00 UTC.
    assert next_opening(ny, "America/New_York", utc(2025, 3, 9, 6)) == utc(2025, 3, 16, 6)


def test_a_window_in_the_repeated_hour_opens_twice() -> None:
    ws = windows({"days": ["sun"], "start": "02:00", "end": "02:30"})
    assert is_open(ws, BERLIN, utc(2025, 10, 26, 0, 0))  # 02:00 CEST
    assert not is_open(ws, BERLIN, utc(2025, 10, 26, 0, 30))  # 02:30 CEST
    assert next_opening(ws, BERLIN, utc(2025, 10, 26, 0, 30)) == utc(2025, 10, 26, 1)  # 02:00 CET
    assert open_span(ws, BERLIN, utc(2025, 10, 26, 1)) == timedelta(minutes=30)

    later = windows({"days": ["sun"], "start": "02:15", "end": "02:45"})
    # The clock falls back to 02:00 at 01:00 UTC and shows 02:15 again at 01:15 UTC.
    assert next_opening(later, BERLIN, utc(2025, 10, 26, 0, 45)) == utc(2025, 10, 26, 1, 15)


ZONES = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "America/St_Johns",  # -03:30 with DST
    "America/Santiago",  # changes at midnight
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "Pacific/Chatham",  # +12:45
    "Asia/Kolkata",
]
# Uniform over a year, and concentrated on the weeks around DST changes of these zones.
moments = st.one_of(
    st.datetimes(datetime(2025, 1, 1), datetime(2026, 1, 1)),
    st.datetimes(datetime(2025, 3, 1), datetime(2025, 4, 10)),
    st.datetimes(datetime(2025, 9, 1), datetime(2025, 11, 5)),
).map(lambda moment: moment.replace(tzinfo=UTC))
aligned_windows = window_from(  # on half hours, to hit 02:00, 02:30 and 03:00 often
    any_days,
    st.integers(0, 47).map(lambda half_hours: half_hours * 30),
    st.integers(0, 48).map(lambda half_hours: half_hours * 30),
)


@settings(max_examples=60, deadline=None)
@given(
    ws=st.lists(st.one_of(aligned_windows, window_strategy), min_size=1, max_size=3),
    tz=st.sampled_from(ZONES),
    now=moments,
)
def test_next_opening_is_the_first_open_minute(
    ws: list[MaintenanceWindow], tz: str, now: datetime
) -> None:
    opening = next_opening(ws, tz, now)
    # Reference: walk minute by minute. Windows start on whole minutes and these zones change
    # offset on whole minutes, so the first opening after a closed ``now`` is on the grid.
    moment = now
    if not is_open(ws, tz, now):
        moment = now.replace(second=0, microsecond=0) + MINUTE
        while not is_open(ws, tz, moment):
            moment += MINUTE
            assert moment - now < timedelta(days=8)
    assert opening == moment


# --- consent and deadlines ---------------------------------------------------------------------


def test_soft_updates_need_consent_forced_ones_do_not() -> None:
    assert needs_driver_consent("soft") and needs_driver_consent(UpdateKind.SOFT)
    assert not needs_driver_consent("forced")
    with pytest.raises(ValueError, match="'forced' or 'soft'"):
        needs_driver_consent("urgent")


def test_deadline() -> None:
    deadline = utc(2025, 7, 1)
    assert not must_install_by(None, utc(2030, 1, 1))
    assert not must_install_by(deadline, deadline - timedelta(microseconds=1))
    assert must_install_by(deadline, deadline)
    assert must_install_by(deadline, deadline + timedelta(days=3))
    with pytest.raises(ValueError, match="timezone-aware"):
        must_install_by(datetime(2025, 7, 1), deadline)


def test_install_decision_combines_windows_consent_and_deadline() -> None:
    monday_noon, monday_night = utc(2025, 6, 2, 12), utc(2025, 6, 2, 23)
    deadline = utc(2025, 6, 2, 18)

    waiting = install_decision("soft", NIGHTS_MON, "UTC", monday_noon, deadline)
    assert (waiting.may_install_now, waiting.needs_consent, waiting.overdue) == (False, True, False)
    assert waiting.next_opening == utc(2025, 6, 2, 22)

    # After the deadline a soft update no longer waits for the driver, but still for a window.
    overdue = install_decision("soft", NIGHTS_MON, "UTC", monday_night, deadline)
    assert (overdue.may_install_now, overdue.needs_consent, overdue.overdue) == (True, False, True)
    assert overdue.next_opening == monday_night

    forced = install_decision(UpdateKind.FORCED, (), "UTC", monday_noon)
    assert (forced.may_install_now, forced.needs_consent, forced.overdue) == (True, False, False)
