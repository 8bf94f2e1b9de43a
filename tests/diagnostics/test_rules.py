"""Rule alarms (diagnostics/rules.py, diagnostics/rules_model.py, docs/rules.md).

Hand-built tables pin down each semantic (durations, hysteresis, gaps, rates, spreads, ``when``,
late data, replays); a Hypothesis property checks that any split of the input into batches, with
state saved and restored in between, gives the events of one batch, and that those agree with a
plain per-sample reference implementation; the simulator checks that the default rules find
its faults and stay silent on healthy vehicles.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.signals import CATALOG, arrow_type
from diagnostics.rules import AlarmEvent, RuleEngine
from diagnostics.rules_model import (
    DEFAULT_RULES_PATH,
    RATE_BUCKETS,
    RateRule,
    RuleSet,
    RulesFileError,
    SpreadRule,
    ThresholdRule,
    load_default_rules,
    load_rules,
    parse_rules_yaml,
)
from ingestion.archive import RowBuffer, archive_schema
from simulator import vss
from simulator.delivery import DeliveryConfig, SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import VehicleProfile, make_fleet, with_faults
from simulator.labels import fault_labels
from simulator.runner import iter_deliveries

T0 = 1_760_000_000_000
COOLANT = vss.COOLANT_TEMPERATURE
LV = vss.LV_BATTERY_VOLTAGE
MOVING = vss.IS_MOVING
LV_STATE = vss.LV_SYSTEM_STATE
TIRE_FL, TIRE_FR = vss.TIRE_PRESSURE[0], vss.TIRE_PRESSURE[1]
CELL_MAX, CELL_MIN = vss.CELL_VOLTAGE_MAX, vss.CELL_VOLTAGE_MIN
VIN_A, VIN_B = "WVWZZZ1KZNT000001", "WVWZZZ1KZNT000002"


# ---------------------------------------------------------------------------------------------
# helpers


def telemetry(
    vin: str,
    seconds: Sequence[float],
    signals: dict[str, Any],
    *,
    delay_s: float | None = 1.0,
) -> pa.Table:
    """Rows of one vehicle at ``T0 + seconds`` in the archive's column types; each signal is a
    list (one value per row, None = not carried) or a scalar for every row. Received
    ``delay_s`` after ``ts`` (None: no ``received_at``)."""
    ts = [T0 + round(s * 1000) for s in seconds]
    received = [None if delay_s is None else t + round(delay_s * 1000) for t in ts]
    columns: dict[str, pa.Array] = {
        "vin": pa.array([vin] * len(ts), pa.string()),
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "received_at": pa.array(received, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    for path, values in signals.items():
        if not isinstance(values, list):
            values = [values] * len(ts)
        columns[path] = pa.array(values, arrow_type(CATALOG[path]))
    return pa.table(columns)


def concat(*tables: pa.Table) -> pa.Table:
    return pa.concat_tables(tables, promote_options="default")


def one_rule(**fields: Any) -> RuleSet:
    """A rule set with one rule: coolant above 110 C for 30 s unless ``fields`` say otherwise."""
    rule = {
        "id": "coolant_hot",
        "kind": "threshold",
        "severity": "critical",
        "signal": COOLANT,
        "op": ">",
        "value": 110,
        "for_s": 30,
        "message": "coolant {value:.1f} C",
        **fields,
    }
    return RuleSet.from_data({"rules": [rule]})


def at(events: Sequence[AlarmEvent]) -> list[tuple[str, float]]:
    """(kind, seconds after T0) of every event: what most assertions are about."""
    return [(e.kind, (e.ts_ms - T0) / 1000) for e in events]


def run_all(engine: RuleEngine, *tables: pa.Table) -> list[AlarmEvent]:
    return [event for table in tables for event in engine.process(table)]


# ---------------------------------------------------------------------------------------------
# durations, hysteresis, clearing


def test_29_s_excursion_does_not_raise_but_30_s_does() -> None:
    seconds = list(range(100))
    short = [115.0 if 10 <= s <= 39 else 95.0 for s in seconds]  # above from 10 s to 39 s
    long = [115.0 if 10 <= s <= 40 else 95.0 for s in seconds]  # ... to 40 s
    assert RuleEngine(one_rule()).process(telemetry(VIN_A, seconds, {COOLANT: short})) == []
    events = RuleEngine(one_rule()).process(telemetry(VIN_A, seconds, {COOLANT: long}))
    assert at(events) == [("raised", 40.0), ("cleared", 41.0)]
    raised = events[0]
    assert raised.condition_since_ms == T0 + 10_000  # durations are measured in sample time
    assert raised.value == 115.0
    assert raised.message == "coolant 115.0 C"
    assert not raised.late


def test_hysteresis_keeps_one_alarm_while_the_value_hovers_around_the_threshold() -> None:
    rng = np.random.default_rng(7)
    hovering = [111.0, 109.0] * 30  # never 30 s above 110: no alarm
    hot = [112.0] * 40  # raises after 30 s
    noisy = list(rng.uniform(105.5, 115.0, 300))  # dips below 110, never to 105: stays open
    cool = [104.0] * 10
    values = hovering + hot + noisy + cool
    table = telemetry(VIN_A, range(len(values)), {COOLANT: values})
    events = RuleEngine(one_rule(clear_value=105)).process(table)
    assert at(events) == [("raised", 90.0), ("cleared", 400.0)]
    assert events[1].peak == pytest.approx(max(hot + noisy))
    assert events[1].raised_ts_ms == events[0].ts_ms


def test_without_clear_value_the_alarm_clears_as_soon_as_the_condition_is_false() -> None:
    values = [115.0] * 31 + [110.0] + [115.0] * 5
    events = RuleEngine(one_rule()).process(telemetry(VIN_A, range(len(values)), {COOLANT: values}))
    assert at(events) == [("raised", 30.0), ("cleared", 31.0)]


def test_clear_for_s_needs_the_clear_condition_to_last() -> None:
    values = [115.0] * 31 + [104.0] * 19 + [107.0] + [104.0] * 21
    rules = one_rule(clear_value=105, clear_for_s=20)
    events = RuleEngine(rules).process(telemetry(VIN_A, range(len(values)), {COOLANT: values}))
    # 19 s below 105 is not enough; 107 resets the clear duration; then 20 s more clears it.
    assert at(events) == [("raised", 30.0), ("cleared", 71.0)]
    assert events[1].condition_since_ms == T0 + 51_000


def test_one_open_alarm_per_vehicle_and_rule_across_batches() -> None:
    engine = RuleEngine(one_rule(clear_value=105))
    events = []
    for minute in range(10):  # ten batches, both vehicles hot the whole time
        seconds = [minute * 60 + s for s in range(60)]
        events += engine.process(
            concat(
                telemetry(VIN_A, seconds, {COOLANT: 115.0}),
                telemetry(VIN_B, seconds, {COOLANT: 116.0}),
            )
        )
    assert sorted((e.vin, e.kind, (e.ts_ms - T0) / 1000) for e in events) == [
        (VIN_A, "raised", 30.0),
        (VIN_B, "raised", 30.0),
    ]
    (open_a,) = engine.open_alarms(VIN_A)
    assert (open_a.rule_id, open_a.raised_ts_ms, open_a.peak) == ("coolant_hot", T0 + 30_000, 115.0)
    # Cool down, then a second excursion is a second alarm.
    later = [600 + s for s in range(100)]
    values = [100.0] * 10 + [115.0] * 90
    events = engine.process(telemetry(VIN_A, later, {COOLANT: values}))
    assert at(events) == [("cleared", 600.0), ("raised", 640.0)]
    assert len(engine.open_alarms(VIN_A)) == 1
    assert len(engine.open_alarms(VIN_B)) == 1


# ---------------------------------------------------------------------------------------------
# gaps


@pytest.mark.parametrize(("resume_s", "raised"), [(100, False), (50, True)])
def test_a_gap_longer_than_max_gap_breaks_the_duration(resume_s: int, raised: bool) -> None:
    seconds = [*range(0, 21), *range(resume_s, resume_s + 21)]
    table = telemetry(VIN_A, seconds, {COOLANT: 115.0})
    events = RuleEngine(one_rule(max_gap_s=60)).process(table)
    # 20 s, a pause, 20 s: one duration (raised at the first sample 30 s after the start) only
    # if the pause is at most 60 s.
    assert at(events) == ([("raised", float(resume_s))] if raised else [])


def test_a_gap_neither_clears_an_open_alarm_nor_completes_a_clear_duration() -> None:
    engine = RuleEngine(one_rule(max_gap_s=60, clear_value=105, clear_for_s=20))
    assert at(engine.process(telemetry(VIN_A, range(31), {COOLANT: 115.0}))) == [("raised", 30.0)]
    # An hour without samples, then still hot: the same alarm, no new one.
    assert engine.process(telemetry(VIN_A, range(3600, 3700), {COOLANT: 115.0})) == []
    # Cool for 10 s, a 70 s gap, cool for 15 s: the clear duration restarts after the gap.
    cool = [*range(3700, 3711), *range(3780, 3796)]
    assert engine.process(telemetry(VIN_A, cool, {COOLANT: 100.0})) == []
    events = engine.process(telemetry(VIN_A, range(3796, 3806), {COOLANT: 100.0}))
    assert at(events) == [("cleared", 3800.0)]


def test_rows_without_the_signal_are_not_samples_of_the_rule() -> None:
    # Every other row lacks the coolant temperature (another ECU's sample): the rule sees a
    # sample every 2 s and still raises after 30 s.
    seconds = list(range(61))
    values = [115.0 if s % 2 == 0 else None for s in seconds]
    events = RuleEngine(one_rule()).process(telemetry(VIN_A, seconds, {COOLANT: values}))
    assert at(events) == [("raised", 30.0)]


# ---------------------------------------------------------------------------------------------
# rate, spread, when


def falling_tire_rules(**fields: Any) -> RuleSet:
    rule = {
        "id": "tire_falling",
        "kind": "rate",
        "severity": "critical",
        "signal": TIRE_FL,
        "unit": "kPa",
        "window_s": 300,
        "per": "h",
        "op": "<",
        "value": -60,
        "clear_value": -20,
        "for_s": 30,
        "message": "{value:.0f} kPa/h",
        **fields,
    }
    return RuleSet.from_data({"rules": [rule]})


def test_rate_rule_finds_a_puncture_and_clears_when_the_pressure_is_steady() -> None:
    seconds = np.arange(0, 2400)
    # Steady 240 kPa, then losing 2 kPa per minute (120 kPa/h) for 10 minutes, then steady;
    # the tyre reports whole kPa, like the uint16 VSS signal.
    pressure = 240 - np.clip(seconds - 600, 0, 600) * (2 / 60)
    values = [int(round(p)) for p in pressure]
    events = RuleEngine(falling_tire_rules()).process(
        telemetry(VIN_A, seconds.tolist(), {TIRE_FL: values})
    )
    assert [kind for kind, _ in at(events)] == ["raised", "cleared"]
    raised, cleared = events
    assert 600 + 30 < (raised.ts_ms - T0) / 1000 < 600 + 300
    assert isinstance(raised.value, float)
    assert raised.value < -60
    assert cleared.peak == pytest.approx(-120, abs=3)  # least squares over whole kPa steps
    assert (cleared.ts_ms - T0) / 1000 > 1200  # only once the window no longer sees the fall


def test_rate_rule_is_quiet_on_a_steady_noisy_signal() -> None:
    rng = np.random.default_rng(3)
    values = [int(v) for v in np.rint(240 + rng.normal(0, 1.0, 3600))]
    table = telemetry(VIN_A, range(3600), {TIRE_FL: values})
    assert RuleEngine(falling_tire_rules()).process(table) == []


def test_rate_needs_samples_over_half_the_window() -> None:
    # A steep fall over 100 s only: the 300 s window is too thin to give a rate yet.
    values = [240 - 2 * s for s in range(100)]
    table = telemetry(VIN_A, range(100), {TIRE_FL: values})
    assert RuleEngine(falling_tire_rules(for_s=0)).process(table) == []
    later = telemetry(VIN_A, range(100, 160), {TIRE_FL: [40 - s // 10 for s in range(60)]})
    assert [
        kind
        for kind, _ in at(RuleEngine(falling_tire_rules(for_s=0)).process(concat(table, later)))
    ] == ["raised"]


def test_spread_rule_over_cell_voltages() -> None:
    rules = RuleSet.from_data(
        {
            "rules": [
                {
                    "id": "cells",
                    "kind": "spread",
                    "severity": "warning",
                    "signals": [CELL_MAX, CELL_MIN],
                    "op": ">",
                    "value": 0.1,
                    "clear_value": 0.08,
                    "for_s": 60,
                    "message": "{value:.3f} V",
                }
            ]
        }
    )
    seconds = list(range(300))
    spread = [0.05 if s < 100 else 0.12 if s < 250 else 0.07 for s in seconds]
    high = [3.7 + d / 2 for d in spread]
    low: list[float | None] = [3.7 - d / 2 for d in spread]
    # Rows that carry only one of the two signals cannot give a spread and are skipped.
    for s in range(102, 300, 7):
        low[s] = None
    events = RuleEngine(rules).process(telemetry(VIN_A, seconds, {CELL_MAX: high, CELL_MIN: low}))
    assert at(events) == [("raised", 160.0), ("cleared", 250.0)]
    assert events[0].value == pytest.approx(0.12)
    assert events[0].message == "0.120 V"


LV_RULES = """
version: 1
rules:
  - id: lv_weak
    kind: threshold
    severity: warning
    signal: Vehicle.LowVoltageBattery.CurrentVoltage
    unit: V
    op: "<"
    value: 12.0
    for_s: 60
    clear_value: 12.4
    clear_for_s: 30
    when:
      - {signal: Vehicle.IsMoving, op: "==", value: false}
      - {signal: Vehicle.LowVoltageSystemState, op: in, value: [LOCK, OFF, ACC]}
    message: "{value:.2f} V at rest"
