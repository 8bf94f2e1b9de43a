"""Insurers: pages of signed UBI scores of the vehicles that consented to them, and single
scores by pseudonym (what a nightly pull and a quote lookup do).

``loadtest.run_locust`` stored a 30-day score per simulated vehicle (the real scorer over
generated commutes), linked an owner who granted the insurer a ``ubi`` consent for each, and
computed the insurer's pseudonyms.
"""

from __future__ import annotations

import random

from locust import FastHttpUser, between, task

from loadtest.scenarios.common import bearer, seed_data

PAGE = 50


class InsurerUser(FastHttpUser):
    fixed_count = 1
    wait_time = between(0.2, 1.0)

    pseudonyms: list[str]

    def on_start(self) -> None:
        data = seed_data()
        self.auth = bearer(data.insurer_token)
        self.pseudonyms = data.pseudonyms
        self.list_scores()
        self.one_score()

    @task(1)
    def list_scores(self) -> None:
        pages = max(1, -(-len(self.pseudonyms) // PAGE))
        offset = random.randrange(pages) * PAGE
        self.client.get(
            f"/v1/partner/ubi/scores?limit={PAGE}&offset={offset}",
            headers=self.auth,
            name="/v1/partner/ubi/scores",
        )

    @task(3)
    def one_score(self) -> None:
        pseudonym = random.choice(self.pseudonyms)
        self.client.get(
            f"/v1/partner/ubi/scores/{pseudonym}",
            headers=self.auth,
            name="/v1/partner/ubi/scores/{pseudonym}",
        )
