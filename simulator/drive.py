"""Routes and speed profiles.

The drive cycles are synthesised, not replayed: no package on PyPI that this project can
reasonably depend on ships the EPA cycles (UDDS, HWFET) as data (FASTSim 3 is a 14 MB
powertrain model under a proprietary licence that fetches its cycles at run time), and a
replayed cycle would give every vehicle the same trace anyway.

How a trip is made:

1. A **route** is geometry on a 5 m grid: heading and curvature (turns at intersections on
   a 10-25 m radius, long curves on highways), east/north offsets in metres, the speed limit
   (lower in turns so lateral acceleration stays below ~3 m/s^2), traffic lights and stop
   signs. Road types: urban (blocks of 80-400 m, lights, stop signs, 90 degree turns),
   suburban, highway (with the odd traffic jam).
2. A **leg** (part of a route driven without stopping the engine) gets a speed profile: the
   limit is scaled by a slowly varying driver factor, every red light (drawn anew each time)
   and stop sign becomes a zero, then a forward pass bounds acceleration and a backward pass
   bounds braking (both exact and vectorised, in the squared-speed domain:
   ``v[k+1]^2 <= v[k]^2 + 2 a ds``). The profile is converted to the time domain, dwell times
   at red lights are inserted, it is resampled at the sample interval and smoothed over ~2 s,
   which rounds off the jerk. Position, heading and lateral acceleration are then read off the
   geometry at the distance travelled, so GPS, odometer and speed always agree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

DS = 5.0
"""Route grid spacing in metres."""
EARTH_RADIUS_M = 6_371_008.8


class RoadType(StrEnum):
    URBAN = "urban"
    SUBURBAN = "suburban"
    HIGHWAY = "highway"


@dataclass(frozen=True)
class RoadParams:
    block_m: tuple[float, float]
    p_signal: float
    p_stop_sign: float
    p_turn: float
    turn_radius_m: tuple[float, float]
    curve_every_m: tuple[float, float]
    curve_radius_m: tuple[float, float]
    curve_angle_deg: tuple[float, float]
    p_jam_per_km: float


ROADS: dict[RoadType, RoadParams] = {
    RoadType.URBAN: RoadParams((80, 400), 0.55, 0.12, 0.25, (10, 18), (300, 900), (60, 200),
                               (10, 35), 0.0),
    RoadType.SUBURBAN: RoadParams((300, 1500), 0.35, 0.05, 0.12, (15, 25), (400, 1500),
                                  (150, 500), (10, 45), 0.0),
    RoadType.HIGHWAY: RoadParams((1e9, 1e9), 0.0, 0.0, 0.0, (50, 50), (1500, 6000),
                                 (700, 3000), (5, 35), 0.02),
}  # fmt: skip

RED_LIGHT_P = 0.5
MAX_LATERAL_MPS2 = 2.6


@dataclass
class Route:
    """Geometry on the ``DS`` grid. ``east``/``north`` are metres from the vehicle's home."""

    east: np.ndarray
    north: np.ndarray
    heading: np.ndarray
    """Degrees, unwrapped (may leave [0, 360)); 0 = north, 90 = east."""
    curvature: np.ndarray
    """1/m; positive = turning right (heading increasing)."""
    vlimit: np.ndarray
    """m/s."""
    signal: np.ndarray
    """Traffic light at this point."""
    stop_sign: np.ndarray
    jam: np.ndarray
    """m/s cap from congestion (inf = free flow)."""
    urban: np.ndarray
    """Urban road (longer red lights)."""

    @property
    def n(self) -> int:
        return len(self.east)

    @property
    def length_m(self) -> float:
        return (self.n - 1) * DS

    def reversed(self) -> Route:
        """The same road driven back to its start."""
        return Route(
            east=self.east[::-1].copy(),
            north=self.north[::-1].copy(),
            heading=self.heading[::-1] + 180.0,
            curvature=-self.curvature[::-1],
            vlimit=self.vlimit[::-1].copy(),
            signal=self.signal[::-1].copy(),
            stop_sign=self.stop_sign[::-1].copy(),
            jam=self.jam[::-1].copy(),
            urban=self.urban[::-1].copy(),
        )


