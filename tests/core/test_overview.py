"""The fleet overview (``GET /v1/fleet/overview``): vehicles by health with the health
endpoint's rule, the ones needing attention in order, open alarms, alerting predictions, open
DTCs and unfinished campaigns with the progress ``ota.campaigns`` computes; dead-letter depth
and consumer lag against a real broker; and an unreachable Kafka that changes nothing else.

The counts are fleet-wide, so the module works on a database of its own: a private database
on the PostgreSQL server of ``DATABASE_URL`` (created and dropped here), or a fresh SQLite
file when there is no such server or the role may not create databases.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import GroupCoordinatorNotAvailableError
from fastapi.testclient import TestClient

from core.app import create_app, product_topics
from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope, upgrade
from core.localkafka import ensure_topics
from core.overview import KafkaOverviewCache, measure_kafka
from core.vehicles.models import Powertrain, VehicleIn
from core.vehicles.service import bulk_register_vehicles
from diagnostics.models import Alarm, DtcEpisode, MaintenancePrediction
from ota import campaigns
from ota.models import Campaign, InstallRecord, SoftwareImage
from tests.helpers import database_url, new_vin, private_database, stack_settings

NOWHERE = "127.0.0.1:1"  # nothing listens on port 1
T0 = datetime(2026, 3, 1, 8, tzinfo=UTC)
WAVES = [{"target": "5"}, {"target": "25%"}, {"target": "100%"}]


# --- a database of this module's own ------------------------------------------------------------


@dataclass
class OverviewDb:
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)


@pytest.fixture(scope="module")
def overview_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OverviewDb]:
    tmp = tmp_path_factory.mktemp("overview")
    configured = database_url(tmp)
    with private_database(configured, "fleet_test_overview") as private:
        url = private or (configured if not configured.startswith("postgres") else "")
        settings = Settings(
            environment="test",
            data_dir=tmp,
            database_url=url,  # empty: a fresh SQLite file under tmp
            kafka_bootstrap_servers=NOWHERE,
        )
        upgrade(settings)
        db = OverviewDb(settings)
        engine = make_engine(settings)
        try:
            with session_scope(engine) as session:
                for role in ("admin", "fleet_operator", "insurer", "owner", "service_center"):
                    _, db.tokens[role] = create_principal_with_credential(
                        session, f"{role}-1", role
                    )
                _, db.tokens["vehicle"] = create_principal_with_credential(
                    session, "vehicle-1", "vehicle", vin=new_vin(999_999)
                )
            yield db
        finally:
            engine.dispose()


# --- the seeded fleet ----------------------------------------------------------------------------


OK_PLAIN, OK_HISTORY = new_vin(1), new_vin(2)
CRITICAL_TWO_ALARMS, CRITICAL_LATE = new_vin(3), new_vin(4)
WARNING_ALARM, TWO_DTCS, TWO_PREDICTIONS = new_vin(5), new_vin(6), new_vin(7)
ONE_PREDICTION = [new_vin(100 + i) for i in range(16)]
UNREGISTERED, NOISY = new_vin(500), new_vin(501)
EXPECTED_STATUS = {
    OK_PLAIN: "ok",
    OK_HISTORY: "ok",  # a cleared alarm, a cleared DTC and a prediction below threshold
    CRITICAL_TWO_ALARMS: "critical",
    CRITICAL_LATE: "critical",
    WARNING_ALARM: "attention",
    TWO_DTCS: "attention",
    TWO_PREDICTIONS: "attention",
    **dict.fromkeys(ONE_PREDICTION, "attention"),
}


def alarm(vin: str, rule: str, severity: str, minute: int, **extra: Any) -> Alarm:
    return Alarm(
        vin=vin,
        rule_id=rule,
        severity=severity,
        state=extra.pop("state", "open"),
        raised_at=T0 + timedelta(minutes=minute),
        value=float(minute),
        message=f"{rule} on {vin}",
        **extra,
    )


def dtc(vin: str, code: str, state: str) -> DtcEpisode:
    return DtcEpisode(
        vin=vin, code=code, episode=1, state=state, first_seen=T0, last_seen=T0, occurrences=1
    )


def prediction(
    vin: str, component: str, horizon: int, minute: int, *, alerting: bool = True
) -> MaintenancePrediction:
    return MaintenancePrediction(
        vin=vin,
        component=component,
        horizon_days=horizon,
        probability=0.9 if alerting else 0.1,
        alerting=alerting,
        model_version="m-1",
        reasons=[{"feature": "temp_max", "contribution": 0.4}],
        scored_at=T0 + timedelta(minutes=minute),
    )


ALARMS = [
    alarm(CRITICAL_TWO_ALARMS, "overheat", "critical", 10),
    alarm(CRITICAL_TWO_ALARMS, "low_tyre", "warning", 11),
    alarm(CRITICAL_LATE, "overheat", "critical", 12, late=True),
    alarm(WARNING_ALARM, "low_tyre", "warning", 13),
    alarm(OK_HISTORY, "overheat", "critical", 14, state="cleared", cleared_at=T0),
    alarm(UNREGISTERED, "overheat", "critical", 15),
    *(alarm(NOISY, f"rule_{i}", "info", i) for i in range(8)),
]
DTCS = [
    dtc(CRITICAL_TWO_ALARMS, "P0300", "confirmed"),
    dtc(TWO_DTCS, "P0171", "pending"),
    dtc(TWO_DTCS, "P0420", "confirmed"),
    dtc(OK_HISTORY, "P0500", "cleared"),
    dtc(UNREGISTERED, "P0301", "confirmed"),
]
PREDICTIONS = [
    prediction(TWO_PREDICTIONS, "battery", 7, 100),
    prediction(TWO_PREDICTIONS, "battery", 30, 101),
    prediction(TWO_PREDICTIONS, "brakes", 30, 102, alerting=False),
    prediction(OK_HISTORY, "battery", 30, 103, alerting=False),
    prediction(UNREGISTERED, "brakes", 7, 50),
    *(prediction(vin, "tyres", 30, i) for i, vin in enumerate(ONE_PREDICTION)),
]

# (campaign state, ECU states per vehicle); the expected vehicle outcomes follow
# ``ota.campaigns._vehicle_outcome``.
CAMPAIGNS: dict[str, tuple[str, list[list[str]]]] = {
    "running": (
        "running",
        [
            ["succeeded", "succeeded"],  # succeeded
            ["failed", "succeeded"],  # failed: one ECU failed
            ["cancelled", "cancelled"],  # failed: all cancelled
            ["rolled_back"],  # failed
            ["installing", "assigned"],  # in progress
            ["assigned"],  # not started
            ["succeeded", "cancelled"],  # not started: neither rule applies
        ],
    ),
    "paused": ("paused", [["downloading"], ["succeeded"]]),
    "approved": ("approved", []),
    "draft": ("draft", []),
    "completed": ("completed", [["succeeded"]]),
    "aborted": ("aborted", [["cancelled"]]),
}


@pytest.fixture(scope="module")
def fleet(overview_db: OverviewDb) -> dict[str, uuid.UUID]:
    """Seed the vehicles, alarms, DTCs, predictions and campaigns; campaign ids by name."""
    engine = make_engine(overview_db.settings)
    ids: dict[str, uuid.UUID] = {}
    try:
        with session_scope(engine) as session:
            bulk_register_vehicles(
                session,
                [
                    VehicleIn(
                        vin=vin,
                        model=f"Model-{vin[-3:]}",
                        model_year=2022,
                        region="EU",
                        time_zone="Europe/Berlin",
                        powertrain=Powertrain.bev,
                    )
                    for vin in EXPECTED_STATUS
                ],
            )
            session.add_all([*ALARMS, *DTCS, *PREDICTIONS])
            image = SoftwareImage(
                name="bms",
                version="2.0.0",
                release_counter=2,
                sha256="0" * 64,
                length=1,
                storage_key="k",
                filename="bms.bin",
            )
            session.add(image)
            session.flush()
            for minute, (name, (state, vehicles)) in enumerate(CAMPAIGNS.items()):
                campaign = Campaign(
                    name=name,
                    image_id=image.id,
                    state=state,
                    salt=name,
                    waves=WAVES,
                    current_wave=1 if vehicles else 0,
                    pause_reason={"gate": "failure_rate"} if state == "paused" else None,
                    created_at=T0 + timedelta(minutes=minute),
                )
                session.add(campaign)
                session.flush()
                ids[name] = campaign.id
                for n, ecu_states in enumerate(vehicles):
                    for ecu, ecu_state in enumerate(ecu_states):
                        session.add(
                            InstallRecord(
                                campaign_id=campaign.id,
                                vin=new_vin(1000 + n),
                                ecu_id=f"ecu-{ecu}",
                                hardware_id=f"hw-{ecu}",
                                wave=n % len(WAVES),
                                state=ecu_state,
                                to_version="2.0.0",
                            )
                        )
    finally:
        engine.dispose()
    return ids


@pytest.fixture(scope="module")
def offline(overview_db: OverviewDb, fleet: dict[str, uuid.UUID]) -> Iterator[TestClient]:
    """The API on the seeded database, with no Kafka broker to reach."""
    with TestClient(create_app(overview_db.settings)) as client:
        yield client


def get_overview(client: TestClient, token: str) -> Any:
    return client.get("/v1/fleet/overview", headers={"Authorization": f"Bearer {token}"})


# --- database half -------------------------------------------------------------------------------


def test_vehicles_by_health_and_the_ones_needing_attention(
    offline: TestClient, overview_db: OverviewDb
) -> None:
    response = get_overview(offline, overview_db.tokens["fleet_operator"])
    assert response.status_code == 200, response.text
    vehicles = response.json()["vehicles"]
    assert vehicles["total"] == len(EXPECTED_STATUS)
    assert vehicles["by_health"] == {"ok": 2, "attention": 3 + len(ONE_PREDICTION), "critical": 2}
    # Critical first, then by open alarms, open DTCs, alerting predictions, then VIN; 20 at most.
    order = [
        CRITICAL_TWO_ALARMS,
        CRITICAL_LATE,
        WARNING_ALARM,
        TWO_DTCS,
        TWO_PREDICTIONS,
        *sorted(ONE_PREDICTION),
    ][:20]
    listed = vehicles["needing_attention"]
    assert [v["vin"] for v in listed] == order
    assert listed[0] == {
        "vin": CRITICAL_TWO_ALARMS,
        "model": f"Model-{CRITICAL_TWO_ALARMS[-3:]}",
        "status": "critical",
        "open_dtcs": 1,
        "open_alarms": 2,
        "critical_alarms": 1,
        "alerting_predictions": 0,
    }
    by_vin = {v["vin"]: v for v in listed}
    assert by_vin[TWO_DTCS]["open_dtcs"] == 2
    assert by_vin[TWO_PREDICTIONS]["alerting_predictions"] == 2  # the non-alerting one not
    assert all(v["status"] == EXPECTED_STATUS[v["vin"]] for v in listed)


def test_every_status_agrees_with_the_health_endpoint(
    offline: TestClient, overview_db: OverviewDb
) -> None:
    token = overview_db.tokens["admin"]
    needing = get_overview(offline, token).json()["vehicles"]["needing_attention"]
    listed = {v["vin"]: v["status"] for v in needing}
    # Not listed: the two vehicles in order, and the 21st needing attention (20 at most).
    assert set(EXPECTED_STATUS) - set(listed) == {OK_PLAIN, OK_HISTORY, max(ONE_PREDICTION)}
    for vin, expected in EXPECTED_STATUS.items():
        health = offline.get(
            f"/v1/vehicles/{vin}/health", headers={"Authorization": f"Bearer {token}"}
        )
        assert health.status_code == 200, health.text
        assert health.json()["status"] == expected
        assert listed.get(vin, expected) == expected


def test_open_alarms_predictions_and_dtcs(offline: TestClient, overview_db: OverviewDb) -> None:
    body = get_overview(offline, overview_db.tokens["admin"]).json()
    open_alarms = [a for a in ALARMS if a.state == "open"]
    assert body["alarms"]["open"] == len(open_alarms) == 13  # unregistered VINs' too
    assert body["alarms"]["critical"] == 3
    newest = sorted(open_alarms, key=lambda a: a.raised_at, reverse=True)[:10]
    recent = body["alarms"]["recent"]
    assert [(a["vin"], a["rule_id"]) for a in recent] == [(a.vin, a.rule_id) for a in newest]
    assert recent[2] == {
        "vin": CRITICAL_LATE,
        "rule_id": "overheat",
        "severity": "critical",
        "raised_at": "2026-03-01T08:12:00Z",
        "value": 12.0,
        "message": f"overheat on {CRITICAL_LATE}",
        "late": True,
    }

    alerting = [p for p in PREDICTIONS if p.alerting]
    assert body["predictions"]["alerting"] == len(alerting) == 19
    newest_scores = sorted(alerting, key=lambda p: p.scored_at, reverse=True)[:10]
    scored = body["predictions"]["recent"]
    assert [(p["vin"], p["component"], p["horizon_days"]) for p in scored] == [
        (p.vin, p.component, p.horizon_days) for p in newest_scores
    ]
    assert scored[0] == {
        "vin": TWO_PREDICTIONS,
        "component": "battery",
        "probability": 0.9,
        "horizon_days": 30,
        "model_version": "m-1",
        "reasons": [{"feature": "temp_max", "contribution": 0.4}],
        "scored_at": "2026-03-01T09:41:00Z",
    }
    assert body["open_dtcs"] == 4  # pending and confirmed, registered or not


def test_unfinished_campaigns_with_the_progress_ota_computes(
    offline: TestClient, overview_db: OverviewDb, fleet: dict[str, uuid.UUID]
) -> None:
    listed = get_overview(offline, overview_db.tokens["admin"]).json()["campaigns"]
    assert [c["name"] for c in listed] == ["running", "paused", "approved", "draft"]
    running = listed[0]
    assert running == {
        "id": str(fleet["running"]),
        "name": "running",
        "state": "running",
        "current_wave": 1,
        "waves": 3,
        "pause_reason": None,
        "targeted": 7,
        "succeeded": 1,
        "failed": 3,
        "in_progress": 1,
        "not_started": 2,
    }
    assert listed[1]["pause_reason"] == {"gate": "failure_rate"}
    assert (listed[3]["targeted"], listed[3]["current_wave"]) == (0, 0)
    # The same figures as the campaign's own status (GET /v1/ota/campaigns/{id}).
    engine = make_engine(overview_db.settings)
    try:
        with session_scope(engine) as session:
            for summary in listed:
                status = campaigns.status(session, campaigns.get(session, uuid.UUID(summary["id"])))
                for key, wave_key in (
                    ("targeted", "vehicles"),
                    ("succeeded", "succeeded"),
                    ("failed", "failed"),
                    ("in_progress", "in_progress"),
                    ("not_started", "not_started"),
                ):
                    assert summary[key] == sum(getattr(w, wave_key) for w in status.waves)
    finally:
        engine.dispose()


def test_operators_only(offline: TestClient, overview_db: OverviewDb) -> None:
    for role in ("admin", "fleet_operator"):
        assert get_overview(offline, overview_db.tokens[role]).status_code == 200
    for role in ("insurer", "owner", "service_center", "vehicle"):
        response = get_overview(offline, overview_db.tokens[role])
        assert response.status_code == 403, role
        assert response.json()["error"] == "forbidden"
    assert offline.get("/v1/fleet/overview").status_code == 401
    schema = offline.get("/openapi.json").json()
    assert "FleetOverview" in schema["components"]["schemas"]


# --- Kafka half ----------------------------------------------------------------------------------


def test_unreachable_kafka_is_reported_and_the_rest_answered(
    offline: TestClient, overview_db: OverviewDb
) -> None:
    offline.app.state.kafka_overview_cache = KafkaOverviewCache()  # type: ignore[attr-defined]
    started = time.monotonic()
    response = get_overview(offline, overview_db.tokens["admin"])
    assert time.monotonic() - started < 2.5
    assert response.status_code == 200, response.text
    body = response.json()
    kafka = body["kafka"]
    assert kafka["available"] is False
    assert "127.0.0.1" in kafka["error"]
    assert (kafka["dead_letter"], kafka["lag"]) == ([], [])
    assert body["vehicles"]["total"] == len(EXPECTED_STATUS)


def test_a_broker_that_never_answers_is_given_up_on_in_time(tmp_path: Path) -> None:
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()  # connections complete, and no byte ever comes back
    try:
        host, port = silent.getsockname()
        settings = Settings(environment="test", kafka_bootstrap_servers=f"{host}:{port}")
        started = time.monotonic()
        kafka = asyncio.run(measure_kafka(settings, timeout_s=0.5))
        assert time.monotonic() - started < 2.0
    finally:
        silent.close()
    assert kafka.available is False
    assert kafka.error == "Kafka did not answer within 0.5 s"


async def _fill(stack: Settings, bootstrap: str, group: str) -> None:
    """DLQ: 5 records in partition 0 (the first 2 deleted by retention) and 2 in partition 1.
    Telemetry: 10 in partition 0 and 4 in partition 1; ``group`` committed partition 0 up to
    offset 6 and the DLQ's partition 0 at 1, below what retention kept."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, counts in (
            (stack.telemetry_dlq_topic, (5, 2)),
            (stack.telemetry_topic, (10, 4)),
        ):
            for partition, count in enumerate(counts):
                for i in range(count):
                    await producer.send_and_wait(topic, b"%d" % i, partition=partition)
    finally:
        await producer.stop()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.delete_records(
            {TopicPartition(stack.telemetry_dlq_topic, 0): RecordsToDelete(2)}
        )
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        telemetry, dlq = (
            TopicPartition(stack.telemetry_topic, 0),
            TopicPartition(stack.telemetry_dlq_topic, 0),
        )
        consumer.assign([telemetry, dlq])
        await consumer.commit({telemetry: 6, dlq: 1})
    finally:
        await consumer.stop()


