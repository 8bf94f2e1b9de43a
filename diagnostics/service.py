"""Rules of the health read model. Nothing here commits; callers own the transaction."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from core.db import utcnow
from core.errors import NotFound
from core.vehicles import repository as vehicles
from diagnostics import repository
from diagnostics.models import (
    Alarm,
    AlarmRead,
    DtcEpisode,
    DtcRead,
    PredictionRead,
    VehicleHealth,
)

RECENT = timedelta(days=7)

OPEN_ALARM_STATE = "open"
"""An alarm in this state counts against the vehicle's health (the other state: cleared)."""
OPEN_DTC_STATES = repository.ACTIVE_DTC_STATES
"""DTC episodes in these states are open (pending or confirmed)."""
CRITICAL_SEVERITY = "critical"
"""An open alarm of this severity makes the vehicle critical."""


def vehicle_health(session: Session, vin: str) -> VehicleHealth:
    """Open DTCs, open and recent alarms, and the latest predictions with their reasons."""
    if vehicles.get_vehicle(session, vin) is None:
        raise NotFound(f"no vehicle with VIN {vin}")
    episodes = repository.vehicle_dtc_episodes(session, vin)
    alarms = repository.vehicle_alarms(session, vin, since=utcnow() - RECENT)
    predictions = repository.vehicle_predictions(session, vin)
    open_alarms = [a for a in alarms if a.state == OPEN_ALARM_STATE]
    return VehicleHealth(
        vin=vin,
        status=_status(episodes, open_alarms, any(p.alerting for p in predictions)),
        open_dtcs=[_dtc_read(e) for e in episodes],
        open_alarms=[_alarm_read(a) for a in open_alarms],
        recent_alarms=[_alarm_read(a) for a in alarms if a.state != OPEN_ALARM_STATE],
        predictions=[PredictionRead.model_validate(p, from_attributes=True) for p in predictions],
    )


def health_status(
    *, critical_alarms: int, open_alarms: int, open_dtcs: int, alerting_predictions: int
) -> str:
    """The health rule, from counts of a vehicle's open problems: ``critical`` with an open
    critical alarm, ``attention`` with any open alarm, open DTC episode or alerting
    prediction, else ``ok``. The fleet overview (``core.overview``) applies the same rule to
    aggregate counts."""
    if critical_alarms:
        return "critical"
    if open_alarms or open_dtcs or alerting_predictions:
        return "attention"
    return "ok"


def _status(episodes: list[DtcEpisode], alarms: list[Alarm], predicted: bool) -> str:
    return health_status(
        critical_alarms=sum(a.severity == CRITICAL_SEVERITY for a in alarms),
        open_alarms=len(alarms),
        open_dtcs=len(episodes),
        alerting_predictions=int(predicted),
    )


def _dtc_read(episode: DtcEpisode) -> DtcRead:
    return DtcRead(
        code=episode.code,
        state=episode.state,
        episode=episode.episode,
        first_seen=episode.first_seen,
        last_seen=episode.last_seen,
        confirmed_at=episode.confirmed_at,
        occurrences=episode.occurrences,
        description=episode.decoded.get("description"),
        decoded=episode.decoded,
        freeze_frame=episode.freeze_frame,
    )


def _alarm_read(alarm: Alarm) -> AlarmRead:
    return AlarmRead.model_validate(alarm, from_attributes=True)
