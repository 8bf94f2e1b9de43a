"""The model registry: versions, the atomic active pointer, reloading without a restart, and
clear refusals of damaged or incompatible artifacts."""

from __future__ import annotations

import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest

from diagnostics import pdm
from diagnostics.features import FEATURE_NAMES
from diagnostics.model_registry import (
    ACTIVE,
    ActiveModel,
    FeatureMismatch,
    ModelArtifactCorrupt,
    ModelRegistry,
    ModelVersionNotFound,
    NoActiveModel,
)
from diagnostics.pdm_model import Calibrator, ComponentModel, ModelSet
from diagnostics.pdm_scoring import Scorer


def _model_set(seed: int) -> ModelSet:
    """Two small boosters over the real feature list (what a version holds), fast to train."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(400, len(FEATURE_NAMES)))
    models = []
    for component, column in (("tires", "tire_vs_baseline_min_pct_7d"), ("lv_battery", None)):
        signal = values[:, FEATURE_NAMES.index(column)] if column else values[:, 0]
        y = (signal + rng.normal(scale=0.5, size=len(values)) > 1.0).astype(float)
        booster = lgb.train(
            {"objective": "binary", "verbose": -1, "num_threads": 1, "seed": seed},
            lgb.Dataset(values, y, feature_name=list(FEATURE_NAMES)),
            num_boost_round=5,
        )
        models.append(
            ComponentModel(
                component,
                7,
                booster,
                Calibrator("platt", 0.9, -0.2),
                0.4,
                0.24,
                column or "lv_rest_v_mean_7d",
                {"cv_pr_auc": 0.5},
            )  # fmt: skip
        )
    return ModelSet(models=models, training={"sha256": f"{seed:064x}", "rows": 400})


def test_publish_and_load_round_trip(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    models = _model_set(1)
    version = registry.publish(models)
    assert models.version == version and registry.active_version() is None
    loaded = registry.load(version)
    values = np.random.default_rng(0).normal(size=(50, len(FEATURE_NAMES)))
    assert np.array_equal(
        Scorer(loaded).probabilities(values), Scorer(models).probabilities(values)
    )
    meta = registry.metadata(version)
    assert meta["features"] == list(FEATURE_NAMES)
    assert meta["training_data"]["sha256"] == f"{1:064x}"
    assert {(m["component"], m["horizon_days"]) for m in meta["models"]} == {
        ("tires", 7),
        ("lv_battery", 7),
    }
    assert meta["models"][0]["calibration"] == {"method": "platt", "slope": 0.9, "intercept": -0.2}
    assert sorted(p.name for p in (tmp_path / "versions" / version).iterdir()) == [
        "lv_battery-7d.txt",
        "metadata.json",
        "tires-7d.txt",
    ]


def test_a_running_worker_switches_versions_without_a_restart(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    with pytest.raises(NoActiveModel):
        registry.load_active()
    first = registry.publish(_model_set(1), activate=True)
    active = ActiveModel(registry, check_every_s=0.0)
    assert active.get().version == first
    second = registry.publish(_model_set(2), activate=True)
    assert registry.active_version() == second
    assert active.get().version == second  # noticed the pointer, reloaded
    registry.activate(first)  # roll back
    assert active.get().version == first
    assert (tmp_path / ACTIVE).read_text() == first + "\n"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    assert [v.version for v in registry.versions() if v.active] == [first]


def test_checks_are_throttled(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.publish(_model_set(1), activate=True)
    active = ActiveModel(registry, check_every_s=3600.0)
    assert active.get().version == first
    registry.publish(_model_set(2), activate=True)
    assert active.get().version == first  # not re-checked within the interval


def test_damaged_artifacts_are_refused_with_a_clear_error(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    good = registry.publish(_model_set(1), activate=True)
    active = ActiveModel(registry, check_every_s=0.0)
    assert active.get().version == good

    bad = registry.publish(_model_set(2))
    model_file = tmp_path / "versions" / bad / "tires-7d.txt"
    model_file.write_bytes(model_file.read_bytes().replace(b"leaf_value=", b"leaf_value=1", 1))
    with pytest.raises(ModelArtifactCorrupt, match="sha256"):
        registry.load(bad)
    model_file.unlink()
    with pytest.raises(ModelArtifactCorrupt, match="missing"):
        registry.load(bad)
    with pytest.raises(ModelArtifactCorrupt):
        pdm.activate_command(bad, registry_dir=tmp_path)  # refused before switching
    assert registry.active_version() == good

    # Switched behind the CLI's back: the worker keeps serving the version it has.
    registry.activate(bad)
    assert active.get().version == good

    (tmp_path / "versions" / bad / "metadata.json").write_text("{not json")
    with pytest.raises(ModelArtifactCorrupt, match="JSON"):
        registry.load(bad)
    with pytest.raises(ModelVersionNotFound):
        registry.load("20990101T000000Z-deadbeef")
    with pytest.raises(ModelVersionNotFound):
        registry.load("../escape")


def test_models_for_another_feature_list_are_refused(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path)
    version = registry.publish(_model_set(1))
    path = tmp_path / "versions" / version / "metadata.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps(meta | {"features": meta["features"][:-1]}))
    with pytest.raises(FeatureMismatch, match="missing"):
        registry.load(version)
    path.write_text(json.dumps(meta | {"feature_version": "pdm-features-0"}))
    with pytest.raises(FeatureMismatch):
        registry.load(version)


def test_cli_lists_and_activates_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    registry = ModelRegistry(tmp_path)
    first = registry.publish(_model_set(1), activate=True)
    second = registry.publish(_model_set(2))
    assert pdm.main(["activate", second, "--registry", str(tmp_path)]) == 0
    assert registry.active_version() == second
    assert pdm.main(["versions", "--registry", str(tmp_path)]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(v["version"], v["active"]) for v in listed] == [(first, False), (second, True)]
    assert pdm.main(["activate", "nope", "--registry", str(tmp_path)]) == 1
    assert registry.active_version() == second
