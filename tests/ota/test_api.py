"""The OTA API around images and the repositories: upload (validation, duplicates), download
with ranges, the metadata and target routes a vehicle's TUF client uses and who may read them,
check-in with ETag, and the offline targets-signing commands."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from typer.testing import CliRunner

from core import audit
from core.app import create_app
from core.cli import app as cli
from core.config import Settings, get_settings
from core.db import make_engine, session_scope
from ota import repos
from ota.keys import generate_key, load_public_key, public_key_path
from tests.diagnostics.test_worker import admin_token
from tests.ingestion.conftest import new_vehicle_token, wait_for_producer

pytestmark = pytest.mark.kafka  # the API's lifespan connects its producer

IMAGE = bytes(range(256)) * 40


def reset_repositories(settings: Settings, *, offline_targets: bool = False) -> None:
    """The repositories are one per database and the test database is shared: start over
    with this test's keys."""
    engine = make_engine(settings)
    try:
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM tuf_file"))
        with session_scope(engine) as session:
            repos.init_repositories(session, settings, offline_targets=offline_targets)
    finally:
        engine.dispose()


@pytest.fixture
def ota(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, TestClient]]:
    settings = settings.model_copy(update={"ota_keys_dir": tmp_path / "keys"})
    reset_repositories(settings)
    with TestClient(create_app(settings)) as client:
        wait_for_producer(client)
        yield settings, client


def upload(client: TestClient, token: str, data: bytes = IMAGE, **params: object) -> object:
    query = {
        "name": f"ecu-fw-{uuid.uuid4().hex[:6]}",
        "version": "1.2.0",
        "release_counter": 3,
        "hardware_id": ["HW-A", "HW-B"],
    } | params
    return client.post(
        "/v1/ota/images", params=query, content=data, headers={"Authorization": f"Bearer {token}"}
    )


