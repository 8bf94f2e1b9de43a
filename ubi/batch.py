"""Scores from the Parquet archive (``fleet score ubi|battery --archive``): the same analytics,
the same arrival order and the same scoring as the streaming workers, so the result equals
what the workers stored (``--check`` compares, field by field).

The archive is replayed one Kafka partition at a time (a vehicle's messages live in one
partition), sorted into arrival order (``ubi/ordering.py``) and fed in chunks; memory holds the
needed columns of one partition. Trips still open at the end of the data are not emitted,
exactly as the worker has not emitted them yet.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
from sqlmodel import Session, col, select

from core.config import Settings
from core.db import make_engine, session_scope
from ingestion.archive import ParquetArchive
from ubi import repository, service
from ubi.battery import BATTERY_COLUMNS, BatteryHealthTracker, BatterySpec
from ubi.battery_specs import spec_for
from ubi.events import EVENT_COLUMNS, DrivingEvent, EventDetector
from ubi.models import BatteryHealthRecord, UbiScore, UbiTrip
from ubi.ordering import ArrivalGate, arrival_order
from ubi.residual import residual_score
from ubi.scoring import ScoreParams, assign_events, score_trip
from ubi.trips import TRIP_COLUMNS, Trip, TripSegmenter
from ubi.worker import jsonable

Kind = Literal["ubi", "battery"]
CHUNK_ROWS = 200_000
MAX_ROWS_IN_MEMORY = 20_000_000
"""Up to this many archive rows are read in one scan; a larger archive is read one Kafka
partition at a time (a scan per partition)."""
_ORDER_COLUMNS = ("kafka_partition", "kafka_offset")


@dataclass
class BatchResult:
    kind: Kind
    samples: int = 0
    """Archive rows read."""
    kept: int = 0
    """Rows the analytics used (after dropping late and re-sent samples)."""
    vehicles: int = 0
    seconds: float = 0.0
    results: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per VIN: ubi ``{"period": ..., "trips": {trip_id: score}}``; battery
    ``{"health": ..., "residual": ...}``."""

    def summary(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "samples": self.samples,
            "kept": self.kept,
            "vehicles": self.vehicles,
            "scored": len(self.results),
            "seconds": round(self.seconds, 3),
            "samples_per_s": round(self.samples / self.seconds) if self.seconds else None,
        }


def columns_for(kind: Kind) -> list[str]:
    needed = TRIP_COLUMNS + EVENT_COLUMNS if kind == "ubi" else ("vin", "ts", *BATTERY_COLUMNS)
    return list(dict.fromkeys((*needed, *_ORDER_COLUMNS)))


def read_partitions(
    archive: ParquetArchive,
    columns: list[str],
    vins: Iterable[str] | None = None,
    *,
    max_rows: int = MAX_ROWS_IN_MEMORY,
) -> Iterable[pa.Table]:
    """The archive's rows in arrival order: in one table when there are at most ``max_rows``,
    else one Kafka partition at a time."""
    dataset = archive.dataset()
    vin_filter = ds.field("vin").isin(sorted(vins)) if vins is not None else None
    if dataset.count_rows(filter=vin_filter) <= max_rows:
        yield arrival_order(dataset.to_table(columns=columns, filter=vin_filter))
        return
    partitions = pc.unique(
        dataset.to_table(columns=["kafka_partition"], filter=vin_filter)["kafka_partition"]
    ).to_pylist()
    for partition in sorted(partitions):
        expr = ds.field("kafka_partition") == partition
        if vin_filter is not None:
            expr = expr & vin_filter
        yield arrival_order(dataset.to_table(columns=columns, filter=expr))


def _chunks(table: pa.Table) -> Iterable[pa.Table]:
    for start in range(0, table.num_rows, CHUNK_ROWS):
        yield table.slice(start, CHUNK_ROWS)


def score_archive(
    settings: Settings,
    kind: Kind,
    *,
    archive: str | None = None,
    vins: Iterable[str] | None = None,
    progress: Callable[[int], None] | None = None,
    max_rows_in_memory: int = MAX_ROWS_IN_MEMORY,
) -> BatchResult:
    """Replay the archive through the ``kind`` analytics and score every vehicle."""
    started = time.perf_counter()
    store = ParquetArchive(archive or settings.archive_location)
    engine = make_engine(settings)
    result = BatchResult(kind)
    gate = ArrivalGate()
    try:
        with session_scope(engine) as session:
            reference = _Reference(session, settings)
            if kind == "ubi":
                segmenter = TripSegmenter(
                    time_zones=reference.zones, default_time_zone=settings.ubi_time_zone_default
                )
                detector = EventDetector()
                trips: list[Trip] = []
                events: list[DrivingEvent] = []
            else:
                tracker = BatteryHealthTracker(reference.spec)
            seen: set[str] = set()
            tables = read_partitions(store, columns_for(kind), vins, max_rows=max_rows_in_memory)
            for table in tables:
                for chunk in _chunks(table):
                    result.samples += chunk.num_rows
                    new = set(chunk["vin"].unique().to_pylist()) - seen
                    reference.load(sorted(new))
                    seen |= new
                    chunk = gate.filter(chunk)
                    result.kept += chunk.num_rows
                    if kind == "ubi":
                        trips.extend(segmenter.update(chunk))
                        events.extend(detector.update(chunk))
                    else:
                        tracker.update(chunk)
                    if progress is not None:
                        progress(chunk.num_rows)
            result.vehicles = len(seen)
            if kind == "ubi":
                result.results = _ubi_results(session, settings, trips, events)
            else:
                for vin, health in tracker.reports().items():
                    spec = reference.spec(vin)
                    assert spec is not None
                    result.results[vin] = {
                        "health": jsonable(health),
                        "residual": jsonable(residual_score(health, spec)),
                    }
    finally:
        engine.dispose()
    result.seconds = time.perf_counter() - started
    return result