"""


def lv(vin: str, seconds: Sequence[int], volts: float, moving: bool) -> pa.Table:
    state = "ON" if moving else "OFF"
    return telemetry(vin, seconds, {LV: volts, MOVING: moving, LV_STATE: state})


def test_when_conditions_limit_a_rule_to_matching_samples() -> None:
    engine = RuleEngine(RuleSet.from_yaml_text(LV_RULES))  # unquoted OFF is a string here
    # Low voltage while driving is not a resting voltage; 40 s + 40 s at rest with a short
    # drive between is not 60 s at rest.
    events = run_all(
        engine,
        lv(VIN_A, range(0, 200), 11.5, moving=True),
        lv(VIN_A, range(200, 240), 11.8, moving=False),
        lv(VIN_A, range(240, 245), 11.8, moving=True),
        lv(VIN_A, range(245, 285), 11.8, moving=False),
    )
    assert events == []
    # Resting from 245 s on: the duration continues in the next batch.
    events = engine.process(lv(VIN_A, range(285, 400), 11.8, moving=False))
    assert at(events) == [("raised", 305.0)]
    # Driving at 14 V does not clear a resting-voltage alarm; 30 s at rest above 12.4 V does.
    assert engine.process(lv(VIN_A, range(400, 1000), 14.1, moving=True)) == []
    assert at(engine.process(lv(VIN_A, range(1000, 1100), 12.6, moving=False))) == [
        ("cleared", 1030.0)
    ]


def test_when_signal_missing_means_the_rule_does_not_apply() -> None:
    engine = RuleEngine(RuleSet.from_yaml_text(LV_RULES))
    table = telemetry(VIN_A, range(300), {LV: 11.5, LV_STATE: "OFF"})  # no IsMoving column
    assert engine.process(table) == []


def test_equality_rule_on_a_string_signal_reports_the_string() -> None:
    rules = RuleSet.from_data(
        {
            "rules": [
                {
                    "id": "stuck_in_acc",
                    "kind": "threshold",
                    "severity": "info",
                    "signal": LV_STATE,
                    "op": "==",
                    "value": "ACC",
                    "for_s": 600,
                    "message": "{value} for {duration_s:.0f} s",
                }
            ]
        }
    )
    states = ["ACC"] * 700 + ["OFF"] * 10
    events = RuleEngine(rules).process(telemetry(VIN_A, range(710), {LV_STATE: states}))
    assert [(k, s, e.value, e.peak) for (k, s), e in zip(at(events), events, strict=True)] == [
        ("raised", 600.0, "ACC", None),
        ("cleared", 700.0, "OFF", None),
    ]
    assert events[0].message == "ACC for 600 s"


# ---------------------------------------------------------------------------------------------
# late data, replays, state


def test_store_and_forward_findings_are_late_and_open_no_live_alarm() -> None:
    engine = RuleEngine(one_rule(clear_value=105), late_after_s=300)
    live_before = telemetry(VIN_A, range(0, 600), {COOLANT: 90.0})
    # Offline from 600 s to 2400 s; the backlog arrives at 2400 s. It shows an overheating
    # episode (900-1000 s) and ends hot.
    backlog_s = list(range(600, 2400))
    backlog = telemetry(
        VIN_A,
        backlog_s,
        {COOLANT: [115.0 if 900 <= s < 1000 or s >= 2000 else 90.0 for s in backlog_s]},
    )
    received = pa.array([T0 + 2_400_000] * len(backlog_s), pa.int64()).cast(
        pa.timestamp("ms", tz="UTC")
    )
    backlog = backlog.set_column(2, "received_at", received)
    live_after = telemetry(VIN_A, range(2400, 2700), {COOLANT: 90.0})
    events = run_all(engine, live_before, backlog, live_after)
    # The backlog's tail (< 300 s old on arrival) is live data; the rest is late.
    assert [(k, s, e.late) for (k, s), e in zip(at(events), events, strict=True)] == [
        ("raised", 930.0, True),
        ("cleared", 1000.0, True),
        ("raised", 2030.0, True),
        ("raised", 2130.0, False),
        ("cleared", 2400.0, False),
    ]
    assert engine.open_alarms(VIN_A) == []
    (late_open,) = engine.open_alarms(VIN_A, late=True)
    assert late_open.raised_ts_ms == T0 + 2_030_000
    assert engine.stats.late_rows == 2100 - 600
    assert engine.stats.live_rows == 600 + 300 + 300


def test_late_rows_do_not_disturb_the_live_state() -> None:
    def live(seconds: range) -> pa.Table:
        return telemetry(VIN_A, seconds, {COOLANT: 115.0})

    # A cool late sample in the middle of a live excursion neither breaks nor extends it.
    late_cool = telemetry(VIN_A, range(5, 16), {COOLANT: 90.0}, delay_s=3600)
    with_late = run_all(RuleEngine(one_rule()), live(range(0, 20)), late_cool, live(range(20, 40)))
    without = run_all(RuleEngine(one_rule()), live(range(0, 20)), live(range(20, 40)))
    assert at(with_late) == at(without) == [("raised", 30.0)]


def test_rows_behind_the_high_water_mark_are_skipped_as_replays() -> None:
    engine = RuleEngine(one_rule())
    table = telemetry(VIN_A, range(100), {COOLANT: [115.0] * 40 + [95.0] * 60})
    assert at(engine.process(table)) == [("raised", 30.0), ("cleared", 40.0)]
    assert engine.process(table) == []  # a replay of the whole batch
    assert engine.stats.stale_rows == 100
    # Duplicates inside one batch count once.
    twice = concat(
        telemetry(VIN_B, range(50), {COOLANT: 115.0}), telemetry(VIN_B, range(50), {COOLANT: 115.0})
    )
    assert at(engine.process(twice)) == [("raised", 30.0)]
    assert engine.stats.duplicate_rows == 50


def test_restart_from_exported_state_replays_without_double_raising() -> None:
    rules = load_default_rules()
    seconds_1, seconds_2 = range(0, 900), range(900, 2400)

    def batch(seconds: range) -> pa.Table:
        coolant = [115.0 if 880 <= s < 2000 else 95.0 for s in seconds]
        tire = [max(0, int(round(240 - max(0, s - 600) * 2 / 60))) for s in seconds]
        return telemetry(
            VIN_A,
            list(seconds),
            {
                COOLANT: coolant,
                TIRE_FL: tire,
                TIRE_FR: 240,
                vss.TIRE_PRESSURE[2]: 240,
                vss.TIRE_PRESSURE[3]: 240,
            },
        )

    first, second = batch(seconds_1), batch(seconds_2)
    original = RuleEngine(rules)
    before = original.process(first)
    saved = json.loads(json.dumps(original.export_state()))  # JSON-ready, as a database holds it
    expected = original.process(second)
    assert {e.rule_id for e in expected} >= {"coolant_overtemp", "tire_pressure_falling.row1_left"}

    restarted = RuleEngine(rules)
    assert restarted.restore_state(saved) == []
    assert restarted.process(first) == []  # replay of rows already processed
    assert restarted.process(second) == expected  # pending raise and rate window carried over
    assert before == []  # the coolant excursion started at 880 s: still pending at 900 s
    assert restarted.export_state() == original.export_state()


def test_restore_reports_rules_that_no_longer_exist() -> None:
    engine = RuleEngine(one_rule())
    engine.process(telemetry(VIN_A, range(40), {COOLANT: 115.0}))
    state = engine.export_state()
    other = RuleEngine(one_rule(id="coolant_hotter"))
    assert other.restore_state(state) == ["coolant_hot"]
    assert other.open_alarms(VIN_A) == []


def test_export_state_can_be_limited_to_some_vehicles() -> None:
    engine = RuleEngine(one_rule())
    engine.process(
        concat(
            telemetry(VIN_A, range(40), {COOLANT: 115.0}),
            telemetry(VIN_B, range(40), {COOLANT: 95.0}),
        )
    )
    state = engine.export_state([VIN_A])
    assert list(state["vehicles"]) == [VIN_A]
    assert state["vehicles"][VIN_A]["live"]["rules"]["coolant_hot"]["phase"] == "open"


def test_forget_drops_a_vehicle_whose_partition_moved_away() -> None:
    engine = RuleEngine(one_rule())
    table = telemetry(VIN_A, range(40), {COOLANT: 115.0})
    assert at(engine.process(table)) == [("raised", 30.0)]
    engine.forget([VIN_A])
    assert engine.open_alarms(VIN_A) == []
    assert engine.export_state()["vehicles"][VIN_A]["live"] == {"hwm": None}
    assert at(engine.process(table)) == [("raised", 30.0)]  # no longer known: processed afresh


def test_a_sample_from_the_future_does_not_mute_the_vehicle() -> None:
    engine = RuleEngine(one_rule())
    wrong_clock = telemetry(VIN_A, [86_400 * 365], {COOLANT: 90.0}, delay_s=-86_400 * 365)
    assert engine.process(wrong_clock) == []
    assert engine.stats.future_rows == 1
    assert at(engine.process(telemetry(VIN_A, range(40), {COOLANT: 115.0}))) == [("raised", 30.0)]


def test_bad_rows_are_counted_not_fatal() -> None:
    table = pa.table(
        {
            "vin": pa.array([VIN_A, None, VIN_A]),
            "ts": pa.array([T0, T0, None], pa.int64()),  # plain int64 ms works too
            COOLANT: pa.array([115.0, 115.0, 115.0]),
        }
    )
    engine = RuleEngine(one_rule())
    assert engine.process(table) == []
    assert (engine.stats.invalid_rows, engine.stats.live_rows) == (2, 1)
    with pytest.raises(ValueError, match="'ts'"):
        engine.process(pa.table({"vin": [VIN_A]}))


# ---------------------------------------------------------------------------------------------
# batches split anywhere = one batch = a per-sample reference implementation

PROPERTY_RULES = RuleSet.from_data(
    {
        "max_gap_s": 10,
        "rules": [
            {
                "id": "hot_while_moving",
                "kind": "threshold",
                "severity": "critical",
                "signal": COOLANT,
                "op": ">",
                "value": 110,
                "for_s": 5,
                "clear_value": 105,
                "clear_for_s": 3,
                "when": [{"signal": MOVING, "op": "==", "value": True}],
                "message": "{value} {peak} {duration_s}",
            },
            {
                "id": "tire_low_now",
                "kind": "threshold",
                "severity": "warning",
                "signal": TIRE_FL,
                "op": "<",
                "value": 210,
                "message": "{value}",
                "clear_message": "{value} {peak}",
            },
            {
                "id": "state_off",
                "kind": "threshold",
                "severity": "info",
                "signal": LV_STATE,
                "op": "==",
                "value": "OFF",
                "for_s": 3,
                "message": "{value}",
            },
            {
                "id": "tire_spread",
                "kind": "spread",
                "severity": "warning",
                "signals": [TIRE_FL, TIRE_FR],
                "op": ">",
                "value": 40,
                "clear_value": 25,
                "for_s": 4,
                "message": "{value} {peak}",
            },
            {
                "id": "tire_rate",
                "kind": "rate",
                "severity": "warning",
                "signal": TIRE_FL,
                "window_s": 20,
                "op": "<",
                "value": -1.5501234,
                "clear_value": -0.4501234,
                "for_s": 2,
                "message": "rate",
                "clear_message": "rate cleared",
            },
        ],
    }
)


@st.composite
def arrivals(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Rows of 1-3 vehicles in an arrival order a Kafka partition could produce: each vehicle's
    live rows in time order, its late (store-and-forward) rows in time order, the two streams
    and the vehicles interleaved anyhow, and some rows repeated later (retries)."""
    rows: list[tuple[float, dict[str, Any]]] = []
    for v in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 50))
        steps = draw(st.lists(st.sampled_from([1, 1, 1, 2, 4, 15]), min_size=n, max_size=n))
        seconds = np.cumsum(steps).tolist()
        late_pattern = draw(st.sampled_from([[False], [False, False, True], [True, True, False]]))
        samples = [
            {
                "vin": f"WVWZZZ1KZNT00000{v}",
                "ts": T0 + 1000 * s,
                "late": draw(st.sampled_from(late_pattern)),
                "no_received": draw(st.integers(0, 9)) == 0,
                COOLANT: draw(st.sampled_from([100.0, 100.0, 107.0, 112.0, 113.5, None])),
                MOVING: draw(st.sampled_from([True, True, False, None])),
                TIRE_FL: draw(st.sampled_from([200, 215, 230, 250, None])),
                TIRE_FR: draw(st.sampled_from([250, 255, None])),
                LV_STATE: draw(st.sampled_from(["OFF", "ON", None])),
            }
            for s in seconds
        ]
        for lane in (False, True):
            stream = [row for row in samples if row["late"] is lane and not row["no_received"]]
            stream += [row for row in samples if row["no_received"] and not lane]
            stream.sort(key=lambda row: row["ts"])
            keys = sorted(
                draw(st.lists(st.floats(0, 1), min_size=len(stream), max_size=len(stream)))
            )
            rows += list(zip(keys, stream, strict=True))
        for _ in range(draw(st.integers(0, 3))):
            key, row = draw(st.sampled_from(rows))
            rows.append((draw(st.floats(key, 1.0)), row))
    rows.sort(key=lambda pair: pair[0])
    return [row for _, row in rows]


