"""``fleet score ...``: UBI and battery scores recomputed from the Parquet archive, with a check
against what the streaming workers stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.auth.cli import fail

score_app = typer.Typer(
    help="UBI and battery scores from the Parquet archive (docs/ubi.md).", no_args_is_help=True
)
stdout = Console()
stderr = Console(stderr=True)

ArchiveOpt = Annotated[
    str | None,
    typer.Option(help="Archive directory or URL (default: the configured archive)."),
]
VinOpt = Annotated[list[str] | None, typer.Option("--vin", help="Only these vehicles.")]
OutOpt = Annotated[
    Path | None, typer.Option(help="Write one JSON line per vehicle with its full result.")
]
CheckOpt = Annotated[
    bool,
    typer.Option(
        help="Compare with the scores the workers stored; exit 1 and list the differences."
    ),
]


def _run(kind: str, archive: str | None, vin: list[str] | None, out: Path | None, check: bool):  # type: ignore[no-untyped-def]
    import pyarrow.fs as pafs

    from core.config import get_settings
    from ingestion.archive import DATASET_DIR, ParquetArchive, open_filesystem
    from ubi.batch import check_against_database, score_archive

    settings = get_settings()
    location = archive or settings.archive_location
    try:
        fs, root = open_filesystem(location)
        if fs.get_file_info(f"{root}/{DATASET_DIR}").type is not pafs.FileType.Directory:
            fail(f"cannot read the archive at {location}: it has no {DATASET_DIR}/ directory")
        total = ParquetArchive(location).dataset().count_rows()
    except (OSError, ValueError) as exc:
        fail(f"cannot read the archive at {location}: {exc}")
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,}/{task.total:,} samples"),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
    ) as progress:
        task = progress.add_task(f"scoring {kind}", total=total)
        result = score_archive(
            settings,
            kind,  # type: ignore[arg-type]
            archive=location,
            vins=vin,
            progress=lambda n: progress.advance(task, n),
        )
    if out is not None:
        with out.open("w") as fh:
            for v, item in sorted(result.results.items()):
                fh.write(json.dumps({"vin": v, **item}, sort_keys=True) + "\n")
    table = Table("vin", *(("score", "interval", "km", "trips", "sufficient") if kind == "ubi"
                          else ("SoH %", "interval", "sessions", "grade")))  # fmt: skip
    for v, item in sorted(result.results.items())[:50]:
        if kind == "ubi":
            p = item["period"]
            if p is None:
                continue
            interval = f"{p['score_low']:.1f}-{p['score_high']:.1f}"
            km = f"{p['distance_km']:.0f}"
            table.add_row(v, f"{p['score']:.1f}", interval, km, str(p["trips"]),
                          str(p["data_sufficient"]))  # fmt: skip
        else:
            h, r = item["health"], item["residual"]
            soh = "-" if h["soh_pct"] is None else f"{h['soh_pct']:.1f}"
            interval = (
                "-"
                if h["soh_low_pct"] is None
                else f"{h['soh_low_pct']:.1f}-{h['soh_high_pct']:.1f}"
            )
            table.add_row(v, soh, interval, str(h["sessions_used"]), r["second_life_grade"])
    if result.results:
        stdout.print(table)
    stdout.print(json.dumps(result.summary()), highlight=False)
    if check:
        problems = check_against_database(settings, result)
        if problems:
            for line in problems[:50]:
                stderr.print(line, highlight=False)
            stderr.print(f"[red]{len(problems)} differences from the stored scores[/red]")
            raise typer.Exit(1)
        stderr.print(f"identical to the stored scores of {len(result.results)} vehicles")


@score_app.command("ubi")
def score_ubi(
    archive: ArchiveOpt = None, vin: VinOpt = None, out: OutOpt = None, check: CheckOpt = False
) -> None:
    """Trips, events, trip scores and period scores of every vehicle in the archive."""
    _run("ubi", archive, vin, out, check)


@score_app.command("battery")
def score_battery(
    archive: ArchiveOpt = None, vin: VinOpt = None, out: OutOpt = None, check: CheckOpt = False
) -> None:
    """Charge sessions, state of health and residual score of every battery vehicle."""
    _run("battery", archive, vin, out, check)
