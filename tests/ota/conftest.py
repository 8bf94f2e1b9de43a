"""Fixtures for the OTA signing tests: an Image repository and a Director in one memory store,
image bytes, and vehicles whose Uptane client reads them through a fetcher (no HTTP)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.ngclient.fetcher import FetcherInterface

from ota.director import Director, DirectorTarget
from ota.keys import KeyRing
from ota.tuf_repo import ImageRepository, ImageTarget, MemoryStore, utc_now
from simulator.ota_client import EcuState, StoreFetcher, UptaneClient
from tests.ingestion.conftest import client, db_url, settings  # noqa: F401 - API test fixtures

VIN = "WVWZZZ1KZ6W000001"
BASE_URL = "mem://ota/"


@dataclass
class Signers:
    """The Image repository's keys (root and targets would be offline in production)."""

    root: CryptoSigner = field(default_factory=CryptoSigner.generate_ed25519)
    targets: CryptoSigner = field(default_factory=CryptoSigner.generate_ed25519)
    snapshot: CryptoSigner = field(default_factory=CryptoSigner.generate_ed25519)
    timestamp: CryptoSigner = field(default_factory=CryptoSigner.generate_ed25519)


@dataclass
class OtaWorld:
    """Both repositories in one store, the image bytes, and helpers to drive them."""

    store: MemoryStore
    signers: Signers
    repo: ImageRepository
    director: Director
    cache_root: Path
    blobs: dict[str, bytes] = field(default_factory=dict)  # by blob_path()

    def publish_image(
        self,
        filename: str,
        data: bytes,
        *,
        hardware: str = "ECU-HW-1",
        release_counter: int = 1,
        custom: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> ImageTarget:
        image = ImageTarget.from_bytes(
            filename,
            data,
            hardware_identifier=hardware,
            release_counter=release_counter,
            custom=custom,
        )
        self.repo.add_targets([image], now=now)
        self.blobs[self.blob_path(image)] = data
        return image

    @staticmethod
    def blob_path(image: ImageTarget) -> str:
        """Where a TUF client fetches the image under ``targets/``: ``<dir>/<sha256>.<name>``."""
        [path] = image.to_target_file().get_prefixed_paths()
        return path

    def assign(
        self,
        image: ImageTarget,
        *,
        vin: str = VIN,
        ecu: str = "ecu-main",
        hardware: str | None = None,
        custom: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> int:
        entry = DirectorTarget(
            ecu_identifier=ecu,
            hardware_identifier=hardware or image.hardware_identifier,
            filename=image.filename,
            length=image.length,
            sha256=image.sha256,
            release_counter=image.release_counter,
            custom=dict(custom or {}),
        )
        return self.director.assign(vin, [entry], now=now)

    def resolve(self, path: str) -> bytes | None:
        """What the API would answer for ``path`` (the routes the backend must serve)."""
        repository, _, rest = path.partition("/")
        if repository == "image":
            if rest.startswith("targets/"):
                return self.blobs.get(rest.removeprefix("targets/"))
            return self.repo.read_metadata(rest)
        if repository == "director":
            vin, _, name = rest.partition("/")
            return self.director.read_metadata(vin, name)
        return None

    def fetcher(self) -> StoreFetcher:
        return StoreFetcher({BASE_URL: self.resolve})

    def client(
        self,
        ecus: dict[str, EcuState] | None = None,
        *,
        name: str = "vehicle",
        fetcher: FetcherInterface | None = None,
        base_url: str = BASE_URL,
        vin: str = VIN,
    ) -> UptaneClient:
        """A vehicle provisioned with the roots as they are now (cache under ``name``)."""
        return UptaneClient(
            vin,
            ecus if ecus is not None else {"ecu-main": EcuState("ECU-HW-1", "app-1.0.bin", 1)},
            director_url=f"{base_url}director",
            image_repo_url=f"{base_url}image",
            director_root=self.director.root_bytes(),
            image_root=self.repo.root_bytes(),
            cache_dir=self.cache_root / name,
            fetcher=fetcher if fetcher is not None or base_url != BASE_URL else self.fetcher(),
        )


def director_keys() -> KeyRing:
    return KeyRing.of(
        {
            role: CryptoSigner.generate_ed25519()
            for role in ("root", "targets", "snapshot", "timestamp")
        }
    )


@pytest.fixture
def world(tmp_path: Path) -> OtaWorld:
    store = MemoryStore()
    signers = Signers()
    now = utc_now()
    repo = ImageRepository.create(
        store,
        root_keys=[signers.root],
        targets_keys=[signers.targets],
        snapshot_key=signers.snapshot,
        timestamp_key=signers.timestamp,
        targets_online=True,  # the development setup; offline signing has its own tests
        now=now,
    )
    director = Director.create(store, director_keys(), now=now)
    return OtaWorld(store, signers, repo, director, tmp_path)
