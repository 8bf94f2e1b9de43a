"""Each injected fault shows its signature (and DTCs) after onset, none before, and is labelled."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from core.telemetry import Sample
from simulator import vss
from simulator.faults import (
    CELL_SPREAD_DTC_V,
    DTC_CELL,
    DTC_COOLANT_OVERTEMP,
    DTC_COOLANT_PERFORMANCE,
    DTC_LV_LOW,
    PAD_WEAR_FAILURE_PCT,
    TIRE_LOW_FRACTION,
    FaultKind,
    FaultSpec,
)
from simulator.fleet import Powertrain, Usage, VehicleProfile, with_faults
from simulator.labels import fault_labels, read_labels, write_labels
from simulator.vehicle import VehicleSim
from tests.simulator.support import START_MS, column, pick

DT = 5.0
ONSET_S = 1800.0
FAILURE_S = 4 * 3600.0
HOURS = 5.5


def _run(profile: VehicleProfile) -> tuple[list[Sample], np.ndarray]:
    """Samples every 5 s for 5.5 h and their time since the start (s)."""
    samples = VehicleSim(profile, start_ms=START_MS, sample_interval_s=DT).advance(
        int(HOURS * 3600 / DT)
    )
    return samples, (np.array([s.ts for s in samples]) - START_MS) / 1000.0


def _dtcs(sample: Sample) -> list[str]:
    dtcs = sample.signals[vss.DTC_LIST]
    assert isinstance(dtcs, list)
    return dtcs


def _first_dtc(samples: list[Sample], t: np.ndarray, code: str) -> float | None:
    for s, tj in zip(samples, t, strict=True):
        if code in _dtcs(s):
            return float(tj)
    return None


def _pair(fleet: list[VehicleProfile], powertrain: Powertrain, usage: Usage, fault: FaultSpec):  # noqa: ANN202
    healthy = dataclasses.replace(pick(fleet, powertrain), usage=usage)
    return healthy, with_faults(healthy, fault)


def test_slow_tire_leak(fleet: list[VehicleProfile]) -> None:
    wheel = "Row2.Wheel.Left"
    fault = FaultSpec(FaultKind.TIRE_LEAK, ONSET_S, FAILURE_S, wheel=wheel)
    healthy, faulty = _pair(fleet, Powertrain.ICE, Usage.COMMERCIAL, fault)
    samples, t = _run(faulty)
    reference, _ = _run(healthy)
    leaking = column(samples, vss.tire_pressure(wheel))
    others = [column(samples, p) for p in vss.TIRE_PRESSURE if wheel not in p]
    placard = faulty.tire_placard_kpa
    assert np.array_equal(leaking[t < ONSET_S], column(reference, vss.tire_pressure(wheel))[
        t < ONSET_S
    ])  # fmt: skip
    assert leaking[t >= FAILURE_S].max() < TIRE_LOW_FRACTION * placard * 1.08
    assert leaking[-1] < TIRE_LOW_FRACTION * placard, "and it keeps falling after failure"
    for other in others:
        assert other.min() > 0.85 * placard
    # The fall is gradual, not a step.
    mid = (t > (ONSET_S + FAILURE_S) / 2 - 60) & (t < (ONSET_S + FAILURE_S) / 2 + 60)
    assert 0.8 * placard < leaking[mid].mean() < 0.95 * placard


def test_coolant_pump_failure(fleet: list[VehicleProfile]) -> None:
    fault = FaultSpec(FaultKind.COOLANT_PUMP, ONSET_S, FAILURE_S)
    healthy, faulty = _pair(fleet, Powertrain.ICE, Usage.COMMERCIAL, fault)
    samples, t = _run(faulty)
    ect = column(samples, vss.COOLANT_TEMPERATURE)
    assert ect[t < ONSET_S].max() < 95
    assert ect[t > FAILURE_S].max() > 118
    perf = _first_dtc(samples, t, DTC_COOLANT_PERFORMANCE)
    over = _first_dtc(samples, t, DTC_COOLANT_OVERTEMP)
    assert perf is not None and over is not None
    assert ONSET_S < perf < over
    assert ect[t == over][0] >= 118 and ect[t == perf][0] >= 108
    # Once set, a DTC stays in the list.
    assert all(DTC_COOLANT_OVERTEMP in _dtcs(s) for s in samples if s.ts >= START_MS + over * 1000)
    ref, _ = _run(healthy)
    assert column(ref, vss.COOLANT_TEMPERATURE).max() < 95
    assert all(not s.signals[vss.DTC_LIST] for s in ref)


def test_weak_12v_battery(fleet: list[VehicleProfile]) -> None:
    fault = FaultSpec(FaultKind.WEAK_LV_BATTERY, ONSET_S, FAILURE_S)
    healthy, faulty = _pair(fleet, Powertrain.BEV, Usage.PRIVATE, fault)
    samples, t = _run(faulty)
    lv = column(samples, vss.LV_BATTERY_VOLTAGE)
    parked = column(samples, vss.LV_SYSTEM_STATE) == "OFF"
    parked &= ~column(samples, vss.IS_CHARGING)
    early = parked & (t < ONSET_S) & (t > 600)
    late = parked & (t > FAILURE_S)
    assert early.any() and late.any()
    assert lv[early].mean() - lv[late].mean() > 0.7, "the resting voltage declines"
    first = _first_dtc(samples, t, DTC_LV_LOW)
    assert first is not None
    assert first > ONSET_S + 0.6 * (FAILURE_S - ONSET_S), "P0562 only near the end"
    ref, _ = _run(healthy)
    assert all(not s.signals[vss.DTC_LIST] for s in ref)
    assert column(ref, vss.LV_BATTERY_VOLTAGE).min() > 12.3


def test_brake_pad_wear(fleet: list[VehicleProfile]) -> None:
    wheel = "Row1.Wheel.Right"
    fault = FaultSpec(FaultKind.BRAKE_PAD_WEAR, ONSET_S, FAILURE_S, wheel=wheel)
    healthy, faulty = _pair(fleet, Powertrain.BEV, Usage.COMMERCIAL, fault)
    samples, t = _run(faulty)
    pad = column(samples, vss.brake_pad_wear(wheel))
    assert np.all(np.diff(pad) >= 0)
    assert pad[t < ONSET_S].max() < PAD_WEAR_FAILURE_PCT - 10
    assert pad[t >= FAILURE_S].min() >= PAD_WEAR_FAILURE_PCT
    assert pad.max() <= 100
    ref, _ = _run(healthy)
    for path in vss.BRAKE_PAD_WEAR:
        normal = column(ref, path)
        assert normal[-1] - normal[0] <= 2, "normal wear is slow"
        if wheel not in path:
            assert column(samples, path).tolist() == normal.tolist()


def test_cell_imbalance(fleet: list[VehicleProfile]) -> None:
    fault = FaultSpec(FaultKind.CELL_IMBALANCE, ONSET_S, FAILURE_S)
    healthy, faulty = _pair(fleet, Powertrain.BEV, Usage.COMMERCIAL, fault)
    samples, t = _run(faulty)
    spread = column(samples, vss.CELL_VOLTAGE_MAX) - column(samples, vss.CELL_VOLTAGE_MIN)
    assert spread[t < ONSET_S].max() < 0.06
    assert np.median(spread[t > FAILURE_S]) > 0.14
    first = _first_dtc(samples, t, DTC_CELL)
    assert first is not None and ONSET_S < first < FAILURE_S
    assert spread[t == first][0] >= CELL_SPREAD_DTC_V
    ref, _ = _run(healthy)
    ref_spread = column(ref, vss.CELL_VOLTAGE_MAX) - column(ref, vss.CELL_VOLTAGE_MIN)
    assert ref_spread.max() < 0.06
    assert all(not s.signals[vss.DTC_LIST] for s in ref)


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_labels_round_trip(fleet: list[VehicleProfile], tmp_path, suffix: str) -> None:  # noqa: ANN001
    bev = with_faults(pick(fleet, Powertrain.BEV),
                      FaultSpec(FaultKind.CELL_IMBALANCE, 100.0, 5000.5))  # fmt: skip
    ice = with_faults(
        pick(fleet, Powertrain.ICE),
        FaultSpec(FaultKind.COOLANT_PUMP, 10.0, 20.0),
        FaultSpec(FaultKind.TIRE_LEAK, 0.0, 30.0, wheel="Row1.Wheel.Left"),
    )
    labels = fault_labels([bev, ice], START_MS)
    assert [(x.vin, x.component, x.fault_type) for x in labels] == [
        (bev.vin, "traction_battery.cells", "cell_imbalance"),
        (ice.vin, "engine.coolant_pump", "coolant_pump_failure"),
        (ice.vin, "tire.row1.left", "tire_leak"),
    ]
    assert labels[0].onset_ts == START_MS + 100_000 and labels[0].failure_ts == START_MS + 5_000_500
    assert labels[1].dtcs == (DTC_COOLANT_PERFORMANCE, DTC_COOLANT_OVERTEMP)
    assert labels[2].signal == "Vehicle.Chassis.Axle.Row1.Wheel.Left.Tire.Pressure"
    path = write_labels(tmp_path / f"labels{suffix}", labels)
    assert read_labels(path) == labels
    with pytest.raises(ValueError):
        write_labels(tmp_path / "labels.csv", labels)
