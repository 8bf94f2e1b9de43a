"""Service-center slot allocation: opening hours, the slot grid they define, and free capacity.

Pure logic, no database: a booking service stores the center's opening hours as JSON
(:meth:`OpeningHours.to_spec`), rebuilds a :class:`SlotGrid` from them and asks it which slot
instants exist and which one is the first with a free bay.

Opening hours are wall-clock times in the center's own IANA time zone; slots are handed out as
UTC instants. The conversion follows two rules around daylight-saving changes:

* a wall time that does not exist (the spring-forward gap, e.g. 02:30 in Berlin on the last
  Sunday of March) is skipped, so no slot is offered for a time nobody's clock shows;
* an ambiguous wall time (the fall-back hour, shown twice) is taken at its first occurrence
  (``fold=0``) only, so one wall-clock slot never turns into two bookable instants.

Slots are laid out in wall-clock terms inside each opening interval: a 08:00-17:00 day gives the
same local slot times on every date, DST or not.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

#: How an interval ending at midnight ("24:00") is stored: ``time`` cannot say 24:00, and the
#: largest ``time`` keeps ``start < end`` true and sorts after every real start.
END_OF_DAY = time.max

MINUTES_PER_DAY = 24 * 60
MIN_SLOT_MINUTES = 15
MAX_SLOT_MINUTES = 480

_INTERVAL = re.compile(r"(\d{2}):(\d{2})\s*-\s*(\d{2}):(\d{2})")

Interval = tuple[time, time]


class OpeningHoursError(ValueError):
    """Opening hours that cannot be used; the message names the day and the bad entry."""


def _minute_of_day(moment: time, *, is_end: bool = False) -> int:
    """Minutes since local midnight; :data:`END_OF_DAY` as an interval end is 1440."""
    if is_end and moment == END_OF_DAY:
        return MINUTES_PER_DAY
    return moment.hour * 60 + moment.minute


def _format_interval(interval: Interval) -> str:
    start, end = interval
    end_text = "24:00" if end == END_OF_DAY else end.strftime("%H:%M")
    return f"{start.strftime('%H:%M')}-{end_text}"


def _parse_interval(day: str, entry: object) -> Interval:
    """One ``"HH:MM-HH:MM"`` entry of ``day``; "24:00" only as an end."""
    if not isinstance(entry, str):
        raise OpeningHoursError(f"{day}: {entry!r} is not a 'HH:MM-HH:MM' string")
    match = _INTERVAL.fullmatch(entry.strip())
    if match is None:
        raise OpeningHoursError(f"{day}: {entry!r} is not of the form 'HH:MM-HH:MM'")
    start_h, start_m, end_h, end_m = (int(part) for part in match.groups())
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise OpeningHoursError(
            f"{day}: {entry!r} has an invalid time (00:00-23:59, or 24:00 as an end)"
        )
    start = time(start_h, start_m)
    end = END_OF_DAY if end_h == 24 else time(end_h, end_m)
    if start >= end:
        raise OpeningHoursError(
            f"{day}: {entry!r} does not start before it ends "
            "(split hours past midnight across two days)"
        )
    return start, end


def _check_day(day: str, intervals: Sequence[Interval]) -> None:
    """Whole-minute, naive, ``start < end``, sorted and non-overlapping intervals."""
    for start, end in intervals:
        for moment in (start, end):
            if moment.tzinfo is not None:
                raise OpeningHoursError(f"{day}: opening times are local wall times, no tzinfo")
            if moment != END_OF_DAY and (moment.second or moment.microsecond):
                raise OpeningHoursError(f"{day}: {moment} is not a whole minute")
        if start == END_OF_DAY or start >= end:
            raise OpeningHoursError(
                f"{day}: {_format_interval((start, end))!r} does not start before it ends"
            )
    for earlier, later in zip(intervals, intervals[1:], strict=False):
        if later[0] < earlier[1]:
            relation = "overlaps" if later[0] >= earlier[0] else "is out of order with"
            raise OpeningHoursError(
                f"{day}: {_format_interval(later)!r} {relation} {_format_interval(earlier)!r}"
            )


def _parse_closed_date(value: str | date) -> date:
    if isinstance(value, datetime):  # a datetime is a date too, but would never equal one
        raise OpeningHoursError(f"closed date {value!r} must be a date, not a datetime")
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except (TypeError, ValueError):
        raise OpeningHoursError(f"closed date {value!r} is not an ISO date (YYYY-MM-DD)") from None


@dataclass(frozen=True)
class OpeningHours:
    """Weekly opening hours in local wall time, plus local dates the center is closed.

    ``weekly`` has 7 entries, Monday first; each is a sorted tuple of non-overlapping
    ``(start, end)`` intervals with ``start < end``, whole minutes, and :data:`END_OF_DAY` as
    the end of an interval that runs until midnight.
    """

    weekly: tuple[tuple[Interval, ...], ...]
    closed_dates: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        if len(self.weekly) != len(WEEKDAYS):
            raise OpeningHoursError(
                f"weekly opening hours need {len(WEEKDAYS)} days, got {len(self.weekly)}"
            )
        for day, intervals in zip(WEEKDAYS, self.weekly, strict=True):
            _check_day(day, intervals)
        if not any(self.weekly):
            raise OpeningHoursError("opening hours are closed all week: open at least one day")

    @classmethod
    def parse(
        cls, spec: Mapping[str, Sequence[str]], closed_dates: Iterable[str | date] = ()
    ) -> OpeningHours:
        """Opening hours from ``{"mon": ["08:00-12:00", "13:00-17:30"], ...}``.

        Days that are missing (or have no entries) are closed; entries may come in any order.
        ``closed_dates`` are ISO date strings or dates. Raises :class:`OpeningHoursError`.
        """
        unknown = [key for key in spec if key not in WEEKDAYS]
        if unknown:
            raise OpeningHoursError(f"unknown day {unknown[0]!r}: days are {', '.join(WEEKDAYS)}")
        weekly: list[tuple[Interval, ...]] = []
        for day in WEEKDAYS:
            entries = spec.get(day, ())
            if isinstance(entries, str):  # a lone string would be read character by character
                raise OpeningHoursError(f"{day}: expected a list of 'HH:MM-HH:MM', got {entries!r}")
            parsed = sorted((_parse_interval(day, entry), entry) for entry in entries)
            for (earlier, earlier_entry), (later, later_entry) in zip(
                parsed, parsed[1:], strict=False
            ):
                if later[0] < earlier[1]:
                    raise OpeningHoursError(f"{day}: {later_entry!r} overlaps {earlier_entry!r}")
            weekly.append(tuple(interval for interval, _ in parsed))
        if isinstance(closed_dates, str):
            raise OpeningHoursError(f"closed_dates must be a list of dates, got {closed_dates!r}")
        closed = frozenset(_parse_closed_date(value) for value in closed_dates)
        return cls(weekly=tuple(weekly), closed_dates=closed)

    def to_spec(self) -> dict[str, list[str]]:
        """The inverse of :meth:`parse` (open days only), for storing as JSON."""
        return {
            day: [_format_interval(interval) for interval in intervals]
            for day, intervals in zip(WEEKDAYS, self.weekly, strict=True)
            if intervals
        }

    def closed_dates_spec(self) -> list[str]:
        """The closed dates as sorted ISO strings."""
        return [closed.isoformat() for closed in sorted(self.closed_dates)]


@dataclass(frozen=True)
class SlotGrid:
    """The bookable slots of a service center: ``capacity`` bays per slot of ``slot_minutes``."""

    hours: OpeningHours
    time_zone: str
    slot_minutes: int
    capacity: int
    # Per weekday, the wall-clock minutes (since local midnight) at which a slot starts.
    _starts_by_weekday: tuple[tuple[int, ...], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.time_zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            raise ValueError(f"unknown IANA time zone {self.time_zone!r}") from None
        if isinstance(self.slot_minutes, bool) or not isinstance(self.slot_minutes, int):
            raise ValueError(f"slot_minutes must be an int, got {self.slot_minutes!r}")
        if not MIN_SLOT_MINUTES <= self.slot_minutes <= MAX_SLOT_MINUTES:
            raise ValueError(
                f"slot_minutes must be within {MIN_SLOT_MINUTES}..{MAX_SLOT_MINUTES}, "
                f"got {self.slot_minutes}"
            )
        if isinstance(self.capacity, bool) or not isinstance(self.capacity, int):
            raise ValueError(f"capacity must be an int, got {self.capacity!r}")
        if self.capacity < 1:
            raise ValueError(f"capacity must be at least 1, got {self.capacity}")
        starts = tuple(self._slot_starts(intervals) for intervals in self.hours.weekly)
        if not any(starts):
            raise ValueError(
                f"no opening interval is long enough for a {self.slot_minutes}-minute slot"
            )
        object.__setattr__(self, "_starts_by_weekday", starts)

    def _slot_starts(self, intervals: Sequence[Interval]) -> tuple[int, ...]:
        """Slot start minutes of one weekday: from each interval's start, while the slot fits."""
        starts: list[int] = []
        for start, end in intervals:
            end_minute = _minute_of_day(end, is_end=True)
            minute = _minute_of_day(start)
            while minute + self.slot_minutes <= end_minute:
                starts.append(minute)
                minute += self.slot_minutes
        return tuple(starts)

    @property
    def zone(self) -> ZoneInfo:
        """The center's time zone (ZoneInfo caches instances, so this is cheap)."""
        return ZoneInfo(self.time_zone)

    @property
    def slot_length(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    def _instant(self, day: date, minute: int, zone: ZoneInfo) -> datetime | None:
        """The UTC instant of wall time ``minute`` on local ``day``; None inside a DST gap.

        A datetime built with ``fold=0`` resolves an ambiguous (fall-back) wall time to its
        first occurrence. A non-existent (spring-forward) wall time still converts to *some*
        instant, but that instant reads back as a different wall time, which is how it is found.
        """
        wall = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=zone)
        instant = wall.astimezone(UTC)
        back = instant.astimezone(zone)
        if (back.date(), back.hour, back.minute) != (day, wall.hour, wall.minute):
            return None
        return instant

    def _day_slots(self, day: date, zone: ZoneInfo) -> Iterator[datetime]:
        if day in self.hours.closed_dates:
            return
        for minute in self._starts_by_weekday[day.weekday()]:
            instant = self._instant(day, minute, zone)
            if instant is not None:
                yield instant

    def slots(self, start: datetime, end: datetime) -> Iterator[datetime]:
        """UTC start instants of every slot with ``start <= slot < end``, ascending.

        ``start`` and ``end`` are aware datetimes in any zone. Wall times in a DST gap are
        skipped; ambiguous wall times count once, at their first occurrence.
        """
        _require_aware(start=start, end=end)
        start, end = start.astimezone(UTC), end.astimezone(UTC)
        if start >= end:
            return
        zone = self.zone
        # One local day either side: where a zone moves its clocks across midnight, a slot's
        # instant can fall outside the local dates of the window's ends.
        day = start.astimezone(zone).date() - timedelta(days=1)
        last_day = end.astimezone(zone).date() + timedelta(days=1)
        # Slot instants ascend across days without sorting: wall times ascend, and with gaps
        # skipped and fold=0 only, the wall-to-UTC mapping is strictly increasing.
        while day <= last_day:
            for instant in self._day_slots(day, zone):
                if instant >= end:
                    return
                if instant >= start:
                    yield instant
            day += timedelta(days=1)

    def is_slot(self, when: datetime) -> bool:
        """Whether ``when`` (aware, any zone) is exactly the start of one of the slots."""
        _require_aware(when=when)
        zone = self.zone
        local = when.astimezone(zone)
        if local.second or local.microsecond:
            return False
        day = local.date()
        minute = local.hour * 60 + local.minute
        if day in self.hours.closed_dates or minute not in self._starts_by_weekday[day.weekday()]:
            return False
        # The second occurrence of an ambiguous wall time reads as a slot time, but only the
        # first occurrence is a slot. Compare in UTC: under PEP 495 an ambiguous local datetime
        # never equals a datetime in another zone, whatever its fold.
        return self._instant(day, minute, zone) == when.astimezone(UTC)

    def slot_end(self, slot_start: datetime) -> datetime:
        """The UTC instant ``slot_minutes`` after ``slot_start``."""
        _require_aware(slot_start=slot_start)
        # Convert first: adding a timedelta to a ZoneInfo-aware datetime adds wall-clock time,
        # which is off by the DST shift when the slot straddles a change.
        return slot_start.astimezone(UTC) + self.slot_length

    def first_free(
        self, taken: Mapping[datetime, int], earliest: datetime, latest: datetime
    ) -> datetime | None:
        """The first slot starting at or after ``earliest`` and ending by ``latest`` that has
        fewer than ``capacity`` bays taken; None when there is none.

        ``taken`` maps aware slot starts (normally UTC) to the number of bays already booked.
        """
        _require_aware(earliest=earliest, latest=latest)
        booked: dict[datetime, int] = {}
        for slot_start, count in taken.items():
            _require_aware(taken=slot_start)
            # Re-key in UTC: under PEP 495 a key at an ambiguous local time never equals the
            # UTC slot start of the same instant, so it would not be found.
            key = slot_start.astimezone(UTC)
            booked[key] = booked.get(key, 0) + count
        last_start = latest.astimezone(UTC) - self.slot_length
        for slot_start in self.slots(earliest, latest):
            if slot_start > last_start:
                return None
            if booked.get(slot_start, 0) < self.capacity:
                return slot_start
        return None

    def free_bay(self, used_bays: Collection[int]) -> int | None:
        """The smallest bay index in ``range(capacity)`` not in ``used_bays``; None if all used."""
        used = set(used_bays)
        return next((bay for bay in range(self.capacity) if bay not in used), None)


def _require_aware(**moments: datetime) -> None:
    for name, moment in moments.items():
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be a timezone-aware datetime, got naive {moment!r}")
