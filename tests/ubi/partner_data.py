"""Shared set-up of the consent and partner API tests: principals, owned vehicles, and score
rows built with the real scorers (``ubi.scoring``, ``ubi.residual``) as the workers store them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlmodel import Session

from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope, utcnow
from ubi.battery import BatteryHealth, BatterySpec, StressExposure
from ubi.events import DrivingEvent, EventType
from ubi.models import BatteryHealthRecord, UbiScore
from ubi.residual import residual_score
from ubi.scoring import score_period
from ubi.trips import Trip
from ubi.worker import jsonable

DAY_MS = 86_400_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class Caller:
    name: str
    principal_id: uuid.UUID
    headers: dict[str, str]


@contextmanager
def db(settings: Settings) -> Iterator[Session]:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            yield session
    finally:
        engine.dispose()


def new_caller(settings: Settings, role: str, prefix: str | None = None) -> Caller:
    name = f"{prefix or role}-{uuid.uuid4().hex[:10]}"
    with db(settings) as session:
        principal, token = create_principal_with_credential(session, name, role)
        principal_id = principal.id
    return Caller(name, principal_id, {"Authorization": f"Bearer {token}"})


def in_days(days: float) -> str:
    return (utcnow() + timedelta(days=days)).isoformat()


def link_owner(client: TestClient, admin: Caller, vin: str, owner: Caller) -> None:
    response = client.post(
        f"/v1/vehicles/{vin}/owners", json={"principal": owner.name}, headers=admin.headers
    )
    assert response.status_code == 201, response.text


def grant(
    client: TestClient,
    by: Caller,
    vin: str,
    grantee: Caller | str,
    purpose: str = "ubi",
    expires_at: str | None = None,
) -> dict[str, Any]:
    body = {
        "grantee": grantee if isinstance(grantee, str) else grantee.name,
        "purpose": purpose,
        "expires_at": expires_at or in_days(30),
    }
    response = client.post(f"/v1/vehicles/{vin}/consents", json=body, headers=by.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def period_payload(vin: str, *, end: datetime | None = None) -> dict[str, Any]:
    """A 30-day ``PeriodScore.as_dict()`` over eight commutes with a few harsh events."""
    end_ms = int((end or utcnow()).timestamp() * 1000)
    start_ms = end_ms - 30 * DAY_MS
    trips: list[Trip] = []
    events: list[DrivingEvent] = []
    for day in range(8):
        begin = start_ms + (day * 3 + 1) * DAY_MS + 7 * HOUR_MS
        duration_s = 2400.0
        trip = Trip(
            vin=vin,
            trip_id=f"{vin}:{begin}",
            start_ms=begin,
            end_ms=begin + int(duration_s * 1000),
            start_local="",
            end_local="",
            time_zone="Europe/Berlin",
            distance_m=31_500.0,
            distance_source="odometer",
            duration_s=duration_s,
            moving_s=2200.0,
            idle_s=200.0,
            night_s=300.0 if day == 3 else 0.0,
            speeding_s=120.0,
            night_share=(300.0 if day == 3 else 0.0) / duration_s,
            speeding_share=120.0 / 2200.0,
            speed_limit_source="posted",
            samples=2400,
        )
        trips.append(trip)
        if day % 3 == 0:
            at = begin + 600_000
            events.append(
                DrivingEvent(vin, EventType.HARSH_BRAKING, at, at + 1500, 4.2, 1, "accelerometer")
            )
    events.append(
        DrivingEvent(
            vin,
            EventType.HARSH_CORNERING,
            trips[5].start_ms + 900_000,
            trips[5].start_ms + 902_000,
            5.1,
            2,
            "heading",
        )
    )
    score = score_period(
        vin,
        trips,
        events,
        period_start_ms=start_ms,
        period_end_ms=end_ms,
        excluded_trip_ids=frozenset({trips[-1].trip_id}),
    )
    return score.as_dict()


def insert_ubi_score(
    settings: Settings, vin: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    payload = period_payload(vin) | (extra or {})
    with db(settings) as session:
        session.merge(
            UbiScore(
                vin=vin,
                period_days=settings.ubi_period_days,
                period_start=_parse(payload["period_start"]),
                period_end=_parse(payload["period_end"]),
                score=float(payload["score"]),
                score_low=float(payload["score_low"]),
                score_high=float(payload["score_high"]),
                data_sufficient=bool(payload["data_sufficient"]),
                score_version=str(payload["score_version"]),
                payload=payload,
            )
        )
    return payload


def battery_residual(vin: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(health, residual) as the battery worker stores them."""
    now_ms = int(utcnow().timestamp() * 1000)
    health = BatteryHealth(
        vin=vin,
        nominal_kwh=77.0,
        soh_pct=91.4,
        soh_sigma_pct=0.8,
        soh_low_pct=89.8,
        soh_high_pct=93.0,
        soh_capacity_pct=91.0,
        soh_capacity_sigma_pct=1.0,
        capacity_kwh=70.4,
        capacity_ah=183.0,
        fade_pct_per_year=2.3,
        fade_method="trend",
        date_80=datetime(2029, 5, 1, tzinfo=UTC),
        date_70=datetime(2033, 9, 1, tzinfo=UTC),
        sessions_detected=14,
        sessions_used=12,
        rejected={"short": 2},
        soc_noise_pct=0.6,
        first_ms=now_ms - 400 * DAY_MS,
        last_ms=now_ms,
        odometer_km=48_211.0,
        stress=StressExposure(
            observed_hours=3000.0,
            high_soc_hours=210.0,
            hot_hours=12.0,
            deep_discharges=2,
            charged_energy_kwh=9100.0,
            dc_energy_kwh=2100.0,
            dc_sessions=20,
            ac_sessions=95,
            equivalent_full_cycles=118.2,
        ),
        dropped_samples=0,
    )
    spec = BatterySpec(nominal_kwh=77.0, nominal_ah=201.0, in_service_ms=now_ms - 3 * 365 * DAY_MS)
    return jsonable(health), jsonable(residual_score(health, spec))


def insert_battery(
    settings: Settings, vin: str, *, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    health, residual = battery_residual(vin)
    residual |= extra or {}
    with db(settings) as session:
        session.merge(
            BatteryHealthRecord(
                vin=vin,
                soh_pct=91.4,
                soh_low_pct=89.8,
                soh_high_pct=93.0,
                score_version=str(residual["score_version"]),
                health=health,
                residual=residual,
            )
        )
    return residual


def _parse(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))
