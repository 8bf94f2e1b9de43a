"""Trip segmentation over batches of telemetry samples, identical in streaming and batch.

Input is an Arrow table with the archive's columns (``ingestion/archive.py::archive_schema``):
``vin``, ``ts`` and one column per VSS signal. Columns read (a missing one counts as all null):

- ``Vehicle.LowVoltageSystemState``: ignition; ``ON``/``START`` mean the vehicle is switched on.
- ``Vehicle.Powertrain.Transmission.CurrentGear``: non-zero means a gear is engaged.
- ``Vehicle.Speed`` (km/h): moving at or above :attr:`TripConfig.moving_kmh`.
- ``Vehicle.TraveledDistance`` (m): the odometer, preferred for trip distance; without it the
  distance is the integral of speed.
- a posted speed limit column (km/h) when :attr:`TripConfig.speed_limit_column` names one that
  the table has. VSS 6.0 has no legal speed-limit signal (``core/signals.py``), so by default
  the **fallback** applies: speeding is speed above :attr:`TripConfig.fallback_limit_kmh`
  (130 km/h, the highest general limit in most of Europe), which catches only gross speeding.

**Segmentation.** A sample is *active* when ignition is on, or a gear is engaged, or the
vehicle moves. A trip runs from an active sample to the last active sample before a pause of
more than :attr:`TripConfig.end_after_s` (default 5 min) with no active sample: waiting at a red
light (ignition on, gear engaged, speed 0) keeps the trip open, and so does a short stop with the
engine off (a fuel stop shorter than the pause). A data gap longer than the pause also ends the
trip. Trips shorter than :attr:`TripConfig.min_distance_m` *and* with less than
:attr:`TripConfig.min_moving_s` of movement (manoeuvring in a driveway) are dropped.

**Per trip.** Each interval between two consecutive samples of a trip is attributed with the
state of its *left* sample: it counts as idle when that sample's speed is below
``moving_kmh``, as moving otherwise, as speeding when it exceeds the limit, and as night when
the sample's local time (vehicle time zone, IANA name) lies in [23:00, 05:00). Shares:
``night_share = night time / duration``, ``speeding_share = speeding time / moving time``.

**Streaming equals batch.** :class:`TripSegmenter` keeps, per vehicle, the sums of the open trip
up to its last active sample and the samples after it (at most ``end_after_s`` of them). All
sums are integers (milliseconds, millimetres), so feeding the same samples in one batch or split
anywhere gives the same trips, bit for bit (``tests/ubi/test_trips.py`` checks it with
Hypothesis). A trip is emitted once a sample more than ``end_after_s`` after its last active
sample arrives, or on :meth:`TripSegmenter.flush`. Samples of a vehicle must arrive in time
order across batches; a sample older than the vehicle's newest one already seen is dropped and
counted in :attr:`TripSegmenter.late_samples`.

**Checkpoints.** :meth:`TripSegmenter.export_state` serialises the complete per-vehicle state
(the tail samples and the open trip's sums) to compact msgpack bytes (msgspec; numpy arrays as
raw little-endian bytes with their dtype, so floats round-trip bit for bit, NaN included) and
:meth:`TripSegmenter.restore_state` loads it into another segmenter, which then continues
exactly as the first would have. The configuration and time zones are not part of the state
(they come from the constructor), nor is the fleet-wide :attr:`TripSegmenter.late_samples`
counter, which stays process-local. The helpers :func:`encode_state` / :func:`decode_state`
(an envelope ``[kind, version, vin, payload]``) are shared with ``ubi.events`` and
``ubi.battery``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from core.columns import column, floats, timestamps_ms

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

SPEED = "Vehicle.Speed"
ODOMETER = "Vehicle.TraveledDistance"
LV_STATE = "Vehicle.LowVoltageSystemState"
GEAR = "Vehicle.Powertrain.Transmission.CurrentGear"
IGNITION_ON_STATES = ("ON", "START")
NIGHT_START_H = 23
NIGHT_END_H = 5

TRIP_COLUMNS = ("vin", "ts", SPEED, ODOMETER, LV_STATE, GEAR)
"""Columns segmentation reads (plus the speed-limit column when configured)."""


def vins(table: pa.Table) -> npt.NDArray[np.object_]:
    values = column(table, "vin")
    if values is None:
        raise ValueError("the table has no 'vin' column")
    return np.asarray(values.to_numpy(zero_copy_only=False), dtype=object)


def vehicle_order(table: pa.Table) -> tuple[pa.Table, list[tuple[str, int, int]]]:
    """The table sorted by (vin, ts) (stable) and the row range ``[lo, hi)`` of each vehicle."""
    if table.num_rows == 0:
        return table, []
    order = pc.sort_indices(table, sort_keys=[("vin", "ascending"), ("ts", "ascending")])
    ordered = table.take(order)
    vin = vins(ordered)
    starts = np.flatnonzero(np.concatenate(([True], vin[1:] != vin[:-1])))
    ends = np.append(starts[1:], len(vin))
    return ordered, [(str(vin[a]), int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def local_hours(ts_ms: IntArray, time_zone: str) -> IntArray:
    """Local hour of day (0-23) of epoch-ms timestamps in an IANA time zone (DST-aware)."""
    stamps = pa.array(ts_ms, pa.timestamp("ms", tz="UTC")).cast(pa.timestamp("ms", tz=time_zone))
    return np.asarray(pc.hour(stamps).to_numpy(zero_copy_only=False), dtype=np.int64)


# -- checkpointable state (shared with ubi.events and ubi.battery) -------------------------------
class PackedArray(msgspec.Struct, array_like=True, frozen=True):
    """A 1-D numpy array as its dtype (``<f8``, ``<i8``, ``|b1``) and raw bytes."""

    dtype: str
    data: bytes


class _Envelope(msgspec.Struct, array_like=True, frozen=True):
    kind: str
    version: int
    vin: str
    payload: msgspec.Raw


_S = TypeVar("_S", bound=msgspec.Struct)
_ENCODER = msgspec.msgpack.Encoder()
_ENVELOPE_DECODER = msgspec.msgpack.Decoder(_Envelope)
_DECODERS: dict[type, msgspec.msgpack.Decoder[object]] = {}


def pack_arrays(arrays: Mapping[str, np.ndarray], layout: Mapping[str, str]) -> list[PackedArray]:
    """The arrays named in ``layout`` (name -> little-endian dtype), in its order, as raw bytes."""
    return [
        PackedArray(dtype, np.ascontiguousarray(arrays[name], dtype=dtype).tobytes())
        for name, dtype in layout.items()
    ]


def unpack_arrays(
    packed: Sequence[PackedArray], layout: Mapping[str, str], what: str
) -> dict[str, np.ndarray]:
    """The inverse of :func:`pack_arrays` (fresh, writable arrays of the native dtypes); a
    ``ValueError`` when the arrays do not match the layout or differ in length."""
    if len(packed) != len(layout):
        raise ValueError(f"{what}: {len(packed)} arrays, expected {len(layout)}")
    out: dict[str, np.ndarray] = {}
    for (name, dtype), array in zip(layout.items(), packed, strict=True):
        if array.dtype != dtype:
            raise ValueError(f"{what}: array {name!r} has dtype {array.dtype!r}, not {dtype!r}")
        wanted = np.dtype(dtype)
        if len(array.data) % wanted.itemsize:
            raise ValueError(f"{what}: array {name!r} is not a whole number of {dtype} items")
        if wanted.kind == "b" and array.data.translate(None, b"\x00\x01"):
            raise ValueError(f"{what}: array {name!r} has bytes other than 0/1 for booleans")
        out[name] = np.frombuffer(array.data, dtype=wanted).astype(wanted.newbyteorder("="))
    if len({len(v) for v in out.values()}) > 1:
        raise ValueError(f"{what}: arrays of different lengths")
    return out


def encode_state(kind: str, version: int, vin: str, payload: msgspec.Struct) -> bytes:
    """One vehicle's state as msgpack bytes: ``[kind, version, vin, payload]``."""
    raw = msgspec.Raw(_ENCODER.encode(payload))
    return _ENCODER.encode(_Envelope(kind, version, vin, raw))


