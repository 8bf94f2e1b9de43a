"""Consents, owners, pseudonyms and the signed partner API, through the HTTP API against the
test database: who may grant and revoke, what each insurer or partner sees (only its own
consented subjects, under its own pseudonyms), that revocation, expiry and key rotation apply to
the next request, that signatures verify offline, and that every partner read is audited."""

from __future__ import annotations

import os
import stat
import threading
import uuid
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient
from sqlmodel import col, select
from typer.testing import CliRunner

from core.audit import AuditEvent
from core.config import Settings, get_settings
from core.db import utcnow
from tests.diagnostics.test_worker import admin_token
from tests.helpers import new_vin, register_test_vehicle
from tests.ingestion import conftest as api_fixtures
from tests.ingestion.conftest import new_vehicle_token
from tests.ubi.partner_data import (
    Caller,
    db,
    grant,
    in_days,
    insert_battery,
    insert_ubi_score,
    link_owner,
    new_caller,
)
from ubi import pseudonyms, signing
from ubi.consent_cli import consent_app
from ubi.models import Consent, Pseudonym

pytestmark = pytest.mark.kafka
# The API against the test database and broker (also what tests/ubi/conftest.py provides).
client, settings, db_url = api_fixtures.client, api_fixtures.settings, api_fixtures.db_url

UBI_LIST = "/v1/partner/ubi/scores"
BATTERY_LIST = "/v1/partner/battery/scores"


@pytest.fixture
def admin(settings: Settings) -> Caller:
    token = admin_token(settings)
    return Caller("admin", uuid.uuid4(), {"Authorization": f"Bearer {token}"})


def owned_vehicle(settings: Settings, client: TestClient, admin: Caller) -> tuple[str, Caller]:
    vin = new_vin()
    register_test_vehicle(settings, vin, powertrain="bev")
    owner = new_caller(settings, "owner")
    link_owner(client, admin, vin, owner)
    return vin, owner


def subjects(client: TestClient, caller: Caller, path: str = UBI_LIST) -> list[str]:
    response = client.get(path, headers=caller.headers, params={"limit": 1000})
    assert response.status_code == 200, response.text
    return [item["subject"] for item in response.json()["items"]]


# --- consents ----------------------------------------------------------------------------------


