"""Fixtures for the simulator tests (helpers are in ``tests/simulator/support.py``)."""

from __future__ import annotations

import pytest

from simulator.fleet import VehicleProfile, make_fleet


@pytest.fixture(scope="session")
def fleet() -> list[VehicleProfile]:
    """Eight vehicles: BEV and ICE, private and commercial."""
    return make_fleet(8, seed=11, bev_share=0.5, commercial_share=0.5)
