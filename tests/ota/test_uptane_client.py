"""The vehicle's Uptane client against real signed metadata: what it installs, and every attack
of the issue rejected with its stable code. Real python-tuf and real Ed25519 signatures; the
repositories are served by a fetcher over the store, and once over real HTTP."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata, Root, Targets, Timestamp

from ota.tuf_repo import utc_now
from simulator.ota_client import EcuState, StoreFetcher, UptaneError
from tests.ota.conftest import BASE_URL, VIN, OtaWorld

FIRMWARE = b"\x7fELF firmware 2.0 for ECU-HW-1" * 64


def expect_uptane_error(code: str, action: object) -> UptaneError:
    assert callable(action)
    with pytest.raises(UptaneError) as caught:
        action()
    assert caught.value.code == code, caught.value.detail
    return caught.value


def test_happy_path_installs_the_assigned_image_with_its_signed_preconditions(
    world: OtaWorld,
) -> None:
    image = world.publish_image(
        "app-2.0.bin", FIRMWARE, release_counter=2, custom={"dependencies": {"ecu-bms": ">=1.4"}}
    )
    conditions = {
        "preconditions": {"min_soc_pct": 30, "parked": True},
        "mode": "soft",
        "deadline": "2030-01-01T00:00:00Z",
    }
    world.assign(image, custom=conditions)
    client = world.client()

    [update] = client.check()

    assert (update.ecu_identifier, update.filename, update.release_counter) == (
        "ecu-main",
        "app-2.0.bin",
        2,
    )
    assert update.sha256 == image.sha256
    assert update.custom == conditions
    assert update.image_custom == {"dependencies": {"ecu-bms": ">=1.4"}}
    assert update.unmet_preconditions(soc_pct=25, parked=True) == ["min_soc_pct"]
    assert update.unmet_preconditions(soc_pct=80, parked=True) == []
    assert client.download(update) == FIRMWARE

    client.installed(update)
    assert client.check() == []  # already running what the Director assigns
    assert client.version_manifest()["ecus"]["ecu-main"]["image"] == "app-2.0.bin"


def test_an_empty_assignment_means_nothing_to_install(world: OtaWorld) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    client = world.client()
    assert len(client.check()) == 1

    assert world.director.assign(VIN, []) == 2
    assert client.check() == []


@pytest.mark.parametrize(
    "served",
    [
        pytest.param(bytes([FIRMWARE[0] ^ 1]) + FIRMWARE[1:], id="same-length"),
        pytest.param(FIRMWARE + b"backdoor", id="longer"),
    ],
)
def test_tampered_image_bytes_are_rejected(world: OtaWorld, served: bytes) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    client = world.client()
    [update] = client.check()

    world.blobs[world.blob_path(image)] = served

    expect_uptane_error("tampered", lambda: client.download(update))


def test_rollback_to_a_lower_release_counter_is_rejected(world: OtaWorld) -> None:
    old = world.publish_image("app-1.5.bin", FIRMWARE, release_counter=3)
    world.assign(old)
    client = world.client({"ecu-main": EcuState("ECU-HW-1", "app-2.0.bin", 5)})

    error = expect_uptane_error("rollback", client.check)
    assert "release counter 3" in error.detail


@pytest.mark.parametrize("frozen", ["director", "image"])
def test_freeze_with_an_expired_timestamp_is_rejected(world: OtaWorld, frozen: str) -> None:
    two_days_ago = utc_now() - timedelta(days=2)
    image = world.publish_image(
        "app-2.0.bin", FIRMWARE, now=two_days_ago if frozen == "image" else None
    )
    world.assign(image, now=two_days_ago if frozen == "director" else None)

    error = expect_uptane_error("expired", world.client().check)
    assert error.detail.startswith(frozen)


@pytest.mark.parametrize("role", ["snapshot", "targets"])
def test_mix_and_match_of_an_older_version_than_signed_is_rejected(
    world: OtaWorld, role: str
) -> None:
    first = world.publish_image("app-1.0.bin", FIRMWARE, release_counter=1)
    world.assign(first)
    second = world.publish_image("app-2.0.bin", FIRMWARE + b"2", release_counter=2)
    world.assign(second)  # Director v2 everywhere

    def stale(path: str) -> bytes | None:
        # A mirror answering the v2 request with the v1 file: each is validly signed.
        return world.resolve(path.replace(f"/2.{role}.json", f"/1.{role}.json"))

    client = world.client(fetcher=StoreFetcher({BASE_URL: stale}))

    expect_uptane_error("mix_and_match", client.check)


def test_metadata_older_than_what_the_vehicle_trusts_is_rejected(world: OtaWorld) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    old_timestamp = world.director.read_metadata(VIN, "timestamp.json")
    world.director.assign(VIN, [])
    client = world.client()
    assert client.check() == []

    world.store.write(f"director/{VIN}/timestamp.json", old_timestamp or b"")

    expect_uptane_error("mix_and_match", client.check)


@pytest.mark.parametrize(
    ("image_hardware", "director_claims"),
    [
        pytest.param("ECU-HW-2", "ECU-HW-1", id="director-lies-about-the-image"),
        pytest.param("ECU-HW-2", "ECU-HW-2", id="director-assigns-other-hardware"),
    ],
)
def test_an_image_for_other_hardware_is_rejected(
    world: OtaWorld, image_hardware: str, director_claims: str
) -> None:
    image = world.publish_image("app-hw2.bin", FIRMWARE, hardware=image_hardware)
    world.assign(image, hardware=director_claims)

    expect_uptane_error("wrong_hardware", world.client().check)


def test_an_image_the_image_repository_does_not_have_is_rejected(world: OtaWorld) -> None:
    world.publish_image("app-2.0.bin", FIRMWARE)
    ghost = world.repo.targets()["app-2.0.bin"]
    world.assign(dataclasses.replace(ghost, filename="ghost.bin"))

    expect_uptane_error("unknown_image", world.client().check)


def test_a_director_hash_other_than_the_image_repositorys_is_rejected(world: OtaWorld) -> None:
    genuine = world.publish_image("app-2.0.bin", FIRMWARE)
    evil = dataclasses.replace(genuine, sha256="ab" * 32)
    world.assign(evil)

    expect_uptane_error("tampered", world.client().check)


def test_an_assignment_for_an_ecu_the_vehicle_lacks_is_rejected(world: OtaWorld) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image, ecu="ecu-that-is-not-there")

    expect_uptane_error("unknown_ecu", world.client().check)


def test_director_targets_signed_by_an_unauthorized_key_are_rejected(world: OtaWorld) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    path = f"director/{VIN}/1.targets.json"
    forged = Metadata[Targets].from_bytes(world.store.read(path) or b"")
    forged.signed.targets["app-2.0.bin"].unrecognized_fields["custom"]["release_counter"] = 99
    forged.sign(CryptoSigner.generate_ed25519())  # replaces the Director's signature
    world.store.write(path, forged.to_bytes())

    expect_uptane_error("bad_signature", world.client().check)


def test_the_vehicle_follows_a_root_rotation_and_refuses_the_removed_key(
    world: OtaWorld,
) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    client = world.client()  # provisioned with image root v1
    assert len(client.check()) == 1
    old_root_key, new_root_key = world.signers.root, CryptoSigner.generate_ed25519()

    version = world.repo.rotate(
        "root", [new_root_key.public_key], 1, [old_root_key], [new_root_key]
    )

    assert version == 2
    assert len(client.check()) == 1
    trusted_root = world.cache_root / "vehicle" / "image" / "root.json"
    assert Metadata[Root].from_file(str(trusted_root)).signed.version == 2
    # An attacker holding only the removed key signs root v3 handing themselves every role.
    forged = Metadata[Root].from_bytes(world.repo.read_metadata("2.root.json") or b"")
    forged.signed.version = 3
    forged.signed.roles["root"].keyids = [old_root_key.public_key.keyid]
    forged.signed.keys[old_root_key.public_key.keyid] = old_root_key.public_key
    forged.sign(old_root_key)
    world.store.write("image/3.root.json", forged.to_bytes())

    expect_uptane_error("bad_signature", client.check)


def test_after_a_timestamp_key_rotation_the_old_key_is_refused(world: OtaWorld) -> None:
    image = world.publish_image("app-2.0.bin", FIRMWARE)
    world.assign(image)
    client = world.client()
    assert len(client.check()) == 1
    old_key, new_key = world.signers.timestamp, CryptoSigner.generate_ed25519()

    world.repo.rotate(
        "timestamp",
        [new_key.public_key],
        1,
        [world.signers.root],
        [world.signers.root],
        role_signers=[new_key],
    )
    assert len(client.check()) == 1  # new root, timestamp by the new key: accepted
    world.repo.refresh(utc_now() + timedelta(hours=20))  # the online key ring signs with it
    assert len(client.check()) == 1

    forged = Metadata[Timestamp].from_bytes(world.repo.read_metadata("timestamp.json") or b"")
    forged.signed.version += 1
    forged.sign(old_key)
    world.store.write("image/timestamp.json", forged.to_bytes())

    expect_uptane_error("bad_signature", client.check)


@pytest.fixture
def http_base_url(world: OtaWorld, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The repositories behind a real HTTP server on 127.0.0.1, routed as the API will."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            data = world.resolve(unquote(self.path.removeprefix("/ota/")))
            if data is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/ota/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_the_client_verifies_and_downloads_over_real_http(
    world: OtaWorld, http_base_url: str
) -> None:
    image = world.publish_image("fw/app-2.0.bin", FIRMWARE, release_counter=4)
    world.assign(image, custom={"mode": "forced"})
    client = world.client(base_url=http_base_url)

    [update] = client.check()

    assert update.custom == {"mode": "forced"}
    assert client.download(update) == FIRMWARE
    world.blobs[world.blob_path(image)] = FIRMWARE[::-1]
    fresh = world.client(base_url=http_base_url, name="other-vehicle")
    [update] = fresh.check()
    expect_uptane_error("tampered", lambda: fresh.download(update))
