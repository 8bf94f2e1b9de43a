"""Contract: no partner payload carries a location, a trace or a VIN.

The database holds everything a careless projection could leak: the vehicle's last position
(``vehicle_status``), a score payload that contains the VIN (``PeriodScore.as_dict`` does) plus
extra keys with coordinates, a track and VIN-looking strings nested inside allowlisted objects,
and a battery row whose health and residual JSON carry the odometer and the VIN. Every JSON
value of every partner endpoint (lists and single items of both purposes, the 404 and the key
set) is walked; a key that looks like a location, VIN or trace, a string that is or looks like
a VIN, or a number equal to the stored latitude or longitude fails the test.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import utcnow
from core.vehicles.models import VehicleStatus
from core.vin import VIN_RE
from tests.diagnostics.test_worker import admin_token
from tests.helpers import new_vin, register_test_vehicle
from tests.ingestion import conftest as api_fixtures
from tests.ubi.partner_data import (
    Caller,
    db,
    grant,
    insert_battery,
    insert_ubi_score,
    link_owner,
    new_caller,
)
from ubi import signing

pytestmark = pytest.mark.kafka
client, settings, db_url = api_fixtures.client, api_fixtures.settings, api_fixtures.db_url

LATITUDE, LONGITUDE = 48.137154, 11.576124
FORBIDDEN_TOKENS = {"lat", "lon", "lng", "vin", "gps", "trace", "track", "geo"}
FORBIDDEN_PARTS = ("latitude", "longitude", "position", "location", "coordinate", "gps", "trace")
VIN_ANYWHERE = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])")


def walk(value: Any, path: str = "$") -> Iterator[tuple[str, str | None, Any]]:
    """(path, key, value) of every JSON value, depth first."""
    if isinstance(value, dict):
        for key, child in value.items():
            yield f"{path}.{key}", key, child
            yield from walk(child, f"{path}.{key}")
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield f"{path}[{index}]", None, child
            yield from walk(child, f"{path}[{index}]")


def leaks(body: Any, vins: set[str]) -> list[str]:
    found = []
    for path, key, value in walk(body):
        if key is not None:
            lowered = key.lower()
            tokens = set(re.split(r"[^a-z0-9]+", lowered))
            if tokens & FORBIDDEN_TOKENS or any(part in lowered for part in FORBIDDEN_PARTS):
                found.append(f"{path}: key looks like a location, trace or VIN")
        if isinstance(value, str) and (
            value in vins or VIN_RE.fullmatch(value) or VIN_ANYWHERE.search(value)
        ):
            found.append(f"{path}: {value!r} is or contains a VIN")
        if isinstance(value, str) and any(str(c) in value for c in (LATITUDE, LONGITUDE)):
            found.append(f"{path}: {value!r} contains the stored position")
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if number and any(abs(value - c) < 1e-9 for c in (LATITUDE, LONGITUDE)):
            found.append(f"{path}: {value} equals the stored position")
    return found


POISONED_UBI = {
    "latitude": LATITUDE,
    "longitude": LONGITUDE,
    "last_position": {"lat": LATITUDE, "lon": LONGITUDE},
    "trace": [[LATITUDE, LONGITUDE], [LATITUDE + 0.001, LONGITUDE]],
    "gps_track": "48.137154,11.576124;48.138,11.577",
    "home_location": "Marienplatz 1, München",
}


def poisoned_ubi_payload(vin: str) -> dict[str, Any]:
    """Extra keys on top of the real ``PeriodScore.as_dict()`` (which carries ``vin``), some of
    them nested inside allowlisted objects."""
    return {
        **POISONED_UBI,
        "sub_scores": {"braking": 80.0, "latitude": LATITUDE, "gps": [LATITUDE, LONGITUDE]},
        "event_counts": {"harsh_braking": 2, "position": [LATITUDE, LONGITUDE]},
        "rates_per_100km": {"harsh_braking": 0.9, "lon": LONGITUDE},
        "reasons": [
            {"code": "HARSH_BRAKING", "points_lost": 3.1, "text": "Braking.", "location": "x"},
            {"code": vin, "points_lost": 1.0, "text": f"at {LATITUDE},{LONGITUDE}"},
            {"code": "SPEEDING", "points_lost": 1.0, "text": f"vehicle {vin}"},
        ],
        "insufficient_reasons": [vin, "INSUFFICIENT_TRIPS"],
    }


def poisoned_residual(vin: str) -> dict[str, Any]:
    return {
        "vin": vin,
        "odometer_km": 48_211.0,
        "last_position": {"latitude": LATITUDE, "longitude": LONGITUDE},
        "quality_flags": ["soc_noise", vin],
        "second_life_grade": vin,
    }


@pytest.fixture
def world(settings: Settings, client: TestClient) -> tuple[Caller, list[str]]:
    admin = Caller("admin", uuid.uuid4(), {"Authorization": f"Bearer {admin_token(settings)}"})
    grantee = new_caller(settings, "partner")
    vins = [new_vin() for _ in range(2)]
    for vin in vins:
        register_test_vehicle(settings, vin, powertrain="bev")
        owner = new_caller(settings, "owner")
        link_owner(client, admin, vin, owner)
        insert_ubi_score(settings, vin, extra=poisoned_ubi_payload(vin))
        insert_battery(settings, vin, extra=poisoned_residual(vin))
        with db(settings) as session:
            session.merge(
                VehicleStatus(
                    vin=vin,
                    position_ts=utcnow(),
                    latitude=LATITUDE,
                    longitude=LONGITUDE,
                    odometer_ts=utcnow(),
                    odometer_m=48_211_000.0,
                )
            )
        grant(client, owner, vin, grantee, purpose="ubi")
        grant(client, owner, vin, grantee, purpose="battery")
    return grantee, vins


def test_the_leak_detector_catches_what_the_database_holds(
    settings: Settings, world: tuple[Caller, list[str]]
) -> None:
    """The check must be able to fail: the stored rows themselves trip it."""
    _, vins = world
    for vin in vins:
        assert leaks(poisoned_ubi_payload(vin), set(vins))
        assert leaks(poisoned_residual(vin), set(vins))
        assert leaks({"score": 80.0, "subject": vin}, set(vins))
        assert leaks({"note": LONGITUDE}, set(vins))
        assert leaks({"text": f"near {LATITUDE}, {LONGITUDE}"}, set(vins))


def test_no_partner_payload_carries_a_location_trace_or_vin(
    client: TestClient, world: tuple[Caller, list[str]]
) -> None:
    grantee, vins = world
    jwks = client.get("/v1/partner/keys").json()
    bodies: dict[str, Any] = {"/v1/partner/keys": jwks}
    for purpose in ("ubi", "battery"):
        path = f"/v1/partner/{purpose}/scores"
        listing = client.get(path, headers=grantee.headers)
        assert listing.status_code == 200, listing.text
        signing.verify(listing.content, listing.headers[signing.HEADER], jwks)
        page = listing.json()
        assert page["total"] == 2 and len(page["items"]) == 2
        bodies[path] = page
        for item in page["items"]:
            single = client.get(f"{path}/{item['subject']}", headers=grantee.headers)
            assert single.status_code == 200 and single.json() == item
            bodies[f"{path}/{item['subject']}"] = single.json()
        missing = client.get(f"{path}/{vins[0]}", headers=grantee.headers)
        assert missing.status_code == 404
        bodies[f"{path}/<vin>"] = missing.json()

    problems = {path: leaks(body, set(vins)) for path, body in bodies.items()}
    assert not any(problems.values()), problems
    # The allowlisted parts that survive the poisoned payload are still there.
    ubi_item = bodies["/v1/partner/ubi/scores"]["items"][0]
    assert ubi_item["sub_scores"]["braking"] == 80.0
    assert [r["code"] for r in ubi_item["reasons"]] == ["HARSH_BRAKING", "SPEEDING"]
    assert ubi_item["reasons"][0]["text"] == "Braking."
    assert ubi_item["reasons"][1]["text"] == ""  # it named the vehicle
    assert ubi_item["insufficient_reasons"] == ["INSUFFICIENT_TRIPS"]
    residual = bodies["/v1/partner/battery/scores"]["items"][0]["residual"]
    assert residual["quality_flags"] == ["soc_noise"] and residual["second_life_grade"] is None
    assert residual["state_of_health_pct"] is not None
