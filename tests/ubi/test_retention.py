"""Retention: location data in old archive partitions and old status positions is purged;
everything else stays exactly as it was, and a second run changes nothing."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlmodel import Session, col, select

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope
from core.signals import CATALOG, SignalSpec
from core.telemetry import decode
from core.vehicles.models import VehicleStatus
from ingestion.archive import DATASET_DIR, ParquetArchive, RowBuffer
from tests.helpers import encode, message, new_vin
from ubi import retention
from ubi.retention import LOCATION_COLUMNS, PURGED_ACTION, purge_locations

NOW = datetime(2001, 6, 1, 10, tzinfo=UTC)  # 90 days before: 2001-03-03 10:00
OLD = datetime(2001, 2, 1, 12, tzinfo=UTC)
RECENT = datetime(2001, 5, 20, 12, tzinfo=UTC)
LOCATION = {
    "Vehicle.CurrentLocation.Latitude": 52.52,
    "Vehicle.CurrentLocation.Longitude": 13.405,
    "Vehicle.CurrentLocation.Heading": 90.0,
    "Vehicle.CurrentLocation.Altitude": 34.0,
    "Vehicle.CurrentLocation.HorizontalAccuracy": 5.0,
}
PLAIN = {"Vehicle.Speed": 42.0, "Vehicle.TraveledDistance": 1000.0}


def write_roll(
    archive: ParquetArchive,
    rows: list[tuple[str, datetime, Mapping[str, Any]]],
    *,
    catalog: Mapping[str, SignalSpec] = CATALOG,
) -> list[Path]:
    """One roll with a 2-sample message per (vin, start, signals); returns its files."""
    buffer = RowBuffer()
    for offset, (vin, start, signals) in enumerate(rows):
        msg = decode(
            encode(
                message(
                    vin,
                    seq=offset,
                    samples=2,
                    message_id=f"{vin}-m{offset}",
                    ts_ms=int(start.timestamp() * 1000) + offset * 10_000,
                    signals=dict(signals),
                )
            )
        )
        buffer.add(
            msg, topic="t", partition=0, offset=offset, received_at=None, catalog=catalog, size=1
        )
    result = archive.write_roll(buffer)
    return [Path(archive.root) / rel for rel in result.files]


@pytest.fixture
def db_settings(tmp_path: Path, db_url: str) -> Settings:  # noqa: F811 - the fixture
    """A tmp archive and the session's migrated database; no Kafka."""
    return Settings(data_dir=tmp_path, database_url=db_url, environment="test")


def read(path: Path) -> pa.Table:
    return pq.ParquetFile(path).read()


def fingerprint(path: Path) -> tuple[int, bytes]:
    return os.stat(path).st_ino, path.read_bytes()


def last_seq(session: Session) -> int:
    latest = audit.list_events(session, limit=1)
    return latest[0].seq if latest else 0


def purge_events(session: Session, cutoff_date: str, after_seq: int) -> list[audit.AuditEvent]:
    """This test's purge events (the database may be shared with earlier runs)."""
    events = audit.list_events(session, action=PURGED_ACTION, limit=500)
    return [e for e in events if e.seq > after_seq and e.details.get("cutoff_date") == cutoff_date]


def test_location_columns_cover_the_catalog() -> None:
    assert set(LOCATION_COLUMNS) == set(LOCATION)


def test_old_partitions_are_purged_and_nothing_else_changes(db_settings: Settings) -> None:
    settings = db_settings
    archive = ParquetArchive(settings.archive_location)
    vin, other = new_vin(), new_vin()
    [old_file] = write_roll(
        archive,
        [(vin, OLD, PLAIN | LOCATION), (other, OLD, PLAIN), (other, OLD, PLAIN | LOCATION)],
    )
    [recent_file] = write_roll(archive, [(vin, RECENT, PLAIN | LOCATION)])
    # the cutoff day itself is not strictly older: kept
    [edge_file] = write_roll(archive, [(vin, datetime(2001, 3, 3, 1, tzinfo=UTC), LOCATION)])
    before = read(old_file)
    recent_before, edge_before = fingerprint(recent_file), fingerprint(edge_file)
    keys_before = archive.stored_keys(archive.manifests(), {("t", 0)})
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            session.add(
                VehicleStatus(
                    vin=vin,
                    position_ts=OLD,
                    latitude=52.5,
                    longitude=13.4,
                    odometer_ts=OLD,
                    odometer_m=1234.0,
                )
            )
            session.add(VehicleStatus(vin=other, position_ts=RECENT, latitude=48.1, longitude=11.6))
            start_seq = last_seq(session)

        result = purge_locations(settings, now=NOW)

        assert result.cutoff_date.isoformat() == "2001-03-03"
        assert (result.partitions_scanned, result.files_scanned) == (1, 1)
        assert result.files_rewritten == 1
        assert result.rows_affected == 4  # two messages with a position, two samples each
        assert result.status_rows_cleared >= 1
        after = read(old_file)
        assert after.schema == before.schema
        assert after.num_rows == before.num_rows
        for name in before.column_names:
            if name in LOCATION_COLUMNS:
                assert after.column(name).null_count == after.num_rows, name
            else:
                assert after.column(name).equals(before.column(name)), name
        assert fingerprint(recent_file) == recent_before
        assert fingerprint(edge_file) == edge_before
        assert read(recent_file).column("Vehicle.CurrentLocation.Latitude").null_count == 0
        assert not [p for p in old_file.parent.iterdir() if p.name.startswith(".tmp-")]
        # manifests, dedup keys and the dataset still work
        assert archive.stored_keys(archive.manifests(), {("t", 0)}) == keys_before
        assert archive.recover(archive.manifests()) == 0
        assert archive.dataset().count_rows() == before.num_rows + 4

        with session_scope(engine) as session:
            old_status = session.get(VehicleStatus, vin)
            recent_status = session.get(VehicleStatus, other)
            assert old_status is not None and recent_status is not None
            assert (old_status.position_ts, old_status.latitude, old_status.longitude) == (
                None,
                None,
                None,
            )
            assert old_status.odometer_m == 1234.0 and old_status.odometer_ts == OLD
            assert (recent_status.latitude, recent_status.longitude) == (48.1, 11.6)
            assert recent_status.position_ts == RECENT
            [event] = purge_events(session, "2001-03-03", start_seq)
            assert event.actor == "privacy" and event.subject == "archive:telemetry"
            assert event.details["files_rewritten"] == 1
            assert event.details["rows_affected"] == 4

        purged = fingerprint(old_file)
        again = purge_locations(settings, now=NOW)
        assert again.files_scanned == 1
        assert (again.files_rewritten, again.rows_affected) == (0, 0)
        assert fingerprint(old_file) == purged  # not even rewritten with the same content
        with session_scope(engine) as session:
            assert (
                len(purge_events(session, "2001-03-03", start_seq)) == 1
            )  # nothing changed: no event
    finally:
        with session_scope(engine) as session:
            for v in (vin, other):
                row = session.get(VehicleStatus, v)
                if row is not None:
                    session.delete(row)
        engine.dispose()


