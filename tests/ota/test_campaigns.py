"""Campaigns end to end on a real database (issue 5, "Proof: Campaign tests").

The dry run, four-eyes approval, launch in salted-hash waves, the gates (advance, automatic
pause within the wave where failures start, resume), retry of the failed vehicles, abort, late
joiners, report idempotency and ordering with the UN R156 records, and concurrent reports and
gate evaluations (PostgreSQL with ``DATABASE_URL``, else SQLite).

The tests call ``ota.campaigns`` the way the API and the ``ota`` worker do: one transaction per
call, and a report that changed a record is followed by the gate evaluation in the same
transaction. Each test registers its own vehicles under a model name and ECU hardware ids that
nobody else uses, and its campaigns target that model, so tests do not see each other's
vehicles and can run in any order.
"""

from __future__ import annotations

import hashlib
import itertools
import random
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import func, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from core import audit
from core.config import Settings
from core.db import make_engine, session_scope, upgrade
from core.errors import Conflict, Forbidden, NotFound
from core.vehicles.models import Ecu, EcuIn, Powertrain, VehicleIn
from core.vehicles.service import bulk_register_vehicles
from ota import campaigns, images, repos, rollout, service
from ota import records as rec
from ota.director import DirectorTarget
from ota.models import (
    Campaign,
    CampaignVehicle,
    InstallRecord,
    Rxswin,
    SoftwareImage,
    TufFile,
    UpdateRecord,
    VehicleReport,
)
from ota.store import ObjectStore
from tests.helpers import database_url, new_vin, private_database

FROM_VERSION = "1.0.0"
TO_VERSION = "2.0.0"
ERROR = "E_FLASH_VERIFY"


# --- the database and the repositories ------------------------------------------------------------


@dataclass(frozen=True)
class OtaDb:
    settings: Settings
    engine: Engine

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"


@pytest.fixture(scope="module")
def ota_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OtaDb]:
    """A migrated database with both TUF repositories, signed with keys of this module's own.

    The Image repository, the Director and the audit chain are global per database. On the
    shared PostgreSQL server other test runs reset ``tuf_file`` with their own keys (the
    Director then refuses ours: ``check_online_keys``), and the audit tests delete and tamper
    with audit rows (``verify_chain`` checks the whole chain), so sharing the configured
    database fails whenever another run starts at the same time. Hence:

    - PostgreSQL (``DATABASE_URL``): a private database on the same server, created here,
      migrated from scratch and dropped at the end. Its repositories, keys, audit chain and
      vehicles belong to this module alone, and the concurrency tests still run on PostgreSQL.
    - PostgreSQL, when the role may not create databases: the configured database itself.
      ``tuf_file`` is emptied and both repositories are created with this run's keys (as the
      other OTA test modules do); a concurrent run that does the same breaks this one, which is
      why the private database comes first.
    - SQLite (the default): a fresh file in the module's temporary directory.
    """
    tmp = tmp_path_factory.mktemp("ota-campaigns")
    url = database_url(tmp)
    with private_database(url, "fleet_test_campaigns") as private:
        settings = Settings(
            environment="test",
            data_dir=tmp,
            database_url=private or url,
            ota_keys_dir=tmp / "keys",
        )
        engine = make_engine(settings)
        try:
            upgrade(settings)
            with session_scope(engine) as session:
                if repos.initialized(session):  # only in a shared database: see above
                    session.execute(text(f"DELETE FROM {TufFile.__tablename__}"))
                repos.init_repositories(session, settings)
            yield OtaDb(settings, engine)
        finally:
            engine.dispose()


# --- one test's vehicles, images and campaigns ----------------------------------------------------

_seq = itertools.count(1)
"""Report sequence numbers: growing for every vehicle, as ``ReportIn.seq`` asks."""
_used_vins: set[str] = set()


def fresh_vins(n: int) -> list[str]:
    """``new_vin`` draws from a million serials: skip the ones this run used already."""
    vins: list[str] = []
    while len(vins) < n:
        vin = new_vin()
        if vin not in _used_vins:
            _used_vins.add(vin)
            vins.append(vin)
    return vins


def report_body(
    campaign_id: uuid.UUID,
    state: str,
    *,
    ecu: str = "BMS",
    attempt: int = 1,
    seq: int | None = None,
    error_code: str | None = None,
    report_id: str | None = None,
) -> campaigns.ReportIn:
    return campaigns.ReportIn(
        report_id=report_id or uuid.uuid4().hex,
        campaign_id=campaign_id,
        ecu_id=ecu,
        attempt=attempt,
        seq=next(_seq) if seq is None else seq,
        state=state,
        error_code=error_code,
    )


EcuSpec = tuple[str, str, str]
"""(ecu_id, hardware_id, software_version)"""


