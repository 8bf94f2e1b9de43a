"""``fleet sim``, ``fleet run`` (``make run``) and ``fleet demo``: the product end to end."""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live

from core.config import Settings, get_settings
from core.stack import Stack, StackError, console, start_group_at_end, status_table


def _free_port(preferred: int) -> int:
    """``preferred`` when nothing listens on it, else any free loopback port."""
    from core.localkafka import free_ports

    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", preferred)) != 0:
            return preferred
    return free_ports(1)[0]


CONSOLE_OPERATOR = "local-console-admin"


def console_credential(settings: Settings, *, hours: float = 24.0) -> str:
    """A fresh admin credential (valid ``hours``) for logging in to the web console of a local
    stack; the principal ``local-console-admin`` is created on first use."""
    from datetime import timedelta

    from core.auth.repository import get_principal_by_name
    from core.auth.service import create_principal_with_credential, issue_credential
    from core.db import make_engine, session_scope, utcnow

    expires = utcnow() + timedelta(hours=hours)
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            principal = get_principal_by_name(session, CONSOLE_OPERATOR)
            if principal is None:
                _, token = create_principal_with_credential(
                    session, CONSOLE_OPERATOR, "admin", expires_at=expires, description="fleet run"
                )
            else:
                _, token = issue_credential(
                    session, principal, expires_at=expires, description="fleet run"
                )
    finally:
        engine.dispose()
    return token


def register_fleet(settings: Settings, fleet: list[Any]) -> dict[str, str]:
    """Register simulated vehicles and give each a fresh vehicle credential (VIN -> token)."""
    from core.auth.repository import get_principal_by_vin
    from core.auth.service import create_principal_with_credential, issue_credential
    from core.db import make_engine, session_scope
    from core.vehicles.models import EcuIn, Powertrain, VehicleIn
    from core.vehicles.service import bulk_register_vehicles

    engine = make_engine(settings)
    tokens: dict[str, str] = {}
    try:
        with session_scope(engine) as session:
            bulk_register_vehicles(
                session,
                [
                    VehicleIn(
                        vin=v.vin,
                        model=v.model,
                        model_year=v.model_year,
                        region=v.region,
                        time_zone=v.time_zone,
                        powertrain=Powertrain(str(v.powertrain.value).lower()),
                        tags=["simulated", str(v.usage.value)],
                        ecus=[
                            EcuIn(
                                ecu_id=e.ecu_id,
                                hardware_id=e.hardware_id,
                                software_version=e.software_version,
                            )
                            for e in v.ecus
                        ],
                    )
                    for v in fleet
                ],
            )
            for v in fleet:
                principal = get_principal_by_vin(session, v.vin)
                if principal is None:
                    _, token = create_principal_with_credential(
                        session,
                        f"vehicle-{v.vin}",
                        "vehicle",
                        vin=v.vin,
                        description="simulator",
                    )
                else:
                    _, token = issue_credential(session, principal, description="simulator")
                tokens[v.vin] = token
    finally:
        engine.dispose()
    return tokens


def register_demo_centers(settings: Settings) -> int:
    """One service center per simulated region (all capabilities, no webhook), unless centers
    exist already, so ``fleet run`` turns findings into bookings. Returns how many were added."""
    from core.db import make_engine, session_scope
    from services import repository, service
    from services.models import Capability
    from services.schemas import ServiceCenterIn
    from simulator.climate import REGIONS

    weekdays = ("mon", "tue", "wed", "thu", "fri", "sat")
    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            if repository.list_centers(session, limit=1):
                return 0
            for region in REGIONS.values():
                center = ServiceCenterIn(
                    code=f"demo-{region.code.lower()}",
                    name=f"{region.city} Service (demo)",
                    latitude=region.lat,
                    longitude=region.lon,
                    time_zone=region.time_zone,
                    opening_hours={day: ["08:00-12:00", "13:00-18:00"] for day in weekdays},
                    capabilities=list(Capability),
                    bays=4,
                )
                service.create_center(session, center)
        return len(REGIONS)
    finally:
        engine.dispose()


