"""Harsh driving events (braking, acceleration, cornering), identical in streaming and batch.

Input: an Arrow table with the archive's columns (``vin``, ``ts``, VSS signals). Read:

- ``Vehicle.Acceleration.Longitudinal`` / ``.Lateral`` (m/s^2, forward / left positive): the
  primary source, sample by sample wherever the vehicle reports them.
- Fallback where a sample has no accelerometer value: longitudinal acceleration is the central
  difference of ``Vehicle.Speed`` (km/h); lateral acceleration is speed times the yaw rate from
  the central difference of ``Vehicle.CurrentLocation.Heading``. Both are GNSS-derived on many
  vehicles, so they are **gated**: a derived value is dropped when
  ``Vehicle.CurrentLocation.HorizontalAccuracy`` (m, when present) of any of the three samples
  exceeds :attr:`EventConfig.max_gnss_accuracy_m`, or the samples span more than
  :attr:`EventConfig.max_gap_s` (a dropout). Accelerometer values are not gated: they do not
  depend on GNSS.

Pipeline per vehicle and event type (all vectorised over the sorted table):

1. **Smoothing**: a 3-sample median, which removes single-sample spikes (pot-holes, door slams,
   sensor glitches) without flattening a real manoeuvre's plateau.
2. **Hysteresis**: an event is a run of samples at or above ``exit_ratio`` (70 %) of the
   threshold that contains samples at or above the threshold itself.
3. **Minimum duration**: the first and last samples at or above the threshold must be at least
   :attr:`EventConfig.min_duration_s` (1 s) apart, so at 1 Hz two samples are needed.
4. **Speed gate**: braking and acceleration need a speed of at least 10 km/h somewhere in the
   event, cornering 15 km/h (a bump at standstill is not a manoeuvre). For acceleration the
   speed the start itself implies (integral of the acceleration) also counts, because a GNSS
   dropout can freeze the reported speed during a fast start.
5. **Repeats**: an event starting less than :attr:`EventConfig.repeat_window_s` (60 s) after the
   start of the last counted event of the same type and vehicle is not counted (it is reported
   in :attr:`EventDetector.suppressed_repeats`).

Thresholds (:data:`THRESHOLDS`, m/s^2): harsh braking 3.1 (~0.32 g, the common telematics
convention), harsh acceleration / fast start 4.0, harsh cornering 4.0 (~0.4 g: ordinary
turns stay below ~3 m/s^2, the comfort limit road design assumes). Severity from the smoothed
peak: 1 (moderate) below 1.3 x threshold, 2 (high) below 1.6 x, 3 (severe) above.

**Streaming equals batch.** :class:`EventDetector` carries, per vehicle, the last few samples
and any event still open at the end of a batch, and emits an event only once the samples that
decide its smoothed values and its end have arrived; :func:`detect_events` is the same detector
fed one table and flushed. Samples of a vehicle must arrive in time order across batches (older
ones are dropped and counted in :attr:`EventDetector.late_samples`).

**Checkpoints.** :meth:`EventDetector.export_state` serialises a vehicle's complete state (the
carried samples, per type the time before which runs are decided, and the start of the last
counted event per type for the repeat rule) to msgpack bytes; :meth:`EventDetector.restore_state`
loads it into another detector, which continues exactly as the first would have. The fleet-wide
counters :attr:`EventDetector.late_samples` and :attr:`EventDetector.suppressed_repeats` are not
part of it (process-local), nor is the configuration.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum

import msgspec
import numpy as np
import pyarrow as pa

from ubi.trips import (
    SPEED,
    FloatArray,
    IntArray,
    PackedArray,
    _vin_list,
    decode_state,
    encode_state,
    floats,
    pack_arrays,
    timestamps_ms,
    unpack_arrays,
    vehicle_order,
)

ACCEL_LONGITUDINAL = "Vehicle.Acceleration.Longitudinal"
ACCEL_LATERAL = "Vehicle.Acceleration.Lateral"
HEADING = "Vehicle.CurrentLocation.Heading"
GNSS_ACCURACY = "Vehicle.CurrentLocation.HorizontalAccuracy"
EVENT_COLUMNS = ("vin", "ts", SPEED, ACCEL_LONGITUDINAL, ACCEL_LATERAL, HEADING, GNSS_ACCURACY)


class EventType(StrEnum):
    HARSH_BRAKING = "harsh_braking"
    HARSH_ACCELERATION = "harsh_acceleration"
    HARSH_CORNERING = "harsh_cornering"


THRESHOLDS: Mapping[EventType, float] = {
    EventType.HARSH_BRAKING: 3.1,
    EventType.HARSH_ACCELERATION: 4.0,
    EventType.HARSH_CORNERING: 4.0,
}
MIN_SPEED_KMH: Mapping[EventType, float] = {
    EventType.HARSH_BRAKING: 10.0,
    EventType.HARSH_ACCELERATION: 10.0,
    EventType.HARSH_CORNERING: 15.0,
}
SEVERITY_STEPS = (1.3, 1.6)
"""Peak / threshold ratios where severity goes from 1 to 2 and from 2 to 3."""
_CONTEXT = 4
"""Samples of context a smoothed value needs on each side (central difference + median)."""


@dataclass(frozen=True)
class EventConfig:
    thresholds: Mapping[EventType, float] = field(default_factory=lambda: dict(THRESHOLDS))
    exit_ratio: float = 0.7
    min_duration_s: float = 1.0
    repeat_window_s: float = 60.0
    max_gnss_accuracy_m: float = 20.0
    max_gap_s: float = 4.0


@dataclass(frozen=True)
class DrivingEvent:
    vin: str
    type: EventType
    start_ms: int
    end_ms: int
    peak_mps2: float
    """Smoothed peak magnitude."""
    severity: int
    """1 moderate, 2 high, 3 severe."""
    source: str
    """``accelerometer``, ``speed`` (derivative) or ``heading`` (yaw rate x speed)."""

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def severity(peak: float, threshold: float) -> int:
    ratio = peak / threshold
    return 1 + sum(ratio >= step for step in SEVERITY_STEPS)


# -- per-row signals ----------------------------------------------------------------------------
def _neighbours(
    x: np.ndarray, first: np.ndarray, last: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Previous and next value within each vehicle (the value itself at a vehicle's edges)."""
    prev = np.roll(x, 1)
    nxt = np.roll(x, -1)
    prev[first] = x[first]
    nxt[last] = x[last]
    return prev, nxt


