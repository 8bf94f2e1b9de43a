"""Per-vehicle window features for predictive maintenance, identical in streaming and batch.

Every analytic is a function over a batch of samples (an Arrow table with the archive's columns:
``vin``, ``ts`` and one column per VSS signal). Features are computed in two steps:

1. :func:`bucketize` turns rows into **hourly buckets** per vehicle: for each derived *channel*
   (resting 12 V voltage, running coolant temperature, each tyre's pressure relative to the
   other tyres, cell-voltage spread, ...) the count, the sum and the sum of squares in integer
   fixed point (the signals are already rounded to a few decimals, so nothing is lost), and the
   minimum and maximum. All of these combine exactly and associatively, so the buckets of two
   batches merged (:meth:`Buckets.merge`) are bit-for-bit the buckets of the two batches
   concatenated, whatever the split. Float sums would not be: their result depends on the
   order of the additions.
2. :func:`window_features` reads trailing windows of those buckets (1 h, 24 h, 7 d, ending at
   an hour boundary) for each (vehicle, end) and computes levels, trends, variability, counts
   and times since events, always over the same fixed-shape arrays in the same order.

:func:`compute_features` (batch: the Parquet archive, training snapshots) and
:class:`FeatureState` (streaming: the ``pdm`` worker) both go through these two functions, so the
same samples give the same feature vectors however they were batched (a test checks it).

A window of ``W`` hours ending at ``end`` (a multiple of :data:`BUCKET_MS`) holds the samples
with ``end - W h <= ts < end``. For "now" use ``bucket_end(newest ts)``: the current hour is
then included as far as it has arrived. Times since events are measured from ``as_of``, the
newest sample before ``end``.

The feature list is fixed and versioned (:data:`FEATURE_VERSION`, :data:`FEATURE_NAMES`); the
names are stored with every model, and a model is refused when they differ.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core.columns import column as _column
from core.columns import floats as _floats
from core.columns import timestamps_ms as _timestamps

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

FEATURE_VERSION = "pdm-features-1"
"""Bump when a feature's meaning changes: models trained on another version are refused."""

BUCKET_MS = 3_600_000
HOUR_MS = 3_600_000
DAY_MS = 86_400_000
WINDOWS_H = (1, 24, 168)
MAX_WINDOW_H = max(WINDOWS_H)
BASELINE_H = 72
"""A vehicle's own baseline (tyres) is its first three days of data (before ``end``)."""
MIN_TREND_BUCKETS = 6
"""A trend needs at least this many hours with data, spread over at least a day."""

# -- VSS 6.0 signals read (core/signals.py) --------------------------------------------------------
SPEED = "Vehicle.Speed"
IS_MOVING = "Vehicle.IsMoving"
ODOMETER = "Vehicle.TraveledDistance"
AIR_TEMPERATURE = "Vehicle.Exterior.AirTemperature"
LV_VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"
LV_STATE = "Vehicle.LowVoltageSystemState"
ENGINE_SPEED = "Vehicle.Powertrain.CombustionEngine.Speed"
COOLANT = "Vehicle.Powertrain.CombustionEngine.EngineCoolant.Temperature"
_TB = "Vehicle.Powertrain.TractionBattery."
CELL_V_MIN = _TB + "CellVoltage.Min"
CELL_V_MAX = _TB + "CellVoltage.Max"
HV_CURRENT = _TB + "CurrentCurrent"
CELL_T_MIN = _TB + "Temperature.Min"
CELL_T_MAX = _TB + "Temperature.Max"
IS_CHARGING = _TB + "Charging.IsCharging"
CHARGE_DC = _TB + "Charging.ChargeCurrent.DC"
DTC_LIST = "Vehicle.Diagnostics.DTCList"
WHEELS = ("Row1.Wheel.Left", "Row1.Wheel.Right", "Row2.Wheel.Left", "Row2.Wheel.Right")
TIRE_PRESSURE = tuple(f"Vehicle.Chassis.Axle.{w}.Tire.Pressure" for w in WHEELS)
PAD_WEAR = tuple(f"Vehicle.Chassis.Axle.{w}.Brake.PadWear" for w in WHEELS)

INPUT_COLUMNS: tuple[str, ...] = (
    "vin", "ts", SPEED, IS_MOVING, ODOMETER, AIR_TEMPERATURE, LV_VOLTAGE, LV_STATE, ENGINE_SPEED,
    COOLANT, CELL_V_MIN, CELL_V_MAX, HV_CURRENT, CELL_T_MIN, CELL_T_MAX, IS_CHARGING, CHARGE_DC,
    DTC_LIST, *TIRE_PRESSURE, *PAD_WEAR,
)  # fmt: skip
"""The columns the features read (others are ignored; a missing one counts as all null)."""

ATMOSPHERE_KPA = 101.325
"""Tyre pressure is gauge pressure; ratios are taken of absolute pressure (ideal gas)."""

DTC_FAMILIES: dict[str, frozenset[str]] = {
    "lv": frozenset({"P0560", "P0561", "P0562", "P0563", "P0A94", "U3003"}),
    "cooling": frozenset(
        {"P0115", "P0116", "P0117", "P0118", "P0119", "P0125", "P0128", "P0217", "P2181"}
    ),
    "hv_battery": frozenset({"P0A7F", "P0A80", "P0AFA", "P0B24", "P0B3B", "P0B3C", "P0B3D"}),
}
"""SAE J2012 codes that point at a component family (system voltage; engine cooling; hybrid/EV
battery pack). Codes outside these still count towards the DTC totals."""


# -- channels --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Channel:
    """A per-row derived value, NaN where it does not apply (e.g. coolant on a BEV)."""

    name: str
    scale: float | None
    """Fixed-point scale of the sums (value * scale is summed as an integer); None: the
    channel keeps only its minimum and maximum."""


MOMENT_CHANNELS: tuple[Channel, ...] = (
    Channel("speed_moving_kmh", 10),
    Channel("ambient_c", 10),
    Channel("lv_rest_v", 1000),
    Channel("lv_crank_v", 1000),
    Channel("lv_run_v", 1000),
    Channel("coolant_warm_c", 10),
    *(Channel(f"tire_ratio_{i}", 10_000) for i in range(4)),
    Channel("cell_spread_mv", 10),
    Channel("cell_spread_rest_mv", 10),
    Channel("cell_temp_spread_c", 10),
    Channel("dc_charging", 1),
)
EXTREME_CHANNELS: tuple[str, ...] = (
    "sample_ts", "odometer_km", "ambient_c", "lv_crank_v", "coolant_run_c", "tire_kpa_min",
    *(f"pad_wear_{i}" for i in range(4)), "cell_spread_mv", "cell_temp_max_c", "dtc_count",
    "dtc_ts", "dtc_lv", "dtc_cooling", "dtc_hv_battery",
)  # fmt: skip
_M = {c.name: i for i, c in enumerate(MOMENT_CHANNELS)}
_X = {name: i for i, name in enumerate(EXTREME_CHANNELS)}
_SCALES = np.array([c.scale for c in MOMENT_CHANNELS], dtype=np.float64)


