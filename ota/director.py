"""The Uptane Director: per-vehicle TUF metadata saying what each vehicle must install.

One root (online keys, as Uptane allows for the Director) is shared by every vehicle; each
vehicle has its own targets, snapshot and timestamp. A vehicle's TUF client points its
``tuf.ngclient.Updater`` at ``<director_url>/<vin>/`` and asks for exactly the names the
Image repository serves (``<v>.root.json``, ``timestamp.json``, ``<v>.snapshot.json``,
``<v>.targets.json``). :meth:`Director.read_metadata` resolves them:

    director/root.json                current shared root (provision vehicles with it)
    director/<v>.root.json            shared root versions: ``<vin>/<v>.root.json`` reads these
    director/<vin>/timestamp.json     the vehicle's current timestamp; written last
    director/<vin>/<v>.snapshot.json
    director/<vin>/<v>.targets.json

Resolving instead of copying keeps a root rotation one write, not one per vehicle.

A targets entry names the ECU that must install the image and carries, signed, everything
the vehicle checks before it installs (``custom``)::

    "app-2.1.0.bin": {"length": ..., "hashes": {"sha256": ...}, "custom": {
        "ecu_identifier": "ecu-main", "hardware_identifier": "ECU-HW-1", "release_counter": 7,
        "preconditions": {"min_soc_pct": 30, "parked": true}, "mode": "soft",
        "deadline": "2025-07-01T00:00:00Z"}}

The extra keys (here ``preconditions``, ``mode``, ``deadline``) come from the campaign as
:attr:`DirectorTarget.custom`; the Director only checks that they can be signed (no floats).
An empty assignment is a new targets version with no entries: "nothing to install".

Writers for one vehicle must be serialized (the caller holds the vehicle's row lock); the
versions of each vehicle's roles only go up.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tuf.api.metadata import Metadata, Root, TargetFile, Targets

from core.errors import ValidationFailed
from core.vin import vin_problem
from ota.keys import KeyRing
from ota.tuf_repo import (
    HARDWARE_IDENTIFIER,
    RELEASE_COUNTER,
    ExpiryPolicy,
    InvalidTarget,
    MetadataFiles,
    MetadataStore,
    RepositoryExists,
    RepositoryNotInitialized,
    RepositoryState,
    bumped,
    check_custom,
    check_online_keys,
    check_target_fields,
    sign_metadata,
    snapshot_of,
    timestamp_of,
    utc_now,
    verify_role,
)

logger = logging.getLogger(__name__)

ECU_IDENTIFIER = "ecu_identifier"
DIRECTOR_PREFIX = "director/"
_RESERVED = (ECU_IDENTIFIER, HARDWARE_IDENTIFIER, RELEASE_COUNTER)


class InvalidVin(ValidationFailed):
    code = "invalid_vin"


@dataclass(frozen=True)
class DirectorTarget:
    """One ECU's assignment: install ``filename`` (as the Image repository lists it)."""

    ecu_identifier: str
    hardware_identifier: str
    filename: str
    length: int
    sha256: str
    release_counter: int
    custom: Mapping[str, Any] = field(default_factory=dict)

    def to_target_file(self) -> TargetFile:
        check_target_fields(
            self.filename, self.length, self.sha256, self.hardware_identifier, self.release_counter
        )
        if not isinstance(self.ecu_identifier, str) or not self.ecu_identifier:
            raise InvalidTarget(f"{self.filename}: {ECU_IDENTIFIER} is required")
        check_custom(self.custom, reserved=_RESERVED)
        custom = {
            ECU_IDENTIFIER: self.ecu_identifier,
            HARDWARE_IDENTIFIER: self.hardware_identifier,
            RELEASE_COUNTER: self.release_counter,
            **self.custom,
        }
        return TargetFile(self.length, {"sha256": self.sha256}, self.filename, {"custom": custom})