def ensure_ota_repositories(settings: Settings) -> bool:
    """Create the OTA repositories and a development key set (targets key online) on first
    run; True when created."""
    from core.db import make_engine, session_scope
    from ota import repos

    engine = make_engine(settings)
    try:
        with session_scope(engine) as session:
            if repos.initialized(session):
                return False
            repos.init_repositories(session, settings)
            return True
    finally:
        engine.dispose()


async def simulate(
    settings: Settings,
    fleet: list[Any],
    *,
    api_url: str | None,
    tokens: dict[str, str],
    duration_s: float,
    seed: int,
    speedup: float,
    kafka_share: float,
    duplicate_rate: float,
    malformed_rate: float,
    late_rate: float,
    on_progress: Any = None,
) -> dict[str, Any]:
    """Run the fleet: a ``kafka_share`` of vehicles produce straight to Kafka, the rest post
    to the API (all of them to Kafka when there is no API)."""
    from simulator import DeliveryConfig, HttpPublisher, KafkaPublisher, SimConfig, run_simulation

    config = SimConfig(
        delivery=DeliveryConfig(
            duplicate_rate=duplicate_rate, malformed_rate=malformed_rate, late_rate=late_rate
        )
    )
    direct_count = len(fleet) if api_url is None else round(len(fleet) * kafka_share)
    direct, http = fleet[:direct_count], fleet[direct_count:]
    publishers: list[Any] = []
    if http:
        publishers.append((http, HttpPublisher(api_url or "", tokens, gzip=True)))
    if direct:
        publishers.append(
            (direct, KafkaPublisher(settings.bootstrap_servers, settings.telemetry_topic))
        )
    live: dict[int, Any] = {}

    def progress_for(index: int) -> Any:
        def report(p: Any) -> None:
            live[index] = p.publisher
            if on_progress:
                on_progress(combine(live.values()))

        return report

    async def one(index: int, group: list[Any], publisher: Any) -> Any:
        async with publisher:
            return await run_simulation(
                group,
                publisher,
                duration_s=duration_s,
                speedup=speedup,
                seed=seed,
                config=config,
                progress=progress_for(index),
            )

    results = await asyncio.gather(*(one(i, g, p) for i, (g, p) in enumerate(publishers)))
    totals = combine([r.publisher for r in results])
    totals.update(
        messages_sent=sum(r.messages_sent for r in results),
        duplicates_sent=sum(r.duplicates_sent for r in results),
        malformed_sent=sum(r.malformed_sent for r in results),
        late_sent=sum(r.late_sent for r in results),
        samples_sent=sum(r.samples_sent for r in results),
        direct_vehicles=len(direct),
        labels=[label for r in results for label in r.labels],
    )
    return totals


def combine(stats: Any) -> dict[str, Any]:
    out = {"sent": 0, "accepted": 0, "rejected": 0, "failed": 0}
    for s in stats:
        for key in out:
            out[key] += getattr(s, key)
    return out


def register(app: typer.Typer) -> None:
    app.command()(sim)
    app.command()(run)
    app.command()(demo)