def test_owner_grants_lists_revokes_and_grants_again(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insurer = new_caller(settings, "insurer")

    first = grant(client, owner, vin, insurer, expires_at=in_days(30))
    assert first["grantee"] == insurer.name and first["purpose"] == "ubi"
    assert first["active"] and first["revoked_at"] is None and first["granted_by"] == owner.name

    # Granting again while active moves the expiry of the same consent.
    later = in_days(60)
    again = grant(client, owner, vin, insurer, expires_at=later)
    assert again["id"] == first["id"] and again["expires_at"] > first["expires_at"]
    battery = grant(client, owner, vin, insurer, purpose="battery")
    assert battery["id"] != first["id"]

    listed = client.get(f"/v1/vehicles/{vin}/consents", headers=owner.headers)
    assert listed.status_code == 200
    assert sorted(c["purpose"] for c in listed.json()) == ["battery", "ubi"]

    url = f"/v1/vehicles/{vin}/consents/{first['id']}"
    revoked = client.delete(url, headers=owner.headers)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None and revoked.json()["active"] is False
    assert revoked.json()["revoked_by"] == owner.name
    twice = client.delete(url, headers=owner.headers)
    assert twice.status_code == 200 and twice.json()["revoked_at"] == revoked.json()["revoked_at"]
    unknown = client.delete(f"/v1/vehicles/{vin}/consents/{uuid.uuid4()}", headers=owner.headers)
    assert unknown.status_code == 404

    renewed = grant(client, owner, vin, insurer)
    assert renewed["id"] != first["id"] and renewed["active"]
    states = {
        c["id"]: c["active"]
        for c in client.get(f"/v1/vehicles/{vin}/consents", headers=owner.headers).json()
    }
    assert states == {first["id"]: False, battery["id"]: True, renewed["id"]: True}

    with db(settings) as session:
        events = session.exec(
            select(AuditEvent).where(AuditEvent.subject == f"vehicle:{vin}")
        ).all()
    actions = [e.action for e in events]
    assert actions.count("consent.granted") == 4  # first, extension, battery, renewed
    assert actions.count("consent.revoked") == 1  # the second revocation changed nothing
    revoke_event = next(e for e in events if e.action == "consent.revoked")
    assert revoke_event.actor == owner.name
    assert revoke_event.details["consent_id"] == first["id"]


def test_grant_is_validated(settings: Settings, client: TestClient, admin: Caller) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insurer = new_caller(settings, "insurer")
    operator = new_caller(settings, "fleet_operator")
    url = f"/v1/vehicles/{vin}/consents"

    def refused(body: dict[str, str]) -> str:
        response = client.post(url, json=body, headers=owner.headers)
        assert response.status_code == 422, response.text
        return str(response.json()["detail"])

    good = {"grantee": insurer.name, "purpose": "ubi", "expires_at": in_days(10)}
    assert "no principal named" in refused(good | {"grantee": f"nobody-{uuid.uuid4()}"})
    assert "consent can only be given to an insurer or a partner" in refused(
        good | {"grantee": operator.name}
    )
    assert "in the future" in refused(good | {"expires_at": in_days(-1)})
    assert "5 years" in refused(good | {"expires_at": in_days(5 * 366 + 2)})
    assert "time zone" in refused(good | {"expires_at": "2031-01-01T00:00:00"})
    refused(good | {"purpose": "location"})

    with db(settings) as session:
        assert not session.exec(select(Consent).where(Consent.vin == vin)).all()

    missing = client.post(f"/v1/vehicles/{new_vin()}/consents", json=good, headers=admin.headers)
    assert missing.status_code == 404
    not_owner = client.post(
        f"/v1/vehicles/{vin}/owners", json={"principal": insurer.name}, headers=admin.headers
    )
    assert not_owner.status_code == 422 and "not owner" in str(not_owner.json()["detail"])


def test_who_may_manage_consents(settings: Settings, client: TestClient, admin: Caller) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    other_vin, other_owner = owned_vehicle(settings, client, admin)
    insurer = new_caller(settings, "insurer")
    operator = new_caller(settings, "fleet_operator")
    mine = grant(client, owner, vin, insurer)
    body = {"grantee": insurer.name, "purpose": "ubi", "expires_at": in_days(10)}
    url = f"/v1/vehicles/{vin}/consents"

    # Another vehicle's owner: 403 for every consent route of this one.
    assert client.post(url, json=body, headers=other_owner.headers).status_code == 403
    assert client.get(url, headers=other_owner.headers).status_code == 403
    assert client.delete(f"{url}/{mine['id']}", headers=other_owner.headers).status_code == 403
    # ...also for a VIN that does not exist (no probing the registry).
    unknown = f"/v1/vehicles/{new_vin()}/consents"
    assert client.get(unknown, headers=other_owner.headers).status_code == 403
    # A consent id of another vehicle is not found under this one.
    other_consent = grant(client, other_owner, other_vin, insurer)
    assert client.delete(f"{url}/{other_consent['id']}", headers=owner.headers).status_code == 404

    # Grantees and vehicles cannot grant; a vehicle not even for itself.
    assert client.post(url, json=body, headers=insurer.headers).status_code == 403
    _, vehicle_token = new_vehicle_token(settings, vin)
    vehicle = {"Authorization": f"Bearer {vehicle_token}"}
    assert client.post(url, json=body, headers=vehicle).status_code == 403
    assert client.get(url, headers=vehicle).status_code == 403
    assert client.get(url).status_code == 401

    # Operators act for any vehicle; owners cannot link owners; only insurers and partners
    # read the partner API.
    assert client.get(url, headers=operator.headers).status_code == 200
    by_operator = client.post(url, json=body | {"purpose": "battery"}, headers=operator.headers)
    assert by_operator.status_code == 201
    link = client.post(
        f"/v1/vehicles/{vin}/owners", json={"principal": other_owner.name}, headers=owner.headers
    )
    assert link.status_code == 403
    for path in (UBI_LIST, BATTERY_LIST):
        assert client.get(path, headers=owner.headers).status_code == 403
        assert client.get(path, headers=operator.headers).status_code == 403
        assert client.get(path).status_code == 401


# --- the partner API ---------------------------------------------------------------------------


def test_partners_see_only_their_own_consented_subjects(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    insurer, other_insurer = new_caller(settings, "insurer"), new_caller(settings, "insurer")
    partner = new_caller(settings, "partner")
    consented, _ = owned_vehicle(settings, client, admin)
    not_consented, _ = owned_vehicle(settings, client, admin)
    others, _ = owned_vehicle(settings, client, admin)
    battery_only, _ = owned_vehicle(settings, client, admin)
    for vin in (consented, not_consented, others, battery_only):
        insert_ubi_score(settings, vin)
        insert_battery(settings, vin)
    grant(client, admin, consented, insurer)
    grant(client, admin, others, other_insurer)
    grant(client, admin, battery_only, insurer, purpose="battery")
    grant(client, admin, battery_only, partner, purpose="battery")

    page = client.get(UBI_LIST, headers=insurer.headers)
    assert page.status_code == 200, page.text
    body = page.json()
    assert body["total"] == 1 and body["purpose"] == "ubi"
    [item] = body["items"]
    assert item["subject"].startswith("p_") and len(item["subject"]) == 28
    assert item["purpose"] == "ubi" and item["consent_expires_at"]
    assert 0 <= item["score_low"] <= item["score"] <= item["score_high"] <= 100
    assert item["exposure"]["trips"] == 7 and item["disputed_trips"] == 1
    assert item["event_counts"] == {
        "harsh_braking": 3,
        "harsh_acceleration": 0,
        "harsh_cornering": 1,
    }
    assert {r["code"] for r in item["reasons"]} >= {"SPEEDING", "HARSH_CORNERING"}
    for vin in (consented, not_consented, others, battery_only):
        assert vin not in page.text

    single = client.get(f"{UBI_LIST}/{item['subject']}", headers=insurer.headers)
    assert single.status_code == 200 and single.json() == item

    [other_subject] = subjects(client, other_insurer)
    assert other_subject != item["subject"]
    assert subjects(client, partner) == []
    # Another grantee's pseudonym, an unknown one and garbage: the same 404.
    answers = {
        client.get(f"{UBI_LIST}/{p}", headers=insurer.headers).content
        for p in (other_subject, "p_" + "a" * 26, "WVWZZZ1JZ3W386752")
    }
    assert len(answers) == 1 and b'"not_found"' in answers.pop()

    battery = client.get(BATTERY_LIST, headers=insurer.headers).json()
    assert battery["total"] == 1
    [battery_item] = battery["items"]
    assert battery_item["purpose"] == "battery"
    assert battery_item["soh_pct"] == 91.4 and battery_item["residual"]["second_life_grade"]
    assert battery_item["residual"]["deep_discharge_events"] == 2
    assert "warranty_km_left" not in battery_item["residual"]  # it is the odometer in disguise
    # A battery consent is not a UBI consent, and vice versa.
    assert (
        client.get(f"{UBI_LIST}/{battery_item['subject']}", headers=insurer.headers).status_code
        == 404
    )
    assert (
        client.get(f"{BATTERY_LIST}/{item['subject']}", headers=insurer.headers).status_code == 404
    )
    [partner_subject] = subjects(client, partner, BATTERY_LIST)
    assert partner_subject != battery_item["subject"]
    assert (
        client.get(f"{BATTERY_LIST}/{partner_subject}", headers=partner.headers).status_code == 200
    )

    # Pagination over the consented subjects only, in pseudonym order.
    more = [owned_vehicle(settings, client, admin)[0] for _ in range(3)]
    for vin in more:
        insert_ubi_score(settings, vin)
        grant(client, admin, vin, partner)
    pages = [
        client.get(UBI_LIST, headers=partner.headers, params={"limit": 2, "offset": offset}).json()
        for offset in (0, 2)
    ]
    assert [p["total"] for p in pages] == [3, 3]
    listed = [i["subject"] for p in pages for i in p["items"]]
    assert len(listed) == 3 and listed == sorted(listed)


def test_revocation_and_expiry_apply_to_the_next_request(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insurer = new_caller(settings, "insurer")
    insert_ubi_score(settings, vin)
    consent = grant(client, owner, vin, insurer)
    [subject] = subjects(client, insurer)
    item = f"{UBI_LIST}/{subject}"
    assert client.get(item, headers=insurer.headers).status_code == 200

    revoked = client.delete(f"/v1/vehicles/{vin}/consents/{consent['id']}", headers=owner.headers)
    assert revoked.status_code == 200
    assert subjects(client, insurer) == []
    assert client.get(item, headers=insurer.headers).status_code == 404

    # Consent again: visible again (same pseudonym: the key did not change)...
    renewed = grant(client, owner, vin, insurer)
    assert subjects(client, insurer) == [subject]
    # ...until it expires.
    with db(settings) as session:
        row = session.get(Consent, uuid.UUID(renewed["id"]))
        assert row is not None
        row.expires_at = utcnow() - timedelta(seconds=1)
        session.add(row)
    assert subjects(client, insurer) == []
    assert client.get(item, headers=insurer.headers).status_code == 404
    listed = client.get(f"/v1/vehicles/{vin}/consents", headers=owner.headers).json()
    assert [c["active"] for c in listed] == [False, False]


def test_pseudonyms_are_stable_per_grantee_and_unlinkable_across(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insert_ubi_score(settings, vin)
    first, second = new_caller(settings, "insurer"), new_caller(settings, "insurer")
    grant(client, owner, vin, first)
    grant(client, owner, vin, second)
    seen = [subjects(client, first) for _ in range(2)]
    assert seen[0] == seen[1] and len(seen[0]) == 1
    assert subjects(client, second) != seen[0]

    with db(settings) as session:
        direct = pseudonyms.pseudonym_for(session, first.principal_id, vin)
        assert direct == pseudonyms.pseudonym_for(session, first.principal_id, vin)
        assert pseudonyms.resolve(session, first.principal_id, direct) == vin
        assert pseudonyms.resolve(session, second.principal_id, direct) is None
    assert [direct] == seen[0]


def test_rotation_gives_new_pseudonyms_and_old_ones_stop_resolving(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insert_ubi_score(settings, vin)
    insurer = new_caller(settings, "insurer")
    grant(client, owner, vin, insurer)
    [old] = subjects(client, insurer)
    with db(settings) as session:
        before = pseudonyms.current_key(session).version
        version = pseudonyms.rotate_key(session, actor="test")
    # Other test runs share this table: only "newer than before" can be relied on.
    assert version > before

    [new] = subjects(client, insurer)
    assert new != old
    assert client.get(f"{UBI_LIST}/{old}", headers=insurer.headers).status_code == 404
    assert client.get(f"{UBI_LIST}/{new}", headers=insurer.headers).status_code == 200
    with db(settings) as session:
        stale = session.exec(select(Pseudonym).where(Pseudonym.pseudonym == old)).first()
        assert stale is None
        assert pseudonyms.resolve(session, insurer.principal_id, new) == vin
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.action == "pseudonym.key_rotated")
            .order_by(col(AuditEvent.seq).desc())
        ).all()
    assert any(e.details["version"] == version for e in events)


def test_erasure_forgets_pseudonyms(settings: Settings, client: TestClient, admin: Caller) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insurer = new_caller(settings, "insurer")
    insert_ubi_score(settings, vin)
    grant(client, owner, vin, insurer)
    [subject] = subjects(client, insurer)
    with db(settings) as session:
        assert pseudonyms.forget_vehicle(session, vin) == 1
        assert pseudonyms.resolve(session, insurer.principal_id, subject) is None


# --- signatures --------------------------------------------------------------------------------


def test_responses_are_signed_and_verify_offline(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insert_ubi_score(settings, vin)
    insurer = new_caller(settings, "insurer")
    grant(client, owner, vin, insurer)

    keys = client.get("/v1/partner/keys")  # public: no credential
    assert keys.status_code == 200
    jwks = keys.json()
    [jwk] = jwks["keys"]
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and "d" not in jwk
    assert jwk["kid"] == signing.thumbprint(jwk)

    response = client.get(UBI_LIST, headers=insurer.headers)
    signature = response.headers[signing.HEADER]
    header = signing.verify(response.content, signature, jwks)
    assert header["alg"] == "EdDSA" and header["kid"] == jwk["kid"] and header["b64"] is False
    assert signature.split(".")[1] == ""  # the payload is detached

    tampered = response.content.replace(b'"score":', b'"score":1', 1)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(tampered, signature, jwks)
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(response.content + b" ", signature, jwks)
    foreign = {"keys": [dict(jwk, x=signing.jwks(_other_settings(settings))["keys"][0]["x"])]}
    with pytest.raises(signing.SignatureInvalid):
        signing.verify(response.content, signature, foreign)

    # Single items and the subject-level 404 are signed too.
    subject = response.json()["items"][0]["subject"]
    for path, code in ((f"{UBI_LIST}/{subject}", 200), (f"{UBI_LIST}/p_{'b' * 26}", 404)):
        answer = client.get(path, headers=insurer.headers)
        assert answer.status_code == code
        signing.verify(answer.content, answer.headers[signing.HEADER], jwks)


def test_signing_key_is_created_once_private_and_cached(tmp_path: Path) -> None:
    settings = Settings(environment="test", data_dir=tmp_path)
    path = settings.partner_signing_key_location
    kids: list[str] = []
    threads = [
        threading.Thread(target=lambda: kids.append(signing.signing_key(settings).kid))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(kids)) == 1
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary files left
    assert signing.signing_key(settings) is signing.signing_key(settings)  # parsed once

    path.unlink()  # replacing the key file rotates the key
    assert signing.signing_key(settings).kid != kids[0]


# --- audit -------------------------------------------------------------------------------------


def test_every_partner_read_is_audited(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    insert_ubi_score(settings, vin)
    insert_battery(settings, vin)
    partner = new_caller(settings, "partner")
    grant(client, owner, vin, partner)
    grant(client, owner, vin, partner, purpose="battery")

    [subject] = subjects(client, partner)
    assert client.get(f"{UBI_LIST}/{subject}", headers=partner.headers).status_code == 200
    assert client.get(f"{UBI_LIST}/p_{'c' * 26}", headers=partner.headers).status_code == 404
    assert subjects(client, partner, BATTERY_LIST) != []

    with db(settings) as session:
        events = session.exec(
            select(AuditEvent)
            .where(AuditEvent.subject == f"partner:{partner.name}")
            .order_by(col(AuditEvent.seq))
        ).all()
    assert [e.action for e in events] == ["partner.read"] * 4
    assert all(e.actor == partner.name for e in events)
    details = [e.details for e in events]
    assert [(d["purpose"], d["request"], d["count"]) for d in details] == [
        ("ubi", "list", 1),
        ("ubi", "item", 1),
        ("ubi", "item", 0),
        ("battery", "list", 1),
    ]
    assert details[0]["vins"] == [vin] and details[1]["vins"] == [vin]
    assert details[2]["vins"] == [] and details[2]["pseudonym"] == f"p_{'c' * 26}"


# --- erasure requests --------------------------------------------------------------------------


def test_erasure_request_by_owner(settings: Settings, client: TestClient, admin: Caller) -> None:
    vin, owner = owned_vehicle(settings, client, admin)
    _, other_owner = owned_vehicle(settings, client, admin)
    operator = new_caller(settings, "fleet_operator")
    insurer = new_caller(settings, "insurer")
    url = f"/v1/vehicles/{vin}/erasure"

    assert client.post(url, headers=other_owner.headers).status_code == 403
    assert client.post(url, headers=operator.headers).status_code == 403
    assert client.post(url, headers=insurer.headers).status_code == 403
    response = client.post(url, headers=owner.headers)
    assert response.status_code == 202, response.text
    request = response.json()
    assert request["state"] == "pending" and request["requested_by"] == owner.name
    assert request["due_at"] > request["requested_at"]

    read = f"/v1/erasure-requests/{request['id']}"
    assert client.get(read, headers=owner.headers).json()["id"] == request["id"]
    assert client.get(read, headers=admin.headers).status_code == 200
    assert client.get(read, headers=other_owner.headers).status_code == 404
    assert client.get(read, headers=insurer.headers).status_code == 403
    assert (
        client.get(f"/v1/erasure-requests/{uuid.uuid4()}", headers=admin.headers).status_code == 404
    )


# --- CLI ---------------------------------------------------------------------------------------


def test_cli_grants_lists_revokes_and_explains_errors(
    settings: Settings, client: TestClient, admin: Caller, monkeypatch: pytest.MonkeyPatch
) -> None:
    vin = new_vin()
    register_test_vehicle(settings, vin)
    insurer = new_caller(settings, "insurer")
    owner = new_caller(settings, "owner")
    monkeypatch.setenv("FLEET_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLEET_DATA_DIR", str(settings.data_dir))
    monkeypatch.setattr("ubi.consent_cli.stdout.width", 300)
    get_settings.cache_clear()
    runner = CliRunner()
    try:
        added = runner.invoke(consent_app, ["owner-add", vin, owner.name])
        assert added.exit_code == 0, added.output
        until = (utcnow() + timedelta(days=90)).date().isoformat()
        granted = runner.invoke(
            consent_app,
            ["grant", vin, "--grantee", insurer.name, "--purpose", "ubi", "--until", until],
        )
        assert granted.exit_code == 0, granted.output
        listed = runner.invoke(consent_app, ["list", vin])
        assert listed.exit_code == 0 and insurer.name in listed.output and "active" in listed.output
        [consent] = client.get(f"/v1/vehicles/{vin}/consents", headers=owner.headers).json()
        revoked = runner.invoke(consent_app, ["revoke", vin, consent["id"]])
        assert revoked.exit_code == 0, revoked.output
        assert "revoked" in runner.invoke(consent_app, ["list", vin]).output

        errors = {
            "unknown grantee": ["grant", vin, "--grantee", "nobody-x", "--until", until],
            "bad date": ["grant", vin, "--grantee", insurer.name, "--until", "soon"],
            "past": ["grant", vin, "--grantee", insurer.name, "--until", "2001-01-01"],
            "not an owner": ["owner-add", vin, insurer.name],
            "bad id": ["revoke", vin, "nope"],
            "unknown vin": ["list", new_vin()],
        }
        for case, args in errors.items():
            result = runner.invoke(consent_app, args)
            assert result.exit_code == 2, (case, result.output)
            assert "error:" in result.output and "Traceback" not in result.output, case
    finally:
        get_settings.cache_clear()


def _other_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"data_dir": settings.data_dir / "other-key"})


def test_partner_payload_bytes_are_what_is_signed(
    settings: Settings, client: TestClient, admin: Caller
) -> None:
    """The header signs the exact bytes sent (orjson, serialised once): re-encoding the parsed
    JSON in another way must not be needed for verification."""
    vin, owner = owned_vehicle(settings, client, admin)
    insert_battery(settings, vin)
    partner = new_caller(settings, "partner")
    grant(client, owner, vin, partner, purpose="battery")
    response = client.get(BATTERY_LIST, headers=partner.headers)
    jwks = client.get("/v1/partner/keys").json()
    assert orjson.loads(response.content) == response.json()
    signing.verify(response.content, response.headers[signing.HEADER], jwks)