def decode_state(kind: str, version: int, vin: str, data: bytes, payload: type[_S]) -> _S:
    """The payload of bytes from :func:`encode_state`; ``ValueError`` on malformed bytes, another
    kind of state, an unknown format version or a state stored under another VIN."""
    try:
        envelope = _ENVELOPE_DECODER.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed {kind} state for VIN {vin!r}: {exc}") from exc
    if envelope.kind != kind:
        raise ValueError(f"VIN {vin!r}: a {envelope.kind!r} state, expected {kind!r}")
    if envelope.version != version:
        raise ValueError(
            f"VIN {vin!r}: unsupported {kind} state format version {envelope.version} "
            f"(this code reads version {version})"
        )
    if envelope.vin != vin:
        raise ValueError(f"state of VIN {envelope.vin!r} given for VIN {vin!r}")
    decoder = _DECODERS.get(payload)
    if decoder is None:
        decoder = _DECODERS[payload] = msgspec.msgpack.Decoder(payload)
    try:
        decoded = decoder.decode(envelope.payload)
    except msgspec.DecodeError as exc:
        raise ValueError(f"malformed {kind} state for VIN {vin!r}: {exc}") from exc
    assert isinstance(decoded, payload)
    return decoded


# -- configuration and results --------------------------------------------------------------------
@dataclass(frozen=True)
class TripConfig:
    end_after_s: float = 300.0
    """A pause longer than this with no active sample (ignition off, no gear, standing) ends a
    trip; shorter pauses (red lights, a quick stop) do not."""
    moving_kmh: float = 2.0
    """At or above this speed the vehicle moves; below it, time with the trip open is idle."""
    min_distance_m: float = 100.0
    min_moving_s: float = 30.0
    """Trips below both minimums are dropped (manoeuvring, a car moved in a driveway)."""
    speed_limit_column: str | None = None
    """Column with the posted limit in km/h, if the vehicle reports one (not in VSS 6.0)."""
    fallback_limit_kmh: float = 130.0
    """Limit used where no posted limit is known (see the module docstring)."""


