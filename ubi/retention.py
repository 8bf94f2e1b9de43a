"""Retention of raw location data: positions older than ``retention_location_days`` are purged
from the Parquet archive and from the ``vehicle_status`` table (``fleet privacy purge`` and the
privacy job, ``ubi.erasure.run_privacy_jobs``).

Archive: every date partition strictly older than the cutoff date (the UTC date of
``now - days``) is scanned. A data file whose location columns (``LOCATION_COLUMNS``, every
catalog signal under ``Vehicle.CurrentLocation.``) still hold a value, or whose
``extra_signals`` JSON carries such a key, is rewritten with those columns null and those keys
removed. Everything else stays as it was: same schema, same rows in the same order, same file
name, so roll manifests and the archive worker's dedup (which read ``vin``, ``message_id``,
``kafka_partition`` and ``kafka_offset`` from the files named in manifests) keep working.

Each rewrite goes to the archive's temporary name (``.tmp-<name>.part``, invisible to readers)
and is then moved over the original, so a crash leaves either the old or the new file (a stray
temporary file is removed by the archive's orphan clean-up an hour later). Already purged files
are recognized from their Parquet footer (column null counts) without reading any data, so a
second run rewrites nothing and costs one footer read per file (none at all for files the same
process already checked).

Rewrites of the archive by the privacy jobs (this purge, erasures) are serialized by
:func:`archive_lock` (a PostgreSQL advisory lock, plus a process-local lock), so a purge and an
erasure in two processes cannot overwrite each other's version of a file. The archive worker
only ever adds new files, so it needs no lock.
"""

from __future__ import annotations

import json
import logging
import posixpath
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from sqlalchemy import text, update
from sqlalchemy.engine import Engine
from sqlmodel import col

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from core.signals import CATALOG
from core.vehicles.models import VehicleStatus
from ingestion.archive import DATASET_DIR, TMP_PREFIX, ParquetArchive, temporary_path

log = logging.getLogger(__name__)

LOCATION_PREFIX = "Vehicle.CurrentLocation."
LOCATION_COLUMNS: tuple[str, ...] = tuple(
    sorted(p for p in CATALOG if p.startswith(LOCATION_PREFIX))
)
"""Archive columns of raw location data: position, heading, altitude, accuracy."""
EXTRA_COLUMN = "extra_signals"
ACTOR = "privacy"
PURGED_ACTION = "privacy.location_purged"

_ARCHIVE_LOCK_KEY = 0x666C_7072_6976  # "flpriv": the advisory lock of archive rewrites
_process_lock = threading.Lock()
_known_clean: dict[str, set[str]] = {}
"""Per archive location, files this process found or made free of location data. Data files
are never modified except by the privacy jobs, which keep them so, so a long-running job
(``privacy_loop``) opens each old file once; guarded by ``_process_lock``."""
_CODECS = {"ZSTD": "zstd", "SNAPPY": "snappy", "GZIP": "gzip", "BROTLI": "brotli", "LZ4": "lz4"}


@dataclass(frozen=True)
class PurgeResult:
    cutoff: datetime
    """Positions before this moment are purged from ``vehicle_status``."""
    cutoff_date: date
    """Archive partitions with an earlier date are purged."""
    partitions_scanned: int = 0
    files_scanned: int = 0
    files_rewritten: int = 0
    rows_affected: int = 0
    """Archive rows that held a location value (or location keys in ``extra_signals``)."""
    status_rows_cleared: int = 0

    @property
    def changed(self) -> bool:
        return bool(self.files_rewritten or self.status_rows_cleared)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["cutoff"] = self.cutoff.isoformat()
        out["cutoff_date"] = self.cutoff_date.isoformat()
        return out


