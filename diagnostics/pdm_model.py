"""Training the predictive-maintenance models: one LightGBM binary classifier per (component,
horizon), with calibrated probabilities and alert thresholds.

Protocol for one (component, horizon), on the rows where it applies (``TrainingSet.labels``):

1. **Vehicle folds.** The training vehicles are split into ``inner_folds`` groups
   (``StratifiedGroupKFold``: whole vehicles, stratified on the vehicle's fault type so every
   fold sees every kind of failure). Snapshots of one vehicle are strongly correlated, so a
   row-wise split would leak a vehicle's future into its past and flatter every number.
2. **Early stopping on unseen vehicles.** One booster per fold trains on the other folds and
   stops on this one (binary log-loss); its predictions there are out-of-fold (OOF) margins.
3. **Refit** on all training vehicles with the mean best number of rounds. One booster, so a
   prediction is one ``Booster.predict`` (what the scoring benchmark compares against).
4. **Calibration on held-out vehicles**: Platt scaling (a logistic regression of the label on
   the OOF margin, with Platt's smoothed targets) fitted by scikit-learn; see ``Calibrator``
   for why Platt and not isotonic. This is ``CalibratedClassifierCV(ensemble=False)``'s scheme.
5. **Alert threshold**: the calibrated probability that maximises F1 on the OOF predictions;
   the alert clears below ``low_fraction`` times it (hysteresis, ``pdm_scoring.AlertState``).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.model_selection import StratifiedGroupKFold

from diagnostics.features import FEATURE_NAMES, FEATURE_VERSION, FloatArray
from diagnostics.pdm_components import BY_NAME, COMPONENT_NAMES, HORIZONS_DAYS
from diagnostics.pdm_dataset import TrainingSet

log = logging.getLogger("diagnostics.pdm")

CalibrationMethod = Literal["platt", "isotonic"]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters and protocol settings (the defaults are the documented run)."""

    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.8
    bagging_fraction: float = 0.8
    lambda_l2: float = 1.0
    max_bin: int = 63
    max_rounds: int = 400
    early_stopping_rounds: int = 40
    inner_folds: int = 3
    calibration: CalibrationMethod = "platt"
    low_fraction: float = 0.6
    """The alert clears when the probability falls below ``low_fraction * high``."""
    min_positive_vehicles: int = 2
    """Fewer vehicles that fail within the horizon: no model (nothing to learn from)."""
    components: tuple[str, ...] = COMPONENT_NAMES
    horizons_days: tuple[int, ...] = HORIZONS_DAYS
    seed: int = 0
    num_threads: int = 1
    """One thread: on a small, shared machine OpenMP threads spin-wait for each other; two
    threads measured six times slower than one on the 2-core CI box under load."""

    def lightgbm_params(self) -> dict[str, Any]:
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbose": -1,
        }

    def describe(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["components"] = list(self.components)
        out["horizons_days"] = list(self.horizons_days)
        return out


@dataclass(frozen=True)
class Calibrator:
    """Maps a booster's raw margin (log-odds) to a calibrated probability.

    Platt (default): ``p = sigmoid(a * margin + b)``. Two parameters fitted on out-of-fold
    margins of a few dozen failing vehicles: it cannot overfit the handful of positive
    vehicles the way isotonic regression's step function does (which also turns the ranking
    into ties), and it keeps the contributions additive (a SHAP value times ``a`` is a
    contribution to the calibrated log-odds). Isotonic is available for comparison
    (``TrainConfig.calibration``); docs/pdm.md has both measured. Stored as JSON (no pickle).
    """

    method: CalibrationMethod
    slope: float = 1.0
    intercept: float = 0.0
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()

    def probability(self, margin: FloatArray) -> FloatArray:
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.slope * margin + self.intercept)))
        return np.interp(margin, np.asarray(self.x), np.asarray(self.y))

    @property
    def logit_scale(self) -> float:
        """What one unit of raw margin is worth in calibrated log-odds (1 for isotonic)."""
        return self.slope if self.method == "platt" else 1.0

    def to_dict(self) -> dict[str, Any]:
        if self.method == "platt":
            return {"method": "platt", "slope": self.slope, "intercept": self.intercept}
        return {"method": "isotonic", "x": list(self.x), "y": list(self.y)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibrator:
        method = data["method"]
        if method == "platt":
            return cls("platt", float(data["slope"]), float(data["intercept"]))
        if method == "isotonic":
            return cls("isotonic", x=tuple(map(float, data["x"])), y=tuple(map(float, data["y"])))
        raise ValueError(f"unknown calibration method {method!r}")

    @classmethod
    def fit(cls, method: CalibrationMethod, margin: FloatArray, y: npt.NDArray[Any]) -> Calibrator:
        if method == "isotonic":
            iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
            iso.fit(margin, y)
            xs = tuple(float(v) for v in iso.X_thresholds_)
            ys = tuple(float(v) for v in iso.y_thresholds_)
            return cls("isotonic", x=xs, y=ys)
        # Platt (1999): targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2) instead of 1 and 0, so
        # the fit stays finite when the margins separate the classes perfectly. Each row
        # enters twice, as a positive with weight t and a negative with weight 1 - t.
        positives = float(np.sum(y == 1))
        negatives = float(len(y) - positives)
        target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
        features = np.concatenate([margin, margin])[:, None]
        labels = np.concatenate([np.ones(len(y)), np.zeros(len(y))])
        weights = np.concatenate([target, 1 - target])
        model = LogisticRegression(C=1e6, max_iter=1000)
        model.fit(features, labels, sample_weight=weights)
        return cls("platt", float(model.coef_[0, 0]), float(model.intercept_[0]))


@dataclass
class ComponentModel:
    """The model of one (component, horizon)."""

    component: str
    horizon_days: int
    booster: lgb.Booster
    calibrator: Calibrator
    threshold_high: float
    threshold_low: float
    requires: str
    """The feature that must be present for the component to apply (else: not scored)."""
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, int]:
        return self.component, self.horizon_days

    def margin(self, values: FloatArray) -> FloatArray:
        return np.asarray(self.booster.predict(values, raw_score=True), dtype=np.float64)

    def probability(self, values: FloatArray) -> FloatArray:
        return self.calibrator.probability(self.margin(values))


