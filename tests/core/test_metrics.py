"""Prometheus metrics and probes: the API's latency histogram by route template, a worker's
counters, lag and probes over its own HTTP endpoint while it runs (real broker), readiness
that fails without the database, and the campaign gauges."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, delete

from core.config import Settings
from core.db import make_engine
from core.metrics import CampaignCollector
from core.runner import BatchHandler, HandlerResult, KafkaRunner
from core.workers import build_runner
from ota.models import Campaign, InstallRecord, SoftwareImage
from tests.helpers import encode, message, new_vin
from tests.ingestion.conftest import client, db_url, settings, vehicle  # noqa: F401

UNREACHABLE_DATABASE = "postgresql://postgres@127.0.0.1:1/fleet"  # nothing listens on port 1


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    return [
        (s.labels, s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_api_metrics_label_route_templates_never_raw_paths(
    client: TestClient,  # noqa: F811
    vehicle: tuple[str, str],  # noqa: F811
) -> None:
    vin, token = vehicle
    auth = {"Authorization": f"Bearer {token}"}
    response = client.post(
        "/v1/telemetry", content=encode(message(vin)), headers={**auth, "X-Request-ID": "r-1"}
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == "r-1"
    assert client.get(f"/v1/vehicles/{vin}").status_code == 401  # matched, refused
    assert client.get(f"/no/such/{vin}").status_code == 404

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert vin not in text  # neither in a route label nor anywhere else
    counts = {
        (labels["method"], labels["route"], labels["status"]): value
        for labels, value in samples(text, "fleet_http_request_duration_seconds_count")
    }
    assert counts[("POST", "/v1/telemetry", "2xx")] >= 1
    assert counts[("GET", "/v1/vehicles/{vin}", "4xx")] >= 1
    assert counts[("GET", "<unmatched>", "4xx")] >= 1
    # The campaign collector is registered in the API process and could read the database.
    assert samples(text, "fleet_campaign_metrics_up") == [({}, 1.0)]


def _value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _produce(stack: Settings, values: Sequence[tuple[str, bytes]]) -> set[int]:
    """Send the records; returns the partitions they went to."""
    producer = AIOKafkaProducer(bootstrap_servers=stack.bootstrap_servers, acks="all")
    await producer.start()
    try:
        return {
            (await producer.send_and_wait(stack.telemetry_topic, value, key=key.encode())).partition
            for key, value in values
        }
    finally:
        await producer.stop()


@pytest.mark.kafka
def test_a_running_worker_serves_counts_lag_and_probes(settings: Settings) -> None:  # noqa: F811
    vins = [new_vin() for _ in range(5)]
    good = [(vin, encode(message(vin))) for vin in vins]
    bad = [(vins[0], b'{"vin": "' + vins[0].encode() + b'", "broken'), (vins[1], b"not json")]
    partitions = asyncio.run(_produce(settings, good + bad))
    before = {
        outcome: _value("fleet_worker_messages_total", worker="archive", outcome=outcome)
        for outcome in ("processed", "dead_lettered")
    }

    async def scenario() -> tuple[str, int, int]:
        runner = build_runner(settings, "archive", group_id=f"archive-{uuid.uuid4().hex[:8]}")
        runner.serve_ops("127.0.0.1", 0)
        task = asyncio.create_task(runner.run(until_idle_s=4.0))
        async with httpx.AsyncClient(timeout=5) as http:
            await _until(lambda: runner.ops is not None and runner.ops.bound_port is not None)
            assert runner.ops is not None
            base = f"http://127.0.0.1:{runner.ops.bound_port}"
            text = ""
            for _ in range(200):  # until the counts and the lag of every partition show
                text = (await http.get(f"{base}/metrics")).text
                lag = samples(text, "fleet_worker_consumer_lag")
                if len([labels for labels, _ in lag if labels["worker"] == "archive"]) >= len(
                    partitions
                ) and _value(
                    "fleet_worker_messages_total", worker="archive", outcome="processed"
                ) - before["processed"] >= len(good):
                    break
                await asyncio.sleep(0.1)
            live = (await http.get(f"{base}/healthz")).status_code
            ready = (await http.get(f"{base}/readyz")).status_code
        await task
        return text, live, ready

    text, live, ready = asyncio.run(scenario())
    assert (live, ready) == (200, 200)
    counts = {
        labels["outcome"]: value
        for labels, value in samples(text, "fleet_worker_messages_total")
        if labels["worker"] == "archive"
    }
    assert counts["processed"] - before["processed"] == len(good)
    assert counts["dead_lettered"] - before["dead_lettered"] == len(bad)
    lag = {
        (labels["topic"], labels["partition"]): value
        for labels, value in samples(text, "fleet_worker_consumer_lag")
        if labels["worker"] == "archive"
    }
    # Per partition the worker consumed from (and committed): all caught up.
    assert lag == {(settings.telemetry_topic, str(p)): 0 for p in partitions}
    assert samples(text, "fleet_worker_batches_total")
    assert not any(vin in text for vin in vins)


async def _until(condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
    for _ in range(int(timeout_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


class _DatabaseHandler(BatchHandler):
    """A handler with a database engine (as the real ones have) and nothing else."""

    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        self.mark_processed(batch)
        return HandlerResult(processed=sum(len(r) for r in batch.values()))


@pytest.mark.kafka
def test_readiness_fails_while_the_database_is_unreachable(
    settings: Settings,  # noqa: F811
) -> None:
    unreachable = make_engine(settings.model_copy(update={"database_url": UNREACHABLE_DATABASE}))
    reachable = make_engine(settings)
    handler = _DatabaseHandler(unreachable)
    runner = KafkaRunner(
        settings,
        name="probe-test",
        topics=[settings.telemetry_topic],
        group_id=f"probe-{uuid.uuid4().hex[:8]}",
        handler=handler,
        dlq_topic=None,
    )
    runner.serve_ops("127.0.0.1", 0)

    async def scenario() -> list[tuple[int, dict[str, Any]]]:
        task = asyncio.create_task(runner.run(until_idle_s=30.0))
        answers = []
        async with httpx.AsyncClient(timeout=10) as http:
            await _until(lambda: runner.consumer is not None and bool(runner.consumer.assignment()))
            assert runner.ops is not None
            url = f"http://127.0.0.1:{runner.ops.bound_port}/readyz"
            response = await http.get(url)
            answers.append((response.status_code, response.json()))
            handler.engine = reachable  # the database is back
            response = await http.get(url)
            answers.append((response.status_code, response.json()))
        runner.stop()
        await task
        return answers

    try:
        (down, down_body), (up, _) = asyncio.run(scenario())
    finally:
        unreachable.dispose()
        reachable.dispose()
    assert down == 503
    assert "database not reachable" in down_body["reason"]
    assert up == 200


def test_campaign_collector_reports_states_waves_and_vehicles(engine: Engine) -> None:
    suffix = uuid.uuid4().hex[:8]
    image = SoftwareImage(
        name=f"metrics-{suffix}",
        version="1.0.0",
        release_counter=1,
        sha256="0" * 64,
        length=1,
        storage_key=f"k-{suffix}",
        filename=f"f-{suffix}.bin",
    )
    campaign = Campaign(
        name=f"metrics-{suffix}",
        image_id=image.id,
        state="running",
        salt=suffix,
        current_wave=1,
        launched_at=datetime.now(UTC),
    )
    vins = [new_vin() for _ in range(3)]
    states = {vins[0]: "installing", vins[1]: "succeeded", vins[2]: "succeeded"}
    with Session(engine, expire_on_commit=False) as session:
        session.add(image)
        session.flush()
        session.add(campaign)
        session.flush()
        for vin, state in states.items():
            for ecu in ("bms", "vcu"):  # two ECUs each: vehicles are counted once per state
                session.add(
                    InstallRecord(
                        campaign_id=campaign.id,
                        vin=vin,
                        ecu_id=ecu,
                        hardware_id=ecu,
                        wave=1,
                        state=state,
                        to_version="1.0.0",
                    )
                )
        session.commit()
    try:
        registry = CollectorRegistry()
        registry.register(CampaignCollector(engine, cache_s=0))
        labels = {"campaign_id": str(campaign.id), "campaign": campaign.name}
        assert registry.get_sample_value("fleet_campaign_metrics_up") == 1
        assert (registry.get_sample_value("fleet_campaigns", {"state": "running"}) or 0) >= 1
        assert registry.get_sample_value("fleet_campaign_current_wave", labels) == 1
        vehicles = {
            state: registry.get_sample_value("fleet_campaign_vehicles", {**labels, "state": state})
            for state in ("installing", "succeeded", "failed")
        }
        assert vehicles == {"installing": 1, "succeeded": 2, "failed": None}
    finally:
        with Session(engine) as session:
            session.exec(delete(InstallRecord).where(col(InstallRecord.campaign_id) == campaign.id))
            session.exec(delete(Campaign).where(col(Campaign.id) == campaign.id))
            session.exec(delete(SoftwareImage).where(col(SoftwareImage.id) == image.id))
            session.commit()


def test_campaign_collector_survives_an_unreachable_database() -> None:
    broken = make_engine(Settings(environment="test", database_url=UNREACHABLE_DATABASE))
    try:
        registry = CollectorRegistry()
        registry.register(CampaignCollector(broken, cache_s=0))
        assert registry.get_sample_value("fleet_campaign_metrics_up") == 0
        assert registry.get_sample_value("fleet_campaigns", {"state": "running"}) is None
    finally:
        broken.dispose()
