"""Scale-out: several processes of one worker in one consumer group share the partitions, and
when one is killed the others take over its partitions with nothing lost and nothing doubled.

Real ``fleet worker`` processes (``python -c "from core.cli import main; main()" worker NAME
--group G``) on a 6-partition topic, while a simulated fleet's telemetry is being published:
three ``archive`` workers in one group and, on the same stream, three ``ubi`` workers in
another. Once every process has consumed something, one of each group is SIGKILLed; publishing
goes on. When both groups have committed the end of every partition, the survivors' stats files
(``data_dir/run/worker-<name>-<pid>.json``) show the killed processes' partitions, the Parquet
archive holds every message id once with every one of its samples once, and the trips the ubi
workers stored equal those of ``ubi.batch.score_archive`` over that archive.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from sqlmodel import col, select

from core.app import product_topics
from core.config import Settings
from core.db import make_engine, session_scope, upgrade
from core.localkafka import ensure_topics
from core.stack_cli import register_fleet
from core.telemetry import HEADER_SOURCE, TelemetryMessage, encode
from ingestion.archive import ParquetArchive
from simulator.delivery import SimConfig
from simulator.fleet import VehicleProfile, make_fleet
from simulator.runner import iter_messages
from tests.helpers import database_url, stack_settings
from ubi.batch import check_against_database, score_archive
from ubi.models import UbiTrip

pytestmark = [pytest.mark.kafka, pytest.mark.slow, pytest.mark.timeout(150)]

PARTITIONS = 6
PROCESSES = 3
VEHICLES = 10
SIMULATED_S = 43_200.0  # half a day, 4 s samples while driving: about 2,000 messages
STREAM_S = 40.0
"""Publishing is spread over this long unless hurried: it goes on while the killed processes'
partitions move, so the survivors read (and commit) every partition afterwards."""
log = logging.getLogger(__name__)


@pytest.fixture
def settings(tmp_path: Path, kafka_bootstrap: str) -> Settings:
    url = database_url(tmp_path)
    suffix = uuid.uuid4().hex[:10]
    stack = stack_settings(
        tmp_path, kafka_bootstrap, url, suffix, topic_partitions=PARTITIONS, ubi_checkpoint_s=1.0
    )
    upgrade(stack)
    asyncio.run(ensure_topics(kafka_bootstrap, product_topics(stack)))
    return stack


def covering_fleet() -> list[VehicleProfile]:
    """A random fleet whose VINs land on every partition (so every process has work)."""
    partitioner = DefaultPartitioner()
    partitions = list(range(PARTITIONS))
    while True:
        fleet = make_fleet(VEHICLES, seed=random.randrange(10**6), bev_share=0.5)
        if {partitioner(v.vin.encode(), partitions, partitions) for v in fleet} == set(partitions):
            return fleet


class Worker:
    """One ``fleet worker`` child process with its own log."""

    def __init__(self, settings: Settings, name: str, group: str, log: Path) -> None:
        env = dict(os.environ)
        for key in ("FLEET_DATABASE_URL", "FLEET_KAFKA_BOOTSTRAP_SERVERS"):
            env.pop(key, None)
        env.update(
            FLEET_ENVIRONMENT="test",
            FLEET_DATA_DIR=str(settings.data_dir),
            DATABASE_URL=settings.sqlalchemy_url,
            KAFKA_BOOTSTRAP_SERVERS=settings.bootstrap_servers,
            FLEET_TELEMETRY_TOPIC=settings.telemetry_topic,
            FLEET_TELEMETRY_DLQ_TOPIC=settings.telemetry_dlq_topic,
            FLEET_ARCHIVE_ROLL_SECONDS="0.5",
            FLEET_UBI_CHECKPOINT_S="1.0",
        )
        self.name, self.log = name, log
        self.stats_path = settings.data_dir / "run"
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from core.cli import main; main()", "worker", name,
             "--group", group],
            env=env,
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def stats(self) -> dict[str, Any]:
        path = self.stats_path / f"worker-{self.name}-{self.pid}.json"
        try:
            return json.loads(path.read_text())  # type: ignore[no-any-return]
        except (FileNotFoundError, ValueError):
            return {}

    def partitions(self) -> set[int]:
        """Partitions it holds and has committed on (the keys of its lag)."""
        return {int(key.rsplit(":", 1)[1]) for key in self.stats().get("lag", {})}

    def consumed(self) -> int:
        return int(self.stats().get("consumed", 0))

    def check_alive(self) -> None:
        assert self.process.poll() is None, f"{self.name} {self.pid} exited: {self.tail()}"

    def tail(self) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-30:])


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:  # whatever happened, no child outlives the test
        if worker.process.poll() is None:
            worker.process.kill()
            worker.process.wait(10)


def simulate(fleet: list[VehicleProfile], out: list[TelemetryMessage]) -> None:
    config = SimConfig(sample_interval_s=4.0, samples_per_message=10, parked_sample_interval_s=900)
    start_ms = int((time.time() - 2 * 86_400) * 1000)
    out.extend(iter_messages(fleet, start_ms, SIMULATED_S, seed=5, config=config))


def publish_stream(
    settings: Settings, messages: list[TelemetryMessage], sent: list[TelemetryMessage],
    done: threading.Event, hurry: threading.Event,
) -> None:
    """Publish as vehicles do (key = VIN), spread evenly over STREAM_S until ``hurry`` is set;
    ``sent`` holds the acknowledged messages, ``done`` is set when all are acknowledged."""

    async def run() -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers, acks="all", enable_idempotence=True,
            linger_ms=5,
        )
        await producer.start()
        try:
            started = time.monotonic()
            for first in range(0, len(messages), 100):
                chunk = messages[first : first + 100]
                futures = [
                    await producer.send(settings.telemetry_topic, encode(m), key=m.vin.encode(),
                                        headers=[(HEADER_SOURCE, b"kafka")])
                    for m in chunk
                ]
                await asyncio.gather(*futures)
                sent.extend(chunk)
                pause = started + STREAM_S * len(sent) / len(messages) - time.monotonic()
                if not hurry.is_set():
                    await asyncio.sleep(max(pause, 0.0))
        finally:
            await producer.stop()
            done.set()

    asyncio.run(run())


async def wait_caught_up(bootstrap: str, topic: str, groups: list[str], timeout_s: float) -> None:
    """Until every group has committed the end offset of every partition."""
    partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await reader.start()
    await admin.start()
    try:
        ends = await reader.end_offsets(partitions)
        deadline = time.monotonic() + timeout_s
        behind: dict[str, int] = {}
        while time.monotonic() < deadline:
            for group in groups:
                committed = await admin.list_consumer_group_offsets(group)
                behind[group] = sum(
                    end - (committed[tp].offset if tp in committed else 0)
                    for tp, end in ends.items()
                )
            if not any(behind.values()):
                return
            await asyncio.sleep(0.5)
        raise AssertionError(f"groups still behind after {timeout_s:.0f} s: {behind}")
    finally:
        await admin.close()
        await reader.stop()


def stored_trips(settings: Settings, vins: list[str]) -> list[str]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            trips = session.exec(select(UbiTrip).where(col(UbiTrip.vin).in_(vins))).all()
            return sorted(t.trip_id for t in trips)
    finally:
        engine.dispose()


def test_killed_worker_partitions_move_to_the_others_with_nothing_lost_or_doubled(
    settings: Settings, workers: list[Worker], tmp_path: Path
) -> None:
    started = time.monotonic()

    def mark(what: str, *args: Any) -> None:
        log.warning("%.1f s: " + what, time.monotonic() - started, *args)

    fleet = covering_fleet()
    vins = [v.vin for v in fleet]
    register_fleet(settings, fleet)
    messages: list[TelemetryMessage] = []
    simulating = threading.Thread(target=simulate, args=(fleet, messages))
    simulating.start()  # while the workers start
    groups = {name: f"scaleout-{name}-{uuid.uuid4().hex[:8]}" for name in ("archive", "ubi")}
    for name, group in groups.items():
        for i in range(PROCESSES):
            workers.append(Worker(settings, name, group, tmp_path / f"{name}-{i}.log"))
    by_name = {name: [w for w in workers if w.name == name] for name in groups}

    # Publishing starts once every process is polling (it writes its stats file then).
    until = time.monotonic() + 90
    while not all(w.stats() for w in workers):
        assert time.monotonic() < until, "workers did not start in 90 s"
        for w in workers:
            w.check_alive()
        time.sleep(0.2)
    simulating.join(60)
    assert not simulating.is_alive() and len(messages) > 1000
    mark("%d workers polling, %d messages simulated", len(workers), len(messages))
    sent: list[TelemetryMessage] = []
    done, hurry = threading.Event(), threading.Event()
    producing = threading.Thread(target=publish_stream,
                                 args=(settings, messages, sent, done, hurry))
    producing.start()
    victims: dict[str, tuple[Worker, set[int], int]] = {}
    try:
        # Kill one process of each group once all of the group have consumed records and the
        # victim has committed on its partitions.
        until = time.monotonic() + 60
        while len(victims) < len(groups):
            assert time.monotonic() < until, (
                f"no kill point: {[(w.name, w.consumed(), w.partitions()) for w in workers]}"
            )
            for name, group_workers in by_name.items():
                victim = group_workers[0]
                if name not in victims and all(w.consumed() for w in group_workers):
                    owned, consumed = victim.partitions(), victim.consumed()
                    if owned:
                        victim.process.send_signal(signal.SIGKILL)
                        victim.process.wait(10)
                        victims[name] = (victim, owned, consumed)
                        mark("killed a %s worker after %d records (%d published): it held %s",
                             name, consumed, len(sent), sorted(owned))
            for w in workers:
                if w.name not in victims or w is not by_name[w.name][0]:
                    w.check_alive()
            time.sleep(0.1)
        assert not done.is_set(), "the kills must land in the middle of the stream"

        # The survivors take over (after the session timeout) while records still arrive.
        survivors = {name: group_workers[1:] for name, group_workers in by_name.items()}
        until = time.monotonic() + 60
        while not all(
            owned <= set().union(*(w.partitions() for w in survivors[name]))
            for name, (_, owned, _) in victims.items()
        ):
            assert time.monotonic() < until, "the killed processes' partitions did not move"
            time.sleep(0.2)
        assert not done.is_set(), "the stream must go on after the takeover"
        mark("the survivors committed on the killed processes' partitions")
    finally:
        hurry.set()
        producing.join(60)
    assert not producing.is_alive() and len(sent) == len(messages)
    mark("published %d", len(sent))

    asyncio.run(wait_caught_up(settings.bootstrap_servers, settings.telemetry_topic,
                               list(groups.values()), timeout_s=60))
    mark("both groups caught up")
    time.sleep(1.5)  # survivors write their stats (lag per partition) every second
    for name, (_, owned, consumed) in victims.items():
        assert 0 < consumed < len(sent)
        held = [w.partitions() for w in survivors[name]]
        assert all(held), f"{name}: every survivor holds partitions: {held}"
        assert set().union(*held) == set(range(PARTITIONS)), f"{name}: survivors hold {held}"
        assert owned <= set().union(*held), f"{name}: killed process's {owned} not taken over"
        assert all(lag == 0 for w in survivors[name] for lag in w.stats()["lag"].values())
        mark("%s: the survivors hold %s", name, held)
    for w in survivors["archive"] + survivors["ubi"]:
        w.process.send_signal(signal.SIGTERM)
    for w in survivors["archive"] + survivors["ubi"]:
        assert w.process.wait(30) == 0, w.tail()

    # The archive: every produced message once, with every one of its samples once.
    table = ParquetArchive(settings.archive_location).dataset().to_table(columns=["message_id"])
    counts = {c["values"]: c["counts"] for c in pc.value_counts(table["message_id"]).to_pylist()}
    expected = {m.message_id: len(m.samples) for m in sent}
    assert len(expected) == len(sent)
    lost = expected.keys() - counts.keys()
    assert not lost, f"{len(lost)} messages lost, e.g. {sorted(lost)[:5]}"
    wrong = {k: (counts[k], n) for k, n in expected.items() if counts[k] != n}
    assert not wrong, f"{len(wrong)} messages stored with other than their samples: {wrong}"
    assert counts.keys() == expected.keys() and table.num_rows == sum(expected.values())

    # The ubi workers: the trips they stored are those of a replay of the archive.
    trips = stored_trips(settings, vins)
    assert trips, "the simulated fleet drove: there are trips"
    assert len(set(trips)) == len(trips)
    replay = score_archive(settings, "ubi", vins=vins)
    assert sorted(t for r in replay.results.values() for t in r["trips"]) == trips
    assert check_against_database(settings, replay) == []
    mark("checked: %d messages, %d samples, %d trips", len(sent), table.num_rows, len(trips))
