"""The ``ubi`` and ``battery`` workers: trips, driving events and UBI scores; charge sessions,
battery health and the residual score — from ``telemetry.v1``, into the database.

Both follow the pattern of the diagnosis worker: per consumer batch the records become one
Arrow table and the streaming analytics (``ubi/trips.py``, ``ubi/events.py``,
``ubi/battery.py``) run over it; their results are kept in memory until a checkpoint (every
``ubi_checkpoint_s``, on a rebalance, at shutdown), which stores, in ONE transaction, the
results (upserts on natural keys), the recomputed scores of the vehicles concerned and the
streaming state of every vehicle seen since the last checkpoint (``analytics_state``). Only
then are the batch offsets marked durable and committed. A restarted worker restores a
vehicle's state the first time it sees it and replays the records after the last commit: the
same trips, events and sessions again, rewritten in place. The runner's ``batch_lock`` keeps a
rebalance's checkpoint from running while a batch is being processed.

A vehicle erased (``ubi/erasure.py``) after its state was loaded into memory: the next
checkpoint drops that vehicle's results and state instead of writing them back, and the worker
starts afresh with the vehicle's next samples.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from sqlmodel import Session

from core.config import Settings
from core.db import session_scope, utcnow
from core.runner import HandlerResult
from ingestion.batches import TelemetryTableHandler
from ubi import repository, service
from ubi.battery import BatteryHealth, BatteryHealthTracker, BatterySpec, ChargeSession
from ubi.battery_specs import spec_for
from ubi.events import DrivingEvent, EventDetector
from ubi.ordering import ArrivalGate, arrival_order
from ubi.residual import ResidualScore, residual_score
from ubi.trips import Trip, TripSegmenter

log = logging.getLogger(__name__)

_STATE_FORMAT = 1


class _StateFile(msgspec.Struct, frozen=True):
    v: int
    parts: dict[str, bytes]


def pack_state(parts: Mapping[str, bytes]) -> bytes:
    return msgspec.msgpack.encode(_StateFile(_STATE_FORMAT, dict(parts)))


def unpack_state(blob: bytes) -> dict[str, bytes]:
    state = msgspec.msgpack.decode(blob, type=_StateFile)
    if state.v != _STATE_FORMAT:
        raise ValueError(f"unknown analytics state format {state.v}")
    return state.parts


def jsonable(value: Any) -> Any:
    """Dataclasses, datetimes, enums, tuples and non-finite floats as JSON-ready values."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: jsonable(v) for k, v in asdict(value).items()}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class AnalyticsHandler(TelemetryTableHandler):
    """Checkpointing shared by the two workers; subclasses run their analytics."""

    worker: str

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.loaded: dict[str, datetime] = {}
        """Vehicles whose state was restored (or found to have none), and when."""
        self.touched: set[str] = set()
        self.gate = ArrivalGate()
        self.last_checkpoint = time.monotonic()
        self.checkpoints = 0

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        decoded = self.decode(batch)
        table = decoded.table
        if table.num_rows:
            vins = table["vin"].unique().to_pylist()
            new = [vin for vin in vins if vin not in self.loaded]
            if new:
                await asyncio.to_thread(self._restore_vehicles, new)
                now = utcnow()
                self.loaded.update(dict.fromkeys(new, now))
            self.touched.update(vins)
            self.analyse(self.gate.filter(arrival_order(table)))
        return HandlerResult(processed=decoded.records - decoded.skipped)

    async def tick(self) -> None:
        if time.monotonic() - self.last_checkpoint >= self.settings.ubi_checkpoint_s:
            await self.checkpoint()

    async def flush(self) -> None:
        await self.checkpoint()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        # The runner checkpointed already; the partitions' next owner continues from the
        # database, so forget everything and restore lazily.
        await super().on_revoked(partitions)
        self.reset()
        self.gate = ArrivalGate()
        self.loaded.clear()
        self.touched.clear()

    async def checkpoint(self) -> None:
        pending = self.pending_offsets()
        if self.touched or self.has_results():
            touched = sorted(self.touched)
            states = self._export(touched)
            results = self.take_results()
            stale = await asyncio.to_thread(self._store_checkpoint, results, states)
            self.touched.clear()
            if stale:
                log.info("%d vehicles were erased; their in-memory state is dropped", len(stale))
                self.forget(stale)
                self.gate.forget(stale)
                for vin in stale:
                    self.loaded.pop(vin, None)
        self.mark_durable(pending)
        self.checkpoints += 1
        self.last_checkpoint = time.monotonic()

    def _restore_vehicles(self, vins: list[str]) -> None:
        with session_scope(self.engine) as session:
            blobs = repository.load_states(session, self.worker, vins)
            self.prepare(session, vins)
        parts = {vin: unpack_state(blob) for vin, blob in blobs.items()}
        self.gate.restore_state(
            {vin: int.from_bytes(p["gate"], "big", signed=True) for vin, p in parts.items()}
        )
        self.restore(parts)

    def _export(self, vins: list[str]) -> dict[str, bytes]:
        parts = self.export(vins)
        for vin, newest in self.gate.export_state(vins).items():
            parts.setdefault(vin, {})["gate"] = newest.to_bytes(8, "big", signed=True)
        return {vin: pack_state(p) for vin, p in parts.items()}

    def _store_checkpoint(self, results: Any, states: Mapping[str, bytes]) -> set[str]:
        """Store results and states; returns the vehicles erased since their state was loaded
        (their results and states are not written)."""
        with session_scope(self.engine) as session:
            erased = repository.erasures_completed(session, sorted(self.loaded))
            stale = {vin for vin, at in erased.items() if at >= self.loaded[vin]}
            self.store(session, results, stale)
            repository.save_states(
                session, self.worker, {v: s for v, s in states.items() if v not in stale}
            )
        return stale

    # -- what a worker implements -----------------------------------------------------------------
    @abstractmethod
    def prepare(self, session: Session, vins: list[str]) -> None:
        """Load per-vehicle reference data (time zone, battery rating) for new vehicles."""

    @abstractmethod
    def restore(self, parts: Mapping[str, Mapping[str, bytes]]) -> None: ...

    @abstractmethod
    def export(self, vins: list[str]) -> dict[str, dict[str, bytes]]:
        """The analytics' state parts per vehicle."""

    @abstractmethod
    def analyse(self, table: Any) -> None: ...

    @abstractmethod
    def has_results(self) -> bool: ...

    @abstractmethod
    def take_results(self) -> Any: ...

    @abstractmethod
    def store(self, session: Session, results: Any, skip: set[str]) -> None:
        """Write ``results`` except those of the vehicles in ``skip``."""

    @abstractmethod
    def forget(self, vins: set[str]) -> None: ...

    @abstractmethod
    def reset(self) -> None: ...


