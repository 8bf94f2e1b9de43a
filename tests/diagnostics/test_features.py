"""Predictive-maintenance features: the same vectors from streaming batches and from one batch,
and values that mean what their names say."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.signals import CATALOG, arrow_type
from diagnostics import features
from diagnostics.features import (
    BASELINE_H,
    BUCKET_MS,
    DAY_MS,
    FEATURE_NAMES,
    FEATURES,
    INPUT_COLUMNS,
    MAX_WINDOW_H,
    FeatureFrame,
    FeatureState,
    bucket_end,
    compute_features,
    window_features,
)
from diagnostics.pdm_dataset import samples_table
from simulator.delivery import SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import make_fleet
from simulator.runner import iter_messages

START_MS = 1_767_571_200_000  # 2026-01-05 00:00 UTC
DAYS = 10  # longer than the 7-day window plus the baseline, so trimming is exercised


@pytest.fixture(scope="module")
def telemetry() -> pa.Table:
    """Three simulated vehicles for ten days (a tyre leak, a failing coolant pump, healthy),
    in arrival order: by time, vehicles interleaved."""
    base = make_fleet(3, seed=21, bev_share=0.0, commercial_share=0.0)
    leak = FaultSpec(FaultKind.TIRE_LEAK, 2 * 86_400, 9 * 86_400, wheel="Row2.Wheel.Left")
    pump = FaultSpec(FaultKind.COOLANT_PUMP, 3 * 86_400, 10 * 86_400)
    fleet = make_fleet(
        3, seed=21, bev_share=0.0, commercial_share=0.0, faults={0: [leak], 1: [pump]}
    )
    assert [v.vin for v in fleet] == [v.vin for v in base]
    config = SimConfig(sample_interval_s=60, samples_per_message=60, parked_sample_interval_s=1800)
    table = samples_table(iter_messages(fleet, START_MS, DAYS * 86_400, seed=3, config=config))
    assert table.num_rows > 2_000
    return table


def _same(a: FeatureFrame, b: FeatureFrame) -> None:
    assert a.vins.tolist() == b.vins.tolist()
    assert a.end_ms.tolist() == b.end_ms.tolist()
    assert a.as_of_ms.tolist() == b.as_of_ms.tolist()
    # Bit-for-bit, NaN where NaN: not approximately.
    assert np.array_equal(a.values, b.values, equal_nan=True)


@settings(max_examples=12, deadline=None)
@given(
    cuts=st.lists(st.floats(0.0, 1.0), min_size=0, max_size=12),
    shuffle_seed=st.integers(0, 2**31),
)
def test_streaming_batches_give_the_batch_features(
    telemetry: pa.Table, cuts: list[float], shuffle_seed: int
) -> None:
    batch = compute_features(telemetry)
    n = telemetry.num_rows
    bounds = sorted({0, n, *(int(c * n) for c in cuts)})
    rng = np.random.default_rng(shuffle_seed)
    state = FeatureState()
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        chunk = telemetry.slice(lo, hi - lo)
        state.update(chunk.take(rng.permutation(chunk.num_rows)))  # order inside a batch
    _same(state.features(), batch)
    end = bucket_end(int(telemetry["ts"].cast(pa.int64()).to_numpy().max())) + 5 * BUCKET_MS
    _same(state.features(end_ms=end), compute_features(telemetry, end_ms=end))


def test_large_tables_are_bucketed_in_slices_with_the_same_result(
    telemetry: pa.Table, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = compute_features(telemetry)
    monkeypatch.setattr(features, "BUCKETIZE_CHUNK_ROWS", 333)
    _same(compute_features(telemetry), whole)


def test_state_is_trimmed_and_survives_a_restart(telemetry: pa.Table) -> None:
    half = telemetry.num_rows // 2
    state = FeatureState()
    state.update(telemetry.slice(0, half))
    restored = FeatureState.from_arrow(state.to_arrow())
    restored.update(telemetry.slice(half))
    _same(restored.features(), compute_features(telemetry))
    per_vehicle = np.bincount(restored.buckets.vin_index)
    # Ten days of hourly buckets would be 240; the state keeps the window and the baseline.
    assert per_vehicle.max() <= MAX_WINDOW_H + BASELINE_H
    with pytest.raises(ValueError, match="trimmed"):
        restored.features(end_ms=START_MS + 3 * DAY_MS)


def test_simulated_faults_show_in_their_features(telemetry: pa.Table) -> None:
    frame = compute_features(telemetry, end_ms=START_MS + 9 * DAY_MS)
    vins = [v.vin for v in make_fleet(3, seed=21, bev_share=0.0, commercial_share=0.0)]
    assert sorted(vins) == frame.vins.tolist()
    tire = frame.names.index("tire_vs_baseline_min_pct_24h")
    coolant = frame.names.index("coolant_run_max_24h")
    by_vin = dict(zip(frame.vins.tolist(), frame.values, strict=True))
    leak, pump, healthy = (by_vin[v] for v in vins)
    assert leak[tire] < -10.0 < healthy[tire]  # a leaking tyre, well below its baseline
    assert pump[coolant] > 105.0 > healthy[coolant]  # the pump no longer keeps it at 90 C


def _hourly_vehicle(hours: int) -> pa.Table:
    """One parked-and-driven vehicle sampled hourly: tyres, 12 V voltage, odometer, DTCs."""
    ts = START_MS + np.arange(hours) * BUCKET_MS
    day4 = np.arange(hours) >= 72
    rows = {
        "vin": ["VIN00000000000001"] * hours,
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "Vehicle.LowVoltageSystemState": ["OFF"] * hours,
        "Vehicle.IsMoving": [False] * hours,
        "Vehicle.LowVoltageBattery.CurrentVoltage": np.where(day4, 12.0, 12.6),
        "Vehicle.TraveledDistance": 1_000_000 + np.arange(hours) * 10_000,
        "Vehicle.Diagnostics.DTCList": [["P0562"] if h >= 72 + 10 else [] for h in range(hours)],
    }
    for i, column in enumerate(c for c in INPUT_COLUMNS if c.endswith("Tire.Pressure")):
        rows[column] = np.where(day4 & (i == 0), 200, 250)
    return pa.table(
        {k: v if isinstance(v, pa.Array) else pa.array(v, _type(k)) for k, v in rows.items()}
    )


def _type(column: str) -> pa.DataType:
    return pa.string() if column == "vin" else arrow_type(CATALOG[column])


def test_window_values_on_a_known_vehicle() -> None:
    table = _hourly_vehicle(96)
    end = START_MS + 96 * BUCKET_MS
    later = _hourly_vehicle(100).slice(96)  # samples at and after the window end
    frame = compute_features(pa.concat_tables([table, later]), end_ms=end)
    f = dict(zip(frame.names, frame.values[0].tolist(), strict=True))
    # Absolute pressure ratio of the low tyre to the median: (200 + 101.325) / (250 + 101.325).
    expected = 100 * (round(301.325 / 351.325, 4) - 1)
    assert f["tire_vs_baseline_min_pct_24h"] == pytest.approx(expected, abs=1e-9)
    assert f["tire_vs_others_min_pct_24h"] == pytest.approx(expected, abs=1e-9)
    assert f["lv_rest_v_mean_24h"] == pytest.approx(12.0)
    assert f["lv_rest_v_mean_7d"] == pytest.approx((72 * 12.6 + 24 * 12.0) / 96)
    assert f["lv_rest_v_slope_7d"] < 0
    assert f["km_24h"] == pytest.approx(230.0)  # 24 hourly samples, 10 km apart
    assert f["dtc_lv_7d"] == 1.0 and f["dtc_distinct_7d"] == 1.0
    assert f["hours_since_dtc"] == 0.0  # still active at the newest sample
    assert f["hours_since_first_dtc_7d"] == 13.0  # first seen at hour 82, newest is hour 95
    assert math.isnan(f["coolant_run_max_24h"])  # no engine data: not applicable
    assert frame.as_of_ms[0] == end - BUCKET_MS


def test_window_end_must_be_an_hour_and_unknown_vehicles_have_no_features() -> None:
    table = _hourly_vehicle(30)
    with pytest.raises(ValueError, match="multiples"):
        compute_features(table, end_ms=START_MS + 1)
    state = FeatureState()
    state.update(table)
    frame = window_features(state.buckets, ["VIN0000000000000X"], [START_MS + 30 * BUCKET_MS])
    assert np.isnan(frame.values).all() and frame.as_of_ms.tolist() == [-1]
    assert len(state.features(["VIN0000000000000X"])) == 0


def test_feature_list_inputs_and_wording() -> None:
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    for column in INPUT_COLUMNS[2:]:
        assert column in CATALOG, column  # read under its VSS 6.0 name
    for spec in FEATURES:
        assert spec.describe(-12.5) and spec.describe(3.0)
        assert spec.describe(float("nan"))
    text = {f.name: f for f in FEATURES}["tire_vs_baseline_min_pct_24h"].describe(-18.04)
    assert text == "lowest tire pressure 18.0 % below this vehicle's baseline (24 h)"


def test_feature_frame_round_trips_through_arrow(telemetry: pa.Table) -> None:
    frame = compute_features(telemetry)
    _same(FeatureFrame.from_arrow(frame.to_arrow()), frame)
