"""A vehicle's signal history from the Parquet archive (``GET /v1/vehicles/{vin}/signals``, the
console's vehicle page), next to a bare pyarrow read of the same window. Prints ONE JSON line.

    .venv/bin/python -m loadtest.bench_signals [--days 365] [--vehicles 20] [--rolls-per-day 4]
        [--lookback-days 90] [--repeat 5] [--json-only]

An archive of ``--days`` daily partitions is written through the archive's own writer:
``--rolls-per-day`` rolls (files) a day, each holding ``--samples`` samples of every one of
``--vehicles`` vehicles (speed, state of charge, battery temperatures, position).

* **with data**: ``ingestion.history.signal_history`` for a vehicle with data (the default
  signals, 60 minutes, 300 points), which finds the vehicle's newest sample, reads the window
  and downsamples it. Baseline: a bare ``pyarrow.dataset`` read of the same window's columns,
  filtered on vin and time, in the partition already known to hold it (no search, no
  downsampling). ``ratio`` = baseline time / our time (1.0: no overhead).
* **without data**: the same call for a registered vehicle that never sent anything, once
  looking back ``--lookback-days`` (``FLEET_SIGNALS_LOOKBACK_DAYS``) and once over the whole
  archive; ``speedup`` = whole archive / look-back.

Times are the best of ``--repeat`` calls, in milliseconds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

console = Console(stderr=True)
START = datetime(2025, 1, 1, tzinfo=UTC)


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {message}")


def vin_of(i: int) -> str:
    from core.vin import make_vin

    return make_vin("WVW", "BENCH", "N", "S", i)


def write_archive(args: argparse.Namespace, location: str) -> dict[str, Any]:
    from core.signals import CATALOG
    from core.telemetry import Sample, TelemetryMessage
    from ingestion.archive import ParquetArchive, RowBuffer
    from ingestion.history import LATITUDE, LONGITUDE, SPEED, STATE_OF_CHARGE

    archive = ParquetArchive(location)
    vins = [vin_of(i) for i in range(args.vehicles)]
    day_ms, roll_ms = 86_400_000, 86_400_000 // args.rolls_per_day
    step_ms = roll_ms // args.samples
    offset, rows = 0, 0
    for day in range(args.days):
        for roll in range(args.rolls_per_day):
            buffer = RowBuffer()
            t0 = int(START.timestamp() * 1000) + day * day_ms + roll * roll_ms
            for n, vin in enumerate(vins):
                samples = [
                    Sample(
                        t0 + i * step_ms,
                        {
                            SPEED: float((i * 7 + n) % 130),
                            STATE_OF_CHARGE: 80.0 - i * 0.01,
                            "Vehicle.Powertrain.TractionBattery.Temperature.Min": 20.0,
                            "Vehicle.Powertrain.TractionBattery.Temperature.Max": 24.0 + n % 5,
                            LATITUDE: 48.0 + i * 1e-4,
                            LONGITUDE: 11.0 + n * 1e-3,
                        },
                    )
                    for i in range(args.samples)
                ]
                message = TelemetryMessage(vin, str(uuid.uuid4()), offset, samples)
                buffer.add(
                    message,
                    topic="telemetry",
                    partition=n % 6,
                    offset=offset,
                    received_at=None,
                    catalog=CATALOG,
                    size=1,
                )
                offset += 1
                rows += len(samples)
            archive.write_roll(buffer)
        if (day + 1) % 50 == 0:
            say(f"archive: {day + 1}/{args.days} days written")
    return {"days": args.days, "files": args.days * args.rolls_per_day, "rows": rows}


def best_ms(call: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        started = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - started)
    return round(best * 1000, 2), result


def measure(args: argparse.Namespace, location: str) -> dict[str, Any]:
    import pyarrow.dataset as ds

    from ingestion import history
    from ingestion.archive import ParquetArchive, column_name
    from ubi.retention import data_files, date_partitions

    archive = ParquetArchive(location)
    signals = list(history.DEFAULT_SIGNALS)
    vin, absent = vin_of(0), vin_of(args.vehicles + 1)

    def ours(who: str, lookback: int | None) -> Any:
        return history.signal_history(
            archive, who, signals, minutes=60, max_points=300, lookback_days=lookback
        )

    ours_ms, found = best_ms(lambda: ours(vin, args.lookback_days), args.repeat)
    assert found.to is not None and found.rows > 0, "the vehicle with data was not found"
    start, newest = found.from_, found.to
    days = [path for day, path in date_partitions(archive) if start.date() <= day]
    columns = ["ts", *(column_name(s) for s in signals)]
    columns += [column_name(history.LATITUDE), column_name(history.LONGITUDE)]

    def bare() -> Any:
        files = [f for path in days for f in data_files(archive.fs, path)]
        dataset = ds.dataset(files, schema=archive.schema, format="parquet", filesystem=archive.fs)
        return dataset.to_table(
            columns=list(dict.fromkeys(columns)),
            filter=(ds.field("vin") == vin)
            & (ds.field("ts") >= history._timestamp(start))
            & (ds.field("ts") <= history._timestamp(newest)),
        )

    bare_ms, table = best_ms(bare, args.repeat)
    assert table.num_rows == found.rows, (table.num_rows, found.rows)
    say(f"with data: ours {ours_ms} ms, bare window read {bare_ms} ms ({found.rows} rows)")

    lookback_ms, empty = best_ms(lambda: ours(absent, args.lookback_days), args.repeat)
    assert empty.to is None
    whole_ms, empty = best_ms(lambda: ours(absent, None), args.repeat)
    assert empty.to is None
    say(f"without data: look-back {lookback_ms} ms, whole archive {whole_ms} ms")
    return {
        "with_data": {
            "rows": found.rows,
            "ours_ms": ours_ms,
            "baseline_ms": bare_ms,
            "ratio": round(bare_ms / ours_ms, 3),
        },
        "without_data": {
            "lookback_days": args.lookback_days,
            "lookback_ms": lookback_ms,
            "whole_archive_ms": whole_ms,
            "speedup": round(whole_ms / lookback_ms, 2),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_signals",
                                     description=(__doc__ or "").split("\n")[0])  # fmt: skip
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--rolls-per-day", type=int, default=4)
    parser.add_argument("--samples", type=int, default=50, help="per vehicle and roll")
    parser.add_argument("--lookback-days", type=int, default=90)
    parser.add_argument("--repeat", type=int, default=5, help="best of N calls")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    for name in ("days", "vehicles", "rolls_per_day", "samples", "lookback_days", "repeat"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.json_only:
        console.quiet = True
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-signals-") as tmp:
        location = str(Path(tmp) / "archive")
        say(f"archive: {args.days} days x {args.rolls_per_day} rolls, {args.vehicles} vehicles")
        written = write_archive(args, location)
        figures = measure(args, location)
    result = {
        "benchmark": "signals",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "archive": written,
        **figures,
        "duration_s": round(time.perf_counter() - started, 1),
    }  # fmt: skip
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
