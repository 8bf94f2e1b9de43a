"""All SQL of remote diagnosis and predictive maintenance.

Writes are upserts on natural keys, so a worker that replays a batch after a crash or a
rebalance rewrites the same rows instead of adding new ones: DTC episodes on
(vin, code, episode), alarms on (vin, rule_id, raised_at), predictions on
(vin, component, horizon_days).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Table, delete, or_
from sqlmodel import Session, col, select

from core.db import upsert, utcnow
from diagnostics.models import (
    Alarm,
    DiagnosticsState,
    DtcEpisode,
    MaintenancePrediction,
    PdmFeatureBucket,
)

_DTC: Table = DtcEpisode.__table__  # type: ignore[attr-defined]
_ALARM: Table = Alarm.__table__  # type: ignore[attr-defined]
_PREDICTION: Table = MaintenancePrediction.__table__  # type: ignore[attr-defined]
_STATE: Table = DiagnosticsState.__table__  # type: ignore[attr-defined]
_BUCKET: Table = PdmFeatureBucket.__table__  # type: ignore[attr-defined]

CHUNK_SIZE = 500

ACTIVE_DTC_STATES = ("pending", "confirmed")


def upsert_dtc_episodes(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update DTC episodes (one row per (vin, code, episode))."""
    if rows:
        columns = set(rows[0]) - {"vin", "code", "episode", "id"}
        upsert(
            session, _DTC, rows, ("vin", "code", "episode"), columns, keep_existing=["confirmed_at"]
        )


def upsert_alarms(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert or update alarms (one row per (vin, rule_id, raised_at))."""
    if rows:
        columns = set(rows[0]) - {"vin", "rule_id", "raised_at", "id"}
        upsert(
            session, _ALARM, rows, ("vin", "rule_id", "raised_at"), columns, keep_existing=["value"]
        )


def upsert_predictions(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Keep the latest prediction per (vin, component, horizon_days)."""
    if rows:
        columns = set(rows[0]) - {"vin", "component", "horizon_days", "id"}
        upsert(session, _PREDICTION, rows, ("vin", "component", "horizon_days"), columns)


def upsert_rule_states(session: Session, states: Mapping[str, Mapping[str, Any]]) -> None:
    """Store the rule engine's state per vehicle (a checkpoint)."""
    rows = [
        {"vin": vin, "rules": dict(state), "updated_at": utcnow()} for vin, state in states.items()
    ]
    if rows:
        upsert(session, _STATE, rows, ("vin",), ("rules", "updated_at"))


def rule_states(session: Session, vins: Sequence[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(vins), CHUNK_SIZE):
        query = select(DiagnosticsState).where(
            col(DiagnosticsState.vin).in_(vins[start : start + CHUNK_SIZE])
        )
        found.update({state.vin: state.rules for state in session.exec(query)})
    return found


def upsert_feature_buckets(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Store hourly feature buckets (``vin``, ``hour``, ``data``); a newer one replaces."""
    if rows:
        upsert(session, _BUCKET, rows, ("vin", "hour"), ("data",))


def feature_buckets(session: Session, vins: Sequence[str]) -> list[bytes]:
    """The stored buckets of these vehicles (Arrow IPC, one bucket each)."""
    found: list[bytes] = []
    for start in range(0, len(vins), CHUNK_SIZE):
        query = select(PdmFeatureBucket.data).where(
            col(PdmFeatureBucket.vin).in_(vins[start : start + CHUNK_SIZE])
        )
        found.extend(session.exec(query))
    return found


def trim_feature_buckets(session: Session, vin: str, *, keep_after: int, baseline_end: int) -> None:
    """Delete the hours the windows no longer need: at or before ``keep_after`` and not in the
    baseline (hours before ``baseline_end``)."""
    session.execute(
        delete(PdmFeatureBucket).where(
            col(PdmFeatureBucket.vin) == vin,
            col(PdmFeatureBucket.hour) <= keep_after,
            col(PdmFeatureBucket.hour) >= baseline_end,
        )
    )


def active_dtc_episodes(session: Session, vins: Sequence[str]) -> list[DtcEpisode]:
    """Pending and confirmed episodes of these vehicles (a worker restores its state)."""
    found: list[DtcEpisode] = []
    for start in range(0, len(vins), CHUNK_SIZE):
        query = select(DtcEpisode).where(
            col(DtcEpisode.vin).in_(vins[start : start + CHUNK_SIZE]),
            col(DtcEpisode.state).in_(ACTIVE_DTC_STATES),
        )
        found.extend(session.exec(query))
    return found


def latest_dtc_episodes(session: Session, vins: Sequence[str]) -> list[DtcEpisode]:
    """The newest episode of every (vehicle, code): the tracker continues from it."""
    found: list[DtcEpisode] = []
    for start in range(0, len(vins), CHUNK_SIZE):
        query = (
            select(DtcEpisode)
            .where(col(DtcEpisode.vin).in_(vins[start : start + CHUNK_SIZE]))
            .order_by(col(DtcEpisode.vin), col(DtcEpisode.code), col(DtcEpisode.episode))
        )
        newest: dict[tuple[str, str], DtcEpisode] = {}
        for episode in session.exec(query):
            newest[(episode.vin, episode.code)] = episode
        found.extend(newest.values())
    return found


def open_alarms(session: Session, vins: Sequence[str]) -> list[Alarm]:
    found: list[Alarm] = []
    for start in range(0, len(vins), CHUNK_SIZE):
        query = select(Alarm).where(
            col(Alarm.vin).in_(vins[start : start + CHUNK_SIZE]), Alarm.state == "open"
        )
        found.extend(session.exec(query))
    return found


def vehicle_alarms(session: Session, vin: str, since: datetime, limit: int = 100) -> list[Alarm]:
    """Open alarms, and alarms raised or cleared since ``since``, newest first."""
    query = (
        select(Alarm)
        .where(
            Alarm.vin == vin,
            or_(
                col(Alarm.state) == "open",
                col(Alarm.raised_at) >= since,
                col(Alarm.cleared_at) >= since,
            ),
        )
        .order_by(col(Alarm.raised_at).desc())
        .limit(limit)
    )
    return list(session.exec(query))


def vehicle_dtc_episodes(session: Session, vin: str) -> list[DtcEpisode]:
    query = (
        select(DtcEpisode)
        .where(DtcEpisode.vin == vin, col(DtcEpisode.state).in_(ACTIVE_DTC_STATES))
        .order_by(col(DtcEpisode.first_seen))
    )
    return list(session.exec(query))


def vehicle_predictions(session: Session, vin: str) -> list[MaintenancePrediction]:
    query = (
        select(MaintenancePrediction)
        .where(MaintenancePrediction.vin == vin)
        .order_by(col(MaintenancePrediction.component), col(MaintenancePrediction.horizon_days))
    )
    return list(session.exec(query))