@dataclass
class Fleet:
    """One test's vehicles, images and campaigns: a model name and ECU hardware ids that no
    other test uses, so its campaigns (which target the model) see its vehicles only. The
    methods do what the API does, one transaction per call."""

    db: OtaDb
    model: str
    hw_a: str
    hw_b: str

    @property
    def settings(self) -> Settings:
        return self.db.settings

    def session(self) -> AbstractContextManager[Session]:
        return session_scope(self.db.engine)

    # -- setup --

    def register(
        self,
        vins: Sequence[str],
        ecus: Callable[[int], list[EcuSpec]] | None = None,
        *,
        region: str = "EU",
        model_year: int = 2024,
        tags: Sequence[str] = (),
    ) -> list[str]:
        """Register ``vins``; ``ecus(i)`` gives the i-th vehicle's ECUs (default: one BMS of
        hardware A on the old version)."""
        ecus = ecus or (lambda i: [("BMS", self.hw_a, FROM_VERSION)])
        with self.session() as session:
            bulk_register_vehicles(
                session,
                [
                    VehicleIn(
                        vin=vin,
                        model=self.model,
                        model_year=model_year,
                        region=region,
                        time_zone="Europe/Berlin",
                        powertrain=Powertrain.bev,
                        tags=list(tags),
                        ecus=[
                            EcuIn(ecu_id=e, hardware_id=h, software_version=v)
                            for e, h, v in ecus(i)
                        ],
                    )
                    for i, vin in enumerate(vins)
                ],
            )
        return list(vins)

    def image(
        self,
        hardware_ids: Sequence[str] | None = None,
        *,
        version: str = TO_VERSION,
        dependencies: Sequence[str] = (),
    ) -> SoftwareImage:
        """Upload and publish an image (fitting hardware A and B unless told otherwise)."""
        data = f"{self.model} {version} firmware".encode() * 64
        stored = ObjectStore(self.settings.ota_store_location).put_bytes(data)
        name = f"fw-{uuid.uuid4().hex[:10]}"
        meta = images.parse_meta(
            name, version, 5, list(hardware_ids or [self.hw_a, self.hw_b]), list(dependencies)
        )
        with self.session() as session:
            image = images.add_image(session, meta, stored, uploaded_by="alice")
            service.publish_image(session, self.settings, image, actor="alice")
        return image

    def create(
        self,
        image: SoftwareImage,
        waves: list[str],
        *,
        gate: dict[str, Any] | None = None,
        target_filter: dict[str, Any] | None = None,
        actor: str = "alice",
        **fields: Any,
    ) -> uuid.UUID:
        data = campaigns.CampaignIn(
            name=f"campaign for {self.model}",
            image_id=image.id,
            waves=waves,
            gate=campaigns.GateIn(**(gate or {})),
            target_filter=campaigns.TargetFilterIn(
                **{"models": [self.model], **(target_filter or {})}
            ),
            **fields,
        )
        with self.session() as session:
            return campaigns.create(session, data, actor=actor).id

    def launch(self, campaign_id: uuid.UUID, *, actor: str = "alice") -> None:
        with self.session() as session:
            campaigns.launch(session, self.settings, campaign_id, actor=actor)

    def launched(self, waves: list[str], **options: Any) -> tuple[uuid.UUID, SoftwareImage]:
        """A new image (for hardware A and B) launched to every vehicle of this fleet."""
        image = self.image()
        campaign_id = self.create(image, waves, **options)
        self.launch(campaign_id)
        return campaign_id, image

    # -- what vehicles do (one transaction each, as the API) --

    def check_in(self, vin: str) -> campaigns.CheckIn:
        with self.session() as session:
            return campaigns.check_in(session, self.settings, vin)

    def report(
        self, vin: str, campaign_id: uuid.UUID, state: str, *, evaluate: bool = True, **fields: Any
    ) -> campaigns.ReportResult:
        return self.apply(vin, report_body(campaign_id, state, **fields), evaluate=evaluate)

    def apply(
        self, vin: str, body: campaigns.ReportIn, *, evaluate: bool = True
    ) -> campaigns.ReportResult:
        """``POST /v1/ota/reports``: apply, and run the gates when the report changed a record."""
        with self.session() as session:
            result, campaign = campaigns.apply_report(session, self.settings, vin, body)
            if evaluate and campaign is not None and result.applied:
                campaigns.evaluate(session, self.settings, campaign)
        return result

    def fail(self, vin: str, campaign_id: uuid.UUID) -> None:
        assert self.report(vin, campaign_id, "failed", error_code=ERROR).applied

    def succeed(self, vin: str, campaign_id: uuid.UUID, *, attempt: int = 1) -> None:
        assert self.report(vin, campaign_id, "succeeded", attempt=attempt).applied

    # -- operators --

    def resume(self, campaign_id: uuid.UUID) -> None:
        with self.session() as session:
            campaigns.resume(session, self.settings, campaign_id, actor="bob")

    # -- reading --

    def campaign(self, campaign_id: uuid.UUID) -> Campaign:
        with self.session() as session:
            return campaigns.get(session, campaign_id)

    def members(self, campaign_id: uuid.UUID) -> dict[str, CampaignVehicle]:
        with self.session() as session:
            rows = session.exec(
                select(CampaignVehicle).where(CampaignVehicle.campaign_id == campaign_id)
            )
            return {row.vin: row for row in rows}

    def wave(self, campaign_id: uuid.UUID, wave: int) -> list[str]:
        return sorted(v for v, m in self.members(campaign_id).items() if m.wave == wave)

    def records(self, campaign_id: uuid.UUID) -> dict[tuple[str, str], InstallRecord]:
        with self.session() as session:
            rows = session.exec(
                select(InstallRecord).where(InstallRecord.campaign_id == campaign_id)
            )
            return {(r.vin, r.ecu_id): r for r in rows}

    def states(self, campaign_id: uuid.UUID, vins: Sequence[str]) -> set[str]:
        return {r.state for (vin, _), r in self.records(campaign_id).items() if vin in vins}

    def assignment(self, vin: str) -> list[DirectorTarget]:
        with self.session() as session:
            return repos.director(session, self.settings).assignment(vin)

    def targets_version(self, vin: str) -> int | None:
        with self.session() as session:
            return repos.director(session, self.settings).targets_version(vin)

    def offered(self, vins: Sequence[str]) -> dict[str, bool]:
        """Per VIN: does the Director currently list anything for it?"""
        return {vin: bool(self.assignment(vin)) for vin in vins}

    def software(self, vin: str) -> dict[str, str]:
        with self.session() as session:
            return {
                e.ecu_id: e.software_version
                for e in session.exec(select(Ecu).where(Ecu.vin == vin))
            }


@pytest.fixture
def fleet(ota_db: OtaDb) -> Fleet:
    """A fresh :class:`Fleet` (named ``fleet``, not ``world``: ``tests/ota/conftest.py`` has a
    ``world`` of its own, the in-memory repositories of the signing tests)."""
    tag = uuid.uuid4().hex[:10].upper()
    return Fleet(ota_db, model=f"T-{tag}", hw_a=f"HWA-{tag}", hw_b=f"HWB-{tag}")


def requires_two_writers(fleet: Fleet) -> None:
    if not fleet.db.is_postgres:
        pytest.skip("SQLite has one writer: these transactions cannot interleave there")


def salted_rank(vins: Sequence[str], salt: str) -> list[str]:
    """The VINs by ascending sha256(salt + VIN): the order waves are cut from."""
    return sorted(vins, key=lambda v: int.from_bytes(hashlib.sha256((salt + v).encode()).digest()))


