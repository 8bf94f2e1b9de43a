"""``fleet vehicle ...``: register, list and show vehicles."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from core.auth.cli import cli_session, describe_error, fail
from core.auth.service import validation_detail
from core.vehicles import service
from core.vehicles.models import Powertrain, VehicleFilter, VehicleIn, VehicleRead
from core.vin import vin_problem

vehicle_app = typer.Typer(help="The vehicle registry.", no_args_is_help=True)
stdout = Console()
stderr = Console(stderr=True)


@vehicle_app.command("add")
def add(
    vin: Annotated[str, typer.Argument(help="17-character VIN.")],
    model: Annotated[str, typer.Option(help="Model name, e.g. 'Model E'.")],
    model_year: Annotated[int, typer.Option(help="Model year.")],
    region: Annotated[str, typer.Option(help="Region code, e.g. EU.")],
    time_zone: Annotated[str, typer.Option(help="IANA time zone, e.g. Europe/Berlin.")],
    powertrain: Annotated[Powertrain, typer.Option(help="Powertrain type.")],
    tag: Annotated[list[str] | None, typer.Option(help="A tag; repeat for several.")] = None,
    ecu: Annotated[
        list[str] | None,
        typer.Option(help="ECU as ECU_ID:HARDWARE_ID:SOFTWARE_VERSION; repeat for several."),
    ] = None,
) -> None:
    """Register a vehicle, or update it (and replace its ECU inventory) if the VIN is known."""
    vehicle = _vehicle_input(
        {
            "vin": vin,
            "model": model,
            "model_year": model_year,
            "region": region,
            "time_zone": time_zone,
            "powertrain": powertrain,
            "tags": tag or [],
            "ecus": [_parse_ecu(spec) for spec in ecu or []],
        }
    )
    with cli_session() as session:
        registered, created = service.register_vehicle(session, vehicle)
    stderr.print(f"{'Registered' if created else 'Updated'} vehicle {registered.vin}.")


@vehicle_app.command("list")
def list_(
    model: Annotated[str | None, typer.Option(help="Only this model.")] = None,
    model_year: Annotated[int | None, typer.Option(help="Only this model year.")] = None,
    region: Annotated[str | None, typer.Option(help="Only this region.")] = None,
    tag: Annotated[str | None, typer.Option(help="Only vehicles with this tag.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 100,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """List vehicles ordered by VIN."""
    filters = VehicleFilter(model=model, model_year=model_year, region=region, tag=tag)
    with cli_session() as session:
        vehicles = service.list_vehicles(session, filters, limit=limit, offset=offset)
    stdout.print(_vehicle_table(vehicles))


@vehicle_app.command("show")
def show(vin: Annotated[str, typer.Argument(help="17-character VIN.")]) -> None:
    """Show one vehicle and its ECUs as JSON."""
    if (problem := vin_problem(vin)) is not None:
        fail(f"vin: {problem}")
    with cli_session() as session:
        vehicle = service.get_vehicle(session, vin)
    stdout.print_json(vehicle.model_dump_json())


def _vehicle_input(fields: dict[str, Any]) -> VehicleIn:
    try:
        return VehicleIn.model_validate(fields)
    except ValidationError as exc:
        fail(describe_error(validation_detail(exc)))


def _parse_ecu(spec: str) -> dict[str, str]:
    parts = spec.split(":")
    if len(parts) != 3:
        fail(f"--ecu {spec!r}: expected ECU_ID:HARDWARE_ID:SOFTWARE_VERSION")
    return dict(zip(("ecu_id", "hardware_id", "software_version"), parts, strict=True))


def _vehicle_table(vehicles: list[VehicleRead]) -> Table:
    table = Table("vin", "model", "year", "region", "time zone", "powertrain", "tags", "ecus")
    for v in vehicles:
        table.add_row(
            v.vin,
            v.model,
            str(v.model_year),
            v.region,
            v.time_zone,
            v.powertrain.value,
            ", ".join(v.tags),
            str(len(v.ecus)),
        )
    return table