def bucket_end(ts_ms: int) -> int:
    """The exclusive end of the hour that contains ``ts_ms``: the window end for "now"."""
    return (ts_ms // BUCKET_MS + 1) * BUCKET_MS


def _flags(table: pa.Table, name: str) -> npt.NDArray[np.bool_]:
    values = _floats(table, name)
    return np.nan_to_num(values, nan=0.0) > 0.5


def _states(table: pa.Table, name: str, wanted: Sequence[str]) -> npt.NDArray[np.bool_]:
    column = _column(table, name)
    if column is None:
        return np.zeros(table.num_rows, dtype=bool)
    hit = pc.fill_null(pc.is_in(column, pa.array(list(wanted), pa.string())), False)
    return np.asarray(hit.to_numpy(zero_copy_only=False), dtype=bool)


def _code_bit(code: str) -> int:
    """A stable bit (0..63) per DTC for the distinct-code sketch of a bucket."""
    return zlib.crc32(code.encode()) % 64


def _dtc_columns(
    table: pa.Table,
) -> tuple[FloatArray, npt.NDArray[np.uint64], dict[str, FloatArray]]:
    """Per row: number of active codes (NaN where the list is absent), a 64-bit sketch of the
    codes, and 0/1 per code family."""
    n = table.num_rows
    column = _column(table, DTC_LIST)
    mask = np.zeros(n, dtype=np.uint64)
    if column is None:
        nan = np.full(n, np.nan)
        return nan, mask, {name: nan for name in DTC_FAMILIES}
    present = np.asarray(pc.is_valid(column).to_numpy(zero_copy_only=False), dtype=bool)
    counts = np.asarray(
        pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False),
        dtype=np.float64,
    )
    counts[~present] = np.nan
    families = {name: np.where(present, 0.0, np.nan) for name in DTC_FAMILIES}
    codes = pc.list_flatten(column)
    if len(codes):
        parents = np.asarray(pc.list_parent_indices(column).to_numpy(), dtype=np.int64)
        vocabulary = pc.unique(codes)
        index = np.asarray(pc.index_in(codes, vocabulary).to_numpy(zero_copy_only=False))
        words = vocabulary.to_pylist()
        bits = np.array([np.uint64(1) << np.uint64(_code_bit(str(w))) for w in words])
        np.bitwise_or.at(mask, parents, bits[index])
        for name, members in DTC_FAMILIES.items():
            in_family = np.array([w in members for w in words], dtype=bool)[index]
            if in_family.any():
                families[name][parents[in_family]] = 1.0
    return counts, mask, families


def row_channels(
    table: pa.Table,
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.uint64]]:
    """The channels of every row: moments (rows, len(MOMENT_CHANNELS)), extremes
    (rows, len(EXTREME_CHANNELS)) and the DTC sketch. Purely row-wise, so a row's channels
    never depend on the batch it arrives in."""
    n = table.num_rows
    ts = _timestamps(table)
    speed = _floats(table, SPEED)
    moving_flag = _floats(table, IS_MOVING)
    moving = np.where(np.isnan(moving_flag), np.nan_to_num(speed) >= 0.5, moving_flag > 0.5)
    charging = _flags(table, IS_CHARGING)
    lv = _floats(table, LV_VOLTAGE)
    resting = _states(table, LV_STATE, ("OFF", "LOCK")) & ~moving & ~charging
    cranking = _states(table, LV_STATE, ("START",))
    running = _states(table, LV_STATE, ("ON",)) & moving
    engine_on = np.nan_to_num(_floats(table, ENGINE_SPEED)) > 0
    coolant = _floats(table, COOLANT)
    coolant_run = np.where(engine_on, coolant, np.nan)
    tires = np.column_stack([_floats(table, c) for c in TIRE_PRESSURE]) + ATMOSPHERE_KPA
    with np.errstate(invalid="ignore"):
        ratios = tires / np.median(tires, axis=1, keepdims=True)
    cell_spread = (_floats(table, CELL_V_MAX) - _floats(table, CELL_V_MIN)) * 1000.0
    at_rest = np.abs(_floats(table, HV_CURRENT)) < 5.0
    cell_t_max = _floats(table, CELL_T_MAX)
    dc = np.abs(np.nan_to_num(_floats(table, CHARGE_DC))) > 0.5
    ambient = _floats(table, AIR_TEMPERATURE)
    dtc_count, dtc_mask, families = _dtc_columns(table)
    ts_f = ts.astype(np.float64)

    moments = np.full((n, len(MOMENT_CHANNELS)), np.nan)
    moments[:, _M["speed_moving_kmh"]] = np.where(moving, speed, np.nan)
    moments[:, _M["ambient_c"]] = ambient
    moments[:, _M["lv_rest_v"]] = np.where(resting, lv, np.nan)
    moments[:, _M["lv_crank_v"]] = np.where(cranking, lv, np.nan)
    moments[:, _M["lv_run_v"]] = np.where(running, lv, np.nan)
    moments[:, _M["coolant_warm_c"]] = np.where(coolant_run >= 80.0, coolant_run, np.nan)
    for i in range(4):
        moments[:, _M[f"tire_ratio_{i}"]] = ratios[:, i]
    moments[:, _M["cell_spread_mv"]] = cell_spread
    moments[:, _M["cell_spread_rest_mv"]] = np.where(at_rest, cell_spread, np.nan)
    moments[:, _M["cell_temp_spread_c"]] = cell_t_max - _floats(table, CELL_T_MIN)
    moments[:, _M["dc_charging"]] = np.where(charging, dc.astype(np.float64), np.nan)

    extremes = np.full((n, len(EXTREME_CHANNELS)), np.nan)
    extremes[:, _X["sample_ts"]] = ts_f
    extremes[:, _X["odometer_km"]] = _floats(table, ODOMETER) / 1000.0
    extremes[:, _X["ambient_c"]] = ambient
    extremes[:, _X["lv_crank_v"]] = np.where(cranking, lv, np.nan)
    extremes[:, _X["coolant_run_c"]] = coolant_run
    extremes[:, _X["tire_kpa_min"]] = np.min(tires, axis=1) - ATMOSPHERE_KPA
    for i, column in enumerate(PAD_WEAR):
        extremes[:, _X[f"pad_wear_{i}"]] = _floats(table, column)
    extremes[:, _X["cell_spread_mv"]] = cell_spread
    extremes[:, _X["cell_temp_max_c"]] = cell_t_max
    extremes[:, _X["dtc_count"]] = dtc_count
    extremes[:, _X["dtc_ts"]] = np.where(np.nan_to_num(dtc_count) > 0, ts_f, np.nan)
    for name, values in families.items():
        extremes[:, _X[f"dtc_{name}"]] = values
    return moments, extremes, dtc_mask