# --- dry run --------------------------------------------------------------------------------------


def test_dry_run_counts_eligible_blocked_and_untargeted_vehicles(fleet: Fleet) -> None:
    dep = f"DEP-{fleet.hw_a}"

    def ecus(
        bms: str, dep_version: str = "3.0.0", hw: str | None = None
    ) -> Callable[[int], list[EcuSpec]]:
        return lambda i: [("BMS", hw or fleet.hw_a, bms), ("VCU", dep, dep_version)]

    eligible = fleet.register(fresh_vins(5), ecus(FROM_VERSION))
    incompatible = fleet.register(fresh_vins(2), ecus(FROM_VERSION, hw="OTHER-HW"))
    up_to_date = fleet.register(fresh_vins(2), ecus(TO_VERSION))
    dependency_unmet = fleet.register(fresh_vins(2), ecus(FROM_VERSION, dep_version="2.9"))
    busy_tag = f"busy-{fleet.hw_a}"
    busy = fleet.register(fresh_vins(2), ecus(FROM_VERSION), tags=[busy_tag])
    other_region = fleet.register(fresh_vins(1), ecus(FROM_VERSION), region="US")
    too_old = fleet.register(fresh_vins(1), ecus(FROM_VERSION), model_year=2019)

    # Another active campaign holds the busy vehicles (a vehicle follows one at a time).
    other = fleet.create(
        fleet.image([fleet.hw_a], version="1.5.0"), ["100%"], target_filter={"tags": [busy_tag]}
    )
    fleet.launch(other)

    image = fleet.image([fleet.hw_a], dependencies=[f"{dep}:3.0.0"])
    campaign_id = fleet.create(
        image, ["2", "50%", "100%"], target_filter={"regions": ["EU"], "model_year_min": 2020}
    )
    with fleet.session() as session:
        dry = campaigns.dry_run(session, campaigns.get(session, campaign_id))

    assert dry.eligible == 5
    assert dry.blocked == {
        "incompatible_hardware": 2,
        "up_to_date": 2,
        "dependency_unmet": 2,
        campaigns.BUSY: 2,
    }
    # Every other vehicle in the database is another model ("model_not_targeted").
    assert {k: n for k, n in dry.not_targeted.items() if k != "model_not_targeted"} == {
        "region_not_targeted": 1,
        "model_year_not_targeted": 1,
    }
    expected_examples = {
        "incompatible_hardware": incompatible,
        "up_to_date": up_to_date,
        "dependency_unmet": dependency_unmet,
        campaigns.BUSY: busy,
        "region_not_targeted": other_region,
        "model_year_not_targeted": too_old,
    }
    for reason, vins in expected_examples.items():
        assert sorted(dry.examples[reason]) == sorted(vins), reason
    assert dry.wave_sizes == [2, 1, 2]  # cumulative 2, ceil(50 % of 5) = 3, 5
    # Three waves of installs with a soak between consecutive waves.
    assert dry.expected_duration_s == 3 * campaigns.PER_VEHICLE_S + 2 * campaigns.WAVE_SOAK_S

    fleet.launch(campaign_id)  # the launch takes exactly what the dry run promised
    members = fleet.members(campaign_id)
    assert sorted(members) == sorted(eligible)
    sizes = Counter(m.wave for m in members.values())
    assert [sizes[wave] for wave in range(3)] == dry.wave_sizes


def test_a_vehicle_with_two_ecus_of_the_same_hardware_does_not_stop_the_launch(
    fleet: Fleet,
) -> None:
    """Left and right BMS of one hardware variant (the Director keys its targets by file name,
    ``<hardware id>/<image>``, the same for both ECUs): the launch must not fail for the
    whole fleet because of one such vehicle, and it must do what the dry run announced,
    updating both ECUs or leaving the vehicle out."""
    twins = lambda i: [("BMS-L", fleet.hw_a, FROM_VERSION), ("BMS-R", fleet.hw_a, FROM_VERSION)]  # noqa: E731
    [twin] = fleet.register(fresh_vins(1), twins)
    others = fleet.register(fresh_vins(3))
    campaign_id = fleet.create(fleet.image(), ["100%"])
    with fleet.session() as session:
        dry = campaigns.dry_run(session, campaigns.get(session, campaign_id))
    twin_eligible = dry.eligible == 4
    assert dry.eligible == 3 + twin_eligible

    fleet.launch(campaign_id)
    assert fleet.campaign(campaign_id).state == "running"
    assert fleet.offered(others) == dict.fromkeys(others, True)
    assert (twin in fleet.members(campaign_id)) == twin_eligible
    if twin_eligible:
        assert {t.ecu_identifier for t in fleet.assignment(twin)} == {"BMS-L", "BMS-R"}


# --- approval -------------------------------------------------------------------------------------


def test_a_campaign_that_requires_approval_launches_only_after_another_operator_approved(
    fleet: Fleet,
) -> None:
    fleet.register(fresh_vins(3))
    campaign_id = fleet.create(fleet.image(), ["100%"], requires_approval=True, actor="alice")

    with pytest.raises(Conflict) as not_approved, fleet.session() as session:
        campaigns.launch(session, fleet.settings, campaign_id, actor="alice")
    assert not_approved.value.code == "invalid_state"
    with pytest.raises(Forbidden) as own, fleet.session() as session:
        campaigns.approve(session, campaign_id, actor="alice")
    assert own.value.status_code == 403
    assert fleet.campaign(campaign_id).state == "draft"

    with fleet.session() as session:
        campaigns.approve(session, campaign_id, actor="bob")
    approved = fleet.campaign(campaign_id)
    assert (approved.state, approved.approved_by) == ("approved", "bob")
    with pytest.raises(Conflict), fleet.session() as session:
        campaigns.approve(session, campaign_id, actor="carol")  # approved once, not twice

    fleet.launch(campaign_id, actor="alice")
    assert fleet.campaign(campaign_id).state == "running"
    with fleet.session() as session:
        events = audit.list_events(session, subject=f"campaign:{campaign_id}")
        chain = audit.verify_chain(session)
    assert [(e.action, e.actor) for e in reversed(events)] == [
        ("campaign.create", "alice"),
        ("campaign.approve", "bob"),
        ("campaign.launch", "alice"),
    ]
    assert chain.ok, chain


