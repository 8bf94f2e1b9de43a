"""The signing side: Image repository (offline targets signing with a threshold, refresh, key
rotation), the Director's per-vehicle metadata, stores and key files. Real python-tuf and
Ed25519 throughout; "a vehicle accepts it" is checked with ngclient itself."""

from __future__ import annotations

import dataclasses
import json
import logging
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from ota.director import DirectorTarget, InvalidVin
from ota.keys import (
    IMAGE_REPOSITORY_ONLINE_ROLES,
    KeyRing,
    OfflineKeyRequired,
    generate_key,
    load_public_key,
    load_signer,
    public_key_path,
)
from ota.tuf_repo import (
    DirectoryStore,
    ImageRepository,
    ImageTarget,
    InvalidTarget,
    MemoryStore,
    MetadataVersionConflict,
    SignatureThresholdNotMet,
    sign_file,
    utc_now,
)
from simulator.ota_client import StoreFetcher
from tests.ota.conftest import VIN, OtaWorld

OfflineRepo = tuple[ImageRepository, list[Path]]

IMAGE = ImageTarget.from_bytes(
    "bms-3.1.bin",
    b"battery management 3.1",
    hardware_identifier="BMS-HW-7",
    release_counter=31,
    custom={"dependencies": {"ecu-main": ">=2.0"}},
)


@pytest.fixture
def offline_repo(tmp_path: Path) -> OfflineRepo:
    """A repository whose targets role needs 2 of 2 offline keys, kept as files."""
    key_files = [tmp_path / "keys" / "targets-a.pem", tmp_path / "keys" / "targets-b.pem"]
    for path in key_files:
        generate_key(path)
    repo = ImageRepository.create(
        MemoryStore(),
        root_keys=[CryptoSigner.generate_ed25519()],
        targets_keys=[load_signer(path) for path in key_files],
        targets_threshold=2,
        snapshot_key=CryptoSigner.generate_ed25519(),
        timestamp_key=CryptoSigner.generate_ed25519(),
    )
    return repo, key_files


def test_offline_targets_need_the_threshold_of_signatures(
    offline_repo: OfflineRepo, tmp_path: Path
) -> None:
    repo, (key_a, key_b) = offline_repo
    with pytest.raises(OfflineKeyRequired):
        repo.add_targets([IMAGE])
    unsigned = repo.prepare_targets([IMAGE])
    once = sign_file(unsigned, load_signer(key_a))

    with pytest.raises(SignatureThresholdNotMet, match="1/2"):
        repo.publish_targets(once)
    assert repo.targets() == {}

    twice = sign_file(once, load_signer(key_b))
    assert repo.publish_targets(twice) == 2
    assert repo.targets() == {"bms-3.1.bin": IMAGE}
    # ...and a TUF client agrees: the published chain verifies against root.
    updater = Updater(
        str(tmp_path / "cache"),
        "mem://image/",
        fetcher=StoreFetcher({"mem://image/": repo.read_metadata}),
        bootstrap=repo.root_bytes(),
    )
    target = updater.get_targetinfo("bms-3.1.bin")
    assert target is not None and target.custom["release_counter"] == 31


def test_publish_refuses_targets_signed_by_an_unauthorized_key(
    offline_repo: OfflineRepo,
) -> None:
    repo, (key_a, _) = offline_repo
    intruder = CryptoSigner.generate_ed25519()
    data = sign_file(sign_file(repo.prepare_targets([IMAGE]), load_signer(key_a)), intruder)

    with pytest.raises(SignatureThresholdNotMet):
        repo.publish_targets(data)
    assert repo.versions()["targets"] == 1


def test_publish_refuses_a_file_prepared_from_an_older_version(world: OtaWorld) -> None:
    first = world.repo.prepare_targets([IMAGE])
    second = world.repo.prepare_targets([IMAGE])
    world.repo.publish_targets(sign_file(first, world.signers.targets))

    with pytest.raises(MetadataVersionConflict):
        world.repo.publish_targets(sign_file(second, world.signers.targets))


