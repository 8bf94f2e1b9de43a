"""The one console script, ``fleet``. Every subcommand reads settings from the environment
(prefix ``FLEET_``; see ``docs/configuration.md``)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console

from core.config import get_settings

app = typer.Typer(
    name="fleet",
    help="Connected-vehicle backend: telemetry spine, workers, simulator and operations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics of the product.", no_args_is_help=True)
console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)


def _logging(level: str | None = None) -> None:
    """Text or JSON lines on stderr (``FLEET_LOG_FORMAT``, ``FLEET_LOG_LEVEL``)."""
    from core.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_format, level or settings.log_level)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default FLEET_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default FLEET_API_PORT).")] = None,
    workers: Annotated[int, typer.Option(help="Uvicorn worker processes.")] = 1,
) -> None:
    """Serve the HTTP API (``/metrics``, ``/healthz`` and ``/readyz`` on the same port)."""
    import uvicorn

    settings = get_settings()
    uvicorn.run(
        "core.app:app_factory",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level="warning",
        log_config=None,  # the factory configures logging (text or JSON) in every process
        access_log=False,
    )


@app.command()
def worker(
    name: Annotated[str, typer.Argument(help="Worker name (see `fleet workers`).")],
    group: Annotated[str | None, typer.Option(help="Override the consumer group id.")] = None,
    log_level: Annotated[
        str | None, typer.Option(help="Log level (default FLEET_LOG_LEVEL).")
    ] = None,
) -> None:
    """Run one worker until SIGTERM: it drains its batch, commits and leaves the group.
    Serves ``/metrics``, ``/healthz`` and ``/readyz`` on ``FLEET_METRICS_PORT`` (0: none)."""
    from core.logging import set_process_context
    from core.runner import DlqLimitExceeded
    from core.workers import build_runner, get_worker

    set_process_context(worker=name)
    _logging(log_level)
    try:
        get_worker(name)
    except KeyError as exc:
        raise fail(str(exc.args[0])) from None
    settings = get_settings()
    runner = build_runner(settings, name, group_id=group)
    if settings.metrics_port:
        runner.serve_ops(settings.metrics_host, settings.metrics_port)
    try:
        stats = asyncio.run(runner.run_until_signalled())
    except DlqLimitExceeded as exc:
        raise fail(str(exc), code=3) from None
    console.print(f"worker {name} stopped: {json.dumps(stats.as_dict())}")


@app.command("workers")
def list_workers() -> None:
    """List the registered workers."""
    from rich.table import Table

    from core.workers import WORKERS

    settings = get_settings()
    table = Table("name", "consumes", "group", "dead letters to", "what it does")
    for spec in WORKERS.values():
        table.add_row(
            spec.name,
            ", ".join(spec.topics(settings)),
            spec.group_id,
            spec.dlq_topic(settings) or "-",
            spec.description,
        )
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply migrations (SQLite file by default, PostgreSQL via DATABASE_URL)."""
    from core.db import current_revision, upgrade

    settings = get_settings()
    try:
        upgrade(settings, revision)
    except Exception as exc:  # noqa: BLE001 - show a clear message instead of a traceback
        raise fail(f"migration failed on {settings.sqlalchemy_url.split('@')[-1]}: {exc}") from None
    console.print(f"database at revision {current_revision(settings)}")


@db_app.command("current")
def db_current() -> None:
    """Show the current migration revision."""
    from core.db import current_revision

    console.print(current_revision(get_settings()) or "(empty database)")


@topics_app.command("ensure")
def topics_ensure() -> None:
    """Create the product's topics if they are missing."""
    from core.app import product_topics
    from core.localkafka import ensure_topics

    settings = get_settings()
    topics = product_topics(settings)
    try:
        asyncio.run(ensure_topics(settings.bootstrap_servers, topics))
    except Exception as exc:  # noqa: BLE001
        raise fail(f"could not create topics on {settings.bootstrap_servers}: {exc}") from None
    for name, partitions in topics.items():
        console.print(f"{name}: {partitions} partitions")


def _mount() -> None:
    from core.auth.cli import principal_app
    from core.cli_kafka import kafka_app
    from core.vehicles.cli import vehicle_app
    from diagnostics.cli import pdm_app, rules_app
    from ota.cli import audit_app, ota_app
    from services.cli import services_app
    from ubi.cli import score_app
    from ubi.consent_cli import consent_app
    from ubi.privacy_cli import privacy_app

    app.add_typer(db_app, name="db")
    app.add_typer(rules_app, name="rules")
    app.add_typer(pdm_app, name="pdm")
    app.add_typer(topics_app, name="topics")
    app.add_typer(kafka_app, name="kafka")
    app.add_typer(principal_app, name="principal")
    app.add_typer(vehicle_app, name="vehicle")
    app.add_typer(services_app, name="services")
    app.add_typer(ota_app, name="ota")
    app.add_typer(audit_app, name="audit")
    app.add_typer(score_app, name="score")
    app.add_typer(consent_app, name="consent")
    app.add_typer(privacy_app, name="privacy")
    from core import stack_cli

    stack_cli.register(app)


_mount()


def main() -> None:
    app()
