"""Predictive maintenance: the public API and the ``train`` / ``evaluate`` commands.

The pieces, each in its own module:

* ``diagnostics.features``: window features over Arrow batches (``compute_features``,
  ``FeatureState`` for streaming; the same code, the same results);
* ``diagnostics.pdm_dataset``: labelled snapshots from the simulator or the archive + labels;
* ``diagnostics.pdm_model``: LightGBM per (component, horizon), vehicle-split training, Platt
  calibration, alert thresholds;
* ``diagnostics.pdm_scoring``: ``Scorer`` (probabilities and reasons), ``AlertState``
  (hysteresis), the scoring benchmark;
* ``diagnostics.pdm_eval``: out-of-fold evaluation on held-out vehicles;
* ``diagnostics.model_registry``: versioned artifacts and the active pointer.

Commands (``python -m diagnostics.pdm train|evaluate|versions|activate``, registered as
``fleet pdm ...``): :func:`train_command`, :func:`evaluate_command`, :func:`versions_command`,
:func:`activate_command`. Without ``--archive`` they simulate the training fleet; with
``--archive DIR --labels FILE`` they read the Parquet archive and a labels file instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diagnostics.features import (
    FEATURE_NAMES,
    FEATURE_VERSION,
    FeatureFrame,
    FeatureState,
    bucket_end,
    compute_features,
)
from diagnostics.model_registry import (
    ActiveModel,
    FeatureMismatch,
    ModelArtifactCorrupt,
    ModelRegistry,
    ModelRegistryError,
    ModelVersionNotFound,
    NoActiveModel,
    default_registry_dir,
)
from diagnostics.pdm_components import COMPONENT_NAMES, HORIZONS_DAYS
from diagnostics.pdm_dataset import (
    SimulationPlan,
    TrainingSet,
    archive_training_set,
    simulate_to_archive,
    simulate_training_set,
)
from diagnostics.pdm_eval import evaluate, evaluate_models
from diagnostics.pdm_model import CalibrationMethod, ModelSet, TrainConfig, train_models
from diagnostics.pdm_scoring import (
    AlertChange,
    AlertState,
    Prediction,
    Reason,
    ScoreBatch,
    Scorer,
    benchmark_scoring,
    score_and_alert,
)

__all__ = [
    "COMPONENT_NAMES",
    "FEATURE_NAMES",
    "FEATURE_VERSION",
    "HORIZONS_DAYS",
    "ActiveModel",
    "AlertChange",
    "AlertState",
    "FeatureFrame",
    "FeatureMismatch",
    "FeatureState",
    "ModelArtifactCorrupt",
    "ModelRegistry",
    "ModelRegistryError",
    "ModelSet",
    "ModelVersionNotFound",
    "NoActiveModel",
    "Prediction",
    "Reason",
    "ScoreBatch",
    "Scorer",
    "SimulationPlan",
    "TrainConfig",
    "TrainingSet",
    "activate_command",
    "archive_training_set",
    "benchmark_scoring",
    "bucket_end",
    "compute_features",
    "evaluate",
    "evaluate_command",
    "evaluate_models",
    "score_and_alert",
    "load_training_set",
    "simulate_to_archive",
    "simulate_training_set",
    "train_command",
    "train_models",
    "versions_command",
]

log = logging.getLogger("diagnostics.pdm")


def load_training_set(
    *,
    archive: str | None = None,
    labels: Path | None = None,
    plan: SimulationPlan | None = None,
    workers: int = 2,
    cache_dir: Path | None = None,
) -> TrainingSet:
    """From the archive and a labels file when ``archive`` is given, else simulated."""
    if archive is not None:
        if labels is None:
            raise ValueError("--archive needs --labels (a simulator.labels file)")
        return archive_training_set(archive, labels)
    return simulate_training_set(plan or SimulationPlan(), workers=workers, cache_dir=cache_dir)


def _default_cache() -> Path:
    return default_registry_dir().parent / "pdm-cache"


def _command_training_set(
    archive: str | None, labels: Path | None, vehicles: int, days: float, seed: int,
    sample_interval_s: float, parked_interval_s: float, commercial_share: float, workers: int,
    cache_dir: Path | None,
) -> TrainingSet:
    """The training set the data options of ``train`` and ``evaluate`` describe."""
    plan = SimulationPlan(
        vehicles=vehicles, days=days, seed=seed, sample_interval_s=sample_interval_s,
        parked_sample_interval_s=parked_interval_s, commercial_share=commercial_share,
    )
    return load_training_set(
        archive=archive, labels=labels, plan=plan, workers=workers,
        cache_dir=cache_dir or _default_cache(),
    )  # fmt: skip


def train_command(
    *,
    registry_dir: Path | None = None,
    archive: str | None = None,
    labels: Path | None = None,
    vehicles: int = 300,
    days: float = 49.0,
    seed: int = 7,
    sample_interval_s: float = 5.0,
    parked_interval_s: float = 1800.0,
    commercial_share: float = 0.2,
    workers: int = 2,
    cache_dir: Path | None = None,
    calibration: CalibrationMethod = "platt",
    evaluation: Path | None = None,
    activate: bool = True,
) -> str:
    """``fleet pdm train``: train every (component, horizon) model on all vehicles, publish
    the version in the registry (and make it active); returns the version id. ``evaluation``:
    a report of ``evaluate`` on the same training data (same sha256, else refused) to store
    with the version's metrics."""
    training = _command_training_set(
        archive, labels, vehicles, days, seed, sample_interval_s, parked_interval_s,
        commercial_share, workers, cache_dir,
    )  # fmt: skip
    report = json.loads(evaluation.read_text()) if evaluation is not None else None
    if report is not None and report.get("dataset", {}).get("sha256") != training.sha256():
        raise ValueError(f"{evaluation} evaluated other training data (sha256 differs)")
    models = train_models(training, TrainConfig(calibration=calibration))
    if report is not None:
        models.metrics["held_out_evaluation"] = {
            "folds": report.get("folds"), "results": report.get("results"),
        }  # fmt: skip
    registry = ModelRegistry(registry_dir or default_registry_dir())
    version = registry.publish(models, activate=activate)
    log.info("published %s in %s%s", version, registry.root, " (active)" if activate else "")
    return version


