"""From findings and predictions to *issues*: what is wrong with a vehicle, which capability a
service center needs to fix it, how urgent it is and by when it should be done.

An issue is the unit of deduplication: one open booking per (vehicle, issue). Several signals
point at the same issue (the coolant-pump prediction, the overtemperature alarm, DTCs P2181 and
P0217 are all ``coolant_pump``), so a worsening problem escalates one booking instead of opening
three. Codes and rules the catalog does not know become their own issue (``dtc.P0300``,
``rule.<id>``) handled by any center with the ``general`` capability.

Input contracts are the topics' (``docs/topics.md``); a record that breaks them raises
:class:`BadEvent` with a stable reason, which the worker dead-letters.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypeVar

import msgspec

from services.models import Capability, Urgency

LEAD_TIME: dict[Urgency, timedelta] = {
    Urgency.critical: timedelta(days=1),
    Urgency.high: timedelta(days=3),
    Urgency.medium: timedelta(days=7),
    Urgency.low: timedelta(days=14),
    Urgency.routine: timedelta(days=30),
}
"""How soon the work should be done at each urgency (the booking's ``due_by``)."""
_T = TypeVar("_T")
_DTC_RE = re.compile(r"[PCBU][0-3][0-9A-F]{3}")
_RULE_RE = re.compile(r"[A-Za-z0-9_.-]{1,58}")
"""Issue keys are at most 64 characters (``rule.<id>``, ``dtc.<code>``)."""


@dataclass(frozen=True)
class IssueType:
    key: str
    title: str
    """Plain words for owners and centers: "the 12 V battery"."""
    capability: Capability
    parts: tuple[str, ...] = ()
    """Label components a center typically replaces (``docs/services.md``)."""


ISSUES: dict[str, IssueType] = {
    issue.key: issue
    for issue in (
        IssueType("coolant_pump", "the engine cooling system (coolant pump)", Capability.cooling,
                  ("engine.coolant_pump",)),
        IssueType("lv_battery", "the 12 V battery", Capability.lv_12v, ("low_voltage_battery",)),
        IssueType("brake_pads", "the brake pads", Capability.brakes, ("brake_pad",)),
        IssueType("tires", "the tires", Capability.tires, ("tire",)),
        IssueType("traction_battery", "the high-voltage battery", Capability.ev_high_voltage,
                  ("traction_battery",)),
        IssueType("routine", "the routine service", Capability.general),
    )
}  # fmt: skip

# Codes whose cause the catalog knows (the simulator's faults set these; docs/dtc.md).
DTC_ISSUES: dict[str, str] = {
    "P0217": "coolant_pump",  # engine coolant over temperature
    "P2181": "coolant_pump",  # cooling system performance
    "P0125": "coolant_pump",  # insufficient coolant temperature for closed-loop control
    "P0128": "coolant_pump",  # coolant thermostat below regulating temperature
    "P0562": "lv_battery",  # system voltage low
    "P0563": "lv_battery",  # system voltage high
    "P0A80": "traction_battery",  # replace hybrid/EV battery pack
    "P0AFA": "traction_battery",  # hybrid/EV battery system voltage low
}
RULE_ISSUES: tuple[tuple[str, str], ...] = (
    ("coolant_", "coolant_pump"),
    ("lv_battery", "lv_battery"),
    ("tire_", "tires"),
    ("brake_pad", "brake_pads"),
    ("cell_", "traction_battery"),
)
"""Rule id prefix -> issue (``diagnostics/default_rules.yaml``)."""


class BadEvent(ValueError):
    """A finding or prediction that breaks its topic's contract."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class IssueSignal:
    """One piece of evidence that a vehicle has an issue."""

    event_id: str
    """Unique per source event: the inbox deduplicates replays on it."""
    vin: str
    issue_key: str
    kind: Literal["diagnostic", "predictive", "routine"]
    urgency: Urgency
    due_by: datetime
    observed_at: datetime
    evidence: dict[str, Any] = field(default_factory=dict)
    """What the booking shows: ``source``, ``id``, ``observed_at``, ``text`` (plain words)
    and the source's key facts; never raw telemetry or positions."""

    @property
    def issue(self) -> IssueType:
        return issue_type(self.issue_key)


def issue_type(key: str) -> IssueType:
    known = ISSUES.get(key)
    if known is not None:
        return known
    if key.startswith("dtc."):
        return IssueType(key, f"trouble code {key[4:]}", Capability.general)
    return IssueType(key, f"the problem reported by check {key.removeprefix('rule.')}",
                     Capability.general)  # fmt: skip


# --- topic records -------------------------------------------------------------------------


class _Finding(msgspec.Struct, forbid_unknown_fields=False):
    v: int
    finding_id: str
    kind: Literal["dtc", "alarm"]
    vin: str
    ts: int
    event: str
    severity: str
    code: str | None = None
    rule_id: str | None = None
    late: bool = False
    details: dict[str, Any] = {}


class _Prediction(msgspec.Struct, forbid_unknown_fields=False):
    v: int
    vin: str
    component: str
    horizon_days: int
    probability: float
    alerting: bool
    model_version: str
    scored_at: datetime
    reasons: list[dict[str, Any]] = []


def decode_finding(raw: bytes) -> IssueSignal | None:
    """The issue signal of a ``diagnostics.findings.v1`` record, or None when the finding needs
    no service (a pending or cleared DTC, a cleared or info-level alarm)."""
    finding = _decode(raw, _Finding)
    if not 1 <= len(finding.finding_id) <= 64:
        raise BadEvent("invalid_field", "finding_id has 1 to 64 characters")
    observed = _from_ms(finding.ts)
    if finding.kind == "dtc":
        if not finding.code:
            raise BadEvent("missing_field", "a dtc finding needs `code`")
        if finding.event != "confirmed":
            return None
        return _dtc_signal(finding, observed)
    if not finding.rule_id:
        raise BadEvent("missing_field", "an alarm finding needs `rule_id`")
    if finding.event != "raised" or finding.severity not in ("warning", "critical"):
        return None
    return _alarm_signal(finding, observed)


def decode_prediction(raw: bytes) -> IssueSignal | None:
    """The issue signal of a ``maintenance.predictions.v1`` record, or None when it is not an
    alert (a cleared alert needs no service; an open booking stays)."""
    p = _decode(raw, _Prediction)
    if not 0.0 <= p.probability <= 1.0 or p.horizon_days <= 0:
        raise BadEvent("out_of_range", "probability must be in [0, 1], horizon_days positive")
    if p.scored_at.tzinfo is None:
        raise BadEvent("invalid_field", "scored_at needs a time zone")
    if not p.alerting:
        return None
    issue = ISSUES.get(p.component)
    if issue is None or issue.key == "routine":
        raise BadEvent("unknown_component", f"no issue for component {p.component!r}")
    if p.horizon_days <= 7:
        urgency = Urgency.high if p.probability >= 0.8 else Urgency.medium
    else:
        urgency = Urgency.medium if p.probability >= 0.8 else Urgency.low
    observed = p.scored_at.astimezone(UTC)
    failure_window = observed + timedelta(days=p.horizon_days)
    reason = _top_reason(p.reasons)
    text = (
        f"{_capitalize(issue.title)} has a {p.probability:.0%} risk of failing within "
        f"{p.horizon_days} days" + (f" ({reason})" if reason else "")
    )
    return IssueSignal(
        event_id=_event_id("prediction", p.vin, p.component, p.horizon_days, observed.isoformat()),
        vin=p.vin,
        issue_key=issue.key,
        kind="predictive",
        urgency=urgency,
        due_by=min(observed + LEAD_TIME[urgency], failure_window),
        observed_at=observed,
        evidence={
            "source": "prediction",
            "component": p.component,
            "horizon_days": p.horizon_days,
            "probability": round(p.probability, 4),
            "model_version": p.model_version,
            "observed_at": observed.isoformat(),
            "text": text,
        },
    )


def routine_signal(
    vin: str, *, now: datetime, since: datetime, km_since: float | None, reason: str
) -> IssueSignal:
    """A routine service that became due (by distance or by time since the last one)."""
    driven = f"{km_since:,.0f} km" if km_since is not None else "an unknown distance"
    return IssueSignal(
        event_id=_event_id("routine", vin, since.isoformat()),
        vin=vin,
        issue_key="routine",
        kind="routine",
        urgency=Urgency.routine,
        due_by=now + LEAD_TIME[Urgency.routine],
        observed_at=now,
        evidence={
            "source": "schedule",
            "reason": reason,
            "observed_at": now.isoformat(),
            "text": f"Routine service is due: {driven} and {(now - since).days} days since "
            f"the last one ({reason.replace('_', ' ')})",
        },
    )


def _dtc_signal(finding: _Finding, observed: datetime) -> IssueSignal:
    assert finding.code is not None
    base = finding.code.split("-", 1)[0].upper()
    if not _DTC_RE.fullmatch(base):
        raise BadEvent("invalid_field", f"code {finding.code[:40]!r} is not a DTC like P0217")
    issue_key = DTC_ISSUES.get(base, f"dtc.{base}")
    dtc = finding.details.get("dtc") if isinstance(finding.details, Mapping) else None
    description = dtc.get("description") if isinstance(dtc, Mapping) else None
    text = f"Trouble code {base} was confirmed" + (f": {description}" if description else "")
    return IssueSignal(
        event_id=finding.finding_id,
        vin=finding.vin,
        issue_key=issue_key,
        kind="diagnostic",
        urgency=Urgency.high,
        due_by=observed + LEAD_TIME[Urgency.high],
        observed_at=observed,
        evidence={
            "source": "dtc",
            "id": finding.finding_id,
            "code": base,
            "observed_at": observed.isoformat(),
            "text": text,
        },
    )


def _alarm_signal(finding: _Finding, observed: datetime) -> IssueSignal:
    assert finding.rule_id is not None
    if not _RULE_RE.fullmatch(finding.rule_id):
        raise BadEvent("invalid_field", "rule_id: 1-58 letters, digits, '.', '_' or '-'")
    issue_key = next(
        (issue for prefix, issue in RULE_ISSUES if finding.rule_id.startswith(prefix)),
        f"rule.{finding.rule_id}",
    )
    urgency = Urgency.critical if finding.severity == "critical" else Urgency.high
    message = finding.details.get("message") if isinstance(finding.details, Mapping) else None
    return IssueSignal(
        event_id=finding.finding_id,
        vin=finding.vin,
        issue_key=issue_key,
        kind="diagnostic",
        urgency=urgency,
        due_by=observed + LEAD_TIME[urgency],
        observed_at=observed,
        evidence={
            "source": "alarm",
            "id": finding.finding_id,
            "rule_id": finding.rule_id,
            "severity": finding.severity,
            "observed_at": observed.isoformat(),
            "text": str(message) if message else f"Check {finding.rule_id} raised an alarm",
        },
    )


def _decode(raw: bytes, kind: type[_T]) -> _T:
    if b"\\u0000" in raw:  # PostgreSQL text cannot hold NUL: refuse it here, not in the sink
        raise BadEvent("invalid_field", "a string contains a NUL character (\\u0000)")
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError as exc:
        raise BadEvent("invalid_field", str(exc)) from None
    except msgspec.DecodeError as exc:
        raise BadEvent("invalid_json", str(exc)) from None


def _from_ms(ms: int) -> datetime:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        raise BadEvent("out_of_range", f"ts {ms} is not a valid epoch millisecond") from None


def _top_reason(reasons: list[dict[str, Any]]) -> str:
    for reason in reasons:
        text = reason.get("text") if isinstance(reason, Mapping) else None
        if text:
            return str(text)
    return ""


def _event_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def _capitalize(text: str) -> str:
    return text[:1].upper() + text[1:]