def build_route(
    rng: np.random.Generator,
    sections: list[tuple[RoadType, float]],
    *,
    start_east: float,
    start_north: float,
    heading_deg: float,
    urban_kmh: float,
    highway_kmh: float,
    goal: tuple[float, float] | None = None,
) -> Route:
    """A route from ``(start_east, start_north)`` through ``sections`` of (road type, metres).
    With a ``goal`` (east, north), turns at intersections mostly lean towards it."""
    track = _Tracker(heading_deg, start_east, start_north, goal)
    limits = {
        RoadType.URBAN: urban_kmh / 3.6,
        RoadType.SUBURBAN: min(80.0, max(60.0, urban_kmh * 1.4)) / 3.6,
        RoadType.HIGHWAY: highway_kmh / 3.6,
    }
    parts: list[dict[str, np.ndarray]] = []
    for road, length in sections:
        parts.append(_section(rng, road, max(DS * 4, length), limits[road], track))
    curvature = np.concatenate([p["curvature"] for p in parts])
    vlimit = np.concatenate([p["vlimit"] for p in parts])
    signal = np.concatenate([p["signal"] for p in parts])
    stop_sign = np.concatenate([p["stop_sign"] for p in parts])
    jam = np.concatenate([p["jam"] for p in parts])
    urban = np.concatenate([p["urban"] for p in parts])
    heading = heading_deg + np.degrees(np.concatenate([[0.0], np.cumsum(curvature[:-1] * DS)]))
    h = np.radians(heading)
    east = start_east + np.concatenate([[0.0], np.cumsum(np.sin(h[:-1]) * DS)])
    north = start_north + np.concatenate([[0.0], np.cumsum(np.cos(h[:-1]) * DS)])
    return Route(east, north, heading, curvature, vlimit, signal, stop_sign, jam, urban)


@dataclass
class _Tracker:
    """Dead reckoning while a route is laid out, for turns that lean towards a goal."""

    heading: float
    east: float
    north: float
    goal: tuple[float, float] | None

    def follow(self, curvature: np.ndarray) -> None:
        """Move along ``len(curvature)`` grid steps of the given curvature."""
        if not len(curvature):
            return
        turned = np.cumsum(curvature) * DS
        h = np.radians(self.heading) + np.concatenate(([0.0], turned[:-1]))
        self.east += float(np.sin(h).sum()) * DS
        self.north += float(np.cos(h).sum()) * DS
        self.heading += math.degrees(float(turned[-1]))

    def turn_sign(self, rng: np.random.Generator, p_turn: float) -> float:
        """+1 right, -1 left, 0 straight on."""
        if self.goal is not None:
            bearing = math.degrees(math.atan2(self.goal[0] - self.east, self.goal[1] - self.north))
            off = (bearing - self.heading + 540.0) % 360.0 - 180.0
            if abs(off) > 60 and rng.random() < min(0.9, 2.5 * p_turn):
                return 1.0 if off > 0 else -1.0
        return float(rng.choice([-1.0, 1.0])) if rng.random() < p_turn else 0.0


