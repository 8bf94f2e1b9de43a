"""Trips, disputes and scores through the API: storing results is idempotent, a disputed trip
leaves the period score at once (and counts again when the dispute is withdrawn), and only the
vehicle's owner or an operator may see or dispute its trips."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import select

from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from tests.diagnostics.test_worker import admin_token
from tests.helpers import new_vin, register_test_vehicle
from tests.ubi.test_scoring import _event, _trip
from ubi import service
from ubi.access import link_owner
from ubi.models import UbiEvent, UbiTrip

pytestmark = pytest.mark.kafka  # the API's lifespan connects its producer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def owner_of(settings: Settings, vin: str) -> str:
    engine = make_engine(settings)
    name = f"owner-{uuid.uuid4().hex[:8]}"
    try:
        with session_scope(engine) as session:
            _, token = create_principal_with_credential(session, name, "owner")
        with session_scope(engine) as session:
            link_owner(session, vin, name)
    finally:
        engine.dispose()
    return token


def store(settings: Settings, trips: list[Any], events: list[Any]) -> None:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            service.store_results(session, trips, events, period_days=settings.ubi_period_days)
    finally:
        engine.dispose()


def test_a_disputed_trip_leaves_the_score(settings: Settings, client: TestClient) -> None:
    vin = new_vin()
    register_test_vehicle(settings, vin)
    trips = [_trip(day, km=40.0, vin=vin) for day in range(6)]
    # The third trip was a harsh one; its driver was someone else.
    harsh = [_event(trips[2], severity=3, offset_ms=60_000 * k) for k in (1, 3, 5)]
    store(settings, trips[:4], harsh[:2])
    store(settings, trips[3:], harsh[1:])  # overlaps: a replayed batch stores the same rows
    token = owner_of(settings, vin)

    listed = client.get(f"/v1/vehicles/{vin}/trips", headers=bearer(token))
    assert listed.status_code == 200, listed.text
    assert [t["trip_id"] for t in listed.json()] == [t.trip_id for t in reversed(trips)]
    harsh_trip = next(t for t in listed.json() if t["trip_id"] == trips[2].trip_id)
    assert harsh_trip["score"]["event_counts"]["harsh_braking"] == 3
    assert "latitude" not in str(listed.json())

    before = client.get(f"/v1/vehicles/{vin}/ubi-score", headers=bearer(token)).json()
    assert before["trips"] == 6 and before["event_counts"]["harsh_braking"] == 3
    assert before["reasons"][0]["code"] == "HARSH_BRAKING"

    url = f"/v1/vehicles/{vin}/trips/{trips[2].trip_id}/dispute"
    disputed = client.post(url, json={"reason": "passenger"}, headers=bearer(token))
    assert disputed.status_code == 200, disputed.text
    after = disputed.json()["period_score"]
    assert after["trips"] == 5 and after["disputed_trips"] == 1
    assert after["event_counts"]["harsh_braking"] == 0
    assert after["score"] > before["score"]
    assert disputed.json()["trip"]["disputed"] is True
    stored = client.get(f"/v1/vehicles/{vin}/ubi-score", headers=bearer(token)).json()
    assert stored["score"] == after["score"]
    # The same dispute again is a no-op; another reason is a conflict.
    assert client.post(url, json={"reason": "passenger"}, headers=bearer(token)).status_code == 200
    other = client.post(url, json={"reason": "not_driving"}, headers=bearer(token))
    assert other.status_code == 409, other.text

    withdrawn = client.delete(url, headers=bearer(token))
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["period_score"]["score"] == before["score"]

    audit = client.get(
        "/v1/audit", params={"subject": f"vehicle:{vin}"}, headers=bearer(admin_token(settings))
    )
    actions = [e["action"] for e in audit.json()]
    assert "ubi.trip_disputed" in actions and "ubi.dispute_withdrawn" in actions

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            rows = len(session.exec(select(UbiTrip).where(UbiTrip.vin == vin)).all())
            events = session.exec(select(UbiEvent).where(UbiEvent.vin == vin)).all()
    finally:
        engine.dispose()
    assert rows == 6
    assert len(events) == 3 and {e.trip_id for e in events} == {trips[2].trip_id}


def test_who_may_see_and_dispute_trips(settings: Settings, client: TestClient) -> None:
    vin, other_vin = new_vin(), new_vin()
    for v in (vin, other_vin):
        register_test_vehicle(settings, v)
    trip = _trip(0, vin=vin)
    store(settings, [trip], [])
    mine, theirs = owner_of(settings, vin), owner_of(settings, other_vin)
    url = f"/v1/vehicles/{vin}/trips/{trip.trip_id}/dispute"

    assert client.get(f"/v1/vehicles/{vin}/trips", headers=bearer(theirs)).status_code == 403
    refused = client.post(url, json={"reason": "passenger"}, headers=bearer(theirs))
    assert refused.status_code == 403
    admin = bearer(admin_token(settings))
    assert client.get(f"/v1/vehicles/{vin}/trips", headers=admin).status_code == 200

    bad = client.post(url, json={"reason": "bored"}, headers=bearer(mine))
    assert bad.status_code == 422 and "reason" in bad.text
    missing = f"/v1/vehicles/{vin}/trips/{vin}:123/dispute"
    assert (
        client.post(missing, json={"reason": "passenger"}, headers=bearer(mine)).status_code == 404
    )
    foreign = f"/v1/vehicles/{vin}/trips/{other_vin}:123/dispute"
    assert (
        client.post(foreign, json={"reason": "passenger"}, headers=bearer(mine)).status_code == 404
    )
    nul = client.post(url, json={"reason": "passenger", "note": "a\x00b"}, headers=bearer(mine))
    assert nul.status_code == 422
    assert client.get(f"/v1/vehicles/{other_vin}/ubi-score", headers=admin).status_code == 404
    assert client.get(f"/v1/vehicles/{vin}/battery", headers=admin).status_code == 404
