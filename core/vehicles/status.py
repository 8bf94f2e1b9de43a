"""A vehicle's last known position and odometer, from telemetry tables.

:func:`latest_status` reduces a table of samples (the archive's schema, ``ingestion.batches``)
to one :class:`StatusUpdate` per VIN: the newest sample by event time whose latitude and
longitude are both valid and, independently, the newest valid odometer reading. :func:`merge`
combines the updates of successive tables the same way, so the order in which batches (or late,
store-and-forward samples) arrive does not matter: an older reading never replaces a newer one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from core.signals import CATALOG

LATITUDE = "Vehicle.CurrentLocation.Latitude"
LONGITUDE = "Vehicle.CurrentLocation.Longitude"
ODOMETER = "Vehicle.TraveledDistance"


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """What one stretch of telemetry says about a vehicle; a field group is None when it held no
    valid reading. Position and odometer carry their own event times and are merged
    independently."""

    position_ts: datetime | None = None
    latitude: float | None = None
    longitude: float | None = None
    odometer_ts: datetime | None = None
    odometer_m: float | None = None


def merge(older: StatusUpdate, newer: StatusUpdate) -> StatusUpdate:
    """Per field group, the reading with the later event time (``newer``'s on a tie: it
    arrived later). A group that ``newer`` lacks is kept from ``older``."""
    position = newer if _is_newer(newer.position_ts, older.position_ts) else older
    odometer = newer if _is_newer(newer.odometer_ts, older.odometer_ts) else older
    return StatusUpdate(
        position_ts=position.position_ts,
        latitude=position.latitude,
        longitude=position.longitude,
        odometer_ts=odometer.odometer_ts,
        odometer_m=odometer.odometer_m,
    )


def latest_status(table: pa.Table) -> dict[str, StatusUpdate]:
    """Per VIN in ``table``, the newest valid position and the newest valid odometer.

    A position needs both coordinates present, finite and within the catalog's ranges; an
    odometer reading needs to be present, finite and within range. Missing signal columns (a
    vehicle without GNSS) just leave that group empty; VINs with no valid reading of either
    kind are absent from the result."""
    positions = _newest_per_vin(table, (LATITUDE, LONGITUDE), _valid_position)
    odometers = _newest_per_vin(table, (ODOMETER,), _valid_odometer)
    updates: dict[str, StatusUpdate] = {}
    for vin in positions.keys() | odometers.keys():
        position_ts, (latitude, longitude) = positions.get(vin, (None, (None, None)))
        odometer_ts, (odometer_m,) = odometers.get(vin, (None, (None,)))
        updates[vin] = StatusUpdate(
            position_ts=position_ts,
            latitude=latitude,
            longitude=longitude,
            odometer_ts=odometer_ts,
            odometer_m=odometer_m,
        )
    return updates


# -- internals --------------------------------------------------------------------------------

_Reading = tuple[datetime, tuple[float, ...]]
_Validity = Callable[[Sequence[np.ndarray]], np.ndarray]


def _is_newer(candidate: datetime | None, current: datetime | None) -> bool:
    return candidate is not None and (current is None or candidate >= current)


def _in_range(values: np.ndarray, path: str) -> np.ndarray:
    spec = CATALOG[path]
    valid = np.isfinite(values)
    if spec.min is not None:
        valid &= values >= spec.min
    if spec.max is not None:
        valid &= values <= spec.max
    return valid


def _valid_position(values: Sequence[np.ndarray]) -> np.ndarray:
    latitude, longitude = values
    return _in_range(latitude, LATITUDE) & _in_range(longitude, LONGITUDE)


def _valid_odometer(values: Sequence[np.ndarray]) -> np.ndarray:
    (odometer,) = values
    return _in_range(odometer, ODOMETER)


def _newest_per_vin(
    table: pa.Table, columns: Sequence[str], valid: _Validity
) -> dict[str, _Reading]:
    """Per VIN, the event time and ``columns`` of its newest row where ``valid`` holds (the
    later row of the table on equal times)."""
    if table.num_rows == 0 or not {"vin", "ts", *columns} <= set(table.column_names):
        return {}
    # Nulls become NaN, which no validity check accepts.
    values = [_as_float(table[name]) for name in columns]
    vins = pc.dictionary_encode(table["vin"].combine_chunks())
    ts = table["ts"].combine_chunks()
    usable = valid(values) & _not_null(vins) & _not_null(ts)
    rows = np.flatnonzero(usable)
    if rows.size == 0:
        return {}
    codes = vins.indices.fill_null(0).to_numpy()
    ts_ms = pc.cast(ts, pa.int64()).fill_null(0).to_numpy()
    # Sort by (VIN, event time), stable so equal times keep table order; the last row of each
    # VIN's run is its newest.
    ordered = rows[np.lexsort((ts_ms[rows], codes[rows]))]
    run_ends = np.append(codes[ordered][1:] != codes[ordered][:-1], True)
    newest = ordered[run_ends]
    names = vins.dictionary.to_pylist()
    newest_vins = [names[code] for code in codes[newest].tolist()]
    newest_ts = [_utc(ms) for ms in ts_ms[newest].tolist()]
    readings = zip(*(column[newest].tolist() for column in values), strict=True)
    return dict(zip(newest_vins, zip(newest_ts, readings, strict=True), strict=True))


def _as_float(column: pa.ChunkedArray) -> np.ndarray:
    return np.asarray(
        pc.cast(column, pa.float64()).combine_chunks().to_numpy(zero_copy_only=False),
        dtype=np.float64,
    )


def _not_null(array: pa.Array) -> np.ndarray:
    return np.asarray(pc.is_valid(array).to_numpy(zero_copy_only=False), dtype=bool)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)
