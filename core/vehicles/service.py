"""Rules of the vehicle registry. Nothing here commits; callers own the transaction."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session

from core.auth.models import AuthenticatedPrincipal, Role
from core.db import utcnow
from core.errors import Forbidden, NotFound
from core.vehicles import repository
from core.vehicles.models import (
    BulkUpsertResult,
    Ecu,
    EcuInventory,
    EcuRead,
    Vehicle,
    VehicleFilter,
    VehicleIn,
    VehicleRead,
)

FLEET_READERS = frozenset({Role.admin, Role.fleet_operator})


def register_vehicle(session: Session, vehicle: VehicleIn) -> tuple[VehicleRead, bool]:
    """Create or update a vehicle by VIN, replacing its ECU inventory; True when created."""
    result = bulk_register_vehicles(session, [vehicle])
    return get_vehicle(session, vehicle.vin), result.created == 1


def bulk_register_vehicles(session: Session, vehicles: Sequence[VehicleIn]) -> BulkUpsertResult:
    """Upsert many vehicles in a few statements (the simulator registers whole fleets).

    A VIN given twice counts once; its last occurrence wins."""
    unique = list({vehicle.vin: vehicle for vehicle in vehicles}.values())
    vins = [vehicle.vin for vehicle in unique]
    existing = repository.existing_vins(session, vins)
    repository.upsert_vehicles(session, unique, utcnow())
    return BulkUpsertResult(created=len(vins) - len(existing), updated=len(existing))


def get_vehicle(session: Session, vin: str) -> VehicleRead:
    vehicle = repository.get_vehicle(session, vin)
    if vehicle is None:
        raise NotFound(f"no vehicle with VIN {vin}")
    return vehicle_read(vehicle, repository.ecus_by_vin(session, [vin]).get(vin, []))


def list_vehicles(
    session: Session, filters: VehicleFilter, *, limit: int = 100, offset: int = 0
) -> list[VehicleRead]:
    vehicles = repository.list_vehicles(session, filters, limit=limit, offset=offset)
    ecus = repository.ecus_by_vin(session, [v.vin for v in vehicles])
    return [vehicle_read(v, ecus.get(v.vin, [])) for v in vehicles]


def replace_ecu_inventory(session: Session, vin: str, inventory: EcuInventory) -> VehicleRead:
    """Replace a vehicle's ECUs; the vehicle row is locked so concurrent replacements serialize."""
    if repository.get_vehicle(session, vin, for_update=True) is None:
        raise NotFound(f"no vehicle with VIN {vin}")
    repository.replace_ecus(session, {vin: inventory.ecus})
    repository.touch_vehicle(session, vin, utcnow())
    return get_vehicle(session, vin)


def update_ecu_software(session: Session, vin: str, ecu_id: str, software_version: str) -> EcuRead:
    """Record the software an ECU now runs (after an OTA install report)."""
    ecu = repository.update_ecu_software(session, vin, ecu_id, software_version)
    if ecu is None:
        raise NotFound(f"vehicle {vin} has no ECU {ecu_id!r}")
    repository.touch_vehicle(session, vin, utcnow())
    return ecu_read(ecu)


def ensure_can_read_vehicle(principal: AuthenticatedPrincipal, vin: str) -> None:
    """Operators and admins read any vehicle; a vehicle reads only itself."""
    if principal.role in FLEET_READERS:
        return
    if principal.role is Role.vehicle and principal.vin == vin:
        return
    if principal.role is Role.vehicle:
        raise Forbidden("a vehicle may only read its own record")
    raise Forbidden(
        f"requires role admin or fleet_operator, or the vehicle itself; "
        f"this credential has role {principal.role}"
    )


def vehicle_read(vehicle: Vehicle, ecus: list[Ecu]) -> VehicleRead:
    return VehicleRead(
        vin=vehicle.vin,
        model=vehicle.model,
        model_year=vehicle.model_year,
        region=vehicle.region,
        time_zone=vehicle.time_zone,
        powertrain=vehicle.powertrain,
        tags=list(vehicle.tags),
        created_at=vehicle.created_at,
        updated_at=vehicle.updated_at,
        ecus=[ecu_read(ecu) for ecu in ecus],
    )


def ecu_read(ecu: Ecu) -> EcuRead:
    return EcuRead(
        ecu_id=ecu.ecu_id, hardware_id=ecu.hardware_id, software_version=ecu.software_version
    )
