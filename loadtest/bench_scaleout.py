"""Scale-out throughput: 1 and 2 worker processes in one consumer group, against Kafka's own
consumer (the native limit) and a bare aiokafka loop on the same topic; prints ONE JSON line.

    .venv/bin/python -m loadtest.bench_scaleout [--messages 30000] [--workers archive,ubi]
        [--processes 1,2] [--bootstrap HOST:PORT] [--wait-quiet S] [--json-only]

1. A 6-partition telemetry topic is pre-filled with N simulator messages (key = VIN; the
   producer and generator of ``loadtest.bench_ingest``). Not timed.
2. **Native limit**: Kafka's ``kafka-consumer-perf-test`` (``org.apache.kafka.tools.
   ConsumerPerformance`` from the cached broker jars, run with ``java -cp '<libs>/*'``) reads
   all N in a fresh group with the runner's fetch sizes and ``read_committed``. Its
   ``fetch.nMsg.sec`` (group join excluded) is the native figure.
3. **Bare loop**: the aiokafka loop of ``bench_ingest`` (fresh group, every value touched).
4. **Ours**: for each worker (``archive``, ``ubi``) and each process count, that many processes
   run the registry's worker (``core.workers.build_runner``, what ``fleet worker NAME`` runs)
   in one fresh consumer group. Each reports when it is assigned partitions and when it
   finishes a batch (its handler is wrapped, not changed). ``msgs_per_s`` = N over the time
   from the first assignment to the last batch handled; ``durable_msgs_per_s`` = N over the
   time until the group has committed the end of every partition (Parquet rolls written,
   ubi checkpoints stored). With 2 processes the time includes the rebalance when the second
   joins (``join_s``: first to last assignment); ``steady_msgs_per_s`` counts only what was
   committed after the group settled. Every run gets its own archive directory and SQLite
   database, so none sees another's state. Roll and checkpoint intervals are 1 s (production:
   30 s and 10 s) so that the durable time is not dominated by the last interval.

``ratio_2_over_1`` compares 2 processes with 1; ``ratio_vs_native`` and ``ratio_vs_bare``
compare each run with the native tool and the bare loop of the same run. On a 2-core machine
the broker, the workers and this process share the cores: the CPU of each and of everything
else (``others_pct``, other workloads) is reported, in percent of one core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import multiprocessing as mp
import os
import queue
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from core.config import Settings
from loadtest import loadgen
from loadtest.bench_ingest import (
    Cleanup,
    bench_kafka,
    bench_settings,
    bench_workspace,
    broker_pid,
    console,
    consume_baseline,
    machine_record,
    prefill,
    say,
    wait_quiet,
)

PARTITIONS = 6
NATIVE_CLASS = "org.apache.kafka.tools.ConsumerPerformance"


# ------------------------------------------------------------------------------ native limit


def kafka_libs(settings: Settings) -> Path:
    """The cached broker jars (``core.localkafka``), which include ``kafka-tools``."""
    from core.localkafka import LocalKafka

    libs = LocalKafka(settings).ensure_jars()
    if not any(libs.glob("kafka-tools-*.jar")):
        raise FileNotFoundError(f"no kafka-tools jar in {libs}")
    return libs


def parse_perf_output(text: str) -> dict[str, float]:
    """The header line and the values line of ``ConsumerPerformance`` (without
    ``--show-detailed-stats``), as {column: number}; the two date columns are skipped."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for i, line in enumerate(lines[:-1]):
        if line.startswith("start.time"):
            names = [n.strip() for n in line.split(",")]
            values = [v.strip() for v in lines[i + 1].split(",")]
            return {n: float(v) for n, v in zip(names, values, strict=True)
                    if n not in ("start.time", "end.time")}
    raise ValueError(f"no ConsumerPerformance result in its output: {text[-500:]!r}")


