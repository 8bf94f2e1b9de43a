"""Recent signal history and GPS track of one vehicle, read from the Parquet archive
(``GET /v1/vehicles/{vin}/signals``, the console's vehicle page).

The window ends at the vehicle's newest archived sample, not at the wall clock, so simulated,
replayed and historic data show as well as live data. Reading touches only what it needs:

* the newest ``date=`` partition holding the vehicle is found by scanning the partitions
  newest first (only ``vin`` and ``ts``; the files are sorted by ``vin``, so Parquet row-group
  statistics skip most of them), at most ``lookback_days`` days of them counted back from the
  archive's newest partition (``FLEET_SIGNALS_LOOKBACK_DAYS``), so a vehicle that never sent
  data costs a bounded scan, not one of the whole archive;
* then only the partitions the window overlaps are opened, with only the asked-for columns,
  filtered on ``vin`` and ``ts`` in the scan (predicate pushdown).

Each series is cut to at most ``max_points`` by time buckets of equal width over the window
(the mean of the values, at the mean time of the samples in the bucket; a series that fits is
returned as stored). The track keeps real positions: evenly spaced samples, in time order.
Positions erased by retention or erasure (nulls) are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from pydantic import BaseModel, Field

from core.errors import ValidationFailed
from core.signals import SignalSpec
from ingestion.archive import ParquetArchive, column_name
from ubi.retention import data_files, date_partitions

SPEED = "Vehicle.Speed"
STATE_OF_CHARGE = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current"
LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
DEFAULT_SIGNALS: tuple[str, ...] = (
    SPEED,
    STATE_OF_CHARGE,
    "Vehicle.Powertrain.TractionBattery.Temperature.Min",
    "Vehicle.Powertrain.TractionBattery.Temperature.Max",
    "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature",
    "Vehicle.Exterior.AirTemperature",
)
"""Speed, state of charge and the temperatures the simulator sends (battery cells, coolant,
outside air); a vehicle without one of them (an ICE car has no state of charge) gets an empty
series for it."""
MAX_SIGNALS = 20
NUMERIC_KINDS = ("float", "int")


class SignalSeries(BaseModel):
    unit: str | None = Field(description="VSS unit (km/h, percent, Celsius...)")
    points: list[tuple[int, float]] = Field(
        description="`[epoch_ms, value]` in time order (bucket means when downsampled)"
    )


class SignalHistory(BaseModel):
    """A vehicle's recent signals and track from the archive."""

    vin: str
    from_: datetime | None = Field(
        serialization_alias="from",
        description="Window start (`to` minus `minutes`); null without data",
    )
    to: datetime | None = Field(description="The newest archived sample; null without data")
    rows: int = Field(description="Archived samples in the window")
    signals: dict[str, SignalSeries]
    track: list[tuple[int, float, float]] = Field(
        description="`[epoch_ms, latitude, longitude]` in time order, at most `max_points`"
    )


def check_signals(names: Iterable[str], catalog: Mapping[str, SignalSpec]) -> list[str]:
    """The asked-for signals, each once, in order; 422 naming the unknown or non-numeric."""
    wanted = list(dict.fromkeys(names))
    problems = []
    for name in wanted:
        spec = catalog.get(name)
        if spec is None:
            problems.append(f"unknown signal {name!r}: not in the signal catalog")
        elif spec.kind not in NUMERIC_KINDS:
            problems.append(f"signal {name!r} is {spec.datatype}, not numeric: it has no history")
    if len(wanted) > MAX_SIGNALS:
        problems.append(f"at most {MAX_SIGNALS} signals per request, got {len(wanted)}")
    if problems:
        raise ValidationFailed(
            [
                {"loc": ["query", "signal"], "msg": problem, "type": "value_error"}
                for problem in problems
            ]
        )
    return wanted