def test_targets_carry_the_uptane_fields_and_custom_data(world: OtaWorld) -> None:
    version = world.repo.add_targets([IMAGE])

    document = json.loads(world.repo.read_metadata(f"{version}.targets.json") or b"")
    assert document["signed"]["targets"]["bms-3.1.bin"] == {
        "length": IMAGE.length,
        "hashes": {"sha256": IMAGE.sha256},
        "custom": {
            "hardware_identifier": "BMS-HW-7",
            "release_counter": 31,
            "dependencies": {"ecu-main": ">=2.0"},
        },
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"custom": {"min_soc_pct": 30.5}}, "float"),
        ({"custom": {"release_counter": 1}}, "may not set"),
        ({"filename": "../escape.bin"}, "relative path"),
        ({"release_counter": -1}, "release_counter"),
        ({"hardware_identifier": ""}, "hardware_identifier"),
    ],
)
def test_malformed_targets_are_refused(
    world: OtaWorld, change: dict[str, Any], message: str
) -> None:
    bad = dataclasses.replace(IMAGE, **change)
    with pytest.raises(InvalidTarget, match=message):
        world.repo.add_targets([bad])


def test_a_published_image_cannot_change_its_bytes(world: OtaWorld) -> None:
    world.repo.add_targets([IMAGE])
    changed = ImageTarget.from_bytes(
        IMAGE.filename, b"other bytes", hardware_identifier="BMS-HW-7", release_counter=32
    )
    with pytest.raises(InvalidTarget, match="already published"):
        world.repo.add_targets([changed])


def test_refresh_resigns_timestamp_and_snapshot_only_when_they_near_expiry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    created = utc_now()
    timestamp_key = CryptoSigner.generate_ed25519()
    repo = ImageRepository.create(
        MemoryStore(),
        root_keys=[CryptoSigner.generate_ed25519()],
        targets_keys=[CryptoSigner.generate_ed25519()],
        snapshot_key=CryptoSigner.generate_ed25519(),
        timestamp_key=timestamp_key,
        now=created,
    )

    assert repo.refresh(created + timedelta(hours=1)) == []
    assert repo.refresh(created + timedelta(hours=17)) == ["timestamp"]  # 7 h left < 8 h
    assert repo.refresh(created + timedelta(hours=18)) == []
    assert repo.versions() == {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 2}
    with caplog.at_level(logging.WARNING, logger="ota.tuf_repo"):
        assert repo.refresh(created + timedelta(days=80)) == ["snapshot", "timestamp"]
    assert "image targets v1 expires" in caplog.text  # offline: an operator must sign
    assert repo.versions() == {"root": 1, "targets": 1, "snapshot": 2, "timestamp": 3}
    timestamp = Metadata.from_bytes(repo.read_metadata("timestamp.json") or b"")
    assert timestamp.signed.expires > created + timedelta(days=80, hours=23)


def test_refresh_resigns_online_targets_too(world: OtaWorld) -> None:
    assert world.repo.refresh(utc_now() + timedelta(days=77)) == [
        "targets",
        "snapshot",
        "timestamp",
    ]


def test_root_rotation_needs_a_threshold_of_the_old_root_keys(world: OtaWorld) -> None:
    new_root_key = CryptoSigner.generate_ed25519()
    with pytest.raises(SignatureThresholdNotMet, match="root v1"):
        world.repo.rotate("root", [new_root_key.public_key], 1, [], [new_root_key])
    assert world.repo.versions()["root"] == 1
    with pytest.raises(SignatureThresholdNotMet):
        world.repo.rotate("root", [new_root_key.public_key], 1, [world.signers.root], [])
    assert (
        world.repo.rotate(
            "root", [new_root_key.public_key], 1, [world.signers.root], [new_root_key]
        )
        == 2
    )


