"""The issue's end-to-end OTA scenario on the real broker and a real HTTP server.

The API runs under uvicorn on 127.0.0.1, so every vehicle's Uptane client verifies both
repositories over real HTTP; the ``ota`` worker runs at the same time and applies the reports
that half of the fleet sends over Kafka (the other half reports over HTTP).

1. A soft update with preconditions reaches 100 vehicles (two BMS hardware variants): dry run,
   approval by a second operator, launch in waves ``5, 25 %, 100 %``; the canary succeeds,
   each wave starts only once the one before it reached its success threshold, and every
   vehicle ends up running the new version, with its update record and RXSWIN.
2. A forced release that fails to flash on ``BMS-HW-2`` pauses itself in its canary, with the
   failures grouped by error code and hardware variant, and no vehicle outside the canary
   ever sees it.

About 30 s on two cores (most of it the 100 verified installs of the first campaign).
"""

from __future__ import annotations

import contextlib
import math
import random
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope
from core.vehicles.models import Ecu
from ota import repos
from ota.models import (
    CampaignVehicle,
    InstallRecord,
    Rxswin,
    UpdateRecord,
    VehicleManifest,
    VehicleReport,
)
from simulator.ota_fleet import (
    FleetLog,
    FleetRun,
    KafkaReports,
    OtaEvent,
    SimulatedOtaVehicle,
    run_fleet,
)
from tests.ota.harness import (
    BAD_HARDWARE,
    DRIVING_EVERY,
    HARDWARE,
    KAFKA_EVERY,
    ota_worker,
    prepare,
    serve,
    simulated_fleet,
)

pytestmark = pytest.mark.kafka

FLEET_SIZE = 100
WAVES = ["5", "25%", "100%"]
WAVE_SIZES = [5, 20, 75]
SUCCESS_THRESHOLD = 0.95  # the campaign gate's default
# The canary is drawn by a salted hash of the VIN, with a new salt per campaign: a canary of
# 20 from a fleet that is half BMS-HW-2 misses that variant with probability
# C(50,20)/C(100,20) < 1e-7 (a canary of 5 would miss it 3 % of the time).
BAD_WAVES = ["20", "100%"]
BAD_CANARY = 20
CONCURRENCY = 8
POLL_S = 8.0
"""Idle vehicles check in this often: any faster and the check-ins of a hundred idle vehicles
crowd out the installs on a two-core machine."""
ONLINE_BOUND_S = 60.0
ROLLOUT_BOUND_S = 120.0
PAUSE_BOUND_S = 60.0
UNFINISHED = ("draft", "approved", "running", "paused")


