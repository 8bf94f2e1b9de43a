"""Service centers: a workshop's system lists its proposed bookings, accepts most of them
and moves some to another free slot.

Each user is one demo service center with its own ``service_center`` credential (bound to
the center, so it sees only its own bookings). ``loadtest.run_locust`` seeded bookings for
the simulated fleet through the operators' API; the platform proposed each to the nearest
capable center with a free bay.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from loadtest.scenarios.common import CenterSeed, bearer, seed_data

QUEUE_SIZE = 50


class ServiceCenterUser(FastHttpUser):
    fixed_count = 3
    wait_time = between(0.5, 2.0)

    center: CenterSeed
    proposed: list[str]
    accepted: list[str]

    def on_start(self) -> None:
        """A center's system starts by reading its queue and working the first booking."""
        self.center = seed_data().centers.take()
        self.auth = bearer(self.center.token)
        self.proposed, self.accepted = [], []
        self.list_bookings()
        self.accept()
        self.reschedule()

    @task(4)
    def list_bookings(self) -> None:
        response = self.client.get(
            f"/v1/bookings?state=proposed&limit={QUEUE_SIZE}",
            headers=self.auth,
            name="/v1/bookings",
        )
        if response.status_code == 200:
            self.proposed = [b["id"] for b in response.json()]
            random.shuffle(self.proposed)

    @task(2)
    def accept(self) -> None:
        if not self.proposed:
            return
        booking_id = self.proposed.pop()
        response = self.client.post(
            f"/v1/bookings/{booking_id}/accept",
            headers=self.auth,
            name="/v1/bookings/{booking_id}/accept",
        )
        if response.status_code == 200:
            self.accepted.append(booking_id)

    @task(2)
    def reschedule(self) -> None:
        """Move an accepted (or else a proposed) booking to a random free slot of the week."""
        pool = self.accepted or self.proposed
        if not pool:
            return
        booking_id = random.choice(pool)
        response = self.client.get(
            f"/v1/service-centers/{self.center.center_id}/slots",
            headers=self.auth,
            name="/v1/service-centers/{center_id}/slots",
        )
        if response.status_code != 200:
            return
        free = [s["slot_start"] for s in response.json() if s["free_bays"] > 0]
        if not free:
            return
        self.client.post(
            f"/v1/bookings/{booking_id}/reschedule",
            json={"slot_start": random.choice(free[:40])},
            headers=self.auth,
            name="/v1/bookings/{booking_id}/reschedule",
        )
        if booking_id in self.proposed:
            self.proposed.remove(booking_id)
            self.accepted.append(booking_id)