# -- buckets ---------------------------------------------------------------------------------------
def _vin_array(values: Iterable[str]) -> npt.NDArray[np.str_]:
    return np.asarray(list(values), dtype="<U32")


@dataclass
class Buckets:
    """Hourly statistics per vehicle, sorted by (vin, hour), one row per key.

    ``vins`` is the sorted vocabulary; ``vin_index`` points into it. Moments are integers
    (exact, associative sums); extremes are floats with +inf/-inf for "no value"."""

    vins: npt.NDArray[np.str_]
    vin_index: IntArray
    hour: IntArray
    count: npt.NDArray[np.int64]
    total: npt.NDArray[np.int64]
    squares: npt.NDArray[np.int64]
    low: FloatArray
    high: FloatArray
    dtc_mask: npt.NDArray[np.uint64]

    @classmethod
    def empty(cls) -> Buckets:
        m, x = len(MOMENT_CHANNELS), len(EXTREME_CHANNELS)
        return cls(
            vins=_vin_array([]),
            vin_index=np.zeros(0, np.int64),
            hour=np.zeros(0, np.int64),
            count=np.zeros((0, m), np.int64),
            total=np.zeros((0, m), np.int64),
            squares=np.zeros((0, m), np.int64),
            low=np.zeros((0, x)),
            high=np.zeros((0, x)),
            dtc_mask=np.zeros(0, np.uint64),
        )

    def __len__(self) -> int:
        return len(self.hour)

    @property
    def keys(self) -> IntArray:
        return _keys(self.vin_index, self.hour)

    def reindexed(self, vocabulary: npt.NDArray[np.str_]) -> Buckets:
        """The same buckets against a larger sorted vocabulary."""
        if len(self.vins) == len(vocabulary) and np.array_equal(self.vins, vocabulary):
            return self
        mapping = np.searchsorted(vocabulary, self.vins).astype(np.int64)
        return Buckets(
            vocabulary, mapping[self.vin_index], self.hour, self.count, self.total,
            self.squares, self.low, self.high, self.dtc_mask,
        )  # fmt: skip

    def merge(self, other: Buckets) -> Buckets:
        """Exactly the buckets of both inputs' rows together (sums add, extremes combine)."""
        vocabulary = np.union1d(self.vins, other.vins).astype(self.vins.dtype)
        a, b = self.reindexed(vocabulary), other.reindexed(vocabulary)
        return _reduce(
            vocabulary,
            np.concatenate([a.vin_index, b.vin_index]),
            np.concatenate([a.hour, b.hour]),
            np.concatenate([a.count, b.count]),
            np.concatenate([a.total, b.total]),
            np.concatenate([a.squares, b.squares]),
            np.concatenate([a.low, b.low]),
            np.concatenate([a.high, b.high]),
            np.concatenate([a.dtc_mask, b.dtc_mask]),
        )

    def hour_range(self) -> tuple[IntArray, IntArray]:
        """Per VIN of the vocabulary: its first and last hour with data."""
        first = np.full(len(self.vins), np.iinfo(np.int64).max, dtype=np.int64)
        last = np.full(len(self.vins), -1, dtype=np.int64)
        if len(self):
            np.minimum.at(first, self.vin_index, self.hour)
            np.maximum.at(last, self.vin_index, self.hour)
        return first, last

    def newest_sample_ms(self) -> IntArray:
        """Per VIN of the vocabulary: the time of its newest sample (-1: none)."""
        newest = np.full(len(self.vins), -1, dtype=np.int64)
        if len(self):
            ts = self.high[:, _X["sample_ts"]]
            ts_ms = np.where(np.isfinite(ts), ts, -1).astype(np.int64)
            np.maximum.at(newest, self.vin_index, ts_ms)
        return newest

    def take(self, rows: npt.NDArray[Any]) -> Buckets:
        return Buckets(
            self.vins, self.vin_index[rows], self.hour[rows], self.count[rows], self.total[rows],
            self.squares[rows], self.low[rows], self.high[rows], self.dtc_mask[rows],
        )  # fmt: skip

    def to_arrow(self) -> pa.Table:
        """One row per bucket (for persisting a :class:`FeatureState`)."""
        m, x = len(MOMENT_CHANNELS), len(EXTREME_CHANNELS)
        return pa.table(
            {
                "vin": pa.array(self.vins[self.vin_index] if len(self) else [], pa.string()),
                "hour": pa.array(self.hour, pa.int64()),
                "count": _matrix(self.count, m, pa.int64()),
                "total": _matrix(self.total, m, pa.int64()),
                "squares": _matrix(self.squares, m, pa.int64()),
                "low": _matrix(self.low, x, pa.float64()),
                "high": _matrix(self.high, x, pa.float64()),
                "dtc_mask": pa.array(self.dtc_mask, pa.uint64()),
            }
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> Buckets:
        vins = np.asarray(table["vin"].to_numpy(zero_copy_only=False)).astype("<U32")
        vocabulary, index = np.unique(vins, return_inverse=True)
        m, x = len(MOMENT_CHANNELS), len(EXTREME_CHANNELS)
        return _reduce(
            vocabulary.astype("<U32"),
            index.astype(np.int64),
            np.asarray(table["hour"].to_numpy(), dtype=np.int64),
            _unmatrix(table["count"], m, np.int64),
            _unmatrix(table["total"], m, np.int64),
            _unmatrix(table["squares"], m, np.int64),
            _unmatrix(table["low"], x, np.float64),
            _unmatrix(table["high"], x, np.float64),
            np.asarray(table["dtc_mask"].to_numpy(), dtype=np.uint64),
        )


def _matrix(values: npt.NDArray[Any], width: int, typ: pa.DataType) -> pa.Array:
    flat = pa.array(np.ascontiguousarray(values).reshape(-1), typ)
    return pa.FixedSizeListArray.from_arrays(flat, width)


def _unmatrix(column: pa.ChunkedArray, width: int, dtype: type) -> npt.NDArray[Any]:
    array = column.combine_chunks()
    values = array.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(values, dtype=dtype).reshape(-1, width)


def _keys(vin_index: IntArray, hour: IntArray) -> IntArray:
    return (vin_index << 32) + hour


def _reduce(
    vins: npt.NDArray[np.str_],
    vin_index: IntArray,
    hour: IntArray,
    count: npt.NDArray[np.int64],
    total: npt.NDArray[np.int64],
    squares: npt.NDArray[np.int64],
    low: FloatArray,
    high: FloatArray,
    dtc_mask: npt.NDArray[np.uint64],
) -> Buckets:
    """Group rows with equal (vin, hour) and combine them with associative operations."""
    if len(hour) == 0:
        empty = Buckets.empty()
        empty.vins = vins
        return empty
    keys = _keys(vin_index, hour)
    order = np.argsort(keys, kind="stable")
    keys = keys[order]
    starts = np.flatnonzero(np.concatenate(([True], keys[1:] != keys[:-1])))
    first = order[starts]
    return Buckets(
        vins=vins,
        vin_index=vin_index[first],
        hour=hour[first],
        count=np.add.reduceat(count[order], starts, axis=0),
        total=np.add.reduceat(total[order], starts, axis=0),
        squares=np.add.reduceat(squares[order], starts, axis=0),
        low=np.minimum.reduceat(low[order], starts, axis=0),
        high=np.maximum.reduceat(high[order], starts, axis=0),
        dtc_mask=np.bitwise_or.reduceat(dtc_mask[order], starts),
    )


BUCKETIZE_CHUNK_ROWS = 262_144
"""Rows per slice: a large table is bucketed a slice at a time and merged (exact), which keeps
the per-row channel matrices in cache-sized pieces and memory bounded."""


def bucketize(table: pa.Table) -> Buckets:
    """The hourly buckets of the rows of ``table`` (archive columns; see module docstring)."""
    if table.num_rows > BUCKETIZE_CHUNK_ROWS:
        merged = Buckets.empty()
        for start in range(0, table.num_rows, BUCKETIZE_CHUNK_ROWS):
            merged = merged.merge(_bucketize(table.slice(start, BUCKETIZE_CHUNK_ROWS)))
        return merged
    return _bucketize(table)


def _bucketize(table: pa.Table) -> Buckets:
    if table.num_rows == 0:
        return Buckets.empty()
    vin_column = _column(table, "vin")
    if vin_column is None:
        raise ValueError("the table has no 'vin' column")
    vins = np.asarray(vin_column.to_numpy(zero_copy_only=False)).astype("<U32")
    vocabulary, vin_index = np.unique(vins, return_inverse=True)
    hour = _timestamps(table) // BUCKET_MS
    moments, extremes, dtc_mask = row_channels(table)
    valid = ~np.isnan(moments)
    fixed = np.where(valid, np.rint(np.nan_to_num(moments) * _SCALES), 0.0).astype(np.int64)
    low = np.where(np.isnan(extremes), np.inf, extremes)
    high = np.where(np.isnan(extremes), -np.inf, extremes)
    return _reduce(
        vocabulary.astype("<U32"),
        vin_index.astype(np.int64),
        hour.astype(np.int64),
        valid.astype(np.int64),
        fixed,
        fixed * fixed,
        low,
        high,
        dtc_mask,
    )


# -- windows ---------------------------------------------------------------------------------------
class _Windows:
    """The trailing buckets of a chunk of queries, with cached window statistics."""

    def __init__(self, buckets: Buckets, vin_index: IntArray, end_hour: IntArray) -> None:
        q = len(end_hour)
        offsets = np.arange(-MAX_WINDOW_H, 0, dtype=np.int64)
        slots = self._lookup(buckets, vin_index[:, None], end_hour[:, None] + offsets[None, :])
        self.count = _gather(buckets.count, slots, 0)
        self.total = _gather(buckets.total, slots, 0)
        self.squares = _gather(buckets.squares, slots, 0)
        self.low = _gather(buckets.low, slots, np.inf)
        self.high = _gather(buckets.high, slots, -np.inf)
        sentinel = np.concatenate([buckets.dtc_mask, np.zeros(1, np.uint64)])
        self.dtc_mask = sentinel[slots]
        self.q = q
        self._cache: dict[tuple[str, ...], FloatArray] = {}
        # The vehicle's own baseline: its first BASELINE_H hours of data before ``end``.
        first_hour = np.concatenate([buckets.hour_range()[0], [0, 0]])[vin_index]
        base_hours = first_hour[:, None] + np.arange(BASELINE_H, dtype=np.int64)[None, :]
        base_slots = self._lookup(buckets, vin_index[:, None], base_hours)
        base_slots = np.where(base_hours < end_hour[:, None], base_slots, len(buckets))
        self.base_count = _gather(buckets.count, base_slots, 0)
        self.base_total = _gather(buckets.total, base_slots, 0)

    @staticmethod
    def _lookup(buckets: Buckets, vin_index: IntArray, hours: IntArray) -> IntArray:
        keys = buckets.keys
        wanted = _keys(np.broadcast_to(vin_index, hours.shape), hours)
        pos = np.searchsorted(keys, wanted)
        found = pos < len(keys)
        found[found] = keys[pos[found]] == wanted[found]
        return np.where(found, pos, len(keys))

    # Moments ---------------------------------------------------------------------------------
    def n(self, channel: str, hours: int) -> FloatArray:
        return self.count[:, -hours:, _M[channel]].sum(axis=1).astype(np.float64)

    def mean(self, channel: str, hours: int) -> FloatArray:
        key = ("mean", channel, str(hours))
        if key not in self._cache:
            c = _M[channel]
            n = self.count[:, -hours:, c].sum(axis=1).astype(np.float64)
            s = self.total[:, -hours:, c].sum(axis=1).astype(np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                self._cache[key] = np.where(n > 0, s / n / _SCALES[c], np.nan)
        return self._cache[key]

    def std(self, channel: str, hours: int) -> FloatArray:
        c = _M[channel]
        n = self.count[:, -hours:, c].sum(axis=1).astype(np.float64)
        s = self.total[:, -hours:, c].sum(axis=1).astype(np.float64)
        sq = self.squares[:, -hours:, c].sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            var = sq / n - (s / n) ** 2
            return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)) / _SCALES[c], np.nan)

    def hourly_means(self, channel: str, hours: int) -> FloatArray:
        c = _M[channel]
        n = self.count[:, -hours:, c].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self.total[:, -hours:, c] / n / _SCALES[c], np.nan)

    def min_hourly_mean(self, channel: str, hours: int) -> FloatArray:
        means = self.hourly_means(channel, hours)
        low = np.where(np.isnan(means), np.inf, means).min(axis=1)
        return np.where(np.isfinite(low), low, np.nan)

    def last_hourly_mean(self, channel: str) -> FloatArray:
        means = self.hourly_means(channel, MAX_WINDOW_H)
        return _last_valid(means)

    def slope_per_day(self, channel: str, hours: int) -> FloatArray:
        """Least-squares slope of the hourly means against time, per day."""
        return _slope(self.hourly_means(channel, hours))

    def baseline_mean(self, channel: str) -> FloatArray:
        c = _M[channel]
        n = self.base_count[:, :, c].sum(axis=1).astype(np.float64)
        s = self.base_total[:, :, c].sum(axis=1).astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n / _SCALES[c], np.nan)

    # Extremes --------------------------------------------------------------------------------
    def min(self, channel: str, hours: int) -> FloatArray:
        low = self.low[:, -hours:, _X[channel]].min(axis=1)
        return np.where(np.isfinite(low), low, np.nan)

    def max(self, channel: str, hours: int) -> FloatArray:
        high = self.high[:, -hours:, _X[channel]].max(axis=1)
        return np.where(np.isfinite(high), high, np.nan)

    def last_max(self, channel: str) -> FloatArray:
        """The maximum of the latest hour that has a value (e.g. pad wear now)."""
        high = self.high[:, :, _X[channel]]
        return _last_valid(np.where(np.isfinite(high), high, np.nan))

    def as_of(self) -> FloatArray:
        return self.max("sample_ts", MAX_WINDOW_H)

    def covered_days(self, hours: int) -> FloatArray:
        return (self.max("sample_ts", hours) - self.min("sample_ts", hours)) / DAY_MS

    def km(self, hours: int) -> FloatArray:
        return self.max("odometer_km", hours) - self.min("odometer_km", hours)

    def distinct_dtcs(self, hours: int) -> FloatArray:
        mask = np.bitwise_or.reduce(self.dtc_mask[:, -hours:], axis=1)
        return np.bitwise_count(mask).astype(np.float64)


