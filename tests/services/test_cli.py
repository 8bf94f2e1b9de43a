"""``fleet services ...`` against the test database: register a center from a file (errors
name the field), list it, book and export labels, read the delivery log."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from core.cli import app
from core.config import get_settings
from services import cli as services_cli

runner = CliRunner()


@pytest.fixture
def fleet_env(monkeypatch: pytest.MonkeyPatch, db_url: str, tmp_path: Path) -> Iterator[None]:
    monkeypatch.setenv("FLEET_DATABASE_URL", db_url)
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(services_cli.stdout, "width", 300)  # tables unwrapped
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_center_add_list_and_errors(fleet_env: None, tmp_path: Path) -> None:
    code = f"cli-{uuid.uuid4().hex[:8]}"
    center = {
        "code": code,
        "name": "CLI Center",
        "latitude": 48.1,
        "longitude": 11.6,
        "time_zone": "Europe/Berlin",
        "opening_hours": {"mon": ["08:00-17:00"]},
        "capabilities": ["brakes"],
        "bays": 2,
        "webhook_url": "https://example.com/h",
    }
    path = tmp_path / "center.json"
    path.write_text(json.dumps(center))
    added = runner.invoke(app, ["services", "center-add", str(path)])
    assert added.exit_code == 0, added.output
    assert f"Registered service center {code}" in added.output and "whsec_" in added.output
    listed = runner.invoke(app, ["services", "centers"])
    assert code in listed.output
    again = runner.invoke(app, ["services", "center-add", str(path)])
    assert again.exit_code == 1 and "already exists" in again.output

    path.write_text(json.dumps(center | {"code": "x" + code, "opening_hours": {"mon": ["9-5"]}}))
    bad = runner.invoke(app, ["services", "center-add", str(path)])
    assert bad.exit_code == 1 and "opening_hours" in bad.output
    missing = runner.invoke(app, ["services", "center-add", str(tmp_path / "none.json")])
    assert missing.exit_code == 1 and "cannot read" in missing.output


def test_labels_deliveries_and_replay_errors(fleet_env: None, tmp_path: Path) -> None:
    out = tmp_path / "labels.parquet"
    exported = runner.invoke(app, ["services", "labels", str(out)])
    assert exported.exit_code == 0, exported.output
    assert out.exists() and '"labels"' in exported.output
    assert runner.invoke(app, ["services", "labels", str(tmp_path / "l.csv")]).exit_code == 1
    assert runner.invoke(app, ["services", "deliveries", "--state", "dead"]).exit_code == 0
    wrong = runner.invoke(app, ["services", "deliveries", "--state", "lost"])
    assert wrong.exit_code == 1 and "unknown state" in wrong.output
    assert runner.invoke(app, ["services", "replay", "nope"]).exit_code == 1
    unknown = runner.invoke(app, ["services", "replay", str(uuid.uuid4())])
    assert unknown.exit_code == 1 and "not found" in unknown.output
    assert runner.invoke(app, ["services", "bookings", "--state", "done"]).exit_code == 1
    assert runner.invoke(app, ["services", "bookings"]).exit_code == 0
