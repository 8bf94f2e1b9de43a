"""``fleet consent ...``: owners of vehicles, consents to insurers and partners, and rotation of
the pseudonym key (``docs/ubi.md``).

A refused request (unknown VIN or grantee, wrong role, bad date) prints one line and exits 2;
a database failure exits 1. The actor in the audit log is ``cli``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from core.auth.cli import describe_error
from core.config import get_settings
from core.db import make_engine, session_scope, utcnow
from core.errors import FleetError
from ubi.models import Purpose

consent_app = typer.Typer(
    help="Consents to insurers and partners, vehicle owners, pseudonym keys.",
    no_args_is_help=True,
)
stdout = Console()
stderr = Console(stderr=True)
ACTOR = "cli"
USAGE_ERROR = 2

VinArg = Annotated[str, typer.Argument(help="17-character VIN of a registered vehicle.")]


@consent_app.command("grant")
def grant(
    vin: VinArg,
    grantee: Annotated[str, typer.Option(help="Name of the insurer or partner principal.")],
    until: Annotated[
        str,
        typer.Option(help="Expiry: a date (00:00 UTC that day) or an ISO 8601 time with zone."),
    ],
    purpose: Annotated[Purpose, typer.Option(help="What the grantee may read.")] = Purpose.ubi,
) -> None:
    """Let an insurer or partner read a vehicle's scores for one purpose until a date.
    Granting again while the consent is active moves its expiry."""
    from ubi import consent

    expires_at = _parse_until(until)
    with _session() as session:
        granted = consent.grant(session, vin, grantee, purpose, expires_at, granted_by=ACTOR)
        view = consent.get_consent(session, granted.id, vin)
    stderr.print(
        f"Consent {view.consent.id}: {view.grantee_name} may read {purpose.value} of {vin} "
        f"until {_utc(view.consent.expires_at)}."
    )


@consent_app.command("revoke")
def revoke(
    vin: VinArg,
    consent_id: Annotated[str, typer.Argument(help="Consent id (see `fleet consent list`).")],
) -> None:
    """Revoke a consent; the grantee's next request no longer sees the vehicle."""
    from ubi import consent

    try:
        parsed = uuid.UUID(consent_id)
    except ValueError:
        _usage_error(f"{consent_id!r} is not a consent id (a UUID)")
    with _session() as session:
        revoked = consent.revoke(session, parsed, vin, revoked_by=ACTOR)
    stderr.print(f"Consent {revoked.id} revoked at {_utc(revoked.revoked_at)}.")


@consent_app.command("list")
def list_(vin: VinArg) -> None:
    """Every consent of a vehicle, newest first."""
    from core.vehicles import repository as vehicles
    from ubi import consent

    with _session() as session:
        if vehicles.get_vehicle(session, vin) is None:
            _usage_error(f"no vehicle with VIN {vin}")
        views = consent.list_consents(session, vin)
    now = utcnow()
    table = Table("id", "grantee", "purpose", "granted", "expires", "state", "by")
    for view in views:
        c = view.consent
        if c.revoked_at is not None:
            state = f"revoked {_utc(c.revoked_at)}"
        else:
            state = "active" if view.is_active(now) else "expired"
        table.add_row(
            str(c.id),
            view.grantee_name,
            str(c.purpose),
            _utc(c.granted_at),
            _utc(c.expires_at),
            state,
            c.granted_by,
        )
    stdout.print(table)


@consent_app.command("owner-add")
def owner_add(
    vin: VinArg,
    principal: Annotated[str, typer.Argument(help="Name of a principal with role owner.")],
) -> None:
    """Link an owner principal to a vehicle (it may then grant consents for it)."""
    from ubi import access

    with _session() as session:
        access.link_owner(session, vin, principal, actor=ACTOR)
    stderr.print(f"{principal} is an owner of {vin}.")


@consent_app.command("rotate-pseudonyms")
def rotate_pseudonyms(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Rotate the pseudonym key: every insurer and partner sees new pseudonyms, and the old
    ones stop resolving at once. Tell them before you do this."""
    from ubi import pseudonyms

    if not yes:
        typer.confirm(
            "All partners will see new pseudonyms and the old ones stop working", abort=True
        )
    with _session() as session:
        version = pseudonyms.rotate_key(session, actor=ACTOR)
    stderr.print(f"Pseudonym key rotated; version {version} is now in use.")


@contextmanager
def _session() -> Iterator[Session]:
    """One transaction; a refused request exits 2, a database failure 1 (no traceback)."""
    engine = make_engine(get_settings())
    try:
        with session_scope(engine) as session:
            yield session
    except FleetError as exc:
        _usage_error(describe_error(exc.detail))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        stderr.print(
            f"[bold red]error:[/] database error: {reason} (has `fleet db upgrade` been run?)",
            highlight=False,
        )
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _usage_error(message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(USAGE_ERROR)


def _parse_until(value: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _usage_error(f"--until {value!r} is not a date (2030-01-31) or ISO 8601 time")
    if parsed.tzinfo is None:
        if len(value) > 10:  # a time without a zone is ambiguous; a bare date means UTC
            _usage_error(f"--until {value!r} needs a time zone, e.g. {value}Z")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed


def _utc(moment: datetime | None) -> str:
    return "-" if moment is None else f"{moment.astimezone(UTC):%Y-%m-%d %H:%M}Z"
