"""Reading columns of telemetry tables (Arrow) as numpy arrays: the one way every analytic
(diagnosis features, trips and events, battery health) gets at its signals."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


def column(table: pa.Table, name: str) -> pa.Array | None:
    """A column as one contiguous array, or None when the table does not have it."""
    if name not in table.column_names:
        return None
    values = table[name]
    return values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values


def floats(table: pa.Table, name: str) -> FloatArray:
    """A numeric (or boolean) column as float64 with NaN for nulls; all NaN when missing."""
    values = column(table, name)
    if values is None:
        return np.full(table.num_rows, np.nan)
    if pa.types.is_boolean(values.type):
        values = pc.cast(values, pa.int8())
    return np.asarray(pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False), np.float64)


def timestamps_ms(table: pa.Table) -> IntArray:
    """``ts`` as epoch milliseconds (a timestamp or an integer column)."""
    values = column(table, "ts")
    if values is None:
        raise ValueError("the table has no 'ts' column")
    if pa.types.is_timestamp(values.type):
        values = values.cast(pa.timestamp("ms", tz=values.type.tz)).cast(pa.int64())
    return np.asarray(values.cast(pa.int64()).to_numpy(zero_copy_only=False), dtype=np.int64)
