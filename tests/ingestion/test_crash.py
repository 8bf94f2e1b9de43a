"""kill -9 the archive worker in the middle of a 50,000-message stream, restart it: every
acknowledged message is in the archive exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaProducer

from core.config import Settings
from ingestion.archive import ParquetArchive
from tests.helpers import encode, message, new_vin

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

TOTAL = 50_000
VEHICLES = 200


def worker_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        FLEET_DATA_DIR=str(settings.data_dir),
        DATABASE_URL=settings.sqlalchemy_url,
        KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
        FLEET_TELEMETRY_TOPIC=settings.telemetry_topic,
        FLEET_TELEMETRY_DLQ_TOPIC=settings.telemetry_dlq_topic,
        FLEET_ARCHIVE_ROLL_SECONDS="0.5",
        FLEET_ENVIRONMENT="test",
    )
    return env


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", "from core.cli import main; main()", "worker", "archive"],
        env=worker_env(settings),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


def consumed(settings: Settings, pid: int) -> int:
    path = settings.data_dir / "run" / f"worker-archive-{pid}.json"
    try:
        return int(json.loads(path.read_text())["consumed"])
    except (FileNotFoundError, ValueError, KeyError):
        return 0


async def produce_stream(settings: Settings, ids: list[str]) -> None:
    vins = [new_vin(i) for i in range(VEHICLES)]
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        enable_idempotence=True,
        linger_ms=20,
    )
    await producer.start()
    try:
        futures = []
        for i in range(TOTAL):
            vin = vins[i % VEHICLES]
            payload = message(vin, seq=i, samples=2, message_id=f"crash-{i}")
            ids.append(payload["message_id"])
            futures.append(
                await producer.send(settings.telemetry_topic, encode(payload), key=vin.encode())
            )
            if i % 2000 == 0:
                await asyncio.sleep(0.2)  # a stream of 5 s or more, not one burst
        await asyncio.gather(*futures)  # every id in `ids` is acknowledged by Kafka
    finally:
        await producer.stop()


def test_kill_9_mid_stream_loses_and_doubles_nothing(settings: Settings, tmp_path: Path) -> None:
    log = tmp_path / "worker.log"
    first = start_worker(settings, log)
    ids: list[str] = []
    producing = threading.Thread(target=asyncio.run, args=(produce_stream(settings, ids),))
    producing.start()
    try:
        deadline = time.monotonic() + 120
        while consumed(settings, first.pid) < TOTAL // 3 and time.monotonic() < deadline:
            assert first.poll() is None, log.read_text()[-3000:]
            time.sleep(0.05)
        before = consumed(settings, first.pid)
        assert 0 < before < TOTAL, "the kill must land in the middle of the stream"
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        producing.join(120)
    assert not producing.is_alive() and len(ids) == TOTAL

    second = start_worker(settings, log)
    archive = ParquetArchive(settings.archive_location)
    try:
        deadline = time.monotonic() + 180
        stored = 0
        while time.monotonic() < deadline:
            stored = archive.dataset().count_rows() // 2
            if stored >= TOTAL:
                break
            assert second.poll() is None, log.read_text()[-3000:]
            time.sleep(0.5)
        time.sleep(2)  # anything beyond TOTAL would be a duplicate; give it time to show
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, log.read_text()[-3000:]

    table = archive.dataset().to_table(columns=["message_id"])
    counts = pc.value_counts(table["message_id"])
    doubled = [c["values"] for c in counts.to_pylist() if c["counts"] != 2]
    assert doubled == [], f"messages stored other than exactly once: {doubled[:10]}"
    assert len(counts) == TOTAL
    assert set(table["message_id"].to_pylist()) == set(ids)
