"""The lifecycle of each DTC per vehicle, fed with batches of telemetry samples (Arrow tables).

A vehicle reports the DTCs it has active in ``Vehicle.Diagnostics.DTCList``. Every sample that
carries the list (a non-null list, possibly empty) is a *report*. From the reports this module
derives, per (VIN, DTC key), episodes that move through::

    pending ──► confirmed ──► cleared | aged_out
       └─────────────────────► cleared | aged_out

and emits a :class:`DtcEvent` for every transition, so a worker can store them and publish
them. The rules and their defaults are in :class:`LifecyclePolicy` and ``docs/dtc.md``.

Design points:

* **Vectorised selection.** Only vehicles that report a non-empty list in the batch, or that
  have an active (pending/confirmed) DTC, are looked at row by row; finding them costs a few
  Arrow compute kernels over the whole batch. A batch without DTCs costs microseconds.
* **Idempotent replays.** A vehicle's *watermark* is the newest report time that any of its
  records has evaluated (``max(last_report)``). Reports at or before it are skipped, so a Kafka
  replay of rows already processed changes nothing, and a state restored from the database
  (the records alone) is as good as the state in memory.
* **Late data** (older than the watermark) is skipped the same way and counted in
  ``stale_rows``: the lifecycle is an online state machine and does not rewrite history. A
  backfill replays the archive through a fresh tracker, in order.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from diagnostics.dtc import DTC_LIST_SIGNAL, Dtc, DtcFormatError, parse_dtc

DAY_MS = 86_400_000

NON_SIGNAL_COLUMNS = frozenset(
    {
        "vin",
        "message_id",
        "seq",
        "ts",
        "received_at",
        "kafka_partition",
        "kafka_offset",
        "extra_signals",
    }
)
"""Columns of the archive schema that are not vehicle signals (left out of freeze frames)."""


class DtcState(StrEnum):
    PENDING = "pending"
    """Reported, not yet confirmed."""
    CONFIRMED = "confirmed"
    """Reported persistently (or the ECU says confirmedDTC)."""
    CLEARED = "cleared"
    """The vehicle's reports stopped listing it. Ends the episode."""
    AGED_OUT = "aged_out"
    """Not reported for a long time, with no reports saying it went away. Ends the episode."""


ACTIVE_STATES = frozenset({DtcState.PENDING, DtcState.CONFIRMED})


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """When a DTC changes state. Times are in milliseconds of event time (sample ``ts``)."""

    confirm_min_reports: int = 3
    """Reports listing the DTC in one episode before it is confirmed..."""
    confirm_min_span_ms: int = 60_000
    """...and the time from its first to its latest such report. A DTC listed for a minute,
    or seen again in a later drive, is real; one glitchy sample is not."""
    trust_confirmed_status: bool = True
    """Confirm at once when the UDS status byte has confirmedDTC set: the ECU debounced it."""
    clear_min_reports: int = 3
    """Consecutive reports (non-null lists) without the DTC before it is cleared..."""
    clear_min_span_ms: int = 300_000
    """...and the time since it was last listed. An intermittent fault that comes back within
    five minutes stays one episode instead of opening a new one each time."""
    age_out_ms: int = 7 * DAY_MS
    """An active DTC not listed for this long, while no report said it went away (the vehicle
    stopped sending the list, or went silent), ages out. Time-based stand-in for the OBD rule
    of erasing a code after 40 warm-up cycles without the fault."""
    freeze_frame_window_ms: int = 30_000
    """How far before the first report of an episode the freeze frame looks for the last
    non-null value of each signal (rows of the same batch only)."""

    def __post_init__(self) -> None:
        if self.confirm_min_reports < 1 or self.clear_min_reports < 1:
            raise ValueError("confirm_min_reports and clear_min_reports must be at least 1")
        if min(self.confirm_min_span_ms, self.clear_min_span_ms, self.freeze_frame_window_ms) < 0:
            raise ValueError("spans and windows must not be negative")
        if self.age_out_ms <= 0:
            raise ValueError("age_out_ms must be positive")


