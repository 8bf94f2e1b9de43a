"""Diagnosis worker throughput against a bare aiokafka read loop; prints one JSON line.

    .venv/bin/python -m loadtest.bench_diagnostics [--messages 50000]
        [--bootstrap HOST:PORT] [--wait-quiet S] [--json-only]

The telemetry topic is filled with the same simulator messages as ``bench_ingest`` (healthy
vehicles: every rule is evaluated on every sample, which is the cost; alarms are rare); the
bare loop of
``loadtest.bench_ingest`` reads them (baseline); then the product's ``diagnostics`` worker
(``core.workers.build_runner``, fresh group) decodes them, runs the DTC lifecycle and every
default rule, stores the findings in SQLite and publishes them. Both are timed from the moment
their partitions are assigned; ours stops when the worker has processed message N and stored
its final checkpoint. ``ratio`` = ours / baseline (goal >= 0.5). Everything runs in a temp dir
with unique topics, like ``bench_ingest``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import uuid
from typing import Any

from core.config import Settings
from loadtest import loadgen
from loadtest.bench_ingest import (
    bench_kafka,
    bench_settings,
    bench_workspace,
    broker_pid,
    console,
    consume_baseline,
    machine_record,
    prefill,
    run_bounded,
    say,
    stop_after,
    wait_quiet,
)

GOAL_RATIO = 0.5


async def consume_diagnostics(
    settings: Settings, count: int, timeout_s: float, watch: dict[str, int]
) -> dict[str, Any]:
    """The diagnostics worker, instrumented without changing what it does."""
    from core.workers import build_runner

    runner = build_runner(settings, "diagnostics", group_id=f"bench.diag.{uuid.uuid4().hex[:8]}")
    handler: Any = runner.handler
    marks = stop_after(runner, count)  # the drain writes the final checkpoint
    window = loadgen.CpuWindow(watch)
    stats = await run_bounded(
        runner, timeout_s,
        lambda: f"diagnostics worker did not process {count} in {timeout_s:.0f} s "
                f"(processed {marks.get('seen', 0):.0f})")
    finished = time.perf_counter()
    cpu = window.stop()
    return {
        **cpu,
        "seconds": finished - marks["assigned"],
        "consumed_s": marks.get("consumed", finished) - marks["assigned"],
        "processed": stats.processed,
        "batches": stats.batches,
        "commits": stats.commits,
        "findings": handler.findings,
        "skipped": handler.skipped,
        "rule_rows": handler.rules.stats.rows,
        "alarms_raised": handler.rules.stats.raised,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_diagnostics",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--samples-per-message", type=int, default=10)
    parser.add_argument("--bootstrap", default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--json-only", action="store_true")
    args = parser.parse_args(argv)
    args.source = "simulator"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json_only:
        console.quiet = True
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    loadavg = os.getloadavg()
    cleanup, tmp = bench_workspace(args.keep, "fleet-bench-diag-")
    result: dict[str, Any] = {"benchmark": "diagnostics"}
    errors: list[str] = []
    started = time.perf_counter()
    try:
        base = Settings()
        bootstrap, kafka_version = bench_kafka(args.bootstrap, base, tmp, cleanup)
        suffix = f"bench-{uuid.uuid4().hex[:8]}"
        settings = bench_settings(
            base, tmp, bootstrap,
            telemetry_topic=f"telemetry.v1.{suffix}",
            telemetry_dlq_topic=f"telemetry.dlq.{suffix}",
            findings_topic=f"diagnostics.findings.v1.{suffix}",
            topic_partitions=6,
        )  # fmt: skip
        from core.db import upgrade
        from core.localkafka import ensure_topics

        topics = {settings.telemetry_topic: 6, settings.findings_topic: 6}
        asyncio.run(ensure_topics(bootstrap, topics))
        upgrade(settings)
        result["machine"] = machine_record(kafka_version, loadavg, quiet)
        watch = {"bench": os.getpid(), **({"broker": pid} if (pid := broker_pid(tmp)) else {})}
        n = args.messages
        vehicles = max(1, min(1000, n // 50))
        say(f"generating and producing {n:,} simulator messages ({vehicles} vehicles)")
        filled = asyncio.run(prefill(settings, args, vehicles, int(time.time() * 1000) - 60_000,
                                     cleanup))
        say("baseline (bare aiokafka loop)")
        baseline = asyncio.run(consume_baseline(settings, n, f"bench.base.{suffix}", watch))
        say(f"baseline read {n:,} in {baseline['seconds']:.2f} s")
        say("ours (diagnostics worker)")
        ours = asyncio.run(consume_diagnostics(settings, n, 60 + n / 100, watch))
        say(f"ours processed {ours['processed']:,} in {ours['seconds']:.2f} s, "
            f"{ours['findings']} findings")
        base_rate, ours_rate = n / baseline["seconds"], n / ours["seconds"]
        result["diagnostics"] = {
            "messages": n,
            "samples": filled["samples"],
            "baseline_msgs_per_s": round(base_rate, 1),
            "ours_msgs_per_s": round(ours_rate, 1),
            "ours_samples_per_s": round(filled["samples"] / ours["seconds"], 1),
            "ratio": round(ours_rate / base_rate, 3),
            "baseline_cpu_pct": baseline.get("cpu_pct"),
            "ours_cpu_pct": ours.get("cpu_pct"),
            "others_pct": {"baseline": baseline.get("others_pct"),
                           "ours": ours.get("others_pct")},
            **{k: ours[k] for k in ("processed", "skipped", "findings", "alarms_raised",
                                    "batches", "commits")},
        }
    except Exception as exc:  # noqa: BLE001 - still print the JSON line
        errors.append(f"{type(exc).__name__}: {exc}")
        say(f"[red]benchmark failed:[/] {exc}")
    finally:
        cleanup.run()
    diag = result.get("diagnostics")
    result["goals"] = {"diagnostics_ratio_min": GOAL_RATIO}
    result["met"] = {"diagnostics_ratio": None if diag is None else diag["ratio"] >= GOAL_RATIO}
    result["duration_s"] = round(time.perf_counter() - started, 1)
    if errors:
        result["errors"] = errors
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
