"""``fleet rules ...`` (check a rules file before the diagnosis worker loads it) and
``fleet pdm ...`` (predictive maintenance: the NASA C-MAPSS remaining-useful-life benchmark)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

rules_app = typer.Typer(help="Rule alarms of the diagnosis worker (docs/rules.md).",
                        no_args_is_help=True)
pdm_app = typer.Typer(help="Predictive maintenance (docs/cmapss.md).", no_args_is_help=True)
console = Console(stderr=True)


def _mount_pdm() -> None:
    from diagnostics.cmapss import cmapss_command

    pdm_app.command("cmapss")(cmapss_command)


_mount_pdm()


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
