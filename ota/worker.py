"""The ``ota`` worker: install reports from ``ota.reports.v1`` (vehicles or gateways that report
over Kafka) applied like the HTTP ones, then the gates of the campaigns they touched, in one
transaction per batch; and, every ``ota_refresh_s``, re-signing of the metadata that expires
soon (the Image repository's snapshot and timestamp, the Director's per-vehicle timestamps).

A report is JSON ``{"vin", "report_id", "campaign_id", "ecu_id", "attempt", "seq", "state",
"error_code"?, "detail"?}`` keyed by VIN; one that breaks this contract, names an install that
does not exist, or whose key is not its VIN goes to ``ota.dlq`` with the reason.

Every applied report is logged after the commit with its correlation id (the record's
``correlation_id`` header, else its ``report_id``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from pydantic import ValidationError
from sqlalchemy.exc import OperationalError
from sqlmodel import Session, select

from core.config import Settings
from core.db import make_engine, session_scope
from core.errors import NotFound
from core.logging import bind, record_correlation_id
from core.runner import BatchHandler, DeadLetter, HandlerResult
from ota import campaigns
from ota.models import Campaign, CampaignState, CampaignVehicle

log = logging.getLogger(__name__)

TRANSACTION_ATTEMPTS = 3
GATES_EVERY_S = 30.0

_Applied = tuple[str, str, campaigns.ReportIn, str]
"""(correlation id, VIN, report, the install record's state after it)."""


class OtaHandler(BatchHandler):
    def __init__(self, settings: Settings) -> None:
        super().__init__()
        self.settings = settings
        self.engine = make_engine(settings)
        self.last_refresh = float("-inf")
        self.last_gates = float("-inf")

    async def close(self) -> None:
        self.engine.dispose()

    async def process(
        self, batch: Mapping[TopicPartition, Sequence[ConsumerRecord]]
    ) -> HandlerResult:
        records = [r for part in batch.values() for r in part]
        dead, applied = await asyncio.to_thread(self._apply, records)
        self.mark_processed(batch)  # stored (committed) above
        return HandlerResult(
            dead_letters=dead,
            processed=len(records) - len(dead),
            duplicates=len(records) - len(dead) - applied,
        )

    def _apply(self, records: list[ConsumerRecord]) -> tuple[list[DeadLetter], int]:
        """Apply the batch in one transaction (retried when it loses a deadlock), then run the
        gates of the campaigns it touched, each in its own transaction after it."""
        for attempt in range(1, TRANSACTION_ATTEMPTS + 1):
            try:
                dead, applied, touched = self._apply_once(records)
                break
            except OperationalError as exc:
                if attempt == TRANSACTION_ATTEMPTS:
                    raise
                log.warning("report batch retried: %s", exc.orig)
                time.sleep(0.1 * attempt)
        for cid, vin, report, state in applied:  # committed: log what happened
            with bind(correlation_id=cid, vin=vin):
                log.info(
                    "install report %s applied: campaign %s ECU %s now %s",
                    report.report_id,
                    report.campaign_id,
                    report.ecu_id,
                    state,
                    extra={"outcome": "report_applied", "campaign_id": str(report.campaign_id)},
                )
        try:
            campaigns.evaluate_later(self.engine, self.settings, touched)
        except Exception:  # noqa: BLE001 - the reports are stored; run_gates catches up
            log.exception("gate evaluation after a report batch failed")
        return dead, len(applied)

    def _apply_once(
        self, records: list[ConsumerRecord]
    ) -> tuple[list[DeadLetter], list[_Applied], list[Any]]:
        dead: list[DeadLetter] = []
        applied: list[_Applied] = []
        touched: set[Any] = set()
        with session_scope(self.engine) as session:
            for record in records:
                try:
                    vin, report = _decode(record)
                    cid = record_correlation_id(record.headers) or report.report_id
                    with bind(correlation_id=cid, vin=vin):
                        result, campaign = campaigns.apply_report(
                            session, self.settings, vin, report
                        )
                except _BadReport as exc:
                    dead.append(DeadLetter(record, exc.reason, exc.detail))
                    continue
                except NotFound as exc:
                    dead.append(DeadLetter(record, "unknown_install", str(exc.detail)))
                    continue
                if result.applied:
                    applied.append((cid, vin, report, result.state))
                if campaign is not None and result.applied:
                    touched.add(campaign.id)
        return dead, applied, sorted(touched)

    async def tick(self) -> None:
        if time.monotonic() - self.last_refresh >= self.settings.ota_refresh_s:
            self.last_refresh = time.monotonic()
            await asyncio.to_thread(self.refresh)
        if time.monotonic() - self.last_gates >= GATES_EVERY_S:
            self.last_gates = time.monotonic()
            await asyncio.to_thread(self.run_gates)

    def run_gates(self) -> None:
        """Every running campaign's gates: catches up on an evaluation that failed after its
        reports were stored (an API process that died, a lost deadlock)."""
        with session_scope(self.engine) as session:
            running = list(
                session.exec(
                    select(Campaign.id).where(Campaign.state == CampaignState.running.value)
                )
            )
        campaigns.evaluate_later(self.engine, self.settings, running)

    def refresh(self) -> None:
        from ota import repos, service

        with session_scope(self.engine) as session:
            if not repos.initialized(session):
                return
            resigned = service.refresh_metadata(session, self.settings, _active_vins(session))
        if resigned["image"] or resigned["director"]:
            log.info("re-signed metadata: %s", resigned)


class _BadReport(ValueError):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason, self.detail = reason, detail


def _decode(record: ConsumerRecord) -> tuple[str, campaigns.ReportIn]:
    if record.value is None:
        raise _BadReport("empty_value", "the record has no value")
    if b"\\u0000" in record.value:  # PostgreSQL text cannot hold NUL: refuse it here
        raise _BadReport("invalid_field", "a string contains a NUL character (\\u0000)")
    try:
        body = orjson.loads(record.value)
    except orjson.JSONDecodeError as exc:
        raise _BadReport("invalid_json", str(exc)) from None
    if not isinstance(body, dict) or not isinstance(body.get("vin"), str):
        raise _BadReport("invalid_field", "a report is an object with a `vin`")
    vin = body.pop("vin")
    if record.key is not None and record.key != vin.encode():
        raise _BadReport("key_mismatch", f"key {record.key!r} is not the VIN {vin}")
    try:
        return vin, campaigns.ReportIn.model_validate(body)
    except ValidationError as exc:
        raise _BadReport("invalid_field", str(exc.errors(include_url=False))[:500]) from None


def _active_vins(session: Session) -> list[str]:
    query = (
        select(CampaignVehicle.vin)
        .join(Campaign, Campaign.id == CampaignVehicle.campaign_id)  # type: ignore[arg-type]
        .where(Campaign.state.in_([CampaignState.running.value, CampaignState.paused.value]))  # type: ignore[attr-defined]
    )
    return sorted(set(session.exec(query)))


def build_ota_handler(settings: Settings) -> OtaHandler:
    return OtaHandler(settings)
