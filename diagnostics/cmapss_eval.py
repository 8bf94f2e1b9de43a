"""Cross-validated C-MAPSS benchmark: K folds grouped by engine, random truncations.

Each outer fold trains on the other folds' engines (the model's early stopping uses inner
folds of those engines only), then every test engine is cut ``repeats`` times at random points
(:mod:`cmapss_protocol`) and its RUL predicted at the cut. Figures:

- per repeat: RMSE and PHM08 score over all engines (one prediction per engine, like the
  official test set of 100 engines); the headline is their mean, the spread their std/min/max;
- per fold: RMSE over the fold's engines and repeats, and the mean PHM08 score per repeat;
- two baselines on the very same cuts: the mean capped training RUL, and a ridge regression on
  the cut cycle's normalised sensors.

RMSE and score use the true RUL capped at the same value as the training target (125), as in
the published deep-learning results the issue compares with; the uncapped figures are reported
next to them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from diagnostics.cmapss_data import FloatArray, IntArray, Trajectories
from diagnostics.cmapss_model import RulConfig, linear_baseline, train_model
from diagnostics.cmapss_protocol import (
    MIN_OBSERVED_CYCLES,
    TRUE_RUL_MAX,
    TRUE_RUL_MIN,
    capped,
    phm08_score,
    rmse,
    row_rul,
    truncation_rows,
)

log = logging.getLogger("diagnostics.cmapss")


@dataclass
class _Cut:
    """Predictions of one (fold, repeat): true RUL and each method's prediction per engine."""

    fold: int
    repeat: int
    true_rul: IntArray
    model: FloatArray
    mean_rul: FloatArray
    linear: FloatArray


def outer_folds(units: IntArray, folds: int, seed: int) -> list[IntArray]:
    """Engines of each test fold: a seeded shuffle cut into ``folds`` near-equal groups."""
    if folds < 2 or folds > units.size:
        raise ValueError(f"--folds must be between 2 and the number of units ({units.size})")
    shuffled = np.random.default_rng([seed, 104729]).permutation(units)
    return [np.sort(group) for group in np.array_split(shuffled, folds)]


def evaluate(
    data: Trajectories,
    folds: int = 5,
    seed: int = 0,
    repeats: int = 5,
    config: RulConfig | None = None,
) -> dict[str, Any]:
    """Run the benchmark and return the report (JSON-serialisable)."""
    started = time.perf_counter()
    config = (config or RulConfig()).with_overrides(seed=seed)
    cap = config.cap
    cuts: list[_Cut] = []
    fold_models: list[dict[str, Any]] = []
    for fold, test_units in enumerate(outer_folds(data.units, folds, seed)):
        fold_started = time.perf_counter()
        train = data.select_units(np.setdiff1d(data.units, test_units))
        test = data.select_units(test_units)
        model = train_model(train, config)
        features = model.features(test)
        mean_rul = float(capped(row_rul(train), cap).mean())
        linear = linear_baseline(train, cap)
        for repeat in range(repeats):
            rows, true_rul = truncation_rows(test, seed, repeat)
            cuts.append(
                _Cut(
                    fold=fold,
                    repeat=repeat,
                    true_rul=true_rul,
                    model=model.predict_features(features[rows]),
                    mean_rul=np.full(rows.size, mean_rul),
                    linear=linear.predict_rows(test, rows),
                )
            )
        fold_models.append(
            {
                "inner_rmse": round(model.inner_rmse, 3),
                "best_iterations": model.best_iterations,
                "seconds": round(time.perf_counter() - fold_started, 1),
            }
        )
        log.info(
            "fold %d/%d: %d train / %d test engines, inner RMSE %.2f, rounds %s, %.1f s",
            fold + 1,
            folds,
            train.units.size,
            test.units.size,
            model.inner_rmse,
            model.best_iterations,
            time.perf_counter() - fold_started,
        )
    report = _report(cuts, folds, repeats, cap)
    report["folds"] = [
        {**fold_figures, **extra}
        for fold_figures, extra in zip(report["folds"], fold_models, strict=True)
    ]
    report.update(
        {
            "engines": int(data.units.size),
            "n_folds": folds,
            "repeats": repeats,
            "seed": seed,
            "cap": cap,
            "truncation": {
                "true_rul_min": TRUE_RUL_MIN,
                "true_rul_max": TRUE_RUL_MAX,
                "min_observed_cycles": MIN_OBSERVED_CYCLES,
            },
            "config": asdict(config),
            "elapsed_s": round(time.perf_counter() - started, 1),
        }
    )
    return report


def _figures(cuts: list[_Cut], method: str, cap: int) -> dict[str, float]:
    """RMSE and PHM08 per repeat (over all engines of those cuts), then mean and spread."""
    repeats = sorted({cut.repeat for cut in cuts})
    per_repeat: dict[str, list[float]] = {
        "rmse": [],
        "phm08": [],
        "rmse_uncapped": [],
        "phm08_uncapped": [],
    }
    for repeat in repeats:
        chosen = [cut for cut in cuts if cut.repeat == repeat]
        true = np.concatenate([cut.true_rul for cut in chosen]).astype(np.float64)
        predicted = np.concatenate([getattr(cut, method) for cut in chosen])
        per_repeat["rmse"].append(rmse(predicted, capped(true, cap)))
        per_repeat["phm08"].append(phm08_score(predicted, capped(true, cap)))
        per_repeat["rmse_uncapped"].append(rmse(predicted, true))
        per_repeat["phm08_uncapped"].append(phm08_score(predicted, true))
    out: dict[str, Any] = {}
    for name, values in per_repeat.items():
        array = np.asarray(values)
        out[name] = round(float(array.mean()), 3)
        if name in ("rmse", "phm08"):
            out[f"{name}_std"] = round(float(array.std(ddof=1)) if array.size > 1 else 0.0, 3)
            out[f"{name}_min"] = round(float(array.min()), 3)
            out[f"{name}_max"] = round(float(array.max()), 3)
            out[f"{name}_by_repeat"] = [round(float(v), 3) for v in array]
    return out


def _report(cuts: list[_Cut], folds: int, repeats: int, cap: int) -> dict[str, Any]:
    report: dict[str, Any] = _figures(cuts, "model", cap)
    report["baseline"] = {
        "mean_rul": _figures(cuts, "mean_rul", cap),
        "linear_last_cycle": _figures(cuts, "linear", cap),
    }
    per_fold = []
    for fold in range(folds):
        chosen = [cut for cut in cuts if cut.fold == fold]
        true = capped(np.concatenate([cut.true_rul for cut in chosen]), cap)
        predicted = np.concatenate([cut.model for cut in chosen])
        per_fold.append(
            {
                "fold": fold,
                "engines": int(chosen[0].true_rul.size),
                "rmse": round(rmse(predicted, true), 3),
                "phm08_per_repeat": round(phm08_score(predicted, true) / repeats, 3),
            }
        )
    report["folds"] = per_fold
    return report
