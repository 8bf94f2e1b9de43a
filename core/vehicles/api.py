"""HTTP routes of the vehicle registry."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response, status

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal, require_roles
from core.auth.models import AuthenticatedPrincipal, Role
from core.deps import SessionDep
from core.vehicles import service
from core.vehicles.models import EcuInventory, VehicleFilter, VehicleIn, VehicleRead
from core.vin import VinStr

router = APIRouter(prefix="/v1", tags=["vehicles"], responses=AUTH_ERROR_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No vehicle with this VIN (`not_found`)"}
}

FleetOperator = Annotated[
    AuthenticatedPrincipal, Depends(require_roles(Role.admin, Role.fleet_operator))
]
PathVin = Annotated[VinStr, Path(description="Vehicle Identification Number (17 characters)")]


@router.post(
    "/vehicles",
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": VehicleRead, "description": "An existing vehicle was updated"}},
)
def register_vehicle(
    body: VehicleIn, response: Response, session: SessionDep, _operator: FleetOperator
) -> VehicleRead:
    """Register a vehicle, or update it when the VIN is known (201 created, 200 updated)."""
    vehicle, created = service.register_vehicle(session, body)
    if not created:
        response.status_code = status.HTTP_200_OK
    return vehicle


@router.get("/vehicles")
def list_vehicles(
    session: SessionDep,
    _operator: FleetOperator,
    model: Annotated[str | None, Query(max_length=64)] = None,
    model_year: Annotated[int | None, Query(ge=0, le=9999)] = None,
    region: Annotated[str | None, Query(max_length=16)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000)] = 0,
) -> list[VehicleRead]:
    """Vehicles ordered by VIN; every given filter must match."""
    filters = VehicleFilter(model=model, model_year=model_year, region=region, tag=tag)
    return service.list_vehicles(session, filters, limit=limit, offset=offset)


@router.get("/vehicles/{vin}", responses=NOT_FOUND)
def read_vehicle(vin: PathVin, session: SessionDep, principal: CurrentPrincipal) -> VehicleRead:
    """One vehicle with its ECUs: admins and fleet operators, or the vehicle itself."""
    service.ensure_can_read_vehicle(principal, vin)
    return service.get_vehicle(session, vin)


@router.put("/vehicles/{vin}/ecus", responses=NOT_FOUND)
def replace_ecus(
    vin: PathVin, body: EcuInventory, session: SessionDep, _operator: FleetOperator
) -> VehicleRead:
    """Replace the vehicle's ECU inventory with exactly the ECUs given."""
    return service.replace_ecu_inventory(session, vin, body)