def _median3(x: FloatArray, first: np.ndarray, last: np.ndarray) -> FloatArray:
    a, c = _neighbours(x, first, last)
    return np.maximum(np.minimum(a, x), np.minimum(np.maximum(a, x), c))


@dataclass
class _Signals:
    ts: IntArray
    speed: FloatArray
    long_raw: FloatArray
    lat_raw: FloatArray
    heading: FloatArray
    accuracy: FloatArray

    def __len__(self) -> int:
        return len(self.ts)

    @classmethod
    def read(cls, table: pa.Table) -> _Signals:
        return cls(
            timestamps_ms(table),
            floats(table, SPEED),
            floats(table, ACCEL_LONGITUDINAL),
            floats(table, ACCEL_LATERAL),
            floats(table, HEADING),
            floats(table, GNSS_ACCURACY),
        )

    def take(self, rows: slice | np.ndarray) -> _Signals:
        return _Signals(*(getattr(self, k)[rows] for k in _SIGNAL_KEYS))

    @staticmethod
    def concat(parts: list[_Signals]) -> _Signals:
        return _Signals(*(np.concatenate([getattr(p, k) for p in parts]) for k in _SIGNAL_KEYS))


_SIGNAL_KEYS = ("ts", "speed", "long_raw", "lat_raw", "heading", "accuracy")


def _channels(
    s: _Signals, first: np.ndarray, last: np.ndarray, cfg: EventConfig
) -> tuple[FloatArray, FloatArray, np.ndarray, np.ndarray]:
    """Smoothed longitudinal and lateral acceleration and whether each came from the
    accelerometer."""
    ts_prev, ts_next = _neighbours(s.ts, first, last)
    span_s = (ts_next - ts_prev) / 1000.0
    ok = (span_s > 0) & (span_s <= cfg.max_gap_s)
    acc_prev, acc_next = _neighbours(s.accuracy, first, last)
    worst = np.fmax(np.fmax(acc_prev, acc_next), s.accuracy)  # NaN only when all unknown
    ok &= ~(worst > cfg.max_gnss_accuracy_m)
    safe_span = np.where(ok, span_s, 1.0)
    v_prev, v_next = _neighbours(s.speed, first, last)
    derived_long = np.where(ok, (v_next - v_prev) / 3.6 / safe_span, np.nan)
    h_prev, h_next = _neighbours(s.heading, first, last)
    turn = np.radians((h_next - h_prev + 540.0) % 360.0 - 180.0)
    derived_lat = np.where(ok, -turn / safe_span * s.speed / 3.6, np.nan)
    from_long = ~np.isnan(s.long_raw)
    from_lat = ~np.isnan(s.lat_raw)
    longitudinal = np.where(from_long, s.long_raw, derived_long)
    lateral = np.where(from_lat, s.lat_raw, derived_lat)
    return (
        _median3(longitudinal, first, last),
        _median3(lateral, first, last),
        from_long,
        from_lat,
    )


