"""All SQL for the vehicle registry.

Writes are upserts on natural keys (VIN; VIN + ECU id) with ``INSERT ... ON CONFLICT``, which
PostgreSQL and SQLite both support, so registering a vehicle twice or concurrently is safe and
a bulk registration of thousands of vehicles takes a handful of statements. The last known
position and odometer (``vehicle_status``) are upserted the same way, each only ever moving
forward in event time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import (
    Table,
    and_,
    case,
    delete,
    exists,
    func,
    literal,
    not_,
    or_,
    tuple_,
    type_coerce,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.dml import Insert
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session, col, select

from core.vehicles.models import Ecu, EcuIn, Vehicle, VehicleFilter, VehicleIn, VehicleStatus

if TYPE_CHECKING:
    from core.vehicles.status import StatusUpdate

CHUNK_SIZE = 500  # rows per statement: well below SQLite's bound-parameter limit
_VEHICLE: Table = Vehicle.__table__  # type: ignore[attr-defined]
_ECU: Table = Ecu.__table__  # type: ignore[attr-defined]
_VEHICLE_UPDATABLE = ("model", "model_year", "region", "time_zone", "powertrain", "tags")

T = TypeVar("T")


def get_vehicle(session: Session, vin: str, *, for_update: bool = False) -> Vehicle | None:
    """The vehicle, re-read from the database; ``for_update`` locks its row (PostgreSQL)."""
    query = select(Vehicle).where(Vehicle.vin == vin).execution_options(populate_existing=True)
    if for_update:
        query = query.with_for_update()
    return session.exec(query).first()


def list_vehicles(
    session: Session, filters: VehicleFilter, *, limit: int = 100, offset: int = 0
) -> list[Vehicle]:
    query = select(Vehicle).execution_options(populate_existing=True)
    if filters.model is not None:
        query = query.where(Vehicle.model == filters.model)
    if filters.model_year is not None:
        query = query.where(Vehicle.model_year == filters.model_year)
    if filters.region is not None:
        query = query.where(Vehicle.region == filters.region)
    if filters.tag is not None:
        query = query.where(_has_tag(session, filters.tag))
    query = query.order_by(col(Vehicle.vin)).limit(limit).offset(offset)
    return list(session.exec(query))


def ecus_by_vin(session: Session, vins: Sequence[str]) -> dict[str, list[Ecu]]:
    grouped: dict[str, list[Ecu]] = defaultdict(list)
    for chunk in _chunks(vins):
        query = (
            select(Ecu)
            .where(col(Ecu.vin).in_(chunk))
            .order_by(col(Ecu.vin), col(Ecu.ecu_id))
            .execution_options(populate_existing=True)
        )
        for ecu in session.exec(query):
            grouped[ecu.vin].append(ecu)
    return grouped


def existing_vins(session: Session, vins: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for chunk in _chunks(vins):
        found.update(session.exec(select(Vehicle.vin).where(col(Vehicle.vin).in_(chunk))))
    return found


def upsert_vehicles(session: Session, vehicles: Sequence[VehicleIn], now: datetime) -> None:
    """Insert or update vehicles by VIN (``created_at`` is kept) and sync their ECUs.

    VINs must be unique within ``vehicles``."""
    for chunk in _chunks(vehicles):
        insert = _insert(session, _VEHICLE)
        statement = insert.on_conflict_do_update(
            index_elements=["vin"],
            set_={
                **{name: insert.excluded[name] for name in _VEHICLE_UPDATABLE},
                "updated_at": insert.excluded.updated_at,
            },
        )
        session.execute(statement, [_vehicle_row(v, now) for v in chunk])
        replace_ecus(session, {v.vin: v.ecus for v in chunk})


def replace_ecus(session: Session, inventory: dict[str, list[EcuIn]]) -> None:
    """Make each VIN's stored ECUs exactly ``inventory[vin]``.

    Upserts on (vin, ecu_id) rather than delete-and-insert, so an ECU that stays keeps its row id
    (other tables may refer to it)."""
    for vins in _chunks(list(inventory)):
        keep = [(vin, ecu.ecu_id) for vin in vins for ecu in inventory[vin]]
        stale = delete(_ECU).where(_ECU.c.vin.in_(vins))
        if keep:
            stale = stale.where(not_(tuple_(_ECU.c.vin, _ECU.c.ecu_id).in_(keep)))
        session.execute(stale)
        rows = [_ecu_row(vin, ecu) for vin in vins for ecu in inventory[vin]]
        if rows:
            session.execute(_ecu_upsert(session), rows)


def update_ecu_software(
    session: Session, vin: str, ecu_id: str, software_version: str
) -> Ecu | None:
    ecu = session.exec(select(Ecu).where(Ecu.vin == vin, Ecu.ecu_id == ecu_id)).first()
    if ecu is None:
        return None
    ecu.software_version = software_version
    session.add(ecu)
    session.flush()
    return ecu


def touch_vehicle(session: Session, vin: str, now: datetime) -> None:
    session.execute(_VEHICLE.update().where(_VEHICLE.c.vin == vin).values(updated_at=now))


def _ecu_upsert(session: Session) -> Insert:
    insert = _insert(session, _ECU)
    return insert.on_conflict_do_update(
        index_elements=["vin", "ecu_id"],
        set_={
            "hardware_id": insert.excluded.hardware_id,
            "software_version": insert.excluded.software_version,
        },
    )


def _insert(session: Session, table: Table) -> Any:
    """The dialect's INSERT, which knows ``ON CONFLICT`` (both dialects spell it the same)."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"upserts are implemented for PostgreSQL and SQLite, not {dialect}")