@dataclass(frozen=True)
class Trip:
    vin: str
    trip_id: str
    """``<vin>:<start epoch ms>``: the natural key for idempotent upserts."""
    start_ms: int
    end_ms: int
    start_local: str
    """ISO 8601 with the UTC offset of the vehicle's time zone."""
    end_local: str
    time_zone: str
    distance_m: float
    distance_source: str
    """``odometer`` or ``speed`` (integral of speed when the odometer is missing)."""
    duration_s: float
    moving_s: float
    idle_s: float
    night_s: float
    speeding_s: float
    night_share: float
    speeding_share: float
    speed_limit_source: str
    """``posted`` when any sample of the trip carried a posted limit, else ``fallback``."""
    samples: int

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class _Open:
    """Running sums of a vehicle's open trip up to its last active sample."""

    start_ms: int
    first_odo: float
    last_odo: float
    speed_mm: int = 0
    idle_ms: int = 0
    moving_ms: int = 0
    night_ms: int = 0
    speeding_ms: int = 0
    posted: bool = False
    samples: int = 1


@dataclass
class _Vehicle:
    tail: dict[str, np.ndarray]
    """Samples after the open trip's last active sample (that one included), or the vehicle's
    last sample when no trip is open."""
    open: _Open | None = None


_TAIL_KEYS = ("ts", "speed", "odo", "limit", "active", "hour")

TRIP_STATE_VERSION = 1
"""Format version of :meth:`TripSegmenter.export_state` bytes."""
_TRIP_STATE = "trips"
_TAIL_LAYOUT = {
    "ts": "<i8",
    "speed": "<f8",
    "odo": "<f8",
    "limit": "<f8",
    "active": "|b1",
    "hour": "<i8",
}


class _OpenTripState(msgspec.Struct, array_like=True, frozen=True):
    start_ms: int
    first_odo: float
    last_odo: float
    speed_mm: int
    idle_ms: int
    moving_ms: int
    night_ms: int
    speeding_ms: int
    posted: bool
    samples: int


class _TripVehicleState(msgspec.Struct, array_like=True, frozen=True):
    tail: list[PackedArray]
    """The arrays of :data:`_TAIL_LAYOUT`, in its order."""
    open: _OpenTripState | None