def to_table(rows: Sequence[dict[str, Any]]) -> pa.Table:
    ts = [row["ts"] for row in rows]
    received = [
        None if row["no_received"] else row["ts"] + (3_600_000 if row["late"] else 500)
        for row in rows
    ]
    columns = {
        "vin": pa.array([row["vin"] for row in rows], pa.string()),
        "ts": pa.array(ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
        "received_at": pa.array(received, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
    }
    for path in (COOLANT, MOVING, TIRE_FL, TIRE_FR, LV_STATE):
        columns[path] = pa.array([row[path] for row in rows], arrow_type(CATALOG[path]))
    return pa.table(columns)


def same_events(actual: Sequence[AlarmEvent], expected: Sequence[AlarmEvent]) -> bool:
    """Equal event lists up to order and float rounding (rate sums are added in another order
    when the input is split, and the reference computes them differently again)."""

    def key(e: AlarmEvent) -> tuple[Any, ...]:
        return (e.vin, e.rule_id, e.ts_ms, e.kind, e.late)

    a, b = sorted(actual, key=key), sorted(expected, key=key)
    if [key(e) for e in a] != [key(e) for e in b]:
        assert [key(e) for e in a] == [key(e) for e in b]  # shows the difference
    for x, y in zip(a, b, strict=True):
        assert (x.condition_since_ms, x.raised_ts_ms) == (y.condition_since_ms, y.raised_ts_ms)
        for u, v in ((x.value, y.value), (x.peak, y.peak)):
            if isinstance(u, float) and isinstance(v, float):
                assert math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-9), (x, y)
            else:
                assert u == v, (x, y)
    return True


def reference_rates(samples: Sequence[tuple[int, float]], rule: RateRule) -> dict[int, float]:
    """Least-squares slope at every sample over the documented window (samples whose bucket is
    at most RATE_BUCKETS - 1 below the sample's own), where the window is thick enough."""
    width = rule.bucket_ms
    window_s = RATE_BUCKETS * width / 1000
    rates = {}
    for i, (ts, _) in enumerate(samples):
        low = ts // width - (RATE_BUCKETS - 1)
        window = [(t, y) for t, y in samples[: i + 1] if t // width >= low]
        t = np.array([w[0] for w in window]) / 1000.0
        y = np.array([w[1] for w in window])
        if len(window) >= 3 and np.var(t) * 48 >= window_s**2:
            slope = float(np.sum((t - t.mean()) * (y - y.mean())) / np.sum((t - t.mean()) ** 2))
            rates[ts] = slope * rule.per_seconds
    return rates


def _holds(value: Any, op: str, target: Any) -> bool:
    return {
        "<": value < target,
        "<=": value <= target,
        ">": value > target,
        ">=": value >= target,
        "==": value == target,
        "!=": value != target,
    }[op]


def reference_samples(
    rule: ThresholdRule | SpreadRule | RateRule, by_ts: dict[int, dict[str, Any]]
) -> list[tuple[int, Any, str]]:
    """(ts, value, code) of every sample of one timeline that carries the rule's value; code R
    (raise condition), H (between raise and clear value), C (clear), N (``when`` false)."""
    rates: dict[int, float] = {}
    if isinstance(rule, RateRule):
        series = [
            (ts, float(by_ts[ts][rule.signal]))
            for ts in sorted(by_ts)
            if by_ts[ts][rule.signal] is not None
        ]
        rates = reference_rates(series, rule)
    samples = []
    for ts in sorted(by_ts):
        row = by_ts[ts]
        value: Any
        if isinstance(rule, RateRule):
            if ts not in rates:
                continue
            value = rates[ts]
        elif isinstance(rule, SpreadRule):
            parts = [row[p] for p in rule.signals]
            if any(p is None for p in parts):
                continue
            value = float(max(parts) - min(parts))
        else:
            value = row[rule.signal]
            if value is None:
                continue
            value = value if isinstance(value, str) else float(value)
        clear_value = rule.clear_value if rule.clear_value is not None else rule.value
        if not all(
            row[c.signal] is not None and _holds(row[c.signal], c.op, c.value) for c in rule.when
        ):
            code = "N"
        elif _holds(value, rule.op, rule.value):
            code = "R"
        elif _holds(value, rule.op, clear_value):
            code = "H"
        else:
            code = "C"
        samples.append((ts, value, code))
    return samples


def reference_walk(
    rule: ThresholdRule | SpreadRule | RateRule,
    gap_ms: int,
    vin: str,
    late: bool,
    samples: Sequence[tuple[int, Any, str]],
) -> list[AlarmEvent]:
    """The documented state machine, one sample at a time."""
    events = []

    def extreme(peak: float | None, value: Any) -> float | None:
        if not rule.direction:
            return None
        if peak is None:
            return float(value)
        return max(peak, value) if rule.direction > 0 else min(peak, value)

    def event(
        kind: Literal["raised", "cleared"], ts: int, value: Any, since: int, raised: int, peak: Any
    ) -> AlarmEvent:
        return AlarmEvent(
            kind=kind,
            vin=vin,
            rule_id=rule.id,
            severity=rule.severity,
            ts_ms=ts,
            value=value,
            message="",
            late=late,
            condition_since_ms=since,
            raised_ts_ms=raised,
            peak=peak,
        )

    state: dict[str, Any] | None = None
    for ts, value, code in samples:
        if state is not None and ts - state["last"] > gap_ms:
            if state["phase"] == "pending":
                state = None  # a gap breaks a pending raise ...
            else:
                state["clear_since"] = None  # ... and a pending clear
        if code == "R":
            if state is None:
                state = {"phase": "pending", "since": ts, "peak": None}
            state["peak"] = extreme(state["peak"], value)
            if state["phase"] == "pending" and ts - state["since"] >= rule.for_s * 1000:
                events.append(event("raised", ts, value, state["since"], ts, state["peak"]))
                state.update(phase="open", raised=ts)
            state["clear_since"] = None
        elif state is None or state["phase"] == "pending":
            state = None
        elif code == "C":
            state["peak"] = extreme(state["peak"], value)
            if state["clear_since"] is None:
                state["clear_since"] = ts
            if ts - state["clear_since"] >= rule.clear_for_s * 1000:
                events.append(
                    event(
                        "cleared", ts, value, state["clear_since"], state["raised"], state["peak"]
                    )
                )
                state = None
        elif code == "H":
            state["peak"] = extreme(state["peak"], value)
            state["clear_since"] = None
        else:
            state["clear_since"] = None
        if state is not None:
            state["last"] = ts
    return events


def reference(rows: Sequence[dict[str, Any]], ruleset: RuleSet) -> list[AlarmEvent]:
    """A plain per-sample implementation of docs/rules.md, to check the vectorised engine."""
    timelines: dict[tuple[str, bool], dict[int, dict[str, Any]]] = defaultdict(dict)
    for row in rows:  # the first of rows with equal (vehicle, timeline, ts) counts
        timelines[(row["vin"], row["late"] and not row["no_received"])].setdefault(row["ts"], row)
    return [
        event
        for rule in ruleset.rules
        for (vin, late), by_ts in timelines.items()
        for event in reference_walk(
            rule, ruleset.gap_ms(rule), vin, late, reference_samples(rule, by_ts)
        )
    ]


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=arrivals(), data=st.data())
def test_any_split_into_batches_gives_the_events_of_one_batch(
    rows: list[dict[str, Any]], data: st.DataObject
) -> None:
    table = to_table(rows)
    whole = RuleEngine(PROPERTY_RULES).process(table)

    cuts = sorted(data.draw(st.lists(st.integers(0, len(rows)), max_size=5), label="cuts"))
    restarts = data.draw(
        st.lists(st.booleans(), min_size=len(cuts) + 1, max_size=len(cuts) + 1), label="restarts"
    )
    shuffle = random.Random(data.draw(st.integers(0, 2**32), label="shuffle"))
    engine = RuleEngine(PROPERTY_RULES)
    split: list[AlarmEvent] = []
    for start, stop, restart in zip([0, *cuts], [*cuts, len(rows)], restarts, strict=True):
        if restart:  # a new worker that restores the state the last one stored
            state = json.loads(json.dumps(engine.export_state()))
            engine = RuleEngine(PROPERTY_RULES)
            engine.restore_state(state)
        order = list(range(start, stop))
        shuffle.shuffle(order)  # rows inside a batch come in any order
        split += engine.process(table.take(pa.array(order, pa.int64())))

    assert same_events(split, whole)
    assert [e.message for e in sorted(split, key=lambda e: e.key)] == [
        e.message for e in sorted(whole, key=lambda e: e.key)
    ]
    assert same_events(whole, reference(rows, PROPERTY_RULES))


# ---------------------------------------------------------------------------------------------
# the rules file


def test_default_rules_file_is_valid_and_covers_every_rule_kind() -> None:
    rules = load_rules(DEFAULT_RULES_PATH)
    assert {rule.kind for rule in rules.rules} == {"threshold", "spread", "rate"}
    coolant = rules.get("coolant_overtemp")
    assert (coolant.value, coolant.for_s, coolant.clear_value) == (110.0, 30.0, 105.0)
    weak = rules.get("lv_battery_weak_at_rest")
    assert weak.when[1].value == ["LOCK", "OFF", "ACC"]  # YAML 1.2 booleans: OFF is a string
    assert {MOVING, LV_STATE, CELL_MAX, *vss.TIRE_PRESSURE} <= set(rules.signals)


def rules_text(**changes: Any) -> str:
    rule: dict[str, Any] = {
        "id": "coolant_hot",
        "kind": "threshold",
        "severity": "critical",
        "signal": COOLANT,
        "unit": "Celsius",
        "op": ">",
        "value": 110,
        "for_s": 30,
        "clear_value": 105,
        "message": "coolant {value:.1f} C",
    }
    for key, value in changes.items():
        if value is None:
            rule.pop(key, None)
        else:
            rule[key] = value
    return yaml.safe_dump({"version": 1, "rules": [rule]}, sort_keys=False)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            rules_text(signal="Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temprature"),
            ["field 'signal'", "unknown signal", f"did you mean {COOLANT!r}"],
        ),
        (rules_text(unit="C"), ["field 'unit'", "'Celsius', not 'C'"]),
        (rules_text(for_s=-5), ["field 'for_s'", "greater than or equal to 0"]),
        (rules_text(clear_value=115), ["field 'clear_value'", "wrong side", "<= value"]),
        (rules_text(op="<", value=90, clear_value=80), ["field 'clear_value'", ">= value"]),
        (rules_text(value="hot"), ["field 'value'", "numeric"]),
        (rules_text(value=500), ["field 'value'", "outside the range", "[-50, 200]"]),
        (rules_text(treshold=110), ["field 'treshold'", "Extra inputs are not permitted"]),
        (rules_text(severity="urgent"), ["field 'severity'", "'info', 'warning' or 'critical'"]),
        (rules_text(kind="average"), ["'average'", "'threshold', 'spread', 'rate'"]),
        (rules_text(message="{value:.1f} at {when}"), ["field 'message'", "{when}"]),
        (
            rules_text(signal=vss.DTC_LIST, unit=None, value=1, clear_value=None),
            ["field 'signal'", "string list"],
        ),
        (
            rules_text(when=[{"signal": LV_STATE, "op": "in", "value": ["OFF", "PARKED"]}]),
            ["when[0]", "'PARKED'", "allowed: UNDEFINED, LOCK, OFF, ACC, ON, START"],
        ),
        (
            rules_text(when=[{"signal": MOVING, "op": ">", "value": True}]),
            ["when[0]", "field 'op'", "boolean"],
        ),
        (
            rules_text(
                kind="spread",
                signals=[CELL_MAX, COOLANT],
                signal=None,
                op=">",
                value=0.1,
                clear_value=None,
                unit=None,
            ),
            ["field 'signals'", "a spread needs one unit, these have Celsius, V"],
        ),
        (
            rules_text(kind="rate", window_s=0, op="<", value=-1, clear_value=None),
            ["field 'window_s'", "greater than 0"],
        ),
        ("rules:\n  - id: a\n    id: b\n", ["duplicate key 'id'", "line 3"]),
        ("rules: [1, 2", ["not valid YAML"]),
        ("- just a list", ["must be a mapping"]),
    ],
)
def test_invalid_rules_files_name_the_rule_and_the_field(text: str, expected: list[str]) -> None:
    with pytest.raises(RulesFileError) as caught:
        RuleSet.from_yaml_text(text, source="fleet-rules.yaml")
    message = str(caught.value)
    assert message.startswith("invalid rules file fleet-rules.yaml")
    if "coolant_hot" in text:  # a rule was parsed: the problem names it
        assert "rule 'coolant_hot' (rules[0])" in message
    for part in expected:
        assert part in message