def _gather(values: npt.NDArray[Any], slots: IntArray, fill: float) -> npt.NDArray[Any]:
    padded = np.concatenate([values, np.full((1, values.shape[1]), fill, dtype=values.dtype)])
    return padded[slots]


def _last_valid(values: FloatArray) -> FloatArray:
    valid = ~np.isnan(values)
    width = values.shape[1]
    last = width - 1 - np.argmax(valid[:, ::-1], axis=1)
    out = values[np.arange(len(values)), last]
    return np.where(valid.any(axis=1), out, np.nan)


def _slope(y: FloatArray) -> FloatArray:
    valid = ~np.isnan(y)
    x = np.arange(y.shape[1], dtype=np.float64)[None, :] / 24.0
    w = valid.astype(np.float64)
    yv = np.where(valid, y, 0.0)
    n = w.sum(axis=1)
    sx = (w * x).sum(axis=1)
    sy = yv.sum(axis=1)
    sxx = (w * x * x).sum(axis=1)
    sxy = (yv * x).sum(axis=1)
    span = np.where(valid, x, -np.inf).max(axis=1) - np.where(valid, x, np.inf).min(axis=1)
    denominator = n * sxx - sx * sx
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (n * sxy - sx * sy) / denominator
    ok = (n >= MIN_TREND_BUCKETS) & (span >= 1.0) & (denominator > 0)
    return np.where(ok, slope, np.nan)