def native_consume(settings: Settings, count: int, tmp: Path, timeout_s: float) -> dict[str, Any]:
    """Kafka's own consumer perf tool over the topic, fresh group, the runner's fetch sizes."""
    java = shutil.which("java")
    if java is None:
        raise FileNotFoundError("java is not on PATH")
    config = tmp / "perf-consumer.properties"
    config.write_text("isolation.level=read_committed\nfetch.max.bytes=33554432\n"
                      "max.partition.fetch.bytes=16777216\nauto.offset.reset=earliest\n")
    cmd = [
        java, "-Xmx512m", "-cp", f"{kafka_libs(settings)}{os.sep}*", NATIVE_CLASS,
        "--bootstrap-server", settings.bootstrap_servers, "--topic", settings.telemetry_topic,
        "--messages", str(count), "--group", f"bench.native.{uuid.uuid4().hex[:8]}",
        "--consumer.config", str(config), "--fetch-size", "16777216", "--timeout", "30000",
    ]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          stdin=subprocess.DEVNULL, preexec_fn=loadgen.die_with_parent)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{NATIVE_CLASS} exited {done.returncode}: {done.stderr[-800:]}")
    figures = parse_perf_output(done.stdout)
    if figures.get("data.consumed.in.nMsg", 0) < count:
        raise RuntimeError(f"{NATIVE_CLASS} read only {figures} of {count}")
    return {
        "msgs_per_s": round(figures["fetch.nMsg.sec"], 1),
        "msgs_per_s_with_join": round(figures["nMsg.sec"], 1),
        "mb_per_s": round(figures["fetch.MB.sec"], 1),
        "rebalance_ms": figures["rebalance.time.ms"],
        "wall_s": round(wall, 2),
        "tool": f"java -cp <kafka libs>/* {NATIVE_CLASS}",
    }


# ----------------------------------------------------------------------------- worker group


def _worker_process(
    settings: Settings, name: str, group: str, events: Any, go: Any, run: Any
) -> None:
    """One process of the group, running the registry's worker. It reports ("ready", ...) once
    built and joins the group when ``go`` is set; until ``run`` is set it pauses the partitions
    it is assigned (so the clock starts with the group settled, not while the processes join
    one rebalance at a time). It reports ("assigned", pid, time, partitions) and ("batch", pid,
    time, records) and stops on SIGTERM after draining."""
    from core.workers import build_runner

    loadgen.die_with_parent()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    runner = build_runner(settings, name, group_id=group)
    handler: Any = runner.handler
    assigned, process = handler.on_assigned, handler.process

    async def on_assigned(partitions: set[TopicPartition]) -> None:
        await assigned(partitions)
        if not run.is_set() and runner.consumer is not None:
            runner.consumer.pause(*partitions)
        owned = sorted(tp.partition for tp in partitions)
        events.put(("assigned", os.getpid(), time.time(), owned))

    async def on_batch(batch: Any) -> Any:
        result = await process(batch)
        events.put(("batch", os.getpid(), time.time(), sum(len(r) for r in batch.values())))
        return result

    async def resume_on_run() -> None:
        await asyncio.to_thread(run.wait, 300)
        if runner.consumer is not None:
            runner.consumer.resume(*runner.consumer.paused())

    handler.on_assigned, handler.process = on_assigned, on_batch
    events.put(("ready", os.getpid(), time.time(), None))
    go.wait(300)

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        resuming = asyncio.create_task(resume_on_run())
        await runner.run()
        resuming.cancel()

    asyncio.run(main())


async def committed_total(admin: AIOKafkaAdminClient, group: str, topic: str) -> int:
    offsets = await admin.list_consumer_group_offsets(group)
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


async def end_total(settings: Settings) -> int:
    reader = AIOKafkaConsumer(bootstrap_servers=settings.bootstrap_servers, group_id=None)
    await reader.start()
    try:
        parts = [TopicPartition(settings.telemetry_topic, p) for p in range(PARTITIONS)]
        return sum((await reader.end_offsets(parts)).values())
    finally:
        await reader.stop()


def _drain(events: Any, latest: dict[int, list[int]], batches: list[tuple[float, int]]) -> None:
    with contextlib.suppress(queue.Empty):
        while True:
            kind, pid, at, value = events.get_nowait()
            if kind == "assigned":
                latest[pid] = value
            elif kind == "batch":
                batches.append((at, value))