@dataclass
class ModelSet:
    """Everything one registry version holds: a model per (component, horizon)."""

    models: list[ComponentModel]
    feature_names: tuple[str, ...] = FEATURE_NAMES
    feature_version: str = FEATURE_VERSION
    version: str | None = None
    """Set by the registry when published or loaded."""
    created_at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat())
    training: dict[str, Any] = field(default_factory=dict)
    """Summary of the training data (rows, vehicles, sha256, source)."""
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)

    def get(self, component: str, horizon_days: int) -> ComponentModel | None:
        for model in self.models:
            if model.key == (component, horizon_days):
                return model
        return None


# -- training ----------------------------------------------------------------------------------
def vehicle_folds(
    vins: npt.NDArray[np.str_], strata: npt.NDArray[np.str_], n_splits: int, seed: int
) -> list[tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]]:
    """(train rows, held-out rows) per fold; every vehicle's rows are on one side only."""
    splitter = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, groups = np.unique(vins, return_inverse=True)
    _, classes = np.unique(strata, return_inverse=True)
    with warnings.catch_warnings():
        # Rare fault kinds have fewer vehicles than folds; that fold simply lacks them.
        warnings.filterwarnings("ignore", message="The least populated class", module="sklearn")
        dummy = np.zeros(len(vins))
        return [(tr, te) for tr, te in splitter.split(dummy, classes, groups)]


def _dataset(
    values: FloatArray, y: npt.NDArray[Any], config: TrainConfig, reference: lgb.Dataset | None
) -> lgb.Dataset:
    return lgb.Dataset(
        values,
        label=y,
        feature_name=list(FEATURE_NAMES),
        reference=reference,
        params={"max_bin": config.max_bin, "verbose": -1},
        free_raw_data=True,
    )