# --- launch ---------------------------------------------------------------------------------------


def test_launch_cuts_waves_by_salted_hash_and_releases_only_the_canary(fleet: Fleet) -> None:
    vins = fleet.register(fresh_vins(12))
    campaign_id, image = fleet.launched(["3", "50%", "100%"])
    campaign = fleet.campaign(campaign_id)
    members = fleet.members(campaign_id)

    ranked = salted_rank(vins, campaign.salt)
    assert {v: members[v].wave for v in vins} == {
        v: 0 if i < 3 else 1 if i < 6 else 2 for i, v in enumerate(ranked)
    }
    assert {v: members[v].released for v in vins} == {v: members[v].wave == 0 for v in vins}
    canary, wave_2 = ranked[0], ranked[-1]

    [entry] = fleet.assignment(canary)
    assert (entry.ecu_identifier, entry.hardware_identifier) == ("BMS", fleet.hw_a)
    assert entry.filename == f"{fleet.hw_a}/{image.filename}"
    assert (entry.sha256, entry.length, entry.release_counter) == (
        image.sha256,
        image.length,
        image.release_counter,
    )
    assert entry.custom["campaign_id"] == str(campaign_id)
    assert entry.custom["attempt"] == 1
    assert fleet.assignment(wave_2) == []
    assert fleet.targets_version(wave_2) is None  # never signed for: nothing to install yet

    records = fleet.records(campaign_id)
    assert {r.state for r in records.values()} == {"assigned"}
    assert {(r.from_version, r.to_version, r.attempt) for r in records.values()} == {
        (FROM_VERSION, TO_VERSION, 1)
    }

    canary_check = fleet.check_in(canary)
    assert [(u.campaign_id, u.ecu_id, u.attempt) for u in canary_check.updates] == [
        (campaign_id, "BMS", 1)
    ]
    assert canary_check.director_targets_version == fleet.targets_version(canary)
    assert fleet.check_in(wave_2).updates == []
    records = fleet.records(campaign_id)
    assert records[canary, "BMS"].state == "notified"
    assert records[wave_2, "BMS"].state == "assigned"


# --- gates ----------------------------------------------------------------------------------------

GATE_CASES = [
    pytest.param(
        {},  # defaults: 95 % must succeed; one failure in a wave of 9 makes that unreachable
        3,
        ["succeeded", "failed"],
        "success_threshold_unreachable",
        id="success-threshold-unreachable",
    ),
    pytest.param(
        # Half must succeed: a failure alone does not pause, the failure rate does once four
        # vehicles reported and its Wilson lower bound (2 of 4: 0.15) exceeds 10 %.
        {"success_threshold": 0.5, "max_failure_rate": 0.1, "min_reports": 4},
        2,
        ["succeeded", "succeeded", "failed", "failed"],
        "failure_rate_above_limit",
        id="failure-rate-above-limit",
    ),
]


@pytest.mark.parametrize(("gate", "canary_needed", "wave_1_results", "code"), GATE_CASES)
def test_gates_advance_on_success_and_pause_within_the_wave_where_failures_start(
    fleet: Fleet,
    gate: dict[str, Any],
    canary_needed: int,
    wave_1_results: list[str],
    code: str,
) -> None:
    vins = fleet.register(
        fresh_vins(30), lambda i: [("BMS", fleet.hw_a if i % 2 else fleet.hw_b, FROM_VERSION)]
    )
    hardware = {vin: fleet.hw_a if i % 2 else fleet.hw_b for i, vin in enumerate(vins)}
    campaign_id, _ = fleet.launched(["3", "40%", "100%"], gate=gate)  # 3, 9 and 18
    canary, wave_1, wave_2 = (fleet.wave(campaign_id, w) for w in range(3))
    assert (len(canary), len(wave_1), len(wave_2)) == (3, 9, 18)

    # The canary: the next wave starts exactly when enough of it succeeded.
    for vin in canary:
        fleet.check_in(vin)
    for done, vin in enumerate(canary[:canary_needed], start=1):
        assert fleet.offered(wave_1) == dict.fromkeys(wave_1, False)
        fleet.succeed(vin, campaign_id)
        assert fleet.campaign(campaign_id).current_wave == (1 if done == canary_needed else 0)
    assert fleet.offered(wave_1) == dict.fromkeys(wave_1, True)
    assert fleet.offered(wave_2) == dict.fromkeys(wave_2, False)

    # Wave 1: two vehicles start downloading, then results arrive one by one.
    for vin in wave_1:
        fleet.check_in(vin)
    downloading, reporting = wave_1[:2], wave_1[2 : 2 + len(wave_1_results)]
    not_started = wave_1[2 + len(wave_1_results) :]
    for vin in downloading:
        fleet.report(vin, campaign_id, "downloading")
    for i, (vin, result) in enumerate(zip(reporting, wave_1_results, strict=True)):
        assert fleet.campaign(campaign_id).state == "running", f"paused before report {i}"
        if result == "failed":
            fleet.fail(vin, campaign_id)
        else:
            fleet.succeed(vin, campaign_id)

    campaign = fleet.campaign(campaign_id)
    assert (campaign.state, campaign.current_wave) == ("paused", 1)
    reason = campaign.pause_reason
    assert reason is not None and (reason["code"], reason["wave"]) == (code, 1)
    failed = [v for v, r in zip(reporting, wave_1_results, strict=True) if r == "failed"]
    expected_groups = Counter((ERROR, hardware[v]) for v in failed)
    assert {(f["error_code"], f["hardware_id"]): f["vehicles"] for f in reason["failures"]} == (
        expected_groups
    )
    if code == "failure_rate_above_limit":
        assert reason["lower_bound"] > reason["limit"] == 0.1
    with fleet.session() as session:
        [pause] = audit.list_events(
            session, subject=f"campaign:{campaign_id}", action="campaign.pause"
        )
    assert (pause.actor, pause.details["code"]) == ("gate", code)

    # Paused: who had not started loses the offer; who is downloading keeps it.
    assert fleet.offered(not_started) == dict.fromkeys(not_started, False)
    assert fleet.offered(downloading) == dict.fromkeys(downloading, True)
    assert fleet.offered(wave_2) == dict.fromkeys(wave_2, False)
    assert fleet.check_in(not_started[0]).updates == []

    fleet.resume(campaign_id)
    campaign = fleet.campaign(campaign_id)
    assert (campaign.state, campaign.pause_reason, campaign.current_wave) == ("running", None, 1)
    assert fleet.offered(not_started) == dict.fromkeys(not_started, True)
    assert fleet.offered(wave_2) == dict.fromkeys(wave_2, False)
    assert [u.ecu_id for u in fleet.check_in(not_started[0]).updates] == ["BMS"]


