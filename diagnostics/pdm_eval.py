"""Evaluating predictive maintenance on held-out vehicles.

Outer vehicle folds (``pdm_model.vehicle_folds``): for each fold the whole training protocol
(inner folds, early stopping, calibration, thresholds) runs on the other vehicles only, and the
fold's vehicles are scored as the worker would score them. Every number below is computed on
these out-of-fold predictions, per (component, horizon), over the snapshots where the
component applies and has not failed yet:

* ``pr_auc``: average precision (area under the precision-recall curve);
* ``no_skill_pr_auc``: the positive rate, what a random score gets;
* ``rule_pr_auc``: the same for a one-signal rule (``Component.rule_feature``, e.g. the lowest
  tyre's pressure drop or the peak running coolant temperature) as the heuristic baseline;
* ``brier`` vs ``brier_no_skill`` (always predicting the positive rate): calibration sanity;
* ``alerts_per_1000_vehicle_days``: alerts raised with the hysteresis of the worker, replayed
  over each vehicle's snapshots in time order, per 1,000 vehicles and day observed, and the
  share of them raised within the horizon before a failure (``alert_precision``) or at any
  time before a failure of that component (``alerts_before_a_failure``: early, not false);
* ``median_lead_days``: for failures inside the observed window, the time from the first
  snapshot after the degradation started at which the vehicle was alerting to the failure;
  ``detected`` / ``failures`` is the share that got any alert before failing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import average_precision_score

from diagnostics.features import FloatArray
from diagnostics.pdm_components import BY_NAME
from diagnostics.pdm_dataset import DAY_MS, TrainingSet
from diagnostics.pdm_model import ModelSet, TrainConfig, train_models, vehicle_folds
from diagnostics.pdm_scoring import Scorer, benchmark_scoring

log = logging.getLogger("diagnostics.pdm")


def replay_alerts(
    vins: npt.NDArray[np.str_],
    probability: FloatArray,
    high: FloatArray,
    low: FloatArray,
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
    """Hysteresis over rows sorted by (vehicle, time): (raised at this row, alerting after
    it). NaN probabilities leave the state unchanged, as in ``AlertState``."""
    raised = np.zeros(len(vins), dtype=bool)
    alerting = np.zeros(len(vins), dtype=bool)
    state = False
    previous = None
    for i, (vin, p) in enumerate(zip(vins.tolist(), probability.tolist(), strict=True)):
        if vin != previous:
            state, previous = False, vin
        if p == p:  # not NaN
            now = p >= low[i] if state else p >= high[i]
            raised[i] = now and not state
            state = bool(now)
        alerting[i] = state
    return raised, alerting


def _reliability(p: FloatArray, y: FloatArray, bins: int = 5) -> list[list[float]]:
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges) - 1, 0, bins - 1)
    out = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            out.append([round(float(p[mask].mean()), 4), round(float(y[mask].mean()), 4),
                        int(mask.sum())])  # fmt: skip
    return out


def _lead_times(
    training: TrainingSet, component: str, rows: npt.NDArray[np.intp], alerting: Any
) -> tuple[int, list[float]]:
    """(failures observable in the window, lead times in days of those detected)."""
    failure = training.failure_ms[component][rows]
    onset = training.onset_ms[component][rows]
    end = training.end_ms[rows]
    observed = training.observed_until_ms[rows]
    vins = training.vins[rows]
    failures = 0
    leads: list[float] = []
    for vin in np.unique(vins[(failure >= 0) & (failure <= observed)]).tolist():
        mine = np.flatnonzero((vins == vin) & (end >= onset) & (end < failure))
        if not len(mine):
            continue
        failures += 1
        hits = mine[alerting[mine]]
        if len(hits):
            leads.append(float(failure[hits[0]] - end[hits[0]]) / DAY_MS)
    return failures, leads


def evaluate(
    training: TrainingSet,
    config: TrainConfig | None = None,
    *,
    folds: int = 4,
    seed: int = 0,
    benchmark: bool = True,
) -> dict[str, Any]:
    """Out-of-fold evaluation (see module docstring); returns a JSON-able report."""
    config = config or TrainConfig()
    started = time.monotonic()
    keys = [(c, h) for c in config.components for h in config.horizons_days]
    n = len(training)
    oof = {k: np.full(n, np.nan) for k in keys}
    high = {k: np.full(n, np.nan) for k in keys}
    low = {k: np.full(n, np.nan) for k in keys}
    last_models: ModelSet | None = None
    for fold, (train_rows, test_rows) in enumerate(
        vehicle_folds(training.vins, training.vehicle_kind, folds, seed), start=1
    ):
        models = train_models(training.take(train_rows), config)
        scorer = Scorer(models)
        probability = scorer.probabilities(training.features.values[test_rows])
        for j, key in enumerate(scorer.keys):
            oof[key][test_rows] = probability[:, j]
            high[key][test_rows] = scorer.high[j]
            low[key][test_rows] = scorer.low[j]
        last_models = models
        log.info("fold %d/%d done (%.0f s)", fold, folds, time.monotonic() - started)
    results = [_metrics(training, key, oof[key], high[key], low[key]) for key in keys]
    report: dict[str, Any] = {
        "kind": "pdm_evaluation",
        "feature_version": training.features.version,
        "folds": folds,
        "seed": seed,
        "dataset": training.summary(),
        "config": config.describe(),
        "results": results,
    }
    if benchmark and last_models is not None and last_models.models:
        values = training.features.values
        repeat = max(1, 50_000 // max(1, len(values)))
        report["scoring_benchmark"] = benchmark_scoring(
            last_models, np.tile(values, (repeat, 1)), num_threads=config.num_threads
        )
    report["elapsed_s"] = round(time.monotonic() - started, 1)
    return report


def evaluate_models(models: ModelSet, training: TrainingSet) -> dict[str, Any]:
    """The same metrics for a trained model set (e.g. a registry version) on other vehicles:
    no retraining, the model's own thresholds. For data the models never saw (another
    simulated fleet, the archive with labels), this is a true held-out test."""
    started = time.monotonic()
    scorer = Scorer(models)
    probability = scorer.probabilities(training.features.values)
    n = len(training)
    results = [
        _metrics(
            training, key, probability[:, j], np.full(n, scorer.high[j]), np.full(n, scorer.low[j])
        )
        for j, key in enumerate(scorer.keys)
    ]
    return {
        "kind": "pdm_model_evaluation",
        "model_version": models.version,
        "feature_version": training.features.version,
        "dataset": training.summary(),
        "results": results,
        "elapsed_s": round(time.monotonic() - started, 1),
    }


def _metrics(
    training: TrainingSet,
    key: tuple[str, int],
    probability: FloatArray,
    high: FloatArray,
    low: FloatArray,
) -> dict[str, Any]:
    component, horizon = key
    y_all = training.labels(component, horizon)
    rows = np.flatnonzero((y_all >= 0) & ~np.isnan(probability))
    out: dict[str, Any] = {"component": component, "horizon_days": horizon, "rows": len(rows)}
    if not len(rows):
        return out | {"note": "no model (too few failing vehicles)"}
    y = y_all[rows].astype(np.float64)
    p = probability[rows]
    positives = int(y.sum())
    rate = float(y.mean())
    spec = BY_NAME[component]
    rule = spec.rule_sign * training.features.column(spec.rule_feature)[rows]
    if np.isnan(rule).all():
        rule = np.zeros_like(rule)
    rule = np.where(np.isnan(rule), np.nanmin(rule) - 1.0, rule)  # no signal ranks lowest
    raised, alerting = replay_alerts(training.vins[rows], p, high[rows], low[rows])
    failure, end = training.failure_ms[component][rows], training.end_ms[rows]
    days = len(rows) * training.snapshot_every_h / 24.0
    failures, leads = _lead_times(training, component, rows, alerting)
    has_both = 0 < positives < len(y)
    return out | {
        "positives": positives,
        "positive_vehicles": len(np.unique(training.vins[rows][y == 1])),
        "pr_auc": round(float(average_precision_score(y, p)), 4) if has_both else None,
        "no_skill_pr_auc": round(rate, 4),
        "rule_pr_auc": round(float(average_precision_score(y, rule)), 4) if has_both else None,
        "brier": round(float(np.mean((p - y) ** 2)), 5),
        "brier_no_skill": round(float(np.mean((rate - y) ** 2)), 5),
        "reliability": _reliability(p, y),
        "alert_threshold": round(float(np.median(high[rows])), 3),
        "alerts_per_1000_vehicle_days": round(1000.0 * float(raised.sum()) / days, 2),
        "alert_precision": round(float(y[raised].mean()), 3) if raised.any() else None,
        "alerts_before_a_failure": (
            round(float((failure[raised] > end[raised]).mean()), 3) if raised.any() else None
        ),
        "failures": failures,
        "detected": len(leads),
        "median_lead_days": round(float(np.median(leads)), 1) if leads else None,
    }
