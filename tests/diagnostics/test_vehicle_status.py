"""A vehicle's last known position and odometer: the per-VIN reduction of telemetry tables, the
upsert that never moves a stored status back in event time, and the diagnostics worker keeping
it up to date from the broker."""

from __future__ import annotations

import asyncio
import math
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.engine import Engine

from core.config import Settings
from core.db import make_engine, session_scope
from core.signals import CATALOG
from core.telemetry import TelemetryMessage
from core.vehicles import repository
from core.vehicles.status import (
    LATITUDE,
    LONGITUDE,
    ODOMETER,
    StatusUpdate,
    latest_status,
    merge,
)
from core.workers import build_runner
from ingestion.archive import archive_schema
from simulator.delivery import SimConfig
from simulator.fleet import make_fleet
from simulator.runner import iter_messages
from tests.helpers import new_vin, publish_messages

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)
_SCHEMA = archive_schema(CATALOG)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def samples(rows: list[dict[str, Any]], columns: tuple[str, ...] | None = None) -> pa.Table:
    """A table in the archive's schema (only ``columns``); ``ts`` is seconds after T0."""
    names = columns or ("vin", "ts", LATITUDE, LONGITUDE, ODOMETER)
    data: dict[str, list[Any]] = {name: [row.get(name) for row in rows] for name in names}
    data["ts"] = [at(row["ts"]) for row in rows]
    return pa.table(data, schema=pa.schema([_SCHEMA.field(name) for name in names]))


def position(ts: float, lat: float, lon: float) -> StatusUpdate:
    return StatusUpdate(position_ts=at(ts), latitude=lat, longitude=lon)


def odometer(ts: float, metres: float) -> StatusUpdate:
    return StatusUpdate(odometer_ts=at(ts), odometer_m=metres)


# -- latest_status ----------------------------------------------------------------------------


def test_the_newest_sample_by_event_time_wins_per_vehicle() -> None:
    table = samples(
        [  # arrival order is not event order
            {"vin": "A", "ts": 20, LATITUDE: 48.2, LONGITUDE: 11.2, ODOMETER: 1200},
            {"vin": "B", "ts": 5, LATITUDE: 52.5, LONGITUDE: 13.4, ODOMETER: 900},
            {"vin": "A", "ts": 30, LATITUDE: 48.3, LONGITUDE: 11.3, ODOMETER: 1300},
            {"vin": "A", "ts": 10, LATITUDE: 48.1, LONGITUDE: 11.1, ODOMETER: 1100},
            {"vin": "B", "ts": 3, LATITUDE: 52.4, LONGITUDE: 13.3, ODOMETER: 800},
        ]
    )
    assert latest_status(table) == {
        "A": StatusUpdate(at(30), 48.3, 11.3, at(30), 1300.0),
        "B": StatusUpdate(at(5), 52.5, 13.4, at(5), 900.0),
    }


def test_invalid_positions_are_skipped() -> None:
    table = samples(
        [
            {"vin": "A", "ts": 1, LATITUDE: 48.1, LONGITUDE: 11.1},
            {"vin": "A", "ts": 2, LATITUDE: math.nan, LONGITUDE: 11.2},
            {"vin": "A", "ts": 3, LATITUDE: 48.3, LONGITUDE: math.inf},
            {"vin": "A", "ts": 4, LATITUDE: 90.5, LONGITUDE: 11.4},
            {"vin": "A", "ts": 5, LATITUDE: 48.5, LONGITUDE: -180.5},
            {"vin": "A", "ts": 6, LATITUDE: 48.6, LONGITUDE: None},  # one coordinate only
            {"vin": "A", "ts": 7, LATITUDE: None, LONGITUDE: None},
            {"vin": "B", "ts": 9, LATITUDE: math.nan, LONGITUDE: math.nan},
        ]
    )
    assert latest_status(table) == {"A": position(1, 48.1, 11.1)}


def test_the_range_limits_themselves_are_valid_positions() -> None:
    table = samples([{"vin": "A", "ts": 1, LATITUDE: -90.0, LONGITUDE: 180.0}])
    assert latest_status(table) == {"A": position(1, -90.0, 180.0)}


