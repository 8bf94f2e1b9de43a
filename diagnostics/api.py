"""HTTP routes of remote diagnosis: the health of a vehicle."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from core.auth.deps import AUTH_ERROR_RESPONSES, CurrentPrincipal
from core.deps import SessionDep
from core.vehicles.service import ensure_can_read_vehicle
from core.vin import VinStr
from diagnostics import service
from diagnostics.models import VehicleHealth

router = APIRouter(prefix="/v1", tags=["diagnostics"], responses=AUTH_ERROR_RESPONSES)
NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "No vehicle with this VIN (`not_found`)"}
}
PathVin = Annotated[VinStr, Path(description="Vehicle Identification Number (17 characters)")]


@router.get("/vehicles/{vin}/health", responses=NOT_FOUND)
def read_vehicle_health(
    vin: PathVin, session: SessionDep, principal: CurrentPrincipal
) -> VehicleHealth:
    """What is wrong now (open DTCs, open alarms) and what is likely to fail soon (the latest
    predictions with their reasons): admins and fleet operators, or the vehicle itself."""
    ensure_can_read_vehicle(principal, vin)
    return service.vehicle_health(session, vin)
