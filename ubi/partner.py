"""What insurers and partners may read: scores of consenting vehicles, under pseudonyms.

Every read starts from the caller's *active* consents for the purpose (checked per request, so
a revocation or an expiry applies to the next request) and projects the stored rows through
an explicit allowlist (:mod:`ubi.privacy_schemas`): named columns of ``ubi_score`` /
``battery_health`` and named keys of their JSON payloads, each type-checked. A key the scorer
adds later stays inside until it is added here on purpose; VINs, positions, traces and the
odometer never leave. Each read, including a refused one, writes one ``partner.read`` audit
event in the request's transaction. Nothing here commits.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Generic, TypeVar

from sqlalchemy import func
from sqlmodel import Session, col, select

from core import audit
from core.auth.models import AuthenticatedPrincipal
from core.db import utcnow
from ubi import consent, pseudonyms
from ubi.models import (
    BatteryHealthRecord,
    Consent,
    Pseudonym,
    PseudonymKey,
    Purpose,
    UbiScore,
)
from ubi.privacy_schemas import (
    BatteryScoreItem,
    EventCounts,
    EventRates,
    Exposure,
    Reason,
    ResidualValue,
    SubScores,
    UbiScoreItem,
)

_CODE = re.compile(r"^[A-Za-z0-9_]{1,40}$")
_MAX_TEXT = 300
_CHUNK = 500
_RESIDUAL_COUNTS = frozenset({"deep_discharge_events", "sessions_used"})
_VIN_LIKE = re.compile(r"(?<![A-Za-z0-9])[A-HJ-NPR-Z0-9]{17}(?![A-Za-z0-9])")
# Coordinates (5+ decimal places, as GPS gives them); the scorer's sentences use at most 3.
_PRECISE_NUMBER = re.compile(r"\d\.\d{5,}")
Row = TypeVar("Row", UbiScore, BatteryHealthRecord)


Item = TypeVar("Item", UbiScoreItem, BatteryScoreItem)


@dataclass(frozen=True)
class PartnerPage(Generic[Item]):
    items: list[Item]
    total: int


def ubi_scores(
    session: Session,
    principal: AuthenticatedPrincipal,
    *,
    period_days: int,
    limit: int,
    offset: int,
    now: datetime | None = None,
) -> PartnerPage[UbiScoreItem]:
    """A page of the caller's consenting vehicles' UBI scores, ordered by pseudonym."""
    now = now or utcnow()
    expiries = consent.active_expiries(session, principal.principal_id, Purpose.ubi, now)
    rows = _rows(
        session, UbiScore, expiries, lambda q: q.where(UbiScore.period_days == period_days)
    )
    page, total = _page(session, principal, rows, limit, offset)
    items = [_ubi_item(row, pseudonym, expiries[row.vin]) for pseudonym, row in page]
    _audit(session, principal, Purpose.ubi, "list", [row.vin for _, row in page], now=now)
    return PartnerPage(items, total)


def ubi_score(
    session: Session,
    principal: AuthenticatedPrincipal,
    pseudonym: str,
    *,
    period_days: int,
    now: datetime | None = None,
) -> UbiScoreItem | None:
    """One subject's UBI score; None when it is unknown, not consented or has no score (the
    caller answers all three alike)."""
    now = now or utcnow()
    found = _subject(session, principal, Purpose.ubi, pseudonym, now)
    row = None
    if found is not None:
        row = session.get(UbiScore, (found[0], period_days))
    item = None if row is None or found is None else _ubi_item(row, pseudonym, found[1])
    _audit(session, principal, Purpose.ubi, "item", _requested(found), pseudonym, item, now)
    return item


def battery_scores(
    session: Session,
    principal: AuthenticatedPrincipal,
    *,
    limit: int,
    offset: int,
    now: datetime | None = None,
) -> PartnerPage[BatteryScoreItem]:
    """A page of the caller's consenting vehicles' battery health, ordered by pseudonym."""
    now = now or utcnow()
    expiries = consent.active_expiries(session, principal.principal_id, Purpose.battery, now)
    rows = _rows(session, BatteryHealthRecord, expiries, lambda q: q)
    page, total = _page(session, principal, rows, limit, offset)
    items = [_battery_item(row, pseudonym, expiries[row.vin]) for pseudonym, row in page]
    _audit(session, principal, Purpose.battery, "list", [row.vin for _, row in page], now=now)
    return PartnerPage(items, total)


def battery_score(
    session: Session,
    principal: AuthenticatedPrincipal,
    pseudonym: str,
    *,
    now: datetime | None = None,
) -> BatteryScoreItem | None:
    now = now or utcnow()
    found = _subject(session, principal, Purpose.battery, pseudonym, now)
    row = session.get(BatteryHealthRecord, found[0]) if found is not None else None
    item = None if row is None or found is None else _battery_item(row, pseudonym, found[1])
    _audit(session, principal, Purpose.battery, "item", _requested(found), pseudonym, item, now)
    return item


# --- selection ---------------------------------------------------------------------------------
def _rows(
    session: Session,
    model: type[Row],
    expiries: Mapping[str, datetime],
    narrow: Callable[[Any], Any],
) -> list[Row]:
    vins = sorted(expiries)
    rows: list[Row] = []
    vin_column = col(model.vin)
    for start in range(0, len(vins), _CHUNK):
        query = narrow(select(model).where(vin_column.in_(vins[start : start + _CHUNK])))
        rows.extend(session.exec(query))
    return rows


def _page(
    session: Session,
    principal: AuthenticatedPrincipal,
    rows: Sequence[Row],
    limit: int,
    offset: int,
) -> tuple[list[tuple[str, Row]], int]:
    """The requested slice of ``rows`` ordered by pseudonym (not by VIN, whose order says
    something about the vehicles), with the mappings of the returned subjects stored."""
    key = pseudonyms.current_key(session)
    named = sorted(
        ((pseudonyms.compute(key.secret, principal.principal_id, r.vin), r) for r in rows),
        key=lambda pair: pair[0],
    )
    page = named[offset : offset + limit]
    pseudonyms.pseudonyms_for(session, principal.principal_id, [r.vin for _, r in page])
    return page, len(named)


def _subject(
    session: Session,
    principal: AuthenticatedPrincipal,
    purpose: Purpose,
    pseudonym: str,
    now: datetime,
) -> tuple[str, datetime] | None:
    """(VIN, consent expiry) of a pseudonym the caller may read for ``purpose`` now."""
    if not re.fullmatch(pseudonyms.PATTERN, pseudonym):
        return None
    # One query on the hot path: the mapping under a key version still in use, joined with
    # the caller's active consents for the purpose (latest expiry wins).
    query = (
        select(Pseudonym.vin, func.max(Consent.expires_at))
        .join(PseudonymKey, col(PseudonymKey.version) == col(Pseudonym.key_version))
        .join(
            Consent,
            (col(Consent.vin) == col(Pseudonym.vin))
            & (col(Consent.grantee_id) == col(Pseudonym.grantee_id)),
        )
        .where(
            Pseudonym.pseudonym == pseudonym,
            Pseudonym.grantee_id == principal.principal_id,
            col(PseudonymKey.retired_at).is_(None),
            Consent.purpose == purpose.value,
            col(Consent.revoked_at).is_(None),
            col(Consent.expires_at) > now,
        )
        .group_by(col(Pseudonym.vin))
    )
    found = session.exec(query).first()
    return (found[0], found[1]) if found is not None and found[1] is not None else None


def _requested(found: tuple[str, datetime] | None) -> list[str]:
    return [found[0]] if found is not None else []


def _audit(
    session: Session,
    principal: AuthenticatedPrincipal,
    purpose: Purpose,
    request: str,
    vins: list[str],
    pseudonym: str | None = None,
    item: object | None = None,
    now: datetime | None = None,
) -> None:
    details: dict[str, Any] = {"purpose": purpose.value, "request": request, "vins": vins}
    if request == "item":
        details["pseudonym"] = pseudonym
        details["count"] = 0 if item is None else 1
    else:
        details["count"] = len(vins)
    audit.record(
        session,
        actor=principal.name,
        action="partner.read",
        subject=f"partner:{principal.name}",
        details=details,
        at=now,
    )


# --- projection (the allowlist) ----------------------------------------------------------------
def _ubi_item(row: UbiScore, pseudonym: str, consent_expires_at: datetime) -> UbiScoreItem:
    payload = row.payload if isinstance(row.payload, dict) else {}
    return UbiScoreItem(
        subject=pseudonym,
        consent_expires_at=consent_expires_at,
        period_days=row.period_days,
        period_start=row.period_start,
        period_end=row.period_end,
        score=row.score,
        score_low=row.score_low,
        score_high=row.score_high,
        data_sufficient=row.data_sufficient,
        score_version=row.score_version,
        computed_at=row.computed_at,
        confidence=_number(payload.get("confidence")),
        credibility=_number(payload.get("credibility")),
        sub_scores=_numbers(SubScores, payload.get("sub_scores")),
        exposure=Exposure(
            distance_km=_number(payload.get("distance_km")),
            hours=_number(payload.get("hours")),
            trips=_integer(payload.get("trips")),
            speeding_share=_number(payload.get("speeding_share")),
            night_share=_number(payload.get("night_share")),
        ),
        event_counts=_integers(EventCounts, payload.get("event_counts")),
        weighted_event_counts=_integers(EventCounts, payload.get("weighted_event_counts")),
        rates_per_100km=_numbers(EventRates, payload.get("rates_per_100km")),
        reasons=_reasons(payload.get("reasons")),
        insufficient_reasons=_codes(payload.get("insufficient_reasons")),
        disputed_trips=_integer(payload.get("disputed_trips")),
    )


def _battery_item(
    row: BatteryHealthRecord, pseudonym: str, consent_expires_at: datetime
) -> BatteryScoreItem:
    residual = row.residual if isinstance(row.residual, dict) else {}
    values: dict[str, Any] = {}
    for name in ResidualValue.model_fields:
        value = residual.get(name)
        if name in ("score_version", "second_life_grade"):
            values[name] = _code(value)
        elif name in ("date_soh_80", "date_soh_70"):
            values[name] = _timestamp(value)
        elif name == "quality_flags":
            values[name] = _codes(value)
        elif name in _RESIDUAL_COUNTS:
            values[name] = _integer(value)
        else:
            values[name] = _number(value)
    return BatteryScoreItem(
        subject=pseudonym,
        consent_expires_at=consent_expires_at,
        soh_pct=_number(row.soh_pct),
        soh_low_pct=_number(row.soh_low_pct),
        soh_high_pct=_number(row.soh_high_pct),
        score_version=row.score_version,
        computed_at=row.computed_at,
        residual=ResidualValue(**values),
    )


M = TypeVar("M", SubScores, EventRates)


def _numbers(model: type[M], values: object) -> M:
    """The model's named numeric keys of ``values``; other keys are dropped."""
    source = values if isinstance(values, dict) else {}
    return model(**{name: _number(source.get(name)) for name in model.model_fields})


