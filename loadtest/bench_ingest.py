"""Ingest throughput benchmark: prints ONE JSON line of figures on stdout.

    .venv/bin/python -m loadtest.bench_ingest [--messages 50000] [--samples-per-message 10]
        [--http-seconds 20] [--concurrency 32] [--bootstrap HOST:PORT] [--json-only]

What it measures (``docs/performance.md`` explains the figures):

1. Consumer: the telemetry topic (6 partitions) is pre-filled with N messages from the
   product's simulator (key = VIN; ``--source synthetic`` for the smaller model in
   ``loadtest/messages.py``). A bare aiokafka read loop (fresh group, ``getmany`` batches,
   touching every value) reads all N; then the product's validate-and-archive worker
   (``core.workers.build_runner(settings, "archive")``, fresh group) consumes, validates and
   archives all N to Parquet. Both are timed from the moment their partitions are assigned
   (group coordination excluded) until the last record is touched (baseline) or the roll that
   stores the last message has been written (ours: the worker is asked to stop as soon as it has
   processed N records, and its stop flushes the final roll; no idle wait is timed).
   ``ratio`` = ours / baseline. The archive is then read back: exactly N distinct message ids
   and one row per produced sample -> ``archived_ok``.
2. HTTP: one API process (``fleet api``) and, as a baseline, one uvicorn process serving a bare
   FastAPI endpoint (``loadtest/bare_app.py``) that only reads the body. The same load generator
   (``loadtest/loadgen.py``: another process, keep-alive connections, ``--concurrency``
   requests in flight, bodies built before timing) drives each for ``--http-seconds`` after a
   warm-up, with 100 samples per request. Only 202 answers count. ``ratio`` = ours / bare.
   CPU of the server, broker and client, and of everything else on the machine
   (``others_pct``), is reported so a run disturbed by other workloads can be told apart.

Everything runs in a temp dir (SQLite database, archive, broker state) with unique topic names;
a local Kafka broker is started on free ports unless ``--bootstrap``/``KAFKA_BOOTSTRAP_SERVERS``
names one. Every phase has a hard timeout; the broker and all child processes are stopped at exit.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import json
import logging
import multiprocessing as mp
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.localkafka import free_ports
from loadtest import loadgen
from loadtest.messages import check_valid, fleet_vins, generate_chunks, simulator_fleet_vins

GOALS = {"consumer_ratio_min": 0.5, "http_samples_per_s_min": 20_000}
HTTP_SAMPLES_PER_REQUEST = 100
REPO_ROOT = Path(__file__).resolve().parent.parent

console = Console(stderr=True, width=110)


# ------------------------------------------------------------------------------ housekeeping


class Cleanup:
    """Stop-actions run once, last registered first: from ``finally``, ``atexit`` or SIGTERM."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], object]]] = []

    def push(self, name: str, action: Callable[[], object]) -> None:
        self._actions.append((name, action))

    def run(self) -> None:
        while self._actions:
            name, action = self._actions.pop()
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - cleanup must go on
                console.print(f"[yellow]cleanup {name} failed:[/] {exc}")


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise SystemExit(143)


def say(message: str) -> None:
    console.print(f"[dim]{time.strftime('%H:%M:%S')}[/] {message}")


def wait_quiet(limit_s: float, busy_max: float = 25.0) -> tuple[float, float | None]:
    """Wait (at most ``limit_s``) until the machine was < ``busy_max`` % busy for 2 s; returns
    (seconds waited, last busy %)."""
    started = time.monotonic()
    busy: float | None = None
    while True:
        before = loadgen.machine_jiffies()
        time.sleep(2.0)
        busy = loadgen.machine_busy_pct(before, loadgen.machine_jiffies())
        waited = time.monotonic() - started
        if busy is None or busy < busy_max or waited >= limit_s:
            return waited, busy
        say(f"machine {busy:.0f}% busy (other processes); waiting for it to calm down")


