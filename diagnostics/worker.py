"""The diagnosis worker (``fleet worker diagnostics``): DTC lifecycle and rule alarms.

Per consumer batch: the records become one Arrow table (``ingestion.batches``), the DTC tracker
and the rule engine run over it, their events are upserted in one transaction (natural keys,
so a replay rewrites the same rows) and, after the commit, published to
``diagnostics.findings.v1`` (key = VIN; ``finding_id`` lets consumers drop the duplicates a
replay re-publishes).

Offsets are committed at checkpoints (every ``diagnostics_checkpoint_s`` seconds, on a
rebalance and at shutdown), together with the rule engine's state of the vehicles seen since
the last one and their last known position and odometer (``vehicle_status``, kept in memory
between checkpoints: one write per vehicle and checkpoint, however many samples arrived). A
restarted worker restores a vehicle's state when it first sees it and replays the records after
the checkpoint, which gives the same events again. DTC episodes carry their own replay
watermark and are stored with every batch. The status only moves forward in event time, so a
replay leaves it as it is.

A finding carries the correlation id of its vehicle's newest record in the batch that raised it
(that record's ``correlation_id`` header, else its ``message_id``) as its own
``correlation_id`` header, so the services worker logs the booking under the original id.
Findings of silent vehicles (aged-out DTCs) have none.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from core.config import Settings
from core.db import session_scope, utcnow
from core.logging import HEADER_CORRELATION_ID, bind, record_correlation_id
from core.runner import HandlerResult
from core.vehicles import repository as vehicles_repository
from core.vehicles.status import StatusUpdate, latest_status, merge
from diagnostics import repository
from diagnostics.dtc_lifecycle import DtcBatchResult, DtcEvent, DtcRecord, DtcState, DtcTracker
from diagnostics.rules import STATE_FORMAT, AlarmEvent, RuleEngine
from diagnostics.rules_model import RuleSet, load_rules
from ingestion.batches import TelemetryTableHandler

log = logging.getLogger(__name__)

DEFAULT_RULES = Path(__file__).with_name("default_rules.yaml")
FINDING_VERSION = 1
EXPIRE_EVERY_S = 300.0
_ENDED = (DtcState.CLEARED, DtcState.AGED_OUT)
_encode = msgspec.json.Encoder().encode


class _MessageId(msgspec.Struct):
    message_id: str


_message_id = msgspec.json.Decoder(_MessageId).decode


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


class DiagnosticsHandler(TelemetryTableHandler):
    def __init__(self, settings: Settings, ruleset: RuleSet) -> None:
        super().__init__(settings)
        self.ruleset = ruleset
        self.tracker = DtcTracker()
        self.rules = RuleEngine(ruleset, late_after_s=settings.diagnostics_late_after_s)
        self.loaded: set[str] = set()
        """Vehicles whose state was restored from the database (or found to have none)."""
        self.touched: set[str] = set()
        """Vehicles seen since the last checkpoint."""
        self.status: dict[str, StatusUpdate] = {}
        """Newest position and odometer per vehicle since the last checkpoint."""
        self.last_checkpoint = time.monotonic()
        self.last_expiry = time.monotonic()
        self.findings = 0
        self.malformed_dtcs = 0

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        decoded = self.decode(batch)
        table = decoded.table
        if table.num_rows:
            # Before any await, so a checkpoint that marks these offsets durable writes it.
            self._merge_status(latest_status(table))
            vins = table["vin"].unique().to_pylist()
            new = [vin for vin in vins if vin not in self.loaded]
            if new:
                await asyncio.to_thread(self._restore, new)
            self.touched.update(vins)
            dtcs = self.tracker.process(table)
            alarms = self.rules.process(table)
            self.malformed_dtcs += sum(m.count for m in dtcs.malformed)
            if dtcs.events or dtcs.updated or alarms:
                # The position of a vehicle with findings is stored with them, so whoever acts
                # on a finding (the services worker books the nearest center) already has it.
                found = {e.vin for e in dtcs.events} | {a.vin for a in alarms}
                status = {vin: self.status[vin] for vin in found if vin in self.status}
                await asyncio.to_thread(self._store, dtcs, alarms, status)
                await self._publish(dtcs.events, alarms, _correlation_ids(batch, found))
        return HandlerResult(processed=decoded.records - decoded.skipped)

    async def tick(self) -> None:
        if time.monotonic() - self.last_expiry >= EXPIRE_EVERY_S:
            await self.expire(int(time.time() * 1000))
        if time.monotonic() - self.last_checkpoint >= self.settings.diagnostics_checkpoint_s:
            await self.checkpoint()

    async def expire(self, now_ms: int) -> None:
        """Age out the DTCs of vehicles that went silent (they send no report that would)."""
        self.last_expiry = time.monotonic()
        aged = self.tracker.expire(now_ms)
        if aged.events or aged.updated:
            await asyncio.to_thread(self._store, aged, [])
            await self._publish(aged.events, [])

    async def flush(self) -> None:
        await self.checkpoint()

    async def on_revoked(self, partitions: set[TopicPartition]) -> None:
        # The runner flushed (checkpointed) already, which stored the rule state and the
        # pending status. Another worker continues these partitions' vehicles from the
        # database, so forget everything and restore lazily.
        await super().on_revoked(partitions)
        self.tracker = DtcTracker()
        self.rules = RuleEngine(self.ruleset, late_after_s=self.settings.diagnostics_late_after_s)
        self.loaded.clear()
        self.touched.clear()
        self.status.clear()

    async def checkpoint(self) -> None:
        """Store the rule state and the status of the vehicles seen since the last checkpoint
        (one transaction); then their offsets may be committed."""
        # Snapshot offsets and what they produced together, before the first await (the
        # runner's batch_lock keeps process() and a rebalance's flush from interleaving).
        pending = self.pending_offsets()
        touched, self.touched = self.touched, set()
        status, self.status = self.status, {}
        if touched or status:
            state = self.rules.export_state(touched)["vehicles"]
            try:
                await asyncio.to_thread(self._store_checkpoint, state, status)
            except BaseException:
                # Not stored: keep it for the next checkpoint (the offsets stay pending).
                self.touched |= touched
                self._merge_status(status)
                raise
        self.mark_durable(pending)
        self.last_checkpoint = time.monotonic()

    # -- database -------------------------------------------------------------------------

    def _restore(self, vins: list[str]) -> None:
        with session_scope(self.engine) as session:
            episodes = repository.latest_dtc_episodes(session, vins)
            states = repository.rule_states(session, vins)
        self.tracker.restore(
            [DtcRecord.from_dict(e.state_data) for e in episodes if e.state_data], vins=vins
        )
        if states:
            unknown = self.rules.restore_state(
                {
                    "format": STATE_FORMAT,
                    "late_after_s": self.settings.diagnostics_late_after_s,
                    "vehicles": states,
                }
            )
            if unknown:
                log.warning("stored state has rules that no longer exist: %s", unknown)
        self.loaded.update(vins)

    def _store(
        self,
        dtcs: DtcBatchResult,
        alarms: list[AlarmEvent],
        status: Mapping[str, StatusUpdate] | None = None,
    ) -> None:
        confirmed = {
            (e.vin, e.key, e.episode): e.ts
            for e in dtcs.events
            if e.state_after is DtcState.CONFIRMED
        }
        episodes = [_episode_row(r, confirmed) for r in dtcs.updated]
        with session_scope(self.engine) as session:
            repository.upsert_dtc_episodes(session, episodes)
            repository.upsert_alarms(session, _alarm_rows(alarms))
            if status:
                vehicles_repository.upsert_vehicle_status(session, status, utcnow())

    def _store_checkpoint(
        self, states: Mapping[str, Any], status: Mapping[str, StatusUpdate]
    ) -> None:
        with session_scope(self.engine) as session:
            if states:
                repository.upsert_rule_states(session, states)
            vehicles_repository.upsert_vehicle_status(session, status, utcnow())

    def _merge_status(self, updates: Mapping[str, StatusUpdate]) -> None:
        for vin, update in updates.items():
            pending = self.status.get(vin)
            self.status[vin] = update if pending is None else merge(pending, update)

    # -- findings topic -------------------------------------------------------------------

    async def _publish(
        self,
        dtc_events: list[DtcEvent],
        alarms: list[AlarmEvent],
        correlation: Mapping[str, str] | None = None,
    ) -> None:
        """Send the findings keyed by VIN, each with its vehicle's correlation id, and wait
        until all are acknowledged."""
        assert self.producer is not None
        correlation = correlation or {}
        futures = []
        for vin, value in [*map(_dtc_finding, dtc_events), *map(_alarm_finding, alarms)]:
            cid = correlation.get(vin)
            headers = [(HEADER_CORRELATION_ID, cid.encode())] if cid else None
            futures.append(
                await self.producer.send(
                    self.settings.findings_topic, _encode(value), key=vin.encode(), headers=headers
                )
            )
            if log.isEnabledFor(logging.DEBUG):
                with bind(correlation_id=cid, vin=vin):
                    log.debug(
                        "finding %s %s published",
                        value["kind"],
                        value["event"],
                        extra={"outcome": "finding", "finding_id": value["finding_id"]},
                    )
        await asyncio.gather(*futures)
        self.findings += len(futures)


def _correlation_ids(
    batch: Mapping[TopicPartition, Sequence[ConsumerRecord]], vins: set[str]
) -> dict[str, str]:
    """Per VIN with findings: the correlation id of its newest record in the batch (only
    those records are looked at, and only when there are findings)."""
    keys = {vin.encode(): vin for vin in vins}
    newest: dict[str, ConsumerRecord] = {}
    for records in batch.values():
        for record in records:
            vin = keys.get(record.key) if record.key is not None else None
            if vin is not None and (vin not in newest or record.timestamp >= newest[vin].timestamp):
                newest[vin] = record
    ids: dict[str, str] = {}
    for vin, record in newest.items():
        cid = record_correlation_id(record.headers)
        if cid is None and record.value:
            try:
                cid = _message_id(record.value).message_id  # produced by the vehicle itself
            except msgspec.MsgspecError:
                continue
        if cid:
            ids[vin] = cid
    return ids


def _episode_row(
    record: DtcRecord, confirmed: Mapping[tuple[str, str, int], int]
) -> dict[str, Any]:
    ended = record.state in _ENDED
    confirmed_at = confirmed.get((record.vin, record.key, record.episode))
    if confirmed_at is None and record.state is DtcState.CONFIRMED:
        confirmed_at = record.state_since
    return {
        "vin": record.vin,
        "code": record.key,
        "episode": record.episode,
        "state": record.state.value,
        "first_seen": _dt(record.first_seen),
        "last_seen": _dt(record.last_seen),
        "confirmed_at": None if confirmed_at is None else _dt(confirmed_at),
        "ended_at": _dt(record.state_since) if ended else None,
        "occurrences": record.occurrences,
        "decoded": record.dtc.as_dict(),
        "freeze_frame": record.freeze_frame,
        "state_data": record.as_dict(),
        "updated_at": utcnow(),
    }


def _alarm_rows(events: Sequence[AlarmEvent]) -> list[dict[str, Any]]:
    """One row per alarm (keyed by its raised event): raising inserts it, clearing updates it.
    An alarm raised and cleared in the same batch becomes one row (a statement may not
    update a row twice)."""
    rows: dict[tuple[str, str, int], dict[str, Any]] = {}
    for event in events:
        key = (event.vin, event.rule_id, event.raised_ts_ms)
        value = event.value
        row: dict[str, Any] = {
            "vin": event.vin,
            "rule_id": event.rule_id,
            "raised_at": _dt(event.raised_ts_ms),
            "severity": event.severity,
            "state": "open" if event.kind == "raised" else "cleared",
            "late": event.late,
            "cleared_at": _dt(event.ts_ms) if event.kind == "cleared" else None,
            # The value that raised it (kept when the clearing event updates the row).
            "value": value
            if event.kind == "raised"
            and isinstance(value, int | float)
            and not isinstance(value, bool)
            else None,
            "message": event.message[:500],
            "details": event.to_dict(),
            "updated_at": utcnow(),
        }
        earlier = rows.get(key)
        if earlier is not None and row["value"] is None:
            row["value"] = earlier["value"]
        rows[key] = row
    return list(rows.values())


def finding_id(*parts: object) -> str:
    """A stable id from a finding's natural key (consumers deduplicate on it)."""
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _dtc_finding(event: DtcEvent) -> tuple[str, dict[str, Any]]:
    return event.vin, {
        "v": FINDING_VERSION,
        "finding_id": finding_id("dtc", event.vin, event.key, event.episode, event.state_after),
        "kind": "dtc",
        "vin": event.vin,
        "ts": event.ts,
        "event": event.state_after.value,
        "code": event.key,
        "severity": "info" if event.state_after in _ENDED else "warning",
        "late": False,
        "details": event.as_dict(),
    }


def _alarm_finding(event: AlarmEvent) -> tuple[str, dict[str, Any]]:
    return event.vin, {
        "v": FINDING_VERSION,
        "finding_id": finding_id("alarm", *event.key),
        "kind": "alarm",
        "vin": event.vin,
        "ts": event.ts_ms,
        "event": event.kind,
        "rule_id": event.rule_id,
        "severity": event.severity,
        "late": event.late,
        "details": event.to_dict(),
    }


def build_diagnostics_handler(settings: Settings) -> DiagnosticsHandler:
    path = settings.diagnostics_rules_path or DEFAULT_RULES
    return DiagnosticsHandler(settings, load_rules(path))
