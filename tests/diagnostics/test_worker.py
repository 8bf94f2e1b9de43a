"""The diagnosis worker on the real broker: a simulated coolant-pump failure shows up as DTCs
and an alarm in the vehicle's health, on diagnostics.findings.v1, and nothing doubles when the
worker replays the same records."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid

import orjson
import pytest
from fastapi.testclient import TestClient

from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from core.workers import build_runner
from diagnostics import repository
from diagnostics.worker import build_diagnostics_handler
from simulator.delivery import SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import make_fleet
from simulator.runner import iter_messages
from tests.helpers import new_vin, publish_messages, read_topic, register_test_vehicle

pytestmark = pytest.mark.kafka

DAY_S = 86_400.0


def run_diagnostics(settings: Settings) -> dict:
    runner = build_runner(settings, "diagnostics", group_id=f"diag-{uuid.uuid4().hex[:8]}")
    return asyncio.run(runner.run(until_idle_s=3.0)).as_dict()


def admin_token(settings: Settings) -> str:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            _, token = create_principal_with_credential(session, f"admin-{uuid.uuid4()}", "admin")
        return token
    finally:
        engine.dispose()


def test_a_failing_coolant_pump_reaches_the_health_endpoint(
    settings: Settings, client: TestClient
) -> None:
    # The simulation is replayed at once, so count it as real time, not store-and-forward.
    settings = settings.model_copy(update={"diagnostics_late_after_s": 3 * DAY_S})
    fault = FaultSpec(kind=FaultKind.COOLANT_PUMP, onset_s=0.0, failure_s=0.5 * DAY_S)
    vehicle = make_fleet(1, seed=21, bev_share=0.0, faults={0: [fault]})[0]
    # Its own VIN: the database may outlive this test (a local run), with this seed's rows.
    vehicle = dataclasses.replace(vehicle, vin=new_vin())
    vin = vehicle.vin
    register_test_vehicle(settings, vin)

    start_ms = int((time.time() - 2 * DAY_S) * 1000)
    config = SimConfig(
        sample_interval_s=10.0, samples_per_message=10, parked_sample_interval_s=600.0
    )
    messages = list(iter_messages([vehicle], start_ms, 2 * DAY_S - 60, seed=3, config=config))

    asyncio.run(publish_messages(settings, messages))
    stats = run_diagnostics(settings)
    assert stats["consumed"] == len(messages)

    token = admin_token(settings)
    headers = {"Authorization": f"Bearer {token}"}
    response = client.get(f"/v1/vehicles/{vin}/health", headers=headers)
    assert response.status_code == 200, response.text
    health = response.json()
    codes = {d["code"]: d for d in health["open_dtcs"]}
    assert {"P2181", "P0217"} <= set(codes), health["open_dtcs"]
    assert codes["P0217"]["description"]
    assert (
        "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"
        in (codes["P0217"]["freeze_frame"])
    )
    rules = {a["rule_id"]: a for a in health["open_alarms"] + health["recent_alarms"]}
    coolant = [a for rule_id, a in rules.items() if "coolant" in rule_id]
    assert coolant, rules
    assert health["status"] in ("attention", "critical")

    findings = asyncio.run(read_topic(settings.bootstrap_servers, settings.findings_topic, 3))
    kinds = {orjson.loads(r.value)["kind"] for r in findings}
    assert kinds == {"dtc", "alarm"}
    assert all(r.key == vin.encode() for r in findings)

    # A second consumer group replays everything: the same rows, nothing new in the database.
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            before = (
                len(repository.latest_dtc_episodes(session, [vin])),
                len(repository.vehicle_alarms(session, vin, since=health_since())),
            )
        run_diagnostics(settings)
        with session_scope(engine) as session:
            after = (
                len(repository.latest_dtc_episodes(session, [vin])),
                len(repository.vehicle_alarms(session, vin, since=health_since())),
            )
    finally:
        engine.dispose()
    assert after == before

    # A vehicle that goes silent: its DTCs age out when the worker expires them (8 days on).
    async def expire_later() -> None:
        handler = build_diagnostics_handler(settings)
        await handler.start()
        try:
            handler._restore([vin])
            await handler.expire(int((time.time() + 8 * DAY_S) * 1000))
        finally:
            await handler.close()

    asyncio.run(expire_later())
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            assert repository.vehicle_dtc_episodes(session, vin) == []  # none active
            states = {e.state for e in repository.latest_dtc_episodes(session, [vin])}
    finally:
        engine.dispose()
    assert states == {"aged_out"}


def health_since():  # type: ignore[no-untyped-def]
    import datetime as dt

    return dt.datetime.now(dt.UTC) - dt.timedelta(days=30)


def test_health_needs_a_known_vehicle_and_the_right_principal(
    settings: Settings, client: TestClient
) -> None:
    token = admin_token(settings)
    missing = client.get(
        "/v1/vehicles/WVWZZZ1KZAW000001/health", headers={"Authorization": f"Bearer {token}"}
    )
    assert missing.status_code == 404
    assert client.get("/v1/vehicles/WVWZZZ1KZAW000001/health").status_code == 401
    bad = client.get("/v1/vehicles/not-a-vin/health", headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 422
