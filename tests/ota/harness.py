"""The running system the OTA end-to-end tests drive: the API under uvicorn on a loopback
port, the ``ota`` worker on its own event loop, a registered fleet with credentials, and its
simulated Uptane clients (``tests/ota/test_e2e.py`` over HTTP, ``tests/console`` through a
browser)."""

from __future__ import annotations

import asyncio
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from sqlalchemy import text
from sqlalchemy.engine import Engine

from core.app import create_app
from core.auth.service import create_principal_with_credential
from core.config import Settings
from core.db import session_scope
from core.localkafka import free_ports
from core.vehicles.models import EcuIn, Powertrain, VehicleIn
from core.vehicles.service import bulk_register_vehicles
from core.vin import make_vin
from core.workers import build_runner
from ota import repos
from simulator.ota_fleet import (
    FleetLog,
    KafkaReports,
    OtaEcu,
    SimulatedOtaVehicle,
    fails_on_hardware,
)

HARDWARE = ("BMS-HW-1", "BMS-HW-2")
BAD_HARDWARE = "BMS-HW-2"
KAFKA_EVERY = 2  # every other vehicle reports over Kafka
DRIVING_EVERY = 10  # every tenth vehicle is on the road with a low battery


@dataclass(frozen=True)
class Registered:
    vin: str
    hardware_id: str
    token: str


def prepare(
    engine: Engine,
    settings: Settings,
    model: str,
    fleet_size: int,
    *,
    operator_role: str = "admin",
) -> tuple[list[Registered], tuple[str, str], tuple[str, str]]:
    """Both repositories afresh, ``fleet_size`` registered vehicles (half on each hardware
    variant) with credentials, and two operators (creator, approver): (name, token) each."""
    base = random.randrange(1_000_000 - fleet_size)
    # Plant code "E": VINs no other test makes.
    vins = [make_vin("WVW", "ZZZ1K", "N", "E", base + i) for i in range(fleet_size)]
    hardware = [HARDWARE[i % len(HARDWARE)] for i in range(fleet_size)]
    with session_scope(engine) as session:
        # The database is shared by the whole test session: other OTA tests create their own
        # repositories in it, so this one starts from none, with its own keys.
        session.execute(text("DELETE FROM tuf_file"))
        # The audit chain is global too, and tests/core/test_audit.py breaks it on purpose:
        # start it empty, so verifying it below checks what this scenario wrote.
        session.execute(text("DELETE FROM audit_event"))
        session.execute(text("DELETE FROM audit_head"))
        repos.init_repositories(session, settings)
        bulk_register_vehicles(
            session,
            [
                VehicleIn(
                    vin=vin,
                    model=model,
                    model_year=2024,
                    region="EU",
                    time_zone="Europe/Berlin",
                    powertrain=Powertrain.bev,
                    ecus=[EcuIn(ecu_id="BMS", hardware_id=hw, software_version="1.0.0")],
                )
                for vin, hw in zip(vins, hardware, strict=True)
            ],
        )
        # What tests.ingestion.conftest.new_vehicle_token does, in one transaction for all.
        fleet = [
            Registered(
                vin,
                hw,
                create_principal_with_credential(session, f"vehicle-{vin}", "vehicle", vin=vin)[1],
            )
            for vin, hw in zip(vins, hardware, strict=True)
        ]
        operators = []
        for role in ("creator", "approver"):
            name = f"ota-{role}-{uuid.uuid4().hex[:8]}"
            token = create_principal_with_credential(session, name, operator_role)[1]
            operators.append((name, token))
    return fleet, operators[0], operators[1]


def simulated_fleet(
    fleet: list[Registered],
    base_url: str,
    http: httpx.Client,
    tmp_path: Path,
    kafka: KafkaReports,
    fleet_log: FleetLog,
    suffix: str,
) -> list[SimulatedOtaVehicle]:
    """The fleet's Uptane clients: one in ``DRIVING_EVERY`` on the road with a low battery,
    one in ``KAFKA_EVERY`` reporting over Kafka; release 3.0.0 fails to flash on
    ``BAD_HARDWARE``."""
    # Provisioned at the factory: both repositories' first roots, fetched once for the fleet
    # (the Director's root is shared by every vehicle).
    some = fleet[0]
    director_root = get(http, f"{base_url}/v1/ota/director/{some.vin}/1.root.json", some.token)
    image_root = get(http, f"{base_url}/v1/ota/image/1.root.json", some.token)
    bad_release = fails_on_hardware(BAD_HARDWARE, error_code="E_FLASH_VERIFY", version="3.0.0")
    seeds = random.Random(5)
    vehicles = []
    for index, registered in enumerate(fleet):
        driving = index % DRIVING_EVERY == 3
        hw = registered.hardware_id
        vehicles.append(
            SimulatedOtaVehicle(
                registered.vin,
                registered.token,
                {"BMS": OtaEcu(hw, f"{hw}/bms-fw-{suffix}-1.0.0.bin", "1.0.0", 1)},
                base_url=base_url,
                http=http,
                cache_dir=tmp_path / "vehicles" / registered.vin,
                director_root=director_root,
                image_root=image_root,
                time_zone="Europe/Berlin",
                soc_pct=20.0 if driving else 80.0,
                parked=not driving,
                consent_probability=0.85,
                install_outcome=bad_release,
                kafka=kafka if index % KAFKA_EVERY == 0 else None,
                fleet_log=fleet_log,
                rng=random.Random(seeds.random()),
            )
        )
    return vehicles


def get(http: httpx.Client, url: str, token: str) -> bytes:
    response = http.get(url, headers={"Authorization": f"Bearer {token}"})
    response.raise_for_status()
    return response.content


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """The API under uvicorn on a free loopback port, until the block ends."""
    [port] = free_ports(1)
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        # Longer than the fleet's polling interval: otherwise the server closes idle
        # keep-alive connections just as vehicles reuse them (a ReadError, not a bug).
        timeout_keep_alive=60,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="api", daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60.0
        while not ready(base_url):
            assert thread.is_alive(), "the API server did not start"
            assert time.monotonic() < deadline, "the API never became ready"
            time.sleep(0.1)
        yield base_url
    finally:
        server.should_exit = True
        thread.join(timeout=30.0)


def ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=5.0).status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def ota_worker(settings: Settings) -> Iterator[Callable[[], None]]:
    """The ``ota`` worker on an event loop thread of its own; yields a check that it still
    runs and dead-lettered nothing."""
    runner = build_runner(settings, "ota", group_id=f"ota-e2e-{uuid.uuid4().hex[:8]}")
    loop = asyncio.new_event_loop()
    crashed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(runner.run())
        except BaseException as exc:  # noqa: BLE001 - reported by alive()
            crashed.append(exc)

    def alive() -> None:
        if crashed:
            raise AssertionError("the ota worker crashed") from crashed[0]
        assert thread.is_alive(), "the ota worker stopped"
        assert runner.stats.dead_lettered == 0, runner.stats.as_dict()

    thread = threading.Thread(target=run, name="ota-worker", daemon=True)
    thread.start()
    try:
        yield alive
    finally:
        loop.call_soon_threadsafe(runner.stop)
        thread.join(timeout=60.0)
        if not thread.is_alive():
            loop.close()
