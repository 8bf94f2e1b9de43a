"""When a vehicle may install: maintenance windows in its local time, consent and deadlines.

Pure logic, no database. A campaign stores its windows as JSON
(``[{"days": ["mon", "tue"], "start": "22:00", "end": "05:00"}]``, see :func:`parse_windows`)
and the Director or the check-in asks :func:`install_decision` (or its parts) with the
vehicle's IANA time zone.

Windows are wall-clock times in the vehicle's time zone, so DST is handled by reading the
clock the driver sees:

* a window is open at an instant when the vehicle's local wall clock at that instant is inside
  it: on a listed day, at or after ``start`` and before ``end``;
* an ``end`` before ``start`` means the window crosses midnight (``22:00``-``05:00``): it
  starts on a listed day and ends on the next day, listed or not; ``end`` may be ``24:00``,
  and ``00:00``-``24:00`` is a whole day;
* so a 22:00-05:00 window lasts 7 hours on the night clocks spring forward and 9 hours on the
  night they fall back; a window whose start falls in the spring-forward gap opens when the
  clock jumps into it (02:30-04:00 opens at 03:00); in the fall-back hour the wall clock shows
  the same times twice and a window covering them is open both times.

An empty list of windows means "always open".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60

_CLOCK = re.compile(r"(\d{2}):(\d{2})")
_FIELDS = frozenset({"days", "start", "end"})
# Windows repeat weekly; two weeks covers every listed day even across a DST change or a
# skipped calendar day (Samoa, 2011).
_SEARCH_DAYS = 15
_OFFSET_PROBE_S = 6 * 3600  # zones change offset at most once in such a span
_MICROS_PER_MINUTE = 60 * 10**6


class WindowSpecError(ValueError):
    """A maintenance window spec that cannot be used; ``field`` names the bad part (for
    example ``windows[1].start``), and the message starts with it."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """A weekly window of wall-clock time; build it with :func:`parse_window`."""

    days: frozenset[str]
    """Days the window *starts* on (``"mon"`` … ``"sun"``)."""
    start_minute: int
    """Minutes after local midnight, 0-1439."""
    end_minute: int
    """Minutes after local midnight, 0-1440; before ``start_minute``: on the next day."""

    def __post_init__(self) -> None:
        if not self.days or not self.days <= set(WEEKDAYS):
            raise WindowSpecError("days", f"expected a non-empty set of {', '.join(WEEKDAYS)}")
        if not 0 <= self.start_minute < MINUTES_PER_DAY:
            raise WindowSpecError("start", f"minute of day out of range: {self.start_minute}")
        if not 0 <= self.end_minute <= MINUTES_PER_DAY or self.end_minute == self.start_minute:
            raise WindowSpecError("end", f"minute of day out of range: {self.end_minute}")

    @property
    def crosses_midnight(self) -> bool:
        return self.end_minute <= self.start_minute

    def to_spec(self) -> dict[str, object]:
        """The JSON form :func:`parse_window` reads."""
        return {
            "days": [day for day in WEEKDAYS if day in self.days],
            "start": _format_minute(self.start_minute),
            "end": _format_minute(self.end_minute),
        }

    def contains(self, local: datetime) -> bool:
        """Whether a local wall-clock time (naive or aware; only its fields count) is inside."""
        day = WEEKDAYS[local.weekday()]
        previous_day = WEEKDAYS[(local.weekday() - 1) % 7]
        # Exact integers: 04:59:59.999999 is inside a window ending at 05:00.
        micros = ((local.hour * 60 + local.minute) * 60 + local.second) * 10**6 + local.microsecond
        start, end = self.start_minute * _MICROS_PER_MINUTE, self.end_minute * _MICROS_PER_MINUTE
        if not self.crosses_midnight:
            return day in self.days and start <= micros < end
        return (day in self.days and micros >= start) or (
            previous_day in self.days and micros < end
        )


def _format_minute(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _parse_clock(field: str, value: object, *, allow_24: bool) -> int:
    latest = "24:00" if allow_24 else "23:59"
    problem = f"expected a time HH:MM from 00:00 to {latest}, got {value!r}"
    if not isinstance(value, str):
        raise WindowSpecError(field, problem)
    match = _CLOCK.fullmatch(value.strip())
    if match is None:
        raise WindowSpecError(field, problem)
    hours, minutes = int(match[1]), int(match[2])
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not allow_24)):
        raise WindowSpecError(field, problem)
    return hours * 60 + minutes


def _parse_days(field: str, value: object) -> frozenset[str]:
    if not isinstance(value, list | tuple) or not value:
        raise WindowSpecError(field, f"expected a non-empty list of {', '.join(WEEKDAYS)}")
    days = set()
    for index, day in enumerate(value):
        name = day.strip().lower() if isinstance(day, str) else day
        if name not in WEEKDAYS:
            raise WindowSpecError(
                f"{field}[{index}]", f"expected one of {', '.join(WEEKDAYS)}, got {day!r}"
            )
        days.add(name)
    return frozenset(days)


def parse_window(spec: object, *, field: str = "") -> MaintenanceWindow:
    """``{"days": ["mon", ...], "start": "HH:MM", "end": "HH:MM"}``; day names are
    case-insensitive, ``end`` may be ``24:00``, and an ``end`` not after ``start`` crosses
    midnight. ``field`` prefixes error field names (``windows[2]``)."""
    prefix = f"{field}." if field else ""
    if not isinstance(spec, Mapping):
        raise WindowSpecError(field or "window", "expected an object with days, start and end")
    for key in spec:
        if key not in _FIELDS:
            raise WindowSpecError(f"{prefix}{key}", "unknown field (expected days, start, end)")

    def required(key: str) -> object:
        if key not in spec:
            raise WindowSpecError(f"{prefix}{key}", "required")
        return spec[key]

    days = _parse_days(f"{prefix}days", required("days"))
    start = _parse_clock(f"{prefix}start", required("start"), allow_24=False)
    end = _parse_clock(f"{prefix}end", required("end"), allow_24=True)
    if end == start:
        raise WindowSpecError(f"{prefix}end", "equals start; a whole day is 00:00 to 24:00")
    return MaintenanceWindow(days, start, end)


def parse_windows(specs: object, *, field: str = "windows") -> tuple[MaintenanceWindow, ...]:
    """A list of window specs (empty: always open); errors name ``windows[i].<field>``."""
    if not isinstance(specs, list | tuple):
        raise WindowSpecError(field, "expected a list of windows")
    return tuple(parse_window(spec, field=f"{field}[{i}]") for i, spec in enumerate(specs))


def _zone(tz: str | ZoneInfo) -> ZoneInfo:
    if isinstance(tz, ZoneInfo):
        return tz
    try:
        return ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{tz!r} is not an IANA time zone name (e.g. Europe/Berlin)") from None


def _check_aware(name: str, moment: datetime) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware (UTC), not naive")


def is_open(windows: Sequence[MaintenanceWindow], tz: str | ZoneInfo, now_utc: datetime) -> bool:
    """Whether any window is open at ``now_utc`` on the vehicle's wall clock (``tz``); an empty
    list is always open."""
    _check_aware("now_utc", now_utc)
    if not windows:
        return True
    local = now_utc.astimezone(_zone(tz))
    return any(window.contains(local) for window in windows)


def _offset_changes(zone: ZoneInfo, begin: datetime, end: datetime) -> Iterable[datetime]:
    """Instants in about ``[begin, end]`` where the zone's UTC offset changes; tzdata puts
    them on whole seconds, so bisecting over integer timestamps finds them exactly."""

    def offset(timestamp: int) -> timedelta | None:
        return datetime.fromtimestamp(timestamp, zone).utcoffset()

    probe, stop = int(begin.timestamp()), int(end.timestamp()) + 1
    while probe < stop:
        after = min(probe + _OFFSET_PROBE_S, stop)
        if offset(probe) != offset(after):
            low, high = probe, after
            while high - low > 1:
                middle = (low + high) // 2
                if offset(middle) == offset(low):
                    low = middle
                else:
                    high = middle
            yield datetime.fromtimestamp(high, UTC)
        probe = after


def next_opening(
    windows: Sequence[MaintenanceWindow], tz: str | ZoneInfo, now_utc: datetime
) -> datetime | None:
    """The first instant at or after ``now_utc`` when a window is open (``now_utc`` itself
    when one is open now or there are no windows), in UTC; None if no window opens within two
    weeks, which valid windows only do in a zone whose clock never shows their times."""
    _check_aware("now_utc", now_utc)
    if is_open(windows, tz, now_utc):
        return now_utc.astimezone(UTC)
    zone = _zone(tz)
    now = now_utc.astimezone(UTC)
    today = now.astimezone(zone).date()
    candidates: list[datetime] = []
    # A window opens when the wall clock reaches its start (either occurrence of an ambiguous
    # time) or when the clock jumps into it at an offset change.
    for offset in range(_SEARCH_DAYS + 1):
        day: date = today + timedelta(days=offset)
        for window in windows:
            if WEEKDAYS[day.weekday()] not in window.days:
                continue
            start = time(window.start_minute // 60, window.start_minute % 60)
            for fold in (0, 1):
                local = datetime.combine(day, start, tzinfo=zone).replace(fold=fold)
                candidates.append(local.astimezone(UTC))
    candidates.extend(_offset_changes(zone, now, now + timedelta(days=_SEARCH_DAYS + 1)))
    openings = [c for c in candidates if c > now and is_open(windows, zone, c)]
    return min(openings, default=None)


# --- consent and deadlines ---------------------------------------------------------------------


class UpdateKind(StrEnum):
    FORCED = "forced"
    """Installs without asking the driver (safety or legal fixes)."""
    SOFT = "soft"
    """The driver must agree before the vehicle installs."""


def needs_driver_consent(update_kind: UpdateKind | str) -> bool:
    """Soft updates need the driver's consent, forced ones do not."""
    try:
        kind = UpdateKind(update_kind)
    except ValueError:
        raise ValueError(f"update kind must be 'forced' or 'soft', not {update_kind!r}") from None
    return kind is UpdateKind.SOFT


