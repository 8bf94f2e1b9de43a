"""A vehicle's signal history and track from the Parquet archive (``GET /v1/vehicles/{vin}/
signals``): the window ends at the vehicle's newest sample, spans date partitions and opens no
others, series are bucket means, erased positions never show, and only operators and the
vehicle's owners may read it. The archive is written with the archive worker's own writer."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from core.app import create_app
from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from core.signals import CATALOG
from core.telemetry import decode
from core.vin import make_vin
from ingestion import history
from ingestion.archive import ParquetArchive, RowBuffer
from ingestion.history import (
    DEFAULT_SIGNALS,
    LATITUDE,
    LONGITUDE,
    SPEED,
    STATE_OF_CHARGE,
    bucket_means,
    track_points,
)
from simulator.vss import ALL_SIGNALS
from tests.helpers import encode, register_test_vehicle
from tests.ingestion.conftest import db_url  # noqa: F401 - the migrated database
from ubi.access import link_owner
from ubi.retention import data_files

NOWHERE = "127.0.0.1:1"  # no broker: these tests never touch Kafka
START = datetime(2026, 3, 1, 23, 19, 30, tzinfo=UTC)
STEP_S = 10
SAMPLES = 362  # 23:19:30 ... 00:19:40 the next day
NEWEST = START + timedelta(seconds=STEP_S * (SAMPLES - 1))
ERASED = range(100, 150)
"""Samples whose position retention erased (null latitude and longitude)."""
BATTERY_MAX_EVERY = 3
"""Only every third sample carries the hottest cell temperature."""
_offsets = itertools.count()
_VIN_ALPHABET = "ABCDEFGHJKLMNPRSTUVWXYZ0123456789"


def new_vin() -> str:
    """A VIN no earlier run registered (the database may be shared): a random VDS too."""
    vds = "".join(random.choices(_VIN_ALPHABET, k=5))
    return make_vin("WVW", vds, "N", "T", random.randrange(1_000_000))


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def signals_of(i: int) -> dict[str, Any]:
    values: dict[str, Any] = {SPEED: float(i), STATE_OF_CHARGE: 80.0 - i * 0.01}
    if i not in ERASED:
        values |= {LATITUDE: 48.0 + i * 1e-4, LONGITUDE: 11.0 + i * 1e-4}
    if i % BATTERY_MAX_EVERY == 0:
        values["Vehicle.Powertrain.TractionBattery.Temperature.Max"] = 20.0 + i
    return values


def write(
    archive: ParquetArchive, vin: str, samples: list[tuple[datetime, dict[str, Any]]]
) -> None:
    """One roll through the archive worker's writer (messages of up to 100 samples)."""
    buffer = RowBuffer()
    for start in range(0, len(samples), 100):
        chunk = samples[start : start + 100]
        payload = {
            "vin": vin,
            "message_id": f"{vin}-{uuid.uuid4().hex[:8]}",
            "seq": start,
            "samples": [{"ts": ms(ts), "signals": values} for ts, values in chunk],
        }
        buffer.add(
            decode(encode(payload)),
            topic="telemetry",
            partition=0,
            offset=next(_offsets),
            received_at=None,
            catalog=CATALOG,
            size=1,
        )
    archive.write_roll(buffer)


