"""Who may act for a vehicle on the privacy side (consents, erasure, trip disputes).

Admins and fleet operators act for any registered vehicle; an ``owner`` principal only for the
vehicles linked to it in ``vehicle_owner``. Everyone else (insurers, partners, service centers,
vehicles themselves) is refused. An owner asking about a vehicle that is not theirs gets 403
before the registry is consulted, so the answer does not tell them whether the VIN exists.
Nothing here commits.
"""

from __future__ import annotations

from collections.abc import Set

from sqlmodel import Session, select

from core import audit
from core.auth.models import AuthenticatedPrincipal, Principal, Role
from core.auth.repository import get_principal_by_name
from core.errors import Forbidden, NotFound, ValidationFailed
from core.vehicles import repository as vehicles
from ubi.models import VehicleOwner

OPERATOR_ROLES: frozenset[Role] = frozenset({Role.admin, Role.fleet_operator})


def authorize_vehicle(
    session: Session,
    principal: AuthenticatedPrincipal,
    vin: str,
    *,
    operator_roles: Set[Role] = OPERATOR_ROLES,
) -> None:
    """Refuse (403) unless ``principal`` may act for ``vin``; 404 for a VIN not registered.

    ``operator_roles`` are the roles allowed for every vehicle (erasure narrows it to admin).
    """
    if principal.role in operator_roles:
        pass
    elif principal.role is Role.owner:
        if not is_owner(session, principal, vin):
            raise Forbidden(f"{principal.name} is not an owner of vehicle {vin}")
    else:
        allowed = " or ".join(sorted([*(r.value for r in operator_roles), Role.owner.value]))
        raise Forbidden(f"requires role {allowed}; this credential has role {principal.role}")
    if vehicles.get_vehicle(session, vin) is None:
        raise NotFound(f"no vehicle with VIN {vin}")


def is_owner(session: Session, principal: AuthenticatedPrincipal, vin: str) -> bool:
    link = session.get(VehicleOwner, (vin, principal.principal_id))
    return link is not None


def link_owner(
    session: Session, vin: str, principal_name: str, *, actor: str = "system"
) -> VehicleOwner:
    """Make the ``owner`` principal ``principal_name`` an owner of ``vin`` (idempotent).

    404 for an unregistered VIN; 422 when the principal does not exist, is disabled or does
    not have role owner. The link is audited (``vehicle.owner_linked``)."""
    if vehicles.get_vehicle(session, vin) is None:
        raise NotFound(f"no vehicle with VIN {vin}")
    principal = _owner_principal(session, principal_name)
    existing = session.get(VehicleOwner, (vin, principal.id))
    if existing is not None:
        return existing
    link = VehicleOwner(vin=vin, principal_id=principal.id)
    session.add(link)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action="vehicle.owner_linked",
        subject=f"vehicle:{vin}",
        details={"principal": principal.name, "principal_id": str(principal.id)},
    )
    return link


def owners_of(session: Session, vin: str) -> list[Principal]:
    query = (
        select(Principal)
        .join(VehicleOwner, VehicleOwner.principal_id == Principal.id)  # type: ignore[arg-type]
        .where(VehicleOwner.vin == vin)
        .order_by(Principal.name)
    )
    return list(session.exec(query))


def _owner_principal(session: Session, name: str) -> Principal:
    principal = get_principal_by_name(session, name)
    problem = None
    if principal is None:
        problem = f"no principal named {name!r}"
    elif principal.role != Role.owner:
        problem = f"principal {name!r} has role {principal.role}, not owner"
    elif principal.disabled:
        problem = f"principal {name!r} is disabled"
    if problem is not None or principal is None:
        raise ValidationFailed(
            [{"loc": ["body", "principal"], "msg": problem, "type": "value_error"}]
        )
    return principal