def test_duplicate_rule_ids_are_reported_with_other_problems() -> None:
    rule = yaml.safe_load(rules_text())["rules"][0]
    broken = {**rule, "for_s": -1}
    with pytest.raises(RulesFileError) as caught:
        RuleSet.from_data({"rules": [rule, broken, rule]})
    assert caught.value.problems == [
        "rule 'coolant_hot' (rules[1]): field 'for_s': Input should be greater than or equal to 0",
        "rule 'coolant_hot': duplicate id (rules[0] and rules[1])",
        "rule 'coolant_hot': duplicate id (rules[0] and rules[2])",
    ]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_mutated_default_rule_is_valid_or_an_error_naming_that_rule(data: st.DataObject) -> None:
    document = parse_rules_yaml(DEFAULT_RULES_PATH.read_text())
    index = data.draw(st.integers(0, len(document["rules"]) - 1), label="rule")
    rule = document["rules"][index]
    key = data.draw(st.sampled_from([*rule, "extra"]), label="field")
    rule[key] = data.draw(JSON_VALUES, label="value")
    try:
        RuleSet.from_data(document)
    except RulesFileError as exc:
        assert exc.problems
        assert all(f"rules[{index}]" in problem for problem in exc.problems), exc.problems


# ---------------------------------------------------------------------------------------------
# the default rules against the simulator

