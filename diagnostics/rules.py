"""Rule alarms: evaluate an operator's rules (:mod:`diagnostics.rules_model`) over telemetry
batches and report alarms that are raised and cleared.

:class:`RuleEngine` is pure logic: ``process(table)`` takes a ``pyarrow.Table`` in the archive
schema (``vin``, ``ts``, ``received_at``, one column per VSS signal; rows of many vehicles, in
any order) and returns :class:`AlarmEvent` s. The Kafka worker, the archive backfill and the
tests all feed it the same way. Semantics (``docs/rules.md`` has the long version):

* **Event time.** Durations, gaps and rate windows are measured in sample time ``ts``, never in
  arrival or processing time, so a replay or a backfill finds the same alarms at the same times.
* **One open alarm per (vehicle, rule).** Each (vehicle, rule) has a small state machine, idle ->
  pending (condition true, waiting for ``for_s``) -> open -> idle, carried across batches.
* **Timelines.** Each vehicle has two: *live* (samples that arrived within ``late_after_s`` of
  their ``ts``) and *late* (store-and-forward samples that arrived later). They never mix: late
  rows cannot open, hold or clear a live alarm, and findings in late data are reported with
  ``late=True``. Within a timeline, a row at or before the timeline's high-water mark (the newest
  ``ts`` already processed) is a replay or a duplicate and is skipped, which makes replays after
  a restart idempotent.
* **Vectorised.** Conditions are evaluated as numpy masks over the whole batch; Python only walks
  the *runs* (maximal stretches of equal condition state) of the (vehicle, rule) pairs that have
  something to do: an alarm already pending or open, or a sample meeting the raise condition.

The state (per-timeline high-water marks, rule state machines, rate windows) is exported as
JSON-ready data with :meth:`RuleEngine.export_state` and restored with
:meth:`RuleEngine.restore_state`, so a restarted worker continues where the last one stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.signals import CATALOG, SignalSpec
from diagnostics.rules_model import (
    RATE_BUCKETS,
    Condition,
    RateRule,
    RuleSet,
    Severity,
    SpreadRule,
    ThresholdRule,
)

__all__ = [
    "STATE_FORMAT",
    "AlarmEvent",
    "EngineStats",
    "OpenAlarm",
    "RuleEngine",
]

STATE_FORMAT = 1
"""Version of :meth:`RuleEngine.export_state` output."""

AnyRule = ThresholdRule | SpreadRule | RateRule
EventKind = Literal["raised", "cleared"]
Value = float | bool | str | None

_LIVE, _LATE = 0, 1
_LANE_NAMES = ("live", "late")
# Condition state of one sample for one rule.
_NA, _CLEAR, _HOLD, _RAISE = 0, 1, 2, 3
"""Not applicable (a ``when`` condition is false), clear condition, hysteresis band (neither
raise nor clear), raise condition."""
_PENDING, _OPEN = 1, 2
_PHASE_NAMES = {_PENDING: "pending", _OPEN: "open"}
_NO_MARK = np.iinfo(np.int64).min
_GROUP_SHIFT = np.int64(1 << 40)


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """An alarm raised or cleared for one vehicle and rule.

    The natural key for an idempotent sink is ``(vin, rule_id, kind, ts_ms)``: replays of the
    same rows give the same events with the same keys.
    """

    kind: EventKind
    vin: str
    rule_id: str
    severity: Severity
    ts_ms: int
    """Event time: ``ts`` of the sample where the condition completed its duration."""
    value: Value
    """The rule's value on that sample: the signal, the spread or the rate (unit per ``per``)."""
    message: str
    late: bool
    """True for findings in store-and-forward data (the late timeline); they never open a live
    alarm."""
    condition_since_ms: int
    """``ts`` of the first sample of the condition (raise: raise condition; clear: clear
    condition), so ``ts_ms - condition_since_ms`` is how long it held."""
    raised_ts_ms: int
    """``ts_ms`` of the raised event of this alarm (equal to ``ts_ms`` for raised events); links
    a cleared event to its raised event."""
    peak: float | None
    """Most extreme value from the start of the condition to this event (max for ``>``/``>=``
    and spreads, min for ``<``/``<=``); None for equality rules."""

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.vin, self.rule_id, self.kind, self.ts_ms)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (Kafka value, HTTP response)."""
        return {
            "kind": self.kind,
            "vin": self.vin,
            "rule_id": self.rule_id,
            "severity": self.severity,
            "ts_ms": self.ts_ms,
            "value": self.value,
            "message": self.message,
            "late": self.late,
            "condition_since_ms": self.condition_since_ms,
            "raised_ts_ms": self.raised_ts_ms,
            "peak": self.peak,
        }


@dataclass(frozen=True, slots=True)
class OpenAlarm:
    """An alarm that is raised and not yet cleared."""

    vin: str
    rule_id: str
    severity: Severity
    raised_ts_ms: int
    condition_since_ms: int
    value: Value
    """Value at the raised event."""
    peak: float | None
    """Most extreme value so far."""
    late: bool


@dataclass
class EngineStats:
    """Row counters since the engine was created (for metrics and tests)."""

    rows: int = 0
    live_rows: int = 0
    late_rows: int = 0
    stale_rows: int = 0
    """At or before the timeline's high-water mark: replays and out-of-order rows, skipped."""
    duplicate_rows: int = 0
    """Same vehicle, timeline and ``ts`` as another row of the batch; all but one skipped."""
    invalid_rows: int = 0
    """Null ``vin`` or ``ts``."""
    future_rows: int = 0
    """``ts`` more than ``max_future_s`` after ``received_at`` (a wrong vehicle clock); skipped,
    since one such row would move the high-water mark ahead and mute the vehicle."""
    raised: int = 0
    cleared: int = 0