def sim(
    vehicles: Annotated[int, typer.Option(min=1, help="Number of vehicles.")] = 20,
    duration: Annotated[float, typer.Option(min=0.1, help="Wall-clock seconds to run.")] = 60,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same fleet and data).")] = 1,
    speedup: Annotated[float, typer.Option(min=0.01, help="Simulated seconds per second.")] = 1.0,
    via: Annotated[str, typer.Option(help="http (through the API) or kafka (direct).")] = "kafka",
    api_url: Annotated[str, typer.Option(help="API base URL for --via http.")] = "",
    faults: Annotated[
        float, typer.Option(min=0, max=1, help="Share of vehicles with a fault.")
    ] = 0.1,
    duplicate_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    malformed_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    late_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.0,
    labels: Annotated[
        Path | None, typer.Option(help="Write fault ground truth here (.parquet/.jsonl).")
    ] = None,
) -> None:
    """Run a simulated fleet against the API or straight to Kafka; prints one JSON line."""
    from simulator import make_fleet, write_labels

    if via not in ("http", "kafka"):
        raise typer.BadParameter("--via must be http or kafka")
    settings = get_settings()
    # Faults develop within the run's simulated time, so they show in its data.
    fleet = make_fleet(vehicles, seed, faults=faults, fault_horizon_s=duration * speedup)
    tokens: dict[str, str] = {}
    url = None
    if via == "http":
        url = api_url or f"http://{settings.api_host}:{settings.api_port}"
        tokens = register_fleet(settings, fleet)
    with console.status(f"simulating {vehicles} vehicles for {duration:g} s...") as status:
        totals = asyncio.run(
            simulate(
                settings,
                fleet,
                api_url=url,
                tokens=tokens,
                duration_s=duration,
                seed=seed,
                speedup=speedup,
                kafka_share=0.0,
                duplicate_rate=duplicate_rate,
                malformed_rate=malformed_rate,
                late_rate=late_rate,
                on_progress=lambda s: status.update(
                    f"sent {s['sent']:,}, accepted {s['accepted']:,}"
                ),
            )
        )
    fault_truth = totals.pop("labels")
    if labels:
        write_labels(labels, fault_truth)
        totals["labels_written"] = len(fault_truth)
    print(json.dumps({"vehicles": vehicles, **totals}))


def _stack_session(
    settings: Settings,
    vehicles: int,
    duration: float | None,
    seed: int,
    speedup: float,
    kafka_share: float,
    duplicate_rate: float,
    malformed_rate: float,
    archive_group: str | None,
    workers: Sequence[str] = ("archive",),
) -> tuple[Stack, dict[str, Any], float]:
    from simulator import make_fleet

    stack = Stack(settings, archive_group=archive_group)
    started = time.monotonic()
    totals: dict[str, Any] = {}
    try:
        stack.start_kafka()
        with console.status("database: migrating; Kafka: creating topics..."):
            stack.migrate_and_create_topics()
        if archive_group:
            asyncio.run(
                start_group_at_end(
                    settings.bootstrap_servers, archive_group, settings.telemetry_topic
                )
            )
        fleet = make_fleet(vehicles, seed, faults=0.1, commercial_share=0.5)
        tokens = register_fleet(settings, fleet)
        console.print(f"fleet: {vehicles} vehicles registered with credentials")
        if "services" in workers:
            added = register_demo_centers(settings)
            if added:
                console.print(f"service centers: {added} demo centers registered")
        if "ota" in workers and ensure_ota_repositories(settings):
            console.print(f"OTA: repositories created, keys in {settings.ota_keys_location}")
        stack.start_workers(list(workers))
        if "services" in workers:
            stack.spawn("webhooks", ["services", "deliver"], metrics=True)
        if "ubi" in workers:
            stack.spawn("privacy", ["privacy", "run"], metrics=True)
        api_url = stack.start_api()
        stack.print_metrics_endpoints()
        console.print(f"web console: {api_url}/console, log in as {CONSOLE_OPERATOR} (24 h) with:")
        console.print(f"  {console_credential(settings)}", soft_wrap=True, highlight=False)
        rates: list[tuple[float, int]] = []
        with Live(console=console, refresh_per_second=2, transient=False) as live:

            def on_progress(sim_stats: dict[str, Any]) -> None:
                now = time.monotonic()
                rates.append((now, sim_stats["accepted"]))
                while rates and now - rates[0][0] > 30:  # messages come every ~10 s per vehicle
                    rates.pop(0)
                rate = (
                    (rates[-1][1] - rates[0][1]) / (rates[-1][0] - rates[0][0])
                    if len(rates) > 1 and rates[-1][0] > rates[0][0]
                    else 0.0
                )
                dead = stack.dead_children()
                if dead:
                    raise StackError(f"{dead[0].name} exited; see {dead[0].log}")
                live.update(
                    status_table(vehicles, sim_stats, rate, stack.worker_stats(), now - started)
                )

            totals = asyncio.run(
                simulate(
                    settings,
                    fleet,
                    api_url=api_url,
                    tokens=tokens,
                    duration_s=duration if duration is not None else 10 * 365 * 86400,
                    seed=seed,
                    speedup=speedup,
                    kafka_share=kafka_share,
                    duplicate_rate=duplicate_rate,
                    malformed_rate=malformed_rate,
                    late_rate=0.0,
                    on_progress=on_progress,
                )
            )
    except BaseException:
        stack.stop()
        raise
    return stack, totals, started


