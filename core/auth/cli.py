"""``fleet principal ...``: create principals with a first credential, list them, revoke keys.

Also holds ``cli_session``, the CLI's unit of work (engine from settings, one transaction, errors
printed as one line and exit code 1 instead of a traceback); ``core.vehicles.cli`` uses it too.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session

from core.auth import service
from core.auth.models import PrincipalRead, Role
from core.config import get_settings
from core.db import make_engine, session_scope, utcnow
from core.errors import FleetError

principal_app = typer.Typer(help="Principals and their API credentials.", no_args_is_help=True)
stderr = Console(stderr=True)
stdout = Console()


@contextmanager
def cli_session() -> Iterator[Session]:
    """One transaction against the configured database; failures exit 1 with a clear message."""
    engine = make_engine(get_settings())
    try:
        with session_scope(engine) as session:
            yield session
    except FleetError as exc:
        fail(describe_error(exc.detail))
    except SQLAlchemyError as exc:
        reason = str(getattr(exc, "orig", None) or exc).splitlines()[0]
        fail(f"database error: {reason} (has `fleet db upgrade` been run?)")
    finally:
        engine.dispose()


def fail(message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


def describe_error(detail: Any) -> str:
    """A one-line message from an error detail (a string, or a list of field errors)."""
    if isinstance(detail, list):
        return "; ".join(_describe_field_error(item) for item in detail)
    return str(detail)


def _describe_field_error(item: Any) -> str:
    if isinstance(item, dict):
        field = ".".join(str(part) for part in item.get("loc", [])) or "input"
        return f"{field}: {item.get('msg', '')}"
    return str(item)


@principal_app.command("create")
def create(
    name: Annotated[str, typer.Option(help="Unique name, e.g. ops or workshop-berlin.")],
    role: Annotated[Role, typer.Option(help="What the principal may do.")],
    vin: Annotated[str | None, typer.Option(help="The VIN (role vehicle only).")] = None,
    org_ref: Annotated[
        str | None, typer.Option(help="Organisation reference (service center id, insurer).")
    ] = None,
    expires_in_days: Annotated[
        int | None, typer.Option(min=1, help="Credential lifetime; default never expires.")
    ] = None,
    description: Annotated[str, typer.Option(help="What the credential is for.")] = "",
) -> None:
    """Create a principal and its first API credential; prints the token once."""
    expires_at = utcnow() + timedelta(days=expires_in_days) if expires_in_days else None
    with cli_session() as session:
        principal, token = service.create_principal_with_credential(
            session,
            name,
            role,
            vin=vin,
            org_ref=org_ref,
            expires_at=expires_at,
            description=description,
        )
    stderr.print(f"Created {principal.role} principal {principal.name!r} ({principal.id}).")
    stderr.print("[bold yellow]Store this token now; it is not saved and cannot be shown again:[/]")
    # The token alone on stdout, so `TOKEN=$(fleet principal create ...)` works.
    print(token)


@principal_app.command("list")
def list_(
    role: Annotated[Role | None, typer.Option(help="Only this role.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List principals and their credentials (key ids only, never secrets)."""
    with cli_session() as session:
        principals = service.list_principals(session, role=role, limit=limit, offset=offset)
    stdout.print(_principal_table(principals))


@principal_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="Public key id of the credential.")]) -> None:
    """Revoke a credential. Running API processes stop accepting it within the cache TTL."""
    with cli_session() as session:
        credential = service.revoke_credential(session, key_id)
    stderr.print(
        f"Revoked credential {credential.key_id} at {credential.revoked_at:%Y-%m-%d %H:%M:%SZ}."
    )


def _principal_table(principals: list[PrincipalRead]) -> Table:
    table = Table("name", "role", "vin", "org_ref", "disabled", "credentials (key id: state)")
    for principal in principals:
        states = ", ".join(
            f"{c.key_id}: {_credential_state(c.revoked_at, c.expires_at)}"
            for c in principal.credentials
        )
        table.add_row(
            principal.name,
            principal.role.value,
            principal.vin or "",
            principal.org_ref or "",
            "yes" if principal.disabled else "no",
            states,
        )
    return table


def _credential_state(revoked_at: Any, expires_at: Any) -> str:
    if revoked_at is not None:
        return "revoked"
    if expires_at is not None and expires_at <= utcnow():
        return "expired"
    return "active"
