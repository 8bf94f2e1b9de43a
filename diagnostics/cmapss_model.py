"""LightGBM remaining-useful-life model for C-MAPSS-format trajectories.

Training data are run-to-failure trajectories, so every cycle is a labelled example
(RUL = life - cycle, capped at :data:`cmapss_protocol.RUL_CAP`). The model is a cross-fitted
ensemble: the training units are split into ``inner_folds`` groups; each member trains on all
but one group and stops early on the held-out group (whole units, never the outer test fold),
and the prediction is the mean of the members. So every training unit is used for fitting, the
number of boosting rounds is chosen on unseen engines, and there is no refit on guessed rounds.
The held-out groups also give an inner validation RMSE on truncated trajectories, the figure
used to choose hyper-parameters without touching any outer test fold.

A linear "health index" (ridge regression of the capped RUL on the normalised sensors) is added
as one more signal: a degradation direction that mixes several sensors, which axis-aligned tree
splits would otherwise approximate with many steps.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import lightgbm as lgb
import numpy as np
import numpy.typing as npt

from diagnostics.cmapss_data import FloatArray, IntArray, Trajectories
from diagnostics.cmapss_features import SensorNormaliser, feature_names, window_features
from diagnostics.cmapss_protocol import RUL_CAP, capped, rmse, row_rul, truncation_rows

log = logging.getLogger("diagnostics.cmapss")
INNER_REPEATS = 5  # truncations per held-out unit for the inner validation RMSE


@dataclass(frozen=True)
class RulConfig:
    """Hyper-parameters; the defaults were chosen on inner validation (docs/cmapss.md)."""

    cap: int = RUL_CAP
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_data_in_leaf: int = 40
    feature_fraction: float = 0.5
    bagging_fraction: float = 0.5
    lambda_l2: float = 1.0
    max_bin: int = 63
    max_rounds: int = 2000
    early_stopping_rounds: int = 50
    inner_folds: int = 4
    health_index: bool = True
    seed: int = 0
    num_threads: int = 1

    def __post_init__(self) -> None:
        if self.inner_folds < 2:
            raise ValueError("inner_folds must be at least 2 (early stopping needs held-out units)")
        if self.cap <= 0 or self.learning_rate <= 0 or self.max_rounds < 1:
            raise ValueError("cap, learning_rate and max_rounds must be positive")
        if not (0 < self.feature_fraction <= 1 and 0 < self.bagging_fraction <= 1):
            raise ValueError("feature_fraction and bagging_fraction must be in (0, 1]")

    def with_overrides(self, **changes: Any) -> RulConfig:
        """A copy with some fields changed; unknown names or wrong types raise TypeError."""
        for name, value in changes.items():
            if name not in self.__dataclass_fields__:
                raise TypeError(f"RulConfig has no field {name!r}")
            current = getattr(self, name)
            allowed: tuple[type, ...] = (
                (int, float) if isinstance(current, float) else (type(current),)
            )
            if isinstance(value, bool) != isinstance(current, bool) or not isinstance(
                value, allowed
            ):
                raise TypeError(f"{name} must be {type(current).__name__}, got {value!r}")
        return replace(self, **changes)

    def lightgbm_params(self, member: int) -> dict[str, Any]:
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": self.bagging_fraction,
            "bagging_freq": 1,
            "lambda_l2": self.lambda_l2,
            "max_bin": self.max_bin,
            "seed": self.seed * 1000 + member,
            "deterministic": True,
            "force_col_wise": True,
            "num_threads": self.num_threads,
            "verbosity": -1,
        }


@dataclass
class RulModel:
    """A fitted model: the normaliser, the health-index weights and the ensemble members."""

    config: RulConfig
    normaliser: SensorNormaliser
    health_weights: FloatArray | None
    members: list[lgb.Booster] = field(default_factory=list)
    best_iterations: list[int] = field(default_factory=list)
    inner_rmse: float = float("nan")

    @property
    def feature_names(self) -> list[str]:
        names = self.normaliser.sensor_names
        if self.health_weights is not None:
            names = [*names, "health"]
        return feature_names(names)

    def features(self, data: Trajectories) -> npt.NDArray[np.float32]:
        """Feature rows of every cycle of ``data`` (causal: row t only sees cycles <= t)."""
        return window_features(self._signals(data), data)

    def predict_features(self, features: npt.NDArray[np.float32]) -> FloatArray:
        """Mean member prediction, clipped to the target's range [0, cap]."""
        total = np.zeros(features.shape[0])
        for booster in self.members:
            total += np.asarray(booster.predict(features, num_threads=self.config.num_threads))
        return np.clip(total / len(self.members), 0.0, float(self.config.cap))

    def predict_last(self, data: Trajectories) -> tuple[IntArray, FloatArray]:
        """(units, predicted RUL at each unit's last cycle)."""
        rows = data.last_rows
        return data.units, self.predict_features(self.features(data)[rows])

    def _signals(self, data: Trajectories) -> FloatArray:
        z = self.normaliser.transform(data)
        if self.health_weights is None:
            return z
        health = z @ self.health_weights[:-1] + self.health_weights[-1]
        return np.concatenate([z, health[:, None]], axis=1)

    def describe(self) -> dict[str, Any]:
        return {
            "config": asdict(self.config),
            "conditions": self.normaliser.conditions.count,
            "sensors": self.normaliser.sensor_names,
            "features": len(self.feature_names),
            "best_iterations": self.best_iterations,
            "inner_rmse": round(self.inner_rmse, 3),
        }