def _section(
    rng: np.random.Generator, road: RoadType, length: float, limit: float, track: _Tracker
) -> dict[str, np.ndarray]:
    p = ROADS[road]
    n = int(length // DS)
    curvature = np.zeros(n)
    vlimit = np.full(n, limit)
    signal = np.zeros(n, dtype=bool)
    stop_sign = np.zeros(n, dtype=bool)
    jam = np.full(n, np.inf)
    # Gentle curves along the way.
    pos = float(rng.uniform(*p.curve_every_m))
    while pos < length - 200:
        radius = float(rng.uniform(*p.curve_radius_m))
        angle = math.radians(float(rng.uniform(*p.curve_angle_deg))) * rng.choice([-1.0, 1.0])
        _arc(curvature, vlimit, int(pos // DS), radius, angle)
        pos += abs(angle) * radius + float(rng.uniform(*p.curve_every_m))
    # Intersections at block ends: lights, stop signs and 90 degree turns.
    pos = float(rng.uniform(*p.block_m)) if p.block_m[0] < 1e8 else math.inf
    last = 0
    while pos < length - 50:
        i = int(pos // DS)
        track.follow(curvature[last:i])
        last = i
        u = rng.random()
        if u < p.p_signal:
            signal[i] = True
        elif u < p.p_signal + p.p_stop_sign:
            stop_sign[i] = True
        sign = track.turn_sign(rng, p.p_turn)
        if sign:
            radius = float(rng.uniform(*p.turn_radius_m))
            _arc(curvature, vlimit, i, radius, math.pi / 2 * sign)
        pos += float(rng.uniform(*p.block_m))
    track.follow(curvature[last:])
    # Congestion on highways: 0.5-3 km at walking to city speed.
    if p.p_jam_per_km > 0:
        for _ in range(int(rng.poisson(p.p_jam_per_km * length / 1000))):
            start = int(rng.uniform(0, max(1, n - 100)))
            span = int(rng.uniform(500, 3000) // DS)
            jam[start : start + span] = float(rng.uniform(2.0, 12.0))
    urban = np.full(n, road is RoadType.URBAN)
    return {
        "curvature": curvature,
        "vlimit": vlimit,
        "signal": signal,
        "stop_sign": stop_sign,
        "jam": jam,
        "urban": urban,
    }


def _arc(curvature: np.ndarray, vlimit: np.ndarray, i: int, radius: float, angle: float) -> None:
    k = max(1, round(abs(angle) * radius / DS))
    end = min(len(curvature), i + k)
    curvature[i:end] = math.copysign(1.0 / radius, angle) * (k / max(1, end - i))
    vlimit[i:end] = np.minimum(vlimit[i:end], math.sqrt(MAX_LATERAL_MPS2 * radius))


@dataclass
class Leg:
    """A driven leg on the sample grid (``dt`` seconds apart, first sample at t = 0)."""

    dt: float
    v: np.ndarray
    """m/s."""
    a: np.ndarray
    """Longitudinal acceleration, m/s^2 (noise-free)."""
    a_lat: np.ndarray
    """Lateral acceleration, m/s^2, ISO 8855 (positive to the left)."""
    s: np.ndarray
    """Distance from the leg start, m."""
    east: np.ndarray
    north: np.ndarray
    heading: np.ndarray
    """Degrees in [0, 360)."""
    in_gear: np.ndarray
    """False during the idle before setting off and after arriving (park / neutral)."""
    end_index: int
    """Route index where the leg ends."""

    @property
    def n(self) -> int:
        return len(self.v)


def profile_leg(
    route: Route,
    i0: int,
    i1: int,
    rng: np.random.Generator,
    *,
    dt: float,
    accel: float,
    brake: float,
    speed_factor: float,
    vmax: float = 180 / 3.6,
) -> Leg:
    """Drive ``route`` from grid index ``i0`` to ``i1`` (standing still at both ends)."""
    if i1 <= i0:
        raise ValueError("a leg needs i1 > i0")
    idx = np.arange(i0, i1 + 1)
    n = len(idx)
    # A slowly varying driver factor: unit noise every ~400 m, interpolated.
    knots = rng.normal(0.0, 1.0, n // 80 + 2)
    drift = np.interp(np.arange(n) / 80.0, np.arange(len(knots)), knots)
    factor = speed_factor * (1.0 + 0.04 * drift)
    vl = np.minimum(route.vlimit[idx] * factor, route.jam[idx] * (1.0 + 0.3 * np.abs(drift)))
    vl = np.minimum(vl, vmax)
    dwell = np.zeros(n)
    signals = np.flatnonzero(route.signal[idx][1:-1]) + 1
    red = signals[rng.random(len(signals)) < RED_LIGHT_P]
    urban = route.urban[idx]
    dwell[red] = np.where(urban[red], rng.uniform(5, 60, len(red)), rng.uniform(10, 90, len(red)))
    stops = np.flatnonzero(route.stop_sign[idx][1:-1]) + 1
    dwell[stops] = rng.uniform(1, 4, len(stops))
    # Stop-and-go in jams.
    jammed = np.flatnonzero(np.isfinite(route.jam[idx][1:-1])) + 1
    if len(jammed):
        halts = jammed[rng.random(len(jammed)) < DS / 400.0]
        dwell[halts] = rng.uniform(2, 15, len(halts))
    dwell[0] = rng.uniform(4, 20)  # belt on, mirrors, off we go
    dwell[-1] = rng.uniform(3, 10)
    vl[dwell > 0] = 0.0
    vl[0] = vl[-1] = 0.0
    # Forward (acceleration) and backward (braking) passes in the squared-speed domain.
    w = vl**2
    k = np.arange(n) * DS
    w = np.minimum(w, 2 * accel * k + np.minimum.accumulate(w - 2 * accel * k))
    w_rev = w[::-1]
    w = np.minimum(w, (2 * brake * k + np.minimum.accumulate(w_rev - 2 * brake * k))[::-1])
    v_grid = np.sqrt(np.maximum(w, 0.0))
    # To the time domain: time between grid points under constant acceleration.
    seg_t = 2 * DS / np.maximum(v_grid[:-1] + v_grid[1:], 0.2)
    arrive = (
        np.concatenate([[0.0], np.cumsum(seg_t)]) + np.concatenate([[0.0], np.cumsum(dwell)])[:-1]
    )
    has_dwell = dwell > 0
    rep = np.where(has_dwell, 2, 1)
    t_pts = np.repeat(arrive, rep)
    v_pts = np.repeat(v_grid, rep)
    # The second copy of a dwelling point is the departure time.
    second = np.cumsum(rep) - 1
    t_pts[second[has_dwell]] = arrive[has_dwell] + dwell[has_dwell]
    total = float(t_pts[-1])
    tt = np.arange(0.0, total + dt, dt)
    v = np.interp(tt, t_pts, v_pts)
    window = max(1, round(2.0 / dt)) | 1
    if window > 1:
        v = np.convolve(v, np.ones(window) / window, mode="same")
    v[0] = v[-1] = 0.0
    s = np.concatenate([[0.0], np.cumsum((v[:-1] + v[1:]) * 0.5 * dt)])
    s *= (k[-1] / s[-1]) if s[-1] > 0 else 0.0
    grid = k
    east = np.interp(s, grid, route.east[idx])
    north = np.interp(s, grid, route.north[idx])
    heading = np.interp(s, grid, route.heading[idx]) % 360.0
    curv = np.interp(s, grid, route.curvature[idx])
    a = np.gradient(v, dt) if len(v) > 1 else np.zeros_like(v)
    a_lat = -(v**2) * curv
    moving = np.flatnonzero(v > 0.05)
    in_gear = np.zeros(len(v), dtype=bool)
    if len(moving):
        in_gear[max(0, moving[0] - 1) : moving[-1] + 2] = True
    return Leg(dt, v, a, a_lat, s, east, north, heading, in_gear, int(i1))


def offsets_to_latlon(
    home_lat: float, home_lon: float, east: np.ndarray, north: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Local tangent-plane offsets (m) to WGS 84 degrees (accurate to well under a metre
    within a few hundred kilometres, plenty for a simulator)."""
    lat = home_lat + np.degrees(north / EARTH_RADIUS_M)
    lon = home_lon + np.degrees(east / (EARTH_RADIUS_M * np.cos(np.radians(lat))))
    return lat, lon


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))