def signal_history(
    archive: ParquetArchive,
    vin: str,
    signals: Sequence[str],
    *,
    minutes: int,
    max_points: int,
    lookback_days: int | None = None,
) -> SignalHistory:
    """The last ``minutes`` of ``signals`` and the track of ``vin`` up to its newest sample,
    searched for in the newest ``lookback_days`` days of partitions (None: all of them)."""
    partitions = date_partitions(archive)
    searched = partitions
    if lookback_days is not None and partitions:
        first = partitions[-1][0] - timedelta(days=lookback_days - 1)
        searched = [(day, path) for day, path in partitions if day >= first]
    newest = _newest_sample(archive, vin, searched)
    if newest is None:
        return SignalHistory(
            vin=vin,
            from_=None,
            to=None,
            rows=0,
            signals={name: _series_of(archive, name, []) for name in signals},
            track=[],
        )
    start = newest - timedelta(minutes=minutes)
    in_window = [path for day, path in partitions if start.date() <= day <= newest.date()]
    columns = [
        "ts",
        *(column_name(s) for s in signals),
        column_name(LATITUDE),
        column_name(LONGITUDE),
    ]
    table = _dataset(archive, in_window).to_table(
        columns=list(dict.fromkeys(columns)),
        filter=(ds.field("vin") == vin)
        & (ds.field("ts") >= _timestamp(start))
        & (ds.field("ts") <= _timestamp(newest)),
    )
    table = table.sort_by("ts")
    times = pc.cast(table["ts"], pa.int64())
    start_ms, end_ms = _epoch_ms(start), _epoch_ms(newest)
    return SignalHistory(
        vin=vin,
        from_=start,
        to=newest,
        rows=table.num_rows,
        signals={
            name: _series_of(
                archive,
                name,
                bucket_means(times, table[column_name(name)], start_ms, end_ms, max_points),
            )
            for name in signals
        },
        track=track_points(
            times, table[column_name(LATITUDE)], table[column_name(LONGITUDE)], max_points
        ),
    )


def bucket_means(
    times: pa.Array | pa.ChunkedArray,
    values: pa.Array | pa.ChunkedArray,
    start_ms: int,
    end_ms: int,
    max_points: int,
) -> list[tuple[int, float]]:
    """``[epoch_ms, value]`` of the samples with a value, at most ``max_points``: as stored
    when they fit, else one point per non-empty time bucket (``max_points`` buckets of equal
    width over ``start_ms..end_ms``): the mean value at the mean time of its samples."""
    series = pa.table({"t": times, "v": pc.cast(values, pa.float64())})
    series = series.filter(pc.is_finite(series["v"]))
    if series.num_rows > max_points:
        width = max(1, math.ceil((end_ms - start_ms + 1) / max_points))
        bucket = pc.divide(pc.subtract(series["t"], start_ms), width)  # integer division
        series = (
            series.append_column("bucket", bucket)
            .group_by("bucket")
            .aggregate([("t", "mean"), ("v", "mean")])
            .sort_by("bucket")
        )
        series = pa.table(
            {"t": pc.cast(pc.floor(series["t_mean"]), pa.int64()), "v": series["v_mean"]}
        )
    return list(zip(series["t"].to_pylist(), series["v"].to_pylist(), strict=True))


def track_points(
    times: pa.Array | pa.ChunkedArray,
    latitude: pa.Array | pa.ChunkedArray,
    longitude: pa.Array | pa.ChunkedArray,
    max_points: int,
) -> list[tuple[int, float, float]]:
    """``[epoch_ms, lat, lon]`` of the samples with a position, in the given (time) order; when
    there are more than ``max_points``, evenly spaced ones including the first and the last."""
    track = pa.table({"t": times, "lat": latitude, "lon": longitude})
    track = track.filter(pc.and_(pc.is_finite(track["lat"]), pc.is_finite(track["lon"])))
    if track.num_rows > max_points:
        picks = np.unique(np.linspace(0, track.num_rows - 1, max_points).round().astype(np.int64))
        track = track.take(pa.array(picks))
    return list(
        zip(
            track["t"].to_pylist(),
            track["lat"].to_pylist(),
            track["lon"].to_pylist(),
            strict=True,
        )
    )


def _newest_sample(
    archive: ParquetArchive, vin: str, partitions: Sequence[tuple[date, str]]
) -> datetime | None:
    """The time of the vehicle's newest sample: in the newest partition that has any of its
    samples (partitions are by the samples' own day, so no older one can hold a newer one)."""
    for _, path in reversed(partitions):
        times = _dataset(archive, [path]).to_table(columns=["ts"], filter=ds.field("vin") == vin)
        if times.num_rows:
            newest: datetime = pc.max(times["ts"]).as_py()
            return newest
    return None


def _dataset(archive: ParquetArchive, partitions: Sequence[str]) -> ds.Dataset:
    """The committed files of these partition directories, in the archive's schema (columns a
    file lacks read as nulls)."""
    files = [file for path in partitions for file in data_files(archive.fs, path)]
    return ds.dataset(files, schema=archive.schema, format="parquet", filesystem=archive.fs)


def _series_of(archive: ParquetArchive, name: str, points: list[tuple[int, float]]) -> SignalSeries:
    return SignalSeries(unit=archive.catalog[name].unit, points=points)


def _timestamp(moment: datetime) -> pa.Scalar:
    return pa.scalar(moment, pa.timestamp("ms", tz="UTC"))


def _epoch_ms(moment: datetime) -> int:
    return int(_timestamp(moment).cast(pa.int64()).as_py())
