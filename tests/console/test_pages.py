"""The console's pages in the browser, on data seeded the way the workers write it: the fleet
overview, the vehicle list and one vehicle's page (charts and track from a Parquet archive,
DTCs, alarms, predictions, bookings, ECUs, battery and driving score), the service page with a
webhook replay, the audit log with its chain check, and what a service center may see.

The test database is shared, so figures that count the whole fleet are checked against the
very response the page rendered, and the seeded rows are found by their own VINs and ids."""

from __future__ import annotations

import asyncio
import math
import random
import re
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pyarrow as pa
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from playwright.sync_api import Page, expect
from sqlalchemy import delete
from sqlmodel import Session, col

from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import make_engine, session_scope
from core.signals import CATALOG
from core.telemetry import decode
from core.vehicles.models import EcuIn, Powertrain, VehicleIn
from core.vehicles.repository import upsert_vehicle_status
from core.vehicles.service import bulk_register_vehicles
from core.vehicles.status import StatusUpdate
from core.vin import make_vin
from diagnostics import repository as diagnostics_repository
from diagnostics.dtc import parse_dtc
from diagnostics.models import Alarm, DtcEpisode, MaintenancePrediction
from ingestion.archive import ParquetArchive, RowBuffer
from ota.models import Campaign, InstallRecord, SoftwareImage
from services import repository as services_repository
from services import service as services
from services.delivery import deliver_until_idle
from services.schemas import ServiceCenterIn
from tests.console.conftest import Watched, new_operator
from tests.helpers import encode, issue_signal
from tests.ubi.test_battery import SPEC, _ac_charge_20_to_80, _trace
from tests.ubi.test_scoring import _event, _trip
from ubi import repository as ubi_repository
from ubi import service as ubi_service
from ubi.access import link_owner
from ubi.battery import BatteryHealthState
from ubi.residual import residual_score
from ubi.worker import health_row, session_row

