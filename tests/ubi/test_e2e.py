"""End to end on the real broker: simulated vehicles publish telemetry to Kafka, the ``ubi`` and
``battery`` workers turn it into scores, and an insurer reads them through its API — only for
the vehicle whose owner consented, under a pseudonym, signed, and no longer once the consent is
revoked."""

from __future__ import annotations

import asyncio
import random
import time
import uuid

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.stack_cli import register_fleet
from core.workers import build_runner
from simulator.delivery import SimConfig
from simulator.fleet import make_fleet
from simulator.runner import iter_messages
from tests.helpers import publish_messages
from tests.ubi.partner_data import db, grant, link_owner, new_caller
from tests.ubi.test_partner_contract import leaks
from ubi import signing
from ubi.models import BatteryHealthRecord, UbiScore

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

DAY_S = 86_400.0
UBI = "/v1/partner/ubi/scores"
BATTERY = "/v1/partner/battery/scores"


def run(settings: Settings, name: str) -> None:
    runner = build_runner(settings, name, group_id=f"{name}-{uuid.uuid4().hex[:8]}")
    asyncio.run(runner.run(until_idle_s=4.0))


def test_simulator_to_insurer_with_and_without_consent(
    settings: Settings, client: TestClient
) -> None:
    fleet = make_fleet(3, seed=random.randrange(10**6), bev_share=1.0)
    vins = [v.vin for v in fleet]
    register_fleet(settings, fleet)
    start_ms = int((time.time() - 2 * DAY_S) * 1000)
    config = SimConfig(sample_interval_s=4.0, samples_per_message=10, parked_sample_interval_s=900)
    asyncio.run(
        publish_messages(
            settings, iter_messages(fleet, start_ms, 1.5 * DAY_S, seed=9, config=config)
        )
    )
    run(settings, "ubi")
    run(settings, "battery")
    with db(settings) as session:
        scored = {vin: session.get(UbiScore, (vin, settings.ubi_period_days)) for vin in vins}
        health = {vin: session.get(BatteryHealthRecord, vin) for vin in vins}
    scored_vins = [vin for vin, row in scored.items() if row is not None]
    assert len(scored_vins) >= 2, "the simulated vehicles drove"
    assert all(health.values()), "every battery vehicle has a health record"
    mine, other = scored_vins[:2]

    admin, owner = new_caller(settings, "admin"), new_caller(settings, "owner")
    insurer, rival = new_caller(settings, "insurer"), new_caller(settings, "insurer")
    link_owner(client, admin, mine, owner)
    jwks = client.get("/v1/partner/keys").json()

    def read(caller: object, path: str) -> dict:
        response = client.get(path, headers=caller.headers)  # type: ignore[attr-defined]
        assert response.status_code == 200, response.text
        signing.verify(response.content, response.headers[signing.HEADER], jwks)
        assert leaks(response.json(), set(vins)) == []
        return response.json()  # type: ignore[no-any-return]

    # Without consent, nobody sees anything.
    assert read(insurer, UBI)["items"] == [] and read(insurer, BATTERY)["items"] == []

    consent = grant(client, owner, mine, insurer, "ubi")
    grant(client, owner, mine, insurer, "battery")
    [item] = read(insurer, UBI)["items"]
    stored = scored[mine]
    assert stored is not None
    assert item["score"] == stored.score and item["score_version"] == stored.score_version
    assert item["score_low"] <= item["score"] <= item["score_high"]
    assert set(item["sub_scores"]) == {"braking", "acceleration", "cornering", "speeding", "night"}
    assert item["subject"].startswith("p_") and mine not in str(item)
    single = read(insurer, f"{UBI}/{item['subject']}")
    assert single["subject"] == item["subject"]
    [battery] = read(insurer, BATTERY)["items"]
    assert battery["subject"] == item["subject"]
    assert battery["soh_pct"] == health[mine].soh_pct  # type: ignore[union-attr]

    # Another insurer, and the vehicle without consent, stay invisible.
    assert read(rival, UBI)["items"] == []
    assert client.get(f"{UBI}/{item['subject']}", headers=rival.headers).status_code == 404
    assert other not in str(read(insurer, UBI))

    # Revocation takes effect on the very next request.
    revoked = client.delete(f"/v1/vehicles/{mine}/consents/{consent['id']}", headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    assert read(insurer, UBI)["items"] == []
    assert client.get(f"{UBI}/{item['subject']}", headers=insurer.headers).status_code == 404
    assert len(read(insurer, BATTERY)["items"]) == 1  # the battery consent is separate
