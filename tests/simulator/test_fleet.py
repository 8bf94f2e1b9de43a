from __future__ import annotations

import dataclasses
from zoneinfo import ZoneInfo, available_timezones

import pytest

from core.vin import vin_problem
from simulator.climate import REGIONS
from simulator.faults import BEV_KINDS, ICE_KINDS, FaultKind, FaultSpec
from simulator.fleet import Powertrain, Usage, make_fleet, with_faults, year_code


def test_same_seed_same_fleet_other_seed_other_fleet() -> None:
    assert make_fleet(30, seed=5) == make_fleet(30, seed=5)
    assert [v.vin for v in make_fleet(30, seed=5)] != [v.vin for v in make_fleet(30, seed=6)]


def test_vins_are_valid_unique_and_encode_the_model_year() -> None:
    fleet = make_fleet(200, seed=1)
    vins = [v.vin for v in fleet]
    assert len(set(vins)) == len(vins)
    for v in fleet:
        assert vin_problem(v.vin, check_digit=True) is None, v.vin
        assert v.vin[9] == year_code(v.model_year)


def test_shares_and_profile_contents() -> None:
    fleet = make_fleet(40, seed=2, bev_share=0.25, commercial_share=0.5)
    known_zones = available_timezones()
    assert sum(v.powertrain is Powertrain.BEV for v in fleet) == 10
    assert sum(v.usage is Usage.COMMERCIAL for v in fleet) == 20
    for v in fleet:
        assert v.region in REGIONS
        assert v.time_zone == REGIONS[v.region].time_zone
        if known_zones:  # the tz database is installed
            assert ZoneInfo(v.time_zone).key in known_zones
        ecu_ids = {e.ecu_id for e in v.ecus}
        assert {"TCU", "GW", "BCM"} <= ecu_ids
        assert ("BMS" in ecu_ids) == v.is_bev and ("ECM" in ecu_ids) == (not v.is_bev)
        assert all(e.hardware_id and e.software_version.count(".") == 2 for e in v.ecus)
        if v.is_bev:
            assert v.battery_kwh > 0 and v.cells_series > 0 and v.tank_l == 0
        else:
            assert v.tank_l > 0 and v.gears in (6, 8) and v.battery_kwh == 0
        # Home near the region's centre.
        region = REGIONS[v.region]
        assert abs(v.home_lat - region.lat) < 0.5 and abs(v.home_lon - region.lon) < 0.7
    # Profiles are plain frozen dataclasses.
    with pytest.raises(dataclasses.FrozenInstanceError):
        fleet[0].vin = "X"  # type: ignore[misc]


def test_regions_can_be_restricted() -> None:
    fleet = make_fleet(20, seed=3, regions=["DE-BY"])
    assert {v.region for v in fleet} == {"DE-BY"}
    with pytest.raises(ValueError, match="unknown region"):
        make_fleet(2, seed=3, regions=["XX-YY"])


def test_random_faults_apply_to_the_powertrain_and_leave_the_rest_alone() -> None:
    healthy = make_fleet(50, seed=4)
    faulty = make_fleet(50, seed=4, faults=0.4, fault_horizon_s=86_400)
    assert sum(bool(v.faults) for v in faulty) == 20
    for before, after in zip(healthy, faulty, strict=True):
        assert dataclasses.replace(after, faults=()) == before
        for fault in after.faults:
            assert fault.kind in (BEV_KINDS if after.is_bev else ICE_KINDS)
            assert 0 <= fault.onset_s < fault.failure_s <= 86_400


def test_explicit_faults_and_with_faults() -> None:
    leak = FaultSpec(FaultKind.TIRE_LEAK, 10, 100, wheel="Row1.Wheel.Left")
    fleet = make_fleet(4, seed=9, bev_share=0.5, faults={0: [leak]})
    assert fleet[0].faults == (leak,)
    assert all(not v.faults for v in fleet[1:])
    bev = next(v for v in fleet if v.is_bev)
    with pytest.raises(ValueError, match="does not apply"):
        with_faults(bev, FaultSpec(FaultKind.COOLANT_PUMP, 0, 10))
    with pytest.raises(ValueError):
        FaultSpec(FaultKind.TIRE_LEAK, 0, 10)  # needs a wheel
    with pytest.raises(ValueError):
        FaultSpec(FaultKind.COOLANT_PUMP, 10, 5)
