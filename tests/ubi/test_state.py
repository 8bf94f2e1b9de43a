"""Checkpointable state of the streaming analytics (trips, events, battery health).

A Kafka worker stores, at every checkpoint, the state of the vehicles a batch touched; after a
crash a fresh instance restores a vehicle's state the first time it sees that VIN. Whatever the
batches and wherever the crashes, the results must equal one uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

import msgspec
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.ubi.test_battery import _TABLE as BATTERY_TRACE
from tests.ubi.test_battery import NOMINAL_AH, SPEC
from tests.ubi.test_battery import VIN as BATTERY_VIN
from tests.ubi.test_battery import _trace as battery_trace
from tests.ubi.test_events import TRACES, _quiet
from tests.ubi.test_events import _table as braking_table
from tests.ubi.test_trips import FLEET
from tests.ubi.test_trips import VIN as TRIP_VIN
from ubi.battery import (
    BATTERY_STATE_VERSION,
    BatteryHealthState,
    BatteryHealthTracker,
    ChargeSession,
    _SessionState,
    simulate_table,
)
from ubi.events import EVENT_STATE_VERSION, DrivingEvent, EventDetector, detect_events
from ubi.trips import ODOMETER, TRIP_STATE_VERSION, Trip, TripSegmenter, segment_trips


class Checkpointable(Protocol):
    def export_state(self, vins: Any) -> dict[str, bytes]: ...
    def restore_state(self, states: Any) -> None: ...


def _vins(table: pa.Table) -> list[str]:
    return sorted(set(table.column("vin").to_pylist()))


def _by_time(table: pa.Table) -> pa.Table:
    """Vehicles interleaved by time, as a Kafka partition delivers them."""
    order = np.argsort(np.asarray(table["ts"].cast(pa.int64())), kind="stable")
    return table.take(pa.array(order))


def _batches(table: pa.Table, cuts: list[int], crash_rows: list[int]) -> tuple[list, set[int]]:
    """The table cut at ``cuts`` and ``crash_rows``, and the indices of the batches before which
    the worker crashes (``len(batches)``: a crash after the last batch, before the flush)."""
    edges = sorted({0, table.num_rows, *cuts, *crash_rows})
    batches = [table.slice(lo, hi - lo) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
    return batches, {edges.index(row) for row in crash_rows}


C = TypeVar("C", bound=Checkpointable)


def _run_with_crashes(
    make: Callable[[], C],
    batches: Sequence[pa.Table],
    crashes: set[int],
    update: Callable[[C, pa.Table], list[Any]],
    finish: Callable[[C], list[Any]],
) -> list[Any]:
    """The worker protocol: after each batch the state of the vehicles it touched goes to the
    store (the offset commit's transaction); before batch ``i in crashes`` the instance is lost
    and a fresh one restores each vehicle lazily, when the vehicle next shows up."""
    store: dict[str, bytes] = {}
    out: list[Any] = []
    instance, restored = make(), set[str]()
    for i, batch in enumerate(batches):
        if i in crashes:
            instance, restored = make(), set()
        touched = _vins(batch)
        instance.restore_state({v: store[v] for v in touched if v in store and v not in restored})
        restored.update(touched)
        out.extend(update(instance, batch))
        store.update(instance.export_state(touched))
    if len(batches) in crashes:
        instance, restored = make(), set()
    instance.restore_state({v: data for v, data in store.items() if v not in restored})
    out.extend(finish(instance))
    return out


def _with_version(data: bytes, version: int) -> bytes:
    kind, _, vin, payload = msgspec.msgpack.decode(data)
    return msgspec.msgpack.encode([kind, version, vin, payload])


def _check_format_errors(make: Callable[[], Checkpointable], vin: str, data: bytes) -> None:
    """Unknown version, malformed bytes, another VIN's state: ValueError, nothing restored."""
    kind, version, _, _ = msgspec.msgpack.decode(data)
    fresh = make()
    with pytest.raises(ValueError, match="version 99"):
        fresh.restore_state({vin: _with_version(data, 99)})
    bad = [b"", b"\x00garbage", data[: len(data) // 2], data + b"\x00", b"\x94\xa1x\x01\xa1v\x90"]
    for blob in bad:
        with pytest.raises(ValueError):
            fresh.restore_state({vin: blob})
    with pytest.raises(ValueError, match="VIN"):
        fresh.restore_state({"SOMEOTHERVIN00000": data})
    other_kind = msgspec.msgpack.encode(["other", version, vin, []])
    with pytest.raises(ValueError, match=kind):
        fresh.restore_state({vin: other_kind})
    with pytest.raises(ValueError):  # the good one is not loaded either: all or nothing
        fresh.restore_state({vin: data, "X": b"\x00garbage"})
    assert fresh.export_state([vin, "X"]) == {}
    assert make().export_state(["UNKNOWNVIN0000000"]) == {}
    with pytest.raises(TypeError):
        fresh.export_state(vin)  # one string, not an iterable of VINs


def _check_round_trip(make: Callable[[], Checkpointable], states: dict[str, bytes]) -> None:
    """export -> restore -> export gives identical bytes."""
    assert states
    fresh = make()
    fresh.restore_state(states)
    assert fresh.export_state(list(states)) == states


_rows = st.lists(st.integers(0, 10**6), max_size=8)
_crash_rows = st.lists(st.integers(0, 10**6), min_size=1, max_size=3)


def _scaled(rows: list[int], table: pa.Table) -> list[int]:
    return [r * table.num_rows // 10**6 for r in rows]


# -- trips ---------------------------------------------------------------------------------------
TIME_ZONES = {TRIP_VIN: "Europe/Berlin"}
TRIP_TABLES = {"odometer": FLEET, "no_odometer": FLEET.drop_columns([ODOMETER])}
BATCH_TRIPS = {k: segment_trips(t, time_zones=TIME_ZONES) for k, t in TRIP_TABLES.items()}


def _segmenter() -> TripSegmenter:
    return TripSegmenter(time_zones=TIME_ZONES)


def _trip_key(t: Trip) -> tuple[str, int]:
    return t.vin, t.start_ms


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(sorted(TRIP_TABLES)), _rows, _crash_rows)
def test_trips_survive_crashes_anywhere(name: str, cuts: list[int], crashes: list[int]) -> None:
    table = TRIP_TABLES[name]
    batches, crash_at = _batches(table, _scaled(cuts, table), _scaled(crashes, table))
    trips = _run_with_crashes(
        _segmenter, batches, crash_at, TripSegmenter.update, TripSegmenter.flush
    )
    assert sorted(trips, key=_trip_key) == BATCH_TRIPS[name]
    assert len(BATCH_TRIPS[name]) == 4


@pytest.mark.parametrize("rows", [1, 700, 1500, 2500, FLEET.num_rows])
def test_trip_state_round_trip_and_errors(rows: int) -> None:
    segmenter = _segmenter()
    segmenter.update(FLEET.slice(0, rows))
    states = segmenter.export_state(segmenter.state_vins())
    assert set(states) == set(_vins(FLEET.slice(0, rows)))
    _check_round_trip(_segmenter, states)
    segmenter.flush()
    _check_round_trip(_segmenter, segmenter.export_state(segmenter.state_vins()))
    vin, data = next(iter(states.items()))
    assert msgspec.msgpack.decode(data)[:3] == ["trips", TRIP_STATE_VERSION, vin]
    _check_format_errors(_segmenter, vin, data)
    segmenter.forget([vin])
    assert vin not in segmenter.state_vins()


# -- events --------------------------------------------------------------------------------------
BATCH_EVENTS = detect_events(TRACES)


def _event_key(e: DrivingEvent) -> tuple[str, int, str]:
    return e.vin, e.start_ms, e.type


@settings(max_examples=40, deadline=None)
@given(_rows, _crash_rows)
def test_events_survive_crashes_anywhere(cuts: list[int], crashes: list[int]) -> None:
    batches, crash_at = _batches(TRACES, _scaled(cuts, TRACES), _scaled(crashes, TRACES))
    events = _run_with_crashes(
        EventDetector, batches, crash_at, EventDetector.update, EventDetector.flush
    )
    assert sorted(events, key=_event_key) == BATCH_EVENTS
    assert len(BATCH_EVENTS) >= 5


def test_repeat_suppression_survives_a_crash() -> None:
    a = _quiet()
    a[100:103] = -4.0
    a[140:143] = -4.0  # 40 s after the first: a repeat, suppressed only if the restart knows
    a[200:203] = -4.0
    table = braking_table(a)
    batches, crash_at = _batches(table, [], [120])
    events = _run_with_crashes(
        EventDetector, batches, crash_at, EventDetector.update, EventDetector.flush
    )
    assert [e.start_ms for e in events] == [100_000, 200_000]


@pytest.mark.parametrize("rows", [1, 150, 700, TRACES.num_rows])
def test_event_state_round_trip_and_errors(rows: int) -> None:
    detector = EventDetector()
    detector.update(TRACES.slice(0, rows))
    states = detector.export_state(detector.state_vins())
    assert set(states) == set(_vins(TRACES.slice(0, rows)))
    _check_round_trip(EventDetector, states)
    detector.flush()
    _check_round_trip(EventDetector, detector.export_state(detector.state_vins()))
    vin, data = next(iter(states.items()))
    assert msgspec.msgpack.decode(data)[:3] == ["events", EVENT_STATE_VERSION, vin]
    _check_format_errors(EventDetector, vin, data)
    detector.forget([vin])
    assert vin not in detector.state_vins()


# -- battery -------------------------------------------------------------------------------------
_FLEET, _SPECS, _ = simulate_table(5, 2, 3.0, sample_interval_s=60.0)
BATTERY_FLEET = _by_time(pa.concat_tables([BATTERY_TRACE, _FLEET], promote_options="default"))
BATTERY_SPECS = {BATTERY_VIN: SPEC, **_SPECS}
_WHOLE = BatteryHealthTracker(BATTERY_SPECS)
WHOLE_CLOSED = _WHOLE.update(BATTERY_FLEET)
WHOLE_REPORTS = _WHOLE.reports()


def _tracker() -> BatteryHealthTracker:
    return BatteryHealthTracker(BATTERY_SPECS)


def _closed(tracker: BatteryHealthTracker, table: pa.Table) -> list[tuple[str, ChargeSession]]:
    return [(vin, s) for vin, sessions in tracker.update(table).items() for s in sessions]


def _reports(tracker: BatteryHealthTracker) -> list[Any]:
    return [tracker.reports()]


@settings(max_examples=30, deadline=None)
@given(_rows, _crash_rows)
def test_battery_survives_crashes_anywhere(cuts: list[int], crashes: list[int]) -> None:
    table = BATTERY_FLEET
    batches, crash_at = _batches(table, _scaled(cuts, table), _scaled(crashes, table))
    *closed, reports = _run_with_crashes(_tracker, batches, crash_at, _closed, _reports)
    assert reports == WHOLE_REPORTS
    per_vin: dict[str, list[ChargeSession]] = {}
    for vin, session in closed:
        per_vin.setdefault(vin, []).append(session)
    assert per_vin == WHOLE_CLOSED
    assert len(WHOLE_REPORTS) == 3 and WHOLE_REPORTS[BATTERY_VIN].sessions_detected == 4


@pytest.mark.parametrize("rows", [1, 400, 1500, BATTERY_FLEET.num_rows])
def test_battery_state_round_trip_and_errors(rows: int) -> None:
    tracker = _tracker()
    tracker.update(BATTERY_FLEET.slice(0, rows))
    states = tracker.export_state(tracker.state_vins())
    assert set(states) == set(_vins(BATTERY_FLEET.slice(0, rows)))
    _check_round_trip(_tracker, states)
    vin, data = next(iter(states.items()))
    assert msgspec.msgpack.decode(data)[:3] == ["battery", BATTERY_STATE_VERSION, vin]
    _check_format_errors(_tracker, vin, data)
    single = BatteryHealthState.from_bytes(vin, BATTERY_SPECS[vin], data)
    assert single.to_bytes() == data
    assert single.report() == tracker.states[vin].report()
    tracker.forget([vin])
    assert vin not in tracker.state_vins()


def test_battery_deep_discharge_and_dropped_counts_survive_a_crash() -> None:
    up = 0.75 * NOMINAL_AH * 0.9 / 30 * 3600
    down = 0.9 * NOMINAL_AH * 0.9 / 60 * 3600
    table = battery_trace(
        [("ac", up, 30), ("rest", 7200, 0), ("drive", down, 60), ("rest", 1800, 0),
         ("ac", up / 10, 30), ("drive", down / 10, 60), ("rest", 600, 0)],
        temp_c=42.0,
    )  # fmt: skip
    for k in range(1, table.num_rows, 23):
        # The middle batch repeats old samples: dropped and counted per vehicle.
        batches = [table.slice(0, k), table.slice(max(0, k - 40), 40), table.slice(k)]
        whole = _run_with_crashes(_tracker, batches, set(), _closed, _reports)
        assert _run_with_crashes(_tracker, batches, {2}, _closed, _reports) == whole
    [reports] = whole[-1:]
    assert reports[BATTERY_VIN].stress.deep_discharges == 1
    assert reports[BATTERY_VIN].dropped_samples == 40


def test_battery_restore_skips_vehicles_without_a_spec() -> None:
    tracker = _tracker()
    tracker.update(BATTERY_TRACE)
    states = tracker.export_state([BATTERY_VIN])
    untracked = BatteryHealthTracker(lambda vin: None)
    untracked.restore_state(states)
    assert untracked.state_vins() == []


def test_session_state_mirrors_charge_session() -> None:
    names = tuple(f.name for f in dataclasses.fields(ChargeSession))
    assert _SessionState.__struct_fields__ == names