@dataclass(slots=True)
class _RuleState:
    """A non-idle (vehicle timeline, rule) state; idle pairs have no entry at all."""

    phase: int
    since: int
    """Pending: start of the raise condition. Open: start of the condition that raised it."""
    last_ts: int
    """``ts`` of the last sample of the rule seen (to detect a gap at the next batch)."""
    peak: float | None
    raised_ts: int = 0
    raised_value: Value = None
    clear_since: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "phase": _PHASE_NAMES[self.phase],
            "since": self.since,
            "last_ts": self.last_ts,
            "peak": self.peak,
            "raised_ts": self.raised_ts,
            "raised_value": self.raised_value,
            "clear_since": self.clear_since,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> _RuleState:
        phase = {"pending": _PENDING, "open": _OPEN}[data["phase"]]
        peak = data.get("peak")
        clear_since = data.get("clear_since")
        return cls(
            phase=phase,
            since=int(data["since"]),
            last_ts=int(data["last_ts"]),
            peak=None if peak is None else float(peak),
            raised_ts=int(data.get("raised_ts", 0)),
            raised_value=data.get("raised_value"),
            clear_since=None if clear_since is None else int(clear_since),
        )


class _Compiled:
    """A rule with its durations in ms, its value type and its per-timeline states."""

    def __init__(self, rule: AnyRule, order: int, gap_ms: int, catalog: Mapping[str, SignalSpec]):
        self.rule = rule
        self.order = order
        self.for_ms = round(rule.for_s * 1000)
        self.clear_for_ms = round(rule.clear_for_s * 1000)
        self.gap_ms = gap_ms
        self.direction = rule.direction
        self.value_kind = "float"
        if isinstance(rule, ThresholdRule):
            self.value_kind = {"bool": "bool", "string": "string"}.get(
                catalog[rule.signal].kind, "float"
            )
        if isinstance(rule, RateRule):
            self.unit = f"{catalog[rule.signal].unit or ''}/{rule.per}"
            self.signal_text = rule.signal
        elif isinstance(rule, SpreadRule):
            self.unit = catalog[rule.signals[0]].unit or ""
            self.signal_text = ", ".join(rule.signals)
        else:
            self.unit = catalog[rule.signal].unit or ""
            self.signal_text = rule.signal
        self.states: dict[int, _RuleState] = {}
        self.active = np.zeros(0, dtype=bool)
        """Per timeline id: has a state (pending or open), so the walk must visit it."""

    def render(
        self, template: str, vin: str, value: Value, duration_ms: int, peak: float | None
    ) -> str:
        rule = self.rule
        return template.format(
            vin=vin,
            rule_id=rule.id,
            severity=rule.severity,
            signal=self.signal_text,
            unit=self.unit,
            value=value,
            threshold=rule.value,
            clear_value=rule.clear_value,
            duration_s=duration_ms / 1000.0,
            peak=peak,
        )