# -- ubi ---------------------------------------------------------------------------------------
class UbiHandler(AnalyticsHandler):
    worker = "ubi"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.time_zones: dict[str, str] = {}
        self.reset()
        self.trips_found = 0
        self.events_found = 0

    def reset(self) -> None:
        self.segmenter = TripSegmenter(
            time_zones=self.time_zones, default_time_zone=self.settings.ubi_time_zone_default
        )
        self.detector = EventDetector()
        self.trips: list[Trip] = []
        self.events: list[DrivingEvent] = []

    def forget(self, vins: set[str]) -> None:
        self.segmenter.forget(vins)
        self.detector.forget(vins)

    def prepare(self, session: Session, vins: list[str]) -> None:
        self.time_zones.update(repository.time_zones(session, vins))

    def restore(self, parts: Mapping[str, Mapping[str, bytes]]) -> None:
        self.segmenter.restore_state({v: p["trips"] for v, p in parts.items() if "trips" in p})
        self.detector.restore_state({v: p["events"] for v, p in parts.items() if "events" in p})

    def export(self, vins: list[str]) -> dict[str, dict[str, bytes]]:
        trips = self.segmenter.export_state(vins)
        events = self.detector.export_state(vins)
        out: dict[str, dict[str, bytes]] = {}
        for vin in vins:
            parts = {k: v[vin] for k, v in (("trips", trips), ("events", events)) if vin in v}
            if parts:
                out[vin] = parts
        return out

    def analyse(self, table: Any) -> None:
        trips = self.segmenter.update(table)
        events = self.detector.update(table)
        self.trips.extend(trips)
        self.events.extend(events)
        self.trips_found += len(trips)
        self.events_found += len(events)

    def has_results(self) -> bool:
        return bool(self.trips or self.events)

    def take_results(self) -> tuple[list[Trip], list[DrivingEvent]]:
        results = (self.trips, self.events)
        self.trips, self.events = [], []
        return results

    def store(
        self,
        session: Session,
        results: tuple[list[Trip], list[DrivingEvent]],
        skip: set[str],
    ) -> None:
        trips, events = results
        trips = [t for t in trips if t.vin not in skip]
        events = [e for e in events if e.vin not in skip]
        service.store_results(session, trips, events, period_days=self.settings.ubi_period_days)