def fit_health_weights(z: FloatArray, target: FloatArray, ridge: float = 1.0) -> FloatArray:
    """Ridge weights (last entry: intercept) of the target on the normalised sensors."""
    mean_z, mean_y = z.mean(axis=0), float(target.mean())
    centred = z - mean_z
    gram = centred.T @ centred + ridge * np.eye(z.shape[1])
    weights = np.linalg.solve(gram, centred.T @ (target - mean_y))
    return np.append(weights, mean_y - mean_z @ weights)


def train_model(data: Trajectories, config: RulConfig | None = None) -> RulModel:
    """Fit on run-to-failure trajectories (every unit's last cycle is its failure)."""
    config = config or RulConfig()
    units = data.units
    if units.size < max(2, config.inner_folds):
        raise ValueError(
            f"training needs at least {max(2, config.inner_folds)} units "
            f"(one per inner fold), found {units.size}"
        )
    normaliser = SensorNormaliser.fit(data)
    target = capped(row_rul(data), config.cap)
    health = fit_health_weights(normaliser.transform(data), target) if config.health_index else None
    model = RulModel(config=config, normaliser=normaliser, health_weights=health)
    features = model.features(data)
    groups = _inner_groups(units, config.inner_folds, config.seed)
    oof_pred: list[FloatArray] = []
    oof_true: list[FloatArray] = []
    for member, held_out in enumerate(groups):
        valid_mask = np.isin(data.unit, held_out)
        dataset_params = {"max_bin": config.max_bin, "verbosity": -1}
        train_set = lgb.Dataset(features[~valid_mask], target[~valid_mask], params=dataset_params)
        valid_set = lgb.Dataset(features[valid_mask], target[valid_mask], reference=train_set)
        booster = lgb.train(
            config.lightgbm_params(member),
            train_set,
            num_boost_round=config.max_rounds,
            valid_sets=[valid_set],
            callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        )
        booster.free_dataset()
        model.members.append(booster)
        model.best_iterations.append(int(booster.best_iteration))
        # Score the member on its own held-out units, truncated as in the benchmark.
        held = data.select_units(held_out)
        offset = np.flatnonzero(valid_mask)
        for repeat in range(INNER_REPEATS):
            rows, true_rul = truncation_rows(held, config.seed, repeat)
            predicted = booster.predict(features[offset[rows]], num_threads=config.num_threads)
            oof_pred.append(np.clip(np.asarray(predicted, dtype=np.float64), 0.0, config.cap))
            oof_true.append(capped(true_rul, config.cap))
        log.debug("member %d: %d rounds", member, booster.best_iteration)
    model.inner_rmse = rmse(np.concatenate(oof_pred), np.concatenate(oof_true))
    return model


def _inner_groups(units: IntArray, folds: int, seed: int) -> list[IntArray]:
    shuffled = np.random.default_rng([seed, 7919]).permutation(units)
    return [np.sort(group) for group in np.array_split(shuffled, folds)]


def linear_baseline(train: Trajectories, cap: int = RUL_CAP) -> _LinearBaseline:
    """Ridge regression of the capped RUL on the current cycle's normalised sensors."""
    normaliser = SensorNormaliser.fit(train)
    weights = fit_health_weights(normaliser.transform(train), capped(row_rul(train), cap))
    return _LinearBaseline(normaliser, weights, cap)


@dataclass(frozen=True)
class _LinearBaseline:
    normaliser: SensorNormaliser
    weights: FloatArray
    cap: int

    def predict_rows(self, data: Trajectories, rows: IntArray) -> FloatArray:
        z = self.normaliser.transform(data.take_rows(rows))
        return np.clip(z @ self.weights[:-1] + self.weights[-1], 0.0, float(self.cap))
