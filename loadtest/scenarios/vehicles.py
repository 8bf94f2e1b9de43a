"""Vehicles: telemetry batches most of the time, an OTA check-in now and then, and install
reports while an update is offered.

Each user is one registered vehicle with its own credential. It sends the simulator's
messages for its VIN in order (gzip, as ``simulator.publishers.HttpPublisher`` sends them);
when it has sent them all it starts over, and the re-sends are duplicates, which ingest
accepts and the sinks drop (idempotent on ``(vin, message_id)``). A real vehicle sends a
batch every 10 s; one user here sends about one a second, so it stands for about ten.

On start, and on every third or so task, it checks in (``If-None-Match`` with its last
``ETag``). While the check-in offers the launched campaign's update, each check-in is
followed by the next install report: ``downloading``, ``installing``, ``succeeded``.
"""

from __future__ import annotations

import uuid
from typing import Any

from locust import FastHttpUser, between, task

from loadtest.scenarios.common import VehicleSeed, bearer, seed_data

INSTALL_STEPS = ("downloading", "installing", "succeeded")


class VehicleUser(FastHttpUser):
    weight = 1  # all users but the fixed-count kinds (service centers, operators, insurers)
    wait_time = between(0.5, 1.5)

    vehicle: VehicleSeed
    bodies: list[bytes]
    sent: int
    etag: str | None
    offer: dict[str, Any] | None
    step: int
    report_seq: int

    def on_start(self) -> None:
        data = seed_data()
        self.vehicle = data.vehicles.take()
        self.auth = bearer(self.vehicle.token)
        self.telemetry_headers = {
            **self.auth,
            "Content-Type": "application/json",
            "Content-Encoding": "gzip",
        }
        self.bodies = data.telemetry[self.vehicle.vin]
        self.sent = 0
        self.etag = None
        self.offer = None
        self.step = 0
        self.report_seq = 0
        self.check_in()

    @task(20)
    def send_telemetry(self) -> None:
        body = self.bodies[self.sent % len(self.bodies)]
        self.sent += 1
        self.client.post(
            "/v1/telemetry",
            data=body,  # type: ignore[arg-type]  # bytes are sent as they are
            headers=self.telemetry_headers,
            name="/v1/telemetry",
        )

    @task(3)
    def check_in(self) -> None:
        headers = dict(self.auth)
        if self.etag:
            headers["If-None-Match"] = self.etag
        with self.client.get(
            "/v1/ota/check-in", headers=headers, name="/v1/ota/check-in", catch_response=True
        ) as response:
            if response.status_code == 304:
                response.success()
            elif response.status_code == 200:
                self.etag = response.headers.get("ETag")
                self._take_offer(response.json().get("updates", []))
                response.success()
            else:
                response.failure(f"check-in answered {response.status_code}")
                return
        if self.offer is not None:
            self.report()

    def _take_offer(self, updates: list[dict[str, Any]]) -> None:
        mine = [u for u in updates if u.get("ecu_id") == self.vehicle.ecu_id] or updates
        if not mine:
            self.offer = None
            return
        offer = mine[0]
        same = self.offer is not None and all(
            self.offer[k] == offer[k] for k in ("campaign_id", "ecu_id", "attempt")
        )
        if not same:
            self.offer, self.step = offer, 0

    def report(self) -> None:
        """The next step of the offered install."""
        assert self.offer is not None
        state = INSTALL_STEPS[self.step]
        self.report_seq += 1
        body = {
            "report_id": uuid.uuid4().hex,
            "campaign_id": self.offer["campaign_id"],
            "ecu_id": self.offer["ecu_id"],
            "attempt": self.offer["attempt"],
            "seq": self.report_seq,
            "state": state,
            "detail": f"load test step {self.step + 1} of {len(INSTALL_STEPS)}",
        }
        response = self.client.post(
            "/v1/ota/reports", json=body, headers=self.auth, name="/v1/ota/reports"
        )
        if response.status_code == 200:
            self.step += 1
            if self.step == len(INSTALL_STEPS):
                self.offer = None  # installed; the next check-in says what is left
                self.etag = None
