"""The services API: registering centers (validation), a service center's view and actions
(only its own bookings), operators' view, the delivery log, owner notifications, and who may
call what."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import make_engine, session_scope
from services import service
from tests.diagnostics.test_worker import admin_token
from tests.helpers import issue_signal, new_vin, register_test_vehicle
from tests.ingestion.conftest import new_vehicle_token

pytestmark = pytest.mark.kafka  # the API's lifespan connects its producer

HOURS = {d: ["08:00-18:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def center_body(**overrides: Any) -> dict[str, Any]:
    body = {
        "code": f"sc-{uuid.uuid4().hex[:10]}",
        "name": "Werkstatt Mitte",
        "latitude": 52.52,
        "longitude": 13.405,
        "time_zone": "Europe/Berlin",
        "opening_hours": HOURS,
        "capabilities": ["cooling", "lv_12v", "general"],
        "bays": 2,
        "webhook_url": "http://127.0.0.1:9/hook",
    }
    body.update(overrides)
    return body


def make_center(client: TestClient, admin: str, **overrides: Any) -> tuple[dict[str, Any], str]:
    """A registered center and a service-center token for it."""
    created = client.post(
        "/v1/service-centers", json=center_body(**overrides), headers=bearer(admin)
    )
    assert created.status_code == 201, created.text
    center = created.json()["center"]
    issued = client.post(
        f"/v1/service-centers/{center['id']}/credentials", json={}, headers=bearer(admin)
    )
    assert issued.status_code == 201, issued.text
    assert issued.json()["principal"]["role"] == "service_center"
    return center, issued.json()["token"]


def book(settings: Settings, vin: str, issue: str = "coolant_pump") -> uuid.UUID:
    """A booking for ``vin`` as the services worker would open it."""
    now = datetime.now(UTC)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            booking = service.apply_signal(
                session, settings, issue_signal(vin, issue, now=now), now
            )
            assert booking is not None
            return booking.id
    finally:
        engine.dispose()


def test_center_registration_validates_every_field(client: TestClient, settings: Settings) -> None:
    admin = admin_token(settings)
    created = client.post("/v1/service-centers", json=center_body(), headers=bearer(admin))
    assert created.status_code == 201
    assert created.json()["webhook_secret"].startswith("whsec_")
    assert "webhook_secret" not in created.json()["center"]  # never shown again
    again = client.post(
        "/v1/service-centers",
        json=center_body(code=created.json()["center"]["code"]),
        headers=bearer(admin),
    )
    assert again.status_code == 409 and again.json()["error"] == "conflict"

    cases = {
        "opening_hours": {"mon": ["18:00-08:00"]},
        "time_zone": "Mars/Olympus",
        "capabilities": ["welding"],
        "bays": 0,
        "latitude": 91,
        "webhook_url": "ftp://example.com/x",
        "slot_minutes": 5,
    }
    for field, value in cases.items():
        bad = client.post(
            "/v1/service-centers", json=center_body(**{field: value}), headers=bearer(admin)
        )
        assert bad.status_code == 422, (field, bad.text)
        assert bad.json()["error"] == "validation_failed"
        assert any(field in err["loc"] for err in bad.json()["detail"]), (field, bad.json())


def test_a_center_sees_and_acts_only_on_its_own_bookings(
    client: TestClient, settings: Settings
) -> None:
    admin = admin_token(settings)
    mine, my_token = make_center(client, admin)
    vin = new_vin()
    register_test_vehicle(settings, vin)
    booking_id = book(settings, vin)
    # The only active capable center without a vehicle position: it got the booking.
    listed = client.get("/v1/bookings", headers=bearer(my_token))
    assert listed.status_code == 200
    assert [b["id"] for b in listed.json()] == [str(booking_id)]
    assert listed.json()[0]["center_code"] == mine["code"]

    _other, other_token = make_center(client, admin)
    assert client.get("/v1/bookings", headers=bearer(other_token)).json() == []
    for method, path, body in [
        ("get", f"/v1/bookings/{booking_id}", None),
        ("post", f"/v1/bookings/{booking_id}/accept", None),
        ("post", f"/v1/bookings/{booking_id}/decline", {"reason": "not mine"}),
        ("post", f"/v1/bookings/{booking_id}/complete", {}),
    ]:
        response = client.request(method, path, json=body, headers=bearer(other_token))
        assert response.status_code == 404, (path, response.text)
    forbidden = client.get(f"/v1/bookings?center_id={mine['id']}", headers=bearer(other_token))
    assert forbidden.status_code == 403
    assert (
        client.get(f"/v1/service-centers/{mine['id']}", headers=bearer(other_token)).status_code
        == 404
    )
    assert (
        client.get(
            f"/v1/webhook-events?booking_id={booking_id}", headers=bearer(other_token)
        ).json()
        == []
    )

    # Its own: complete before accept is a 409 naming the state; then accept and complete.
    early = client.post(f"/v1/bookings/{booking_id}/complete", json={}, headers=bearer(my_token))
    assert early.status_code == 409 and early.json()["error"] == "invalid_state"
    accepted = client.post(f"/v1/bookings/{booking_id}/accept", headers=bearer(my_token))
    assert accepted.status_code == 200 and accepted.json()["state"] == "accepted"
    bad_part = client.post(
        f"/v1/bookings/{booking_id}/complete",
        json={"parts_replaced": ["Coolant Pump!"]},
        headers=bearer(my_token),
    )
    assert bad_part.status_code == 422
    done = client.post(
        f"/v1/bookings/{booking_id}/complete",
        json={"parts_replaced": ["engine.coolant_pump"], "codes_cleared": ["P0217"]},
        headers=bearer(my_token),
    )
    assert done.status_code == 200, done.text
    assert done.json()["outcome"]["parts_replaced"] == ["engine.coolant_pump"]

    # The center's delivery log has the event; replaying is for operators only.
    events = client.get(f"/v1/webhook-events?booking_id={booking_id}", headers=bearer(my_token))
    assert [e["type"] for e in events.json()] == ["booking.created"]
    event_id = events.json()[0]["id"]
    detail = client.get(f"/v1/webhook-events/{event_id}", headers=bearer(admin))
    assert detail.json()["payload"]["data"]["id"] == str(booking_id)
    assert (
        client.post(f"/v1/webhook-events/{event_id}/replay", headers=bearer(my_token)).status_code
        == 403
    )
    replayed = client.post(f"/v1/webhook-events/{event_id}/replay", headers=bearer(admin))
    assert replayed.status_code == 200 and replayed.json()["delivery_state"] == "pending"


def test_reschedule_and_decline_through_the_api(client: TestClient, settings: Settings) -> None:
    admin = admin_token(settings)
    center, token = make_center(client, admin, bays=1)
    vin = new_vin()
    register_test_vehicle(settings, vin)
    booking_id = book(settings, vin)
    slots = client.get(f"/v1/service-centers/{center['id']}/slots", headers=bearer(token))
    assert slots.status_code == 200 and len(slots.json()) > 10
    target = slots.json()[5]["slot_start"]
    not_a_slot = (datetime.fromisoformat(target) + timedelta(minutes=13)).isoformat()
    bad = client.post(
        f"/v1/bookings/{booking_id}/reschedule",
        json={"slot_start": not_a_slot},
        headers=bearer(token),
    )
    assert bad.status_code == 422 and "not a slot start" in bad.json()["detail"][0]["msg"]
    naive = client.post(
        f"/v1/bookings/{booking_id}/reschedule",
        json={"slot_start": "2031-01-01T10:00:00"},
        headers=bearer(token),
    )
    assert naive.status_code == 422
    moved = client.post(
        f"/v1/bookings/{booking_id}/reschedule", json={"slot_start": target}, headers=bearer(token)
    )
    assert moved.status_code == 200, moved.text
    assert moved.json()["state"] == "accepted"
    assert datetime.fromisoformat(moved.json()["slot_start"]) == datetime.fromisoformat(target)

    declined = client.post(
        f"/v1/bookings/{booking_id}/decline", json={"reason": "no lift"}, headers=bearer(token)
    )
    assert declined.status_code == 200 and declined.json()["state"] == "declined"
    everything = client.get(f"/v1/bookings?vin={vin}", headers=bearer(admin)).json()
    follow = next(b for b in everything if b["id"] != str(booking_id))
    assert follow["previous_booking_id"] == str(booking_id)
    assert follow["state"] == "unassigned"  # the only capable center declined it
    notes = client.get(f"/v1/vehicles/{vin}/notifications", headers=bearer(admin)).json()
    assert [n["kind"] for n in notes][:3] == ["moved", "rescheduled", "booked"]


def test_roles(client: TestClient, settings: Settings) -> None:
    admin = admin_token(settings)
    center, center_token = make_center(client, admin)
    vin, vehicle_token = new_vehicle_token(settings)
    register_test_vehicle(settings, vin)
    booking_id = book(settings, vin)
    vehicle = bearer(vehicle_token)
    for method, path in [
        ("get", "/v1/bookings"),
        ("get", f"/v1/bookings/{booking_id}"),
        ("post", f"/v1/bookings/{booking_id}/accept"),
        ("post", f"/v1/bookings/{booking_id}/cancel"),
        ("get", "/v1/service-centers"),
        ("post", "/v1/service-centers"),
        ("get", f"/v1/service-centers/{center['id']}/slots"),
        ("get", "/v1/webhook-events"),
        ("post", "/v1/bookings"),
    ]:
        response = client.request(method, path, json={}, headers=vehicle)
        assert response.status_code == 403, (path, response.text)
        assert client.request(method, path, json={}).status_code == 401
    # Its own notifications it may read; another vehicle's not.
    assert client.get(f"/v1/vehicles/{vin}/notifications", headers=vehicle).status_code == 200
    other = new_vin()
    assert client.get(f"/v1/vehicles/{other}/notifications", headers=vehicle).status_code == 403
    # A center may not register centers, cancel, or request bookings.
    for method, path in [
        ("post", "/v1/service-centers"),
        ("post", f"/v1/bookings/{booking_id}/cancel"),
        ("post", "/v1/bookings"),
        ("post", f"/v1/service-centers/{center['id']}/webhook-secret"),
    ]:
        response = client.request(method, path, json={}, headers=bearer(center_token))
        assert response.status_code == 403, (path, response.text)
    # An operator acts on no center's behalf.
    assert (
        client.post(f"/v1/bookings/{booking_id}/accept", headers=bearer(admin)).status_code == 403
    )
    # A center listing centers gets its own only; operators get them all.
    own = client.get("/v1/service-centers", headers=bearer(center_token))
    assert own.status_code == 200 and [c["id"] for c in own.json()] == [center["id"]]
    listed = client.get("/v1/service-centers", params={"limit": 1000}, headers=bearer(admin))
    assert center["id"] in {c["id"] for c in listed.json()}


def test_operators_request_cancel_and_rotate(client: TestClient, settings: Settings) -> None:
    admin = admin_token(settings)
    center, _token = make_center(client, admin)
    vin = new_vin()
    register_test_vehicle(settings, vin)
    unknown = client.post(
        "/v1/bookings", json={"vin": new_vin(), "issue_key": "brake_pads"}, headers=bearer(admin)
    )
    assert unknown.status_code == 404
    first = client.post(
        "/v1/bookings", json={"vin": vin, "issue_key": "routine"}, headers=bearer(admin)
    )
    assert first.status_code == 201 and first.json()["center_id"] == center["id"]
    second = client.post(
        "/v1/bookings",
        json={"vin": vin, "issue_key": "routine", "urgency": "high", "note": "customer called"},
        headers=bearer(admin),
    )
    assert second.json()["id"] == first.json()["id"]  # escalated, not duplicated
    assert second.json()["urgency"] == "high" and second.json()["escalations"] == 1
    cancelled = client.post(
        f"/v1/bookings/{first.json()['id']}/cancel", json={"reason": "sold"}, headers=bearer(admin)
    )
    assert cancelled.json()["state"] == "cancelled"
    again = client.post(
        f"/v1/bookings/{first.json()['id']}/cancel", json={"reason": "x"}, headers=bearer(admin)
    )
    assert again.status_code == 409

    rotated = client.post(
        f"/v1/service-centers/{center['id']}/webhook-secret", headers=bearer(admin)
    )
    assert rotated.status_code == 200 and rotated.json()["webhook_secret"].startswith("whsec_")
    read = client.get(f"/v1/service-centers/{center['id']}", headers=bearer(admin)).json()
    assert read["previous_secret_valid_until"] is not None
    no_slot = client.post(
        "/v1/service-centers",
        json=center_body(opening_hours={"mon": ["08:00-09:00"]}, slot_minutes=120),
        headers=bearer(admin),
    )
    assert no_slot.status_code == 422 and "slot_minutes" in no_slot.json()["detail"][0]["loc"]
    bare = client.post(
        "/v1/service-centers", json=center_body(webhook_url=None), headers=bearer(admin)
    ).json()
    assert bare["webhook_secret"] is None
    with_url = client.patch(
        f"/v1/service-centers/{bare['center']['id']}",
        json={"webhook_url": "https://dms.example.com/h"},
        headers=bearer(admin),
    )
    assert with_url.status_code == 200 and with_url.json()["webhook_url"]
    first = client.post(
        f"/v1/service-centers/{bare['center']['id']}/webhook-secret", headers=bearer(admin)
    ).json()
    assert first["webhook_secret"].startswith("whsec_")
    assert first["previous_secret_valid_until"] is None  # there was no secret before
    patched = client.patch(
        f"/v1/service-centers/{center['id']}",
        json={"bays": 4, "opening_hours": {"mon": ["x"]}},
        headers=bearer(admin),
    )
    assert patched.status_code == 422
