"""``fleet rules ...`` (check a rules file before the diagnosis worker loads it) and
``fleet pdm ...`` (predictive maintenance: train, evaluate, the model registry, and the NASA
C-MAPSS remaining-useful-life benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

rules_app = typer.Typer(help="Rule alarms of the diagnosis worker (docs/rules.md).",
                        no_args_is_help=True)
pdm_app = typer.Typer(help="Predictive maintenance (docs/pdm.md, docs/cmapss.md).",
                      no_args_is_help=True)
console = Console(stderr=True)


def _mount_pdm() -> None:
    from diagnostics.cmapss import cmapss_command

    pdm_app.command("cmapss")(cmapss_command)


_mount_pdm()

Archive = Annotated[str | None, typer.Option(help="Parquet archive to train from (default: "
                                              "simulate a fleet).")]
Labels = Annotated[Path | None, typer.Option(help="Fault labels of that archive "
                                              "(simulator.labels format).")]
Vehicles = Annotated[int, typer.Option(help="Simulated vehicles.")]
Days = Annotated[float, typer.Option(help="Simulated days per vehicle.")]
Seed = Annotated[int, typer.Option(help="Simulation seed.")]
Workers = Annotated[int, typer.Option(help="Simulation processes.")]
CacheDir = Annotated[Path | None, typer.Option(help="Cache of simulated training sets.")]
Calibration = Annotated[str, typer.Option(help="platt or isotonic.")]
RegistryDir = Annotated[Path | None, typer.Option(help="Model registry (default: "
                                                   "FLEET_DATA_DIR/models).")]


def _calibration(value: str) -> Any:
    if value not in ("platt", "isotonic"):
        raise typer.BadParameter("must be platt or isotonic", param_hint="--calibration")
    return value


@pdm_app.command("train")
def pdm_train(
    archive: Archive = None, labels: Labels = None, vehicles: Vehicles = 300, days: Days = 49.0,
    seed: Seed = 7, workers: Workers = 2, cache_dir: CacheDir = None,
    calibration: Calibration = "platt", registry_dir: RegistryDir = None,
    evaluation: Annotated[Path | None, typer.Option(
        help="An evaluate report of the same data, stored with the version's metrics.")] = None,
    activate: Annotated[bool, typer.Option(help="Make the new version active.")] = True,
) -> None:
    """Train every (component, horizon) model and publish a version in the registry."""
    from diagnostics.pdm import train_command

    version = train_command(
        registry_dir=registry_dir, archive=archive, labels=labels, vehicles=vehicles, days=days,
        seed=seed, workers=workers, cache_dir=cache_dir, calibration=_calibration(calibration),
        evaluation=evaluation, activate=activate,
    )  # fmt: skip
    typer.echo(version)


@pdm_app.command("evaluate")
def pdm_evaluate(
    archive: Archive = None, labels: Labels = None, vehicles: Vehicles = 300, days: Days = 49.0,
    seed: Seed = 7, workers: Workers = 2, cache_dir: CacheDir = None,
    folds: Annotated[int, typer.Option(help="Folds of whole vehicles.")] = 4,
    calibration: Calibration = "platt",
    model: Annotated[str | None, typer.Option(
        help="Score a registry version (id or 'active') instead of cross-validating.")] = None,
    registry_dir: RegistryDir = None,
    output: Annotated[Path | None, typer.Option(help="Also write the report here.")] = None,
) -> None:
    """PR-AUC per component and horizon on held-out vehicles, alert rate, lead time (one JSON
    line on stdout)."""
    from diagnostics.pdm import evaluate_command

    evaluate_command(
        archive=archive, labels=labels, vehicles=vehicles, days=days, seed=seed,
        workers=workers, cache_dir=cache_dir, folds=folds,
        calibration=_calibration(calibration), model=model, registry_dir=registry_dir,
        output=output,
    )  # fmt: skip


@pdm_app.command("versions")
def pdm_versions(registry_dir: RegistryDir = None) -> None:
    """The model versions in the registry, and which one is active."""
    import json

    from diagnostics.pdm import versions_command

    for version in versions_command(registry_dir=registry_dir):
        typer.echo(json.dumps(version, default=str))


@pdm_app.command("activate")
def pdm_activate(
    version: Annotated[str, typer.Argument(help="Version id (see `fleet pdm versions`).")],
    registry_dir: RegistryDir = None,
) -> None:
    """Switch the active model version; running workers pick it up without a restart."""
    from diagnostics.model_registry import ModelRegistryError
    from diagnostics.pdm import activate_command

    try:
        activate_command(version, registry_dir=registry_dir)
    except ModelRegistryError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    typer.echo(f"active: {version}")


@rules_app.command("check")
def check_rules(
    path: Annotated[
        Path | None, typer.Argument(help="Rules file (default: the shipped default rules).")
    ] = None,
) -> None:
    """Validate a rules file and list its rules; exits with 1 and names every problem."""
    from diagnostics.rules_model import RulesFileError, load_default_rules, load_rules

    try:
        ruleset = load_rules(path) if path is not None else load_default_rules()
    except RulesFileError as exc:
        for problem in exc.problems:
            console.print(f"[bold red]error:[/] {problem}")
        raise typer.Exit(1) from None
    except OSError as exc:
        console.print(f"[bold red]error:[/] cannot read {path}: {exc.strerror or exc}")
        raise typer.Exit(1) from None
    table = Table(title=f"{len(ruleset.rules)} rules, {len(ruleset.enabled_rules)} enabled")
    for column in ("id", "kind", "severity", "enabled"):
        table.add_column(column)
    enabled = {rule.id for rule in ruleset.enabled_rules}
    for rule in ruleset.rules:
        table.add_row(rule.id, rule.kind, rule.severity, "yes" if rule.id in enabled else "no")
    Console().print(table)