def test_upload_publishes_and_downloads_with_ranges(ota: tuple[Settings, TestClient]) -> None:
    settings, client = ota
    admin = admin_token(settings)
    auth = {"Authorization": f"Bearer {admin}"}
    created = upload(client, admin)
    assert created.status_code == 201, created.text
    image = created.json()
    assert image["sha256"] == hashlib.sha256(IMAGE).hexdigest() and image["length"] == len(IMAGE)
    assert image["target_paths"] == [f"HW-A/{image['filename']}", f"HW-B/{image['filename']}"]
    again = upload(client, admin, name=image["name"])
    assert again.status_code == 409

    content = f"/v1/ota/images/{image['id']}/content"
    whole = client.get(content, headers=auth)
    assert whole.status_code == 200 and whole.content == IMAGE
    part = client.get(content, headers=auth | {"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == IMAGE[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(IMAGE)}"
    tail = client.get(content, headers=auth | {"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.content == IMAGE[-10:]
    past = client.get(content, headers=auth | {"Range": f"bytes={len(IMAGE)}-"})
    assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(IMAGE)}"
    stale = client.get(content, headers=auth | {"Range": "bytes=0-9", "If-Range": '"other"'})
    assert stale.status_code == 200 and stale.content == IMAGE

    # The Image repository lists it: targets metadata names both targets with Uptane fields.
    timestamp = client.get("/v1/ota/image/timestamp.json", headers=auth).json()
    snapshot_version = timestamp["signed"]["meta"]["snapshot.json"]["version"]
    snapshot = client.get(f"/v1/ota/image/{snapshot_version}.snapshot.json", headers=auth).json()
    targets_version = snapshot["signed"]["meta"]["targets.json"]["version"]
    targets = client.get(f"/v1/ota/image/{targets_version}.targets.json", headers=auth).json()
    entry = targets["signed"]["targets"][f"HW-A/{image['filename']}"]
    assert entry["custom"]["hardware_identifier"] == "HW-A"
    assert entry["custom"]["release_counter"] == 3
    served = client.get(
        f"/v1/ota/image/targets/HW-B/{image['sha256']}.{image['filename']}", headers=auth
    )
    assert served.status_code == 200 and served.content == IMAGE
    wrong_dir = client.get(
        f"/v1/ota/image/targets/HW-C/{image['sha256']}.{image['filename']}", headers=auth
    )
    assert wrong_dir.status_code == 404


def test_upload_names_every_bad_parameter(ota: tuple[Settings, TestClient]) -> None:
    settings, client = ota
    admin = admin_token(settings)
    bad = upload(
        client,
        admin,
        name="Bad Name",
        version="",
        release_counter=-1,
        hardware_id=["ok", "no spaces"],
        dependency=["nocolon"],
    )
    assert bad.status_code == 422
    fields = {err["loc"][-1] for err in bad.json()["detail"]}
    assert {"name", "version", "release_counter", "hardware_id"} <= fields
    empty = upload(client, admin, data=b"")
    assert empty.status_code == 422 and empty.json()["error"] == "empty_body"
    small = settings.model_copy(update={"ota_max_image_bytes": 100})
    with TestClient(create_app(small)) as limited:
        wait_for_producer(limited)
        assert upload(limited, admin).status_code == 413


def test_who_may_read_what(ota: tuple[Settings, TestClient]) -> None:
    settings, client = ota
    vin, vehicle = new_vehicle_token(settings)
    other_vin, _ = new_vehicle_token(settings)
    admin = admin_token(settings)
    as_vehicle = {"Authorization": f"Bearer {vehicle}"}
    created = upload(client, admin).json()
    assert upload(client, vehicle).status_code == 403
    assert client.get("/v1/ota/images", headers=as_vehicle).status_code == 403
    assert (
        client.get(f"/v1/ota/images/{created['id']}/content", headers=as_vehicle).status_code == 403
    )
    assert client.get("/v1/ota/image/1.root.json", headers=as_vehicle).status_code == 200
    assert client.get(f"/v1/ota/director/{vin}/1.root.json", headers=as_vehicle).status_code == 200
    assert (
        client.get(f"/v1/ota/director/{other_vin}/1.root.json", headers=as_vehicle).status_code
        == 403
    )
    assert client.get("/v1/ota/image/1.root.json").status_code == 401
    assert client.get("/v1/ota/image/..%2Fsecret.json", headers=as_vehicle).status_code == 404
    assert (
        client.get("/v1/ota/check-in", headers={"Authorization": f"Bearer {admin}"}).status_code
        == 403
    )
    assert client.post("/v1/ota/campaigns", json={}, headers=as_vehicle).status_code == 403


def test_check_in_answers_304_when_nothing_changed(ota: tuple[Settings, TestClient]) -> None:
    settings, client = ota
    vin, vehicle = new_vehicle_token(settings)
    auth = {"Authorization": f"Bearer {vehicle}"}
    first = client.get("/v1/ota/check-in", headers=auth)
    assert first.status_code == 200 and first.json() == {
        "vin": vin,
        "director_targets_version": None,
        "updates": [],
    }
    etag = first.headers["etag"]
    again = client.get("/v1/ota/check-in", headers=auth | {"If-None-Match": etag})
    assert again.status_code == 304 and again.headers["etag"] == etag
    manifest = client.put(
        "/v1/ota/manifest",
        headers=auth,
        json={
            "ecus": [
                {"ecu_id": "BMS", "hardware_id": "HW-A", "version": "1.0", "release_counter": 1}
            ]
        },
    )
    assert manifest.status_code == 204
    bad = client.post("/v1/ota/reports", headers=auth, json={"report_id": "r", "state": "done"})
    assert bad.status_code == 422


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch, settings: Settings, tmp_path: Path) -> Settings:
    settings = settings.model_copy(update={"ota_keys_dir": tmp_path / "cli-keys"})
    monkeypatch.setenv("FLEET_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("FLEET_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLEET_OTA_KEYS_DIR", str(settings.ota_keys_dir))
    get_settings.cache_clear()
    engine = make_engine(settings)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM tuf_file"))
        conn.execute(
            text("UPDATE software_image SET targets_version = 0 WHERE targets_version IS NULL")
        )  # earlier tests' leftovers
    engine.dispose()
    yield settings
    get_settings.cache_clear()


def test_offline_targets_signing_from_the_command_line(cli_env: Settings, tmp_path: Path) -> None:
    runner = CliRunner()
    init = runner.invoke(cli, ["ota", "init", "--offline-targets"])
    assert init.exit_code == 0, init.output
    offline = [Path(line) for line in init.stdout.splitlines() if line.endswith(".pem")]
    assert {p.name for p in offline} == {"root-1.pem", "root-2.pem", "root-3.pem", "targets.pem"}
    assert runner.invoke(cli, ["ota", "init"]).exit_code == 1  # exists already

    firmware = tmp_path / "fw.bin"
    firmware.write_bytes(IMAGE)
    name = f"tcu-{uuid.uuid4().hex[:6]}"
    uploaded = runner.invoke(
        cli,
        [
            "ota",
            "upload",
            str(firmware),
            "--name",
            name,
            "--version",
            "2.0",
            "--release-counter",
            "7",
            "--hardware-id",
            "TCU-HW",
        ],
    )
    assert uploaded.exit_code == 0, uploaded.output
    assert "waiting for" in uploaded.output

    pending = tmp_path / "targets.json"
    assert runner.invoke(cli, ["ota", "targets", "prepare", str(pending)]).exit_code == 0
    unsigned = runner.invoke(cli, ["ota", "targets", "publish", str(pending)])
    assert unsigned.exit_code == 1 and "signed by 0/1 keys" in unsigned.output
    targets_key = next(p for p in offline if p.name == "targets.pem")
    signed = runner.invoke(cli, ["ota", "targets", "sign", str(pending), "--key", str(targets_key)])
    assert signed.exit_code == 0, signed.output
    assert len(json.loads(pending.read_bytes())["signatures"]) == 1
    published = runner.invoke(cli, ["ota", "targets", "publish", str(pending)])
    assert published.exit_code == 0, published.output
    assert runner.invoke(cli, ["ota", "targets", "prepare", str(pending)]).exit_code == 1
    verified = runner.invoke(cli, ["audit", "verify"])
    assert verified.exit_code == 0 and "Audit chain intact" in verified.output


def test_the_audit_log_is_for_admins(ota: tuple[Settings, TestClient]) -> None:
    settings, client = ota
    admin = {"Authorization": f"Bearer {admin_token(settings)}"}
    upload(client, admin["Authorization"].split()[1])
    events = client.get("/v1/audit?action=image.upload&limit=1", headers=admin)
    assert events.status_code == 200 and events.json()[0]["action"] == "image.upload"
    chain = client.get("/v1/audit/verify", headers=admin).json()
    assert chain["ok"] and chain["events"] >= 1
    _, vehicle = new_vehicle_token(settings)
    assert (
        client.get("/v1/audit", headers={"Authorization": f"Bearer {vehicle}"}).status_code == 403
    )


def test_rotating_the_timestamp_key_from_the_command_line(
    cli_env: Settings, tmp_path: Path
) -> None:
    runner = CliRunner()
    init = runner.invoke(cli, ["ota", "init"])
    assert init.exit_code == 0, init.output
    roots = [Path(p) for p in init.stdout.splitlines() if p.endswith(".pem")]
    new_key = tmp_path / "timestamp-2.pem"
    generate_key(new_key)
    few = runner.invoke(
        cli,
        [
            "ota",
            "rotate-key",
            "timestamp",
            "--new-key",
            str(new_key),
            "--old-root-key",
            str(roots[0]),
        ],
    )
    assert few.exit_code == 1 and "needs 2 signatures" in few.output  # threshold 2 of 3
    rotated = runner.invoke(
        cli,
        [
            "ota",
            "rotate-key",
            "timestamp",
            "--new-key",
            str(new_key),
            "--old-root-key",
            str(roots[0]),
            "--old-root-key",
            str(roots[1]),
        ],
    )
    assert rotated.exit_code == 0, rotated.output
    assert "root v2: timestamp keys rotated" in rotated.output
    engine = make_engine(cli_env)
    try:
        with session_scope(engine) as session:
            root = json.loads(repos.DbMetadataStore(session).read("image/2.root.json") or b"{}")
            events = [e.action for e in audit.list_events(session)]
    finally:
        engine.dispose()
    keyid = load_public_key(public_key_path(new_key)).keyid
    assert root["signed"]["roles"]["timestamp"]["keyids"] == [keyid]
    assert len(root["signatures"]) >= 2 and "key.rotate" in events