async def run_group(
    settings: Settings, name: str, processes: int, total: int, timeout_s: float,
    watch: dict[str, int], cleanup: Cleanup,
) -> dict[str, Any]:
    """``processes`` workers in one fresh group over the pre-filled topic: they join with their
    partitions paused; once the group has settled (each process holds partitions, all six are
    held) they all resume and the clock starts; it stops at the last batch handled
    (``msgs_per_s``) and when the group has committed the end of every partition
    (``durable_msgs_per_s``). Then SIGTERM: they drain and leave."""
    ctx = mp.get_context("spawn")
    events: Any = ctx.Queue()
    go, run = ctx.Event(), ctx.Event()
    group = f"bench.{name}.{processes}.{uuid.uuid4().hex[:8]}"
    procs = [ctx.Process(target=_worker_process, args=(settings, name, group, events, go, run),
                         daemon=True, name=f"{name}-{i}") for i in range(processes)]

    def kill() -> None:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(5.0)

    cleanup.push(f"{name} x{processes}", kill)
    for proc in procs:
        proc.start()
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.bootstrap_servers)
    await admin.start()
    latest: dict[int, list[int]] = {}
    batches: list[tuple[float, int]] = []
    ready: set[int] = set()

    def check_alive() -> None:
        for proc in procs:
            if not proc.is_alive():
                raise RuntimeError(f"{proc.name} exited with code {proc.exitcode}")

    try:
        while len(ready) < processes:
            kind, pid, _, _ = await asyncio.to_thread(events.get, True, 120.0)
            if kind == "ready":
                ready.add(pid)
        go.set()
        joined = time.time()
        deadline = time.monotonic() + 90
        while not (sum(1 for parts in latest.values() if parts) == processes
                   and sorted(p for parts in latest.values() for p in parts)
                   == list(range(PARTITIONS))):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the group did not settle in 90 s: {latest}")
            check_alive()
            await asyncio.sleep(0.05)
            _drain(events, latest, batches)
        before = await committed_total(admin, group, settings.telemetry_topic)
        settled = time.time()
        pids = {f"worker{i}": p.pid for i, p in enumerate(procs) if p.pid}
        window = loadgen.CpuWindow({**watch, **pids})
        run.set()
        started = time.time()
        deadline = time.monotonic() + timeout_s
        while await committed_total(admin, group, settings.telemetry_topic) < total:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{processes} {name} processes did not finish in "
                                   f"{timeout_s:.0f} s")
            check_alive()
            await asyncio.sleep(0.05)
        finished = time.time()
        cpu = window.stop()
        await asyncio.sleep(0.2)
        _drain(events, latest, batches)
    finally:
        await admin.close()
        for proc in procs:
            if proc.is_alive() and proc.pid:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in procs:
            proc.join(30)
        kill()
    timed = [(at, n) for at, n in batches if at >= started]
    if not timed:
        raise RuntimeError("no batch was handled after the group settled")
    count = sum(n for _, n in timed)
    last = max(at for at, _ in timed)
    return {
        "processes": processes,
        "msgs_per_s": round(count / (last - started), 1),
        "durable_msgs_per_s": round(count / (finished - started), 1),
        "messages_timed": count,
        "before_settled": before + sum(n for at, n in batches if at < started),
        "seconds": round(last - started, 3),
        "durable_s": round(finished - started, 3),
        "settle_s": round(settled - joined, 2),
        "batches": len(timed),
        "cpu_pct": cpu.get("cpu_pct"),
        "others_pct": cpu.get("others_pct"),
    }


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_scaleout",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=30_000)
    parser.add_argument("--samples-per-message", type=int, default=10)
    parser.add_argument("--workers", default="archive,ubi",
                        help="comma-separated workers to time (default archive,ubi)")
    parser.add_argument("--processes", default="1,2",
                        help="comma-separated process counts (default 1,2)")
    parser.add_argument("--bootstrap", default=None,
                        help="existing Kafka (default: KAFKA_BOOTSTRAP_SERVERS, else a local one)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    args.source = "simulator"
    args.worker_names = [w.strip() for w in args.workers.split(",") if w.strip()]
    args.process_counts = sorted({int(p) for p in args.processes.split(",")})
    if args.messages < 1 or min(args.process_counts) < 1:
        parser.error("--messages and --processes must be positive")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json_only:
        console.quiet = True
    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
    loadavg = os.getloadavg()
    cleanup, tmp = bench_workspace(args.keep, "fleet-bench-scaleout-")
    result: dict[str, Any] = {"benchmark": "scaleout"}
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
            topic_partitions=PARTITIONS,
            archive_roll_seconds=1.0,
            ubi_checkpoint_s=1.0,
        )  # fmt: skip
        from core.db import upgrade
        from core.localkafka import ensure_topics

        asyncio.run(ensure_topics(bootstrap, {settings.telemetry_topic: PARTITIONS,
                                              settings.telemetry_dlq_topic: PARTITIONS}))
        result["machine"] = machine_record(kafka_version, loadavg, quiet)
        watch = {"broker": pid} if (pid := broker_pid(tmp)) else {}
        n = args.messages
        vehicles = max(1, min(1000, n // 50))
        say(f"generating and producing {n:,} simulator messages ({vehicles} vehicles, "
            f"{PARTITIONS} partitions)")
        filled = asyncio.run(prefill(settings, args, vehicles, int(time.time() * 1000) - 60_000,
                                     cleanup))
        total = asyncio.run(end_total(settings))
        result.update(messages=n, samples=filled["samples"], mb=round(filled["bytes"] / 1e6, 1),
                      partitions=PARTITIONS)

        say(f"native limit: {NATIVE_CLASS}")
        try:
            result["native"] = native_consume(settings, n, tmp, timeout_s=120 + n / 500)
            say(f"native: {result['native']['msgs_per_s']:,.0f} msg/s")
        except Exception as exc:  # noqa: BLE001 - report and go on
            errors.append(f"native: {type(exc).__name__}: {exc}")
            say(f"[red]native tool failed:[/] {exc}")
        say("bare aiokafka loop")
        bare = asyncio.run(consume_baseline(settings, n, f"bench.bare.{suffix}",
                                            {"bench": os.getpid(), **watch}))
        result["bare_aiokafka"] = {"msgs_per_s": round(n / bare["seconds"], 1),
                                   "cpu_pct": bare["cpu_pct"], "others_pct": bare["others_pct"]}
        native_rate = (result.get("native") or {}).get("msgs_per_s")
        bare_rate = result["bare_aiokafka"]["msgs_per_s"]

        for name in args.worker_names:
            runs: dict[str, Any] = {}
            for processes in args.process_counts:
                run_dir = tmp / f"{name}-{processes}"
                run_settings = settings.model_copy(update={
                    "data_dir": run_dir,
                    "database_url": f"sqlite:///{run_dir / 'fleet.db'}",
                    "archive_url": str(run_dir / "archive"),
                })
                run_dir.mkdir(parents=True)
                upgrade(run_settings)
                say(f"{name}: {processes} process(es) in one group")
                try:
                    run = asyncio.run(run_group(run_settings, name, processes, total,
                                                60 + n / 50, watch, cleanup))
                except Exception as exc:  # noqa: BLE001 - report and go on
                    errors.append(f"{name} x{processes}: {type(exc).__name__}: {exc}")
                    say(f"[red]{name} x{processes} failed:[/] {exc}")
                    continue
                run["ratio_vs_bare"] = round(run["msgs_per_s"] / bare_rate, 3)
                if native_rate:
                    run["ratio_vs_native"] = round(run["msgs_per_s"] / native_rate, 3)
                runs[str(processes)] = run
                say(f"{name} x{processes}: {run['msgs_per_s']:,.0f} msg/s "
                    f"(durable {run['durable_msgs_per_s']:,.0f}), settled in "
                    f"{run['settle_s']} s")
            if "1" in runs and "2" in runs:
                runs["ratio_2_over_1"] = round(runs["2"]["msgs_per_s"] / runs["1"]["msgs_per_s"],
                                               3)
            result[name] = runs
    except Exception as exc:  # noqa: BLE001 - still print the JSON line
        errors.append(f"setup: {type(exc).__name__}: {exc}")
        say(f"[red]benchmark failed:[/] {exc}")
    finally:
        cleanup.run()
    result["duration_s"] = round(time.perf_counter() - started, 1)
    if errors:
        result["errors"] = errors
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
