from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.drive import DS, RoadType, Route, build_route, offsets_to_latlon, profile_leg


def _route(seed: int, sections: list[tuple[RoadType, float]]) -> Route:
    rng = np.random.default_rng(seed)
    return build_route(
        rng, sections, start_east=0.0, start_north=0.0, heading_deg=30.0,
        urban_kmh=50, highway_kmh=120,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("sections", "vmax_kmh"),
    [
        ([(RoadType.URBAN, 5_000)], 60),
        ([(RoadType.URBAN, 1_500), (RoadType.SUBURBAN, 6_000), (RoadType.URBAN, 1_500)], 95),
        ([(RoadType.URBAN, 1_000), (RoadType.HIGHWAY, 30_000), (RoadType.URBAN, 1_000)], 145),
    ],
)
def test_speed_profile_is_physical(sections: list[tuple[RoadType, float]], vmax_kmh: float) -> None:
    route = _route(1, sections)
    leg = profile_leg(
        route, 0, route.n - 1, np.random.default_rng(2), dt=1.0, accel=2.0, brake=2.5,
        speed_factor=1.0,
    )  # fmt: skip
    v = leg.v
    assert v.min() >= 0.0
    assert v[0] == 0.0 and v[-1] == 0.0
    assert v.max() * 3.6 <= vmax_kmh
    # Smooth acceleration and braking limits (the ~2 s smoothing only softens them).
    assert np.abs(np.diff(v)).max() <= 2.6
    assert np.allclose(leg.a, np.gradient(v, 1.0))
    # Distance travelled is the route length; position follows the route.
    assert leg.s[-1] == pytest.approx(route.length_m, rel=1e-9)
    assert np.all(np.diff(leg.s) >= -1e-9)
    assert leg.east[-1] == pytest.approx(route.east[-1], abs=1e-6)
    assert leg.north[-1] == pytest.approx(route.north[-1], abs=1e-6)
    assert np.all((leg.heading >= 0) & (leg.heading < 360))
    # Lateral acceleration stays moderate (turn speeds are limited).
    assert np.abs(leg.a_lat).max() < 4.5


def test_urban_traffic_stops_and_highway_cruises() -> None:
    urban = _route(3, [(RoadType.URBAN, 8_000)])
    leg = profile_leg(urban, 0, urban.n - 1, np.random.default_rng(4), dt=1.0, accel=1.8,
                      brake=2.2, speed_factor=1.0)  # fmt: skip
    moving = leg.v > 0.5
    starts = np.count_nonzero(np.diff(moving.astype(int)) == 1)
    assert starts >= 4, "urban driving stops at red lights and stop signs"
    highway = _route(5, [(RoadType.HIGHWAY, 40_000)])
    hw = profile_leg(highway, 0, highway.n - 1, np.random.default_rng(6), dt=1.0, accel=1.8,
                     brake=2.2, speed_factor=1.0)  # fmt: skip
    assert np.median(hw.v[hw.v > 1]) * 3.6 > 80
    assert hw.v.mean() > leg.v.mean() * 1.5


def test_reversed_route_leads_back_home() -> None:
    route = _route(7, [(RoadType.URBAN, 3_000), (RoadType.SUBURBAN, 4_000)])
    back = route.reversed()
    assert back.east[-1] == route.east[0] and back.north[-1] == route.north[0]
    leg = profile_leg(back, 0, back.n - 1, np.random.default_rng(8), dt=1.0, accel=2.0,
                      brake=2.0, speed_factor=1.0)  # fmt: skip
    assert math.hypot(leg.east[-1], leg.north[-1]) < 1e-6


def test_heading_matches_the_direction_of_travel() -> None:
    route = _route(9, [(RoadType.SUBURBAN, 6_000)])
    dx, dy = np.diff(route.east), np.diff(route.north)
    bearing = np.degrees(np.arctan2(dx, dy)) % 360
    diff = (bearing - route.heading[:-1] % 360 + 540) % 360 - 180
    assert np.abs(diff).max() < 1e-6
    assert np.allclose(np.hypot(dx, dy), DS)


def test_goal_seeking_routes_end_nearer_the_goal() -> None:
    far = []
    for seed in range(12):
        rng = np.random.default_rng(seed)
        route = build_route(rng, [(RoadType.URBAN, 15_000)], start_east=20_000.0,
                            start_north=0.0, heading_deg=0.0, urban_kmh=50, highway_kmh=120,
                            goal=(0.0, 0.0))  # fmt: skip
        far.append(math.hypot(route.east[-1], route.north[-1]))
    assert np.median(far) < 12_000


def test_offsets_to_latlon() -> None:
    lat, lon = offsets_to_latlon(48.0, 11.0, np.array([0.0, 1000.0]), np.array([1000.0, 0.0]))
    assert lat[0] - 48.0 == pytest.approx(1000 / 111_195, rel=1e-3)
    assert lon[1] - 11.0 == pytest.approx(1000 / (111_195 * math.cos(math.radians(48))), rel=1e-3)
