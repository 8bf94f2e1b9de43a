"""Campaigns: the dry run, approval, launch in waves, the gates that advance or pause them,
pause, resume, abort, retry of the failed, late joiners, and the vehicle's side (check-in,
manifest, reports) with the UN R156 records. Nothing here commits; callers own the
transaction. Launches, approvals, pauses (by an operator or a gate), resumes, aborts and retries
write audit events.

The arithmetic is in ``ota.rollout`` (waves, gates, eligibility), ``ota.records`` (the
per-ECU state machine) and ``ota.windows`` (maintenance windows); this module maps rows onto it
and publishes what each vehicle must install through the Director.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from pydantic import AwareDatetime, BaseModel, field_validator
from pydantic import Field as PydanticField
from sqlalchemy import func
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col, select

from core import audit
from core.config import Settings
from core.db import session_scope, utcnow, write_lock
from core.errors import Conflict, Forbidden, NotFound, ValidationFailed
from core.vehicles.models import Ecu, Vehicle
from ota import records as rec
from ota import repos, rollout, windows
from ota.director import DirectorTarget
from ota.models import (
    Campaign,
    CampaignState,
    CampaignVehicle,
    InstallRecord,
    Rxswin,
    SoftwareImage,
    UpdateRecord,
    VehicleManifest,
    VehicleReport,
)

log = logging.getLogger(__name__)

ACTIVE = (CampaignState.running.value, CampaignState.paused.value)
IN_FLIGHT = (
    rec.InstallStatus.NOTIFIED.value,
    rec.InstallStatus.DOWNLOADING.value,
    rec.InstallStatus.INSTALLING.value,
)
FAILED = (rec.InstallStatus.FAILED.value, rec.InstallStatus.ROLLED_BACK.value)
PER_VEHICLE_S = 600.0
"""Dry run: expected time from notification to report per vehicle."""
WAVE_SOAK_S = 3600.0
EVALUATION_ATTEMPTS = 4
BUSY = "busy_in_other_campaign"
"""Dry-run reason of a vehicle that follows another active campaign (one at a time)."""
SHARED_HARDWARE = "shared_hardware"
"""Dry-run reason of a vehicle with two ECUs of the image's hardware id (not supported)."""


# --- schemas -------------------------------------------------------------------------------------


class SoftwareConditionIn(BaseModel):
    ecu_id: str | None = None
    hardware_id: str | None = None
    versions: list[str] = []
    min_version: str | None = None
    max_version: str | None = None


class TargetFilterIn(BaseModel):
    models: list[str] = []
    model_year_min: int | None = None
    model_year_max: int | None = None
    regions: list[str] = []
    tags: list[str] = []
    software: list[SoftwareConditionIn] = []


class GateIn(BaseModel):
    success_threshold: float = PydanticField(default=0.95, gt=0, le=1)
    max_failure_rate: float = PydanticField(default=0.05, ge=0, lt=1)
    min_reports: int = PydanticField(default=5, ge=1)
    z: float = PydanticField(default=1.96, gt=0)