@dataclass(frozen=True)
class _Run:
    """A hysteresis run of one event type; ``passes`` when it is an event (threshold reached
    for long enough, fast enough)."""

    row_first: int
    row_last: int
    type: EventType
    peak: float
    source: str
    passes: bool


def _runs(s: _Signals, first: np.ndarray, last: np.ndarray, cfg: EventConfig) -> list[_Run]:
    """Every hysteresis run of every type, over all vehicles (rows sorted by vehicle, time)."""
    longitudinal, lateral, from_long, from_lat = _channels(s, first, last, cfg)
    speed = np.nan_to_num(s.speed, nan=0.0)
    found: list[_Run] = []
    per_type = (
        (EventType.HARSH_BRAKING, -longitudinal, from_long, "speed"),
        (EventType.HARSH_ACCELERATION, longitudinal, from_long, "speed"),
        (EventType.HARSH_CORNERING, np.abs(lateral), from_lat, "heading"),
    )
    index = np.arange(len(s))
    _, ts_next = _neighbours(s.ts, first, last)
    step_s = np.minimum((ts_next - s.ts) / 1000.0, cfg.max_gap_s)
    for kind, magnitude, measured, fallback in per_type:
        threshold = cfg.thresholds[kind]
        x = np.nan_to_num(magnitude, nan=-np.inf)
        inside = x >= threshold * cfg.exit_ratio
        if not inside.any():
            continue
        prev_inside = np.roll(inside, 1)
        prev_inside[first] = False
        next_inside = np.roll(inside, -1)
        next_inside[last] = False
        starts = np.flatnonzero(inside & ~prev_inside)
        ends = np.flatnonzero(inside & ~next_inside)
        # reduceat over [start, next start) also spans the gap after a run: mask by `inside`.
        above = inside & (x >= threshold)
        first_above = np.minimum.reduceat(np.where(above, index, len(x)), starts)
        last_above = np.maximum.reduceat(np.where(above, index, -1), starts)
        reached = last_above >= 0
        span_ms = s.ts[np.where(reached, last_above, 0)] - s.ts[np.where(reached, first_above, 0)]
        peak = np.maximum.reduceat(np.where(inside, x, -np.inf), starts)
        top_speed = np.maximum.reduceat(np.where(inside, speed, 0.0), starts)
        if kind is EventType.HARSH_ACCELERATION:
            # Or the speed the start itself reaches: a GNSS dropout may freeze the reported
            # speed during a fast start (braking cannot start from standstill, so not there).
            implied = np.add.reduceat(np.where(inside, np.maximum(x, 0.0) * step_s, 0.0), starts)
            top_speed = np.maximum(top_speed, implied * 3.6)
        passes = (
            reached & (span_ms >= cfg.min_duration_s * 1000) & (top_speed >= MIN_SPEED_KMH[kind])
        )
        all_measured = np.logical_and.reduceat(measured | ~inside, starts)
        for a, b, ok, top, direct in zip(
            starts.tolist(), ends.tolist(), passes.tolist(), peak.tolist(),
            all_measured.tolist(), strict=True,
        ):  # fmt: skip
            found.append(_Run(a, b, kind, top, "accelerometer" if direct else fallback, ok))
    return found


# -- the detector ---------------------------------------------------------------------------------
_NEVER = -(2**62)


@dataclass
class _VehicleState:
    carry: _Signals
    decided_before_ms: dict[EventType, int] = field(
        default_factory=lambda: dict.fromkeys(EventType, _NEVER)
    )
    """Runs of a type starting before this time were decided in an earlier batch."""