def _export_vehicle(vin: str, vehicle: _Vehicle) -> bytes:
    trip = vehicle.open
    state = _TripVehicleState(
        tail=pack_arrays(vehicle.tail, _TAIL_LAYOUT),
        open=None
        if trip is None
        else _OpenTripState(
            start_ms=int(trip.start_ms),
            first_odo=float(trip.first_odo),
            last_odo=float(trip.last_odo),
            speed_mm=int(trip.speed_mm),
            idle_ms=int(trip.idle_ms),
            moving_ms=int(trip.moving_ms),
            night_ms=int(trip.night_ms),
            speeding_ms=int(trip.speeding_ms),
            posted=bool(trip.posted),
            samples=int(trip.samples),
        ),
    )
    return encode_state(_TRIP_STATE, TRIP_STATE_VERSION, vin, state)


def _restore_vehicle(vin: str, data: bytes) -> _Vehicle:
    state = decode_state(_TRIP_STATE, TRIP_STATE_VERSION, vin, data, _TripVehicleState)
    tail = unpack_arrays(state.tail, _TAIL_LAYOUT, f"trip state of VIN {vin!r}")
    if len(tail["ts"]) == 0:
        raise ValueError(f"trip state of VIN {vin!r}: empty tail")
    trip = state.open
    return _Vehicle(
        tail,
        None
        if trip is None
        else _Open(
            start_ms=trip.start_ms,
            first_odo=trip.first_odo,
            last_odo=trip.last_odo,
            speed_mm=trip.speed_mm,
            idle_ms=trip.idle_ms,
            moving_ms=trip.moving_ms,
            night_ms=trip.night_ms,
            speeding_ms=trip.speeding_ms,
            posted=trip.posted,
            samples=trip.samples,
        ),
    )


def _vin_list(vins: Iterable[str]) -> list[str]:
    if isinstance(vins, str):
        raise TypeError("pass an iterable of VINs, not one VIN string")
    return list(vins)


