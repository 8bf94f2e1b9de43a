"""Generation speed: the fleet demo runs 50-200 vehicles at 1 Hz on a 2-core machine next to
Kafka and the API, so one message (10 samples) for each of 100 vehicles must take well under
100 ms. Measured in CPU time of this process (other load on the machine does not count); the
bound here is loose (typical: 20-30 ms) so that only a real regression fails."""

from __future__ import annotations

import statistics
import time

from simulator.fleet import make_fleet
from simulator.vehicle import VehicleSim
from tests.simulator.support import START_MS


def test_100_vehicles_times_10_samples_is_fast() -> None:
    fleet = make_fleet(100, seed=61, commercial_share=0.5)
    sims = [VehicleSim(v, start_ms=START_MS) for v in fleet]
    for _ in range(3):  # first trips planned
        for sim in sims:
            sim.advance(10)
    timings = []
    for _ in range(30):
        t0 = time.process_time()
        for sim in sims:
            sim.advance(10)
        timings.append(time.process_time() - t0)
    assert statistics.median(timings) < 0.1, timings