def purge_locations(
    settings: Settings,
    *,
    older_than_days: int | None = None,
    now: datetime | None = None,
    engine: Engine | None = None,
) -> PurgeResult:
    """Purge raw location data older than ``older_than_days`` (default
    ``settings.retention_location_days``) from the archive and the status table; writes the
    audit event ``privacy.location_purged`` when anything changed."""
    days = settings.retention_location_days if older_than_days is None else older_than_days
    if days < 0:
        raise ValueError(f"older_than_days must not be negative, got {days}")
    cutoff = (now or utcnow()) - timedelta(days=days)
    cutoff_date = cutoff.date()  # `now` is UTC-aware (utcnow or a caller's aware datetime)
    own_engine = engine is None
    engine = engine or make_engine(settings)
    try:
        archive = ParquetArchive(settings.archive_location)
        with archive_lock(engine):
            partitions = [p for d, p in date_partitions(archive) if d < cutoff_date]
            clean = _known_clean.setdefault(settings.archive_location, set())
            files_scanned = files_rewritten = rows_affected = 0
            for partition in partitions:
                for path in data_files(archive.fs, partition):
                    files_scanned += 1
                    if path in clean:
                        continue
                    rows = purge_file(archive.fs, path)
                    clean.add(path)
                    if rows is not None:
                        files_rewritten += 1
                        rows_affected += rows
        with session_scope(engine) as session:
            cleared = session.execute(
                update(VehicleStatus)
                .where(col(VehicleStatus.position_ts) < cutoff)
                .values(position_ts=None, latitude=None, longitude=None)
            )
            status_rows = max(int(getattr(cleared, "rowcount", 0) or 0), 0)
            result = PurgeResult(
                cutoff=cutoff,
                cutoff_date=cutoff_date,
                partitions_scanned=len(partitions),
                files_scanned=files_scanned,
                files_rewritten=files_rewritten,
                rows_affected=rows_affected,
                status_rows_cleared=status_rows,
            )
            if result.changed:
                audit.record(
                    session,
                    actor=ACTOR,
                    action=PURGED_ACTION,
                    subject="archive:telemetry",
                    details={
                        "older_than_days": days,
                        "cutoff_date": cutoff_date.isoformat(),
                        "files_rewritten": files_rewritten,
                        "rows_affected": rows_affected,
                        "status_rows_cleared": status_rows,
                    },
                )
    finally:
        if own_engine:
            engine.dispose()
    if result.changed:
        log.info(
            "purged location data before %s: %d of %d files rewritten (%d rows), "
            "%d status positions cleared",
            cutoff_date,
            files_rewritten,
            files_scanned,
            rows_affected,
            status_rows,
        )
    return result


# -- archive helpers (shared with ubi.erasure) ---------------------------------------------------


def date_partitions(archive: ParquetArchive) -> list[tuple[date, str]]:
    """``(date, directory)`` of every ``telemetry/date=YYYY-MM-DD`` partition, oldest first."""
    selector = pafs.FileSelector(
        posixpath.join(archive.root, DATASET_DIR), allow_not_found=True, recursive=False
    )
    found = []
    for info in archive.fs.get_file_info(selector):
        name = info.base_name
        if info.type != pafs.FileType.Directory or not name.startswith("date="):
            continue
        try:
            day = date.fromisoformat(name.removeprefix("date="))
        except ValueError:
            continue
        found.append((day, info.path))
    found.sort()
    return found


def data_files(fs: pafs.FileSystem, partition: str) -> list[str]:
    """Committed data files of one partition (temporary ``.tmp-`` files are skipped)."""
    selector = pafs.FileSelector(partition, allow_not_found=True, recursive=False)
    return sorted(
        info.path
        for info in fs.get_file_info(selector)
        if info.type == pafs.FileType.File
        and info.base_name.endswith(".parquet")
        and not info.base_name.startswith(TMP_PREFIX)
    )


def replace_file(fs: pafs.FileSystem, path: str, table: pa.Table, compression: str) -> None:
    """Write ``table`` to the temporary name of ``path``, then move it over ``path``."""
    tmp = temporary_path(path)
    with fs.open_output_stream(tmp) as out:
        pq.write_table(table, out, compression=compression)
    fs.move(tmp, path)


def file_compression(metadata: pq.FileMetaData) -> str:
    """The codec a file was written with (the archive writes zstd), for its rewrite."""
    if metadata.num_row_groups and metadata.num_columns:
        codec = str(metadata.row_group(0).column(0).compression).upper()
        if codec == "UNCOMPRESSED":
            return "none"
        return _CODECS.get(codec.removesuffix("_RAW"), "zstd")
    return "zstd"