class _Reference:
    """Registry data the workers use too: time zones and battery ratings."""

    def __init__(self, session: Session, settings: Settings) -> None:
        self.session = session
        self.settings = settings
        self.zones: dict[str, str] = {}
        self.specs: dict[str, BatterySpec | None] = {}

    def load(self, vins: list[str]) -> None:
        if not vins:
            return
        self.zones.update(repository.time_zones(self.session, vins))
        models = repository.vehicle_models(self.session, vins)
        for vin in vins:
            model, powertrain = models.get(vin, ("", ""))
            self.specs[vin] = spec_for(model, powertrain, self.settings.battery_default_kwh)

    def spec(self, vin: str) -> BatterySpec | None:
        return self.specs.get(vin)


def _ubi_results(
    session: Session, settings: Settings, trips: list[Trip], events: list[DrivingEvent]
) -> dict[str, dict[str, Any]]:
    params = ScoreParams()
    vins = sorted({t.vin for t in trips})
    disputed: set[str] = set()
    for start in range(0, len(vins), 500):
        query = select(UbiTrip.trip_id).where(
            col(UbiTrip.vin).in_(vins[start : start + 500]), col(UbiTrip.disputed_at).is_not(None)
        )
        disputed.update(session.exec(query))
    by_trip = assign_events(trips, events)
    results: dict[str, dict[str, Any]] = {}
    for vin in vins:
        own = [t for t in trips if t.vin == vin]
        own_events = [e for e in events if e.vin == vin]
        score = service.period_score(
            own,
            own_events,
            vin,
            period_days=settings.ubi_period_days,
            excluded=frozenset(t.trip_id for t in own if t.trip_id in disputed),
            params=params,
        )
        results[vin] = {
            "period": score.as_dict() if score is not None else None,
            "trips": {t.trip_id: score_trip(t, by_trip[t.trip_id], params).as_dict() for t in own},
        }
    return results


def check_against_database(settings: Settings, result: BatchResult) -> list[str]:
    """Differences between the batch result and what the workers stored (empty: identical)."""
    engine = make_engine(settings)
    problems: list[str] = []
    try:
        with session_scope(engine) as session:
            for vin, expected in sorted(result.results.items()):
                if result.kind == "ubi":
                    problems.extend(_check_ubi(session, settings, vin, expected))
                else:
                    problems.extend(_check_battery(session, vin, expected))
    finally:
        engine.dispose()
    return problems


def _check_ubi(
    session: Session, settings: Settings, vin: str, expected: Mapping[str, Any]
) -> list[str]:
    problems: list[str] = []
    stored = session.get(UbiScore, (vin, settings.ubi_period_days))
    if expected["period"] is None:
        return problems
    if stored is None:
        return [f"{vin}: no stored period score"]
    problems.extend(_diff(f"{vin} period score", expected["period"], stored.payload))
    rows = {r.trip_id: r for r in session.exec(select(UbiTrip).where(UbiTrip.vin == vin))}
    for trip_id, score in expected["trips"].items():
        row = rows.get(trip_id)
        if row is None:
            problems.append(f"{vin}: trip {trip_id} not stored")
        else:
            problems.extend(_diff(f"trip {trip_id}", score, row.score))
    for trip_id in sorted(set(rows) - set(expected["trips"])):
        problems.append(f"{vin}: stored trip {trip_id} not in the archive's result")
    return problems


def _check_battery(session: Session, vin: str, expected: Mapping[str, Any]) -> list[str]:
    stored = session.get(BatteryHealthRecord, vin)
    if stored is None:
        return [f"{vin}: no stored battery health"]
    return [
        *_diff(f"{vin} battery health", expected["health"], stored.health),
        *_diff(f"{vin} residual score", expected["residual"], stored.residual),
    ]


def _diff(what: str, expected: Any, stored: Any, path: str = "") -> list[str]:
    if isinstance(expected, dict) and isinstance(stored, dict):
        out: list[str] = []
        for key in sorted(set(expected) | set(stored)):
            if key not in stored or key not in expected:
                out.append(f"{what}: {path}{key} only in {'batch' if key in expected else 'db'}")
            else:
                out.extend(_diff(what, expected[key], stored[key], f"{path}{key}."))
        return out
    if isinstance(expected, list | tuple) and isinstance(stored, list | tuple):
        if len(expected) != len(stored):
            return [f"{what}: {path.rstrip('.')} has {len(expected)} vs {len(stored)} items"]
        out = []
        for i, (a, b) in enumerate(zip(expected, stored, strict=True)):
            out.extend(_diff(what, a, b, f"{path}{i}."))
        return out
    if expected != stored:
        return [f"{what}: {path.rstrip('.')} = {expected!r} (batch) vs {stored!r} (stored)"]
    return []
