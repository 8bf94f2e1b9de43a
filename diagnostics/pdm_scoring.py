"""Scoring vehicles with a :class:`~diagnostics.pdm_model.ModelSet`: calibrated failure
probabilities, human-readable reasons, and alerts with hysteresis.

The hot path is vectorised: one ``Booster.predict(raw_score=True)`` per model over every
vehicle of a batch, the calibration as one numpy expression, the applicability mask as one
``isnan``. Reasons come from ``pred_contrib=True`` (SHAP values, far dearer than a prediction),
so the worker computes them only for the cells that are alerting (:func:`score_and_alert`),
which keeps scoring close to the raw ``predict`` speed (:func:`benchmark_scoring`).

:class:`AlertState` turns probabilities into alerts per (vehicle, component, horizon): raised
when ``p >= high``, cleared when ``p < low`` (``low < high``), unchanged in between or when the
component could not be scored. Only crossings are reported, so a vehicle whose risk hovers
around the threshold does not flap; the worker publishes those on
``maintenance.predictions.v1``. The state is a small JSON document for restarts.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from diagnostics.features import FEATURE_NAMES, FEATURES_BY_NAME, FeatureFrame, FloatArray
from diagnostics.pdm_model import ComponentModel, ModelSet

Explain = Literal["all", "none"]


@dataclass(frozen=True)
class Reason:
    """One feature that pushed the risk up."""

    feature: str
    value: float | None
    contribution: float
    """Contribution to the calibrated log-odds (SHAP value times the Platt slope)."""
    text: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "feature": self.feature,
            "value": None if self.value is None else round(self.value, 4),
            "contribution": round(self.contribution, 4),
            "text": self.text,
        }


@dataclass(frozen=True)
class Prediction:
    """One row of ``maintenance_prediction`` / one ``maintenance.predictions.v1`` event."""

    vin: str
    component: str
    horizon_days: int
    probability: float
    alerting: bool
    model_version: str
    reasons: tuple[Reason, ...]
    scored_at_ms: int
    """Event time of the newest sample the prediction used."""

    @property
    def scored_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.scored_at_ms / 1000, dt.UTC)

    def to_dict(self) -> dict[str, Any]:
        return {
            "vin": self.vin,
            "component": self.component,
            "horizon_days": self.horizon_days,
            "probability": round(self.probability, 6),
            "alerting": self.alerting,
            "model_version": self.model_version,
            "reasons": [r.to_dict() for r in self.reasons],
            "scored_at": self.scored_at.isoformat(),
        }


@dataclass
class ScoreBatch:
    """The scores of a batch, column-wise: ``probability[i, j]`` is vehicle ``vins[i]`` under
    model ``keys[j]`` (NaN: the component does not apply or the vehicle has no recent data)."""

    vins: npt.NDArray[np.str_]
    scored_at_ms: npt.NDArray[np.int64]
    keys: list[tuple[str, int]]
    probability: FloatArray
    high: FloatArray
    """Per model: the alert threshold."""
    low: FloatArray
    """Per model: the clear threshold."""
    model_version: str
    reasons: dict[tuple[int, int], tuple[Reason, ...]] = field(default_factory=dict)
    """(row, model) -> reasons, for the rows that were explained."""

    def predictions(
        self,
        alerting: npt.NDArray[np.bool_] | None = None,
        cells: Iterable[tuple[int, int]] | None = None,
    ) -> list[Prediction]:
        """Prediction objects for ``cells`` ((row, model) pairs; default: every scored one).
        ``alerting`` (rows x models) is the state after :meth:`AlertState.update`."""
        if cells is None:
            rows, models = np.nonzero(~np.isnan(self.probability))
            cells = zip(rows.tolist(), models.tolist(), strict=True)
        out = []
        for row, model in cells:
            component, horizon = self.keys[model]
            p = float(self.probability[row, model])
            out.append(
                Prediction(
                    vin=str(self.vins[row]),
                    component=component,
                    horizon_days=horizon,
                    probability=p,
                    alerting=bool(alerting[row, model]) if alerting is not None else False,
                    model_version=self.model_version,
                    reasons=self.reasons.get((row, model), ()),
                    scored_at_ms=int(self.scored_at_ms[row]),
                )
            )
        return out


class Scorer:
    """Scores feature frames with every model of a :class:`ModelSet`."""

    def __init__(self, models: ModelSet, *, top_reasons: int = 3, num_threads: int = 1) -> None:
        if tuple(models.feature_names) != FEATURE_NAMES:
            raise ValueError("the model set was trained on another feature list")
        self.models = models
        self.top_reasons = top_reasons
        self.num_threads = num_threads
        self.keys = [m.key for m in models.models]
        self.high = np.array([m.threshold_high for m in models.models], dtype=np.float64)
        self.low = np.array([m.threshold_low for m in models.models], dtype=np.float64)
        names = list(models.feature_names)
        self._requires = np.array([names.index(m.requires) for m in models.models], dtype=int)

    @property
    def version(self) -> str:
        return self.models.version or "unpublished"

    def probabilities(self, values: FloatArray) -> FloatArray:
        """(rows, models) calibrated probabilities, NaN where a component does not apply."""
        values = np.ascontiguousarray(values, dtype=np.float64)
        out = np.empty((len(values), len(self.keys)))
        for j, model in enumerate(self.models.models):
            margin = model.booster.predict(values, raw_score=True, num_threads=self.num_threads)
            out[:, j] = model.calibrator.probability(np.asarray(margin, dtype=np.float64))
        out[np.isnan(values[:, self._requires])] = np.nan
        return out

    def score(self, frame: FeatureFrame, *, explain: Explain = "none") -> ScoreBatch:
        """Score every row of ``frame`` (one ``predict`` per model). ``explain="all"`` adds
        reasons for every scored cell; the worker instead adds them only for the alerting
        cells, after :meth:`AlertState.update` (:func:`score_and_alert`)."""
        if tuple(frame.names) != tuple(self.models.feature_names):
            raise ValueError("the feature frame does not have the model's feature list")
        batch = ScoreBatch(
            vins=frame.vins,
            scored_at_ms=frame.as_of_ms,
            keys=self.keys,
            probability=self.probabilities(frame.values),
            high=self.high,
            low=self.low,
            model_version=self.version,
        )
        if explain == "all":
            self.add_reasons(batch, frame, ~np.isnan(batch.probability))
        return batch

    def add_reasons(
        self, batch: ScoreBatch, frame: FeatureFrame, cells: npt.NDArray[np.bool_]
    ) -> None:
        """Reasons for the (row, model) cells set in ``cells`` (rows x models), one
        ``pred_contrib`` call per model over its rows."""
        for j, model in enumerate(self.models.models):
            rows = np.flatnonzero(cells[:, j])
            if not len(rows):
                continue
            explained = self.explain(model, frame.values[rows])
            for row, reasons in zip(rows.tolist(), explained, strict=True):
                batch.reasons[(row, j)] = reasons

    def explain(self, model: ComponentModel, values: FloatArray) -> list[tuple[Reason, ...]]:
        """The ``top_reasons`` features with the largest positive SHAP contributions."""
        contrib = np.asarray(
            model.booster.predict(
                np.ascontiguousarray(values), pred_contrib=True, num_threads=self.num_threads
            ),
            dtype=np.float64,
        )[:, :-1]  # the last column is the expected value (bias)
        contrib = contrib * model.calibrator.logit_scale
        names = self.models.feature_names
        order = np.argsort(-contrib, axis=1)[:, : self.top_reasons]
        out: list[tuple[Reason, ...]] = []
        for i in range(len(values)):
            reasons = []
            for k in order[i].tolist():
                c = float(contrib[i, k])
                if c <= 0:
                    break
                value = float(values[i, k])
                spec = FEATURES_BY_NAME[names[k]]
                reasons.append(
                    Reason(
                        feature=names[k],
                        value=None if np.isnan(value) else value,
                        contribution=c,
                        text=f"{spec.describe(value)} ({c:+.2f})",
                    )
                )
            out.append(tuple(reasons))
        return out


@dataclass(frozen=True)
class AlertChange:
    """An alert raised (``alerting=True``) or cleared for one (vehicle, component, horizon)."""

    row: int
    model: int
    vin: str
    component: str
    horizon_days: int
    alerting: bool
    probability: float


@dataclass
class AlertRecord:
    """What the state keeps for an alerting (vehicle, component, horizon)."""

    raised_at_ms: int
    reasons: tuple[Reason, ...] = ()
    explained_at_ms: int = -1
    """Event time of the scores the reasons were computed for (-1: not yet)."""


REASONS_TTL_MS = 86_400_000
"""Reasons of an ongoing alert are recomputed once a day of event time (they follow the
degradation); in between the cached ones are reused."""


class AlertState:
    """Hysteresis per (vehicle, component, horizon): raise at ``p >= high``, clear at
    ``p < low``. Holds only the keys that are alerting (and their latest reasons), so it
    stays small; :meth:`to_json` / :meth:`from_json` carry it over a restart."""

    def __init__(
        self,
        alerts: dict[tuple[str, int], dict[str, AlertRecord]] | None = None,
        *,
        reasons_ttl_ms: int = REASONS_TTL_MS,
    ) -> None:
        self._alerts: dict[tuple[str, int], dict[str, AlertRecord]] = alerts or {}
        self.reasons_ttl_ms = reasons_ttl_ms

    def is_alerting(self, vin: str, component: str, horizon_days: int) -> bool:
        return vin in self._alerts.get((component, horizon_days), {})

    def alerting_count(self) -> int:
        return sum(len(v) for v in self._alerts.values())

    def update(self, batch: ScoreBatch) -> tuple[npt.NDArray[np.bool_], list[AlertChange]]:
        """Apply a batch (usually one row per vehicle; several rows of a vehicle are applied
        in row order); returns the alerting state after it (rows x models) and the crossings.
        A NaN probability (not scored) leaves the state as it was."""
        state = np.zeros(batch.probability.shape, dtype=bool)
        changes: list[AlertChange] = []
        vins = batch.vins
        order = np.argsort(vins, kind="stable")
        ordered = vins[order]
        repeated = len(ordered) > 1 and bool(np.any(ordered[1:] == ordered[:-1]))
        for j, key in enumerate(batch.keys):
            members = self._alerts.setdefault(key, {})
            p = batch.probability[:, j]
            if repeated:
                self._update_in_order(batch, j, members, state, changes)
                continue
            was = np.zeros(len(vins), dtype=bool)
            if members:
                alerting = np.fromiter(members, dtype=ordered.dtype, count=len(members))
                pos = np.searchsorted(ordered, alerting)
                inside = pos < len(ordered)
                pos = pos[inside]
                was[order[pos[ordered[pos] == alerting[inside]]]] = True
            with np.errstate(invalid="ignore"):
                now = np.where(was, p >= batch.low[j], p >= batch.high[j])
            now = np.where(np.isnan(p), was, now)
            state[:, j] = now
            for row in np.flatnonzero(now != was).tolist():
                changes.append(self._change(batch, row, j, bool(now[row]), members))
        return state, changes

    def _update_in_order(
        self,
        batch: ScoreBatch,
        j: int,
        members: dict[str, AlertRecord],
        state: npt.NDArray[np.bool_],
        changes: list[AlertChange],
    ) -> None:
        p = batch.probability[:, j]
        for row in range(len(p)):
            was = str(batch.vins[row]) in members
            now = was
            if not np.isnan(p[row]):
                now = bool(p[row] >= (batch.low[j] if was else batch.high[j]))
            state[row, j] = now
            if now != was:
                changes.append(self._change(batch, row, j, now, members))

    @staticmethod
    def _change(
        batch: ScoreBatch, row: int, model: int, alerting: bool, members: dict[str, AlertRecord]
    ) -> AlertChange:
        vin = str(batch.vins[row])
        if alerting:
            members[vin] = AlertRecord(int(batch.scored_at_ms[row]))
        else:
            members.pop(vin, None)
        component, horizon = batch.keys[model]
        p = float(batch.probability[row, model])
        return AlertChange(row, model, vin, component, horizon, alerting, p)

    def stale_reasons(
        self, batch: ScoreBatch, alerting: npt.NDArray[np.bool_]
    ) -> npt.NDArray[np.bool_]:
        """The alerting cells whose reasons are missing or older than ``reasons_ttl_ms``."""
        stale = np.zeros(alerting.shape, dtype=bool)
        for row, j in zip(*np.nonzero(alerting), strict=True):
            record = self._alerts[batch.keys[j]].get(str(batch.vins[row]))
            at = int(batch.scored_at_ms[row])
            stale[row, j] = record is None or (
                record.explained_at_ms < 0 or at - record.explained_at_ms >= self.reasons_ttl_ms
            )
        return stale

    def remember_reasons(self, batch: ScoreBatch, cells: npt.NDArray[np.bool_]) -> None:
        for row, j in zip(*np.nonzero(cells), strict=True):
            record = self._alerts[batch.keys[j]].get(str(batch.vins[row]))
            if record is not None:
                record.reasons = batch.reasons.get((int(row), int(j)), ())
                record.explained_at_ms = int(batch.scored_at_ms[row])

    def recall_reasons(self, batch: ScoreBatch, cells: npt.NDArray[np.bool_]) -> None:
        for row, j in zip(*np.nonzero(cells), strict=True):
            record = self._alerts[batch.keys[j]].get(str(batch.vins[row]))
            if record is not None and record.reasons:
                batch.reasons[(int(row), int(j))] = record.reasons

    def to_json(self) -> str:
        return json.dumps(
            [
                {
                    "component": c,
                    "horizon_days": h,
                    "alerts": [
                        {
                            "vin": vin,
                            "raised_at_ms": r.raised_at_ms,
                            "explained_at_ms": r.explained_at_ms,
                            "reasons": [x.to_dict() for x in r.reasons],
                        }
                        for vin, r in sorted(records.items())
                    ],
                }
                for (c, h), records in sorted(self._alerts.items())
                if records
            ]
        )

    @classmethod
    def from_json(cls, text: str, *, reasons_ttl_ms: int = REASONS_TTL_MS) -> AlertState:
        alerts: dict[tuple[str, int], dict[str, AlertRecord]] = {}
        for entry in json.loads(text):
            records = alerts.setdefault((entry["component"], int(entry["horizon_days"])), {})
            for alert in entry["alerts"]:
                reasons = tuple(Reason(**r) for r in alert.get("reasons", []))
                records[alert["vin"]] = AlertRecord(
                    int(alert["raised_at_ms"]), reasons, int(alert.get("explained_at_ms", -1))
                )
        return cls(alerts, reasons_ttl_ms=reasons_ttl_ms)


def score_and_alert(
    scorer: Scorer, alerts: AlertState, frame: FeatureFrame
) -> tuple[ScoreBatch, npt.NDArray[np.bool_], list[AlertChange]]:
    """What the worker does with a feature frame: score it, apply the hysteresis, and attach
    reasons to the alerting cells. SHAP values cost far more than a prediction, so they are
    computed when an alert is raised and refreshed once a day (``AlertState.reasons_ttl_ms``);
    in between the alert's cached reasons are reused. Returns the batch (with reasons), the
    alerting state (rows x models) and the crossings to publish on
    ``maintenance.predictions.v1``; ``batch.predictions(alerting)`` gives the rows for
    ``maintenance_prediction``."""
    batch = scorer.score(frame)
    alerting, changes = alerts.update(batch)
    if alerting.any():
        stale = alerts.stale_reasons(batch, alerting)
        if stale.any():
            scorer.add_reasons(batch, frame, stale)
            alerts.remember_reasons(batch, stale)
        alerts.recall_reasons(batch, alerting & ~stale)
    return batch, alerting, changes


def benchmark_scoring(
    models: ModelSet, values: FloatArray, *, repeats: int = 5, num_threads: int = 1
) -> dict[str, float]:
    """Rows per second of the worker's scoring path (:func:`score_and_alert`: probabilities,
    calibration, applicability, hysteresis and reasons for the alerting cells) next to bare
    ``Booster.predict(raw_score=True)`` of every model on the same matrix; best of
    ``repeats``, in steady state (the alerts of the first pass are already raised, as they
    would be for a fleet scored continuously, with reasons cached). The ratio is the overhead
    budget (goal >= 0.8). ``alerting_share`` is the share of scored cells that are alerting.
    ``first_pass_rows_per_s`` is the first pass, which explains every new alert."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    frame = FeatureFrame(
        vins=np.array([f"V{i:016d}" for i in range(len(values))]),
        end_ms=np.zeros(len(values), np.int64),
        as_of_ms=np.zeros(len(values), np.int64),
        values=values,
    )
    scorer = Scorer(models, num_threads=num_threads)

    def raw() -> None:
        for model in models.models:
            model.booster.predict(values, raw_score=True, num_threads=num_threads)

    alerts = AlertState()

    def full() -> None:
        score_and_alert(scorer, alerts, frame)

    def best(run: Any) -> float:
        timings = []
        for _ in range(repeats):
            started = time.perf_counter()
            run()
            timings.append(time.perf_counter() - started)
        return min(timings)

    raw()  # warm up
    started = time.perf_counter()
    full()
    first_s = time.perf_counter() - started
    raw_s, full_s = best(raw), best(full)
    batch, alerting, _ = score_and_alert(scorer, alerts, frame)
    scored = int(np.sum(~np.isnan(batch.probability)))
    return {
        "alerting_share": float(alerting.sum()) / max(1, scored),
        "first_pass_rows_per_s": len(values) / first_s,
        "rows": float(len(values)),
        "models": float(len(models.models)),
        "raw_predict_rows_per_s": len(values) / raw_s,
        "scoring_rows_per_s": len(values) / full_s,
        "ratio": raw_s / full_s,
    }


def thresholds(models: ModelSet) -> Sequence[tuple[str, int, float, float]]:
    """(component, horizon, high, low) of every model, for logs and docs."""
    return [(m.component, m.horizon_days, m.threshold_high, m.threshold_low) for m in models.models]
