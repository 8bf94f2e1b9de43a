"""Principals and API credentials: tokens, verification, the cache, the admin API and the CLI."""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from core.auth import service
from core.auth.cache import CredentialCache
from core.auth.cli import principal_app
from core.auth.models import ApiCredential, AuthenticatedPrincipal, Principal, Role
from core.auth.tokens import parse_token
from core.config import get_settings
from core.db import session_scope, utcnow
from core.errors import Conflict, NotFound, ValidationFailed

PrincipalFactory = Callable[..., tuple[Principal, str]]
NON_ADMIN_ROLES = [role for role in Role if role is not Role.admin]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _credential(session: Session, token: str) -> ApiCredential:
    parsed = parse_token(token)
    assert parsed is not None
    query = select(ApiCredential).where(ApiCredential.key_id == parsed.key_id)
    return session.exec(query.execution_options(populate_existing=True)).one()


# --- issuing and verifying -----------------------------------------------------------------------


def test_issued_token_verifies_as_its_principal(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    name = fresh_name("ops")
    principal, token = service.create_principal_with_credential(
        session, name, Role.fleet_operator, org_ref="acme-fleet"
    )

    verified = service.verify_token(session, token)

    assert verified == AuthenticatedPrincipal(
        principal_id=principal.id,
        name=name,
        role=Role.fleet_operator,
        vin=None,
        org_ref="acme-fleet",
        credential_id=_credential(session, token).id,
    )


def test_token_has_documented_format_and_only_a_hash_is_stored(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    _, token = service.create_principal_with_credential(session, fresh_name("a"), Role.admin)
    parsed = parse_token(token)
    assert token.startswith("flt_") and parsed is not None
    assert len(parsed.secret) >= 43  # 256 bits, URL-safe base64

    stored = _credential(session, token)
    assert stored.key_id == parsed.key_id
    assert stored.secret_hash == hashlib.sha256(parsed.secret.encode()).hexdigest()
    row = session.execute(
        text("SELECT * FROM api_credential WHERE key_id = :k"), {"k": parsed.key_id}
    ).one()
    assert not any(parsed.secret in str(value) for value in row)


def test_every_token_is_different(session: Session, fresh_name: Callable[[str], str]) -> None:
    principal, first = service.create_principal_with_credential(
        session, fresh_name("a"), Role.partner
    )
    _, second = service.issue_credential(session, principal)
    assert first != second
    assert service.verify_token(session, first) is not None
    assert service.verify_token(session, second) is not None


@pytest.mark.parametrize(
    "tamper",
    [
        lambda t: t[:-1] + ("A" if t[-1] != "A" else "B"),  # wrong secret, right key id
        lambda t: t[:-1],
        lambda t: t + "x",
        lambda t: t.upper(),
        lambda t: t.replace("flt_", "xyz_"),
        lambda t: "",
        lambda t: "flt_",
        lambda t: f"flt_{'0' * 16}_{'A' * 43}",  # well-formed, unknown key id
    ],
)
def test_tampered_or_malformed_tokens_are_refused(
    session: Session, fresh_name: Callable[[str], str], tamper: Callable[[str], str]
) -> None:
    _, token = service.create_principal_with_credential(session, fresh_name("a"), Role.insurer)
    assert service.verify_token(session, tamper(token)) is None


def test_revoked_credential_is_refused_and_revoking_again_keeps_the_first_time(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    _, token = service.create_principal_with_credential(session, fresh_name("a"), Role.partner)
    key_id = _credential(session, token).key_id

    first = service.revoke_credential(session, key_id).revoked_at
    again = service.revoke_credential(session, key_id, now=utcnow() + timedelta(hours=1))

    assert service.verify_token(session, token) is None
    assert first is not None and again.revoked_at == first


def test_revoking_an_unknown_key_is_not_found(session: Session) -> None:
    with pytest.raises(NotFound):
        service.revoke_credential(session, "0123456789abcdef")


def test_credential_stops_working_when_it_expires(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    expires_at = utcnow() + timedelta(days=1)
    _, token = service.create_principal_with_credential(
        session, fresh_name("a"), Role.service_center, expires_at=expires_at
    )
    assert service.verify_token(session, token, now=expires_at - timedelta(seconds=1))
    assert service.verify_token(session, token, now=expires_at) is None


def test_expiry_round_trips_as_aware_utc(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    expires_at = utcnow() + timedelta(days=1)
    _, token = service.create_principal_with_credential(
        session, fresh_name("a"), Role.admin, expires_at=expires_at
    )
    session.expire_all()
    stored = _credential(session, token)
    assert stored.expires_at == expires_at
    assert stored.created_at.utcoffset() == timedelta(0)


def test_expiry_in_the_past_is_refused(session: Session, fresh_name: Callable[[str], str]) -> None:
    with pytest.raises(ValidationFailed) as raised:
        service.create_principal_with_credential(
            session, fresh_name("a"), Role.admin, expires_at=utcnow() - timedelta(seconds=1)
        )
    assert raised.value.detail[0]["loc"] == ["expires_at"]


def test_disabled_principal_is_refused_until_enabled(
    session: Session, fresh_name: Callable[[str], str]
) -> None:
    principal, token = service.create_principal_with_credential(
        session, fresh_name("a"), Role.fleet_operator
    )
    service.set_principal_disabled(session, principal.id, True)
    assert service.verify_token(session, token) is None
    service.set_principal_disabled(session, principal.id, False)
    assert service.verify_token(session, token) is not None


def test_last_used_is_recorded_coarsely(session: Session, fresh_name: Callable[[str], str]) -> None:
    _, token = service.create_principal_with_credential(session, fresh_name("a"), Role.admin)
    now = utcnow()
    service.verify_token(session, token, now=now)
    assert _credential(session, token).last_used_at == now

    service.verify_token(session, token, now=now + timedelta(seconds=30))
    assert _credential(session, token).last_used_at == now

    later = now + timedelta(minutes=2)
    service.verify_token(session, token, now=later)
    assert _credential(session, token).last_used_at == later


# --- principal rules -----------------------------------------------------------------------------


def test_vehicle_principal_carries_its_vin(
    session: Session, fresh_name: Callable[[str], str], new_vin: Callable[[], str]
) -> None:
    vin = new_vin()
    _, token = service.create_principal_with_credential(
        session, fresh_name("car"), Role.vehicle, vin=vin
    )
    verified = service.verify_token(session, token)
    assert verified is not None and verified.vin == vin and verified.role is Role.vehicle


@pytest.mark.parametrize(
    ("role", "vin", "field", "message"),
    [
        (Role.vehicle, None, "vin", "vin is required"),
        (Role.admin, "1FTFW1E50NFA00001", "vin", "only allowed for vehicle"),
        (Role.vehicle, "1FTFW1E50NFA0000I", "vin", "except I, O, Q"),
        (Role.vehicle, "SHORT", "vin", "17 characters"),
    ],
)
def test_principal_vin_rules(
    session: Session,
    fresh_name: Callable[[str], str],
    role: Role,
    vin: str | None,
    field: str,
    message: str,
) -> None:
    with pytest.raises(ValidationFailed) as raised:
        service.create_principal_with_credential(session, fresh_name("p"), role, vin=vin)
    errors = raised.value.detail
    assert any(field in e["loc"] or field in e["msg"] for e in errors)
    assert any(message in e["msg"] for e in errors)


def test_unknown_role_is_refused(session: Session, fresh_name: Callable[[str], str]) -> None:
    with pytest.raises(ValidationFailed) as raised:
        service.create_principal_with_credential(session, fresh_name("p"), "superuser")
    assert raised.value.detail[0]["loc"] == ["role"]


def test_names_and_vehicle_vins_are_unique(
    session: Session, fresh_name: Callable[[str], str], new_vin: Callable[[], str]
) -> None:
    name, vin = fresh_name("p"), new_vin()
    service.create_principal_with_credential(session, name, Role.vehicle, vin=vin)
    with pytest.raises(Conflict, match="named"):
        service.create_principal_with_credential(session, name, Role.admin)
    with pytest.raises(Conflict, match=vin):
        service.create_principal_with_credential(session, fresh_name("p"), Role.vehicle, vin=vin)


# --- the verification cache ----------------------------------------------------------------------


def _principal() -> AuthenticatedPrincipal:
    return AuthenticatedPrincipal(uuid.uuid4(), "p", Role.admin, None, None, uuid.uuid4())


def test_cache_serves_entries_for_the_ttl_only() -> None:
    clock = FakeClock()
    cache = CredentialCache(10, clock=clock)
    principal = _principal()
    cache.put("flt_token", principal, expires_at=None)

    clock.now += 9.9
    assert cache.get("flt_token") == principal
    clock.now += 0.1
    assert cache.get("flt_token") is None
    assert len(cache) == 0


def test_cache_never_outlives_the_credential_expiry() -> None:
    cache = CredentialCache(3600, clock=FakeClock())
    expires_at = utcnow() + timedelta(seconds=5)
    cache.put("flt_token", _principal(), expires_at=expires_at)
    assert cache.get("flt_token", now=expires_at - timedelta(seconds=1)) is not None
    assert cache.get("flt_token", now=expires_at) is None


def test_cache_keys_are_token_hashes_not_tokens() -> None:
    cache = CredentialCache(10)
    token = "flt_0123456789abcdef_" + "s" * 43
    cache.put(token, _principal(), expires_at=None)
    assert list(cache._entries) == [hashlib.sha256(token.encode()).hexdigest()]


def test_cache_with_zero_ttl_stores_nothing() -> None:
    cache = CredentialCache(0)
    cache.put("flt_token", _principal(), expires_at=None)
    assert cache.get("flt_token") is None


def test_full_cache_evicts_the_oldest_entry() -> None:
    cache = CredentialCache(10, max_entries=2)
    for token in ("one", "two", "three"):
        cache.put(token, _principal(), expires_at=None)
    assert cache.get("one") is None
    assert cache.get("two") is not None and cache.get("three") is not None


def test_cache_invalidation_by_credential_and_principal() -> None:
    cache = CredentialCache(10)
    first, second = _principal(), _principal()
    cache.put("first", first, expires_at=None)
    cache.put("second", second, expires_at=None)
    cache.invalidate_credential(first.credential_id)
    cache.invalidate_principal(second.principal_id)
    assert cache.get("first") is None and cache.get("second") is None


def test_revocation_elsewhere_takes_effect_within_the_ttl(
    engine: Engine, make_principal: PrincipalFactory
) -> None:
    clock = FakeClock()
    cache = CredentialCache(10, clock=clock)
    _, token = make_principal(Role.vehicle)
    with session_scope(engine) as session:
        assert service.authenticate(session, token, cache) is not None

    with session_scope(engine) as session:  # e.g. the CLI or another API replica
        service.revoke_credential(session, _credential(session, token).key_id)

    with session_scope(engine) as session:
        assert service.authenticate(session, token, cache) is not None  # still cached
        clock.now += 10
        assert service.authenticate(session, token, cache) is None


# --- HTTP API ---------------------------------------------------------------------------------- -


def test_admin_creates_principal_and_the_token_works_once_shown(
    app_client: TestClient, make_principal: PrincipalFactory, fresh_name: Callable[[str], str]
) -> None:
    _, admin_token = make_principal(Role.admin)
    name = fresh_name("insurer")
    response = app_client.post(
        "/v1/principals",
        json={"name": name, "role": "insurer", "org_ref": "acme-insurance"},
        headers=bearer(admin_token),
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert (
        body["principal"]["role"] == "insurer" and body["principal"]["org_ref"] == "acme-insurance"
    )
    token = body["token"]

    me = app_client.get("/v1/me", headers=bearer(token))
    assert me.status_code == 200
    assert me.json()["name"] == name and me.json()["role"] == "insurer"

    listing = app_client.get("/v1/principals?role=insurer&limit=5", headers=bearer(admin_token))
    assert listing.status_code == 200
    assert name in {p["name"] for p in listing.json()}  # newest first
    assert {p["role"] for p in listing.json()} == {"insurer"}
    parsed = parse_token(token)
    assert parsed is not None and parsed.secret not in listing.text
    assert "secret_hash" not in listing.text and "token" not in listing.text


def test_me_works_for_every_role(app_client: TestClient, make_principal: PrincipalFactory) -> None:
    for role in Role:
        principal, token = make_principal(role)
        response = app_client.get("/v1/me", headers=bearer(token))
        assert response.status_code == 200, (role, response.text)
        assert response.json()["role"] == role.value
        assert response.json()["vin"] == principal.vin


def _admin_requests(principal_id: uuid.UUID) -> list[tuple[str, str, dict[str, object] | None]]:
    return [
        ("POST", "/v1/principals", {"name": f"x-{uuid.uuid4().hex}", "role": "partner"}),
        ("GET", "/v1/principals", None),
        ("POST", f"/v1/principals/{principal_id}/credentials", {}),
        ("DELETE", "/v1/credentials/0123456789abcdef", None),
    ]


@pytest.mark.parametrize("role", NON_ADMIN_ROLES)
def test_admin_endpoints_refuse_other_roles(
    app_client: TestClient, make_principal: PrincipalFactory, role: Role
) -> None:
    principal, token = make_principal(role)
    for method, url, body in _admin_requests(principal.id):
        response = app_client.request(method, url, json=body, headers=bearer(token))
        assert response.status_code == 403, (method, url, response.text)
        assert response.json()["error"] == "forbidden"
        assert "admin" in response.json()["detail"] and role.value in response.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ({}, "missing credential"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, "Bearer"),
        ({"Authorization": "Bearer "}, "Bearer"),
        ({"Authorization": "Bearer flt_not_a_token"}, "invalid"),
    ],
)
def test_every_endpoint_needs_a_valid_credential(
    app_client: TestClient, make_principal: PrincipalFactory, headers: dict[str, str], detail: str
) -> None:
    principal, _ = make_principal(Role.admin)
    requests = [*_admin_requests(principal.id), ("GET", "/v1/me", None)]
    for method, url, body in requests:
        response = app_client.request(method, url, json=body, headers=headers)
        assert response.status_code == 401, (method, url, response.text)
        assert response.json()["error"] == "unauthorized"
        assert detail in response.json()["detail"]
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_unauthenticated_request_with_bad_body_gets_401_not_422(app_client: TestClient) -> None:
    response = app_client.post("/v1/principals", json={"role": "nonsense"})
    assert response.status_code == 401


def test_create_principal_validation_names_the_field(
    app_client: TestClient, make_principal: PrincipalFactory, fresh_name: Callable[[str], str]
) -> None:
    _, admin_token = make_principal(Role.admin)
    cases = [
        ({"name": fresh_name("car"), "role": "vehicle", "vin": "1FTFW1E50NFA0000O"}, "vin"),
        ({"name": "", "role": "admin"}, "name"),
        ({"name": fresh_name("x"), "role": "root"}, "role"),
        ({"name": fresh_name("x"), "role": "admin", "expires_at": "2030-01-01T00:00:00"}, ""),
    ]
    for body, field in cases:
        response = app_client.post("/v1/principals", json=body, headers=bearer(admin_token))
        assert response.status_code == 422, (body, response.text)
        errors = response.json()["detail"]
        if field:
            assert any(err["loc"][-1] == field for err in errors), errors
        else:
            assert "expires_at" in errors[0]["msg"]


def test_duplicate_principal_name_is_a_conflict(
    app_client: TestClient, make_principal: PrincipalFactory
) -> None:
    existing, admin_token = make_principal(Role.admin)
    response = app_client.post(
        "/v1/principals", json={"name": existing.name, "role": "admin"}, headers=bearer(admin_token)
    )
    assert response.status_code == 409 and response.json()["error"] == "conflict"


def test_admin_issues_another_credential_and_revokes_the_first(
    app_client: TestClient, make_principal: PrincipalFactory
) -> None:
    _, admin_token = make_principal(Role.admin)
    car, first_token = make_principal(Role.vehicle)
    assert app_client.get("/v1/me", headers=bearer(first_token)).status_code == 200  # now cached

    issued = app_client.post(
        f"/v1/principals/{car.id}/credentials",
        json={"description": "rotation"},
        headers=bearer(admin_token),
    )
    assert issued.status_code == 201, issued.text
    second_token = issued.json()["token"]
    assert issued.json()["credential"]["description"] == "rotation"

    first_key = parse_token(first_token)
    assert first_key is not None
    revoked = app_client.delete(f"/v1/credentials/{first_key.key_id}", headers=bearer(admin_token))
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None

    # Revocation through this process's API does not wait for the cache TTL.
    assert app_client.get("/v1/me", headers=bearer(first_token)).status_code == 401
    assert app_client.get("/v1/me", headers=bearer(second_token)).status_code == 200


def test_credential_endpoints_report_unknown_ids(
    app_client: TestClient, make_principal: PrincipalFactory
) -> None:
    _, admin_token = make_principal(Role.admin)
    headers = bearer(admin_token)
    response = app_client.post(
        f"/v1/principals/{uuid.uuid4()}/credentials", json={}, headers=headers
    )
    assert response.status_code == 404 and response.json()["error"] == "not_found"
    response = app_client.post("/v1/principals/not-a-uuid/credentials", json={}, headers=headers)
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["path", "principal_id"]
    response = app_client.delete("/v1/credentials/0123456789abcdef", headers=headers)
    assert response.status_code == 404 and response.json()["error"] == "not_found"


def test_revocation_elsewhere_is_seen_by_the_api_after_the_ttl(
    app: FastAPI, app_client: TestClient, engine: Engine, make_principal: PrincipalFactory
) -> None:
    clock = FakeClock()
    app.state.credential_cache = CredentialCache(10, clock=clock)
    _, token = make_principal(Role.fleet_operator)
    assert app_client.get("/v1/me", headers=bearer(token)).status_code == 200

    with session_scope(engine) as session:
        service.revoke_credential(session, _credential(session, token).key_id)

    assert app_client.get("/v1/me", headers=bearer(token)).status_code == 200
    clock.now += 10
    assert app_client.get("/v1/me", headers=bearer(token)).status_code == 401


def test_app_creates_its_cache_with_the_configured_ttl(
    app: FastAPI, app_client: TestClient, make_principal: PrincipalFactory
) -> None:
    _, token = make_principal(Role.partner)
    app_client.get("/v1/me", headers=bearer(token))
    cache = app.state.credential_cache
    assert cache.ttl_s == app.state.settings.credential_cache_ttl_s
    assert len(cache) == 1


# --- CLI --------------------------------------------------------------------------------------- -


@pytest.mark.usefixtures("cli_database")
def test_cli_creates_lists_and_revokes(engine: Engine, fresh_name: Callable[[str], str]) -> None:
    runner = CliRunner()
    name = fresh_name("ops")
    created = runner.invoke(principal_app, ["create", "--name", name, "--role", "admin"])
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert "Store this token now" in created.stderr
    with session_scope(engine) as session:
        assert service.verify_token(session, token) is not None

    listed = runner.invoke(
        principal_app, ["list", "--role", "admin", "--limit", "5"], env={"COLUMNS": "250"}
    )
    assert listed.exit_code == 0 and name in listed.stdout

    parsed = parse_token(token)
    assert parsed is not None
    revoked = runner.invoke(principal_app, ["revoke", parsed.key_id])
    assert revoked.exit_code == 0, revoked.output
    with session_scope(engine) as session:
        assert service.verify_token(session, token) is None


@pytest.mark.usefixtures("cli_database")
def test_cli_errors_exit_1_with_a_message(make_principal: PrincipalFactory) -> None:
    runner = CliRunner()
    existing, _ = make_principal(Role.admin)
    cases = [
        ["create", "--name", existing.name, "--role", "admin"],
        ["create", "--name", "car-x", "--role", "vehicle", "--vin", "NOTAVIN"],
        ["revoke", "0123456789abcdef"],
    ]
    for args in cases:
        result = runner.invoke(principal_app, args)
        assert result.exit_code == 1, (args, result.output)
        assert "error:" in result.stderr and "Traceback" not in result.output
        assert result.stdout == ""


@pytest.mark.usefixtures("cli_database")
def test_cli_reports_a_missing_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FLEET_DATABASE_URL", f"sqlite:///{tmp_path}/empty.db")
    get_settings.cache_clear()
    result = CliRunner().invoke(principal_app, ["list"])
    assert result.exit_code == 1
    assert "fleet db upgrade" in result.stderr and "Traceback" not in result.output


def test_principal_rows_are_real(engine: Engine, make_principal: PrincipalFactory) -> None:
    principal, _ = make_principal(Role.service_center, org_ref="sc-berlin-1")
    with Session(engine) as session:
        stored = session.get(Principal, principal.id)
    assert (
        stored is not None and stored.org_ref == "sc-berlin-1" and stored.role == "service_center"
    )
