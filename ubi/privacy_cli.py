"""``fleet privacy ...``: the location retention purge, erasure requests, and the privacy job
(``ubi/retention.py``, ``ubi/erasure.py``)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from core.auth.cli import cli_session
from core.config import Settings, get_settings

privacy_app = typer.Typer(
    help="Privacy: location retention purge, erasure requests, the privacy job.",
    no_args_is_help=True,
)
stdout = Console()
stderr = Console(stderr=True)

USAGE_ERROR = 2


def usage_error(message: str) -> NoReturn:
    """A wrong argument (an unknown VIN...): a one-line message and exit code 2."""
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(USAGE_ERROR)


def job_error(message: str) -> NoReturn:
    stderr.print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(1)


@privacy_app.command("purge")
def purge(
    older_than_days: Annotated[
        int | None,
        typer.Option(
            min=0, help="Purge positions older than this; default FLEET_RETENTION_LOCATION_DAYS."
        ),
    ] = None,
) -> None:
    """Purge raw location data older than the retention period (archive and status table)."""
    from ubi.retention import purge_locations

    try:
        result = purge_locations(get_settings(), older_than_days=older_than_days)
    except (OSError, SQLAlchemyError) as exc:
        job_error(f"purge failed: {_reason(exc)}")
    stderr.print(
        f"Purged location data before {result.cutoff_date}: rewrote {result.files_rewritten} of "
        f"{result.files_scanned} archive files ({result.rows_affected} rows), cleared "
        f"{result.status_rows_cleared} status positions."
    )
    stdout.print(json.dumps(result.as_dict()), highlight=False, soft_wrap=True)


@privacy_app.command("erase")
def erase(
    vin: Annotated[str, typer.Argument(help="The vehicle whose data is erased.")],
    now: Annotated[
        bool, typer.Option("--now", help="Carry it out at once instead of by the privacy job.")
    ] = False,
    requested_by: Annotated[str, typer.Option(help="Who asked (audit log).")] = "cli",
) -> None:
    """Request the erasure of a vehicle's data (done by the privacy job within
    FLEET_ERASURE_DEADLINE_H, or at once with --now)."""
    from core.vin import vin_problem
    from ubi.erasure import process_erasures, request_erasure

    problem = vin_problem(vin)
    if problem is not None:
        usage_error(f"invalid VIN {vin!r}: {problem}")
    settings = get_settings()
    with cli_session() as session:
        if not _known(session, vin):
            usage_error(f"unknown VIN {vin}: not registered and no stored data")
        request = request_erasure(session, vin, requested_by=requested_by, settings=settings)
        request_id, due_at = request.id, request.due_at
    stderr.print(f"Erasure request {request_id} for {vin} is pending, due {_utc(due_at)}.")
    if not now:
        stdout.print(str(request_id), highlight=False)
        return
    results = [r for r in process_erasures(settings, only_vin=vin) if r.request_id == request_id]
    if not results or not results[0].done:
        reason = results[0].error if results else "another runner holds it"
        job_error(f"erasure of {vin} not completed ({reason}); it stays pending")
    result = results[0]
    stderr.print(f"Erased {vin} at {_utc(result.completed_at)}.")
    stdout.print(json.dumps(result.as_dict()), highlight=False, soft_wrap=True)


@privacy_app.command("requests")
def requests(
    vin: Annotated[str | None, typer.Option(help="Only this vehicle.")] = None,
    state: Annotated[str | None, typer.Option(help="pending or done.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="At most this many, newest first.")] = 50,
) -> None:
    """List erasure requests, newest first."""
    from ubi.erasure import list_requests
    from ubi.models import ErasureState

    states = {s.value for s in ErasureState}
    if state is not None and state not in states:
        usage_error(f"unknown state {state!r}; one of {', '.join(sorted(states))}")
    with cli_session() as session:
        rows = list_requests(
            session, vin=vin, state=ErasureState(state) if state else None, limit=limit
        )
    table = Table("id", "vin", "state", "requested", "by", "due", "completed", "removed")
    for r in rows:
        removed = sum(v for k, v in r.details.items() if k != "archive_files" and v)
        table.add_row(
            str(r.id),
            r.vin,
            str(r.state),
            _utc(r.requested_at),
            r.requested_by,
            _utc(r.due_at),
            _utc(r.completed_at),
            str(removed) if r.completed_at else "-",
        )
    stdout.print(table)


@privacy_app.command("run")
def run(
    once: Annotated[bool, typer.Option("--once", help="One round, then exit.")] = False,
    log_level: Annotated[str, typer.Option(help="Log level.")] = "INFO",
) -> None:
    """The privacy job: purge and pending erasures every FLEET_PRIVACY_INTERVAL_S (Ctrl-C
    stops it)."""
    import logging

    from ubi.erasure import run_privacy_jobs

    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    settings = get_settings()
    if once:
        try:
            report = run_privacy_jobs(settings)
        except (OSError, SQLAlchemyError) as exc:
            job_error(f"privacy job failed: {_reason(exc)}")
        stdout.print(json.dumps(report), highlight=False, soft_wrap=True)
        if any(e["error"] for e in report["erasures"]):
            raise typer.Exit(1)
        return
    _serve(settings)


def _serve(settings: Settings) -> None:
    import asyncio
    import signal

    from ubi.erasure import privacy_loop

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        signals = (signal.SIGTERM, signal.SIGINT)
        for sig in signals:
            loop.add_signal_handler(sig, stop.set)
        try:
            await privacy_loop(settings, stop)
        finally:
            for sig in signals:
                loop.remove_signal_handler(sig)

    asyncio.run(main())


def _known(session: Session, vin: str) -> bool:
    """Registered, or with data in one of the erased stores (a vehicle removed from the
    registry can still be erased)."""
    from core.vehicles.models import Vehicle
    from ubi.erasure import ERASED_TABLES
    from ubi.models import Consent, ErasureRequest

    if session.get(Vehicle, vin) is not None:
        return True
    for model in (*ERASED_TABLES, Consent, ErasureRequest):
        table = model.__table__  # type: ignore[attr-defined]
        if session.execute(select(table.c.vin).where(table.c.vin == vin).limit(1)).first():
            return True
    return False


def _utc(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S}Z"


def _reason(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).splitlines()[0]
