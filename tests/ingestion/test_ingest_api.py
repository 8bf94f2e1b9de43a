"""Bad input to POST /v1/telemetry gets a clear 4xx naming what is wrong, never a 5xx."""

from __future__ import annotations

import gzip
import uuid

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from schemathesis.core import NOT_SET

from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from tests.helpers import encode, message, new_vin
from tests.ingestion.conftest import new_vehicle_token

pytestmark = pytest.mark.kafka


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_credentials_are_required_and_scoped(
    client: TestClient, settings: Settings, vehicle: tuple[str, str]
) -> None:
    vin, token = vehicle
    body = encode(message(vin))
    missing = client.post("/v1/telemetry", content=body)
    assert missing.status_code == 401 and missing.json()["error"] == "unauthorized"
    assert (
        client.post("/v1/telemetry", content=body, headers=bearer("flt_nope_nope")).status_code
        == 401
    )
    other = client.post("/v1/telemetry", content=encode(message(new_vin())), headers=bearer(token))
    assert other.status_code == 403
    assert other.json()["detail"][0]["loc"] == ["body", "vin"]


def test_validation_errors_name_each_field(client: TestClient, vehicle: tuple[str, str]) -> None:
    vin, token = vehicle
    payload = message(vin, samples=2)
    payload["samples"][1]["signals"]["Vehicle.Speed"] = 900.0
    payload["samples"][0]["signals"]["Vehicle.Bogus"] = 1
    response = client.post("/v1/telemetry", content=encode(payload), headers=bearer(token))
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert {(tuple(d["loc"]), d["type"]) for d in detail} == {
        (("samples", 0, "signals", "Vehicle.Bogus"), "unknown_signal"),
        (("samples", 1, "signals", "Vehicle.Speed"), "out_of_range"),
    }


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{", {}, 422, "validation_failed"),
        (b'{"vin": 5}', {}, 422, "validation_failed"),
        (b'{"vin": "\xff"}', {}, 422, "validation_failed"),
        (b"not gzip", {"Content-Encoding": "gzip"}, 422, "validation_failed"),
        (b"{}", {"Content-Encoding": "br"}, 415, "unsupported_media_type"),
        (b"x" * 2_000_000, {}, 413, "payload_too_large"),
        (gzip.compress(b" " * 9_000_000), {"Content-Encoding": "gzip"}, 413, "payload_too_large"),
    ],
)
def test_malformed_bodies(
    client: TestClient, vehicle: tuple[str, str], body: bytes, headers: dict, status: int, code: str
) -> None:
    _, token = vehicle
    response = client.post("/v1/telemetry", content=body, headers={**bearer(token), **headers})
    assert response.status_code == status, response.text
    assert response.json()["error"] == code


# Examples per operation: the admin run covers every operation (about 80 of them).
EXAMPLES = {"admin": 15, "vehicle": 25}
VEHICLE_PATHS = ("/v1/telemetry", "/v1/ota/", "/v1/me", "/v1/vehicles/{vin}/notifications")


@pytest.mark.parametrize("role", ["admin", "vehicle"])
def test_openapi_schema_never_yields_5xx(client: TestClient, settings: Settings, role: str) -> None:
    """Schemathesis generates requests for every operation in the OpenAPI document as an
    admin, and for the operations a vehicle calls (and the OTA operator ones beside them) as
    a vehicle; nothing may answer 5xx."""
    if role == "vehicle":
        _, token = new_vehicle_token(settings)
    else:
        engine = make_engine(settings)
        with session_scope(engine) as session:
            _, token = create_principal_with_credential(session, f"admin-{uuid.uuid4()}", "admin")
        engine.dispose()
    schema = schemathesis.openapi.from_asgi("/openapi.json", client.app)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if role == "vehicle" and not operation.path.startswith(VEHICLE_PATHS):
            continue  # the admin run fuzzes those; a vehicle only meets their 403
        operations += 1

        @hsettings(
            max_examples=EXAMPLES[role], deadline=None, suppress_health_check=list(HealthCheck)
        )
        @given(case=operation.as_strategy())
        def check(case: schemathesis.Case) -> None:
            response = client.request(
                case.method,
                case.formatted_path,
                headers={**(case.headers or {}), **bearer(token)},
                params=case.query,
                json=case.body if case.body is not NOT_SET else None,
            )
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path}: {response.status_code}")

        check()
    assert operations >= 8  # telemetry, principals, credentials, vehicles, health
    assert failures == []