def test_odometer_and_position_are_independent() -> None:
    table = samples(
        [
            {"vin": "A", "ts": 1, LATITUDE: 48.1, LONGITUDE: 11.1, ODOMETER: 100},
            {"vin": "A", "ts": 2, ODOMETER: 150},  # in a tunnel: no fix
            {"vin": "A", "ts": 3, LATITUDE: 48.3, LONGITUDE: 11.3},  # odometer not sent
            {"vin": "A", "ts": 4, LATITUDE: math.nan, LONGITUDE: 11.4, ODOMETER: 170},
        ]
    )
    assert latest_status(table) == {"A": StatusUpdate(at(3), 48.3, 11.3, at(4), 170.0)}


def test_a_vehicle_without_gnss_columns_still_reports_its_odometer() -> None:
    table = samples(
        [{"vin": "A", "ts": 1, ODOMETER: 100}, {"vin": "A", "ts": 2, ODOMETER: 120}],
        columns=("vin", "ts", ODOMETER),
    )
    assert latest_status(table) == {"A": odometer(2, 120.0)}


def test_a_table_without_odometer_column_still_reports_positions() -> None:
    table = samples(
        [{"vin": "A", "ts": 1, LATITUDE: 48.1, LONGITUDE: 11.1}],
        columns=("vin", "ts", LATITUDE, LONGITUDE),
    )
    assert latest_status(table) == {"A": position(1, 48.1, 11.1)}


def test_tables_with_nothing_to_report() -> None:
    assert latest_status(samples([])) == {}
    assert latest_status(samples([{"vin": "A", "ts": 1}], columns=("vin", "ts"))) == {}
    only_latitude = samples(
        [{"vin": "A", "ts": 1, LATITUDE: 48.1}], columns=("vin", "ts", LATITUDE)
    )
    assert latest_status(only_latitude) == {}


def test_a_table_in_several_chunks() -> None:
    older = samples([{"vin": "A", "ts": 1, LATITUDE: 1.0, LONGITUDE: 1.0, ODOMETER: 10}])
    newer = samples([{"vin": "A", "ts": 2, LATITUDE: 2.0, LONGITUDE: 2.0, ODOMETER: 20}])
    table = pa.concat_tables([newer, older, samples([])])
    assert table["vin"].num_chunks == 3
    assert latest_status(table) == {"A": StatusUpdate(at(2), 2.0, 2.0, at(2), 20.0)}


def test_on_equal_event_times_the_later_row_wins() -> None:
    table = samples(
        [
            {"vin": "A", "ts": 1, LATITUDE: 1.0, LONGITUDE: 1.0},
            {"vin": "A", "ts": 1, LATITUDE: 2.0, LONGITUDE: 2.0},
        ]
    )
    assert latest_status(table) == {"A": position(1, 2.0, 2.0)}


_coordinate = st.one_of(
    st.none(), st.floats(allow_nan=True, allow_infinity=True), st.floats(-200, 200)
)
_rows = st.lists(
    st.fixed_dictionaries(
        {
            "vin": st.sampled_from(["A", "B", "C"]),
            "ts": st.integers(0, 10_000),  # distinct below, so "newest" is unambiguous
            LATITUDE: _coordinate,
            LONGITUDE: _coordinate,
            ODOMETER: st.one_of(st.none(), st.integers(0, 2**32 - 1)),
        }
    ),
    max_size=40,
    unique_by=lambda row: row["ts"],
)


@given(_rows)
def test_latest_status_agrees_with_a_row_by_row_reference(rows: list[dict[str, Any]]) -> None:
    def valid(value: float | None, limit: float) -> bool:
        return value is not None and math.isfinite(value) and -limit <= value <= limit

    expected: dict[str, StatusUpdate] = {}
    for row in sorted(rows, key=lambda r: r["ts"]):
        update = StatusUpdate()
        if valid(row[LATITUDE], 90) and valid(row[LONGITUDE], 180):
            update = position(row["ts"], row[LATITUDE], row[LONGITUDE])
        if row[ODOMETER] is not None:
            update = merge(update, odometer(row["ts"], float(row[ODOMETER])))
        if update != StatusUpdate():
            expected[row["vin"]] = merge(expected.get(row["vin"], StatusUpdate()), update)
    assert latest_status(samples(rows)) == expected