class _RateFrame:
    """The time structure of a rate computation: bucket of every row, where its window starts,
    and the window sums of ``1, u, u^2``. It depends only on the rows and the bucket width, so
    signals sampled together (the four tyres) share one frame per batch."""

    def __init__(self, ts: np.ndarray, group: np.ndarray, tl: np.ndarray, width: int) -> None:
        size = RATE_BUCKETS
        n_rows = len(ts)
        self.group = group
        """0..m-1, rows sorted by (group, ts)."""
        self.tl = tl
        """Timeline id of every group."""
        bucket = ts // width
        self.low = bucket - (size - 1)  # the lowest bucket of each row's window
        starts = np.flatnonzero(np.r_[True, group[1:] != group[:-1]])
        ends = np.r_[starts[1:], n_rows]
        self.m = len(starts)
        self.ref_bucket = self.low[starts]
        self.ref_ms = self.ref_bucket * width
        """Per group: every sum is in seconds from here, which keeps u small (precision)."""
        self.u = (ts - self.ref_ms[group]) / 1000.0
        b0 = int(bucket.min())
        keys = group * _GROUP_SHIFT + (bucket - b0)
        self.lo = np.searchsorted(keys, group * _GROUP_SHIFT + np.maximum(self.low - b0, 0))
        self.count = np.arange(1, n_rows + 1) - self.lo
        self.su = self.window_sum(self.u)
        self.suu = self.window_sum(self.u * self.u)
        self.new_first = bucket[ends - 1] - (size - 1)
        self.mine = bucket >= self.new_first[group]
        """Rows that fall into the window kept after this batch."""
        kept = bucket[self.mine]
        self.slot = group[self.mine] * size + (kept - self.new_first[group[self.mine]])
        self.local_u = (ts[self.mine] - kept * width) / 1000.0

    def window_sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` over each row's window within this batch."""
        cum = np.empty(len(values) + 1)
        cum[0] = 0.0
        np.cumsum(values, out=cum[1:])
        return cum[1:] - cum[self.lo]


class _RateWindows:
    """Per timeline, the last :data:`RATE_BUCKETS` time buckets of one signal as least-squares
    sums ``(n, sum u, sum y, sum u^2, sum u*y)``, ``u`` in seconds from the bucket's start.

    Sums instead of raw samples keep the state small (``K x 5`` numbers per vehicle, whatever
    the sampling rate) and let a batch be evaluated without re-reading old samples.
    """

    def __init__(self, signal: str, bucket_ms: int) -> None:
        self.signal = signal
        self.bucket_ms = bucket_ms
        self.first = np.zeros(0, dtype=np.int64)
        self.sums = np.zeros((0, RATE_BUCKETS, 5))
        self.has = np.zeros(0, dtype=bool)

    @property
    def key(self) -> str:
        return f"{self.signal}@{self.bucket_ms}"

    def grow(self, capacity: int) -> None:
        extra = capacity - len(self.first)
        self.first = np.concatenate([self.first, np.zeros(extra, dtype=np.int64)])
        self.sums = np.concatenate([self.sums, np.zeros((extra, RATE_BUCKETS, 5))])
        self.has = np.concatenate([self.has, np.zeros(extra, dtype=bool)])

    def slopes(self, frame: _RateFrame, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Least-squares slope (per second) at every row of ``frame`` for values ``y``, with the
        window's sample count and ``n^2 * variance`` of its times; updates the stored buckets."""
        size, width, m = RATE_BUCKETS, self.bucket_ms, frame.m
        n = frame.count.astype(float)
        su, suu = frame.su.copy(), frame.suu.copy()
        sy, suy = frame.window_sum(y), frame.window_sum(frame.u * y)
        ids = frame.tl
        has = self.has[ids]
        first = np.where(has, self.first[ids], frame.ref_bucket)
        old = self.sums[ids]
        old[~has] = 0.0
        if has.any():
            # Buckets from earlier batches, moved into each group's frame and summed from the
            # newest, so a row takes every stored bucket at or above its window's low end.
            shift = (first[:, None] + np.arange(size)[None, :]) * width - frame.ref_ms[:, None]
            shift = shift / 1000.0
            o_n, o_su, o_sy, o_suu, o_suy = (old[..., i] for i in range(5))
            position = np.clip(frame.low - first[frame.group], 0, size)
            flat_index = frame.group * (size + 1) + position
            for total, moved in (
                (n, o_n),
                (su, o_su + o_n * shift),
                (sy, o_sy),
                (suu, o_suu + 2.0 * shift * o_su + o_n * shift * shift),
                (suy, o_suy + shift * o_sy),
            ):
                suffix = np.zeros((m, size + 1))
                suffix[:, :size] = np.cumsum(moved[:, ::-1], axis=1)[:, ::-1]
                total += suffix.ravel()[flat_index]
        variance_n2 = n * suu - su * su
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (n * suy - su * sy) / variance_n2
        # Store the newest window of every group: the old buckets that are still in it plus this
        # batch's rows, in bucket-local time.
        index = np.arange(size)[None, :] + (frame.new_first - first)[:, None]
        kept = np.where(
            (index < size)[..., None], old[np.arange(m)[:, None], np.minimum(index, size - 1)], 0.0
        )
        flat = kept.reshape(m * size, 5)
        local_u, local_y = frame.local_u, y[frame.mine]
        for column, weights in enumerate(
            (None, local_u, local_y, local_u * local_u, local_u * local_y)
        ):
            flat[:, column] += np.bincount(frame.slot, weights=weights, minlength=m * size)
        self.first[ids] = frame.new_first
        self.sums[ids] = flat.reshape(m, size, 5)
        self.has[ids] = True
        return slope, n, variance_n2

    def export(self, tl: int) -> dict[str, Any] | None:
        if not self.has[tl]:
            return None
        return {"first_bucket": int(self.first[tl]), "sums": self.sums[tl].tolist()}

    def restore(self, tl: int, data: Mapping[str, Any]) -> None:
        sums = np.asarray(data["sums"], dtype=float)
        if sums.shape != (RATE_BUCKETS, 5):
            return  # another bucket layout: the window refills from new samples
        self.first[tl] = int(data["first_bucket"])
        self.sums[tl] = sums
        self.has[tl] = True


class _Batch:
    """The accepted rows of one ``process`` call, sorted by (timeline, ts), with lazily
    converted columns."""

    def __init__(self, table: pa.Table, rows: np.ndarray, tl: np.ndarray, ts: np.ndarray):
        self.table = table
        self.rows = rows
        """Index of each sorted row in ``table``."""
        self.ts = ts
        new_group = np.r_[True, tl[1:] != tl[:-1]]
        self.group = np.cumsum(new_group) - 1
        self.group_start = np.flatnonzero(new_group)
        self.group_tl = tl[self.group_start]
        self.group_last_ts = ts[np.r_[self.group_start[1:], len(ts)] - 1]
        self._numeric: dict[str, np.ndarray] = {}
        self._masks: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        self._frames: dict[int, list[tuple[np.ndarray, _RateFrame]]] = {}
        self.rates: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        """(signal, bucket width) -> slope per second, window count, n^2 * time variance."""

    def numeric(self, path: str) -> np.ndarray:
        """The column as float64 (booleans as 0/1), NaN where null or absent."""
        cached = self._numeric.get(path)
        if cached is None:
            if path not in self.table.column_names:
                cached = np.full(len(self.rows), np.nan)
            else:
                column = pc.cast(self.table.column(path), pa.float64())
                cached = column.to_numpy()[self.rows]
            self._numeric[path] = cached
        return cached

    def member(self, path: str, values: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
        """(present, value in ``values``) for a string column."""
        key = (path, values)
        cached = self._masks.get(key)
        if cached is None:
            if path not in self.table.column_names:
                none = np.zeros(len(self.rows), dtype=bool)
                cached = (none, none)
            else:
                column = self.table.column(path)
                if not pa.types.is_string(column.type):
                    column = pc.cast(column, pa.string())
                present = pc.is_valid(column).to_numpy(zero_copy_only=False)[self.rows]
                inside = pc.is_in(column, value_set=pa.array(values, pa.string()))
                cached = (present, inside.to_numpy(zero_copy_only=False)[self.rows])
            self._masks[key] = cached
        return cached

    def rate_frame(self, idx: np.ndarray, width: int) -> _RateFrame:
        """The rate frame of rows ``idx`` (shared with earlier signals that have the same
        rows)."""
        frames = self._frames.setdefault(width, [])
        for rows, frame in frames:
            if np.array_equal(rows, idx):
                return frame
        group = self.group[idx]
        new_group = np.r_[True, group[1:] != group[:-1]]
        frame = _RateFrame(
            self.ts[idx], np.cumsum(new_group) - 1, self.group_tl[group[new_group]], width
        )
        frames.append((idx, frame))
        return frame

    def raw_value(self, path: str, row: int) -> Value:
        value = self.table.column(path)[int(self.rows[row])].as_py()
        return value if isinstance(value, bool | str | float) or value is None else float(value)


_COMPARE: dict[str, Callable[[np.ndarray, float], np.ndarray]] = {
    "<": np.less,
    "<=": np.less_equal,
    ">": np.greater,
    ">=": np.greater_equal,
    "==": np.equal,
    "!=": np.not_equal,
}


def _compare(
    batch: _Batch, spec: SignalSpec, op: str, value: Any, threshold: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(present, ``signal op value``) over the batch; ``threshold`` replaces a numeric value
    (the clear value)."""
    if spec.kind == "string":
        values = tuple(value) if isinstance(value, list) else (value,)
        present, inside = batch.member(spec.path, values)
        return present, (inside if op in ("==", "in") else present & ~inside)
    x = batch.numeric(spec.path)
    present = ~np.isnan(x)
    if op in ("in", "not_in"):
        inside = np.isin(x, np.asarray(value, dtype=float))
        return present, (inside if op == "in" else present & ~inside)
    number = float(value) if threshold is None else threshold
    with np.errstate(invalid="ignore"):
        return present, _COMPARE[op](x, number)


class RuleEngine:
    """Evaluates a :class:`RuleSet` over telemetry batches; see the module docstring.

    Not thread-safe; one engine per worker (per consumer), fed in Kafka order. If ``process``
    raises, the state may be partly updated: restore the last stored state before going on.

    ``late_after_s``: rows that reached Kafka later than this after their ``ts`` go to the late
    timeline. ``max_future_s``: rows whose ``ts`` is this far after ``received_at`` are skipped.
    ``catalog``: the signal catalog the rules were validated with (default: the product's).
    """

    def __init__(
        self,
        ruleset: RuleSet,
        *,
        late_after_s: float = 300.0,
        max_future_s: float = 300.0,
        catalog: Mapping[str, SignalSpec] | None = None,
    ) -> None:
        if not late_after_s >= 0 or not max_future_s >= 0:
            raise ValueError("late_after_s and max_future_s must be >= 0")
        self.ruleset = ruleset
        self.late_after_ms = round(late_after_s * 1000)
        self.max_future_ms = round(max_future_s * 1000)
        self.catalog = catalog if catalog is not None else CATALOG
        for path in ruleset.signals:
            if path not in self.catalog:
                raise ValueError(
                    f"the rules use {path}, which the engine's catalog lacks; pass the catalog "
                    f"the rules were validated with"
                )
        self.stats = EngineStats()
        self._rules = [
            _Compiled(rule, order, ruleset.gap_ms(rule), self.catalog)
            for order, rule in enumerate(ruleset.enabled_rules)
        ]
        self._rule_order = {c.rule.id: c.order for c in self._rules}
        self._windows: dict[tuple[str, int], _RateWindows] = {}
        for compiled in self._rules:
            if isinstance(compiled.rule, RateRule):
                key = (compiled.rule.signal, compiled.rule.bucket_ms)
                self._windows.setdefault(key, _RateWindows(*key))
        self._timeline_ids: dict[tuple[str, int], int] = {}
        self._timeline_vin: list[str] = []
        self._timeline_lane: list[int] = []
        self._hwm = np.zeros(0, dtype=np.int64)
        self._capacity = 0
        self._grow(1024)

    # ---------------------------------------------------------------------------------------
    # public API

    def process(self, table: pa.Table | pa.RecordBatch) -> list[AlarmEvent]:
        """Evaluate every rule over ``table`` and return the alarms raised and cleared, ordered
        by event time. Updates the state; rows already processed are skipped."""
        if isinstance(table, pa.RecordBatch):
            table = pa.Table.from_batches([table])
        for required in ("vin", "ts"):
            if required not in table.column_names:
                raise ValueError(f"telemetry table has no {required!r} column")
        self.stats.rows += table.num_rows
        batch = self._accept(table)
        if batch is None:
            return []
        events: list[AlarmEvent] = []
        for compiled in self._rules:
            self._apply(compiled, batch, events)
        self._hwm[batch.group_tl] = batch.group_last_ts
        events.sort(key=lambda e: (e.ts_ms, e.vin, e.late, self._order(e.rule_id), e.kind))
        for event in events:
            if event.kind == "raised":
                self.stats.raised += 1
            else:
                self.stats.cleared += 1
        return events

    def open_alarms(self, vin: str, *, late: bool = False) -> list[OpenAlarm]:
        """The vehicle's open alarms (live timeline; ``late=True``: episodes found in late data
        that have not cleared there)."""
        tl = self._timeline_ids.get((vin, _LATE if late else _LIVE))
        if tl is None:
            return []
        alarms = []
        for compiled in self._rules:
            state = compiled.states.get(tl)
            if state is not None and state.phase == _OPEN:
                alarms.append(
                    OpenAlarm(
                        vin=vin,
                        rule_id=compiled.rule.id,
                        severity=compiled.rule.severity,
                        raised_ts_ms=state.raised_ts,
                        condition_since_ms=state.since,
                        value=state.raised_value,
                        peak=state.peak,
                        late=late,
                    )
                )
        return alarms

    def export_state(self, vins: Iterable[str] | None = None) -> dict[str, Any]:
        """JSON-ready state of every vehicle (or of ``vins``) for :meth:`restore_state`.

        Store it in the same transaction as the events of the batches it reflects; a worker
        that restarts from it and replays the batches after it reproduces the same events.
        """
        wanted = None if vins is None else set(vins)
        vehicles: dict[str, dict[str, Any]] = {}
        for (vin, lane), tl in self._timeline_ids.items():
            if wanted is not None and vin not in wanted:
                continue
            timeline: dict[str, Any] = {
                "hwm": None if self._hwm[tl] == _NO_MARK else int(self._hwm[tl])
            }
            rules = {c.rule.id: c.states[tl].to_json() for c in self._rules if tl in c.states}
            windows = {
                w.key: exported
                for w in self._windows.values()
                if (exported := w.export(tl)) is not None
            }
            if rules:
                timeline["rules"] = rules
            if windows:
                timeline["windows"] = windows
            vehicles.setdefault(vin, {})[_LANE_NAMES[lane]] = timeline
        return {
            "format": STATE_FORMAT,
            "late_after_s": self.late_after_ms / 1000.0,
            "vehicles": vehicles,
        }

    def forget(self, vins: Iterable[str]) -> None:
        """Drop all state of ``vins`` (e.g. their Kafka partition was revoked: another worker
        owns them now, and a stale copy here must not be used if the partition comes back;
        restore from the database on assignment instead)."""
        for vin in vins:
            for lane in (_LIVE, _LATE):
                tl = self._timeline_ids.get((vin, lane))
                if tl is not None:
                    self._reset(tl)

    def _reset(self, tl: int) -> None:
        self._hwm[tl] = _NO_MARK
        for compiled in self._rules:
            compiled.states.pop(tl, None)
            compiled.active[tl] = False
        for window in self._windows.values():
            window.has[tl] = False

    def restore_state(self, state: Mapping[str, Any]) -> list[str]:
        """Load :meth:`export_state` output (replacing the state of the vehicles it names).

        Returns the ids of rules the state has but this rule set does not (removed or disabled
        rules): their open alarms will never clear here, so the caller should close them.
        """
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"unsupported rule engine state format {state.get('format')!r}")
        by_id = {c.rule.id: c for c in self._rules}
        windows = {w.key: w for w in self._windows.values()}
        unknown: set[str] = set()
        for vin, lanes in state.get("vehicles", {}).items():
            for lane_name, data in lanes.items():
                tl = self._timeline(vin, _LANE_NAMES.index(lane_name))
                self._reset(tl)
                hwm = data.get("hwm")
                self._hwm[tl] = _NO_MARK if hwm is None else int(hwm)
                for rule_id, rule_state in data.get("rules", {}).items():
                    target = by_id.get(rule_id)
                    if target is None:
                        unknown.add(rule_id)
                        continue
                    target.states[tl] = _RuleState.from_json(rule_state)
                    target.active[tl] = True
                for key, window_state in data.get("windows", {}).items():
                    if key in windows:
                        windows[key].restore(tl, window_state)
        return sorted(unknown)

    # ---------------------------------------------------------------------------------------
    # rows -> timelines

    def _grow(self, capacity: int) -> None:
        extra = capacity - self._capacity
        self._hwm = np.concatenate([self._hwm, np.full(extra, _NO_MARK, dtype=np.int64)])
        for compiled in self._rules:
            compiled.active = np.concatenate([compiled.active, np.zeros(extra, dtype=bool)])
        for window in self._windows.values():
            window.grow(capacity)
        self._capacity = capacity

    def _timeline(self, vin: str, lane: int) -> int:
        tl = self._timeline_ids.get((vin, lane))
        if tl is None:
            tl = len(self._timeline_vin)
            if tl >= self._capacity:
                self._grow(self._capacity * 2)
            self._timeline_ids[(vin, lane)] = tl
            self._timeline_vin.append(vin)
            self._timeline_lane.append(lane)
        return tl

    def _order(self, rule_id: str) -> int:
        return self._rule_order.get(rule_id, -1)

    def _accept(self, table: pa.Table) -> _Batch | None:
        """Classify rows into timelines, drop invalid, stale and duplicate rows, and sort."""
        vin_codes, vin_names = _encode_vins(table.column("vin"))
        ts_col = table.column("ts")
        ts = _int64(ts_col)
        valid = (vin_codes >= 0) & pc.is_valid(ts_col).to_numpy(zero_copy_only=False)
        if "received_at" in table.column_names:
            received_col = table.column("received_at")
            received = _int64(received_col)
            has_received = pc.is_valid(received_col).to_numpy(zero_copy_only=False)
            late = has_received & (received - ts > self.late_after_ms)
            future = valid & has_received & (ts - received > self.max_future_ms)
        else:
            late = future = np.zeros(table.num_rows, dtype=bool)
        self.stats.invalid_rows += table.num_rows - int(valid.sum())
        self.stats.future_rows += int(future.sum())
        rows = np.flatnonzero(valid & ~future)
        if len(rows) == 0:
            return None
        pair = vin_codes[rows].astype(np.int64) * 2 + late[rows]
        used = np.flatnonzero(np.bincount(pair, minlength=2 * len(vin_names)))
        lookup = np.zeros(2 * len(vin_names), dtype=np.int64)
        for code in used.tolist():
            lookup[code] = self._timeline(vin_names[code // 2], code % 2)
        tl = lookup[pair]
        row_ts = ts[rows]
        fresh = row_ts > self._hwm[tl]
        self.stats.stale_rows += len(rows) - int(fresh.sum())
        rows, tl, row_ts = rows[fresh], tl[fresh], row_ts[fresh]
        if len(rows) == 0:
            return None
        order = _sort_order(tl, row_ts)
        rows, tl, row_ts = rows[order], tl[order], row_ts[order]
        unique = np.r_[True, (tl[1:] != tl[:-1]) | (row_ts[1:] != row_ts[:-1])]
        self.stats.duplicate_rows += len(rows) - int(unique.sum())
        rows, tl, row_ts = rows[unique], tl[unique], row_ts[unique]
        late_count = int(late[rows].sum())
        self.stats.late_rows += late_count
        self.stats.live_rows += len(rows) - late_count
        return _Batch(table, rows, tl, row_ts)

    # ---------------------------------------------------------------------------------------
    # conditions

    def _condition(self, batch: _Batch, condition: Condition) -> np.ndarray:
        present, holds = _compare(
            batch, self.catalog[condition.signal], condition.op, condition.value
        )
        return present & holds

    def _evaluate(
        self, compiled: _Compiled, batch: _Batch
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(present, state code, numeric value) of the rule on every row of the batch."""
        rule = compiled.rule
        n = len(batch.rows)
        metric: np.ndarray
        if isinstance(rule, ThresholdRule):
            spec = self.catalog[rule.signal]
            present, raise_ = _compare(batch, spec, rule.op, rule.value)
            hold = raise_
            if rule.clear_value is not None:
                hold = _compare(batch, spec, rule.op, rule.value, rule.clear_value)[1]
            metric = batch.numeric(rule.signal) if spec.kind != "string" else np.full(n, np.nan)
        else:
            if isinstance(rule, SpreadRule):
                stacked = np.vstack([batch.numeric(path) for path in rule.signals])
                present = ~np.isnan(stacked).any(axis=0)
                with np.errstate(invalid="ignore"):
                    metric = stacked.max(axis=0) - stacked.min(axis=0)
            else:
                metric = self._rates(rule, batch)
                present = ~np.isnan(metric)
            compare = _COMPARE[rule.op]
            with np.errstate(invalid="ignore"):
                raise_ = compare(metric, rule.value)
                hold = raise_ if rule.clear_value is None else compare(metric, rule.clear_value)
        applicable = np.ones(n, dtype=bool)
        for condition in rule.when:
            applicable &= self._condition(batch, condition)
        code = np.where(
            applicable,
            np.where(raise_, _RAISE, np.where(hold, _HOLD, _CLEAR)),
            _NA,
        ).astype(np.int8)
        return present, code, metric

    def _rates(self, rule: RateRule, batch: _Batch) -> np.ndarray:
        """The rule's rate at every row (NaN where the window is too thin); the window store of
        (signal, bucket) is shared by rules that differ only in threshold, so it is computed
        once per batch."""
        key = (rule.signal, rule.bucket_ms)
        cached = batch.rates.get(key)
        if cached is None:
            y = batch.numeric(rule.signal)
            idx = np.flatnonzero(~np.isnan(y))
            slope = np.full(len(batch.rows), np.nan)
            count = np.zeros(len(batch.rows))
            variance_n2 = np.zeros(len(batch.rows))
            if len(idx):
                frame = batch.rate_frame(idx, rule.bucket_ms)
                slope[idx], count[idx], variance_n2[idx] = self._windows[key].slopes(frame, y[idx])
            cached = batch.rates[key] = (slope, count, variance_n2)
        slope, count, variance_n2 = cached
        window_s = RATE_BUCKETS * rule.bucket_ms / 1000.0
        # Samples must cover at least half the window (time variance of an even spread over
        # window/2) and be at least three, or one noisy pair would make a steep slope.
        thick = (count >= 3) & (variance_n2 * 48.0 >= count * count * window_s * window_s)
        return np.where(thick, slope * rule.per_seconds, np.nan)

    # ---------------------------------------------------------------------------------------
    # the walk over runs

    def _apply(self, compiled: _Compiled, batch: _Batch, events: list[AlarmEvent]) -> None:
        present, code, metric = self._evaluate(compiled, batch)
        idx = np.flatnonzero(present)
        if len(idx) == 0:
            return
        need = compiled.active[batch.group_tl]
        need[batch.group[idx[code[idx] == _RAISE]]] = True
        idx = idx[need[batch.group[idx]]]
        if len(idx) == 0:
            return
        t = batch.ts[idx]
        group = batch.group[idx]
        codes = code[idx]
        values = metric[idx]
        n = len(idx)
        new_group = np.r_[True, group[1:] != group[:-1]]
        gap = np.r_[False, (np.diff(t) > compiled.gap_ms) & ~new_group[1:]]
        boundary = new_group | gap | np.r_[True, codes[1:] != codes[:-1]]
        starts = np.flatnonzero(boundary)
        ends = np.r_[starts[1:], n]
        direction = compiled.direction
        if direction:
            extremes = (np.maximum.reduceat(values * direction, starts) * direction).tolist()
        else:
            extremes = [None] * len(starts)
        walk = _Walk(self, compiled, batch, idx, t, values, events)
        walk.run(
            starts.tolist(),
            ends.tolist(),
            codes[starts].tolist(),
            group[starts].tolist(),
            new_group[starts].tolist(),
            gap[starts].tolist(),
            extremes,
        )


class _Walk:
    """One rule's state machine over the runs of one batch (only the pairs that need it)."""

    def __init__(
        self,
        engine: RuleEngine,
        compiled: _Compiled,
        batch: _Batch,
        idx: np.ndarray,
        t: np.ndarray,
        values: np.ndarray,
        events: list[AlarmEvent],
    ) -> None:
        self.engine = engine
        self.compiled = compiled
        self.batch = batch
        self.idx = idx
        self.t = t
        self.values = values
        self.events = events

    def _extreme(self, peak: float | None, start: int, stop: int) -> float | None:
        direction = self.compiled.direction
        if not direction:
            return None
        part = self.values[start:stop]
        value = float(part.max() if direction > 0 else part.min())
        if peak is None:
            return value
        return max(peak, value) if direction > 0 else min(peak, value)

    def _combine(self, peak: float | None, value: float | None) -> float | None:
        if value is None or peak is None:
            return value if peak is None else peak
        return max(peak, value) if self.compiled.direction > 0 else min(peak, value)

    def _value(self, position: int) -> Value:
        kind = self.compiled.value_kind
        if kind == "float":
            return float(self.values[position])
        if kind == "bool":
            return bool(self.values[position] == 1.0)
        rule = self.compiled.rule
        assert isinstance(rule, ThresholdRule)
        return self.batch.raw_value(rule.signal, int(self.idx[position]))

    def _emit(
        self, kind: EventKind, tl: int, position: int, since: int, raised: int, peak: float | None
    ) -> Value:
        engine, compiled = self.engine, self.compiled
        vin = engine._timeline_vin[tl]
        ts = int(self.t[position])
        value = self._value(position)
        if kind == "raised":
            template, duration = compiled.rule.message, ts - since
        else:
            template, duration = compiled.rule.clear_message, ts - raised
        self.events.append(
            AlarmEvent(
                kind=kind,
                vin=vin,
                rule_id=compiled.rule.id,
                severity=compiled.rule.severity,
                ts_ms=ts,
                value=value,
                message=compiled.render(template, vin, value, duration, peak),
                late=engine._timeline_lane[tl] == _LATE,
                condition_since_ms=since,
                raised_ts_ms=ts if kind == "raised" else raised,
                peak=peak,
            )
        )
        return value

    def run(
        self,
        starts: list[int],
        ends: list[int],
        codes: list[int],
        groups: list[int],
        new_groups: list[bool],
        gaps: list[bool],
        extremes: list[float | None],
    ) -> None:
        compiled = self.compiled
        for_ms, clear_for_ms, gap_ms = compiled.for_ms, compiled.clear_for_ms, compiled.gap_ms
        group_tl = self.batch.group_tl
        t = self.t
        state: _RuleState | None = None
        tl = -1
        for r, start in enumerate(starts):
            end = ends[r]
            first_ts, last_ts = int(t[start]), int(t[end - 1])
            if new_groups[r]:
                if tl >= 0:
                    self._store(tl, state)
                tl = int(group_tl[groups[r]])
                state = compiled.states.get(tl)
                broken = state is not None and first_ts - state.last_ts > gap_ms
            else:
                broken = gaps[r]
            if broken and state is not None:
                # A gap breaks a duration: a pending raise starts over, and so does a clear.
                if state.phase == _PENDING:
                    state = None
                else:
                    state.clear_since = None
            code = codes[r]
            if code == _RAISE:
                if state is None:
                    state = _RuleState(_PENDING, since=first_ts, last_ts=first_ts, peak=None)
                if state.phase == _PENDING:
                    target = state.since + for_ms
                    if last_ts >= target:
                        k = start + int(np.searchsorted(t[start:end], target))
                        peak = self._extreme(state.peak, start, k + 1)
                        value = self._emit("raised", tl, k, state.since, 0, peak)
                        state.phase = _OPEN
                        state.raised_ts = int(t[k])
                        state.raised_value = value
                        state.clear_since = None
                else:
                    state.clear_since = None
                state.peak = self._combine(state.peak, extremes[r])
            elif state is None or state.phase == _PENDING:
                state = None  # any other sample ends a pending raise
            elif code == _CLEAR:
                since = state.clear_since if state.clear_since is not None else first_ts
                target = since + clear_for_ms
                if last_ts >= target:
                    k = start + int(np.searchsorted(t[start:end], target))
                    peak = self._extreme(state.peak, start, k + 1)
                    self._emit("cleared", tl, k, since, state.raised_ts, peak)
                    state = None
                else:
                    state.clear_since = since
                    state.peak = self._combine(state.peak, extremes[r])
            elif code == _HOLD:
                state.clear_since = None
                state.peak = self._combine(state.peak, extremes[r])
            else:  # not applicable: the clear condition must hold on applicable samples
                state.clear_since = None
            if state is not None:
                state.last_ts = last_ts
        if tl >= 0:
            self._store(tl, state)

    def _store(self, tl: int, state: _RuleState | None) -> None:
        compiled = self.compiled
        if state is None:
            compiled.states.pop(tl, None)
            compiled.active[tl] = False
        else:
            compiled.states[tl] = state
            compiled.active[tl] = True


def _sort_order(tl: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Stable order by (timeline, ts): equal keys keep row order, so the first duplicate wins.

    One int64 key when it fits (fast, and Kafka batches are nearly sorted already, which a
    stable sort exploits); a two-key lexsort otherwise (a batch spanning over a century)."""
    span = int(ts.max()) - int(ts.min())
    if int(tl.max()) < (1 << 20) and span < (1 << 42):
        return np.argsort((tl << 42) | (ts - ts.min()), kind="stable")
    return np.lexsort((ts, tl))


def _encode_vins(column: pa.ChunkedArray) -> tuple[np.ndarray, list[str]]:
    """Batch-local integer codes for the VIN column (-1 for null) and the distinct VINs."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    encoded = array if pa.types.is_dictionary(array.type) else pc.dictionary_encode(array)
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False)
    return codes.astype(np.int64), encoded.dictionary.to_pylist()


def _int64(column: pa.ChunkedArray) -> np.ndarray:
    """Epoch ms as int64 (timestamp[ms] or int64 input); nulls become 0 (masked by callers)."""
    if pa.types.is_timestamp(column.type):
        if column.type.unit != "ms":
            column = pc.cast(column, pa.timestamp("ms", tz=column.type.tz))
        column = pc.cast(column, pa.int64())
    elif not pa.types.is_int64(column.type):
        column = pc.cast(column, pa.int64())
    return pc.fill_null(column, 0).to_numpy(zero_copy_only=False)