# -- battery -----------------------------------------------------------------------------------
def session_row(vin: str, s: ChargeSession) -> dict[str, Any]:
    return {
        "vin": vin,
        "start_at": service.to_dt(s.start_ms),
        "end_at": service.to_dt(s.end_ms),
        "dc": s.dc,
        "soc_start_pct": _finite(s.soc_start_pct),
        "soc_end_pct": _finite(s.soc_end_pct),
        "energy_kwh": _finite(s.energy_kwh),
        "soh_energy_pct": _finite(s.soh_energy_pct),
        "sigma_pct": _finite(s.sigma_pct),
        "rejected": s.rejected,
        "payload": jsonable(s),
    }


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def health_row(health: BatteryHealth, residual: ResidualScore) -> dict[str, Any]:
    return {
        "vin": health.vin,
        "soh_pct": health.soh_pct,
        "soh_low_pct": health.soh_low_pct,
        "soh_high_pct": health.soh_high_pct,
        "score_version": residual.score_version,
        "health": jsonable(health),
        "residual": jsonable(residual),
        "computed_at": utcnow(),
    }


class BatteryHandler(AnalyticsHandler):
    worker = "battery"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.specs: dict[str, BatterySpec | None] = {}
        self.reset()
        self.sessions_found = 0

    def reset(self) -> None:
        self.tracker = BatteryHealthTracker(lambda vin: self.specs.get(vin))
        self.closed: dict[str, list[ChargeSession]] = {}

    def forget(self, vins: set[str]) -> None:
        self.tracker.forget(vins)

    def prepare(self, session: Session, vins: list[str]) -> None:
        models = repository.vehicle_models(session, vins)
        for vin in vins:
            model, powertrain = models.get(vin, ("", ""))
            self.specs[vin] = spec_for(model, powertrain, self.settings.battery_default_kwh)

    def restore(self, parts: Mapping[str, Mapping[str, bytes]]) -> None:
        self.tracker.restore_state({v: p["battery"] for v, p in parts.items() if "battery" in p})

    def export(self, vins: list[str]) -> dict[str, dict[str, bytes]]:
        return {vin: {"battery": blob} for vin, blob in self.tracker.export_state(vins).items()}

    def analyse(self, table: Any) -> None:
        for vin, sessions in self.tracker.update(table).items():
            self.closed.setdefault(vin, []).extend(sessions)
            self.sessions_found += len(sessions)

    def has_results(self) -> bool:
        return bool(self.closed)

    def take_results(self) -> tuple[dict[str, list[ChargeSession]], dict[str, BatteryHealth]]:
        closed, self.closed = self.closed, {}
        reports = {
            vin: self.tracker.states[vin].report()
            for vin in sorted(self.touched)
            if vin in self.tracker.states
        }
        return closed, reports

    def store(
        self,
        session: Session,
        results: tuple[dict[str, list[ChargeSession]], dict[str, BatteryHealth]],
        skip: set[str],
    ) -> None:
        closed, reports = results
        rows = [
            session_row(vin, s)
            for vin, sessions in sorted(closed.items())
            if vin not in skip
            for s in sessions
        ]
        repository.upsert_battery_sessions(session, rows)
        health = []
        for vin, report in reports.items():
            spec = self.specs.get(vin)
            if spec is not None and vin not in skip:
                health.append(health_row(report, residual_score(report, spec)))
        repository.upsert_battery_health(session, health)


def build_ubi_handler(settings: Settings) -> UbiHandler:
    return UbiHandler(settings)


def build_battery_handler(settings: Settings) -> BatteryHandler:
    return BatteryHandler(settings)