@dataclass
class Scenario:
    """The running system, the fleet, and the operators' side of the API."""

    base_url: str
    http: httpx.Client
    engine: Engine
    settings: Settings
    model: str
    suffix: str
    creator: tuple[str, str]  # (principal name, token)
    approver: tuple[str, str]
    vehicles: list[SimulatedOtaVehicle]
    fleet_log: FleetLog
    worker_alive: Callable[[], None]
    campaigns: list[str] = field(default_factory=list)

    def call(
        self, method: str, path: str, *, expect: int = 200, as_approver: bool = False, **kw: Any
    ) -> Any:
        token = (self.approver if as_approver else self.creator)[1]
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        url = f"{self.base_url}/v1/ota{path}"
        response = self.http.request(method, url, headers=headers, **kw)
        assert response.status_code == expect, f"{method} {path}: {response.text}"
        return response.json() if response.content else None

    def upload(self, version: str, release_counter: int) -> dict[str, Any]:
        # Every release its own bytes (and a name of its own in the shared database).
        firmware = f"BMS firmware {version} {self.suffix}\n".encode() + random.randbytes(32_768)
        params: list[tuple[str, str | int]] = [
            ("name", f"bms-fw-{self.suffix}"),
            ("version", version),
            ("release_counter", release_counter),
            *(("hardware_id", hw) for hw in HARDWARE),
        ]
        headers = {"Content-Type": "application/octet-stream"}
        image: dict[str, Any] = self.call(
            "POST", "/images", expect=201, params=params, content=firmware, headers=headers
        )
        return image

    def campaign(self, image: dict[str, Any], waves: list[str], **fields: Any) -> str:
        """A draft campaign for this test's fleet; its dry run finds all of it eligible."""
        body = {
            "name": f"BMS {image['version']} ({self.suffix})",
            "image_id": image["id"],
            "target_filter": {"models": [self.model], "regions": ["EU"]},
            "waves": waves,
            **fields,
        }
        campaign_id: str = self.call("POST", "/campaigns", expect=201, json=body)["id"]
        self.campaigns.append(campaign_id)
        dry_run = self.call("POST", f"/campaigns/{campaign_id}/dry-run")
        assert dry_run["eligible"] == FLEET_SIZE and dry_run["blocked"] == {}, dry_run
        return campaign_id

    def status(self, campaign_id: str) -> dict[str, Any]:
        status: dict[str, Any] = self.call("GET", f"/campaigns/{campaign_id}")
        return status

    def drive_until(
        self, campaign_id: str, leaves: str, bound_s: float, concurrency: int = CONCURRENCY
    ) -> FleetRun:
        """Step the fleet until the campaign is no longer ``leaves`` (within ``bound_s``)."""

        def done() -> bool:
            self.worker_alive()
            return self.status(campaign_id)["campaign"]["state"] != leaves

        run = run_fleet(self.vehicles, done, bound_s, concurrency, poll_interval_s=POLL_S)
        assert run.finished, (run, self.status(campaign_id))
        assert not run.errors, run.error_samples  # a 500 (say, a deadlock) fails the test
        assert not [r for v in self.vehicles for r in v.refused_reports]
        return run

    def abort_unfinished(self) -> None:
        """Leave no active campaign in the shared database, even when the test failed
        (every check-in of every vehicle looks at every running campaign)."""
        for campaign_id in self.campaigns:
            with contextlib.suppress(Exception):  # cleanup must not hide the test's failure
                if self.status(campaign_id)["campaign"]["state"] in UNFINISHED:
                    self.call("POST", f"/campaigns/{campaign_id}/abort")

    def waves_of(self, campaign_id: str) -> dict[str, int]:
        with session_scope(self.engine) as session:
            query = select(CampaignVehicle).where(
                CampaignVehicle.campaign_id == uuid.UUID(campaign_id)
            )
            return {row.vin: row.wave for row in session.exec(query)}

    def reports_of(self, campaign_id: str) -> list[VehicleReport]:
        with session_scope(self.engine) as session:
            query = select(VehicleReport).where(VehicleReport.campaign_id == uuid.UUID(campaign_id))
            return list(session.exec(query))

    def audit_actions(self, campaign_id: str) -> set[tuple[str, str]]:
        """``(action, actor)`` of the campaign's audit events, once the chain verifies."""
        with session_scope(self.engine) as session:
            chain = audit.verify_chain(session)
            assert chain.ok, chain
            events = audit.list_events(session, subject=f"campaign:{campaign_id}", limit=1000)
            return {(event.action, event.actor) for event in events}


def test_a_campaign_rolls_out_in_waves_and_a_bad_release_pauses_in_its_canary(
    settings: Settings,  # tests/ota/conftest.py: per-test topics, the shared database
    tmp_path: Path,
) -> None:
    settings = settings.model_copy(update={"ota_keys_dir": tmp_path / "keys"})
    suffix = uuid.uuid4().hex[:8]
    model = f"E2E-{suffix}"  # the target filter selects exactly this test's fleet
    engine = make_engine(settings)
    try:
        fleet, creator, approver = prepare(engine, settings, model, FLEET_SIZE)
        with (
            serve(settings) as base_url,
            ota_worker(settings) as worker_alive,
            httpx.Client(timeout=30.0, limits=httpx.Limits(max_connections=32)) as http,
            KafkaReports(settings.bootstrap_servers, settings.ota_reports_topic) as kafka,
        ):
            fleet_log = FleetLog()
            vehicles = simulated_fleet(fleet, base_url, http, tmp_path, kafka, fleet_log, suffix)
            scenario = Scenario(
                base_url, http, engine, settings, model, suffix, creator, approver,
                vehicles, fleet_log, worker_alive,
            )  # fmt: skip
            try:
                _come_online(scenario)
                _rollout_completes_wave_by_wave(scenario)
                _bad_release_pauses_in_its_canary(scenario)
            finally:
                scenario.abort_unfinished()
    finally:
        engine.dispose()


