"""Labelled driving traces for measuring event detection, and the measurement itself.

:func:`generate_trace` draws one drive (deterministic for a seed): a speed profile of cruising,
gentle speed changes, stops at traffic lights and turns, into which manoeuvres are injected with
ground-truth labels (type, start, end):

- **events**: harsh braking (plateau 3.8-7 m/s^2), fast starts from a light (4.6-6.5 m/s^2),
  harsh cornering (4.8-7 m/s^2), each held for 2-4 s with 0.5 s jerk ramps;
- **near misses** that must *not* count: firm braking 1.8-2.6, brisk starts 2.5-3.2, brisk
  turns 2.3-3.0 m/s^2;
- **bumps**: single-sample spikes of 4-9 m/s^2 in the accelerometer (pot-holes, kerbs);
- **GNSS dropouts**: 5-20 s with a horizontal accuracy of 40-150 m during which speed and
  heading freeze (the speed here is GNSS-derived, as on aftermarket telematics units) and then
  jump to the true value.

The physics runs on a 0.1 s grid and is sampled every ``dt`` seconds (1 s like the simulator by
default). Sensor noise: accelerometer 0.15-0.25 m/s^2 white noise plus a slowly drifting road
grade bias of up to 0.3 m/s^2; speed 0.3 km/h (rounded to 0.1 like the simulator); heading 1
degree. Labels are the time the true acceleration is at least half its plateau value.

A label of the same type follows the previous one by at least 65 s, so the detector's "repeats
within 60 s count once" rule never merges two real events.

:func:`evaluate` runs :func:`ubi.events.detect_events` (also with the accelerometer columns
removed, i.e. the speed/heading fallback) and :func:`naive_detect` (a threshold on raw
consecutive speed and heading differences, no smoothing, gating or minimum duration) on the same
traces and reports precision, recall and F1 per event type. A detection matches a label of the
same type when their intervals overlap within :data:`MATCH_TOLERANCE_S`; each label and each
detection matches at most once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from ubi.events import (
    ACCEL_LATERAL,
    ACCEL_LONGITUDINAL,
    GNSS_ACCURACY,
    HEADING,
    THRESHOLDS,
    DrivingEvent,
    EventType,
    detect_events,
)
from ubi.trips import GEAR, LV_STATE, ODOMETER, SPEED

FINE_DT = 0.1
RAMP_S = 0.5
MATCH_TOLERANCE_S = 3.0
T0_MS = 1_717_200_000_000  # 2024-06-01
SAME_TYPE_GAP_S = 65.0


@dataclass(frozen=True)
class Label:
    trace: str
    kind: str
    """``event``, ``near_miss``, ``bump`` or ``gnss_dropout``."""
    type: EventType | None
    start_ms: int
    end_ms: int
    plateau_mps2: float


@dataclass
class LabelledTrace:
    vin: str
    table: pa.Table
    labels: list[Label]

    @property
    def events(self) -> list[Label]:
        return [label for label in self.labels if label.kind == "event"]


def clipped_speed(accel: np.ndarray, v0: float) -> np.ndarray:
    """Speed after each fine step, never below zero (braking stops the car, it does not
    reverse it): ``v[k] = max(0, v[k-1] + a[k] dt)``, vectorised."""
    free = v0 + np.cumsum(accel) * FINE_DT
    return free - np.minimum(np.minimum.accumulate(free), 0.0)


class _Builder:
    """Accumulates commanded longitudinal/lateral acceleration on the fine grid."""

    def __init__(self, rng: np.random.Generator, vin: str) -> None:
        self.rng = rng
        self.vin = vin
        self.a: list[np.ndarray] = []
        self.lat: list[np.ndarray] = []
        self.t = 0.0
        self.v = 0.0
        self.labels: list[Label] = []
        self.last_label_s: dict[EventType, float] = {}

    def _push(self, a: np.ndarray, lat: np.ndarray) -> None:
        self.a.append(a)
        self.lat.append(lat)
        self.v = float(clipped_speed(a, self.v)[-1])
        self.t += len(a) * FINE_DT

    def hold(self, seconds: float, accel: float = 0.0, lateral: float = 0.0) -> None:
        n = max(1, round(seconds / FINE_DT))
        self._push(np.full(n, accel), np.full(n, lateral))

    def cruise(self, seconds: float) -> None:
        wobble = 0.25 * np.sin(np.linspace(0, self.rng.uniform(1, 4) * np.pi, 8))
        for w in wobble:
            self.hold(seconds / 8, float(w) if self.v > 2 else 0.0)

    def change_speed(self, target: float, rate: float) -> None:
        """Reach ``target`` m/s with a constant (gentle) rate."""
        if abs(target - self.v) < 0.5:
            return
        accel = rate if target > self.v else -rate
        self.shape(accel, abs(target - self.v) / rate, longitudinal=True)
        if target == 0.0:
            self.v = 0.0

    def shape(self, peak: float, plateau_s: float, *, longitudinal: bool) -> tuple[float, float]:
        """A trapezoid (0.5 s ramps); returns the labelled interval (half-peak points, s)."""
        ramp = np.linspace(0, 1, round(RAMP_S / FINE_DT) + 1)[1:]
        body = np.concatenate((ramp, np.ones(round(plateau_s / FINE_DT)), ramp[::-1])) * peak
        start = self.t + RAMP_S / 2
        end = self.t + RAMP_S * 1.5 + plateau_s
        zeros = np.zeros_like(body)
        self._push(body, zeros) if longitudinal else self._push(zeros, body)
        return start, end

    def manoeuvre(
        self, kind: str, event_type: EventType, peak: float, plateau_s: float, longitudinal: bool
    ) -> None:
        last = self.last_label_s.get(event_type)
        if last is not None and self.t - last < SAME_TYPE_GAP_S:
            self.cruise(SAME_TYPE_GAP_S - (self.t - last))
        start, end = self.shape(peak, plateau_s, longitudinal=longitudinal)
        self.last_label_s[event_type] = start
        self.labels.append(
            Label(self.vin, kind, event_type, T0_MS + round(start * 1000),
                  T0_MS + round(end * 1000), abs(peak))
        )  # fmt: skip


def _drive(b: _Builder, duration_s: float) -> None:
    rng = b.rng
    b.hold(rng.uniform(5, 15))
    target = rng.uniform(8, 20)
    b.change_speed(target, rng.uniform(1.0, 2.2))
    while b.t < duration_s:
        b.cruise(rng.uniform(15, 40))
        u = rng.random()
        if u < 0.30:  # a red light, left normally, fast or briskly
            b.change_speed(0.0, rng.uniform(1.2, 2.4))
            b.hold(rng.uniform(5, 40))
            start = rng.random()
            if start < 0.4:
                peak = rng.uniform(4.6, 6.5)
                b.manoeuvre("event", EventType.HARSH_ACCELERATION, peak, rng.uniform(2, 3.5), True)
            elif start < 0.6:
                peak = rng.uniform(2.5, 3.2)
                b.manoeuvre(
                    "near_miss", EventType.HARSH_ACCELERATION, peak, rng.uniform(2, 4), True
                )
            target = rng.uniform(8, 25)
            b.change_speed(target, rng.uniform(1.0, 2.2))
        elif u < 0.50 and b.v > 11:  # harsh braking or a firm one
            harsh = rng.random() < 0.6
            peak = rng.uniform(3.8, 7.0) if harsh else rng.uniform(1.8, 2.6)
            plateau = min(rng.uniform(2, 4), (b.v - 3.0) / peak - RAMP_S)
            if plateau >= 2.0:
                kind = "event" if harsh else "near_miss"
                b.manoeuvre(kind, EventType.HARSH_BRAKING, -peak, plateau, True)
            b.change_speed(target, rng.uniform(1.0, 2.0))
        elif u < 0.75 and b.v > 8:  # a turn or bend: normal, harsh or brisk
            side = float(rng.choice([-1.0, 1.0]))
            kind_u = rng.random()
            if kind_u < 0.4:
                peak = rng.uniform(4.8, 7.0)
                b.manoeuvre("event", EventType.HARSH_CORNERING, side * peak, rng.uniform(2, 4),
                            False)  # fmt: skip
            elif kind_u < 0.65:
                peak = rng.uniform(2.3, 3.0)
                b.manoeuvre("near_miss", EventType.HARSH_CORNERING, side * peak,
                            rng.uniform(2, 5), False)  # fmt: skip
            else:
                b.shape(side * rng.uniform(1.0, 2.3), rng.uniform(3, 8), longitudinal=False)
        else:  # speed change
            target = rng.uniform(8, 33)
            b.change_speed(target, rng.uniform(0.8, 2.0))
    b.change_speed(0.0, rng.uniform(1.2, 2.2))
    b.hold(rng.uniform(5, 10))


def generate_trace(
    seed: int, *, duration_s: float = 900.0, dt: float = 1.0, vin: str | None = None
) -> LabelledTrace:
    """One labelled drive of about ``duration_s`` seconds sampled every ``dt`` seconds."""
    rng = np.random.default_rng([seed, 0x7B1])
    vin = vin or f"TRACE{seed:012d}"
    b = _Builder(rng, vin)
    _drive(b, duration_s)
    a_true = np.concatenate(b.a)
    lat_true = np.concatenate(b.lat)
    v_fine = np.concatenate(([0.0], clipped_speed(a_true[:-1], 0.0)))
    a_true = np.where((v_fine <= 0.0) & (a_true < 0), 0.0, a_true)  # standing still
    lat_true = np.where(v_fine > 1.0, lat_true, 0.0)
    yaw = np.where(v_fine > 1.0, lat_true / np.maximum(v_fine, 1.0), 0.0)
    heading_fine = (rng.uniform(0, 360) - np.degrees(np.cumsum(yaw) * FINE_DT)) % 360.0
    s_fine = np.cumsum(v_fine) * FINE_DT
    step = max(1, round(dt / FINE_DT))
    idx = np.arange(0, len(v_fine), step)
    n = len(idx)
    t_ms = T0_MS + np.rint(idx * FINE_DT * 1000).astype(np.int64)
    # Sensors.
    sigma = rng.uniform(0.15, 0.25)
    grade = 0.3 * np.sin(np.cumsum(rng.normal(0, 0.02, n)) + rng.uniform(0, 6.3))
    a_long = a_true[idx] + grade + rng.normal(0, sigma, n)
    a_lat = lat_true[idx] + rng.normal(0, sigma, n)
    speed = np.maximum(0.0, v_fine[idx] * 3.6 + rng.normal(0, 0.3, n))
    heading = (heading_fine[idx] + rng.normal(0, 1.0, n)) % 360.0
    accuracy = np.abs(rng.normal(3.0, 1.0, n)) + 1.0
    labels = list(b.labels)
    # Bumps: single-sample accelerometer spikes.
    for i in rng.choice(n, size=max(1, n // 120), replace=False).tolist():
        spike = rng.uniform(4.0, 9.0) * rng.choice([-1.0, 1.0])
        if rng.random() < 0.5:
            a_long[i] += spike
        else:
            a_lat[i] += spike
        labels.append(Label(vin, "bump", None, int(t_ms[i]), int(t_ms[i]), abs(spike)))
    # GNSS dropouts: speed and heading freeze, then jump back.
    for i in rng.choice(n - 30, size=max(1, n // 300), replace=False).tolist():
        length = int(rng.integers(max(1, round(5 / dt)), max(2, round(20 / dt))))
        stop = min(n, i + length)
        speed[i:stop] = speed[i]
        heading[i:stop] = heading[i]
        accuracy[i:stop] = rng.uniform(40, 150, stop - i)
        labels.append(Label(vin, "gnss_dropout", None, int(t_ms[i]), int(t_ms[stop - 1]), 0.0))
    table = pa.table(
        {
            "vin": pa.array([vin] * n, pa.string()),
            "ts": pa.array(t_ms, pa.timestamp("ms", tz="UTC")),
            SPEED: pa.array(np.round(speed, 1)),
            ACCEL_LONGITUDINAL: pa.array(np.round(a_long, 2)),
            ACCEL_LATERAL: pa.array(np.round(a_lat, 2)),
            HEADING: pa.array(np.floor(heading * 10) / 10),
            GNSS_ACCURACY: pa.array(np.round(accuracy, 1)),
            ODOMETER: pa.array(np.floor(50_000 + s_fine[idx]).astype(np.int64)),
            LV_STATE: pa.array(["ON"] * n, pa.string()),
            GEAR: pa.array(np.where(v_fine[idx] > 0.05, 3, 0), pa.int64()),
        }
    )
    labels.sort(key=lambda label: label.start_ms)
    return LabelledTrace(vin, table, labels)


# -- the naive baseline ---------------------------------------------------------------------------
def naive_detect(table: pa.Table) -> list[DrivingEvent]:
    """Thresholds on raw consecutive differences: speed for braking/acceleration, heading
    change times speed for cornering; consecutive flagged samples form one event."""
    from ubi.trips import floats, timestamps_ms, vehicle_order

    ordered, groups = vehicle_order(table)
    ts = timestamps_ms(ordered)
    speed = floats(ordered, SPEED)
    heading = floats(ordered, HEADING)
    events: list[DrivingEvent] = []
    for vin, lo, hi in groups:
        t, v, h = ts[lo:hi], speed[lo:hi], heading[lo:hi]
        if len(t) < 2:
            continue
        span = np.maximum(np.diff(t) / 1000.0, 1e-3)
        dv = np.diff(v) / 3.6 / span
        turn = np.radians((np.diff(h) + 540.0) % 360.0 - 180.0)
        lateral = np.abs(turn / span * v[1:] / 3.6)
        flags = {
            EventType.HARSH_BRAKING: (-dv, -dv >= THRESHOLDS[EventType.HARSH_BRAKING]),
            EventType.HARSH_ACCELERATION: (dv, dv >= THRESHOLDS[EventType.HARSH_ACCELERATION]),
            EventType.HARSH_CORNERING: (
                lateral,
                lateral >= THRESHOLDS[EventType.HARSH_CORNERING],
            ),
        }
        for kind, (magnitude, flagged) in flags.items():
            edges = np.diff(np.concatenate(([0], flagged.astype(np.int8), [0])))
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):
                peak = float(np.nanmax(magnitude[a:b]))
                events.append(
                    DrivingEvent(vin, kind, int(t[a]), int(t[b]), round(peak, 3), 1, "speed")
                )
    return events


# -- evaluation ------------------------------------------------------------------------------------
def match(
    labels: Sequence[Label], detected: Sequence[DrivingEvent]
) -> dict[EventType, tuple[int, int, int]]:
    """(true positives, false positives, false negatives) per type."""
    tol = MATCH_TOLERANCE_S * 1000
    result: dict[EventType, tuple[int, int, int]] = {}
    for kind in EventType:
        truth = [x for x in labels if x.kind == "event" and x.type == kind]
        found = sorted((e for e in detected if e.type == kind), key=lambda e: e.start_ms)
        used = [False] * len(found)
        tp = 0
        for label in truth:
            for j, event in enumerate(found):
                if used[j] or event.vin != label.trace:
                    continue
                if event.start_ms <= label.end_ms + tol and event.end_ms >= label.start_ms - tol:
                    used[j] = True
                    tp += 1
                    break
        result[kind] = (tp, len(found) - tp, len(truth) - tp)
    return result


def _scores(counts: Iterable[dict[EventType, tuple[int, int, int]]]) -> dict[str, dict]:
    totals = {kind: [0, 0, 0] for kind in EventType}
    for per_trace in counts:
        for kind, values in per_trace.items():
            for i, value in enumerate(values):
                totals[kind][i] += value
    out: dict[str, dict] = {}
    for kind, (tp, fp, fn) in totals.items():
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[kind.value] = {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
    return out


def evaluate(seed: int, n_traces: int, *, duration_s: float = 900.0, dt: float = 1.0) -> dict:
    """Precision, recall and F1 per event type for our detector (accelerometer, and the
    speed/heading fallback) and the naive detector on ``n_traces`` traces drawn from ``seed``."""
    ours, fallback, naive = [], [], []
    labelled = 0
    for i in range(n_traces):
        trace = generate_trace(seed * 100_003 + i, duration_s=duration_s, dt=dt)
        labelled += len(trace.events)
        ours.append(match(trace.labels, detect_events(trace.table)))
        no_imu = trace.table.drop_columns([ACCEL_LONGITUDINAL, ACCEL_LATERAL])
        fallback.append(match(trace.labels, detect_events(no_imu)))
        naive.append(match(trace.labels, naive_detect(trace.table)))
    return {
        "seed": seed,
        "traces": n_traces,
        "labelled_events": labelled,
        "ours": _scores(ours),
        "ours_speed_fallback": _scores(fallback),
        "naive": _scores(naive),
    }