def best_f1_threshold(probability: FloatArray, y: npt.NDArray[Any]) -> float:
    """The probability threshold with the highest F1 (0.5 without positives)."""
    if not np.any(y == 1):
        return 0.5
    precision, recall, thresholds = precision_recall_curve(y, probability)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0)
    best = int(np.argmax(f1[:-1])) if len(thresholds) else 0
    return float(np.clip(thresholds[best] if len(thresholds) else 0.5, 0.05, 0.95))


def train_component(
    training: TrainingSet, component: str, horizon_days: int, config: TrainConfig
) -> ComponentModel | None:
    """Train, calibrate and set thresholds for one (component, horizon); None when there are
    too few failing vehicles to learn from."""
    y_all = training.labels(component, horizon_days)
    rows = np.flatnonzero(y_all >= 0)
    y = y_all[rows].astype(np.float64)
    vins = training.vins[rows]
    positive_vehicles = len(np.unique(vins[y == 1]))
    if positive_vehicles < config.min_positive_vehicles:
        log.warning(
            "%s %dd: %d failing vehicles, fewer than %d: no model",
            component, horizon_days, positive_vehicles, config.min_positive_vehicles,
        )  # fmt: skip
        return None
    values = training.features.values[rows]
    params = config.lightgbm_params()
    folds = vehicle_folds(vins, training.vehicle_kind[rows], config.inner_folds, config.seed)
    oof = np.full(len(rows), np.nan)
    rounds: list[int] = []
    for train_rows, valid_rows in folds:
        train_set = _dataset(values[train_rows], y[train_rows], config, None)
        valid_set = _dataset(values[valid_rows], y[valid_rows], config, train_set)
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=config.max_rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        best = max(1, booster.best_iteration)
        rounds.append(best)
        oof[valid_rows] = booster.predict(values[valid_rows], raw_score=True, num_iteration=best)
    final_rounds = max(1, round(float(np.mean(rounds))))
    booster = lgb.train(params, _dataset(values, y, config, None), num_boost_round=final_rounds)
    calibrator = Calibrator.fit(config.calibration, oof, y)
    calibrated = calibrator.probability(oof)
    high = best_f1_threshold(calibrated, y)
    gain = booster.feature_importance(importance_type="gain")
    top = np.argsort(gain)[::-1][:5]
    metrics = {
        "rows": len(rows),
        "vehicles": len(np.unique(vins)),
        "positive_rows": int(y.sum()),
        "positive_vehicles": positive_vehicles,
        "positive_rate": float(y.mean()),
        "rounds": final_rounds,
        "cv_pr_auc": float(average_precision_score(y, oof)),
        "cv_brier": float(np.mean((calibrated - y) ** 2)),
        "top_features": [FEATURE_NAMES[i] for i in top if gain[i] > 0],
    }
    return ComponentModel(
        component=component,
        horizon_days=horizon_days,
        booster=booster,
        calibrator=calibrator,
        threshold_high=high,
        threshold_low=high * config.low_fraction,
        requires=BY_NAME[component].requires,
        metrics=metrics,
    )


def train_models(
    training: TrainingSet,
    config: TrainConfig | None = None,
    *,
    progress: Callable[[str], None] | None = None,
) -> ModelSet:
    """A model per (component, horizon) of ``config`` trained on all of ``training``."""
    config = config or TrainConfig()
    started = time.monotonic()
    models: list[ComponentModel] = []
    for component in config.components:
        for horizon in config.horizons_days:
            model = train_component(training, component, horizon, config)
            message = f"trained {component} {horizon}d ({time.monotonic() - started:.0f} s)"
            if model is not None:
                models.append(model)
                message += f": cv PR-AUC {model.metrics['cv_pr_auc']:.3f}"
            log.info(message)
            if progress is not None:
                progress(message)
    return ModelSet(
        models=models,
        training=training.summary(),
        config=config.describe(),
        metrics={f"{m.component}/{m.horizon_days}d": m.metrics for m in models},
    )