@contextmanager
def archive_lock(engine: Engine) -> Iterator[None]:
    """Serialize archive rewrites of the privacy jobs: in this process, and on PostgreSQL
    across processes (a session advisory lock on an autocommit connection, so no transaction
    stays open while files are rewritten)."""
    with _process_lock:
        if engine.dialect.name != "postgresql":
            yield
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ARCHIVE_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ARCHIVE_LOCK_KEY})


# -- purging one file ----------------------------------------------------------------------------


def purge_file(fs: pafs.FileSystem, path: str) -> int | None:
    """Rewrite one data file without location data; returns the number of rows that had some,
    or None when the file holds none (nothing is written then)."""
    with fs.open_input_file(path) as source:
        parquet = pq.ParquetFile(source)
        names = parquet.schema_arrow.names
        location = [n for n in names if n.startswith(LOCATION_PREFIX)]
        has_extra = EXTRA_COLUMN in names
        maybe_set = _columns_maybe_set(parquet.metadata, [*location, EXTRA_COLUMN])
        if not maybe_set or not _holds_location(parquet.read(columns=maybe_set)):
            return None
        table = parquet.read()
        compression = file_compression(parquet.metadata)
    affected = pa.array([False] * table.num_rows, pa.bool_())
    changed = False
    for name in location:
        column = table.column(name)
        if column.null_count == len(column):
            continue
        affected = pc.or_(affected, pc.is_valid(column))
        index = table.schema.get_field_index(name)
        table = table.set_column(
            index, table.schema.field(index), pa.nulls(len(column), column.type)
        )
        changed = True
    if has_extra:
        stripped, extra_rows = _strip_extra(table.column(EXTRA_COLUMN))
        if stripped is not None:
            affected = pc.or_(affected, extra_rows)
            index = table.schema.get_field_index(EXTRA_COLUMN)
            table = table.set_column(index, table.schema.field(index), stripped)
            changed = True
    if not changed:
        return None
    replace_file(fs, path, table, compression)
    return int(pc.sum(affected).as_py() or 0)


def _columns_maybe_set(metadata: pq.FileMetaData, names: Sequence[str]) -> list[str]:
    """Those of ``names`` that the footer's null counts do not prove to be all null."""
    wanted = set(names)
    maybe: set[str] = set()
    for r in range(metadata.num_row_groups):
        group = metadata.row_group(r)
        for c in range(group.num_columns):
            chunk = group.column(c)
            name = chunk.path_in_schema
            if name not in wanted or name in maybe:
                continue
            stats = chunk.statistics
            if stats is None or not stats.has_null_count or stats.null_count != group.num_rows:
                maybe.add(name)
    return [n for n in names if n in maybe]


def _holds_location(probe: pa.Table) -> bool:
    """Does any location column of ``probe`` hold a value, or any ``extra_signals`` JSON a
    location key? (Read only for columns whose footer was not conclusive.)"""
    for name in probe.column_names:
        column = probe.column(name)
        if name == EXTRA_COLUMN:
            if _strip_extra(column)[0] is not None:
                return True
        elif column.null_count < len(column):
            return True
    return False


def _strip_extra(column: pa.ChunkedArray) -> tuple[pa.Array | None, pa.Array]:
    """``extra_signals`` without location keys (a row left with no key becomes null), and
    which rows changed; None when no row carries a location key."""
    values: list[str | None] = column.to_pylist()
    rows = [False] * len(values)
    for i, raw in enumerate(values):
        if raw is None or LOCATION_PREFIX not in raw:
            continue
        try:
            parsed = json.loads(raw)
        except ValueError:
            continue
        if not isinstance(parsed, dict):
            continue
        kept = {k: v for k, v in parsed.items() if not k.startswith(LOCATION_PREFIX)}
        if len(kept) == len(parsed):
            continue
        values[i] = json.dumps(kept, separators=(",", ":")) if kept else None
        rows[i] = True
    changed = pa.array(rows, pa.bool_())
    if not any(rows):
        return None, changed
    return pa.array(values, column.type), changed
