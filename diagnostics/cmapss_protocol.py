"""The evaluation protocol of the C-MAPSS benchmark: labels, truncation, RMSE and PHM08 score.

Kept apart from the model so that the model's inner validation and the outer cross-validation
cut trajectories and score predictions in exactly the same way.

Truncation. The official test files stop each engine "some time prior to failure" and give the
true RUL at the last observed cycle. For FD001 those true RULs range from 7 to 145 cycles and
the shortest observed test trajectory has 31 cycles. A unit of life T (run to failure, so
RUL = T - cycle) is therefore cut by drawing its true RUL uniformly from the integers
``[TRUE_RUL_MIN, min(TRUE_RUL_MAX, T - MIN_OBSERVED_CYCLES)]`` and keeping the first
``T - RUL`` cycles. Every FD001 training engine lives at least 128 cycles, so the range is never
empty there; for very short units the bounds shrink so that at least one cycle stays observed
and at least one remains. The draw for (seed, repeat, unit) does not depend on the fold
assignment, so two models evaluated with the same seed see the same cuts.
"""

from __future__ import annotations

import numpy as np

from diagnostics.cmapss_data import FloatArray, IntArray, Trajectories

RUL_CAP = 125  # piecewise-linear target: flat while the engine is healthy (Heimes 2008; Li 2018)
TRUE_RUL_MIN = 7
TRUE_RUL_MAX = 145
MIN_OBSERVED_CYCLES = 31


def row_rul(data: Trajectories) -> IntArray:
    """Remaining cycles of every row of run-to-failure data (0 at the last cycle)."""
    life = np.repeat(data.unit_lengths, data.unit_lengths)
    return (life - data.position() - 1).astype(np.int64)


def capped(rul: IntArray | FloatArray, cap: float = RUL_CAP) -> FloatArray:
    """Piecewise-linear RUL: the true value, but never above ``cap``."""
    return np.minimum(np.asarray(rul, dtype=np.float64), float(cap))


def draw_true_rul(unit: int, life: int, seed: int, repeat: int) -> int:
    """True RUL at the truncation point of one unit (see the module docstring)."""
    if life < 2:
        raise ValueError(f"unit {unit} has {life} cycle(s); truncation needs at least 2")
    high = max(1, min(TRUE_RUL_MAX, life - MIN_OBSERVED_CYCLES))
    high = min(high, life - 1)
    low = min(TRUE_RUL_MIN, high)
    rng = np.random.default_rng([seed, repeat, unit])
    return int(rng.integers(low, high + 1))


def truncation_rows(data: Trajectories, seed: int, repeat: int) -> tuple[IntArray, IntArray]:
    """For each unit of run-to-failure ``data``: the row of its last observed cycle after the
    cut, and the true RUL there. Valid for features from :mod:`cmapss_features`, which only
    look back."""
    starts, lengths, units = data.unit_starts, data.unit_lengths, data.units
    true_rul = np.array(
        [
            draw_true_rul(int(u), int(n), seed, repeat)
            for u, n in zip(units.tolist(), lengths.tolist(), strict=True)
        ],
        dtype=np.int64,
    )
    last_row = starts + lengths - 1 - true_rul
    return last_row.astype(np.int64), true_rul


def rmse(predicted: FloatArray, true: FloatArray) -> float:
    return float(np.sqrt(np.mean((np.asarray(predicted) - np.asarray(true)) ** 2)))


def phm08_score(predicted: FloatArray, true: FloatArray) -> float:
    """PHM08 challenge score, summed over units: late predictions (d > 0) cost more than early.

    s = sum(exp(-d/13) - 1 for d < 0) + sum(exp(d/10) - 1 for d >= 0), d = predicted - true.
    """
    d = np.asarray(predicted, dtype=np.float64) - np.asarray(true, dtype=np.float64)
    return float(np.where(d < 0, np.expm1(-d / 13.0), np.expm1(d / 10.0)).sum())