# -- the feature list ------------------------------------------------------------------------------
Compute = Callable[[_Windows], FloatArray]


@dataclass(frozen=True)
class FeatureSpec:
    """One model input. ``text`` turns a value into words for a reason: ``{v}`` is the value
    formatted with ``fmt``, ``{abs}`` its magnitude and ``{dir}`` ``words[0]`` when negative,
    ``words[1]`` otherwise."""

    name: str
    compute: Compute = field(repr=False, compare=False)
    text: str
    fmt: str = ".1f"
    words: tuple[str, str] = ("below", "above")
    missing: str = ""
    """Wording when the value is missing (NaN); default: "no recent data (<name>)"."""
    zero: str = ""
    """Wording when the value is exactly 0 (for flags), if given."""

    def describe(self, value: float) -> str:
        if value is None or math.isnan(value):
            return self.missing or f"no recent data ({self.name})"
        if value == 0 and self.zero:
            return self.zero
        return self.text.format(
            v=format(value, self.fmt),
            abs=format(abs(value), self.fmt),
            dir=self.words[0] if value < 0 else self.words[1],
        )


def _tire_vs_baseline(hours: int) -> Compute:
    def compute(w: _Windows) -> FloatArray:
        rel = [
            100.0 * (w.mean(f"tire_ratio_{i}", hours) / w.baseline_mean(f"tire_ratio_{i}") - 1)
            for i in range(4)
        ]
        return _nanmin(rel)

    return compute


def _tire_vs_others(hours: int) -> Compute:
    return lambda w: _nanmin([100.0 * (w.mean(f"tire_ratio_{i}", hours) - 1) for i in range(4)])


def _tire_slope(w: _Windows) -> FloatArray:
    return _nanmin([100.0 * w.slope_per_day(f"tire_ratio_{i}", MAX_WINDOW_H) for i in range(4)])


def _pad_increase(w: _Windows, i: int, hours: int) -> FloatArray:
    return w.max(f"pad_wear_{i}", hours) - w.min(f"pad_wear_{i}", hours)


def _pad_rate_per_day(hours: int) -> Compute:
    def compute(w: _Windows) -> FloatArray:
        days = w.covered_days(hours)
        rates = [_pad_increase(w, i, hours) for i in range(4)]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(days >= 0.5, _nanmax(rates) / np.maximum(days, 0.5), np.nan)

    return compute


def _pad_per_1000km(w: _Windows) -> FloatArray:
    km = w.km(MAX_WINDOW_H)
    increase = _nanmax([_pad_increase(w, i, MAX_WINDOW_H) for i in range(4)])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(km >= 20.0, increase / km * 1000.0, np.nan)


def _pad_axle_difference(w: _Windows) -> FloatArray:
    now = [w.last_max(f"pad_wear_{i}") for i in range(4)]
    return _nanmax([np.abs(now[0] - now[1]), np.abs(now[2] - now[3])])


def _km_per_day(w: _Windows) -> FloatArray:
    return w.km(MAX_WINDOW_H) / np.maximum(w.covered_days(MAX_WINDOW_H), 1.0)


def _hours_moving_per_day(w: _Windows) -> FloatArray:
    speed = w.mean("speed_moving_kmh", MAX_WINDOW_H)
    with np.errstate(invalid="ignore", divide="ignore"):
        hours = np.where(speed > 1.0, w.km(MAX_WINDOW_H) / speed, np.nan)
    return hours / np.maximum(w.covered_days(MAX_WINDOW_H), 1.0)


def _hours_since(channel: str, use_max: bool) -> Compute:
    def compute(w: _Windows) -> FloatArray:
        event = w.max(channel, MAX_WINDOW_H) if use_max else w.min(channel, MAX_WINDOW_H)
        return (w.as_of() - event) / HOUR_MS

    return compute


def _nanmin(arrays: Sequence[FloatArray]) -> FloatArray:
    stacked = np.vstack(arrays)
    low = np.where(np.isnan(stacked), np.inf, stacked).min(axis=0)
    return np.where(np.isfinite(low), low, np.nan)


