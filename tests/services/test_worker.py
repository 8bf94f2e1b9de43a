"""The services worker on the real broker: findings and predictions become bookings, broken
records go to the dead-letter topic with a reason, and replaying everything (a restarted
worker, a new consumer group) changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from core.config import Settings
from core.db import make_engine, session_scope
from core.workers import build_runner
from services import outbox, repository, service
from services.schemas import ServiceCenterIn
from tests.helpers import headers_dict, new_vin, read_topic, register_test_vehicle

pytestmark = pytest.mark.kafka


def finding(vin: str, **overrides: Any) -> dict[str, Any]:
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    value = {
        "v": 1,
        "finding_id": uuid.uuid4().hex,
        "kind": "alarm",
        "vin": vin,
        "ts": now_ms,
        "event": "raised",
        "rule_id": "coolant_overtemp",
        "severity": "critical",
        "late": False,
        "details": {"message": "Engine coolant at 121.0 C, above 110 C for 40 s"},
    }
    value.update(overrides)
    return value


def prediction(vin: str, **overrides: Any) -> dict[str, Any]:
    value = {
        "v": 1,
        "vin": vin,
        "component": "brake_pads",
        "horizon_days": 7,
        "probability": 0.91,
        "alerting": True,
        "model_version": "test",
        "reasons": [
            {
                "feature": "pad_wear_max_pct",
                "value": 81.0,
                "contribution": 2.1,
                "text": "pad wear 81 %",
            }
        ],
        "scored_at": datetime.now(UTC).isoformat(),
    }
    value.update(overrides)
    return value


async def produce(settings: Settings, records: list[tuple[str, bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        for topic, key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def add_center(settings: Settings, *capabilities: str, bays: int) -> None:
    """A center open around the clock that can take ``capabilities``."""
    hours = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
    center = ServiceCenterIn(
        code=f"w-{uuid.uuid4().hex[:8]}",
        name="Any",
        latitude=48.1,
        longitude=11.6,
        time_zone="Europe/Berlin",
        opening_hours=hours,
        capabilities=list(capabilities),  # type: ignore[arg-type]
        bays=bays,
    )
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            service.create_center(session, center)
    finally:
        engine.dispose()


def run_services(settings: Settings, group: str) -> dict[str, Any]:
    runner = build_runner(settings, "services", group_id=group)
    return asyncio.run(runner.run(until_idle_s=3.0)).as_dict()


def test_findings_and_predictions_become_bookings_once(settings: Settings) -> None:
    engine = make_engine(settings)
    add_center(settings, "cooling", "brakes", bays=3)
    vin, unregistered = new_vin(), new_vin()
    register_test_vehicle(settings, vin)
    alarm = orjson.dumps(finding(vin))
    findings, predictions = settings.findings_topic, settings.predictions_topic
    key = vin.encode()
    records = [
        (findings, key, alarm),
        (findings, key, alarm),  # delivered twice (at least once upstream)
        (
            findings,
            key,
            orjson.dumps(
                finding(
                    vin,
                    kind="dtc",
                    event="confirmed",
                    code="P2181",
                    rule_id=None,
                    severity="warning",
                )
            ),
        ),
        (
            findings,
            key,
            orjson.dumps(
                finding(
                    vin, kind="dtc", event="pending", code="P0300", rule_id=None, severity="warning"
                )
            ),
        ),  # no service
        (predictions, key, orjson.dumps(prediction(vin))),
        (predictions, key, orjson.dumps(prediction(vin, alerting=False))),  # a cleared alert
        (findings, unregistered.encode(), orjson.dumps(finding(unregistered))),
        # broken ones
        (findings, key, b'{"v": 1, "kind": "alarm", '),
        (findings, key, orjson.dumps(finding(vin, rule_id=None))),
        (predictions, key, orjson.dumps(prediction(vin, component="wipers"))),
        (predictions, key, orjson.dumps(prediction(vin, probability=1.5))),
        (findings, b"NOT-THE-VIN", orjson.dumps(finding(vin))),
    ]
    asyncio.run(produce(settings, records))

    group = f"svc-{uuid.uuid4().hex[:8]}"
    stats = run_services(settings, group)
    assert stats["consumed"] == len(records)
    assert stats["dead_lettered"] == 5

    dead = asyncio.run(read_topic(settings.bootstrap_servers, settings.services_dlq_topic, 5))
    reasons = sorted(headers_dict(r.headers)["dlq.reason"] for r in dead)
    assert reasons == [
        "invalid_json",
        "key_mismatch",
        "missing_field",
        "out_of_range",
        "unknown_component",
    ]

    def snapshot() -> tuple[Any, ...]:
        with session_scope(engine) as session:
            bookings = service.list_bookings(session, vin=vin)
            events = [e for b in bookings for e in outbox.list_events(session, booking_id=b.id)]
            notes = repository.list_notifications(session, vin)
            return (
                sorted(
                    (b.issue_key, b.state, b.urgency, b.version, len(b.evidence)) for b in bookings
                ),
                len(events),
                len(notes),
                service.list_bookings(session, vin=unregistered),
            )

    first = snapshot()
    assert first[0] == [
        ("brake_pads", "proposed", "high", 1, 1),
        ("coolant_pump", "proposed", "critical", 2, 2),  # alarm, then the P2181 DTC
    ]
    assert first[1] == 2 and first[2] == 2  # one booking.created and one notice each
    assert first[3] == []  # unknown vehicles get no booking

    # A new consumer group replays every record: nothing changes.
    stats = run_services(settings, f"svc-{uuid.uuid4().hex[:8]}")
    assert stats["consumed"] == len(records)
    assert snapshot() == first
    # The original group, restarted, has nothing left to do (its offsets were committed).
    assert run_services(settings, group)["consumed"] == 0
    engine.dispose()


def test_a_waiting_booking_is_placed_by_the_periodic_retry(settings: Settings) -> None:
    vin = new_vin()
    register_test_vehicle(settings, vin)
    asyncio.run(
        produce(
            settings,
            [
                (
                    settings.findings_topic,
                    vin.encode(),
                    orjson.dumps(finding(vin, rule_id="tire_pressure_low.x", severity="warning")),
                )
            ],
        )
    )
    run_services(settings, f"svc-{uuid.uuid4().hex[:8]}")
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            [waiting] = service.list_bookings(session, vin=vin)
            assert waiting.state == "unassigned" and waiting.issue_key == "tires"
        add_center(settings, "tires", bays=1)
        # The worker's periodic pass (services_retry_s) places it; an idle worker runs it
        # at start-up and then on its interval.
        run_services(
            settings.model_copy(update={"services_retry_s": 0.5}), f"svc-{uuid.uuid4().hex[:8]}"
        )
        with session_scope(engine) as session:
            [placed] = service.list_bookings(session, vin=vin)
        assert placed.state == "proposed" and placed.center_code is not None
        assert placed.due_by <= datetime.now(UTC) + timedelta(days=3)
    finally:
        engine.dispose()


def test_a_crash_mid_batch_loses_and_doubles_nothing(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker dies while applying a batch: nothing of that batch is stored (one
    transaction) and its offsets are not committed; the restarted worker applies it once."""
    engine = make_engine(settings)
    add_center(settings, "cooling", "lv_12v", bays=4)
    vins = [new_vin() for _ in range(6)]
    for vin in vins:
        register_test_vehicle(settings, vin)
    records = [
        (settings.findings_topic, vin.encode(), orjson.dumps(finding(vin, rule_id=rule)))
        for vin in vins
        for rule in ("coolant_overtemp", "lv_battery_weak_at_rest")
    ]
    asyncio.run(produce(settings, records))

    real = service.apply_signal
    calls = 0

    def crash_on_the_fifth(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 5:
            raise RuntimeError("killed mid-batch")
        return real(*args, **kwargs)

    group = f"svc-{uuid.uuid4().hex[:8]}"
    monkeypatch.setattr(service, "apply_signal", crash_on_the_fifth)
    with pytest.raises(RuntimeError, match="killed mid-batch"):
        run_services(settings, group)
    monkeypatch.setattr(service, "apply_signal", real)
    stats = run_services(settings, group)
    assert stats["consumed"] >= 1  # the failed batch again, and whatever came after it

    with session_scope(engine) as session:
        bookings = [b for vin in vins for b in service.list_bookings(session, vin=vin)]
        events = [e for b in bookings for e in outbox.list_events(session, booking_id=b.id)]
    assert sorted((b.vin, b.issue_key) for b in bookings) == sorted(
        (vin, issue) for vin in vins for issue in ("coolant_pump", "lv_battery")
    )
    assert all(b.version == 1 and len(b.evidence) == 1 for b in bookings)
    assert len(events) == len(bookings)  # one booking.created each, none twice
    engine.dispose()