def must_install_by(deadline: datetime | None, now: datetime) -> bool:
    """Whether the deadline has been reached (``now >= deadline``): from then on a soft update
    is due and installs like a forced one, without waiting for consent. No deadline: never."""
    _check_aware("now", now)
    if deadline is None:
        return False
    _check_aware("deadline", deadline)
    return now >= deadline


@dataclass(frozen=True, slots=True)
class InstallDecision:
    """What a vehicle may do about one update at one instant."""

    window_open: bool
    next_opening: datetime | None
    """``now_utc`` when open; else the next opening (UTC), or None when none comes."""
    needs_consent: bool
    overdue: bool
    """The deadline has passed: the update no longer waits for the driver."""

    @property
    def may_install_now(self) -> bool:
        """Inside a window; the vehicle still asks the driver when ``needs_consent`` and checks
        its own preconditions (state of charge, parked) from the signed metadata."""
        return self.window_open


def install_decision(
    update_kind: UpdateKind | str,
    windows: Sequence[MaintenanceWindow],
    tz: str | ZoneInfo,
    now_utc: datetime,
    deadline: datetime | None = None,
) -> InstallDecision:
    """Windows, consent and deadline together. A passed deadline removes the need for consent
    but not the maintenance windows: they protect the vehicle's operation (a taxi on shift),
    and the next window is at most a week away."""
    overdue = must_install_by(deadline, now_utc)
    window_open = is_open(windows, tz, now_utc)
    return InstallDecision(
        window_open=window_open,
        next_opening=now_utc.astimezone(UTC) if window_open else next_opening(windows, tz, now_utc),
        needs_consent=needs_driver_consent(update_kind) and not overdue,
        overdue=overdue,
    )


__all__ = [
    "MINUTES_PER_DAY",
    "WEEKDAYS",
    "InstallDecision",
    "MaintenanceWindow",
    "UpdateKind",
    "WindowSpecError",
    "install_decision",
    "is_open",
    "must_install_by",
    "needs_driver_consent",
    "next_opening",
    "parse_window",
    "parse_windows",
]
