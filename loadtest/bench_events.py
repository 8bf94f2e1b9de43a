"""Harsh-event detection: accuracy and throughput; prints one JSON line.

    .venv/bin/python -m loadtest.bench_events [--seed 101] [--traces 25] [--vehicles 200]
        [--repeats 3]

Accuracy: precision/recall/F1 per event type of ``ubi.events.detect_events`` and of the naive
speed-difference detector on the same labelled traces (``ubi.traces.evaluate``; seed 101 is
held out from tuning). Throughput: ``detect_events`` over one large table (``--vehicles``
generated 15-minute traces at 1 Hz, each its own VIN) next to a plain pyarrow scan of the same
columns (each column combined and converted to numpy, plus a min/max), one thread, best of
``--repeats``. ``ratio`` = ours / scan samples per second.
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

GOAL_F1 = 0.95


def _scan(table: pa.Table, columns: tuple[str, ...]) -> float:
    total = 0.0
    for name in columns:
        col = table[name].combine_chunks()
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        if pa.types.is_string(col.type):
            total += len(col.to_numpy(zero_copy_only=False))
            continue
        bounds = pc.min_max(col)
        total += float(bounds["max"].as_py() or 0.0) + len(col.to_numpy(zero_copy_only=False))
    return total


def _best(fn: Any, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_events",
                                     description=(__doc__ or "").split("\n\n")[0])  # fmt: skip
    parser.add_argument("--seed", type=int, default=101)
    parser.add_argument("--traces", type=int, default=25)
    parser.add_argument("--vehicles", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from ubi.events import EVENT_COLUMNS, detect_events
    from ubi.traces import evaluate, generate_trace

    started = time.perf_counter()
    print(f"evaluating {args.traces} traces (seed {args.seed})", file=sys.stderr)
    accuracy = evaluate(args.seed, args.traces)
    print(f"generating {args.vehicles} traces for throughput", file=sys.stderr)
    table = pa.concat_tables(
        [generate_trace(10_000 + i).table for i in range(args.vehicles)]
    ).select(list(EVENT_COLUMNS))
    rows = table.num_rows
    ours_s = _best(lambda: detect_events(table), args.repeats)
    scan_s = _best(lambda: _scan(table, EVENT_COLUMNS), args.repeats)
    f1 = {
        name: {kind: scores["f1"] for kind, scores in accuracy[name].items()}
        for name in ("ours", "ours_speed_fallback", "naive")
    }
    ratio = (rows / ours_s) / (rows / scan_s)
    result: dict[str, Any] = {
        "benchmark": "ubi_events",
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        },  # fmt: skip
        "seed": args.seed,
        "traces": args.traces,
        "labelled_events": accuracy["labelled_events"],
        "f1": f1,
        "rows": rows,
        "detect_samples_per_s": round(rows / ours_s, 1),
        "scan_samples_per_s": round(rows / scan_s, 1),
        "ratio": round(ratio, 3),
        "goals": {"f1_min": GOAL_F1},
        "met": {"f1": all(v >= GOAL_F1 for v in f1["ours"].values())},
        "duration_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
