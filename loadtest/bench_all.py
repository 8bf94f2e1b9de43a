"""Every throughput benchmark in one go (``make bench``): one JSON line each on stdout.

    .venv/bin/python -m loadtest.bench_all [--quick] [--only NAME,...] [--timeout 3600]
        [--out FILE]

Runs the benchmark modules one after another, each as its own process
(``python -m loadtest.bench_<name> ...``, with ``--json-only`` where the module has it), and
prints each one's JSON line as soon as it finishes. Every line carries ratios against baselines
measured in the same run by that benchmark:

=============  ==========================================================================
ingest         archive worker vs a bare aiokafka loop; HTTP ingest vs a bare FastAPI app
diagnostics    diagnostics worker vs a bare aiokafka loop
pdm            PdM scoring vs raw LightGBM ``Booster.predict`` on the same feature matrix
events         harsh-event detection vs a plain pyarrow scan
battery        battery-health estimator vs a plain pyarrow scan
scoring        UBI and battery scoring from the archive vs a plain pyarrow dataset scan
signals        a vehicle's signal history (console) vs a bare pyarrow read of its window
partner        insurer score API vs a bare FastAPI endpoint
scaleout       1 and 2 worker processes vs Kafka's own ``kafka-consumer-perf-test``
=============  ==========================================================================

A benchmark that fails, times out or prints no JSON gets a line
``{"benchmark": NAME, "failed": true, ...}`` with the tail of its stderr, and the run goes on;
the exit code is 1 if any failed. Each benchmark has its own time limit and the whole run is
bounded by ``--timeout``; a benchmark that overruns is killed with its process group (the
benchmarks also tie their brokers and servers to themselves, so nothing is left running).
Around each benchmark the load average and the machine's busy share are recorded, because
other work on a shared machine changes the figures; a summary table goes to stderr at the end.
``--quick`` runs every benchmark with small sizes (a smoke test, not figures to record).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from loadtest import loadgen

console = Console(stderr=True, width=130)
REPO_ROOT = Path(__file__).resolve().parent.parent

Row = tuple[str, Any, Any, Any]
"""(figure, ours, baseline, ratio) of a summary row."""


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str
    args: list[str] = field(default_factory=list)
    quick_args: list[str] = field(default_factory=list)
    timeout_s: float = 600.0
    rows: Callable[[dict[str, Any]], list[Row]] = lambda _: []


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _ingest_rows(r: dict[str, Any]) -> list[Row]:
    return [
        ("archive worker msg/s vs bare aiokafka loop", _get(r, "consumer", "ours_msgs_per_s"),
         _get(r, "consumer", "baseline_msgs_per_s"), _get(r, "consumer", "ratio")),
        ("HTTP ingest samples/s vs bare FastAPI", _get(r, "http", "samples_per_s"),
         _get(r, "http", "bare_samples_per_s"), _get(r, "http", "ratio")),
    ]


def _diagnostics_rows(r: dict[str, Any]) -> list[Row]:
    d = r.get("diagnostics") or {}
    return [("diagnostics worker msg/s vs bare aiokafka loop", d.get("ours_msgs_per_s"),
             d.get("baseline_msgs_per_s"), d.get("ratio"))]


def _pdm_rows(r: dict[str, Any]) -> list[Row]:
    return [("PdM scoring rows/s vs raw LightGBM predict", r.get("scoring_rows_per_s"),
             r.get("raw_predict_rows_per_s"), r.get("ratio"))]


def _events_rows(r: dict[str, Any]) -> list[Row]:
    return [("harsh-event detection samples/s vs pyarrow scan", r.get("detect_samples_per_s"),
             r.get("scan_samples_per_s"), r.get("ratio"))]


def _battery_rows(r: dict[str, Any]) -> list[Row]:
    return [("battery SoH estimator samples/s vs pyarrow scan",
             r.get("estimator_samples_per_s"), r.get("scan_samples_per_s"), r.get("ratio"))]


def _scoring_rows(r: dict[str, Any]) -> list[Row]:
    return [
        (f"{kind} scoring from the archive samples/s vs pyarrow dataset scan",
         _get(r, "archive", kind, "scoring_samples_per_s"),
         _get(r, "archive", kind, "scan_rows_per_s"), _get(r, "archive", kind, "ratio"))
        for kind in ("ubi", "battery")
    ]


def _signals_rows(r: dict[str, Any]) -> list[Row]:
    return [
        ("signal history of a vehicle, ms vs bare pyarrow window read",
         _get(r, "with_data", "ours_ms"), _get(r, "with_data", "baseline_ms"),
         _get(r, "with_data", "ratio")),
        ("signal history without data, ms: look-back vs whole archive",
         _get(r, "without_data", "lookback_ms"), _get(r, "without_data", "whole_archive_ms"),
         _get(r, "without_data", "speedup")),
    ]  # fmt: skip


def _partner_rows(r: dict[str, Any]) -> list[Row]:
    return [("partner score API requests/s vs bare FastAPI", _get(r, "item", "requests_per_s"),
             _get(r, "bare", "requests_per_s"), r.get("ratio"))]


def _scaleout_rows(r: dict[str, Any]) -> list[Row]:
    native = _get(r, "native", "msgs_per_s")
    rows: list[Row] = [("bare aiokafka loop msg/s vs kafka-consumer-perf-test",
                        _get(r, "bare_aiokafka", "msgs_per_s"), native,
                        _ratio(_get(r, "bare_aiokafka", "msgs_per_s"), native))]
    for worker in ("archive", "ubi"):
        for processes in ("1", "2"):
            rows.append((f"{worker} worker, {processes} process(es), msg/s vs native",
                         _get(r, worker, processes, "msgs_per_s"), native,
                         _get(r, worker, processes, "ratio_vs_native")))
        rows.append((f"{worker} worker: 2 processes / 1 process", None, None,
                     _get(r, worker, "ratio_2_over_1")))
    return rows


def _ratio(ours: Any, baseline: Any) -> float | None:
    if isinstance(ours, int | float) and isinstance(baseline, int | float) and baseline:
        return round(ours / baseline, 3)
    return None


BENCHMARKS = [
    Benchmark("ingest", "loadtest.bench_ingest", ["--json-only"],
              ["--messages", "10000", "--http-seconds", "5", "--warmup-seconds", "1"],
              timeout_s=900.0, rows=_ingest_rows),
    Benchmark("diagnostics", "loadtest.bench_diagnostics", ["--json-only"],
              ["--messages", "10000"], timeout_s=600.0, rows=_diagnostics_rows),
    Benchmark("pdm", "loadtest.bench_pdm", [], ["--rows", "10000", "--repeats", "2"],
              timeout_s=900.0, rows=_pdm_rows),
    Benchmark("events", "loadtest.bench_events", [],
              ["--traces", "10", "--vehicles", "50", "--repeats", "1"],
              timeout_s=300.0, rows=_events_rows),
    Benchmark("battery", "loadtest.bench_battery", [],
              ["--vehicles", "5", "--days", "14", "--rows", "300000", "--repeats", "1"],
              timeout_s=600.0, rows=_battery_rows),
    Benchmark("scoring", "loadtest.bench_scoring", ["--json-only"],
              ["--vehicles", "4", "--days", "2", "--repeat", "1"],
              timeout_s=600.0, rows=_scoring_rows),
    Benchmark("signals", "loadtest.bench_signals", ["--json-only"],
              ["--days", "30", "--vehicles", "5", "--repeat", "2"],
              timeout_s=600.0, rows=_signals_rows),
    Benchmark("partner", "loadtest.bench_partner", ["--json-only"],
              ["--seconds", "4", "--warmup-seconds", "1", "--list-seconds", "2",
               "--wait-quiet", "0"], timeout_s=700.0, rows=_partner_rows),
    Benchmark("scaleout", "loadtest.bench_scaleout", ["--json-only"], ["--messages", "6000"],
              timeout_s=900.0, rows=_scaleout_rows),
]


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict):
                    return parsed
    return None


def run_one(bench: Benchmark, quick: bool, timeout_s: float, logs: Path) -> dict[str, Any]:
    """Run one benchmark module; its JSON line plus ``bench_all`` (timing, machine load) or
    a failure line."""
    cmd = [sys.executable, "-m", bench.module, *bench.args, *(bench.quick_args if quick else [])]
    stderr_path = logs / f"{bench.name}.stderr"
    loadavg = [round(x, 2) for x in os.getloadavg()]
    jiffies = loadgen.machine_jiffies()
    started = time.perf_counter()
    status: str | int
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=stderr,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout_s)
            status = proc.returncode
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)  # its own session: it and its children
            try:
                out, _ = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                out, _ = proc.communicate()
            status = f"timeout after {timeout_s:.0f} s"
    seconds = round(time.perf_counter() - started, 1)
    run = {
        "command": " ".join(["python", "-m", bench.module, *cmd[3:]]),
        "seconds": seconds,
        "loadavg_at_start": loadavg,
        "machine_busy_pct": loadgen.machine_busy_pct(jiffies, loadgen.machine_jiffies()),
        "exit": status,
    }
    result = last_json_line(out.decode(errors="replace"))
    if status != 0 or result is None:
        tail = stderr_path.read_text(errors="replace").splitlines()[-15:]
        failed: dict[str, Any] = {"benchmark": bench.name, "failed": True, "bench_all": run,
                                  "stderr_tail": tail}
        if result is not None:
            failed["result"] = result
        return failed
    return {**result, "bench_all": run}


def summary(results: list[tuple[Benchmark, dict[str, Any]]]) -> Table:
    table = Table("benchmark", "figure", "ours", "baseline", "ratio", "s", "load", "busy %",
                  title="make bench", title_justify="left")

    def fmt(value: Any) -> str:
        if isinstance(value, float) and value < 10:
            return f"{value:.3f}"
        if isinstance(value, int | float):
            return f"{value:,.0f}"
        return "" if value is None else str(value)

    for bench, result in results:
        run = result.get("bench_all", {})
        load = run.get("loadavg_at_start", [None])[0]
        common = (fmt(run.get("seconds")), fmt(load), fmt(run.get("machine_busy_pct")))
        if result.get("failed"):
            table.add_row(bench.name, f"[red]FAILED ({run.get('exit')})[/]", "", "", "", *common)
            continue
        for i, (figure, ours, baseline, ratio) in enumerate(bench.rows(result)):
            table.add_row(bench.name if i == 0 else "", figure, fmt(ours), fmt(baseline),
                          fmt(ratio), *(common if i == 0 else ("", "", "")))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_all",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    parser.add_argument("--only", default=None,
                        help="comma-separated benchmarks (default all: "
                             + ",".join(b.name for b in BENCHMARKS) + ")")
    parser.add_argument("--timeout", type=float, default=3600.0,
                        help="bound on the whole run in seconds (default 3600)")
    parser.add_argument("--out", type=Path, default=None, help="also append the lines to FILE")
    args = parser.parse_args(argv)
    chosen = BENCHMARKS
    if args.only:
        names = {n.strip() for n in args.only.split(",")}
        unknown = names - {b.name for b in BENCHMARKS}
        if unknown:
            parser.error(f"unknown benchmarks: {', '.join(sorted(unknown))}")
        chosen = [b for b in BENCHMARKS if b.name in names]

    deadline = time.monotonic() + args.timeout
    results: list[tuple[Benchmark, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="fleet-bench-all-") as logs:
        for bench in chosen:
            remaining = deadline - time.monotonic()
            if remaining < 30:
                result: dict[str, Any] = {"benchmark": bench.name, "failed": True,
                                          "bench_all": {"exit": "skipped: --timeout reached"}}
            else:
                console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {bench.name} ...")
                result = run_one(bench, args.quick, min(bench.timeout_s, remaining), Path(logs))
            line = json.dumps(result, separators=(",", ":"))
            print(line, flush=True)
            if args.out:
                with args.out.open("a") as out:
                    out.write(line + "\n")
            results.append((bench, result))
    console.print(summary(results))
    failed = [bench.name for bench, result in results if result.get("failed")]
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
