"""The fleet at a glance for operators (``GET /v1/fleet/overview``, the console's home page).

Two halves, read independently so one failing never hides the other:

* **Database**: vehicles by health, the ones needing attention, open alarms, alerting
  predictions, open DTC episodes and the campaigns still under way. A handful of aggregate
  queries whatever the fleet size, never a loop over vehicles: the health rule is
  :func:`diagnostics.service.health_status`, applied to per-vehicle counts of the same "open"
  things ``GET /v1/vehicles/{vin}/health`` lists, and campaign progress counts vehicles exactly
  as ``ota.campaigns`` does for one campaign (``_vehicle_outcome``), grouped in SQL.
* **Kafka**: dead-letter depth per DLQ topic (end − beginning offset, summed over partitions)
  and each worker group's lag per topic (end − committed; end − beginning where nothing is
  committed), for the workers of :data:`core.workers.WORKERS`. One bounded measurement
  (:data:`KAFKA_TIMEOUT_S`), shared by concurrent requests and cached for
  :data:`KAFKA_CACHE_S` so a console polling every few seconds costs the broker little; an
  unreachable broker gives ``available: false`` and the reason, never an error response.

Nothing here commits.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from pydantic import BaseModel, Field
from sqlalchemy import Integer, Select, case, func, literal_column, select, union_all
from sqlalchemy.sql.expression import Subquery
from sqlmodel import Session, col

from core.config import Settings
from core.db import utcnow
from core.vehicles.models import Vehicle
from core.workers import WORKERS
from diagnostics.models import Alarm, DtcEpisode, MaintenancePrediction
from diagnostics.service import (
    CRITICAL_SEVERITY,
    OPEN_ALARM_STATE,
    OPEN_DTC_STATES,
    health_status,
)
from ota.campaigns import FAILED, IN_FLIGHT
from ota.models import Campaign, CampaignState, InstallRecord
from ota.records import InstallStatus

log = logging.getLogger(__name__)

NEEDING_ATTENTION_LIMIT = 20
RECENT_LIMIT = 10
CAMPAIGN_LIMIT = 50
"""At most this many unfinished campaigns are listed (running and paused first)."""
UNFINISHED_CAMPAIGN_STATES = (
    CampaignState.running.value,
    CampaignState.paused.value,
    CampaignState.approved.value,
    CampaignState.draft.value,
)
"""Listed in this order; ``completed`` and ``aborted`` campaigns are final and not listed."""
KAFKA_TIMEOUT_S = 3.0
KAFKA_CACHE_S = 5.0


# --- response ------------------------------------------------------------------------------------


class HealthCounts(BaseModel):
    ok: int
    attention: int
    critical: int


class VehicleNeedingAttention(BaseModel):
    vin: str
    model: str
    status: str = Field(description="`critical` or `attention` (the health endpoint's rule)")
    open_dtcs: int
    open_alarms: int
    critical_alarms: int = Field(description="Open alarms of severity critical")
    alerting_predictions: int


class VehiclesOverview(BaseModel):
    total: int = Field(description="Vehicles in the registry")
    by_health: HealthCounts
    needing_attention: list[VehicleNeedingAttention] = Field(
        description=f"Up to {NEEDING_ATTENTION_LIMIT}: critical first, then by open alarms, "
        "open DTCs and alerting predictions (most first), then VIN"
    )


class AlarmSummary(BaseModel):
    vin: str
    rule_id: str
    severity: str
    raised_at: datetime
    value: float | None
    message: str
    late: bool = Field(description="Raised from late (store-and-forward) data")


class AlarmsOverview(BaseModel):
    open: int
    critical: int = Field(description="Open alarms of severity critical")
    recent: list[AlarmSummary] = Field(
        description=f"The {RECENT_LIMIT} most recently raised open alarms, newest first"
    )


class PredictionSummary(BaseModel):
    vin: str
    component: str
    probability: float
    horizon_days: int
    model_version: str
    reasons: list[dict[str, Any]]
    scored_at: datetime


class PredictionsOverview(BaseModel):
    alerting: int = Field(
        description="Alerting predictions (latest per vehicle, component, horizon)"
    )
    recent: list[PredictionSummary] = Field(
        description=f"The {RECENT_LIMIT} most recently scored alerting predictions, newest first"
    )


class CampaignSummary(BaseModel):
    id: uuid.UUID
    name: str
    state: str
    current_wave: int = Field(description="0-based")
    waves: int = Field(description="Number of waves")
    pause_reason: dict[str, Any] | None
    targeted: int = Field(description="Vehicles with install records (0 before the launch)")
    succeeded: int
    failed: int
    in_progress: int
    not_started: int


class DeadLetterDepth(BaseModel):
    topic: str
    messages: int = Field(description="End minus beginning offset, summed over partitions")


class ConsumerLag(BaseModel):
    group: str
    topic: str
    lag: int | None = Field(
        description="End minus committed offset summed over partitions (end minus beginning "
        "where the group committed nothing); null when the group's offsets could not be read"
    )
    error: str | None = Field(
        default=None, description="Why this group's offsets could not be read (else null)"
    )


class KafkaOverview(BaseModel):
    available: bool
    error: str | None = Field(description="Why Kafka could not be measured (when unavailable)")
    dead_letter: list[DeadLetterDepth]
    lag: list[ConsumerLag]
    measured_at: datetime


class FleetOverview(BaseModel):
    """The fleet at a glance: health, alarms, predictions, DTCs, campaigns and Kafka."""

    vehicles: VehiclesOverview
    alarms: AlarmsOverview
    predictions: PredictionsOverview
    open_dtcs: int = Field(description="Open (pending or confirmed) DTC episodes")
    campaigns: list[CampaignSummary] = Field(
        description=f"Campaigns not completed or aborted (up to {CAMPAIGN_LIMIT}): running, "
        "paused, approved, draft; newest first within a state"
    )
    kafka: KafkaOverview


class DatabaseOverview(BaseModel):
    """The database half of :class:`FleetOverview`."""

    vehicles: VehiclesOverview
    alarms: AlarmsOverview
    predictions: PredictionsOverview
    open_dtcs: int
    campaigns: list[CampaignSummary]


# --- database ------------------------------------------------------------------------------------


def database_overview(session: Session) -> DatabaseOverview:
    """Everything of the overview that the database knows."""
    open_alarms, critical_alarms = _alarm_counts(session)
    return DatabaseOverview(
        vehicles=_vehicles(session),
        alarms=AlarmsOverview(
            open=open_alarms, critical=critical_alarms, recent=_recent_alarms(session)
        ),
        predictions=PredictionsOverview(
            alerting=_count(session, MaintenancePrediction, _alerting_prediction()),
            recent=_recent_predictions(session),
        ),
        open_dtcs=_count(session, DtcEpisode, _open_dtc()),
        campaigns=_campaigns(session),
    )


def _open_alarm() -> Any:
    return col(Alarm.state) == OPEN_ALARM_STATE


def _open_dtc() -> Any:
    return col(DtcEpisode.state).in_(OPEN_DTC_STATES)


def _alerting_prediction() -> Any:
    return col(MaintenancePrediction.alerting).is_(True)


def _count(session: Session, table: Any, condition: Any) -> int:
    return int(
        session.execute(select(func.count()).select_from(table).where(condition)).scalar_one()
    )


def _problems_per_vehicle() -> Subquery:
    """Per VIN with anything open: open alarms, open critical alarms, open DTC episodes and
    alerting predictions (one row per VIN; VINs with nothing open are absent)."""
    critical = case((col(Alarm.severity) == CRITICAL_SEVERITY, 1), else_=0)
    zero = literal_column("0", Integer)
    alarms: Select = (
        select(
            col(Alarm.vin).label("vin"),
            func.count().label("alarms"),
            func.sum(critical).label("critical"),
            zero.label("dtcs"),
            zero.label("predictions"),
        )
        .where(_open_alarm())
        .group_by(col(Alarm.vin))
    )
    dtcs: Select = (
        select(
            col(DtcEpisode.vin).label("vin"),
            zero.label("alarms"),
            zero.label("critical"),
            func.count().label("dtcs"),
            zero.label("predictions"),
        )
        .where(_open_dtc())
        .group_by(col(DtcEpisode.vin))
    )
    predictions: Select = (
        select(
            col(MaintenancePrediction.vin).label("vin"),
            zero.label("alarms"),
            zero.label("critical"),
            zero.label("dtcs"),
            func.count().label("predictions"),
        )
        .where(_alerting_prediction())
        .group_by(col(MaintenancePrediction.vin))
    )
    either = union_all(alarms, dtcs, predictions).subquery("open_problem")
    return (
        select(
            either.c.vin,
            func.sum(either.c.alarms).label("alarms"),
            func.sum(either.c.critical).label("critical"),
            func.sum(either.c.dtcs).label("dtcs"),
            func.sum(either.c.predictions).label("predictions"),
        )
        .group_by(either.c.vin)
        .subquery("vehicle_problems")
    )


def _vehicles(session: Session) -> VehiclesOverview:
    total = int(session.execute(select(func.count()).select_from(Vehicle)).scalar_one())
    problems = _problems_per_vehicle()
    # Registered vehicles only, as the health endpoint (404 for a VIN not in the registry).
    registered = problems.join(Vehicle, col(Vehicle.vin) == problems.c.vin)
    flagged, critical = session.execute(
        select(
            func.count(),
            func.coalesce(func.sum(case((problems.c.critical > 0, 1), else_=0)), 0),
        ).select_from(registered)
    ).one()
    is_critical = case((problems.c.critical > 0, 0), else_=1)
    rows = session.execute(
        select(
            col(Vehicle.vin),
            col(Vehicle.model),
            problems.c.alarms,
            problems.c.critical,
            problems.c.dtcs,
            problems.c.predictions,
        )
        .select_from(registered)
        .order_by(
            is_critical,
            problems.c.alarms.desc(),
            problems.c.dtcs.desc(),
            problems.c.predictions.desc(),
            col(Vehicle.vin),
        )
        .limit(NEEDING_ATTENTION_LIMIT)
    ).all()
    needing = []
    for vin, model, alarms, critical_alarms, dtcs, predictions in rows:
        counts = {
            "open_alarms": int(alarms),
            "critical_alarms": int(critical_alarms),
            "open_dtcs": int(dtcs),
            "alerting_predictions": int(predictions),
        }
        status = health_status(
            critical_alarms=counts["critical_alarms"],
            open_alarms=counts["open_alarms"],
            open_dtcs=counts["open_dtcs"],
            alerting_predictions=counts["alerting_predictions"],
        )
        needing.append(VehicleNeedingAttention(vin=vin, model=model, status=status, **counts))
    flagged, critical = int(flagged), int(critical)
    return VehiclesOverview(
        total=total,
        by_health=HealthCounts(ok=total - flagged, attention=flagged - critical, critical=critical),
        needing_attention=needing,
    )


def _alarm_counts(session: Session) -> tuple[int, int]:
    critical = case((col(Alarm.severity) == CRITICAL_SEVERITY, 1), else_=0)
    total, critical_count = session.execute(
        select(func.count(), func.coalesce(func.sum(critical), 0)).where(_open_alarm())
    ).one()
    return int(total), int(critical_count)


def _recent_alarms(session: Session) -> list[AlarmSummary]:
    query = (
        select(Alarm)
        .where(_open_alarm())
        .order_by(col(Alarm.raised_at).desc(), col(Alarm.id).desc())
        .limit(RECENT_LIMIT)
    )
    alarms = session.execute(query).scalars()
    return [AlarmSummary.model_validate(a, from_attributes=True) for a in alarms]


def _recent_predictions(session: Session) -> list[PredictionSummary]:
    query = (
        select(MaintenancePrediction)
        .where(_alerting_prediction())
        .order_by(col(MaintenancePrediction.scored_at).desc(), col(MaintenancePrediction.id).desc())
        .limit(RECENT_LIMIT)
    )
    predictions = session.execute(query).scalars()
    return [PredictionSummary.model_validate(p, from_attributes=True) for p in predictions]


def _campaigns(session: Session) -> list[CampaignSummary]:
    rank = case(
        *((col(Campaign.state) == state, i) for i, state in enumerate(UNFINISHED_CAMPAIGN_STATES)),
        else_=len(UNFINISHED_CAMPAIGN_STATES),
    )
    campaigns = (
        session.execute(
            select(Campaign)
            .where(col(Campaign.state).in_(UNFINISHED_CAMPAIGN_STATES))
            .order_by(rank, col(Campaign.created_at).desc(), col(Campaign.id))
            .limit(CAMPAIGN_LIMIT)
        )
        .scalars()
        .all()
    )
    outcomes = _vehicle_outcomes(session, [c.id for c in campaigns])
    summaries = []
    for campaign in campaigns:
        counts = outcomes.get(campaign.id, {})
        summaries.append(
            CampaignSummary(
                id=campaign.id,
                name=campaign.name,
                state=campaign.state,
                current_wave=campaign.current_wave,
                waves=len(campaign.waves),
                pause_reason=campaign.pause_reason,
                targeted=sum(counts.values()),
                succeeded=counts.get("succeeded", 0),
                failed=counts.get("failed", 0),
                in_progress=counts.get("in_progress", 0),
                not_started=counts.get("not_started", 0),
            )
        )
    return summaries


def _vehicle_outcomes(
    session: Session, campaign_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """campaign id -> vehicle outcome -> vehicles, with the rule of
    ``ota.campaigns._vehicle_outcome`` (a vehicle fails when any of its ECUs failed, succeeds
    when all did, fails when all were cancelled, is in progress when any is in flight) computed
    per vehicle in SQL from counts of its install records."""
    if not campaign_ids:
        return {}
    state = col(InstallRecord.state)

    def records_in(states: Sequence[str]) -> Any:
        return func.sum(case((state.in_(states), 1), else_=0))

    per_vehicle = (
        select(
            col(InstallRecord.campaign_id).label("campaign_id"),
            func.count().label("ecus"),
            records_in(FAILED).label("failed"),
            records_in([InstallStatus.SUCCEEDED.value]).label("succeeded"),
            records_in([InstallStatus.CANCELLED.value]).label("cancelled"),
            records_in(IN_FLIGHT).label("in_flight"),
        )
        .where(col(InstallRecord.campaign_id).in_(campaign_ids))
        .group_by(col(InstallRecord.campaign_id), col(InstallRecord.vin))
        .subquery("vehicle_records")
    )
    outcome = case(
        (per_vehicle.c.failed > 0, "failed"),
        (per_vehicle.c.succeeded == per_vehicle.c.ecus, "succeeded"),
        (per_vehicle.c.cancelled == per_vehicle.c.ecus, "failed"),
        (per_vehicle.c.in_flight > 0, "in_progress"),
        else_="not_started",
    )
    classified = select(per_vehicle.c.campaign_id, outcome.label("outcome")).subquery("outcomes")
    rows = session.execute(
        select(classified.c.campaign_id, classified.c.outcome, func.count()).group_by(
            classified.c.campaign_id, classified.c.outcome
        )
    )
    found: dict[uuid.UUID, dict[str, int]] = {}
    for campaign_id, name, vehicles in rows:
        found.setdefault(campaign_id, {})[name] = int(vehicles)
    return found


# --- Kafka ---------------------------------------------------------------------------------------


def dead_letter_topics(settings: Settings) -> list[str]:
    """The DLQ topics of the registered workers (telemetry, services, OTA), each once."""
    topics = (spec.dlq_topic(settings) for spec in WORKERS.values())
    return list(dict.fromkeys(topic for topic in topics if topic))


def worker_groups(settings: Settings) -> list[tuple[str, list[str]]]:
    """(consumer group, its topics) of every registered worker."""
    return [(spec.group_id, spec.topics(settings)) for spec in WORKERS.values()]


async def measure_kafka(
    settings: Settings,
    *,
    groups: Sequence[tuple[str, Sequence[str]]] | None = None,
    dead_letter: Sequence[str] | None = None,
    timeout_s: float = KAFKA_TIMEOUT_S,
) -> KafkaOverview:
    """Dead-letter depths and consumer lag, within ``timeout_s``; on any failure an overview
    with ``available=False`` and the reason (never an exception)."""
    groups = worker_groups(settings) if groups is None else groups
    dead_letter = dead_letter_topics(settings) if dead_letter is None else dead_letter
    try:
        async with asyncio.timeout(timeout_s):
            depths, lags = await _measure(settings, groups, dead_letter, timeout_s)
    except TimeoutError:
        return _unavailable(f"Kafka did not answer within {timeout_s:g} s")
    except Exception as exc:  # noqa: BLE001 - any failure: the database half must still show
        log.warning("Kafka overview unavailable: %s", _reason(exc))
        return _unavailable(_reason(exc))
    return KafkaOverview(
        available=True, error=None, dead_letter=depths, lag=lags, measured_at=utcnow()
    )


def _unavailable(reason: str) -> KafkaOverview:
    return KafkaOverview(
        available=False, error=reason, dead_letter=[], lag=[], measured_at=utcnow()
    )


def _reason(exc: BaseException) -> str:
    name, text = type(exc).__name__, str(exc)
    reason = text if text.startswith(name) else f"{name}: {text}".rstrip(": ")
    return reason[:300]


async def _measure(
    settings: Settings,
    groups: Sequence[tuple[str, Sequence[str]]],
    dead_letter: Sequence[str],
    timeout_s: float,
) -> tuple[list[DeadLetterDepth], list[ConsumerLag]]:
    timeout_ms = max(1000, int(timeout_s * 1000))
    admin = AIOKafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="fleet-overview",
        request_timeout_ms=timeout_ms,
    )
    offsets = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        client_id="fleet-overview",
        request_timeout_ms=timeout_ms,
    )
    try:
        await admin.start()
        wanted = {*dead_letter, *(topic for _, topics in groups for topic in topics)}
        # All topics' metadata: asking for named topics could auto-create a missing one.
        partitions: dict[str, list[TopicPartition]] = {
            described["topic"]: [
                TopicPartition(described["topic"], p["partition"]) for p in described["partitions"]
            ]
            for described in await admin.describe_topics()
            if described["topic"] in wanted and described["error_code"] == 0
        }
        every = [tp for tps in partitions.values() for tp in tps]
        committed: list[dict[TopicPartition, Any] | BaseException] = [{} for _ in groups]
        beginning: dict[TopicPartition, int] = {}
        end: dict[TopicPartition, int] = {}
        if every:
            await offsets.start()
            beginning, end = await asyncio.gather(
                offsets.beginning_offsets(every), offsets.end_offsets(every)
            )
            # One group's coordinator not answering (say, on a broker that has not created
            # its offsets topic yet) leaves that group without a figure, not all of Kafka.
            committed = await asyncio.gather(
                *(
                    _committed(admin, group, [tp for t in topics for tp in partitions.get(t, [])])
                    for group, topics in groups
                ),
                return_exceptions=True,
            )
    finally:
        await asyncio.gather(admin.close(), offsets.stop(), return_exceptions=True)

    def depth(topic: str) -> int:
        return sum(max(end[tp] - beginning[tp], 0) for tp in partitions.get(topic, []))

    depths = [DeadLetterDepth(topic=topic, messages=depth(topic)) for topic in dead_letter]
    lags: list[ConsumerLag] = []
    for (group, topics), group_offsets in zip(groups, committed, strict=True):
        if isinstance(group_offsets, BaseException):
            if not isinstance(group_offsets, Exception):
                raise group_offsets  # cancellation and the like are not a group's problem
            reason = _reason(group_offsets)
            log.warning("Kafka overview: offsets of group %s unavailable: %s", group, reason)
            lags.extend(ConsumerLag(group=group, topic=t, lag=None, error=reason) for t in topics)
            continue
        for topic in topics:
            lag = 0
            for tp in partitions.get(topic, []):
                done = group_offsets.get(tp)
                position = done.offset if done is not None and done.offset >= 0 else -1
                # Nothing committed, or committed below what retention kept: all is still to do.
                lag += max(end[tp] - max(position, beginning[tp]), 0)
            lags.append(ConsumerLag(group=group, topic=topic, lag=lag))
    return depths, lags


async def _committed(
    admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, Any]:
    if not partitions:
        return {}
    return await admin.list_consumer_group_offsets(group, partitions=partitions)


class KafkaOverviewCache:
    """One measurement at a time, reused for ``ttl_s`` seconds (failures too: a broker that
    is down is not asked again on every poll)."""

    def __init__(self, ttl_s: float = KAFKA_CACHE_S) -> None:
        self.ttl_s = ttl_s
        self._lock = asyncio.Lock()
        self._cached: tuple[float, KafkaOverview] | None = None

    async def get(self, settings: Settings) -> KafkaOverview:
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self.ttl_s:
                return self._cached[1]
            overview = await measure_kafka(settings)
            self._cached = (time.monotonic(), overview)
            return overview