def test_pause_signs_nothing_for_vehicles_whose_wave_was_never_released(fleet: Fleet) -> None:
    """A pause must be quick (the bad image is offered until it commits): it withdraws the
    offer from released vehicles and leaves the Director metadata of the others alone."""
    fleet.register(fresh_vins(8))
    campaign_id, _ = fleet.launched(["2", "100%"])
    canary, rest = fleet.wave(campaign_id, 0), fleet.wave(campaign_id, 1)
    fleet.fail(canary[0], campaign_id)
    assert fleet.campaign(campaign_id).state == "paused"
    assert {vin: fleet.targets_version(vin) for vin in rest} == dict.fromkeys(rest, None)


def test_pause_keeps_the_offer_of_a_vehicle_that_started_installing_on_one_ecu(
    fleet: Fleet,
) -> None:
    """Vehicles that started finish and report (``_pause``): a vehicle installing on one of
    its ECUs has started, and the Director must keep listing what it installs."""
    two_ecus = lambda i: [("BMS", fleet.hw_a, FROM_VERSION), ("AUX", fleet.hw_b, FROM_VERSION)]  # noqa: E731
    vins = fleet.register(fresh_vins(4), two_ecus)
    campaign_id, _ = fleet.launched(["100%"])
    installing, failing = vins[0], vins[1]
    fleet.check_in(installing)
    fleet.report(installing, campaign_id, "installing", ecu="BMS")  # AUX has not started yet
    fleet.report(failing, campaign_id, "failed", ecu="BMS", error_code=ERROR)
    assert fleet.campaign(campaign_id).state == "paused"
    assert "BMS" in {t.ecu_identifier for t in fleet.assignment(installing)}


# --- retry ----------------------------------------------------------------------------------------


def _paused_by_two_failures(fleet: Fleet) -> tuple[uuid.UUID, list[str], list[str], str]:
    """Six vehicles in one wave: three succeed, two fail (the campaign pauses at the first),
    one has checked in but not started. Returns the campaign, the succeeded, the failed and
    the one that had not started."""
    vins = fleet.register(fresh_vins(6))
    campaign_id, _ = fleet.launched(["100%"])
    for vin in vins:
        fleet.check_in(vin)
    succeeded, failed, idle = vins[:3], vins[3:5], vins[5]
    for vin in succeeded:
        fleet.succeed(vin, campaign_id)
    for vin in failed:
        fleet.fail(vin, campaign_id)
    assert fleet.campaign(campaign_id).state == "paused"
    return campaign_id, succeeded, failed, idle


def test_retry_gives_only_the_failed_vehicles_a_new_attempt(fleet: Fleet) -> None:
    campaign_id, succeeded, failed, _ = _paused_by_two_failures(fleet)
    before = fleet.records(campaign_id)

    with fleet.session() as session:
        retried = campaigns.retry_failed(session, fleet.settings, campaign_id, actor="bob")
    assert retried == 2
    campaign = fleet.campaign(campaign_id)
    assert (campaign.state, campaign.pause_reason) == ("running", None)
    after = fleet.records(campaign_id)
    for vin in failed:
        record = after[vin, "BMS"]
        assert (record.state, record.attempt, record.error_code, record.last_seq) == (
            "assigned",
            2,
            None,
            -1,
        )
        [entry] = fleet.assignment(vin)
        assert entry.custom["attempt"] == 2
    for vin in succeeded:
        assert after[vin, "BMS"].model_dump() == before[vin, "BMS"].model_dump()
        assert fleet.assignment(vin) == []

    late = fleet.report(failed[0], campaign_id, "succeeded", attempt=1)  # attempt 1, delivered late
    assert (late.applied, late.reason, late.state) == (False, "old_attempt", "assigned")
    assert fleet.software(failed[0])["BMS"] == FROM_VERSION

    [update] = fleet.check_in(failed[0]).updates
    assert update.attempt == 2
    fleet.succeed(failed[0], campaign_id, attempt=2)
    assert fleet.records(campaign_id)[failed[0], "BMS"].state == "succeeded"
    assert fleet.software(failed[0])["BMS"] == TO_VERSION
    with pytest.raises(Conflict) as nothing, fleet.session() as session:
        campaigns.retry_failed(session, fleet.settings, campaign_id, actor="bob")
    assert nothing.value.code == "nothing_to_retry"  # no vehicle is failed any more


def test_retry_after_an_automatic_pause_offers_the_update_again_to_vehicles_that_had_not_started(
    fleet: Fleet,
) -> None:
    """Retry sets the campaign running again, but the vehicles the pause withdrew the offer
    from are not released again: they can never report, and the wave can never finish."""
    campaign_id, _, _, idle = _paused_by_two_failures(fleet)
    assert fleet.assignment(idle) == []
    with fleet.session() as session:
        campaigns.retry_failed(session, fleet.settings, campaign_id, actor="bob")
    assert fleet.campaign(campaign_id).state == "running"
    assert fleet.offered([idle]) == {idle: True}
    assert [u.ecu_id for u in fleet.check_in(idle).updates] == ["BMS"]


# --- abort ----------------------------------------------------------------------------------------


