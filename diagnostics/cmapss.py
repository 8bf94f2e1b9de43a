"""NASA C-MAPSS remaining-useful-life benchmark: predict, evaluate, tune.

The RUL engine of predictive maintenance must not be tuned to our own simulator, so it is
checked on the public C-MAPSS turbofan data (docs/cmapss.md):

- ``predict``: train on a run-to-failure file, write ``unit,predicted_rul`` for the last cycle
  of every unit of a test file of the same format (``fleet pdm cmapss`` is the same command);
- ``evaluate``: cross-validation grouped by engine on randomly truncated trajectories, printing
  one JSON line (RMSE, PHM08 score, per-fold figures, naive baselines, elapsed seconds);
- ``tune``: inner-validation RMSE of candidate hyper-parameters, computed on the training units
  of each outer fold only, so that choosing among them never looks at a test fold.

Run as ``python -m diagnostics.cmapss {predict,evaluate,tune} ...``. Progress goes to stderr.

Library API: :func:`predict_file`, :func:`inner_validation`, :func:`write_predictions` here;
``cmapss_data.read_trajectories`` (strict reader, :class:`CmapssFormatError`),
``cmapss_model.train_model`` / ``RulConfig`` / ``RulModel``, ``cmapss_eval.evaluate`` and
``cmapss_protocol`` (truncation, ``rmse``, ``phm08_score``).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from diagnostics.cmapss_data import (
    CmapssFormatError,
    FloatArray,
    IntArray,
    Trajectories,
    read_trajectories,
)

if TYPE_CHECKING:
    from diagnostics.cmapss_model import RulConfig

# LightGBM (and scikit-learn, which it pulls in) load inside the commands that train, so that
# mounting these commands in the ``fleet`` CLI costs nothing for its other commands.

log = logging.getLogger("diagnostics.cmapss")
stderr = Console(stderr=True)

cmapss_app = typer.Typer(
    help="NASA C-MAPSS remaining-useful-life benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def write_predictions(path: Path, units: IntArray, predicted: FloatArray) -> None:
    """CSV with header ``unit,predicted_rul``, one row per unit, RUL in cycles (2 decimals)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["unit,predicted_rul"]
    lines += [f"{int(u)},{float(p):.2f}" for u, p in zip(units, predicted, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="ascii")


def predict_file(
    train_path: Path, test_path: Path, out_path: Path, config: RulConfig | None = None
) -> int:
    """Train on ``train_path``, predict the last cycle of each unit of ``test_path``, write
    ``out_path``; returns the number of units written. Both files are read before training so
    that a bad test file fails fast."""
    from diagnostics.cmapss_model import train_model

    test = read_trajectories(test_path)
    train = read_trajectories(train_path)
    started = time.perf_counter()
    log.info("training on %d engines (%d cycles)", train.units.size, train.n_rows)
    model = train_model(train, config)
    log.info(
        "trained in %.1f s: %d features, rounds %s, inner validation RMSE %.2f",
        time.perf_counter() - started,
        len(model.feature_names),
        model.best_iterations,
        model.inner_rmse,
    )
    units, predicted = model.predict_last(test)
    write_predictions(out_path, units, predicted)
    log.info("wrote %d predictions to %s", units.size, out_path)
    return int(units.size)


def inner_validation(
    data: Trajectories, configs: list[RulConfig], folds: int = 5, seed: int = 0
) -> list[dict[str, Any]]:
    """For each config: the model's inner-validation RMSE on each outer fold's training units.

    Only the engines a fold trains on are touched, so picking the best config by these figures
    does not peek at the fold's test engines.
    """
    from diagnostics.cmapss_eval import outer_folds
    from diagnostics.cmapss_model import train_model

    results = []
    fold_units = outer_folds(data.units, folds, seed)
    for config in configs:
        started = time.perf_counter()
        scores, rounds = [], []
        for test_units in fold_units:
            model = train_model(data.select_units(np.setdiff1d(data.units, test_units)), config)
            scores.append(round(model.inner_rmse, 3))
            rounds.append(model.best_iterations)
        result = {
            "inner_rmse": round(float(np.mean(scores)), 3),
            "inner_rmse_by_fold": scores,
            "rounds": rounds,
            "seconds": round(time.perf_counter() - started, 1),
            "config": _non_default(config),
        }
        log.info("inner RMSE %.3f for %s", result["inner_rmse"], result["config"])
        results.append(result)
    return results


def _non_default(config: RulConfig) -> dict[str, Any]:
    default = type(config)()
    return {
        name: getattr(config, name)
        for name in config.__dataclass_fields__
        if getattr(config, name) != getattr(default, name)
    }


def _setup_logging() -> None:
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    logging.getLogger("diagnostics.cmapss").setLevel(logging.INFO)


def _read_or_exit(path: Path) -> Trajectories:
    try:
        return read_trajectories(path)
    except CmapssFormatError as exc:
        stderr.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None


TrainOption = Annotated[
    Path, typer.Option("--train", help="Run-to-failure C-MAPSS file, e.g. train_FD001.txt.")
]
ConfigOption = Annotated[
    str,
    typer.Option(
        "--config",
        help="JSON overrides of the model's RulConfig, e.g. '{\"learning_rate\": 0.1}'.",
    ),
]


def _config(overrides: str, seed: int) -> RulConfig:
    """RulConfig from JSON overrides; exits with a clear message on a bad field or value."""
    from diagnostics.cmapss_model import RulConfig

    try:
        changes = json.loads(overrides)
        if not isinstance(changes, dict):
            raise TypeError("expected a JSON object")
        return RulConfig().with_overrides(seed=seed, **changes)
    except (json.JSONDecodeError, TypeError, ValueError) as exc:
        stderr.print(f"[bold red]error:[/] bad --config {overrides!r}: {exc}")
        raise typer.Exit(2) from None


def cmapss_command(
    train: TrainOption,
    test: Annotated[
        Path, typer.Option("--test", help="C-MAPSS file whose units end before failure.")
    ],
    out: Annotated[Path, typer.Option("--out", help="CSV to write: unit,predicted_rul.")],
    seed: Annotated[int, typer.Option(help="Seed of the inner folds and of LightGBM.")] = 0,
    config: ConfigOption = "{}",
) -> None:
    """Train on --train and write the predicted RUL at the last cycle of every --test unit."""
    _setup_logging()
    model_config = _config(config, seed)
    try:
        count = predict_file(train, test, out, model_config)
    except ValueError as exc:  # CmapssFormatError included: names the file, line and fault
        stderr.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    stderr.print(f"{count} predictions written to {out}")


cmapss_app.command("predict")(cmapss_command)


@cmapss_app.command("evaluate")
def evaluate_command(
    train: TrainOption,
    folds: Annotated[int, typer.Option(help="Outer folds, grouped by engine.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds, truncations and models.")] = 0,
    repeats: Annotated[int, typer.Option(help="Random truncations per test engine.")] = 5,
    max_units: Annotated[
        int | None, typer.Option(help="Use only the first N engines (quick runs).")
    ] = None,
    config: ConfigOption = "{}",
) -> None:
    """Grouped cross-validation on truncated trajectories; one JSON line on stdout."""
    _setup_logging()
    model_config = _config(config, seed)
    data = _read_or_exit(train)
    if max_units is not None:
        data = data.select_units(data.units[:max_units])
    from diagnostics.cmapss_eval import evaluate

    try:
        report = evaluate(data, folds=folds, seed=seed, repeats=repeats, config=model_config)
    except ValueError as exc:
        stderr.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    _print_summary(report)
    sys.stdout.write(json.dumps(report, separators=(",", ":")) + "\n")


@cmapss_app.command("tune")
def tune_command(
    train: TrainOption,
    config: Annotated[
        list[str],
        typer.Option(
            help="Candidate as JSON overrides of RulConfig, e.g. '{\"num_leaves\": 7}'; "
            "repeat for several. '{}' is the default."
        ),
    ],
    folds: Annotated[int, typer.Option(help="Outer folds, grouped by engine.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of folds and models.")] = 0,
) -> None:
    """Inner-validation RMSE of each candidate (one JSON line each); lower is better."""
    _setup_logging()
    candidates = [_config(overrides, seed) for overrides in config]
    data = _read_or_exit(train)
    for result in inner_validation(data, candidates, folds, seed):
        sys.stdout.write(json.dumps(result, separators=(",", ":")) + "\n")


def _print_summary(report: dict[str, Any]) -> None:
    table = Table(title=f"C-MAPSS RUL, {report['n_folds']}-fold CV, {report['repeats']} cuts")
    for column in ("method", "RMSE", "± std", "PHM08", "± std"):
        table.add_column(column, justify="right")
    rows = [("LightGBM ensemble", report), *report["baseline"].items()]
    for name, figures in rows:
        table.add_row(
            name,
            f"{figures['rmse']:.2f}",
            f"{figures['rmse_std']:.2f}",
            f"{figures['phm08']:.0f}",
            f"{figures['phm08_std']:.0f}",
        )
    stderr.print(table)
    stderr.print(f"elapsed {report['elapsed_s']:.0f} s")


if __name__ == "__main__":
    cmapss_app()
