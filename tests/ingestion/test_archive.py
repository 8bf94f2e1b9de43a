"""The Parquet archive: atomic rolls, recovery after a crash, readers."""

from __future__ import annotations

import datetime as dt
import os
import posixpath
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds
import pytest

from core.signals import CATALOG
from core.telemetry import decode
from ingestion.archive import DATASET_DIR, ParquetArchive, RowBuffer
from tests.helpers import encode, message, new_vin

DAY = dt.datetime(2026, 11, 21, 23, 59, 58, tzinfo=dt.UTC)


def buffer_with(vin: str, offsets: range, *, start: dt.datetime = DAY) -> RowBuffer:
    buffer = RowBuffer()
    for offset in offsets:
        msg = decode(
            encode(
                message(
                    vin,
                    seq=offset,
                    samples=3,
                    message_id=f"m{offset}",
                    ts_ms=int(start.timestamp() * 1000) + offset * 3000,
                )
            )
        )
        buffer.add(
            msg, topic="t", partition=0, offset=offset, received_at=None, catalog=CATALOG, size=100
        )
    return buffer


def test_roll_spans_dates_and_reads_back_by_vin_and_time(tmp_path: Path) -> None:
    archive = ParquetArchive(str(tmp_path))
    vin, other = new_vin(), new_vin()
    archive.write_roll(buffer_with(vin, range(0, 4)))  # crosses midnight: two date partitions
    archive.write_roll(buffer_with(other, range(4, 6)))
    dates = sorted(p.name for p in (tmp_path / DATASET_DIR).iterdir())
    assert dates == ["date=2026-11-21", "date=2026-11-22"]
    table = archive.read(vin, DAY - dt.timedelta(minutes=1), DAY + dt.timedelta(hours=1))
    assert table.num_rows == 12
    assert set(table["vin"].to_pylist()) == {vin}
    ts = table["ts"].to_pylist()
    assert ts == sorted(ts)
    narrow = archive.read(vin, DAY, DAY + dt.timedelta(seconds=3), columns=["ts", "Vehicle.Speed"])
    assert narrow.column_names == ["ts", "Vehicle.Speed"] and narrow.num_rows == 3
    # DuckDB reads the lake directly. (In a child process: DuckDB's bindings print leak reports
    # at interpreter exit, which would bury pytest's summary line.)
    glob = f"{tmp_path}/{DATASET_DIR}/*/*.parquet"
    query = f"select count(*) from read_parquet('{glob}', hive_partitioning=1)"
    script = f"import duckdb; print(duckdb.sql({query!r}).fetchall())"
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[(18,)]"


def test_uncommitted_files_are_invisible_and_committed_rolls_are_completed(tmp_path: Path) -> None:
    archive = ParquetArchive(str(tmp_path))
    vin = new_vin()
    result = archive.write_roll(buffer_with(vin, range(0, 2), start=DAY - dt.timedelta(hours=1)))
    # Simulate a crash after the manifest was written but before the rename.
    final = tmp_path / result.files[0]
    final.rename(final.with_name(".tmp-" + final.name + ".part"))
    stray = final.with_name(".tmp-never-committed.parquet.part")
    stray.write_bytes(b"partial")
    os.utime(stray, (time.time() - 7200, time.time() - 7200))
    assert ds.dataset(str(tmp_path / DATASET_DIR), format="parquet").count_rows() == 0
    manifests = archive.manifests()
    assert archive.recover(manifests) == 1
    assert not stray.exists()  # an hour-old file of a roll that never committed is removed
    assert ds.dataset(str(tmp_path / DATASET_DIR), format="parquet").count_rows() == 6
    keys = archive.stored_keys(manifests, {("t", 0)})
    assert keys == {(vin, "m0"): (0, 0), (vin, "m1"): (0, 1)}
    assert archive.stored_keys(manifests, {("t", 1)}) == {}


def test_manifest_records_offset_ranges(tmp_path: Path) -> None:
    archive = ParquetArchive(str(tmp_path))
    buffer = buffer_with(new_vin(), range(5, 8))
    buffer.note_offset("t", 0, 9)  # a dead-lettered record after the stored ones
    archive.write_roll(buffer)
    (manifest,) = archive.manifests()
    assert manifest["ranges"] == [{"topic": "t", "partition": 0, "first": 5, "last": 9}]
    assert manifest["messages"] == 3 and manifest["rows"] == 9


def test_pyarrow_filesystem_url(tmp_path: Path) -> None:
    archive = ParquetArchive(f"file://{tmp_path}/lake")
    archive.write_roll(buffer_with(new_vin(), range(0, 1)))
    assert posixpath.basename(archive.root) == "lake"
    assert archive.dataset().count_rows() == 3


@pytest.mark.parametrize("path", ["Vehicle.Speed", "Vehicle.Diagnostics.DTCList"])
def test_schema_has_a_column_per_catalog_signal(tmp_path: Path, path: str) -> None:
    assert path in ParquetArchive(str(tmp_path)).schema.names
