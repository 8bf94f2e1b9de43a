"""The load test's Locust file: the user kinds of ``loadtest/scenarios/`` and a ``quitting``
listener that fails the run on the limits of ``loadtest/thresholds.py``.

Run it through ``python -m loadtest.run_locust`` (``make loadtest``), which starts and seeds
a stack on loopback and sets ``FLEET_LOADTEST_SEED``; ``docs/loadtest.md`` explains it all.
"""

from __future__ import annotations

import logging
from typing import Any

from locust import events
from locust.env import Environment

from loadtest.scenarios.common import seed_data
from loadtest.scenarios.insurers import InsurerUser
from loadtest.scenarios.operators import OperatorUser
from loadtest.scenarios.service_centers import ServiceCenterUser
from loadtest.scenarios.vehicles import VehicleUser
from loadtest.thresholds import RequestStats, evaluate

__all__ = ["InsurerUser", "OperatorUser", "ServiceCenterUser", "VehicleUser"]
THRESHOLD_EXIT_CODE = 3
log = logging.getLogger("loadtest")


@events.test_start.add_listener
def load_seed(environment: Environment, **_: Any) -> None:
    """Read credentials and the pre-generated telemetry before any user starts."""
    data = seed_data()
    log.info("seed: %d vehicles with %d telemetry bodies, %d centers, %d pseudonyms",
             len(data.vehicles.items), sum(len(b) for b in data.telemetry.values()),
             len(data.centers.items), len(data.pseudonyms))


@events.quitting.add_listener
def fail_on_thresholds(environment: Environment, **_: Any) -> None:
    evaluation = evaluate(
        RequestStats(
            method=entry.method or "",
            name=entry.name,
            requests=entry.num_requests,
            failures=entry.num_failures,
            requests_per_s=entry.total_rps,
            p50_ms=entry.get_response_time_percentile(0.50) if entry.num_requests else None,
            p95_ms=entry.get_response_time_percentile(0.95) if entry.num_requests else None,
            p99_ms=entry.get_response_time_percentile(0.99) if entry.num_requests else None,
        )
        for entry in environment.stats.entries.values()
    )
    if not evaluation.passed:
        for breach in evaluation.breaches:
            log.error("threshold: %s", breach)
        environment.process_exit_code = THRESHOLD_EXIT_CODE
