"""Battery-health estimator: SoH error against the simulator and throughput against a plain
pyarrow scan; prints one JSON line.

    .venv/bin/python -m loadtest.bench_battery [--vehicles 20] [--days 42] [--seed 11]
        [--rows 2000000] [--repeats 3]

Simulates ``--vehicles`` BEVs for ``--days`` (30 s samples, 10 min while parked, with the BMS
noise of ``ubi.battery.simulate_table``) and measures the mean absolute SoH error. For
throughput the simulated table is repeated (each copy under VINs of its own) up to ``--rows``
rows, then the batch estimator (``estimate_battery_health``) is timed next to a plain pyarrow
scan of the same columns (``to_numpy`` of each, one thread, best of ``--repeats``).
``ratio`` = estimator samples/s over scan samples/s.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

GOAL_MAE_PTS = 1.5


def _repeat(table: pa.Table, rows: int) -> pa.Table:
    copies: list[pa.Table] = []
    k = 0
    while sum(t.num_rows for t in copies) < rows:
        vins = pc.binary_join_element_wise(table["vin"], pa.scalar(f"-{k}"), "")
        copies.append(table.set_column(table.schema.get_field_index("vin"), "vin", vins))
        k += 1
    return pa.concat_tables(copies).slice(0, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_battery",
                                     description=(__doc__ or "").split("\n\n")[0])  # fmt: skip
    parser.add_argument("--vehicles", type=int, default=20)
    parser.add_argument("--days", type=float, default=42.0)
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from ubi.battery import BATTERY_COLUMNS, estimate_battery_health, simulate_table

    started = time.perf_counter()
    print(f"simulating {args.vehicles} BEVs x {args.days:g} days", file=sys.stderr)
    table, specs, truth = simulate_table(args.seed, args.vehicles, args.days)
    reports = estimate_battery_health(table, specs)
    errors = [abs(r.soh_pct - truth[v]) for v, r in reports.items() if r.soh_pct is not None]
    sessions = sum(r.sessions_detected for r in reports.values())
    used = sum(r.sessions_used for r in reports.values())

    big = _repeat(table, args.rows)
    big_specs = {v: specs[v.rsplit("-", 1)[0]] for v in set(big["vin"].to_pylist())}
    columns = ["vin", "ts", *(c for c in BATTERY_COLUMNS if c in big.column_names)]
    print(f"timing on {big.num_rows:,} rows", file=sys.stderr)
    scan_s = est_s = float("inf")
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for name in columns:
            big[name].to_numpy()
        scan_s = min(scan_s, time.perf_counter() - t0)
        t0 = time.perf_counter()
        estimate_battery_health(big, big_specs)
        est_s = min(est_s, time.perf_counter() - t0)
    mae = sum(errors) / len(errors) if errors else float("nan")
    result: dict[str, Any] = {
        "benchmark": "battery_health",
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },
        "vehicles": args.vehicles,
        "days": args.days,
        "seed": args.seed,
        "vehicles_estimated": len(errors),
        "mae_soh_pts": round(mae, 3),
        "max_error_pts": round(max(errors), 3) if errors else None,
        "sessions_detected": sessions,
        "sessions_used": used,
        "rows": big.num_rows,
        "scan_samples_per_s": round(big.num_rows / scan_s, 1),
        "estimator_samples_per_s": round(big.num_rows / est_s, 1),
        "ratio": round(scan_s / est_s, 4),
        "goals": {"mae_soh_pts_max": GOAL_MAE_PTS},
        "met": {"mae_soh_pts": mae <= GOAL_MAE_PTS},
        "duration_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