@dataclass
class TripSegmenter:
    """Streaming trip segmentation: feed batches with :meth:`update`, end with :meth:`flush`."""

    time_zones: Mapping[str, str] = field(default_factory=dict)
    """VIN -> IANA time zone; vehicles not listed use :attr:`default_time_zone`."""
    default_time_zone: str = "UTC"
    config: TripConfig = field(default_factory=TripConfig)
    late_samples: int = 0
    _vehicles: dict[str, _Vehicle] = field(default_factory=dict)

    def update(self, table: pa.Table) -> list[Trip]:
        """Add a batch; return the trips it completed (ordered by VIN, then start)."""
        ordered, groups = vehicle_order(table)
        if not groups:
            return []
        cfg = self.config
        ts_all = timestamps_ms(ordered)
        speed_all = floats(ordered, SPEED)
        odo_all = floats(ordered, ODOMETER)
        limit_all = (
            floats(ordered, cfg.speed_limit_column)
            if cfg.speed_limit_column
            else np.full(ordered.num_rows, np.nan)
        )
        gear = floats(ordered, GEAR)
        state = column(ordered, LV_STATE)
        ignition = (
            np.zeros(ordered.num_rows, dtype=bool)
            if state is None
            else np.asarray(
                pc.fill_null(pc.is_in(state, pa.array(IGNITION_ON_STATES)), False).to_numpy(
                    zero_copy_only=False
                ),
                dtype=bool,
            )
        )
        active_all = (
            ignition
            | (np.nan_to_num(gear, nan=0.0) != 0)
            | (np.nan_to_num(speed_all, nan=0.0) >= cfg.moving_kmh)
        )
        trips: list[Trip] = []
        for vin, lo, hi in groups:
            tz = self.time_zones.get(vin, self.default_time_zone)
            rows = {
                "ts": ts_all[lo:hi],
                "speed": speed_all[lo:hi],
                "odo": odo_all[lo:hi],
                "limit": limit_all[lo:hi],
                "active": active_all[lo:hi],
                "hour": local_hours(ts_all[lo:hi], tz),
            }
            trips.extend(self._update_vehicle(vin, tz, rows))
        return trips

    def flush(self) -> list[Trip]:
        """Close every open trip (end of a batch job, or a vehicle known to be parked)."""
        trips: list[Trip] = []
        for vin in sorted(self._vehicles):
            vehicle = self._vehicles[vin]
            if vehicle.open is not None:
                tz = self.time_zones.get(vin, self.default_time_zone)
                trip = self._finish(vin, tz, vehicle.open, int(vehicle.tail["ts"][0]))
                if trip is not None:
                    trips.append(trip)
                vehicle.open = None
                vehicle.tail = {k: v[-1:].copy() for k, v in vehicle.tail.items()}
                vehicle.tail["active"][:] = False  # its trip is closed: never start another
        return trips

    # -- checkpoints ----------------------------------------------------------------------------
    def state_vins(self) -> list[str]:
        """The VINs this segmenter holds state for (sorted)."""
        return sorted(self._vehicles)

    def export_state(self, vins: Iterable[str]) -> dict[str, bytes]:
        """The complete state of these vehicles (tail samples and open trip), one msgpack blob
        per VIN (format :data:`TRIP_STATE_VERSION`); VINs without state are left out. The time
        zones, the configuration and :attr:`late_samples` are not included."""
        return {
            vin: _export_vehicle(vin, self._vehicles[vin])
            for vin in _vin_list(vins)
            if vin in self._vehicles
        }

    def restore_state(self, states: Mapping[str, bytes]) -> None:
        """Load states from :meth:`export_state`, replacing those vehicles' in-memory state.
        Raises ``ValueError`` (and changes nothing) when any blob is malformed or of an unknown
        format version."""
        restored = {vin: _restore_vehicle(vin, data) for vin, data in states.items()}
        self._vehicles.update(restored)

    def forget(self, vins: Iterable[str]) -> None:
        """Drop the in-memory state of these vehicles (e.g. after their partition moved away);
        a later sample of one starts from scratch unless its state is restored first."""
        for vin in _vin_list(vins):
            self._vehicles.pop(vin, None)

    # -- one vehicle ----------------------------------------------------------------------------
    def _update_vehicle(self, vin: str, tz: str, new: dict[str, np.ndarray]) -> list[Trip]:
        cfg = self.config
        vehicle = self._vehicles.get(vin)
        if vehicle is not None:
            newest = int(vehicle.tail["ts"][-1])
            keep = new["ts"] >= newest
            if not keep.all():
                self.late_samples += int((~keep).sum())
                new = {k: v[keep] for k, v in new.items()}
            rows = {k: np.concatenate((vehicle.tail[k], new[k])) for k in _TAIL_KEYS}
            carried = len(vehicle.tail["ts"])
            current = vehicle.open
        else:
            rows, carried, current = new, 0, None
        if len(rows["ts"]) == 0:
            return []
        ts, speed = rows["ts"], rows["speed"]
        gap_ms = round(cfg.end_after_s * 1000)
        # Per-interval contributions (interval k runs from row k to row k + 1), integers only.
        dt_ms = np.diff(ts)
        left_speed = np.nan_to_num(speed[:-1], nan=0.0)
        mean_speed = np.nan_to_num((speed[:-1] + speed[1:]) / 2.0, nan=0.0)
        moving = left_speed >= cfg.moving_kmh
        limit = np.where(np.isnan(rows["limit"]), cfg.fallback_limit_kmh, rows["limit"])[:-1]
        hour = rows["hour"][:-1]
        night = (hour >= NIGHT_START_H) | (hour < NIGHT_END_H)
        contrib = np.stack(
            (
                np.rint(np.maximum(mean_speed, 0.0) / 3.6 * dt_ms).astype(np.int64),  # mm
                np.where(moving, 0, dt_ms),
                np.where(moving, dt_ms, 0),
                np.where(night, dt_ms, 0),
                np.where(moving & (left_speed > limit), dt_ms, 0),
            )
        )
        cum = np.concatenate((np.zeros((5, 1), np.int64), np.cumsum(contrib, axis=1)), axis=1)
        posted = ~np.isnan(rows["limit"])
        active = np.flatnonzero(rows["active"])
        trips: list[Trip] = []
        if len(active):
            breaks = np.flatnonzero(np.diff(ts[active]) > gap_ms)
            firsts = np.concatenate(([active[0]], active[breaks + 1]))
            lasts = np.concatenate((active[breaks], [active[-1]]))
            previous_last = 0
            for first, last in zip(firsts.tolist(), lasts.tolist(), strict=True):
                if current is None or first != 0:
                    if current is not None:  # the open trip ended before this group
                        trip = self._finish(vin, tz, current, int(ts[previous_last]))
                        if trip is not None:
                            trips.append(trip)
                    current = _Open(
                        start_ms=int(ts[first]),
                        first_odo=float(rows["odo"][first]),
                        last_odo=float(rows["odo"][first]),
                        posted=bool(posted[first]),
                        samples=0,
                    )
                sums = cum[:, last] - cum[:, first]
                current.speed_mm += int(sums[0])
                current.idle_ms += int(sums[1])
                current.moving_ms += int(sums[2])
                current.night_ms += int(sums[3])
                current.speeding_ms += int(sums[4])
                current.posted |= bool(posted[first : last + 1].any())
                current.samples += last - first + (0 if first == 0 and carried else 1)
                odo = rows["odo"][first : last + 1]
                odo = odo[~np.isnan(odo)]
                if len(odo):
                    if np.isnan(current.first_odo):
                        current.first_odo = float(odo[0])
                    current.last_odo = float(odo[-1])
                previous_last = tail_from = last
            # Is the last group's trip already over (a sample beyond the pause)?
            if ts[-1] - ts[tail_from] > gap_ms:
                assert current is not None
                trip = self._finish(vin, tz, current, int(ts[tail_from]))
                if trip is not None:
                    trips.append(trip)
                current, tail_from = None, len(ts) - 1
        elif current is not None and ts[-1] - ts[0] > gap_ms:
            trip = self._finish(vin, tz, current, int(ts[0]))
            if trip is not None:
                trips.append(trip)
            current, tail_from = None, len(ts) - 1
        else:
            tail_from = 0 if current is not None else len(ts) - 1
        self._vehicles[vin] = _Vehicle({k: rows[k][tail_from:] for k in _TAIL_KEYS}, current)
        return trips

    def _finish(self, vin: str, tz: str, trip: _Open, end_ms: int) -> Trip | None:
        cfg = self.config
        by_odometer = not np.isnan(trip.first_odo) and trip.last_odo >= trip.first_odo
        distance = trip.last_odo - trip.first_odo if by_odometer else trip.speed_mm / 1000.0
        if distance < cfg.min_distance_m and trip.moving_ms < cfg.min_moving_s * 1000:
            return None
        duration_ms = end_ms - trip.start_ms
        zone = ZoneInfo(tz)
        return Trip(
            vin=vin,
            trip_id=f"{vin}:{trip.start_ms}",
            start_ms=trip.start_ms,
            end_ms=end_ms,
            start_local=dt.datetime.fromtimestamp(trip.start_ms / 1000, zone).isoformat(),
            end_local=dt.datetime.fromtimestamp(end_ms / 1000, zone).isoformat(),
            time_zone=tz,
            distance_m=float(distance),
            distance_source="odometer" if by_odometer else "speed",
            duration_s=duration_ms / 1000.0,
            moving_s=trip.moving_ms / 1000.0,
            idle_s=trip.idle_ms / 1000.0,
            night_s=trip.night_ms / 1000.0,
            speeding_s=trip.speeding_ms / 1000.0,
            night_share=trip.night_ms / duration_ms if duration_ms > 0 else 0.0,
            speeding_share=trip.speeding_ms / trip.moving_ms if trip.moving_ms > 0 else 0.0,
            speed_limit_source="posted" if trip.posted else "fallback",
            samples=trip.samples,
        )


def segment_trips(
    tables: pa.Table | Iterable[pa.Table],
    *,
    time_zones: Mapping[str, str] | None = None,
    default_time_zone: str = "UTC",
    config: TripConfig | None = None,
) -> list[Trip]:
    """Batch segmentation: every trip in one table or a sequence of batches (open trips at the
    end are closed), ordered by VIN then start."""
    segmenter = TripSegmenter(
        time_zones=time_zones or {},
        default_time_zone=default_time_zone,
        config=config or TripConfig(),
    )
    batches: Sequence[pa.Table] | Iterable[pa.Table] = (
        [tables] if isinstance(tables, pa.Table) else tables
    )
    trips: list[Trip] = []
    for batch in batches:
        trips.extend(segmenter.update(batch))
    trips.extend(segmenter.flush())
    return sorted(trips, key=lambda t: (t.vin, t.start_ms))


def trips_to_table(trips: Sequence[Trip]) -> pa.Table:
    """Trips as an Arrow table (one row per trip)."""
    return pa.Table.from_pylist([trip.as_dict() for trip in trips])
