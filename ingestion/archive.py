"""The Parquet data lake of validated telemetry (``docs/archive.md``).

Layout under the archive root (a local directory or any pyarrow filesystem URL)::

    telemetry/date=YYYY-MM-DD/<roll>-<n>.parquet   one row per sample, one column per signal
    _rolls/<created_ms>-<uuid>.json                  roll manifests: files and Kafka offset ranges

A *roll* is one atomic commit of buffered rows. Its files are written under names starting with
``.tmp-`` (which dataset readers ignore), then the manifest is written, then the files are
renamed. A crash before the manifest leaves only invisible temporary files; a crash after it is
rolled forward by :meth:`ParquetArchive.recover`. The manifests' offset ranges let a restarted
worker skip records that are already stored, and the stored ``(vin, message_id)`` keys let it
drop duplicates that vehicles or producers re-sent: every accepted message is archived once.
"""

from __future__ import annotations

import datetime as dt
import json
import posixpath
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import attrgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from core.signals import CATALOG, SignalSpec, arrow_type
from core.telemetry import TelemetryMessage

DATASET_DIR = "telemetry"
ROLLS_DIR = "_rolls"
DAY_MS = 86_400_000
TMP_PREFIX = ".tmp-"
TMP_SUFFIX = ".part"  # so neither dataset readers nor `*.parquet` globs (DuckDB) see them
ORPHAN_AGE_S = 3600


def temporary_path(final: str) -> str:
    """Where a file is written before its roll commits."""
    return posixpath.join(
        posixpath.dirname(final), TMP_PREFIX + posixpath.basename(final) + TMP_SUFFIX
    )


BASE_FIELDS: list[pa.Field] = [
    pa.field("vin", pa.string(), nullable=False),
    pa.field("message_id", pa.string(), nullable=False),
    pa.field("seq", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("ms", tz="UTC"), nullable=False),
    pa.field("received_at", pa.timestamp("ms", tz="UTC")),
    pa.field("kafka_partition", pa.int32(), nullable=False),
    pa.field("kafka_offset", pa.int64(), nullable=False),
]


def column_name(path: str) -> str:
    """Parquet column for a VSS path: the path itself (dots are legal in Parquet names)."""
    return path


def archive_schema(catalog: Mapping[str, SignalSpec] = CATALOG) -> pa.Schema:
    signal_fields = [pa.field(column_name(p), arrow_type(s)) for p, s in sorted(catalog.items())]
    extra = pa.field("extra_signals", pa.string())  # JSON object of non-catalog VSS signals
    return pa.schema([*BASE_FIELDS, *signal_fields, extra])


def open_filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """A pyarrow filesystem and root path for a directory or URL (``s3://``, ``file://``...)."""
    if "://" in location:
        fs, root = pafs.FileSystem.from_uri(location)
        return fs, root.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(location).resolve())


@dataclass(frozen=True, slots=True)
class OffsetRange:
    topic: str
    partition: int
    first: int
    last: int


@dataclass
class RollBuffer:
    """What every buffer of a roll tracks besides its rows: the Kafka offsets it covers."""

    ranges: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    messages: int = 0
    approx_bytes: int = 0
    opened_at: float = field(default_factory=time.monotonic)

    def note_offset(self, topic: str, partition: int, offset: int) -> None:
        """Extend the roll's covered offset range (also for records that produced no rows:
        dead letters and duplicates)."""
        self.note_range(topic, partition, offset, offset)

    def note_range(self, topic: str, partition: int, first: int, last: int) -> None:
        span = self.ranges.get((topic, partition))
        if span is None:
            self.ranges[(topic, partition)] = [first, last]
        else:
            span[0] = min(span[0], first)
            span[1] = max(span[1], last)

    def __len__(self) -> int:
        raise NotImplementedError

    def to_table(self, schema: pa.Schema) -> pa.Table:
        raise NotImplementedError