def test_abort_cancels_what_is_not_final_and_withdraws_every_offer(fleet: Fleet) -> None:
    vins = fleet.register(fresh_vins(6))
    campaign_id, _ = fleet.launched(["2", "100%"])
    done, downloading = fleet.wave(campaign_id, 0)
    rest = fleet.wave(campaign_id, 1)
    fleet.check_in(downloading)
    fleet.succeed(done, campaign_id)
    fleet.report(downloading, campaign_id, "downloading")
    assert fleet.offered([downloading]) == {downloading: True}

    with fleet.session() as session:
        campaigns.abort(session, fleet.settings, campaign_id, actor="bob")
    campaign = fleet.campaign(campaign_id)
    assert campaign.state == "aborted" and campaign.finished_at is not None
    records = fleet.records(campaign_id)
    assert records[done, "BMS"].state == "succeeded"
    assert {vin: records[vin, "BMS"].state for vin in [downloading, *rest]} == dict.fromkeys(
        [downloading, *rest], "cancelled"
    )
    assert fleet.offered(vins) == dict.fromkeys(vins, False)
    assert fleet.check_in(downloading).updates == []
    with fleet.session() as session:
        aborts = audit.list_events(
            session, subject=f"campaign:{campaign_id}", action="campaign.abort"
        )
    assert [e.actor for e in aborts] == ["bob"]

    # The aborted campaign holds none of its vehicles: all six are free for the next one.
    next_campaign = fleet.create(fleet.image(version="2.1.0"), ["100%"])
    with fleet.session() as session:
        assert campaigns.dry_run(session, campaigns.get(session, next_campaign)).eligible == 6


# --- late joiners ---------------------------------------------------------------------------------


def _joiner(fleet: Fleet, salt: str, spec: rollout.WaveSpec, fleet_size: int, wave: int) -> str:
    """A fresh VIN whose salted hash falls in ``wave`` of a fleet of ``fleet_size``."""
    while True:
        [vin] = fresh_vins(1)
        if rollout.hash_wave(vin, salt, spec, fleet_size) == wave:
            return vin


def test_late_joiners_join_the_current_wave_or_a_later_one_and_wait_for_its_release(
    fleet: Fleet,
) -> None:
    fleet.register(fresh_vins(6))
    waves = ["2", "50%", "100%"]
    campaign_id, _ = fleet.launched(waves)  # 2, 1 and 3 vehicles
    salt, spec = fleet.campaign(campaign_id).salt, rollout.WaveSpec.parse(waves)

    early = fleet.register([_joiner(fleet, salt, spec, 7, 0)])[0]
    late_2 = fleet.register([_joiner(fleet, salt, spec, 8, 2)])[0]
    assert fleet.members(campaign_id).keys().isdisjoint({early, late_2})  # not until check-in
    assert [u.campaign_id for u in fleet.check_in(early).updates] == [campaign_id]
    assert fleet.check_in(late_2).updates == []
    up_to_date = fleet.register(fresh_vins(1), lambda i: [("BMS", fleet.hw_a, TO_VERSION)])[0]
    fleet.check_in(up_to_date)
    members = fleet.members(campaign_id)
    assert up_to_date not in members
    joined = {vin: (m.wave, m.late, m.released) for vin, m in members.items()}
    assert (joined[early], joined[late_2]) == ((0, True, True), (2, True, False))
    assert fleet.offered([early, late_2]) == {early: True, late_2: False}

    for vin in fleet.wave(campaign_id, 0):  # the canary, with the early joiner in it
        fleet.succeed(vin, campaign_id)
    assert fleet.campaign(campaign_id).current_wave == 1

    # Hashed into the canary, but the canary is behind the campaign now: wave 1.
    behind = fleet.register([_joiner(fleet, salt, spec, 9, 0)])[0]
    assert [u.ecu_id for u in fleet.check_in(behind).updates] == ["BMS"]
    assert fleet.members(campaign_id)[behind].wave == 1
    assert fleet.offered([late_2]) == {late_2: False}

    for vin in fleet.wave(campaign_id, 1):
        fleet.succeed(vin, campaign_id)
    assert fleet.campaign(campaign_id).current_wave == 2
    assert fleet.offered([late_2]) == {late_2: True}
    assert [u.ecu_id for u in fleet.check_in(late_2).updates] == ["BMS"]


def test_a_late_joiner_checking_in_twice_at_the_same_time_joins_once(fleet: Fleet) -> None:
    """Two check-ins of a new vehicle overlap (a retry after a client timeout, two API
    replicas): both must answer, and the vehicle joins once."""
    requires_two_writers(fleet)
    fleet.register(fresh_vins(3))
    campaign_id, _ = fleet.launched(["100%"])
    [joiner] = fleet.register(fresh_vins(1))
    second: list[BaseException | campaigns.CheckIn] = []

    def check_in_again() -> None:
        try:
            second.append(fleet.check_in(joiner))
        except Exception as exc:  # noqa: BLE001 - the assertion below shows it
            second.append(exc)

    with Session(fleet.db.engine, expire_on_commit=False) as first:
        assert [u.ecu_id for u in campaigns.check_in(first, fleet.settings, joiner).updates] == [
            "BMS"
        ]
        thread = threading.Thread(target=check_in_again)
        thread.start()
        _wait_for_a_blocked_transaction(first)  # the second check-in waits for the first
        first.commit()
    thread.join(timeout=30)
    [result] = second
    assert isinstance(result, campaigns.CheckIn), repr(result)
    assert [u.ecu_id for u in result.updates] == ["BMS"]
    assert fleet.members(campaign_id)[joiner].late


def _wait_for_a_blocked_transaction(session: Session, timeout_s: float = 10.0) -> None:
    """Until another connection to this (private) database waits for a lock."""
    deadline = time.monotonic() + timeout_s
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    with session.get_bind().connect() as monitor:  # type: ignore[union-attr]
        while monitor.execute(query).scalar_one() == 0:
            assert time.monotonic() < deadline, "the second check-in never waited"
            # pg_stat_activity is a snapshot per transaction: end it to see new waits.
            monitor.rollback()
            time.sleep(0.02)


# --- reports and the UN R156 records --------------------------------------------------------------