def _nanmax(arrays: Sequence[FloatArray]) -> FloatArray:
    stacked = np.vstack(arrays)
    high = np.where(np.isnan(stacked), -np.inf, stacked).max(axis=0)
    return np.where(np.isfinite(high), high, np.nan)


def _f(name: str, compute: Compute, text: str, **options: Any) -> FeatureSpec:
    return FeatureSpec(name, compute, text, **options)


W1, W24, W7D = WINDOWS_H

FEATURES: tuple[FeatureSpec, ...] = (
    # Usage intensity
    _f("odometer_km", lambda w: w.max("odometer_km", W7D), "odometer {v} km", fmt=".0f"),
    _f("km_per_day_7d", _km_per_day, "{v} km per day over 7 days", fmt=".0f"),
    _f("km_24h", lambda w: w.km(W24), "{v} km driven in 24 h", fmt=".0f"),
    _f("hours_moving_per_day_7d", _hours_moving_per_day, "{v} h moving per day over 7 days"),
    _f("speed_moving_mean_7d", lambda w: w.mean("speed_moving_kmh", W7D),
       "average speed while moving {v} km/h", fmt=".0f"),
    _f("ambient_mean_24h", lambda w: w.mean("ambient_c", W24), "outside air {v} C (24 h mean)"),
    _f("ambient_min_7d", lambda w: w.min("ambient_c", W7D), "coldest outside air {v} C (7 days)"),
    # 12 V battery
    _f("lv_rest_v_last", lambda w: w.last_hourly_mean("lv_rest_v"),
       "resting 12 V voltage {v} V (latest hour)", fmt=".2f"),
    _f("lv_rest_v_min_24h", lambda w: w.min_hourly_mean("lv_rest_v", W24),
       "lowest resting 12 V voltage {v} V (hourly mean, 24 h)", fmt=".2f"),
    _f("lv_rest_v_mean_24h", lambda w: w.mean("lv_rest_v", W24),
       "resting 12 V voltage {v} V (24 h mean)", fmt=".2f"),
    _f("lv_rest_v_mean_7d", lambda w: w.mean("lv_rest_v", W7D),
       "resting 12 V voltage {v} V (7 day mean)", fmt=".2f"),
    _f("lv_rest_v_std_7d", lambda w: w.std("lv_rest_v", W7D),
       "resting 12 V voltage varies by {v} V (7 days)", fmt=".2f"),
    _f("lv_rest_v_slope_7d", lambda w: w.slope_per_day("lv_rest_v", W7D),
       "resting 12 V voltage {dir} by {abs} V per day (7 days)", fmt=".3f",
       words=("falling", "rising")),
    _f("lv_crank_v_min_7d", lambda w: w.min("lv_crank_v", W7D),
       "deepest cranking dip {v} V (7 days)", fmt=".2f"),
    _f("lv_crank_v_mean_7d", lambda w: w.mean("lv_crank_v", W7D),
       "cranking voltage {v} V (7 day mean)", fmt=".2f"),
    _f("lv_crank_v_slope_7d", lambda w: w.slope_per_day("lv_crank_v", W7D),
       "cranking voltage {dir} by {abs} V per day (7 days)", fmt=".3f",
       words=("falling", "rising")),
    _f("lv_run_v_mean_24h", lambda w: w.mean("lv_run_v", W24),
       "12 V voltage while driving {v} V (24 h mean)", fmt=".2f"),
    _f("lv_run_v_mean_7d", lambda w: w.mean("lv_run_v", W7D),
       "12 V voltage while driving {v} V (7 day mean)", fmt=".2f"),
    # Engine cooling
    _f("coolant_run_max_1h", lambda w: w.max("coolant_run_c", W1),
       "coolant peaked at {v} C with the engine running (1 h)"),
    _f("coolant_run_max_24h", lambda w: w.max("coolant_run_c", W24),
       "coolant peaked at {v} C with the engine running (24 h)"),
    _f("coolant_run_max_7d", lambda w: w.max("coolant_run_c", W7D),
       "coolant peaked at {v} C with the engine running (7 days)"),
    _f("coolant_warm_mean_24h", lambda w: w.mean("coolant_warm_c", W24),
       "warm-engine coolant {v} C (24 h mean)"),
    _f("coolant_warm_mean_7d", lambda w: w.mean("coolant_warm_c", W7D),
       "warm-engine coolant {v} C (7 day mean)"),
    _f("coolant_warm_std_24h", lambda w: w.std("coolant_warm_c", W24),
       "warm-engine coolant varies by {v} C (24 h)"),
    _f("coolant_warm_slope_7d", lambda w: w.slope_per_day("coolant_warm_c", W7D),
       "warm-engine coolant {dir} by {abs} C per day (7 days)", fmt=".2f",
       words=("falling", "rising")),
    # Tyres
    _f("tire_vs_baseline_min_pct_1h", _tire_vs_baseline(W1),
       "lowest tire pressure {abs} % {dir} this vehicle's baseline (1 h)"),
    _f("tire_vs_baseline_min_pct_24h", _tire_vs_baseline(W24),
       "lowest tire pressure {abs} % {dir} this vehicle's baseline (24 h)"),
    _f("tire_vs_baseline_min_pct_7d", _tire_vs_baseline(W7D),
       "lowest tire pressure {abs} % {dir} this vehicle's baseline (7 days)"),
    _f("tire_vs_others_min_pct_24h", _tire_vs_others(W24),
       "lowest tire {abs} % {dir} the other tires (24 h)"),
    _f("tire_slope_min_pct_per_day_7d", _tire_slope,
       "a tire's pressure {dir} by {abs} % per day (7 days)", fmt=".2f",
       words=("falling", "rising")),
    _f("tire_kpa_min_24h", lambda w: w.min("tire_kpa_min", W24),
       "lowest tire pressure {v} kPa (24 h)", fmt=".0f"),
    # Brakes
    _f("pad_wear_max_pct", lambda w: _nanmax([w.last_max(f"pad_wear_{i}") for i in range(4)]),
       "most worn brake pad at {v} % wear", fmt=".0f"),
    _f("pad_wear_rate_max_pct_per_day_24h", _pad_rate_per_day(W24),
       "a brake pad wore {v} % in a day", fmt=".1f"),
    _f("pad_wear_rate_max_pct_per_day_7d", _pad_rate_per_day(W7D),
       "a brake pad wears {v} % per day (7 days)", fmt=".2f"),
    _f("pad_wear_per_1000km_max_7d", _pad_per_1000km,
       "a brake pad wears {v} % per 1000 km (7 days)", fmt=".1f"),
    _f("pad_wear_axle_difference_pct", _pad_axle_difference,
       "left and right brake pads differ by {v} % wear", fmt=".0f"),
    # Traction battery
    _f("cell_spread_mv_mean_24h", lambda w: w.mean("cell_spread_mv", W24),
       "cell voltage spread {v} mV (24 h mean)", fmt=".0f"),
    _f("cell_spread_mv_max_24h", lambda w: w.max("cell_spread_mv", W24),
       "cell voltage spread up to {v} mV (24 h)", fmt=".0f"),
    _f("cell_spread_mv_mean_7d", lambda w: w.mean("cell_spread_mv", W7D),
       "cell voltage spread {v} mV (7 day mean)", fmt=".0f"),
    _f("cell_spread_mv_slope_7d", lambda w: w.slope_per_day("cell_spread_mv", W7D),
       "cell voltage spread {dir} by {abs} mV per day (7 days)", fmt=".1f",
       words=("shrinking", "growing")),
    _f("cell_spread_rest_mv_mean_24h", lambda w: w.mean("cell_spread_rest_mv", W24),
       "cell voltage spread at rest {v} mV (24 h mean)", fmt=".0f"),
    _f("cell_spread_rest_mv_mean_7d", lambda w: w.mean("cell_spread_rest_mv", W7D),
       "cell voltage spread at rest {v} mV (7 day mean)", fmt=".0f"),
    _f("cell_temp_spread_c_mean_24h", lambda w: w.mean("cell_temp_spread_c", W24),
       "cell temperature spread {v} C (24 h mean)"),
    _f("cell_temp_max_c_7d", lambda w: w.max("cell_temp_max_c", W7D),
       "hottest cell {v} C (7 days)"),
    _f("dc_charging_share_7d", lambda w: 100.0 * w.mean("dc_charging", W7D),
       "{v} % of charging time on DC fast chargers (7 days)", fmt=".0f"),
    # Trouble codes
    _f("dtc_active_count", lambda w: w.max("dtc_count", W1), "{v} trouble codes active",
       fmt=".0f", missing="no trouble-code report in the last hour"),
    _f("dtc_count_max_24h", lambda w: w.max("dtc_count", W24),
       "up to {v} trouble codes active (24 h)", fmt=".0f"),
    _f("dtc_distinct_7d", lambda w: w.distinct_dtcs(W7D), "{v} distinct trouble codes (7 days)",
       fmt=".0f"),
    _f("hours_since_dtc", _hours_since("dtc_ts", use_max=True),
       "a trouble code was active {v} h ago", fmt=".0f",
       missing="no trouble code in 7 days"),
    _f("hours_since_first_dtc_7d", _hours_since("dtc_ts", use_max=False),
       "first trouble code of the week {v} h ago", fmt=".0f",
       missing="no trouble code in 7 days"),
    _f("dtc_lv_7d", lambda w: w.max("dtc_lv", W7D),
       "a system-voltage trouble code (7 days)", zero="no system-voltage trouble code (7 days)",
       missing="no trouble-code report in 7 days"),
    _f("dtc_cooling_7d", lambda w: w.max("dtc_cooling", W7D),
       "a cooling-system trouble code (7 days)", zero="no cooling-system trouble code (7 days)",
       missing="no trouble-code report in 7 days"),
    _f("dtc_hv_battery_7d", lambda w: w.max("dtc_hv_battery", W7D),
       "a traction-battery trouble code (7 days)",
       zero="no traction-battery trouble code (7 days)",
       missing="no trouble-code report in 7 days"),
)  # fmt: skip
FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
FEATURES_BY_NAME: dict[str, FeatureSpec] = {f.name: f for f in FEATURES}
QUERY_CHUNK = 512
"""Queries per chunk: bounds memory to a few tens of MB (chunk x 168 hours x channels)."""