# -- merge ------------------------------------------------------------------------------------


def test_merge_keeps_the_newer_reading_per_field_group() -> None:
    stored = StatusUpdate(at(10), 48.1, 11.1, at(10), 1000.0)
    late = StatusUpdate(at(5), 47.0, 10.0, at(20), 1500.0)  # old position, new odometer
    assert merge(stored, late) == StatusUpdate(at(10), 48.1, 11.1, at(20), 1500.0)
    # Which one arrived first does not matter.
    assert merge(late, stored) == merge(stored, late)


def test_merge_keeps_a_group_the_newer_update_lacks() -> None:
    assert merge(position(1, 1.0, 1.0), odometer(2, 5.0)) == StatusUpdate(
        at(1), 1.0, 1.0, at(2), 5.0
    )
    assert merge(odometer(2, 5.0), StatusUpdate()) == odometer(2, 5.0)


def test_merge_prefers_the_later_arrival_on_equal_event_times() -> None:
    assert merge(position(1, 1.0, 1.0), position(1, 2.0, 2.0)) == position(1, 2.0, 2.0)


# -- the database -----------------------------------------------------------------------------


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(Settings(database_url=db_url, environment="test"))
    yield engine
    engine.dispose()


def stored(engine: Engine, vin: str) -> StatusUpdate | None:
    with session_scope(engine) as session:
        row = repository.get_vehicle_status(session, vin)
    if row is None:
        return None
    return StatusUpdate(
        row.position_ts, row.latitude, row.longitude, row.odometer_ts, row.odometer_m
    )


def upsert(engine: Engine, updates: dict[str, StatusUpdate], now: datetime) -> None:
    with session_scope(engine) as session:
        repository.upsert_vehicle_status(session, updates, now)


def updated_at(engine: Engine, vin: str) -> datetime:
    with session_scope(engine) as session:
        row = repository.get_vehicle_status(session, vin)
    assert row is not None
    return row.updated_at


def test_an_older_update_never_overwrites_a_newer_stored_one(engine: Engine) -> None:
    vin = new_vin()
    assert stored(engine, vin) is None
    upsert(engine, {vin: StatusUpdate(at(10), 48.1, 11.1, at(10), 1000.0)}, now=at(100))
    assert stored(engine, vin) == StatusUpdate(at(10), 48.1, 11.1, at(10), 1000.0)

    # A late batch: older position, newer odometer. Only the odometer moves.
    upsert(engine, {vin: StatusUpdate(at(5), 47.0, 10.0, at(20), 1500.0)}, now=at(200))
    assert stored(engine, vin) == StatusUpdate(at(10), 48.1, 11.1, at(20), 1500.0)
    assert updated_at(engine, vin) == at(200)

    # A replay of old data changes nothing, not even updated_at.
    upsert(engine, {vin: StatusUpdate(at(1), 1.0, 1.0, at(1), 1.0)}, now=at(300))
    assert stored(engine, vin) == StatusUpdate(at(10), 48.1, 11.1, at(20), 1500.0)
    assert updated_at(engine, vin) == at(200)

    # A group missing from the update is kept; a newer one replaces.
    upsert(engine, {vin: position(30, 48.3, 11.3)}, now=at(400))
    assert stored(engine, vin) == StatusUpdate(at(30), 48.3, 11.3, at(20), 1500.0)


def test_a_vehicle_first_seen_without_gnss_gets_its_position_later(engine: Engine) -> None:
    vin = new_vin()
    upsert(engine, {vin: odometer(10, 1000.0)}, now=at(100))
    assert stored(engine, vin) == odometer(10, 1000.0)
    upsert(engine, {vin: position(5, 48.1, 11.1)}, now=at(200))
    assert stored(engine, vin) == StatusUpdate(at(5), 48.1, 11.1, at(10), 1000.0)


