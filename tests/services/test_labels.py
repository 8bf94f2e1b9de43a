"""Service outcomes exported as labels are read by predictive-maintenance training."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from diagnostics.pdm_dataset import _truth_from_labels
from services.labels import write_labels
from services.models import ServiceOutcome
from simulator.labels import read_labels

VIN = "WVWZZZ1K0NT000002"
FOUND = datetime(2030, 3, 1, 8, 0, tzinfo=UTC)


def outcome(part: str, days: int, codes: list[str]) -> ServiceOutcome:
    return ServiceOutcome(
        booking_id=uuid.uuid4(),
        vin=VIN,
        issue_key="x",
        part=part,
        found_at=FOUND,
        completed_at=FOUND + timedelta(days=days),
        codes_cleared=codes,
    )


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_outcomes_become_training_labels(tmp_path: Path, suffix: str) -> None:
    outcomes = [
        outcome("engine.coolant_pump", 2, ["P0217"]),
        outcome("brake_pad.row1.left", 5, []),
        outcome("wiper_blade", 1, []),  # not a predicted component: exported, not trained on
    ]
    path = tmp_path / f"labels{suffix}"
    assert write_labels(path, outcomes) == 3
    labels = read_labels(path)
    assert [(label.component, label.dtcs) for label in labels] == [
        ("engine.coolant_pump", ("P0217",)),
        ("brake_pad.row1.left", ()),
        ("wiper_blade", ()),
    ]
    first = labels[0]
    assert first.onset_ts == int(FOUND.timestamp() * 1000)
    assert first.failure_ts == int((FOUND + timedelta(days=2)).timestamp() * 1000)
    truth = _truth_from_labels(labels)
    assert set(truth[VIN].faults) == {"coolant_pump", "brake_pads"}
    assert truth[VIN].faults["coolant_pump"] == (first.failure_ts, first.onset_ts)


def test_an_unknown_suffix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="parquet or .jsonl"):
        write_labels(tmp_path / "labels.csv", [])
