"""Features for remaining-useful-life models on C-MAPSS trajectories.

Two steps, both fitted on training units only:

1. :class:`SensorNormaliser` finds the operating conditions (FD002/FD004 fly six flight regimes;
   a sensor's level there says more about the regime than about wear), z-scores every sensor
   within its condition, and drops sensors that carry no information (constant within every
   condition). With one condition (FD001/FD003) this is a plain z-score.
2. :func:`window_features` turns each cycle into a row of trailing-window statistics per signal
   (levels, rolling means and standard deviations, least-squares slopes, drift from the unit's
   own first cycles) plus the cycle count. Every statistic only looks back, so the features of
   cycle t are the same whether the trajectory is cut at t or continues: one pass over a full
   trajectory gives the features of all its truncations.

All statistics come from cumulative sums, so they are vectorised over rows and signals.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from diagnostics.cmapss_data import SENSOR_NAMES, FloatArray, IntArray, Trajectories

MEAN_WINDOWS = (5, 10, 20, 30)
STD_WINDOWS = (10, 30)
SLOPE_WINDOWS = (10, 20, 40)
BASELINE_CYCLES = 20  # the first cycles of a unit stand for its as-new state
DRIFT_WINDOW = 10  # drift = mean of the last DRIFT_WINDOW cycles minus the as-new mean
MAX_CONDITIONS = 10
LLOYD_STEPS = 5
MIN_CONDITION_SHARE = 0.01
# Clusters count as distinct operating conditions only when their centres lie this many
# within-cluster standard deviations apart: set points versus noise around one set point.
CONDITION_SEPARATION = 10.0


@dataclass(frozen=True)
class OperatingConditions:
    """Operating-condition centres in scaled setting space; rows go to the nearest centre."""

    centres: FloatArray  # (conditions, settings), scaled
    scale: FloatArray  # per setting; 1 for settings that never vary

    @property
    def count(self) -> int:
        return int(self.centres.shape[0])

    @classmethod
    def fit(cls, settings: FloatArray) -> OperatingConditions:
        """Find the number of distinct set points and their centres.

        Cluster for k = 1, 2, ... and keep the largest k whose centres all lie at least
        ``CONDITION_SEPARATION`` within-cluster standard deviations apart. Noise around one set
        point (FD001: altitude jitter of 0.002) splits into parts a few deviations apart and is
        rejected; the six FD002 regimes are thousands of deviations apart and are kept. A
        condition must also hold at least 1 % of the rows.
        """
        spread = settings.std(axis=0)
        scale = np.where(spread > 0, spread, 1.0)
        scaled = settings / scale
        best = scaled.mean(axis=0, keepdims=True)
        distinct = np.unique(scaled, axis=0).shape[0]
        for k in range(2, min(MAX_CONDITIONS, distinct) + 1):
            centres, labels = _separated_clusters(scaled, k)
            if np.bincount(labels, minlength=k).min() < MIN_CONDITION_SHARE * labels.size:
                continue  # a handful of odd rows is a glitch, not a flight regime
            within = max(float(scaled[labels == c].std(axis=0).max()) for c in range(k))
            gaps = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
            closest = float(gaps[np.triu_indices(k, 1)].min())
            if closest > CONDITION_SEPARATION * max(within, 1e-12):
                best = centres
        order = np.lexsort(best.T[::-1])  # stable condition numbering for reports
        return cls(centres=np.asarray(best[order], dtype=np.float64), scale=scale)

    def assign(self, settings: FloatArray) -> IntArray:
        """Condition index of each row (nearest centre)."""
        scaled = settings / self.scale
        distance = ((scaled[:, None, :] - self.centres[None, :, :]) ** 2).sum(axis=2)
        return distance.argmin(axis=1).astype(np.int64)


def _separated_clusters(points: FloatArray, k: int) -> tuple[FloatArray, IntArray]:
    """k clusters by farthest-point seeding and a few Lloyd steps (deterministic, numpy only).

    Farthest-point seeding puts one seed in each of k clusters whenever the clusters are
    farther apart than they are wide, which is the only case the caller accepts.
    """
    chosen = [0]
    distance = np.linalg.norm(points - points[0], axis=1)
    for _ in range(1, k):
        chosen.append(int(distance.argmax()))
        distance = np.minimum(distance, np.linalg.norm(points - points[chosen[-1]], axis=1))
    centres = points[chosen].copy()
    labels = np.zeros(points.shape[0], dtype=np.int64)
    for _ in range(LLOYD_STEPS):
        gaps = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2)
        labels = gaps.argmin(axis=1).astype(np.int64)
        for c in range(k):
            members = points[labels == c]
            if members.shape[0]:
                centres[c] = members.mean(axis=0)
    return centres, labels


@dataclass(frozen=True)
class SensorNormaliser:
    """Per-condition z-scores of the informative sensors."""

    conditions: OperatingConditions
    sensor_index: IntArray  # columns of ``Trajectories.sensors`` that are kept
    mean: FloatArray  # (conditions, kept sensors)
    std: FloatArray  # (conditions, kept sensors)

    @property
    def sensor_names(self) -> list[str]:
        return [SENSOR_NAMES[i] for i in self.sensor_index.tolist()]

    @classmethod
    def fit(cls, data: Trajectories) -> SensorNormaliser:
        """Conditions, per-condition mean/std, and the sensors worth keeping.

        A sensor is dropped when it has fewer than three distinct values inside every condition
        (FD001: s1, s5, s6, s10, s16, s18, s19 are constant or flip between two rounded values).
        """
        conditions = OperatingConditions.fit(data.settings)
        label = conditions.assign(data.settings)
        n_cond, n_sens = conditions.count, data.sensors.shape[1]
        mean = np.zeros((n_cond, n_sens))
        std = np.ones((n_cond, n_sens))
        informative = np.zeros(n_sens, dtype=bool)
        for c in range(n_cond):
            block = data.sensors[label == c]
            if block.shape[0] == 0:
                continue
            mean[c] = block.mean(axis=0)
            std[c] = block.std(axis=0)
            for s in range(n_sens):
                if np.unique(block[:, s]).size >= 3:
                    informative[s] = True
        keep = np.flatnonzero(informative).astype(np.int64)
        safe_std = np.where(std[:, keep] > 1e-12, std[:, keep], 1.0)
        return cls(conditions=conditions, sensor_index=keep, mean=mean[:, keep], std=safe_std)

    def transform(self, data: Trajectories) -> FloatArray:
        """(rows, kept sensors) z-scores within each row's operating condition."""
        label = self.conditions.assign(data.settings)
        values = data.sensors[:, self.sensor_index]
        return np.asarray((values - self.mean[label]) / self.std[label], dtype=np.float64)