def _has_tag(session: Session, tag: str) -> ColumnElement[bool]:
    if session.get_bind().dialect.name == "postgresql":
        return type_coerce(_VEHICLE.c.tags, JSONB).contains([tag])
    elements = func.json_each(_VEHICLE.c.tags).table_valued("value")
    return exists().select_from(elements).where(elements.c.value == literal(tag))


def _vehicle_row(vehicle: VehicleIn, now: datetime) -> dict[str, Any]:
    row = vehicle.model_dump(exclude={"ecus"})
    row["powertrain"] = vehicle.powertrain.value
    return {**row, "created_at": now, "updated_at": now}


def _ecu_row(vin: str, ecu: EcuIn) -> dict[str, Any]:
    return {"vin": vin, **ecu.model_dump()}


def _chunks(items: Sequence[T] | Iterable[T], size: int = CHUNK_SIZE) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# -- last known position and odometer ---------------------------------------------------------

_VEHICLE_STATUS: Table = VehicleStatus.__table__  # type: ignore[attr-defined]
_POSITION = ("position_ts", "latitude", "longitude")
_ODOMETER = ("odometer_ts", "odometer_m")


def get_vehicle_status(session: Session, vin: str) -> VehicleStatus | None:
    """The vehicle's last known position and odometer, re-read from the database."""
    query = (
        select(VehicleStatus)
        .where(VehicleStatus.vin == vin)
        .execution_options(populate_existing=True)
    )
    return session.exec(query).first()


def upsert_vehicle_status(
    session: Session, updates: Mapping[str, StatusUpdate], now: datetime
) -> None:
    """Store each VIN's update, field group by field group: the stored position (odometer) is
    replaced only by one with a later event time.

    The comparison happens in the statement, against the row as it is when the statement gets
    its lock, so concurrent writers and late, replayed or out-of-order batches can never move
    a vehicle's status backwards. ``updated_at`` changes only when a group does."""
    # Sorted, so that concurrent writers lock rows in the same order (no deadlocks).
    for vins in _chunks(sorted(updates)):
        insert = _insert(session, _VEHICLE_STATUS)
        stored, new = _VEHICLE_STATUS.c, insert.excluded
        position_newer = _is_newer(new.position_ts, stored.position_ts)
        odometer_newer = _is_newer(new.odometer_ts, stored.odometer_ts)
        statement = insert.on_conflict_do_update(
            index_elements=["vin"],
            set_={
                **{name: _newer_of(position_newer, new, name) for name in _POSITION},
                **{name: _newer_of(odometer_newer, new, name) for name in _ODOMETER},
                "updated_at": case(
                    (or_(position_newer, odometer_newer), new.updated_at),
                    else_=stored.updated_at,
                ),
            },
        )
        session.execute(statement, [_status_row(vin, updates[vin], now) for vin in vins])


def _is_newer(candidate: ColumnElement[Any], current: ColumnElement[Any]) -> ColumnElement[bool]:
    return and_(candidate.is_not(None), or_(current.is_(None), candidate > current))


def _newer_of(newer: ColumnElement[bool], excluded: Any, name: str) -> ColumnElement[Any]:
    # In ON CONFLICT DO UPDATE every SET expression sees the row before the update, so the
    # timestamp column and its values are decided by the same comparison.
    return case((newer, excluded[name]), else_=_VEHICLE_STATUS.c[name])


def _status_row(vin: str, update: StatusUpdate, now: datetime) -> dict[str, Any]:
    return {
        "vin": vin,
        "position_ts": update.position_ts,
        "latitude": update.latitude,
        "longitude": update.longitude,
        "odometer_ts": update.odometer_ts,
        "odometer_m": update.odometer_m,
        "updated_at": now,
    }
