"""The issue's end-to-end scenario on the real broker: the simulator injects a coolant-pump
fault; the diagnostics worker finds it; the services worker books the nearest capable center;
the dispatcher delivers the signed booking to the center's (local) webhook receiver within a
bounded time; the center accepts and completes it through the API, and the outcome is stored
as a label predictive maintenance can train on."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import make_engine, session_scope
from core.vehicles.repository import get_vehicle_status
from core.workers import build_runner
from diagnostics.pdm_components import component_of_label
from services import repository
from services.delivery import Dispatcher
from services.geo import haversine_km
from services.labels import label_rows
from services.webhooks import WebhookVerificationError, verify
from simulator.delivery import SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import make_fleet
from simulator.runner import iter_messages
from tests.diagnostics.test_worker import admin_token
from tests.helpers import new_vin, publish_messages, register_test_vehicle

pytestmark = pytest.mark.kafka

DAY_S = 86_400.0
BOUND_S = 120.0
HOURS = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


class Receiver:
    """A center's webhook endpoint on loopback: verifies signatures, deduplicates by id."""

    def __init__(self) -> None:
        self.secret = ""
        self.events: dict[str, dict[str, Any]] = {}
        self.arrived_at: dict[str, float] = {}
        self.rejected: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["content-length"]))
                try:
                    event_id = verify([receiver.secret], dict(self.headers), body)
                except WebhookVerificationError as exc:
                    receiver.rejected.append(exc.reason)
                    self.send_response(401)
                    self.end_headers()
                    return
                receiver.events.setdefault(event_id, orjson.loads(body))
                receiver.arrived_at.setdefault(event_id, time.monotonic())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/fleet-hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def bookings_for(self, vin: str) -> list[dict[str, Any]]:
        return [e for e in self.events.values() if e["data"]["vin"] == vin]