def test_reports_are_idempotent_ordered_by_seq_and_complete_the_vehicle_records(
    fleet: Fleet,
) -> None:
    def ecus(i: int) -> list[EcuSpec]:
        return [
            ("BMS", fleet.hw_a, FROM_VERSION),
            ("AUX", fleet.hw_b, "1.1.0"),
            ("VCU", f"VCU-{fleet.hw_a}", "3.0.0"),  # not updated by this image
        ]

    [vin, other] = fleet.register(fresh_vins(2), ecus)
    campaign_id, _ = fleet.launched(["100%"])
    fleet.check_in(vin)
    version_before = fleet.targets_version(vin)

    first = fleet.report(vin, campaign_id, "downloading", seq=10, report_id="r-10")
    again = fleet.report(vin, campaign_id, "downloading", seq=10, report_id="r-10")
    assert first.applied and (again.applied, again.reason, again.state) == (
        False,
        "duplicate",
        "downloading",
    )
    with fleet.session() as session:
        stored = session.exec(
            select(func.count()).select_from(VehicleReport).where(VehicleReport.vin == vin)
        ).one()
    assert stored == 1

    assert fleet.report(vin, campaign_id, "installing", seq=20).applied
    stale = fleet.report(vin, campaign_id, "downloading", seq=15)
    assert (stale.applied, stale.reason, stale.state) == (False, "out_of_order", "installing")

    with pytest.raises(NotFound):
        fleet.report(vin, uuid.uuid4(), "installing")
    with pytest.raises(NotFound):
        fleet.report(vin, campaign_id, "installing", ecu="VCU")  # not in this campaign

    assert fleet.report(vin, campaign_id, "succeeded", seq=30).applied
    stale_failure = fleet.report(vin, campaign_id, "failed", seq=25, error_code=ERROR)
    assert (stale_failure.applied, stale_failure.state) == (False, "succeeded")
    assert fleet.software(vin) == {"BMS": TO_VERSION, "AUX": "1.1.0", "VCU": "3.0.0"}
    with fleet.session() as session:
        assert session.exec(select(UpdateRecord).where(UpdateRecord.vin == vin)).all() == []
        assert session.get(Rxswin, vin) is None
    assert {t.ecu_identifier for t in fleet.assignment(vin)} == {"BMS", "AUX"}  # AUX to go

    assert fleet.report(vin, campaign_id, "succeeded", ecu="AUX", seq=40).applied
    assert fleet.software(vin) == {"BMS": TO_VERSION, "AUX": TO_VERSION, "VCU": "3.0.0"}
    with fleet.session() as session:
        [update] = session.exec(select(UpdateRecord).where(UpdateRecord.vin == vin)).all()
        register = session.get(Rxswin, vin)
    assert update.campaign_id == campaign_id
    assert update.before == {"BMS": FROM_VERSION, "AUX": "1.1.0"}
    assert update.after == {"BMS": TO_VERSION, "AUX": TO_VERSION}
    assert register is not None and update.rxswin_before is None
    assert update.rxswin_after == register.rxswin
    assert register.software == {"BMS": TO_VERSION, "AUX": TO_VERSION, "VCU": "3.0.0"}
    assert fleet.assignment(vin) == []
    assert (fleet.targets_version(vin) or 0) > (version_before or 0)
    assert fleet.records(campaign_id)[other, "BMS"].state == "assigned"  # the other vehicle


def test_a_report_whose_transaction_rolled_back_is_applied_when_delivered_again(
    fleet: Fleet,
) -> None:
    """Idempotency must not remember a report that was never applied: when the transaction
    that applied it rolls back (the commit fails, a later statement fails), the vehicle or
    Kafka delivers it again and it must count."""
    [vin] = fleet.register(fresh_vins(1))
    campaign_id, _ = fleet.launched(["100%"])
    body = report_body(campaign_id, "downloading", report_id="r-1")
    with pytest.raises(RuntimeError), fleet.session() as session:
        campaigns.apply_report(session, fleet.settings, vin, body)
        raise RuntimeError("the transaction fails after the report was applied")
    assert fleet.records(campaign_id)[vin, "BMS"].state == "assigned"

    result = fleet.apply(vin, body)  # delivered again
    assert (result.applied, result.state) == (True, "downloading")


# --- concurrency ----------------------------------------------------------------------------------


def _install_reports(campaign_id: uuid.UUID, ecu: str) -> list[campaigns.ReportIn]:
    """One ECU's reports of a clean install: downloading, installing, succeeded."""
    first = next(_seq)
    return [
        report_body(campaign_id, state, ecu=ecu, seq=first + step * 1000)
        for step, state in enumerate(["downloading", "installing", "succeeded"])
    ]


def test_concurrent_reports_and_gate_evaluations_lose_no_update(fleet: Fleet) -> None:
    """Eight threads deliver every report twice, shuffled, each in its own transaction with
    the gates evaluated as the API does; waves advance from inside those threads. The result
    must be what applying the same reports one after another gives."""

    def ecus(i: int) -> list[EcuSpec]:
        extra = [("AUX", fleet.hw_b, FROM_VERSION)] if i % 2 == 0 else []
        return [("BMS", fleet.hw_a, FROM_VERSION), *extra]

    vins = fleet.register(fresh_vins(12), ecus)
    campaign_id, _ = fleet.launched(["4", "50%", "100%"])  # 4, 2 and 6
    rng = random.Random(5)
    expected: dict[tuple[str, str], rec.RecordState] = {}
    report_ids: set[str] = set()

    for wave in range(3):
        members = fleet.wave(campaign_id, wave)
        for vin in members:
            fleet.check_in(vin)
        deliveries = [
            (vin, body)
            for (vin, ecu) in fleet.records(campaign_id)
            if vin in members
            for body in _install_reports(campaign_id, ecu)
            for _ in range(2)  # each delivered twice
        ]
        rng.shuffle(deliveries)
        for vin, body in deliveries:  # what applying them one after another gives
            key = (vin, body.ecu_id)
            state = expected.get(key, rec.RecordState(status=rec.InstallStatus.NOTIFIED))
            expected[key] = rec.apply_report(
                state, rec.Report(body.attempt, body.seq, rec.InstallStatus(body.state))
            ).record
            report_ids.add(body.report_id)

        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda item: fleet.apply(*item), deliveries))

        records = fleet.records(campaign_id)
        assert {
            k: (r.state, r.attempt, r.last_seq) for k, r in records.items() if k[0] in members
        } == {
            k: (s.status.value, s.attempt, s.last_seq)
            for k, s in expected.items()
            if k[0] in members
        }, f"wave {wave}"
        assert fleet.campaign(campaign_id).current_wave == min(wave + 1, 2)

    assert fleet.campaign(campaign_id).state == "completed"
    with fleet.session() as session:
        updates = Counter(
            session.exec(
                select(UpdateRecord.vin).where(UpdateRecord.campaign_id == campaign_id)
            ).all()
        )
        stored = session.exec(
            select(func.count())
            .select_from(VehicleReport)
            .where(VehicleReport.campaign_id == campaign_id)
        ).one()
        registers = session.exec(select(Rxswin.vin).where(col(Rxswin.vin).in_(vins))).all()
    # One update record per vehicle: none lost, none twice.
    assert {vin: updates[vin] for vin in vins} == dict.fromkeys(vins, 1)
    assert sorted(registers) == sorted(vins)
    assert stored == len(report_ids)
    # Released once (version 1), emptied once when the vehicle finished (version 2).
    assert {vin: fleet.targets_version(vin) for vin in vins} == dict.fromkeys(vins, 2)
    assert fleet.offered(vins) == dict.fromkeys(vins, False)