def bench_workspace(keep: bool, prefix: str) -> tuple[Cleanup, Path]:
    """What every broker benchmark sets up first: quiet Kafka client logs, a cleanup stack run
    at exit and on SIGTERM, and a temp dir (removed at the end unless ``keep``)."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("aiokafka").setLevel(logging.ERROR)
    # A fresh broker creates __consumer_offsets on the first join; aiokafka logs that retry.
    logging.getLogger("aiokafka.consumer.group_coordinator").setLevel(logging.CRITICAL)
    cleanup = Cleanup()
    atexit.register(cleanup.run)
    signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    if keep:
        say(f"keeping {tmp}")
    else:
        cleanup.push("temp dir", lambda: shutil.rmtree(tmp, ignore_errors=True))
    return cleanup, tmp


def bench_kafka(
    requested: str | None, base: Settings, tmp: Path, cleanup: Cleanup
) -> tuple[str, str]:
    """(bootstrap, Kafka version): the requested or configured cluster ("external"), else a
    local broker started for this run."""
    bootstrap = requested or base.kafka_bootstrap_servers
    if bootstrap:
        say(f"using Kafka at {bootstrap}")
        return bootstrap, "external"
    say("starting a local Kafka broker")
    return start_kafka(base, tmp, cleanup, timeout_s=120.0)


def bench_settings(base: Settings, tmp: Path, bootstrap: str, **overrides: Any) -> Settings:
    """Settings of a benchmark run: everything under ``tmp``, a SQLite database there."""
    return base.model_copy(update={
        "data_dir": tmp,
        "database_url": f"sqlite:///{tmp / 'fleet.db'}",
        "kafka_bootstrap_servers": bootstrap,
        **overrides,
    })


def machine_record(
    kafka_version: str,
    loadavg: tuple[float, float, float],
    quiet: tuple[float, float | None] | None,
) -> dict[str, Any]:
    """:func:`machine_info` plus how long the run waited for a quiet machine."""
    machine = machine_info(kafka_version, loadavg)
    if quiet is not None:
        machine["quiet_wait"] = {"waited_s": round(quiet[0], 1), "busy_pct": quiet[1]}
    return machine


def machine_info(kafka_version: str, loadavg: tuple[float, float, float]) -> dict[str, Any]:
    cpu = ""
    mem_gib: float | None = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kafka": kafka_version,
        "loadavg_at_start": [round(x, 2) for x in loadavg],
    }


# ------------------------------------------------------------------------------------ Kafka


def start_kafka(base: Settings, tmp: Path, cleanup: Cleanup, timeout_s: float) -> tuple[str, str]:
    """A local broker on free ports in ``tmp``; returns (bootstrap, version)."""
    from core.localkafka import LocalKafka

    port, controller = free_ports(2)
    settings = base.model_copy(update={
        "kafka_bootstrap_servers": "",
        "kafka_local_port": port,
        "kafka_local_controller_port": controller,
        "data_dir": tmp,
    })
    local = LocalKafka(settings, state_dir=tmp / "kafka", stop_with_parent=True)
    cleanup.push("kafka", lambda: local.down(timeout_s=20.0))
    bootstrap = local.up(timeout_s=timeout_s, progress=lambda m: say(f"kafka: {m}"))
    return bootstrap, local.version


def broker_pid(tmp: Path) -> int | None:
    with contextlib.suppress(OSError, ValueError):
        return int((tmp / "kafka" / "kafka.pid").read_text().strip())
    return None


async def delete_topics(bootstrap: str, topics: list[str]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="fleet-bench-cleanup")
    await admin.start()
    try:
        await admin.delete_topics(topics)
    finally:
        await admin.close()


# ----------------------------------------------------------------------- consumer benchmark


async def prefill(
    settings: Settings, args: argparse.Namespace, vehicles: int, end_ms: int, cleanup: Cleanup
) -> dict[str, Any]:
    """Produce ``args.messages`` messages (key = VIN) with the product's producer settings.

    The messages are generated in another process (the simulator is CPU-bound) and handed over
    in chunks, so generating and producing overlap; none of this is timed."""
    from core.runner import make_producer

    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue(maxsize=8)
    proc = ctx.Process(
        target=generate_chunks, daemon=True, name="generator",
        args=(args.source, args.messages, vehicles, args.samples_per_message, args.seed, end_ms,
              queue),
    )
    proc.start()

    def kill() -> None:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)

    cleanup.push("generator", kill)
    producer = make_producer(settings)
    await producer.start()
    ids: set[str] = set()
    size = samples = signals = 0
    started = time.perf_counter()
    try:
        while True:
            chunk = await asyncio.to_thread(queue.get, True, 120.0)
            if chunk is None:
                break
            if isinstance(chunk, str):
                raise RuntimeError(f"message generator failed: {chunk}")
            if not ids:
                problems = check_valid(chunk[0][2])
                if problems:
                    raise RuntimeError(f"generated message is invalid: {problems[:3]}")
            pending = []
            for vin, message_id, raw, n_samples, n_signals in chunk:
                ids.add(message_id)
                size += len(raw)
                samples += n_samples
                signals += n_signals
                pending.append(await producer.send(settings.telemetry_topic, raw,
                                                   key=vin.encode()))
            await asyncio.gather(*pending)
    finally:
        await producer.stop()
        kill()
    return {"ids": ids, "bytes": size, "samples": samples, "signals": signals,
            "seconds": time.perf_counter() - started}


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.at: float | None = None

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned and self.at is None:
            self.at = time.perf_counter()


async def consume_baseline(
    settings: Settings, count: int, group: str, watch: dict[str, int]
) -> dict[str, Any]:
    """A bare aiokafka loop with the runner's fetch settings: read all, touch every value."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=4 * 1_048_576,
        fetch_max_bytes=32 * 1_048_576,
        isolation_level="read_committed",
        client_id="fleet-bench-baseline",
    )
    listener = _Assigned()
    started = time.perf_counter()
    window = loadgen.CpuWindow(watch)
    await consumer.start()
    try:
        consumer.subscribe([settings.telemetry_topic], listener=listener)
        seen = 0
        size = 0
        while seen < count:
            batch = await consumer.getmany(
                timeout_ms=settings.consumer_poll_timeout_ms,
                max_records=settings.consumer_max_records,
            )
            for records in batch.values():
                for record in records:
                    size += len(record.value)
                    seen += 1
        finished = time.perf_counter()
        cpu = window.stop()
    finally:
        await consumer.stop()
    assert listener.at is not None
    return {"messages": seen, "bytes": size, "seconds": finished - listener.at,
            "wall_s": finished - started, **cpu}


