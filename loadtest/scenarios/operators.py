"""Fleet operators: a campaign dashboard that lists the OTA campaigns and polls the
progress of one (per-wave counts, gate decisions, failures by error code and hardware).

``loadtest.run_locust`` uploaded a TCU image and launched a campaign to the whole simulated
fleet, so the progress changes while the vehicles report.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from loadtest.scenarios.common import bearer, seed_data


class OperatorUser(FastHttpUser):
    fixed_count = 2
    wait_time = between(1.0, 2.0)

    campaign_ids: list[str]

    def on_start(self) -> None:
        data = seed_data()
        self.auth = bearer(data.operator_token)
        self.campaign_ids = list(data.campaign_ids)
        self.list_campaigns()
        self.campaign_progress()

    @task(1)
    def list_campaigns(self) -> None:
        response = self.client.get(
            "/v1/ota/campaigns?limit=100", headers=self.auth, name="/v1/ota/campaigns"
        )
        if response.status_code == 200 and response.json():
            self.campaign_ids = [c["id"] for c in response.json()]

    @task(2)
    def campaign_progress(self) -> None:
        campaign_id = random.choice(self.campaign_ids)
        self.client.get(
            f"/v1/ota/campaigns/{campaign_id}",
            headers=self.auth,
            name="/v1/ota/campaigns/{campaign_id}",
        )
