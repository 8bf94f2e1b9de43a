"""Structured JSON logs: every line parses and carries its context, and one correlation id
follows a message from the ingest API through the diagnostics worker (finding header) to the
services worker's booking line."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka.structs import ConsumerRecord
from fastapi.testclient import TestClient

from core.config import Settings
from core.logging import (
    HEADER_CORRELATION_ID,
    JsonFormatter,
    accept_request_id,
    bind,
    set_process_context,
)
from core.workers import build_runner
from diagnostics.worker import _correlation_ids
from tests.helpers import encode, headers_dict, read_topic, register_test_vehicle
from tests.ingestion.conftest import client, db_url, settings, vehicle  # noqa: F401


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.strip()]


def test_json_lines_carry_level_logger_context_and_extra_fields() -> None:
    logger = logging.getLogger("fleet.test")
    record = logger.makeRecord("fleet.test", logging.WARNING, __file__, 1, "hello %s", ("x",), None)
    formatter = JsonFormatter()
    with bind(correlation_id="abc", vin="WVWZZZ1KZNT000001"):
        record.__dict__["booking_id"] = "b-1"
        line = orjson.loads(formatter.format(record))
    assert line["level"] == "WARNING"
    assert line["logger"] == "fleet.test"
    assert line["msg"] == "hello x"
    assert line["correlation_id"] == "abc"
    assert line["vin"] == "WVWZZZ1KZNT000001"
    assert line["booking_id"] == "b-1"
    assert line["ts"].endswith("Z") and "T" in line["ts"]
    # Outside the block the context is gone.
    assert "correlation_id" not in orjson.loads(formatter.format(record))
    try:
        raise ValueError("boom")
    except ValueError:
        record = logger.makeRecord(
            "fleet.test", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    assert "ValueError: boom" in orjson.loads(formatter.format(record))["exc"]


def test_request_ids_are_accepted_only_when_sane() -> None:
    assert accept_request_id("req-42.a:b_c") == "req-42.a:b_c"
    for bad in (None, "", "x" * 200, "with space", 'quote"', "new\nline"):
        generated = accept_request_id(bad)
        assert generated != bad and len(generated) == 32


def _record(key: str, value: bytes, headers: list[tuple[str, bytes]], ts: int) -> ConsumerRecord:
    return ConsumerRecord(
        "t", 0, ts, ts, 0, key.encode(), value, None, len(key), len(value), tuple(headers)
    )


def test_findings_take_the_header_or_else_the_message_id() -> None:
    batch: Any = {
        "tp": [
            _record("A", b'{"vin":"A","message_id":"m-old"}', [], 1),
            _record("A", b'{"vin":"A","message_id":"m-new","seq":2}', [], 2),
            _record("B", b"{}", [(HEADER_CORRELATION_ID, b"req-b")], 3),
            _record("C", b"not json", [], 4),
        ]
    }
    assert _correlation_ids(batch, {"A", "B", "C"}) == {"A": "m-new", "B": "req-b"}


def _dtc_message(vin: str) -> dict[str, Any]:
    """Three reports of a trouble code over 80 s: the diagnostics worker confirms it."""
    start = int(time.time() * 1000) - 120_000
    return {
        "vin": vin,
        "message_id": f"{vin}-{uuid.uuid4().hex[:8]}",
        "seq": 1,
        "samples": [
            {
                "ts": start + i * 40_000,
                "signals": {"Vehicle.Speed": 40.0, "Vehicle.Diagnostics.DTCList": ["P2181"]},
            }
            for i in range(3)
        ],
    }


@pytest.mark.kafka
def test_one_correlation_id_from_ingest_to_booking(
    client: TestClient,  # noqa: F811
    settings: Settings,  # noqa: F811
    vehicle: tuple[str, str],  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    vin, token = vehicle
    register_test_vehicle(settings, vin)
    request_id = f"trace-{uuid.uuid4().hex[:12]}"
    caplog.handler.setFormatter(JsonFormatter())
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="ingestion.api")

    response = client.post(
        "/v1/telemetry",
        content=encode(_dtc_message(vin)),
        headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
    )
    assert response.status_code == 202, response.text
    assert response.headers["x-request-id"] == request_id

    set_process_context(worker="diagnostics")
    try:
        group = f"diag-{uuid.uuid4().hex[:8]}"
        asyncio.run(build_runner(settings, "diagnostics", group_id=group).run(until_idle_s=3.0))
        findings = asyncio.run(read_topic(settings.bootstrap_servers, settings.findings_topic, 1))
        assert headers_dict(findings[0].headers)[HEADER_CORRELATION_ID] == request_id

        set_process_context(worker="services")
        group = f"svc-{uuid.uuid4().hex[:8]}"
        asyncio.run(build_runner(settings, "services", group_id=group).run(until_idle_s=3.0))
    finally:
        set_process_context(worker=None)

    lines = json_lines(caplog.text)  # every line is JSON
    traced = [line for line in lines if line.get("correlation_id") == request_id]
    ingest = [line for line in traced if line["logger"] == "ingestion.api"]
    booking = [line for line in traced if line["logger"] == "services.worker"]
    assert ingest and ingest[0]["msg"] == "telemetry accepted" and ingest[0]["vin"] == vin
    assert booking, [line["msg"] for line in lines]
    assert booking[0]["outcome"] == "booking_created"
    assert booking[0]["vin"] == vin
    assert booking[0]["worker"] == "services"
