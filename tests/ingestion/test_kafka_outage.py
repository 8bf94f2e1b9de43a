"""Never 202 for data that is not durable: 503 while the broker is down, 202 again after."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.localkafka import LocalKafka
from tests.helpers import encode, message, read_topic

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def test_503_while_kafka_is_down_then_recovers(
    client: TestClient, settings: Settings, vehicle: tuple[str, str], local_kafka: LocalKafka
) -> None:
    vin, token = vehicle
    auth = {"Authorization": f"Bearer {token}"}
    before = message(vin, seq=1)
    assert client.post("/v1/telemetry", content=encode(before), headers=auth).status_code == 202

    local_kafka.kill()
    try:
        during = message(vin, seq=2)
        started = time.monotonic()
        response = client.post("/v1/telemetry", content=encode(during), headers=auth)
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "service_unavailable"
        assert response.headers["retry-after"]
        assert time.monotonic() - started < settings.produce_timeout_s + 5
    finally:
        local_kafka.up()

    # The vehicle retries the same message until the broker is back: accepted exactly then.
    deadline = time.monotonic() + 90
    status = 0
    while time.monotonic() < deadline:
        status = client.post("/v1/telemetry", content=encode(during), headers=auth).status_code
        if status == 202:
            break
        assert status == 503
        time.sleep(1)
    assert status == 202
    records = asyncio.run(read_topic(settings.bootstrap_servers, settings.telemetry_topic, 2))
    ids = {orjson.loads(r.value)["message_id"] for r in records}
    assert {before["message_id"], during["message_id"]} <= ids