DAY_MS = 86_400_000
TRACK_STEP_S = 20
TRACK_SAMPLES = 120  # 40 minutes: all inside the page's default 1 h window
FLEET_SIZE = 30
ECUS = [("BMS", "BMS-HW-3", "4.2.0"), ("VCU", "VCU-HW-1", "2.7.1"), ("TCU", "TCU-HW-2", "1.9.4")]
PREDICTION_REASON = "Coolant temperature 9.4 °C above the fleet median (+1.35)"
T = TypeVar("T")
HOURS = {d: ["00:00-24:00"] for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


@dataclass
class Seeded:
    model: str
    vin: str
    """The vehicle with everything: DTCs, alarms, a prediction, archive, battery, trips."""
    vins: list[str]
    campaign_id: uuid.UUID
    center_id: uuid.UUID
    center_code: str
    center_token: str
    accepted_vin: str
    """The vehicle whose booking the center accepted."""


def in_thread(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion on a thread of its own (Playwright's sync API keeps an
    event loop running on the main thread)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def seed(settings: Settings, admin_name: str) -> Seeded:
    model = f"Console-{uuid.uuid4().hex[:6]}"
    rng = random.Random()
    # A WMI and VDS of their own, so no other test's vehicle is re-registered by accident.
    vins = sorted(
        make_vin("WBA", "CNSL1", "N", "T", n) for n in rng.sample(range(10**6), FLEET_SIZE)
    )
    vin = vins[3]
    now = datetime.now(UTC)
    # Somewhere in Germany no other test drives: the vehicles and the center are parked at
    # the track's end, so bookings go to this center (the nearest), whatever else is active.
    origin = (rng.uniform(48.0, 53.5), rng.uniform(7.0, 14.0))
    parked = track_position(origin, TRACK_SAMPLES - 1)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            register_fleet(session, model, vins, vin)
        with session_scope(engine) as session:
            seed_diagnostics(session, vin, now)
            campaign_id = seed_campaign(session, vins[:5], admin_name, now)
            seed_battery(session, vin, now)
            seed_trips(session, settings, vin, now)
            # Two owners (a household) per vehicle: 60 audit events, more than a page.
            for owner in (f"owner-{uuid.uuid4().hex[:8]}", f"owner-{uuid.uuid4().hex[:8]}"):
                create_principal_with_credential(session, owner, "owner")
                for owned in vins:
                    link_owner(session, owned, owner, actor=admin_name)
        with session_scope(engine) as session:
            position = StatusUpdate(position_ts=now, latitude=parked[0], longitude=parked[1])
            upsert_vehicle_status(session, {vin: position, vins[7]: position}, now)
            center, code, center_token = seed_bookings(session, settings, vins, vin, parked, now)
        # The delivery worker gives up on the center's unreachable endpoint: dead events.
        fast = settings.model_copy(
            update={
                "webhook_timeout_s": 0.3,
                "webhook_backoff_base_s": 0.02,
                "webhook_backoff_max_s": 0.1,
                "webhook_poll_s": 0.05,
                "webhook_max_attempts": 2,
            }
        )
        stats = in_thread(deliver_until_idle(fast, engine, timeout_s=10, center_ids=[center]))
        assert stats.dead == 2, stats
    finally:
        engine.dispose()
    write_archive(settings, vin, origin, now - timedelta(minutes=5))
    in_thread(fill_kafka(settings))
    return Seeded(model, vin, vins, campaign_id, center, code, center_token, vins[7])


def register_fleet(session: Session, model: str, vins: list[str], vin: str) -> None:
    bulk_register_vehicles(
        session,
        [
            VehicleIn(
                vin=v,
                model=model,
                model_year=2023,
                region="EU",
                time_zone="Europe/Berlin",
                powertrain=Powertrain.bev,
                tags=["console-test"],
                ecus=[EcuIn(ecu_id=e, hardware_id=hw, software_version=sw) for e, hw, sw in ECUS]
                if v == vin
                else [],
            )
            for v in vins
        ],
    )


def seed_diagnostics(session: Session, vin: str, now: datetime) -> None:
    def episode(code: str, state: str, hours: float, occurrences: int) -> dict[str, Any]:
        return {
            "vin": vin,
            "code": code,
            "episode": 1,
            "state": state,
            "first_seen": now - timedelta(hours=hours),
            "last_seen": now - timedelta(minutes=6),
            "confirmed_at": now - timedelta(hours=hours - 1) if state == "confirmed" else None,
            "ended_at": None,
            "occurrences": occurrences,
            "decoded": parse_dtc(code).as_dict(),
            "freeze_frame": {},
            "state_data": {},
            "updated_at": now,
        }

    diagnostics_repository.upsert_dtc_episodes(
        session, [episode("P0217", "confirmed", 5, 14), episode("P2181", "pending", 2, 3)]
    )

    def alarm(
        rule: str, severity: str, minutes: float, value: float, message: str
    ) -> dict[str, Any]:
        cleared = rule.startswith("tire")
        return {
            "vin": vin,
            "rule_id": rule,
            "raised_at": now - timedelta(minutes=minutes),
            "severity": severity,
            "state": "cleared" if cleared else "open",
            "late": False,
            "cleared_at": now - timedelta(minutes=minutes - 30) if cleared else None,
            "value": value,
            "message": message,
            "details": {},
            "updated_at": now,
        }

    hot = "Engine coolant at 118.5 C, above 115 C for 60 s"
    uneven = "Tyre pressures differ by 42 kPa (limit 40 kPa): check for a leak"
    diagnostics_repository.upsert_alarms(
        session,
        [
            alarm("coolant_overtemp", "critical", 20, 118.5, hot),
            alarm("tire_pressure_imbalance", "warning", 600, 42, uneven),
        ],
    )
    diagnostics_repository.upsert_predictions(
        session,
        [
            {
                "vin": vin,
                "component": "coolant_pump",
                "horizon_days": 30,
                "probability": 0.87,
                "alerting": True,
                "model_version": "pdm-test-1",
                "reasons": [
                    reason("coolant_temp_delta", 9.4, 1.35, PREDICTION_REASON),
                    reason("pump_duty_p95", 0.97, 0.41, "Pump duty cycle at 97 % (p95) (+0.41)"),
                ],
                "scored_at": now - timedelta(minutes=3),
                "updated_at": now,
            }
        ],
    )


def reason(feature: str, value: float, contribution: float, text: str) -> dict[str, Any]:
    """One reason of a prediction, as ``diagnostics.pdm_scoring.Reason.to_dict`` gives it."""
    return {"feature": feature, "value": value, "contribution": contribution, "text": text}


def seed_campaign(session: Session, vins: list[str], admin_name: str, now: datetime) -> uuid.UUID:
    suffix = uuid.uuid4().hex[:8]
    image = SoftwareImage(
        name=f"console-bms-{suffix}",
        version="4.3.0",
        release_counter=43,
        hardware_ids=["BMS-HW-3"],
        sha256="0" * 64,
        length=1024,
        storage_key=f"images/{suffix}",
        filename="bms-4.3.0.bin",
    )
    session.add(image)
    session.flush()
    campaign = Campaign(
        name=f"BMS 4.3.0 rollout {suffix}",
        image_id=image.id,
        state="paused",
        waves=[{"target": "5"}, {"target": "100%"}],
        gate={"success_threshold": 0.95, "max_failure_rate": 0.05, "min_reports": 5, "z": 1.96},
        salt=suffix,
        current_wave=0,
        pause_reason={  # as the gate writes it (ota.campaigns.evaluate)
            "code": "success_threshold_unreachable",
            "wave": 0,
            "total": 5,
            "failed_vehicles": 1,
            "max_success_rate": 0.8,
            "success_threshold": 0.95,
            "failures": [],
        },
        created_by=admin_name,
        launched_at=now - timedelta(hours=2),
    )
    session.add(campaign)
    session.flush()
    states = ["succeeded", "succeeded", "failed", "installing", "assigned"]
    for vin, state in zip(vins, states, strict=True):
        session.add(
            InstallRecord(
                campaign_id=campaign.id,
                vin=vin,
                ecu_id="BMS",
                hardware_id="BMS-HW-3",
                wave=0,
                state=state,
                from_version="4.2.0",
                to_version="4.3.0",
            )
        )
    session.flush()
    return campaign.id


def seed_battery(session: Session, vin: str, now: datetime) -> None:
    """Five AC charges over two months, the state of health fading from 93 % to 91.4 %."""
    state = BatteryHealthState(vin, SPEC)
    for k in range(5):
        soh = 0.93 - 0.004 * k
        start_ms = int((now - timedelta(days=60 - 12 * k)).timestamp() * 1000)
        table = _trace(_ac_charge_20_to_80(soh), soh=soh, soc_noise=0.2, seed=k, t0_ms=start_ms)
        table = table.set_column(0, "vin", pa.array([vin] * table.num_rows))
        state.update(table)
    report = state.report()
    ubi_repository.upsert_battery_sessions(session, [session_row(vin, s) for s in state.sessions])
    ubi_repository.upsert_battery_health(
        session, [health_row(report, residual_score(report, SPEC))]
    )


def seed_trips(session: Session, settings: Settings, vin: str, now: datetime) -> None:
    now_ms = int(now.timestamp() * 1000)
    trips = [_trip(0, km=42.0, vin=vin, start_ms=now_ms - (8 - d) * DAY_MS) for d in range(6)]
    harsh = [_event(trips[2], severity=3, offset_ms=60_000 * k) for k in (1, 3, 5)]
    ubi_service.store_results(session, trips, harsh, period_days=settings.ubi_period_days)


def seed_bookings(
    session: Session,
    settings: Settings,
    vins: list[str],
    vin: str,
    position: tuple[float, float],
    now: datetime,
) -> tuple[uuid.UUID, str, str]:
    """A center with an unreachable webhook endpoint, a proposed booking for ``vin`` and an
    accepted one for ``vins[7]``; returns the center's id, code and a credential for it."""
    code = f"console-{uuid.uuid4().hex[:8]}"
    created = services.create_center(
        session,
        ServiceCenterIn.model_validate(
            {
                "code": code,
                "name": "Werkstatt Konsole",
                "latitude": position[0],
                "longitude": position[1],
                "time_zone": "Europe/Berlin",
                "opening_hours": HOURS,
                "capabilities": ["cooling", "lv_12v", "general"],
                "bays": 2,
                "webhook_url": "http://127.0.0.1:9/hook",  # nothing listens: deliveries fail
            }
        ),
    )
    center = services_repository.get_center(session, created.center.id)
    assert center is not None
    _principal, token = create_principal_with_credential(
        session, f"service-center:{code}", "service_center", org_ref=code
    )
    booked = []
    for booked_vin, issue in ((vin, "coolant_pump"), (vins[7], "lv_battery")):
        sig = issue_signal(booked_vin, issue, now=now)
        booking = services.apply_signal(session, settings, sig, now)
        assert booking is not None and booking.center_id == center.id, booking
        booked.append(booking)
    services.accept(session, center, booked[1].id)
    return center.id, code, token


def track_position(origin: tuple[float, float], k: int) -> tuple[float, float]:
    """Where the drive is at sample ``k``: north-east with a wiggle."""
    return (origin[0] + 0.0004 * k, origin[1] + 0.0005 * k + 0.002 * math.sin(k / 12))


def write_archive(
    settings: Settings, vin: str, origin: tuple[float, float], newest: datetime
) -> None:
    """40 minutes of a drive, one sample every 20 s, as the ingestion worker archives it
    (messages of 10 samples)."""
    first_ms = int(newest.timestamp() * 1000) - (TRACK_SAMPLES - 1) * TRACK_STEP_S * 1000
    buffer = RowBuffer()
    for seq in range(TRACK_SAMPLES // 10):
        samples = []
        for k in range(seq * 10, seq * 10 + 10):
            latitude, longitude = track_position(origin, k)
            samples.append(
                {
                    "ts": first_ms + k * TRACK_STEP_S * 1000,
                    "signals": {
                        "Vehicle.Speed": round(48 + 22 * math.sin(k / 7), 1),
                        "Vehicle.Powertrain.TractionBattery.StateOfCharge.Current": 81 - 0.12 * k,
                        "Vehicle.Powertrain.TractionBattery.Temperature.Min": 24 + 0.03 * k,
                        "Vehicle.Powertrain.TractionBattery.Temperature.Max": 27 + 0.05 * k,
                        "Vehicle.Exterior.AirTemperature": 11.5 + 0.01 * k,
                        "Vehicle.CurrentLocation.Latitude": latitude,
                        "Vehicle.CurrentLocation.Longitude": longitude,
                    },
                }
            )
        payload = {"vin": vin, "message_id": f"{vin}-{seq}", "seq": seq, "samples": samples}
        buffer.add(
            decode(encode(payload)),
            topic=settings.telemetry_topic,
            partition=0,
            offset=seq,
            received_at=None,
            catalog=CATALOG,
            size=2000,
        )
    ParquetArchive(settings.archive_location).write_roll(buffer)


async def fill_kafka(settings: Settings) -> None:
    """Two dead letters, and three telemetry records no worker has read yet (lag). A consumer
    group joins once first: a fresh broker creates its group coordinator (``__consumer_offsets``)
    only then, and until it exists the overview cannot read the workers' committed offsets."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    await producer.start()
    try:
        for _ in range(2):
            await producer.send_and_wait(settings.telemetry_dlq_topic, b"not json", key=b"x")
        for i in range(3):
            await producer.send_and_wait(settings.telemetry_topic, b"{}", key=str(i).encode())
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.telemetry_dlq_topic,
        bootstrap_servers=settings.bootstrap_servers,
        group_id=f"console-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        await consumer.getmany(timeout_ms=2000, max_records=1)
    finally:
        await consumer.stop()


# --- checks ----------------------------------------------------------------------------------


def fmt(n: int) -> str:
    return f"{n:,}"


def go(page: Page, hash_: str, wait_for: str) -> None:
    page.evaluate("h => { window.location.hash = h; }", hash_)
    page.wait_for_selector(wait_for, state="attached")


def tile(page: Page, test: str) -> str:
    return page.inner_text(f"[data-test='{test}'] .stat-value")


def path_points(page: Page, selector: str) -> int:
    d = page.get_attribute(selector, "d") or ""
    return len(re.findall(r"[ML]", d))


def check_overview(console: Watched, settings: Settings, seeded: Seeded, token: str) -> None:
    page = console.page
    with page.expect_response(lambda r: r.url.endswith("/v1/fleet/overview")) as answer:
        console.log_in(token)  # an admin lands on the overview
    shown = answer.value.json()
    page.wait_for_selector("[data-test='health-critical']")
    by_health = shown["vehicles"]["by_health"]
    assert tile(page, "health-ok") == fmt(by_health["ok"])
    assert tile(page, "health-attention") == fmt(by_health["attention"])
    assert tile(page, "health-critical") == fmt(by_health["critical"])
    assert by_health["critical"] >= 1  # ours, with its open critical alarm
    assert tile(page, "open-alarms") == fmt(shown["alarms"]["open"])
    assert tile(page, "alerting-predictions") == fmt(shown["predictions"]["alerting"])
    assert tile(page, "open-dtcs") == fmt(shown["open_dtcs"])
    assert shown["open_dtcs"] >= 2 and shown["predictions"]["alerting"] >= 1
    kafka = shown["kafka"]
    assert kafka["available"], kafka
    dead = {d["topic"]: d["messages"] for d in kafka["dead_letter"]}
    assert dead[settings.telemetry_dlq_topic] == 2
    assert tile(page, "dead-letter") == fmt(sum(dead.values()))
    assert tile(page, "consumer-lag") == fmt(sum(lag["lag"] for lag in kafka["lag"]))
    assert sum(lag["lag"] for lag in kafka["lag"]) >= 3
    assert page.locator("[data-group]").count() == len({lag["group"] for lag in kafka["lag"]})

    ours = page.locator(f"tr[data-vin='{seeded.vin}']")
    expect(ours).to_contain_text("critical")
    expect(ours.get_by_role("link")).to_have_attribute("href", f"#/vehicles/{seeded.vin}")
    campaign = page.locator(f"tr[data-campaign='{seeded.campaign_id}']")
    expect(campaign).to_contain_text("paused")
    expect(campaign).to_contain_text("2 succeeded · 1 failed · 1 in progress of 5")
    expect(campaign.locator("[data-test=pause-reason]")).to_have_text(
        "Paused automatically by the gate in wave 1 (canary). Success threshold unreachable: when"
        " it paused, 1 of 5 vehicles had failed, so at most 80.0 % could succeed, below the"
        " required 95.0 %."
    )
    # Reasons stored before the gate kept `failed_vehicles` (its count was in `failures`, or
    # lost under the failure groups) still read in words.
    texts = page.evaluate(
        """async (reasons) => {
            const { pauseReasonText } = await import("/console/static/campaigns.js");
            return reasons.map(pauseReasonText);
        }""",
        [
            {"code": "failure_rate_above_limit", "failures": 3, "reported": 5,
             "lower_bound": 0.23, "limit": 0.05},
            {"code": "success_threshold_unreachable", "failures": [{"error_code": "E"}],
             "total": 12, "max_success_rate": 0.9, "success_threshold": 0.95},
            {"code": "operator", "by": "ops-1"},
            {"code": "a_future_code", "note": "why"},
        ],
    )  # fmt: skip
    assert texts == [
        "Failure rate above the gate's limit: when it paused, 3 of 5 reports had failed; even the"
        " lower bound of the failure rate (23.0 %) was above the limit 5.0 %.",
        "Success threshold unreachable: when it paused, at most 90.0 % could succeed, below the"
        " required 95.0 %.",
        "Paused by ops-1.",
        "Paused: a_future_code: why.",
    ]
    assert campaign.locator(".progress-seg").count() == 3
    expect(page.locator("section", has_text="Recent alerting predictions")).to_contain_text(
        PREDICTION_REASON
    )
    expect(page.locator("section", has_text="Recent open alarms")).to_contain_text(
        "Engine coolant at 118.5 C"
    )
    console.screenshot("overview")

    # Kafka out of reach: the page says so and still shows the rest.
    def without_kafka(route: Any) -> None:
        response = route.fetch()
        body = response.json()
        body["kafka"].update(
            available=False,
            error="KafkaConnectionError: Unable to bootstrap from [('127.0.0.1', 1)]",
            dead_letter=[],
            lag=[],
        )
        route.fulfill(response=response, json=body)

    page.route("**/v1/fleet/overview", without_kafka)
    go(page, "#/vehicles", "#vehicle-filters")
    go(page, "#/overview", "[data-test='kafka-unavailable']")
    expect(page.locator("[data-test='kafka-unavailable']")).to_contain_text("Unable to bootstrap")
    expect(page.locator(f"tr[data-campaign='{seeded.campaign_id}']")).to_be_visible()
    page.unroute("**/v1/fleet/overview")


def check_vehicle_list(console: Watched, seeded: Seeded) -> None:
    page = console.page
    go(page, "#/vehicles", "#vehicle-filters")
    rows = page.locator("#vehicle-results tbody tr")
    page.fill("#filter-model", seeded.model)
    page.select_option("#filter-limit", "25")  # applies the filters
    expect(page.locator("#page-position")).to_have_text("vehicles 1–25")
    expect(rows).to_have_count(25)
    assert rows.first.get_attribute("data-vin") == seeded.vins[0]
    page.click("#page-next")
    expect(page.locator("#page-position")).to_have_text("vehicles 26–30")
    expect(rows).to_have_count(FLEET_SIZE - 25)
    assert rows.first.get_attribute("data-vin") == seeded.vins[25]
    expect(page.locator("#page-next")).to_be_disabled()
    page.click("#page-prev")
    expect(page.locator("#page-position")).to_have_text("vehicles 1–25")
    expect(page.locator(f"tr[data-vin='{seeded.vin}'] a")).to_have_attribute(
        "href", f"#/vehicles/{seeded.vin}"
    )
    page.fill("#filter-tag", "no-such-tag")
    page.click("#vehicle-filters button[type=submit]")
    expect(page.locator("#vehicle-results")).to_contain_text("No vehicle matches")
    page.fill("#filter-tag", "console-test")
    page.click("#vehicle-filters button[type=submit]")
    expect(rows).to_have_count(25)
    console.screenshot("vehicles")

    page.fill("#vin-search", "WVW123")
    page.click("#vin-search-form button[type=submit]")
    expect(page.locator("#vin-search-error")).to_contain_text("17 letters")
    page.fill("#vin-search", seeded.vin.lower())  # typed in lower case: still found
    page.click("#vin-search-form button[type=submit]")
    page.wait_for_url(f"**#/vehicles/{seeded.vin}")


def check_vehicle_page(console: Watched, seeded: Seeded) -> None:
    page = console.page
    expect(page.locator("#health-status")).to_have_attribute("data-status", "critical")
    expect(page.locator("#vehicle-subtitle")).to_have_text(f"{seeded.model} · 2023 · EU")

    dtc = page.locator("tr[data-code='P0217']")
    expect(dtc).to_contain_text("Engine over-temperature: coolant hotter than the protection limit")
    expect(dtc).to_contain_text("confirmed")
    expect(dtc.locator("td").last).to_have_text("14")
    expect(page.locator("tr[data-code='P2181']")).to_contain_text("pending")
    expect(page.locator("#vehicle-alarms tr[data-rule='coolant_overtemp']")).to_contain_text(
        "critical"
    )
    expect(page.locator("#vehicle-alarms")).to_contain_text("Tyre pressures differ by 42 kPa")
    prediction = page.locator("tr[data-component='coolant_pump']")
    expect(prediction).to_contain_text(PREDICTION_REASON)
    expect(prediction).to_contain_text("87 %")
    expect(prediction).to_contain_text("30 d")
    for ecu_id, hardware_id, version in ECUS:
        row = page.locator(f"tr[data-ecu='{ecu_id}']")
        expect(row).to_contain_text(hardware_id)
        expect(row).to_contain_text(version)
    booking = page.locator("#vehicle-bookings tbody tr")
    expect(booking).to_have_count(1)
    expect(booking).to_contain_text("proposed")
    expect(booking).to_contain_text(seeded.center_code)

    # Charts and track from the archive: every sample of the 40 minutes is in the 1 h window.
    page.wait_for_selector("#vehicle-track path.track-line")
    assert path_points(page, "#vehicle-track path.track-line") == TRACK_SAMPLES
    expect(page.locator("#vehicle-track figcaption")).to_contain_text(f"{TRACK_SAMPLES} positions")
    assert path_points(page, "[data-chart='speed'] path.line") == TRACK_SAMPLES
    assert page.locator("[data-chart='soc'] path.line").count() == 1
    # Cell min, cell max and outside air; a BEV has no engine coolant series.
    assert page.locator("[data-chart='temperatures'] path.line").count() == 3
    expect(page.locator("[data-chart='temperatures'] .legend")).to_contain_text("outside air")

    # Battery: the SoH of each of the five charges, the fused value and the residual grade.
    expect(page.locator("[data-test='soh']")).to_contain_text("95 % interval")
    assert path_points(page, "[data-chart='soh'] path.line") == 5
    expect(page.locator("#vehicle-battery")).to_contain_text("Residual grade")
    # Driving score: sub-scores, exposure and the reason that cost the most.
    expect(page.locator("[data-test='ubi-score']")).to_contain_text("of 100, interval")
    expect(page.locator("#vehicle-ubi")).to_contain_text("252 km · 6 h · 6 trips")
    expect(page.locator("#ubi-reasons li").first).to_contain_text("HARSH_BRAKING")
    assert page.locator("#vehicle-ubi [data-sub-score]").count() == 5
    console.screenshot("vehicle")

    # A 15-minute window: 46 of the samples (every 20 s, both ends included).
    with page.expect_response(lambda r: "/signals" in r.url and "minutes=15" in r.url):
        page.click("#signal-window button[data-minutes='15']")
    page.wait_for_function(
        "() => (document.querySelector('#vehicle-track path.track-line')"
        ".getAttribute('d').match(/[ML]/g) || []).length === 46"
    )
    expect(page.locator("#signal-window button.active")).to_have_text("15 min")

    # A vehicle without any of it: short notes, no errors.
    go(page, f"#/vehicles/{seeded.vins[0]}", "#vehicle-ubi [data-test='no-data']")
    for part in ("signals", "track", "battery", "ubi"):
        expect(page.locator(f"#vehicle-{part} [data-test='no-data']")).to_be_visible()
    expect(page.locator("#vehicle-dtcs")).to_contain_text("No open DTC")
    expect(page.locator("#health-status")).to_have_attribute("data-status", "ok")
    assert page.locator(".alert-error").count() == 0


@pytest.fixture
def seeded(settings: Settings) -> Iterator[tuple[Seeded, str]]:
    """The seeded data and an admin's credential; afterwards the seeded problems, campaign
    and center are taken away again, so that runs do not pile up in the shared database's
    overview (critical vehicles, paused campaigns) or receive each other's bookings."""
    admin_name, admin = new_operator(settings, role="admin")
    data = seed(settings, admin_name)
    yield data, admin
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            for table in (Alarm, DtcEpisode, MaintenancePrediction):
                session.execute(delete(table).where(col(table.vin).in_(data.vins)))
            campaign = session.get(Campaign, data.campaign_id)
            if campaign is not None:
                session.execute(
                    delete(InstallRecord).where(col(InstallRecord.campaign_id) == campaign.id)
                )
                session.delete(campaign)
                session.flush()
                session.execute(
                    delete(SoftwareImage).where(col(SoftwareImage.id) == campaign.image_id)
                )
            center = services_repository.get_center(session, data.center_id)
            if center is not None:
                center.active = False
                session.add(center)
    finally:
        engine.dispose()


def test_overview_vehicle_list_and_vehicle_page(
    console: Watched, settings: Settings, seeded: tuple[Seeded, str]
) -> None:
    data, admin = seeded
    check_overview(console, settings, data, admin)
    check_vehicle_list(console, data)
    check_vehicle_page(console, data)


def check_service_page(console: Watched, data: Seeded) -> None:
    page = console.page
    go(page, "#/service", f"#booking-center option[value='{data.center_id}']")
    expect(page.locator(f"#service-centers tr[data-center='{data.center_code}']")).to_contain_text(
        "Werkstatt Konsole"
    )
    counts = page.locator(f"#booking-counts [data-center='{data.center_code}']")
    expect(counts.locator("[data-test='count-proposed'] .stat-value")).to_have_text("1")
    expect(counts.locator("[data-test='count-accepted'] .stat-value")).to_have_text("1")

    page.select_option("#booking-center", str(data.center_id))  # filters the deliveries too
    bookings = page.locator("#bookings tbody tr")
    expect(bookings).to_have_count(2)
    expect(page.locator(f"#bookings tr[data-vin='{data.vin}']")).to_contain_text("proposed")
    page.select_option("#booking-state", "accepted")
    expect(bookings).to_have_count(1)
    expect(bookings.first).to_have_attribute("data-vin", data.accepted_vin)
    expect(bookings.first).to_contain_text("accepted")

    events = page.locator("#webhook-events tbody tr")
    page.select_option("#event-state", "dead")
    expect(events).to_have_count(2)
    event_id = events.first.get_attribute("data-event")
    event = page.locator(f"#webhook-events tr[data-event='{event_id}']")
    expect(event.locator("[data-test='delivery-state']")).to_have_text("dead")
    expect(event.locator("[data-test='attempts']")).to_have_text("2")
    expect(event).to_contain_text("connect_error")
    expect(event).to_contain_text("booking.created")
    console.screenshot("service")

    # Replayed: pending again with a fresh budget of attempts.
    page.select_option("#event-state", "")
    expect(events).to_have_count(2)
    with page.expect_response(lambda r: r.url.endswith("/replay")) as replayed:
        event.get_by_role("button", name="Replay").click()
    assert replayed.value.status == 200
    expect(event.locator("[data-test='delivery-state']")).to_have_text("pending")
    expect(event.locator("[data-test='attempts']")).to_have_text("0")
    expect(page.locator(".toast")).to_contain_text("now pending")


def check_audit_page(console: Watched, data: Seeded, admin_name: str) -> None:
    page = console.page
    go(page, "#/audit", "#audit-events tbody tr")
    page.fill("#audit-subject", f"vehicle:{data.vin}")
    page.click("#audit-filters button[type=submit]")
    rows = page.locator("#audit-events tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("vehicle.owner_linked")
    expect(rows.first).to_contain_text(admin_name)
    expect(rows.first).to_contain_text('"principal":"owner-')

    # Older events, page by page (50 a page; 60 links to owners were recorded).
    page.fill("#audit-subject", "")
    page.fill("#audit-action", "vehicle.owner_linked")
    page.click("#audit-filters button[type=submit]")
    expect(rows).to_have_count(50)
    last_seq = int(rows.last.get_attribute("data-seq") or 0)
    page.click("#audit-older")
    expect(page.locator("#audit-newer")).to_be_enabled()
    newest_older = int(rows.first.get_attribute("data-seq") or 0)
    assert 0 < newest_older < last_seq
    page.click("#audit-newer")
    expect(rows.last).to_have_attribute("data-seq", str(last_seq))

    with page.expect_response(lambda r: r.url.endswith("/v1/audit/verify")) as answer:
        page.click("#audit-verify")
    check = answer.value.json()
    if check["ok"]:
        expect(page.locator("[data-test='chain-ok']")).to_contain_text(
            f"all {check['events']:,} events verified".replace(",", "")
        )
    else:  # another test tampered with the shared chain: the page names the first bad link
        expect(page.locator("[data-test='chain-broken']")).to_contain_text(
            f"seq {check['first_bad_seq']}"
        )
    console.screenshot("audit")


def check_service_center_view(console: Watched, data: Seeded) -> None:
    page = console.page
    console.log_out()
    console.log_in(data.center_token)  # back on the audit log, which is for admins
    expect(page.locator("#audit-events [data-test='role-note']")).to_have_text(
        "Not available for your role."
    )
    expect(page.locator("#audit-verify")).to_be_hidden()
    console.screenshot("audit-service-center")

    go(page, "#/service", "#bookings tbody tr")
    # Not the list of centers, but its own.
    expect(page.locator("#service-centers tbody tr")).to_have_count(1)
    expect(page.locator(f"#service-centers tr[data-center='{data.center_code}']")).to_be_visible()
    expect(page.locator("#bookings tbody tr")).to_have_count(2)  # its own, nobody else's
    counts = page.locator(f"#booking-counts [data-center='{data.center_code}']")
    expect(counts.locator("[data-test='count-accepted'] .stat-value")).to_have_text("1")
    expect(page.locator("#webhook-events tbody tr")).to_have_count(2)
    assert page.get_by_role("button", name="Replay").count() == 0  # replay is for operators
    console.screenshot("service-center")

    go(page, "#/overview", "[data-test='role-note']")
    go(page, f"#/vehicles/{data.vin}", "#vehicle-registry [data-test='role-note']")
    expect(page.locator("#vehicle-bookings tbody tr")).to_have_count(1)  # its booking of it
    expect(page.locator("#vehicle-ubi [data-test='role-note']")).to_be_visible()


def test_service_audit_and_a_service_centers_view(
    console: Watched, settings: Settings, seeded: tuple[Seeded, str]
) -> None:
    data, admin = seeded
    console.log_in(admin)
    admin_name = console.page.inner_text("#who").split(" · ")[0]
    check_service_page(console, data)
    check_audit_page(console, data, admin_name)
    check_service_center_view(console, data)