def feature_names(signal_names: list[str]) -> list[str]:
    """Column names of :func:`window_features`, in order."""
    names = ["cycle"]
    for signal in signal_names:
        names.append(f"{signal}_level")
        names += [f"{signal}_mean{w}" for w in MEAN_WINDOWS]
        names += [f"{signal}_std{w}" for w in STD_WINDOWS]
        names += [f"{signal}_slope{w}" for w in SLOPE_WINDOWS]
        names.append(f"{signal}_drift")
    return names


def window_features(signals: FloatArray, data: Trajectories) -> npt.NDArray[np.float32]:
    """Trailing-window features of every cycle, (rows, len(feature_names(...))).

    ``signals`` (rows, k) are per-row values aligned with ``data``. Windows are clipped at the
    start of a unit, so early cycles use the cycles they have.
    """
    n_rows, n_signals = signals.shape
    position = data.position()
    unit_start = np.arange(n_rows, dtype=np.int64) - position
    time = position.astype(np.float64)[:, None]
    sums = _Cumulative(signals, time)
    blocks: list[FloatArray] = [(position + 1).astype(np.float64)[:, None]]
    per_signal: list[list[FloatArray]] = [[] for _ in range(n_signals)]

    def add(matrix: FloatArray) -> None:
        for j in range(n_signals):
            per_signal[j].append(matrix[:, j])

    add(signals)
    means = {w: sums.window_mean(unit_start, w) for w in MEAN_WINDOWS}
    for w in MEAN_WINDOWS:
        add(means[w])
    for w in STD_WINDOWS:
        add(sums.window_std(unit_start, w))
    for w in SLOPE_WINDOWS:
        add(sums.window_slope(unit_start, w))
    baseline = sums.head_mean(unit_start, position, BASELINE_CYCLES)
    recent = means.get(DRIFT_WINDOW)
    if recent is None:
        recent = sums.window_mean(unit_start, DRIFT_WINDOW)
    add(recent - baseline)
    for columns in per_signal:
        blocks.append(np.stack(columns, axis=1))
    return np.concatenate(blocks, axis=1).astype(np.float32)


class _Cumulative:
    """Prefix sums of x, x², t, t², t·x, so any trailing window costs two subtractions."""

    def __init__(self, values: FloatArray, time: FloatArray) -> None:
        def prefix(a: FloatArray) -> FloatArray:
            return np.concatenate([np.zeros((1, a.shape[1])), np.cumsum(a, axis=0)], axis=0)

        self.x = prefix(values)
        self.xx = prefix(values * values)
        self.t = prefix(time)
        self.tt = prefix(time * time)
        self.tx = prefix(time * values)
        self.n_rows = values.shape[0]

    def _bounds(self, unit_start: IntArray, window: int) -> tuple[IntArray, IntArray, FloatArray]:
        end = np.arange(1, self.n_rows + 1, dtype=np.int64)
        lo = np.maximum(unit_start, end - window)
        return lo, end, (end - lo).astype(np.float64)[:, None]

    @staticmethod
    def _sum(prefix: FloatArray, lo: IntArray, end: IntArray) -> FloatArray:
        return prefix[end] - prefix[lo]

    def window_mean(self, unit_start: IntArray, window: int) -> FloatArray:
        lo, end, count = self._bounds(unit_start, window)
        return self._sum(self.x, lo, end) / count

    def window_std(self, unit_start: IntArray, window: int) -> FloatArray:
        lo, end, count = self._bounds(unit_start, window)
        mean = self._sum(self.x, lo, end) / count
        second = self._sum(self.xx, lo, end) / count
        return np.sqrt(np.maximum(second - mean * mean, 0.0))

    def window_slope(self, unit_start: IntArray, window: int) -> FloatArray:
        """Least-squares slope per cycle; 0 for a one-cycle window."""
        lo, end, count = self._bounds(unit_start, window)
        st = self._sum(self.t, lo, end)
        stt = self._sum(self.tt, lo, end)
        sx = self._sum(self.x, lo, end)
        stx = self._sum(self.tx, lo, end)
        denominator = count * stt - st * st
        numerator = count * stx - st * sx
        safe = np.where(denominator > 1e-9, denominator, 1.0)
        return np.where(denominator > 1e-9, numerator / safe, 0.0)

    def head_mean(self, unit_start: IntArray, position: IntArray, cycles: int) -> FloatArray:
        """Mean of the unit's first ``cycles`` cycles, or of those seen so far (causal)."""
        count = np.minimum(position + 1, cycles)
        total = self.x[unit_start + count] - self.x[unit_start]
        return np.asarray(total / count[:, None].astype(np.float64), dtype=np.float64)
