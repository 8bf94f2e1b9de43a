"""The two Uptane repositories as the service runs them: signed metadata in the database
(``tuf_file``, so every API replica serves the same files and a metadata change commits with
the campaign change that caused it), online keys from ``FLEET_OTA_KEYS_DIR``.

Key layout (``fleet ota init`` writes it)::

    <keys>/image/snapshot.pem, timestamp.pem     online: the service re-signs these
    <keys>/image/targets.pem                     online only in a development setup
    <keys>/director/{root,targets,snapshot,timestamp}.pem   online (Uptane's Director)
    <keys>/offline/image/root-1.pem ... root-N.pem         offline: move them off this host
    <keys>/offline/image/targets.pem             with ``--offline-targets``

Each ``.pem`` has its public half next to it (``.pub.json``).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from core.config import Settings
from core.db import utcnow
from ota.director import Director
from ota.keys import (
    DIRECTOR_ONLINE_ROLES,
    KeyRing,
    generate_key,
    load_signer,
)
from ota.models import TufFile
from ota.tuf_repo import ImageRepository

_TUF_FILE: Table = TufFile.__table__  # type: ignore[attr-defined]
IMAGE_ONLINE_ROLES = ("targets", "snapshot", "timestamp")


class DbMetadataStore:
    """:class:`ota.tuf_repo.MetadataStore` on the ``tuf_file`` table, in the caller's
    transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def read(self, path: str) -> bytes | None:
        row = self.session.get(TufFile, path, populate_existing=True)
        return None if row is None else bytes(row.data)

    def write(self, path: str, data: bytes) -> None:
        dialect = self.session.get_bind().dialect.name
        insert = (postgresql if dialect == "postgresql" else sqlite).insert(_TUF_FILE)
        statement = insert.values(path=path, data=data, updated_at=utcnow())
        self.session.execute(
            statement.on_conflict_do_update(
                index_elements=["path"],
                set_={"data": statement.excluded.data, "updated_at": statement.excluded.updated_at},
            )
        )


def image_repository(session: Session, settings: Settings) -> ImageRepository:
    keys = online_keys(settings.ota_keys_location / "image", IMAGE_ONLINE_ROLES)
    return ImageRepository(DbMetadataStore(session), keys)


def director(session: Session, settings: Settings) -> Director:
    keys = online_keys(settings.ota_keys_location / "director", DIRECTOR_ONLINE_ROLES)
    return Director(DbMetadataStore(session), keys)


_KEY_CACHE: dict[tuple[Path, tuple[str, ...]], tuple[tuple[tuple[str, int], ...], KeyRing]] = {}
_KEY_CACHE_LOCK = threading.Lock()


def online_keys(directory: Path, roles: tuple[str, ...]) -> KeyRing:
    """``KeyRing.from_directory``, parsed once per process while the key files stay the same
    (check-ins, metadata reads and reports open the repositories on every request). A copy
    is returned: a rotation replaces signers in its ring, not in the cache."""
    files = tuple(
        sorted((p.name, p.stat().st_mtime_ns) for p in directory.glob("*.pem") if p.is_file())
    )
    with _KEY_CACHE_LOCK:
        cached = _KEY_CACHE.get((directory, roles))
        if cached is None or cached[0] != files:
            cached = (files, KeyRing.from_directory(directory, roles))
            _KEY_CACHE[(directory, roles)] = cached
    return KeyRing({role: list(signers) for role, signers in cached[1].online.items()})


@dataclass(frozen=True)
class InitResult:
    keys_dir: Path
    offline: list[Path]
    targets_online: bool


def init_repositories(
    session: Session,
    settings: Settings,
    *,
    root_keys: int = 3,
    root_threshold: int = 2,
    offline_targets: bool = False,
) -> InitResult:
    """Generate every key and create both repositories (root v1 of each). Refuses to run
    when either repository exists or a key file would be overwritten."""
    if not 1 <= root_threshold <= root_keys:
        raise ValueError("the root threshold must be between 1 and the number of root keys")
    base = settings.ota_keys_location
    image_dir, offline_dir, director_dir = (
        base / "image",
        base / "offline" / "image",
        base / "director",
    )
    root_paths = [offline_dir / f"root-{i}.pem" for i in range(1, root_keys + 1)]
    targets_path = (offline_dir if offline_targets else image_dir) / "targets.pem"
    paths = {
        "snapshot": image_dir / "snapshot.pem",
        "timestamp": image_dir / "timestamp.pem",
        **{f"director-{role}": director_dir / f"{role}.pem" for role in DIRECTOR_ONLINE_ROLES},
    }
    for path in [*root_paths, targets_path, *paths.values()]:
        generate_key(path)
    store = DbMetadataStore(session)
    ImageRepository.create(
        store,
        root_keys=[load_signer(p) for p in root_paths],
        root_threshold=root_threshold,
        targets_keys=[load_signer(targets_path)],
        snapshot_key=load_signer(paths["snapshot"]),
        timestamp_key=load_signer(paths["timestamp"]),
        targets_online=not offline_targets,
    )
    Director.create(store, KeyRing.from_directory(director_dir, DIRECTOR_ONLINE_ROLES))
    offline = [*root_paths, *([targets_path] if offline_targets else [])]
    return InitResult(keys_dir=base, offline=offline, targets_online=not offline_targets)


def initialized(session: Session) -> bool:
    return session.get(TufFile, "image/1.root.json") is not None