def evaluate_command(
    *,
    archive: str | None = None,
    labels: Path | None = None,
    vehicles: int = 300,
    days: float = 49.0,
    seed: int = 7,
    sample_interval_s: float = 5.0,
    parked_interval_s: float = 1800.0,
    commercial_share: float = 0.2,
    workers: int = 2,
    cache_dir: Path | None = None,
    folds: int = 4,
    calibration: CalibrationMethod = "platt",
    model: str | None = None,
    registry_dir: Path | None = None,
    output: Path | None = None,
) -> dict[str, Any]:
    """``fleet pdm evaluate``: out-of-fold evaluation on held-out vehicles (train and test per
    fold), or with ``model`` (a version id or ``active``) the metrics of that registry version
    on the given data, without retraining. Prints the report as one JSON line on stdout (and
    writes it to ``output``)."""
    training = _command_training_set(
        archive, labels, vehicles, days, seed, sample_interval_s, parked_interval_s,
        commercial_share, workers, cache_dir,
    )  # fmt: skip
    if model is not None:
        registry = ModelRegistry(registry_dir or default_registry_dir())
        models = registry.load_active() if model == "active" else registry.load(model)
        report = evaluate_models(models, training)
    else:
        report = evaluate(training, TrainConfig(calibration=calibration), folds=folds)
    line = json.dumps(report, separators=(",", ":"))
    print(line, flush=True)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(line + "\n")
    return report


def versions_command(*, registry_dir: Path | None = None) -> list[dict[str, Any]]:
    """``fleet pdm versions``: the stored versions, newest last, and which one is active."""
    registry = ModelRegistry(registry_dir or default_registry_dir())
    return [v.__dict__ for v in registry.versions()]


def activate_command(version: str, *, registry_dir: Path | None = None) -> None:
    """``fleet pdm activate VERSION``: switch the active version (workers pick it up)."""
    registry = ModelRegistry(registry_dir or default_registry_dir())
    registry.load(version)  # refuse a version this code cannot load
    registry.activate(version)


def _data_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--archive", help="Parquet archive location (default: simulate)")
    parser.add_argument("--labels", type=Path, help="labels file (simulator.labels format)")
    parser.add_argument("--vehicles", type=int, default=300)
    parser.add_argument("--days", type=float, default=49.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--sample-interval-s", type=float, default=5.0, help="while driving")
    parser.add_argument("--parked-interval-s", type=float, default=1800.0, help="while parked")
    parser.add_argument("--commercial-share", type=float, default=0.2)
    parser.add_argument("--workers", type=int, default=2, help="simulation processes")
    parser.add_argument("--cache-dir", type=Path, help="training-set cache directory")
    parser.add_argument("--calibration", choices=["platt", "isotonic"], default="platt")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m diagnostics.pdm",
        description="Predictive maintenance: train, evaluate and switch model versions.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train and publish a model version")
    _data_arguments(train)
    train.add_argument("--registry", type=Path, help="registry directory")
    train.add_argument("--no-activate", action="store_true")
    train.add_argument("--evaluation", type=Path, help="evaluate report to store as metrics")
    ev = sub.add_parser("evaluate", help="evaluate on held-out vehicles (one JSON line)")
    _data_arguments(ev)
    ev.add_argument("--folds", type=int, default=4)
    ev.add_argument("--model", help="evaluate this registry version (or 'active') instead")
    ev.add_argument("--registry", type=Path, help="registry directory (with --model)")
    ev.add_argument("--output", type=Path)
    versions = sub.add_parser("versions", help="list model versions")
    versions.add_argument("--registry", type=Path)
    act = sub.add_parser("activate", help="make a version active")
    act.add_argument("version")
    act.add_argument("--registry", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s"
    )
    data = {}
    if args.command in ("train", "evaluate"):
        data = {
            "archive": args.archive, "labels": args.labels, "vehicles": args.vehicles,
            "days": args.days, "seed": args.seed, "workers": args.workers,
            "sample_interval_s": args.sample_interval_s,
            "parked_interval_s": args.parked_interval_s,
            "commercial_share": args.commercial_share,
            "cache_dir": args.cache_dir, "calibration": args.calibration,
        }  # fmt: skip
    try:
        if args.command == "train":
            version = train_command(
                registry_dir=args.registry, activate=not args.no_activate,
                evaluation=args.evaluation, **data,
            )  # fmt: skip
            print(version)
        elif args.command == "evaluate":
            evaluate_command(
                folds=args.folds, model=args.model, registry_dir=args.registry,
                output=args.output, **data,
            )  # fmt: skip
        elif args.command == "versions":
            for info in versions_command(registry_dir=args.registry):
                print(json.dumps(info))
        else:
            activate_command(args.version, registry_dir=args.registry)
    except (ModelRegistryError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