SIM_START = 1_760_000_000_000
SIM_HOURS = 2.0
FAULT_PLAN = {  # vehicle index in make_fleet(30, seed=5) -> fault (these vehicles drive early)
    9: FaultSpec(FaultKind.COOLANT_PUMP, onset_s=300, failure_s=3600),
    1: FaultSpec(FaultKind.WEAK_LV_BATTERY, onset_s=0, failure_s=3600),
    0: FaultSpec(FaultKind.CELL_IMBALANCE, onset_s=0, failure_s=3600),
    7: FaultSpec(FaultKind.BRAKE_PAD_WEAR, onset_s=0, failure_s=3600, wheel="Row2.Wheel.Right"),
    12: FaultSpec(FaultKind.TIRE_LEAK, onset_s=0, failure_s=3600, wheel="Row1.Wheel.Left"),
}
HEALTHY = (10, 16)  # a BEV and an ICE vehicle, both commercial (driving), no fault
EXPECTED_RULES = {
    "engine.coolant_pump": {"coolant_overtemp"},
    "low_voltage_battery": {"lv_battery_weak_at_rest"},
    "traction_battery.cells": {"cell_voltage_spread"},
    "brake_pad.row2.right": {"brake_pad_worn.row2_right"},
    "tire.row1.left": {"tire_pressure_imbalance", "tire_pressure_low.row1_left"},
}


