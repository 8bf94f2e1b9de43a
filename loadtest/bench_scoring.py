"""Batch scoring from the Parquet archive, next to a plain pyarrow scan of the same files; and
the insurer score API under load, next to a bare FastAPI endpoint. Prints ONE JSON line.

    .venv/bin/python -m loadtest.bench_scoring [--vehicles 20] [--days 7] [--seconds 10]
        [--concurrency 16] [--json-only]

1. Archive: a simulated fleet (``--vehicles``, half battery-electric, ``--days`` of telemetry,
   5 s samples while driving or charging) is written into a temporary Parquet archive through
   the archive's own writer, and registered in a temporary SQLite database. Baseline: a plain
   pyarrow dataset scan (``dataset.to_table``) of the columns the scorer reads. Ours:
   ``ubi.batch.score_archive`` for ``ubi`` (trips, events, trip and period scores) and for
   ``battery`` (sessions, SoH, residual score), which also reads those columns, sorts them
   into arrival order and runs the analytics. ``ratio`` = our samples/s / the scan's rows/s.
2. Insurer API: see ``loadtest/bench_partner.py`` (run separately; its JSON line is recorded
   next to this one in ``docs/performance.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True)


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def archive_benchmark(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from core.config import Settings
    from core.db import upgrade
    from core.stack_cli import register_fleet
    from diagnostics.pdm_dataset import SimulationPlan, plan_fleet, simulate_to_archive
    from ingestion.archive import ParquetArchive
    from ubi.batch import columns_for, score_archive

    settings = Settings(data_dir=tmp, environment="test", database_url=f"sqlite:///{tmp}/b.db")
    upgrade(settings)
    plan = SimulationPlan(
        vehicles=args.vehicles, days=args.days, seed=args.seed, faulty_share=0.0, bev_share=0.5
    )
    say(f"archive: simulating {plan.vehicles} vehicles x {plan.days:g} days")
    rows = simulate_to_archive(plan, settings.archive_location, tmp / "labels.jsonl")
    register_fleet(settings, plan_fleet(plan))
    dataset = ParquetArchive(settings.archive_location).dataset()
    out: dict[str, Any] = {"rows": rows, "files": len(dataset.files)}
    for kind in ("ubi", "battery"):
        columns = columns_for(kind)  # type: ignore[arg-type]
        best_scan = best_ours = float("inf")
        result = None
        for _ in range(args.repeat):
            started = time.perf_counter()
            table = dataset.to_table(columns=columns)
            best_scan = min(best_scan, time.perf_counter() - started)
            assert table.num_rows == rows
            del table
            started = time.perf_counter()
            result = score_archive(settings, kind)  # type: ignore[arg-type]
            best_ours = min(best_ours, time.perf_counter() - started)
        assert result is not None and result.samples == rows
        scan_rate, ours_rate = rows / best_scan, rows / best_ours
        out[kind] = {
            "scan_rows_per_s": round(scan_rate),
            "scoring_samples_per_s": round(ours_rate),
            "ratio": round(ours_rate / scan_rate, 4),
            "vehicles_scored": len(result.results),
            "kept_samples": result.kept,
        }
        say(f"archive {kind}: scan {scan_rate:,.0f} rows/s, scoring {ours_rate:,.0f} samples/s")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--days", type=float, default=7.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--repeat", type=int, default=2, help="best of N runs")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    if args.json_only:
        console.quiet = True
    with tempfile.TemporaryDirectory(prefix="bench-scoring-") as tmp:
        archive = archive_benchmark(args, Path(tmp))
    result = {
        "benchmark": "scoring",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "vehicles": args.vehicles,
        "days": args.days,
        "archive": archive,
    }
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