def test_concurrent_gate_evaluations_release_the_next_wave_once(fleet: Fleet) -> None:
    fleet.register(fresh_vins(10))
    campaign_id, _ = fleet.launched(["3", "50%", "100%"])  # 3, 2 and 5
    canary, wave_1, wave_2 = (fleet.wave(campaign_id, w) for w in range(3))
    for vin in canary:
        assert fleet.report(vin, campaign_id, "succeeded", evaluate=False).applied
    start = threading.Barrier(8)

    def evaluate(_: int) -> None:
        with fleet.session() as session:
            campaign = campaigns.get(session, campaign_id)  # every thread sees wave 0 running
            start.wait(timeout=30)
            campaigns.evaluate(session, fleet.settings, campaign)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(evaluate, range(8)))

    assert fleet.campaign(campaign_id).current_wave == 1
    assert {vin: fleet.targets_version(vin) for vin in wave_1} == dict.fromkeys(wave_1, 1)
    assert {vin: fleet.targets_version(vin) for vin in wave_2} == dict.fromkeys(wave_2, None)


def test_concurrent_gate_evaluations_complete_a_campaign_once(fleet: Fleet) -> None:
    """Each evaluation read the campaign while it was running; the first completes it, the
    others must not complete it again (a second ``campaign.complete`` in the audit log, a
    rewritten ``finished_at``)."""
    vins = fleet.register(fresh_vins(3))
    campaign_id, _ = fleet.launched(["100%"])
    for vin in vins:
        assert fleet.report(vin, campaign_id, "succeeded", evaluate=False).applied
    start = threading.Barrier(4)

    def evaluate(_: int) -> None:
        with fleet.session() as session:
            campaign = campaigns.get(session, campaign_id)
            start.wait(timeout=30)
            campaigns.evaluate(session, fleet.settings, campaign)

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(evaluate, range(4)))

    assert fleet.campaign(campaign_id).state == "completed"
    with fleet.session() as session:
        completions = audit.list_events(
            session, subject=f"campaign:{campaign_id}", action="campaign.complete"
        )
    assert len(completions) == 1


def test_two_ecus_finishing_in_concurrent_transactions_complete_the_vehicle(
    fleet: Fleet,
) -> None:
    """The last two ECUs of a vehicle succeed in two transactions at the same time (two API
    replicas, or the API and the worker): unless they are serialized, each sees the other ECU
    unfinished, and neither writes the update record and the RXSWIN nor empties the
    Director's assignment."""
    requires_two_writers(fleet)
    two_ecus = lambda i: [("BMS", fleet.hw_a, FROM_VERSION), ("AUX", fleet.hw_b, FROM_VERSION)]  # noqa: E731
    [vin] = fleet.register(fresh_vins(1), two_ecus)
    campaign_id, _ = fleet.launched(["100%"])
    fleet.check_in(vin)

    # Two threads, each its own transaction, started together: a vehicle's reports are
    # serialized (its campaign row is locked), so the second sees the first ECU finished.
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def report(ecu: str) -> None:
        try:
            barrier.wait(timeout=30)
            with fleet.session() as session:
                campaigns.apply_report(
                    session, fleet.settings, vin, report_body(campaign_id, "succeeded", ecu=ecu)
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=report, args=(ecu,)) for ecu in ("BMS", "AUX")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors

    assert fleet.states(campaign_id, [vin]) == {"succeeded"}
    with fleet.session() as session:
        assert len(session.exec(select(UpdateRecord).where(UpdateRecord.vin == vin)).all()) == 1
        assert session.get(Rxswin, vin) is not None
    assert fleet.assignment(vin) == []


def test_a_gate_evaluation_that_started_before_a_pause_releases_no_wave(fleet: Fleet) -> None:
    """A report's transaction reads the campaign (running), an operator pauses it and
    commits, then the report's gate evaluation advances the campaign on its stale copy:
    the next wave is offered although the campaign is paused."""
    requires_two_writers(fleet)
    fleet.register(fresh_vins(6))
    campaign_id, _ = fleet.launched(["2", "100%"])
    first, last = fleet.wave(campaign_id, 0)
    rest = fleet.wave(campaign_id, 1)
    fleet.succeed(first, campaign_id)
    fleet.report(last, campaign_id, "installing")

    with fleet.session() as report_session:
        result, campaign = campaigns.apply_report(
            report_session, fleet.settings, last, report_body(campaign_id, "succeeded")
        )
        assert result.applied and campaign is not None
        with fleet.session() as operator:
            campaigns.pause(operator, fleet.settings, campaign_id, actor="bob", note="looks wrong")
        campaigns.evaluate(report_session, fleet.settings, campaign)

    campaign = fleet.campaign(campaign_id)
    assert (campaign.state, campaign.current_wave) == ("paused", 0)
    assert campaign.pause_reason == {"code": "operator", "by": "bob", "note": "looks wrong"}
    assert fleet.offered(rest) == dict.fromkeys(rest, False)