@dataclass(frozen=True)
class FeatureFrame:
    """Feature vectors, one row per (vehicle, window end)."""

    vins: npt.NDArray[np.str_]
    end_ms: IntArray
    """Exclusive window end (an hour boundary)."""
    as_of_ms: IntArray
    """The newest sample used (-1 when the vehicle had no sample in the last 7 days)."""
    values: FloatArray
    """(rows, features), C-contiguous float64, NaN where a feature does not apply."""
    names: tuple[str, ...] = FEATURE_NAMES
    version: str = FEATURE_VERSION

    def __len__(self) -> int:
        return len(self.vins)

    def column(self, name: str) -> FloatArray:
        return self.values[:, self.names.index(name)]

    def take(self, rows: npt.NDArray[Any]) -> FeatureFrame:
        return FeatureFrame(
            self.vins[rows], self.end_ms[rows], self.as_of_ms[rows],
            np.ascontiguousarray(self.values[rows]), self.names, self.version,
        )  # fmt: skip

    def to_arrow(self) -> pa.Table:
        columns: dict[str, pa.Array] = {
            "vin": pa.array(self.vins.tolist(), pa.string()),
            "end_ms": pa.array(self.end_ms, pa.int64()),
            "as_of_ms": pa.array(self.as_of_ms, pa.int64()),
        }
        for i, name in enumerate(self.names):
            columns[name] = pa.array(self.values[:, i], pa.float64())
        table = pa.table(columns)
        return table.replace_schema_metadata({"feature_version": self.version})

    @classmethod
    def from_arrow(cls, table: pa.Table) -> FeatureFrame:
        meta = table.schema.metadata or {}
        version = meta.get(b"feature_version", FEATURE_VERSION.encode()).decode()
        names = tuple(n for n in table.column_names if n not in ("vin", "end_ms", "as_of_ms"))
        values = np.column_stack(
            [np.asarray(table[n].to_numpy(zero_copy_only=False), np.float64) for n in names]
        ) if names else np.zeros((table.num_rows, 0))  # fmt: skip
        return cls(
            np.asarray(table["vin"].to_numpy(zero_copy_only=False)).astype("<U32"),
            np.asarray(table["end_ms"].to_numpy(), np.int64),
            np.asarray(table["as_of_ms"].to_numpy(), np.int64),
            np.ascontiguousarray(values),
            names,
            version,
        )

    @classmethod
    def concat(cls, frames: Sequence[FeatureFrame]) -> FeatureFrame:
        if not frames:
            return _empty_frame()
        return cls(
            np.concatenate([f.vins for f in frames]),
            np.concatenate([f.end_ms for f in frames]),
            np.concatenate([f.as_of_ms for f in frames]),
            np.ascontiguousarray(np.vstack([f.values for f in frames])),
            frames[0].names,
            frames[0].version,
        )


def _empty_frame() -> FeatureFrame:
    return FeatureFrame(
        _vin_array([]), np.zeros(0, np.int64), np.zeros(0, np.int64),
        np.zeros((0, len(FEATURES))),
    )  # fmt: skip