def simulate(fleet: Sequence[VehicleProfile], delivery: DeliveryConfig) -> pa.Table:
    config = SimConfig(sample_interval_s=2.0, delivery=delivery)
    buffer = RowBuffer()
    deliveries = iter_deliveries(fleet, SIM_START, SIM_HOURS * 3600, seed=1, config=config)
    for offset, item in enumerate(deliveries):  # received when sent: the transmission time
        buffer.add(
            item.message,
            topic="telemetry.v1",
            partition=0,
            offset=offset,
            received_at=item.at_ms,
            catalog=CATALOG,
            size=0,
        )
    return buffer.to_table(archive_schema())


@pytest.fixture(scope="module")
def sim_fleet() -> list[VehicleProfile]:
    fleet = make_fleet(30, seed=5, commercial_share=0.5)
    faulty = [with_faults(fleet[i], fault) for i, fault in FAULT_PLAN.items()]
    return faulty + [fleet[i] for i in HEALTHY]


def in_kafka_batches(table: pa.Table, rows: int) -> list[pa.Table]:
    return [table.slice(start, rows) for start in range(0, table.num_rows, rows)]


def test_default_rules_find_every_simulated_fault_and_nothing_on_healthy_vehicles(
    sim_fleet: list[VehicleProfile],
) -> None:
    table = simulate(sim_fleet, DeliveryConfig())
    engine = RuleEngine(load_default_rules())
    events = run_all(engine, *in_kafka_batches(table, 5_000))
    labels = {label.vin: label for label in fault_labels(sim_fleet, SIM_START)}
    raised: dict[str, set[str]] = defaultdict(set)
    for event in events:
        assert not event.late
        label = labels.get(event.vin)
        assert label is not None, f"alarm on a healthy vehicle: {event}"
        assert event.ts_ms > label.onset_ts, f"alarm before the fault began: {event}"
        if event.kind == "raised":
            raised[label.component].add(event.rule_id)
    for component, rule_ids in EXPECTED_RULES.items():
        assert rule_ids <= raised[component], (component, raised[component])