def _come_online(s: Scenario) -> None:
    """Every vehicle sends its version manifest and checks in: nothing to install yet."""
    run = run_fleet(
        s.vehicles, lambda: all(v.check_ins for v in s.vehicles), ONLINE_BOUND_S, CONCURRENCY
    )
    assert run.finished and not run.errors, run
    assert run.outcomes["idle"] == FLEET_SIZE, run


def _rollout_completes_wave_by_wave(s: Scenario) -> None:
    image = s.upload("2.0.0", release_counter=2)
    campaign_id = s.campaign(
        image,
        WAVES,
        update_kind="soft",
        preconditions={"min_soc_pct": 30, "parked": True},
        requires_approval=True,
    )
    assert s.call("POST", f"/campaigns/{campaign_id}/dry-run")["wave_sizes"] == WAVE_SIZES
    s.call("POST", f"/campaigns/{campaign_id}/launch", expect=409)  # not approved yet
    s.call("POST", f"/campaigns/{campaign_id}/approve", expect=403)  # not by its creator
    approved = s.call("POST", f"/campaigns/{campaign_id}/approve", as_approver=True)
    assert approved["approved_by"] == s.approver[0]
    assert s.call("POST", f"/campaigns/{campaign_id}/launch")["state"] == "running"

    run = s.drive_until(campaign_id, leaves="running", bound_s=ROLLOUT_BOUND_S)

    status = s.status(campaign_id)
    assert status["campaign"]["state"] == "completed", status
    assert [w["vehicles"] for w in status["waves"]] == WAVE_SIZES
    assert [w["succeeded"] for w in status["waves"]] == WAVE_SIZES  # the canary first
    assert status["failures"] == []
    # The vehicles kept to the signed conditions: the ones on the road waited until they were
    # parked and charged, and some drivers took a while to consent.
    assert run.outcomes["deferred_preconditions"] >= FLEET_SIZE // DRIVING_EVERY
    assert run.outcomes["deferred_consent"] > 0
    assert run.outcomes["not_modified"] > 0  # idle vehicles' check-ins answered 304
    assert all(v.parked and v.soc_pct >= 30 for v in s.vehicles)

    # Every vehicle installed once, and no wave started before the one before it reached its
    # success threshold (the log is in causal order: each report is logged before it is sent,
    # so a success the gate counted comes before the downloads its release allowed).
    events = s.fleet_log.of_campaign(campaign_id)
    wave_of = s.waves_of(campaign_id)
    assert Counter(wave_of.values()) == dict(enumerate(WAVE_SIZES))
    succeeded = [e for e in events if e.state == "succeeded"]
    assert sorted(e.vin for e in succeeded) == sorted(v.vin for v in s.vehicles)
    assert {e.state for e in events} == {"downloading", "installing", "succeeded"}
    completion = _completion_by_wave(succeeded, wave_of)
    for wave in range(1, len(WAVES)):
        first_download = min(
            e.order for e in events if e.state == "downloading" and wave_of[e.vin] == wave
        )
        needed = math.ceil(SUCCESS_THRESHOLD * WAVE_SIZES[wave - 1])
        assert completion[wave - 1][needed - 1] < first_download, (wave, completion)

    for vehicle in s.vehicles:
        [ecu] = vehicle.ecus.values()
        assert (ecu.image, ecu.release_counter) == (f"{ecu.hardware_id}/{image['filename']}", 2)
    vins = [v.vin for v in s.vehicles]
    with session_scope(s.engine) as session:
        registry = session.exec(select(Ecu).where(col(Ecu.vin).in_(vins))).all()
        assert Counter(e.software_version for e in registry) == {"2.0.0": FLEET_SIZE}
        manifests = session.exec(
            select(VehicleManifest).where(col(VehicleManifest.vin).in_(vins))
        ).all()
        assert len(manifests) == FLEET_SIZE
        assert {(m.ecus[0]["version"], m.ecus[0]["release_counter"]) for m in manifests} == {
            ("2.0.0", 2)
        }
        records = session.exec(
            select(UpdateRecord).where(UpdateRecord.campaign_id == uuid.UUID(campaign_id))
        ).all()
        assert sorted(r.vin for r in records) == sorted(vins)
        assert all((r.before, r.after) == ({"BMS": "1.0.0"}, {"BMS": "2.0.0"}) for r in records)
        rxswin = session.exec(select(Rxswin).where(col(Rxswin.vin).in_(vins))).all()
        assert {r.vin: r.rxswin for r in rxswin} == {r.vin: r.rxswin_after for r in records}

    # Each report was stored exactly once, whichever way it came; the Kafka ones through the
    # ota worker (those vehicles never call the reports endpoint).
    reports = s.reports_of(campaign_id)
    assert sorted((r.vin, r.body["seq"]) for r in reports) == sorted((e.vin, e.seq) for e in events)
    kafka_vins = {v.vin for v in s.vehicles if v.channel == "kafka"}
    assert len(kafka_vins) == FLEET_SIZE // KAFKA_EVERY
    assert {e.vin for e in events if e.channel == "kafka"} == kafka_vins
    assert {r.vin for r in reports} >= kafka_vins

    assert {
        ("campaign.create", s.creator[0]),
        ("campaign.approve", s.approver[0]),
        ("campaign.launch", s.creator[0]),
        ("campaign.complete", "gate"),
    } <= s.audit_actions(campaign_id)


