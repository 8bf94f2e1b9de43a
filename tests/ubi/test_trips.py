"""Trip segmentation on constructed traces with known answers, and streaming == batch."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ubi.trips import GEAR, LV_STATE, ODOMETER, SPEED, TripConfig, TripSegmenter, segment_trips

VIN = "WVWZZZ1JZXW000001"
T0 = int(dt.datetime(2024, 3, 4, 21, 30, tzinfo=dt.UTC).timestamp() * 1000)


def _phase(state: str, gear: int, speeds: list[float]) -> list[tuple[str, int, float]]:
    return [(state, gear, s) for s in speeds]


def _table(rows: list[tuple[str, int, float]], *, vin: str = VIN, t0: int = T0) -> pa.Table:
    """1 Hz samples; the odometer integrates speed (floor to metres, like the simulator)."""
    speed = np.array([r[2] for r in rows])
    odo = 10_000 + np.concatenate(([0.0], np.cumsum((speed[:-1] + speed[1:]) / 2 / 3.6)))
    return pa.table(
        {
            "vin": pa.array([vin] * len(rows)),
            "ts": pa.array(t0 + 1000 * np.arange(len(rows)), pa.timestamp("ms", tz="UTC")),
            SPEED: pa.array(speed),
            ODOMETER: pa.array(np.floor(odo).astype(np.int64)),
            LV_STATE: pa.array([r[0] for r in rows]),
            GEAR: pa.array([r[1] for r in rows], pa.int64()),
        }
    )


def _commute() -> list[tuple[str, int, float]]:
    """Parked 10 min; trip 1: 20 s idle, 300 s at 36 km/h, a 90 s red light, 300 s at
    54 km/h, 10 s idle; parked 20 min; trip 2: 200 s at 140 km/h, then parked 10 min."""
    up = list(np.linspace(0, 36, 10))
    down = list(np.linspace(36, 0, 10))
    return [
        *_phase("OFF", 0, [0.0] * 600),
        *_phase("ON", 0, [0.0] * 20),
        *_phase("ON", 1, up + [36.0] * 300 + down),
        *_phase("ON", 1, [0.0] * 90),  # red light: ignition on, gear engaged, standing
        *_phase("ON", 1, [54.0] * 300),
        *_phase("ON", 0, [0.0] * 10),
        *_phase("OFF", 0, [0.0] * 1200),
        *_phase("ON", 3, [140.0] * 200),
        *_phase("OFF", 0, [0.0] * 600),
    ]


def test_red_light_does_not_split_and_parking_does() -> None:
    trips = segment_trips(_table(_commute()))
    assert len(trips) == 2
    first, second = trips
    assert first.start_ms == T0 + 600_000
    assert first.duration_s == pytest.approx(20 + 10 + 300 + 10 + 90 + 300 + 10 - 1, abs=1)
    assert first.distance_m == pytest.approx(300 * 10 + 300 * 15 + 100, abs=15)
    assert first.distance_source == "odometer"
    # idle: 20 s before setting off, the red light and 10 s after arriving (+ ramp ends)
    assert first.idle_s == pytest.approx(20 + 90 + 10, abs=3)
    assert first.speeding_s == 0.0
    assert second.speeding_share == pytest.approx(1.0)
    assert second.speed_limit_source == "fallback"


def test_short_engine_off_stop_keeps_trip_open() -> None:
    rows = [
        *_phase("ON", 1, [50.0] * 120),
        *_phase("OFF", 0, [0.0] * 120),  # 2 min fuel stop < 5 min pause
        *_phase("ON", 1, [50.0] * 120),
        *_phase("OFF", 0, [0.0] * 400),
    ]
    trips = segment_trips(_table(rows))
    assert len(trips) == 1
    assert trips[0].idle_s == pytest.approx(120, abs=2)
    assert len(segment_trips(_table(rows), config=TripConfig(end_after_s=60))) == 2


def test_local_time_and_night_share() -> None:
    # 21:30 UTC = 22:30 in Berlin (CET): the first trip starts 22:40 and the 2nd after 23:00.
    trips = segment_trips(_table(_commute()), time_zones={VIN: "Europe/Berlin"})
    first, second = trips
    assert first.start_local == "2024-03-04T22:40:00+01:00"
    assert first.night_share == 0.0
    assert second.start_local.startswith("2024-03-04T23:")
    assert second.night_share == pytest.approx(1.0)
    # The same trip in UTC is evening, not night.
    assert segment_trips(_table(_commute()))[1].night_share == 0.0


def test_posted_limit_is_used_when_present() -> None:
    table = _table(_commute())
    limit = np.where(np.asarray(table[SPEED]) > 100, 120.0, 50.0)
    table = table.append_column("Vehicle.PostedSpeedLimit", pa.array(limit))
    trips = segment_trips(table, config=TripConfig(speed_limit_column="Vehicle.PostedSpeedLimit"))
    assert trips[0].speeding_share == pytest.approx(300 / 620, abs=0.02)  # the 54 km/h part
    assert trips[1].speeding_share == pytest.approx(1.0)
    assert trips[1].speed_limit_source == "posted"


def test_without_odometer_distance_is_speed_integral() -> None:
    table = _table(_commute()).drop_columns([ODOMETER])
    first = segment_trips(table)[0]
    assert first.distance_source == "speed"
    assert first.distance_m == pytest.approx(7600, abs=15)


def test_manoeuvring_is_not_a_trip() -> None:
    rows = [*_phase("ON", 1, [5.0] * 10), *_phase("OFF", 0, [0.0] * 400)]
    assert segment_trips(_table(rows)) == []


def _fleet_table() -> pa.Table:
    a = _table(_commute())
    b = _table(_commute()[500:2600], vin="VIN000000000000B2", t0=T0 + 7_000)
    merged = pa.concat_tables([a, b])
    # Interleave the vehicles by time, as a Kafka partition would.
    order = np.argsort(np.asarray(merged["ts"].cast(pa.int64())), kind="stable")
    return merged.take(pa.array(order))


FLEET = _fleet_table()
BATCH_TRIPS = segment_trips(FLEET, time_zones={VIN: "Europe/Berlin"})


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, FLEET.num_rows), max_size=12))
def test_streaming_equals_batch_for_any_split(cuts: list[int]) -> None:
    edges = [0, *sorted(cuts), FLEET.num_rows]
    segmenter = TripSegmenter(time_zones={VIN: "Europe/Berlin"})
    streamed = []
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        streamed.extend(segmenter.update(FLEET.slice(lo, hi - lo)))
    streamed.extend(segmenter.flush())
    assert sorted(streamed, key=lambda t: (t.vin, t.start_ms)) == BATCH_TRIPS
    assert len(BATCH_TRIPS) == 4