@dataclass
class RowBuffer(RollBuffer):
    """Samples collected column by column (signals are sparse: a sample carries a subset)."""

    vin: list[str] = field(default_factory=list)
    message_id: list[str] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    ts: list[int] = field(default_factory=list)
    received_at: list[int | None] = field(default_factory=list)
    partition: list[int] = field(default_factory=list)
    offset: list[int] = field(default_factory=list)
    signals: dict[str, tuple[list[int], list[Any]]] = field(default_factory=dict)
    typed_signals: list[Any] = field(default_factory=list)
    """Signals structs of samples decoded by ``FastValidator`` (one per row, in row order)."""
    typed_fields: dict[str, str] | None = None
    """VSS path -> struct field, when this buffer holds typed samples."""
    extra: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ts)

    def add(
        self,
        message: TelemetryMessage,
        *,
        topic: str,
        partition: int,
        offset: int,
        received_at: int | None,
        catalog: Mapping[str, SignalSpec],
        size: int,
    ) -> None:
        vin, mid, seq = message.vin, message.message_id, message.seq
        signals = self.signals
        for sample in message.samples:
            row = len(self.ts)
            self.vin.append(vin)
            self.message_id.append(mid)
            self.seq.append(seq)
            self.ts.append(sample.ts)
            self.received_at.append(received_at)
            self.partition.append(partition)
            self.offset.append(offset)
            for path, value in sample.signals.items():
                if path in catalog:
                    column = signals.get(path)
                    if column is None:
                        column = signals[path] = ([], [])
                    column[0].append(row)
                    column[1].append(value)
                else:
                    self.extra.setdefault(row, {})[path] = value
        self.note_offset(topic, partition, offset)
        self.messages += 1
        self.approx_bytes += size

    def add_typed(
        self,
        message: Any,
        *,
        topic: str,
        partition: int,
        offset: int,
        received_at: int | None,
        size: int,
    ) -> None:
        """Add a message decoded by ``FastValidator`` (its signals stay structs until the roll,
        when each column is read in one pass)."""
        vin, mid, seq = message.vin, message.message_id, message.seq
        samples = message.samples
        count = len(samples)
        self.vin.extend([vin] * count)
        self.message_id.extend([mid] * count)
        self.seq.extend([seq] * count)
        self.received_at.extend([received_at] * count)
        self.partition.extend([partition] * count)
        self.offset.extend([offset] * count)
        for sample in samples:
            self.ts.append(sample.ts)
            self.typed_signals.append(sample.signals)
        self.note_offset(topic, partition, offset)
        self.messages += 1
        self.approx_bytes += size

    def to_table(self, schema: pa.Schema) -> pa.Table:
        n = len(self.ts)
        columns: dict[str, pa.Array] = {
            "vin": pa.array(self.vin, pa.string()),
            "message_id": pa.array(self.message_id, pa.string()),
            "seq": pa.array(self.seq, pa.int64()),
            "ts": pa.array(self.ts, pa.int64()).cast(pa.timestamp("ms", tz="UTC")),
            "received_at": pa.array(self.received_at, pa.int64()).cast(
                pa.timestamp("ms", tz="UTC")
            ),
            "kafka_partition": pa.array(self.partition, pa.int32()),
            "kafka_offset": pa.array(self.offset, pa.int64()),
        }
        for fld in schema:
            if fld.name in columns or fld.name == "extra_signals":
                continue
            if self.typed_fields is not None:
                values = list(map(attrgetter(self.typed_fields[fld.name]), self.typed_signals))
                column = pa.array(values, type=fld.type)
            else:
                column = _scatter(self.signals.get(fld.name), n, fld.type)
            if pa.types.is_floating(fld.type):
                column = pc.add(column, 0.0)  # -0.0 is stored as 0.0, as the native path does
            columns[fld.name] = column
        extra: list[str | None] = [None] * n
        for row, extra_values in self.extra.items():
            extra[row] = json.dumps(extra_values, separators=(",", ":"))
        columns["extra_signals"] = pa.array(extra, pa.string())
        return pa.table([columns[f.name] for f in schema], schema=schema)


def _scatter(sparse: tuple[list[int], list[Any]] | None, n: int, typ: pa.DataType) -> pa.Array:
    if sparse is None:
        return pa.nulls(n, typ)
    rows, values = sparse
    if pa.types.is_floating(typ) or pa.types.is_integer(typ):
        dtype = np.float64 if pa.types.is_floating(typ) else np.int64
        data = np.zeros(n, dtype=dtype)
        data[rows] = values
        mask = np.ones(n, dtype=bool)
        mask[rows] = False
        return pa.array(data, type=typ, mask=mask)
    full: list[Any] = [None] * n
    for row, value in zip(rows, values, strict=True):
        full[row] = value
    return pa.array(full, type=typ)