class CampaignIn(BaseModel):
    name: str = PydanticField(min_length=1, max_length=200)
    image_id: uuid.UUID
    target_filter: TargetFilterIn = TargetFilterIn()
    waves: list[str] = PydanticField(
        default=["5", "25%", "100%"],
        min_length=1,
        max_length=20,
        description="Cumulative wave targets, counts or percentages; the last must be 100%.",
    )
    gate: GateIn = GateIn()
    update_kind: str = PydanticField(default="soft", pattern="^(soft|forced)$")
    deadline: AwareDatetime | None = None
    maintenance_windows: list[dict[str, Any]] = []
    preconditions: dict[str, Any] = PydanticField(
        default_factory=dict, examples=[{"min_soc_pct": 30, "parked": True}]
    )
    requires_approval: bool = False

    @field_validator("waves")
    @classmethod
    def _waves(cls, value: list[str]) -> list[str]:
        rollout.WaveSpec.parse(value)  # WaveSpecError is a ValueError: a 422 naming the field
        return value

    @field_validator("maintenance_windows")
    @classmethod
    def _windows(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [w.to_spec() for w in windows.parse_windows(value, field="maintenance_windows")]

    @field_validator("preconditions")
    @classmethod
    def _preconditions(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = set(value) - {"min_soc_pct", "parked"}
        if unknown:
            raise ValueError(f"unknown preconditions {sorted(unknown)}; use min_soc_pct, parked")
        soc = value.get("min_soc_pct")
        if soc is not None and (not isinstance(soc, int) or not 0 <= soc <= 100):
            raise ValueError("min_soc_pct is an integer percentage 0-100")
        if "parked" in value and not isinstance(value["parked"], bool):
            raise ValueError("parked is true or false")
        return value


class CampaignRead(BaseModel):
    id: uuid.UUID
    name: str
    image_id: uuid.UUID
    state: str
    current_wave: int
    waves: list[str]
    gate: dict[str, Any]
    target_filter: dict[str, Any]
    update_kind: str
    deadline: datetime | None
    maintenance_windows: list[dict[str, Any]]
    preconditions: dict[str, Any]
    requires_approval: bool
    created_by: str
    approved_by: str | None
    pause_reason: dict[str, Any] | None
    created_at: datetime
    launched_at: datetime | None
    finished_at: datetime | None


class WaveProgress(BaseModel):
    wave: int
    vehicles: int
    succeeded: int
    failed: int
    in_progress: int
    not_started: int
    failure_rate_upper: float
    decision: str
    reason: dict[str, Any]


class FailureGroupRead(BaseModel):
    error_code: str
    hardware_id: str
    vehicles: int
    reports: int
    example_vins: list[str]


class CampaignStatus(BaseModel):
    campaign: CampaignRead
    waves: list[WaveProgress]
    failures: list[FailureGroupRead]


class DryRun(BaseModel):
    eligible: int
    blocked: dict[str, int]
    """Targeted but not updatable, by reason."""
    not_targeted: dict[str, int]
    wave_sizes: list[int]
    expected_duration_s: float
    examples: dict[str, list[str]]
    """Up to 5 VINs per reason."""


class ManifestEcu(BaseModel):
    ecu_id: str = PydanticField(min_length=1, max_length=64)
    hardware_id: str = PydanticField(min_length=1, max_length=64)
    image: str | None = PydanticField(default=None, max_length=200)
    version: str | None = PydanticField(default=None, max_length=64)
    release_counter: int | None = PydanticField(default=None, ge=0)


class ManifestIn(BaseModel):
    ecus: list[ManifestEcu] = PydanticField(max_length=256)


class ReportIn(BaseModel):
    report_id: str = PydanticField(min_length=1, max_length=64)
    campaign_id: uuid.UUID
    ecu_id: str = PydanticField(min_length=1, max_length=64)
    attempt: int = PydanticField(ge=1)
    seq: int = PydanticField(ge=0)
    state: str = PydanticField(pattern="^(downloading|installing|succeeded|failed|rolled_back)$")
    error_code: str | None = PydanticField(default=None, max_length=64)
    detail: str | None = PydanticField(default=None, max_length=500)


class ReportResult(BaseModel):
    applied: bool
    state: str
    reason: str | None


class CheckInUpdate(BaseModel):
    campaign_id: uuid.UUID
    ecu_id: str
    attempt: int
    filename: str
    update_kind: str
    deadline: datetime | None
    maintenance_windows: list[dict[str, Any]]
    preconditions: dict[str, Any]
    window_open: bool
    """A maintenance window is open now in the vehicle's local time (always, without windows)."""
    next_window: datetime | None
    needs_consent: bool
    """A soft update before its deadline needs the driver's consent."""


class CheckIn(BaseModel):
    vin: str
    director_targets_version: int | None
    updates: list[CheckInUpdate]


# --- creation, dry run, approval -----------------------------------------------------------------


def create(session: Session, data: CampaignIn, *, actor: str) -> Campaign:
    image = session.get(SoftwareImage, data.image_id)
    if image is None:
        raise NotFound(f"no software image with id {data.image_id}")
    if image.targets_version is None:
        raise Conflict(
            "the image is not published in the Image repository yet (its targets "
            "need the offline signature)",
            code="image_unpublished",
        )
    _target_filter(data.target_filter.model_dump())  # a bad version in a condition is a 422
    now = utcnow()
    campaign = Campaign(
        name=data.name,
        image_id=image.id,
        state=CampaignState.draft.value,
        target_filter=data.target_filter.model_dump(),
        waves=[{"target": w} for w in data.waves],
        gate=data.gate.model_dump(),
        salt=secrets.token_hex(16),
        update_kind=data.update_kind,
        deadline=data.deadline,
        maintenance_windows=data.maintenance_windows,
        preconditions=data.preconditions,
        requires_approval=data.requires_approval,
        created_by=actor,
        created_at=now,
        updated_at=now,
    )
    session.add(campaign)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="campaign.create",
        subject=_subject(campaign),
        details={"image": f"{image.name} {image.version}", "waves": data.waves},
    )
    return campaign


def get(session: Session, campaign_id: uuid.UUID, *, for_update: bool = False) -> Campaign:
    query = select(Campaign).where(Campaign.id == campaign_id)
    if for_update:
        write_lock(session)
        query = query.with_for_update()
    campaign = session.exec(query.execution_options(populate_existing=True)).first()
    if campaign is None:
        raise NotFound(f"no campaign with id {campaign_id}")
    return campaign


def dry_run(session: Session, campaign: Campaign) -> DryRun:
    image = _image(session, campaign)
    eligible, outcomes = _eligible_vehicles(session, campaign, image)
    spec = _spec(campaign)
    counts: Counter[str] = Counter()
    examples: dict[str, list[str]] = defaultdict(list)
    for vin, reason in outcomes.items():
        if reason is None:
            continue
        counts[reason] += 1
        if len(examples[reason]) < 5:
            examples[reason].append(vin)
    blocking = {r.value for r in rollout.BLOCKED_REASONS} | {BUSY, SHARED_HARDWARE}
    blocked = {r: n for r, n in counts.items() if r in blocking}
    size = len(eligible)
    return DryRun(
        eligible=size,
        blocked=blocked,
        not_targeted={r: n for r, n in counts.items() if r not in blocked},
        wave_sizes=spec.wave_sizes(size) if size else [0] * len(spec),
        expected_duration_s=rollout.estimate_duration(
            spec, size, PER_VEHICLE_S, WAVE_SOAK_S
        ).total_seconds()
        if size
        else 0.0,
        examples=dict(examples),
    )


def approve(session: Session, campaign_id: uuid.UUID, *, actor: str) -> Campaign:
    """A second operator approves (the four-eyes rule: not the one who created it)."""
    campaign = get(session, campaign_id, for_update=True)
    if campaign.state != CampaignState.draft.value:
        raise Conflict(
            f"only a draft can be approved; this campaign is {campaign.state}", code="invalid_state"
        )
    if actor == campaign.created_by:
        raise Forbidden("a campaign must be approved by another operator than its creator")
    campaign.state = CampaignState.approved.value
    campaign.approved_by = actor
    _touch(session, campaign)
    audit.record(session, actor=actor, action="campaign.approve", subject=_subject(campaign))
    return campaign


# --- launch and waves ----------------------------------------------------------------------------


def launch(session: Session, settings: Settings, campaign_id: uuid.UUID, *, actor: str) -> Campaign:
    campaign = get(session, campaign_id, for_update=True)
    allowed = (
        (CampaignState.approved.value,)
        if campaign.requires_approval
        else (CampaignState.draft.value, CampaignState.approved.value)
    )
    if campaign.state not in allowed:
        needs = " (it needs an approval first)" if campaign.requires_approval else ""
        raise Conflict(
            f"cannot launch a campaign that is {campaign.state}{needs}", code="invalid_state"
        )
    image = _image(session, campaign)
    eligible, _ = _eligible_vehicles(session, campaign, image)
    if not eligible:
        raise Conflict("no vehicle is eligible (see the dry run)", code="nothing_to_update")
    plan = rollout.plan_waves(eligible, campaign.salt, _spec(campaign))
    for vin, wave in plan.items():
        session.add(CampaignVehicle(campaign_id=campaign.id, vin=vin, wave=wave))
    now = utcnow()
    campaign.state = CampaignState.running.value
    campaign.launched_at = now
    campaign.current_wave = 0
    _touch(session, campaign)
    ecus = _ecus(session, list(plan))
    for vin, targets in eligible.items():
        for ecu in ecus[vin]:
            if ecu.ecu_id in targets:
                session.add(
                    InstallRecord(
                        campaign_id=campaign.id,
                        vin=vin,
                        ecu_id=ecu.ecu_id,
                        hardware_id=ecu.hardware_id,
                        wave=plan[vin],
                        state=rec.InstallStatus.ASSIGNED.value,
                        from_version=ecu.software_version,
                        to_version=image.version,
                    )
                )
    session.flush()
    sizes = Counter(plan.values())
    audit.record(
        session,
        actor=actor,
        action="campaign.launch",
        subject=_subject(campaign),
        details={
            "vehicles": len(plan),
            "waves": [sizes.get(w, 0) for w in range(len(campaign.waves))],
        },
    )
    _release(session, settings, campaign, image, 0)
    evaluate(session, settings, campaign)  # empty early waves advance at once
    return campaign


def _release(
    session: Session, settings: Settings, campaign: Campaign, image: SoftwareImage, wave: int
) -> int:
    """Publish the image in the Director for the wave's vehicles not yet released."""
    vehicles = session.exec(
        select(CampaignVehicle).where(
            CampaignVehicle.campaign_id == campaign.id,
            CampaignVehicle.wave <= wave,
            CampaignVehicle.released == False,  # noqa: E712
        )
    ).all()
    director = repos.director(session, settings)
    for vehicle in vehicles:
        _assign(session, director, campaign, image, vehicle.vin)
        vehicle.released = True
        session.add(vehicle)
    session.flush()
    return len(vehicles)


def _assign(
    session: Session, director: Any, campaign: Campaign, image: SoftwareImage, vin: str
) -> None:
    """The vehicle's Director targets: this campaign's image for its ECUs still to update."""
    records = session.exec(
        select(InstallRecord).where(
            InstallRecord.campaign_id == campaign.id,
            InstallRecord.vin == vin,
            col(InstallRecord.state).in_([rec.InstallStatus.ASSIGNED.value, *IN_FLIGHT]),
        )
    ).all()
    custom = {
        "campaign_id": str(campaign.id),
        "mode": campaign.update_kind,
        "deadline": campaign.deadline.isoformat() if campaign.deadline else None,
        "maintenance_windows": campaign.maintenance_windows,
        "preconditions": campaign.preconditions,
    }
    entries = []
    for record in records:
        path = f"{record.hardware_id}/{image.filename}"
        entries.append(
            DirectorTarget(
                ecu_identifier=record.ecu_id,
                hardware_identifier=record.hardware_id,
                filename=path,
                length=image.length,
                sha256=image.sha256,
                release_counter=image.release_counter,
                custom={**custom, "attempt": record.attempt},
            )
        )
    director.assign(vin, entries)


def _withdraw(session: Session, settings: Settings, vins: Iterable[str]) -> None:
    director = repos.director(session, settings)
    for vin in vins:
        director.assign(vin, [])


def evaluate(session: Session, settings: Settings, campaign: Campaign) -> list[WaveProgress]:
    """Run the gates: a wave that is confidently bad pauses the campaign (with the reason and
    the failure groups); the running wave advances when its success threshold is reached; the
    campaign completes when its last wave does."""
    # Locked: concurrent reports of one campaign evaluate one after the other, so a pause is
    # never overwritten by an advance computed from a stale read.
    campaign = get(session, campaign.id, for_update=True)
    if campaign.state != CampaignState.running.value:
        return _progress(session, campaign)
    image = _image(session, campaign)
    while True:
        progress = _progress(session, campaign)
        bad = next(
            (
                p
                for p in progress
                if p.decision == rollout.GateAction.PAUSE.value and p.wave <= campaign.current_wave
            ),
            None,
        )
        if bad is not None:
            failures = failure_groups(session, campaign)
            _pause(
                session,
                settings,
                campaign,
                actor="gate",
                reason={
                    "wave": bad.wave,
                    **bad.reason,
                    # The gate's count of failed vehicles, kept beside the groups below.
                    "failed_vehicles": bad.reason.get("failures", 0),
                    "failures": [f.model_dump() for f in failures[:10]],
                },
            )
            return _progress(session, campaign)
        current = progress[campaign.current_wave]
        last = len(progress) - 1
        if current.decision == rollout.GateAction.COMPLETE.value and campaign.current_wave == last:
            if all(p.decision == rollout.GateAction.COMPLETE.value for p in progress):
                campaign.state = CampaignState.completed.value
                campaign.finished_at = utcnow()
                _touch(session, campaign)
                audit.record(
                    session, actor="gate", action="campaign.complete", subject=_subject(campaign)
                )
            return progress
        if (
            current.decision
            in (rollout.GateAction.ADVANCE.value, rollout.GateAction.COMPLETE.value)
            and campaign.current_wave < last
        ):
            campaign.current_wave += 1
            _touch(session, campaign)
            _release(session, settings, campaign, image, campaign.current_wave)
            continue  # the next wave may be empty or already decided
        return progress


def evaluate_later(engine: Engine, settings: Settings, campaign_ids: Iterable[uuid.UUID]) -> None:
    """Run the gates of these campaigns, each in its own transaction *after* the reports that
    touched them committed: an evaluation that pauses rewrites many vehicles' rows, and doing
    it inside a report's transaction (which holds its vehicle's locks) deadlocks with other
    reports. Campaigns in id order; a transaction that loses a deadlock is retried (the gates
    only read stored records, so running them again is safe)."""
    for campaign_id in sorted(set(campaign_ids)):
        for attempt in range(1, EVALUATION_ATTEMPTS + 1):
            try:
                with session_scope(engine) as session:
                    evaluate(session, settings, get(session, campaign_id))
                break
            except OperationalError as exc:
                if attempt == EVALUATION_ATTEMPTS:
                    raise
                log.warning("gate evaluation of %s retried: %s", campaign_id, exc.orig)
                time.sleep(0.05 * attempt)


def _progress(session: Session, campaign: Campaign) -> list[WaveProgress]:
    policy = rollout.GatePolicy(**campaign.gate)
    per_vehicle: dict[str, list[str]] = defaultdict(list)
    wave_of: dict[str, int] = {}
    for vin, wave, state in session.exec(
        select(InstallRecord.vin, InstallRecord.wave, InstallRecord.state).where(
            InstallRecord.campaign_id == campaign.id
        )
    ):
        per_vehicle[vin].append(state)
        wave_of[vin] = wave
    counts = [Counter[str]() for _ in campaign.waves]
    for vin, states in per_vehicle.items():
        counts[wave_of[vin]][_vehicle_outcome(states)] += 1
    result = []
    for wave, c in enumerate(counts):
        stats = rollout.WaveStats(
            total=sum(c.values()),
            succeeded=c["succeeded"],
            failed=c["failed"],
            in_progress=c["in_progress"],
            not_started=c["not_started"],
        )
        decision = rollout.evaluate_wave(stats, policy)
        result.append(
            WaveProgress(
                wave=wave,
                vehicles=stats.total,
                succeeded=stats.succeeded,
                failed=stats.failed,
                in_progress=stats.in_progress,
                not_started=stats.not_started,
                failure_rate_upper=round(
                    rollout.wilson_upper(stats.failed, stats.reported, policy.z), 4
                ),
                decision=decision.action.value,
                reason=dict(decision.reason),
            )
        )
    return result


def _vehicle_outcome(states: Sequence[str]) -> str:
    """A vehicle fails when any of its ECUs failed, succeeds when all did."""
    if any(s in FAILED for s in states):
        return "failed"
    if all(s == rec.InstallStatus.SUCCEEDED.value for s in states):
        return "succeeded"
    if all(s == rec.InstallStatus.CANCELLED.value for s in states):
        return "failed"
    if any(s in IN_FLIGHT for s in states):
        return "in_progress"
    return "not_started"


def failure_groups(session: Session, campaign: Campaign) -> list[FailureGroupRead]:
    rows = session.exec(
        select(InstallRecord).where(
            InstallRecord.campaign_id == campaign.id, col(InstallRecord.state).in_(FAILED)
        )
    ).all()
    groups = rollout.group_failures(
        rollout.FailureReport(
            vin=r.vin,
            error_code=r.error_code or "unknown",
            hardware_id=r.hardware_id,
            ecu_id=r.ecu_id,
        )
        for r in rows
    )
    return [
        FailureGroupRead(
            error_code=g.error_code,
            hardware_id=g.hardware_id,
            vehicles=g.vehicles,
            reports=g.reports,
            example_vins=list(g.example_vins),
        )
        for g in groups
    ]


def status(session: Session, campaign: Campaign) -> CampaignStatus:
    return CampaignStatus(
        campaign=read(campaign),
        waves=_progress(session, campaign),
        failures=failure_groups(session, campaign),
    )


# --- operator actions ----------------------------------------------------------------------------


def pause(
    session: Session, settings: Settings, campaign_id: uuid.UUID, *, actor: str, note: str = ""
) -> Campaign:
    campaign = get(session, campaign_id, for_update=True)
    _require(campaign, (CampaignState.running.value,), "pause")
    _pause(
        session,
        settings,
        campaign,
        actor=actor,
        reason={"code": "operator", "by": actor, "note": note},
    )
    return campaign


def _pause(
    session: Session, settings: Settings, campaign: Campaign, *, actor: str, reason: dict[str, Any]
) -> None:
    """Stop offering the image: vehicles that have not started lose their assignment (those
    already installing finish and report)."""
    campaign.state = CampaignState.paused.value
    campaign.pause_reason = reason
    _touch(session, campaign)
    not_started = {rec.InstallStatus.ASSIGNED.value, rec.InstallStatus.NOTIFIED.value}
    waiting = sorted(
        vin for vin, states in _released_vins(session, campaign).items() if states <= not_started
    )
    _withdraw(session, settings, waiting)
    for vehicle in session.exec(
        select(CampaignVehicle).where(
            CampaignVehicle.campaign_id == campaign.id, col(CampaignVehicle.vin).in_(waiting)
        )
    ):
        vehicle.released = False
        session.add(vehicle)
    session.flush()
    audit.record(
        session, actor=actor, action="campaign.pause", subject=_subject(campaign), details=reason
    )
    log.warning("campaign %s paused by %s: %s", campaign.id, actor, reason.get("code"))


def resume(session: Session, settings: Settings, campaign_id: uuid.UUID, *, actor: str) -> Campaign:
    campaign = get(session, campaign_id, for_update=True)
    _require(campaign, (CampaignState.paused.value,), "resume")
    campaign.state = CampaignState.running.value
    campaign.pause_reason = None
    _touch(session, campaign)
    audit.record(session, actor=actor, action="campaign.resume", subject=_subject(campaign))
    image = _image(session, campaign)
    _release(session, settings, campaign, image, campaign.current_wave)
    return campaign


def abort(session: Session, settings: Settings, campaign_id: uuid.UUID, *, actor: str) -> Campaign:
    campaign = get(session, campaign_id, for_update=True)
    _require(campaign, (*ACTIVE, CampaignState.draft.value, CampaignState.approved.value), "abort")
    for record in session.exec(
        select(InstallRecord).where(InstallRecord.campaign_id == campaign.id)
    ):
        outcome = rec.cancel(_state(record))
        if outcome.changed:
            _store(record, outcome.record)
            session.add(record)
    _withdraw(session, settings, sorted(_released_vins(session, campaign)))
    campaign.state = CampaignState.aborted.value
    campaign.finished_at = utcnow()
    _touch(session, campaign)
    audit.record(session, actor=actor, action="campaign.abort", subject=_subject(campaign))
    return campaign


def retry_failed(
    session: Session, settings: Settings, campaign_id: uuid.UUID, *, actor: str
) -> int:
    """A new attempt for every failed (or rolled back) ECU; the campaign runs again."""
    campaign = get(session, campaign_id, for_update=True)
    _require(campaign, ACTIVE, "retry")
    vins: set[str] = set()
    for record in session.exec(
        select(InstallRecord).where(
            InstallRecord.campaign_id == campaign.id, col(InstallRecord.state).in_(FAILED)
        )
    ):
        outcome = rec.retry(_state(record))
        if outcome.changed:
            _store(record, outcome.record)
            session.add(record)
            vins.add(record.vin)
    if not vins:
        raise Conflict("no failed vehicle to retry", code="nothing_to_retry")
    session.flush()
    campaign.state = CampaignState.running.value
    campaign.pause_reason = None
    _touch(session, campaign)
    image = _image(session, campaign)
    director = repos.director(session, settings)
    for vin in sorted(vins):
        _assign(session, director, campaign, image, vin)
    _release(session, settings, campaign, image, campaign.current_wave)  # what a pause withdrew
    audit.record(
        session,
        actor=actor,
        action="campaign.retry",
        subject=_subject(campaign),
        details={"vehicles": len(vins)},
    )
    return len(vins)


# --- the vehicle's side --------------------------------------------------------------------------


def check_in(session: Session, settings: Settings, vin: str) -> CheckIn:
    """What the vehicle should install (the Director's metadata is the signed truth; this is
    the convenient summary). Marks the vehicle's assigned records notified, and offers running
    campaigns the vehicle became eligible for (late joiners)."""
    join_running_campaigns(session, settings, vin)
    vehicle = session.get(Vehicle, vin)
    zone = vehicle.time_zone if vehicle is not None else "UTC"
    now = utcnow()
    records = session.exec(
        select(InstallRecord, Campaign)
        .join(Campaign, col(Campaign.id) == col(InstallRecord.campaign_id))
        .join(
            CampaignVehicle,
            (col(CampaignVehicle.campaign_id) == col(Campaign.id))
            & (col(CampaignVehicle.vin) == col(InstallRecord.vin)),
        )
        .where(
            InstallRecord.vin == vin,
            Campaign.state == CampaignState.running.value,
            CampaignVehicle.released == True,  # noqa: E712
            col(InstallRecord.state).in_([rec.InstallStatus.ASSIGNED.value, *IN_FLIGHT]),
        )
    ).all()
    updates = []
    for record, campaign in records:
        outcome = rec.notify(_state(record))
        if outcome.changed:
            _store(record, outcome.record)
            session.add(record)
        image = _image(session, campaign)
        decision = windows.install_decision(
            campaign.update_kind,
            windows.parse_windows(campaign.maintenance_windows),
            zone,
            now,
            campaign.deadline,
        )
        updates.append(
            CheckInUpdate(
                window_open=decision.window_open,
                next_window=decision.next_opening,
                needs_consent=decision.needs_consent,
                campaign_id=campaign.id,
                ecu_id=record.ecu_id,
                attempt=record.attempt,
                filename=f"{record.hardware_id}/{image.filename}",
                update_kind=campaign.update_kind,
                deadline=campaign.deadline,
                maintenance_windows=campaign.maintenance_windows,
                preconditions=campaign.preconditions,
            )
        )
    session.flush()
    version = repos.director(session, settings).targets_version(vin)
    return CheckIn(vin=vin, director_targets_version=version, updates=updates)


def check_in_etag(check: CheckIn) -> str:
    body = check.model_dump_json(exclude={"vin"}).encode()
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def store_manifest(session: Session, vin: str, manifest: ManifestIn) -> None:
    row = session.get(VehicleManifest, vin) or VehicleManifest(vin=vin)
    row.ecus = [e.model_dump() for e in manifest.ecus]
    row.received_at = utcnow()
    session.add(row)
    session.flush()


def apply_report(
    session: Session, settings: Settings, vin: str, report: ReportIn
) -> tuple[ReportResult, Campaign | None]:
    """Apply one install report (idempotent on ``report_id``; out of order tolerated by the
    record's ``seq``). Returns the result and the campaign whose gates should be evaluated."""
    # One vehicle's reports one after the other (its campaign row locked): the report that
    # finishes its last ECU sees the others finished, and its Director writes never race.
    write_lock(session)
    session.exec(
        select(CampaignVehicle.vin)
        .where(CampaignVehicle.campaign_id == report.campaign_id, CampaignVehicle.vin == vin)
        .with_for_update()
    ).first()
    record = _record(session, report.campaign_id, vin, report.ecu_id, for_update=True)
    if record is None:
        raise NotFound(
            f"vehicle {vin} has no install of campaign {report.campaign_id} on ECU "
            f"{report.ecu_id!r}"
        )
    stored = VehicleReport(
        vin=vin,
        report_id=report.report_id,
        campaign_id=report.campaign_id,
        body=report.model_dump(mode="json"),
    )
    try:
        with session.begin_nested():
            session.add(stored)
            session.flush()
    except IntegrityError:  # the unique (vin, report_id): a redelivered report
        return ReportResult(applied=False, state=record.state, reason="duplicate"), None
    outcome = rec.apply_report(
        _state(record),
        rec.Report(
            attempt=report.attempt,
            seq=report.seq,
            status=rec.InstallStatus(report.state),
            error_code=report.error_code,
        ),
    )
    if outcome.changed:
        _store(record, outcome.record)
        record.error_detail = report.detail if report.state in FAILED else None
        session.add(record)
        session.flush()
        if record.state == rec.InstallStatus.SUCCEEDED.value:
            _installed(session, settings, record)
    campaign = session.get(Campaign, report.campaign_id)
    reason = outcome.reason.value if outcome.reason else None
    return ReportResult(applied=outcome.changed, state=record.state, reason=reason), campaign


def _installed(session: Session, settings: Settings, record: InstallRecord) -> None:
    """An ECU runs the new image: the registry, and when the whole vehicle is done, its
    RXSWIN, update record and an empty Director assignment."""
    ecu = session.exec(
        select(Ecu).where(Ecu.vin == record.vin, Ecu.ecu_id == record.ecu_id)
    ).first()
    if ecu is not None:
        ecu.software_version = record.to_version
        session.add(ecu)
    others = session.exec(
        select(InstallRecord).where(
            InstallRecord.campaign_id == record.campaign_id, InstallRecord.vin == record.vin
        )
    ).all()
    if any(r.state != rec.InstallStatus.SUCCEEDED.value for r in others):
        return
    before = {r.ecu_id: r.from_version or "" for r in others}
    software = {
        e.ecu_id: e.software_version for e in session.exec(select(Ecu).where(Ecu.vin == record.vin))
    }
    after_set = {**software, **{r.ecu_id: r.to_version for r in others}}
    register = session.get(Rxswin, record.vin)
    previous = register.rxswin if register is not None else None
    rxswin = "RXSWIN-" + hashlib.sha256(repr(sorted(after_set.items())).encode()).hexdigest()[:16]
    register = register or Rxswin(vin=record.vin, rxswin=rxswin)
    register.rxswin, register.software, register.updated_at = rxswin, after_set, utcnow()
    session.add(register)
    session.add(
        UpdateRecord(
            vin=record.vin,
            campaign_id=record.campaign_id,
            before=before,
            after={r.ecu_id: r.to_version for r in others},
            rxswin_before=previous,
            rxswin_after=rxswin,
        )
    )
    repos.director(session, settings).assign(record.vin, [])
    session.flush()


def join_running_campaigns(session: Session, settings: Settings, vin: str) -> int:
    """Late joiners: add the vehicle to running campaigns it is eligible for now. The vehicle
    row is locked, so two check-ins at once join it once."""
    write_lock(session)
    if session.exec(select(Vehicle).where(Vehicle.vin == vin).with_for_update()).first() is None:
        return 0
    if _busy(session, vin):
        return 0  # one active campaign at a time
    campaigns = session.exec(
        select(Campaign).where(Campaign.state == CampaignState.running.value)
    ).all()
    joined = 0
    for campaign in campaigns:
        if session.get(CampaignVehicle, (campaign.id, vin)) is not None:
            continue
        if _busy(session, vin, exclude=campaign.id):
            continue
        image = _image(session, campaign)
        eligible, _ = _eligible_vehicles(session, campaign, image, vins=[vin])
        if vin not in eligible:
            continue
        spec = _spec(campaign)
        fleet = session.exec(
            select(func.count()).where(CampaignVehicle.campaign_id == campaign.id)
        ).one()
        wave = rollout.assign_late_joiner(
            vin, campaign.salt, spec, int(fleet) + 1, campaign.current_wave
        )
        session.add(CampaignVehicle(campaign_id=campaign.id, vin=vin, wave=wave, late=True))
        for ecu in _ecus(session, [vin])[vin]:
            if ecu.ecu_id in eligible[vin]:
                session.add(
                    InstallRecord(
                        campaign_id=campaign.id,
                        vin=vin,
                        ecu_id=ecu.ecu_id,
                        hardware_id=ecu.hardware_id,
                        wave=wave,
                        state=rec.InstallStatus.ASSIGNED.value,
                        from_version=ecu.software_version,
                        to_version=image.version,
                    )
                )
        session.flush()
        if wave <= campaign.current_wave:
            _release(session, settings, campaign, image, campaign.current_wave)
        joined += 1
    return joined


# --- helpers -------------------------------------------------------------------------------------


def read(campaign: Campaign) -> CampaignRead:
    return CampaignRead(
        id=campaign.id,
        name=campaign.name,
        image_id=campaign.image_id,
        state=campaign.state,
        current_wave=campaign.current_wave,
        waves=[w["target"] for w in campaign.waves],
        gate=campaign.gate,
        target_filter=campaign.target_filter,
        update_kind=campaign.update_kind,
        deadline=campaign.deadline,
        maintenance_windows=campaign.maintenance_windows,
        preconditions=campaign.preconditions,
        requires_approval=campaign.requires_approval,
        created_by=campaign.created_by,
        approved_by=campaign.approved_by,
        pause_reason=campaign.pause_reason,
        created_at=campaign.created_at,
        launched_at=campaign.launched_at,
        finished_at=campaign.finished_at,
    )


def list_campaigns(
    session: Session, *, state: str | None = None, limit: int = 100
) -> list[Campaign]:
    query = select(Campaign).order_by(col(Campaign.created_at).desc()).limit(limit)
    if state is not None:
        query = query.where(Campaign.state == state)
    return list(session.exec(query))


def _image(session: Session, campaign: Campaign) -> SoftwareImage:
    image = session.get(SoftwareImage, campaign.image_id)
    assert image is not None  # a foreign key: the image cannot be gone
    return image


def _spec(campaign: Campaign) -> rollout.WaveSpec:
    return rollout.WaveSpec.parse([w["target"] for w in campaign.waves])


def _subject(campaign: Campaign) -> str:
    return f"campaign:{campaign.id}"


def _touch(session: Session, campaign: Campaign) -> None:
    campaign.updated_at = utcnow()
    session.add(campaign)
    session.flush()


def _require(campaign: Campaign, states: Sequence[str], action: str) -> None:
    if campaign.state not in states:
        raise Conflict(f"cannot {action} a campaign that is {campaign.state}", code="invalid_state")


def _state(record: InstallRecord) -> rec.RecordState:
    return rec.RecordState(
        status=rec.InstallStatus(record.state),
        attempt=record.attempt,
        last_seq=None if record.last_seq < 0 else record.last_seq,
        error_code=record.error_code,
    )


def _store(record: InstallRecord, state: rec.RecordState) -> None:
    record.state = state.status.value
    record.attempt = state.attempt
    record.last_seq = -1 if state.last_seq is None else state.last_seq
    record.error_code = state.error_code
    record.updated_at = utcnow()


def _record(
    session: Session, campaign_id: uuid.UUID, vin: str, ecu_id: str, *, for_update: bool = False
) -> InstallRecord | None:
    query = select(InstallRecord).where(
        InstallRecord.campaign_id == campaign_id,
        InstallRecord.vin == vin,
        InstallRecord.ecu_id == ecu_id,
    )
    if for_update:
        write_lock(session)
        query = query.with_for_update()
    return session.exec(query.execution_options(populate_existing=True)).first()


def _released_vins(session: Session, campaign: Campaign) -> dict[str, set[str]]:
    """The vehicles whose wave was released (the Director lists the image for them), with
    the states of their install records."""
    query = (
        select(InstallRecord.vin, InstallRecord.state)
        .join(
            CampaignVehicle,
            (col(CampaignVehicle.campaign_id) == col(InstallRecord.campaign_id))
            & (col(CampaignVehicle.vin) == col(InstallRecord.vin)),
        )
        .where(InstallRecord.campaign_id == campaign.id, CampaignVehicle.released == True)  # noqa: E712
    )
    states: dict[str, set[str]] = defaultdict(set)
    for vin, state in session.exec(query):
        states[vin].add(state)
    return states


def _busy(session: Session, vin: str, *, exclude: uuid.UUID | None = None) -> bool:
    """In another active campaign (a vehicle follows one campaign at a time)."""
    query = (
        select(CampaignVehicle.campaign_id)
        .join(Campaign, col(Campaign.id) == col(CampaignVehicle.campaign_id))
        .where(CampaignVehicle.vin == vin, col(Campaign.state).in_(ACTIVE))
    )
    return any(cid != exclude for cid in session.exec(query))


def _ecus(session: Session, vins: Sequence[str]) -> dict[str, list[Any]]:
    from core.vehicles.repository import ecus_by_vin

    found = ecus_by_vin(session, vins)
    return {vin: found.get(vin, []) for vin in vins}


def _target_filter(data: dict[str, Any]) -> rollout.TargetFilter:
    try:
        return rollout.TargetFilter(
            models=frozenset(data.get("models") or ()),
            model_year_min=data.get("model_year_min"),
            model_year_max=data.get("model_year_max"),
            regions=frozenset(data.get("regions") or ()),
            tags=frozenset(data.get("tags") or ()),
            software=tuple(
                rollout.SoftwareCondition(
                    ecu_id=c.get("ecu_id"),
                    hardware_id=c.get("hardware_id"),
                    versions=frozenset(c.get("versions") or ()),
                    min_version=c.get("min_version"),
                    max_version=c.get("max_version"),
                )
                for c in data.get("software") or ()
            ),
        )
    except ValueError as exc:
        raise ValidationFailed(
            [{"loc": ["body", "target_filter"], "msg": str(exc), "type": "value_error"}]
        ) from None


def _eligible_vehicles(
    session: Session, campaign: Campaign, image: SoftwareImage, *, vins: Sequence[str] | None = None
) -> tuple[dict[str, tuple[str, ...]], dict[str, str | None]]:
    """The ECUs to update per eligible vehicle, and per vehicle why not (None: eligible): a
    ``rollout.EligibilityReason``, ``busy_in_other_campaign`` or ``shared_hardware``."""
    target_filter = _target_filter(campaign.target_filter)
    image_facts = rollout.ImageFacts(
        version=image.version,
        release_counter=image.release_counter,
        hardware_ids=frozenset(image.hardware_ids),
        dependencies=tuple(
            rollout.Dependency(min_version=d["min_version"], hardware_id=d["hardware_id"])
            for d in image.dependencies
        ),
    )
    query = select(Vehicle)
    if vins is not None:
        query = query.where(col(Vehicle.vin).in_(list(vins)))
    vehicles = list(session.exec(query))
    ecus = _ecus(session, [v.vin for v in vehicles])
    manifests = {
        m.vin: {e["ecu_id"]: e for e in m.ecus}
        for m in session.exec(
            select(VehicleManifest).where(col(VehicleManifest.vin).in_([v.vin for v in vehicles]))
        )
    }
    busy_query = (
        select(CampaignVehicle.vin, CampaignVehicle.campaign_id)
        .join(Campaign, col(Campaign.id) == col(CampaignVehicle.campaign_id))
        .where(col(Campaign.state).in_(ACTIVE))
    )
    if vins is not None:
        busy_query = busy_query.where(col(CampaignVehicle.vin).in_(list(vins)))
    busy = {vin for vin, cid in session.exec(busy_query) if cid != campaign.id}
    eligible: dict[str, tuple[str, ...]] = {}
    outcomes: dict[str, str | None] = {}
    for vehicle in vehicles:
        facts = rollout.VehicleFacts(
            vin=vehicle.vin,
            model=vehicle.model,
            model_year=vehicle.model_year,
            region=vehicle.region,
            tags=frozenset(vehicle.tags),
        )
        manifest = manifests.get(vehicle.vin, {})
        ecu_facts = [
            rollout.EcuFacts(
                ecu_id=e.ecu_id,
                hardware_id=e.hardware_id,
                software_version=e.software_version,
                release_counter=manifest.get(e.ecu_id, {}).get("release_counter"),
            )
            for e in ecus[vehicle.vin]
        ]
        outcome = rollout.eligibility(facts, ecu_facts, target_filter, image_facts)
        reason = outcome.reason.value if outcome.reason is not None else None
        if outcome.eligible and vehicle.vin in busy:
            reason = BUSY
        elif outcome.eligible and _shared_hardware(ecus[vehicle.vin], outcome.target_ecu_ids):
            reason = SHARED_HARDWARE
        outcomes[vehicle.vin] = reason
        if reason is None:
            eligible[vehicle.vin] = outcome.target_ecu_ids
    return eligible, outcomes


def _shared_hardware(ecus: Sequence[Any], targets: Sequence[str]) -> bool:
    """Two ECUs to update with the same hardware id: the Director names one target per image
    and hardware id, so it cannot address both (one vehicle, one ECU per hardware id)."""
    hardware = [e.hardware_id for e in ecus if e.ecu_id in targets]
    return len(hardware) != len(set(hardware))