def test_dead_letter_depth_and_lag_from_a_real_broker(
    kafka_bootstrap: str, overview_db: OverviewDb, fleet: dict[str, uuid.UUID], tmp_path: Path
) -> None:
    stack = stack_settings(
        tmp_path, kafka_bootstrap, overview_db.settings.database_url, uuid.uuid4().hex[:10]
    )
    asyncio.run(ensure_topics(kafka_bootstrap, product_topics(stack)))
    group = f"overview-{uuid.uuid4().hex[:8]}"
    asyncio.run(_fill(stack, kafka_bootstrap, group))

    # A group that committed part of its topics: end - committed, end - beginning elsewhere.
    measured = asyncio.run(
        measure_kafka(stack, groups=[(group, [stack.telemetry_topic, stack.telemetry_dlq_topic])])
    )
    assert measured.available, measured.error
    assert [(lag.topic, lag.lag) for lag in measured.lag] == [
        (stack.telemetry_topic, (10 - 6) + 4),
        (stack.telemetry_dlq_topic, (5 - 2) + 2),  # committed 1, but 2 is the first kept
    ]

    # A group whose coordinator does not answer loses its own figure, not the others'.
    real = AIOKafkaAdminClient.list_consumer_group_offsets

    async def coordinator_down(self: Any, group_id: str, *args: Any, **kwargs: Any) -> Any:
        if group_id == "stuck":
            raise GroupCoordinatorNotAvailableError()
        return await real(self, group_id, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AIOKafkaAdminClient, "list_consumer_group_offsets", coordinator_down)
        both = [("stuck", [stack.telemetry_topic]), (group, [stack.telemetry_topic])]
        partial = asyncio.run(measure_kafka(stack, groups=both))
    assert partial.available and partial.error is None
    stuck, measured_group = partial.lag
    assert (stuck.lag, measured_group.lag) == (None, (10 - 6) + 4)
    assert stuck.error is not None and "GroupCoordinatorNotAvailable" in stuck.error

    with TestClient(create_app(stack)) as client:
        client.app.state.kafka_overview_cache = KafkaOverviewCache(ttl_s=60.0)  # type: ignore[attr-defined]
        body = get_overview(client, overview_db.tokens["admin"]).json()
        kafka = body["kafka"]
        assert kafka["available"] is True and kafka["error"] is None
        assert kafka["dead_letter"] == [
            {"topic": stack.telemetry_dlq_topic, "messages": 5},
            {"topic": stack.services_dlq_topic, "messages": 0},
            {"topic": stack.ota_dlq_topic, "messages": 0},
        ]
        telemetry_groups = [
            "fleet.archive",
            "fleet.diagnostics",
            "fleet.pdm",
            "fleet.ubi",
            "fleet.battery",
        ]
        assert kafka["lag"] == [
            *(
                {"group": g, "topic": stack.telemetry_topic, "lag": 14, "error": None}
                for g in telemetry_groups
            ),
            {"group": "fleet.services", "topic": stack.findings_topic, "lag": 0, "error": None},
            {"group": "fleet.services", "topic": stack.predictions_topic, "lag": 0, "error": None},
            {"group": "fleet.ota", "topic": stack.ota_reports_topic, "lag": 0, "error": None},
        ]
        assert body["vehicles"]["total"] == len(EXPECTED_STATUS)

        # Within the cache's lifetime the broker is not asked again...
        asyncio.run(_produce_one(kafka_bootstrap, stack.telemetry_dlq_topic))
        again = get_overview(client, overview_db.tokens["admin"]).json()["kafka"]
        assert again == kafka
        # ...and a fresh measurement sees the new dead letter.
        client.app.state.kafka_overview_cache = KafkaOverviewCache(ttl_s=0.0)  # type: ignore[attr-defined]
        fresh = get_overview(client, overview_db.tokens["admin"]).json()["kafka"]
        assert fresh["dead_letter"][0] == {"topic": stack.telemetry_dlq_topic, "messages": 6}
        measured_at = datetime.fromisoformat(fresh["measured_at"])
        assert measured_at > datetime.fromisoformat(kafka["measured_at"])


async def _produce_one(bootstrap: str, topic: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"late", partition=1)
    finally:
        await producer.stop()