class World:
    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.vin, self.other, self.empty = new_vin(), new_vin(), new_vin()
        for vin in (self.vin, self.other, self.empty):
            register_test_vehicle(settings, vin)
        self.operator = self.token("fleet_operator")
        self.owner = self.token("owner", owns=self.vin)
        self.stranger = self.token("owner", owns=self.other)
        self.vehicle_token = self.token("vehicle", vin=self.vin)

    def token(self, role: str, *, owns: str | None = None, vin: str | None = None) -> str:
        engine = make_engine(self.settings)
        name = f"{role}-{uuid.uuid4().hex[:10]}"
        try:
            with session_scope(engine) as session:
                _, token = create_principal_with_credential(session, name, role, vin=vin)
                if owns is not None:
                    link_owner(session, owns, name)
        finally:
            engine.dispose()
        return token

    def get(self, vin: str, token: str | None = None, **params: Any) -> Any:
        headers = {"Authorization": f"Bearer {token or self.operator}"}
        return self.client.get(f"/v1/vehicles/{vin}/signals", params=params, headers=headers)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, db_url: str) -> Iterator[World]:  # noqa: F811
    tmp = tmp_path_factory.mktemp("history")
    settings = Settings(
        environment="test",
        data_dir=tmp,
        database_url=db_url,
        kafka_bootstrap_servers=NOWHERE,
    )
    archive = ParquetArchive(settings.archive_location)
    with TestClient(create_app(settings)) as client:
        world = World(client, settings)
        samples = [(START + timedelta(seconds=STEP_S * i), signals_of(i)) for i in range(SAMPLES)]
        write(archive, world.vin, samples[:200])  # one roll crosses midnight: two partitions
        write(archive, world.vin, samples[200:])
        earlier = datetime(2026, 3, 1, 10, tzinfo=UTC)  # same partition, hours before the window
        write(archive, world.vin, [(earlier, {SPEED: 999.0})])
        # Another vehicle's newer data: the window follows each vehicle's own newest sample.
        write(archive, world.other, [(datetime(2026, 3, 5, 8, tzinfo=UTC), {SPEED: 5.0})])
        # An older partition that no window of the vehicle overlaps.
        write(archive, world.other, [(datetime(2026, 2, 20, 8, tzinfo=UTC), {SPEED: 7.0})])
        yield world