def run(
    vehicles: Annotated[int, typer.Option(min=1, help="Simulated vehicles.")] = 50,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    kafka_share: Annotated[
        float, typer.Option(min=0, max=1, help="Share producing straight to Kafka.")
    ] = 0.1,
) -> None:
    """Start everything (local Kafka, database, API, workers, a simulated fleet) and show a
    live status until Ctrl-C, which stops every process this command started."""
    settings = get_settings()
    settings = settings.model_copy(update={"api_port": _free_port(settings.api_port)})
    try:
        stack, _, _ = _stack_session(
            settings,
            vehicles,
            None,
            seed,
            1.0,
            kafka_share,
            0.005,
            0.002,
            None,
            workers=("archive", "diagnostics", "pdm", "services", "ota", "ubi", "battery"),
        )
    except KeyboardInterrupt:
        console.print("\nstopped: every process this command started has been stopped")
        return
    except StackError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    stack.stop()


def demo(
    vehicles: Annotated[int, typer.Option(min=1, help="Simulated vehicles.")] = 20,
    duration: Annotated[float, typer.Option(min=1, help="Seconds of simulated driving.")] = 30,
    seed: Annotated[int, typer.Option(help="Simulator seed.")] = 1,
    kafka_share: Annotated[float, typer.Option(min=0, max=1)] = 0.2,
    duplicate_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.02,
    malformed_rate: Annotated[float, typer.Option(min=0, max=1)] = 0.01,
) -> None:
    """Like ``fleet run`` for a bounded time (fresh database, archive and consumer group);
    ends with one JSON line of counts."""
    base = get_settings()
    run_dir = base.data_dir / "demo" / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True, exist_ok=True)
    settings = base.model_copy(
        update={
            "database_url": base.database_url or f"sqlite:///{(run_dir / 'fleet.db').resolve()}",
            "archive_url": str((run_dir / "archive").resolve()),
            "archive_roll_seconds": 2.0,
            "api_port": _free_port(base.api_port),
        }
    )
    group = f"fleet.archive.demo-{uuid.uuid4().hex[:8]}"
    try:
        stack, totals, started = _stack_session(
            settings,
            vehicles,
            duration,
            seed,
            1.0,
            kafka_share,
            duplicate_rate,
            malformed_rate,
            group,
        )
    except StackError as exc:
        console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(1) from None
    try:
        expected = totals["accepted"]
        with console.status("waiting for the archive to catch up..."):
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                w = stack.worker_stats().get("archive", {})
                if w.get("consumed", 0) >= expected and not any(w.get("lag", {}).values()):
                    break
                time.sleep(0.5)
    finally:
        stack.stop()
    worker = stack.worker_stats().get("archive", {})
    from ingestion.archive import ParquetArchive

    table = ParquetArchive(settings.archive_location).dataset().to_table(columns=["message_id"])
    archived = len(set(table["message_id"].to_pylist()))
    print(
        json.dumps(
            {
                "vehicles": vehicles,
                "messages_sent": totals["messages_sent"],
                "messages_accepted": totals["accepted"],
                "messages_rejected": totals["rejected"],
                "messages_archived": archived,
                "dead_lettered": worker.get("dead_lettered", 0),
                "duplicates_dropped": worker.get("duplicates", 0),
                # Every accepted message is archived, dead-lettered or a dropped duplicate.
                "unaccounted": totals["accepted"]
                - archived
                - worker.get("dead_lettered", 0)
                - worker.get("duplicates", 0),
                "duplicates_sent": totals["duplicates_sent"],
                "malformed_sent": totals["malformed_sent"],
                "direct_kafka_vehicles": totals["direct_vehicles"],
                "elapsed_s": round(time.monotonic() - started, 1),
                "data_dir": str(run_dir),
            }
        )
    )