def test_targets_key_rotation_republishes_targets_under_the_new_key(world: OtaWorld) -> None:
    world.repo.add_targets([IMAGE])
    new_key = CryptoSigner.generate_ed25519()

    world.repo.rotate(
        "targets",
        [new_key.public_key],
        1,
        [world.signers.root],
        [world.signers.root],
        role_signers=[new_key],
    )

    assert world.repo.versions() == {"root": 2, "targets": 3, "snapshot": 3, "timestamp": 3}
    assert world.repo.keys.signers("targets") == [new_key]
    world.publish_image("app-2.0.bin", b"firmware")  # signs with the new key
    world.assign(world.repo.targets()["app-2.0.bin"])
    assert [u.filename for u in world.client().check()] == ["app-2.0.bin"]


def test_director_versions_go_up_per_vehicle(world: OtaWorld) -> None:
    other_vin = "WVWZZZ1KZ6W000002"
    entry = DirectorTarget(
        ecu_identifier="ecu-bms",
        hardware_identifier="BMS-HW-7",
        filename=IMAGE.filename,
        length=IMAGE.length,
        sha256=IMAGE.sha256,
        release_counter=IMAGE.release_counter,
        custom={"preconditions": {"parked": True}, "mode": "forced"},
    )

    assert world.director.assign(VIN, [entry]) == 1
    assert world.director.assign(VIN, []) == 2
    assert world.director.assign(other_vin, [entry]) == 1
    assert world.director.assign(VIN, [entry]) == 3

    assert world.director.targets_version(VIN) == 3
    assert world.director.assignment(other_vin) == [entry]
    # every vehicle path resolves root versions to the one shared root
    assert world.director.read_metadata(VIN, "1.root.json") == world.director.root_bytes()


def test_director_refuses_bad_vins_and_double_assignments(world: OtaWorld) -> None:
    entry = DirectorTarget("ecu-main", "ECU-HW-1", "a.bin", 1, "ab" * 32, 1)
    assert world.director.read_metadata("../image", "timestamp.json") is None
    with pytest.raises(InvalidVin):
        world.director.assign("../image", [entry])
    with pytest.raises(InvalidTarget, match="assigned twice"):
        world.director.assign(
            VIN, [entry, DirectorTarget("ecu-main", "ECU-HW-1", "b.bin", 1, "cd" * 32, 1)]
        )


def test_director_refresh_resigns_only_vehicles_whose_metadata_nears_expiry(
    world: OtaWorld,
) -> None:
    now = utc_now()
    stale_vin, fresh_vin = "WVWZZZ1KZ6W000003", "WVWZZZ1KZ6W000004"
    world.director.assign(stale_vin, [], now=now - timedelta(hours=20))
    world.director.assign(fresh_vin, [], now=now)

    assert world.director.refresh([stale_vin, fresh_vin], now=now) == {stale_vin: ["timestamp"]}
    assert world.director.refresh([stale_vin, fresh_vin], now=now) == {}
    client = world.client({}, vin=stale_vin)
    assert client.check() == []


def test_directory_store_writes_atomically_inside_its_root(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "repo")
    store.write("image/timestamp.json", b"one")
    store.write("image/timestamp.json", b"two")

    assert store.read("image/timestamp.json") == b"two"
    assert store.read("image/missing.json") is None
    assert [p.name for p in (tmp_path / "repo" / "image").iterdir()] == ["timestamp.json"]
    for escaping in ("../outside", "/etc/passwd", "image//x", "image/./x"):
        with pytest.raises(ValueError):
            store.write(escaping, b"x")


def test_key_files_round_trip_and_only_online_roles_load(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    public = {role: generate_key(key_dir / f"{role}.pem") for role in ("targets", "timestamp")}
    generate_key(key_dir / "snapshot-1.pem")

    assert stat.S_IMODE((key_dir / "targets.pem").stat().st_mode) == 0o600
    assert load_signer(key_dir / "targets.pem").public_key == public["targets"]
    assert load_public_key(public_key_path(key_dir / "targets.pem")) == public["targets"]
    with pytest.raises(FileExistsError):
        generate_key(key_dir / "targets.pem")
    ring = KeyRing.from_directory(key_dir, IMAGE_REPOSITORY_ONLINE_ROLES)
    assert sorted(ring.online) == ["snapshot", "timestamp"]
    assert not ring.is_online("targets")