def stop_after(runner: Any, count: int) -> dict[str, float]:
    """Instrument a worker without changing what it does: ``marks["assigned"]`` when it gets
    partitions, ``marks["consumed"]`` when it has processed ``count`` records, and then a stop
    (the loop drains through ``flush_and_commit``)."""
    handler: Any = runner.handler
    marks: dict[str, float] = {}
    seen = 0
    orig_assigned, orig_process = handler.on_assigned, handler.process

    async def on_assigned(partitions: set[TopicPartition]) -> None:
        marks.setdefault("assigned", time.perf_counter())
        await orig_assigned(partitions)

    async def process(batch: Any) -> Any:
        nonlocal seen
        result = await orig_process(batch)
        seen += sum(len(records) for records in batch.values())
        marks["seen"] = seen
        if seen >= count and "consumed" not in marks:
            marks["consumed"] = time.perf_counter()
            runner.stop()
        return result

    handler.on_assigned, handler.process = on_assigned, process
    return marks


async def run_bounded(runner: Any, timeout_s: float, failure: Callable[[], str]) -> Any:
    """Run a worker (which the caller's instrumentation stops) for at most ``timeout_s``."""
    task = asyncio.create_task(runner.run(until_idle_s=15.0))
    try:
        return await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        runner.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30.0)
        raise TimeoutError(failure()) from None


async def consume_ours(
    settings: Settings, count: int, group: str, timeout_s: float, watch: dict[str, int]
) -> dict[str, Any]:
    """The archive worker, instrumented without changing what it does: the clock starts when
    its partitions are assigned and stops when the roll holding message N is stored."""
    from core.workers import build_runner

    runner = build_runner(settings, "archive", group_id=group)
    handler: Any = runner.handler
    marks = stop_after(runner, count)  # the drain's flush_and_commit() writes the last roll
    orig_roll = handler.roll

    async def roll() -> None:
        await orig_roll()
        if handler.archived_messages >= count and "archived" not in marks:
            marks["archived"] = time.perf_counter()

    handler.roll = roll
    started = time.perf_counter()
    window = loadgen.CpuWindow(watch)
    stats = await run_bounded(
        runner, timeout_s,
        lambda: f"archive worker did not archive {count} messages in {timeout_s:.0f} s "
                f"(archived {handler.archived_messages})")
    finished = time.perf_counter()
    cpu = window.stop()
    end = marks.get("archived", finished)
    return {
        **cpu,
        "seconds": end - marks["assigned"],
        "consumed_s": marks.get("consumed", finished) - marks["assigned"],
        "wall_s": finished - started,
        "archived_messages": handler.archived_messages,
        "rolls": handler.rolls,
        "processed": stats.processed,
        "dead_lettered": stats.dead_lettered,
        "duplicates": stats.duplicates,
        "batches": stats.batches,
        "commits": stats.commits,
    }


