"""Physics sanity of the per-vehicle model."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.telemetry import Sample
from simulator import vss
from simulator.drive import haversine_m
from simulator.fleet import Powertrain, Usage, VehicleProfile
from simulator.vehicle import VehicleSim
from tests.simulator.support import START_MS, column, pick

LV_STATES = {"UNDEFINED", "LOCK", "OFF", "ACC", "ON", "START"}


def _run(profile: VehicleProfile, n: int, **kw: object) -> list[Sample]:
    return VehicleSim(profile, start_ms=START_MS, **kw).advance(n)  # type: ignore[arg-type]


def test_same_seed_same_samples_other_run_seed_other_trips(fleet: list[VehicleProfile]) -> None:
    profile = pick(fleet, Powertrain.BEV, Usage.COMMERCIAL)
    a = _run(profile, 1800, run_seed=1)
    b = _run(profile, 1800, run_seed=1)
    c = _run(profile, 1800, run_seed=2)
    assert a == b
    assert column(a, vss.SPEED).tolist() != column(c, vss.SPEED).tolist()


def test_batching_does_not_change_the_data(fleet: list[VehicleProfile]) -> None:
    profile = pick(fleet, Powertrain.ICE, Usage.COMMERCIAL)
    whole = _run(profile, 2400)
    sim = VehicleSim(profile, start_ms=START_MS)
    pieces: list[Sample] = []
    while len(pieces) < 2400:
        pieces.extend(sim.advance(min(7, 2400 - len(pieces))))
    assert pieces == whole


@pytest.mark.parametrize("powertrain", [Powertrain.BEV, Powertrain.ICE])
def test_physics_sanity_while_driving(fleet: list[VehicleProfile], powertrain: Powertrain) -> None:
    profile = pick(fleet, powertrain, Usage.COMMERCIAL)
    samples = _run(profile, 3 * 3600)
    ts = np.array([s.ts for s in samples])
    assert np.all(np.diff(ts) == 1000)
    for s in samples:
        assert tuple(s.signals) == profile.signals
    speed = column(samples, vss.SPEED)
    odo = column(samples, vss.TRAVELED_DISTANCE)
    moving = speed > 0
    assert moving.mean() > 0.3, "a commercial vehicle is on the road most of the time"
    assert speed.min() >= 0 and speed.max() < 160
    assert np.all(np.diff(odo) >= 0), "odometer is monotonic"
    assert all(type(x) is int for x in odo.tolist())
    # The odometer advances by the distance the speed implies (trapezoid, 1 s samples).
    implied = np.sum((speed[1:] + speed[:-1]) / 2 / 3.6)
    assert (odo[-1] - odo[0]) == pytest.approx(implied, rel=0.02)
    assert column(samples, vss.IS_MOVING).tolist() == (speed >= 0.5).tolist()
    heading = column(samples, vss.HEADING)
    assert heading.min() >= 0 and heading.max() < 360
    # GPS moves consistently with speed: chord of 10 s windows vs odometer over the window.
    lat, lon = column(samples, vss.LATITUDE), column(samples, vss.LONGITUDE)
    chords, travelled = [], []
    for i in range(0, len(samples) - 10, 10):
        chord = haversine_m(lat[i], lon[i], lat[i + 10], lon[i + 10])
        dist = odo[i + 10] - odo[i]
        assert chord <= dist + 20, "no faster than the odometer (GPS noise is ~2 m)"
        chords.append(chord)
        travelled.append(dist)
    assert sum(chords) == pytest.approx(sum(travelled), rel=0.1)
    # Standing still: the position only jitters.
    still = [i for i in range(len(samples) - 10) if odo[i + 10] == odo[i]]
    assert still
    assert max(haversine_m(lat[i], lon[i], lat[i + 10], lon[i + 10]) for i in still) < 25
    # Accelerations: longitudinal follows the speed derivative, all within a car's range.
    along = column(samples, vss.ACCEL_LONGITUDINAL)
    derivative = np.gradient(speed / 3.6)
    assert np.corrcoef(along, derivative)[0, 1] > 0.9
    for path in (vss.ACCEL_LONGITUDINAL, vss.ACCEL_LATERAL, vss.ACCEL_VERTICAL):
        assert np.abs(column(samples, path)).max() < 6
    assert np.abs(column(samples, vss.ACCEL_LATERAL)).max() > 1.0, "turns show up laterally"
    states = column(samples, vss.LV_SYSTEM_STATE)
    assert set(states.tolist()) <= LV_STATES
    assert np.all(states[moving] == "ON")
    gear = column(samples, vss.CURRENT_GEAR)
    assert np.all(gear[states == "OFF"] == 0) and np.all(gear[moving] >= 1)
    lv = column(samples, vss.LV_BATTERY_VOLTAGE)
    assert np.all(lv[moving] > 13.3) and np.all(lv[states == "OFF"] < 13.3)
    pressure = np.array([column(samples, p) for p in vss.TIRE_PRESSURE])
    assert pressure.min() > 0.8 * profile.tire_placard_kpa
    assert pressure.max() < 1.2 * profile.tire_placard_kpa
    pads = np.array([column(samples, p) for p in vss.BRAKE_PAD_WEAR])
    assert np.all(np.diff(pads, axis=1) >= 0), "pads only wear"
    assert column(samples, vss.DTC_LIST).tolist() == [[]] * len(samples)
    if powertrain is Powertrain.BEV:
        soc = column(samples, vss.SOC)
        current = column(samples, vss.HV_CURRENT)
        assert soc.min() >= 0 and soc.max() <= 100
        driving = moving & ~column(samples, vss.IS_CHARGING)
        assert current[driving].mean() < 0, "driving draws current out of the battery"
        _assert_soc_falls_on_every_trip(soc, moving)
        cell_min = column(samples, vss.CELL_VOLTAGE_MIN)
        cell_max = column(samples, vss.CELL_VOLTAGE_MAX)
        assert np.all(cell_min <= cell_max) and cell_min.min() > 2.8 and cell_max.max() < 4.25
        pack = column(samples, vss.HV_VOLTAGE)
        assert np.allclose(pack / profile.cells_series, (cell_min + cell_max) / 2, atol=0.08)
        t_min = column(samples, vss.BATTERY_TEMP_MIN)
        assert np.all(t_min <= column(samples, vss.BATTERY_TEMP_MAX))
    else:
        rpm = column(samples, vss.ENGINE_SPEED)
        assert np.all(rpm[states == "OFF"] == 0) and np.all(rpm[moving] >= 600)
        fuel = column(samples, vss.FUEL_LEVEL)
        assert all(type(x) is int for x in fuel.tolist())
        assert fuel[-1] <= fuel[0] and np.all(np.diff(fuel)[moving[1:]] <= 0)
        ect = column(samples, vss.COOLANT_TEMPERATURE)
        assert ect.max() > 85, "the engine warms up to its thermostat temperature"
        assert ect.max() < 100, "and a healthy cooling system keeps it there"


def _assert_soc_falls_on_every_trip(soc: np.ndarray, moving: np.ndarray) -> None:
    edges = np.flatnonzero(np.diff(moving.astype(int)))
    bounds = [0, *(edges + 1).tolist(), len(moving)]
    trips = 0
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        if moving[a] and b - a > 60:
            assert soc[b - 1] < soc[a], f"SoC falls while driving ({a}..{b})"
            trips += 1
    assert trips > 3


def test_dc_fast_charging_raises_soc_then_the_vehicle_drives_on(
    fleet: list[VehicleProfile],
) -> None:
    profile = dataclasses.replace(pick(fleet, Powertrain.BEV), usage=Usage.COMMERCIAL,
                                  initial_soc_pct=12.0)  # fmt: skip
    samples = _run(profile, 2 * 3600)
    soc = column(samples, vss.SOC)
    charging = column(samples, vss.IS_CHARGING)
    session = np.flatnonzero(charging)
    assert session[0] < 200, "too low to set off: straight to a fast charger"
    assert np.all(np.diff(session) == 1), "one session"
    assert np.all(np.diff(soc[session]) >= 0) and soc[session[-1]] > soc[session[0]] + 50
    assert soc[session[-1]] == pytest.approx(80.0, abs=0.1)
    dc = column(samples, vss.CHARGE_CURRENT_DC)
    assert np.all(dc[charging] > 0) and np.all(column(samples, vss.HV_CURRENT)[charging] > 0)
    assert np.all(column(samples, vss.CHARGE_CURRENT_AC) == 0)
    assert column(samples, vss.CHARGE_CABLE_CONNECTED)[charging].all()
    # Taper: the power falls as the SoC climbs past 50 %.
    assert dc[session[-2]] < dc[session[0]] * 0.6
    after = slice(session[-1] + 1, None)
    assert (column(samples, vss.SPEED)[after] > 0).any(), "and then it drives on"
    assert not column(samples, vss.IS_CHARGING)[after].any()


def test_ac_charging_at_home(fleet: list[VehicleProfile]) -> None:
    profile = dataclasses.replace(
        pick(fleet, Powertrain.BEV), usage=Usage.PRIVATE, initial_soc_pct=30.0,
        plug_in_below_pct=80.0, home_charger_kw=11.0, charge_limit_pct=90.0,
    )  # fmt: skip
    samples = _run(profile, 1800, sample_interval_s=2.0)
    charging = column(samples, vss.IS_CHARGING)
    assert charging[:100].all()
    soc = column(samples, vss.SOC)
    assert np.all(np.diff(soc[charging]) >= 0) and soc[charging][-1] > soc[0] + 5
    ac = column(samples, vss.CHARGE_CURRENT_AC)
    assert np.all(ac[charging] > 5) and np.all(column(samples, vss.CHARGE_CURRENT_DC) == 0)
    # 11 kW for an hour adds roughly 11 kWh x 0.92 to the pack.
    gained_kwh = (soc[charging][-1] - soc[0]) / 100 * profile.battery_kwh
    hours = charging.sum() * 2 / 3600
    assert gained_kwh / hours == pytest.approx(
        11 * 0.92 / (profile.battery_soh_pct / 100), rel=0.05
    )
    lv = column(samples, vss.LV_BATTERY_VOLTAGE)
    assert np.all(lv[charging] > 13.5), "the DC-DC converter keeps the 12 V battery up"


def test_refuelling(fleet: list[VehicleProfile]) -> None:
    profile = dataclasses.replace(pick(fleet, Powertrain.ICE), usage=Usage.COMMERCIAL,
                                  initial_fuel_pct=9.0)  # fmt: skip
    samples = _run(profile, 1200)
    fuel = column(samples, vss.FUEL_LEVEL)
    assert fuel[0] <= 10 and fuel.max() == 100
    assert column(samples, vss.SPEED)[: int(np.argmax(fuel))].max() == 0


def test_parked_sample_interval_thins_out_parked_samples(fleet: list[VehicleProfile]) -> None:
    profile = pick(fleet, Powertrain.ICE, Usage.PRIVATE)
    dense = _run(profile, 600)
    sparse = _run(profile, 600, parked_sample_interval_s=30.0)
    gaps = np.diff([s.ts for s in sparse])
    parked = column(sparse, vss.SPEED)[1:] == 0
    assert np.all(np.diff([s.ts for s in dense]) == 1000)
    assert np.all(gaps[parked] >= 1000) and np.median(gaps) == 30_000