def test_many_vehicles_in_one_call(engine: Engine) -> None:
    fleet = {new_vin(): position(i, 48.0, i / 100) for i in range(repository.CHUNK_SIZE + 20)}
    upsert(engine, fleet, now=at(100))
    older = {vin: position(-1, 0.0, 0.0) for vin in fleet}
    upsert(engine, older, now=at(200))
    for vin in [*fleet][:: repository.CHUNK_SIZE // 4]:
        assert stored(engine, vin) == fleet[vin]


def test_a_concurrent_older_write_waits_and_keeps_the_newer_one(engine: Engine) -> None:
    """A writer holding the newer status uncommitted while another one writes an older status:
    whichever commits last, the newer status stays (no read-then-write race)."""
    vin = new_vin()
    newer = StatusUpdate(at(20), 48.2, 11.2, at(20), 2000.0)
    older = StatusUpdate(at(10), 48.1, 11.1, at(10), 1000.0)
    errors: list[BaseException] = []

    def write_older() -> None:
        try:
            upsert(engine, {vin: older}, now=at(200))
        except BaseException as exc:  # surfaced in the main thread
            errors.append(exc)

    with session_scope(engine) as session:
        repository.upsert_vehicle_status(session, {vin: newer}, at(100))
        other = threading.Thread(target=write_older)
        other.start()
        other.join(timeout=0.5)
        assert other.is_alive(), "the second writer should wait for the row lock"
    other.join(timeout=30)
    assert not other.is_alive() and not errors, errors
    assert stored(engine, vin) == newer


# -- the worker on the broker -----------------------------------------------------------------


def reported(messages: list[TelemetryMessage], vin: str, pick: Any = max) -> StatusUpdate:
    """What the vehicle reported last (``pick=min``: first) by event time, from the messages."""
    sampled = [s for m in messages if m.vin == vin for s in m.samples]
    fix = pick(
        (s for s in sampled if LATITUDE in s.signals and LONGITUDE in s.signals), key=lambda s: s.ts
    )
    reading = pick((s for s in sampled if ODOMETER in s.signals), key=lambda s: s.ts)
    return StatusUpdate(
        position_ts=datetime.fromtimestamp(fix.ts / 1000, UTC),
        latitude=fix.signals[LATITUDE],
        longitude=fix.signals[LONGITUDE],
        odometer_ts=datetime.fromtimestamp(reading.ts / 1000, UTC),
        odometer_m=float(reading.signals[ODOMETER]),
    )


@pytest.mark.kafka
def test_the_worker_stores_each_vehicles_last_position_and_odometer(settings: Settings) -> None:
    # A checkpoint after every small batch, so the status is written many times over.
    settings = settings.model_copy(
        update={"diagnostics_checkpoint_s": 0.0, "consumer_max_records": 10}
    )
    fleet = make_fleet(2, seed=5, bev_share=0.5)
    day_s = 86_400.0
    start_ms = int((time.time() - day_s) * 1000)
    config = SimConfig(
        sample_interval_s=10.0, samples_per_message=10, parked_sample_interval_s=600.0
    )
    messages = list(iter_messages(fleet, start_ms, day_s - 60, seed=3, config=config))
    expected = {v.vin: reported(messages, v.vin) for v in fleet}
    first = {v.vin: reported(messages, v.vin, pick=min) for v in fleet}
    for vin, status in expected.items():  # they drove, so an old reading would show
        assert (first[vin].latitude, first[vin].longitude) != (status.latitude, status.longitude)
        assert first[vin].odometer_m != status.odometer_m

    group_id = f"status-{uuid.uuid4().hex[:8]}"
    asyncio.run(publish_messages(settings, messages))
    runner = build_runner(settings, "diagnostics", group_id=group_id)
    stats = asyncio.run(runner.run(until_idle_s=3.0))
    assert stats.consumed == len(messages)

    engine = make_engine(settings)
    try:
        for vin, status in expected.items():
            assert stored(engine, vin) == status

        # A vehicle back from a long outage delivers its first message of the day again: the
        # worker consumes it (a later checkpoint), and the stored status stays the newest.
        vin = fleet[0].vin
        late = next(m for m in messages if m.vin == vin)
        asyncio.run(publish_messages(settings, [late]))
        runner = build_runner(settings, "diagnostics", group_id=group_id)
        assert asyncio.run(runner.run(until_idle_s=3.0)).consumed == 1
        assert stored(engine, vin) == expected[vin]
    finally:
        engine.dispose()
