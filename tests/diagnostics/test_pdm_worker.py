"""The issue's scenario on the real broker: the simulator injects a coolant-pump fault; the
pdm worker's predicted risk rises as the pump degrades and its alert reaches
maintenance.predictions.v1; the diagnostics worker finds the DTCs and the coolant alarm; the
health endpoint shows all three."""

from __future__ import annotations

import asyncio
import dataclasses
import time
import uuid
from typing import Any

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from core.config import Settings
from core.db import make_engine, session_scope
from core.signals import CATALOG
from core.workers import build_runner
from diagnostics import repository
from diagnostics.features import compute_features
from diagnostics.model_registry import ModelRegistry
from diagnostics.pdm_dataset import simulate_training_set
from diagnostics.pdm_model import train_models
from diagnostics.pdm_scoring import Scorer
from ingestion.archive import RowBuffer, archive_schema
from simulator.delivery import SimConfig
from simulator.faults import FaultKind, FaultSpec
from simulator.fleet import make_fleet
from simulator.runner import iter_messages
from tests.diagnostics.test_pdm import CONFIG, PLAN
from tests.diagnostics.test_worker import admin_token
from tests.helpers import new_vin, publish_messages, read_topic, register_test_vehicle

pytestmark = pytest.mark.kafka

DAY_S = 86_400.0


def coolant_risk(settings: Settings, vin: str) -> float:
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            rows = repository.vehicle_predictions(session, vin)
    finally:
        engine.dispose()
    return next(p.probability for p in rows if p.component == "coolant_pump")


def test_risk_rises_as_the_coolant_pump_fails(settings: Settings, client: TestClient) -> None:
    registry = ModelRegistry(settings.data_dir / "models")
    version = registry.publish(train_models(simulate_training_set(PLAN), CONFIG), activate=True)
    settings = settings.model_copy(update={"pdm_score_interval_s": 0.2})

    # Healthy for 4 days, then 7 days of degradation until the pump fails.
    fault = FaultSpec(kind=FaultKind.COOLANT_PUMP, onset_s=4 * DAY_S, failure_s=11 * DAY_S)
    vehicle = make_fleet(1, seed=33, bev_share=0.0, commercial_share=0.0, faults={0: [fault]})[0]
    # Its own VIN: the database may outlive this test (a local run), with this seed's rows.
    vehicle = dataclasses.replace(vehicle, vin=new_vin())
    register_test_vehicle(settings, vehicle.vin)
    start_ms = int((time.time() - 11 * DAY_S) * 1000)
    config = SimConfig(sample_interval_s=60.0, samples_per_message=10)
    messages = list(iter_messages([vehicle], start_ms, 11 * DAY_S - 600, seed=4, config=config))
    early_end = start_ms + int(3 * DAY_S * 1000)  # healthy, failure 8 days away
    early = [m for m in messages if m.samples[-1].ts < early_end]
    late = messages[len(early) :]

    group = f"pdm-{uuid.uuid4().hex[:8]}"

    def run_pdm() -> Any:
        runner = build_runner(settings, "pdm", group_id=group)
        asyncio.run(runner.run(until_idle_s=3.0))
        return runner.handler

    def run_diagnostics() -> None:
        # The simulation is replayed at once: count it as real time, not store-and-forward.
        diagnosing = settings.model_copy(update={"diagnostics_late_after_s": 12 * DAY_S})
        runner = build_runner(diagnosing, "diagnostics", group_id=f"diag-{group}")
        asyncio.run(runner.run(until_idle_s=3.0))

    asyncio.run(publish_messages(settings, early))
    run_pdm()
    before = coolant_risk(settings, vehicle.vin)
    asyncio.run(publish_messages(settings, late))
    started = time.monotonic()
    restarted = run_pdm()  # a new worker of the same group: it continues at the committed offsets
    run_diagnostics()
    assert time.monotonic() - started < 120
    after = coolant_risk(settings, vehicle.vin)
    assert after > before + 0.3, (before, after)

    # The second run was a restarted worker: it continued from the stored feature buckets, so
    # its features (the baselines of the first 3 days included) and its risk are exactly what
    # the batch path computes from every sample.
    buffer = RowBuffer()
    for offset, message in enumerate(messages):
        buffer.add(
            message,
            topic="t",
            partition=0,
            offset=offset,
            received_at=None,
            catalog=CATALOG,
            size=1,
        )
    frame = compute_features(buffer.to_table(archive_schema(CATALOG)))
    streamed = restarted.features.features([vehicle.vin])
    assert np.array_equal(streamed.values, frame.values, equal_nan=True)
    scorer = Scorer(registry.load(version))
    batch_risk = scorer.probabilities(frame.values)[0, scorer.keys.index(("coolant_pump", 7))]
    assert after == pytest.approx(float(batch_risk), rel=1e-9, abs=1e-12)

    events = asyncio.run(read_topic(settings.bootstrap_servers, settings.predictions_topic, 1))
    raised = [orjson.loads(r.value) for r in events]
    assert any(e["component"] == "coolant_pump" and e["alerting"] for e in raised), raised
    assert all(e["model_version"] == version for e in raised)

    token = admin_token(settings)
    health = client.get(
        f"/v1/vehicles/{vehicle.vin}/health", headers={"Authorization": f"Bearer {token}"}
    ).json()
    coolant = [p for p in health["predictions"] if p["component"] == "coolant_pump"]
    assert coolant and coolant[0]["alerting"] and coolant[0]["reasons"], health["predictions"]
    assert "P2181" in {d["code"] for d in health["open_dtcs"]}, health["open_dtcs"]
    alarms = health["open_alarms"] + health["recent_alarms"]
    assert any(a["rule_id"] == "coolant_overtemp" for a in alarms), alarms
    assert health["status"] != "ok"


def test_replays_and_repeated_samples_count_once(tmp_path: Any) -> None:
    from diagnostics.pdm_worker import PdmHandler

    settings = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'f.db'}")
    handler = PdmHandler(settings, ModelRegistry(tmp_path / "models"))
    schema = archive_schema(CATALOG)

    def table(rows: list[tuple[str, int]]) -> Any:
        import pyarrow as pa

        columns = {f.name: pa.nulls(len(rows), f.type) for f in schema}
        columns["vin"] = pa.array([vin for vin, _ in rows], pa.string())
        columns["ts"] = pa.array([ts for _, ts in rows], pa.timestamp("ms", tz="UTC"))
        return pa.table([columns[f.name] for f in schema], schema=schema)

    first = handler._new_rows(table([("A", 10), ("A", 10), ("B", 5), ("A", 7)]))
    assert sorted(zip(first["vin"].to_pylist(), first["ts"].cast("int64").to_pylist(),
                      strict=True)) == [("A", 7), ("A", 10), ("B", 5)]
    again = handler._new_rows(table([("A", 10), ("B", 5), ("B", 6), ("A", 9)]))
    assert again["ts"].cast("int64").to_pylist() == [6]  # only B's new sample
    assert handler.replayed_rows == 4
    handler.engine.dispose()