@dataclass(frozen=True, slots=True)
class PreparedRoll:
    table: pa.Table | None
    ranges: list[dict[str, Any]]
    rows: int
    messages: int


@dataclass(frozen=True, slots=True)
class RollResult:
    roll_id: str
    files: list[str]
    rows: int
    messages: int


class ParquetArchive:
    """Writes rolls and answers what is already stored (offset coverage, message keys)."""

    def __init__(self, location: str, catalog: Mapping[str, SignalSpec] = CATALOG) -> None:
        self.location = location
        self.fs, self.root = open_filesystem(location)
        self.catalog = catalog
        self.schema = archive_schema(catalog)
        self.fs.create_dir(self._path(DATASET_DIR), recursive=True)
        self.fs.create_dir(self._path(ROLLS_DIR), recursive=True)

    def _path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    # -- writing -----------------------------------------------------------------------------
    def write_roll(self, buffer: RollBuffer) -> RollResult:
        """Atomically store ``buffer`` (see module docstring); returns what was written."""
        return self.commit_roll(self.prepare_roll(buffer))

    def prepare_roll(self, buffer: RollBuffer) -> PreparedRoll:
        """The Python-heavy half of a roll (building Arrow columns); run it on the thread that
        owns the buffer. :meth:`commit_roll` does the rest and can run on another thread."""
        table = buffer.to_table(self.schema) if len(buffer) else None
        ranges = [
            {"topic": t, "partition": p, "first": span[0], "last": span[1]}
            for (t, p), span in sorted(buffer.ranges.items())
        ]
        return PreparedRoll(table, ranges, len(buffer), buffer.messages)

    def commit_roll(self, prepared: PreparedRoll) -> RollResult:
        """Sort, compress and write the files, then the manifest (the commit point), then
        publish the files. Mostly native code, so it overlaps with decoding on another thread."""
        created_ms = int(time.time() * 1000)
        roll_id = f"{created_ms:013d}-{uuid.uuid4().hex[:12]}"
        files: list[str] = []
        if prepared.table is not None:
            table = prepared.table
            days = pc.divide(pc.cast(table["ts"], pa.int64()), DAY_MS)
            table = table.append_column("_day", days)
            for i, day in enumerate(sorted(set(days.to_pylist()))):
                part = table.filter(pc.equal(table["_day"], day)).drop_columns(["_day"])
                part = part.sort_by([("vin", "ascending"), ("ts", "ascending")])
                date = dt.datetime.fromtimestamp(day * 86_400, dt.UTC).date().isoformat()
                directory = self._path(DATASET_DIR, f"date={date}")
                self.fs.create_dir(directory, recursive=True)
                name = f"{roll_id}-{i}.parquet"
                with self.fs.open_output_stream(
                    temporary_path(posixpath.join(directory, name))
                ) as out:
                    pq.write_table(part, out, compression="zstd")
                files.append(f"{DATASET_DIR}/date={date}/{name}")
        manifest = {
            "roll_id": roll_id,
            "created_ms": created_ms,
            "files": files,
            "rows": prepared.rows,
            "messages": prepared.messages,
            "ranges": prepared.ranges,
        }
        self._write_json(self._path(ROLLS_DIR, f"{roll_id}.json"), manifest)
        self._publish_files(files)
        return RollResult(roll_id, files, prepared.rows, prepared.messages)

    def _write_json(self, path: str, payload: Mapping[str, Any]) -> None:
        tmp = temporary_path(path)
        with self.fs.open_output_stream(tmp) as out:
            out.write(json.dumps(payload).encode())
        self.fs.move(tmp, path)

    def _publish_files(self, files: Iterable[str]) -> None:
        for rel in files:
            final = self._path(rel)
            tmp = temporary_path(final)
            info = self.fs.get_file_info(tmp)
            if info.type != pafs.FileType.NotFound:
                self.fs.move(tmp, final)

    # -- reading what is stored ---------------------------------------------------------------
    def manifests(self, since_ms: int = 0) -> list[dict[str, Any]]:
        selector = pafs.FileSelector(self._path(ROLLS_DIR), allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            name = info.base_name
            if name.startswith(TMP_PREFIX) or not name.endswith(".json"):
                continue
            if int(name.split("-", 1)[0]) < since_ms:
                continue
            with self.fs.open_input_stream(info.path) as stream:
                found.append(json.loads(stream.read()))
        found.sort(key=lambda m: m["roll_id"])
        return found

    def recover(self, manifests: Sequence[dict[str, Any]]) -> int:
        """Roll forward rolls whose manifest exists but whose files were not all renamed, and
        delete temporary files of rolls that never committed (older than an hour, so a roll
        another process is writing right now is left alone)."""
        renamed = 0
        for manifest in manifests:
            for rel in manifest["files"]:
                if self.fs.get_file_info(self._path(rel)).type == pafs.FileType.NotFound:
                    self._publish_files([rel])
                    renamed += 1
        self._delete_orphans()
        return renamed

    def _delete_orphans(self) -> None:
        cutoff = time.time() - ORPHAN_AGE_S
        selector = pafs.FileSelector(self._path(DATASET_DIR), recursive=True, allow_not_found=True)
        for info in self.fs.get_file_info(selector):
            if (
                info.type == pafs.FileType.File
                and info.base_name.startswith(TMP_PREFIX)
                and info.mtime is not None
                and info.mtime.timestamp() < cutoff
            ):
                self.fs.delete_file(info.path)

    def stored_keys(
        self, manifests: Sequence[dict[str, Any]], partitions: set[tuple[str, int]]
    ) -> dict[tuple[str, str], tuple[int, int]]:
        """``(vin, message_id) -> (partition, offset)`` for messages stored in these rolls."""
        keys: dict[tuple[str, str], tuple[int, int]] = {}
        wanted = {p for _, p in partitions}
        for manifest in manifests:
            if not any((r["topic"], r["partition"]) in partitions for r in manifest["ranges"]):
                continue
            for rel in manifest["files"]:
                table = pq.read_table(
                    self._path(rel),
                    columns=["vin", "message_id", "kafka_partition", "kafka_offset"],
                    filesystem=self.fs,
                )
                mask = pc.is_in(table["kafka_partition"], pa.array(sorted(wanted), pa.int32()))
                table = table.filter(mask)
                for vin, mid, part, off in zip(
                    table["vin"].to_pylist(),
                    table["message_id"].to_pylist(),
                    table["kafka_partition"].to_pylist(),
                    table["kafka_offset"].to_pylist(),
                    strict=True,
                ):
                    keys[(vin, mid)] = (part, off)
        return keys

    # -- queries ---------------------------------------------------------------------------------
    def dataset(self) -> ds.Dataset:
        """The whole archive as a pyarrow dataset (hive-partitioned by ``date``)."""
        return ds.dataset(
            self._path(DATASET_DIR),
            filesystem=self.fs,
            format="parquet",
            partitioning=ds.partitioning(pa.schema([("date", pa.string())]), flavor="hive"),
            schema=self.schema.append(pa.field("date", pa.string())),
        )

    def read(
        self,
        vin: str,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[str] | None = None,
    ) -> pa.Table:
        """Samples of one vehicle with ``start <= ts < end``, ordered by time."""
        start, end = _as_utc(start), _as_utc(end)
        dates = []
        day = start.date()
        while day <= end.date():
            dates.append(day.isoformat())
            day += dt.timedelta(days=1)
        expr = (
            (ds.field("date").isin(dates))
            & (ds.field("vin") == vin)
            & (ds.field("ts") >= pa.scalar(start, pa.timestamp("ms", tz="UTC")))
            & (ds.field("ts") < pa.scalar(end, pa.timestamp("ms", tz="UTC")))
        )
        cols = list(columns) if columns else [f.name for f in self.schema]
        table = self.dataset().to_table(columns=cols, filter=expr)
        if "ts" in table.column_names:
            table = table.sort_by("ts")
        return table


def _as_utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment.astimezone(dt.UTC)
