"""Small helpers shared by integration tests (messages, Kafka reads, database setup)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from core.config import Settings
from core.vin import make_vin
from services.issues import IssueSignal
from services.models import Urgency


def new_vin(n: int | None = None) -> str:
    serial = n if n is not None else uuid.uuid4().int % 1_000_000
    return make_vin("WVW", "ZZZ1K", "N", "T", serial)


def run_until_consumed(runner: Any, count: int, timeout_s: float = 60.0) -> Any:
    """Run a worker's ``Runner`` until it has consumed ``count`` records, then let it drain,
    commit and stop; its stats. Unlike ``run(until_idle_s=...)``, a slow group join or offset
    fetch on a busy machine cannot end the run before the records arrive."""

    async def go() -> Any:
        task = asyncio.create_task(runner.run())
        deadline = time.monotonic() + timeout_s
        try:
            while runner.stats.consumed < count and not task.done():
                assert time.monotonic() < deadline, (
                    f"consumed {runner.stats.consumed} of {count} records in {timeout_s:g} s"
                )
                await asyncio.sleep(0.05)
        finally:
            runner.stop()
        return await task

    return asyncio.run(go())


def message(
    vin: str,
    *,
    seq: int = 1,
    samples: int = 3,
    message_id: str | None = None,
    ts_ms: int | None = None,
    signals: dict[str, Any] | None = None,
) -> dict[str, Any]:
    start = ts_ms if ts_ms is not None else int(time.time() * 1000) - samples * 1000
    base = signals or {
        "Vehicle.Speed": 52.5,
        "Vehicle.TraveledDistance": 123_456,
        "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 80.5,
        "Vehicle.LowVoltageSystemState": "ON",
        "Vehicle.Diagnostics.DTCList": [],
    }
    return {
        "vin": vin,
        "message_id": message_id or f"{vin}-{seq}-{uuid.uuid4().hex[:8]}",
        "seq": seq,
        "samples": [{"ts": start + i * 1000, "signals": dict(base)} for i in range(samples)],
    }


def encode(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload)


def stack_settings(
    tmp: Path, bootstrap: str, db_url: str, suffix: str, **overrides: Any
) -> Settings:
    values: dict[str, Any] = {
        "environment": "test",
        "data_dir": tmp,
        "database_url": db_url,
        "kafka_bootstrap_servers": bootstrap,
        "telemetry_topic": f"telemetry.v1.{suffix}",
        "telemetry_dlq_topic": f"telemetry.dlq.{suffix}",
        "findings_topic": f"diagnostics.findings.v1.{suffix}",
        "predictions_topic": f"maintenance.predictions.v1.{suffix}",
        "services_dlq_topic": f"services.dlq.{suffix}",
        "ota_reports_topic": f"ota.reports.v1.{suffix}",
        "ota_dlq_topic": f"ota.dlq.{suffix}",
        "topic_partitions": 3,
        "archive_roll_seconds": 0.5,
        "credential_cache_ttl_s": 0.0,
    }
    values.update(overrides)
    return Settings(**values)


async def read_topic(
    bootstrap: str, topic: str, expected: int, timeout_s: float = 30.0
) -> list[Any]:
    """Read a topic from the beginning until ``expected`` records arrived (or time out)."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        records: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(records) < expected and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                records.extend(recs)
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


def headers_dict(headers: Iterable[tuple[str, bytes]]) -> dict[str, str]:
    return {k: v.decode() for k, v in headers}


def database_url(tmp: Path) -> str:
    return os.environ.get("DATABASE_URL") or f"sqlite:///{tmp / 'fleet.db'}"


def register_test_vehicle(settings: Settings, vin: str, powertrain: str = "ice") -> None:
    """Put a vehicle in the registry (the health endpoint answers 404 for unknown VINs)."""
    from core.db import make_engine, session_scope
    from core.vehicles.models import Powertrain, VehicleIn
    from core.vehicles.service import bulk_register_vehicles

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            vehicle = VehicleIn(vin=vin, model="Sim", model_year=2022, region="EU",
                                time_zone="Europe/Berlin", powertrain=Powertrain(powertrain))
            bulk_register_vehicles(session, [vehicle])
    finally:
        engine.dispose()


async def publish_messages(settings: Settings, messages: Iterable[Any]) -> None:
    """Produce simulator messages to the telemetry topic as vehicles do (key = VIN, header
    ``source: kafka``), in order per vehicle, waiting for all acknowledgements at the end."""
    from aiokafka import AIOKafkaProducer

    from core.telemetry import HEADER_SOURCE, encode

    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=5,
    )
    await producer.start()
    try:
        futures = [
            await producer.send(
                settings.telemetry_topic,
                encode(message),
                key=message.vin.encode(),
                headers=[(HEADER_SOURCE, b"kafka")],
            )
            for message in messages
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextmanager
def private_database(url: str, prefix: str) -> Iterator[str | None]:
    """A new PostgreSQL database beside ``url``'s for one test module (counts over a whole
    table are then its own), dropped afterwards: its URL, or None when ``url`` is not
    PostgreSQL or its role may not create databases."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.exc import ProgrammingError

    if not url.startswith("postgres"):
        yield None
        return
    driver_url = Settings(environment="test", database_url=url).sqlalchemy_url
    admin = create_engine(driver_url, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == "42501":  # insufficient_privilege
                yield None
                return
            raise
        try:
            yield make_url(url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


def issue_signal(
    vin: str,
    issue_key: str = "coolant_pump",
    *,
    urgency: Urgency = Urgency.high,
    due_in: timedelta = timedelta(days=3),
    now: datetime,
    event_id: str | None = None,
) -> IssueSignal:
    """A diagnostic finding for ``vin`` as the services worker receives it."""
    return IssueSignal(
        event_id=event_id or uuid.uuid4().hex,
        vin=vin,
        issue_key=issue_key,
        kind="diagnostic",
        urgency=urgency,
        due_by=now + due_in,
        observed_at=now,
        evidence={"source": "alarm", "observed_at": now.isoformat(), "text": f"{urgency} test"},
    )