def _bad_release_pauses_in_its_canary(s: Scenario) -> None:
    previous = {v.vin: v.ecus["BMS"].image for v in s.vehicles}
    image = s.upload("3.0.0", release_counter=3)  # the fleet fails to flash it on BMS-HW-2
    campaign_id = s.campaign(image, BAD_WAVES, update_kind="forced")
    assert s.call("POST", f"/campaigns/{campaign_id}/launch")["state"] == "running"

    s.drive_until(campaign_id, leaves="running", bound_s=PAUSE_BOUND_S)

    status = s.status(campaign_id)
    campaign = status["campaign"]
    assert (campaign["state"], campaign["current_wave"]) == ("paused", 0), status
    reason = campaign["pause_reason"]
    assert reason["wave"] == 0
    assert reason["code"] in ("success_threshold_unreachable", "failure_rate_above_limit")
    [group] = status["failures"]
    assert (group["error_code"], group["hardware_id"]) == ("E_FLASH_VERIFY", BAD_HARDWARE)
    assert group["vehicles"] >= 2  # one failure in 20 still meets a 95 % threshold
    first = reason["failures"][0]
    assert (first["error_code"], first["hardware_id"]) == ("E_FLASH_VERIFY", BAD_HARDWARE)
    canary, rest = status["waves"]
    assert canary["vehicles"] == BAD_CANARY and canary["failed"] == group["vehicles"]
    outside_count = FLEET_SIZE - BAD_CANARY
    assert (rest["vehicles"], rest["not_started"]) == (outside_count, outside_count)

    events = s.fleet_log.of_campaign(campaign_id)
    hardware = {v.vin: v.ecus["BMS"].hardware_id for v in s.vehicles}
    assert {hardware[e.vin] for e in events if e.state == "failed"} == {BAD_HARDWARE}
    outside = {vin for vin, wave in s.waves_of(campaign_id).items() if wave > 0}
    assert len(outside) == outside_count
    # Outside the canary: never offered, never reported, still running the previous release.
    assert not outside & {e.vin for e in events}
    assert not outside & {r.vin for r in s.reports_of(campaign_id)}
    assert all(v.ecus["BMS"].image == previous[v.vin] for v in s.vehicles if v.vin in outside)
    with session_scope(s.engine) as session:
        director = repos.director(session, s.settings)
        assert all(director.assignment(vin) == [] for vin in outside)
        states = session.exec(
            select(InstallRecord.state).where(
                InstallRecord.campaign_id == uuid.UUID(campaign_id),
                col(InstallRecord.vin).in_(outside),
            )
        ).all()
        assert Counter(states) == {"assigned": outside_count}
        versions = session.exec(select(Ecu.software_version).where(col(Ecu.vin).in_(outside))).all()
        assert Counter(versions) == {"2.0.0": outside_count}

    assert ("campaign.pause", "gate") in s.audit_actions(campaign_id)


def _completion_by_wave(succeeded: list[OtaEvent], wave_of: dict[str, int]) -> list[list[int]]:
    """Per wave, the log positions of its vehicles' successes, in order."""
    completion: list[list[int]] = [[] for _ in WAVES]
    for event in succeeded:
        completion[wave_of[event.vin]].append(event.order)
    return [sorted(orders) for orders in completion]
