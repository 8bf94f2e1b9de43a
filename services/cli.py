"""``fleet services ...``: service centers, bookings, the webhook dispatcher and its delivery
log, and service outcomes exported as predictive-maintenance labels."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from core.auth.cli import cli_session, describe_error, fail
from core.auth.service import validation_detail

services_app = typer.Typer(
    help="Proactive service: centers, bookings, webhooks (docs/services.md).",
    no_args_is_help=True,
)
stdout = Console()
stderr = Console(stderr=True)


@services_app.command("center-add")
def center_add(
    file: Annotated[Path, typer.Argument(help="JSON file with the center (see docs/services.md).")],
) -> None:
    """Register a service center; prints its id and, with a webhook URL, the signing secret
    (shown once)."""
    from services import service
    from services.schemas import ServiceCenterIn

    try:
        data = ServiceCenterIn.model_validate_json(file.read_bytes())
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}")
    except ValidationError as exc:
        fail(f"{file}: {describe_error(validation_detail(exc))}")
    with cli_session() as session:
        created = service.create_center(session, data)
    stderr.print(f"Registered service center {created.center.code} ({created.center.id}).")
    if created.webhook_secret:
        stderr.print("Webhook signing secret (store it now, it is not shown again):")
        stdout.print(created.webhook_secret, highlight=False)


@services_app.command("centers")
def centers() -> None:
    """List the service centers."""
    from services import repository

    with cli_session() as session:
        rows = repository.list_centers(session, limit=1000)
    table = Table("code", "name", "time zone", "capabilities", "bays", "active", "webhook")
    for c in rows:
        table.add_row(
            c.code,
            c.name,
            c.time_zone,
            ", ".join(c.capabilities),
            str(c.bays),
            "yes" if c.active else "no",
            c.webhook_url or "-",
        )
    stdout.print(table)


@services_app.command("bookings")
def bookings(
    vin: Annotated[str | None, typer.Option(help="Only this vehicle.")] = None,
    state: Annotated[str | None, typer.Option(help="Only this state.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """List bookings, newest first."""
    from services import service
    from services.models import BookingState

    if state is not None and state not in {s.value for s in BookingState}:
        fail(f"unknown state {state!r}; one of {', '.join(s.value for s in BookingState)}")
    with cli_session() as session:
        rows = service.list_bookings(
            session, vin=vin, states=[state] if state else None, limit=limit
        )
    table = Table("id", "vin", "issue", "state", "urgency", "center", "slot (local)", "due by")
    for b in rows:
        table.add_row(
            str(b.id)[:8],
            b.vin,
            b.issue_key,
            b.state,
            b.urgency,
            b.center_code or "-",
            b.slot_local or "-",
            f"{b.due_by:%Y-%m-%d %H:%M}Z",
        )
    stdout.print(table)


@services_app.command("deliver")
def deliver(
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """Deliver webhook events from the outbox until SIGTERM (run one or more)."""
    import logging

    from core.config import get_settings
    from services.delivery import run_dispatcher

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run_dispatcher(get_settings())


@services_app.command("deliveries")
def deliveries(
    state: Annotated[
        str | None, typer.Option(help="pending, delivered, dead or no_endpoint.")
    ] = None,
    center: Annotated[str | None, typer.Option(help="Only this center (code).")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
) -> None:
    """The webhook delivery log."""
    from services import outbox, repository
    from services.models import DeliveryState

    if state is not None and state not in {s.value for s in DeliveryState}:
        fail(f"unknown state {state!r}; one of {', '.join(s.value for s in DeliveryState)}")
    with cli_session() as session:
        center_id = None
        if center is not None:
            found = repository.get_center_by_code(session, center)
            if found is None:
                fail(f"no service center with code {center!r}")
            center_id = found.id
        events = outbox.list_events(
            session, center_id=center_id, state=DeliveryState(state) if state else None, limit=limit
        )
    table = Table("id", "type", "state", "attempts", "last error", "created")
    for e in events:
        table.add_row(
            str(e.id),
            e.type,
            e.delivery_state,
            str(e.attempts),
            e.last_error or "-",
            f"{e.created_at:%Y-%m-%d %H:%M:%S}Z",
        )
    stdout.print(table)


@services_app.command("replay")
def replay(event_id: Annotated[str, typer.Argument(help="Webhook event id.")]) -> None:
    """Deliver a webhook event again, with the same idempotency key."""
    from core.db import utcnow
    from services import outbox

    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        fail(f"{event_id!r} is not an event id (a UUID)")
    with cli_session() as session:
        event = outbox.replay(session, parsed, utcnow())
    stderr.print(f"Event {event.id} ({event.type}) is due for delivery again.")


@services_app.command("labels")
def labels(
    out: Annotated[Path, typer.Argument(help="Output file, .parquet or .jsonl.")],
) -> None:
    """Export service outcomes (replaced parts) as labels for `fleet pdm train --labels`."""
    from services import repository
    from services.labels import write_labels

    if out.suffix not in (".parquet", ".jsonl"):
        fail(f"labels go to a .parquet or .jsonl file, not {out.name!r}")
    with cli_session() as session:
        outcomes = repository.list_outcomes(session)
    count = write_labels(out, outcomes)
    stderr.print(f"Wrote {count} labels from service outcomes to {out}.")
    stdout.print(json.dumps({"labels": count, "path": str(out)}))