def test_simulated_store_and_forward_findings_are_late_exactly_when_their_rows_were(
    sim_fleet: list[VehicleProfile],
) -> None:
    table = simulate(sim_fleet[: len(FAULT_PLAN)], DeliveryConfig(late_rate=0.3))
    ts = table.column("ts").cast(pa.int64()).to_numpy()
    received = table.column("received_at").cast(pa.int64()).to_numpy()
    vins = table.column("vin").to_pylist()
    late_rows = {(vin, t) for vin, t, r in zip(vins, ts, received, strict=True) if r - t > 300_000}
    assert late_rows  # the run has store-and-forward data
    events = run_all(RuleEngine(load_default_rules()), *in_kafka_batches(table, 5_000))
    assert any(e.late for e in events)
    for event in events:
        assert event.late == ((event.vin, event.ts_ms) in late_rows), event
    found = {(e.vin, e.rule_id) for e in events if e.kind == "raised"}
    for label in fault_labels(sim_fleet[: len(FAULT_PLAN)], SIM_START):
        assert any((label.vin, rule_id) in found for rule_id in EXPECTED_RULES[label.component])


# ---------------------------------------------------------------------------------------------
# throughput


def fleet_batch(rng: np.random.Generator, vehicles: int, per_vehicle: int, t0: int) -> pa.Table:
    """One Kafka poll's worth of telemetry: ``vehicles`` x ``per_vehicle`` samples at 1 Hz with
    the simulator's ~30 signals (BEV and ICE), rows shuffled."""
    n = vehicles * per_vehicle
    vin = np.repeat([f"WVWZZZ1KZNT{i:06d}" for i in range(vehicles)], per_vehicle)
    ts = t0 + np.tile(np.arange(per_vehicle) * 1000, vehicles)
    bev = np.repeat(np.arange(vehicles) % 2 == 0, per_vehicle)
    moving = np.repeat(np.arange(vehicles) % 3 != 0, per_vehicle)
    columns: dict[str, Any] = {
        "vin": vin,
        "ts": pa.array(ts).cast(pa.timestamp("ms", tz="UTC")),
        "received_at": pa.array(ts + 400).cast(pa.timestamp("ms", tz="UTC")),
    }

    def put(path: str, values: Any, only: np.ndarray | None = None) -> None:
        mask = None if only is None else ~only
        columns[path] = pa.array(values, arrow_type(CATALOG[path]), mask=mask)

    put(vss.SPEED, np.where(moving, rng.uniform(10, 120, n), 0.0))
    put(MOVING, moving)
    put(vss.TRAVELED_DISTANCE, rng.integers(0, 10**8, n))
    for path in (vss.LATITUDE, vss.LONGITUDE, vss.HEADING, vss.AIR_TEMPERATURE):
        put(path, rng.uniform(0, 50, n))
    for path in (vss.ACCEL_LONGITUDINAL, vss.ACCEL_LATERAL, vss.ACCEL_VERTICAL):
        put(path, rng.normal(0, 1, n))
    put(LV, np.where(moving, 14.0, 12.6) + rng.normal(0, 0.03, n))
    columns[LV_STATE] = pa.array(np.where(moving, "ON", "OFF"))
    put(vss.CURRENT_GEAR, np.where(moving, 3, 0))
    for path in vss.TIRE_PRESSURE:
        put(path, np.rint(240 + rng.normal(0, 1, n)).astype(int))
    for path in vss.BRAKE_PAD_WEAR:
        put(path, rng.integers(10, 60, n))
    columns[vss.DTC_LIST] = pa.array([[]] * n, pa.list_(pa.string()))
    for path, level in (
        (vss.SOC, 50),
        (vss.HV_VOLTAGE, 400),
        (vss.HV_CURRENT, -20),
        (vss.BATTERY_TEMP_MIN, 25),
        (vss.BATTERY_TEMP_MAX, 27),
        (CELL_MIN, 3.70),
        (CELL_MAX, 3.72),
        (vss.CHARGE_CURRENT_DC, 0),
        (vss.CHARGE_CURRENT_AC, 0),
    ):
        put(path, level + rng.normal(0, 0.005, n), only=bev)
    for path in (vss.IS_CHARGING, vss.CHARGE_CABLE_CONNECTED):
        put(path, np.zeros(n, dtype=bool), only=bev)
    put(vss.ENGINE_SPEED, rng.uniform(800, 3000, n), only=~bev)
    put(COOLANT, 90 + rng.normal(0, 0.3, n), only=~bev)
    put(vss.FUEL_LEVEL, rng.integers(0, 100, n), only=~bev)
    return pa.table(columns).take(rng.permutation(n))


def test_throughput_walks_runs_not_samples() -> None:
    """50,000 rows of 1,000 vehicles with the default rules: a per-sample Python loop would take
    tens of microseconds per sample; the vectorised engine takes about one (see docs/rules.md).
    The bound is loose so a busy CI machine does not fail it."""
    rng = np.random.default_rng(0)
    engine = RuleEngine(load_default_rules())
    batches = [fleet_batch(rng, 1_000, 50, T0 + i * 50_000) for i in range(4)]
    engine.process(batches[0])  # first batch: timelines and windows are created
    start = time.perf_counter()
    for batch in batches[1:]:
        engine.process(batch)
    per_sample_us = (time.perf_counter() - start) / (3 * 50_000) * 1e6
    assert per_sample_us < 15, f"{per_sample_us:.2f} us per sample"
    assert engine.stats.live_rows == 4 * 50_000
