"""The ``ota`` worker on the real broker: install reports from ``ota.reports.v1`` move the
records and run the gates (a failing canary pauses its campaign); broken reports go to
``ota.dlq`` with a reason; replaying the topic changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from sqlalchemy import text
from sqlmodel import select

from core.config import Settings
from core.db import make_engine, session_scope
from core.vehicles.models import EcuIn, VehicleIn
from core.vehicles.service import bulk_register_vehicles
from core.workers import build_runner
from ota import campaigns, images, repos, service
from ota.models import InstallRecord
from ota.store import ObjectStore
from tests.helpers import headers_dict, new_vin, read_topic

pytestmark = pytest.mark.kafka


def launched_campaign(settings: Settings, vins: list[str]) -> uuid.UUID:
    """Repositories (reset: one per database), an image for BMS-HW-1 and a launched campaign
    whose canary is the first 5 vehicles by hash."""
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM tuf_file"))
        with session_scope(engine) as session:
            repos.init_repositories(session, settings)
            bulk_register_vehicles(
                session,
                [
                    VehicleIn(
                        vin=vin,
                        model="W",
                        model_year=2024,
                        region="EU",
                        time_zone="Europe/Berlin",
                        powertrain="bev",
                        tags=["wtest"],
                        ecus=[
                            EcuIn(ecu_id="BMS", hardware_id="BMS-HW-1", software_version="1.0.0")
                        ],
                    )
                    for vin in vins
                ],
            )
        stored = ObjectStore(settings.ota_store_location).put_bytes(uuid.uuid4().bytes * 100)
        with session_scope(engine) as session:
            meta = images.parse_meta(f"w-{uuid.uuid4().hex[:6]}", "2.0.0", 2, ["BMS-HW-1"], [])
            image = images.add_image(session, meta, stored, uploaded_by="t")
            service.publish_image(session, settings, image, actor="t")
            campaign = campaigns.create(
                session,
                campaigns.CampaignIn(
                    name="w",
                    image_id=image.id,
                    waves=["5", "100%"],
                    target_filter=campaigns.TargetFilterIn(tags=["wtest"]),
                ),
                actor="t",
            )
        with session_scope(engine) as session:
            campaigns.launch(session, settings, campaign.id, actor="t")
        return campaign.id
    finally:
        engine.dispose()


def canary(settings: Settings, campaign_id: uuid.UUID) -> list[str]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            rows = session.exec(
                select(InstallRecord).where(
                    InstallRecord.campaign_id == campaign_id, InstallRecord.wave == 0
                )
            ).all()
            return sorted(r.vin for r in rows)
    finally:
        engine.dispose()


async def produce(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(settings.ota_reports_topic, value, key=key)
    finally:
        await producer.stop()


def report(vin: str, campaign_id: uuid.UUID, seq: int, state: str, **extra: Any) -> bytes:
    body = {
        "vin": vin,
        "report_id": uuid.uuid4().hex,
        "campaign_id": str(campaign_id),
        "ecu_id": "BMS",
        "attempt": 1,
        "seq": seq,
        "state": state,
    } | extra
    return orjson.dumps(body)


def run_ota(settings: Settings, group: str) -> dict[str, Any]:
    runner = build_runner(settings, "ota", group_id=group)
    return asyncio.run(runner.run(until_idle_s=3.0)).as_dict()


def test_reports_over_kafka_pause_a_failing_canary(settings: Settings, tmp_path: Path) -> None:
    settings = settings.model_copy(update={"ota_keys_dir": tmp_path / "keys"})
    vins = [new_vin() for _ in range(12)]
    campaign_id = launched_campaign(settings, vins)
    first, second, *_ = canary(settings, campaign_id)
    ok = report(first, campaign_id, 2, "succeeded")
    records: list[tuple[bytes | None, bytes]] = [
        (first.encode(), report(first, campaign_id, 1, "downloading")),
        (first.encode(), ok),
        (first.encode(), ok),  # redelivered: the same report_id
        (second.encode(), report(second, campaign_id, 1, "failed", error_code="E_FLASH")),
        (second.encode(), b"{not json"),
        (b"OTHER-KEY", report(second, campaign_id, 5, "failed")),
        (second.encode(), report(second, uuid.uuid4(), 1, "failed")),  # no such install
        (second.encode(), report(second, campaign_id, 3, "exploded")),
        (second.encode(), report(second, campaign_id, 4, "failed", error_code="E\x00")),
    ]
    asyncio.run(produce(settings, records))
    group = f"ota-{uuid.uuid4().hex[:8]}"
    stats = run_ota(settings, group)
    assert stats["consumed"] == len(records) and stats["dead_lettered"] == 5
    dead = asyncio.run(read_topic(settings.bootstrap_servers, settings.ota_dlq_topic, 5))
    assert sorted(headers_dict(r.headers)["dlq.reason"] for r in dead) == [
        "invalid_field",
        "invalid_field",
        "invalid_json",
        "key_mismatch",
        "unknown_install",
    ]

    def snapshot() -> tuple[Any, ...]:
        engine = make_engine(settings)
        try:
            with session_scope(engine) as session:
                status = campaigns.status(session, campaigns.get(session, campaign_id))
                rows = session.exec(
                    select(InstallRecord).where(InstallRecord.campaign_id == campaign_id)
                ).all()
                return (
                    status.campaign.state,
                    status.campaign.pause_reason,
                    sorted((r.vin, r.state, r.last_seq, r.error_code) for r in rows),
                )
        finally:
            engine.dispose()

    state, reason, rows = snapshot()
    by_vin = {vin: (s, seq, code) for vin, s, seq, code in rows}
    assert by_vin[first] == ("succeeded", 2, None)
    assert by_vin[second] == ("failed", 1, "E_FLASH")
    # One failure in a canary of 5 makes its 95 % success threshold unreachable: paused.
    assert state == "paused" and reason is not None and reason["wave"] == 0
    assert reason["code"] == "success_threshold_unreachable"
    assert reason["failures"][0]["error_code"] == "E_FLASH"
    assert reason["failures"][0]["hardware_id"] == "BMS-HW-1"

    before = snapshot()
    run_ota(settings, f"ota-{uuid.uuid4().hex[:8]}")  # a new group replays the whole topic
    assert snapshot() == before