def test_a_simulated_fault_becomes_a_booking_at_the_centers_webhook(
    settings: Settings, client: TestClient
) -> None:
    settings = settings.model_copy(
        update={
            # The simulation is replayed at once: count it as real time, not store-and-forward.
            "diagnostics_late_after_s": 3 * DAY_S,
            "diagnostics_checkpoint_s": 1.0,
            "webhook_poll_s": 0.1,
        }
    )
    fault = FaultSpec(kind=FaultKind.COOLANT_PUMP, onset_s=0.0, failure_s=0.5 * DAY_S)
    vehicle = make_fleet(1, seed=21, bev_share=0.0, faults={0: [fault]})[0]
    # Its own VIN: finding ids derive from it, and the test database outlives this test.
    vehicle = dataclasses.replace(vehicle, vin=new_vin())
    register_test_vehicle(settings, vehicle.vin)
    admin = {"Authorization": f"Bearer {admin_token(settings)}"}

    # One receiver per center: the periodic retry may place waiting bookings of earlier tests
    # (the database is shared) at either center, and each center signs with its own secret.
    receivers = {"aaa-far": Receiver(), "zzz-near": Receiver()}
    home = (vehicle.home_lat, vehicle.home_lon)
    centers = {}
    # The far one sorts first by code: picking it would mean the position was not used.
    for code, at in (("aaa-far", (home[0] + 1.0, home[1])), ("zzz-near", home)):
        body = {
            "code": f"{code}-{uuid.uuid4().hex[:6]}",
            "name": f"Center {code}",
            "latitude": at[0],
            "longitude": at[1],
            "time_zone": "Europe/Berlin",
            "opening_hours": HOURS,
            "capabilities": ["cooling", "general"],
            "bays": 2,
            "webhook_url": receivers[code].url,
        }
        created = client.post("/v1/service-centers", json=body, headers=admin)
        assert created.status_code == 201, created.text
        centers[code] = created.json()
        receivers[code].secret = centers[code]["webhook_secret"]
    near, receiver = centers["zzz-near"], receivers["zzz-near"]
    center_ids = [uuid.UUID(c["center"]["id"]) for c in centers.values()]

    start_ms = int((time.time() - 2 * DAY_S) * 1000)
    config = SimConfig(
        sample_interval_s=10.0, samples_per_message=10, parked_sample_interval_s=600.0
    )
    messages = list(iter_messages([vehicle], start_ms, 2 * DAY_S - 60, seed=3, config=config))

    async def scenario() -> float:
        group = uuid.uuid4().hex[:8]
        diagnostics = build_runner(settings, "diagnostics", group_id=f"diag-{group}")
        services = build_runner(settings, "services", group_id=f"svc-{group}")
        engine = make_engine(settings)
        stop = asyncio.Event()
        dispatcher = Dispatcher(settings, engine, center_ids=center_ids)
        tasks = [
            asyncio.create_task(diagnostics.run()),
            asyncio.create_task(services.run()),
            asyncio.create_task(dispatcher.run(stop)),
        ]
        started = time.monotonic()
        try:
            await publish_messages(settings, messages)
            while not receiver.bookings_for(vehicle.vin):
                assert time.monotonic() - started < BOUND_S, "no booking reached the receiver"
                for task in tasks:
                    if task.done():
                        task.result()  # a crashed worker fails the test with its error
                await asyncio.sleep(0.2)
            mine = [i for i, e in receiver.events.items() if e["data"]["vin"] == vehicle.vin]
            return min(receiver.arrived_at[i] for i in mine) - started
        finally:
            diagnostics.stop()
            services.stop()
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)
            await dispatcher.aclose()
            engine.dispose()

    elapsed = asyncio.run(scenario())
    assert elapsed < BOUND_S
    assert [r.rejected for r in receivers.values()] == [[], []]  # every signature verified
    assert not receivers["aaa-far"].bookings_for(vehicle.vin)
    # Receivers keep the highest version: deliveries may arrive in any order. The findings
    # that arrived after the first (more DTCs, the critical alarm) escalate the same booking.
    deliveries = sorted(receiver.bookings_for(vehicle.vin), key=lambda e: e["data"]["version"])
    assert deliveries[0]["type"] == "booking.created"
    assert {e["type"] for e in deliveries[1:]} <= {"booking.escalated"}
    assert len({e["data"]["id"] for e in deliveries}) == 1
    booking = deliveries[-1]["data"]
    assert booking["issue_key"] == "coolant_pump" and booking["capability"] == "cooling"
    assert booking["center_id"] == near["center"]["id"]
    assert booking["urgency"] in ("high", "critical")
    assert booking["evidence"] and booking["summary"]

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            status = get_vehicle_status(session, vehicle.vin)
            notes = repository.list_notifications(session, vehicle.vin)
    finally:
        engine.dispose()
    assert status is not None and status.latitude is not None and status.longitude is not None
    # Booked where the vehicle was when the fault was found (it drove on since): nearer to
    # the near center than the far one is from it.
    far_km = haversine_km(home[0] + 1.0, home[1], *home)
    assert 0 <= booking["distance_km"] < far_km / 2, booking["distance_km"]
    assert haversine_km(status.latitude, status.longitude, *home) < far_km / 2
    assert notes and notes[-1].kind == "booked" and "Why:" in notes[-1].body

    # The center works the booking through the API with its own credential.
    issued = client.post(
        f"/v1/service-centers/{booking['center_id']}/credentials", json={}, headers=admin
    )
    center = {"Authorization": f"Bearer {issued.json()['token']}"}
    listed = client.get("/v1/bookings", headers=center).json()
    # (Waiting bookings of earlier tests in the shared database may be placed here too.)
    assert booking["id"] in [b["id"] for b in listed]
    assert {b["center_id"] for b in listed} == {booking["center_id"]}
    assert client.post(f"/v1/bookings/{booking['id']}/accept", headers=center).status_code == 200
    done = client.post(
        f"/v1/bookings/{booking['id']}/complete",
        json={
            "parts_replaced": ["engine.coolant_pump"],
            "codes_cleared": ["P0217", "P2181"],
            "odometer_km": 12_345.6,
        },
        headers=center,
    )
    assert done.status_code == 200, done.text
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            outcomes = [o for o in repository.list_outcomes(session) if o.vin == vehicle.vin]
    finally:
        engine.dispose()
    [label] = label_rows(outcomes)
    assert component_of_label(label["component"]) == "coolant_pump"
    assert label["dtcs"] == ["P0217", "P2181"] and label["onset_ts"] <= label["failure_ts"]