EVENT_STATE_VERSION = 1
"""Format version of :meth:`EventDetector.export_state` bytes."""
_EVENT_STATE = "events"
_CARRY_LAYOUT = {
    "ts": "<i8",
    "speed": "<f8",
    "long_raw": "<f8",
    "lat_raw": "<f8",
    "heading": "<f8",
    "accuracy": "<f8",
}
assert tuple(_CARRY_LAYOUT) == _SIGNAL_KEYS


class _EventVehicleState(msgspec.Struct, array_like=True, frozen=True):
    carry: list[PackedArray] | None
    """The carried samples (arrays of :data:`_CARRY_LAYOUT`); None: the vehicle has none."""
    decided_before_ms: dict[EventType, int]
    last_counted_ms: dict[EventType, int]
    """Start of the last counted event per type (repeat suppression)."""


@dataclass
class EventDetector:
    """Streaming detection: :meth:`update` per batch, :meth:`flush` at the end."""

    config: EventConfig = field(default_factory=EventConfig)
    late_samples: int = 0
    suppressed_repeats: int = 0
    _vehicles: dict[str, _VehicleState] = field(default_factory=dict)
    _last_counted: dict[tuple[str, EventType], int] = field(default_factory=dict)

    def update(self, table: pa.Table) -> list[DrivingEvent]:
        """Add a batch; return the events it completed (by VIN, then start)."""
        ordered, groups = vehicle_order(table)
        if not groups:
            return []
        signals = _Signals.read(ordered)
        parts: list[_Signals] = []
        names: list[str] = []
        for vin, lo, hi in groups:
            new = signals.take(slice(lo, hi))
            state = self._vehicles.get(vin)
            if state is not None and len(state.carry):
                keep = new.ts >= state.carry.ts[-1]
                if not keep.all():
                    self.late_samples += int((~keep).sum())
                    new = new.take(keep)
                new = _Signals.concat([state.carry, new])
            parts.append(new)
            names.append(vin)
        return self._detect(names, parts, final=False)

    def flush(self) -> list[DrivingEvent]:
        """Decide every event still open (end of a batch job)."""
        names = sorted(self._vehicles)
        return self._detect(names, [self._vehicles[v].carry for v in names], final=True)

    # -- checkpoints ----------------------------------------------------------------------------
    def state_vins(self) -> list[str]:
        """The VINs this detector holds state for (sorted)."""
        return sorted(self._vehicles.keys() | {vin for vin, _ in self._last_counted})

    def export_state(self, vins: Iterable[str]) -> dict[str, bytes]:
        """The complete state of these vehicles, one msgpack blob per VIN (format
        :data:`EVENT_STATE_VERSION`); VINs without state are left out. The configuration and
        the counters :attr:`late_samples` / :attr:`suppressed_repeats` are not included."""
        out: dict[str, bytes] = {}
        for vin in _vin_list(vins):
            state = self._vehicles.get(vin)
            counted = {
                t: int(self._last_counted[vin, t])
                for t in EventType
                if (vin, t) in self._last_counted
            }
            if state is None and not counted:
                continue
            payload = _EventVehicleState(
                carry=None
                if state is None
                else pack_arrays({k: getattr(state.carry, k) for k in _SIGNAL_KEYS}, _CARRY_LAYOUT),
                decided_before_ms={}
                if state is None
                else {t: int(state.decided_before_ms[t]) for t in EventType},
                last_counted_ms=counted,
            )
            out[vin] = encode_state(_EVENT_STATE, EVENT_STATE_VERSION, vin, payload)
        return out

    def restore_state(self, states: Mapping[str, bytes]) -> None:
        """Load states from :meth:`export_state`, replacing those vehicles' in-memory state.
        Raises ``ValueError`` (and changes nothing) when any blob is malformed or of an unknown
        format version."""
        decoded: dict[str, tuple[_VehicleState | None, dict[EventType, int]]] = {}
        for vin, data in states.items():
            payload = decode_state(_EVENT_STATE, EVENT_STATE_VERSION, vin, data, _EventVehicleState)
            state: _VehicleState | None = None
            if payload.carry is not None:
                what = f"event state of VIN {vin!r}"
                carry = unpack_arrays(payload.carry, _CARRY_LAYOUT, what)
                if set(payload.decided_before_ms) != set(EventType):
                    raise ValueError(f"{what}: decided_before_ms must cover every event type")
                state = _VehicleState(
                    _Signals(*(carry[k] for k in _SIGNAL_KEYS)),
                    {t: payload.decided_before_ms[t] for t in EventType},
                )
            decoded[vin] = state, dict(payload.last_counted_ms)
        self.forget(decoded)
        for vin, (state, counted) in decoded.items():
            if state is not None:
                self._vehicles[vin] = state
            for t, start in counted.items():
                self._last_counted[vin, t] = start

    def forget(self, vins: Iterable[str]) -> None:
        """Drop the in-memory state of these vehicles (carried samples and repeat memory)."""
        for vin in _vin_list(vins):
            self._vehicles.pop(vin, None)
            for t in EventType:
                self._last_counted.pop((vin, t), None)

    def _detect(
        self, names: list[str], parts: list[_Signals], *, final: bool
    ) -> list[DrivingEvent]:
        sizes = np.array([len(p) for p in parts], dtype=np.int64)
        if not len(parts) or sizes.sum() == 0:
            return []
        rows = _Signals.concat(parts)
        offsets = np.concatenate(([0], np.cumsum(sizes)))
        nonempty = sizes > 0
        first = np.zeros(len(rows), dtype=bool)
        last = np.zeros(len(rows), dtype=bool)
        first[offsets[:-1][nonempty]] = True
        last[offsets[1:][nonempty] - 1] = True
        owner = np.repeat(np.arange(len(parts)), sizes)
        by_vehicle: dict[int, list[_Run]] = {}
        for run in _runs(rows, first, last, self.config):
            by_vehicle.setdefault(int(owner[run.row_first]), []).append(run)
        events: list[DrivingEvent] = []
        for g, vin in enumerate(names):
            lo, hi = int(offsets[g]), int(offsets[g + 1])
            if hi == lo:
                continue
            state = self._vehicles.get(vin) or _VehicleState(rows.take(slice(lo, lo)))
            # A run is decided once the samples after its end can no longer change (its
            # smoothed values need _CONTEXT - 1 samples beyond it).
            settled_end = hi - _CONTEXT - 1
            boundary = dict.fromkeys(EventType, max(lo, hi - _CONTEXT))
            runs = sorted(by_vehicle.get(g, []), key=lambda r: r.row_first)
            for run in runs:
                if rows.ts[run.row_first] < state.decided_before_ms[run.type]:
                    continue
                if final or run.row_last <= settled_end:
                    if run.passes:
                        events.extend(self._count(vin, run, rows))
                else:
                    boundary[run.type] = min(boundary[run.type], run.row_first)
            if final:
                carry_from = max(lo, hi - 1)
                state.decided_before_ms = dict.fromkeys(EventType, int(rows.ts[hi - 1]) + 1)
            else:
                carry_from = max(lo, min(boundary.values()) - _CONTEXT)
                state.decided_before_ms = {t: int(rows.ts[b]) for t, b in boundary.items()}
            state.carry = rows.take(slice(carry_from, hi))
            self._vehicles[vin] = state
        return sorted(events, key=lambda e: (e.vin, e.start_ms, e.type))

    def _count(self, vin: str, run: _Run, rows: _Signals) -> list[DrivingEvent]:
        start = int(rows.ts[run.row_first])
        key = (vin, run.type)
        previous = self._last_counted.get(key)
        if previous is not None and start - previous < self.config.repeat_window_s * 1000:
            self.suppressed_repeats += 1
            return []
        self._last_counted[key] = start
        return [
            DrivingEvent(
                vin=vin,
                type=run.type,
                start_ms=start,
                end_ms=int(rows.ts[run.row_last]),
                peak_mps2=round(run.peak, 3),
                severity=severity(run.peak, self.config.thresholds[run.type]),
                source=run.source,
            )
        ]


def detect_events(
    tables: pa.Table | Iterable[pa.Table], config: EventConfig | None = None
) -> list[DrivingEvent]:
    """Batch detection over one table or a sequence of batches."""
    detector = EventDetector(config=config or EventConfig())
    batches = [tables] if isinstance(tables, pa.Table) else tables
    events: list[DrivingEvent] = []
    for batch in batches:
        events.extend(detector.update(batch))
    events.extend(detector.flush())
    return sorted(events, key=lambda e: (e.vin, e.start_ms, e.type))


def events_to_table(events: Iterable[DrivingEvent]) -> pa.Table:
    return pa.Table.from_pylist([e.as_dict() for e in events])