def test_already_purged_files_are_skipped_from_their_footer(
    db_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = db_settings
    archive = ParquetArchive(settings.archive_location)
    write_roll(archive, [(new_vin(), OLD, PLAIN | LOCATION)])
    write_roll(archive, [(new_vin(), OLD, PLAIN)])  # never had a position
    first = purge_locations(settings, now=NOW)
    assert (first.files_scanned, first.files_rewritten) == (2, 1)

    def no_data_reads(*args: Any, **kwargs: Any) -> pa.Table:
        raise AssertionError("an already purged file was read")

    monkeypatch.setattr(retention, "_known_clean", {})  # as a fresh process would
    monkeypatch.setattr(pq.ParquetFile, "read", no_data_reads)
    second = purge_locations(settings, now=NOW)
    assert (second.files_scanned, second.files_rewritten) == (2, 0)


def test_location_keys_are_removed_from_extra_signals(db_settings: Settings) -> None:
    """With a catalog that lacks some location signals they land in ``extra_signals``."""
    settings = db_settings
    archive = ParquetArchive(settings.archive_location)
    reduced = {
        p: s
        for p, s in CATALOG.items()
        if p not in ("Vehicle.CurrentLocation.Heading", "Vehicle.Speed")
    }
    narrow = ParquetArchive(settings.archive_location, catalog=reduced)
    vin = new_vin()
    [path] = write_roll(
        narrow,
        [(vin, OLD, PLAIN | LOCATION), (vin, OLD, {"Vehicle.CurrentLocation.Heading": 10.0})],
        catalog=reduced,
    )
    before = read(path)
    assert before.column("extra_signals").to_pylist() == [
        '{"Vehicle.Speed":42.0,"Vehicle.CurrentLocation.Heading":90.0}',
        '{"Vehicle.Speed":42.0,"Vehicle.CurrentLocation.Heading":90.0}',
        '{"Vehicle.CurrentLocation.Heading":10.0}',
        '{"Vehicle.CurrentLocation.Heading":10.0}',
    ]
    result = purge_locations(settings, now=NOW)
    assert (result.files_rewritten, result.rows_affected) == (1, 4)
    after = read(path)
    assert after.schema == before.schema
    assert after.column("extra_signals").to_pylist() == [
        '{"Vehicle.Speed":42.0}',
        '{"Vehicle.Speed":42.0}',
        None,
        None,
    ]
    assert after.column("Vehicle.CurrentLocation.Latitude").null_count == 4
    assert archive.dataset().count_rows() == 4
    again = purge_locations(settings, now=NOW)
    assert again.files_rewritten == 0


def test_purge_through_a_pyarrow_filesystem_url(db_settings: Settings) -> None:
    tmp_path = db_settings.data_dir
    settings = db_settings.model_copy(update={"archive_url": f"file://{tmp_path}/lake"})
    archive = ParquetArchive(settings.archive_location)
    [path] = write_roll(archive, [(new_vin(), OLD, LOCATION)])
    result = purge_locations(settings, older_than_days=30, now=NOW)
    assert result.files_rewritten == 1
    assert path.parent.parent.parent.name == "lake"
    assert read(path).column("Vehicle.CurrentLocation.Longitude").null_count == 2


def test_status_positions_newer_than_the_cutoff_are_kept(db_settings: Settings) -> None:
    settings = db_settings
    vin = new_vin()
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            session.add(VehicleStatus(vin=vin, position_ts=OLD, latitude=1.0, longitude=2.0))
        # 200 days: the cutoff is before OLD
        result = purge_locations(settings, older_than_days=200, now=NOW)
        assert result.files_scanned == 0
        with session_scope(engine) as session:
            row = session.exec(select(VehicleStatus).where(col(VehicleStatus.vin) == vin)).one()
            assert (row.latitude, row.longitude) == (1.0, 2.0)
            session.delete(row)
    finally:
        engine.dispose()
    assert (db_settings.data_dir / "archive" / DATASET_DIR).is_dir()
    with pytest.raises(ValueError):
        purge_locations(settings, older_than_days=-1, now=NOW - timedelta(days=1))
