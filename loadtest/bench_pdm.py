"""PdM scoring throughput against raw ``Booster.predict``; prints one JSON line.

    .venv/bin/python -m loadtest.bench_pdm [--vehicles 60] [--days 18] [--model VERSION|active]
        [--registry DIR] [--cache-dir DIR] [--rows 30000] [--repeats 5]

Trains models on a simulated fleet (cached by ``--cache-dir``) unless ``--model`` names a
registry version, then times the worker's scoring path (``score_and_alert``: one ``predict`` per
(component, horizon) model, Platt calibration, applicability, hysteresis, cached reasons) next
to bare ``Booster.predict(raw_score=True)`` of the same models on the same feature matrix, one
thread, best of ``--repeats``, in the same run. ``ratio`` = ours / raw (goal >= 0.8). The
snapshot features of the simulated fleet are repeated up to ``--rows`` rows, each row scored as
a vehicle of its own: a worker scores the vehicles of many batches at once, and on a small
matrix fixed per-call costs would dominate both sides.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

GOAL_RATIO = 0.8


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_pdm",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--vehicles", type=int, default=60)
    parser.add_argument("--days", type=float, default=18.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--model", default=None, help="registry version id or 'active'")
    parser.add_argument("--registry", type=Path, default=None)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/pdm-cache"))
    parser.add_argument("--rows", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from diagnostics.model_registry import ModelRegistry, default_registry_dir
    from diagnostics.pdm_dataset import SimulationPlan, simulate_training_set
    from diagnostics.pdm_model import train_models
    from diagnostics.pdm_scoring import benchmark_scoring

    started = time.perf_counter()
    plan = SimulationPlan(vehicles=args.vehicles, days=args.days, seed=args.seed,
                          sample_interval_s=60.0)  # fmt: skip
    print(f"simulating {args.vehicles} vehicles x {args.days:g} days (cached in "
          f"{args.cache_dir})", file=sys.stderr)
    training = simulate_training_set(plan, cache_dir=args.cache_dir)
    if args.model:
        registry = ModelRegistry(args.registry or default_registry_dir())
        models = registry.load_active() if args.model == "active" else registry.load(args.model)
    else:
        print("training", file=sys.stderr)
        models = train_models(training)
    values = training.features.values
    values = np.tile(values, (-(-args.rows // len(values)), 1))[: args.rows]
    print(f"timing {len(models.models)} models on {len(values):,} rows", file=sys.stderr)
    figures = benchmark_scoring(models, values, repeats=args.repeats)
    result: dict[str, Any] = {
        "benchmark": "pdm_scoring",
        "machine": {"cores": os.cpu_count(), "loadavg_at_end": [round(x, 2)
                                                                for x in os.getloadavg()]},
        "model_version": models.version,
        "rows": int(figures["rows"]),
        "models": int(figures["models"]),
        "raw_predict_rows_per_s": round(figures["raw_predict_rows_per_s"], 1),
        "scoring_rows_per_s": round(figures["scoring_rows_per_s"], 1),
        "first_pass_rows_per_s": round(figures["first_pass_rows_per_s"], 1),
        "alerting_share": round(figures["alerting_share"], 4),
        "ratio": round(figures["ratio"], 3),
        "goals": {"pdm_scoring_ratio_min": GOAL_RATIO},
        "met": {"pdm_scoring_ratio": figures["ratio"] >= GOAL_RATIO},
        "duration_s": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
