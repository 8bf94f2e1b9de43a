"""The vehicle registry: validation, upserts, ECU inventory, list filters, routes and CLI."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from core.auth.models import Principal, Role
from core.db import session_scope
from core.errors import NotFound
from core.vehicles import service
from core.vehicles.cli import vehicle_app
from core.vehicles.models import Ecu, EcuIn, VehicleFilter, VehicleIn

PrincipalFactory = Callable[..., tuple[Principal, str]]
FLEET_ROLES = [Role.admin, Role.fleet_operator]
OTHER_ROLES = [Role.service_center, Role.insurer, Role.partner, Role.vehicle]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def vehicle_body(vin: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "vin": vin,
        "model": "Volta E",
        "model_year": 2024,
        "region": "EU",
        "time_zone": "Europe/Berlin",
        "powertrain": "bev",
        "tags": ["pilot"],
        "ecus": [
            {"ecu_id": "BMS", "hardware_id": "BMS-HW-3", "software_version": "4.2.0"},
            {"ecu_id": "VCU", "hardware_id": "VCU-HW-1", "software_version": "1.0.7"},
        ],
    }
    return {**body, **overrides}


@pytest.fixture
def register(engine: Engine) -> Callable[..., str]:
    """Register (and commit) a vehicle through the service; returns its VIN."""

    def _register(vin: str, **overrides: Any) -> str:
        with session_scope(engine) as session:
            service.register_vehicle(
                session, VehicleIn.model_validate(vehicle_body(vin, **overrides))
            )
        return vin

    return _register


@pytest.fixture
def operator_token(make_principal: PrincipalFactory) -> str:
    return make_principal(Role.fleet_operator)[1]


# --- registering and updating --------------------------------------------------------------------


def test_register_creates_then_updates_by_vin(
    app_client: TestClient, operator_token: str, new_vin: Callable[[], str]
) -> None:
    vin = new_vin()
    created = app_client.post(
        "/v1/vehicles", json=vehicle_body(vin), headers=bearer(operator_token)
    )
    assert created.status_code == 201, created.text
    assert created.json()["vin"] == vin
    assert {e["ecu_id"] for e in created.json()["ecus"]} == {"BMS", "VCU"}

    changed = vehicle_body(
        vin,
        region="NA",
        time_zone="America/Detroit",
        tags=["fleet-b"],
        ecus=[{"ecu_id": "BMS", "hardware_id": "BMS-HW-3", "software_version": "4.3.0"}],
    )
    updated = app_client.post("/v1/vehicles", json=changed, headers=bearer(operator_token))
    assert updated.status_code == 200, updated.text
    body = updated.json()
    assert (body["region"], body["time_zone"], body["tags"]) == (
        "NA",
        "America/Detroit",
        ["fleet-b"],
    )
    assert body["ecus"] == [
        {"ecu_id": "BMS", "hardware_id": "BMS-HW-3", "software_version": "4.3.0"}
    ]
    assert body["created_at"] == created.json()["created_at"]
    assert datetime.fromisoformat(body["updated_at"]) >= datetime.fromisoformat(
        created.json()["updated_at"]
    )


def test_registering_the_same_vehicle_twice_changes_nothing_but_updated_at(
    session: Session, new_vin: Callable[[], str]
) -> None:
    data = VehicleIn.model_validate(vehicle_body(new_vin()))
    first, created = service.register_vehicle(session, data)
    ecu_ids_before = _ecu_row_ids(session, data.vin)
    second, created_again = service.register_vehicle(session, data)

    assert (created, created_again) == (True, False)
    assert second.model_dump(exclude={"updated_at"}) == first.model_dump(exclude={"updated_at"})
    assert _ecu_row_ids(session, data.vin) == ecu_ids_before  # ECU rows kept, not re-inserted


def _ecu_row_ids(session: Session, vin: str) -> dict[str, int | None]:
    ecus = session.exec(select(Ecu).where(Ecu.vin == vin))
    return {ecu.ecu_id: ecu.id for ecu in ecus}


def test_timestamps_come_back_timezone_aware(session: Session, new_vin: Callable[[], str]) -> None:
    vehicle, _ = service.register_vehicle(
        session, VehicleIn.model_validate(vehicle_body(new_vin()))
    )
    session.expire_all()
    stored = service.get_vehicle(session, vehicle.vin)
    assert stored.created_at.utcoffset() is not None
    assert stored.created_at == vehicle.created_at


def test_bulk_register_counts_created_and_updated(
    session: Session, new_vin: Callable[[], str], fresh_name: Callable[[str], str]
) -> None:
    model = fresh_name("bulk")[:64]
    vins = sorted({new_vin() for _ in range(60)})
    fleet = [VehicleIn.model_validate(vehicle_body(v, model=model)) for v in vins]

    assert service.bulk_register_vehicles(session, fleet).model_dump() == {
        "created": len(vins),
        "updated": 0,
    }

    one_ecu = [EcuIn(ecu_id="TCU", hardware_id="TCU-2", software_version="9.9.9")]
    changed = [v.model_copy(update={"ecus": one_ecu}) for v in fleet]
    result = service.bulk_register_vehicles(session, [*changed, changed[0]])  # a repeated VIN
    assert result.model_dump() == {"created": 0, "updated": len(vins)}

    listed = service.list_vehicles(session, VehicleFilter(model=model), limit=1000)
    assert [v.vin for v in listed] == vins
    assert all([e.ecu_id for e in v.ecus] == ["TCU"] for v in listed)


def test_put_ecus_replaces_the_inventory(
    app_client: TestClient,
    operator_token: str,
    register: Callable[..., str],
    new_vin: Callable[[], str],
) -> None:
    vin = register(new_vin())
    inventory = {
        "ecus": [
            {"ecu_id": "VCU", "hardware_id": "VCU-HW-2", "software_version": "2.0.0"},
            {"ecu_id": "ADAS", "hardware_id": "ADAS-1", "software_version": "0.9.1"},
        ]
    }
    response = app_client.put(
        f"/v1/vehicles/{vin}/ecus", json=inventory, headers=bearer(operator_token)
    )
    assert response.status_code == 200, response.text
    assert response.json()["ecus"] == sorted(inventory["ecus"], key=lambda e: e["ecu_id"])

    emptied = app_client.put(
        f"/v1/vehicles/{vin}/ecus", json={"ecus": []}, headers=bearer(operator_token)
    )
    assert emptied.status_code == 200 and emptied.json()["ecus"] == []


def test_put_ecus_on_an_unknown_vehicle_is_not_found(
    app_client: TestClient, operator_token: str, new_vin: Callable[[], str]
) -> None:
    response = app_client.put(
        f"/v1/vehicles/{new_vin()}/ecus", json={"ecus": []}, headers=bearer(operator_token)
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_update_one_ecu_software_version(
    engine: Engine, register: Callable[..., str], new_vin: Callable[[], str]
) -> None:
    vin = register(new_vin())
    with session_scope(engine) as session:
        updated = service.update_ecu_software(session, vin, "BMS", "5.0.0")
    assert updated.software_version == "5.0.0"
    with session_scope(engine) as session:
        versions = {e.ecu_id: e.software_version for e in service.get_vehicle(session, vin).ecus}
        assert versions == {"BMS": "5.0.0", "VCU": "1.0.7"}
        with pytest.raises(NotFound, match="ECU 'GATEWAY'"):
            service.update_ecu_software(session, vin, "GATEWAY", "1.0")


# --- validation ----------------------------------------------------------------------------------

NEXT_ALLOWED_YEAR = date.today().year + 2


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"vin": "1FTFW1E50NFA0000I"}, "vin", "except I, O, Q"),
        ({"vin": "1FTFW1E50"}, "vin", "17 characters"),
        ({"model_year": 1979}, "model_year", "between 1980"),
        ({"model_year": NEXT_ALLOWED_YEAR + 1}, "model_year", str(NEXT_ALLOWED_YEAR)),
        ({"time_zone": "Mars/Olympus_Mons"}, "time_zone", "IANA"),
        ({"time_zone": "localtime"}, "time_zone", "IANA"),
        ({"region": ""}, "region", "short code"),
        ({"region": "a-region-code-that-is-too-long"}, "region", "short code"),
        ({"powertrain": "steam"}, "powertrain", "bev"),
        ({"model": ""}, "model", "at least 1"),
        ({"tags": [""]}, "tags", ""),
        (
            {"ecus": [{"ecu_id": "BMS", "hardware_id": "a", "software_version": "1"}] * 2},
            "ecus",
            "repeated: BMS",
        ),
        ({"ecus": [{"ecu_id": "BMS"}]}, "hardware_id", "Field required"),
    ],
)
def test_invalid_vehicle_fields_are_named_in_a_422(
    app_client: TestClient,
    operator_token: str,
    new_vin: Callable[[], str],
    overrides: dict[str, Any],
    field: str,
    message: str,
) -> None:
    body = {**vehicle_body(new_vin()), **overrides}
    response = app_client.post("/v1/vehicles", json=body, headers=bearer(operator_token))
    assert response.status_code == 422, response.text
    assert response.json()["error"] == "validation_failed"
    errors = response.json()["detail"]
    assert any(field in err["loc"] and message in err["msg"] for err in errors), errors


def test_missing_field_is_named(
    app_client: TestClient, operator_token: str, new_vin: Callable[[], str]
) -> None:
    body = vehicle_body(new_vin())
    del body["time_zone"]
    response = app_client.post("/v1/vehicles", json=body, headers=bearer(operator_token))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "time_zone"]


@pytest.mark.parametrize(
    "url", ["/v1/vehicles/{vin}", "/v1/vehicles/{vin}/ecus"], ids=["get", "put-ecus"]
)
def test_bad_vin_in_the_path_is_a_422_naming_it(
    app_client: TestClient, operator_token: str, url: str
) -> None:
    method = "PUT" if url.endswith("ecus") else "GET"
    response = app_client.request(
        method,
        url.format(vin="1FTFW1E50NFA0000Q"),
        json={"ecus": []},
        headers=bearer(operator_token),
    )
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert detail[0]["loc"] == ["path", "vin"] and "except I, O, Q" in detail[0]["msg"]


# --- reading and listing -------------------------------------------------------------------------


def test_unknown_vin_is_not_found(
    app_client: TestClient, operator_token: str, new_vin: Callable[[], str]
) -> None:
    response = app_client.get(f"/v1/vehicles/{new_vin()}", headers=bearer(operator_token))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_list_filters_and_pagination(
    app_client: TestClient,
    operator_token: str,
    register: Callable[..., str],
    new_vin: Callable[[], str],
    fresh_name: Callable[[str], str],
) -> None:
    model, tag = fresh_name("model"), fresh_name("tag")
    region = "R" + uuid.uuid4().hex[:8]
    a = register(new_vin(), model=model, model_year=2021, region=region, tags=[tag, "x"])
    b = register(new_vin(), model=model, model_year=2024, region=region, tags=["x"])
    c = register(new_vin(), model=model, model_year=2024, region="EU", tags=[tag])

    def vins(**params: Any) -> list[str]:
        response = app_client.get("/v1/vehicles", params=params, headers=bearer(operator_token))
        assert response.status_code == 200, response.text
        return [v["vin"] for v in response.json()]

    assert vins(model=model) == sorted([a, b, c])
    assert vins(model=model, model_year=2024) == sorted([b, c])
    assert vins(region=region) == sorted([a, b])
    assert vins(tag=tag) == sorted([a, c])
    assert vins(tag=tag, region=region) == [a]
    assert vins(model=model, limit=2) == sorted([a, b, c])[:2]
    assert vins(model=model, limit=2, offset=2) == sorted([a, b, c])[2:]
    assert vins(model=model, tag=fresh_name("none")) == []


def test_list_rejects_bad_pagination(app_client: TestClient, operator_token: str) -> None:
    response = app_client.get("/v1/vehicles?limit=0", headers=bearer(operator_token))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["query", "limit"]


# --- authorization -------------------------------------------------------------------------------


def _operator_requests(vin: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    return [
        ("POST", "/v1/vehicles", vehicle_body(vin)),
        ("GET", "/v1/vehicles", None),
        ("PUT", f"/v1/vehicles/{vin}/ecus", {"ecus": []}),
    ]


@pytest.mark.parametrize("role", FLEET_ROLES)
def test_fleet_roles_may_use_every_vehicle_endpoint(
    app_client: TestClient, make_principal: PrincipalFactory, new_vin: Callable[[], str], role: Role
) -> None:
    _, token = make_principal(role)
    vin = new_vin()
    for method, url, body in [*_operator_requests(vin), ("GET", f"/v1/vehicles/{vin}", None)]:
        response = app_client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code in (200, 201), (method, url, response.text)


@pytest.mark.parametrize("role", OTHER_ROLES)
def test_other_roles_may_not_register_list_or_change_vehicles(
    app_client: TestClient,
    make_principal: PrincipalFactory,
    register: Callable[..., str],
    new_vin: Callable[[], str],
    role: Role,
) -> None:
    principal, token = make_principal(role)
    vin = register(principal.vin or new_vin())  # a vehicle may not change even itself
    for method, url, body in _operator_requests(vin):
        response = app_client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == 403, (method, url, response.text)
        assert "admin or fleet_operator" in response.json()["detail"]


@pytest.mark.parametrize("role", [Role.service_center, Role.insurer, Role.partner])
def test_non_fleet_roles_may_not_read_a_vehicle(
    app_client: TestClient,
    make_principal: PrincipalFactory,
    register: Callable[..., str],
    new_vin: Callable[[], str],
    role: Role,
) -> None:
    _, token = make_principal(role)
    response = app_client.get(f"/v1/vehicles/{register(new_vin())}", headers=bearer(token))
    assert response.status_code == 403 and response.json()["error"] == "forbidden"


def test_a_vehicle_reads_only_itself(
    app_client: TestClient,
    make_principal: PrincipalFactory,
    register: Callable[..., str],
    new_vin: Callable[[], str],
) -> None:
    car, token = make_principal(Role.vehicle)
    assert car.vin is not None
    register(car.vin)
    other = register(new_vin())

    own = app_client.get(f"/v1/vehicles/{car.vin}", headers=bearer(token))
    assert own.status_code == 200 and own.json()["vin"] == car.vin
    foreign = app_client.get(f"/v1/vehicles/{other}", headers=bearer(token))
    assert foreign.status_code == 403 and "own record" in foreign.json()["detail"]
    # No existence oracle: an unregistered foreign VIN is refused the same way.
    unknown = app_client.get(f"/v1/vehicles/{new_vin()}", headers=bearer(token))
    assert unknown.status_code == 403


def test_vehicle_endpoints_need_a_credential(
    app_client: TestClient, new_vin: Callable[[], str]
) -> None:
    vin = new_vin()
    for method, url, body in [*_operator_requests(vin), ("GET", f"/v1/vehicles/{vin}", None)]:
        response = app_client.request(method, url, json=body)
        assert response.status_code == 401, (method, url)
        assert response.json()["error"] == "unauthorized"


# --- CLI --------------------------------------------------------------------------------------- -


@pytest.mark.usefixtures("cli_database")
def test_cli_adds_lists_and_shows(
    new_vin: Callable[[], str], fresh_name: Callable[[str], str]
) -> None:
    runner = CliRunner()
    vin, model = new_vin(), fresh_name("cli")[:20]
    args = [
        "add", vin, "--model", model, "--model-year", "2023", "--region", "EU",
        "--time-zone", "Europe/Paris", "--powertrain", "phev", "--tag", "demo",
        "--ecu", "BMS:BMS-1:1.2.3",
    ]  # fmt: skip
    added = runner.invoke(vehicle_app, args)
    assert added.exit_code == 0, added.output
    assert "Registered" in added.stderr
    assert "Updated" in runner.invoke(vehicle_app, args).stderr

    listed = runner.invoke(vehicle_app, ["list", "--model", model], env={"COLUMNS": "200"})
    assert listed.exit_code == 0 and vin in listed.stdout

    shown = runner.invoke(vehicle_app, ["show", vin])
    assert shown.exit_code == 0 and '"software_version": "1.2.3"' in shown.stdout


@pytest.mark.usefixtures("cli_database")
def test_cli_errors_exit_1_with_the_field(new_vin: Callable[[], str]) -> None:
    runner = CliRunner()
    base = ["--model", "M", "--model-year", "2023", "--region", "EU", "--powertrain", "bev"]
    cases = [
        (["add", new_vin(), *base, "--time-zone", "Nowhere/City"], "time_zone"),
        (["add", "BADVIN", *base, "--time-zone", "UTC"], "vin"),
        (["add", new_vin(), *base, "--time-zone", "UTC", "--ecu", "BMS"], "--ecu"),
        (["show", "BADVIN"], "vin"),
        (["show", new_vin()], "no vehicle"),
    ]
    for args, expected in cases:
        result = runner.invoke(vehicle_app, args)
        assert result.exit_code == 1, (args, result.output)
        assert expected in result.stderr and "Traceback" not in result.output


def test_list_orders_by_vin(
    session: Session, new_vin: Callable[[], str], fresh_name: Callable[[str], str]
) -> None:
    model = fresh_name("order")
    vins = [new_vin() for _ in range(5)]
    service.bulk_register_vehicles(
        session, [VehicleIn.model_validate(vehicle_body(v, model=model)) for v in vins]
    )
    stored = session.exec(select(Ecu.vin).where(col(Ecu.vin).in_(vins))).all()
    assert len(stored) == 10
    assert [v.vin for v in service.list_vehicles(session, VehicleFilter(model=model))] == sorted(
        vins
    )
