"""Predictive maintenance end to end on a tiny simulated fleet: labels, vehicle splits,
training and evaluation against the baselines, calibration, reasons, and alert hysteresis."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from diagnostics.features import FEATURE_NAMES
from diagnostics.model_registry import ModelRegistry
from diagnostics.pdm_dataset import (
    DAY_MS,
    SimulationPlan,
    TrainingSet,
    archive_training_set,
    simulate_to_archive,
    simulate_training_set,
)
from diagnostics.pdm_eval import evaluate, replay_alerts
from diagnostics.pdm_model import (
    ComponentModel,
    ModelSet,
    TrainConfig,
    train_models,
    vehicle_folds,
)
from diagnostics.pdm_scoring import AlertState, Reason, ScoreBatch, Scorer, score_and_alert

PLAN = SimulationPlan(
    vehicles=30,
    days=18,
    seed=5,
    bev_share=0.4,
    commercial_share=0.0,
    faulty_share=0.8,
    fault_kinds=("tire_leak", "coolant_pump_failure"),
    fault_horizon_days=18,
    sample_interval_s=60.0,
)
"""Tyre leaks and coolant pumps: the two signatures strong enough for a fleet this small, and
neither depends on how often a moving vehicle is sampled (brake wear does), so one sample a
minute keeps the fixture cheap."""
CONFIG = TrainConfig(
    max_rounds=80,
    early_stopping_rounds=10,
    min_data_in_leaf=20,
    inner_folds=2,
    components=("tires", "coolant_pump"),
    horizons_days=(7,),
)
"""Seven days only: in an 18-day simulation every snapshot of a failing vehicle is positive
for 30 days, so a 30-day model could only learn which vehicle it is looking at."""


@pytest.fixture(scope="module")
def training() -> TrainingSet:
    return simulate_training_set(PLAN)


@pytest.fixture(scope="module")
def models(training: TrainingSet) -> ModelSet:
    return train_models(training, CONFIG)


def test_labels_follow_the_ground_truth(training: TrainingSet) -> None:
    failure = training.failure_ms["tires"]
    vin = training.vins[np.argmax(failure)]
    rows = training.vins == vin
    end, fail = training.end_ms[rows], failure[rows][0]
    y7 = training.labels("tires", 7)[rows]
    assert np.array_equal(y7 == -1, end >= fail)  # after the failure: left out
    assert np.array_equal(y7 == 1, (end < fail) & (end >= fail - 7 * DAY_MS))
    bev = np.isnan(training.features.column("coolant_run_max_7d"))
    assert bev.any() and (training.labels("coolant_pump", 30)[bev] == -1).all()
    assert (training.labels("lv_battery", 30) <= 0).all()  # no such fault in this fleet


def test_folds_never_split_a_vehicle(training: TrainingSet) -> None:
    folds = vehicle_folds(training.vins, training.vehicle_kind, 3, seed=0)
    seen = np.zeros(len(training), dtype=int)
    for train_rows, test_rows in folds:
        assert not set(training.vins[train_rows]) & set(training.vins[test_rows])
        assert "tire_leak" in set(training.vehicle_kind[test_rows])  # stratified
        seen[test_rows] += 1
    assert (seen == 1).all()


def test_held_out_vehicles_beat_the_no_skill_baseline(training: TrainingSet) -> None:
    report = evaluate(training, CONFIG, folds=3, benchmark=False)
    json.dumps(report)  # the CLI prints it as one JSON line
    results = {(r["component"], r["horizon_days"]): r for r in report["results"]}
    assert set(results) == {("tires", 7), ("coolant_pump", 7)}
    for result in results.values():
        assert result["pr_auc"] > 3 * result["no_skill_pr_auc"], result
        assert result["brier"] < 0.5 * result["brier_no_skill"], result  # calibrated, held out
    tires = results[("tires", 7)]
    assert tires["failures"] >= 3 and tires["detected"] >= tires["failures"] - 1
    assert 0 < tires["median_lead_days"] <= 9  # degradation lasts 4.5 to 9 days here


def test_scores_come_with_reasons_and_raise_alerts(
    training: TrainingSet, models: ModelSet, tmp_path: Path
) -> None:
    rows = np.flatnonzero(training.labels("tires", 7) == 1)
    frame = training.features.take(rows)
    scorer = Scorer(models)
    batch, alerting, changes = score_and_alert(scorer, AlertState(), frame)
    tires = scorer.keys.index(("tires", 7))
    assert alerting[:, tires].mean() > 0.5  # most snapshots in the week before a failure
    assert {c.component for c in changes if c.alerting} >= {"tires"}
    reasons = [batch.reasons[(r, tires)] for r in np.flatnonzero(alerting[:, tires]).tolist()]
    assert all(reasons)  # every alerting cell is explained
    top = reasons[0]
    assert "tire" in top[0].text and top[0].text.endswith(f"({top[0].contribution:+.2f})")
    contributions = [r.contribution for r in top]
    assert contributions == sorted(contributions, reverse=True) and contributions[-1] > 0
    predictions = batch.predictions(alerting)
    assert {p.vin for p in predictions} <= set(frame.vins.tolist())
    assert all(0 <= p.probability <= 1 for p in predictions)
    json.dumps([p.to_dict() for p in predictions])  # what goes on the topic and in the table
    # The registry hands back exactly these models.
    registry = ModelRegistry(tmp_path)
    loaded = registry.load(registry.publish(models))
    assert np.array_equal(
        Scorer(loaded).probabilities(frame.values), scorer.probabilities(frame.values),
        equal_nan=True,
    )  # fmt: skip


def test_alert_reasons_are_cached_until_they_are_a_day_old(
    training: TrainingSet, models: ModelSet, monkeypatch: pytest.MonkeyPatch
) -> None:
    positive = training.labels("tires", 7) == 1
    last = [np.flatnonzero(positive & (training.vins == v))[-1] for v in
            np.unique(training.vins[positive])]  # fmt: skip
    frame = training.features.take(np.array(last))  # one row per vehicle, as the worker sees
    scorer = Scorer(models)
    explained: list[int] = []
    explain = scorer.explain

    def counting(model: ComponentModel, values: np.ndarray) -> list[tuple[Reason, ...]]:
        explained.append(len(values))
        return explain(model, values)

    monkeypatch.setattr(scorer, "explain", counting)
    alerts = AlertState()
    first, alerting, changes = score_and_alert(scorer, alerts, frame)
    assert changes and sum(explained) == int(alerting.sum()) > 0  # new alerts: explained
    restored = AlertState.from_json(alerts.to_json())  # a worker restart in between
    again, alerting_again, changes_again = score_and_alert(scorer, restored, frame)
    assert changes_again == [] and np.array_equal(alerting_again, alerting)
    assert sum(explained) == int(alerting.sum())  # nothing recomputed
    texts = {k: [r.text for r in v] for k, v in first.reasons.items()}
    assert {k: [r.text for r in v] for k, v in again.reasons.items()} == texts
    day_later = dataclasses.replace(frame, as_of_ms=frame.as_of_ms + DAY_MS)
    score_and_alert(scorer, restored, day_later)
    assert sum(explained) == 2 * int(alerting.sum())  # refreshed after a day


def test_scoring_is_one_predict_per_model_plus_calibration(
    training: TrainingSet, models: ModelSet
) -> None:
    values = training.features.values
    probability = Scorer(models).probabilities(values)
    for j, model in enumerate(models.models):
        expected = model.calibrator.probability(model.margin(values))
        applies = ~np.isnan(values[:, FEATURE_NAMES.index(model.requires)])
        assert np.allclose(probability[applies, j], expected[applies])
        assert np.isnan(probability[~applies, j]).all()  # e.g. a coolant pump on a BEV


def _batch(vin: str, p: float) -> ScoreBatch:
    return ScoreBatch(
        vins=np.array([vin]), scored_at_ms=np.zeros(1, np.int64), keys=[("tires", 7)],
        probability=np.array([[p]]), high=np.array([0.5]), low=np.array([0.3]),
        model_version="v",
    )  # fmt: skip


def test_hysteresis_does_not_flap() -> None:
    sequence = [0.2, 0.49, 0.51, 0.45, 0.52, 0.35, np.nan, 0.31, 0.29, 0.4, 0.51, 0.2]
    state = AlertState()
    changes = []
    after = []
    for p in sequence:
        alerting, crossed = state.update(_batch("V1", p))
        changes += [(c.alerting, c.probability) for c in crossed]
        after.append(bool(alerting[0, 0]))
        state = AlertState.from_json(state.to_json())  # a restart between batches changes nothing
    # A bare 0.5 threshold would report 6 crossings here.
    assert changes == [(True, 0.51), (False, 0.29), (True, 0.51), (False, 0.2)]
    raised, replayed = replay_alerts(
        np.array(["V1"] * len(sequence)), np.array(sequence), np.full(12, 0.5), np.full(12, 0.3)
    )
    assert replayed.tolist() == after  # the evaluation replays exactly the worker's rule
    assert int(raised.sum()) == 2


def test_archive_and_simulation_give_the_same_training_set(tmp_path: Path) -> None:
    plan = SimulationPlan(vehicles=3, days=4, seed=9, commercial_share=0.0, faulty_share=1.0,
                          fault_horizon_days=5, sample_interval_s=60.0)  # fmt: skip
    direct = simulate_training_set(plan, cache_dir=tmp_path / "cache")
    labels = tmp_path / "labels.jsonl"
    simulate_to_archive(plan, str(tmp_path / "lake"), labels)
    archived = archive_training_set(str(tmp_path / "lake"), labels)
    assert np.array_equal(archived.features.values, direct.features.values, equal_nan=True)
    assert archived.sha256() == direct.sha256()  # same features, snapshots and ground truth
    cached = simulate_training_set(plan, cache_dir=tmp_path / "cache")
    assert cached.sha256() == direct.sha256() and cached.vehicle_kind.tolist() == (
        direct.vehicle_kind.tolist()
    )
