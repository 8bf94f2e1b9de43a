"""From topic records to issues: which issue, how urgent, due when, and clear refusals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.issues import (
    ISSUES,
    BadEvent,
    decode_finding,
    decode_prediction,
    issue_type,
    routine_signal,
)
from services.models import Capability, Urgency

VIN = "WVWZZZ1K0NT000001"
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def alarm(**overrides: Any) -> bytes:
    value = {
        "v": 1,
        "finding_id": "f1",
        "kind": "alarm",
        "vin": VIN,
        "ts": T0_MS,
        "event": "raised",
        "rule_id": "brake_pad_worn.row1_left",
        "severity": "warning",
        "details": {"message": "Pad wear 92 %"},
    }
    return orjson.dumps(value | overrides)


def dtc(code: str, event: str = "confirmed", **details: Any) -> bytes:
    value = {
        "v": 1,
        "finding_id": f"d-{code}",
        "kind": "dtc",
        "vin": VIN,
        "ts": T0_MS,
        "event": event,
        "code": code,
        "severity": "warning",
        "details": details,
    }
    return orjson.dumps(value)


def prediction(**overrides: Any) -> bytes:
    value = {
        "v": 1,
        "vin": VIN,
        "component": "lv_battery",
        "horizon_days": 30,
        "probability": 0.5,
        "alerting": True,
        "model_version": "v1",
        "reasons": [{"text": "resting voltage 12.1 V"}],
        "scored_at": T0.isoformat(),
    }
    return orjson.dumps(value | overrides)


def test_alarms_map_to_issues_and_urgency_from_severity() -> None:
    signal = decode_finding(alarm())
    assert signal is not None
    assert (signal.issue_key, signal.urgency, signal.kind) == (
        "brake_pads",
        Urgency.high,
        "diagnostic",
    )
    assert signal.due_by == T0 + timedelta(days=3)
    assert signal.issue.capability is Capability.brakes
    assert signal.evidence["text"] == "Pad wear 92 %" and "vin" not in signal.evidence
    critical = decode_finding(alarm(rule_id="coolant_overtemp", severity="critical"))
    assert critical is not None and critical.issue_key == "coolant_pump"
    assert critical.urgency is Urgency.critical and critical.due_by == T0 + timedelta(days=1)
    unknown = decode_finding(alarm(rule_id="washer_fluid_low"))
    assert unknown is not None and unknown.issue_key == "rule.washer_fluid_low"
    assert unknown.issue.capability is Capability.general


def test_only_actionable_findings_are_signals() -> None:
    assert decode_finding(alarm(event="cleared")) is None
    assert decode_finding(alarm(severity="info")) is None
    assert decode_finding(dtc("P0217", event="pending")) is None
    assert decode_finding(dtc("P0217", event="cleared")) is None


def test_dtcs_map_known_codes_and_keep_unknown_ones_apart() -> None:
    pump = decode_finding(dtc("P0217-4B", dtc={"description": "Engine coolant over temperature"}))
    assert pump is not None and pump.issue_key == "coolant_pump"
    assert pump.evidence["code"] == "P0217"
    assert (
        pump.evidence["text"] == "Trouble code P0217 was confirmed: Engine coolant over temperature"
    )
    misfire = decode_finding(dtc("P0300"))
    assert misfire is not None and misfire.issue_key == "dtc.P0300"
    assert issue_type("dtc.P0300").title == "trouble code P0300"
    assert {decode_finding(dtc(c)).issue_key for c in ("P0562", "P0AFA")} == {  # type: ignore[union-attr]
        "lv_battery",
        "traction_battery",
    }


def test_prediction_urgency_and_due_date_from_risk_and_horizon() -> None:
    cases = [
        (7, 0.9, Urgency.high, timedelta(days=3)),
        (7, 0.6, Urgency.medium, timedelta(days=7)),
        (30, 0.85, Urgency.medium, timedelta(days=7)),
        (30, 0.5, Urgency.low, timedelta(days=14)),
        (3, 0.5, Urgency.medium, timedelta(days=3)),  # never after the failure window
    ]
    for horizon, p, urgency, due in cases:
        signal = decode_prediction(prediction(horizon_days=horizon, probability=p))
        assert signal is not None
        assert (signal.urgency, signal.due_by - T0) == (urgency, due), (horizon, p)
        assert signal.kind == "predictive" and signal.issue_key == "lv_battery"
    text = decode_prediction(prediction()).evidence["text"]  # type: ignore[union-attr]
    assert (
        text == "The 12 V battery has a 50% risk of failing within 30 days (resting voltage 12.1 V)"
    )
    assert decode_prediction(prediction(alerting=False)) is None
    # The same prediction event has the same id (a replay), another time a new one.
    a, b = decode_prediction(prediction()), decode_prediction(prediction())
    c = decode_prediction(prediction(scored_at=(T0 + timedelta(hours=1)).isoformat()))
    assert a and b and c and a.event_id == b.event_id != c.event_id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "invalid_json"),
        (b"\xff\xfe", "invalid_json"),
        (orjson.dumps({"v": 1}), "invalid_field"),
        (alarm(kind="gossip"), "invalid_field"),
        (alarm(ts="yesterday"), "invalid_field"),
        (alarm(rule_id=None), "missing_field"),
        (alarm(ts=10**19), "out_of_range"),
        (alarm(rule_id="coolant\x00overtemp"), "invalid_field"),  # PostgreSQL text has no NUL
        (alarm(rule_id="r" * 80), "invalid_field"),  # issue keys fit their column
        (alarm(finding_id="f" * 65), "invalid_field"),
        (dtc("NOT-A-CODE"), "invalid_field"),
    ],
)
def test_broken_findings_are_refused_with_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(BadEvent) as caught:
        decode_finding(raw)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"component": "flux_capacitor"}, "unknown_component"),
        ({"component": "routine"}, "unknown_component"),
        ({"probability": -0.1}, "out_of_range"),
        ({"horizon_days": 0}, "out_of_range"),
        ({"scored_at": "2030-01-07T12:00:00"}, "invalid_field"),
        ({"scored_at": "soon"}, "invalid_field"),
    ],
)
def test_broken_predictions_are_refused_with_a_reason(
    overrides: dict[str, Any], reason: str
) -> None:
    with pytest.raises(BadEvent) as caught:
        decode_prediction(prediction(**overrides))
    assert caught.value.reason == reason


def test_routine_signal_explains_why() -> None:
    signal = routine_signal(
        VIN, now=T0, since=T0 - timedelta(days=400), km_since=8_000.0, reason="time"
    )
    assert signal.issue_key == "routine" and signal.urgency is Urgency.routine
    assert signal.evidence["text"] == (
        "Routine service is due: 8,000 km and 400 days since the last one (time)"
    )
    assert set(ISSUES) >= {
        "coolant_pump",
        "lv_battery",
        "brake_pads",
        "tires",
        "traction_battery",
        "routine",
    }