@dataclass(slots=True)
class DtcRecord:
    """The current episode of one DTC on one vehicle; what a worker stores and restores.
    Times are milliseconds since the Unix epoch (UTC), like telemetry ``ts``."""

    vin: str
    key: str
    """The DTC's identity: code plus FTB when reported (``P0217`` or ``P0217-4B``)."""
    dtc: Dtc
    """As decoded from the latest report that listed it (so with the latest status byte)."""
    state: DtcState
    episode: int
    """1 for the first episode; a DTC that comes back after cleared/aged_out opens the next."""
    first_seen: int
    """First report of this episode that listed the DTC."""
    last_seen: int
    """Latest report of this episode that listed the DTC."""
    last_report: int
    """Latest report (listing it or not) evaluated for this record: the replay watermark."""
    state_since: int
    """When the current state was entered (the ``ts`` of its event)."""
    occurrences: int
    """Distinct reports (samples with a non-null list, one per vehicle and ``ts``) of this
    episode that listed the DTC."""
    absent_reports: int = 0
    """Consecutive reports since ``last_seen`` that did not list it."""
    freeze_frame: dict[str, Any] = field(default_factory=dict)
    """Signal path -> value around the first report of the episode (JSON-ready)."""

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    def copy(self) -> DtcRecord:
        # Field by field: dataclasses.replace costs ten times more, and this runs per update.
        return DtcRecord(
            self.vin,
            self.key,
            self.dtc,
            self.state,
            self.episode,
            self.first_seen,
            self.last_seen,
            self.last_report,
            self.state_since,
            self.occurrences,
            self.absent_reports,
            dict(self.freeze_frame),
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready; :meth:`from_dict` reads it back."""
        return {
            "vin": self.vin,
            "key": self.key,
            "dtc": self.dtc.text,
            "state": self.state.value,
            "episode": self.episode,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "last_report": self.last_report,
            "state_since": self.state_since,
            "occurrences": self.occurrences,
            "absent_reports": self.absent_reports,
            "freeze_frame": self.freeze_frame,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DtcRecord:
        return cls(
            vin=data["vin"],
            key=data["key"],
            dtc=parse_dtc(data["dtc"]),
            state=DtcState(data["state"]),
            episode=int(data["episode"]),
            first_seen=int(data["first_seen"]),
            last_seen=int(data["last_seen"]),
            last_report=int(data["last_report"]),
            state_since=int(data["state_since"]),
            occurrences=int(data["occurrences"]),
            absent_reports=int(data.get("absent_reports", 0)),
            freeze_frame=dict(data.get("freeze_frame") or {}),
        )


@dataclass(frozen=True, slots=True)
class DtcEvent:
    """One state transition. ``state_before`` is None when the DTC was never seen on this
    vehicle, and cleared/aged_out when a new episode opens. A new episode may start directly
    as confirmed (confirmedDTC status bit). ``(vin, key, episode, state_after)`` is unique:
    a natural key for an idempotent sink."""

    vin: str
    key: str
    state_before: DtcState | None
    state_after: DtcState
    ts: int
    """Event time in ms: the report that caused it, or ``last_seen + age_out_ms`` for aging."""
    episode: int
    occurrences: int
    first_seen: int
    last_seen: int
    dtc: Dtc
    freeze_frame: dict[str, Any] | None = None
    """Only on the event that opens an episode."""

    @property
    def opens_episode(self) -> bool:
        return self.state_before is None or self.state_before not in ACTIVE_STATES

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready (for a Kafka topic)."""
        return {
            "vin": self.vin,
            "key": self.key,
            "state_before": None if self.state_before is None else self.state_before.value,
            "state_after": self.state_after.value,
            "ts": self.ts,
            "episode": self.episode,
            "occurrences": self.occurrences,
            "first_seen": self.first_seen,
            "last_seen": self.last_seen,
            "dtc": self.dtc.as_dict(),
            "freeze_frame": self.freeze_frame,
        }


@dataclass(frozen=True, slots=True)
class MalformedDtc:
    """An entry of a DTC list that does not decode, aggregated per vehicle and text in a
    batch. Never tracked; reported so it can be counted and the sender fixed."""

    vin: str
    text: str | None
    """The entry as sent; None for a null list item."""
    reason: str
    """:attr:`DtcFormatError.reason` (``bad_system``, ``too_short``...) or ``null``."""
    first_ts: int
    count: int
    """Reports in the batch that contained it."""


@dataclass(slots=True)
class DtcBatchResult:
    events: list[DtcEvent] = field(default_factory=list)
    updated: list[DtcRecord] = field(default_factory=list)
    """Snapshots of every record this call changed: store them (upsert on vin and key) in the
    same transaction as the events, and a restarted tracker continues exactly."""
    malformed: list[MalformedDtc] = field(default_factory=list)
    rows: int = 0
    """Rows in the input."""
    evaluated_rows: int = 0
    """Reports that went through the state machine."""
    stale_rows: int = 0
    """Reports skipped because they were not newer than the vehicle's watermark (replays,
    duplicates of the same vehicle and ``ts``, late data)."""


def _decode_report(
    report: Sequence[str | None],
) -> tuple[dict[str, Dtc], list[tuple[str | None, str]]]:
    """DTC key -> decoded DTC, and (text, reason) of each entry that does not decode."""
    listed: dict[str, Dtc] = {}
    malformed: list[tuple[str | None, str]] = []
    for text in report:
        decoded = None if text is None else _decode(text)
        if isinstance(decoded, Dtc):
            earlier = listed.get(decoded.key)
            # The same DTC twice in one list (different status bytes): a confirmed one wins.
            if earlier is None or not _status_confirmed(earlier):
                listed[decoded.key] = decoded
        else:
            malformed.append((text, "null" if decoded is None else decoded.reason))
    return listed, malformed


@lru_cache(maxsize=65_536)
def _decode(text: str) -> Dtc | DtcFormatError:
    """Lists repeat the same strings sample after sample: decode each text once."""
    try:
        return parse_dtc(text)
    except DtcFormatError as error:
        return error.with_traceback(None)  # cached: keep no frames alive


@dataclass(slots=True)
class _FreezeFrameRequest:
    record: DtcRecord
    event_index: int
    last_position: int
    """Position of the episode's first report in the batch's (vin, ts)-sorted rows."""
    first_position: int = -1
    """Oldest position within the freeze-frame window (set when the vehicle is done)."""


@dataclass(slots=True)
class _Batch:
    """Working state of one :meth:`DtcTracker.process` call."""

    result: DtcBatchResult
    touched: dict[tuple[str, str], DtcRecord] = field(default_factory=dict)
    malformed: dict[tuple[str, str | None], list[Any]] = field(default_factory=dict)
    freeze_frames: list[_FreezeFrameRequest] = field(default_factory=list)


class DtcTracker:
    """DTC lifecycles for a set of vehicles (one worker's partitions). Not thread-safe.

    Integration, per batch: ``tracker.restore(load(tracker.missing_vins(table)), vins=...)``,
    then ``result = tracker.process(table)``, then store ``result.events`` and
    ``result.updated`` and publish the events; call :meth:`expire` now and then so vehicles
    that went silent age out.
    """

    def __init__(self, policy: LifecyclePolicy | None = None) -> None:
        self.policy = policy or LifecyclePolicy()
        self._records: dict[str, dict[str, DtcRecord]] = {}
        self._watermarks: dict[str, int] = {}
        self._active_vins: set[str] = set()
        self._known_vins: set[str] = set()

    # --- state in and out ---

    def state(self, vin: str) -> list[DtcRecord]:
        """Copies of the vehicle's records (every DTC it ever had, current episode each)."""
        return [record.copy() for record in self._records.get(vin, {}).values()]

    def restore(self, records: Iterable[DtcRecord], *, vins: Iterable[str] = ()) -> None:
        """Replace the state of the vehicles in ``records`` and in ``vins`` (list a vehicle in
        ``vins`` when the database has no records for it, so it counts as loaded)."""
        by_vin: dict[str, dict[str, DtcRecord]] = {vin: {} for vin in vins}
        for record in records:
            by_vin.setdefault(record.vin, {})[record.key] = record.copy()
        for vin, vehicle_records in by_vin.items():
            self._records[vin] = vehicle_records
            self._known_vins.add(vin)
            self._refresh_vehicle(vin)

    def missing_vins(self, table: pa.Table) -> list[str]:
        """Vehicles that report DTCs in ``table`` but whose state was neither restored nor
        built here: load their records (all of them, for the episode counters) first."""
        if DTC_LIST_SIGNAL not in table.column_names or table.num_rows == 0:
            return []
        vins = _vins_with_codes(_vin_column(table), table.column(DTC_LIST_SIGNAL))
        return [vin for vin in vins if vin not in self._known_vins]

    # --- processing ---

    def process(self, table: pa.Table) -> DtcBatchResult:
        """Run the reports in ``table`` (any order, any mix of vehicles) through the lifecycle.
        Needs columns ``vin`` and ``ts``; ``Vehicle.Diagnostics.DTCList`` when DTCs are
        reported; any other columns are signals for freeze frames. Never raises for content."""
        batch = _Batch(DtcBatchResult(rows=table.num_rows))
        if table.num_rows == 0:
            return batch.result
        vin_column = _vin_column(table)
        ts_column = _ts_column(table)
        lists = table.column(DTC_LIST_SIGNAL) if DTC_LIST_SIGNAL in table.column_names else None
        with_codes = [] if lists is None else _vins_with_codes(vin_column, lists)
        candidates = self._active_vins.union(with_codes)
        if not candidates:
            return batch.result
        selected = pc.and_(
            pc.is_in(vin_column, value_set=pa.array(sorted(candidates), pa.string())),
            pc.is_valid(ts_column),
        )
        rows = pc.indices_nonzero(selected)
        subset = pa.table({"vin": vin_column.take(rows), "ts": ts_column.take(rows), "row": rows})
        order = pc.sort_indices(
            subset, sort_keys=[("vin", "ascending"), ("ts", "ascending"), ("row", "ascending")]
        )
        subset = subset.take(order)
        vins: list[str] = subset.column("vin").to_pylist()
        times: list[int] = subset.column("ts").to_pylist()
        row_numbers = subset.column("row")
        reports: list[Sequence[str | None] | None] = (
            [None] * len(vins) if lists is None else _reports(lists, row_numbers)
        )
        start = 0
        while start < len(vins):
            vin = vins[start]
            end = start
            while end < len(vins) and vins[end] == vin:
                end += 1
            self._process_vehicle(batch, vin, times, reports, start, end)
            start = end
        self._resolve_freeze_frames(batch, table, row_numbers.to_numpy())
        return self._finish(batch)

    def expire(self, now_ms: int) -> DtcBatchResult:
        """Age out active DTCs of vehicles that have not listed them for ``age_out_ms`` by
        ``now_ms`` (wall clock or the newest Kafka timestamp): covers vehicles gone silent."""
        batch = _Batch(DtcBatchResult())
        for vin in sorted(self._active_vins):
            self._age_out(batch, vin, now_ms)
            self._refresh_vehicle(vin)
        return self._finish(batch)

    # --- internals ---

    def _process_vehicle(
        self,
        batch: _Batch,
        vin: str,
        times: list[int],
        reports: list[Sequence[str | None] | None],
        start: int,
        end: int,
    ) -> None:
        """The reports of one vehicle, oldest first (positions ``start:end`` of the batch)."""
        self._known_vins.add(vin)
        records = self._records.setdefault(vin, {})
        before = {key: (r.episode, r.state, r.last_report) for key, r in records.items()}
        active = [record for record in records.values() if record.active]
        watermark = self._watermarks.get(vin)
        cursor = -math.inf if watermark is None else watermark
        first_request = len(batch.freeze_frames)
        evaluated = stale = 0
        previous: Sequence[str | None] | None = None
        listed: dict[str, Dtc] = {}
        malformed: list[tuple[str | None, str]] = []
        for position in range(start, end):
            report = reports[position]
            if report is None:
                continue  # the sample did not carry the list: says nothing about DTCs
            ts = times[position]
            if ts <= cursor:
                stale += 1
                continue
            cursor = ts
            evaluated += 1
            if not report:
                # The common case: nothing listed (by far most rows of vehicles with DTCs).
                if active and self._apply_empty_report(batch, active, ts):
                    active = [record for record in records.values() if record.active]
                continue
            if report != previous:  # lists repeat sample after sample: decode on change
                listed, malformed = _decode_report(report)
                previous = report
            for text, reason in malformed:
                batch.malformed.setdefault((vin, text), [reason, ts, 0])[2] += 1
            if self._apply_report(batch, vin, records, active, position, ts, listed):
                active = [record for record in records.values() if record.active]
        batch.result.evaluated_rows += evaluated
        batch.result.stale_rows += stale
        # Rows without a list still tell that time passed: age out what was not listed since.
        self._age_out(batch, vin, times[end - 1])
        self._refresh_vehicle(vin)
        for key, record in records.items():
            if before.get(key) != (record.episode, record.state, record.last_report):
                batch.touched[(vin, key)] = record
        window = self.policy.freeze_frame_window_ms
        for request in batch.freeze_frames[first_request:]:
            # The frame's rows: this vehicle's samples in the window up to the first report.
            oldest = times[request.last_position] - window
            request.first_position = bisect_left(times, oldest, start, request.last_position)

    def _apply_empty_report(self, batch: _Batch, active: list[DtcRecord], ts: int) -> bool:
        """A report that lists nothing: :meth:`_apply_report` for that case, inlined because
        it runs for every sample of a vehicle with active DTCs."""
        policy = self.policy
        changed = False
        for record in active:  # all active: the caller rebuilds the list after a change
            silent_for = ts - record.last_seen
            if silent_for >= policy.age_out_ms:
                aged_at = record.last_seen + policy.age_out_ms
                self._transition(batch, record, DtcState.AGED_OUT, aged_at)
                changed = True
                continue
            record.last_report = ts
            record.absent_reports += 1
            if (
                record.absent_reports >= policy.clear_min_reports
                and silent_for >= policy.clear_min_span_ms
            ):
                self._transition(batch, record, DtcState.CLEARED, ts)
                changed = True
        return changed

    def _apply_report(
        self,
        batch: _Batch,
        vin: str,
        records: dict[str, DtcRecord],
        active: list[DtcRecord],
        position: int,
        ts: int,
        listed: dict[str, Dtc],
    ) -> bool:
        """One report of one vehicle; ``active`` holds its active records before it. Returns
        whether the set of active records changed."""
        age_out_ms = self.policy.age_out_ms
        changed = False
        for record in active:
            if ts - record.last_seen >= age_out_ms:
                self._transition(batch, record, DtcState.AGED_OUT, record.last_seen + age_out_ms)
                changed = True
        for key, dtc in listed.items():
            existing = records.get(key)
            if existing is None or not existing.active:
                opened = self._open_episode(batch, vin, records, existing, key, dtc, ts)
                event_index = len(batch.result.events) - 1
                batch.freeze_frames.append(_FreezeFrameRequest(opened, event_index, position))
                changed = True
            else:
                self._listed_again(batch, existing, dtc, ts)
        for record in active:
            if record.active and record.key not in listed:
                changed |= self._not_listed(batch, record, ts)
        return changed

    def _should_confirm(self, record: DtcRecord, dtc: Dtc) -> bool:
        policy = self.policy
        if policy.trust_confirmed_status and _status_confirmed(dtc):
            return True
        return (
            record.occurrences >= policy.confirm_min_reports
            and record.last_seen - record.first_seen >= policy.confirm_min_span_ms
        )

    def _open_episode(
        self,
        batch: _Batch,
        vin: str,
        records: dict[str, DtcRecord],
        previous: DtcRecord | None,
        key: str,
        dtc: Dtc,
        ts: int,
    ) -> DtcRecord:
        record = DtcRecord(
            vin=vin,
            key=key,
            dtc=dtc,
            state=DtcState.PENDING,
            episode=1 if previous is None else previous.episode + 1,
            first_seen=ts,
            last_seen=ts,
            last_report=ts,
            state_since=ts,
            occurrences=1,
        )
        if self._should_confirm(record, dtc):
            record.state = DtcState.CONFIRMED
        records[key] = record
        self._emit(batch, record, None if previous is None else previous.state, ts)
        return record

    def _listed_again(self, batch: _Batch, record: DtcRecord, dtc: Dtc, ts: int) -> None:
        record.dtc = dtc
        record.last_seen = ts
        record.last_report = ts
        record.occurrences += 1
        record.absent_reports = 0
        if record.state is DtcState.PENDING and self._should_confirm(record, dtc):
            self._transition(batch, record, DtcState.CONFIRMED, ts)

    def _not_listed(self, batch: _Batch, record: DtcRecord, ts: int) -> bool:
        """A report without the record's DTC. Returns whether that cleared it."""
        record.last_report = ts
        record.absent_reports += 1
        policy = self.policy
        if (
            record.absent_reports >= policy.clear_min_reports
            and ts - record.last_seen >= policy.clear_min_span_ms
        ):
            self._transition(batch, record, DtcState.CLEARED, ts)
            return True
        return False

    def _age_out(self, batch: _Batch, vin: str, now_ms: int) -> None:
        age_out_ms = self.policy.age_out_ms
        for key, record in self._records.get(vin, {}).items():
            if record.active and now_ms - record.last_seen >= age_out_ms:
                self._transition(batch, record, DtcState.AGED_OUT, record.last_seen + age_out_ms)
                batch.touched[(vin, key)] = record

    def _transition(self, batch: _Batch, record: DtcRecord, state: DtcState, ts: int) -> None:
        before = record.state
        record.state = state
        record.state_since = ts
        self._emit(batch, record, before, ts)

    @staticmethod
    def _emit(batch: _Batch, record: DtcRecord, before: DtcState | None, ts: int) -> None:
        batch.result.events.append(
            DtcEvent(
                vin=record.vin,
                key=record.key,
                state_before=before,
                state_after=record.state,
                ts=ts,
                episode=record.episode,
                occurrences=record.occurrences,
                first_seen=record.first_seen,
                last_seen=record.last_seen,
                dtc=record.dtc,
            )
        )

    def _refresh_vehicle(self, vin: str) -> None:
        """Recompute the vehicle's watermark and whether it has active DTCs."""
        records = self._records.get(vin, {})
        if records:
            self._watermarks[vin] = max(record.last_report for record in records.values())
        else:
            self._watermarks.pop(vin, None)
        if any(record.active for record in records.values()):
            self._active_vins.add(vin)
        else:
            self._active_vins.discard(vin)

    def _resolve_freeze_frames(
        self, batch: _Batch, table: pa.Table, row_numbers: np.ndarray
    ) -> None:
        """Every freeze frame of the batch at once: per signal column, the last non-null value
        within each frame's rows, found with a running maximum over the concatenated rows."""
        requests = batch.freeze_frames
        if not requests:
            return
        lengths = np.array([r.last_position - r.first_position + 1 for r in requests])
        ends = np.cumsum(lengths)
        starts = ends - lengths
        spans = [np.arange(r.first_position, r.last_position + 1) for r in requests]
        signals = table.select(_signal_columns(table.schema))
        signals = signals.take(pa.array(row_numbers[np.concatenate(spans)]))
        positions = np.arange(int(ends[-1]))
        frames: list[dict[str, Any]] = [{} for _ in requests]
        for name in signals.column_names:
            column = signals.column(name)
            present = pc.is_valid(column)
            if pa.types.is_floating(column.type):
                present = pc.and_(present, pc.invert(pc.fill_null(pc.is_nan(column), True)))
            mask = present.to_numpy()
            last_present = np.maximum.accumulate(np.where(mask, positions, -1))[ends - 1]
            found = np.flatnonzero(last_present >= starts)
            if len(found):
                values = column.take(pa.array(last_present[found])).to_pylist()
                for index, value in zip(found.tolist(), values, strict=True):
                    frames[index][name] = value
        for request, frame in zip(requests, frames, strict=True):
            request.record.freeze_frame = frame
            event = batch.result.events[request.event_index]
            batch.result.events[request.event_index] = replace(event, freeze_frame=dict(frame))

    def _finish(self, batch: _Batch) -> DtcBatchResult:
        result = batch.result
        result.updated = [record.copy() for record in batch.touched.values()]
        result.malformed = [
            MalformedDtc(vin=vin, text=text, reason=reason, first_ts=first_ts, count=count)
            for (vin, text), (reason, first_ts, count) in batch.malformed.items()
        ]
        return result


def _status_confirmed(dtc: Dtc) -> bool:
    return dtc.status is not None and dtc.status.confirmed_dtc


def _vin_column(table: pa.Table) -> pa.ChunkedArray:
    column = table.column("vin")
    return column if column.type == pa.string() else pc.cast(column, pa.string())


def _ts_column(table: pa.Table) -> pa.ChunkedArray:
    """``ts`` as int64 milliseconds (a timestamp column of any unit, or integers in ms)."""
    column = table.column("ts")
    if pa.types.is_timestamp(column.type):
        if column.type.unit != "ms":
            column = pc.cast(column, pa.timestamp("ms", column.type.tz), safe=False)
        return pc.cast(column, pa.int64())
    if pa.types.is_integer(column.type):
        return pc.cast(column, pa.int64())
    raise TypeError(f"column 'ts' must be a timestamp or integer ms, not {column.type}")


def _reports(lists: pa.ChunkedArray, rows: pa.ChunkedArray) -> list[Sequence[str | None] | None]:
    """The DTC lists of ``rows``: None for a null list, ``()`` for an empty one (most rows,
    so only the non-empty lists are converted to Python)."""
    selected = lists.take(rows)
    lengths = pc.fill_null(pc.list_value_length(selected), -1).to_numpy()
    reports: list[Sequence[str | None] | None] = [
        None if length < 0 else () for length in lengths.tolist()
    ]
    non_empty = np.flatnonzero(lengths > 0)
    if len(non_empty):
        values = selected.take(pa.array(non_empty)).to_pylist()
        for position, value in zip(non_empty.tolist(), values, strict=True):
            reports[position] = value
    return reports


def _vins_with_codes(vin_column: pa.ChunkedArray, lists: pa.ChunkedArray) -> list[str]:
    """Vehicles with at least one non-empty DTC list in the batch."""
    non_empty = pc.fill_null(pc.greater(pc.list_value_length(lists), 0), False)
    vins: list[str | None] = pc.unique(pc.filter(vin_column, non_empty)).to_pylist()
    return [vin for vin in vins if vin is not None]


def _signal_columns(schema: pa.Schema) -> Sequence[str]:
    """Columns that hold JSON-ready signal values (scalars or lists of strings)."""

    def json_ready(data_type: pa.DataType) -> bool:
        if pa.types.is_list(data_type) or pa.types.is_large_list(data_type):
            return json_ready(data_type.value_type)
        return (
            pa.types.is_boolean(data_type)
            or pa.types.is_integer(data_type)
            or pa.types.is_floating(data_type)
            or pa.types.is_string(data_type)
            or pa.types.is_large_string(data_type)
        )

    return [
        item.name
        for item in schema
        if item.name not in NON_SIGNAL_COLUMNS and json_ready(item.type)
    ]