class Director:
    """The Director in a :class:`MetadataStore`; ``keys`` holds its online signers (targets,
    snapshot and timestamp; root too for :meth:`create`)."""

    SIGNING_ROLES = ("targets", "snapshot", "timestamp")

    def __init__(
        self, store: MetadataStore, keys: KeyRing, expiry: ExpiryPolicy | None = None
    ) -> None:
        self.store = store
        self.keys = keys
        self.expiry = expiry or ExpiryPolicy()
        self._root_files = MetadataFiles(store, DIRECTOR_PREFIX, DIRECTOR_PREFIX)
        root = self._root_files.load("root.json", Root)
        if root is None:
            raise RepositoryNotInitialized("the Director has not been created")
        for role in self.SIGNING_ROLES:
            keys.signers(role)  # all online: raises OfflineKeyRequired otherwise
        check_online_keys(root.signed, keys, self.SIGNING_ROLES)

    @classmethod
    def create(
        cls,
        store: MetadataStore,
        keys: KeyRing,
        *,
        expiry: ExpiryPolicy | None = None,
        now: datetime | None = None,
    ) -> Director:
        """Write the Director's root v1 naming each role's online keys (threshold 1)."""
        files = MetadataFiles(store, DIRECTOR_PREFIX, DIRECTOR_PREFIX)
        if files.read("root.json") is not None:
            raise RepositoryExists("the Director already exists")
        expiry = expiry or ExpiryPolicy()
        now = now or utc_now()
        root = Root(expires=expiry.expires("root", now))
        for role in ("root", *cls.SIGNING_ROLES):
            for signer in keys.signers(role):
                root.add_key(signer.public_key, role)
        root_md = sign_metadata(root, keys.signers("root"))
        verify_role(root, root_md)
        files.write(root_md)
        return cls(store, keys, expiry)

    # -- serving --

    def root_bytes(self) -> bytes:
        """The current shared root: a vehicle's Director trust anchor."""
        data = self._root_files.read("root.json")
        if data is None:
            raise RepositoryNotInitialized("the Director has no root")
        return data

    def read_metadata(self, vin: str, name: str) -> bytes | None:
        """Serve ``<director_url>/<vin>/<name>`` to a vehicle's TUF client; None means 404."""
        if vin_problem(vin) is not None:
            return None
        return self._files(vin).read(name)

    def targets_version(self, vin: str) -> int | None:
        """The vehicle's current targets version (an ETag for check-in), or None."""
        state = self._state(_checked(vin))
        return None if state is None else state.targets.signed.version

    def assignment(self, vin: str) -> list[DirectorTarget]:
        """What the vehicle's current targets metadata asks it to install."""
        state = self._state(_checked(vin))
        if state is None:
            return []
        return [_director_target(t) for t in state.targets.signed.targets.values()]

    # -- signing --

    def assign(
        self, vin: str, entries: Sequence[DirectorTarget], *, now: datetime | None = None
    ) -> int:
        """Sign a new targets version for ``vin`` listing ``entries`` (one per ECU; empty
        means nothing to install), with the snapshot and timestamp that point at it.
        Returns the new targets version."""
        files = self._files(_checked(vin))
        now = now or utc_now()
        by_ecu: dict[str, TargetFile] = {}
        by_filename: dict[str, TargetFile] = {}
        for entry in entries:
            target = entry.to_target_file()
            if entry.ecu_identifier in by_ecu:
                raise InvalidTarget(f"ECU {entry.ecu_identifier} is assigned twice")
            if entry.filename in by_filename:
                # TUF targets are keyed by file name: one image per vehicle assignment.
                raise InvalidTarget(f"{entry.filename} is assigned to two ECUs")
            by_ecu[entry.ecu_identifier] = by_filename[entry.filename] = target
        state = self._state(vin)
        versions = (0, 0, 0) if state is None else _versions(state)
        targets = Targets(
            version=versions[0] + 1,
            expires=self.expiry.expires("targets", now),
            targets=by_filename,
        )
        self._write(files, now, versions, targets)
        return targets.version

    def refresh(self, vins: Iterable[str], *, now: datetime | None = None) -> dict[str, list[str]]:
        """Re-sign, for each of ``vins``, the roles that expire within their margin (and what
        points at them); return ``{vin: roles re-signed}`` for the vehicles that changed."""
        now = now or utc_now()
        changed: dict[str, list[str]] = {}
        for vin in vins:
            files = self._files(_checked(vin))
            state = self._state(vin)
            if state is None:
                continue
            targets_due = self.expiry.due(state.targets.signed, now)
            snapshot_due = targets_due or self.expiry.due(state.snapshot.signed, now)
            if not snapshot_due and not self.expiry.due(state.timestamp.signed, now):
                continue
            targets = (
                bumped(state.targets.signed, self.expiry.targets, now) if targets_due else None
            )
            changed[vin] = self._write(
                files, now, _versions(state), targets, new_snapshot=snapshot_due
            )
        return changed

    # -- internals --

    def _files(self, vin: str) -> MetadataFiles:
        return MetadataFiles(self.store, f"{DIRECTOR_PREFIX}{vin}/", DIRECTOR_PREFIX)

    def _state(self, vin: str) -> RepositoryState | None:
        return self._files(vin).state()

    def _write(
        self,
        files: MetadataFiles,
        now: datetime,
        versions: tuple[int, int, int],
        targets: Targets | None,
        *,
        new_snapshot: bool = True,
    ) -> list[str]:
        """Sign and write ``targets`` (if given), then a new snapshot (if ``new_snapshot``)
        and always a new timestamp; return the roles written."""
        targets_version, snapshot_version, timestamp_version = versions
        written: list[Metadata[Any]] = []
        if targets is not None:
            written.append(sign_metadata(targets, self.keys.signers("targets")))
            targets_version = targets.version
        if new_snapshot:
            snapshot = snapshot_of(
                targets_version, snapshot_version + 1, self.expiry.expires("snapshot", now)
            )
            written.append(sign_metadata(snapshot, self.keys.signers("snapshot")))
            snapshot_version = snapshot.version
        timestamp = timestamp_of(
            snapshot_version, timestamp_version + 1, self.expiry.expires("timestamp", now)
        )
        written.append(sign_metadata(timestamp, self.keys.signers("timestamp")))
        files.write(*written)
        return [m.signed.type for m in written]


def _checked(vin: str) -> str:
    # The VIN is a path segment of the store: only a valid VIN may reach it.
    problem = vin_problem(vin)
    if problem is not None:
        raise InvalidVin(problem)
    return vin


def _versions(state: RepositoryState) -> tuple[int, int, int]:
    return (
        state.targets.signed.version,
        state.snapshot.signed.version,
        state.timestamp.signed.version,
    )


def _director_target(target: TargetFile) -> DirectorTarget:
    custom = dict(target.custom or {})
    return DirectorTarget(
        ecu_identifier=custom.pop(ECU_IDENTIFIER, ""),
        hardware_identifier=custom.pop(HARDWARE_IDENTIFIER, ""),
        filename=target.path,
        length=target.length,
        sha256=target.hashes.get("sha256", ""),
        release_counter=custom.pop(RELEASE_COUNTER, -1),
        custom=custom,
    )