def expected_buckets(
    samples: list[tuple[int, float]], start_ms: int, end_ms: int, max_points: int
) -> list[tuple[int, float]]:
    """The documented rule: ``max_points`` equal buckets over the window; mean time, mean value."""
    width = math.ceil((end_ms - start_ms + 1) / max_points)
    buckets: dict[int, list[tuple[int, float]]] = defaultdict(list)
    for t, v in samples:
        buckets[(t - start_ms) // width].append((t, v))
    return [
        (
            math.floor(sum(t for t, _ in members) / len(members)),
            sum(v for _, v in members) / len(members),
        )
        for _, members in sorted(buckets.items())
    ]


# -- pure functions -------------------------------------------------------------------------------


def test_bucket_means_average_values_and_times_per_bucket() -> None:
    times = pa.array([i * 1000 for i in range(12)], pa.int64())
    values = pa.array([float(i) for i in range(12)])
    points = bucket_means(times, values, 0, 11_999, 4)  # buckets of 3 s
    assert points == [(1000, 1.0), (4000, 4.0), (7000, 7.0), (10000, 10.0)]


def test_bucket_means_keep_a_series_that_fits_and_skip_missing_values() -> None:
    times = pa.array([0, 1000, 2000, 3000], pa.int64())
    values = pa.array([1, None, 3, 4], pa.int64())  # an integer signal; one sample without it
    assert bucket_means(times, values, 0, 3000, 10) == [(0, 1.0), (2000, 3.0), (3000, 4.0)]
    assert bucket_means(times, pa.nulls(4, pa.float64()), 0, 3000, 10) == []


def test_track_drops_erased_positions_and_keeps_first_last_and_order() -> None:
    n = 50
    times = pa.array(range(n), pa.int64())
    lat = pa.array([None if i % 5 == 0 else float(i) for i in range(n)], pa.float64())
    lon = pa.array([float(-i) for i in range(n)], pa.float64())
    everything = track_points(times, lat, lon, 1000)
    assert [t for t, _, _ in everything] == [i for i in range(n) if i % 5]
    few = track_points(times, lat, lon, 10)
    assert len(few) == 10
    assert few[0] == everything[0] and few[-1] == everything[-1]
    assert [t for t, _, _ in few] == sorted({t for t, _, _ in few})
    assert all(lat_ == float(t) and lon_ == float(-t) for t, lat_, lon_ in few)  # real fixes


def test_default_signals_are_numeric_catalog_signals_the_simulator_sends() -> None:
    for name in DEFAULT_SIGNALS:
        assert CATALOG[name].kind in ("float", "int")
        assert name in ALL_SIGNALS


# -- the endpoint ---------------------------------------------------------------------------------


def test_window_ends_at_the_newest_sample_and_spans_two_partitions(world: World) -> None:
    response = world.get(world.vin, minutes=60, max_points=2000)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["vin"] == world.vin
    assert datetime.fromisoformat(body["to"]) == NEWEST
    assert datetime.fromisoformat(body["from"]) == NEWEST - timedelta(minutes=60)
    # 23:19:30 is 10 s before the window (23:19:40 is its first instant), and the 10:00
    # sample hours before it.
    assert body["rows"] == SAMPLES - 1
    assert set(body["signals"]) == set(DEFAULT_SIGNALS)
    speed = body["signals"][SPEED]
    assert speed["unit"] == "km/h"
    # Everything fits: the samples as stored, from both days.
    assert speed["points"] == [[ms(START) + STEP_S * 1000 * i, float(i)] for i in range(1, SAMPLES)]
    assert body["signals"][STATE_OF_CHARGE]["unit"] == "percent"
    battery_max = body["signals"]["Vehicle.Powertrain.TractionBattery.Temperature.Max"]["points"]
    assert [v for _, v in battery_max] == [
        20.0 + i for i in range(1, SAMPLES) if i % BATTERY_MAX_EVERY == 0
    ]
    assert body["signals"]["Vehicle.Exterior.AirTemperature"] == {"unit": "Celsius", "points": []}


def test_series_are_downsampled_to_bucket_means(world: World) -> None:
    body = world.get(world.vin, minutes=60, max_points=25, signal=[SPEED, STATE_OF_CHARGE]).json()
    assert set(body["signals"]) == {SPEED, STATE_OF_CHARGE}
    start_ms, end_ms = ms(NEWEST - timedelta(minutes=60)), ms(NEWEST)
    stored = [(ms(START) + STEP_S * 1000 * i, i) for i in range(1, SAMPLES)]
    speed = expected_buckets([(t, float(i)) for t, i in stored], start_ms, end_ms, 25)
    soc = expected_buckets([(t, 80.0 - i * 0.01) for t, i in stored], start_ms, end_ms, 25)
    assert len(speed) == 25  # the samples fill every bucket
    assert [tuple(p) for p in body["signals"][SPEED]["points"]] == speed
    points = body["signals"][STATE_OF_CHARGE]["points"]
    assert [p[0] for p in points] == [t for t, _ in soc]
    assert [p[1] for p in points] == pytest.approx([v for _, v in soc])


def test_a_shorter_window_reads_only_the_newest_samples(world: World) -> None:
    body = world.get(world.vin, minutes=5, max_points=2000, signal=SPEED).json()
    assert body["rows"] == 31  # 00:14:40 ... 00:19:40, both ends included
    assert body["signals"][SPEED]["points"][0] == [ms(NEWEST - timedelta(minutes=5)), 331.0]


def test_track_leaves_out_erased_positions(world: World) -> None:
    body = world.get(world.vin, minutes=60, max_points=2000, signal=SPEED).json()
    track = body["track"]
    positioned = [i for i in range(1, SAMPLES) if i not in ERASED]
    assert [t for t, _, _ in track] == [ms(START) + STEP_S * 1000 * i for i in positioned]
    assert track[0][1:] == [48.0 + 1e-4, 11.0 + 1e-4]
    few = world.get(world.vin, minutes=60, max_points=10, signal=SPEED).json()["track"]
    assert len(few) == 10
    assert few[0] == track[0] and few[-1] == track[-1]
    assert [t for t, _, _ in few] == sorted(t for t, _, _ in few)


@pytest.fixture
def opened(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The days of the partitions the history reader lists, in order."""
    days: list[str] = []

    def listing(fs: Any, partition: str) -> list[str]:
        days.append(Path(partition).name.removeprefix("date="))
        return data_files(fs, partition)

    monkeypatch.setattr(history, "data_files", listing)
    return days


def test_only_the_partitions_needed_are_opened(world: World, opened: list[str]) -> None:
    assert world.get(world.vin, minutes=60, signal=SPEED).json()["rows"] == SAMPLES - 1
    # The newest sample: the other vehicle's newer day, then the vehicle's own newest day;
    # then the window's two days. Never 2026-02-20.
    assert opened == ["2026-03-05", "2026-03-02", "2026-03-01", "2026-03-02"]
    opened.clear()
    body = world.get(world.vin, minutes=10080, max_points=10, signal=SPEED).json()
    assert body["rows"] == SAMPLES + 1  # a week back reaches the 10:00 sample too...
    assert opened[2:] == ["2026-03-01", "2026-03-02"]  # ...and 2026-02-23, not 2026-02-20
    assert len(body["signals"][SPEED]["points"]) <= 10


def test_a_vehicle_without_archived_data(world: World) -> None:
    response = world.get(world.empty)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["from"] is None and body["to"] is None and body["rows"] == 0
    assert body["track"] == []
    assert all(series["points"] == [] for series in body["signals"].values())
    assert set(body["signals"]) == set(DEFAULT_SIGNALS)


def test_the_search_for_the_newest_sample_looks_back_a_bounded_number_of_days(
    world: World, opened: list[str]
) -> None:
    """Counted back from the archive's newest day (2026-03-05), whatever the wall clock says."""
    archive = ParquetArchive(world.settings.archive_location)

    def newest(vin: str, days: int | None) -> datetime | None:
        opened.clear()
        return history.signal_history(
            archive, vin, [SPEED], minutes=60, max_points=10, lookback_days=days
        ).to

    # A vehicle with no data opens only the partitions of the last `days` days.
    assert newest(world.empty, 1) is None and opened == ["2026-03-05"]
    assert newest(world.empty, 4) is None and opened == ["2026-03-05", "2026-03-02"]
    assert newest(world.empty, None) is None and len(opened) == 4  # the whole archive
    # Data older than the look-back is not found; inside it, it is.
    assert newest(world.vin, 3) is None
    assert newest(world.vin, 4) == NEWEST
    assert newest(world.other, 1) == datetime(2026, 3, 5, 8, tzinfo=UTC)
    assert world.settings.signals_lookback_days == 90  # the API's default reaches all of them
    assert world.get(world.vin).json()["to"] == NEWEST.isoformat().replace("+00:00", "Z")


def test_unknown_and_non_numeric_signals_are_refused_by_name(world: World) -> None:
    response = world.get(world.vin, signal=[SPEED, "Vehicle.NoSuchThing"])
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_failed"
    assert "Vehicle.NoSuchThing" in body["detail"][0]["msg"]
    response = world.get(world.vin, signal="Vehicle.LowVoltageSystemState")
    assert response.status_code == 422
    assert "Vehicle.LowVoltageSystemState" in response.json()["detail"][0]["msg"]
    assert world.get(world.vin, minutes=0).status_code == 422
    assert world.get(world.vin, minutes=10081).status_code == 422
    assert world.get(world.vin, max_points=9).status_code == 422


def test_owners_and_operators_only(world: World) -> None:
    mine = world.get(world.vin, world.owner, signal=SPEED)
    assert mine.status_code == 200 and mine.json()["rows"] > 0
    assert world.get(world.vin, world.stranger).status_code == 403
    assert world.get(world.vin, world.vehicle_token).status_code == 403
    assert world.client.get(f"/v1/vehicles/{world.vin}/signals").status_code == 401
    assert world.get(new_vin()).status_code == 404