def window_features(
    buckets: Buckets, vins: Sequence[str] | npt.NDArray[np.str_], end_ms: Sequence[int] | IntArray
) -> FeatureFrame:
    """Features of each (``vins[i]``, ``end_ms[i]``) query; ``end_ms`` must be hour
    boundaries. A vehicle without buckets gets NaN features."""
    vin_array = _vin_array(vins)
    ends = np.asarray(end_ms, dtype=np.int64)
    if len(vin_array) != len(ends):
        raise ValueError("vins and end_ms must have the same length")
    if np.any(ends % BUCKET_MS):
        raise ValueError("end_ms must be multiples of BUCKET_MS (use bucket_end(ts))")
    if len(ends) == 0:
        return _empty_frame()
    pos = np.searchsorted(buckets.vins, vin_array)
    known = pos < len(buckets.vins)
    known[known] = buckets.vins[pos[known]] == vin_array[known]
    # Unknown vehicles point past the vocabulary: every lookup misses.
    vin_index = np.where(known, pos, len(buckets.vins) + 1).astype(np.int64)
    end_hour = ends // BUCKET_MS
    values = np.empty((len(ends), len(FEATURES)))
    as_of = np.empty(len(ends))
    for start in range(0, len(ends), QUERY_CHUNK):
        chunk = slice(start, start + QUERY_CHUNK)
        windows = _Windows(buckets, vin_index[chunk], end_hour[chunk])
        for j, spec in enumerate(FEATURES):
            values[chunk, j] = spec.compute(windows)
        as_of[chunk] = windows.as_of()
    as_of_ms = np.where(np.isnan(as_of), -1, as_of).astype(np.int64)
    values[as_of_ms < 0] = np.nan
    return FeatureFrame(vin_array, ends, as_of_ms, np.ascontiguousarray(values))


def compute_features(table: pa.Table, *, end_ms: int | None = None) -> FeatureFrame:
    """Batch features: one row per vehicle in ``table``, sorted by VIN. The window ends at
    ``end_ms`` (an hour boundary) for every vehicle, or by default at the end of the hour of
    each vehicle's newest sample (what the streaming worker scores)."""
    buckets = bucketize(table)
    return _latest(buckets, buckets.vins, end_ms)


def _latest(buckets: Buckets, vins: npt.NDArray[np.str_], end_ms: int | None) -> FeatureFrame:
    if end_ms is not None:
        return window_features(buckets, vins, np.full(len(vins), end_ms, dtype=np.int64))
    last_hour = buckets.hour_range()[1]
    pos = np.searchsorted(buckets.vins, vins)
    ends = (last_hour[pos] + 1) * BUCKET_MS
    return window_features(buckets, vins, ends)


class FeatureState:
    """Streaming features: the buckets of the samples seen so far, trimmed to what the windows
    and baselines can still need.

    ``update(batch)`` merges a batch's buckets (exactly, see :meth:`Buckets.merge`) and
    ``features()`` computes each vehicle's features with :func:`window_features`, the function
    the batch path uses; so for the same samples both give the same vectors, however the stream
    was cut into batches. Kept per vehicle: the last 7 days of hourly buckets and the first
    :data:`BASELINE_H` hours (its baseline): at most 240 buckets of 656 bytes, about 160 kB.
    Duplicate samples (the same message delivered twice) would count twice: feed it
    deduplicated batches, as the archive is.

    The state can be saved and restored (:meth:`to_arrow`, :meth:`from_arrow`) so a restarted
    worker does not lose the baselines."""

    def __init__(self, buckets: Buckets | None = None) -> None:
        self._buckets = buckets if buckets is not None else Buckets.empty()

    @property
    def buckets(self) -> Buckets:
        return self._buckets

    @property
    def vins(self) -> npt.NDArray[np.str_]:
        return self._buckets.vins

    def update(self, table: pa.Table) -> npt.NDArray[np.str_]:
        """Add a batch of samples; returns the VINs it touched (sorted)."""
        batch = bucketize(table)
        if len(batch) == 0:
            return _vin_array([])
        self._buckets = self._trim(self._combine(self._buckets, batch))
        return batch.vins

    @staticmethod
    def _combine(state: Buckets, batch: Buckets) -> Buckets:
        """Merge; when every key of the batch already exists, update in place (the common
        case within an hour) instead of re-sorting the whole state."""
        if len(state) and np.isin(batch.vins, state.vins).all():
            batch = batch.reindexed(state.vins)
            keys = state.keys
            pos = np.searchsorted(keys, batch.keys)
            inside = pos < len(keys)
            if inside.all() and np.array_equal(keys[pos], batch.keys):
                state.count[pos] += batch.count
                state.total[pos] += batch.total
                state.squares[pos] += batch.squares
                np.minimum(state.low[pos], batch.low, out=batch.low)
                state.low[pos] = batch.low
                np.maximum(state.high[pos], batch.high, out=batch.high)
                state.high[pos] = batch.high
                state.dtc_mask[pos] |= batch.dtc_mask
                return state
        return state.merge(batch)

    @staticmethod
    def _trim(buckets: Buckets) -> Buckets:
        if not len(buckets):
            return buckets
        first, last = buckets.hour_range()
        keep = (buckets.hour > last[buckets.vin_index] - MAX_WINDOW_H) | (
            buckets.hour < first[buckets.vin_index] + BASELINE_H
        )
        return buckets if keep.all() else buckets.take(np.flatnonzero(keep))

    def features(
        self, vins: Sequence[str] | npt.NDArray[np.str_] | None = None, *, end_ms: int | None = None
    ) -> FeatureFrame:
        """Features of ``vins`` (default: every vehicle in the state), sorted by VIN, with the
        window ending at the end of each vehicle's newest hour, or at ``end_ms`` (which must not
        be before that: older windows may have been trimmed)."""
        wanted = self.vins if vins is None else np.intersect1d(_vin_array(vins), self.vins)
        if end_ms is not None and len(self._buckets):
            last = self._buckets.hour_range()[1]
            newest = (last[np.searchsorted(self.vins, wanted)] + 1) * BUCKET_MS
            if np.any(newest > end_ms):
                raise ValueError("end_ms is before a vehicle's newest hour; windows are trimmed")
        return _latest(self._buckets, wanted, end_ms)

    def to_arrow(self) -> pa.Table:
        return self._buckets.to_arrow().replace_schema_metadata(
            {"feature_version": FEATURE_VERSION}
        )

    @classmethod
    def from_arrow(cls, table: pa.Table) -> FeatureState:
        version = (table.schema.metadata or {}).get(b"feature_version", b"").decode()
        if version != FEATURE_VERSION:
            raise ValueError(f"feature state of version {version!r}, expected {FEATURE_VERSION}")
        return cls(Buckets.from_arrow(table))
