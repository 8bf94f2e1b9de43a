"""Where the ingest time goes: stage timings of the archive worker and of the HTTP handler.

    .venv/bin/python -m loadtest.profile_ingest consumer [--messages 20000] [--pyinstrument]
    .venv/bin/python -m loadtest.profile_ingest http [--requests 500]
    .venv/bin/python -m loadtest.profile_ingest api [--seconds 15] [--ablations full,...]

``consumer`` feeds generated records (no Kafka) through the product's code one stage at a time
(msgspec decode, validation, ``RowBuffer.add``, ``RowBuffer.to_table``, ``write_roll``; the
typed ``FastValidator``; the native decoder and its ``to_table``), then through
``ArchiveHandler.process`` + ``flush`` as the worker does (native decoder, then Python), and
prints seconds and messages/s per stage. ``http`` does the same for the per-request CPU of
``POST /v1/telemetry`` (decode, validation, token fingerprint, response) and times a what-if:
a decoder typed from the catalog that does the validation in C (:func:`typed_decoder`).
``api`` serves the real API in this process on a local broker, loads it with
``loadtest.loadgen`` from another process and measures server CPU per request with parts of the
handler switched off (ablations), and optionally a pyinstrument profile. These are diagnostics
for ``docs/performance.md``, not the benchmark.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import multiprocessing as mp
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from rich.console import Console
from rich.table import Table

from core.config import Settings
from core.signals import CATALOG
from core.telemetry import decode
from ingestion.validation import Limits, Validator
from loadtest.messages import (
    Source,
    fleet_vins,
    http_templates,
    iter_source,
    simulator_fleet_vins,
    simulator_templates,
)

console = Console(stderr=True, width=150)


@contextlib.contextmanager
def _profiler(enabled: bool, interval: float = 0.001) -> Iterator[None]:
    if not enabled:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(interval=interval, async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        console.print(profiler.output_text(unicode=True, color=False, show_all=False))


def _timed(rows: list[tuple[str, float, int]], name: str, units: int,
           fn: Callable[[], Any]) -> Any:
    started = time.perf_counter()
    value = fn()
    rows.append((name, time.perf_counter() - started, units))
    return value


def _report(title: str, rows: list[tuple[str, float, int]], unit: str) -> None:
    table = Table("stage", "seconds", f"{unit}/s", f"µs per {unit}", title=title)
    for name, seconds, units in rows:
        table.add_row(name, f"{seconds:.3f}", f"{units / seconds:,.0f}" if seconds else "-",
                      f"{seconds / units * 1e6:,.1f}" if units else "-")
    console.print(table)


def typed_decoder(catalog: Any = CATALOG) -> Any:
    """What-if (not product code): a msgspec decoder whose ``signals`` is a Struct generated
    from the catalog, so decoding also checks unknown signals, types, ranges and enumerations
    in C. A record it rejects would go through today's ``decode`` + ``Validator`` to get the
    exact error list; one difference: an explicit JSON ``null`` would read as "absent"."""
    from typing import Annotated, Literal

    import msgspec

    from core.signals import integer_bounds

    def field_type(spec: Any) -> Any:
        lo, hi = spec.min, spec.max
        bounds = integer_bounds(spec.datatype)
        if bounds is not None:
            lo = bounds[0] if lo is None else max(lo, bounds[0])
            hi = bounds[1] if hi is None else min(hi, bounds[1])
        limits: dict[str, Any] = {k: v for k, v in (("ge", lo), ("le", hi)) if v is not None}
        kind = spec.kind
        if kind == "float":
            typ: Any = Annotated[float, msgspec.Meta(**limits)] if limits else float
        elif kind == "int":
            int_limits: dict[str, Any] = {k: int(v) for k, v in limits.items()}
            typ = Annotated[int, msgspec.Meta(**int_limits)]
        elif kind == "bool":
            typ = bool
        elif kind == "string":
            typ = Literal[tuple(spec.allowed)] if spec.allowed else str  # type: ignore[misc]
        else:
            typ = list[str]
        return typ | None

    paths = list(catalog)
    signals = msgspec.defstruct(
        "Signals", [(f"s{i}", field_type(catalog[p]), None) for i, p in enumerate(paths)],
        rename={f"s{i}": p for i, p in enumerate(paths)}, forbid_unknown_fields=True, gc=False)
    sample = msgspec.defstruct("Sample", [("ts", int), ("signals", signals)],
                               forbid_unknown_fields=True, gc=False)
    message = msgspec.defstruct(
        "Message", [("vin", str), ("message_id", str), ("seq", int), ("samples", list[sample]),  # type: ignore[valid-type]
                    ("v", int, 1), ("sent_at", int | None, None)], forbid_unknown_fields=True)
    return msgspec.json.Decoder(message)


def profile_consumer(messages: int, samples: int, source: Source, use_pyinstrument: bool) -> None:
    from ingestion import columnar
    from ingestion.archive import ParquetArchive, RowBuffer
    from ingestion.columnar import ColumnarBuffer, DecoderSpec
    from ingestion.validation import FastValidator
    from ingestion.worker import build_archive_handler

    now_ms = int(time.time() * 1000)
    raws = [(vin, raw) for vin, _, raw, _, _ in iter_source(
        source, messages, vehicles=max(1, min(1000, messages // 50)),
        samples_per_message=samples, seed=0, end_ms=now_ms - 60_000)]
    topic = "telemetry.v1.profile"
    records = [
        ConsumerRecord(topic, i % 6, i // 6, now_ms, 0, vin.encode(), raw, None, len(vin),
                       len(raw), [])
        for i, (vin, raw) in enumerate(raws)
    ]
    mb = sum(len(raw) for _, raw in raws) / 1e6
    console.print(f"{messages:,} {source} messages, {mb:,.0f} MB, {samples} samples each")
    tmp = Path(tempfile.mkdtemp(prefix="fleet-profile-"))
    try:
        settings = Settings(data_dir=tmp, archive_url=str(tmp / "handler"))
        batch_size, roll_bytes = settings.consumer_max_records, settings.archive_roll_bytes
        validator = Validator(CATALOG, Limits())
        archive = ParquetArchive(str(tmp / "stages"))
        # Stage by stage, batch by batch and roll by roll as the worker does (so the garbage
        # collector sees what it sees in the worker: one batch of decoded messages at a time).
        spent = dict.fromkeys(("decode", "validate", "add", "to_table", "write_roll"), 0.0)
        buffer = RowBuffer()

        def roll() -> None:
            nonlocal buffer
            started = time.perf_counter()
            buffer.to_table(archive.schema)
            spent["to_table"] += time.perf_counter() - started
            started = time.perf_counter()
            archive.write_roll(buffer)
            spent["write_roll"] += time.perf_counter() - started
            buffer = RowBuffer()

        for first in range(0, messages, batch_size):
            chunk = records[first:first + batch_size]
            t0 = time.perf_counter()
            decoded = [decode(r.value) for r in chunk]
            t1 = time.perf_counter()
            for message in decoded:
                validator.validate(message, now_ms)
            t2 = time.perf_counter()
            for record, message in zip(chunk, decoded, strict=True):
                buffer.add(message, topic=topic, partition=record.partition,
                           offset=record.offset, received_at=record.timestamp,
                           catalog=archive.catalog, size=len(record.value))
            t3 = time.perf_counter()
            spent["decode"] += t1 - t0
            spent["validate"] += t2 - t1
            spent["add"] += t3 - t2
            if buffer.approx_bytes >= roll_bytes:
                roll()
        if len(buffer):
            roll()
        rows: list[tuple[str, float, int]] = [
            ("msgspec decode (core.telemetry.decode)", spent["decode"], messages),
            ("Validator.validate", spent["validate"], messages),
            ("RowBuffer.add", spent["add"], messages),
            ("  RowBuffer.to_table (Arrow columns; part of write_roll)", spent["to_table"],
             messages),
            ("ParquetArchive.write_roll (to_table+sort+zstd)", spent["write_roll"], messages),
            ("sum of the stages", spent["decode"] + spent["validate"] + spent["add"]
             + spent["write_roll"], messages),
        ]
        fast = FastValidator(CATALOG, Limits())
        _timed(rows, "FastValidator.decode_valid (typed decode + all checks in C)", messages,
               lambda: [fast.decode_valid(r.value, now_ms) for r in records])
        if columnar.available():
            native = ColumnarBuffer(spec=DecoderSpec.build(archive.schema, CATALOG, Limits()))
            push = native.decoder.push
            _timed(rows, "native decoder push (decode, checks and columns in Rust)", messages,
                   lambda: [push(r.value, now_ms, r.partition, r.offset, r.timestamp)
                            for r in records])
            _timed(rows, "  ColumnarBuffer.to_table (Arrow arrays from its buffers)", messages,
                   lambda: native.to_table(archive.schema))

        async def run_handler(native_decoder: bool = True) -> None:
            handler = build_archive_handler(settings.model_copy(update={
                "archive_url": str(tmp / f"handler-{uuid.uuid4().hex[:6]}"),
                "archive_native_decoder": native_decoder}))
            for first in range(0, messages, batch_size):
                batch: dict[TopicPartition, list[ConsumerRecord]] = {}
                for record in records[first:first + batch_size]:
                    batch.setdefault(TopicPartition(topic, record.partition), []).append(record)
                await handler.process(batch)
            await handler.flush()

        with _profiler(use_pyinstrument):
            _timed(rows, "ArchiveHandler.process + flush (as the worker)", messages,
                   lambda: asyncio.run(run_handler()))
        _timed(rows, "the same with the Python decoder (archive_native_decoder=false)",
               messages, lambda: asyncio.run(run_handler(False)))
        gc.disable()
        try:
            _timed(rows, "the same with the garbage collector off", messages,
                   lambda: asyncio.run(run_handler()))
        finally:
            gc.enable()
        _report("archive worker, per stage (no Kafka)", rows, "msg")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def profile_http(requests: int, samples: int, source: Source) -> None:
    import hashlib

    import orjson

    from core.responses import OrjsonResponse

    if source == "simulator":
        templates = simulator_templates(simulator_fleet_vins(50, seed=1), fleet_seed=1,
                                        samples_per_request=samples)
    else:
        templates = http_templates(fleet_vins(50, seed=1), samples_per_request=samples)
    bodies = [templates[i % len(templates)].body(f"p-{i:08d}", i) for i in range(requests)]
    validator = Validator(CATALOG, Limits())
    now_ms = int(time.time() * 1000)
    token = "flt_0123456789abcdef_" + "x" * 43
    rows: list[tuple[str, float, int]] = []
    decoded = _timed(rows, "msgspec decode", requests, lambda: [decode(b) for b in bodies])
    _timed(rows, "Validator.validate", requests,
           lambda: [validator.validate(m, now_ms) for m in decoded])
    typed = typed_decoder()
    _timed(rows, "what-if: catalog-typed decode (decode + all checks in C)", requests,
           lambda: [typed.decode(b) for b in bodies])
    _timed(rows, "token fingerprint (sha256, cache key)", requests,
           lambda: [hashlib.sha256(token.encode()).hexdigest() for _ in bodies])
    _timed(rows, "response (OrjsonResponse)", requests, lambda: [
        OrjsonResponse({"message_id": m.message_id, "samples": len(m.samples), "partition": 1,
                        "offset": 1}, status_code=202) for m in decoded])
    _timed(rows, "reference: orjson.loads of the body", requests,
           lambda: [orjson.loads(b) for b in bodies])
    console.print(f"{requests} {source} bodies of {samples} samples, "
                  f"{sum(map(len, bodies)) / len(bodies) / 1000:.0f} KB each")
    _report("HTTP ingest handler CPU, per stage (no server, no Kafka)", rows, "request")


ABLATIONS = ("full", "no-validate", "typed-decode", "no-produce", "no-gc", "gc-freeze",
             "auth-cache-1h")


class _NoValidation:
    def validate(self, message: Any, now_ms: int, max_errors: int = 50) -> list[Any]:
        return []


class _Metadata:
    partition = 0
    offset = 0


def _ablate(app: Any, run: str) -> Callable[[], None]:
    """Patch the running app for one run (ablations joined by ``+``); returns the undo."""
    import ingestion.api

    names = set(run.split("+"))
    original_decode, validator = ingestion.api.decode, app.state.validator
    producer = app.state.producer
    if names & {"no-validate", "typed-decode"}:
        app.state.validator = _NoValidation()
    if "typed-decode" in names:
        ingestion.api.decode = typed_decoder().decode  # type: ignore[assignment]
    if "no-produce" in names:
        async def fake_send(*_args: Any, **_kwargs: Any) -> _Metadata:
            return _Metadata()

        producer.send_and_wait = fake_send

    if "no-gc" in names:
        gc.collect()
        gc.disable()
    if "gc-freeze" in names:
        gc.collect()
        gc.freeze()
    if "auth-cache-1h" in names:
        from core.auth.cache import CredentialCache

        app.state.credential_cache = CredentialCache(3600.0)

    def undo() -> None:
        gc.enable()
        gc.unfreeze()
        with contextlib.suppress(AttributeError):
            del app.state.credential_cache
        ingestion.api.decode = original_decode  # type: ignore[assignment]
        app.state.validator = validator
        with contextlib.suppress(AttributeError):
            del producer.send_and_wait

    return undo


def profile_api(
    seconds: float, concurrency: int, vehicles: int, ablations: list[str], use_pyinstrument: bool
) -> None:
    """The real API served in this process (uvicorn on uvloop, as ``fleet api``) on a local
    broker, loaded by ``loadtest.loadgen`` from another process, once per ablation:

    * ``full``: unchanged;
    * ``no-validate``: ``Validator.validate`` replaced by a no-op;
    * ``typed-decode``: the catalog-typed decoder of :func:`typed_decoder` instead of
      ``core.telemetry.decode`` + ``Validator`` (what the proposed patch would cost);
    * ``no-produce``: the Kafka write replaced by a no-op;
    * ``no-gc``: Python's cyclic garbage collector off during the run;
    * ``gc-freeze``: ``gc.collect(); gc.freeze()`` once the app has started (the start-up heap
      moves to the permanent generation, so full collections stop walking it);
    * ``auth-cache-1h``: the credential cache with a one-hour TTL instead of
      ``credential_cache_ttl_s`` (so no token is looked up in the database during the run).

    Server CPU per request (from ``/proc``) tells what each part costs without profiler
    overhead; ``--pyinstrument`` also prints a sampled profile of each run.
    """
    import uvicorn
    import uvloop

    from core.app import create_app, product_topics
    from core.db import upgrade
    from core.localkafka import ensure_topics, free_ports
    from loadtest import loadgen
    from loadtest.bench_ingest import (
        Cleanup,
        broker_pid,
        create_vehicles,
        start_kafka,
    )

    cleanup = Cleanup()
    tmp = Path(tempfile.mkdtemp(prefix="fleet-profile-"))
    cleanup.push("tmp", lambda: shutil.rmtree(tmp, ignore_errors=True))
    table = Table("run", "requests/s", "samples/s", "p50 ms", "p95 ms", "errors",
                  "server CPU %", "server CPU µs/request", "broker CPU %", "machine busy %",
                  title=f"API ablations ({concurrency} in flight, {seconds:g} s each)")
    try:
        base = Settings()
        bootstrap = base.kafka_bootstrap_servers or start_kafka(base, tmp, cleanup, 120.0)[0]
        suffix = uuid.uuid4().hex[:8]
        settings = base.model_copy(update={
            "data_dir": tmp, "database_url": f"sqlite:///{tmp / 'fleet.db'}",
            "kafka_bootstrap_servers": bootstrap,
            "telemetry_topic": f"telemetry.v1.profile-{suffix}",
            "telemetry_dlq_topic": f"telemetry.dlq.profile-{suffix}",
        })
        asyncio.run(ensure_topics(bootstrap, product_topics(settings)))
        upgrade(settings)
        creds = create_vehicles(settings, simulator_fleet_vins(vehicles, seed=5))
        ctx = mp.get_context("spawn")
        watch = {"server": os.getpid()}
        if (pid := broker_pid(tmp)) is not None:
            watch["broker"] = pid

        async def one(name: str) -> dict[str, Any]:
            (port,) = free_ports(1)
            app = create_app(settings)
            server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                                   log_level="warning", access_log=False))
            cfg = loadgen.LoadConfig(base_url=f"http://127.0.0.1:{port}", vehicles=creds,
                                     concurrency=concurrency, warmup_s=3.0, duration_s=seconds,
                                     fleet_seed=5, watch_pids=watch, run_tag=f"{name}-{port}")
            queue: Any = ctx.Queue()
            task = asyncio.create_task(server.serve())
            await asyncio.sleep(3.0)  # start-up; the producer connects in the background
            if not server.started:
                raise RuntimeError("the API did not start within 3 s")
            undo = _ablate(app, name)
            started = ctx.Event()
            proc = ctx.Process(target=loadgen.main, args=(cfg, queue, started), daemon=True)
            proc.start()
            cleanup.push("loadgen", proc.kill)
            profiler = None
            try:
                if not await asyncio.to_thread(started.wait, 120.0):  # bodies built, warm
                    raise RuntimeError("the load generator did not start within 120 s")
                if use_pyinstrument:
                    from pyinstrument import Profiler

                    profiler = Profiler(interval=0.001, async_mode="disabled")
                    profiler.start()
                status, result = await asyncio.to_thread(queue.get, True, seconds + 120.0)
            finally:
                if profiler is not None:
                    profiler.stop()
                    console.print(f"[bold]{name}[/]")
                    console.print(profiler.output_text(unicode=True, color=False))
                undo()
                server.should_exit = True
                await task
                proc.join(10.0)
            if status != "ok":
                raise RuntimeError(result)
            return result  # type: ignore[no-any-return]

        for name in ablations:
            result = uvloop.run(one(name))
            cpu = result["cpu_pct"]
            per_request = (cpu["server"] / 100.0 / result["requests_per_s"] * 1e6
                           if result["requests_per_s"] else None)
            table.add_row(name, f"{result['requests_per_s']:,.0f}",
                          f"{result['samples_per_s']:,.0f}", str(result["p50_ms"]),
                          str(result["p95_ms"]), str(result["errors"]), str(cpu["server"]),
                          f"{per_request:,.0f}" if per_request else "-",
                          str(cpu.get("broker")), str(result["machine_busy_pct"]))
            console.print(f"{name}: {result['requests_per_s']:,.0f} requests/s, server "
                          f"{per_request or 0:,.0f} µs CPU per request")
    finally:
        cleanup.run()
        console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.profile_ingest")
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("consumer", help="archive worker stages, no Kafka")
    c.add_argument("--messages", type=int, default=20_000)
    c.add_argument("--samples-per-message", type=int, default=10)
    c.add_argument("--pyinstrument", action="store_true", help="also profile the handler run")
    c.add_argument("--source", choices=("simulator", "synthetic"), default="simulator")
    h = sub.add_parser("http", help="per-request CPU of the ingest handler, no server")
    h.add_argument("--requests", type=int, default=500)
    h.add_argument("--samples", type=int, default=100)
    h.add_argument("--source", choices=("simulator", "synthetic"), default="simulator")
    a = sub.add_parser("api", help="the real API under pyinstrument with load (local Kafka)")
    a.add_argument("--seconds", type=float, default=15.0)
    a.add_argument("--concurrency", type=int, default=32)
    a.add_argument("--vehicles", type=int, default=300)
    a.add_argument("--ablations", default=",".join(ABLATIONS),
                   help=f"comma-separated runs among {', '.join(ABLATIONS)}; join ablations "
                   "with + to combine them (typed-decode+no-gc)")
    a.add_argument("--pyinstrument", action="store_true", help="also print a sampled profile")
    args = parser.parse_args(argv)
    if args.mode == "consumer":
        profile_consumer(args.messages, args.samples_per_message, args.source, args.pyinstrument)
    elif args.mode == "http":
        profile_http(args.requests, args.samples, args.source)
    else:
        ablations = [a.strip() for a in args.ablations.split(",") if a.strip()]
        unknown = {a for run in ablations for a in run.split("+")} - set(ABLATIONS)
        if unknown:
            parser.error(f"unknown ablations: {', '.join(sorted(unknown))}")
        profile_api(args.seconds, args.concurrency, args.vehicles, ablations, args.pyinstrument)
    return 0


if __name__ == "__main__":
    sys.exit(main())