def _integers(model: type[EventCounts], values: object) -> EventCounts:
    source = values if isinstance(values, dict) else {}
    return model(**{name: _integer(source.get(name)) for name in model.model_fields})


def _reasons(values: object) -> list[Reason]:
    reasons = []
    for value in values if isinstance(values, list) else []:
        if not isinstance(value, dict):
            continue
        code, text = _code(value.get("code")), value.get("text")
        if code is None:
            continue
        reasons.append(
            Reason(
                code=code,
                points_lost=_number(value.get("points_lost")),
                text=_text(text),
            )
        )
    return reasons


def _codes(values: object) -> list[str]:
    items: Iterable[object] = values if isinstance(values, list | tuple) else []
    return [code for code in map(_code, items) if code is not None]


def _code(value: object) -> str | None:
    """A short identifier-like string (reason code, flag, grade, version), else None."""
    if not isinstance(value, str) or _VIN_LIKE.search(value):
        return None
    return value if _CODE.fullmatch(value.replace("-", "_").replace(".", "_")) else None


def _text(value: object) -> str:
    """A reason's sentence, shortened; dropped if anything in it looks like a VIN or a
    coordinate."""
    if not isinstance(value, str) or _VIN_LIKE.search(value) or _PRECISE_NUMBER.search(value):
        return ""
    return value[:_MAX_TEXT]


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _integer(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _timestamp(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo is not None else None
    return None