def _archive_process(settings: Settings, group: str, events: Any) -> None:
    """One archive worker process of a consumer group (what ``fleet worker archive`` runs),
    reporting when it first gets partitions; stops on SIGTERM after draining."""
    from core.workers import build_runner

    runner = build_runner(settings, "archive", group_id=group)
    handler: Any = runner.handler
    original = handler.on_assigned

    async def on_assigned(partitions: set[TopicPartition]) -> None:
        events.put(time.time())
        await original(partitions)

    handler.on_assigned = on_assigned

    async def main() -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, runner.stop)
        await runner.run()

    asyncio.run(main())


async def consume_ours_processes(
    settings: Settings, samples: int, processes: int, timeout_s: float
) -> dict[str, Any]:
    """``processes`` archive workers in one consumer group (the scale-out path): the clock
    starts when the first gets partitions and stops when the archive holds every sample."""
    from ingestion.archive import ParquetArchive

    ctx = mp.get_context("spawn")
    events = ctx.Queue()
    group = f"bench.archive.{uuid.uuid4().hex[:8]}"
    workers = [
        ctx.Process(target=_archive_process, args=(settings, group, events), daemon=True)
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    archive = ParquetArchive(settings.archive_location)
    first: float | None = None
    finished: float | None = None
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and finished is None:
            while not events.empty():
                at = events.get()
                first = at if first is None else min(first, at)
            if first is not None and archive.dataset().count_rows() >= samples:
                finished = time.time()
            await asyncio.sleep(0.05)
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            worker.join(30)
    if first is None or finished is None:
        raise TimeoutError(f"{processes} archive processes did not finish in {timeout_s:.0f} s")
    return {"seconds": finished - first}


def verify_archive(settings: Settings, ids: set[str], samples: int) -> dict[str, Any]:
    """Exactly the produced message ids, and one row per produced sample."""
    from ingestion.archive import ParquetArchive

    table = ParquetArchive(settings.archive_location).dataset().to_table(columns=["message_id"])
    stored = table["message_id"].to_pylist()
    distinct = set(stored)
    ok = distinct == ids and len(stored) == samples
    return {"archived_ok": ok, "archived_rows": len(stored), "archived_ids": len(distinct)}


async def consumer_benchmark(
    settings: Settings, args: argparse.Namespace, cleanup: Cleanup, watch: dict[str, int]
) -> dict[str, Any]:
    watch = {"bench": os.getpid(), **watch}
    n, spm = args.messages, args.samples_per_message
    vehicles = max(1, min(1000, n // 50))
    end_ms = int(time.time() * 1000) - 60_000
    say(f"consumer: generating ({args.source}) and producing {n:,} messages "
        f"({spm} samples each, {vehicles} vehicles) to {settings.telemetry_topic}")
    async with asyncio.timeout(60 + n / 250):
        filled = await prefill(settings, args, vehicles, end_ms, cleanup)
    say(f"consumer: prefilled {filled['bytes'] / 1e6:,.0f} MB in {filled['seconds']:.1f} s")

    say("consumer: baseline (bare aiokafka loop)")
    cpu0 = time.process_time()
    async with asyncio.timeout(30 + n / 500):
        base = await consume_baseline(settings, n, f"bench.baseline.{uuid.uuid4().hex[:8]}",
                                      watch)
    base_cpu = time.process_time() - cpu0
    say(f"consumer: baseline read {n:,} in {base['seconds']:.2f} s")

    say("consumer: ours (validate-and-archive worker)")
    cpu0 = time.process_time()
    ours = await consume_ours(settings, n, f"bench.archive.{uuid.uuid4().hex[:8]}",
                              timeout_s=60 + n / 100, watch=watch)
    ours_cpu = time.process_time() - cpu0
    say(f"consumer: ours archived {ours['archived_messages']:,} in {ours['seconds']:.2f} s")
    check = verify_archive(settings, filled["ids"], filled["samples"])

    scaled: dict[str, Any] = {}
    if args.processes > 1:
        many = settings.model_copy(update={
            "archive_url": str(Path(settings.archive_location).with_name("archive-scaled")),
            "archive_roll_seconds": 1.0,
        })
        say(f"consumer: {args.processes} archive worker processes in one group")
        run = await consume_ours_processes(many, filled["samples"], args.processes,
                                           timeout_s=60 + n / 100)
        scaled_check = verify_archive(many, filled["ids"], filled["samples"])
        rate = n / run["seconds"]
        scaled = {
            "processes": args.processes,
            "msgs_per_s": round(rate, 1),
            "ratio": round(rate / (n / base["seconds"]), 3),
            "archived_ok": scaled_check["archived_ok"],
        }
        say(f"consumer: {args.processes} processes archived everything in {run['seconds']:.2f} s")

    base_rate = n / base["seconds"]
    ours_rate = n / ours["seconds"]
    return {
        "source": args.source,
        "messages": n,
        "samples_per_message": spm,
        "samples": filled["samples"],
        "signals_per_sample": round(filled["signals"] / max(1, filled["samples"]), 1),
        "vehicles": vehicles,
        "partitions": settings.topic_partitions,
        "mb": round(filled["bytes"] / 1e6, 1),
        "prefill_s": round(filled["seconds"], 2),
        "baseline_s": round(base["seconds"], 3),
        "baseline_msgs_per_s": round(base_rate, 1),
        "baseline_samples_per_s": round(base_rate * filled["samples"] / n, 1),
        "baseline_mb_per_s": round(filled["bytes"] / 1e6 / base["seconds"], 1),
        "ours_s": round(ours["seconds"], 3),
        "ours_consumed_s": round(ours["consumed_s"], 3),
        "ours_msgs_per_s": round(ours_rate, 1),
        "ours_samples_per_s": round(ours_rate * filled["samples"] / n, 1),
        "ratio": round(ours_rate / base_rate, 3),
        "baseline_cpu_us_per_msg": round(base_cpu / n * 1e6, 1),
        "ours_cpu_us_per_msg": round(ours_cpu / n * 1e6, 1),
        "cpu_pct": {"baseline": base["cpu_pct"], "ours": ours["cpu_pct"]},
        "others_pct": {"baseline": base["others_pct"], "ours": ours["others_pct"]},
        "rolls": ours["rolls"],
        "dead_lettered": ours["dead_lettered"],
        "duplicates": ours["duplicates"],
        **check,
        "scaled_out": scaled,
    }


# --------------------------------------------------------------------------- HTTP benchmark


class ServerExited(RuntimeError):
    """The server process exited before it answered ``/readyz``."""


class Server:
    """One uvicorn server process (ours or the bare baseline), killed at exit."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], port: int, log_path: Path):
        self.name, self.cmd, self.env, self.port, self.log_path = name, cmd, env, port, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(
                self.cmd, env=self.env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=loadgen.die_with_parent,
            )

    def wait_ready(self, timeout_s: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout_s
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ServerExited(f"{self.name} exited with code {self.proc.returncode}: "
                                       f"{self.log_tail()}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/readyz").status_code == 200:
                        return
                time.sleep(0.2)
        raise TimeoutError(f"{self.name} not ready within {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10.0)


def create_vehicles(settings: Settings, vins: list[str]) -> list[tuple[str, str]]:
    """Vehicle principals with one credential each, written straight into the database."""
    from core.auth.service import create_principal_with_credential
    from core.db import make_engine, session_scope

    engine = make_engine(settings)
    out = []
    try:
        with session_scope(engine) as session:
            for vin in vins:
                _, token = create_principal_with_credential(
                    session, f"bench-vehicle-{vin}", "vehicle", vin=vin
                )
                out.append((vin, token))
    finally:
        engine.dispose()
    return out


def drive_load(cfg: loadgen.LoadConfig, timeout_s: float, cleanup: Cleanup) -> dict[str, Any]:
    """Run the load generator in a fresh (spawned) process and return its figures."""
    ctx = mp.get_context("spawn")
    queue: Any = ctx.Queue()
    proc = ctx.Process(target=loadgen.main, args=(cfg, queue), daemon=True, name="loadgen")
    proc.start()

    def kill() -> None:
        if proc.is_alive():
            proc.kill()
            proc.join(5.0)

    cleanup.push("loadgen", kill)
    try:
        status, payload = queue.get(timeout=timeout_s)
    except Exception as exc:  # queue.Empty
        raise TimeoutError(f"load generator gave no result within {timeout_s:.0f} s") from exc
    finally:
        proc.join(10.0)
        kill()
    if status != "ok":
        raise RuntimeError(f"load generator failed: {payload}")
    return payload  # type: ignore[no-any-return]


def http_run(
    server: Server,
    vehicles: list[tuple[str, str]],
    args: argparse.Namespace,
    watch: dict[str, int],
    cleanup: Cleanup,
    end_ms: int,
) -> dict[str, Any]:
    cleanup.push(f"server {server.name}", server.stop)
    server.start()
    try:
        server.wait_ready(90.0)
        assert server.proc is not None
        say(f"http: {server.name} ready on {server.url}; {args.warmup_seconds:g} s warm-up, "
            f"{args.http_seconds:g} s load at concurrency {args.concurrency}")
        cfg = loadgen.LoadConfig(
            base_url=server.url,
            vehicles=vehicles,
            samples_per_request=HTTP_SAMPLES_PER_REQUEST,
            concurrency=args.concurrency,
            warmup_s=args.warmup_seconds,
            duration_s=args.http_seconds,
            seed=args.seed + 1,
            end_ms=end_ms,
            run_tag=f"{server.name}-{uuid.uuid4().hex[:8]}",
            client=args.client,
            source=args.source,
            fleet_seed=args.seed + 1,
            watch_pids={"server": server.proc.pid, **watch},
        )
        return drive_load(cfg, args.http_seconds + args.warmup_seconds + 120.0, cleanup)
    finally:
        server.stop()


def http_benchmark(
    settings: Settings, args: argparse.Namespace, tmp: Path, watch: dict[str, int],
    cleanup: Cleanup,
) -> dict[str, Any]:
    say(f"http: creating {args.vehicles} vehicle principals")
    fleet_seed = args.seed + 1
    if args.source == "simulator":
        vins = simulator_fleet_vins(args.vehicles, seed=fleet_seed)
    else:
        vins = fleet_vins(args.vehicles, seed=fleet_seed)
    vehicles = create_vehicles(settings, vins)
    env = {
        **os.environ,
        "FLEET_DATA_DIR": str(tmp),
        "DATABASE_URL": settings.sqlalchemy_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.bootstrap_servers,
        "FLEET_TELEMETRY_TOPIC": settings.telemetry_topic,
        "FLEET_TELEMETRY_DLQ_TOPIC": settings.telemetry_dlq_topic,
        "PYTHONPATH": str(REPO_ROOT),
    }
    env.pop("FLEET_DATABASE_URL", None)
    env.pop("FLEET_KAFKA_BOOTSTRAP_SERVERS", None)
    ours_port, bare_port = free_ports(2)
    end_ms = int(time.time() * 1000) - 60_000
    uvicorn_opts = ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning",
                    "--no-access-log"]
    fleet = Path(sys.executable).with_name("fleet")
    candidates = [
        ("fleet api", [str(fleet), "api", "--host", "127.0.0.1", "--port", str(ours_port)]),
        ("uvicorn core.app:app_factory",
         [sys.executable, "-m", "uvicorn", "--factory", "core.app:app_factory",
          *(o.format(port=ours_port) for o in uvicorn_opts)]),
    ]
    ours: dict[str, Any] | None = None
    server_cmd = ""
    for attempt, (label, cmd) in enumerate(candidates):
        server = Server("api", cmd, env, ours_port, tmp / f"api-{attempt}.log")
        try:
            ours = http_run(server, vehicles, args, watch, cleanup, end_ms)
            server_cmd = label
            break
        except ServerExited as exc:
            say(f"[yellow]http: `{label}` did not start[/] ({str(exc).splitlines()[-1]}); "
                "trying the next way to serve the API")
    if ours is None:
        raise RuntimeError("the API could not be started")
    say(f"http: ours {ours['samples_per_s']:,.0f} samples/s, p95 {ours['p95_ms']} ms")

    bare_server = Server(
        "bare", [sys.executable, "-m", "uvicorn", "loadtest.bare_app:app",
                 *(o.format(port=bare_port) for o in uvicorn_opts)],
        env, bare_port, tmp / "bare.log",
    )
    bare_error = None
    try:
        bare = http_run(bare_server, vehicles, args, watch, cleanup, end_ms)
        say(f"http: bare {bare['samples_per_s']:,.0f} samples/s, p95 {bare['p95_ms']} ms")
    except Exception as exc:  # noqa: BLE001 - keep our figures, report the baseline's failure
        bare_error = f"{type(exc).__name__}: {exc}"
        say(f"[red]http: the bare baseline failed:[/] {bare_error}")
        bare = dict.fromkeys(("requests_per_s", "samples_per_s", "p95_ms", "errors", "cpu_pct",
                              "others_pct"))
    result = {
        "server": server_cmd,
        "client": args.client,
        "vehicles": len(vehicles),
        "samples_per_request": HTTP_SAMPLES_PER_REQUEST,
        "source": args.source,
        "body_bytes": ours["body_bytes"],
        "signals_per_sample": ours["signals_per_sample"],
        "concurrency": args.concurrency,
        "seconds": ours["seconds"],
        "requests": ours["requests"],
        "requests_per_s": ours["requests_per_s"],
        "samples_per_s": ours["samples_per_s"],
        "p50_ms": ours["p50_ms"],
        "p95_ms": ours["p95_ms"],
        "p99_ms": ours["p99_ms"],
        "errors": ours["errors"],
        "errors_by_status": ours["errors_by_status"],
        "cpu_pct": ours["cpu_pct"],
        "others_pct": ours["others_pct"],
        "bare_requests_per_s": bare["requests_per_s"],
        "bare_samples_per_s": bare["samples_per_s"],
        "bare_p95_ms": bare["p95_ms"],
        "bare_errors": bare["errors"],
        "bare_cpu_pct": bare["cpu_pct"],
        "bare_others_pct": bare["others_pct"],
        "ratio": round(ours["samples_per_s"] / bare["samples_per_s"], 3)
        if bare["samples_per_s"] else None,
    }
    if bare_error:
        result["bare_error"] = bare_error
    return result


# ------------------------------------------------------------------------------------ main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m loadtest.bench_ingest",
        description="Ingest throughput benchmark (consumer and HTTP); prints one JSON line.",
    )
    parser.add_argument("--messages", type=int, default=50_000,
                        help="messages pre-filled and consumed (default 50000)")
    parser.add_argument("--samples-per-message", type=int, default=10)
    parser.add_argument("--http-seconds", type=float, default=20.0,
                        help="timed load per HTTP server (default 20)")
    parser.add_argument("--warmup-seconds", type=float, default=3.0,
                        help="untimed load before each HTTP measurement (default 3)")
    parser.add_argument("--concurrency", type=int, default=32, help="HTTP requests in flight")
    parser.add_argument("--vehicles", type=int, default=300, help="vehicle credentials for HTTP")
    parser.add_argument("--client", choices=("raw", "httpx"), default="raw",
                        help="HTTP load client (default raw asyncio; see loadtest/loadgen.py)")
    parser.add_argument("--bootstrap", default=None,
                        help="existing Kafka (default: KAFKA_BOOTSTRAP_SERVERS, else a local one)")
    parser.add_argument("--only", choices=("consumer", "http"), default=None,
                        help="run only one of the two benchmarks")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--processes", type=int, default=2,
                        help="also time this many archive worker processes in one group "
                             "(1 = only the single-process run)")
    parser.add_argument("--source", choices=("simulator", "synthetic"), default="simulator",
                        help="message generator (default: the product's simulator)")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, archive)")
    parser.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to SECONDS for the machine to be idle (< 25%% busy)")
    parser.add_argument("--json-only", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.messages < 1 or args.samples_per_message < 1 or args.concurrency < 1:
        parser.error("--messages, --samples-per-message and --concurrency must be positive")
    return args


def summary_table(result: dict[str, Any]) -> Table:
    table = Table("figure", "ours", "baseline", "ratio", "goal", "met", title="ingest benchmark")
    c, h, met = result.get("consumer"), result.get("http"), result["met"]
    if c:
        table.add_row("consumer msgs/s", f"{c['ours_msgs_per_s']:,.0f}",
                      f"{c['baseline_msgs_per_s']:,.0f}", f"{c['ratio']:.3f}",
                      f">= {GOALS['consumer_ratio_min']}", str(met.get("consumer_ratio")))
        table.add_row("consumer samples/s", f"{c['ours_samples_per_s']:,.0f}",
                      f"{c['baseline_samples_per_s']:,.0f}", "", "", "")
        table.add_row("archived_ok", str(c["archived_ok"]), "", "", "", "")
        table.add_row("other processes, % of a core", str(c["others_pct"]["ours"]),
                      str(c["others_pct"]["baseline"]), "", "", "")
    if h:
        table.add_row("HTTP samples/s", f"{h['samples_per_s']:,.0f}",
                      f"{h['bare_samples_per_s'] or 0:,.0f}", f"{h['ratio']}",
                      f">= {GOALS['http_samples_per_s_min']:,}", str(met.get("http_samples_per_s")))
        table.add_row("HTTP requests/s", f"{h['requests_per_s']:,.0f}",
                      f"{h['bare_requests_per_s'] or 0:,.0f}", "", "", "")
        table.add_row("HTTP p50/p95/p99 ms", f"{h['p50_ms']}/{h['p95_ms']}/{h['p99_ms']}",
                      f"p95 {h['bare_p95_ms']}", "", "", "")
        table.add_row("HTTP errors", f"{h['errors']} {h['errors_by_status']}",
                      str(h["bare_errors"]), "", "", "")
        table.add_row("HTTP server CPU %", str(h["cpu_pct"].get("server")),
                      str((h["bare_cpu_pct"] or {}).get("server")), "", "", "")
        table.add_row("other processes, % of a core", str(h["others_pct"]),
                      str(h["bare_others_pct"]), "", "", "")
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.json_only:
        console.quiet = True
    quiet: tuple[float, float | None] | None = None
    if args.wait_quiet > 0:
        quiet = wait_quiet(args.wait_quiet)
    loadavg = os.getloadavg()
    cleanup, tmp = bench_workspace(args.keep, "fleet-bench-")
    result: dict[str, Any] = {"benchmark": "ingest"}
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
            archive_url="",
            topic_partitions=6,
        )  # fmt: skip
        http_settings = settings.model_copy(update={
            "telemetry_topic": f"telemetry.v1.{suffix}-http",
            "telemetry_dlq_topic": f"telemetry.dlq.{suffix}-http",
        })
        topics = {t: 6 for s in (settings, http_settings)
                  for t in (s.telemetry_topic, s.telemetry_dlq_topic)}
        from core.db import upgrade
        from core.localkafka import ensure_topics

        asyncio.run(ensure_topics(bootstrap, topics))
        if kafka_version == "external":
            cleanup.push("topics", lambda: asyncio.run(delete_topics(bootstrap, list(topics))))
        upgrade(settings)
        result["machine"] = machine_record(kafka_version, loadavg, quiet)
        result["topics"] = {"telemetry": settings.telemetry_topic,
                            "http": http_settings.telemetry_topic, "partitions": 6}

        watch = {"broker": pid} if (pid := broker_pid(tmp)) else {}
        if args.only in (None, "consumer"):
            try:
                result["consumer"] = asyncio.run(
                    consumer_benchmark(settings, args, cleanup, watch))
            except Exception as exc:  # noqa: BLE001 - report and go on with HTTP
                errors.append(f"consumer: {type(exc).__name__}: {exc}")
                say(f"[red]consumer benchmark failed:[/] {exc}")
        if args.only in (None, "http"):
            try:
                result["http"] = http_benchmark(http_settings, args, tmp, watch, cleanup)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"http: {type(exc).__name__}: {exc}")
                say(f"[red]HTTP benchmark failed:[/] {exc}")
    except Exception as exc:  # noqa: BLE001 - still print the JSON line
        errors.append(f"setup: {type(exc).__name__}: {exc}")
        say(f"[red]benchmark setup failed:[/] {exc}")
    finally:
        cleanup.run()

    consumer, http = result.get("consumer"), result.get("http")
    result["goals"] = GOALS
    result["met"] = {
        "consumer_ratio": None if consumer is None else bool(
            consumer["archived_ok"] and consumer["ratio"] >= GOALS["consumer_ratio_min"]),
        "http_samples_per_s": None if http is None else bool(
            http["samples_per_s"] >= GOALS["http_samples_per_s_min"]),
    }
    result["duration_s"] = round(time.perf_counter() - started, 1)
    if errors:
        result["errors"] = errors
    console.print(summary_table(result))
    print(json.dumps(result, separators=(",", ":")), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
